//! One conformance suite for the registry, run unchanged against the
//! embedded SQLite store and the DynamoDB store (a real moto server over
//! HTTP, with the real aws-sdk-dynamodb client).

use std::sync::Arc;

use bakehouse::registry::{
    AddRequest, Artifact, BumpPart, DynamoStore, Lookup, Os, Provider, Registry, RegistryError,
    ResolveQuery, SqliteStore, Status, Trigger, TriggerKind, Version, VersionChoice,
    VersionPattern,
};
use bakehouse::testing::{moto, MotoGuard};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn ami(region: &str, id: &str) -> Artifact {
    Artifact {
        name: format!("aws/{region}"),
        provider: Provider::Aws,
        region: Some(region.into()),
        image_id: id.into(),
        account: Some("123456789012".into()),
        path: None,
    }
}

fn req(name: &str, version: VersionChoice, artifacts: Vec<Artifact>) -> AddRequest {
    let mut r = AddRequest::new(name, Os::Linux, artifacts);
    r.version = version;
    r
}

fn query(lookup: Lookup, pattern: &str) -> ResolveQuery {
    ResolveQuery {
        lookup,
        pattern: pattern.parse().unwrap(),
        include_inactive: false,
        provider: None,
        region: None,
    }
}

async fn versions(reg: &Registry, name: &str) -> Vec<String> {
    let mut out: Vec<String> = reg
        .list(Some(name))
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("{}:{}", p.version, p.artifacts.len()))
        .collect();
    out.sort();
    out
}

async fn add_version(reg: &Registry, name: &str, version: &str) {
    reg.add(req(
        name,
        VersionChoice::Exact(v(version)),
        vec![ami("us-east-1", &format!("ami-{version}"))],
    ))
    .await
    .unwrap();
}

/// Runs each case against both stores.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let reg = super::sqlite_registry();
                    super::$case(&reg).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    let (_moto, reg, _) = super::dynamo_registry().await;
                    super::$case(&reg).await;
                }
            )*
        }
    };
}

fn sqlite_registry() -> Registry {
    Registry::new(Arc::new(SqliteStore::in_memory().unwrap()))
}

async fn dynamo_registry() -> (MotoGuard, Registry, Arc<DynamoStore>) {
    let guard = moto().await.expect("moto server (run `make setup`)");
    let config = guard.sdk_config("us-east-1").await;
    let store = Arc::new(DynamoStore::new(&config, "bakehouse-test"));
    store.create_table().await.unwrap();
    (guard, Registry::new(store.clone()), store)
}

conformance!(
    add_without_version_starts_at_1_0_then_adds_to_latest,
    bump_increments_the_named_part,
    a_second_package_with_the_same_version_is_refused,
    resolution_follows_numeric_order_and_patterns,
    resolution_by_label_spans_packages,
    deprecated_and_revoked_versions_are_skipped,
    deleted_versions_are_never_resolved_nor_reactivated,
    artifact_is_picked_by_provider_and_region,
    dry_run_stores_nothing,
    bad_input_stores_nothing,
    bake_key_registers_once,
    lineage_and_trigger_round_trip,
    concurrent_bumps_get_distinct_contiguous_versions,
);

async fn add_without_version_starts_at_1_0_then_adds_to_latest(reg: &Registry) {
    let out = reg
        .add(req(
            "base",
            VersionChoice::Latest,
            vec![ami("us-east-1", "ami-1")],
        ))
        .await
        .unwrap();
    assert_eq!(out.package.version, v("1.0"));
    assert!(out.stored && !out.appended);
    assert_eq!(out.package.package_type, "image");
    assert_eq!(out.package.label, "base", "label defaults to the name");
    let out = reg
        .add(req(
            "base",
            VersionChoice::Latest,
            vec![ami("eu-west-1", "ami-2")],
        ))
        .await
        .unwrap();
    assert_eq!(out.package.version, v("1.0"));
    assert!(out.appended);
    assert_eq!(versions(reg, "base").await, ["1.0:2"]);
    // the same location again is a duplicate artifact name: nothing stored
    let err = reg
        .add(req(
            "base",
            VersionChoice::Latest,
            vec![ami("eu-west-1", "ami-3")],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DuplicateArtifactName { name, .. } if name == "aws/eu-west-1"),
        "{err}"
    );
    assert_eq!(versions(reg, "base").await, ["1.0:2"]);
    // a different OS for the same version is refused
    let mut windows = req(
        "base",
        VersionChoice::Latest,
        vec![ami("ap-south-1", "ami-4")],
    );
    windows.os = Some(Os::Windows);
    let err = reg.add(windows).await.unwrap_err().to_string();
    assert!(
        err.contains("stored with os \"linux\", not \"windows\""),
        "{err}"
    );
}

