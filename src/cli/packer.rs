//! `bakehouse packer convert|inspect`: migrating from Packer JSON
//! templates.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::output::{self, Format};
use super::template_vars::TemplateVars;
use super::CliError;

/// Packer template subcommands.
#[derive(Debug, Subcommand)]
pub enum PackerCommand {
    /// Write the recipe a template becomes (YAML), to migrate from Packer:
    /// the same recipe `build TEMPLATE` would run. File paths stay
    /// relative to the template's directory, so write it there.
    Convert {
        /// The Packer template: JSON, a `.pkr.hcl` file or a directory.
        template: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Template variables.
        #[command(flatten)]
        vars: TemplateVars,
    },
    /// Print a template's variables (sensitive ones masked), builders and
    /// provisioners, as `packer inspect` does.
    Inspect {
        /// The Packer template: JSON, a `.pkr.hcl` file or a directory.
        template: PathBuf,
        /// Template variables (HCL2 templates evaluate them).
        #[command(flatten)]
        vars: TemplateVars,
    },
}

/// Runs a packer subcommand.
pub fn run(cmd: PackerCommand, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        PackerCommand::Inspect { template, vars } => {
            let inspection =
                crate::recipe::packer_inspect::inspect_path(&template, &vars.load_options()?)?;
            match format {
                Format::Json => output::json(out, &inspection),
                Format::Table => Ok(write!(out, "{inspection}")?),
            }
        }
        PackerCommand::Convert {
            template,
            output: file,
            vars,
        } => {
            if !crate::recipe::packer::is_template_path(&template) {
                return Err(CliError::NotATemplate(template.clone()));
            }
            let loaded = crate::recipe::load_with(&template, &vars.load_options()?)?;
            let yaml = serde_yaml_ng::to_string(&loaded.recipe)
                .map_err(|e| CliError::ConvertedRecipe(e.to_string()))?;
            let mut notes = Vec::new();
            for step in &loaded.shell_local {
                notes.push(format!("{} runs on the machine running `bakehouse build` before the build; a recipe has no equivalent: run it before building", step.label));
            }
            if loaded.packer_manifest.is_some() {
                notes.push("the manifest post-processor: the registry record is the build's manifest (`bakehouse image show NAME@VERSION --json`)".to_string());
            }
            for note in &notes {
                tracing::warn!("{}: not converted: {note}", template.display());
            }
            let mut header: String = notes
                .iter()
                .map(|n| format!("# Not converted: {n}\n"))
                .collect();
            if !loaded.recipe.sensitive.is_empty() {
                let warning = "the values of sensitive variables are in this recipe in clear text (`sensitive` masks them in output): keep it out of git, or let a provisioner read them from SSM Parameter Store";
                tracing::warn!("{}: {warning}", template.display());
                header.push_str(&format!("# Warning: {warning}\n"));
            }
            let text = format!(
                "# Converted from {} by `bakehouse packer convert`.\n{header}{yaml}",
                template
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            match file {
                Some(path) => {
                    std::fs::write(&path, &text).map_err(|source| CliError::File {
                        path: path.clone(),
                        source,
                    })?;
                    if format == Format::Json {
                        return output::json(
                            out,
                            &serde_json::json!({"recipe": loaded.recipe, "written": path}),
                        );
                    }
                }
                None if format == Format::Json => return output::json(out, &loaded.recipe),
                None => out.write_all(text.as_bytes())?,
            }
            Ok(())
        }
    }
}
