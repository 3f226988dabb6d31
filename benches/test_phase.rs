//! The Test step of the demo, measured: `recipes/demo.yaml` (on the demo's
//! bootable Debian disk, `apt-get install jq` with network) is launched,
//! provisioned, cleaned and captured step by step, then its Test step runs
//! three times on the captured disk (each: overlay, unit injected, boot
//! under TCG, two tests, power off). The peer, in the same run, is what a
//! hand-written runbook does: boot a throwaway overlay of the same disk in
//! qemu until the serial console shows `login:` (no tests at all).
//! Target for the Test step: ≤ 60 s.

#[path = "../tests/local_support/mod.rs"]
mod local_support;

use std::path::Path;
use std::time::{Duration, Instant};

use bakehouse::build::Step;
use serde_json::json;

use local_support::disks::boot_until;
use local_support::Harness;

const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let h = Harness::new(None);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/demo.yaml");
    let mut request = h.request(&demo, "bench-test");
    request.force = true;
    let p = &h.pipeline;
    let id = json!({"build_id": "bench-test", "polls": 0});
    p.invoke(
        Step::Launch,
        json!({"request": request, "execution": "bench-test"}),
    )
    .await
    .expect("launch");
    for step in [Step::Provision, Step::Clean, Step::Capture] {
        p.invoke(step, id.clone()).await.expect("step");
    }
    let mut tests = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        p.invoke(Step::Test, id.clone())
            .await
            .expect("the demo's tests pass");
        tests.push(start.elapsed());
    }
    let record = h.builds.get("bench-test").await.unwrap().unwrap();
    let qcow2 = record
        .artifacts
        .iter()
        .find_map(|a| a.path.clone().filter(|p| p.ends_with(".qcow2")))
        .expect("a captured disk");
    let mut boots = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        boot_until(Path::new(&qcow2), "login:", Duration::from_secs(300));
        boots.push(start.elapsed());
    }
    let state = json!({"state": {"build": {"build_id": "bench-test"}}});
    p.invoke(Step::Teardown, state).await.expect("teardown");

    let (test, boot) = (median(tests.clone()), median(boots.clone()));
    println!(
        "Test step of recipes/demo.yaml on its captured disk ({} MiB qcow2), TCG, median of {RUNS}",
        std::fs::metadata(&qcow2)
            .map(|m| m.len() >> 20)
            .unwrap_or(0)
    );
    println!(
        "  {:<58} {:>7.2} s  (runs: {})",
        "bakehouse Test: overlay, inject unit, boot, 2 tests, power off",
        test.as_secs_f64(),
        list(&tests)
    );
    println!(
        "  {:<58} {:>7.2} s  (runs: {})",
        "peer: qemu boot of an overlay to the login prompt, no tests",
        boot.as_secs_f64(),
        list(&boots)
    );
    println!(
        "  {:<58} {:>7.2} x",
        "ratio Test / plain boot",
        test.as_secs_f64() / boot.as_secs_f64()
    );
}

fn list(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}
