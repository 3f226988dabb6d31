//! Syntax rules for the small values a recipe holds: names, versions, AWS
//! identifiers, registry references and local base paths. Each check returns
//! `Err(message)` naming what is wrong.

use std::path::Path;

/// Longest accepted package name (the EC2 image name limit is 128).
pub const MAX_NAME_LEN: usize = 128;

/// A package name: `[a-z0-9][a-z0-9._-]*`, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let rule =
        "names are lowercase letters, digits, '.', '_' and '-', starting with a letter or digit";
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("name must not be empty".to_string()),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(format!("invalid name {name:?}: {rule}"))
        }
        Some(_) => {}
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
    {
        return Err(format!(
            "invalid name {name:?}: character {bad:?} not allowed; {rule}"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name is {} characters long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    Ok(())
}

/// A version literal: dotted non-negative numbers (`1`, `2.0`, `1.10.3`),
/// exactly as the registry parses it.
pub fn check_version(version: &str) -> Result<(), String> {
    version
        .parse::<crate::registry::Version>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An AWS region name such as `eu-west-1`, `us-gov-west-1`, `cn-north-1`.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let alpha = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let ok = (3..=4).contains(&parts.len())
        && parts.first().is_some_and(|p| p.len() == 2 && alpha(p))
        && parts[1..parts.len() - 1].iter().all(|p| alpha(p))
        && parts
            .last()
            .is_some_and(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{region:?} does not look like an AWS region (such as \"eu-west-1\")"
        ))
    }
}

/// A 12-digit AWS account id.
pub fn check_account(account: &str) -> Result<(), String> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("account id {account:?} must be exactly 12 digits"))
    }
}

/// An image owner for a filter: an account id or an alias.
pub fn check_owner(owner: &str) -> Result<(), String> {
    let alias = !owner.is_empty()
        && owner.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && !owner.starts_with('-');
    if alias || check_account(owner).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "owner {owner:?} must be a 12-digit account id or an alias such as \"amazon\" or \"self\""
        ))
    }
}

/// An EC2 image id: `ami-` and 8 to 17 lowercase hex digits.
pub fn check_image_id(id: &str) -> Result<(), String> {
    let ok = id.strip_prefix("ami-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image id {id:?} must look like \"ami-0123456789abcdef0\""
        ))
    }
}

/// A resource id with a fixed prefix (`subnet-`, `sg-`).
pub fn check_prefixed_id(id: &str, prefix: &str) -> Result<(), String> {
    let ok = id
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} must look like \"{prefix}0123456789abcdef0\""
        ))
    }
}

/// A shell environment variable name.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ))
    }
}

/// An octal file mode of 3 or 4 digits (`"644"`, `"0755"`).
pub fn check_mode(mode: &str) -> Result<(), String> {
    if (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        Ok(())
    } else {
        Err(format!(
            "mode {mode:?} must be 3 or 4 octal digits such as \"0644\""
        ))
    }
}

/// A reference to an image in the registry: `name-or-label[@version]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Package name or label.
    pub name: String,
    /// A literal (`1.2`) or wildcard (`1.x`) version; `None` means latest.
    pub version: Option<String>,
}

impl RegistryRef {
    /// Parses `name`, `name@1.2` or `name@1.x`.
    pub fn parse(text: &str) -> Result<RegistryRef, String> {
        let (name, version) = match text.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        if name.trim().is_empty() || name.trim() != name {
            return Err(format!(
                "registry reference {text:?}: expected `name` or `name@version` (e.g. \"debian-base@1.x\")"
            ));
        }
        if let Some(v) = version {
            check_version_pattern(v).map_err(|m| format!("registry reference {text:?}: {m}"))?;
        }
        Ok(RegistryRef {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// Whether the version is a wildcard such as `1.x`.
    pub fn is_wildcard(&self) -> bool {
        self.version
            .as_deref()
            .is_some_and(|v| v.split('.').any(|p| p == "x" || p == "*"))
    }
}

/// A version literal, or a literal prefix ending in a wildcard part
/// (`1.x`, `1.2.x`), exactly as the registry resolves it.
pub fn check_version_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("invalid version \"\": nothing after `@`; use a literal (\"1.2\") or a wildcard (\"1.x\")".into());
    }
    pattern
        .parse::<crate::registry::VersionPattern>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The kinds of local base a `base.path` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalBaseKind {
    /// A root filesystem directory.
    Directory,
    /// `.tar`
    Tar,
    /// `.tar.gz` or `.tgz`
    TarGz,
    /// `.tar.zst` or `.tzst`
    TarZst,
    /// `.raw` or `.img` disk or filesystem image.
    Raw,
    /// `.qcow2` disk image.
    Qcow2,
}

impl LocalBaseKind {
    /// The kind from the file name, or `Directory` for an existing
    /// directory; `None` when neither.
    pub fn from_path(path: &Path) -> Option<LocalBaseKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let kinds = [
            (".tar.gz", LocalBaseKind::TarGz),
            (".tgz", LocalBaseKind::TarGz),
            (".tar.zst", LocalBaseKind::TarZst),
            (".tzst", LocalBaseKind::TarZst),
            (".tar", LocalBaseKind::Tar),
            (".raw", LocalBaseKind::Raw),
            (".img", LocalBaseKind::Raw),
            (".qcow2", LocalBaseKind::Qcow2),
        ];
        kinds
            .iter()
            .find(|(ext, _)| name.ends_with(ext))
            .map(|(_, kind)| *kind)
            .or_else(|| path.is_dir().then_some(LocalBaseKind::Directory))
    }
}

/// Whether `path` is absolute for `os` (`/...`; on Windows also `C:\...`).
pub fn is_absolute_for(path: &str, windows: bool) -> bool {
    let bytes = path.as_bytes();
    path.starts_with('/')
        || (windows
            && bytes.len() >= 3
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && (bytes[2] == b'\\' || bytes[2] == b'/'))
}
