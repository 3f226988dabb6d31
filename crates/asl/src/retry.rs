//! `Retry` and `Catch`: error-name matching, retry delays (with backoff,
//! `MaxDelaySeconds` and jitter) and their load-time validation.

use std::time::Duration;

use serde_json::Value;

use super::error::{
    AslError, STATES_ALL, STATES_DATA_LIMIT_EXCEEDED, STATES_RUNTIME, STATES_TASK_FAILED,
    STATES_TIMEOUT,
};
use super::fields::Obj;
use super::load::parse_result_path;
use super::path::ResultPath;

/// Step Functions' upper bound for `MaxDelaySeconds` (and so for any delay).
const MAX_DELAY_SECONDS: f64 = 31_622_401.0;

/// Whether a list of `ErrorEquals` names matches `error`.
///
/// `States.Runtime` is never matched (it always fails the execution). Other
/// names match exactly; `States.ALL` matches everything except
/// `States.DataLimitExceeded`; `States.TaskFailed` matches everything except
/// that and `States.Timeout`.
pub fn error_matches(names: &[String], error: &str) -> bool {
    if error == STATES_RUNTIME {
        return false;
    }
    let terminal = error == STATES_DATA_LIMIT_EXCEEDED;
    names.iter().any(|name| {
        name == error
            || (name == STATES_ALL && !terminal)
            || (name == STATES_TASK_FAILED && !terminal && error != STATES_TIMEOUT)
    })
}

/// How a retry delay is randomized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The computed delay as it is.
    #[default]
    None,
    /// A uniformly random delay between 0 and the computed delay.
    Full,
}

/// One element of a state's `Retry` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrier {
    /// Error names this retrier handles.
    pub error_equals: Vec<String>,
    /// Delay before the first retry, in seconds (default 1).
    pub interval_seconds: u64,
    /// How many retries at most (default 3; 0 = never).
    pub max_attempts: u64,
    /// Multiplier of the delay for each further retry (default 2.0).
    pub backoff_rate: f64,
    /// Cap of the delay, in seconds.
    pub max_delay_seconds: Option<u64>,
    /// Randomization of the delay.
    pub jitter: Jitter,
}

impl Retrier {
    /// Whether this retrier handles `error`.
    pub fn matches(&self, error: &str) -> bool {
        error_matches(&self.error_equals, error)
    }

    /// The delay before retry number `retry` of this retrier (0 for the
    /// first): `IntervalSeconds * BackoffRate^retry`, capped by
    /// `MaxDelaySeconds`, then jittered. Rounded to milliseconds.
    pub fn delay(&self, retry: u64, rng: &mut fastrand::Rng) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let mut seconds = self.interval_seconds as f64 * self.backoff_rate.powi(exponent);
        if let Some(max) = self.max_delay_seconds {
            seconds = seconds.min(max as f64);
        }
        if !seconds.is_finite() || seconds > MAX_DELAY_SECONDS {
            seconds = MAX_DELAY_SECONDS;
        }
        if self.jitter == Jitter::Full {
            seconds *= rng.f64();
        }
        Duration::from_millis((seconds * 1000.0).round() as u64)
    }
}

/// One element of a state's `Catch` array.
#[derive(Debug, Clone)]
pub struct Catcher {
    /// Error names this catcher handles.
    pub error_equals: Vec<String>,
    /// The state to go to.
    pub next: String,
    /// Where `{"Error": ..., "Cause": ...}` goes in the state's raw input
    /// (default `$`: it replaces it).
    pub result_path: ResultPath,
}

impl Catcher {
    /// Whether this catcher handles `error`.
    pub fn matches(&self, error: &str) -> bool {
        error_matches(&self.error_equals, error)
    }
}

fn parse_error_equals(obj: &mut Obj<'_>, last: bool) -> Result<Vec<String>, AslError> {
    let Some(items) = obj.array("ErrorEquals")? else {
        return Err(obj.missing("ErrorEquals"));
    };
    if items.is_empty() {
        return Err(obj.invalid("ErrorEquals", "must name at least one error"));
    }
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        let name = item
            .as_str()
            .ok_or_else(|| obj.invalid("ErrorEquals", "must be an array of strings"))?;
        names.push(name.to_string());
    }
    if names.iter().any(|n| n == STATES_ALL) {
        if names.len() > 1 {
            return Err(obj.invalid("ErrorEquals", "States.ALL must appear alone"));
        }
        if !last {
            return Err(obj.invalid(
                "ErrorEquals",
                "States.ALL must be in the last retrier or catcher",
            ));
        }
    }
    Ok(names)
}

