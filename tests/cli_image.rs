//! `bakehouse image ...` end to end: the real binary against the embedded
//! registry and against DynamoDB + EC2 on a moto server.

use std::path::Path;
use std::process::{Command, Output};

use bakehouse::registry::DynamoStore;
use bakehouse::testing::{moto, MotoGuard};

fn bakehouse(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bakehouse"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("BAKEHOUSE_TABLE")
        .env_remove("AWS_REGION")
        .env_remove("BAKEHOUSE_REGIONS")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: Output) -> String {
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    out
}

fn fails(o: Output) -> String {
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "expected failure\nstdout:\n{out}\nstderr:\n{err}"
    );
    err
}

fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

#[test]
fn local_images_round_trip_through_the_embedded_registry() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join(".bakehouse/images/b1");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("demo.qcow2"), b"not really a disk").unwrap();
    let d = dir.path();
    let none: &[(&str, String)] = &[];

    let out = ok(bakehouse(
        d,
        none,
        &[
            "image",
            "add",
            "--name",
            "demo",
            "--label",
            "Demo",
            "demo.qcow2",
        ],
    ));
    assert!(out.contains("stored demo 1.0"), "{out}");
    assert!(out.contains("local/demo.qcow2"), "{out}");
    assert!(d.join(".bakehouse/registry.db").exists());

    let v = json(bakehouse(
        d,
        none,
        &[
            "--json",
            "image",
            "add",
            "--name",
            "demo",
            "--bump-version",
            "minor",
            "--label",
            "Demo",
            "demo.qcow2",
        ],
    ));
    assert_eq!(v["package"]["version"], "1.1");
    assert_eq!(v["package"]["artifacts"][0]["provider"], "local");
    let digest = v["package"]["artifacts"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    // by digest too
    let v = json(bakehouse(
        d,
        none,
        &[
            "--json",
            "image",
            "add",
            "--name",
            "other",
            "--dry-run",
            &digest,
        ],
    ));
    assert_eq!(
        (v["stored"].as_bool(), v["package"]["version"].as_str()),
        (Some(false), Some("1.0"))
    );

    let v = json(bakehouse(
        d,
        none,
        &[
            "--json",
            "image",
            "resolve",
            "demo@1.x",
            "--provider",
            "local",
        ],
    ));
    assert_eq!(v["package"]["version"], "1.1");
    assert_eq!(v["artifact"]["image_id"], digest.as_str());
    let v = json(bakehouse(
        d,
        none,
        &["--json", "image", "resolve", "--label", "Demo"],
    ));
    assert_eq!(v["package"]["version"], "1.1");

    ok(bakehouse(d, none, &["image", "deprecate", "demo@1.1"]));
    let v = json(bakehouse(d, none, &["--json", "image", "resolve", "demo"]));
    assert_eq!(v["package"]["version"], "1.0");
    let out = ok(bakehouse(d, none, &["image", "list"]));
    assert!(out.contains("deprecated") && out.contains("NAME"), "{out}");
    let v = json(bakehouse(d, none, &["--json", "image", "list", "demo"]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    ok(bakehouse(d, none, &["image", "revoke", "demo@1.0"]));
    let err = fails(bakehouse(d, none, &["image", "resolve", "demo"]));
    assert!(
        err.contains("no active package version matches name \"demo\""),
        "{err}"
    );
    ok(bakehouse(d, none, &["image", "show", "demo@1.0"]));
    assert!(!d
        .join(".bakehouse/registry.db")
        .with_file_name("x")
        .exists());
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let none: &[(&str, String)] = &[];
    std::fs::create_dir_all(d.join(".bakehouse/images")).unwrap();
    std::fs::write(d.join(".bakehouse/images/a.qcow2"), b"a").unwrap();
    ok(bakehouse(
        d,
        none,
        &["image", "add", "--name", "keep", "a.qcow2"],
    ));
    let listing = || ok(bakehouse(d, none, &["--json", "image", "list"]));
    let before = listing();

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--package-version",
                "1..2",
                "a.qcow2",
            ],
            "invalid version \"1..2\": part 2 is empty",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--package-version",
                "a.b",
                "a.qcow2",
            ],
            "invalid version \"a.b\"",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--package-version",
                "",
                "a.qcow2",
            ],
            "invalid version \"\"",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--package-version=-1",
                "a.qcow2",
            ],
            "part 1 (\"-1\") is not a non-negative number",
        ),
        (
            &["image", "resolve", "keep@1.x.3"],
            "invalid version \"1.x.3\": a wildcard may only be the last part",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--provider",
                "gcs",
                "a.qcow2",
            ],
            "unknown provider \"gcs\"",
        ),
        (&["image", "add", "--name", "keep"], "no image ids given"),
        (
            &["image", "add", "--name", "keep", "a.qcow2", "a.qcow2"],
            "duplicate artifact name \"local/a.qcow2\"",
        ),
        (
            &["image", "add", "--name", "keep", "a.qcow2", "missing.qcow2"],
            "no image found for missing.qcow2",
        ),
        (
            &["image", "add", "--name", "no way", "a.qcow2"],
            "invalid name \"no way\"",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--package-version",
                "1.0",
                "a.qcow2",
            ],
            "package keep version 1.0 already exists",
        ),
        (
            &[
                "image",
                "add",
                "--name",
                "keep",
                "--bump-version",
                "minor",
                "--package-version",
                "2.0",
                "a.qcow2",
            ],
            "cannot be used with",
        ),
        (&["image", "show", "keep"], "expected NAME@VERSION"),
    ];
    for (args, message) in cases {
        let err = fails(bakehouse(d, none, args));
        assert!(
            err.contains(message),
            "{args:?}: expected {message:?} in\n{err}"
        );
    }
    assert_eq!(listing(), before, "store unchanged");
}

