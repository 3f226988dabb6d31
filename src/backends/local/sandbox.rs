//! Running commands in the sandbox: bubblewrap (Debian `bubblewrap`) over
//! the work tree, with the isolation of a container runtime.
//!
//! - **User namespace**: bwrap runs as the unprivileged host uid
//!   [`ID_OFFSET`] and the CLI maps ids `0..65536` inside to
//!   `ID_OFFSET..` outside (see [`super::idmap`]): root in a build holds
//!   capabilities only over its own namespaces and its own tree; host files
//!   (the bind-mounted device nodes included) show as the overflow id and
//!   cannot be changed.
//! - **Namespaces**: mount, PID, IPC, UTS, cgroup, and network (unless
//!   `builder.network: true`, which shares the host's network and copies
//!   its `/etc/resolv.conf` in for the run).
//! - **Root**: the tree is bind-mounted (`nodev`, `nosuid`) and made the
//!   root with `pivot_root`. bwrap runs as the sandbox's uid, which may not
//!   search the directories above the tree (the work directory is `0700`
//!   root), so the forked child first enters a private mount namespace of
//!   its own and binds the tree onto a mount point below [`MOUNT_POINTS`] there; the host's
//!   mount table never sees it, and it vanishes with the sandbox.
//!   After `pivot_root` the old root is detached, so no path (and no
//!   `chroot` trick) leads back to the host.
//! - **Capabilities**: the bounding set is cut to what package
//!   installation needs: `CHOWN`, `DAC_OVERRIDE`, `DAC_READ_SEARCH`,
//!   `FOWNER`, `FSETID`, `KILL`, `SETGID`, `SETUID`, `SETPCAP`, `SETFCAP`,
//!   `NET_BIND_SERVICE`, `SYS_CHROOT`, `AUDIT_WRITE`; no `SYS_ADMIN`, so no
//!   mounts. `no_new_privs` is set.
//! - **seccomp**: the filters of [`super::seccomp`].
//! - **/proc** is the sandbox's own, with `/proc/sys` read-only; **/dev**
//!   is a tmpfs with `null`, `zero`, `full`, `random`, `urandom`, `tty`, a
//!   private `pts` and a `shm` tmpfs (mode 1777).
//! - **Limits**: the build's control group ([`super::cgroup`]).
//! - **Lifetime**: the CLI's death kills bwrap (parent-death signal), whose
//!   death kills the command (`--die-with-parent`); the control group
//!   catches anything that escaped both.
//! - **Output** is read in bounded lines ([`super::lines`]).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::pipeline::{BuildContext, StepError};

use super::cgroup::{self, BuildCgroup};
use super::fsutil::{ensure_real_dir, io_error, is_real_dir, remove_path, resolve_in_root};
use super::idmap::{self, give_to_sandbox, ID_OFFSET};
use super::lines::{follow_output, MAX_LOGGED_BYTES};
use super::seccomp;

/// Host name inside the sandbox.
pub const SANDBOX_HOSTNAME: &str = "bakehouse-build";

/// Lines of output kept for notes and error messages.
const TAIL_LINES: usize = 40;

/// The sandbox program.
const BWRAP: &str = "bwrap";

/// Where host paths are bound, in the sandbox's private mount namespace
/// only (one mount point per bind: `d0`, `f1`, ...).
pub const MOUNT_POINTS: &str = "/run/bakehouse/mnt";

/// Capabilities root keeps inside the sandbox (its own namespaces only).
const CAPABILITIES: [&str; 13] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
];

/// Environment of every command in the sandbox.
const ENV: [(&str, &str); 5] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("TERM", "dumb"),
    ("LANG", "C"),
    ("USER", "root"),
];

