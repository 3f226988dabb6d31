//! Which versions of a package a retention policy deprecates or deletes:
//! pure rules over the registry's records, applied by [`super::Lifecycle`].

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::recipe::Retention;
use crate::registry::{PackageVersion, Status};

/// How long a revoked version keeps its images when the policy says nothing.
pub const DEFAULT_REVOKED_GRACE_DAYS: u32 = 7;

/// What happens to one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Status `deprecated`; in AWS its AMIs get a deprecation time.
    Deprecate,
    /// Its images (and their snapshots or files) are removed; status
    /// `deleted`.
    Delete,
}

/// One decision of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `name@version`.
    pub version: String,
    /// What is done, or `None` for a version the policy would remove but a
    /// rule keeps (the reason says which).
    pub action: Option<Action>,
    /// Why.
    pub reason: String,
}

/// The `name@version` text parents and running builds refer to.
pub fn reference(p: &PackageVersion) -> String {
    format!("{}@{}", p.name, p.version)
}

/// The versions that must keep their images whatever a policy says: the
/// parent of every active version (of any package) and the base of every
/// running build (`in_use`, as `name@version`).
pub fn protected(all: &[PackageVersion], in_use: &[String]) -> HashSet<String> {
    all.iter()
        .filter(|p| p.status == Status::Active)
        .filter_map(|p| p.parent.clone())
        .chain(in_use.iter().cloned())
        .collect()
}

