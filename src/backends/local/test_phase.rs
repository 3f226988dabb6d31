//! The test step of a local build: the recipe's `test` commands run against
//! what was captured, not against the work tree.
//!
//! - **Whole disks** (a whole-disk base, or `builder.disk`): the captured
//!   qcow2 boots in QEMU from a throwaway overlay, so the artifact's bytes
//!   and checksum never change. Before the boot a one-shot systemd unit and
//!   the commands are written into the overlay only (exported as a raw
//!   file by `qemu-storage-daemon`, written by `debugfs` in the tool
//!   sandbox): the image never carries them. The unit runs after
//!   `multi-user.target`, reports on the second serial port (protocol in
//!   `test_script`) and powers off. QEMU itself runs in the tool sandbox
//!   (unprivileged, no network, the build's control group), under TCG
//!   unless the sandbox user can use KVM. Bounded by [`BOOT_TIMEOUT`] and
//!   the build's time limit.
//! - **Filesystem outputs** (no kernel, no bootloader): the captured
//!   `.tar.zst` is unpacked into the work directory and each command runs
//!   in the sandbox over it, mounted read-only.
//!
//! No tests, no boot: a recipe without `test` commands skips the step.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::communicator::jobs::{test_body, test_label};
use crate::pipeline::{BuildContext, Progress, StepError};

use super::base::{self, BaseSource};
use super::cgroup::BuildCgroup;
use super::export::{detach_mounts_below, edit_disk, DiskEdit};
use super::fsutil::{blocking, io_error, remove_below};
use super::idmap::{self, give_to_sandbox, Shift};
use super::layout::DiskLayout;
use super::sandbox::{run_sandboxed, Layout, RunResult, Sandbox};
use super::test_script::{self, Report};
use super::{tools, LocalBackend};

/// How long a test boot may take, tests included.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Memory of the test VM.
const VM_MEMORY_MB: u32 = 1024;
/// The layout of the captured disk, written by capture (absent for
/// filesystem outputs).
pub(crate) const OUTPUT_LAYOUT_FILE: &str = "output-layout.json";

impl LocalBackend {
    /// The test step (see the module documentation).
    pub(super) async fn test_captured(&self, ctx: &BuildContext) -> Result<Progress, StepError> {
        let recipe = &ctx.recipe()?.recipe;
        if recipe.test.is_empty() {
            ctx.note("no test commands: nothing to run").await?;
            return Ok(Progress::Done(()));
        }
        let record = ctx.current().await?;
        let artifact = |ext: &str| -> Result<PathBuf, StepError> {
            record
                .artifacts
                .iter()
                .filter_map(|a| a.path.as_deref())
                .find(|p| p.ends_with(ext))
                .map(PathBuf::from)
                .ok_or_else(|| {
                    StepError::NonRetryable(format!(
                        "test: the build captured no {ext} (capture did not finish)"
                    ))
                })
        };
        let work = self.work_dir(&ctx.build_id)?;
        let dir = work.join("scratch/test");
        // A retried step starts over: nothing of an earlier attempt is reused.
        let (d, w) = (dir.clone(), work.clone());
        blocking(move || {
            detach_mounts_below(&d).map_err(io_error(d.display()))?;
            remove_below(&d, &w).map_err(io_error(d.display()))?;
            fs::create_dir_all(&d).map_err(io_error(d.display()))
        })
        .await?;
        let cgroup = self.cgroup(ctx)?;
        let deadline = Self::time_left(ctx)?.map(|left| Instant::now() + left);
        let outcome = match self.output_layout(ctx)? {
            Some(layout) => {
                let qcow2 = artifact(".qcow2")?;
                boot_and_test(ctx, &cgroup, deadline, &qcow2, &layout, &dir).await
            }
            None => {
                let tar = artifact(".tar.zst")?;
                let sandbox = Sandbox {
                    root: dir.join("root"),
                    build_id: ctx.build_id.clone(),
                    network: false,
                    deadline,
                    cgroup: cgroup.clone(),
                    log: Some(self.log_file(&ctx.build_id)?),
                    sensitive: ctx.recipe()?.recipe.sensitive.clone(),
                };
                test_tree(ctx, &sandbox, &tar).await
            }
        };
        let (d, w) = (dir.clone(), work);
        let removed = blocking(move || {
            detach_mounts_below(&d).map_err(io_error(d.display()))?;
            remove_below(&d, &w).map_err(io_error(d.display()))
        })
        .await;
        outcome?;
        removed?;
        Ok(Progress::Done(()))
    }

