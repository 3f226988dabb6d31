//! Running the pipeline state machine on this machine: the local ASL runner
//! executes `statemachines/pipeline.asl.json` (the very definition deployed
//! to AWS), with each Lambda `Resource` mapped to the same step handler the
//! Lambda function calls.
//!
//! The `WaitFor<Step>` states park a step on a task token. In AWS an
//! EventBridge event wakes the step; here no events exist, so the invoker
//! itself polls the step (sleeping its `wait_seconds` on the runner's clock)
//! and completes the token when the step's work ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::asl::{
    Clock, Execution, Observer, Runner, StateMachine, TaskFailure, TaskInvoker, TaskTokens,
};
use crate::build::Step;

use super::io::{AwaitInput, ExecutionInput, StepInput};
use super::TaskCallback;
use super::{lambda_error_cause, Pipeline, StepError};

/// The pipeline definition, as deployed.
pub const DEFINITION: &str = include_str!("../../statemachines/pipeline.asl.json");

/// Prefix of the resource names the local runner maps to step handlers.
const LOCAL_RESOURCE: &str = "bakehouse:";

/// `${<Step>FunctionArn}` placeholders of the definition, one per step.
pub fn function_placeholders() -> Vec<(String, Step)> {
    Step::ALL
        .iter()
        .map(|s| {
            let name = s.name();
            let mut title = name[..1].to_uppercase();
            title.push_str(&name[1..]);
            (format!("{title}FunctionArn"), *s)
        })
        .collect()
}

/// Substitutions that point every Task at a local step handler.
pub fn local_substitutions() -> BTreeMap<String, String> {
    function_placeholders()
        .into_iter()
        .map(|(k, s)| (k, format!("{LOCAL_RESOURCE}{}", s.name())))
        .collect()
}

/// Loads the pipeline definition for local execution.
pub fn load_definition() -> Result<StateMachine, StepError> {
    StateMachine::load(DEFINITION, &local_substitutions())
        .map(|m| m.with_name("bakehouse-pipeline"))
        .map_err(|e| StepError::NonRetryable(format!("statemachines/pipeline.asl.json: {e}")))
}

/// Calls step handlers for `bakehouse:<step>` resources.
pub struct StepInvoker {
    pipeline: Pipeline,
    clock: Arc<dyn Clock>,
    tokens: TaskTokens,
}

impl StepInvoker {
    /// An invoker over `pipeline`, completing the task tokens in `tokens`
    /// (give the runner the same, [`Runner::with_task_tokens`]) and
    /// sleeping between polls on `clock`.
    pub fn new(pipeline: Pipeline, clock: Arc<dyn Clock>, tokens: TaskTokens) -> StepInvoker {
        StepInvoker {
            pipeline,
            clock,
            tokens,
        }
    }

    /// A parked step: polls it until it is done or fails, then completes
    /// its token (the local stand-in for the event that wakes it in AWS).
    async fn park(&self, step: Step, input: AwaitInput) -> Result<Value, StepError> {
        let mut poll = StepInput {
            build_id: input.build_id,
            polls: input.polls,
        };
        loop {
            match self.pipeline.poll(step, poll.clone()).await {
                Ok(out) if out.done => {
                    let out = serde_json::to_value(&out)
                        .map_err(|e| StepError::NonRetryable(e.to_string()))?;
                    self.tokens.succeed(&input.task_token, out).await?;
                    return Ok(Value::Null);
                }
                Ok(out) => {
                    self.clock
                        .sleep(std::time::Duration::from_secs(out.wait_seconds))
                        .await;
                    poll.polls = out.polls;
                }
                Err(e) => {
                    let cause = lambda_error_cause(&e);
                    self.tokens
                        .fail(&input.task_token, e.name(), &cause)
                        .await?;
                    return Ok(Value::Null);
                }
            }
        }
    }
}

