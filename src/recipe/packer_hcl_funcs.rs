//! The functions Packer HCL2 templates commonly call, for hcl-rs's
//! evaluator: strings (`lower`, `upper`, `trimspace`, `replace`,
//! `regex_replace`, `join`, `split`, `format` with `%s`/`%d`/`%v`,
//! `clean_resource_name`), collections (`concat`, `length`, `merge`,
//! `keys`, `values`, `contains`, `element`, `coalesce`), time
//! (`timestamp`, `formatdate`), `uuidv4`, files (`file`, `templatefile`,
//! `basename`, `dirname`) and `env` (variable defaults only, as in Packer).
//!
//! hcl-rs takes plain `fn` pointers, so what a call needs from the load
//! (the build time, the template directory, the environment) is set for the
//! evaluating thread by [`Scope::enter`] and read back here.
//!
//! Hostile templates: `file` and `templatefile` read only regular files
//! inside the template's directory (after resolving links), so a pushed
//! template cannot pull host files such as `/etc/shadow` into an image.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::Value;

/// Largest file `file`/`templatefile` read (a recipe's own limit).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What the functions of one evaluation may see.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// `timestamp()`.
    pub now: DateTime<Utc>,
    /// The directory `file()` paths are relative to and confined in.
    pub root: PathBuf,
    /// The environment `env()` reads; `None` outside variable defaults.
    pub env: Option<BTreeMap<String, String>>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Restores the previous scope when dropped.
pub(crate) struct ScopeGuard(Option<Scope>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        SCOPE.with(|s| *s.borrow_mut() = previous);
    }
}

impl Scope {
    /// Makes this scope the one the functions see on this thread until the
    /// guard is dropped.
    pub(crate) fn enter(self) -> ScopeGuard {
        ScopeGuard(SCOPE.with(|s| s.borrow_mut().replace(self)))
    }
}

fn scope() -> Result<Scope, String> {
    SCOPE
        .with(|s| s.borrow().clone())
        .ok_or_else(|| "called outside a template evaluation".to_string())
}

/// Declares every function in `ctx`.
pub(crate) fn declare(ctx: &mut Context) {
    use ParamType::{Any, Number, String as Str};
    let list = || ParamType::array_of(Any);
    let f = |params: Vec<ParamType>, func: hcl::eval::Func| FuncDef::new(func, params);
    ctx.declare_func("lower", f(vec![Str], |a| str_map(a, |s| s.to_lowercase())));
    ctx.declare_func("upper", f(vec![Str], |a| str_map(a, |s| s.to_uppercase())));
    ctx.declare_func(
        "trimspace",
        f(vec![Str], |a| str_map(a, |s| s.trim().into())),
    );
    ctx.declare_func(
        "clean_resource_name",
        f(vec![Str], |a| {
            str_map(a, super::packer_template::clean_resource_name)
        }),
    );
    ctx.declare_func("replace", f(vec![Str, Str, Str], replace));
    ctx.declare_func("regex_replace", f(vec![Str, Str, Str], regex_replace));
    ctx.declare_func("join", f(vec![Str, list()], join));
    ctx.declare_func("split", f(vec![Str, Str], split));
    ctx.declare_func(
        "format",
        FuncDef::builder()
            .param(Str)
            .variadic_param(Any)
            .build(format),
    );
    ctx.declare_func(
        "concat",
        FuncDef::builder().variadic_param(list()).build(concat),
    );
    ctx.declare_func("length", f(vec![Any], length));
    ctx.declare_func(
        "merge",
        FuncDef::builder()
            .variadic_param(ParamType::object_of(Any))
            .build(merge),
    );
    ctx.declare_func("keys", f(vec![ParamType::object_of(Any)], keys));
    ctx.declare_func("values", f(vec![ParamType::object_of(Any)], values));
    ctx.declare_func("contains", f(vec![list(), Any], contains));
    ctx.declare_func("element", f(vec![list(), Number], element));
    ctx.declare_func(
        "coalesce",
        FuncDef::builder().variadic_param(Any).build(coalesce),
    );
    ctx.declare_func("timestamp", f(vec![], timestamp));
    ctx.declare_func("formatdate", f(vec![Str, Str], formatdate));
    ctx.declare_func(
        "uuidv4",
        f(vec![], |_| {
            Ok(Value::from(uuid::Uuid::new_v4().to_string()))
        }),
    );
    ctx.declare_func("file", f(vec![Str], file));
    ctx.declare_func(
        "templatefile",
        f(vec![Str, ParamType::object_of(Any)], templatefile),
    );
    ctx.declare_func(
        "basename",
        f(vec![Str], |a| {
            str_map(a, |s| {
                Path::new(s)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
        }),
    );
    ctx.declare_func(
        "dirname",
        f(vec![Str], |a| {
            str_map(a, |s| match Path::new(s).parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
                _ => ".".into(),
            })
        }),
    );
    ctx.declare_func("env", f(vec![Str], env));
}

/// The string arguments of a call (the evaluator checked their types).
fn strings(args: &FuncArgs) -> Vec<&str> {
    args.iter().filter_map(Value::as_str).collect()
}

fn str_map(args: FuncArgs, f: impl Fn(&str) -> String) -> Result<Value, String> {
    Ok(Value::from(f(strings(&args)
        .first()
        .copied()
        .unwrap_or(""))))
}

fn replace(args: FuncArgs) -> Result<Value, String> {
    let s = strings(&args);
    let [text, find, with] = s[..] else {
        return Err("replace(string, substring, replacement)".into());
    };
    // As Terraform's: a substring in slashes is a regular expression.
    match find.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
        Some(pattern) if find.len() > 1 => regex_apply(text, pattern, with),
        _ => Ok(Value::from(text.replace(find, with))),
    }
}

