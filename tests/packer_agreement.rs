//! The Packer template corpus (`tests/fixtures/packer/`, JSON and HCL2,
//! valid and invalid) through HashiCorp Packer 1.6.6 (Debian's `packer`)
//! and `bakehouse`: `packer validate` and `bakehouse validate` give the
//! same verdict on every template except those in `differences.txt`, which
//! must still differ; where both accept, `packer inspect` and `bakehouse
//! packer inspect` list the same variables and provisioners.
//!
//! Both tools run in the corpus directory with an empty environment (no
//! AWS credentials: a full `packer validate` of these builders does not
//! call AWS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packer")
}

/// Lines `KEY<sep>VALUE` of a corpus list file, without comments.
fn list(name: &str, sep: char) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(corpus().join(name)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(sep))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every template: `.json` and `.pkr.hcl` files, and directories holding
/// `.pkr.hcl` files.
fn templates() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus()).expect("the corpus directory") {
        let entry = entry.expect("a corpus entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_hcl_dir = path.is_dir()
            && std::fs::read_dir(&path)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".pkr.hcl"))
                })
                .unwrap_or(false);
        if name.ends_with(".json") || name.ends_with(".pkr.hcl") || is_hcl_dir {
            out.push(name);
        }
    }
    out.sort();
    out
}

fn run(program: &str, args: &[&str], home: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(corpus())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", home.join("packer_cache"))
        .env("USER", "builder")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (make setup installs Debian's packer)"))
}

fn packer_validate(template: &str, only: Option<&String>, home: &Path) -> Output {
    let flag = only.map(|b| format!("-only={b}"));
    let mut args = vec!["validate"];
    args.extend(flag.as_deref());
    args.push(template);
    run("packer", &args, home)
}

fn bakehouse_validate(template: &str, only: Option<&String>, home: &Path) -> Output {
    let mut args = vec!["validate", template];
    if let Some(builder) = only {
        args.extend(["--only", builder]);
    }
    run(env!("CARGO_BIN_EXE_bakehouse"), &args, home)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Variable names and provisioner types from `packer inspect`'s text, in
/// JSON mode (`Required variables:` / `Optional variables...:` lists of
/// `  name [= default]`, `Provisioners:`) or HCL2 mode (`var.NAME: ...`,
/// `    provisioners:` under each build).
fn parse_packer_inspect(text: &str) -> (Vec<String>, Vec<String>) {
    let mut vars = Vec::new();
    let mut provisioners = Vec::new();
    let mut section = "";
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Note:") {
            // JSON mode's closing note; nothing after it is listed.
            break;
        }
        if let Some(rest) = trimmed.strip_prefix("var.") {
            if let Some((name, _)) = rest.split_once(':') {
                vars.push(name.to_string());
            }
            continue;
        }
        if trimmed.ends_with(':') && !trimmed.starts_with('<') {
            section = match trimmed {
                "Required variables:" | "Optional variables and their defaults:" => "vars",
                "Provisioners:" | "provisioners:" => "provisioners",
                _ => "",
            };
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('<') || trimmed.starts_with('>') {
            continue;
        }
        match section {
            "vars" => vars.push(
                trimmed
                    .split_once('=')
                    .map_or(trimmed, |(name, _)| name)
                    .trim()
                    .to_string(),
            ),
            "provisioners" => provisioners.push(trimmed.to_string()),
            _ => {}
        }
    }
    vars.sort();
    (vars, provisioners)
}

#[test]
fn bakehouse_and_packer_agree_on_the_corpus() {
    let home = tempfile::tempdir().expect("a temporary home");
    let differences = list("differences.txt", ':');
    let only = list("only.txt", ' ');
    let templates = templates();
    assert!(
        templates.len() >= 30,
        "the corpus has {} templates",
        templates.len()
    );
    let (mut agree, mut documented, mut inspected) = (0, 0, 0);
    let mut failures = Vec::new();
    for template in &templates {
        let builder = only.get(template);
        let packer = packer_validate(template, builder, home.path());
        let ours = bakehouse_validate(template, builder, home.path());
        let (p_ok, b_ok) = (packer.status.success(), ours.status.success());
        let verdict = |ok: bool| if ok { "valid" } else { "invalid" };
        match (p_ok == b_ok, differences.get(template)) {
            (true, None) => agree += 1,
            (false, Some(_)) => documented += 1,
            (true, Some(why)) => failures.push(format!(
                "{template}: documented as a difference ({why}) but both say {}",
                verdict(p_ok)
            )),
            (false, None) => failures.push(format!(
                "{template}: packer says {}, bakehouse says {}\n--- packer:\n{}--- bakehouse:\n{}",
                verdict(p_ok),
                verdict(b_ok),
                text(&packer),
                text(&ours)
            )),
        }
        if p_ok && b_ok {
            let packer = run("packer", &["inspect", template], home.path());
            let ours = run(
                env!("CARGO_BIN_EXE_bakehouse"),
                &["--json", "packer", "inspect", template],
                home.path(),
            );
            assert!(ours.status.success(), "{template}: {}", text(&ours));
            let (p_vars, p_provisioners) = parse_packer_inspect(&text(&packer));
            let doc: serde_json::Value =
                serde_json::from_slice(&ours.stdout).expect("inspect --json prints JSON");
            let names = |key: &str, field: Option<&str>| -> Vec<String> {
                doc[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| match field {
                        Some(f) => v[f].as_str(),
                        None => v.as_str(),
                    })
                    .map(str::to_string)
                    .collect()
            };
            let mut b_vars = names("variables", Some("name"));
            b_vars.sort();
            let b_provisioners = names("provisioners", None);
            if (p_vars.clone(), p_provisioners.clone()) != (b_vars.clone(), b_provisioners.clone())
            {
                failures.push(format!(
                    "{template}: inspect differs: packer {p_vars:?} {p_provisioners:?}, bakehouse {b_vars:?} {b_provisioners:?}"
                ));
            }
            inspected += 1;
        }
    }
    println!(
        "packer agreement: {agree} of {} templates get the same verdict from packer validate (Packer 1.6.6) and bakehouse validate; {documented} documented differences; inspect compared on {inspected}",
        templates.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(agree + documented, templates.len());
}

#[test]
fn inspect_parser_reads_both_modes() {
    let json_mode = "Packer Inspect: JSON mode\nRequired variables:\n\n  region\n\nOptional variables and their defaults:\n\n  owner   = me\n\nBuilders:\n\n  amazon-ebs\n\nProvisioners:\n\n  shell\n  file\n\nNote: If your build names contain user variables or template\n";
    assert_eq!(
        parse_packer_inspect(json_mode),
        (
            vec!["owner".to_string(), "region".to_string()],
            vec!["shell".to_string(), "file".to_string()]
        )
    );
    let hcl_mode = "Packer Inspect: HCL2 mode\n\n> input-variables:\n\nvar.region: \"us-east-1\"\n\n> local-variables:\n\nlocal.ts: \"x\"\n\n> builds:\n\n  > <unnamed build 0>:\n\n    sources:\n\n      amazon-ebs.web\n\n    provisioners:\n\n      shell\n\n    post-processors:\n\n      <no post-processor>\n";
    assert_eq!(
        parse_packer_inspect(hcl_mode),
        (vec!["region".to_string()], vec!["shell".to_string()])
    );
}
