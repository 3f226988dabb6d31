//! Semantic checks of a parsed recipe: every rule that the types alone do not
//! enforce. All problems are collected; none stops the others.

use std::path::Path;

use super::checks::{
    check_account, check_env_name, check_image_id, check_mode, check_name, check_owner,
    check_prefixed_id, check_region, check_version, is_absolute_for, LocalBaseKind, RegistryRef,
};
use super::error::Problem;
use super::locate::{field_index, field_key};
use super::model::{Base, OsKind, Provisioner, Recipe, ShellSource, VersionPolicy};
use super::schedule::Schedule;

/// Paths that `clean.extra_paths` may never remove.
const PROTECTED_PATHS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/sbin", "/sys", "/usr", "/var", "/tmp",
];

struct Checker<'a> {
    file: &'a Path,
    dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(self.file, field, message));
    }

    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.report(field, message);
        }
    }

    /// `rel` (as written in the recipe) must exist below the recipe's
    /// directory, as a file (`want_dir == Some(false)`), a directory
    /// (`Some(true)`) or either (`None`).
    fn exists(&mut self, field: String, rel: &str, want_dir: Option<bool>) {
        let path = self.dir.join(rel);
        let what = match want_dir {
            Some(true) => "directory",
            Some(false) => "file",
            None => "file or directory",
        };
        if rel.is_empty() {
            self.report(field, format!("a {what} path is required"));
            return;
        }
        match (std::fs::metadata(&path), want_dir) {
            (Err(_), _) => self.report(field, format!("{what} {rel} does not exist")),
            (Ok(m), Some(true)) if !m.is_dir() => {
                self.report(field, format!("{rel} is not a directory"))
            }
            (Ok(m), Some(false)) if m.is_dir() => {
                self.report(field, format!("{rel} is a directory, expected a file"))
            }
            _ => {}
        }
    }
}

/// Every semantic problem of `recipe`, loaded from `file` in `dir`.
pub(crate) fn check(recipe: &Recipe, file: &Path, dir: &Path) -> Vec<Problem> {
    let mut c = Checker {
        file,
        dir,
        problems: Vec::new(),
    };
    c.check("name", check_name(&recipe.name));
    if recipe.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        c.report(
            "label",
            "label must not be empty (leave it out to use the name)",
        );
    }
    if let VersionPolicy::Exact(v) = &recipe.version {
        c.check("version.version", check_version(v));
    }
    check_base(&mut c, &recipe.base);
    check_builder(&mut c, recipe);
    for (i, p) in recipe.provisioners.iter().enumerate() {
        check_provisioner(&mut c, &field_index("provisioners", i), p, recipe.os);
        let bootstraps = matches!(p, Provisioner::Salt(s) if s.bootstrap);
        if bootstraps && matches!(recipe.base, Base::Path(_)) && !recipe.builder.network {
            c.report(
                field_key(&field_index("provisioners", i), "bootstrap"),
                "bootstrap installs Salt from PyPI: a local build needs `builder.network: true`",
            );
        }
    }
    check_clean(&mut c, recipe);
    check_publish(&mut c, recipe);
    check_retain(&mut c, recipe);
    for (i, t) in recipe.test.iter().enumerate() {
        if t.trim().is_empty() {
            c.report(field_index("test", i), "test command must not be empty");
        }
    }
    if let Some(s) = &recipe.schedule {
        c.check("schedule", Schedule::parse(s).map(|_| ()));
    }
    for (i, p) in recipe.paths.iter().enumerate() {
        if let Err(e) = globset::Glob::new(p) {
            c.report(
                field_index("paths", i),
                format!("invalid glob {p:?}: {}", e.kind()),
            );
        }
    }
    c.problems
}

fn check_base(c: &mut Checker, base: &Base) {
    match base {
        Base::Image(id) => c.check("base.image", check_image_id(id)),
        Base::Filter(f) => {
            if f.name.trim().is_empty() {
                c.report("base.filter.name", "filter name must not be empty");
            }
            for (i, o) in f.owners.iter().enumerate() {
                c.check(field_index("base.filter.owners", i), check_owner(o));
            }
        }
        Base::Registry(r) => c.check("base.registry", RegistryRef::parse(r).map(|_| ())),
        Base::Path(p) => {
            if LocalBaseKind::from_path(&c.dir.join(p)).is_none() {
                c.report(
                    "base.path",
                    format!("{p} is neither a directory nor a .tar, .tar.gz, .tgz, .tar.zst, .raw, .img or .qcow2 file"),
                );
            }
        }
    }
}