/// Where and how commands run.
#[derive(Clone, Debug)]
pub(crate) struct Sandbox {
    /// The tree (host path), owned by the sandbox's ids.
    pub root: PathBuf,
    /// The build, for logs.
    pub build_id: String,
    /// Share the host's network (and its `/etc/resolv.conf`).
    pub network: bool,
    /// When the build's time limit runs out (`builder.time_limit_minutes`).
    pub deadline: Option<Instant>,
    /// The build's control group.
    pub cgroup: BuildCgroup,
    /// The build's full log (every output line), if it keeps one.
    pub log: Option<PathBuf>,
    /// Values masked in output lines (the recipe's `sensitive`).
    pub sensitive: Vec<String>,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunResult {
    /// Exit status (128 + signal when killed by one).
    pub status: i32,
    /// The last lines of its output (stdout and stderr interleaved).
    pub tail: Vec<String>,
}

impl RunResult {
    /// The tail as text.
    pub fn tail_text(&self) -> String {
        self.tail.join("\n")
    }

    /// The last `n` lines as one line, for error messages.
    pub fn short_tail(&self, n: usize) -> String {
        self.tail[self.tail.len().saturating_sub(n)..].join(" | ")
    }

    /// Keeps the output tail as a note of the build and fails the build,
    /// naming what ran (`label`), if it exited non-zero.
    pub async fn record(&self, ctx: &BuildContext, label: &str) -> Result<(), StepError> {
        let _ = ctx
            .note(format!(
                "{label}: exit {}\n{}",
                self.status,
                self.tail_text()
            ))
            .await;
        if self.status != 0 {
            return Err(StepError::BuildFailed(format!(
                "{label} failed with exit code {}: {}",
                self.status,
                self.short_tail(5)
            )));
        }
        Ok(())
    }
}

impl Sandbox {
    /// Whether the tree has a shell at `/bin/sh` (following its links
    /// inside the tree).
    pub fn has_shell(&self) -> bool {
        resolve_in_root(&self.root, Path::new("/bin/sh"), true)
            .is_ok_and(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Runs `argv` (resolved inside the tree) and streams its output to the
    /// log, line by line, under `label`. A non-zero status is returned, not
    /// an error; failing to set up the sandbox is, and so is running out of
    /// the build's time.
    pub async fn run(&self, label: &str, argv: &[String]) -> Result<RunResult, StepError> {
        self.run_within(label, argv, None).await
    }

    /// [`Sandbox::run`], also killed after `timeout` (the build's time
    /// limit still applies).
    pub async fn run_within(
        &self,
        label: &str,
        argv: &[String],
        timeout: Option<std::time::Duration>,
    ) -> Result<RunResult, StepError> {
        ensure_real_dir(&self.root, "proc", 0o555)?;
        ensure_real_dir(&self.root, "dev", 0o755)?;
        let resolv = if self.network {
            Some(ResolvConf::install(&self.root)?)
        } else {
            None
        };
        let deadline = match timeout.map(|t| Instant::now() + t) {
            Some(at) => Some(self.deadline.map_or(at, |d| d.min(at))),
            None => self.deadline,
        };
        let result = self
            .run_in_until(
                Layout::image(&self.root, self.network),
                label,
                argv,
                deadline,
            )
            .await;
        if let Some(resolv) = resolv {
            resolv.restore()?;
        }
        result
    }

    /// Runs `argv` over the tree mounted read-only (with a fresh `/tmp`
    /// and `/run`): the test phase over a captured filesystem.
    pub async fn run_read_only(
        &self,
        label: &str,
        argv: &[String],
    ) -> Result<RunResult, StepError> {
        self.run_in(Layout::image_read_only(&self.root), label, argv)
            .await
    }

    /// Runs `argv` in `layout` with this sandbox's cgroup, deadline and log.
    async fn run_in(
        &self,
        layout: Layout,
        label: &str,
        argv: &[String],
    ) -> Result<RunResult, StepError> {
        self.run_in_until(layout, label, argv, self.deadline).await
    }

    /// Runs `argv` in `layout` with this sandbox's cgroup and log until
    /// `deadline`.
    async fn run_in_until(
        &self,
        layout: Layout,
        label: &str,
        argv: &[String],
        deadline: Option<Instant>,
    ) -> Result<RunResult, StepError> {
        let layout = layout
            .logged(self.log.clone())
            .masking(self.sensitive.clone());
        run_sandboxed(&layout, label, argv, &self.cgroup, deadline, &self.build_id).await
    }
}

/// What a sandbox shows: host paths bound onto fixed mount points in the
/// forked child's private mount namespace (see the module documentation),
/// and bwrap's mount arguments over them.
pub(crate) struct Layout {
    /// Sources and their mount points.
    binds: Vec<(PathBuf, PathBuf)>,
    /// bwrap arguments that build the sandbox's file system.
    mounts: Vec<std::ffi::OsString>,
    /// Share the host's network.
    network: bool,
    /// Attach the command to this process's stdin, stdout and stderr
    /// (`builds shell`) instead of collecting its output.
    attached: bool,
    /// The build's log file: every output line is appended to it.
    log: Option<PathBuf>,
    /// Values shown as `<sensitive>` in output lines, logged or kept.
    masked: Vec<String>,
}

impl Layout {
    /// The same layout, appending every output line to `log`.
    pub fn logged(mut self, log: Option<PathBuf>) -> Layout {
        self.log = log;
        self
    }

    /// The same layout, masking `values` in every output line.
    pub fn masking(mut self, values: Vec<String>) -> Layout {
        self.masked = values;
        self
    }

    /// The same layout, with the command attached to this terminal.
    pub fn attached(mut self) -> Layout {
        self.attached = true;
        self
    }

    /// The image tree as `/`, with its own `/proc` and a minimal `/dev`.
    pub fn image(root: &Path, network: bool) -> Layout {
        let mut layout = Layout {
            binds: Vec::new(),
            mounts: Vec::new(),
            network,
            attached: false,
            log: None,
            masked: Vec::new(),
        };
        let point = layout.bind(root, true);
        layout.arg("--bind").arg(point).arg("/");
        layout.arg("--proc").arg("/proc").arg("--dev").arg("/dev");
        layout
            .arg("--perms")
            .arg("1777")
            .arg("--tmpfs")
            .arg("/dev/shm");
        layout
    }

    /// The image tree as `/`, read-only, with its own `/proc`, a minimal
    /// `/dev` and empty `/tmp` and `/run`; no network.
    pub fn image_read_only(root: &Path) -> Layout {
        let mut layout = Layout {
            binds: Vec::new(),
            mounts: Vec::new(),
            network: false,
            attached: false,
            log: None,
            masked: Vec::new(),
        };
        let point = layout.bind(root, true);
        layout.arg("--ro-bind").arg(point).arg("/");
        layout.arg("--proc").arg("/proc").arg("--dev").arg("/dev");
        for (dir, mode) in [("/tmp", "1777"), ("/run", "0755"), ("/dev/shm", "1777")] {
            layout.arg("--perms").arg(mode).arg("--tmpfs").arg(dir);
        }
        layout
    }

    /// The host's programs (`/usr` and the top-level links or directories
    /// into it, read-only) with a private `/tmp`, `/proc` and `/dev`, for
    /// running host tools over untrusted data; add what they work on with
    /// [`Layout::dir`] and [`Layout::file`]. No network.
    pub fn tools() -> Layout {
        let mut layout = Layout {
            binds: Vec::new(),
            mounts: Vec::new(),
            network: false,
            attached: false,
            log: None,
            masked: Vec::new(),
        };
        layout.arg("--ro-bind").arg("/usr").arg("/usr");
        for top in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
            match fs::symlink_metadata(top) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = fs::read_link(top) {
                        layout.arg("--symlink").arg(target).arg(top);
                    }
                }
                Ok(m) if m.is_dir() => {
                    layout.arg("--ro-bind").arg(top).arg(top);
                }
                _ => {}
            }
        }
        layout.arg("--proc").arg("/proc").arg("--dev").arg("/dev");
        layout.arg("--tmpfs").arg("/tmp");
        layout
    }

