//! `bakehouse image add|list|show|resolve|deprecate|revoke|activate`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::{self, Format};
use super::{CliError, StoreArgs};
use crate::registry::locate::{locate_all, Ec2Locator, ImageLocator, LocalLocator};
use crate::registry::{
    AddRequest, BumpPart, Lookup, Os, Provider, Reference, ResolveQuery, Status, Trigger,
    TriggerKind, Version, VersionChoice, VersionPattern,
};

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Find images by id or name in the configured locations and register
    /// them as one package version (all or nothing).
    Add(AddArgs),
    /// List package versions.
    List {
        /// Only this package.
        name: Option<String>,
    },
    /// Show one package version with its artifacts.
    Show {
        /// `NAME@VERSION`.
        reference: String,
    },
    /// Pick the highest matching version (and artifact).
    Resolve(ResolveArgs),
    /// Mark a version deprecated (resolution skips it).
    Deprecate {
        /// `NAME@VERSION`.
        reference: String,
    },
    /// Mark a version revoked (resolution skips it).
    Revoke {
        /// `NAME@VERSION`.
        reference: String,
    },
    /// Make a deprecated or revoked version active again.
    Activate {
        /// `NAME@VERSION`.
        reference: String,
    },
    /// Apply retention: deprecate and delete old versions as the recipe
    /// that built each package's newest version says (`retain:`), or as
    /// `--keep` says. A deleted version loses its images: local files
    /// under the home's images directory; with `--table`, its AMIs in every
    /// region and their snapshots. Never the newest version, a parent of an
    /// active version, or the base of a running build.
    Prune {
        /// Only this package.
        name: Option<String>,
        /// Keep the newest N active versions of every package, whatever the
        /// recipes say.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Print what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where local builds keep images.
        #[arg(long, env = "BAKEHOUSE_HOME", default_value = ".bakehouse")]
        home: PathBuf,
    },
}

/// Arguments of `image add`, modelled on `cyclecloud image add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Package name.
    #[arg(long)]
    pub name: String,
    /// Label, free text (default: the stored package's, the name for a new
    /// package).
    #[arg(long)]
    pub label: Option<String>,
    /// Operating system (default: the stored package's, linux for a new
    /// package).
    #[arg(long, value_enum)]
    pub os: Option<Os>,
    /// Increment this part of the latest stored version.
    #[arg(long, value_enum, conflicts_with = "package_version")]
    pub bump_version: Option<BumpPart>,
    /// Use exactly this version.
    #[arg(long)]
    pub package_version: Option<Version>,
    /// Print what would be stored and store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// EC2 regions to search (repeatable; default: $BAKEHOUSE_REGIONS,
    /// comma separated, else $AWS_REGION if set).
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Only search these providers (aws, local).
    #[arg(long = "provider")]
    pub providers: Vec<Provider>,
    /// Where local images are found.
    #[arg(long, default_value = ".bakehouse/images")]
    pub images_dir: PathBuf,
    /// Image ids or names.
    pub image_ids: Vec<String>,
}

/// Arguments of `image resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// `NAME`, `NAME@1.x`, `NAME@1.2`.
    #[arg(required_unless_present = "label", conflicts_with = "label")]
    pub reference: Option<String>,
    /// Resolve by label instead (free text, as given to `image add
    /// --label`), e.g. `--label "My Image"`.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// With --label: which versions qualify (`1.x`, `1.2`; default: the
    /// latest).
    #[arg(long, value_name = "PATTERN", requires = "label")]
    pub version: Option<String>,
    /// Also consider deprecated and revoked versions.
    #[arg(long)]
    pub include_inactive: bool,
    /// Pick the artifact for this provider.
    #[arg(long)]
    pub provider: Option<Provider>,
    /// ... in this region.
    #[arg(long)]
    pub region: Option<String>,
}

fn exact(reference: &str) -> Result<(String, Version), CliError> {
    let (name, version) = reference
        .split_once('@')
        .ok_or_else(|| CliError::NotAReference(reference.to_string()))?;
    Ok((name.to_string(), version.parse()?))
}

