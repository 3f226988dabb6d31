//! The control group of a local build: limits for memory, processes and
//! CPU, and a way to kill every process of the build at once, whatever
//! forked or daemonised inside the sandbox.
//!
//! On a pure cgroup v2 host the build's group is
//! `/sys/fs/cgroup/bakehouse/<home>-<build>` with `memory.max`, `pids.max` and
//! `cpu.max`, killed through `cgroup.kill`. On a hybrid host (cgroup v1
//! controllers, v2 mounted at `/sys/fs/cgroup/unified` without them) the
//! group exists in the v2 tree (for `cgroup.kill`) and in the v1 `memory`,
//! `pids` and `cpu` hierarchies (for the limits). A host with neither gives
//! no limits (a warning says so); the sandbox still dies with its parent.
//!
//! `<home>` is the first 12 hex digits of the SHA-256 of the absolute work
//! root: cgroups are one namespace for the whole host, and two homes (two
//! clones, two users) may both have a build called `nightly`. Without it,
//! one home's teardown or `builds gc` would kill the other's build.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The parent group of every build.
const PARENT: &str = "bakehouse";

/// Default memory limit in MiB.
pub const DEFAULT_MEMORY_MB: u32 = 4096;

/// Default limit on processes and threads.
pub const DEFAULT_PIDS_MAX: u32 = 4096;

/// Period of the CPU quota, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Limits of a build's sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Processes and threads.
    pub pids_max: u32,
    /// Whole cores of CPU time (`None`: no limit).
    pub cpus: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: DEFAULT_MEMORY_MB,
            pids_max: DEFAULT_PIDS_MAX,
            cpus: None,
        }
    }
}

/// The cgroup layout of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// Everything in one v2 hierarchy.
    Unified(PathBuf),
    /// v2 without controllers (for `cgroup.kill`) plus v1 controllers.
    Hybrid {
        /// The v2 mount.
        unified: PathBuf,
        /// The v1 `memory`, `pids` and `cpu` mounts that exist.
        controllers: Vec<(Controller, PathBuf)>,
    },
    /// No usable cgroups.
    None,
}

/// A v1 controller used for limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Layout {
    fn detect() -> Layout {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").is_file() {
            return Layout::Unified(root.to_path_buf());
        }
        let unified = root.join("unified");
        if !unified.join("cgroup.procs").is_file() {
            return Layout::None;
        }
        let controllers = [
            (Controller::Memory, "memory"),
            (Controller::Pids, "pids"),
            (Controller::Cpu, "cpu"),
        ]
        .into_iter()
        .map(|(c, name)| (c, root.join(name)))
        .filter(|(_, dir)| dir.join("cgroup.procs").is_file())
        .collect();
        Layout::Hybrid {
            unified,
            controllers,
        }
    }
}

/// The control group of one build (its directories; see the module
/// documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuildCgroup {
    /// The group in the v2 hierarchy (`cgroup.kill`), if any.
    unified: Option<PathBuf>,
    /// The groups in v1 hierarchies, with their controller.
    v1: Vec<(Controller, PathBuf)>,
    /// Whether the v2 group carries the limits itself.
    v2_limits: bool,
}

impl BuildCgroup {
    /// The group of build `build_id` (an id already checked against the
    /// build id grammar) of the builds under `work_root`, on this host's
    /// layout.
    pub fn of_build(work_root: &Path, build_id: &str) -> BuildCgroup {
        let build_id = &group_name(work_root, build_id);
        match Layout::detect() {
            Layout::Unified(root) => BuildCgroup {
                unified: Some(root.join(PARENT).join(build_id)),
                v1: Vec::new(),
                v2_limits: true,
            },
            Layout::Hybrid {
                unified,
                controllers,
            } => BuildCgroup {
                unified: Some(unified.join(PARENT).join(build_id)),
                v1: controllers
                    .into_iter()
                    .map(|(c, root)| (c, root.join(PARENT).join(build_id)))
                    .collect(),
                v2_limits: false,
            },
            Layout::None => BuildCgroup {
                unified: None,
                v1: Vec::new(),
                v2_limits: false,
            },
        }
    }

    /// A name for the ledger: the v2 group's path (or `none`).
    pub fn name(&self) -> String {
        self.unified
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    }

