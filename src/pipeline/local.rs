//! Running the pipeline state machine on this machine: the local ASL runner
//! executes `statemachines/pipeline.asl.json` (the very definition deployed
//! to AWS), with each Lambda `Resource` mapped to the same step handler the
//! Lambda function calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::asl::{Clock, Execution, Observer, Runner, StateMachine, TaskFailure, TaskInvoker};
use crate::build::Step;

use super::io::ExecutionInput;
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
}

impl StepInvoker {
    /// An invoker over `pipeline`.
    pub fn new(pipeline: Pipeline) -> StepInvoker {
        StepInvoker { pipeline }
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
        self.pipeline
            .invoke(step, input)
            .await
            .map_err(|e| TaskFailure::new(e.name(), lambda_error_cause(&e)))
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
    let mut runner = Runner::new(machine, Arc::new(StepInvoker::new(pipeline)), clock);
    if let Some(o) = observer {
        runner = runner.with_observer(o);
    }
    Ok(runner.execute(execution_name, input).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_definition_loads_with_every_step_mapped() {
        let machine = load_definition().unwrap();
        let mut resources: Vec<&str> = machine.states().filter_map(|s| s.resource()).collect();
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
