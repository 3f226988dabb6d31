//! Loading a definition: `${Name}` substitution, parsing, and validation of
//! every state (known fields only, types and values, transitions, reachability).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

use super::choice::{parse_rule, ChoiceBranch};
use super::definition::{
    Graph, Resource, State, StateKind, StateMachine, TextSource, WaitFor, LAMBDA_INVOKE,
};
use super::error::AslError;
use super::fields::Obj;
use super::intrinsics::{looks_like_call, Intrinsic};
use super::path::{IoPath, Path, ReferencePath, ResultPath};
use super::retry::{parse_catch, parse_retry};
use super::template::Template;

/// The suffix of a callback Task's resource.
const WAIT_FOR_TASK_TOKEN: &str = ".waitForTaskToken";

/// Fields that are valid Step Functions but that this interpreter does not run.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("Arguments", "JSONata is not supported; use Parameters"),
    (
        "Output",
        "JSONata is not supported; use OutputPath/ResultSelector",
    ),
    ("Assign", "workflow variables are not supported"),
    (
        "Credentials",
        "cross-account task credentials are not supported",
    ),
    (
        "ItemReader",
        "reading items from S3 (distributed Map) is not supported",
    ),
    (
        "ResultWriter",
        "writing results to S3 (distributed Map) is not supported",
    ),
    (
        "ItemBatcher",
        "item batching (distributed Map) is not supported",
    ),
    (
        "ToleratedFailurePercentage",
        "tolerated failures are not supported",
    ),
    (
        "ToleratedFailurePercentagePath",
        "tolerated failures are not supported",
    ),
    (
        "ToleratedFailureCount",
        "tolerated failures are not supported",
    ),
    (
        "ToleratedFailureCountPath",
        "tolerated failures are not supported",
    ),
    ("Label", "distributed Map labels are not supported"),
    ("MaxConcurrencyPath", "use a literal MaxConcurrency"),
    ("TimeoutSecondsPath", "use a literal TimeoutSeconds"),
    ("HeartbeatSecondsPath", "use a literal HeartbeatSeconds"),
];

impl StateMachine {
    /// Loads a definition: replaces every `${Name}` with `substitutions[Name]`
    /// (textually, as CloudFormation's `DefinitionSubstitutions` do), parses
    /// the JSON and validates it. Anything this interpreter cannot run is
    /// rejected here, naming the state and the field.
    pub fn load(
        definition_json: &str,
        substitutions: &BTreeMap<String, String>,
    ) -> Result<StateMachine, AslError> {
        let text = substitute(definition_json, substitutions)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| AslError::InvalidJson {
            message: e.to_string(),
        })?;
        let mut top = Obj::new("", "", &value)?;
        top.reject_unsupported(UNSUPPORTED)?;
        query_language(&mut top)?;
        let graph = parse_graph(&mut top, "")?;
        let comment = top.string("Comment")?.map(str::to_string);
        top.string("Version")?;
        let timeout_seconds = top.uint("TimeoutSeconds")?;
        if timeout_seconds == Some(0) {
            return Err(top.invalid("TimeoutSeconds", "must be a positive integer"));
        }
        top.finish()?;
        Ok(StateMachine {
            graph,
            timeout_seconds,
            comment,
            name: "StateMachine".to_string(),
        })
    }
}

/// Replaces `${Name}` placeholders (names of letters, digits, `_`, `-`, `.`,
/// `:`); fails naming every placeholder without a substitution.
fn substitute(text: &str, substitutions: &BTreeMap<String, String>) -> Result<String, AslError> {
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_-.:".contains(c)))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            match substitutions.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_string());
                    }
                }
            }
            rest = &after[name_len + 1..];
        } else {
            out.push_str("${");
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(AslError::MissingSubstitution { names: missing })
    }
}

fn query_language(obj: &mut Obj<'_>) -> Result<(), AslError> {
    match obj.string("QueryLanguage")? {
        None | Some("JSONPath") => Ok(()),
        Some("JSONata") => {
            Err(obj.unsupported("QueryLanguage", "JSONata is not supported; use JSONPath"))
        }
        Some(other) => {
            Err(obj.invalid("QueryLanguage", format!("unknown query language `{other}`")))
        }
    }
}

