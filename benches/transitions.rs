//! State transitions of a simulated 40-minute build on EC2
//! (`bakehouse::pipeline::simulate::forty_minute_build`: virtual clock,
//! EventBridge events where AWS sends them), for the event-driven
//! pipeline definition and for the polling definition it replaced
//! (`benches/fixtures/pipeline-polling.asl.json`). Prints transitions, the
//! longest delay between work ending and the execution noticing, and the
//! cost per build at Step Functions' standard price.

use bakehouse::pipeline::simulate::{forty_minute_build, simulate};

/// USD per 1,000 state transitions (Standard workflows, us-east-1).
const PRICE_PER_1000: f64 = 0.025;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let polling = include_str!("fixtures/pipeline-polling.asl.json");
    let events = bakehouse::pipeline::local::DEFINITION;
    println!("simulated 40-minute EC2 build (virtual clock):");
    let mut counts = Vec::new();
    for (name, definition) in [
        ("polling (Wait + Check)", polling),
        ("event-driven (task tokens)", events),
    ] {
        let run = simulate(definition, forty_minute_build())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(run.succeeded, "{name}: {run:?}");
        let cost = run.transitions as f64 * PRICE_PER_1000 / 1000.0;
        println!(
            "  {name:<28} {:>4} transitions  ${cost:.5} per build  ${:.2} per 1,000 builds  build {:.1} min  worst lag {} s",
            run.transitions,
            cost * 1000.0,
            run.duration.as_secs_f64() / 60.0,
            run.worst_lag.as_secs()
        );
        counts.push(run.transitions);
    }
    println!(
        "  ratio: {:.2}x fewer transitions",
        counts[0] as f64 / counts[1] as f64
    );
}
