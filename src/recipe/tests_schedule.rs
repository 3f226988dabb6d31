//! Schedules: EventBridge cron and rate checks, standard cron conversion.

use super::schedule::Schedule;

fn expr(text: &str) -> String {
    Schedule::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .expression()
        .to_string()
}

fn err(text: &str) -> String {
    match Schedule::parse(text) {
        Ok(s) => panic!("{text} parsed as {s}"),
        Err(e) => e,
    }
}

#[test]
fn eventbridge_cron_is_kept() {
    for text in [
        "cron(0 4 ? * MON *)",
        "cron(0/15 * * * ? *)",
        "cron(0 12 L * ? *)",
        "cron(0 8 1W * ? 2030)",
        "cron(0 8 LW JAN-MAR ? 2025-2030)",
        "cron(0 18 ? * 6L *)",
        "cron(0 10 ? * 2#1 *)",
        "cron(15,45 1-5 ? * MON-FRI *)",
        "cron(0 0 ? * L *)",
    ] {
        assert_eq!(expr(text), text);
    }
    assert_eq!(expr("  cron(0  4 ? * MON *) "), "cron(0 4 ? * MON *)");
}

#[test]
fn eventbridge_cron_field_errors() {
    assert_eq!(
        err("cron(0 4 ? * MON)"),
        "cron(0 4 ? * MON): EventBridge cron needs 6 fields (minutes hours day-of-month month day-of-week year), found 5"
    );
    assert_eq!(
        err("cron(0 24 ? * MON *)"),
        "cron(0 24 ? * MON *): hours field \"24\": 24 is out of range 0-23"
    );
    assert_eq!(
        err("cron(0 4 32 * ? *)"),
        "cron(0 4 32 * ? *): day-of-month field \"32\": 32 is out of range 1-31"
    );
    assert_eq!(
        err("cron(0 4 ? 13 MON *)"),
        "cron(0 4 ? 13 MON *): month field \"13\": 13 is out of range 1-12"
    );
    assert_eq!(
        err("cron(0 4 ? * 8 *)"),
        "cron(0 4 ? * 8 *): day-of-week field \"8\": 8 is out of range 1-7"
    );
    assert_eq!(
        err("cron(0 4 ? * FUN *)"),
        "cron(0 4 ? * FUN *): day-of-week field \"FUN\": \"FUN\" is not a valid day-of-week value"
    );
    assert_eq!(
        err("cron(0 4 ? * MON 2200)"),
        "cron(0 4 ? * MON 2200): year field \"2200\": 2200 is out of range 1970-2199"
    );
    assert_eq!(err("cron(? 4 ? * MON *)"), "cron(? 4 ? * MON *): minutes field \"?\": `?` is only allowed in day-of-month or day-of-week");
    assert_eq!(
        err("cron(0 4 ? * 2#6 *)"),
        "cron(0 4 ? * 2#6 *): day-of-week field \"2#6\": `#6`: the week number must be 1 to 5"
    );
    assert_eq!(
        err("cron(0/0 4 ? * MON *)"),
        "cron(0/0 4 ? * MON *): minutes field \"0/0\": step \"0\" must be a positive whole number"
    );
    assert_eq!(
        err("cron(0 5-4 ? * MON *)"),
        "cron(0 5-4 ? * MON *): hours field \"5-4\": range \"5-4\" runs backwards"
    );
    assert_eq!(
        err("cron(0 1,,2 ? * MON *)"),
        "cron(0 1,,2 ? * MON *): hours field \"1,,2\": empty list item"
    );
}

#[test]
fn eventbridge_question_mark_rules() {
    assert_eq!(
        err("cron(0 4 ? * ? *)"),
        "cron(0 4 ? * ? *): day-of-month and day-of-week cannot both be `?`"
    );
    assert_eq!(
        err("cron(0 4 * * * *)"),
        "cron(0 4 * * * *): one of day-of-month or day-of-week must be `?` (EventBridge does not allow both)"
    );
    assert_eq!(
        err("cron(0 4 1 * MON *)"),
        "cron(0 4 1 * MON *): one of day-of-month or day-of-week must be `?` (EventBridge does not allow both)"
    );
}

#[test]
fn rates() {
    assert_eq!(expr("rate(1 day)"), "rate(1 day)");
    assert_eq!(expr("rate(6 hours)"), "rate(6 hours)");
    assert_eq!(expr("rate(30 minutes)"), "rate(30 minutes)");
    assert_eq!(
        err("rate(1 days)"),
        "rate(1 days): use the singular unit with 1 (e.g. rate(1 day))"
    );
    assert_eq!(
        err("rate(2 hour)"),
        "rate(2 hour): use the plural unit with 2 (e.g. rate(2 hours))"
    );
    assert_eq!(
        err("rate(0 days)"),
        "rate(0 days): \"0\" is not a positive whole number"
    );
    assert_eq!(
        err("rate(5 weeks)"),
        "rate(5 weeks): unit \"weeks\" must be minute(s), hour(s) or day(s)"
    );
    assert_eq!(
        err("rate(5)"),
        "rate(5): expected `rate(N unit)` such as rate(1 day) or rate(6 hours)"
    );
}

#[test]
fn standard_cron_lines_are_converted() {
    assert_eq!(expr("0 4 * * 1"), "cron(0 4 ? * MON *)");
    assert_eq!(expr("30 2 1 * *"), "cron(30 2 1 * ? *)");
    assert_eq!(expr("*/15 * * * *"), "cron(*/15 * * * ? *)");
    assert_eq!(expr("0 0 * * 1-5"), "cron(0 0 ? * MON-FRI *)");
    assert_eq!(expr("0 0 * * 5-7"), "cron(0 0 ? * SUN,FRI,SAT *)");
    assert_eq!(expr("0 0 * * 0,6"), "cron(0 0 ? * SUN,SAT *)");
    assert_eq!(expr("0 0 * * sun"), "cron(0 0 ? * SUN *)");
    assert_eq!(expr("0 0 * * */2"), "cron(0 0 ? * SUN,TUE,THU,SAT *)");
    assert_eq!(expr("0 0 * * 0-7"), "cron(0 0 ? * * *)");
    assert_eq!(expr("0 6 1 jan *"), "cron(0 6 1 JAN ? *)");
    assert_eq!(expr("@daily"), "cron(0 0 * * ? *)");
    assert_eq!(expr("@weekly"), "cron(0 0 ? * SUN *)");
    assert_eq!(expr("@hourly"), "cron(0 * * * ? *)");
}

#[test]
fn standard_cron_errors() {
    assert_eq!(
        err("0 0 1 * 1"),
        "\"0 0 1 * 1\": restricting both day-of-month and day-of-week cannot be expressed in EventBridge; write cron(...) with `?` in one of them"
    );
    assert!(
        err("61 * * * *").starts_with("\"61 * * * *\": invalid cron line: "),
        "{}",
        err("61 * * * *")
    );
    assert_eq!(
        err("0 4 * *"),
        "\"0 4 * *\": expected cron(6 fields), rate(N unit) or a standard 5-field cron line, found 4 fields"
    );
    assert_eq!(
        err("0 4 ? * MON *"),
        "\"0 4 ? * MON *\": expected cron(6 fields), rate(N unit) or a standard 5-field cron line, found 6 fields"
    );
    assert_eq!(
        err("at(2030-01-01T00:00:00)"),
        "one-time `at(...)` schedules are not supported; use cron(...) or rate(...)"
    );
}
