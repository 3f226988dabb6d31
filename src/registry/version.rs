//! Dotted numeric versions and version patterns, with the ordering of the
//! CycleCloud image registry: versions compare part by part as numbers
//! (`2.0 > 1.2`, `1.10 > 1.2`, `1.2.3 > 1.2`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RegistryError;

/// Largest number allowed in one part: keeps the sortable encoding fixed-width.
pub const MAX_PART: u64 = 9_999_999_999;
/// Width of one part in [`Version::sort_key`].
const PART_WIDTH: usize = 10;

/// A package version: one or more non-negative numbers separated by dots.
///
/// Ordering is lexicographic on the numeric parts, so a version that is a
/// strict prefix of another is older (`1.2 < 1.2.0 < 1.2.3`). The order is
/// total and agrees with [`Version::sort_key`] compared as strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(Vec<u64>);

/// Which part `--bump-version` increments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BumpPart {
    /// First part; later parts reset to zero.
    Major,
    /// Second part; later parts reset to zero.
    Minor,
    /// Third part.
    Patch,
}

impl Version {
    /// The version a package gets when nothing is stored yet.
    pub fn initial() -> Version {
        Version(vec![1, 0])
    }

    /// Builds a version from its numeric parts.
    pub fn from_parts(parts: Vec<u64>) -> Result<Version, RegistryError> {
        if parts.is_empty() || parts.iter().any(|p| *p > MAX_PART) {
            return Err(RegistryError::InvalidVersion {
                input: format!("{parts:?}"),
                reason: format!("needs 1 or more parts, each at most {MAX_PART}"),
            });
        }
        Ok(Version(parts))
    }

    /// The numeric parts.
    pub fn parts(&self) -> &[u64] {
        &self.0
    }

    /// The next version after `self` for the given bump: `1.2` bumped
    /// major is `2.0`, minor `1.3`, patch `1.2.1`.
    pub fn bump(&self, part: BumpPart) -> Version {
        let index = match part {
            BumpPart::Major => 0,
            BumpPart::Minor => 1,
            BumpPart::Patch => 2,
        };
        let mut parts = self.0.clone();
        let len = parts.len().max(index + 1).max(2);
        parts.resize(len, 0);
        parts[index] = parts[index].saturating_add(1).min(MAX_PART);
        for p in parts.iter_mut().skip(index + 1) {
            *p = 0;
        }
        Version(parts)
    }

    /// A string whose byte order is the version order: each part zero
    /// padded to a fixed width, parts joined by `.`. Used as a sort key.
    pub fn sort_key(&self) -> String {
        self.0
            .iter()
            .map(|p| format!("{p:0width$}", width = PART_WIDTH))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Parses a [`Version::sort_key`] back (for store implementations).
    pub fn from_sort_key(key: &str) -> Result<Version, RegistryError> {
        key.parse()
    }
}

impl FromStr for Version {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<Version, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidVersion {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(invalid(
                "a version is one or more numbers separated by dots, e.g. 1.2",
            ));
        }
        let mut parts = Vec::new();
        for (i, part) in input.split('.').enumerate() {
            if part.is_empty() {
                return Err(invalid(&format!("part {} is empty", i + 1)));
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(&format!(
                    "part {} ({part:?}) is not a non-negative number",
                    i + 1
                )));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| invalid(&format!("part {} is too large", i + 1)))?;
            if n > MAX_PART {
                return Err(invalid(&format!(
                    "part {} is larger than {MAX_PART}",
                    i + 1
                )));
            }
            parts.push(n);
        }
        Ok(Version(parts))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&text.join("."))
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which versions a resolution accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPattern {
    /// The highest version.
    Latest,
    /// Exactly this version (`1.2`).
    Exact(Version),
    /// Any version that starts with these parts and has at least one more
    /// (`1.x` matches `1.0`, `1.10`, `1.2.3`, not `1` or `2.0`).
    Wildcard(Vec<u64>),
}

impl VersionPattern {
    /// Whether `version` is accepted by this pattern.
    pub fn matches(&self, version: &Version) -> bool {
        match self {
            VersionPattern::Latest => true,
            VersionPattern::Exact(v) => v == version,
            VersionPattern::Wildcard(prefix) => {
                version.0.len() > prefix.len() && version.0.starts_with(prefix)
            }
        }
    }

    /// The sort-key prefix every matching version's [`Version::sort_key`]
    /// starts with (empty for `Latest`); stores use it for range queries.
    pub fn sort_key_prefix(&self) -> String {
        match self {
            VersionPattern::Latest => String::new(),
            VersionPattern::Exact(v) => v.sort_key(),
            VersionPattern::Wildcard(prefix) => {
                let mut key = Version(prefix.clone()).sort_key();
                if !prefix.is_empty() {
                    key.push('.');
                }
                key
            }
        }
    }
}

impl FromStr for VersionPattern {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<VersionPattern, RegistryError> {
        if input.is_empty() || input == "latest" {
            return Ok(VersionPattern::Latest);
        }
        if input == "x" || input == "*" {
            return Ok(VersionPattern::Latest);
        }
        match input
            .strip_suffix(".x")
            .or_else(|| input.strip_suffix(".*"))
        {
            Some(prefix) => {
                if prefix.split('.').any(|p| p == "x" || p == "*") {
                    return Err(RegistryError::InvalidVersion {
                        input: input.to_string(),
                        reason: "a wildcard may only be the last part (1.x, 1.2.x)".into(),
                    });
                }
                let v: Version = prefix.parse().map_err(|e| match e {
                    RegistryError::InvalidVersion { reason, .. } => RegistryError::InvalidVersion {
                        input: input.to_string(),
                        reason,
                    },
                    other => other,
                })?;
                Ok(VersionPattern::Wildcard(v.0))
            }
            None => {
                if input.split('.').any(|p| p == "x" || p == "*") {
                    return Err(RegistryError::InvalidVersion {
                        input: input.to_string(),
                        reason: "a wildcard may only be the last part (1.x, 1.2.x)".into(),
                    });
                }
                Ok(VersionPattern::Exact(input.parse()?))
            }
        }
    }
}

