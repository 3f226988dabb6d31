//! `bakehouse packer inspect`: what a Packer JSON template declares, read
//! from the template as written (no variable is evaluated), printed as
//! `packer inspect` prints it. Values of `sensitive-variables` are shown as
//! `<sensitive>`.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::error::Problem;

/// What is shown instead of a sensitive variable's value.
pub const SENSITIVE: &str = "<sensitive>";

/// One declared variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InspectedVariable {
    /// Its name.
    pub name: String,
    /// Its default as written (`None`: required, the template gives
    /// `null`; [`SENSITIVE`] for a sensitive variable).
    pub default: Option<String>,
    /// Listed in `sensitive-variables`: the default is not shown.
    pub sensitive: bool,
}

/// What a template declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// Variables in name order.
    pub variables: Vec<InspectedVariable>,
    /// Builders by `name` (the type where no name is given).
    pub builders: Vec<String>,
    /// Provisioner types in order.
    pub provisioners: Vec<String>,
    /// Post-processor types in order (nested sequences flattened).
    pub post_processors: Vec<String>,
}

/// What the template at `path` declares: a JSON template as written, or an
/// HCL2 file or directory with its variables evaluated (as Packer's HCL2
/// mode shows them), so a required variable needs a value in `options`.
pub fn inspect_path(
    path: &Path,
    options: &super::LoadOptions,
) -> Result<Inspection, super::RecipeError> {
    if super::packer_hcl::is_hcl_template(path) {
        let template = super::packer_hcl::to_json_template(path, options)
            .map_err(super::RecipeError::Parse)?;
        let text = serde_json::to_string(&template.json).unwrap_or_default();
        return inspect(&text, path).map_err(|p| super::RecipeError::Parse(vec![p]));
    }
    let text = std::fs::read_to_string(path).map_err(|source| super::RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    inspect(&text, path).map_err(|p| super::RecipeError::Parse(vec![p]))
}

/// Reads what the Packer JSON template `text` (from `file`) declares.
pub fn inspect(text: &str, file: &Path) -> Result<Inspection, Problem> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| Problem::new(file, "", format!("not a JSON template: {e}")))?;
    let Some(top) = doc.as_object() else {
        return Err(Problem::new(file, "", "a template is a JSON object"));
    };
    if !top.contains_key("builders") {
        return Err(Problem::new(
            file,
            "builders",
            "not a Packer template: there is no `builders` list",
        ));
    }
    let sensitive: Vec<&str> = top
        .get("sensitive-variables")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut variables: Vec<InspectedVariable> = top
        .get("variables")
        .and_then(Value::as_object)
        .map(|vars| {
            vars.iter()
                .map(|(name, value)| {
                    let hidden = sensitive.contains(&name.as_str());
                    InspectedVariable {
                        name: name.clone(),
                        default: match value {
                            Value::Null => None,
                            _ if hidden => Some(SENSITIVE.to_string()),
                            Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        },
                        sensitive: hidden,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    variables.sort_by(|a, b| a.name.cmp(&b.name));
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    let list = |key: &str| -> Vec<Value> {
        top.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let builders = list("builders")
        .iter()
        .filter_map(|b| {
            b.get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| kind(b))
        })
        .collect();
    let provisioners = list("provisioners").iter().filter_map(kind).collect();
    let post_processors = list("post-processors")
        .iter()
        .flat_map(|p| match p {
            Value::Array(seq) => seq.iter().filter_map(kind).collect::<Vec<_>>(),
            Value::String(s) => vec![s.clone()],
            other => kind(other).into_iter().collect(),
        })
        .collect();
    Ok(Inspection {
        variables,
        builders,
        provisioners,
        post_processors,
    })
}

impl fmt::Display for Inspection {
    /// The layout of `packer inspect` for JSON templates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let required: Vec<&InspectedVariable> = self
            .variables
            .iter()
            .filter(|v| v.default.is_none())
            .collect();
        let optional: Vec<&InspectedVariable> = self
            .variables
            .iter()
            .filter(|v| v.default.is_some())
            .collect();
        writeln!(f, "Packer Inspect: JSON mode")?;
        writeln!(f, "Required variables:\n")?;
        if required.is_empty() {
            writeln!(f, "  <No required variables>")?;
        }
        for v in required {
            writeln!(f, "  {}", v.name)?;
        }
        writeln!(f, "\nOptional variables and their defaults:\n")?;
        if optional.is_empty() {
            writeln!(f, "  <No optional variables>")?;
        }
        let width = optional.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for v in optional {
            let value = v.default.as_deref().unwrap_or_default();
            writeln!(f, "  {:width$} = {value}", v.name)?;
        }
        for (title, items, none) in [
            ("Builders", &self.builders, "<No builders>"),
            ("Provisioners", &self.provisioners, "<No provisioners>"),
        ] {
            writeln!(f, "\n{title}:\n")?;
            if items.is_empty() {
                writeln!(f, "  {none}")?;
            }
            for item in items.iter() {
                writeln!(f, "  {item}")?;
            }
        }
        if !self.post_processors.is_empty() {
            writeln!(f, "\nPost-processors:\n")?;
            for item in &self.post_processors {
                writeln!(f, "  {item}")?;
            }
        }
        writeln!(
            f,
            "\nNote: If your build names contain user variables or template\nfunctions such as 'timestamp', these are processed at build time,\nand therefore only show in their raw form here."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{
      "variables": {"region": "us-east-1", "db_password": "hunter2", "build_id": null, "count": 3},
      "sensitive-variables": ["db_password"],
      "builders": [
        {"type": "amazon-ebs", "name": "web", "ami_name": "web-{{timestamp}}"},
        {"type": "amazon-ebs", "ami_name": "plain"}
      ],
      "provisioners": [{"type": "shell", "inline": ["true"]}, {"type": "file", "source": "a", "destination": "/a"}],
      "post-processors": [[{"type": "manifest"}, {"type": "checksum"}], "compress"]
    }"#;

    #[test]
    fn lists_what_the_template_declares_and_hides_sensitive_defaults() {
        let i = inspect(TEMPLATE, Path::new("t.json")).unwrap();
        assert_eq!(i.builders, ["web", "amazon-ebs"]);
        assert_eq!(i.provisioners, ["shell", "file"]);
        assert_eq!(i.post_processors, ["manifest", "checksum", "compress"]);
        let text = i.to_string();
        assert!(
            text.starts_with("Packer Inspect: JSON mode\nRequired variables:\n\n  build_id\n"),
            "{text}"
        );
        assert!(text.contains("  count       = 3\n"), "{text}");
        assert!(text.contains("  db_password = <sensitive>\n"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("  region      = us-east-1\n"), "{text}");
        assert!(
            text.contains("\nBuilders:\n\n  web\n  amazon-ebs\n"),
            "{text}"
        );
        assert!(
            text.contains("\nProvisioners:\n\n  shell\n  file\n"),
            "{text}"
        );
    }

    #[test]
    fn a_recipe_or_broken_json_is_refused_naming_the_file() {
        let e = inspect("name: web", Path::new("r.yaml")).unwrap_err();
        assert!(e.to_string().contains("r.yaml"), "{e}");
        let e = inspect(r#"{"name": "web"}"#, Path::new("r.json")).unwrap_err();
        assert!(e.to_string().contains("no `builders` list"), "{e}");
    }
}