    /// The layout of the captured disk, if the output is a whole disk.
    fn output_layout(&self, ctx: &BuildContext) -> Result<Option<DiskLayout>, StepError> {
        self.state_layout(ctx, OUTPUT_LAYOUT_FILE)
    }
}

/// Filesystem outputs: each command in the sandbox over the unpacked
/// archive, read-only.
async fn test_tree(ctx: &BuildContext, sandbox: &Sandbox, tar: &Path) -> Result<(), StepError> {
    let (root, source) = (sandbox.root.clone(), BaseSource::at(tar.to_path_buf())?);
    blocking(move || {
        fs::create_dir_all(&root).map_err(io_error(root.display()))?;
        base::unpack(&source, &root)?;
        idmap::shift_tree(&root, Shift::In).map_err(io_error(root.display()))?;
        Ok(())
    })
    .await?;
    if !sandbox.has_shell() {
        return Err(StepError::BuildFailed(
            "test: the captured image has no /bin/sh to run the tests".into(),
        ));
    }
    for (index, command) in ctx.recipe()?.recipe.test.iter().enumerate() {
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), test_body(command)];
        let label = test_label(index, command);
        let result = sandbox.run_read_only(&label, &argv).await?;
        result.record(ctx, &label).await?;
    }
    Ok(())
}

/// Whole disks: overlay, inject, boot, read the report.
async fn boot_and_test(
    ctx: &BuildContext,
    cgroup: &BuildCgroup,
    deadline: Option<Instant>,
    qcow2: &Path,
    layout: &DiskLayout,
    dir: &Path,
) -> Result<(), StepError> {
    let root = layout
        .mounted
        .iter()
        .find(|m| m.mountpoint == "/")
        .ok_or_else(|| StepError::NonRetryable("test: the disk layout has no root".into()))?;
    let commands = ctx.recipe()?.recipe.test.clone();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let (vm, guest) = (dir.join("vm"), dir.join("guest"));
    let overlay = vm.join("overlay.qcow2");
    {
        let (vm, guest, overlay, qcow2) = (
            vm.clone(),
            guest.clone(),
            overlay.clone(),
            qcow2.to_path_buf(),
        );
        let (commands, nonce) = (commands.clone(), nonce.clone());
        blocking(move || {
            for d in [&vm, &guest] {
                fs::create_dir_all(d).map_err(io_error(d.display()))?;
            }
            let absolute = qcow2.canonicalize().map_err(io_error(qcow2.display()))?;
            tools::run(
                std::process::Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .arg(&absolute)
                    .arg(&overlay),
                "test: creating the overlay of the captured disk",
            )?;
            let write = |name: &str, body: &str| {
                let p = guest.join(name);
                fs::write(&p, body).map_err(io_error(p.display()))?;
                give_to_sandbox(&p).map_err(io_error(p.display()))
            };
            write("run", &test_script::run_script(commands.len(), &nonce))?;
            write(test_script::UNIT, &test_script::unit())?;
            for (i, c) in commands.iter().enumerate() {
                write(&test_script::command_file(i), &test_body(c))?;
            }
            give_to_sandbox(&overlay).map_err(io_error(overlay.display()))?;
            give_to_sandbox(&vm).map_err(io_error(vm.display()))
        })
        .await?;
    }
    inject(
        ctx,
        cgroup,
        deadline,
        &overlay,
        &guest,
        root.partition.offset,
        commands.len(),
    )
    .await?;
    let started = Instant::now();
    let timeout = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(BOOT_TIMEOUT)
        .min(BOOT_TIMEOUT);
    let accel = accelerator(cgroup, ctx).await;
    let layout = Layout::tools()
        .dir(&vm, "/vm", true)
        .file(qcow2, "/in/image.qcow2");
    let layout = if accel == "kvm" {
        layout.device("/dev/kvm")
    } else {
        layout
    };
    let mut argv: Vec<String> = vec![
        "timeout".into(),
        "--kill-after=10".into(),
        timeout.as_secs().max(1).to_string(),
    ];
    argv.extend(qemu_argv(accel));
    let result =
        run_sandboxed(&layout, "test boot", &argv, cgroup, deadline, &ctx.build_id).await?;
    let elapsed = started.elapsed();
    let report = test_script::parse(&read_tail(&vm.join("report.log"), REPORT_MAX), &nonce);
    let console = read_tail(&vm.join("console.log"), CONSOLE_MAX);
    tracing::info!(
        build = %ctx.build_id,
        accel,
        elapsed_ms = elapsed.as_millis() as u64,
        tests = report.outcomes.len(),
        "test boot finished"
    );
    judge(ctx, &commands, &report, &result, &console, elapsed, timeout).await
}

