//! Version gating: which peers a node agrees to talk to.
//!
//! Every node has two [`semver`] versions ([`Versions`]): the pos-p2p protocol
//! version it speaks and the application's own version. A [`VersionPolicy`]
//! decides whether a remote peer's versions are compatible with ours; the
//! decision is either `Ok(())` or a [`Rejection`] that carries both sides'
//! versions and a reason that reads well on either side.
//!
//! The default rule is semver's caret rule: versions are compatible when
//! their major versions match, and for `0.x` versions when major *and* minor
//! match. It is symmetric, so two nodes with default policies always agree on
//! whether they can talk. An application may add a [`VersionReq`] on the
//! peer's application version; [`satisfies`] answers the same question for
//! feature-level gating once connected.
//!
//! ```
//! use pos_p2p_protocol::version::{VersionPolicy, Versions};
//! use semver::Version;
//!
//! let ours = Versions::new(Version::new(1, 4, 0));
//! let theirs = Versions::new(Version::new(2, 0, 0));
//! let rejection = VersionPolicy::default().check(&ours, &theirs).unwrap_err();
//! assert_eq!(
//!     rejection.to_string(),
//!     "application versions are incompatible: 1.4.0 (rejecting node) and 2.0.0 \
//!      (rejected node); major versions must match"
//! );
//! ```

use std::fmt;

use semver::{Version, VersionReq};

/// The version of the pos-p2p wire protocol this crate speaks.
pub const PROTOCOL_VERSION: Version = Version::new(0, 1, 0);

/// A node's protocol and application versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Versions {
    /// The pos-p2p protocol version.
    pub protocol: Version,
    /// The application's version.
    pub app: Version,
}

impl Versions {
    /// This crate's [`PROTOCOL_VERSION`] and the given application version.
    pub fn new(app: Version) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            app,
        }
    }
}

/// Whether `a` and `b` are compatible under semver's caret rule: equal major
/// versions, and for `0.x` also equal minor versions. Symmetric.
pub fn is_compatible(a: &Version, b: &Version) -> bool {
    a.major == b.major && (a.major != 0 || a.minor == b.minor)
}

/// Whether `version` satisfies `requirement`, for gating a feature on the
/// peer's version (`satisfies(peer_version, &">=1.3".parse()?)`).
///
/// Follows the `semver` crate's rules, including that a pre-release satisfies
/// a requirement only if the requirement names a pre-release of the same
/// `major.minor.patch`.
pub fn satisfies(version: &Version, requirement: &VersionReq) -> bool {
    requirement.matches(version)
}

/// Which remote versions a node accepts.
///
/// The protocol version is always held to the caret rule. The application
/// version is too by default; an application may relax that with
/// [`VersionPolicy::allow_any_app_version`] and may add a requirement with
/// [`VersionPolicy::require_app_version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPolicy {
    app_must_be_compatible: bool,
    app_requirement: Option<VersionReq>,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self {
            app_must_be_compatible: true,
            app_requirement: None,
        }
    }
}

impl VersionPolicy {
    /// Do not apply the caret rule to application versions (the protocol
    /// version is still checked, and a requirement, if set, still applies).
    pub fn allow_any_app_version(mut self) -> Self {
        self.app_must_be_compatible = false;
        self
    }

    /// Also require the peer's application version to satisfy `requirement`.
    pub fn require_app_version(mut self, requirement: VersionReq) -> Self {
        self.app_requirement = Some(requirement);
        self
    }

    /// The requirement on the peer's application version, if any.
    pub fn app_requirement(&self) -> Option<&VersionReq> {
        self.app_requirement.as_ref()
    }

    /// Decide whether a peer with versions `remote` is compatible with a
    /// local node with versions `local`. The rejection is boxed: it is the
    /// cold path, and keeps the `Result` small.
    pub fn check(&self, local: &Versions, remote: &Versions) -> Result<(), Box<Rejection>> {
        let reason = if !is_compatible(&local.protocol, &remote.protocol) {
            Some(RejectReason::ProtocolIncompatible)
        } else if self.app_must_be_compatible && !is_compatible(&local.app, &remote.app) {
            Some(RejectReason::AppIncompatible)
        } else {
            self.app_requirement
                .as_ref()
                .filter(|req| !satisfies(&remote.app, req))
                .map(|req| RejectReason::AppRequirementUnmet(req.clone()))
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(Box::new(Rejection {
                local: local.clone(),
                remote: remote.clone(),
                reason,
            })),
        }
    }
}

/// A peer's versions were rejected. Carries both sides' versions; its
/// `Display` is the human-readable reason, worded so that both the rejecting
/// and the rejected node can show it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    /// The rejecting node's versions.
    pub local: Versions,
    /// The rejected peer's versions.
    pub remote: Versions,
    /// What was incompatible.
    pub reason: RejectReason,
}

/// What made a peer's versions unacceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The protocol versions are not compatible.
    ProtocolIncompatible,
    /// The application versions are not compatible.
    AppIncompatible,
    /// The peer's application version does not satisfy the requirement.
    AppRequirementUnmet(VersionReq),
}

fn caret_rule(version: &Version) -> &'static str {
    if version.major == 0 {
        "0.x versions must match in major and minor"
    } else {
        "major versions must match"
    }
}