#[async_trait]
impl TaskInvoker for StepInvoker {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        let step = resource
            .strip_prefix(LOCAL_RESOURCE)
            .and_then(Step::from_name)
            .ok_or_else(|| {
                let error = StepError::NonRetryable(format!("unknown resource {resource}"));
                TaskFailure::new(error.name(), lambda_error_cause(&error))
            })?;
        // As in AWS: the error is the function's errorType and the cause its
        // error payload as a JSON string (see `lambda_error_cause`).
        let result = if input.get("task_token").is_some() {
            match serde_json::from_value::<AwaitInput>(input) {
                Ok(parked) => self.park(step, parked).await,
                Err(e) => Err(StepError::NonRetryable(format!("{step} input: {e}"))),
            }
        } else {
            self.pipeline.invoke(step, input).await
        };
        result.map_err(|e| TaskFailure::new(e.name(), lambda_error_cause(&e)))
    }
}

/// Runs one build through the state machine and returns the execution
/// (status, output, history, transitions).
pub async fn execute(
    pipeline: Pipeline,
    input: &ExecutionInput,
    execution_name: &str,
    clock: Arc<dyn Clock>,
    observer: Option<Observer>,
) -> Result<Execution, StepError> {
    let machine = load_definition()?;
    let input = serde_json::to_value(input).map_err(|e| StepError::NonRetryable(e.to_string()))?;
    let tokens = TaskTokens::default();
    let invoker = StepInvoker::new(pipeline, clock.clone(), tokens.clone());
    let mut runner = Runner::new(machine, Arc::new(invoker), clock).with_task_tokens(tokens);
    if let Some(o) = observer {
        runner = runner.with_observer(o);
    }
    Ok(runner.execute(execution_name, input).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asl::{ExecutionStatus, VirtualClock, PAYLOAD_LIMIT_BYTES};
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Stands in for the step handlers: launch finishes at once, provision
    /// does what the test says, teardown records the state it was given.
    struct Steps {
        clock: Arc<VirtualClock>,
        provision: fn(&VirtualClock) -> Option<Value>,
        teardowns: Mutex<Vec<Value>>,
    }

    #[async_trait]
    impl TaskInvoker for Steps {
        async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
            let out = json!({"build_id": "b-1", "done": true, "wait_seconds": 0, "polls": 0, "cache_hit": false});
            match resource {
                "bakehouse:launch" => Ok(out),
                "bakehouse:provision" => match (self.provision)(&self.clock) {
                    Some(v) => Ok(v),
                    None => futures::future::pending().await,
                },
                "bakehouse:teardown" => {
                    self.teardowns.lock().unwrap().push(input["state"].clone());
                    Ok(json!({"build_id": "b-1", "status": "FAILED"}))
                }
                other => Err(TaskFailure::new(
                    "NonRetryable",
                    format!("unexpected {other}"),
                )),
            }
        }
    }

    async fn run(provision: fn(&VirtualClock) -> Option<Value>) -> (Execution, Vec<Value>) {
        let clock = Arc::new(VirtualClock::new(chrono::Utc::now()));
        let steps = Arc::new(Steps {
            clock: clock.clone(),
            provision,
            teardowns: Mutex::new(Vec::new()),
        });
        let runner = Runner::new(load_definition().unwrap(), steps.clone(), clock)
            .with_rng(fastrand::Rng::with_seed(1));
        let execution = runner
            .execute("b-1", json!({"recipe": "web", "build_id": "b-1"}))
            .await;
        let teardowns = steps.teardowns.lock().unwrap().clone();
        (execution, teardowns)
    }

    #[tokio::test]
    async fn a_step_result_over_the_payload_quota_still_tears_down() {
        // States.DataLimitExceeded is terminal: States.ALL does not catch it,
        // so every catcher names it too.
        let (execution, teardowns) =
            run(|_| Some(json!({"log": "x".repeat(PAYLOAD_LIMIT_BYTES)}))).await;
        assert_eq!(teardowns.len(), 1, "{:#?}", execution.history);
        assert_eq!(teardowns[0]["error"]["Error"], "States.DataLimitExceeded");
        assert!(matches!(
            &execution.status,
            ExecutionStatus::Failed { error, cause: Some(cause) }
                if error == "States.DataLimitExceeded" && cause.contains("'Provision'")
        ));
    }

    #[tokio::test]
    async fn a_step_timeout_tears_down_and_fails_as_states_timeout() {
        // Each attempt outlives the Task's TimeoutSeconds (900 s).
        let (execution, teardowns) = run(|clock| {
            clock.advance(Duration::from_secs(901));
            None
        })
        .await;
        assert_eq!(teardowns.len(), 1, "{:#?}", execution.history);
        // AWS gives a Task timeout no cause: the error output has none, and
        // the failure state must not read one (that would be States.Runtime).
        assert_eq!(teardowns[0]["error"], json!({"Error": "States.Timeout"}));
        assert_eq!(
            execution.status,
            ExecutionStatus::Failed {
                error: "States.Timeout".into(),
                cause: None
            }
        );
    }

    #[tokio::test]
    async fn a_step_result_missing_a_routed_field_tears_down() {
        // A Choice on a path that selects nothing is States.Runtime, which no
        // Catch handles: the Done choices check the fields first.
        let (execution, teardowns) =
            run(|_| Some(json!({"build_id": "b-1", "wait_seconds": 0, "polls": 0}))).await;
        assert_eq!(teardowns.len(), 1, "{:#?}", execution.history);
        assert_eq!(teardowns[0]["error"]["Error"], "MalformedStepResult");
        assert!(matches!(
            &execution.status,
            ExecutionStatus::Failed { error, cause: Some(cause) }
                if error == "MalformedStepResult" && cause.contains("without build_id, done")
        ));
    }

    #[tokio::test]
    async fn a_step_result_with_a_mistyped_routed_field_tears_down() {
        // `wait_seconds` feeds a Wait's SecondsPath: a string there would be
        // States.Runtime too.
        let (execution, teardowns) = run(|_| {
            Some(json!({"build_id": "b-1", "done": false, "wait_seconds": "5", "polls": 0}))
        })
        .await;
        assert_eq!(teardowns.len(), 1, "{:#?}", execution.history);
        assert_eq!(teardowns[0]["error"]["Error"], "MalformedStepResult");
    }

    #[test]
    fn a_parked_steps_result_feeds_only_paths_its_typed_output_always_has() {
        // WaitFor<Step> states (but the builder's) go to the next step
        // without a Choice: the token is completed only by `Pipeline::wake`
        // and the local invoker, with a finished StepOutput. Every path the
        // next state reads must be a field StepOutput always serializes.
        let definition: Value = serde_json::from_str(DEFINITION).unwrap();
        let states = definition["States"].as_object().unwrap();
        let output = serde_json::to_value(crate::pipeline::io::StepOutput {
            build_id: "b".into(),
            done: true,
            wait_seconds: 0,
            polls: 0,
            cache_hit: false,
            version: None,
        })
        .unwrap();
        let mut checked = 0;
        for (name, state) in states {
            let Some(next) = state["Next"].as_str() else {
                continue;
            };
            if !name.starts_with("WaitFor") || next.ends_with("Ready") || next.ends_with("Done") {
                continue;
            }
            let params = states[next]["Parameters"].as_object().unwrap();
            for (key, path) in params {
                if let (true, Some(path)) = (key.ends_with(".$"), path.as_str()) {
                    let field = path
                        .strip_prefix("$.build.")
                        .unwrap_or_else(|| panic!("{next} reads {path}, not the step result"));
                    assert!(output.get(field).is_some(), "{next} reads {path}");
                }
            }
            assert_eq!(state["ResultPath"], "$.build", "{name}");
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    #[test]
    fn the_deployed_definition_loads_with_every_step_mapped() {
        let machine = load_definition().unwrap();
        // (the WaitFor states call the step functions through lambda:invoke,
        // their FunctionName checked with the placeholders below)
        let mut resources: Vec<&str> = machine
            .states()
            .filter_map(|s| s.resource())
            .filter(|r| !r.starts_with("arn:aws:states:::lambda:invoke"))
            .collect();
        resources.sort();
        resources.dedup();
        assert_eq!(
            resources,
            [
                "bakehouse:capture",
                "bakehouse:clean",
                "bakehouse:launch",
                "bakehouse:provision",
                "bakehouse:register",
                "bakehouse:teardown",
                "bakehouse:test"
            ]
        );
        // every placeholder in the file is one the substitutions provide
        let subs = local_substitutions();
        let mut rest = DEFINITION;
        while let Some(start) = rest.find("${") {
            let end = rest[start..].find('}').unwrap() + start;
            assert!(
                subs.contains_key(&rest[start + 2..end]),
                "{}",
                &rest[start..=end]
            );
            rest = &rest[end..];
        }
    }
}
