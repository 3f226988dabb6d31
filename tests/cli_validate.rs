//! `bakehouse validate`: every problem reported with file, line, field and
//! reason; exit status non-zero; valid recipes pass.

use std::process::Command;

fn validate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bakehouse"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_recipes_are_valid() {
    let (ok, out, err) = validate(&[
        "recipes/demo.yaml",
        "recipes/web-aws.yaml",
        "recipes/packer-example.json",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 recipe(s) valid"), "{out}");
}

#[test]
fn every_problem_is_named_with_file_line_and_field() {
    let file = "tests/fixtures/recipes/invalid/many-problems.yaml";
    let (ok, out, err) = validate(&[file]);
    assert!(!ok);
    assert!(
        err.contains("problem(s) found; nothing was launched"),
        "{err}"
    );
    for expected in [
        ":3:11: version.version: invalid version \"1..2\"",
        ": provisioners[2].script: file scripts/missing.sh does not exist",
        ": schedule: cron(0 4 * * MON *): one of day-of-month or day-of-week must be `?`",
        ": publish.accounts[0]: account id \"12345\" must be exactly 12 digits",
        ": paths[0]: invalid glob \"files/[a\"",
    ] {
        assert!(
            out.contains(file) && out.contains(expected),
            "missing {expected:?} in\n{out}"
        );
    }
    assert!(out.lines().count() >= 10, "{out}");
}

#[test]
fn unknown_fields_and_wrong_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "name: x\nbase: {image: ami-12345678}\nprovisioner: []\n",
    )
    .unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        "{\"name\": \"x\", \"base\": {\"image\": \"ami-12345678\"}, \"test\": 3}",
    )
    .unwrap();
    let (ok, out, _) = validate(&[unknown.to_str().unwrap(), wrong.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("unknown.yaml:3:1: provisioner: unknown field `provisioner`"),
        "{out}"
    );
    assert!(out.contains("did you mean `provisioners`"), "{out}");
    assert!(
        out.contains("wrong.json:1:") && out.contains("test: invalid type"),
        "{out}"
    );
}