fn check_builder(c: &mut Checker, recipe: &Recipe) {
    let b = &recipe.builder;
    if let Some(t) = &b.instance_type {
        let ok = t.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && t.bytes()
                    .all(|x| x.is_ascii_alphanumeric() || x == b'.' || x == b'-')
        });
        if !ok {
            c.report(
                "builder.instance_type",
                format!("{t:?} does not look like an EC2 instance type (such as \"t3.small\")"),
            );
        }
    }
    if let Some(s) = &b.subnet_id {
        c.check("builder.subnet_id", check_prefixed_id(s, "subnet-"));
    }
    for (i, sg) in b.security_group_ids.iter().enumerate() {
        c.check(
            field_index("builder.security_group_ids", i),
            check_prefixed_id(sg, "sg-"),
        );
    }
    if let Some(size) = b.volume_size_gb {
        if !(1..=16384).contains(&size) {
            c.report(
                "builder.volume_size_gb",
                format!("volume size {size} GiB must be between 1 and 16384"),
            );
        }
    }
    if let Some(minutes) = b.time_limit_minutes {
        if !(1..=1440).contains(&minutes) {
            c.report(
                "builder.time_limit_minutes",
                format!("time limit {minutes} must be between 1 and 1440 minutes"),
            );
        }
    }
    for (field, value, range) in [
        ("builder.memory_mb", b.memory_mb, 64..=1_048_576),
        ("builder.pids_max", b.pids_max, 16..=1_000_000),
        ("builder.cpus", b.cpus, 1..=1024),
    ] {
        if let Some(v) = value.filter(|v| !range.contains(v)) {
            c.report(
                field,
                format!("{v} must be between {} and {}", range.start(), range.end()),
            );
        }
    }
    for (field, size) in [
        (
            "builder.disk.size_mb",
            b.disk.as_ref().and_then(|d| d.size_mb),
        ),
        ("builder.disk_size", b.disk_size),
    ] {
        if let Some(size) = size.filter(|s| !(256..=2_097_152).contains(s)) {
            c.report(
                field,
                format!("{size} must be between 256 and 2097152 (2 TiB)"),
            );
        }
    }
    if b.disk.is_some() && b.disk_size.is_some() {
        c.report(
            "builder.disk_size",
            "grows a whole-disk base; with builder.disk (a disk made from a tree) set builder.disk.size_mb instead",
        );
    }
    if b.kms_key_id.as_deref().is_some_and(|k| k.trim().is_empty()) {
        c.report("builder.kms_key_id", "KMS key id must not be empty");
    }
    if b.instance_profile
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        c.report(
            "builder.instance_profile",
            "instance profile must not be empty",
        );
    }
    check_tags(c, "builder.tags", &b.tags);
}