/// Parses `StartAt` and `States` of `obj` and checks transitions and
/// reachability. `scope` prefixes the names of the states in errors.
fn parse_graph(obj: &mut Obj<'_>, scope: &str) -> Result<Graph, AslError> {
    let start_at = obj.req_string("StartAt")?.to_string();
    let Some(states_value) = obj.get("States") else {
        return Err(obj.missing("States"));
    };
    let Some(states_map) = states_value.as_object().filter(|m| !m.is_empty()) else {
        return Err(obj.invalid("States", "must be a non-empty object"));
    };
    let full = |name: &str| {
        if scope.is_empty() {
            name.to_string()
        } else {
            format!("{scope}/{name}")
        }
    };
    let mut states = BTreeMap::new();
    for (name, value) in states_map {
        states.insert(name.clone(), parse_state(&full(name), name, value)?);
    }
    if !states.contains_key(&start_at) {
        return Err(AslError::UnknownTarget {
            state: obj.state.to_string(),
            field: obj.field("StartAt"),
            target: start_at,
        });
    }
    for state in states.values() {
        for (field, target) in state.targets() {
            if !states.contains_key(target) {
                return Err(AslError::UnknownTarget {
                    state: full(&state.name),
                    field,
                    target: target.to_string(),
                });
            }
        }
    }
    let mut reached = BTreeSet::from([start_at.as_str()]);
    let mut queue = VecDeque::from([start_at.as_str()]);
    while let Some(name) = queue.pop_front() {
        if let Some(state) = states.get(name) {
            for (_, target) in state.targets() {
                if reached.insert(target) {
                    queue.push_back(target);
                }
            }
        }
    }
    if let Some(name) = states.keys().find(|n| !reached.contains(n.as_str())) {
        return Err(AslError::Unreachable { state: full(name) });
    }
    Ok(Graph { start_at, states })
}

fn parse_state(full_name: &str, name: &str, value: &Value) -> Result<State, AslError> {
    let mut obj = Obj::new(full_name, "", value)?;
    obj.reject_unsupported(UNSUPPORTED)?;
    query_language(&mut obj)?;
    let type_name = obj.req_string("Type")?;
    let comment = obj.string("Comment")?.map(str::to_string);
    let mut state = State {
        name: name.to_string(),
        comment,
        input_path: IoPath::Whole,
        output_path: IoPath::Whole,
        parameters: None,
        result_selector: None,
        result_path: ResultPath::Replace,
        next: None,
        retry: Vec::new(),
        catch: Vec::new(),
        kind: StateKind::Succeed,
    };
    if type_name != "Fail" {
        state.input_path = parse_io_path(&mut obj, "InputPath")?;
        state.output_path = parse_io_path(&mut obj, "OutputPath")?;
    }
    if matches!(type_name, "Task" | "Pass" | "Parallel" | "Map") {
        state.result_path = parse_result_path(&mut obj)?;
        state.next = parse_transition(&mut obj)?;
    }
    if matches!(type_name, "Task" | "Parallel" | "Map") {
        state.result_selector = parse_template(&mut obj, "ResultSelector")?;
        state.retry = parse_retry(&mut obj)?;
        state.catch = parse_catch(&mut obj)?;
    }
    if matches!(type_name, "Task" | "Pass" | "Parallel") {
        state.parameters = parse_template(&mut obj, "Parameters")?;
    }
    state.kind = match type_name {
        "Task" => parse_task(&mut obj)?,
        "Pass" => StateKind::Pass {
            result: obj.get("Result").cloned(),
        },
        "Choice" => parse_choice(&mut obj)?,
        "Wait" => {
            state.next = parse_transition(&mut obj)?;
            parse_wait(&mut obj)?
        }
        "Parallel" => {
            let Some(items) = obj.array("Branches")? else {
                return Err(obj.missing("Branches"));
            };
            if items.is_empty() {
                return Err(obj.invalid("Branches", "must have at least one branch"));
            }
            let mut branches = Vec::with_capacity(items.len());
            for i in 0..items.len() {
                let mut branch = obj.element("Branches", i)?;
                let graph = parse_graph(&mut branch, &format!("{full_name}/Branches[{i}]"))?;
                branch.string("Comment")?;
                branch.finish()?;
                branches.push(graph);
            }
            StateKind::Parallel { branches }
        }
        "Map" => parse_map(&mut obj, full_name)?,
        "Succeed" => StateKind::Succeed,
        "Fail" => StateKind::Fail {
            error: parse_text_source(&mut obj, "Error", "ErrorPath")?,
            cause: parse_text_source(&mut obj, "Cause", "CausePath")?,
        },
        other => {
            return Err(obj.invalid(
                "Type",
                format!(
                    "unknown state type `{other}` (expected Task, Pass, Choice, Wait, Parallel, Map, Succeed or Fail)"
                ),
            ))
        }
    };
    obj.finish()?;
    Ok(state)
}

