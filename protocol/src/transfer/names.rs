//! File names from a peer (docs/PROTOCOL.md §11.2).
//!
//! A transfer names each file by its path relative to what was sent: a
//! list of components. A receiver accepts a path only if every component
//! is a plain name that means the same thing on every platform it might
//! be written on, so a peer can never write outside the directory the
//! receiver chose, nor onto a device, nor over another file by a name the
//! file system folds into it.
//!
//! ```
//! use pos_p2p_protocol::transfer::names::{NameError, SafePath};
//!
//! let ok = SafePath::new(vec!["photos".into(), "2026".into(), "beach.jpg".into()]).unwrap();
//! assert_eq!(ok.to_path_buf(), std::path::Path::new("photos/2026/beach.jpg"));
//! assert!(matches!(SafePath::new(vec!["..".into(), "etc".into()]), Err(NameError::Dots)));
//! assert!(matches!(SafePath::new(vec!["CON.txt".into()]), Err(NameError::Reserved(_))));
//! ```

use std::path::{Component, Path, PathBuf};

/// The most bytes in one component (what common file systems allow).
pub const MAX_NAME_LEN: usize = 255;
/// The most components in a path.
pub const MAX_DEPTH: usize = 64;
/// The most bytes in a whole path, separators included.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// No components, or an empty one.
    #[error("an empty name")]
    Empty,
    /// `.` or `..`.
    #[error("`.` or `..` in a path")]
    Dots,
    /// A separator (`/`, `\`) or a drive or stream marker (`:`) in a
    /// component: the path would be read as another path.
    #[error("a separator in a name")]
    Separator,
    /// A control character (including NUL).
    #[error("a control character in a name")]
    Control,
    /// A name Windows reserves for a device (`CON`, `NUL`, `COM1`, ...,
    /// with any extension) or characters it forbids (`<>"|?*`).
    #[error("a reserved name: {0:?}")]
    Reserved(String),
    /// A trailing `.` or space (Windows drops them: `a.` would be `a`).
    #[error("a name ending in a dot or a space")]
    Trailing,
    /// Over [`MAX_NAME_LEN`], [`MAX_DEPTH`] or [`MAX_PATH_LEN`].
    #[error("a path too long or too deep")]
    TooLong,
    /// A local path that is not relative, or not UTF-8 (sender side).
    #[error("not a relative UTF-8 path: {0}")]
    NotRelative(String),
}

/// A path every component of which is a plain name (see the module).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafePath(Vec<String>);