/// Parses a state's `Retry` field.
pub(crate) fn parse_retry(state: &mut Obj<'_>) -> Result<Vec<Retrier>, AslError> {
    let Some(items) = state.array("Retry")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for i in 0..items.len() {
        let mut obj = state.element("Retry", i)?;
        let error_equals = parse_error_equals(&mut obj, i + 1 == items.len())?;
        let interval_seconds = obj.uint("IntervalSeconds")?.unwrap_or(1);
        if interval_seconds == 0 {
            return Err(obj.invalid("IntervalSeconds", "must be a positive integer"));
        }
        let max_attempts = obj.uint("MaxAttempts")?.unwrap_or(3);
        let backoff_rate = obj.number("BackoffRate")?.unwrap_or(2.0);
        if backoff_rate < 1.0 {
            return Err(obj.invalid("BackoffRate", "must be at least 1.0"));
        }
        let max_delay_seconds = obj.uint("MaxDelaySeconds")?;
        if max_delay_seconds == Some(0)
            || max_delay_seconds.is_some_and(|m| m as f64 >= MAX_DELAY_SECONDS)
        {
            return Err(obj.invalid(
                "MaxDelaySeconds",
                "must be a positive integer below 31622401",
            ));
        }
        let jitter = match obj.string("JitterStrategy")? {
            None | Some("NONE") => Jitter::None,
            Some("FULL") => Jitter::Full,
            Some(other) => {
                return Err(obj.invalid(
                    "JitterStrategy",
                    format!("must be FULL or NONE, not `{other}`"),
                ))
            }
        };
        obj.string("Comment")?;
        obj.finish()?;
        out.push(Retrier {
            error_equals,
            interval_seconds,
            max_attempts,
            backoff_rate,
            max_delay_seconds,
            jitter,
        });
    }
    Ok(out)
}

/// Parses a state's `Catch` field.
pub(crate) fn parse_catch(state: &mut Obj<'_>) -> Result<Vec<Catcher>, AslError> {
    let Some(items) = state.array("Catch")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for i in 0..items.len() {
        let mut obj = state.element("Catch", i)?;
        obj.reject_unsupported(&[
            ("Output", "JSONata is not supported; use ResultPath"),
            ("Assign", "variables are not supported"),
        ])?;
        let error_equals = parse_error_equals(&mut obj, i + 1 == items.len())?;
        let next = obj.req_string("Next")?.to_string();
        let result_path = parse_result_path(&mut obj)?;
        obj.string("Comment")?;
        obj.finish()?;
        out.push(Catcher {
            error_equals,
            next,
            result_path,
        });
    }
    Ok(out)
}

/// The `{"Error": ..., "Cause": ...}` object a catcher passes on, without
/// `Cause` when the error has none (the developer guide, "Error output": the
/// object "usually contains the field `Cause`").
pub(crate) fn error_output(error: &str, cause: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("Error".to_string(), Value::from(error));
    if let Some(cause) = cause {
        out.insert("Cause".to_string(), Value::from(cause));
    }
    Value::Object(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_rules() {
        assert!(error_matches(&names(&["States.ALL"]), "BuildFailed"));
        assert!(error_matches(&names(&["States.ALL"]), "States.Timeout"));
        assert!(!error_matches(&names(&["States.ALL"]), "States.Runtime"));
        assert!(error_matches(&names(&["States.TaskFailed"]), "Retryable"));
        assert!(!error_matches(
            &names(&["States.TaskFailed"]),
            "States.Timeout"
        ));
        assert!(!error_matches(
            &names(&["States.TaskFailed"]),
            "States.Runtime"
        ));
        assert!(error_matches(&names(&["A", "B"]), "B"));
        assert!(!error_matches(&names(&["A"]), "a"));
        assert!(!error_matches(
            &names(&["States.Runtime"]),
            "States.Runtime"
        ));
        assert!(!error_matches(
            &names(&["States.ALL"]),
            "States.DataLimitExceeded"
        ));
        assert!(error_matches(
            &names(&["States.DataLimitExceeded"]),
            "States.DataLimitExceeded"
        ));
    }

    #[test]
    fn delays() {
        let mut rng = fastrand::Rng::with_seed(7);
        let r = Retrier {
            error_equals: names(&["X"]),
            interval_seconds: 3,
            max_attempts: 5,
            backoff_rate: 1.5,
            max_delay_seconds: Some(6),
            jitter: Jitter::None,
        };
        let d: Vec<u64> = (0..4)
            .map(|i| r.delay(i, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![3000, 4500, 6000, 6000]);
        let full = Retrier {
            jitter: Jitter::Full,
            max_delay_seconds: None,
            ..r
        };
        for i in 0..50 {
            let d = full.delay(i % 3, &mut rng);
            assert!(d <= Duration::from_secs_f64(3.0 * 1.5f64.powi((i % 3) as i32)));
        }
    }
}
