//! `bakehouse builds list|show`: past builds with their step history.

use std::io::Write;

use clap::Subcommand;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::output::{self, Format};
use super::{CliError, StoreArgs};
use crate::build::BuildRecord;

/// Build record subcommands.
#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// Recent builds, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One build: steps with timings, resources, failure, history.
    Show {
        /// Build id.
        id: String,
    },
    /// Run a shell (or `-- CMD ARGS...`) in the sandbox a failed local
    /// build kept (`build --on-error=abort`): the image's tree as `/`, no
    /// network, attached to this terminal. For a remote build, prints the
    /// `aws ssm start-session` command for its builder.
    Shell {
        /// Build id.
        id: String,
        /// Where local builds keep work directories and images.
        #[arg(long, env = "BAKEHOUSE_HOME", default_value = ".bakehouse")]
        home: std::path::PathBuf,
        /// The command (after `--`); a shell when absent.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// The full output of a build's commands, every line prefixed with the
    /// provisioner, clean or test that printed it: a local build's log file,
    /// or for a remote build the CloudWatch Logs group its SSM commands
    /// wrote to.
    Logs {
        /// Build id.
        id: String,
        /// Keep printing what the build writes until it ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Tear down a failed build kept with `--on-error=abort`.
    Cleanup {
        /// Build id.
        id: String,
        /// Where local builds keep work directories and images.
        #[arg(long, env = "BAKEHOUSE_HOME", default_value = ".bakehouse")]
        home: std::path::PathBuf,
    },
    /// Clean what killed local builds left: builds whose process is gone
    /// are torn down (sandbox processes, cgroup, work directory, outputs)
    /// and marked CANCELLED; leftover work directories are removed. Runs
    /// before every local build too.
    Gc {
        /// Where local builds keep work directories and images.
        #[arg(long, env = "BAKEHOUSE_HOME", default_value = ".bakehouse")]
        home: std::path::PathBuf,
    },
}

/// Copies the log file at `path` from `offset` to `out`; returns how many
/// bytes. A log not written yet is empty.
fn copy_from(path: &str, offset: u64, out: &mut dyn Write) -> Result<u64, CliError> {
    use std::io::{Read, Seek};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut copied = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        copied += n as u64;
    }
    out.flush()?;
    Ok(copied)
}

/// The builder instance of a build that is still alive in the ledger (a
/// remote build), for `builds shell`.
fn kept_instance(record: &BuildRecord) -> Option<(String, Option<String>)> {
    record
        .resources_of(crate::build::ResourceKind::Instance)
        .find(|r| !r.deleted)
        .and_then(|r| Some((r.id.clone()?, r.region.clone())))
}