    /// Shows the host directory `host` at `inside` (writable or not).
    pub fn dir(mut self, host: &Path, inside: &str, writable: bool) -> Layout {
        let point = self.bind(host, true);
        self.arg(if writable { "--bind" } else { "--ro-bind" })
            .arg(point)
            .arg(inside);
        self
    }

    /// Shows the host file `host` read-only at `inside`.
    pub fn file(mut self, host: &Path, inside: &str) -> Layout {
        let point = self.bind(host, false);
        self.arg("--ro-bind").arg(point).arg(inside);
        self
    }

    /// Shows the host file `host` writable at `inside`.
    pub fn writable_file(mut self, host: &Path, inside: &str) -> Layout {
        let point = self.bind(host, false);
        self.arg("--bind").arg(point).arg(inside);
        self
    }

    /// Shows the host device node `path` at the same path.
    pub fn device(mut self, path: &str) -> Layout {
        self.arg("--dev-bind").arg(path).arg(path);
        self
    }

    fn arg(&mut self, a: impl Into<std::ffi::OsString>) -> &mut Layout {
        self.mounts.push(a.into());
        self
    }

    /// The mount point for the next bind.
    fn bind(&mut self, source: &Path, dir: bool) -> PathBuf {
        let kind = if dir { "d" } else { "f" };
        let point = Path::new(MOUNT_POINTS).join(format!("{kind}{}", self.binds.len()));
        self.binds.push((source.to_path_buf(), point.clone()));
        point
    }

