//! Packer's `manifest` post-processor: after a successful build started
//! from a template that has one, the CLI appends the build to the
//! manifest file Packer would write (`builds` with `name`, `builder_type`,
//! `build_time`, `files`, `artifact_id`, `packer_run_uuid`, `custom_data`,
//! and `last_run_uuid`), from the registered version. The registry record
//! stays the source of truth; this file is for tools that read Packer's.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::registry::{PackageVersion, Provider};

/// What a template's `manifest` post-processor asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRequest {
    /// The file, relative to the working directory as in Packer
    /// (default `packer-manifest.json`).
    pub output: String,
    /// Only file names in `files` and local artifact ids.
    pub strip_path: bool,
    /// Leave out `build_time`.
    pub strip_time: bool,
    /// `custom_data`, rendered.
    pub custom_data: BTreeMap<String, String>,
    /// The build's name (the builder's `name`, else its type).
    pub build_name: String,
    /// The builder's type (`amazon-ebs`, `qemu`).
    pub builder_type: String,
}

impl ManifestRequest {
    /// The manifest entry of `version`, for run `run_uuid`.
    pub fn entry(&self, version: &PackageVersion, run_uuid: &str) -> Value {
        let name = |path: &str| {
            if self.strip_path {
                Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.to_string())
            } else {
                path.to_string()
            }
        };
        let mut ids = Vec::new();
        let mut files = Vec::new();
        for a in &version.artifacts {
            match (a.provider, &a.path) {
                (Provider::Local, Some(path)) => {
                    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    files.push(json!({"name": name(path), "size": size}));
                    ids.push(name(path));
                }
                _ => ids.push(match &a.region {
                    Some(region) => format!("{region}:{}", a.image_id),
                    None => a.image_id.clone(),
                }),
            }
        }
        let mut entry = json!({
            "name": self.build_name,
            "builder_type": self.builder_type,
            "files": if files.is_empty() { Value::Null } else { Value::Array(files) },
            "artifact_id": ids.join(","),
            "packer_run_uuid": run_uuid,
            "custom_data": if self.custom_data.is_empty() { Value::Null } else { json!(self.custom_data) },
        });
        if !self.strip_time {
            entry["build_time"] = json!(version.created_at.timestamp());
        }
        entry
    }

    /// Appends `version` to the manifest file (made if absent, as Packer
    /// does) and returns the file's path.
    pub fn append(
        &self,
        dir: &Path,
        version: &PackageVersion,
        run_uuid: &str,
    ) -> Result<std::path::PathBuf, String> {
        let path = dir.join(&self.output);
        let mut doc = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|d| d.get("builds").is_some_and(Value::is_array))
                .ok_or_else(|| format!("{}: not a Packer manifest", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({"builds": []}),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Some(builds) = doc.get_mut("builds").and_then(Value::as_array_mut) {
            builds.push(self.entry(version, run_uuid));
        }
        doc["last_run_uuid"] = json!(run_uuid);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}
