//! Loading: formats, defaults, structural errors and the example recipes.

use std::collections::BTreeMap;
use std::path::Path;

use super::test_support::{examples, fixtures, messages, Tree, MINIMAL};
use super::*;

#[test]
fn minimal_recipe_gets_defaults() {
    let tree = Tree::new();
    let loaded = tree.load_yaml(MINIMAL).expect("valid");
    let r = &loaded.recipe;
    assert_eq!(r.name, "demo");
    assert_eq!(r.label(), "demo");
    assert_eq!(r.os, OsKind::Linux);
    assert_eq!(r.version, VersionPolicy::Bump(BumpPart::Minor));
    assert_eq!(r.base, Base::Image("ami-0123456789abcdef0".into()));
    assert_eq!(r.builder, BuilderSettings::default());
    assert!(!r.builder.network);
    assert!(r.provisioners.is_empty());
    assert_eq!(r.clean.items(), CleanItem::ALL.to_vec());
    assert_eq!(r.eventbridge_schedule(), None);
    assert_eq!(loaded.dir, tree.dir.path());
    assert_eq!(loaded.path, tree.path("recipe.yaml"));
}

#[test]
fn full_fixture_loads_every_field() {
    let loaded = load(&fixtures().join("full/recipe.yaml")).expect("valid");
    let r = &loaded.recipe;
    assert_eq!(r.name, "full.example_1");
    assert_eq!(r.label(), "Full example");
    assert_eq!(r.version, VersionPolicy::Exact("2.10.1".into()));
    assert_eq!(r.base, Base::Registry("debian-base@1.x".into()));
    assert_eq!(r.builder.instance_type.as_deref(), Some("m6i.large"));
    assert_eq!(
        r.builder.security_group_ids,
        vec!["sg-0abc1234", "sg-0def5678"]
    );
    assert_eq!(r.builder.volume_size_gb, Some(16));
    assert_eq!(r.builder.time_limit_minutes, Some(90));
    assert!(r.builder.network);
    let kinds: Vec<&str> = r.provisioners.iter().map(Provisioner::kind).collect();
    assert_eq!(kinds, vec!["shell", "shell", "file", "salt", "ansible"]);
    match &r.provisioners[0] {
        Provisioner::Shell(s) => {
            assert_eq!(
                s.source,
                ShellSource::Inline(vec!["echo hello".into(), "echo world".into()])
            );
            assert_eq!(s.env.get("GREETING").map(String::as_str), Some("hello"));
        }
        other => panic!("unexpected {other:?}"),
    }
    match &r.provisioners[3] {
        Provisioner::Salt(s) => {
            assert_eq!(s.state_tree, "salt/");
            assert_eq!(s.states, vec!["custom"]);
            assert_eq!(s.pillar.get("ports"), Some(&serde_json::json!([80, 443])));
        }
        other => panic!("unexpected {other:?}"),
    }
    match &r.provisioners[4] {
        Provisioner::Ansible(a) => {
            assert_eq!(a.playbook, "ansible/site.yml");
            assert_eq!(a.extra_vars.get("replicas"), Some(&serde_json::json!(3)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(r.clean.skip, vec![CleanItem::SshHostKeys, CleanItem::Logs]);
    assert!(!r.clean.applies(CleanItem::Logs));
    assert_eq!(r.publish.regions, vec!["eu-west-1", "us-gov-west-1"]);
    assert_eq!(
        r.eventbridge_schedule().as_deref(),
        Some("cron(0 3 ? * MON-FRI *)")
    );
    assert_eq!(r.paths, vec!["salt/**", "ansible/**/*.yml"]);
}

#[test]
fn json_recipe_loads_like_yaml() {
    let tree = Tree::new();
    let path = tree.write(
        "r.json",
        r#"{"name": "demo", "base": {"filter": {"name": "debian-12-*", "most_recent": true}},
            "provisioners": [{"type": "shell", "inline": ["true"]}], "version": {"bump": "patch"}}"#,
    );
    let r = load(&path).expect("valid").recipe;
    assert_eq!(r.version, VersionPolicy::Bump(BumpPart::Patch));
    assert_eq!(
        r.base,
        Base::Filter(BaseFilter {
            name: "debian-12-*".into(),
            owners: vec![],
            most_recent: true,
            filters: BTreeMap::new(),
        })
    );
}

#[test]
fn model_round_trips_through_yaml() {
    let loaded = load(&fixtures().join("full/recipe.yaml")).expect("valid");
    let text = serde_yaml_ng::to_string(&loaded.recipe).expect("serialize");
    let again: Recipe = serde_yaml_ng::from_str(&text).expect("parse back");
    assert_eq!(again, loaded.recipe);
}

#[test]
fn unknown_top_level_field_is_named_with_accepted_fields() {
    let tree = Tree::new();
    let got = messages(&tree, tree.load_yaml(&format!("{MINIMAL}bogus: 1\n")));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("recipe.yaml:4:1: bogus: unknown field `bogus`, expected one of `name`, `label`, `os`, `version`, `base`"),
        "{got:?}"
    );
}

#[test]
fn misspelt_provisioner_field_is_located_and_corrected() {
    let tree = Tree::new();
    let text = format!(
        "{MINIMAL}provisioners:\n  - type: shell\n    inline: [a]\n  - type: shell\n    scrip: x.sh\n"
    );
    let got = messages(&tree, tree.load_yaml(&text));
    assert_eq!(
        got,
        vec!["recipe.yaml:8:5: provisioners[1].scrip: unknown field `scrip`, expected one of `inline`, `script`, `env` (did you mean `script`?)"]
    );
}

#[test]
fn wrong_type_names_field_and_location() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml("name: [a]\nbase: {image: ami-0123456789abcdef0}\n"),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:1:7: name: invalid type: sequence, expected a string"]
    );
}

