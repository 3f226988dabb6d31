//! Sensitive values (a Packer template's `sensitive-variables`, a recipe's
//! `sensitive` list) replaced by `<sensitive>` wherever a build shows or
//! records text: output lines and the build log, step notes, failure
//! causes, and the records `builds show` prints.

use serde_json::Value;

/// What a sensitive value is shown as.
pub const MASK: &str = "<sensitive>";

/// The values to mask, longest first (so a value containing another is
/// masked whole); empty values are dropped.
pub fn values<I: IntoIterator<Item = String>>(values: I) -> Vec<String> {
    let mut out: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The sensitive values of a recipe given as JSON (a build's bundle).
pub fn of_recipe_json(recipe: &Value) -> Vec<String> {
    values(
        recipe
            .get("sensitive")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string),
    )
}

/// `text` with every occurrence of each value replaced by [`MASK`].
pub fn text(text: &str, values: &[String]) -> String {
    values
        .iter()
        .fold(text.to_string(), |t, v| t.replace(v.as_str(), MASK))
}

/// Masks every string (and object key) in `value`.
pub fn json(value: &mut Value, values: &[String]) {
    if values.is_empty() {
        return;
    }
    match value {
        Value::String(s) => *s = text(s, values),
        Value::Array(items) => items.iter_mut().for_each(|v| json(v, values)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut v) in entries {
                json(&mut v, values);
                map.insert(text(&k, values), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_values_are_masked_whole_and_json_everywhere() {
        let v = values(["pw".to_string(), "pw-long".to_string(), String::new()]);
        assert_eq!(v, ["pw-long", "pw"]);
        assert_eq!(
            text("a=pw-long b=pw c=p", &v),
            "a=<sensitive> b=<sensitive> c=p"
        );
        let mut doc = serde_json::json!({"env": {"TOKEN": "x pw y"}, "list": ["pw"], "pw": 1});
        json(&mut doc, &v);
        assert_eq!(
            doc,
            serde_json::json!({"env": {"TOKEN": "x <sensitive> y"}, "list": ["<sensitive>"], "<sensitive>": 1})
        );
        assert_eq!(
            of_recipe_json(&serde_json::json!({"sensitive": ["pw", "pw-long"]})),
            v
        );
    }
}