fn check_provisioner(c: &mut Checker, field: &str, p: &Provisioner, os: OsKind) {
    let linux_only = match p {
        Provisioner::Shell(_) => Some("shell"),
        Provisioner::Salt(_) => Some("salt"),
        Provisioner::Ansible(_) => Some("ansible"),
        Provisioner::File(_) | Provisioner::Powershell(_) => None,
    };
    if let Some(kind) = linux_only.filter(|_| os == OsKind::Windows) {
        c.report(
            field_key(field, "type"),
            format!(
                "a {kind} provisioner runs on Linux images only; this recipe has `os: windows` (use `type: powershell`)"
            ),
        );
    }
    if matches!(p, Provisioner::Powershell(_)) && os == OsKind::Linux {
        c.report(
            field_key(field, "type"),
            "a powershell provisioner runs on Windows images only; this recipe has `os: linux` (use `type: shell`)",
        );
    }
    match p {
        Provisioner::Shell(s) | Provisioner::Powershell(s) => {
            match &s.source {
                ShellSource::Script(path) => {
                    c.exists(field_key(field, "script"), path, Some(false))
                }
                ShellSource::Inline(lines) => {
                    if lines.iter().all(|l| l.trim().is_empty()) && !lines.is_empty() {
                        c.report(field_key(field, "inline"), "inline commands are all empty");
                    }
                }
            }
            for name in s.env.keys() {
                c.check(
                    field_key(&field_key(field, "env"), name),
                    check_env_name(name),
                );
            }
        }
        Provisioner::File(f) => {
            c.exists(field_key(field, "source"), &f.source, None);
            if !is_absolute_for(&f.destination, os == OsKind::Windows) {
                c.report(
                    field_key(field, "destination"),
                    format!("destination {:?} must be an absolute path", f.destination),
                );
            }
            if let Some(mode) = &f.mode {
                c.check(field_key(field, "mode"), check_mode(mode));
            }
        }
        Provisioner::Salt(s) => {
            c.exists(field_key(field, "state_tree"), &s.state_tree, Some(true));
            if let Some(pillar) = &s.pillar_root {
                c.exists(field_key(field, "pillar_root"), pillar, Some(true));
            }
            for (i, state) in s.states.iter().enumerate() {
                if state.trim().is_empty() || state.contains(char::is_whitespace) {
                    c.report(
                        field_index(&field_key(field, "states"), i),
                        format!("invalid state name {state:?}"),
                    );
                }
            }
        }
        Provisioner::Ansible(a) => c.exists(field_key(field, "playbook"), &a.playbook, Some(false)),
    }
}

fn check_clean(c: &mut Checker, recipe: &Recipe) {
    let windows = recipe.os == OsKind::Windows;
    for (i, path) in recipe.clean.extra_paths.iter().enumerate() {
        let field = field_index("clean.extra_paths", i);
        let normalized = path.trim_end_matches('/');
        if !is_absolute_for(path, windows) {
            c.report(field, format!("{path:?} must be an absolute path"));
        } else if path.split(['/', '\\']).any(|part| part == "..") {
            c.report(field, format!("{path:?} must not contain `..`"));
        } else if path.contains(['\n', '\r']) {
            c.report(field, "path must not contain line breaks");
        } else if PROTECTED_PATHS.contains(&normalized) || normalized.is_empty() {
            c.report(
                field,
                format!("refusing to remove {path:?}: it is a system directory"),
            );
        }
    }
}

fn check_publish(c: &mut Checker, recipe: &Recipe) {
    let p = &recipe.publish;
    for (i, region) in p.regions.iter().enumerate() {
        let field = field_index("publish.regions", i);
        if p.regions[..i].contains(region) {
            c.report(field, format!("region {region} is listed twice"));
        } else {
            c.check(field, check_region(region));
        }
    }
    for (i, account) in p.accounts.iter().enumerate() {
        c.check(field_index("publish.accounts", i), check_account(account));
    }
    check_tags(c, "publish.tags", &p.tags);
}

fn check_retain(c: &mut Checker, recipe: &Recipe) {
    let Some(r) = &recipe.retain else { return };
    if r.versions == Some(0) {
        c.report(
            "retain.versions",
            "must be at least 1 (the newest version is always kept)".to_string(),
        );
    }
    if let (Some(dep), Some(del)) = (r.deprecate_after_days, r.delete_after_days) {
        if del < dep {
            c.report(
                "retain.delete_after_days",
                format!("{del} is before deprecate_after_days ({dep}): versions would be deleted before they are deprecated"),
            );
        }
    }
    if *r == crate::recipe::Retention::default() {
        c.report(
            "retain",
            "sets nothing: give versions, deprecate_after_days, delete_after_days or revoked_grace_days".to_string(),
        );
    }
}

fn check_tags(c: &mut Checker, field: &str, tags: &std::collections::BTreeMap<String, String>) {
    for (key, value) in tags {
        let f = field_key(field, key);
        if key.is_empty() || key.chars().count() > 128 {
            c.report(f, "tag keys must be 1 to 128 characters");
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            c.report(
                f,
                format!("tag key {key:?}: the `aws:` prefix is reserved by AWS"),
            );
        } else if value.chars().count() > 256 {
            c.report(f, "tag values must be at most 256 characters");
        }
    }
}