/// Writes the unit, its wants link, the script and the commands into the
/// overlay's root filesystem.
async fn inject(
    ctx: &BuildContext,
    cgroup: &BuildCgroup,
    deadline: Option<Instant>,
    overlay: &Path,
    guest: &Path,
    offset: u64,
    count: usize,
) -> Result<(), StepError> {
    let mut commands = format!(
        "mkdir {dir}\ncd {dir}\nwrite /guest/run run\n",
        dir = test_script::GUEST_DIR
    );
    for i in 0..count {
        let f = test_script::command_file(i);
        commands.push_str(&format!("write /guest/{f} {f}\n"));
    }
    let unit = test_script::UNIT;
    commands.push_str(&format!(
        "cd /etc/systemd/system\nwrite /guest/{unit} {unit}\nsymlink /etc/systemd/system/multi-user.target.wants/{unit} /etc/systemd/system/{unit}\n"
    ));
    let commands_file = guest.join("debugfs-commands");
    fs::write(&commands_file, commands).map_err(io_error(commands_file.display()))?;
    give_to_sandbox(&commands_file).map_err(io_error(commands_file.display()))?;
    // The wants directory is made when the image has none.
    let edit = DiskEdit {
        label: "test: injecting the test unit",
        binds: vec![(guest, "/guest")],
        script: format!(
            "img='/disk?offset={offset}'
if debugfs -R 'stat /etc/systemd/system/multi-user.target.wants' \"$img\" 2>&1 | grep -q 'not found'; then
  debugfs -w -R 'mkdir /etc/systemd/system/multi-user.target.wants' \"$img\" 2>>/tmp/err >/dev/null
fi
debugfs -w -f /guest/debugfs-commands \"$img\" 2>>/tmp/err >/dev/null"
        ),
    };
    let raw = overlay.with_extension("raw");
    let result = edit_disk(ctx, overlay, &raw, edit, cgroup, deadline).await??;
    if result.status != 0 {
        return Err(StepError::BuildFailed(format!(
            "test: could not add the test unit to the captured disk's root filesystem (does the image use systemd?): {}",
            result.short_tail(5)
        )));
    }
    Ok(())
}

/// The QEMU command line (inside the tool sandbox: `/vm` and the image).
fn qemu_argv(accel: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec!["qemu-system-x86_64".into(), "-accel".into(), accel.into()];
    if accel == "kvm" {
        argv.extend(["-cpu".into(), "host".into()]);
    }
    for a in [
        "-m",
        &VM_MEMORY_MB.to_string(),
        "-smp",
        "1",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-blockdev",
        "driver=file,node-name=image-file,filename=/in/image.qcow2,read-only=on",
        "-blockdev",
        "driver=qcow2,node-name=image,file=image-file,read-only=on",
        "-blockdev",
        "driver=file,node-name=overlay-file,filename=/vm/overlay.qcow2",
        "-blockdev",
        "driver=qcow2,node-name=overlay,file=overlay-file,backing=image",
        "-device",
        "virtio-blk-pci,drive=overlay",
        "-serial",
        "file:/vm/console.log",
        "-serial",
        "file:/vm/report.log",
    ] {
        argv.push(a.to_string());
    }
    argv
}