    /// The bwrap command line for `argv` with the given descriptors.
    fn command(&self, fds: &SetupFds, argv: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BWRAP);
        cmd.args(["--unshare-all", "--unshare-user"]);
        if self.network {
            cmd.arg("--share-net");
        }
        let fd = |f: &OwnedFd| f.as_raw_fd().to_string();
        cmd.args(["--die-with-parent", "--new-session"])
            .args(["--info-fd", &fd(&fds.info_w)])
            .args(["--userns-block-fd", &fd(&fds.block_r)])
            .args(["--add-seccomp-fd", &fd(&fds.deny)])
            .args(["--add-seccomp-fd", &fd(&fds.clone3)])
            .args(&self.mounts)
            .args(["--hostname", SANDBOX_HOSTNAME, "--chdir", "/"])
            .args(["--cap-drop", "ALL"]);
        for cap in CAPABILITIES {
            cmd.args(["--cap-add", cap]);
        }
        cmd.arg("--")
            .args(argv)
            .env_clear()
            .envs(ENV)
            .kill_on_drop(true);
        if self.attached {
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        cmd
    }
}

/// Starts bwrap over `layout` in the build's cgroup, maps its user
/// namespace, and collects the output of `argv` (logged under `label`),
/// killing it when `deadline` passes.
pub(crate) async fn run_sandboxed(
    layout: &Layout,
    label: &str,
    argv: &[String],
    cgroup: &BuildCgroup,
    deadline: Option<Instant>,
    build_id: &str,
) -> Result<RunResult, StepError> {
    let setup = |what: String| {
        StepError::NonRetryable(format!("{label}: could not set up the sandbox: {what}"))
    };
    let fds = SetupFds::new().map_err(|e| setup(e.to_string()))?;
    let bind = Binds::new(&layout.binds).map_err(|e| setup(e.to_string()))?;
    let cgroups = cgroup.procs_files().map_err(|e| setup(e.to_string()))?;
    let mut cmd = layout.command(&fds, argv);
    let inherit: Vec<RawFd> = [&fds.info_w, &fds.block_r, &fds.deny, &fds.clone3]
        .iter()
        .map(|f| f.as_raw_fd())
        .collect();
    let cgroup_fds = cgroup::raw(&cgroups);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (write, fcntl, setgroups,
    // setresgid, setresuid, prctl, getppid).
    let parent = std::process::id() as i32;
    unsafe {
        cmd.pre_exec(move || {
            bind.enter()?;
            child_setup(&inherit, &cgroup_fds, parent)
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        setup(format!(
            "cannot start {BWRAP} (Debian package bubblewrap): {e}"
        ))
    })?;
    // Only bwrap may hold these now: the info pipe reaches its end when
    // bwrap closes it.
    let SetupFds {
        info_r,
        block_w,
        info_w,
        block_r,
        deny,
        clone3,
    } = fds;
    drop((info_w, block_r, deny, clone3, cgroups));
    let mapped = tokio::task::spawn_blocking(move || map_user_namespace(info_r, block_w))
        .await
        .map_err(|e| setup(e.to_string()))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    if let Err(e) = mapped {
        let _ = child.kill().await;
        let mut text = String::new();
        if let Some(mut err) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = (&mut err).take(4096).read_to_string(&mut text).await;
        }
        return Err(setup(format!("{e}; {}", text.trim())));
    }
    let build = build_id.to_string();
    let mut log = layout
        .log
        .as_deref()
        .and_then(|path| BuildLog::open(path, label));
    let mut logged = 0u64;
    let mut tail = Vec::new();
    let stream = async {
        tail = follow_output(stdout, stderr, &layout.masked, TAIL_LINES, |line, bytes| {
            if logged < MAX_LOGGED_BYTES {
                logged += bytes;
                tracing::info!(build = %build, provisioner = %label, "{line}");
                if logged >= MAX_LOGGED_BYTES {
                    tracing::warn!(build = %build, provisioner = %label, "output past {} MiB is not logged", MAX_LOGGED_BYTES >> 20);
                }
            }
            if let Some(log) = log.as_mut() {
                log.line(line);
            }
        })
        .await;
        child.wait().await
    };
    let status = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream).await {
                    Ok(status) => status,
                    Err(_) => {
                        cgroup.kill();
                        return Err(StepError::BuildFailed(format!(
                            "{label}: ran out of its time (its timeout, or the build's builder.time_limit_minutes); killed"
                        )));
                    }
                }
            }
            None => stream.await,
        }
        .map_err(io_error(format!("{label}: waiting for the sandbox")))?;
    use std::os::unix::process::ExitStatusExt;
    let status = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    if status == 1 && tail.first().is_some_and(|l| l.starts_with("bwrap: ")) {
        return Err(setup(tail.join(" | ")));
    }
    Ok(RunResult { status, tail })
}

