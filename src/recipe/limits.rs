//! Limits checked on a recipe's text before any parser sees it: its size
//! and how deeply it nests. YAML parsers spend time that grows with the
//! square of the nesting depth (a 200 KB file of 100,000 nested `[` took
//! minutes), and no recipe nests deeper than a dozen levels, so one linear
//! pass refuses such input at once with a clear error.
//!
//! Depth counts flow collections (`[`, `{`, outside quoted strings and
//! comments), block indentation levels and block indicators (`- `, `? `)
//! that open nested collections on one line.

use std::path::Path;

use super::error::Problem;
use super::Format;

/// The largest recipe file read.
pub const MAX_BYTES: usize = 1 << 20;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// A problem when `text` is over a limit.
pub fn check(text: &str, format: Format, file: &Path) -> Option<Problem> {
    if text.len() > MAX_BYTES {
        return Some(Problem::new(
            file,
            "",
            format!(
                "the file is {} bytes; recipes are limited to {MAX_BYTES} bytes (1 MiB)",
                text.len()
            ),
        ));
    }
    let (depth, line) = max_depth(text, format);
    (depth > MAX_DEPTH).then(|| {
        let mut p = Problem::new(
            file,
            "",
            format!("nesting deeper than {MAX_DEPTH} levels (recipes are shallow): refused before parsing"),
        );
        p.line = Some(line);
        p
    })
}

/// The deepest nesting of `text` and the (1-based) line where it is
/// first exceeded or reached.
fn max_depth(text: &str, format: Format) -> (usize, usize) {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let (mut best, mut best_line) = (0usize, 1usize);
    for (n, line) in text.lines().enumerate() {
        let mut block = 0;
        if format == Format::Yaml && flow == 0 {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let rest = &line[indent..];
            if !rest.is_empty() && !rest.starts_with('#') {
                while indents.last().is_some_and(|&i| i > indent) {
                    indents.pop();
                }
                if indents.last().is_none_or(|&i| i < indent) {
                    indents.push(indent);
                }
                let mut r = rest;
                let mut indicators = 0;
                while let Some(next) = r.strip_prefix("- ").or_else(|| r.strip_prefix("? ")) {
                    indicators += 1;
                    r = next.trim_start_matches(' ');
                }
                block = indents.len() + indicators;
            }
        }
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut previous = ' ';
        let mut deepest_flow = flow;
        for c in line.chars() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' => quote = Some('"'),
                    '\'' if format == Format::Yaml => quote = Some('\''),
                    '#' if format == Format::Yaml && previous.is_whitespace() => break,
                    '[' | '{' => {
                        flow += 1;
                        deepest_flow = deepest_flow.max(flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        let depth = block + deepest_flow;
        if depth > best {
            best = depth;
            best_line = n + 1;
            if best > MAX_DEPTH {
                break;
            }
        }
    }
    (best, best_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str, format: Format) -> usize {
        max_depth(text, format).0
    }

    #[test]
    fn ordinary_recipes_are_shallow() {
        let yaml = "name: web\nbase: {image: ami-1}\nprovisioners:\n  - type: shell\n    inline:\n      - echo '[[[[' # {{{{\n      - \"]]] \\\" [[\"\n";
        assert!(
            depth(yaml, Format::Yaml) <= 5,
            "{}",
            depth(yaml, Format::Yaml)
        );
        assert_eq!(depth(r#"{"a": [{"b": "[[[["}]}"#, Format::Json), 3);
    }

    #[test]
    fn deep_flow_block_and_indentation_nesting_are_refused() {
        let flow = "[".repeat(100_000);
        let block = format!("a:\n{}x\n", "- ".repeat(100_000));
        let indented: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        for (text, format) in [
            (flow.as_str(), Format::Yaml),
            (flow.as_str(), Format::Json),
            (block.as_str(), Format::Yaml),
            (indented.as_str(), Format::Yaml),
        ] {
            let p = check(text, format, Path::new("deep.yaml")).expect("refused");
            assert!(
                p.message.contains("nesting deeper than 64"),
                "{}",
                p.message
            );
        }
        let big = "#".repeat(MAX_BYTES + 1);
        let p = check(&big, Format::Yaml, Path::new("big.yaml")).expect("refused");
        assert!(
            p.message.contains("limited to 1048576 bytes"),
            "{}",
            p.message
        );
    }
}
