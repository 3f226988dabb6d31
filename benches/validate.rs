//! `bakehouse validate` on hostile YAML: the two files of 100,000-deep
//! nesting (flow `[[[…` of 200 KB, block `- - - …` of 500 KB) through
//! `recipe::load`, the path `validate` and `build` take. Target: < 1 s
//! each. Prints the time of each (median of 5) next to an ordinary recipe.

use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(path: &std::path::Path) -> (Duration, String) {
    let mut times = Vec::new();
    let mut outcome = String::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let result = bakehouse::recipe::load(path);
        times.push(start.elapsed());
        outcome = match result {
            Ok(_) => "valid".into(),
            Err(e) => e
                .problems()
                .first()
                .map(|p| p.message.chars().take(60).collect())
                .unwrap_or_default(),
        };
    }
    (median(times), outcome)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.yaml");
    std::fs::write(&flow, format!("name: x\nbase: {}\n", "[".repeat(100_000))).unwrap();
    let block = dir.path().join("block.yaml");
    std::fs::write(
        &block,
        format!("name: x\nprovisioners:\n{}x\n", "- ".repeat(250_000)),
    )
    .unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/web-aws.yaml");
    println!("validate on hostile YAML (recipe::load, median of {RUNS}; target < 1 s each)");
    for (name, path) in [
        ("100,000-deep flow nesting, 200 KB", &flow),
        ("250,000-deep block nesting, 500 KB", &block),
        ("recipes/web-aws.yaml (ordinary)", &demo),
    ] {
        let (t, outcome) = time(path);
        println!(
            "  {:<40} {:>10.3} ms  {outcome}",
            name,
            t.as_secs_f64() * 1000.0
        );
    }
}