fn regex_replace(args: FuncArgs) -> Result<Value, String> {
    let s = strings(&args);
    let [text, pattern, with] = s[..] else {
        return Err("regex_replace(string, pattern, replacement)".into());
    };
    regex_apply(text, pattern, with)
}

fn regex_apply(text: &str, pattern: &str, with: &str) -> Result<Value, String> {
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?;
    Ok(Value::from(re.replace_all(text, with).into_owned()))
}

fn join(args: FuncArgs) -> Result<Value, String> {
    let sep = args[0].as_str().unwrap_or_default();
    let items = args[1].as_array().cloned().unwrap_or_default();
    let parts: Result<Vec<String>, String> = items.iter().map(to_text).collect();
    Ok(Value::from(parts?.join(sep)))
}

fn split(args: FuncArgs) -> Result<Value, String> {
    let s = strings(&args);
    let [sep, text] = s[..] else {
        return Err("split(separator, string)".into());
    };
    if sep.is_empty() {
        return Err("split: the separator is empty".into());
    }
    Ok(Value::Array(text.split(sep).map(Value::from).collect()))
}

/// `format` with the verbs templates use: `%s`, `%d`, `%v` and `%%`.
fn format(args: FuncArgs) -> Result<Value, String> {
    let spec = args[0].as_str().unwrap_or_default().to_string();
    let mut rest = args.iter().skip(1);
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'd' | 'v') => {
                let value = rest
                    .next()
                    .ok_or_else(|| format!("format {spec:?}: too few arguments"))?;
                out.push_str(&to_text(value)?);
            }
            other => {
                return Err(format!(
                    "format {spec:?}: unsupported verb %{} (supported: %s, %d, %v, %%)",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(Value::from(out))
}

/// A primitive as text; collections have none.
fn to_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("expected a string, number or bool, found {other}")),
    }
}

fn concat(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(
        args.iter()
            .filter_map(Value::as_array)
            .flatten()
            .cloned()
            .collect(),
    ))
}

fn length(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Array(a) => Ok(Value::from(a.len() as u64)),
        Value::Object(o) => Ok(Value::from(o.len() as u64)),
        Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
        other => Err(format!("length of {other}: not a collection or string")),
    }
}

fn merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for object in args.iter().filter_map(Value::as_object) {
        out.extend(object.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(Value::Object(out))
}

fn keys(args: FuncArgs) -> Result<Value, String> {
    let object = args[0].as_object().cloned().unwrap_or_default();
    Ok(Value::Array(
        object.keys().cloned().map(Value::from).collect(),
    ))
}

fn values(args: FuncArgs) -> Result<Value, String> {
    let object = args[0].as_object().cloned().unwrap_or_default();
    Ok(Value::Array(object.values().cloned().collect()))
}

fn contains(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().cloned().unwrap_or_default();
    Ok(Value::Bool(list.contains(&args[1])))
}

fn element(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().cloned().unwrap_or_default();
    let index = args[1]
        .as_u64()
        .ok_or_else(|| "element: the index is not a whole number >= 0".to_string())?;
    if list.is_empty() {
        return Err("element: the list is empty".into());
    }
    let at = usize::try_from(index % list.len() as u64).unwrap_or(0);
    Ok(list[at].clone())
}

fn coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !v.is_null() && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "coalesce: every argument is null or empty".to_string())
}

