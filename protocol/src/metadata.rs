//! [`Metadata`], the bounded key/value map a node tells its peers about itself,
//! and [`PeerMetadata`], the typed view of its common keys.
//!
//! Keys follow the DNS-SD TXT key rules (RFC 6763 §6.4) so that the same map
//! can be advertised over mDNS: 1 to [`MAX_KEY_LEN`] bytes of printable ASCII
//! (0x20 to 0x7E) other than `=`. Values are UTF-8 strings of at most
//! [`MAX_VALUE_LEN`] bytes. A map holds at most [`MAX_ENTRIES`] entries and
//! encodes to at most [`MAX_ENCODED_LEN`] bytes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, Writer};

/// The longest metadata key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// The longest metadata value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// The most entries a [`Metadata`] map holds.
pub const MAX_ENTRIES: usize = 64;
/// The largest encoded [`Metadata`], in bytes.
pub const MAX_ENCODED_LEN: usize = 8 * 1024;

/// A node's metadata: a bounded map of string keys to string values, kept
/// (and encoded) in ascending key order.
///
/// ```
/// use pos_p2p_protocol::Metadata;
///
/// let mut metadata = Metadata::new();
/// metadata.insert("name", "Oscar's laptop").unwrap();
/// let bytes = metadata.to_bytes();
/// assert_eq!(Metadata::from_bytes(&bytes).unwrap(), metadata);
/// assert!(metadata.insert("bad=key", "x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Metadata {
    entries: BTreeMap<String, String>,
    /// The encoded length of `entries`, kept up to date on every change.
    encoded_len: usize,
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            encoded_len: 1,
        }
    }

    /// Insert or replace an entry, checking every limit. On error the map is
    /// unchanged. Returns the previous value of the key.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>, MetadataError> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(MetadataError::ValueTooLong {
                key,
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let old = self.entries.get(&key);
        if old.is_none() && self.entries.len() >= MAX_ENTRIES {
            return Err(MetadataError::TooManyEntries { max: MAX_ENTRIES });
        }
        let without_old = self.encoded_len - old.map_or(0, |v| entry_len(&key, v));
        let count_growth = if old.is_none() {
            count_prefix_growth(self.entries.len())
        } else {
            0
        };
        let encoded_len = without_old + entry_len(&key, &value) + count_growth;
        if encoded_len > MAX_ENCODED_LEN {
            return Err(MetadataError::TooLarge {
                len: encoded_len,
                max: MAX_ENCODED_LEN,
            });
        }
        self.encoded_len = encoded_len;
        Ok(self.entries.insert(key, value))
    }

    /// Remove an entry, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let value = self.entries.remove(key)?;
        self.encoded_len -= entry_len(key, &value) + count_prefix_growth(self.entries.len());
        Some(value)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The size of [`Metadata::to_bytes`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// A metadata map from an application's `HashMap`, checking every limit.
    pub fn from_hashmap(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        Self::try_from_iter(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// A metadata map from key/value pairs, checking every limit. A repeated
    /// key keeps its last value.
    pub fn try_from_iter<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, MetadataError> {
        let mut metadata = Self::new();
        for (key, value) in pairs {
            metadata.insert(key, value)?;
        }
        Ok(metadata)
    }

    /// The entries as a `HashMap`, the shape applications read.
    pub fn to_hashmap(&self) -> HashMap<String, String> {
        self.entries.clone().into_iter().collect()
    }

    /// The entries as a sorted map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    /// Write the map: a varint entry count, then each key and value as
    /// length-prefixed strings in ascending key order.
    pub fn encode(&self, w: &mut Writer) {
        w.map(
            &self.entries,
            MAX_ENTRIES,
            |w, k| w.str(k, MAX_KEY_LEN),
            |w, v| w.str(v, MAX_VALUE_LEN),
        );
    }

    /// Read a map written by [`Metadata::encode`], enforcing every limit and
    /// the canonical key order.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        let entries = r.map(
            MAX_ENTRIES,
            |r| {
                let offset = r.position();
                let key = r.str(MAX_KEY_LEN)?;
                if check_key(key).is_err() {
                    return Err(r.invalid("metadata key", offset));
                }
                Ok(key.to_owned())
            },
            |r| r.string(MAX_VALUE_LEN),
        )?;
        let encoded_len = r.position() - start;
        if encoded_len > MAX_ENCODED_LEN {
            return Err(DecodeError::TooLong {
                what: "metadata",
                len: encoded_len as u64,
                max: MAX_ENCODED_LEN as u64,
                offset: start,
            });
        }
        Ok(Self {
            entries,
            encoded_len,
        })
    }

    /// The encoded map.
    pub fn to_bytes(&self) -> Bytes {
        let mut w = Writer::with_capacity(self.encoded_len);
        self.encode(&mut w);
        // Every entry was checked against the same limits on insertion.
        w.finish().unwrap_or_default()
    }

    /// Decode bytes holding exactly one encoded map.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let metadata = Self::decode(&mut r)?;
        r.finish()?;
        Ok(metadata)
    }
}

