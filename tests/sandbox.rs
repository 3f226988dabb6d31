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

/// The uid and gid of `name` in the tree's `/etc/passwd`.
fn passwd_ids(tree: &std::path::Path, name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string(tree.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /etc/passwd:\n{passwd}"));
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[tokio::test]
async fn a_debian_package_with_a_system_user_installs_and_keeps_its_owners() {
    let h = Harness::new(None);
    let recipe = h.write(
        "recipe/debian.yaml",
        &format!(
            "name: debian\nos: linux\nbase:\n  path: {}\nbuilder:\n  network: true\nprovisioners:\n  - type: shell\n    inline:\n      - apt-get update -q\n      - DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends uuid-runtime\n      - id uuidd\n",
            debian_base().display()
        ),
    );
    let out = h.build(&recipe, "debian-1").await;
    assert!(
        out.error.is_none(),
        "{:?}\n{}",
        out.error,
        notes(&out.record)
    );
    let tree = h.path("captured");
    local_support::untar(&out.artifact(".tar.zst"), &tree);

    // The package's system user owns its files under its own uid.
    let (uid, gid) = passwd_ids(&tree, "uuidd");
    assert!((100..1000).contains(&uid), "uuidd has uid {uid}");
    let mut owned = Vec::new();
    let mut shifted = Vec::new();
    for entry in walkdir::WalkDir::new(&tree).follow_links(false) {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.uid() == uid && meta.gid() == gid {
            owned.push(entry.path().display().to_string());
        }
        if meta.uid() >= 65_536 || meta.gid() >= 65_536 {
            shifted.push(entry.path().display().to_string());
        }
    }
    assert!(!owned.is_empty(), "nothing is owned by uuidd ({uid}:{gid})");
    assert!(
        shifted.is_empty(),
        "host ids leaked into the image: {shifted:?}"
    );
    // Its systemd unit was enabled by its postinst.
    let wants = tree.join("etc/systemd/system/sockets.target.wants/uuidd.socket");
    assert!(
        wants.symlink_metadata().is_ok(),
        "uuidd.socket was not enabled"
    );
    // Debian's own ownership of the shadow file, in both artifacts.
    let group = std::fs::read_to_string(tree.join("etc/group")).unwrap();
    let shadow_gid: u32 = group
        .lines()
        .find(|l| l.starts_with("shadow:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let shadow = tree.join("etc/shadow").symlink_metadata().unwrap();
    assert_eq!(
        (shadow.uid(), shadow.gid(), shadow.mode() & 0o7777),
        (0, shadow_gid, 0o640)
    );
    std::fs::create_dir_all(h.path("scratch-raw")).unwrap();
    let raw = local_support::qcow2_to_raw(&out.artifact(".qcow2"), &h.path("scratch-raw"));
    let stat = local_support::debugfs(&raw, "stat /etc/shadow");
    assert!(
        stat.contains(&format!("User:     0   Group:    {shadow_gid}"))
            && stat.contains("Mode:  0640"),
        "{stat}"
    );
}