fn duration(record: &BuildRecord) -> String {
    let end = record
        .steps
        .iter()
        .filter_map(|s| s.finished_at)
        .max()
        .unwrap_or(record.updated_at);
    format!(
        "{:.1} s",
        (end - record.created_at).num_milliseconds() as f64 / 1000.0
    )
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// `builds gc`: see [`BuildsCommand::Gc`].
async fn gc(
    home: &std::path::Path,
    store: &StoreArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (pipeline, backend) =
        super::build::local_pipeline(store, home, crate::backends::local::OnError::Cleanup)?;
    let (collected, swept) = super::build::collect_garbage(&pipeline, &backend).await?;
    if format == Format::Json {
        return output::json(
            out,
            &serde_json::json!({"cancelled": collected, "removed_work_dirs": swept}),
        );
    }
    for c in &collected {
        writeln!(
            out,
            "cancelled {} (process {} gone, in {})",
            c.build_id, c.pid, c.step
        )?;
    }
    for id in &swept {
        writeln!(out, "removed the work directory of {id}")?;
    }
    if collected.is_empty() && swept.is_empty() {
        writeln!(out, "nothing to collect")?;
    }
    Ok(())
}

/// The pipeline over DynamoDB and EC2 (`--table`), for `builds cleanup` of
/// a remote build.
async fn remote_pipeline(
    store: &StoreArgs,
    home: &std::path::Path,
    builds: std::sync::Arc<dyn crate::build::BuildStore>,
) -> Result<crate::pipeline::Pipeline, CliError> {
    let config = crate::aws::from_env(None).await;
    let backend = crate::backends::ec2::Ec2Backend::new(
        &config,
        crate::backends::ec2::Ec2Settings::default(),
    );
    Ok(crate::pipeline::Pipeline::new(
        store.registry().await?,
        builds,
        std::sync::Arc::new(backend),
        crate::pipeline::PipelineSettings::new(home.join("scratch")),
    ))
}

/// Prints the output of a remote build's commands from its CloudWatch Logs
/// group; with `follow`, until the build ends.
async fn remote_logs(
    builds: &dyn crate::build::BuildStore,
    mut record: BuildRecord,
    group: crate::backends::ec2::logs::CommandLogs,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = crate::aws::from_env(None).await;
    let mut reader = crate::backends::ec2::logs::CommandLogReader::new(&config, group);
    loop {
        let running = record.status == crate::build::BuildStatus::Running;
        for line in reader.new_lines(&record).await? {
            writeln!(out, "{line}")?;
        }
        if !follow || !running {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        record = builds
            .get(&record.id)
            .await?
            .ok_or_else(|| CliError::NoBuild(record.id.clone()))?;
    }
}

/// Runs a builds subcommand.
pub async fn run(
    cmd: BuildsCommand,
    store: &StoreArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let builds = match cmd {
        BuildsCommand::Gc { .. } | BuildsCommand::Cleanup { .. } => store.builds().await?,
        _ => store.builds_for_reading().await?,
    };
    match cmd {
        BuildsCommand::Gc { home } => gc(&home, store, format, out).await?,
        BuildsCommand::Shell { id, home, command } => {
            let record = builds
                .get(&id)
                .await?
                .ok_or_else(|| CliError::NoBuild(id.clone()))?;
            // A remote build's live builder (kept with `on_error: abort`,
            // or still running): the SSM session that opens a shell on it.
            if let Some((instance, region)) = kept_instance(&record) {
                let region = region.map(|r| format!(" --region {r}")).unwrap_or_default();
                writeln!(out, "aws ssm start-session --target {instance}{region}")?;
                return Ok(());
            }
            let (_, backend) = super::build::local_pipeline(
                store,
                &home,
                crate::backends::local::OnError::Cleanup,
            )?;
            let status = backend.shell(&record, &command).await?;
            if status != 0 {
                return Err(CliError::ShellExited { id, status });
            }
        }
        BuildsCommand::Logs { id, follow } => {
            let record = builds
                .get(&id)
                .await?
                .ok_or_else(|| CliError::NoBuild(id.clone()))?;
            let Some(log) = record.log.clone() else {
                return Err(CliError::NoLog(id.clone()));
            };
            if let Some(group) = crate::backends::ec2::logs::CommandLogs::parse(&log) {
                return remote_logs(builds.as_ref(), record, group, follow, out).await;
            }
            let mut offset = 0u64;
            loop {
                offset += copy_from(&log, offset, out)?;
                if !follow {
                    break;
                }
                let running = builds
                    .get(&id)
                    .await?
                    .is_some_and(|r| r.status == crate::build::BuildStatus::Running);
                if !running {
                    copy_from(&log, offset, out)?;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        BuildsCommand::Cleanup { id, home } => {
            let record = builds
                .get(&id)
                .await?
                .ok_or_else(|| CliError::NoBuild(id.clone()))?;
            if store.table.is_some() {
                // A remote build kept with `on_error: abort`: its builder
                // instance goes the way of any failed build's.
                let kept = record.kept.clone().unwrap_or_default();
                let pipeline = remote_pipeline(store, &home, builds.clone()).await?;
                pipeline.release_kept(&id).await?;
                if format == Format::Json {
                    return output::json(
                        out,
                        &serde_json::json!({"build_id": id, "cleaned": true, "released": kept}),
                    );
                }
                writeln!(out, "build {id}: kept builder released ({kept})")?;
                return Ok(());
            }
            let (_, backend) = super::build::local_pipeline(
                store,
                &home,
                crate::backends::local::OnError::Cleanup,
            )?;
            backend.cleanup_kept(builds.clone(), record).await?;
            if format == Format::Json {
                return output::json(out, &serde_json::json!({"build_id": id, "cleaned": true}));
            }
            writeln!(out, "build {id}: kept sandbox removed")?;
        }
        BuildsCommand::List { limit } => {
            let list = builds.list(limit).await?;
            if format == Format::Json {
                return output::json(out, &list);
            }
            let mut t = table(&[
                "BUILD", "RECIPE", "TRIGGER", "STATUS", "VERSION", "STARTED", "DURATION",
            ]);
            for r in &list {
                t.add_row(vec![
                    r.id.clone(),
                    r.recipe_name.clone(),
                    serde_json::to_value(r.trigger.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if r.cache_hit {
                        format!("{} (cache hit)", r.status)
                    } else {
                        r.status.to_string()
                    },
                    r.version.clone().unwrap_or_else(|| "-".into()),
                    r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    duration(r),
                ]);
            }
            writeln!(out, "{t}")?;
        }
        BuildsCommand::Show { id } => {
            let r = builds
                .get(&id)
                .await?
                .ok_or_else(|| CliError::NoBuild(id.clone()))?
                .for_display();
            if format == Format::Json {
                return output::json(out, &r);
            }
            writeln!(
                out,
                "build {} — recipe {} — {}{}",
                r.id,
                r.recipe_name,
                r.status,
                if r.cache_hit { " (cache hit)" } else { "" }
            )?;
            if let Some(v) = &r.version {
                writeln!(out, "version: {v}")?;
            }
            if let Some(k) = &r.bake_key {
                writeln!(out, "bake key: {k}")?;
            }
            if let Some(b) = &r.base_id {
                writeln!(
                    out,
                    "base: {b}{}",
                    r.parent
                        .as_ref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                )?;
            }
            if let Some(f) = &r.failure {
                writeln!(out, "failed at {}: {}: {}", f.step, f.error, f.cause)?;
            }
            if let Some(log) = &r.log {
                writeln!(out, "log: {log} (bakehouse builds logs {})", r.id)?;
            }
            let mut steps = table(&["STEP", "STARTED", "FINISHED", "SECONDS", "CALLS"]);
            for s in &r.steps {
                steps.add_row(vec![
                    s.step.to_string(),
                    s.started_at.format("%H:%M:%S%.3f").to_string(),
                    s.finished_at
                        .map(|f| f.format("%H:%M:%S%.3f").to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.finished_at
                        .map(|f| {
                            format!(
                                "{:.2}",
                                (f - s.started_at).num_milliseconds() as f64 / 1000.0
                            )
                        })
                        .unwrap_or_else(|| "-".into()),
                    s.invocations.to_string(),
                ]);
            }
            writeln!(out, "{steps}")?;
            // The notes: provisioner and test output tails, what clean
            // removed, the test boot's console.
            for s in r.steps.iter().filter(|s| !s.notes.is_empty()) {
                writeln!(out, "{} output:", s.step)?;
                for note in &s.notes {
                    for line in note.lines() {
                        writeln!(out, "  {line}")?;
                    }
                }
            }
            if !r.resources.is_empty() {
                let mut res = table(&["RESOURCE", "NAME", "ID", "REGION", "STATE"]);
                for x in &r.resources {
                    let state = if x.deleted {
                        "deleted"
                    } else if x.keep_on_success {
                        "kept"
                    } else {
                        "present"
                    };
                    res.add_row(vec![
                        format!("{:?}", x.kind).to_lowercase(),
                        x.name.clone(),
                        x.id.clone().unwrap_or_else(|| "-".into()),
                        x.region.clone().unwrap_or_else(|| "-".into()),
                        state.into(),
                    ]);
                }
                writeln!(out, "{res}")?;
            }
            if !r.history.is_empty() {
                writeln!(
                    out,
                    "history ({} events, {} state transitions):",
                    r.history.len(),
                    r.state_transitions
                )?;
                for e in &r.history {
                    let kind = e.get("type").and_then(|v| v.as_str()).unwrap_or("?");
                    let state = e.get("state").and_then(|v| v.as_str()).unwrap_or("");
                    let at = e.get("timestamp").and_then(|v| v.as_str()).unwrap_or("");
                    let extra = e
                        .get("error")
                        .and_then(|v| v.as_str())
                        .map(|err| format!(" {err}"))
                        .unwrap_or_default();
                    writeln!(out, "  {at}  {kind:<22} {state}{extra}")?;
                }
            }
        }
    }
    Ok(())
}