/// The decisions for one package's `versions` (any order) under `policy`
/// at `now`. Deleted versions are done with; the newest version is never
/// touched; a protected version is not deleted (a decision says it was
/// kept and why).
pub fn plan(
    versions: &[PackageVersion],
    policy: &Retention,
    protected: &HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut live: Vec<&PackageVersion> = versions
        .iter()
        .filter(|p| p.status != Status::Deleted)
        .collect();
    live.sort_by(|a, b| b.version.cmp(&a.version));
    let older_than =
        |p: &PackageVersion, days: u32| now - p.created_at > Duration::days(days.into());
    let mut out = Vec::new();
    let mut active_seen = 0u32;
    for (i, p) in live.iter().enumerate() {
        let active = p.status == Status::Active;
        if active {
            active_seen += 1;
        }
        if i == 0 {
            continue; // the newest version
        }
        let delete_reason = if let (true, Some(n)) = (active, policy.versions) {
            (active_seen > n).then(|| format!("beyond the newest {n} active versions"))
        } else {
            None
        }
        .or_else(|| {
            policy
                .delete_after_days
                .filter(|d| older_than(p, *d))
                .map(|d| format!("registered more than {d} days ago"))
        })
        .or_else(|| {
            let grace = policy
                .revoked_grace_days
                .unwrap_or(DEFAULT_REVOKED_GRACE_DAYS);
            (p.status == Status::Revoked && older_than(p, grace))
                .then(|| format!("revoked, past the {grace}-day grace"))
        });
        let version = reference(p);
        if let Some(reason) = delete_reason {
            if protected.contains(&version) {
                out.push(Decision {
                    version,
                    action: None,
                    reason: format!(
                        "kept although {reason}: the parent of an active version or the base of a running build"
                    ),
                });
            } else {
                out.push(Decision {
                    version,
                    action: Some(Action::Delete),
                    reason,
                });
            }
            continue;
        }
        if let (true, Some(d)) = (active, policy.deprecate_after_days) {
            if older_than(p, d) {
                out.push(Decision {
                    version,
                    action: Some(Action::Deprecate),
                    reason: format!("registered more than {d} days ago"),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Os, Version};

    fn version(v: &str, status: Status, days_old: i64, parent: Option<&str>) -> PackageVersion {
        PackageVersion {
            name: "web".into(),
            version: v.parse::<Version>().unwrap(),
            label: "web".into(),
            package_type: "image".into(),
            os: Os::Linux,
            status,
            bake_key: None,
            parent: parent.map(str::to_string),
            trigger: None,
            build_id: None,
            created_at: Utc::now() - Duration::days(days_old),
            artifacts: Vec::new(),
        }
    }

    fn actions(d: &[Decision]) -> Vec<(String, Option<Action>)> {
        d.iter().map(|d| (d.version.clone(), d.action)).collect()
    }

    fn five() -> Vec<PackageVersion> {
        (1..=5)
            .map(|i| version(&format!("1.{i}"), Status::Active, 10 - i, None))
            .collect()
    }

    #[test]
    fn keep_the_newest_n_active_versions() {
        let policy = Retention {
            versions: Some(2),
            ..Default::default()
        };
        let d = plan(&five(), &policy, &HashSet::new(), Utc::now());
        assert_eq!(
            actions(&d),
            [
                ("web@1.3".to_string(), Some(Action::Delete)),
                ("web@1.2".to_string(), Some(Action::Delete)),
                ("web@1.1".to_string(), Some(Action::Delete)),
            ]
        );
        assert_eq!(d[0].reason, "beyond the newest 2 active versions");
    }

    #[test]
    fn a_parent_of_an_active_version_and_a_running_base_are_kept() {
        let mut all = five();
        all[4].parent = Some("web@1.2".into());
        let protected = protected(&all, &["web@1.1".to_string()]);
        let policy = Retention {
            versions: Some(2),
            ..Default::default()
        };
        let d = plan(&all, &policy, &protected, Utc::now());
        assert_eq!(
            actions(&d),
            [
                ("web@1.3".to_string(), Some(Action::Delete)),
                ("web@1.2".to_string(), None),
                ("web@1.1".to_string(), None),
            ]
        );
        assert!(d[1].reason.starts_with("kept although beyond the newest 2"));
    }

    #[test]
    fn a_deprecated_parent_protects_nothing() {
        let mut all = five();
        all[4].status = Status::Deprecated;
        all[4].parent = Some("web@1.1".into());
        assert!(protected(&all, &[]).is_empty());
    }

    #[test]
    fn the_newest_version_is_never_touched_whatever_its_age_or_status() {
        let all = vec![
            version("2.0", Status::Revoked, 400, None),
            version("1.0", Status::Active, 500, None),
        ];
        let policy = Retention {
            versions: Some(1),
            deprecate_after_days: Some(30),
            delete_after_days: Some(365),
            revoked_grace_days: None,
        };
        let d = plan(&all, &policy, &HashSet::new(), Utc::now());
        // 1.0 is the only active version (within the newest 1) but older
        // than a year; 2.0, although revoked and old, is the newest.
        assert_eq!(actions(&d), [("web@1.0".to_string(), Some(Action::Delete))]);
        assert_eq!(d[0].reason, "registered more than 365 days ago");
    }

    #[test]
    fn age_deprecates_then_deletes_and_revoked_versions_go_after_the_grace() {
        let all = vec![
            version("1.5", Status::Active, 1, None),
            version("1.4", Status::Active, 20, None),
            version("1.3", Status::Active, 40, None),
            version("1.2", Status::Deprecated, 100, None),
            version("1.1", Status::Revoked, 8, None),
            version("1.0", Status::Revoked, 3, None),
            version("0.9", Status::Deleted, 500, None),
        ];
        let policy = Retention {
            deprecate_after_days: Some(30),
            delete_after_days: Some(90),
            ..Default::default()
        };
        let d = plan(&all, &policy, &HashSet::new(), Utc::now());
        assert_eq!(
            actions(&d),
            [
                ("web@1.3".to_string(), Some(Action::Deprecate)),
                ("web@1.2".to_string(), Some(Action::Delete)),
                ("web@1.1".to_string(), Some(Action::Delete)),
            ]
        );
        assert_eq!(d[2].reason, "revoked, past the 7-day grace");
    }

    #[test]
    fn a_second_plan_after_applying_changes_nothing() {
        let mut all = five();
        let policy = Retention {
            versions: Some(2),
            ..Default::default()
        };
        for d in plan(&all, &policy, &HashSet::new(), Utc::now()) {
            let p = all.iter_mut().find(|p| reference(p) == d.version).unwrap();
            p.status = Status::Deleted;
        }
        assert!(plan(&all, &policy, &HashSet::new(), Utc::now()).is_empty());
    }
}