fn timestamp(_: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(
        scope()?
            .now
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ))
}

fn formatdate(args: FuncArgs) -> Result<Value, String> {
    let s = strings(&args);
    let [spec, time] = s[..] else {
        return Err("formatdate(spec, timestamp)".into());
    };
    let time = DateTime::parse_from_rfc3339(time)
        .map_err(|e| format!("formatdate: {time:?} is not an RFC 3339 timestamp: {e}"))?;
    format_date(spec, &time).map(Value::from)
}

/// Terraform's `formatdate` verbs (`YYYY`, `MM`, `DD`, `hh`, `mm`, `ss`,
/// `ZZZ`, ...) and `'quoted'` literals.
pub(crate) fn format_date(spec: &str, t: &DateTime<chrono::FixedOffset>) -> Result<String, String> {
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A quoted literal; '' is a quote.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                out.push(chars[j]);
                j += 1;
            }
            if j == chars.len() {
                return Err(format!("formatdate {spec:?}: unterminated quoted literal"));
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let offset = t.offset().local_minus_utc();
        let (sign, hours, minutes) = (
            if offset < 0 { '-' } else { '+' },
            offset.abs() / 3600,
            offset.abs() % 3600 / 60,
        );
        let text = match (c, run) {
            ('Y', 4) => format!("{:04}", t.year()),
            ('Y', 2) => format!("{:02}", t.year() % 100),
            ('M', 4) => t.format("%B").to_string(),
            ('M', 3) => t.format("%b").to_string(),
            ('M', 2) => format!("{:02}", t.month()),
            ('M', 1) => t.month().to_string(),
            ('D', 2) => format!("{:02}", t.day()),
            ('D', 1) => t.day().to_string(),
            ('E', 4) => t.format("%A").to_string(),
            ('E', 3) => t.format("%a").to_string(),
            ('h', 2) => format!("{:02}", t.hour()),
            ('h', 1) => t.hour().to_string(),
            ('H', 2) => format!("{:02}", t.hour12().1),
            ('H', 1) => t.hour12().1.to_string(),
            ('A', 2) => (if t.hour12().0 { "PM" } else { "AM" }).to_string(),
            ('a', 2) => (if t.hour12().0 { "pm" } else { "am" }).to_string(),
            ('m', 2) => format!("{:02}", t.minute()),
            ('m', 1) => t.minute().to_string(),
            ('s', 2) => format!("{:02}", t.second()),
            ('s', 1) => t.second().to_string(),
            ('Z', 5) => format!("{sign}{hours:02}:{minutes:02}"),
            ('Z', 4) => format!("{sign}{hours:02}{minutes:02}"),
            ('Z', 3) if offset == 0 => "UTC".to_string(),
            ('Z', 3) => format!("{sign}{hours:02}{minutes:02}"),
            ('Z', 1) if offset == 0 => "Z".to_string(),
            ('Z', 1) => format!("{sign}{hours:02}:{minutes:02}"),
            _ => {
                return Err(format!(
                    "formatdate {spec:?}: invalid date format verb {:?}",
                    chars[i..i + run].iter().collect::<String>()
                ))
            }
        };
        out.push_str(&text);
        i += run;
    }
    Ok(out)
}

/// `path` resolved inside the template directory: a regular file, not
/// above the limit; links are followed only while they stay inside.
fn confined_read(path: &str) -> Result<String, String> {
    let root = scope()?.root;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let full = root.join(path);
    let real = full
        .canonicalize()
        .map_err(|e| format!("file {path:?}: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "file {path:?}: outside the template's directory; templates may read only files next to them"
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("file {path:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("file {path:?}: not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file {path:?}: {} bytes, over the {MAX_FILE_BYTES}-byte limit",
            meta.len()
        ));
    }
    std::fs::read_to_string(&real).map_err(|e| format!("file {path:?}: {e}"))
}