fn parse_task(obj: &mut Obj<'_>) -> Result<StateKind, AslError> {
    let full_text = obj.req_string("Resource")?;
    let callback = full_text.ends_with(WAIT_FOR_TASK_TOKEN);
    let resource_text = full_text
        .strip_suffix(WAIT_FOR_TASK_TOKEN)
        .unwrap_or(full_text);
    let resource = if resource_text == LAMBDA_INVOKE {
        let has_function = obj
            .get_unmarked("Parameters")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key("FunctionName") || p.contains_key("FunctionName.$"));
        if !has_function {
            return Err(obj.missing("Parameters.FunctionName"));
        }
        Resource::LambdaInvoke
    } else if resource_text.starts_with(LAMBDA_INVOKE) {
        return Err(obj.unsupported(
            "Resource",
            format!("only {LAMBDA_INVOKE} is supported for Lambda, not `{resource_text}`"),
        ));
    } else {
        Resource::Other(resource_text.to_string())
    };
    let timeout_seconds = obj.uint("TimeoutSeconds")?;
    let heartbeat_seconds = obj.uint("HeartbeatSeconds")?;
    if timeout_seconds == Some(0) {
        return Err(obj.invalid("TimeoutSeconds", "must be a positive integer"));
    }
    if heartbeat_seconds == Some(0) {
        return Err(obj.invalid("HeartbeatSeconds", "must be a positive integer"));
    }
    if let (Some(t), Some(h)) = (timeout_seconds, heartbeat_seconds) {
        if h >= t {
            return Err(obj.invalid("HeartbeatSeconds", "must be smaller than TimeoutSeconds"));
        }
    }
    Ok(StateKind::Task {
        resource,
        timeout_seconds,
        heartbeat_seconds,
        callback,
    })
}

fn parse_choice(obj: &mut Obj<'_>) -> Result<StateKind, AslError> {
    let Some(items) = obj.array("Choices")? else {
        return Err(obj.missing("Choices"));
    };
    if items.is_empty() {
        return Err(obj.invalid("Choices", "must have at least one rule"));
    }
    let mut choices = Vec::with_capacity(items.len());
    for i in 0..items.len() {
        let mut rule_obj = obj.element("Choices", i)?;
        let (rule, next) = parse_rule(&mut rule_obj, true)?;
        rule_obj.finish()?;
        choices.push(ChoiceBranch {
            rule,
            next: next.unwrap_or_default(),
        });
    }
    let default = obj.string("Default")?.map(str::to_string);
    Ok(StateKind::Choice { choices, default })
}

fn parse_wait(obj: &mut Obj<'_>) -> Result<StateKind, AslError> {
    let given: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
        .into_iter()
        .filter(|f| obj.has(f))
        .collect();
    match given.as_slice() {
        [] => Err(obj.missing("Seconds")),
        [_, second, ..] => Err(obj.invalid(
            second,
            "a Wait state takes exactly one of Seconds, SecondsPath, Timestamp and TimestampPath",
        )),
        ["Seconds"] => Ok(StateKind::Wait(WaitFor::Seconds(
            obj.uint("Seconds")?.unwrap_or_default(),
        ))),
        ["Timestamp"] => {
            let text = obj.req_string("Timestamp")?;
            let ts = super::choice::timestamp(text)
                .ok_or_else(|| obj.invalid("Timestamp", "must be an RFC 3339 timestamp"))?;
            Ok(StateKind::Wait(WaitFor::Timestamp(ts.into())))
        }
        [field] => {
            let text = obj.req_string(field)?;
            let path = Path::parse(text).map_err(|e| obj.invalid(field, e))?;
            Ok(StateKind::Wait(if *field == "SecondsPath" {
                WaitFor::SecondsPath(path)
            } else {
                WaitFor::TimestampPath(path)
            }))
        }
    }
}