/// The encoded size of one entry.
fn entry_len(key: &str, value: &str) -> usize {
    use crate::codec::varint::varint_len;
    varint_len(key.len() as u64) + key.len() + varint_len(value.len() as u64) + value.len()
}

/// How much the count prefix grows when a map of `len` entries gains one.
fn count_prefix_growth(len: usize) -> usize {
    use crate::codec::varint::varint_len;
    varint_len(len as u64 + 1) - varint_len(len as u64)
}

fn check_key(key: &str) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(MetadataError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if let Some(ch) = key.chars().find(|&c| !(' '..='~').contains(&c) || c == '=') {
        return Err(MetadataError::InvalidKeyChar {
            key: key.to_owned(),
            ch,
        });
    }
    Ok(())
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// Why an entry cannot be part of a [`Metadata`] map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Keys must not be empty.
    #[error("metadata key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("metadata key is {len} bytes, more than {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key has a character outside printable ASCII, or `=`.
    #[error("metadata key {key:?} contains {ch:?} (allowed: printable ASCII except '=')")]
    InvalidKeyChar {
        /// The key.
        key: String,
        /// The first offending character.
        ch: char,
    },
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("metadata value of {key:?} is {len} bytes, more than {max}")]
    ValueTooLong {
        /// The key whose value is too long.
        key: String,
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The map already has [`MAX_ENTRIES`] entries.
    #[error("metadata has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// The map would encode to more than [`MAX_ENCODED_LEN`] bytes.
    #[error("metadata would encode to {len} bytes, more than {max}")]
    TooLarge {
        /// The encoded length it would have.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The key of the device's human-readable name.
pub const KEY_NAME: &str = "name";
/// The key of the operating system.
pub const KEY_OS: &str = "os";
/// The key of the device model.
pub const KEY_DEVICE_MODEL: &str = "device_model";
/// The key of the application's semver version.
pub const KEY_VERSION: &str = "version";

/// The typed view of the metadata keys every application shares: `name`,
/// `os`, `device_model` and `version`. Every other key is kept, untouched, in
/// `extra`, so converting a map to `PeerMetadata` and back gives the same map.
///
/// ```
/// use std::collections::HashMap;
/// use pos_p2p_protocol::{OperatingSystem, PeerMetadata};
///
/// let map = HashMap::from([
///     ("name".to_owned(), "Oscar's ☃ laptop".to_owned()),
///     ("os".to_owned(), "linux".to_owned()),
///     ("version".to_owned(), "1.2.3-beta.1".to_owned()),
///     ("color".to_owned(), "teal".to_owned()),
/// ]);
/// let typed = PeerMetadata::from_hashmap(&map).unwrap();
/// assert_eq!(typed.os, Some(OperatingSystem::Linux));
/// assert_eq!(typed.to_hashmap(), map);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerMetadata {
    /// The device's human-readable name (`name`).
    pub name: Option<String>,
    /// The operating system (`os`).
    pub os: Option<OperatingSystem>,
    /// The device model (`device_model`).
    pub device_model: Option<String>,
    /// The application's version (`version`): its text
    /// (`metadata.version.as_deref() == Some("0.1.0")`) and the semver
    /// version it parses to ([`AppVersion::semver`]).
    pub version: Option<AppVersion>,
    /// Every other key, as it was.
    pub extra: BTreeMap<String, String>,
}

impl PeerMetadata {
    /// The typed view of `map`. Fails only if `version` is present and is not
    /// a semver version; nothing is dropped or altered.
    pub fn from_hashmap(map: &HashMap<String, String>) -> Result<Self, PeerMetadataError> {
        Self::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The typed view of a [`Metadata`] map.
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, PeerMetadataError> {
        Self::from_pairs(metadata.iter())
    }

    fn from_pairs<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PeerMetadataError> {
        let mut typed = Self::default();
        for (key, value) in pairs {
            match key {
                KEY_NAME => typed.name = Some(value.to_owned()),
                KEY_OS => typed.os = Some(OperatingSystem::from_name(value)),
                KEY_DEVICE_MODEL => typed.device_model = Some(value.to_owned()),
                KEY_VERSION => {
                    let version = value.parse::<AppVersion>().map_err(|source| {
                        PeerMetadataError::InvalidVersion {
                            value: value.to_owned(),
                            source,
                        }
                    })?;
                    typed.version = Some(version);
                }
                _ => {
                    typed.extra.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(typed)
    }

    /// The map this view stands for.
    pub fn to_hashmap(&self) -> HashMap<String, String> {
        self.pairs().collect()
    }

    /// The map this view stands for, checked against the [`Metadata`] limits.
    pub fn to_metadata(&self) -> Result<Metadata, MetadataError> {
        let mut metadata = Metadata::new();
        for (key, value) in self.pairs() {
            metadata.insert(key, value)?;
        }
        Ok(metadata)
    }

    fn pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let known = [
            (KEY_NAME, self.name.clone()),
            (KEY_OS, self.os.as_ref().map(ToString::to_string)),
            (KEY_DEVICE_MODEL, self.device_model.clone()),
            (
                KEY_VERSION,
                self.version.as_ref().map(|v| v.as_str().to_owned()),
            ),
        ];
        known
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .chain(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())))
    }
}

/// An application version as a peer stated it: the text, and the semver
/// version it parses to.
///
/// It dereferences to the text, so the usual `Option` idioms read it
/// (`metadata.version.as_deref() == Some("0.1.0")`); [`AppVersion::semver`]
/// gives the typed version for real comparisons (ordering, pre-releases,
/// requirements).
///
/// ```
/// use pos_p2p_protocol::{AppVersion, semver};
///
/// let version: AppVersion = "1.2.3-beta.1".parse().unwrap();
/// assert_eq!(&*version, "1.2.3-beta.1");
/// let wanted = semver::VersionReq::parse(">=1.2.3-alpha").unwrap();
/// assert!(wanted.matches(version.semver()));
/// assert!("1.2".parse::<AppVersion>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppVersion {
    text: String,
    semver: semver::Version,
}

impl AppVersion {
    /// The version as the peer wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The semver version.
    pub fn semver(&self) -> &semver::Version {
        &self.semver
    }
}

impl std::str::FromStr for AppVersion {
    type Err = semver::Error;

    /// Parse a semver version (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`).
    fn from_str(text: &str) -> Result<Self, semver::Error> {
        Ok(Self {
            semver: semver::Version::parse(text)?,
            text: text.to_owned(),
        })
    }
}

impl From<semver::Version> for AppVersion {
    fn from(semver: semver::Version) -> Self {
        Self {
            text: semver.to_string(),
            semver,
        }
    }
}

impl std::ops::Deref for AppVersion {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for AppVersion {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A [`PeerMetadata`] field holds a value its type cannot represent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMetadataError {
    /// `version` is not a semver version.
    #[error("metadata `version` {value:?} is not a semver version: {source}")]
    InvalidVersion {
        /// The value found.
        value: String,
        /// What semver said.
        source: semver::Error,
    },
}

/// An operating system as named in metadata. Known names map to variants;
/// any other text is kept as [`OperatingSystem::Other`], so no value is lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperatingSystem {
    /// `windows`
    Windows,
    /// `linux`
    Linux,
    /// `macos`
    MacOs,
    /// `ios`
    Ios,
    /// `android`
    Android,
    /// Any other name, exactly as given. Build it with
    /// [`OperatingSystem::from_name`], which never puts a known name here.
    Other(String),
}

impl OperatingSystem {
    /// The operating system of the given metadata name.
    pub fn from_name(name: &str) -> Self {
        match name {
            "windows" => Self::Windows,
            "linux" => Self::Linux,
            "macos" => Self::MacOs,
            "ios" => Self::Ios,
            "android" => Self::Android,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The name written in metadata.
    pub fn name(&self) -> &str {
        match self {
            Self::Windows => "windows",
            Self::Linux => "linux",
            Self::MacOs => "macos",
            Self::Ios => "ios",
            Self::Android => "android",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for OperatingSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        "[ -<>-~]{1,64}"
    }

    fn metadata() -> impl Strategy<Value = Metadata> {
        proptest::collection::btree_map(key(), ".{0,40}", 0..20).prop_map(|map| {
            Metadata::try_from_iter(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        })
    }

    #[test]
    fn encoded_len_tracks_inserts_and_removes() {
        let mut m = Metadata::new();
        assert_eq!(m.encoded_len(), m.to_bytes().len());
        for i in 0..MAX_ENTRIES {
            m.insert(format!("key{i}"), "v".repeat(i)).unwrap();
            assert_eq!(m.encoded_len(), m.to_bytes().len());
        }
        m.insert("key3", "longer value").unwrap();
        assert_eq!(m.encoded_len(), m.to_bytes().len());
        m.remove("key3");
        assert_eq!(m.encoded_len(), m.to_bytes().len());
        assert_eq!(m.remove("absent"), None);
    }

    #[test]
    fn limits_are_enforced_on_insert() {
        let mut m = Metadata::new();
        assert_eq!(m.insert("", "x"), Err(MetadataError::EmptyKey));
        assert!(matches!(
            m.insert("k".repeat(65), "x"),
            Err(MetadataError::KeyTooLong { len: 65, .. })
        ));
        assert!(matches!(
            m.insert("a=b", "x"),
            Err(MetadataError::InvalidKeyChar { ch: '=', .. })
        ));
        assert!(matches!(
            m.insert("tab\t", "x"),
            Err(MetadataError::InvalidKeyChar { ch: '\t', .. })
        ));
        assert!(matches!(
            m.insert("é", "x"),
            Err(MetadataError::InvalidKeyChar { ch: 'é', .. })
        ));
        assert!(matches!(
            m.insert("k", "v".repeat(1025)),
            Err(MetadataError::ValueTooLong { len: 1025, .. })
        ));
        // Eight 1000-byte values fit in 8 KiB; a ninth does not.
        for i in 0..8 {
            m.insert(format!("k{i}"), "v".repeat(1000)).unwrap();
        }
        let err = m.insert("k8", "v".repeat(1000)).unwrap_err();
        assert!(matches!(err, MetadataError::TooLarge { .. }), "{err}");
        assert_eq!(m.len(), 8);
        assert_eq!(m.encoded_len(), m.to_bytes().len());

        let mut many = Metadata::new();
        for i in 0..MAX_ENTRIES {
            many.insert(format!("{i}"), "").unwrap();
        }
        assert_eq!(
            many.insert("one more", ""),
            Err(MetadataError::TooManyEntries { max: MAX_ENTRIES })
        );
        // Replacing an existing key is not a new entry.
        assert_eq!(many.insert("0", "x"), Ok(Some(String::new())));
    }

    #[test]
    fn decoding_rejects_non_canonical_and_oversized() {
        // Two entries out of order: "b" then "a".
        let unordered = [2, 1, b'b', 0, 1, b'a', 0];
        assert_eq!(
            Metadata::from_bytes(&unordered),
            Err(DecodeError::UnorderedKey { offset: 4 })
        );
        let repeated = [2, 1, b'a', 0, 1, b'a', 0];
        assert_eq!(
            Metadata::from_bytes(&repeated),
            Err(DecodeError::UnorderedKey { offset: 4 })
        );
        let bad_key = [1, 3, b'a', b'=', b'b', 0];
        assert_eq!(
            Metadata::from_bytes(&bad_key),
            Err(DecodeError::Invalid {
                what: "metadata key",
                offset: 1
            })
        );
        let too_many = [65];
        assert!(matches!(
            Metadata::from_bytes(&too_many),
            Err(DecodeError::TooLong {
                what: "map",
                len: 65,
                ..
            })
        ));
        // Eleven 1000-byte values pass every per-entry limit but not the total.
        let mut big = Writer::new();
        big.varint(11);
        for i in 0..11u8 {
            big.str(&format!("k{i:02}"), MAX_KEY_LEN);
            big.str(&"v".repeat(1000), MAX_VALUE_LEN);
        }
        let big = big.finish().unwrap();
        assert!(matches!(
            Metadata::from_bytes(&big),
            Err(DecodeError::TooLong {
                what: "metadata",
                ..
            })
        ));
        assert!(matches!(
            Metadata::from_bytes(&[1, 1, b'a', 2, 0xff, 0xfe]),
            Err(DecodeError::InvalidUtf8 { offset: 4 })
        ));
    }

    #[test]
    fn peer_metadata_rejects_bad_version_with_the_value() {
        let map = HashMap::from([("version".to_owned(), "one".to_owned())]);
        let err = PeerMetadata::from_hashmap(&map).unwrap_err();
        assert!(err.to_string().contains("\"one\""), "{err}");
    }

    proptest! {
        #[test]
        fn metadata_round_trip(m in metadata()) {
            let bytes = m.to_bytes();
            prop_assert_eq!(bytes.len(), m.encoded_len());
            let decoded = Metadata::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&decoded, &m);
            prop_assert_eq!(Metadata::from_hashmap(&m.to_hashmap()).unwrap(), m);
        }

        #[test]
        fn metadata_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = Metadata::from_bytes(&bytes) {
                // Canonical: the only encoding of the decoded value.
                prop_assert_eq!(&m.to_bytes()[..], &bytes[..]);
            }
        }

        #[test]
        fn peer_metadata_hashmap_round_trip_is_lossless(
            name in proptest::option::of(".{0,30}"),
            os in proptest::option::of(prop_oneof![
                Just("linux".to_owned()), Just("windows".to_owned()), Just("macos".to_owned()),
                Just("ios".to_owned()), Just("android".to_owned()), ".{0,12}",
            ]),
            device_model in proptest::option::of(".{0,30}"),
            version in proptest::option::of((0u64..100, 0u64..100, 0u64..100, "(-[a-z][a-z0-9]{0,5})?", "(\\+[A-Za-z0-9]{1,5})?")
                .prop_map(|(a, b, c, pre, build)| format!("{a}.{b}.{c}{pre}{build}"))),
            extra in proptest::collection::hash_map("[a-z_]{1,10}", ".{0,20}", 0..5),
        ) {
            let mut map: HashMap<String, String> = extra;
            for (k, v) in [("name", name), ("os", os), ("device_model", device_model), ("version", version)] {
                match v {
                    Some(v) => { map.insert(k.to_owned(), v); }
                    None => { map.remove(k); }
                }
            }
            let typed = PeerMetadata::from_hashmap(&map).unwrap();
            prop_assert_eq!(&typed.to_hashmap(), &map);
            if let Ok(metadata) = typed.to_metadata() {
                prop_assert_eq!(PeerMetadata::from_metadata(&metadata).unwrap(), typed);
            }
        }
    }
}