fn file(args: FuncArgs) -> Result<Value, String> {
    confined_read(strings(&args).first().copied().unwrap_or_default()).map(Value::from)
}

fn templatefile(args: FuncArgs) -> Result<Value, String> {
    let path = args[0].as_str().unwrap_or_default();
    let text = confined_read(path)?;
    let template: hcl::Template = text
        .parse()
        .map_err(|e| format!("templatefile {path:?}: {e}"))?;
    let mut ctx = Context::new();
    declare(&mut ctx);
    for (name, value) in args[1].as_object().cloned().unwrap_or_default() {
        ctx.declare_var(name, value);
    }
    template
        .evaluate(&ctx)
        .map(Value::from)
        .map_err(|e| format!("templatefile {path:?}: {e}"))
}

fn env(args: FuncArgs) -> Result<Value, String> {
    let name = strings(&args)
        .first()
        .copied()
        .unwrap_or_default()
        .to_string();
    match scope()?.env {
        Some(env) => Ok(Value::from(env.get(&name).cloned().unwrap_or_default())),
        None => Err("env() may only be used in a variable's default, as in Packer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str, root: &Path) -> Result<Value, String> {
        let _scope = Scope {
            now: DateTime::parse_from_rfc3339("2026-12-03T09:05:07Z")
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| e.to_string())?,
            root: root.to_path_buf(),
            env: Some(BTreeMap::from([("HOME".into(), "/home/me".into())])),
        }
        .enter();
        let mut ctx = Context::new();
        declare(&mut ctx);
        let parsed: hcl::Expression = expr.parse().map_err(|e| format!("{e}"))?;
        parsed.evaluate(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn string_and_time_functions() {
        let dir = Path::new(".");
        let cases = [
            (r#"lower("AbC")"#, "abc"),
            (r#"upper("abc")"#, "ABC"),
            (
                r#"regex_replace(timestamp(), "[- TZ:]", "")"#,
                "20261203090507",
            ),
            (
                r#"formatdate("YYYY-MM-DD'T'hh:mm", timestamp())"#,
                "2026-12-03T09:05",
            ),
            (
                r#"formatdate("DD MMM YYYY ZZZ", "2026-01-02T03:04:05+01:30")"#,
                "02 Jan 2026 +0130",
            ),
            (r#"join("-", split(",", "a,b,c"))"#, "a-b-c"),
            (r#"replace("a.b.c", ".", "_")"#, "a_b_c"),
            (r##"replace("a1b22", "/[0-9]+/", "#")"##, "a#b#"),
            (r#"format("%s-%d", "web", 3)"#, "web-3"),
            (r#"clean_resource_name("web:1*x")"#, "web-1-x"),
            (r#"env("HOME")"#, "/home/me"),
            (r#"coalesce("", "b")"#, "b"),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr, dir), Ok(Value::from(want)), "{expr}");
        }
        assert_eq!(
            eval(r#"length(concat(["a"], ["b", "c"]))"#, dir),
            Ok(Value::from(3u64))
        );
        assert!(eval(r#"formatdate("YYYY-QQ", timestamp())"#, dir).is_err());
        assert!(eval(r#"regex_replace("a", "(", "")"#, dir).is_err());
    }

    #[test]
    fn files_are_read_only_inside_the_template_directory() {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(tmp) = tmp else { return };
        let dir = tmp.path().join("tpl");
        std::fs::create_dir(&dir).ok();
        std::fs::write(dir.join("motd.tpl"), "hello ${name}").ok();
        std::fs::write(tmp.path().join("secret"), "s3cret").ok();
        std::os::unix::fs::symlink(tmp.path().join("secret"), dir.join("link")).ok();
        assert_eq!(
            eval(r#"templatefile("motd.tpl", {name = "web"})"#, &dir),
            Ok(Value::from("hello web"))
        );
        for escape in [
            r#"file("../secret")"#,
            r#"file("link")"#,
            r#"file("/etc/passwd")"#,
        ] {
            let err = eval(escape, &dir).err().unwrap_or_default();
            assert!(
                err.contains("outside the template's directory"),
                "{escape}: {err}"
            );
        }
        assert!(eval(r#"file(".")"#, &dir)
            .err()
            .unwrap_or_default()
            .contains("not a regular file"));
    }
}