async fn bump_increments_the_named_part(reg: &Registry) {
    let mut seen = Vec::new();
    for part in [
        BumpPart::Minor,
        BumpPart::Minor,
        BumpPart::Major,
        BumpPart::Patch,
        BumpPart::Minor,
    ] {
        let out = reg
            .add(req(
                "app",
                VersionChoice::Bump(part),
                vec![ami("us-east-1", "ami-x")],
            ))
            .await
            .unwrap();
        seen.push(out.package.version.to_string());
    }
    assert_eq!(seen, ["1.0", "1.1", "2.0", "2.0.1", "2.1.0"]);
}

async fn a_second_package_with_the_same_version_is_refused(reg: &Registry) {
    add_version(reg, "app", "2.0").await;
    let err = reg
        .add(req(
            "app",
            VersionChoice::Exact(v("2.0")),
            vec![ami("eu-west-1", "ami-y")],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "package app version 2.0 already exists: a second package with the same name needs a different version"
    );
    assert_eq!(versions(reg, "app").await, ["2.0:1"]);
    // a lower explicit version is fine and does not change the latest
    add_version(reg, "app", "1.5").await;
    let out = reg
        .add(req(
            "app",
            VersionChoice::Bump(BumpPart::Minor),
            vec![ami("us-east-1", "a")],
        ))
        .await
        .unwrap();
    assert_eq!(out.package.version, v("2.1"));
}

async fn resolution_follows_numeric_order_and_patterns(reg: &Registry) {
    for version in ["1.2", "1.10", "1.2.3", "2.0", "1.9"] {
        add_version(reg, "r", version).await;
    }
    let name = || Lookup::Name("r".into());
    let cases = [
        ("", "2.0"),
        ("latest", "2.0"),
        ("1.x", "1.10"),
        ("1.2.x", "1.2.3"),
        ("1.2", "1.2"),
        ("2.x", "2.0"),
    ];
    for (pattern, want) in cases {
        let got = reg.resolve(&query(name(), pattern)).await.unwrap();
        assert_eq!(got.package.version, v(want), "pattern {pattern:?}");
        assert_eq!(got.package.artifacts[0].image_id, format!("ami-{want}"));
    }
    for missing in ["3.x", "1.3", "1.10.x"] {
        let err = reg.resolve(&query(name(), missing)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no active package version matches name \"r\" version {missing}")
        );
    }
    let err = reg
        .resolve(&query(Lookup::Name("nope".into()), ""))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }));
}

async fn resolution_by_label_spans_packages(reg: &Registry) {
    let mut a = req(
        "hpc-a",
        VersionChoice::Exact(v("1.4")),
        vec![ami("us-east-1", "ami-a")],
    );
    a.label = Some("HPC Image".into());
    reg.add(a).await.unwrap();
    let mut b = req(
        "hpc-b",
        VersionChoice::Exact(v("1.10")),
        vec![ami("us-east-1", "ami-b")],
    );
    b.label = Some("HPC Image".into());
    reg.add(b).await.unwrap();
    let mut c = req(
        "hpc-b",
        VersionChoice::Exact(v("2.0")),
        vec![ami("us-east-1", "ami-c")],
    );
    c.label = Some("HPC Image".into());
    reg.add(c).await.unwrap();
    let label = || Lookup::Label("HPC Image".into());
    let got = reg.resolve(&query(label(), "")).await.unwrap();
    assert_eq!(
        (
            got.package.name.as_str(),
            got.package.version.to_string().as_str()
        ),
        ("hpc-b", "2.0")
    );
    let got = reg.resolve(&query(label(), "1.x")).await.unwrap();
    assert_eq!(
        (
            got.package.name.as_str(),
            got.package.version.to_string().as_str()
        ),
        ("hpc-b", "1.10")
    );
    let got = reg.resolve(&query(label(), "1.4")).await.unwrap();
    assert_eq!(got.package.name, "hpc-a");
    assert!(reg
        .resolve(&query(Lookup::Label("Other".into()), ""))
        .await
        .is_err());
}

