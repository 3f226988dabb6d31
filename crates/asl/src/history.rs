//! The execution history: one [`HistoryEvent`] per thing that happened, in
//! order, timestamped by the runner's clock. Events serialize with serde
//! (`{"id": 3, "timestamp": "...", "type": "StateEntered", "state": ...}`) so
//! the CLI can store and show them. States nested in Map and Parallel states
//! report into the same history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clock::Clock;

/// One entry of an execution's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Position in the history, from 1.
    pub id: u64,
    /// When it happened, by the runner's clock.
    pub timestamp: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a [`HistoryEvent`] records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// The execution began.
    ExecutionStarted {
        /// Execution name.
        name: String,
        /// Execution input.
        input: Value,
    },
    /// A state began with this raw input.
    StateEntered {
        /// State name.
        state: String,
        /// The state's raw input.
        input: Value,
    },
    /// A state finished successfully with this output.
    StateExited {
        /// State name.
        state: String,
        /// The state's output (the next state's input).
        output: Value,
    },
    /// A Task state is calling its resource.
    TaskScheduled {
        /// State name.
        state: String,
        /// What the invoker was called with (the function name for
        /// `lambda:invoke`, else the Resource).
        resource: String,
        /// The input given to the invoker.
        input: Value,
    },
    /// The resource returned a result.
    TaskSucceeded {
        /// State name.
        state: String,
        /// As in [`EventKind::TaskScheduled`].
        resource: String,
        /// The raw result (before the `lambda:invoke` wrapping).
        output: Value,
    },
    /// The resource failed or timed out (`States.Timeout`).
    TaskFailed {
        /// State name.
        state: String,
        /// As in [`EventKind::TaskScheduled`].
        resource: String,
        /// Error name.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// A Retrier matched a state's error: the state runs again after the delay.
    TaskRetried {
        /// State name (any state with Retry: Task, Parallel, Map).
        state: String,
        /// The error that was retried.
        error: String,
        /// Which retry this is for the state, from 1.
        attempt: u32,
        /// Delay before the retry, in milliseconds.
        delay_ms: u64,
    },
    /// A Catcher matched a state's error and the execution goes on at `next`.
    ErrorCaught {
        /// State name.
        state: String,
        /// The error.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
        /// The catcher's `Next` state.
        next: String,
    },
    /// A Wait state is waiting.
    Wait {
        /// State name.
        state: String,
        /// How long, in seconds (0 when the timestamp has passed).
        seconds: f64,
        /// Until when.
        until: DateTime<Utc>,
    },
    /// A Map state is starting its iterations.
    MapStarted {
        /// State name.
        state: String,
        /// Number of items.
        items: usize,
    },
    /// A Map iteration began.
    MapIterationStarted {
        /// Map state name.
        state: String,
        /// Item index.
        index: usize,
    },
    /// A Map iteration finished successfully.
    MapIterationSucceeded {
        /// Map state name.
        state: String,
        /// Item index.
        index: usize,
    },
    /// A Map iteration failed (which fails the Map state).
    MapIterationFailed {
        /// Map state name.
        state: String,
        /// Item index.
        index: usize,
        /// Error name.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// A Parallel branch began.
    ParallelBranchStarted {
        /// Parallel state name.
        state: String,
        /// Branch index.
        branch: usize,
    },
    /// A Parallel branch finished successfully.
    ParallelBranchSucceeded {
        /// Parallel state name.
        state: String,
        /// Branch index.
        branch: usize,
    },
    /// A Parallel branch failed (which fails the Parallel state).
    ParallelBranchFailed {
        /// Parallel state name.
        state: String,
        /// Branch index.
        branch: usize,
        /// Error name.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// The execution succeeded.
    ExecutionSucceeded {
        /// Its output.
        output: Value,
    },
    /// The execution failed.
    ExecutionFailed {
        /// Error name.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// The execution ran past the machine's `TimeoutSeconds`.
    ExecutionTimedOut {
        /// Always `States.Timeout`.
        error: String,
        /// Cause (left out where Step Functions gives none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
}

/// A callback called for each event as it is recorded (e.g. for progress
/// bars). It runs while the history is locked, so it must be quick and must
/// not call back into the runner.
pub type Observer = Arc<dyn Fn(&HistoryEvent) + Send + Sync>;

/// Collects the events of one execution and counts state transitions.
pub(crate) struct Recorder {
    events: Mutex<Vec<HistoryEvent>>,
    transitions: AtomicU64,
    clock: Arc<dyn Clock>,
    observer: Option<Observer>,
}

impl Recorder {
    pub(crate) fn new(clock: Arc<dyn Clock>, observer: Option<Observer>) -> Self {
        Recorder {
            events: Mutex::new(Vec::new()),
            transitions: AtomicU64::new(0),
            clock,
            observer,
        }
    }

    /// Appends an event (and tells the observer).
    pub(crate) fn record(&self, kind: EventKind) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let event = HistoryEvent {
            id: events.len() as u64 + 1,
            timestamp: self.clock.now(),
            kind,
        };
        tracing::debug!(id = event.id, kind = ?event.kind, "asl history event");
        if let Some(observer) = &self.observer {
            observer(&event);
        }
        events.push(event);
    }

    /// Counts one state transition (a state entered, or a retry).
    pub(crate) fn transition(&self) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
    }

    /// The events recorded so far and the transition count.
    pub(crate) fn finish(&self) -> (Vec<HistoryEvent>, u64) {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        (events.clone(), self.transitions.load(Ordering::Relaxed))
    }
}
