//! Triggers: what starts builds besides the CLI, and what cleans up after
//! builds nobody tore down.
//!
//! - [`webhook`]: the git push webhook (GitHub or GitLab) behind a Lambda
//!   function URL: checks the signature, works out which recipes a push
//!   touches, stores them and starts one execution each.
//! - [`schedules`]: one EventBridge Scheduler schedule per recipe with a
//!   `schedule`, starting `{"recipe": NAME, "trigger": "schedule"}`.
//! - [`execution`]: deterministic execution names and StartExecution that
//!   treats a repeat as already started.
//! - [`reaper`]: the scheduled sweep that terminates builder instances of
//!   finished or expired builds and removes what failed builds left.

pub mod execution;
pub mod reaper;
pub mod schedules;
pub mod webhook;

/// Sets up `tracing` for a Lambda function: JSON lines on stdout (which
/// Lambda sends to CloudWatch Logs), level from `RUST_LOG` (default
/// `info`), without ANSI colours or the time (CloudWatch adds it).
pub fn init_lambda_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