#[test]
fn wrong_type_for_volume_size() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml(&format!("{MINIMAL}builder:\n  volume_size_gb: big\n")),
    );
    assert_eq!(
        got,
        vec![
            "recipe.yaml:5:19: builder.volume_size_gb: invalid type: string \"big\", expected u32"
        ]
    );
}

#[test]
fn missing_required_field() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml("base: {image: ami-0123456789abcdef0}\n"),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:1:1: name: required field `name` is missing"]
    );
}

#[test]
fn unknown_provisioner_type() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml(&format!("{MINIMAL}provisioners:\n  - type: chef\n")),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:5:5: provisioners[0].type: unknown variant `chef`, expected one of `shell`, `powershell`, `file`, `salt`, `ansible`"]
    );
}

#[test]
fn unknown_clean_item() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml(&format!("{MINIMAL}clean:\n  skip: [ssh_keys]\n")),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("recipe.yaml:5:10: clean.skip[0]: unknown variant `ssh_keys`, expected one of `lock_passwords`, `passwords`, `shell_history`, `user_ssh_keys`"),
        "{got:?}"
    );
}

#[test]
fn bad_bump_part() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml(&format!("{MINIMAL}version: {{bump: huge}}\n")),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:4:17: version.bump: unknown variant `huge`, expected one of `major`, `minor`, `patch`"]
    );
}

#[test]
fn yaml_syntax_error_has_location() {
    let tree = Tree::new();
    let got = messages(&tree, tree.load_yaml("name: demo\n  base: x\n"));
    assert_eq!(
        got,
        vec!["recipe.yaml:2:7: mapping values are not allowed in this context"]
    );
}

#[test]
fn json_syntax_error_has_location() {
    let tree = Tree::new();
    let path = tree.write("r.json", "{\"name\": \"demo\",\n \"base\": }");
    let got = messages(&tree, load(&path));
    assert_eq!(got, vec!["r.json:2:10: base: expected value"]);
}

