//! Packer HCL2 templates: a `*.pkr.hcl` file, or a directory whose
//! `*.pkr.hcl` files are read together (and its `*.auto.pkrvars.hcl`
//! applied), as `packer build DIR` does.
//!
//! The template is parsed with hcl-rs, its variables and locals are
//! evaluated (functions in [`super::packer_hcl_funcs`]), and it becomes the
//! equivalent Packer JSON template, which [`super::packer`] maps onto a
//! recipe; so both formats accept and refuse the same things. Problems are
//! named by HCL address (`source.amazon-ebs.web.ami_name`,
//! `build.provisioner[1].inline`, `var.region`), in the file that holds
//! the block.
//!
//! Blocks: `packer` (accepted), `variable` (`type`, `default`,
//! `description`, `sensitive`, `validation` accepted unchecked),
//! `variables`, `locals`, `local` (`expression`, `sensitive`), `source`,
//! and `build` with `name`, `description`, `sources`, nested `source`
//! blocks (their attributes override the source's), `provisioner`,
//! `post-processor`, `post-processors` and `error-cleanup-provisioner`
//! (ignored with a warning). Every source a build names becomes a builder
//! named `TYPE.NAME`, which is what `--only`/`--except` and a
//! provisioner's `only`/`except` match. With several `build` blocks, a
//! provisioner applies to its own build's sources.
//!
//! Variable values, lowest precedence first: `default`, the directory's
//! `*.auto.pkrvars.hcl`, then [`LoadOptions::vars`] (`PKR_VAR_*`,
//! `--var-file`, `--var`). A value given as text is read as the declared
//! `type` (a string unless declared otherwise). Differences from Packer:
//! `PKR_VAR_*` outranks the auto files here (Packer puts it below them),
//! and `file`/`templatefile` read only files inside the template's
//! directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body, Expression};
use serde_json::{json, Map, Value};

use super::error::Problem;
use super::packer_hcl_funcs::{self as funcs, Scope};
use super::LoadOptions;

/// Nested blocks that are lists in the JSON template even when written
/// once.
const LIST_BLOCKS: &[&str] = &["launch_block_device_mappings", "ami_block_device_mappings"];

/// Key/value blocks (`tag { key = "k" value = "v" }`) and the map field of
/// the JSON template they fill.
const TAG_BLOCKS: &[(&str, &str)] = &[
    ("tag", "tags"),
    ("run_tag", "run_tags"),
    ("run_volume_tag", "run_volume_tags"),
    ("snapshot_tag", "snapshot_tags"),
    ("spot_tag", "spot_tags"),
];

/// Whether `path` is an HCL2 template: a `.pkr.hcl` file, or a directory
/// holding at least one.
pub(crate) fn is_hcl_template(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".pkr.hcl")
        || (path.is_dir() && template_files(path).is_ok_and(|f| !f.is_empty()))
}

/// The `*.pkr.hcl` regular files of `dir`, in name order.
fn template_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_ending(dir, ".pkr.hcl")
}

fn files_ending(dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) && entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// An HCL2 template as the equivalent JSON template, with what is needed
/// to name problems in HCL terms.
pub(crate) struct JsonTemplate {
    /// The JSON template (`variables` hold evaluated values).
    pub json: Value,
    /// `builders[i]`: its HCL address and file.
    builders: Vec<(String, PathBuf)>,
    /// `provisioners[i]`: its HCL address and file.
    provisioners: Vec<(String, PathBuf)>,
    /// Where variables are declared, by name.
    variables: BTreeMap<String, PathBuf>,
    /// The first file, for problems of the whole template.
    first: PathBuf,
}

impl JsonTemplate {
    /// A JSON template problem renamed to the HCL address and file it came
    /// from; JSON line numbers mean nothing here and are dropped.
    pub(crate) fn place(&self, mut problem: Problem) -> Problem {
        problem.line = None;
        problem.column = None;
        let (field, file) = self.address(&problem.field);
        problem.field = field;
        problem.file = file;
        problem
    }

