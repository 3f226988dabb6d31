//! The process that owns a local build: recorded when the build starts so
//! that a build whose process is gone (killed, or its machine rebooted) can
//! be told from one still running, and cleaned up (`bakehouse builds gc`).
//! A pid alone is not enough: pids are reused and reset at boot, so the
//! owner is the pid with the boot id and the process's start time.

use std::fs;

use serde::{Deserialize, Serialize};

/// Who runs a build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// `/proc/sys/kernel/random/boot_id` when it started.
    pub boot_id: String,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat`
    /// field 22).
    pub start_ticks: u64,
}

impl Owner {
    /// The calling process, or `None` where `/proc` cannot tell.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            boot_id: boot_id()?,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether this process is still running (same boot, same pid, same
    /// start time).
    pub fn is_alive(&self) -> bool {
        boot_id().is_some_and(|b| b == self.boot_id)
            && start_ticks(self.pid).is_some_and(|t| t == self.start_ticks)
    }
}

/// This boot's id.
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Start time of `pid`, from `/proc/PID/stat` (the fields after the
/// command name, which may itself hold spaces and parentheses).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_one_is_not() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        let restarted = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!restarted.is_alive());
        let other_boot = Owner {
            boot_id: "0".into(),
            ..me.clone()
        };
        assert!(!other_boot.is_alive());
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(!gone.is_alive());
    }
}