async fn deprecated_and_revoked_versions_are_skipped(reg: &Registry) {
    for version in ["1.0", "1.1", "1.2"] {
        add_version(reg, "s", version).await;
    }
    let name = || Lookup::Name("s".into());
    reg.set_status("s", &v("1.2"), Status::Deprecated)
        .await
        .unwrap();
    reg.set_status("s", &v("1.1"), Status::Revoked)
        .await
        .unwrap();
    assert_eq!(
        reg.resolve(&query(name(), "1.x"))
            .await
            .unwrap()
            .package
            .version,
        v("1.0")
    );
    assert_eq!(
        reg.resolve(&query(Lookup::Label("s".into()), ""))
            .await
            .unwrap()
            .package
            .version,
        v("1.0")
    );
    let mut all = query(name(), "1.x");
    all.include_inactive = true;
    let got = reg.resolve(&all).await.unwrap();
    assert_eq!(
        (got.package.version, got.package.status),
        (v("1.2"), Status::Deprecated)
    );
    let mut all = query(Lookup::Label("s".into()), "1.1");
    all.include_inactive = true;
    assert_eq!(
        reg.resolve(&all).await.unwrap().package.status,
        Status::Revoked
    );
    reg.set_status("s", &v("1.2"), Status::Active)
        .await
        .unwrap();
    assert_eq!(
        reg.resolve(&query(name(), ""))
            .await
            .unwrap()
            .package
            .version,
        v("1.2")
    );
    let err = reg
        .set_status("s", &v("9.9"), Status::Revoked)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

async fn artifact_is_picked_by_provider_and_region(reg: &Registry) {
    reg.add(req(
        "multi",
        VersionChoice::Latest,
        vec![ami("us-east-1", "ami-use1"), ami("eu-west-1", "ami-euw1")],
    ))
    .await
    .unwrap();
    let mut q = query(Lookup::Name("multi".into()), "");
    q.provider = Some(Provider::Aws);
    q.region = Some("eu-west-1".into());
    let got = reg.resolve(&q).await.unwrap();
    assert_eq!(got.artifact.unwrap().image_id, "ami-euw1");
    q.region = Some("ap-south-1".into());
    let err = reg.resolve(&q).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "multi 1.0 has no artifact for provider aws in region ap-south-1"
    );
    q.provider = Some(Provider::Local);
    q.region = None;
    assert!(reg.resolve(&q).await.is_err());
}

async fn dry_run_stores_nothing(reg: &Registry) {
    let mut r = req(
        "dry",
        VersionChoice::Bump(BumpPart::Minor),
        vec![ami("us-east-1", "ami-1")],
    );
    r.dry_run = true;
    let out = reg.add(r).await.unwrap();
    assert_eq!(
        (out.package.version.to_string(), out.stored),
        ("1.0".to_string(), false)
    );
    assert!(reg.list(Some("dry")).await.unwrap().is_empty());
    add_version(reg, "dry", "1.0").await;
    let mut r = req(
        "dry",
        VersionChoice::Latest,
        vec![ami("eu-west-1", "ami-2")],
    );
    r.dry_run = true;
    let out = reg.add(r).await.unwrap();
    assert_eq!(out.package.artifacts.len(), 2);
    assert_eq!(versions(reg, "dry").await, ["1.0:1"]);
}

