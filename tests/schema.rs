//! `bakehouse schema`: one JSON document, a draft 2020-12 schema that
//! accepts every recipe in the repository and rejects the broken fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

fn schema() -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bakehouse"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Exactly one JSON document on stdout.
    let mut docs =
        serde_json::Deserializer::from_slice(&out.stdout).into_iter::<serde_json::Value>();
    let doc = docs.next().expect("a document").expect("valid JSON");
    assert!(docs.next().is_none(), "more than one document");
    doc
}

/// Recipe files (YAML and JSON, Packer templates and Ansible files left
/// out) under `dir`, recursively.
fn recipes_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "ansible") {
                recipes_under(&path, found);
            }
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let is_packer = ext == "json" && text.contains("\"builders\"");
        if !is_packer {
            found.push(path);
        }
    }
}

fn load(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_yaml_ng::from_str(&text).unwrap()
    }
}

#[test]
fn the_schema_accepts_every_recipe_and_rejects_the_broken_ones() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    recipes_under(&root.join("recipes"), &mut files);
    recipes_under(&root.join("tests/fixtures/recipes"), &mut files);
    recipes_under(&root.join("tests/fixtures/webhook/repo"), &mut files);
    let (mut accepted, mut rejected) = (0, 0);
    for file in &files {
        let broken = file.components().any(|c| c.as_os_str() == "invalid")
            || file.file_name().is_some_and(|n| n == "broken.yaml");
        let errors: Vec<String> = validator
            .iter_errors(&load(file))
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        if broken {
            assert!(!errors.is_empty(), "{} passed the schema", file.display());
            rejected += 1;
        } else {
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            accepted += 1;
        }
    }
    assert!(
        accepted >= 12 && rejected >= 4,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn the_schema_names_the_mistakes_validate_names() {
    let validator = jsonschema::draft202012::new(&schema()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = load(&root.join("tests/fixtures/recipes/invalid/five-kinds.yaml"));
    let paths: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| e.instance_path.to_string())
        .collect();
    // The unknown top-level field, the bad `os` and the mistyped memory.
    for want in ["", "/os", "/builder/memory_mb"] {
        assert!(paths.iter().any(|p| p == want), "{want:?} not in {paths:?}");
    }
}