async fn create_ami(guard: &MotoGuard, region: &str, name: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&guard.sdk_config(region).await);
    let run = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    ec2.create_image()
        .instance_id(instance)
        .name(name)
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn ec2_images_are_found_in_every_configured_region() {
    let guard = moto().await.unwrap();
    let config = guard.sdk_config("us-east-1").await;
    DynamoStore::new(&config, "registry")
        .create_table()
        .await
        .unwrap();
    let east = create_ami(&guard, "us-east-1", "web-golden-east").await;
    let west = create_ami(&guard, "eu-west-1", "web-golden-west").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut env = guard.process_env("us-east-1");
    env.push(("BAKEHOUSE_TABLE", "registry".to_string()));
    let run = move |args: Vec<String>| {
        let env = env.clone();
        let d = d.clone();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bakehouse(&d, &env, &args)
        })
        .join()
        .unwrap()
    };
    let args = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // one id unknown: fails and stores nothing
    let err = fails(run(args(&[
        "image",
        "add",
        "--name",
        "web",
        "--provider",
        "aws",
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
        &east,
        "ami-00000000deadbeef",
    ])));
    assert!(
        err.contains(
            "no image found for ami-00000000deadbeef (searched: aws/us-east-1, aws/eu-west-1)"
        ),
        "{err}"
    );
    let v = json(run(args(&["--json", "image", "list"])));
    assert_eq!(v, serde_json::json!([]));

    // by id in one region and by name in the other
    let v = json(run(args(&[
        "--json",
        "image",
        "add",
        "--name",
        "web",
        "--label",
        "Web",
        "--provider",
        "aws",
        "--bump-version",
        "minor",
        "--region",
        "us-east-1",
        "--region",
        "eu-west-1",
        &east,
        "web-golden-west",
    ])));
    assert_eq!(v["package"]["version"], "1.0");
    let arts = v["package"]["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 2);
    assert_eq!(arts[0]["region"], "us-east-1");
    assert_eq!(arts[0]["image_id"], east.as_str());
    assert_eq!(arts[1]["region"], "eu-west-1");
    assert_eq!(arts[1]["image_id"], west.as_str());

    let v = json(run(args(&[
        "--json",
        "image",
        "resolve",
        "web@1.x",
        "--provider",
        "aws",
        "--region",
        "eu-west-1",
    ])));
    assert_eq!(v["artifact"]["image_id"], west.as_str());
    let out = ok(run(args(&["image", "show", "web@1.0"])));
    assert!(
        out.contains(&east) && out.contains("aws/eu-west-1"),
        "{out}"
    );
}
