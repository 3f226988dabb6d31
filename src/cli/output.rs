//! Rendering registry records as tables or JSON.

use std::io::Write;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

use super::CliError;
use crate::registry::PackageVersion;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human tables.
    Table,
    /// JSON for scripts.
    Json,
}

/// Writes `value` as pretty JSON.
pub fn json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// One row per package version.
pub fn versions(out: &mut dyn Write, packages: &[PackageVersion]) -> Result<(), CliError> {
    let mut t = table(&[
        "NAME",
        "VERSION",
        "LABEL",
        "OS",
        "STATUS",
        "ARTIFACTS",
        "CREATED",
    ]);
    for p in packages {
        t.add_row(vec![
            p.name.clone(),
            p.version.to_string(),
            p.label.clone(),
            p.os.to_string(),
            p.status.to_string(),
            p.artifacts.len().to_string(),
            p.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// A package version with all its fields and one row per artifact.
pub fn version_detail(out: &mut dyn Write, p: &PackageVersion) -> Result<(), CliError> {
    let mut t = table(&["FIELD", "VALUE"]);
    let dash = || "-".to_string();
    t.add_row(vec!["Name".into(), p.name.clone()]);
    t.add_row(vec!["Version".into(), p.version.to_string()]);
    t.add_row(vec!["Label".into(), p.label.clone()]);
    t.add_row(vec!["PackageType".into(), p.package_type.clone()]);
    t.add_row(vec!["OS".into(), p.os.to_string()]);
    t.add_row(vec!["Status".into(), p.status.to_string()]);
    t.add_row(vec![
        "BakeKey".into(),
        p.bake_key.clone().unwrap_or_else(dash),
    ]);
    t.add_row(vec!["Parent".into(), p.parent.clone().unwrap_or_else(dash)]);
    t.add_row(vec![
        "Trigger".into(),
        p.trigger
            .as_ref()
            .and_then(|t| serde_json::to_string(t).ok())
            .unwrap_or_else(dash),
    ]);
    t.add_row(vec![
        "Build".into(),
        p.build_id.clone().unwrap_or_else(dash),
    ]);
    t.add_row(vec!["Created".into(), p.created_at.to_rfc3339()]);
    writeln!(out, "{t}")?;
    let mut a = table(&[
        "ARTIFACT", "PROVIDER", "REGION", "IMAGE ID", "ACCOUNT", "PATH",
    ]);
    for art in &p.artifacts {
        a.add_row(vec![
            art.name.clone(),
            art.provider.to_string(),
            art.region.clone().unwrap_or_else(dash),
            art.image_id.clone(),
            art.account.clone().unwrap_or_else(dash),
            art.path.clone().unwrap_or_else(dash),
        ]);
    }
    writeln!(out, "{a}")?;
    Ok(())
}
