//! The local sandbox against a hostile recipe: real builds on a Debian base
//! whose provisioners try each known way out of a chroot-style sandbox.
//! Every test checks the host afterwards (a marker path, a process, a
//! listener, a kernel setting), whatever the build's outcome, and that
//! each attempt really ran and was refused.

mod local_support;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command};

use local_support::{debian_base, notes, Harness};

/// The attempts, in perl (perl-base is in every Debian image). Each prints
/// `ESCAPE <what>: refused (<errno text>)` or `ESCAPE <what>: SUCCEEDED`.
const ATTEMPTS: &str = r#"
use strict; use warnings; use Socket;
my ($ns, $own, $cp, $d, $buf);
my ($marker, $hostpid, $port, $major, $minor) = @ARGV;
$| = 1;
sub report { my ($what, $ok) = @_; print "ESCAPE $what: ", ($ok ? "SUCCEEDED" : "refused ($!)"), "\n"; }
sub in_child { my ($code) = @_; my $pid = fork(); if ($pid == 0) { $code->(); exit 0 } waitpid($pid, 0); }
# the classic double chroot, then a write to a host path
in_child(sub {
    mkdir "/.esc";
    chroot "/.esc" or return report("double-chroot", 0);
    chdir ".." for 1 .. 64;
    chroot "." or return report("double-chroot", 0);
    report("double-chroot", open(my $f, ">", $marker));
});
# the host's network namespace through /proc
report("open-host-netns", open($ns, "<", "/proc/$hostpid/ns/net"));
report("setns-pid1-netns", open($own, "<", "/proc/1/ns/net") && syscall(308, fileno($own), 0x40000000) == 0);
# kernel settings that are not namespaced
report("write-core-pattern", open($cp, ">", "/proc/sys/kernel/core_pattern") && print($cp "|/bin/false\n") && close($cp));
# kernel modules
my $junk = "\0" x 64;
my $params = "";
report("init-module", syscall(175, $junk, 64, $params) == 0);
# mounts
mkdir "/mnt/p"; mkdir "/mnt/s";
my ($proc, $sys, $p, $s) = ("proc", "sysfs", "/mnt/p", "/mnt/s");
report("mount-proc", syscall(165, $proc, $p, $proc, 0, 0) == 0);
report("mount-sysfs", syscall(165, $sys, $s, $sys, 0, 0) == 0);
# the host's disk as a device node
my $dev = (($major & 0xfff) << 8) | ($minor & 0xff) | (($minor & ~0xff) << 12);
my $node = "/hostdisk";
report("mknod-host-disk", syscall(133, $node, 0060600, $dev) == 0);
report("read-host-disk", open($d, "<", "/hostdisk") && sysread($d, $buf, 512));
# other processes
report("kill-host-process", kill(9, $hostpid));
report("ptrace-host-process", syscall(101, 16, $hostpid, 0, 0) == 0);
# a nested user namespace (would give root its capabilities back)
report("unshare-user", syscall(272, 0x10000000) == 0);
# the host's loopback with the network off
socket(my $s, PF_INET, SOCK_STREAM, 0);
report("connect-host-loopback", connect($s, sockaddr_in($port, inet_aton("127.0.0.1"))));
print "ATTEMPTS DONE\n";
"#;

/// The attempts' names, in order.
const NAMES: [&str; 14] = [
    "double-chroot",
    "open-host-netns",
    "setns-pid1-netns",
    "write-core-pattern",
    "init-module",
    "mount-proc",
    "mount-sysfs",
    "mknod-host-disk",
    "read-host-disk",
    "kill-host-process",
    "ptrace-host-process",
    "unshare-user",
    "connect-host-loopback",
    "double-chroot",
];

/// A host process the recipe tries to kill and trace; killed on drop.
struct Victim(Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_hostile_provisioner_cannot_reach_the_host() {
    let h = Harness::new(None);
    let base = debian_base();
    let marker = h.path("escaped-marker");
    let mut victim = Victim(Command::new("sleep").arg("600").spawn().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let root_dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (libc_major(root_dev), libc_minor(root_dev));
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    h.write("recipe/attempts.pl", ATTEMPTS);
    let recipe = h.write(
        "recipe/hostile.yaml",
        &format!(
            "name: hostile\nos: linux\nbase:\n  path: {}\nprovisioners:\n  - type: file\n    source: attempts.pl\n    destination: /root/attempts.pl\n  - type: shell\n    inline:\n      - perl /root/attempts.pl {} {} {port} {major} {minor}\n",
            base.display(),
            marker.display(),
            victim.0.id(),
        ),
    );
    let outcome = h.build(&recipe, "hostile-1").await;

    // The host, whatever the build's outcome.
    assert!(
        !marker.exists(),
        "the double chroot wrote {}",
        marker.display()
    );
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "the host process was killed"
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener was reached: {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    // Each attempt ran and was refused.
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let text = notes(&outcome.record);
    assert!(text.contains("ATTEMPTS DONE"), "{text}");
    for name in NAMES {
        assert!(
            text.contains(&format!("ESCAPE {name}: refused")),
            "{name} was not refused:\n{text}"
        );
    }
    assert!(!text.contains("SUCCEEDED"), "{text}");
    victim.0.kill().unwrap();
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}
