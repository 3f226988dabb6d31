//! A local interpreter for the Amazon States Language (ASL).
//!
//! A bakehouse build is an AWS Step Functions execution; the same definition
//! also runs locally through this crate, which depends on nothing else in
//! the project. It follows the specification
//! (<https://states-language.net>) and the Step Functions developer guide
//! for the JSONPath query language:
//!
//! * [`StateMachine::load`] substitutes `${Name}` placeholders, parses and
//!   validates a definition, rejecting anything it cannot run with an
//!   [`AslError`] that names the state and the field.
//! * [`Runner::execute`] runs it: Task states go through a [`TaskInvoker`],
//!   every wait (Wait states, retry delays, timeouts) through a [`Clock`],
//!   and everything that happens is recorded as [`HistoryEvent`]s (also
//!   streamed to an optional observer).
//!
//! Supported: Task, Pass, Choice, Wait, Parallel, inline Map, Succeed and
//! Fail states; InputPath, Parameters, ResultSelector, ResultPath and
//! OutputPath; the context object; intrinsic functions; Retry (with backoff,
//! MaxDelaySeconds and jitter) and Catch; Task and execution timeouts; the
//! callback pattern (`.waitForTaskToken`: `$$.Task.Token`, completed through
//! [`TaskTokens`], with `TimeoutSeconds` and `HeartbeatSeconds`).
//!
//! ```ignore
//! use std::{collections::BTreeMap, sync::Arc};
//! use bakehouse_asl::{Runner, StateMachine, SystemClock};
//!
//! let subs = BTreeMap::from([("BuildFunctionArn".to_string(), arn)]);
//! let machine = StateMachine::load(&definition_text, &subs)?.with_name("bakehouse-build");
//! let runner = Runner::new(machine, Arc::new(my_invoker), Arc::new(SystemClock))
//!     .with_observer(Arc::new(|event| progress.update(event)));
//! let execution = runner.execute("build-42", serde_json::json!({"recipe": "base"})).await;
//! ```
//!
//! Local choices where Step Functions leaves room: `States.MathRandom`
//! returns an integer in `[start, end]`; `States.StringSplit` splits on each
//! delimiter character and drops empty parts; `States.Hash` refuses an algorithm
//! other than MD5, SHA-1, SHA-256, SHA-384 and SHA-512 with `States.Runtime`; `lambda:invoke` without `Payload` sends `{}`.
//!
//! Not supported (load errors): JSONata (`QueryLanguage`, `Arguments`,
//! `Output`), variables (`Assign`), distributed Map (`ItemReader`,
//! `ResultWriter`, `ItemBatcher`, `Mode: DISTRIBUTED`), tolerated failures,
//! task `Credentials`, and the `...Path` forms of `TimeoutSeconds`,
//! `HeartbeatSeconds` and `MaxConcurrency`. Heartbeats are tracked only for
//! callback Tasks (others have no way to send one).
#![warn(missing_docs)]

mod callback;
mod choice;
mod clock;
mod definition;
mod error;
mod exec;
mod fields;
mod history;
mod intrinsics;
mod load;
mod path;
mod retry;
mod runner;
mod template;

#[cfg(test)]
mod tests;

pub use callback::{CallbackError, TaskTokens};
pub use clock::{Clock, SystemClock, VirtualClock};
pub use definition::{State, StateMachine};
pub use error::{
    AslError, TaskFailure, PAYLOAD_LIMIT_BYTES, STATES_ALL, STATES_BRANCH_FAILED,
    STATES_DATA_LIMIT_EXCEEDED, STATES_HEARTBEAT_TIMEOUT, STATES_INTRINSIC_FAILURE,
    STATES_NO_CHOICE_MATCHED, STATES_PARAMETER_PATH_FAILURE, STATES_RESULT_PATH_MATCH_FAILURE,
    STATES_RUNTIME, STATES_TASK_FAILED, STATES_TIMEOUT,
};
pub use history::{EventKind, HistoryEvent, Observer};
pub use runner::{Execution, ExecutionStatus, Runner, TaskInvoker};