#[test]
fn unsupported_extension_and_missing_file() {
    let tree = Tree::new();
    let path = tree.write("recipe.toml", "name = 'x'");
    let err = load(&path).expect_err("unsupported");
    assert!(matches!(err, RecipeError::UnsupportedFormat { .. }));
    assert!(err.to_string().ends_with(
        "recipe.toml: unsupported recipe file extension (expected .yaml, .yml, .json, or a Packer template: .json, .pkr.hcl or a directory of .pkr.hcl files)"
    ));
    let err = load(&tree.path("absent.yaml")).expect_err("missing");
    assert!(matches!(err, RecipeError::Io { .. }));
    assert!(
        err.to_string().contains("absent.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn error_display_lists_every_problem() {
    let tree = Tree::new();
    let err = tree
        .load_yaml("name: Bad\nbase: {image: ami-1}\npublish: {regions: [nowhere]}\n")
        .expect_err("invalid");
    let text = err
        .to_string()
        .replace(&format!("{}/", tree.dir.path().display()), "");
    assert_eq!(
        text,
        "recipe.yaml:1:1: name: invalid name \"Bad\": names are lowercase letters, digits, '.', '_' and '-', starting with a letter or digit\n\
         recipe.yaml:2:8: base.image: image id \"ami-1\" must look like \"ami-0123456789abcdef0\"\n\
         recipe.yaml:3:11: publish.regions[0]: \"nowhere\" does not look like an AWS region (such as \"eu-west-1\")"
    );
}

#[test]
fn validate_files_collects_problems_of_all_files() {
    let tree = Tree::new();
    let good = tree.write("good.yaml", MINIMAL);
    let bad = tree.write("bad.yaml", "name: x\n");
    let worse = tree.write(
        "worse.yaml",
        "name: BAD\nbase: {image: ami-0123456789abcdef0}\n",
    );
    let problems = validate_files([&good, &bad, &worse]);
    let shown: Vec<String> = problems
        .iter()
        .map(|p| {
            p.to_string()
                .replace(&format!("{}/", tree.dir.path().display()), "")
        })
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        shown[0],
        "bad.yaml:1:1: base: required field `base` is missing"
    );
    assert!(
        shown[1].starts_with("worse.yaml:1:1: name: invalid name \"BAD\""),
        "{shown:?}"
    );
}

#[test]
fn example_recipes_are_valid() {
    let mut names = Vec::new();
    for file in ["demo.yaml", "web-aws.yaml", "packer-example.json"] {
        let loaded = load(&examples().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        names.push(loaded.recipe.name.clone());
    }
    assert_eq!(names, vec!["demo", "web", "training-amazon-linux"]);
    assert!(validate_files(
        ["demo.yaml", "web-aws.yaml", "packer-example.json"].map(|f| examples().join(f))
    )
    .is_empty());
}

#[test]
fn demo_recipe_is_a_local_networked_build_on_a_bootable_disk() {
    let loaded = load(&examples().join("demo.yaml")).expect("valid");
    let r = &loaded.recipe;
    assert_eq!(
        r.base,
        Base::Path("../.bakehouse/bases/bookworm-bootable.qcow2".into())
    );
    assert_eq!(
        loaded
            .base_path()
            .as_deref()
            .and_then(LocalBaseKind::from_path),
        Some(LocalBaseKind::Qcow2)
    );
    assert!(r.builder.network);
    match &r.provisioners[..] {
        [Provisioner::Shell(a), Provisioner::File(f), Provisioner::Shell(c)] => {
            assert_eq!(
                a.source,
                ShellSource::Inline(vec![
                    "apt-get update && apt-get install -y --no-install-recommends jq".into()
                ])
            );
            assert_eq!(f.destination, "/etc/motd");
            assert!(loaded
                .resolve(&f.source)
                .ends_with("recipes/files/demo/motd"));
            assert_eq!(
                c.source,
                ShellSource::Script("scripts/demo-check.sh".into())
            );
        }
        other => panic!("unexpected provisioners {other:?}"),
    }
}

#[test]
fn web_recipe_is_scheduled_and_published_twice() {
    let r = load(&examples().join("web-aws.yaml"))
        .expect("valid")
        .recipe;
    assert_eq!(
        r.eventbridge_schedule().as_deref(),
        Some("cron(0 4 ? * MON *)")
    );
    assert_eq!(r.publish.regions, vec!["eu-west-1", "us-east-1"]);
    assert!(
        matches!(r.base, Base::Filter(ref f) if f.most_recent && f.name == "debian-12-amd64-*")
    );
    assert!(!r.paths.is_empty());
}

#[test]
fn format_from_extension() {
    assert_eq!(Format::from_path(Path::new("a/b.YML")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("b.yaml")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("b.json")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("b.txt")), None);
    assert_eq!(Format::from_path(Path::new("yaml")), None);
}

#[test]
fn shape_mistakes_say_what_is_expected() {
    let tree = Tree::new();
    let got = messages(
        &tree,
        tree.load_yaml(&format!("{MINIMAL}version: \"2.0\"\n")),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:4:10: version: invalid type: string \"2.0\", expected a map such as {bump: minor} or {version: \"2.0\"}"]
    );
    let got = messages(
        &tree,
        tree.load_yaml("name: demo\nbase: ami-0123456789abcdef0\n"),
    );
    assert_eq!(
        got,
        vec!["recipe.yaml:2:7: base: invalid type: string \"ami-0123456789abcdef0\", expected a map with one of `image`, `filter`, `registry` or `path`"]
    );
    // YAML keeps the scalar's text, so an unquoted version is read as written.
    let loaded = tree.load_yaml(&format!("{MINIMAL}version: {{version: 2.10}}\n"));
    assert_eq!(
        loaded.expect("valid").recipe.version,
        VersionPolicy::Exact("2.10".into())
    );
    // JSON numbers are not strings.
    let path = tree.write(
        "r.json",
        r#"{"name": "demo", "base": {"image": "ami-0123456789abcdef0"}, "version": {"version": 2.0}}"#,
    );
    assert_eq!(
        messages(&tree, load(&path)),
        vec!["r.json:1:87: version.version: invalid type: floating point `2.0`, expected a string (quote versions: \"2.0\")"]
    );
}

#[test]
fn problem_display_leaves_out_unknown_parts() {
    let file = Path::new("recipes/x.yaml");
    assert_eq!(
        Problem::new(file, "", "broken").to_string(),
        "recipes/x.yaml: broken"
    );
    assert_eq!(
        Problem::new(file, "name", "bad").to_string(),
        "recipes/x.yaml: name: bad"
    );
    let mut p = Problem::new(file, "name", "bad");
    p.line = Some(3);
    assert_eq!(p.to_string(), "recipes/x.yaml:3: name: bad");
    assert_eq!(p.at(14, 7).to_string(), "recipes/x.yaml:14:7: name: bad");
}