fn regions(args: &AddArgs) -> Vec<String> {
    if !args.regions.is_empty() {
        return args.regions.clone();
    }
    if let Ok(list) = std::env::var("BAKEHOUSE_REGIONS") {
        return list
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
    }
    std::env::var("AWS_REGION").into_iter().collect()
}

async fn locators(args: &AddArgs) -> Vec<Box<dyn ImageLocator>> {
    let wants = |p: Provider| args.providers.is_empty() || args.providers.contains(&p);
    let mut out: Vec<Box<dyn ImageLocator>> = Vec::new();
    if wants(Provider::Aws) {
        for region in regions(args) {
            let config = crate::aws::from_env(Some(&region)).await;
            out.push(Box::new(Ec2Locator::new(&config)));
        }
    }
    if wants(Provider::Local) {
        out.push(Box::new(LocalLocator::new(args.images_dir.clone())));
    }
    out
}

/// Runs an image subcommand.
pub async fn run(
    cmd: ImageCommand,
    store: &StoreArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        ImageCommand::Add(args) => {
            if args.image_ids.is_empty() {
                return Err(crate::registry::RegistryError::NoArtifacts.into());
            }
            // Validate before any lookup or write.
            crate::registry::model_checks(&args.name, args.label.as_deref())?;
            let registry = store.registry().await?;
            let artifacts = locate_all(&locators(&args).await, &args.image_ids).await?;
            let mut req = AddRequest::new(args.name.clone(), Os::Linux, artifacts);
            req.os = args.os;
            req.label = args.label.clone();
            req.version = match (&args.bump_version, &args.package_version) {
                (Some(part), _) => VersionChoice::Bump(*part),
                (None, Some(v)) => VersionChoice::Exact(v.clone()),
                (None, None) => VersionChoice::Latest,
            };
            req.dry_run = args.dry_run;
            req.trigger = Some(Trigger::of(TriggerKind::Cli));
            let outcome = registry.add(req).await?;
            match format {
                Format::Json => output::json(out, &outcome)?,
                Format::Table => {
                    let what = match (outcome.stored, outcome.appended) {
                        (false, _) => "dry run, nothing stored; would store",
                        (true, true) => "added artifacts to",
                        (true, false) => "stored",
                    };
                    writeln!(
                        out,
                        "{what} {} {}",
                        outcome.package.name, outcome.package.version
                    )?;
                    output::version_detail(out, &outcome.package)?;
                }
            }
        }
        ImageCommand::List { name } => {
            let registry = store.registry_for_reading().await?;
            let list = registry.list(name.as_deref()).await?;
            match format {
                Format::Json => output::json(out, &list)?,
                Format::Table => output::versions(out, &list)?,
            }
        }
        ImageCommand::Show { reference } => {
            let (name, version) = exact(&reference)?;
            let registry = store.registry_for_reading().await?;
            let package = registry.show(&name, &version).await?;
            match format {
                Format::Json => output::json(out, &package)?,
                Format::Table => output::version_detail(out, &package)?,
            }
        }
        ImageCommand::Resolve(args) => {
            let (lookup, pattern) = match (&args.reference, &args.label) {
                (Some(text), _) => {
                    let reference: Reference = text.parse()?;
                    (Lookup::Name(reference.name), reference.pattern)
                }
                (None, Some(label)) => {
                    crate::registry::validate_label(label)?;
                    let pattern = match &args.version {
                        Some(p) => p.parse()?,
                        None => VersionPattern::Latest,
                    };
                    (Lookup::Label(label.clone()), pattern)
                }
                (None, None) => return Err(CliError::NothingToResolve),
            };
            let reference = match (&lookup, &pattern) {
                (Lookup::Name(n), VersionPattern::Latest) => n.clone(),
                (Lookup::Name(n), p) => format!("{n}@{p}"),
                (Lookup::Label(l), VersionPattern::Latest) => format!("label {l:?}"),
                (Lookup::Label(l), p) => format!("label {l:?} version {p}"),
            };
            let registry = store.registry_for_reading().await?;
            let query = ResolveQuery {
                lookup,
                pattern,
                include_inactive: args.include_inactive,
                provider: args.provider,
                region: args.region.clone(),
            };
            let resolution = registry.resolve(&query).await?;
            match format {
                Format::Json => output::json(out, &resolution)?,
                Format::Table => {
                    writeln!(
                        out,
                        "{reference} resolves to {} {}",
                        resolution.package.name, resolution.package.version
                    )?;
                    match &resolution.artifact {
                        Some(a) => {
                            let mut only = resolution.package.clone();
                            only.artifacts = vec![a.clone()];
                            output::version_detail(out, &only)?;
                        }
                        None => output::version_detail(out, &resolution.package)?,
                    }
                }
            }
        }
        ImageCommand::Deprecate { reference } => {
            set_status(store, &reference, Status::Deprecated, format, out).await?
        }
        ImageCommand::Revoke { reference } => {
            set_status(store, &reference, Status::Revoked, format, out).await?
        }
        ImageCommand::Activate { reference } => {
            set_status(store, &reference, Status::Active, format, out).await?
        }
        ImageCommand::Prune {
            name,
            keep,
            dry_run,
            home,
        } => prune(store, name.as_deref(), keep, dry_run, &home, format, out).await?,
    }
    Ok(())
}

