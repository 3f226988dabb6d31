//! A simulated build for counting state transitions (`make bench`, and a
//! test that keeps the count low): the pipeline definition runs on the
//! local runner with a virtual clock, and the steps' work takes realistic
//! times. Events come when AWS would send them (EventBridge); where AWS
//! sends none, only a poll finds that the work ended.
//!
//! The same simulation runs the event-driven definition and the polling one
//! it replaced, so their counts compare like for like.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::asl::{Clock, Runner, StateMachine, TaskFailure, TaskInvoker, TaskTokens, VirtualClock};
use crate::build::Step;

use super::io::{wait_seconds, StepOutput};
use super::local::local_substitutions;

/// One piece of a step's work: how long it takes, and whether AWS sends an
/// event when it ends.
#[derive(Clone, Copy, Debug)]
pub struct Milestone {
    /// Time from the previous milestone (or the step's start).
    pub after: Duration,
    /// An EventBridge event marks its end.
    pub event: bool,
}

const fn at(seconds: u64, event: bool) -> Milestone {
    Milestone {
        after: Duration::from_secs(seconds),
        event,
    }
}

/// A 40-minute build on EC2, step by step: the builder is running after
/// 40 s (event) and its SSM agent online 55 s later (no event); the
/// provisioners run 22 minutes (command event); clean's command takes 50 s
/// and stopping the builder 40 s (events); the AMI is available after 7
/// minutes (event) and its copy to a second region 5 minutes later (no
/// event in the home region's bus); the test instance is running after 40 s
/// (event), online 55 s later (no event) and its test command takes 30 s
/// (event).
pub fn forty_minute_build() -> BTreeMap<Step, Vec<Milestone>> {
    BTreeMap::from([
        (Step::Launch, vec![at(40, true), at(55, false)]),
        (Step::Provision, vec![at(22 * 60, true)]),
        (Step::Clean, vec![at(50, true), at(40, true)]),
        (Step::Capture, vec![at(7 * 60, true), at(5 * 60, false)]),
        (Step::Test, vec![at(40, true), at(55, false), at(30, true)]),
    ])
}

/// What a simulated run counted.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatedRun {
    /// Whether the execution succeeded.
    pub succeeded: bool,
    /// State transitions, as Step Functions bills them.
    pub transitions: u64,
    /// Virtual time from start to end.
    pub duration: Duration,
    /// The longest time between a step's work ending and the execution
    /// moving on (what polling or a missing event costs).
    pub worst_lag: Duration,
}

#[derive(Default)]
struct SimState {
    started: BTreeMap<Step, DateTime<Utc>>,
    finished_seen: BTreeMap<Step, DateTime<Utc>>,
    parked: Option<(Step, String)>,
    events: Vec<(DateTime<Utc>, Step)>,
}

struct Simulation {
    clock: Arc<VirtualClock>,
    tokens: TaskTokens,
    plan: BTreeMap<Step, Vec<Milestone>>,
    state: Mutex<SimState>,
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Simulation {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When `step`'s work ends, starting it (and scheduling its events) on
    /// the first call.
    fn ends_at(&self, step: Step) -> DateTime<Utc> {
        let now = self.clock.now();
        let milestones = self.plan.get(&step).cloned().unwrap_or_default();
        let mut state = self.lock();
        let start = match state.started.get(&step) {
            Some(start) => *start,
            None => {
                state.started.insert(step, now);
                let mut t = now;
                for m in &milestones {
                    t = add(t, m.after);
                    if m.event {
                        state.events.push((t, step));
                    }
                }
                now
            }
        };
        milestones.iter().fold(start, |t, m| add(t, m.after))
    }

    fn output(&self, step: Step, polls: u32) -> (bool, Value) {
        let done = self.clock.now() >= self.ends_at(step);
        if done {
            self.lock()
                .finished_seen
                .entry(step)
                .or_insert(self.clock.now());
        }
        let polls = if done { 0 } else { polls + 1 };
        let out = StepOutput {
            build_id: "sim".into(),
            done,
            wait_seconds: if done {
                0
            } else {
                wait_seconds(polls.saturating_sub(1))
            },
            polls,
            cache_hit: false,
            version: None,
        };
        (done, serde_json::to_value(out).unwrap_or(Value::Null))
    }

    /// A parked step is polled; when done, its token is completed.
    fn poll_parked(&self) {
        let Some((step, token)) = self.lock().parked.clone() else {
            return;
        };
        let (done, out) = self.output(step, 0);
        if done {
            self.lock().parked = None;
            // A token whose state timed out meanwhile is simply gone.
            let _ = self.tokens.send_task_success(&token, out);
        }
    }

    /// Delivers the events due by now.
    fn deliver_events(&self) {
        let now = self.clock.now();
        let due: Vec<Step> = {
            let mut state = self.lock();
            let (due, later): (Vec<_>, Vec<_>) =
                state.events.drain(..).partition(|(t, _)| *t <= now);
            state.events = later;
            due.into_iter().map(|(_, s)| s).collect()
        };
        for step in due {
            if self.lock().parked.as_ref().is_some_and(|(s, _)| *s == step) {
                self.poll_parked();
            }
        }
    }
}

#[async_trait]
impl TaskInvoker for Simulation {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        let step = resource
            .strip_prefix("bakehouse:")
            .and_then(Step::from_name)
            .ok_or_else(|| TaskFailure::new("NonRetryable", format!("unknown {resource}")))?;
        match step {
            Step::Teardown => return Ok(json!({"build_id": "sim", "status": "SUCCEEDED"})),
            Step::Register => return Ok(self.output(Step::Register, 0).1),
            _ => {}
        }
        let polls = input.get("polls").and_then(Value::as_u64).unwrap_or(0) as u32;
        if let Some(token) = input.get("task_token").and_then(Value::as_str) {
            // Parking polls once (the work may have ended already).
            self.lock().parked = Some((step, token.to_string()));
            self.poll_parked();
            return Ok(Value::Null);
        }
        Ok(self.output(step, polls).1)
    }
}

