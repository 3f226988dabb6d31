//! Maps a parsed Packer template onto a [`Recipe`], rendering template
//! expressions field by field and remembering which template field each
//! recipe field came from (see [`super::packer`] for the rules).

mod config_tools;
mod qemu;
mod shell_local;

use std::collections::BTreeMap;

use serde_json::Value;

use super::locate::{field_index, field_key};
use super::model::{
    Base, BaseFilter, BuilderSettings, FileProvisioner, OsKind, Provisioner, Publish, Recipe,
    ShellProvisioner, ShellSource, VersionPolicy,
};
use super::packer_manifest::ManifestRequest;
use super::packer_template::{render, strip_actions, TemplateContext};
use super::packer_types::{
    AmazonEbs, NumberOrString, PackerProvisioner, PackerShell, Qemu, Template,
};
use super::LoadOptions;

/// The selected builder, read as its type (one per conversion, so the
/// variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Builder {
    /// An AWS build.
    AmazonEbs(AmazonEbs),
    /// A local build on a disk.
    Qemu(Qemu),
}

pub(crate) struct Converter<'a> {
    pub(crate) problems: Vec<(String, String)>,
    /// Options accepted and ignored: `(field, "ignored: why")`.
    pub(crate) warnings: Vec<(String, String)>,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) vars: BTreeMap<String, String>,
    pub(crate) options: &'a LoadOptions,
    pub(crate) dir: String,
    pub(crate) build_name: String,
    /// The selected builder's type.
    pub(crate) builder_type: &'static str,
    pub(crate) now: chrono::DateTime<chrono::Utc>,
    /// The first `manifest` post-processor.
    pub(crate) manifest: Option<ManifestRequest>,
    /// The `shell-local` provisioners, in order.
    pub(crate) local: Vec<super::shell_local::LocalStep>,
}

const B: &str = "builders[0]";

