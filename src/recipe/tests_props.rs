//! Property tests: nothing derived from input panics, and generated valid
//! values are accepted.

use proptest::prelude::*;

use super::checks::{check_region, check_version, RegistryRef};
use super::locate::locate;
use super::schedule::Schedule;
use super::{go_time, parse, Format};

proptest! {
    #[test]
    fn schedule_parse_never_panics(text in ".{0,40}") {
        let _ = Schedule::parse(&text);
    }

    #[test]
    fn valid_eventbridge_crons_are_accepted(
        minute in 0u32..60,
        hour in 0u32..24,
        day in 1u32..32,
        month in 1u32..13,
        weekday in 1u32..8,
        by_day in any::<bool>(),
    ) {
        let text = if by_day {
            format!("cron({minute} {hour} {day} {month} ? *)")
        } else {
            format!("cron({minute} {hour} ? {month} {weekday} *)")
        };
        let parsed = Schedule::parse(&text);
        prop_assert_eq!(parsed.map(|s| s.expression().to_string()), Ok(text));
    }

    #[test]
    fn standard_crons_convert_to_valid_eventbridge(
        minute in 0u32..60,
        hour in 0u32..24,
        weekday in 0u32..8,
    ) {
        let converted = Schedule::parse(&format!("{minute} {hour} * * {weekday}"))
            .map(|s| s.expression().to_string());
        let expr = converted.map_err(TestCaseError::fail)?;
        prop_assert!(Schedule::parse(&expr).is_ok(), "{}", expr);
    }

    #[test]
    fn dotted_numbers_are_versions(parts in proptest::collection::vec(0u32..100_000, 1..5)) {
        let v = parts.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        prop_assert_eq!(check_version(&v), Ok(()));
        let reference = format!("base@{v}");
        prop_assert!(RegistryRef::parse(&reference).is_ok());
    }

    #[test]
    fn region_check_never_panics(text in "[a-z0-9-]{0,20}") {
        let _ = check_region(&text);
    }

    #[test]
    fn go_time_format_never_panics(layout in ".{0,30}", secs in 0i64..4_000_000_000) {
        if let Some(t) = chrono::DateTime::from_timestamp(secs, 0) {
            let _ = go_time::format(&t, &layout);
        }
    }

    #[test]
    fn locate_never_panics(text in ".{0,200}", field in "[a-z_.\\[\\]0-9\"]{0,20}") {
        let _ = locate(&text, Format::Yaml, &field);
        let _ = locate(&text, Format::Json, &field);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_yaml(text in "(name|base|image|provisioners|type|shell|-|:| |\n|\\{|\\}|\\[|\\]|x){0,60}") {
        let origin = std::path::Path::new("/nonexistent/recipe.yaml");
        let _ = parse(&text, Format::Yaml, origin);
        let _ = parse(&text, Format::Json, origin);
    }
}

proptest! {
    // Packer's template language: actions, pipes, quotes and the functions,
    // mixed at random.
    #[test]
    fn packer_render_never_panics(
        text in "(\\{\\{|\\}\\}|-| |\\||\"|`|\\\\|\\(|user|env|isotime|timestamp|clean_resource_name|lower|upper|replace_all|build_name|template_dir|`x`|\"y\"|a|\n){0,40}",
    ) {
        let vars: std::collections::BTreeMap<String, String> =
            [("a".to_string(), "A b".to_string())].into();
        let env = std::collections::BTreeMap::new();
        for (allow_env, volatile_empty) in [(false, false), (true, true)] {
            let ctx = super::packer_template::TemplateContext {
                vars: &vars,
                env: &env,
                now: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                template_dir: "/t",
                build_name: "b",
                build_type: "amazon-ebs",
                allow_env,
                volatile_empty,
            };
            let _ = super::packer_template::render(&text, &ctx);
        }
    }

    // JSON punctuation only, so that malformed nesting (`[}`, `{"a":]`) is
    // generated often rather than by luck.
    #[test]
    fn locate_ends_on_malformed_json(text in "[\\[\\]{}\",: a0]{0,40}", field in "(a|\\[0\\]|\\.){0,6}") {
        let _ = locate(&text, Format::Json, &field);
        let _ = locate(&text, Format::Yaml, &field);
    }
}

#[test]
fn a_value_that_is_nothing_ends_the_json_scan() {
    // `[}` once made the array loop spin forever without consuming input.
    assert_eq!(locate("[}", Format::Json, "[0]"), Some((1, 2)));
    assert_eq!(locate("{\"a\": [}", Format::Json, "a[0]"), Some((1, 8)));
    assert_eq!(locate("{\"a\": }", Format::Json, "a.b"), Some((1, 2)));
}
