//! The seccomp filters of the sandbox, compiled with `seccompiler` (the
//! rust-vmm filter compiler) into the classic BPF programs bubblewrap loads
//! (`--add-seccomp-fd`). A deny list, as container runtimes use: builds
//! install packages and run arbitrary tools, so an allow list would break
//! them; what is denied are the calls a build never needs and that reach
//! the kernel or other processes:
//!
//! - kernel modules, kexec, reboot, swap, the kernel log, accounting,
//!   clocks, I/O ports, quotas;
//! - bpf, perf events, userfaultfd, keyrings;
//! - ptrace and cross-process memory access;
//! - new mounts and every part of the new mount API, `pivot_root`;
//! - namespaces: `setns`, `unshare`, and `clone` with `CLONE_NEWUSER` (a
//!   nested user namespace would hand root its capabilities back);
//!   `clone3` answers `ENOSYS` (its flags are out of a filter's reach), so
//!   the C library falls back to `clone`;
//! - file handles (`open_by_handle_at`, the classic container escape).
//!
//! Denied calls fail with `EPERM`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls denied whatever their arguments.
const DENIED: &[i64] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_quotactl,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_vhangup,
    libc::SYS_uselib,
];

/// Why the filters could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub(crate) struct SeccompError(String);

/// The two programs (deny with `EPERM`; `clone3` with `ENOSYS`), each as
/// the bytes of its `struct sock_filter` array; compiled once.
pub(crate) fn programs() -> Result<&'static [Vec<u8>; 2], SeccompError> {
    static PROGRAMS: OnceLock<Result<[Vec<u8>; 2], SeccompError>> = OnceLock::new();
    PROGRAMS.get_or_init(compile).as_ref().map_err(Clone::clone)
}

fn compile() -> Result<[Vec<u8>; 2], SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SeccompError(format!("{}: {e:?}", std::env::consts::ARCH)))?;
    let fail = |e: seccompiler::BackendError| SeccompError(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let new_user = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
        libc::CLONE_NEWUSER as u64,
    )
    .map_err(fail)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![new_user]).map_err(fail)?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(fail)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(fail)?;
    let bytes = |f: SeccompFilter| -> Result<Vec<u8>, SeccompError> {
        let program: BpfProgram = f.try_into().map_err(fail)?;
        Ok(program
            .iter()
            .flat_map(|i| {
                let mut b = Vec::with_capacity(8);
                b.extend(i.code.to_ne_bytes());
                b.push(i.jt);
                b.push(i.jf);
                b.extend(i.k.to_ne_bytes());
                b
            })
            .collect())
    };
    Ok([bytes(deny)?, bytes(clone3)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_compile_to_whole_instructions() {
        let [deny, clone3] = programs().unwrap();
        assert!(!deny.is_empty() && deny.len() % 8 == 0, "{}", deny.len());
        assert!(!clone3.is_empty() && clone3.len() % 8 == 0);
        assert!(deny.len() > clone3.len());
    }
}