    fn address(&self, field: &str) -> (String, PathBuf) {
        let indexed = |prefix: &str, list: &[(String, PathBuf)]| {
            let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
            let (index, tail) = rest.split_once(']')?;
            let (name, file) = list.get(index.parse::<usize>().ok()?)?;
            Some((format!("{name}{tail}"), file.clone()))
        };
        if let Some(found) = indexed("builders", &self.builders) {
            return found;
        }
        if let Some(found) = indexed("provisioners", &self.provisioners) {
            return found;
        }
        if let Some(name) = field.strip_prefix("variables.") {
            let var = name.split(['.', '[']).next().unwrap_or(name);
            let file = self.variables.get(var).unwrap_or(&self.first).clone();
            return (format!("var.{name}"), file);
        }
        let field = field.replace("post-processors", "build.post-processor");
        (field, self.first.clone())
    }
}

/// Accumulates problems while reading.
struct Reader<'a> {
    options: &'a LoadOptions,
    root: PathBuf,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

/// A top-level block and the file it is in.
struct Located<'b> {
    block: &'b Block,
    file: &'b Path,
}

/// Reads the HCL2 template at `path` (a file or a directory) into the
/// equivalent JSON template. Warnings (ignored blocks) are logged.
pub(crate) fn to_json_template(
    path: &Path,
    options: &LoadOptions,
) -> Result<JsonTemplate, Vec<Problem>> {
    let (files, root) = if path.is_dir() {
        let files = template_files(path)
            .map_err(|e| vec![Problem::new(path, "", format!("cannot read: {e}"))])?;
        (files, path.to_path_buf())
    } else {
        (vec![path.to_path_buf()], super::base_dir(path))
    };
    let mut bodies = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match parse_file(file) {
            Ok(body) => bodies.push((file.clone(), body)),
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut reader = Reader {
        options,
        root: root.clone(),
        problems,
        warnings: Vec::new(),
    };
    let auto = if path.is_dir() {
        reader.auto_var_files(&root)
    } else {
        BTreeMap::new()
    };
    let blocks: Vec<Located> = bodies
        .iter()
        .flat_map(|(file, body)| {
            reader.no_attributes(file, body);
            body.blocks().map(move |block| Located { block, file })
        })
        .collect();
    let template = reader.template(&blocks, &auto, files.first().cloned().unwrap_or_default());
    for warning in &reader.warnings {
        tracing::warn!("{warning}");
    }
    if reader.problems.is_empty() {
        Ok(template)
    } else {
        Err(reader.problems)
    }
}

/// One file parsed, after the recipe size and depth limits.
fn parse_file(file: &Path) -> Result<Body, Problem> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Problem::new(file, "", format!("cannot read: {e}")))?;
    if let Some(problem) = super::limits::check(&text, super::Format::Json, file) {
        return Err(problem);
    }
    hcl::parse(&text).map_err(|e| match e {
        hcl::Error::Parse(e) => {
            let at = e.location();
            Problem::new(file, "", format!("not valid HCL: {}", e.message()))
                .at(at.line(), at.column())
        }
        other => Problem::new(file, "", format!("not valid HCL: {other}")),
    })
}

