//! Registry benchmark, one run against one moto server: resolving
//! `name@1.x` among 10,000 stored versions versus a GetItem of one known key,
//! and how many DynamoDB requests one resolve sends. The embedded SQLite
//! store is measured on the same data for comparison.
//!
//! Run with `make bench` (or `cargo bench --bench registry`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use bakehouse::registry::{
    Artifact, Lookup, Os, PackageVersion, Provider, RegistryStore, SqliteStore, Status, Version,
    VersionPattern,
};

const VERSIONS: u64 = 10_000;
const SAMPLES: usize = 200;

fn package(minor: u64) -> PackageVersion {
    PackageVersion {
        name: "bench".into(),
        version: Version::from_parts(vec![1 + minor / 5_000, minor % 5_000]).unwrap(),
        label: "Bench".into(),
        package_type: "image".into(),
        os: Os::Linux,
        status: Status::Active,
        bake_key: None,
        parent: None,
        trigger: None,
        build_id: None,
        created_at: chrono::Utc::now(),
        artifacts: ["us-east-1", "eu-west-1"]
            .iter()
            .map(|r| Artifact {
                name: format!("aws/{r}"),
                provider: Provider::Aws,
                region: Some(r.to_string()),
                image_id: format!("ami-{minor:017x}"),
                account: None,
                path: None,
            })
            .collect(),
    }
}

struct Stats {
    median: Duration,
    p95: Duration,
}

async fn measure<F, Fut>(mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..10 {
        f().await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    Stats {
        median: times[SAMPLES / 2],
        p95: times[SAMPLES * 95 / 100],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let guard = bakehouse::testing::moto()
        .await
        .expect("moto server (run `make setup`)");
    let config = guard.sdk_config("us-east-1").await;
    let store = bakehouse::registry::DynamoStore::new(&config, "bench");
    store.create_table().await.unwrap();
    let packages: Vec<PackageVersion> = (0..VERSIONS).map(package).collect();
    let load = Instant::now();
    store.import(&packages).await.unwrap();
    println!(
        "loaded {VERSIONS} versions of one package into DynamoDB (moto) in {:.1} s",
        load.elapsed().as_secs_f64()
    );

    let pattern: VersionPattern = "1.x".parse().unwrap();
    let lookup = Lookup::Name("bench".into());
    let want = Version::from_parts(vec![1, 4_999]).unwrap();
    let got = store
        .resolve(&lookup, &pattern, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.version, want);
    assert_eq!(got.artifacts.len(), 2);

    let before = store.requests().get();
    let rounds = 50;
    for _ in 0..rounds {
        store.resolve(&lookup, &pattern, false).await.unwrap();
    }
    let per_resolve = (store.requests().get() - before) as f64 / rounds as f64;

    let resolve = measure(|| async {
        store.resolve(&lookup, &pattern, false).await.unwrap();
    })
    .await;
    let client = store.client().clone();
    let get = measure(|| async {
        client
            .get_item()
            .table_name("bench")
            .key("pk", AttributeValue::S("PKG#bench".into()))
            .key("sk", AttributeValue::S(format!("V#{}", want.sort_key())))
            .send()
            .await
            .unwrap();
    })
    .await;

    let sqlite = Arc::new(SqliteStore::in_memory().unwrap());
    let mut last = None;
    for p in &packages {
        sqlite.insert(p, last.as_ref()).await.unwrap();
        last = Some(p.version.clone()).max(last);
    }
    let sql = measure(|| async {
        sqlite.resolve(&lookup, &pattern, false).await.unwrap();
    })
    .await;

    println!();
    println!(
        "{:<48} {:>12} {:>12}",
        "operation (10,000 versions stored)", "median", "p95"
    );
    println!(
        "{:<48} {:>12} {:>12}",
        "DynamoDB resolve bench@1.x (Query, GSI)",
        ms(resolve.median),
        ms(resolve.p95)
    );
    println!(
        "{:<48} {:>12} {:>12}",
        "DynamoDB GetItem of one known key",
        ms(get.median),
        ms(get.p95)
    );
    println!(
        "{:<48} {:>12} {:>12}",
        "SQLite resolve bench@1.x",
        ms(sql.median),
        ms(sql.p95)
    );
    println!();
    println!(
        "ratio resolve / GetItem (DynamoDB, moto): {:.2}",
        resolve.median.as_secs_f64() / get.median.as_secs_f64()
    );
    println!("DynamoDB requests per resolve: {per_resolve:.2}");
}