/// A build's full log file: every output line of every command, each
/// prefixed with what ran (`[provisioners[0] (shell inline)] ...`), up to
/// [`MAX_LOG_BYTES`]. Writing it never fails a build: a log that cannot be
/// written is reported once and skipped.
struct BuildLog {
    file: std::io::LineWriter<fs::File>,
    label: String,
    written: u64,
}

/// The most a build's log keeps.
const MAX_LOG_BYTES: u64 = 1 << 30;

impl BuildLog {
    fn open(path: &Path, label: &str) -> Option<BuildLog> {
        let opened = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::OpenOptions::new().create(true).append(true).open(path));
        match opened {
            Ok(file) => {
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Some(BuildLog {
                    file: std::io::LineWriter::new(file),
                    label: label.to_string(),
                    written,
                })
            }
            Err(e) => {
                tracing::warn!(log = %path.display(), "cannot write the build log: {e}");
                None
            }
        }
    }

    fn line(&mut self, line: &str) {
        use std::io::Write;
        if self.written >= MAX_LOG_BYTES {
            return;
        }
        let text = if self.written + line.len() as u64 >= MAX_LOG_BYTES {
            format!(
                "[{}] (log truncated at {} MiB)\n",
                self.label,
                MAX_LOG_BYTES >> 20
            )
        } else {
            format!("[{}] {line}\n", self.label)
        };
        self.written += text.len() as u64;
        let _ = self.file.write_all(text.as_bytes());
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.file.flush();
    }
}

