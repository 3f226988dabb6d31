//! Running commands inside the work tree: new mount, PID, UTS and IPC
//! namespaces (and a network namespace unless the recipe asks for network),
//! chrooted into the tree, with `/proc` and a minimal `/dev` mounted inside
//! the new mount namespace so they vanish with it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::pipeline::{BuildContext, StepError};

use super::fsutil::{ensure_real_dir, io_error, is_real_dir, remove_path, resolve_in_root};

/// Exit status the sandbox setup uses when it cannot prepare the chroot.
const SETUP_FAILED: i32 = 125;

/// Host name inside the sandbox.
pub const SANDBOX_HOSTNAME: &str = "bakehouse-build";

/// Lines of output kept for notes and error messages.
const TAIL_LINES: usize = 40;

/// The host side of the sandbox: runs as PID 1 of the new PID namespace,
/// mounts `/proc` and a minimal `/dev` under the tree (in the new mount
/// namespace), sets the host name and execs `chroot`.
const SETUP: &str = r#"exec 2>&1
root=$1
name=$2
shift 2
fail() { echo "bakehouse-sandbox: $*"; exit 125; }
mount -t proc -o nosuid,nodev,noexec proc "$root/proc" || fail "cannot mount /proc in the image"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=1024k bakehouse-dev "$root/dev" || fail "cannot mount /dev in the image"
for d in null zero full random urandom tty; do
  [ -e "/dev/$d" ] || continue
  : > "$root/dev/$d" && mount --bind "/dev/$d" "$root/dev/$d" || fail "cannot provide /dev/$d"
done
ln -s /proc/self/fd "$root/dev/fd" && ln -s fd/0 "$root/dev/stdin" && ln -s fd/1 "$root/dev/stdout" && ln -s fd/2 "$root/dev/stderr" || fail "cannot link /dev/fd"
echo "$name" > /proc/sys/kernel/hostname || fail "cannot set the host name"
if [ -n "${BAKEHOUSE_LOOPBACK:-}" ] && command -v ip >/dev/null 2>&1; then
  ip link set lo up 2>/dev/null || true
fi
unset BAKEHOUSE_LOOPBACK
exec chroot "$root" "$@"
"#;

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
    /// The tree (host path).
    pub root: PathBuf,
    /// The build, for logs.
    pub build_id: String,
    /// Share the host's network (and its `/etc/resolv.conf`).
    pub network: bool,
    /// Kill a command that runs longer.
    pub timeout: Option<Duration>,
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

    /// Whether an executable named `tool` is in the tree's standard `PATH`.
    pub fn has_tool(&self, tool: &str) -> bool {
        ENV[0].1.split(':').any(|dir| {
            resolve_in_root(&self.root, &Path::new(dir).join(tool), true)
                .is_ok_and(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
        })
    }

    /// Runs `argv` (resolved inside the tree) and streams its output to the
    /// log, line by line, under `label`. A non-zero status is returned, not
    /// an error; failing to set up the sandbox is.
    pub async fn run(&self, label: &str, argv: &[String]) -> Result<RunResult, StepError> {
        ensure_real_dir(&self.root, "proc", 0o555)?;
        ensure_real_dir(&self.root, "dev", 0o755)?;
        let resolv = if self.network {
            Some(ResolvConf::install(&self.root)?)
        } else {
            None
        };
        let result = self.spawn(label, argv).await;
        if let Some(resolv) = resolv {
            resolv.restore()?;
        }
        let result = result?;
        if result.status == SETUP_FAILED
            && result
                .tail
                .iter()
                .any(|l| l.starts_with("bakehouse-sandbox:") || l.starts_with("unshare:"))
        {
            return Err(StepError::NonRetryable(format!(
                "{label}: could not set up the sandbox: {}",
                result.short_tail(3)
            )));
        }
        Ok(result)
    }

    /// Starts the namespaced run and collects its output.
    async fn spawn(&self, label: &str, argv: &[String]) -> Result<RunResult, StepError> {
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--uts",
            "--ipc",
        ]);
        if !self.network {
            cmd.arg("--net");
        }
        cmd.arg("--")
            .arg("/bin/sh")
            .arg("-c")
            .arg(SETUP)
            .arg("bakehouse-sandbox")
            .arg(&self.root)
            .arg(SANDBOX_HOSTNAME)
            .args(argv)
            .env_clear()
            .envs(ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !self.network {
            cmd.env("BAKEHOUSE_LOOPBACK", "1");
        }
        let mut child = cmd.spawn().map_err(|e| {
            StepError::NonRetryable(format!("{label}: cannot start unshare (util-linux): {e}"))
        })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut tail: Vec<String> = Vec::new();
        let build = self.build_id.clone();
        let stream = async {
            let mut out = stdout.map(|s| BufReader::new(s).split(b'\n'));
            let mut err = stderr.map(|s| BufReader::new(s).split(b'\n'));
            loop {
                let line = tokio::select! {
                    line = next(&mut out), if out.is_some() => match line {
                        Some(l) => l,
                        None => { out = None; continue }
                    },
                    line = next(&mut err), if err.is_some() => match line {
                        Some(l) => l,
                        None => { err = None; continue }
                    },
                    else => break,
                };
                tracing::info!(build = %build, provisioner = %label, "{line}");
                if tail.len() == TAIL_LINES {
                    tail.remove(0);
                }
                tail.push(line);
            }
            child.wait().await
        };
        let status = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, stream).await {
                Ok(status) => status,
                Err(_) => {
                    return Err(StepError::BuildFailed(format!(
                        "{label}: still running after {} s (builder.time_limit_minutes); killed",
                        limit.as_secs()
                    )))
                }
            },
            None => stream.await,
        }
        .map_err(io_error(format!("{label}: waiting for the sandbox")))?;
        use std::os::unix::process::ExitStatusExt;
        let status = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(RunResult { status, tail })
    }
}

/// The next line of a stream as text (`None` at its end or on an error).
async fn next<R>(lines: &mut Option<tokio::io::Split<BufReader<R>>>) -> Option<String>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let lines = lines.as_mut()?;
    match lines.next_segment().await {
        Ok(Some(bytes)) => Some(
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\r')
                .to_string(),
        ),
        _ => None,
    }
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
        Ok(Stage { host, image })
    }

    /// A path in the stage, on the host.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.host.join(rel)
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