/// The text form of an HCL value, as a JSON template variable holds it.
fn text_of(value: &hcl::Value) -> String {
    match value {
        hcl::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn to_json(value: hcl::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Reader<'_> {
    fn problem(&mut self, file: &Path, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(file, field, message));
    }

    fn no_attributes(&mut self, file: &Path, body: &Body) {
        for attr in body.attributes() {
            self.problem(
                file,
                attr.key.as_str(),
                "an attribute at the top level: a Packer template has only blocks (packer, variable, variables, locals, local, source, build)",
            );
        }
    }

    fn scope(&self, env: bool) -> Scope {
        Scope {
            now: self.options.now.unwrap_or_else(chrono::Utc::now),
            root: self.root.clone(),
            env: env.then(|| self.options.env.clone()),
        }
    }

    /// `*.auto.pkrvars.hcl` of the template directory, in name order.
    fn auto_var_files(&mut self, dir: &Path) -> BTreeMap<String, hcl::Value> {
        let mut values = BTreeMap::new();
        for file in files_ending(dir, ".auto.pkrvars.hcl").unwrap_or_default() {
            match parse_file(&file) {
                Ok(body) => {
                    let ctx = Context::new();
                    for attr in body.attributes() {
                        match attr.expr.evaluate(&ctx) {
                            Ok(v) => {
                                values.insert(attr.key.to_string(), v);
                            }
                            Err(e) => self.problem(&file, attr.key.as_str(), e.to_string()),
                        }
                    }
                }
                Err(p) => self.problems.push(p),
            }
        }
        values
    }

    fn template(
        &mut self,
        blocks: &[Located],
        auto: &BTreeMap<String, hcl::Value>,
        first: PathBuf,
    ) -> JsonTemplate {
        let (vars, sensitive, declared) = self.variables(blocks, auto);
        let mut ctx = Context::new();
        funcs::declare(&mut ctx);
        ctx.declare_var(
            "var",
            hcl::Value::Object(vars.clone().into_iter().collect()),
        );
        ctx.declare_var(
            "path",
            hcl::Value::from_iter([("root", self.root.to_string_lossy().into_owned())]),
        );
        ctx.declare_var(
            "packer",
            hcl::Value::from_iter([("version", "1.6.6".to_string())]),
        );
        let locals = self.locals(blocks, &ctx);
        ctx.declare_var("local", hcl::Value::Object(locals.into_iter().collect()));

        let sources = self.sources(blocks);
        let mut out = JsonTemplate {
            json: Value::Null,
            builders: Vec::new(),
            provisioners: Vec::new(),
            variables: declared,
            first,
        };
        let mut builders = Vec::new();
        let mut provisioners = Vec::new();
        let mut post_processors = Vec::new();
        let builds: Vec<&Located> = blocks
            .iter()
            .filter(|b| b.block.identifier() == "build")
            .collect();
        if builds.is_empty() {
            self.problem(&out.first, "build", "no `build` block: nothing to build");
        }
        let several = builds.len() > 1;
        for (b, build) in builds.iter().enumerate() {
            let at = if several {
                format!("build[{b}]")
            } else {
                "build".to_string()
            };
            let names = self.build_sources(build, &at, &sources, &ctx, &mut builders, &mut out);
            let mut build_ctx = ctx.clone();
            let (source_type, source_name) = names
                .first()
                .and_then(|n| n.split_once('.'))
                .map(|(t, n)| (t.to_string(), n.to_string()))
                .unwrap_or_default();
            build_ctx.declare_var(
                "source",
                hcl::Value::from_iter([("type", source_type), ("name", source_name)]),
            );
            let build_name = attr_string(build.block.body(), "name", &ctx).unwrap_or_default();
            build_ctx.declare_var("build", hcl::Value::from_iter([("name", build_name)]));
            let mut count = 0;
            for inner in build.block.body().blocks() {
                let kind = inner.labels().first().map(|l| l.as_str()).unwrap_or("");
                match inner.identifier() {
                    "source" => {}
                    "provisioner" => {
                        let address = format!("{at}.provisioner[{count}]");
                        count += 1;
                        let mut p = self.object(inner.body(), &build_ctx, &address, build.file);
                        p.insert("type".into(), json!(kind));
                        if several && !p.contains_key("only") && !p.contains_key("except") {
                            p.insert("only".into(), json!(names));
                        }
                        out.provisioners.push((address, build.file.to_path_buf()));
                        provisioners.push(Value::Object(p));
                    }
                    "post-processor" => {
                        let mut p =
                            self.object(inner.body(), &build_ctx, &format!("{at}.post-processor"), build.file);
                        p.insert("type".into(), json!(kind));
                        post_processors.push(Value::Object(p));
                    }
                    "post-processors" => {
                        let chain: Vec<Value> = inner
                            .body()
                            .blocks()
                            .map(|pp| {
                                let kind = pp.labels().first().map(|l| l.as_str()).unwrap_or("");
                                let mut p = self.object(pp.body(), &build_ctx, &format!("{at}.post-processors"), build.file);
                                p.insert("type".into(), json!(kind));
                                Value::Object(p)
                            })
                            .collect();
                        post_processors.push(Value::Array(chain));
                    }
                    "error-cleanup-provisioner" => self.warnings.push(Problem::new(
                        build.file,
                        format!("{at}.error-cleanup-provisioner"),
                        "ignored: a failed bakehouse build is torn down as a whole, nothing runs on the builder after a failure",
                    )),
                    other => self.problem(
                        build.file,
                        format!("{at}.{other}"),
                        format!("unknown block `{other}` in a build (expected source, provisioner, post-processor, post-processors, error-cleanup-provisioner)"),
                    ),
                }
            }
        }
        let mut json = Map::new();
        json.insert(
            "variables".into(),
            Value::Object(
                vars.iter()
                    .map(|(k, v)| (k.clone(), json!(text_of(v))))
                    .collect(),
            ),
        );
        if !sensitive.is_empty() {
            json.insert("sensitive-variables".into(), json!(sensitive));
        }
        json.insert("builders".into(), Value::Array(builders));
        json.insert("provisioners".into(), Value::Array(provisioners));
        if !post_processors.is_empty() {
            json.insert("post-processors".into(), Value::Array(post_processors));
        }
        out.json = Value::Object(json);
        out
    }

    /// Variables' values (see the module documentation), sensitive names,
    /// and where each is declared.
    #[allow(clippy::type_complexity)]
    fn variables(
        &mut self,
        blocks: &[Located],
        auto: &BTreeMap<String, hcl::Value>,
    ) -> (
        BTreeMap<String, hcl::Value>,
        Vec<String>,
        BTreeMap<String, PathBuf>,
    ) {
        let mut ctx = Context::new();
        funcs::declare(&mut ctx);
        let _scope = self.scope(true).enter();
        let mut values = BTreeMap::new();
        let mut sensitive = Vec::new();
        let mut declared: BTreeMap<String, PathBuf> = BTreeMap::new();
        // (name, default expression, declared type, file)
        let mut decls: Vec<(String, Option<&Expression>, String, &Path)> = Vec::new();
        for located in blocks {
            let block = located.block;
            match block.identifier() {
                "variable" => {
                    let Some(name) = one_label(block) else {
                        self.problem(
                            located.file,
                            "variable",
                            "a variable block takes one label, its name",
                        );
                        continue;
                    };
                    let body = block.body();
                    for attr in body.attributes() {
                        if !["type", "default", "description", "sensitive"]
                            .contains(&attr.key.as_str())
                        {
                            self.problem(
                                located.file,
                                format!("var.{name}.{}", attr.key),
                                format!("unknown attribute `{}` (a variable has type, default, description, sensitive and validation blocks)", attr.key),
                            );
                        }
                    }
                    if attr_bool(body, "sensitive") {
                        sensitive.push(name.clone());
                    }
                    let kind = body
                        .attributes()
                        .find(|a| a.key.as_str() == "type")
                        .map(|a| a.expr.to_string())
                        .unwrap_or_else(|| "string".into());
                    let default = body
                        .attributes()
                        .find(|a| a.key.as_str() == "default")
                        .map(|a| &a.expr);
                    decls.push((name, default, kind, located.file));
                }
                "variables" => {
                    for attr in block.body().attributes() {
                        decls.push((
                            attr.key.to_string(),
                            Some(&attr.expr),
                            "string".into(),
                            located.file,
                        ));
                    }
                }
                _ => {}
            }
        }
        for (name, default, kind, file) in decls {
            if declared.insert(name.clone(), file.to_path_buf()).is_some() {
                self.problem(file, format!("var.{name}"), "declared more than once");
                continue;
            }
            let given = self.options.vars.get(&name);
            let value = match (given, auto.get(&name), default) {
                (Some(text), _, _) => typed(text, &kind)
                    .map_err(|e| format!("the value given ({text:?}) is not a {kind}: {e}")),
                (None, Some(v), _) => Ok(v.clone()),
                (None, None, Some(expr)) => expr.evaluate(&ctx).map_err(|e| e.to_string()),
                (None, None, None) => Err(format!(
                    "no default and no value given: set it with --var {name}=VALUE, --var-file, or PKR_VAR_{name}"
                )),
            };
            match value {
                Ok(v) => {
                    values.insert(name, v);
                }
                Err(message) => self.problem(file, format!("var.{name}"), message),
            }
        }
        (values, sensitive, declared)
    }

    /// `locals` and `local` blocks, evaluated in dependency order.
    fn locals(&mut self, blocks: &[Located], ctx: &Context) -> BTreeMap<String, hcl::Value> {
        let _scope = self.scope(false).enter();
        let mut pending: Vec<(String, &Expression, &Path)> = Vec::new();
        for located in blocks {
            let block = located.block;
            match block.identifier() {
                "locals" => pending.extend(
                    block
                        .body()
                        .attributes()
                        .map(|a| (a.key.to_string(), &a.expr, located.file)),
                ),
                "local" => match (
                    one_label(block),
                    block
                        .body()
                        .attributes()
                        .find(|a| a.key.as_str() == "expression"),
                ) {
                    (Some(name), Some(attr)) => pending.push((name, &attr.expr, located.file)),
                    _ => self.problem(
                        located.file,
                        "local",
                        "a local block takes one label (its name) and an `expression`",
                    ),
                },
                _ => {}
            }
        }
        let mut values: BTreeMap<String, hcl::Value> = BTreeMap::new();
        // Each pass evaluates what it can; a pass without progress ends.
        loop {
            let mut local_ctx = ctx.clone();
            local_ctx.declare_var(
                "local",
                hcl::Value::Object(values.clone().into_iter().collect()),
            );
            let before = pending.len();
            let mut failed = Vec::new();
            for (name, expr, file) in pending {
                match expr.evaluate(&local_ctx) {
                    Ok(v) => {
                        values.insert(name, v);
                    }
                    Err(e) => failed.push((name, expr, file, e.to_string())),
                }
            }
            if failed.is_empty() {
                break;
            }
            if failed.len() == before {
                for (name, _, file, message) in failed {
                    self.problem(file, format!("local.{name}"), message);
                }
                break;
            }
            pending = failed.into_iter().map(|(n, e, f, _)| (n, e, f)).collect();
        }
        values
    }

    /// `source` blocks by `TYPE.NAME`.
    fn sources<'b>(&mut self, blocks: &'b [Located<'b>]) -> BTreeMap<String, &'b Located<'b>> {
        let mut out = BTreeMap::new();
        for located in blocks {
            let block = located.block;
            match block.identifier() {
                "source" => match block.labels() {
                    [kind, name] => {
                        let key = format!("{}.{}", kind.as_str(), name.as_str());
                        if out.insert(key.clone(), located).is_some() {
                            self.problem(located.file, format!("source.{key}"), "declared more than once");
                        }
                    }
                    _ => self.problem(
                        located.file,
                        "source",
                        "a source block takes two labels: its type and its name",
                    ),
                },
                "packer" | "variable" | "variables" | "locals" | "local" | "build" => {}
                other => self.problem(
                    located.file,
                    other,
                    format!("unknown block `{other}` (a Packer template has packer, variable, variables, locals, local, source and build blocks)"),
                ),
            }
        }
        out
    }

    /// The builders of one build block, appended to `builders`; returns
    /// their names.
    fn build_sources(
        &mut self,
        build: &Located,
        at: &str,
        sources: &BTreeMap<String, &Located>,
        ctx: &Context,
        builders: &mut Vec<Value>,
        out: &mut JsonTemplate,
    ) -> Vec<String> {
        let body = build.block.body();
        let _scope = self.scope(false).enter();
        let mut refs: Vec<(String, Option<&Body>)> = Vec::new();
        if let Some(attr) = body.attributes().find(|a| a.key.as_str() == "sources") {
            match attr.expr.evaluate(ctx) {
                Ok(hcl::Value::Array(items)) => {
                    refs.extend(items.iter().map(|v| (text_of(v), None)));
                }
                Ok(_) => self.problem(
                    build.file,
                    format!("{at}.sources"),
                    "expected a list of source addresses such as \"source.amazon-ebs.web\"",
                ),
                Err(e) => self.problem(build.file, format!("{at}.sources"), e.to_string()),
            }
        }
        for inner in body.blocks().filter(|b| b.identifier() == "source") {
            match one_label(inner) {
                Some(name) => refs.push((name, Some(inner.body()))),
                None => self.problem(
                    build.file,
                    format!("{at}.source"),
                    "a source block in a build takes one label, the source's address",
                ),
            }
        }
        for attr in body.attributes() {
            if !["name", "description", "sources"].contains(&attr.key.as_str()) {
                self.problem(
                    build.file,
                    format!("{at}.{}", attr.key),
                    format!(
                        "unknown attribute `{}` (a build has name, description and sources)",
                        attr.key
                    ),
                );
            }
        }
        let mut names = Vec::new();
        for (i, (address, overrides)) in refs.into_iter().enumerate() {
            let key = address
                .strip_prefix("source.")
                .unwrap_or(&address)
                .to_string();
            let Some(source) = sources.get(&key) else {
                self.problem(
                    build.file,
                    format!("{at}.sources[{i}]"),
                    format!(
                        "no source {address:?} is declared (declared: {})",
                        sources
                            .keys()
                            .map(|k| format!("source.{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                continue;
            };
            let (kind, name) = key.split_once('.').unwrap_or((&key, ""));
            let mut source_ctx = ctx.clone();
            source_ctx.declare_var(
                "source",
                hcl::Value::from_iter([("type", kind.to_string()), ("name", name.to_string())]),
            );
            let address = format!("source.{key}");
            let mut b = self.object(source.block.body(), &source_ctx, &address, source.file);
            if let Some(overrides) = overrides {
                let extra = self.object(overrides, &source_ctx, &address, build.file);
                b.extend(extra.into_iter().filter(|(k, _)| k != "name"));
            }
            b.insert("type".into(), json!(kind));
            b.insert("name".into(), json!(key));
            names.push(key.clone());
            out.builders.push((address, source.file.to_path_buf()));
            builders.push(Value::Object(b));
        }
        names
    }

    /// A block body as a JSON object: attributes evaluated, nested blocks
    /// as objects (lists where repeated or listed in [`LIST_BLOCKS`]), tag
    /// blocks folded into their maps.
    fn object(&mut self, body: &Body, ctx: &Context, at: &str, file: &Path) -> Map<String, Value> {
        let _scope = self.scope(false).enter();
        let mut out = Map::new();
        for attr in body.attributes() {
            match attr.expr.evaluate(ctx) {
                Ok(v) => {
                    out.insert(attr.key.to_string(), to_json(v));
                }
                Err(e) => self.problem(file, format!("{at}.{}", attr.key), e.to_string()),
            }
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for block in body.blocks() {
            *counts.entry(block.identifier()).or_default() += 1;
        }
        for block in body.blocks() {
            let ident = block.identifier();
            let inner = self.object(block.body(), ctx, &format!("{at}.{ident}"), file);
            if let Some((_, field)) = TAG_BLOCKS.iter().find(|(b, _)| *b == ident) {
                let (Some(Value::String(k)), Some(v)) = (inner.get("key"), inner.get("value"))
                else {
                    self.problem(
                        file,
                        format!("{at}.{ident}"),
                        "a tag block has `key` and `value`",
                    );
                    continue;
                };
                let map = out.entry(field.to_string()).or_insert_with(|| json!({}));
                if let Some(map) = map.as_object_mut() {
                    map.insert(k.clone(), v.clone());
                }
            } else if LIST_BLOCKS.contains(&ident) || counts.get(ident).copied().unwrap_or(0) > 1 {
                let list = out.entry(ident.to_string()).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(Value::Object(inner));
                }
            } else {
                out.insert(ident.to_string(), Value::Object(inner));
            }
        }
        out
    }
}

fn one_label(block: &Block) -> Option<String> {
    match block.labels() {
        [label] => Some(label.as_str().to_string()),
        _ => None,
    }
}

fn attr_bool(body: &Body, key: &str) -> bool {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .is_some_and(|a| matches!(a.expr, Expression::Bool(true)))
}

fn attr_string(body: &Body, key: &str, ctx: &Context) -> Option<String> {
    let attr = body.attributes().find(|a| a.key.as_str() == key)?;
    attr.expr.evaluate(ctx).ok().map(|v| text_of(&v))
}

/// A value given as text (`--var`, `PKR_VAR_*`) read as the declared type:
/// text for `string`, otherwise an HCL literal (`3`, `true`, `["a"]`).
fn typed(text: &str, kind: &str) -> Result<hcl::Value, String> {
    if kind == "string" {
        return Ok(hcl::Value::from(text));
    }
    let expr: Expression = text.parse().map_err(|e: hcl::Error| e.to_string())?;
    let value = expr.evaluate(&Context::new()).map_err(|e| e.to_string())?;
    let fits = match kind {
        "number" => value.is_number(),
        "bool" => value.is_boolean(),
        k if k.starts_with("list") || k.starts_with("set") || k.starts_with("tuple") => {
            value.is_array()
        }
        k if k.starts_with("map") || k.starts_with("object") => value.is_object(),
        _ => true,
    };
    if fits {
        Ok(value)
    } else {
        Err(format!("read as {value}"))
    }
}