impl fmt::Display for VersionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionPattern::Latest => f.write_str("latest"),
            VersionPattern::Exact(v) => write!(f, "{v}"),
            VersionPattern::Wildcard(p) => {
                for n in p {
                    write!(f, "{n}.")?;
                }
                f.write_str("x")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_like_the_cyclecloud_registry() {
        assert!(v("2.0") > v("1.2"));
        assert!(v("1.10") > v("1.2"));
        assert!(v("1.2.3") > v("1.2"));
        assert!(v("1.2") < v("1.2.0"));
        assert_eq!(v("01.2"), v("1.2"));
    }

    #[test]
    fn rejects_malformed_versions() {
        for bad in [
            "1..2",
            "a.b",
            "",
            "-1",
            "1.x.3",
            "1.",
            ".1",
            "1.2a",
            "99999999999",
        ] {
            let err = bad.parse::<Version>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        for bad in ["1.x.3", "x.1", "1..x", "a.x", "-1.x"] {
            let err = bad.parse::<VersionPattern>().unwrap_err().to_string();
            assert!(err.contains("invalid version"), "{bad}: {err}");
        }
    }

    #[test]
    fn bumps_increment_the_named_part() {
        assert_eq!(v("1.2").bump(BumpPart::Major), v("2.0"));
        assert_eq!(v("1.2").bump(BumpPart::Minor), v("1.3"));
        assert_eq!(v("1.2").bump(BumpPart::Patch), v("1.2.1"));
        assert_eq!(v("1.2.3").bump(BumpPart::Minor), v("1.3.0"));
        assert_eq!(v("3").bump(BumpPart::Minor), v("3.1"));
    }

    #[test]
    fn patterns_parse_and_match() {
        let p: VersionPattern = "1.x".parse().unwrap();
        assert!(p.matches(&v("1.0")) && p.matches(&v("1.10")) && p.matches(&v("1.2.3")));
        assert!(!p.matches(&v("1")) && !p.matches(&v("2.0")) && !p.matches(&v("10.1")));
        let p: VersionPattern = "1.2.x".parse().unwrap();
        assert!(p.matches(&v("1.2.7")) && !p.matches(&v("1.2")) && !p.matches(&v("1.3.0")));
        let p: VersionPattern = "1.2".parse().unwrap();
        assert!(p.matches(&v("1.2")) && !p.matches(&v("1.2.0")));
        assert_eq!("1.x".parse::<VersionPattern>().unwrap().to_string(), "1.x");
    }

    fn version() -> impl Strategy<Value = Version> {
        prop::collection::vec(prop_oneof![0u64..4, 0u64..MAX_PART], 1..5).prop_map(Version)
    }

    proptest! {
        #[test]
        fn ordering_is_total_and_numeric(a in version(), b in version(), c in version()) {
            // exactly one of <, =, >
            let n = [a < b, a == b, a > b].iter().filter(|x| **x).count();
            prop_assert_eq!(n, 1);
            // transitive
            if a <= b && b <= c { prop_assert!(a <= c); }
            // consistent with the numeric parts compared one by one
            let mut expected = std::cmp::Ordering::Equal;
            for (x, y) in a.parts().iter().zip(b.parts()) {
                if x != y { expected = x.cmp(y); break; }
            }
            if expected == std::cmp::Ordering::Equal {
                expected = a.parts().len().cmp(&b.parts().len());
            }
            prop_assert_eq!(a.cmp(&b), expected);
            // the stores' sort key orders the same way
            prop_assert_eq!(a.sort_key().cmp(&b.sort_key()), a.cmp(&b));
            // round trip through text and sort key
            prop_assert_eq!(&a.to_string().parse::<Version>().unwrap(), &a);
            prop_assert_eq!(&Version::from_sort_key(&a.sort_key()).unwrap(), &a);
        }

        #[test]
        fn wildcards_agree_with_the_order(
            prefix in prop::collection::vec(0u64..4, 1..3),
            vs in prop::collection::vec(version(), 1..40),
            a in version(), b in version(), c in version(),
        ) {
            let p = VersionPattern::Wildcard(prefix.clone());
            // matching agrees with the sort-key prefix the stores query by
            for x in vs.iter().chain([&a, &b, &c]) {
                prop_assert_eq!(p.matches(x), x.sort_key().starts_with(&p.sort_key_prefix()));
            }
            // the matching set is an interval of the order
            let mut s = [a, b, c];
            s.sort();
            if p.matches(&s[0]) && p.matches(&s[2]) { prop_assert!(p.matches(&s[1])); }
            // the highest match is the highest version among those matching
            let best = vs.iter().filter(|x| p.matches(x)).max();
            let mut sorted = vs.clone();
            sorted.sort();
            let from_sorted = sorted.iter().rev().find(|x| p.matches(x));
            prop_assert_eq!(best, from_sorted);
        }
    }
}
