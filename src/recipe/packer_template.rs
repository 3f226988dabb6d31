//! The subset of Packer's (Go `text/template`) engine that JSON templates
//! use: `{{user `name`}}`, `{{env `NAME`}}` (variables section only, from an
//! explicit map), `{{isotime}}` / `{{isotime "2006-01-02"}}`, `{{timestamp}}`,
//! `{{uuid}}` (a new random UUID: a build using it in a provisioner never
//! hits the bake cache; left out of derived names, like the time),
//! `{{clean_resource_name ...}}` (amazon rule: every character but
//! `[A-Za-z0-9()[] ./-'@_]` becomes `-`; the deprecated `clean_ami_name` is an
//! alias), `lower`, `upper`, `replace_all`, `build_name`, `build_type`,
//! `template_dir`, pipelines (`{{isotime | clean_resource_name}}`) and the
//! `{{-`/`-}}` whitespace trim markers. Anything else is an error naming it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::go_time;

/// Inputs of template evaluation.
pub(crate) struct TemplateContext<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub env: &'a BTreeMap<String, String>,
    pub now: DateTime<Utc>,
    pub template_dir: &'a str,
    pub build_name: &'a str,
    /// The selected builder's type (`{{build_type}}`).
    pub build_type: &'a str,
    /// `env` is only allowed in variable defaults, as in Packer.
    pub allow_env: bool,
    /// Render time-dependent functions (`isotime`, `timestamp`) as empty
    /// strings, for deriving stable names.
    pub volatile_empty: bool,
}

const FUNCTIONS: &str = "user, env, isotime, timestamp, uuid, clean_resource_name, clean_ami_name, lower, upper, replace_all, build_name, build_type, template_dir";

/// Packer's amazon `clean_resource_name`.
pub fn clean_resource_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Renders every `{{ ... }}` action in `input`.
pub(crate) fn render(input: &str, ctx: &TemplateContext) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = input;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let literal = &rest[..start];
        out.push_str(if trim_next {
            literal.trim_start()
        } else {
            literal
        });
        let after = &rest[start + 2..];
        let end = find_close(after).ok_or_else(|| format!("unclosed `{{{{` in {input:?}"))?;
        let mut action = &after[..end];
        if let Some(a) = action
            .strip_prefix('-')
            .filter(|a| a.starts_with(char::is_whitespace))
        {
            out.truncate(out.trim_end().len());
            action = a;
        }
        trim_next = false;
        if let Some(a) = action
            .strip_suffix('-')
            .filter(|a| a.ends_with(char::is_whitespace))
        {
            trim_next = true;
            action = a;
        }
        out.push_str(&eval(action.trim(), ctx)?);
        rest = &after[end + 2..];
    }
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    Ok(out)
}

/// Offset of the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(b'"'), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'"' | b'`') => quote = Some(bytes[i]),
            (None, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits an action into pipeline commands, each a list of tokens.
fn tokenize(action: &str) -> Result<Vec<Vec<Token>>, String> {
    let mut commands = vec![Vec::new()];
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' => {
                chars.next();
                commands.push(Vec::new());
            }
            '"' | '`' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some(ch) = chars.next() {
                    match ch {
                        '\\' if c == '"' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => break,
                        },
                        ch if ch == c => {
                            closed = true;
                            break;
                        }
                        ch => s.push(ch),
                    }
                }
                if !closed {
                    return Err(format!("unterminated string in `{{{{{action}}}}}`"));
                }
                push(&mut commands, Token::Str(s));
            }
            '(' | ')' => {
                return Err(format!(
                    "parenthesized expressions are not supported in `{{{{{action}}}}}`"
                ))
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || ch == '|' || ch == '"' || ch == '`' {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                push(&mut commands, Token::Word(word));
            }
        }
    }
    Ok(commands)
}

fn push(commands: &mut [Vec<Token>], token: Token) {
    if let Some(last) = commands.last_mut() {
        last.push(token);
    }
}

#[derive(Debug)]
enum Token {
    Word(String),
    Str(String),
}

fn eval(action: &str, ctx: &TemplateContext) -> Result<String, String> {
    let commands = tokenize(action)?;
    let mut piped: Option<String> = None;
    for command in commands {
        let mut tokens = command.into_iter();
        let name = match tokens.next() {
            Some(Token::Word(w)) => w,
            Some(Token::Str(s)) if piped.is_none() => {
                piped = Some(s);
                continue;
            }
            _ => return Err(format!("empty or malformed command in `{{{{{action}}}}}`")),
        };
        let mut args: Vec<String> = tokens
            .map(|t| match t {
                Token::Word(w) | Token::Str(w) => w,
            })
            .collect();
        args.extend(piped.take());
        piped = Some(call(&name, &args, ctx)?);
    }
    piped.ok_or_else(|| "empty `{{}}` action".to_string())
}

fn call(name: &str, args: &[String], ctx: &TemplateContext) -> Result<String, String> {
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{name}` takes {n} argument(s), got {}",
                args.len()
            ))
        }
    };
    match name {
        "user" => {
            arity(1)?;
            ctx.vars
                .get(&args[0])
                .cloned()
                .ok_or_else(|| format!("variable `{}` is not defined in `variables`", args[0]))
        }
        "env" => {
            arity(1)?;
            if !ctx.allow_env {
                return Err("`env` may only be used in the `variables` section".to_string());
            }
            Ok(ctx.env.get(&args[0]).cloned().unwrap_or_default())
        }
        "isotime" | "timestamp" | "uuid" if ctx.volatile_empty => Ok(String::new()),
        "isotime" => match args {
            [] => Ok(go_time::format(&ctx.now, go_time::RFC3339)),
            [layout] => Ok(go_time::format(&ctx.now, layout)),
            _ => Err("`isotime` takes at most one layout argument".to_string()),
        },
        "timestamp" => {
            arity(0)?;
            Ok(ctx.now.timestamp().to_string())
        }
        "clean_resource_name" | "clean_ami_name" => {
            arity(1)?;
            Ok(clean_resource_name(&args[0]))
        }
        "lower" => {
            arity(1)?;
            Ok(args[0].to_lowercase())
        }
        "upper" => {
            arity(1)?;
            Ok(args[0].to_uppercase())
        }
        "replace_all" => {
            arity(3)?;
            Ok(args[2].replace(&args[0], &args[1]))
        }
        "build_name" => Ok(ctx.build_name.to_string()),
        "build_type" => Ok(ctx.build_type.to_string()),
        "template_dir" => Ok(ctx.template_dir.to_string()),
        "uuid" => {
            arity(0)?;
            Ok(uuid::Uuid::new_v4().to_string())
        }
        other if other.starts_with('.') => Err(format!(
            "template variable `{other}` is not supported (bakehouse evaluates templates before the build)"
        )),
        other => Err(format!("unknown template function `{other}` (supported: {FUNCTIONS})")),
    }
}

/// `s` with every `{{ ... }}` action removed.
pub(crate) fn strip_actions(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match find_close(&rest[start + 2..]) {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