impl fmt::Display for Rejection {
    /// The same text on both sides of a connection: it names the rejecting
    /// and the rejected node rather than "local" and "remote".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            RejectReason::ProtocolIncompatible => write!(
                f,
                "protocol versions are incompatible: {} (rejecting node) and {} (rejected node); {}",
                self.local.protocol,
                self.remote.protocol,
                caret_rule(&self.local.protocol)
            ),
            RejectReason::AppIncompatible => write!(
                f,
                "application versions are incompatible: {} (rejecting node) and {} (rejected node); {}",
                self.local.app,
                self.remote.app,
                caret_rule(&self.local.app)
            ),
            RejectReason::AppRequirementUnmet(requirement) => write!(
                f,
                "application version {} of the rejected node does not satisfy the rejecting node's requirement {}",
                self.remote.app, requirement
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn versions(protocol: &str, app: &str) -> Versions {
        Versions {
            protocol: v(protocol),
            app: v(app),
        }
    }

    #[test]
    fn the_documented_compatibility_examples() {
        // PROTOCOL.md §5: patch, pre-release and build metadata play no part.
        for (a, b) in [
            ("1.2.3-alpha+build", "1.0.0"),
            ("1.2.3-alpha+build", "1.9.0"),
            ("0.3.0", "0.3.7-rc.1"),
            ("0.0.1", "0.0.2"),
        ] {
            assert!(is_compatible(&v(a), &v(b)), "{a} ~ {b}");
            assert!(is_compatible(&v(b), &v(a)), "{b} ~ {a}");
        }
        // Unlike semver's caret requirement.
        assert!(
            !">=0.0.1, <0.0.2"
                .parse::<VersionReq>()
                .unwrap()
                .matches(&v("0.0.2"))
        );
        assert!(
            !"^1.2.3"
                .parse::<VersionReq>()
                .unwrap()
                .matches(&v("1.0.0-alpha"))
        );
        assert!(is_compatible(&v("1.2.3"), &v("1.0.0-alpha")));
    }

    #[test]
    fn rejection_texts_are_the_documented_ones() {
        // PROTOCOL.md §7.3.
        let policy = VersionPolicy::default();
        let protocol = policy
            .check(&versions("0.1.0", "1.0.0"), &versions("0.2.0", "1.0.0"))
            .unwrap_err();
        assert_eq!(
            protocol.to_string(),
            "protocol versions are incompatible: 0.1.0 (rejecting node) and 0.2.0 \
             (rejected node); 0.x versions must match in major and minor"
        );
        let requirement = VersionPolicy::default()
            .require_app_version(">=1.5".parse().unwrap())
            .check(&versions("0.1.0", "1.6.0"), &versions("0.1.0", "1.4.0"))
            .unwrap_err();
        assert_eq!(
            requirement.to_string(),
            "application version 1.4.0 of the rejected node does not satisfy the \
             rejecting node's requirement >=1.5"
        );
    }

    #[test]
    fn caret_rule_table() {
        let cases = [
            ("1.0.0", "1.9.3", true),
            ("1.0.0", "2.0.0", false),
            ("0.3.0", "0.3.9", true),
            ("0.3.0", "0.4.0", false),
            ("0.3.0", "1.3.0", false),
            ("1.0.0-alpha.1", "1.2.0", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(is_compatible(&v(a), &v(b)), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn protocol_mismatch_is_rejected_first_with_both_versions() {
        let local = versions("0.1.0", "1.0.0");
        let remote = versions("0.2.0", "2.0.0");
        let rejection = VersionPolicy::default().check(&local, &remote).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::ProtocolIncompatible);
        assert_eq!(rejection.local, local);
        assert_eq!(rejection.remote, remote);
        assert_eq!(
            rejection.to_string(),
            "protocol versions are incompatible: 0.1.0 (rejecting node) and 0.2.0 \
             (rejected node); 0.x versions must match in major and minor"
        );
    }

    #[test]
    fn app_rules() {
        let local = versions("0.1.0", "1.4.0");
        let newer_major = versions("0.1.0", "2.0.0");
        assert_eq!(
            VersionPolicy::default()
                .check(&local, &newer_major)
                .unwrap_err()
                .reason,
            RejectReason::AppIncompatible
        );
        let relaxed = VersionPolicy::default().allow_any_app_version();
        assert_eq!(relaxed.check(&local, &newer_major), Ok(()));

        let req: VersionReq = ">=1.3".parse().unwrap();
        let strict = VersionPolicy::default().require_app_version(req.clone());
        assert_eq!(strict.app_requirement(), Some(&req));
        assert_eq!(strict.check(&local, &versions("0.1.0", "1.3.5")), Ok(()));
        let rejection = strict
            .check(&local, &versions("0.1.0", "1.2.9"))
            .unwrap_err();
        assert_eq!(rejection.reason, RejectReason::AppRequirementUnmet(req));
        assert_eq!(
            rejection.to_string(),
            "application version 1.2.9 of the rejected node does not satisfy the \
             rejecting node's requirement >=1.3"
        );
    }

    #[test]
    fn satisfies_follows_semver() {
        let req: VersionReq = "^1.3".parse().unwrap();
        assert!(satisfies(&v("1.3.0"), &req));
        assert!(satisfies(&v("1.9.0"), &req));
        assert!(!satisfies(&v("1.2.0"), &req));
        assert!(!satisfies(&v("1.4.0-beta"), &req));
    }

    fn version() -> impl Strategy<Value = Version> {
        (0u64..3, 0u64..3, 0u64..3).prop_map(|(a, b, c)| Version::new(a, b, c))
    }

    proptest! {
        #[test]
        fn default_policy_is_symmetric(
            (ap, aa, bp, ba) in (version(), version(), version(), version())
        ) {
            let a = Versions { protocol: ap, app: aa };
            let b = Versions { protocol: bp, app: ba };
            let policy = VersionPolicy::default();
            prop_assert_eq!(policy.check(&a, &b).is_ok(), policy.check(&b, &a).is_ok());
            // And the reason is the same kind on both sides.
            if let (Err(x), Err(y)) = (policy.check(&a, &b), policy.check(&b, &a)) {
                prop_assert_eq!(x.reason, y.reason);
            }
        }
    }
}
