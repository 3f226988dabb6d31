//! `bakehouse image ...` end to end: the real binary against the embedded
//! registry and against DynamoDB + EC2 on a moto server.

mod support;

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
    std::fs::write(
        images.join("demo.qcow2"),
        b"QFI\xfb\0\0\0\x03 a small qcow2 header",
    )
    .unwrap();
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
    std::fs::write(d.join(".bakehouse/images/a.qcow2"), b"QFI\xfb\0\0\0\x03 a").unwrap();
    std::fs::write(d.join("hostname.img"), b"myhost\n").unwrap();
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
            // Any file is not an image: its content is checked.
            &["image", "add", "--name", "keep", "hostname.img"],
            "image file \"hostname.img\": not an image",
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
    support::image_from_instance(&ec2, name).await
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

/// 64 concurrent `image add --bump-version minor` on a database that does
/// not exist yet: no "database is locked", 64 contiguous versions.
#[test]
fn concurrent_adds_on_a_fresh_database_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join(".bakehouse/images")).unwrap();
    std::fs::write(d.join(".bakehouse/images/a.qcow2"), b"QFI\xfb\0\0\0\x03 a").unwrap();
    let children: Vec<_> = (0..64)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_bakehouse"))
                .current_dir(d)
                .args([
                    "-q",
                    "image",
                    "add",
                    "--name",
                    "busy",
                    "--bump-version",
                    "minor",
                    "a.qcow2",
                ])
                .env_remove("BAKEHOUSE_TABLE")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let failures: Vec<String> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let list = json(bakehouse(d, &[], &["--json", "image", "list", "busy"]));
    let mut minors: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["version"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    minors.sort();
    assert_eq!(minors, (0..64).collect::<Vec<u64>>());
}

/// CycleCloud's example verbatim against moto: `order66` and
/// `ubuntu14_rstudio` in one region plus `order66` in a second one, added as
/// one Windows package labelled "My Image"; resolved by that label; a
/// later bump without --os/--label keeps both.
#[tokio::test]
async fn cyclecloud_example_registers_every_match_and_resolves_by_label() {
    let guard = moto().await.unwrap();
    DynamoStore::new(&guard.sdk_config("us-east-1").await, "registry")
        .create_table()
        .await
        .unwrap();
    let order66_east = create_ami(&guard, "us-east-1", "order66").await;
    let rstudio_east = create_ami(&guard, "us-east-1", "ubuntu14_rstudio").await;
    let order66_west = create_ami(&guard, "eu-west-1", "order66").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut env = guard.process_env("us-east-1");
    env.push(("BAKEHOUSE_TABLE", "registry".to_string()));
    env.push(("BAKEHOUSE_REGIONS", "us-east-1,eu-west-1".to_string()));
    let run = move |args: &[&str]| {
        let (env, d) = (env.clone(), d.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bakehouse(&d, &env, &args)
        })
        .join()
        .unwrap()
    };
    let v = json(run(&[
        "--json",
        "image",
        "add",
        "--name",
        "custom.image",
        "--label",
        "My Image",
        "--os",
        "windows",
        "order66",
        "ubuntu14_rstudio",
    ]));
    let ids: Vec<&str> = v["package"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["image_id"].as_str().unwrap())
        .collect();
    for id in [&order66_east, &rstudio_east, &order66_west] {
        assert!(ids.contains(&id.as_str()), "{id} not registered: {v:#}");
    }
    let names: std::collections::HashSet<&str> = v["package"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "artifact names are unique: {v:#}");
    // The first image given wins in its region.
    let east = json(run(&[
        "--json",
        "image",
        "resolve",
        "--label",
        "My Image",
        "--provider",
        "aws",
        "--region",
        "us-east-1",
    ]));
    assert_eq!(
        east["artifact"]["image_id"],
        order66_east.as_str(),
        "{east:#}"
    );
    let west = json(run(&[
        "--json",
        "image",
        "resolve",
        "--label",
        "My Image",
        "--version",
        "1.x",
        "--provider",
        "aws",
        "--region",
        "eu-west-1",
    ]));
    assert_eq!(
        west["artifact"]["image_id"],
        order66_west.as_str(),
        "{west:#}"
    );
    // A bump without --os/--label keeps both...
    let v = json(run(&[
        "--json",
        "image",
        "add",
        "--name",
        "custom.image",
        "--bump-version",
        "minor",
        "order66",
    ]));
    assert_eq!(v["package"]["version"], "1.1");
    assert_eq!(v["package"]["os"], "windows");
    assert_eq!(v["package"]["label"], "My Image");
    // ... and a conflicting --os is refused, naming the stored value.
    let err = fails(run(&[
        "image",
        "add",
        "--name",
        "custom.image",
        "--bump-version",
        "minor",
        "--os",
        "linux",
        "order66",
    ]));
    assert!(
        err.contains("stored with os \"windows\", not \"linux\""),
        "{err}"
    );
}
