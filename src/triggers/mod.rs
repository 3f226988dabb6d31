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
//! - [`events`]: EventBridge events about instances and images wake the
//!   build step parked on a task token.
//! - [`reaper`]: the scheduled sweep that terminates builder instances of
//!   finished or expired builds and removes what failed builds left.

pub mod events;
pub mod execution;
pub mod reaper;
pub mod schedules;
pub mod webhook;