/// `kvm` when the sandbox's user can run a KVM guest here (QEMU shows
/// SeaBIOS within a few seconds), else `tcg`. `BAKEHOUSE_ACCEL` (`kvm` or
/// `tcg`) skips the probe.
/// The probe's answer is kept for the life of the process.
async fn accelerator(cgroup: &BuildCgroup, ctx: &BuildContext) -> &'static str {
    static PROBED: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    match std::env::var("BAKEHOUSE_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return "tcg";
    }
    if let Some(accel) = PROBED.get() {
        return accel;
    }
    // SeaBIOS writes its banner to the debug port; the chardev is a file
    // in the sandbox's /tmp, shown after QEMU is stopped.
    let script = "timeout 4 qemu-system-x86_64 -accel kvm -cpu host -display none -nodefaults \
-chardev file,id=bios,path=/tmp/bios -device isa-debugcon,iobase=0x402,chardev=bios; \
rc=$?; cat /tmp/bios; exit $rc";
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    let layout = Layout::tools().device("/dev/kvm");
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let accel =
        match run_sandboxed(&layout, "KVM probe", &argv, cgroup, deadline, &ctx.build_id).await {
            Ok(r) if r.tail.iter().any(|l| l.contains("SeaBIOS")) && r.status == 124 => "kvm",
            _ => "tcg",
        };
    tracing::info!(build = %ctx.build_id, accel, "test boot accelerator chosen");
    PROBED.get_or_init(|| accel)
}

/// Turns the report into the step's result: a note per command, and a
/// failure naming the first failing command (or the boot's console tail).
async fn judge(
    ctx: &BuildContext,
    commands: &[String],
    report: &Report,
    run: &RunResult,
    console: &str,
    elapsed: Duration,
    timeout: Duration,
) -> Result<(), StepError> {
    for outcome in &report.outcomes {
        let Some(command) = commands.get(outcome.index) else {
            continue;
        };
        let status = outcome
            .status
            .map_or_else(|| "did not finish".to_string(), |s| format!("exit {s}"));
        ctx.note(format!(
            "{} (booted image): {status}\n{}",
            test_label(outcome.index, command),
            tail_lines(&outcome.output, 20)
        ))
        .await?;
    }
    if let Some(failed) = report.outcomes.iter().find(|o| o.status != Some(0)) {
        let command = commands.get(failed.index).map_or("", String::as_str);
        return Err(StepError::BuildFailed(format!(
            "{} failed in the booted image ({}): {}",
            test_label(failed.index, command),
            failed.status.map_or_else(
                || "it did not finish".to_string(),
                |s| format!("exit code {s}")
            ),
            tail_lines(&failed.output, 5).replace('\n', " | ")
        )));
    }
    if report.done && report.outcomes.len() == commands.len() {
        return Ok(());
    }
    let console_tail = tail_lines(console, 15);
    let _ = ctx
        .note(format!("test boot console (last lines):\n{console_tail}"))
        .await;
    let why = if run.status == 124 || run.status == 137 {
        format!("within {}s", timeout.as_secs())
    } else {
        format!(
            "(QEMU exited with {} after {}s)",
            run.status,
            elapsed.as_secs()
        )
    };
    let reached = if report.started {
        "the tests did not all finish"
    } else {
        "the captured disk did not boot to multi-user.target and run the test unit"
    };
    Err(StepError::BuildFailed(format!(
        "test: {reached} {why}; console: {}",
        tail_lines(console, 5).replace('\n', " | ")
    )))
}

/// How much of the report port's output is read (the end of it).
const REPORT_MAX: u64 = 4 << 20;
/// How much of the console's output is read (the end of it).
const CONSOLE_MAX: u64 = 256 << 10;
/// The longest line kept in notes and errors.
const LINE_MAX: usize = 500;

/// The last `max` bytes of a serial log the (untrusted) guest wrote,
/// read without following a link or blocking on a FIFO the sandbox may
/// have put there instead; empty when it is not a regular file.
fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let Ok(mut file) = opened else {
        return String::new();
    };
    let Ok(meta) = file.metadata() else {
        return String::new();
    };
    if !meta.is_file() {
        return String::new();
    }
    let start = meta.len().saturating_sub(max);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(max).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` non-empty lines of `text`, control characters removed,
/// each cut at [`LINE_MAX`] characters.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .take(LINE_MAX)
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