/// The descriptors bwrap is handed: its info pipe, the pipe it waits on
/// until the uid map is written, and the two seccomp programs.
struct SetupFds {
    info_r: OwnedFd,
    info_w: OwnedFd,
    block_r: OwnedFd,
    block_w: OwnedFd,
    deny: OwnedFd,
    clone3: OwnedFd,
}

impl SetupFds {
    fn new() -> std::io::Result<SetupFds> {
        let (info_r, info_w) = pipe()?;
        let (block_r, block_w) = pipe()?;
        let [deny, clone3] = seccomp::programs().map_err(std::io::Error::other)?;
        Ok(SetupFds {
            info_r,
            info_w,
            block_r,
            block_w,
            deny: program_fd(deny)?,
            clone3: program_fd(clone3)?,
        })
    }
}

/// Host paths bound onto their mount points in a private mount namespace
/// of the forked child (paths prepared before the fork: the child only
/// makes system calls).
struct Binds {
    pairs: Vec<(std::ffi::CString, std::ffi::CString)>,
}

impl Binds {
    fn new(binds: &[(PathBuf, PathBuf)]) -> std::io::Result<Binds> {
        use std::os::unix::ffi::OsStrExt;
        fs::create_dir_all(MOUNT_POINTS)?;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
        };
        let mut pairs = Vec::new();
        for (source, point) in binds {
            let dir = fs::metadata(source)?.is_dir();
            match fs::symlink_metadata(point) {
                Ok(m) if m.is_dir() == dir && !m.file_type().is_symlink() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} is not a plain {}",
                        point.display(),
                        if dir { "directory" } else { "file" }
                    )))
                }
                Err(_) if dir => fs::create_dir(point)?,
                Err(_) => drop(fs::File::create(point)?),
            }
            pairs.push((c(source)?, c(point)?));
        }
        Ok(Binds { pairs })
    }

    /// In the forked child: a private mount namespace with every source
    /// bound (`nodev`, `nosuid`) onto its mount point.
    fn enter(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: system calls on C strings that outlive the call.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, point) in &self.pairs {
                check(libc::mount(
                    source.as_ptr(),
                    point.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    none,
                    point.as_ptr(),
                    none,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV | libc::MS_NOSUID,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

/// A close-on-exec pipe (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe holding `program` to its end (the read end; a program is far
/// smaller than a pipe's buffer).
fn program_fd(program: &[u8]) -> std::io::Result<OwnedFd> {
    let (r, w) = pipe()?;
    fs::File::from(w).write_all(program)?;
    Ok(r)
}

/// In the forked child, before exec: join the build's control group, let
/// bwrap inherit its descriptors, become the unprivileged sandbox owner,
/// and die with the CLI.
fn child_setup(inherit: &[RawFd], cgroups: &[RawFd], parent: i32) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    cgroup::enter(cgroups)?;
    // SAFETY: plain system calls on descriptors and ids we own.
    unsafe {
        for &fd in inherit {
            check(libc::fcntl(fd, libc::F_SETFD, 0))?;
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(ID_OFFSET, ID_OFFSET, ID_OFFSET))?;
        check(libc::setresuid(ID_OFFSET, ID_OFFSET, ID_OFFSET))?;
        // After the id change, which clears it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        if libc::getppid() != parent {
            return Err(std::io::Error::other("the CLI is gone"));
        }
    }
    Ok(())
}

/// Reads bwrap's child pid from its info pipe, writes the user namespace's
/// id maps, and lets it go on.
fn map_user_namespace(info: OwnedFd, block: OwnedFd) -> Result<(), String> {
    let mut text = String::new();
    fs::File::from(info)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading bwrap's info: {e}"))?;
    let info: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("{BWRAP} exited before its namespaces were made"))?;
    let pid = info
        .get("child-pid")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("{BWRAP} reported no child pid: {text}"))?;
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{map}");
        fs::write(&path, idmap::map_line()).map_err(|e| format!("writing {path}: {e}"))?;
    }
    fs::File::from(block)
        .write_all(b"1")
        .map_err(|e| format!("releasing {BWRAP}: {e}"))
}

