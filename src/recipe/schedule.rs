//! Recipe schedules: EventBridge Scheduler expressions, checked field by field.
//!
//! Accepted forms:
//! - `cron(min hour day-of-month month day-of-week year)`: the EventBridge
//!   6-field form. Exactly one of day-of-month and day-of-week must be `?`.
//! - `rate(N unit)`: unit `minute(s)`, `hour(s)` or `day(s)`, singular iff N
//!   is 1 (as EventBridge requires).
//! - a standard 5-field cron line (`0 4 * * 1`) or a nickname (`@daily`):
//!   checked with `croner`, then converted: day-of-week numbers 0-7 become
//!   names (`SUN`..`SAT`), the unrestricted day field becomes `?`, the year is
//!   `*`. A line restricting both day-of-month and day-of-week (cron's "either
//!   matches" rule) has no EventBridge form and is rejected.
//!
//! [`Schedule::expression`] is always the EventBridge form.

use std::fmt;

const DOW_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// A checked schedule, held in its EventBridge form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
}

impl Schedule {
    /// Checks `text` and converts it to EventBridge form; the error names the
    /// offending field.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expression = if let Some(body) = strip_call(text, "cron") {
            check_eventbridge_cron(body)?;
            format!(
                "cron({})",
                body.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        } else if let Some(body) = strip_call(text, "rate") {
            check_rate(body)?;
            format!(
                "rate({})",
                body.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        } else if text.starts_with("at(") {
            return Err(
                "one-time `at(...)` schedules are not supported; use cron(...) or rate(...)"
                    .to_string(),
            );
        } else {
            format!("cron({})", convert_standard(text)?)
        };
        Ok(Schedule { expression })
    }

    /// The EventBridge schedule expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

fn strip_call<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn check_rate(body: &str) -> Result<(), String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    let [value, unit] = parts.as_slice() else {
        return Err(format!(
            "rate({body}): expected `rate(N unit)` such as rate(1 day) or rate(6 hours)"
        ));
    };
    let n: u32 = value
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("rate({body}): {value:?} is not a positive whole number"))?;
    let singular = matches!(*unit, "minute" | "hour" | "day");
    let plural = matches!(*unit, "minutes" | "hours" | "days");
    if !singular && !plural {
        return Err(format!(
            "rate({body}): unit {unit:?} must be minute(s), hour(s) or day(s)"
        ));
    }
    if n == 1 && plural {
        return Err(format!(
            "rate({body}): use the singular unit with 1 (e.g. rate(1 day))"
        ));
    }
    if n > 1 && singular {
        return Err(format!(
            "rate({body}): use the plural unit with {n} (e.g. rate({n} {unit}s))"
        ));
    }
    Ok(())
}

/// One field of an EventBridge cron expression.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 6] = [
    Field {
        name: "minutes",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hours",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
    },
    Field {
        name: "day-of-week",
        min: 1,
        max: 7,
        names: &DOW_NAMES,
    },
    Field {
        name: "year",
        min: 1970,
        max: 2199,
        names: &[],
    },
];

fn check_eventbridge_cron(body: &str) -> Result<(), String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    if parts.len() != 6 {
        return Err(format!(
            "cron({body}): EventBridge cron needs 6 fields (minutes hours day-of-month month day-of-week year), found {}",
            parts.len()
        ));
    }
    for (i, (text, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
        check_field(text, field, i)
            .map_err(|m| format!("cron({body}): {} field {text:?}: {m}", field.name))?;
    }
    match (parts[2] == "?", parts[4] == "?") {
        (true, true) => Err(format!(
            "cron({body}): day-of-month and day-of-week cannot both be `?`"
        )),
        (false, false) => Err(format!(
            "cron({body}): one of day-of-month or day-of-week must be `?` (EventBridge does not allow both)"
        )),
        _ => Ok(()),
    }
}

fn check_field(text: &str, field: &Field, index: usize) -> Result<(), String> {
    if text == "?" {
        return if index == 2 || index == 4 {
            Ok(())
        } else {
            Err("`?` is only allowed in day-of-month or day-of-week".to_string())
        };
    }
    for item in text.split(',') {
        check_item(item, field, index)?;
    }
    Ok(())
}