async fn bad_input_stores_nothing(reg: &Registry) {
    add_version(reg, "good", "1.0").await;
    let before = reg.list(None).await.unwrap();
    // malformed versions never reach the store
    for bad in ["1..2", "a.b", "", "-1", "1.x.3"] {
        let err = bad.parse::<Version>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid version {bad:?}")),
            "{err}"
        );
    }
    assert!("1.x.3".parse::<VersionPattern>().is_err());
    let err = "gcs".parse::<Provider>().unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown provider \"gcs\": expected one of aws, azure, gcp, local"
    );
    // no artifacts
    let err = reg
        .add(req("good", VersionChoice::Bump(BumpPart::Minor), vec![]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no image ids given: an image version needs at least one artifact"
    );
    // duplicate artifact names within one add
    let err = reg
        .add(req(
            "good",
            VersionChoice::Bump(BumpPart::Minor),
            vec![ami("us-east-1", "ami-1"), ami("us-east-1", "ami-2")],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate artifact name \"aws/us-east-1\" in good 1.1: artifact names must be unique within a package version"
    );
    // bad names and labels
    let err = reg
        .add(req(
            "bad name",
            VersionChoice::Latest,
            vec![ami("us-east-1", "a")],
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid name \"bad name\": character ' '"),
        "{err}"
    );
    let mut r = req("good", VersionChoice::Latest, vec![ami("us-east-1", "a")]);
    r.label = Some(" ".into());
    assert!(reg
        .add(r)
        .await
        .unwrap_err()
        .to_string()
        .starts_with("invalid label"));
    let mut empty_id = ami("eu-north-1", "");
    empty_id.image_id.clear();
    assert!(reg
        .add(req(
            "good",
            VersionChoice::Bump(BumpPart::Major),
            vec![empty_id]
        ))
        .await
        .is_err());
    assert_eq!(reg.list(None).await.unwrap(), before, "store unchanged");
}

async fn bake_key_registers_once(reg: &Registry) {
    let mut r = req(
        "baked",
        VersionChoice::Bump(BumpPart::Minor),
        vec![ami("us-east-1", "ami-1")],
    );
    r.bake_key = Some("k1".into());
    let first = reg.add(r.clone()).await.unwrap();
    assert!(first.stored);
    r.artifacts = vec![ami("us-east-1", "ami-2")];
    let second = reg.add(r).await.unwrap();
    assert!(second.reused && !second.stored);
    assert_eq!(second.package.version, first.package.version);
    assert_eq!(second.package.artifacts[0].image_id, "ami-1");
    assert_eq!(
        reg.find_by_bake_key("k1").await.unwrap().unwrap().version,
        v("1.0")
    );
    assert!(reg.find_by_bake_key("k2").await.unwrap().is_none());
    assert_eq!(versions(reg, "baked").await, ["1.0:1"]);
}

async fn lineage_and_trigger_round_trip(reg: &Registry) {
    add_version(reg, "parent", "3.1").await;
    let mut r = req(
        "child",
        VersionChoice::Latest,
        vec![ami("us-east-1", "ami-c")],
    );
    r.parent = Some("parent@3.1".into());
    r.build_id = Some("b-123".into());
    r.trigger = Some(Trigger {
        kind: TriggerKind::Push,
        repository: Some("acme/images".into()),
        git_ref: Some("refs/heads/main".into()),
        commit: Some("abc123".into()),
        actor: Some("dev".into()),
    });
    let stored = reg.add(r).await.unwrap().package;
    let read = reg.show("child", &v("1.0")).await.unwrap();
    assert_eq!(read, stored);
    assert_eq!(read.parent.as_deref(), Some("parent@3.1"));
    assert_eq!(read.trigger.unwrap().commit.as_deref(), Some("abc123"));
}

async fn concurrent_bumps_get_distinct_contiguous_versions(reg: &Registry) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let reg = reg.clone();
            tokio::spawn(async move {
                reg.add(req(
                    "race",
                    VersionChoice::Bump(BumpPart::Minor),
                    vec![ami("us-east-1", &format!("ami-{i}"))],
                ))
                .await
                .map(|o| o.package.version)
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    got.sort();
    let want: Vec<Version> = (0..32).map(|m| v(&format!("1.{m}"))).collect();
    assert_eq!(got, want, "32 distinct, contiguous versions");
    assert_eq!(reg.list(Some("race")).await.unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_resolve_is_one_request_whatever_the_history() {
    let (_moto, reg, store) = dynamo_registry().await;
    for minor in 0..60 {
        add_version(&reg, "many", &format!("1.{minor}")).await;
    }
    add_version(&reg, "many", "2.0").await;
    for pattern in ["1.x", "", "1.7", "2.x"] {
        let before = store.requests().get();
        let got = reg
            .resolve(&query(Lookup::Name("many".into()), pattern))
            .await
            .unwrap();
        assert_eq!(
            store.requests().get() - before,
            1,
            "requests for pattern {pattern:?}"
        );
        assert!(!got.package.artifacts.is_empty());
    }
}

async fn deleted_versions_are_never_resolved_nor_reactivated(reg: &Registry) {
    for version in ["1.0", "1.1", "1.2"] {
        add_version(reg, "d", version).await;
    }
    reg.set_status("d", &v("1.2"), Status::Deleted)
        .await
        .unwrap();
    reg.set_status("d", &v("1.1"), Status::Deleted)
        .await
        .unwrap();
    for lookup in [Lookup::Name("d".into()), Lookup::Label("d".into())] {
        for include_inactive in [false, true] {
            let mut q = query(lookup.clone(), "1.x");
            q.include_inactive = include_inactive;
            let got = reg.resolve(&q).await.unwrap();
            assert_eq!(got.package.version, v("1.0"), "{lookup} {include_inactive}");
        }
        let mut exact = query(lookup.clone(), "1.1");
        exact.include_inactive = true;
        assert!(reg.resolve(&exact).await.is_err(), "{lookup}");
    }
    let err = reg
        .set_status("d", &v("1.1"), Status::Active)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::InvalidField {
                field: "status",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        reg.show("d", &v("1.1")).await.unwrap().status,
        Status::Deleted
    );
}