/// Runs `definition` (the pipeline's ASL text) through a simulated build
/// with `plan`'s timings.
pub async fn simulate(
    definition: &str,
    plan: BTreeMap<Step, Vec<Milestone>>,
) -> Result<SimulatedRun, String> {
    let machine =
        StateMachine::load(definition, &local_substitutions()).map_err(|e| e.to_string())?;
    let start = Utc::now();
    let clock = Arc::new(VirtualClock::new(start));
    let tokens = TaskTokens::default();
    let sim = Arc::new(Simulation {
        clock: clock.clone(),
        tokens: tokens.clone(),
        plan,
        state: Mutex::new(SimState::default()),
    });
    let runner = Runner::new(machine, sim.clone(), clock.clone())
        .with_task_tokens(tokens.clone())
        .with_rng(fastrand::Rng::with_seed(7));
    let finished = AtomicBool::new(false);
    let execution = async {
        let e = runner.execute("sim", json!({"recipe": "sim"})).await;
        finished.store(true, Ordering::SeqCst);
        e
    };
    // Virtual time moves by itself in Wait states; while a token waits, it
    // moves here, a second at a time, delivering events as they fall due.
    let driver = async {
        while !finished.load(Ordering::SeqCst) {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            if finished.load(Ordering::SeqCst) || tokens.waiting().is_empty() {
                continue;
            }
            clock.advance(Duration::from_secs(1));
            sim.deliver_events();
        }
    };
    let (execution, ()) = tokio::join!(execution, driver);
    let state = sim.lock();
    let mut worst_lag = Duration::ZERO;
    // The lag of a step: from its work's end to the first poll that saw it.
    for (step, seen) in &state.finished_seen {
        if let (Some(start), Some(milestones)) = (state.started.get(step), sim.plan.get(step)) {
            let ended = milestones.iter().fold(*start, |t, m| add(t, m.after));
            worst_lag = worst_lag.max((*seen - ended).to_std().unwrap_or_default());
        }
    }
    Ok(SimulatedRun {
        succeeded: execution.succeeded(),
        transitions: execution.state_transitions,
        duration: (execution.stopped_at - execution.started_at)
            .to_std()
            .unwrap_or_default(),
        worst_lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_driven_forty_minute_build_takes_at_most_30_transitions() {
        let run = simulate(super::super::local::DEFINITION, forty_minute_build())
            .await
            .unwrap();
        assert!(run.succeeded, "{run:?}");
        assert!(run.duration >= Duration::from_secs(38 * 60), "{run:?}");
        assert!(run.transitions <= 30, "{run:?}");
    }

    #[tokio::test]
    async fn the_polling_definition_it_replaced_took_about_100() {
        let polling = include_str!("../../benches/fixtures/pipeline-polling.asl.json");
        let run = simulate(polling, forty_minute_build()).await.unwrap();
        assert!(run.succeeded, "{run:?}");
        assert!(run.transitions >= 80, "{run:?}");
    }
}