    /// Creates the groups (again, if a step is retried) and sets `limits`.
    pub fn create(&self, limits: &Limits) -> io::Result<()> {
        let Some(unified) = &self.unified else {
            tracing::warn!("no usable cgroups on this host: the sandbox runs without memory, process and CPU limits");
            return Ok(());
        };
        let memory = (u64::from(limits.memory_mb) << 20).to_string();
        let pids = limits.pids_max.to_string();
        if self.v2_limits {
            let parent = unified.parent().unwrap_or(unified);
            fs::create_dir_all(parent)?;
            for dir in [Path::new(CGROUP_ROOT), parent] {
                // Controllers must be enabled from the top down.
                let _ = write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu");
            }
            create_dir(unified)?;
            write(&unified.join("memory.max"), &memory)?;
            write(&unified.join("memory.swap.max"), "0").ok();
            write(&unified.join("pids.max"), &pids)?;
            let cpu = match limits.cpus {
                Some(n) => format!("{} {CPU_PERIOD_US}", u64::from(n) * CPU_PERIOD_US),
                None => format!("max {CPU_PERIOD_US}"),
            };
            write(&unified.join("cpu.max"), &cpu)?;
        } else {
            create_dir(unified)?;
        }
        for (controller, dir) in &self.v1 {
            create_dir(dir)?;
            match controller {
                Controller::Memory => {
                    write(&dir.join("memory.limit_in_bytes"), &memory)?;
                }
                Controller::Pids => write(&dir.join("pids.max"), &pids)?,
                Controller::Cpu => {
                    let quota = match limits.cpus {
                        Some(n) => (u64::from(n) * CPU_PERIOD_US).to_string(),
                        None => "-1".into(),
                    };
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota)?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files of every group, opened for writing: a child
    /// writes `0` to each before it runs anything (see [`enter`]).
    pub fn procs_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs()
            .map(|d| {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))?;
                Ok(OwnedFd::from(file))
            })
            .collect()
    }

    /// Every group directory.
    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.unified.iter().chain(self.v1.iter().map(|(_, d)| d))
    }

    /// The processes in the build's group.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs().find(|d| d.is_dir()) else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process of the group and waits (up to 5 s) until none
    /// is left; whether the group is empty.
    pub fn kill(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            let killed_at_once = self
                .unified
                .as_ref()
                .is_some_and(|d| write(&d.join("cgroup.kill"), "1").is_ok());
            if !killed_at_once {
                for pid in pids {
                    // SAFETY: kill(2) with a pid read from the group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills what is left and removes the groups; a group that is already
    /// gone is fine.
    pub fn remove(&self) -> io::Result<()> {
        self.kill();
        for dir in self.dirs() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::other(format!("{}: {e}", dir.display()))),
            }
        }
        Ok(())
    }
}

/// Moves the calling process into the groups whose `cgroup.procs` files
/// are `files`. Called in a forked child before `exec`: only `write(2)`.
pub(crate) fn enter(files: &[i32]) -> io::Result<()> {
    for &fd in files {
        // SAFETY: writing two bytes from a static buffer to an open fd.
        if unsafe { libc::write(fd, b"0\n".as_ptr().cast(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw fds of `files`, for [`enter`].
pub(crate) fn raw(files: &[OwnedFd]) -> Vec<i32> {
    files.iter().map(AsRawFd::as_raw_fd).collect()
}

/// The group's directory name: `<home>-<build id>` (see the module
/// documentation).
fn group_name(work_root: &Path, build_id: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let home = hex::encode(Sha256::digest(work_root.as_os_str().as_bytes()));
    format!("{}-{build_id}", &home[..12])
}

fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::other(format!("{}: {e}", dir.display()))),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_name_tells_homes_apart_and_keeps_the_build_id() {
        let a = group_name(Path::new("/srv/a/.bakehouse/work"), "nightly");
        let b = group_name(Path::new("/srv/b/.bakehouse/work"), "nightly");
        assert_ne!(a, b);
        assert!(a.ends_with("-nightly") && a.len() == 12 + 1 + 7, "{a}");
        assert_eq!(
            a,
            group_name(Path::new("/srv/a/.bakehouse/work"), "nightly")
        );
    }
}