/// The host's `/etc/resolv.conf`, copied into the tree for one run and the
/// tree's own put back afterwards (unless the run changed it).
struct ResolvConf {
    /// The tree's `/etc` (a real directory).
    etc: PathBuf,
    /// What was copied in.
    installed: Vec<u8>,
    /// Whether the tree had its own, saved aside.
    saved: bool,
}

impl ResolvConf {
    /// The file name.
    const NAME: &'static str = "resolv.conf";
    /// Where the tree's own file waits during the run.
    const SAVED: &'static str = ".resolv.conf.bakehouse-saved";

    /// Saves the tree's file aside and copies the host's in.
    fn install(root: &Path) -> Result<ResolvConf, StepError> {
        let etc = ensure_real_dir(root, "etc", 0o755)?;
        let host = fs::read("/etc/resolv.conf").unwrap_or_default();
        let path = etc.join(Self::NAME);
        let aside = etc.join(Self::SAVED);
        let saved = if fs::symlink_metadata(&aside).is_ok() {
            // An interrupted run left the tree's own file aside (and the
            // host's in its place): keep the saved one.
            remove_path(&path).map_err(io_error(path.display()))?;
            true
        } else if fs::symlink_metadata(&path).is_ok() {
            // A rename never follows the link the tree may have there.
            fs::rename(&path, &aside).map_err(io_error(path.display()))?;
            true
        } else {
            false
        };
        fs::write(&path, &host).map_err(io_error(path.display()))?;
        give_to_sandbox(&path).map_err(io_error(path.display()))?;
        Ok(ResolvConf {
            etc,
            installed: host,
            saved,
        })
    }

    /// Puts the tree's file back (unless the run replaced it).
    fn restore(self) -> Result<(), StepError> {
        let path = self.etc.join(Self::NAME);
        let saved = self.etc.join(Self::SAVED);
        let unchanged = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
            && fs::read(&path).is_ok_and(|c| c == self.installed);
        if unchanged {
            fs::remove_file(&path).map_err(io_error(path.display()))?;
            if self.saved {
                fs::rename(&saved, &path).map_err(io_error(saved.display()))?;
            }
        } else if self.saved {
            // The run wrote its own resolv.conf: keep it.
            remove_path(&saved).map_err(io_error(saved.display()))?;
        }
        Ok(())
    }
}

/// A directory in the tree for files a run needs (scripts, uploads),
/// removed afterwards: `/run/bakehouse-<name>`, or `/.bakehouse-<name>`
/// when the tree's `/run` is not a real directory.
pub(crate) struct Stage {
    /// The directory on the host.
    host: PathBuf,
    /// The same directory inside the tree.
    image: String,
}