impl Converter<'_> {
    fn ctx(&self, allow_env: bool) -> TemplateContext<'_> {
        TemplateContext {
            vars: &self.vars,
            env: &self.options.env,
            now: self.now,
            template_dir: &self.dir,
            build_name: &self.build_name,
            build_type: self.builder_type,
            allow_env,
            volatile_empty: false,
        }
    }

    /// Renders `value` found at template path `field`.
    fn render(&mut self, field: &str, value: &str) -> String {
        match render(value, &self.ctx(false)) {
            Ok(s) => s,
            Err(m) => {
                self.problems.push((field.to_string(), m));
                String::new()
            }
        }
    }

    fn render_opt(&mut self, field: &str, value: &Option<String>) -> Option<String> {
        value.as_ref().map(|v| self.render(field, v))
    }

    fn render_list(&mut self, field: &str, values: &[String]) -> Vec<String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| self.render(&field_index(field, i), v))
            .collect()
    }

    fn render_map(
        &mut self,
        field: &str,
        values: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        values
            .iter()
            .map(|(k, v)| (k.clone(), self.render(&field_key(field, k), v)))
            .collect()
    }

    /// Options of `field` not read into a typed field: those in `ignored`
    /// are warnings, the rest unknown fields.
    fn extra(
        &mut self,
        field: &str,
        what: &str,
        other: &BTreeMap<String, Value>,
        ignored: &[(&'static str, &'static str)],
    ) {
        for key in other.keys() {
            let at = field_key(field, key);
            match super::packer_ignored::reason(ignored, key) {
                Some(why) => self.warnings.push((at, format!("ignored: {why}"))),
                None => self.problems.push((
                    at,
                    format!("unknown field `{key}`: not {what} option bakehouse knows (docs/recipes.md lists them)"),
                )),
            }
        }
    }

    /// Post-processors do not run: bakehouse registers the image itself
    /// (the registry record is what `manifest` would write). Each one is a
    /// warning naming it; a malformed list is a problem.
    fn post_processors(&mut self, list: Option<&Value>) {
        let Some(list) = list.filter(|v| !v.is_null()) else {
            return;
        };
        let Some(items) = list.as_array() else {
            self.problems.push((
                "post-processors".to_string(),
                "expected a list of post-processors".to_string(),
            ));
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let field = field_index("post-processors", i);
            // An entry is a type name, a post-processor, or a sequence of them.
            let entries: Vec<(String, &Value)> = match item {
                Value::Array(seq) => seq
                    .iter()
                    .enumerate()
                    .map(|(j, p)| (field_index(&field, j), p))
                    .collect(),
                other => vec![(field.clone(), other)],
            };
            for (at, p) in entries {
                let kind = p
                    .as_str()
                    .or_else(|| p.get("type").and_then(Value::as_str))
                    .unwrap_or("?");
                if kind == "manifest" && self.manifest.is_none() {
                    self.manifest(&at, p);
                    continue;
                }
                let why = if kind == "manifest" {
                    "ignored: only the first manifest post-processor is written".to_string()
                } else {
                    format!("ignored: post-processor `{kind}` does not run; bakehouse captures, copies and registers the image itself")
                };
                self.warnings.push((at, why));
            }
        }
    }

    /// A `manifest` post-processor at `field`: what the CLI writes after a
    /// successful build (see [`super::packer_manifest`]).
    fn manifest(&mut self, field: &str, p: &Value) {
        let mut request = ManifestRequest {
            output: "packer-manifest.json".to_string(),
            strip_path: false,
            strip_time: false,
            custom_data: BTreeMap::new(),
            build_name: self.build_name.clone(),
            builder_type: self.builder_type.to_string(),
        };
        for (key, value) in p.as_object().into_iter().flatten() {
            let at = field_key(field, key);
            match (key.as_str(), value) {
                ("type", _) => {}
                ("output", Value::String(s)) => request.output = self.render(&at, s),
                ("strip_path", Value::Bool(b)) => request.strip_path = *b,
                ("strip_time", Value::Bool(b)) => request.strip_time = *b,
                ("custom_data", Value::Object(map)) => {
                    for (k, v) in map {
                        let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                        let rendered = self.render(&field_key(&at, k), &text);
                        request.custom_data.insert(k.clone(), rendered);
                    }
                }
                ("keep_input_artifact", _) => self.warnings.push((
                    at,
                    "ignored: the image is always kept (and registered)".to_string(),
                )),
                ("output" | "strip_path" | "strip_time" | "custom_data", _) => self
                    .problems
                    .push((at, format!("`{key}` has the wrong type"))),
                _ => self.problems.push((
                    at,
                    format!("unknown field `{key}`: a manifest post-processor has output, strip_path, strip_time, custom_data and keep_input_artifact"),
                )),
            }
        }
        self.manifest = Some(request);
    }

    fn map(&mut self, recipe: &str, template: &str) {
        self.fields.push((recipe.to_string(), template.to_string()));
    }

    pub(crate) fn recipe(&mut self, t: &Template, builder: &Builder) -> Recipe {
        self.resolve_variables(&t.variables);
        let (name, label, os, base, settings, publish) = match builder {
            Builder::AmazonEbs(b) => {
                self.builder_type = "amazon-ebs";
                self.build_name = b.name.clone().unwrap_or_else(|| "amazon-ebs".to_string());
                self.extra(
                    B,
                    "an amazon-ebs",
                    &b.other,
                    super::packer_ignored::AMAZON_EBS,
                );
                let name = self.name(b);
                let label = self.render_opt(&format!("{B}.ami_description"), &b.ami_description);
                let os = match b.communicator.as_deref() {
                    Some("winrm") => OsKind::Windows,
                    _ => OsKind::Linux,
                };
                (
                    name,
                    label,
                    os,
                    self.base(b),
                    self.builder(b),
                    self.publish(b),
                )
            }
            Builder::Qemu(q) => {
                self.builder_type = "qemu";
                self.build_name = q.name.clone().unwrap_or_else(|| "qemu".to_string());
                self.extra(B, "a qemu", &q.other, super::packer_ignored::QEMU);
                let name = self.qemu_name(q);
                (
                    name,
                    None,
                    OsKind::Linux,
                    self.qemu_base(q),
                    self.qemu_builder(q),
                    Publish::default(),
                )
            }
        };
        self.post_processors(t.post_processors.as_ref());
        let label = match self.vars.get("bakehouse_label") {
            Some(l) => Some(l.clone()),
            None => label,
        };
        let version = match self.vars.get("bakehouse_version").cloned() {
            Some(v) => {
                self.map("version.version", "variables.bakehouse_version");
                VersionPolicy::Exact(v)
            }
            None => VersionPolicy::default(),
        };
        let provisioners = self.provisioners(&t.provisioners);
        Recipe {
            name,
            label,
            os,
            version,
            base,
            builder: settings,
            provisioners,
            clean: Default::default(),
            publish,
            test: Vec::new(),
            schedule: None,
            paths: Vec::new(),
            retain: None,
            sensitive: super::mask::values(
                t.sensitive_variables
                    .iter()
                    .filter_map(|name| self.vars.get(name).cloned()),
            ),
        }
    }

    fn resolve_variables(&mut self, declared: &BTreeMap<String, Option<String>>) {
        for name in self.options.vars.keys() {
            if !declared.contains_key(name) {
                self.problems.push((
                    "variables".to_string(),
                    format!("variable `{name}` is set but not declared in `variables`"),
                ));
            }
        }
        let mut pending = BTreeMap::new();
        for (name, default) in declared {
            match (self.options.vars.get(name), default) {
                (Some(v), _) => {
                    self.vars.insert(name.clone(), v.clone());
                }
                (None, Some(d)) => {
                    pending.insert(name.clone(), d.clone());
                }
                (None, None) => {
                    self.problems.push((
                        field_key("variables", name),
                        format!(
                            "variable `{name}` is required (its default is null) but was not set"
                        ),
                    ));
                    // Reported once: its uses render empty instead of
                    // adding "not defined" for a variable that is declared.
                    self.vars.insert(name.clone(), String::new());
                }
            }
        }
        // Defaults may use `env` and refer to other variables: resolve in
        // passes until nothing changes.
        for _ in 0..=pending.len() {
            let mut progressed = false;
            for (name, default) in pending.clone() {
                if let Ok(value) = render(&default, &self.ctx(true)) {
                    self.vars.insert(name.clone(), value);
                    pending.remove(&name);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        for (name, default) in pending {
            if let Err(m) = render(&default, &self.ctx(true)) {
                self.problems.push((field_key("variables", &name), m));
            }
        }
    }

    /// The `bakehouse_name` variable, when declared.
    fn declared_name(&mut self) -> Option<String> {
        let name = self.vars.get("bakehouse_name").cloned()?;
        self.map("name", "variables.bakehouse_name");
        Some(name)
    }

    /// `value` rendered with time-dependent
    /// functions left empty, so the name is the same in every build.
    fn stable(&self, value: &str) -> String {
        let mut ctx = self.ctx(false);
        ctx.volatile_empty = true;
        render(value, &ctx).unwrap_or_else(|_| strip_actions(value))
    }

    fn name(&mut self, b: &AmazonEbs) -> String {
        if let Some(n) = self.declared_name() {
            return n;
        }
        self.map("name", &format!("{B}.ami_name"));
        let stable = self.stable(&b.ami_name);
        let name = package_name(&stable);
        if name.is_empty() {
            self.problems.push((
                format!("{B}.ami_name"),
                "cannot derive a recipe name from ami_name; declare a `bakehouse_name` variable"
                    .to_string(),
            ));
        }
        name
    }

    fn base(&mut self, b: &AmazonEbs) -> Base {
        match (&b.source_ami, &b.source_ami_filter) {
            (Some(ami), None) => {
                self.map("base.image", &format!("{B}.source_ami"));
                Base::Image(self.render(&format!("{B}.source_ami"), ami))
            }
            (None, Some(f)) => {
                let path = format!("{B}.source_ami_filter");
                self.map("base.filter.name", &format!("{path}.filters.name"));
                self.map("base.filter.owners", &format!("{path}.owners"));
                let mut filters = self.render_map(&format!("{path}.filters"), &f.filters);
                let name = filters.remove("name").unwrap_or_else(|| {
                    self.problems.push((
                        format!("{path}.filters"),
                        "a `name` filter is required".to_string(),
                    ));
                    String::new()
                });
                Base::Filter(BaseFilter {
                    name,
                    owners: self.render_list(&format!("{path}.owners"), &f.owners),
                    most_recent: f.most_recent,
                    filters,
                })
            }
            (found_ami, _) => {
                let which = if found_ami.is_some() {
                    "not both"
                } else {
                    "one is required"
                };
                self.problems.push((
                    B.to_string(),
                    format!("set `source_ami` or `source_ami_filter` ({which})"),
                ));
                Base::Image(String::new())
            }
        }
    }

    fn builder(&mut self, b: &AmazonEbs) -> BuilderSettings {
        let mut sgs = Vec::new();
        if let Some(sg) = &b.security_group_id {
            self.map(
                "builder.security_group_ids[0]",
                &format!("{B}.security_group_id"),
            );
            sgs.push(self.render(&format!("{B}.security_group_id"), sg));
        } else {
            self.map(
                "builder.security_group_ids",
                &format!("{B}.security_group_ids"),
            );
        }
        sgs.extend(self.render_list(&format!("{B}.security_group_ids"), &b.security_group_ids));
        let volume_size_gb = b.launch_block_device_mappings.first().and_then(|d| {
            let field = format!("{B}.launch_block_device_mappings[0].volume_size");
            self.map("builder.volume_size_gb", &field);
            d.volume_size
                .as_ref()
                .and_then(|size| self.whole_number(&field, size))
        });
        let mut kms_key_id = self.render_opt(&format!("{B}.kms_key_id"), &b.kms_key_id);
        match (b.encrypt_boot, &kms_key_id) {
            (Some(true), None) => kms_key_id = Some("alias/aws/ebs".to_string()),
            (Some(false), Some(_)) => self.problems.push((
                format!("{B}.encrypt_boot"),
                "`kms_key_id` requires `encrypt_boot` to be true".to_string(),
            )),
            _ => {}
        }
        for (recipe, template) in [
            ("builder.instance_type", "instance_type"),
            ("builder.subnet_id", "subnet_id"),
            ("builder.kms_key_id", "kms_key_id"),
            ("builder.instance_profile", "iam_instance_profile"),
            ("builder.tags", "run_tags"),
        ] {
            self.map(recipe, &format!("{B}.{template}"));
        }
        BuilderSettings {
            instance_type: self.render_opt(&format!("{B}.instance_type"), &b.instance_type),
            subnet_id: self.render_opt(&format!("{B}.subnet_id"), &b.subnet_id),
            security_group_ids: sgs,
            volume_size_gb,
            kms_key_id,
            instance_profile: self.render_opt(
                &format!("{B}.iam_instance_profile"),
                &b.iam_instance_profile,
            ),
            time_limit_minutes: None,
            network: false,
            memory_mb: None,
            pids_max: None,
            cpus: None,
            disk: None,
            disk_size: None,
            tags: self.render_map(&format!("{B}.run_tags"), &b.run_tags),
        }
    }

    /// A whole number given as a JSON number or a (template) string.
    fn whole_number(&mut self, field: &str, value: &NumberOrString) -> Option<u32> {
        match value {
            NumberOrString::Number(n) => Some(u32::try_from(*n).unwrap_or(u32::MAX)),
            NumberOrString::String(s) => {
                let v = self.render(field, s);
                match v.trim().parse() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.problems
                            .push((field.to_string(), format!("{v:?} is not a whole number")));
                        None
                    }
                }
            }
        }
    }

    fn publish(&mut self, b: &AmazonEbs) -> Publish {
        let mut regions = Vec::new();
        if let Some(r) = &b.region {
            self.map("publish.regions[0]", &format!("{B}.region"));
            regions.push(self.render(&format!("{B}.region"), r));
        }
        for (i, r) in b.ami_regions.iter().enumerate() {
            let field = field_index(&format!("{B}.ami_regions"), i);
            let r = self.render(&field, r);
            if !regions.contains(&r) {
                self.map(&field_index("publish.regions", regions.len()), &field);
                regions.push(r);
            }
        }
        self.map("publish.accounts", &format!("{B}.ami_users"));
        self.map("publish.tags", &format!("{B}.tags"));
        Publish {
            regions,
            accounts: self.render_list(&format!("{B}.ami_users"), &b.ami_users),
            tags: self.render_map(&format!("{B}.tags"), &b.tags),
        }
    }

    fn selected(&self, only: &[String], except: &[String]) -> bool {
        (only.is_empty() || only.contains(&self.build_name)) && !except.contains(&self.build_name)
    }

    fn provisioners(&mut self, list: &[PackerProvisioner]) -> Vec<Provisioner> {
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let field = field_index("provisioners", i);
            match p {
                PackerProvisioner::Shell(s) if self.selected(&s.only, &s.except) => {
                    self.shell(&field, "shell", s, &mut out)
                }
                PackerProvisioner::Powershell(s) if self.selected(&s.only, &s.except) => {
                    self.shell(&field, "powershell", s, &mut out)
                }
                PackerProvisioner::File(f) if self.selected(&f.only, &f.except) => {
                    self.extra(
                        &field,
                        "a file provisioner",
                        &f.other,
                        super::packer_ignored::FILE,
                    );
                    if f.direction.as_deref().is_some_and(|d| d != "upload") {
                        self.problems.push((
                            field_key(&field, "direction"),
                            "only `upload` file provisioners are supported".to_string(),
                        ));
                    }
                    self.map(&field_index("provisioners", out.len()), &field);
                    let destination =
                        self.render(&field_key(&field, "destination"), &f.destination);
                    match (&f.source, &f.content) {
                        (Some(source), None) => out.push(Provisioner::File(FileProvisioner {
                            source: self.render(&field_key(&field, "source"), source),
                            destination,
                            mode: None,
                        })),
                        (None, Some(content)) => {
                            if !destination.starts_with('/') {
                                self.problems.push((
                                    field_key(&field, "destination"),
                                    format!("destination {destination:?} must be an absolute path"),
                                ));
                            }
                            let content = self.render(&field_key(&field, "content"), content);
                            out.push(content_writer(&destination, &content));
                        }
                        (found, _) => self.problems.push((
                            field.clone(),
                            format!(
                                "a file provisioner needs exactly one of `source` or `content` ({})",
                                if found.is_some() { "not both" } else { "one is required" }
                            ),
                        )),
                    }
                }
                PackerProvisioner::ShellLocal(s) if self.selected(&s.shell.only, &s.shell.except) => {
                    self.shell_local(&field, s)
                }
                PackerProvisioner::SaltMasterless(s) if self.selected(&s.only, &s.except) => {
                    self.salt(&field, s, &mut out)
                }
                PackerProvisioner::AnsibleLocal(a) if self.selected(&a.only, &a.except) => {
                    self.ansible_local(&field, a, &mut out)
                }
                PackerProvisioner::Breakpoint(_) => self.warnings.push((
                    field,
                    "ignored: a breakpoint pauses an interactive Packer build; to stop and look, build with --on-error=abort and use `bakehouse builds shell`".to_string(),
                )),
                _ => {}
            }
        }
        out
    }

    /// A shell provisioner's environment: its `env` map, then its
    /// `environment_vars` (`KEY=VALUE`), rendered.
    fn environment(
        &mut self,
        field: &str,
        map: &BTreeMap<String, String>,
        pairs: &[String],
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, v) in map {
            let f = field_key(&field_key(field, "env"), k);
            env.insert(k.clone(), self.render(&f, v));
        }
        for (i, pair) in pairs.iter().enumerate() {
            let f = field_index(&field_key(field, "environment_vars"), i);
            let pair = self.render(&f, pair);
            match pair.split_once('=') {
                Some((k, v)) => {
                    env.insert(k.to_string(), v.to_string());
                }
                None => self
                    .problems
                    .push((f, format!("{pair:?} must be KEY=VALUE"))),
            }
        }
        env
    }

    /// What a `shell` (or, with `command`, a `shell-local`) provisioner
    /// runs, each with the template field it came from: exactly one of
    /// `command`, `inline`, `script` or `scripts` (several for `scripts`),
    /// else a problem and nothing.
    fn shell_sources(
        &mut self,
        field: &str,
        kind: &str,
        s: &PackerShell,
        command: Option<&str>,
    ) -> Vec<(String, ShellSource)> {
        let given = usize::from(command.is_some())
            + usize::from(s.inline.is_some())
            + usize::from(s.script.is_some())
            + usize::from(s.scripts.is_some());
        if given != 1 {
            let command_allowed = if kind == "shell-local" {
                "`command`, "
            } else {
                ""
            };
            self.problems.push((
                field.to_string(),
                format!(
                    "a {kind} provisioner needs exactly one of {command_allowed}`inline`, `script` or `scripts`"
                ),
            ));
            return Vec::new();
        }
        let mut sources = Vec::new();
        if let Some(command) = command {
            let f = field_key(field, "command");
            sources.push((
                f.clone(),
                ShellSource::Inline(vec![self.render(&f, command)]),
            ));
        }
        if let Some(lines) = &s.inline {
            let f = field_key(field, "inline");
            sources.push((f.clone(), ShellSource::Inline(self.render_list(&f, lines))));
        }
        if let Some(script) = &s.script {
            let f = field_key(field, "script");
            sources.push((f.clone(), ShellSource::Script(self.render(&f, script))));
        }
        for (i, script) in s.scripts.iter().flatten().enumerate() {
            let f = field_index(&field_key(field, "scripts"), i);
            sources.push((f.clone(), ShellSource::Script(self.render(&f, script))));
        }
        sources
    }

    /// A `shell` or `powershell` provisioner (`kind`): one recipe
    /// provisioner of the same kind per inline list or script.
    fn shell(&mut self, field: &str, kind: &str, s: &PackerShell, out: &mut Vec<Provisioner>) {
        let (what, ignored) = if kind == "powershell" {
            (
                "a powershell provisioner",
                super::packer_ignored::POWERSHELL,
            )
        } else {
            ("a shell provisioner", super::packer_ignored::SHELL)
        };
        self.extra(field, what, &s.other, ignored);
        let env = self.environment(field, &s.env, &s.environment_vars);
        let sources = self.shell_sources(field, kind, s, None);
        for (source_field, source) in sources {
            let index = field_index("provisioners", out.len());
            self.map(&index, field);
            self.map(
                &field_key(&index, "env"),
                &field_key(field, "environment_vars"),
            );
            let key = if matches!(source, ShellSource::Script(_)) {
                "script"
            } else {
                "inline"
            };
            self.map(&field_key(&index, key), &source_field);
            let shell = ShellProvisioner {
                source,
                env: env.clone(),
            };
            out.push(if kind == "powershell" {
                Provisioner::Powershell(shell)
            } else {
                Provisioner::Shell(shell)
            });
        }
    }
}

/// A registry package name from `text`: lowercased, characters outside
/// `[a-z0-9._-]` turned into `-`, runs of `-` collapsed and separators
/// trimmed.
fn package_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
            c
        } else {
            '-'
        };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.trim_matches(|c| "._-".contains(c)).to_string()
}

/// A file provisioner's `content`: a shell provisioner writing it to
/// `destination` (parents made), byte for byte, in the image.
fn content_writer(destination: &str, content: &str) -> Provisioner {
    let parent = std::path::Path::new(destination)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Provisioner::Shell(ShellProvisioner {
        source: ShellSource::Inline(vec![
            format!("mkdir -p -- {}", super::sh_quote(&parent)),
            format!(
                "printf '%s' {} > {}",
                super::sh_quote(content),
                super::sh_quote(destination)
            ),
        ]),
        env: BTreeMap::new(),
    })
}