const DEVICES: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.contains(['/', '\\', ':']) {
        return Err(NameError::Separator);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if name.contains(['<', '>', '"', '|', '?', '*']) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    if name.ends_with(['.', ' ']) {
        return Err(NameError::Trailing);
    }
    // The part before the first dot, trimmed as Windows does.
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    let numbered = |prefix: &str| {
        upper.strip_prefix(prefix).is_some_and(|n| {
            let mut chars = n.chars();
            matches!(
                (chars.next(), chars.next()),
                (Some('0'..='9' | '¹' | '²' | '³'), None)
            )
        })
    };
    if DEVICES.contains(&upper.as_str()) || numbered("COM") || numbered("LPT") {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

impl SafePath {
    /// Check a peer's path, component by component.
    pub fn new(components: Vec<String>) -> Result<Self, NameError> {
        if components.is_empty() {
            return Err(NameError::Empty);
        }
        if components.len() > MAX_DEPTH {
            return Err(NameError::TooLong);
        }
        let total = components.iter().map(|c| c.len() + 1).sum::<usize>() - 1;
        if total > MAX_PATH_LEN {
            return Err(NameError::TooLong);
        }
        for name in &components {
            check(name)?;
        }
        Ok(Self(components))
    }

    /// A local relative path as the sender names it (its components must
    /// be plain UTF-8 names that pass the same checks).
    pub fn from_relative(path: &Path) -> Result<Self, NameError> {
        let bad = || NameError::NotRelative(path.display().to_string());
        let mut components = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    components.push(name.to_str().ok_or_else(bad)?.to_owned());
                }
                _ => return Err(bad()),
            }
        }
        Self::new(components)
    }

    /// The components.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The path, relative, with this platform's separator.
    pub fn to_path_buf(&self) -> PathBuf {
        self.0.iter().collect()
    }

    /// The components, for the wire.
    pub fn into_components(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(name: &str) -> Result<SafePath, NameError> {
        SafePath::new(vec![name.to_owned()])
    }

    #[test]
    fn plain_names_pass() {
        for name in [
            "a",
            "report.pdf",
            ".hidden",
            "photo (1).jpg",
            "résumé.txt",
            "日本語",
            "CONSOLE",
            "COM10",
            "LPT",
            "nul-terminated",
            "a..b",
        ] {
            assert!(one(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(SafePath::new(vec![]), Err(NameError::Empty));
        assert_eq!(one(""), Err(NameError::Empty));
        assert_eq!(one("."), Err(NameError::Dots));
        assert_eq!(one(".."), Err(NameError::Dots));
        for name in ["a/b", "/etc", "a\\b", "..\\x", "C:x", "file:stream"] {
            assert_eq!(one(name), Err(NameError::Separator), "{name}");
        }
        for name in ["a\0b", "line\nbreak", "\u{7f}", "bell\u{7}"] {
            assert_eq!(one(name), Err(NameError::Control), "{name:?}");
        }
        for name in [
            "CON",
            "con",
            "Nul.txt",
            "aux.tar.gz",
            "COM1",
            "com9.log",
            "LPT3",
            "PRN ",
            "CON .txt",
            "COM¹",
            "a<b",
            "why?",
            "star*",
        ] {
            assert!(
                matches!(
                    one(name),
                    Err(NameError::Reserved(_)) | Err(NameError::Trailing)
                ),
                "{name}"
            );
        }
        for name in ["trailing.", "trailing "] {
            assert_eq!(one(name), Err(NameError::Trailing), "{name}");
        }
        assert_eq!(one(&"x".repeat(MAX_NAME_LEN + 1)), Err(NameError::TooLong));
        assert!(one(&"x".repeat(MAX_NAME_LEN)).is_ok());
        let deep = vec!["d".to_owned(); MAX_DEPTH + 1];
        assert_eq!(SafePath::new(deep), Err(NameError::TooLong));
        assert!(SafePath::new(vec!["d".to_owned(); MAX_DEPTH]).is_ok());
        let long = vec!["x".repeat(200); 21];
        assert_eq!(SafePath::new(long), Err(NameError::TooLong));
        let fits = vec!["x".repeat(200); 20];
        assert!(SafePath::new(fits).is_ok());
        // One bad component spoils the path.
        let mixed = vec!["ok".to_owned(), "..".to_owned(), "passwd".to_owned()];
        assert_eq!(SafePath::new(mixed), Err(NameError::Dots));
    }

    #[test]
    fn local_paths_must_be_relative() {
        let ok = SafePath::from_relative(Path::new("dir/file.txt")).unwrap();
        assert_eq!(ok.components(), ["dir", "file.txt"]);
        assert_eq!(ok.into_components(), ["dir", "file.txt"]);
        for bad in ["/abs/file", "../up", "dir/../x", "./here"] {
            assert!(
                matches!(
                    SafePath::from_relative(Path::new(bad)),
                    Err(NameError::NotRelative(_))
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn an_accepted_path_stays_inside(components in proptest::collection::vec(".{0,12}", 0..6)) {
            if let Ok(path) = SafePath::new(components.clone()) {
                let joined = path.to_path_buf();
                prop_assert!(joined.is_relative());
                // Every component is a plain name: the path reads back as
                // the same components.
                let back: Vec<String> = joined
                    .components()
                    .map(|c| match c {
                        Component::Normal(n) => n.to_string_lossy().into_owned(),
                        other => panic!("{other:?} in {joined:?}"),
                    })
                    .collect();
                prop_assert_eq!(back, components);
            }
        }
    }
}