impl Stage {
    /// Creates (or re-creates) the stage directory, mode 0700.
    pub fn create(root: &Path, name: &str) -> Result<Stage, StepError> {
        use std::os::unix::fs::PermissionsExt;
        let run = root.join("run");
        if fs::symlink_metadata(&run).is_err() {
            ensure_real_dir(root, "run", 0o755)?;
        }
        let dir = format!("bakehouse-{name}");
        let (host, image) = if is_real_dir(&run) {
            (run.join(&dir), format!("/run/{dir}"))
        } else {
            (root.join(format!(".{dir}")), format!("/.{dir}"))
        };
        remove_path(&host).map_err(io_error(host.display()))?;
        fs::create_dir(&host).map_err(io_error(host.display()))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(0o700))
            .map_err(io_error(host.display()))?;
        give_to_sandbox(&host).map_err(io_error(host.display()))?;
        Ok(Stage { host, image })
    }

    /// A path in the stage, on the host.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.host.join(rel)
    }

    /// The stage directory as seen inside the tree.
    pub fn image_dir(&self) -> &str {
        &self.image
    }

    /// The same path as seen inside the tree.
    pub fn image_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.image)
    }

    /// Writes a file into the stage with `mode`; returns its path inside the tree.
    pub fn write(&self, rel: &str, content: &[u8], mode: u32) -> Result<String, StepError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.host_path(rel);
        fs::write(&path, content).map_err(io_error(path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error(path.display()))?;
        give_to_sandbox(&path).map_err(io_error(path.display()))?;
        Ok(self.image_path(rel))
    }

    /// Removes the stage directory.
    pub fn remove(self) -> Result<(), StepError> {
        remove_path(&self.host).map_err(io_error(self.host.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/resolv.conf"), content).unwrap();
        dir
    }

    fn host_resolv() -> Vec<u8> {
        fs::read("/etc/resolv.conf").unwrap_or_default()
    }

    #[test]
    fn resolv_conf_is_swapped_for_a_run_and_put_back() {
        let dir = tree("nameserver 192.0.2.1\n");
        let path = dir.path().join("etc/resolv.conf");
        let swap = ResolvConf::install(dir.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), host_resolv());
        swap.restore().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.1\n");
        assert!(!dir.path().join("etc").join(ResolvConf::SAVED).exists());
    }

    #[test]
    fn an_interrupted_run_does_not_lose_the_trees_resolv_conf() {
        let dir = tree("nameserver 192.0.2.1\n");
        let path = dir.path().join("etc/resolv.conf");
        let _lost = ResolvConf::install(dir.path()).unwrap(); // never restored
        let swap = ResolvConf::install(dir.path()).unwrap();
        swap.restore().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.1\n");
    }

    #[test]
    fn a_resolv_conf_written_by_the_run_is_kept() {
        let dir = tree("nameserver 192.0.2.1\n");
        let path = dir.path().join("etc/resolv.conf");
        let swap = ResolvConf::install(dir.path()).unwrap();
        fs::write(&path, "nameserver 198.51.100.7\n").unwrap();
        swap.restore().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "nameserver 198.51.100.7\n"
        );
        assert!(!dir.path().join("etc").join(ResolvConf::SAVED).exists());
    }

    #[test]
    fn a_linked_resolv_conf_is_moved_aside_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "untouched\n").unwrap();
        let path = dir.path().join("etc/resolv.conf");
        symlink(&outside, &path).unwrap();
        let swap = ResolvConf::install(dir.path()).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        swap.restore().unwrap();
        assert_eq!(fs::read_link(&path).unwrap(), outside);
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched\n");
    }

    #[test]
    fn stages_live_in_run_or_at_the_root_when_run_is_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::create(dir.path(), "p0").unwrap();
        assert_eq!(stage.image_path("x.sh"), "/run/bakehouse-p0/x.sh");
        assert_eq!(
            stage.write("x.sh", b"true\n", 0o700).unwrap(),
            "/run/bakehouse-p0/x.sh"
        );
        assert!(dir.path().join("run/bakehouse-p0/x.sh").is_file());
        stage.remove().unwrap();
        assert!(!dir.path().join("run/bakehouse-p0").exists());

        let other = tempfile::tempdir().unwrap();
        symlink("/var/run", other.path().join("run")).unwrap();
        let stage = Stage::create(other.path(), "clean").unwrap();
        assert_eq!(stage.image_path("c.sh"), "/.bakehouse-clean/c.sh");
        stage.remove().unwrap();
        assert_eq!(
            fs::read_link(other.path().join("run")).unwrap(),
            Path::new("/var/run")
        );
    }
}