fn check_item(item: &str, field: &Field, index: usize) -> Result<(), String> {
    if item.is_empty() {
        return Err("empty list item".to_string());
    }
    if item.contains('?') {
        return Err("`?` must stand alone".to_string());
    }
    // Day-of-month specials: L, LW, nW.
    if index == 2 {
        if item == "L" || item == "LW" {
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('W') {
            return value(day, field).map(|_| ());
        }
    }
    // Day-of-week specials: L, nL, n#k.
    if index == 4 {
        if item == "L" {
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('L') {
            return value(day, field).map(|_| ());
        }
        if let Some((day, nth)) = item.split_once('#') {
            value(day, field)?;
            return match nth.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => Err(format!("`#{nth}`: the week number must be 1 to 5")),
            };
        }
    }
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n >= 1 => {}
            _ => return Err(format!("step {step:?} must be a positive whole number")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let (low, high) = match range.split_once('-') {
        Some((a, b)) => (value(a, field)?, value(b, field)?),
        None => {
            let v = value(range, field)?;
            (v, v)
        }
    };
    if low > high {
        return Err(format!("range {range:?} runs backwards"));
    }
    Ok(())
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(pos) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
    {
        return Ok(field.min + pos as u32);
    }
    match text.parse::<u32>() {
        Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is out of range {}-{}", field.min, field.max)),
        Err(_) => Err(format!("{text:?} is not a valid {} value", field.name)),
    }
}

/// Converts a standard 5-field cron line (or nickname) to the 6 EventBridge
/// fields.
fn convert_standard(text: &str) -> Result<String, String> {
    let expanded = match text {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "{text:?}: expected cron(6 fields), rate(N unit) or a standard 5-field cron line, found {} fields",
            parts.len()
        ));
    }
    croner::Cron::new(expanded)
        .parse()
        .map_err(|e| format!("{text:?}: invalid cron line: {e}"))?;
    let dom = if parts[2] == "?" { "*" } else { parts[2] };
    let dow = if parts[4] == "?" { "*" } else { parts[4] };
    let (dom, dow) = match (dom == "*", dow == "*") {
        (_, true) => (dom.to_string(), "?".to_string()),
        (true, false) => ("?".to_string(), standard_dow(dow).map_err(|m| format!("{text:?}: {m}"))?),
        (false, false) => {
            return Err(format!(
                "{text:?}: restricting both day-of-month and day-of-week cannot be expressed in EventBridge; write cron(...) with `?` in one of them"
            ))
        }
    };
    let month = parts[3].to_ascii_uppercase();
    let body = format!("{} {} {dom} {month} {dow} *", parts[0], parts[1]);
    check_eventbridge_cron(&body).map_err(|m| format!("{text:?}: {m}"))?;
    Ok(body)
}

/// Standard day-of-week (0-7, Sunday is 0 and 7) as EventBridge day names.
fn standard_dow(field: &str) -> Result<String, String> {
    let mut days = [false; 7];
    let day = |t: &str| -> Result<usize, String> {
        if let Some(pos) = DOW_NAMES.iter().position(|n| n.eq_ignore_ascii_case(t)) {
            return Ok(pos);
        }
        match t.parse::<usize>() {
            Ok(v) if v <= 7 => Ok(v),
            _ => Err(format!(
                "day-of-week item {t:?} cannot be converted; write the schedule as cron(...)"
            )),
        }
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let (low, high) = match (range, range.split_once('-')) {
            ("*", _) => (0, 6),
            (_, Some((a, b))) => (day(a)?, day(b)?),
            (r, None) if item.contains('/') => (day(r)?, 6),
            (r, None) => {
                let d = day(r)?;
                (d, d)
            }
        };
        for d in (low..=high).step_by(step.max(1)) {
            days[d % 7] = true;
        }
    }
    Ok(compress_days(&days))
}

fn compress_days(days: &[bool; 7]) -> String {
    if days.iter().all(|d| *d) {
        return "*".to_string();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !days[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < 7 && days[i + 1] {
            i += 1;
        }
        match i - start {
            0 => out.push(DOW_NAMES[start].to_string()),
            1 => {
                out.push(DOW_NAMES[start].to_string());
                out.push(DOW_NAMES[i].to_string());
            }
            _ => out.push(format!("{}-{}", DOW_NAMES[start], DOW_NAMES[i])),
        }
        i += 1;
    }
    out.join(",")
}