/// `image prune`: the lifecycle over this registry, with the image store
/// its artifacts live in (AWS with `--table`, the local images directory
/// otherwise; artifacts of the other kind are reported, not touched).
async fn prune(
    store: &StoreArgs,
    name: Option<&str>,
    keep: Option<u32>,
    dry_run: bool,
    home: &std::path::Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (registry, builds) = if dry_run {
        (
            store.registry_for_reading().await?,
            store.builds_for_reading().await?,
        )
    } else {
        (store.registry().await?, store.builds().await?)
    };
    let images: std::sync::Arc<dyn crate::lifecycle::ImageStore> = if store.table.is_some() {
        let config = crate::aws::from_env(None).await;
        std::sync::Arc::new(crate::backends::ec2::Ec2Backend::new(
            &config,
            crate::backends::ec2::Ec2Settings::default(),
        ))
    } else {
        std::sync::Arc::new(crate::backends::local::LocalImages::new(
            home.join("images"),
        ))
    };
    let lifecycle = crate::lifecycle::Lifecycle::new(registry, builds, vec![images]);
    let report = lifecycle
        .run(name, keep, dry_run, chrono::Utc::now())
        .await?;
    if format == Format::Json {
        return output::json(out, &report);
    }
    for (package, policy) in &report.policies {
        if policy.is_none() {
            writeln!(
                out,
                "{package}: no retain policy (its newest version's recipe sets none); left alone"
            )?;
        }
    }
    let verb = if dry_run { "would " } else { "" };
    for d in &report.decisions {
        match d.action {
            Some(crate::lifecycle::Action::Delete) => {
                writeln!(out, "{}: {verb}delete ({})", d.version, d.reason)?
            }
            Some(crate::lifecycle::Action::Deprecate) => {
                writeln!(out, "{}: {verb}deprecate ({})", d.version, d.reason)?
            }
            None => writeln!(out, "{}: {}", d.version, d.reason)?,
        }
    }
    for line in report.actions.iter().chain(&report.skipped) {
        writeln!(out, "  {line}")?;
    }
    if report.decisions.is_empty() {
        writeln!(out, "nothing to prune")?;
    }
    Ok(())
}

async fn set_status(
    store: &StoreArgs,
    reference: &str,
    status: Status,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (name, version) = exact(reference)?;
    let registry = store.registry().await?;
    let package = registry.set_status(&name, &version, status).await?;
    match format {
        Format::Json => output::json(out, &package)?,
        Format::Table => writeln!(out, "{name} {version} is now {status}")?,
    }
    Ok(())
}