fn parse_map(obj: &mut Obj<'_>, full_name: &str) -> Result<StateKind, AslError> {
    let processor_field = match (obj.has("ItemProcessor"), obj.has("Iterator")) {
        (true, false) => "ItemProcessor",
        (false, true) => "Iterator",
        (true, true) => {
            return Err(obj.invalid("Iterator", "use either ItemProcessor or Iterator, not both"))
        }
        (false, false) => return Err(obj.missing("ItemProcessor")),
    };
    let mut proc_obj = obj.child(processor_field)?;
    if proc_obj.has("ProcessorConfig") {
        let mut config = proc_obj.child("ProcessorConfig")?;
        match config.string("Mode")? {
            None | Some("INLINE") => {}
            Some("DISTRIBUTED") => {
                return Err(
                    config.unsupported("Mode", "distributed Map is not supported; use INLINE")
                )
            }
            Some(other) => {
                return Err(config.invalid(
                    "Mode",
                    format!("must be INLINE or DISTRIBUTED, not `{other}`"),
                ))
            }
        }
        if config.has("ExecutionType") {
            return Err(config.unsupported("ExecutionType", "only applies to distributed Map"));
        }
        config.finish()?;
    }
    let processor = parse_graph(&mut proc_obj, &format!("{full_name}/{processor_field}"))?;
    proc_obj.string("Comment")?;
    proc_obj.finish()?;

    let items_path = match obj.get("ItemsPath") {
        None => None,
        Some(Value::String(text)) if text == "$" => None,
        Some(Value::String(text)) => {
            Some(Path::parse(text).map_err(|e| obj.invalid("ItemsPath", e))?)
        }
        Some(_) => return Err(obj.invalid("ItemsPath", "must be a path string")),
    };
    let item_selector = match (obj.has("ItemSelector"), obj.has("Parameters")) {
        (true, true) => {
            return Err(obj.invalid(
                "Parameters",
                "use either ItemSelector or Parameters, not both",
            ))
        }
        (true, false) => parse_template(obj, "ItemSelector")?,
        (false, true) => parse_template(obj, "Parameters")?,
        (false, false) => None,
    };
    let max_concurrency = obj.uint("MaxConcurrency")?.unwrap_or(0);
    Ok(StateKind::Map {
        items_path,
        item_selector,
        processor,
        max_concurrency,
    })
}

fn parse_text_source(
    obj: &mut Obj<'_>,
    literal: &str,
    path: &str,
) -> Result<Option<TextSource>, AslError> {
    match (obj.has(literal), obj.has(path)) {
        (true, true) => Err(obj.invalid(path, format!("use either {literal} or {path}, not both"))),
        (true, false) => Ok(obj
            .string(literal)?
            .map(|s| TextSource::Literal(s.to_string()))),
        (false, true) => {
            let text = obj.req_string(path)?;
            if looks_like_call(text) {
                Intrinsic::parse(text)
                    .map(|c| Some(TextSource::Call(c)))
                    .map_err(|e| obj.invalid(path, e))
            } else {
                Path::parse(text)
                    .map(|p| Some(TextSource::Path(p)))
                    .map_err(|e| obj.invalid(path, e))
            }
        }
        (false, false) => Ok(None),
    }
}

fn parse_transition(obj: &mut Obj<'_>) -> Result<Option<String>, AslError> {
    let next = obj.string("Next")?;
    let end = obj.boolean("End")?;
    match (next, end) {
        (Some(_), Some(true)) => Err(obj.invalid("End", "cannot be true when Next is given")),
        (Some(next), _) => Ok(Some(next.to_string())),
        (None, Some(true)) => Ok(None),
        (None, _) => Err(obj.missing("Next")),
    }
}

fn parse_io_path(obj: &mut Obj<'_>, field: &str) -> Result<IoPath, AslError> {
    match obj.get(field) {
        None => Ok(IoPath::Whole),
        Some(Value::Null) => Ok(IoPath::Empty),
        Some(Value::String(text)) if text == "$" => Ok(IoPath::Whole),
        Some(Value::String(text)) => Path::parse(text)
            .map(IoPath::Select)
            .map_err(|e| obj.invalid(field, e)),
        Some(_) => Err(obj.invalid(field, "must be a path string or null")),
    }
}

/// Parses a `ResultPath` field (of a state or a catcher).
pub(crate) fn parse_result_path(obj: &mut Obj<'_>) -> Result<ResultPath, AslError> {
    match obj.get("ResultPath") {
        None => Ok(ResultPath::Replace),
        Some(Value::Null) => Ok(ResultPath::Discard),
        Some(Value::String(text)) if text == "$" => Ok(ResultPath::Replace),
        Some(Value::String(text)) => ReferencePath::parse(text)
            .map(ResultPath::Set)
            .map_err(|e| obj.invalid("ResultPath", e)),
        Some(_) => Err(obj.invalid("ResultPath", "must be a reference path string or null")),
    }
}

fn parse_template(obj: &mut Obj<'_>, field: &str) -> Result<Option<Template>, AslError> {
    let Some(value) = obj.get(field) else {
        return Ok(None);
    };
    let full = obj.field(field);
    Template::compile(value, &full)
        .map(Some)
        .map_err(|(field, reason)| AslError::InvalidField {
            state: obj.state.to_string(),
            field,
            reason,
        })
}
