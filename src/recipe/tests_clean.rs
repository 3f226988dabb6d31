//! The clean script, run against a dirty tree, and `verify_tree`.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::clean::{is_ephemeral_fstab_line, sh_glob_quote};
use super::test_support::Tree;
use super::*;

const SHADOW: &str = "root:$6$abc$def:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
nobody:!:19000::::::\n\
alice:$y$j9T$hash:19000:0:99999:7:::\n\
empty::19000:0:99999:7:::\n";

const FSTAB: &str = "UUID=abc / ext4 defaults 0 1\n\
/dev/xvdb /mnt auto defaults,nofail,comment=cloudconfig 0 2\n\
# /dev/sdb /mnt/resource ext4 defaults 0 0\n\
/dev/sdc /data ext4 defaults,x-systemd.makefs 0 2\n\
LABEL=ephemeral0 /media/eph auto defaults 0 0\n\
/dev/sdd /mnt/resource ext4 defaults 0 0\n";

fn policy() -> CleanPolicy {
    CleanPolicy {
        skip: vec![],
        extra_paths: vec!["/opt/installer".into(), "/opt/jet pack*".into()],
        ..Default::default()
    }
}

/// A root tree with one leftover of every kind, plus files that must stay.
fn dirty_tree() -> Tree {
    let t = Tree::new();
    t.write("etc/shadow", SHADOW);
    t.write("root/.bash_history", "ls\n");
    t.write("home/alice/.zsh_history", "ls\n");
    t.write("home/alice/.history", "ls\n");
    t.write("home/bob/.ash_history", "ls\n");
    t.write("etc/ssh/ssh_host_rsa_key", "k");
    t.write("etc/ssh/ssh_host_rsa_key.pub", "k");
    t.write("etc/ssh/ssh_host_ed25519_key", "k");
    t.write("etc/ssh/sshd_config", "PermitRootLogin no\n");
    t.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    t.write(
        "var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    t.write("var/log/syslog", "boot\n");
    t.write("var/log/apt/history.log", "install\n");
    t.write("var/log/dmesg.1", "old\n");
    t.write("var/log/journal/abc/system.journal", "j");
    t.write("var/log/empty.log", "");
    t.write("var/log/cloud-init.log", "ci\n");
    t.write("var/lib/cloud/instances/i-123/obj.pkl", "p");
    std::os::unix::fs::symlink(
        "/var/lib/cloud/instances/i-123",
        t.path("var/lib/cloud/instance"),
    )
    .expect("symlink");
    t.write("tmp/build.log", "x");
    t.write("tmp/.hidden", "x");
    t.write("tmp/..dotdot", "x");
    t.write("var/tmp/cache/x", "x");
    t.write("opt/installer/setup.bin", "x");
    t.write("opt/jet pack-1.0/run", "x");
    t.write("var/cache/apt/archives/curl.deb", "x");
    t.write("var/cache/apt/archives/lock", "");
    t.write("etc/fstab", FSTAB);
    t.write("root/.ssh/authorized_keys", "ssh-ed25519 AAA root\n");
    t.write("home/alice/.ssh/authorized_keys", "ssh-ed25519 AAA alice\n");
    t.write("home/alice/.ssh/known_hosts", "host\n");
    t.write("home/alice/.ssh/id_ed25519", "PRIVATE\n");
    t.write("home/alice/.ssh/config", "Host *\n");
    t.write(
        "root/.aws/credentials",
        "[default]\naws_secret_access_key = x\n",
    );
    t.write("root/.python_history", "import os\n");
    t.write("root/installer.run", "#!/bin/sh\n");
    t.write(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/srv/bob:/bin/sh\n",
    );
    t.write("srv/bob/.lesshst", "x\n");
    t.write("srv/bob/notes.txt", "kept\n");
    t.write("etc/shadow-", SHADOW);
    t.write(
        "etc/sudoers.d/90-cloud-init-users",
        "alice ALL=(ALL) NOPASSWD:ALL\n",
    );
    t.write("var/lib/dhcp/dhclient.eth0.leases", "lease {}\n");
    t.write("var/lib/systemd/random-seed", "seed");
    t.write("etc/salt/minion_id", "bakehouse-build\n");
    t
}

fn leftovers(root: &Path, policy: &CleanPolicy) -> Vec<String> {
    verify_tree(root, policy)
        .iter()
        .map(|l| format!("{} {}", l.path.display(), l.item))
        .collect()
}

#[test]
fn verify_tree_finds_every_kind_of_leftover() {
    let t = dirty_tree();
    assert_eq!(
        leftovers(t.dir.path(), &policy()),
        vec![
            "/etc/shadow passwords",
            "/etc/shadow passwords",
            "/etc/shadow passwords",
            "/etc/shadow- passwords",
            "/root/.bash_history shell_history",
            "/root/.python_history shell_history",
            "/home/alice/.zsh_history shell_history",
            "/home/alice/.history shell_history",
            "/home/bob/.ash_history shell_history",
            "/srv/bob/.lesshst shell_history",
            "/home/alice/.ssh/id_ed25519 user_ssh_keys",
            "/home/alice/.ssh/known_hosts user_ssh_keys",
            "/root/.aws credentials",
            "/etc/ssh/ssh_host_ed25519_key ssh_host_keys",
            "/etc/ssh/ssh_host_rsa_key ssh_host_keys",
            "/etc/ssh/ssh_host_rsa_key.pub ssh_host_keys",
            "/etc/machine-id machine_id",
            "/var/lib/dbus/machine-id machine_id",
            "/var/lib/systemd/random-seed random_seed",
            "/var/log/apt/history.log logs",
            "/var/log/cloud-init.log logs",
            "/var/log/dmesg.1 logs",
            "/var/log/journal/abc/system.journal logs",
            "/var/log/syslog logs",
            "/var/log/journal/abc logs",
            "/var/lib/cloud/instances cloud_init",
            "/var/lib/cloud/instance cloud_init",
            "/var/log/cloud-init.log cloud_init",
            "/etc/sudoers.d/90-cloud-init-users cloud_init",
            "/var/lib/dhcp/dhclient.eth0.leases dhcp_leases",
            "/etc/salt/minion_id config_management",
            "/tmp/..dotdot temp_files",
            "/tmp/.hidden temp_files",
            "/tmp/build.log temp_files",
            "/var/tmp/cache temp_files",
            "/var/cache/apt/archives/curl.deb installers",
            "/root/installer.run installers",
            "/opt/installer installers",
            "/opt/jet pack-1.0 installers",
            "/etc/fstab ephemeral_fstab",
            "/etc/fstab ephemeral_fstab",
            "/etc/fstab ephemeral_fstab",
            "/etc/fstab ephemeral_fstab",
            "/root/.ssh/authorized_keys authorized_keys",
            "/home/alice/.ssh/authorized_keys authorized_keys",
        ]
    );
    let all = verify_tree(t.dir.path(), &policy());
    let reasons: Vec<String> = all.iter().take(3).map(|l| l.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            "account `root` has an unlocked password",
            "account `alice` has an unlocked password",
            "account `empty` has an empty password",
        ]
    );
    let fstab: Vec<String> = all
        .iter()
        .filter(|l| l.item == CleanItem::EphemeralFstab)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        fstab[0],
        "/etc/fstab (ephemeral_fstab): line 2: ephemeral mount `/dev/xvdb /mnt auto defaults,nofail,comment=cloudconfig 0 2`"
    );
}

#[test]
fn verify_tree_respects_skip() {
    let t = dirty_tree();
    let mut p = policy();
    p.skip = CleanItem::ALL
        .iter()
        .copied()
        .filter(|i| *i != CleanItem::SshHostKeys)
        .collect();
    assert_eq!(
        leftovers(t.dir.path(), &p),
        vec![
            "/etc/ssh/ssh_host_ed25519_key ssh_host_keys",
            "/etc/ssh/ssh_host_rsa_key ssh_host_keys",
            "/etc/ssh/ssh_host_rsa_key.pub ssh_host_keys",
        ]
    );
}

/// Runs the script on `root` with `shell`; returns (success, stderr).
fn run(shell: &[&str], script: &str, root: &Path) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clean.sh");
    fs::write(&path, script).expect("write script");
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .arg(&path)
        .env("ROOT", root)
        .output()
        .expect("run shell");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn available(shell: &[&str]) -> bool {
    Command::new(shell[0])
        .args(&shell[1..])
        .args(["-c", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn script_cleans_a_tree_until_verify_finds_nothing() {
    let script = clean_script(&policy(), OsKind::Linux);
    let shells: Vec<&[&str]> = vec![&["sh"], &["dash"], &["bash", "--posix"], &["busybox", "sh"]];
    let mut ran = 0;
    for shell in shells.into_iter().filter(|s| available(s)) {
        ran += 1;
        let t = dirty_tree();
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join(".bash_history"), "secret\n").expect("write");
        std::os::unix::fs::symlink(outside.path(), t.path("home/evil")).expect("symlink");

        let (ok, stderr) = run(shell, &script, t.dir.path());
        assert!(ok, "{shell:?}: {stderr}");
        assert_eq!(
            leftovers(t.dir.path(), &policy()),
            Vec::<String>::new(),
            "{shell:?}"
        );
        // Each removal is said too (the EC2 record keeps the clean
        // script's output): the items are the lines that are not removals.
        assert!(
            stderr.contains("bakehouse-clean: removed /root/.aws\n"),
            "{stderr}"
        );
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("bakehouse-clean: removed "))
            .collect();
        assert_eq!(
            said.first(),
            Some(&"bakehouse-clean: passwords"),
            "{shell:?}"
        );
        assert_eq!(
            &said[said.len() - 2..],
            ["bakehouse-clean: authorized_keys", "bakehouse-clean: done"]
        );

        let read = |rel: &str| fs::read_to_string(t.path(rel)).expect(rel);
        assert_eq!(
            read("etc/shadow"),
            "root:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:!:19000::::::\nalice:!:19000:0:99999:7:::\nempty:!:19000:0:99999:7:::\n"
        );
        assert_eq!(
            read("etc/fstab"),
            "UUID=abc / ext4 defaults 0 1\n# /dev/sdb /mnt/resource ext4 defaults 0 0\n"
        );
        assert_eq!(read("etc/machine-id"), "");
        assert_eq!(read("var/log/syslog"), "");
        assert_eq!(read("etc/ssh/sshd_config"), "PermitRootLogin no\n");
        assert!(!t.path("home/alice/.ssh/known_hosts").exists());
        assert_eq!(read("home/alice/.ssh/config"), "Host *\n");
        assert_eq!(read("srv/bob/notes.txt"), "kept\n");
        assert!(t.path("var/cache/apt/archives/lock").exists());
        assert!(
            t.path("var/log/apt").is_dir() && t.path("tmp").is_dir() && t.path("var/tmp").is_dir()
        );
        assert!(!t.path("var/log/dmesg.1").exists());
        assert!(
            outside.path().join(".bash_history").exists(),
            "followed a symlinked home"
        );

        // Running it again on the clean tree changes nothing and succeeds.
        let (ok, stderr) = run(shell, &script, t.dir.path());
        assert!(ok, "second run {shell:?}: {stderr}");
        assert_eq!(read("etc/shadow").matches(":!").count(), 4);
    }
    assert!(ran >= 1, "no POSIX shell found");
}

#[test]
fn script_refuses_a_missing_root() {
    let script = clean_script(&CleanPolicy::default(), OsKind::Linux);
    let (ok, stderr) = run(&["sh"], &script, Path::new("/nonexistent/bakehouse-root"));
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "bakehouse-clean: ROOT=/nonexistent/bakehouse-root is not a directory"
    );
}

#[test]
fn script_shape_order_and_skips() {
    let script = clean_script(&policy(), OsKind::Linux);
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script.contains("\nset -eu\nROOT=${ROOT:-}\n"));
    let positions: Vec<usize> = CleanItem::ALL
        .iter()
        .map(|i| {
            script
                .find(&format!("\nsay {}\n", i.name()))
                .expect("item present")
        })
        .collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted, "items out of order");
    assert!(script.contains("remove \"$ROOT\"'/opt/jet pack'*\n"));
    assert!(script.contains("filter_file \"$ROOT/etc/shadow\" sed"));

    let skipped = clean_script(
        &CleanPolicy {
            skip: vec![CleanItem::SshHostKeys, CleanItem::Passwords],
            ..Default::default()
        },
        OsKind::Linux,
    );
    assert!(!skipped.contains("say ssh_host_keys"));
    assert!(!skipped.contains("etc/shadow"));
    assert!(skipped.contains("# Items: shell_history, user_ssh_keys, credentials, machine_id, random_seed, logs, cloud_init, dhcp_leases, config_management, temp_files, installers, ephemeral_fstab, authorized_keys\n"));
}

#[test]
fn glob_quoting() {
    assert_eq!(sh_glob_quote("/opt/installer"), "'/opt/installer'");
    assert_eq!(
        sh_glob_quote("/opt/it's here/*.run"),
        "'/opt/it'\\''s here/'*'.run'"
    );
    assert_eq!(sh_glob_quote("/tmp/a[0-9]?"), "'/tmp/a'['0-9']?");
}

#[test]
fn windows_script_is_powershell_with_authorized_keys_last() {
    let p = CleanPolicy {
        extra_paths: vec![r"C:\installer's".into()],
        ..Default::default()
    };
    let script = clean_script(&p, OsKind::Windows);
    assert!(script.starts_with("# bakehouse clean script for Windows"));
    assert!(script.contains("$ErrorActionPreference = 'Stop'"));
    assert!(script.contains(
        r"Remove-BakehousePath @('C:\Windows\SoftwareDistribution\Download\*', 'C:\installer''s')"
    ));
    assert!(script.contains("wevtutil el"));
    let keys = script.find("administrators_authorized_keys").expect("keys");
    let temp = script.find(r"C:\Windows\Temp\*").expect("temp");
    assert!(keys > temp);
    assert!(script.contains("# passwords\n# Not applicable on Windows"));
}

#[test]
fn ephemeral_fstab_rule() {
    assert!(is_ephemeral_fstab_line("/dev/xvdb /mnt auto defaults 0 2"));
    assert!(is_ephemeral_fstab_line(
        "/dev/sdb1\t/mnt/resource/ ext4 defaults 0 0"
    ));
    assert!(is_ephemeral_fstab_line(
        "/dev/sdc /data ext4 x-systemd.makefs 0 0"
    ));
    assert!(is_ephemeral_fstab_line(
        "LABEL=ephemeral0 /media auto defaults 0 0"
    ));
    assert!(!is_ephemeral_fstab_line(
        "# /dev/xvdb /mnt auto defaults 0 2"
    ));
    assert!(!is_ephemeral_fstab_line(
        "UUID=x /mnt/data ext4 defaults 0 0"
    ));
    assert!(!is_ephemeral_fstab_line(""));
}

#[test]
fn the_archive_checker_names_each_leftover_of_a_captured_image() {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in [
        (
            "./etc/shadow",
            "root:!:19000:0:99999:7:::\nbob:!$6$x$y:19000::::::\n",
        ),
        (
            "./etc/passwd",
            "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/srv/bob:/bin/sh\n",
        ),
        ("./srv/bob/.ssh/id_rsa", "PRIVATE"),
        ("./root/.profile", "kept"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, path, content.as_bytes())
            .expect("append");
    }
    let bytes = b.into_inner().expect("tar");
    let view = super::image_view::TarView::from_reader(&bytes[..]).expect("index");
    let found: Vec<String> = super::verify(&view, &CleanPolicy::default())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "/etc/shadow (passwords): account `bob` still has a password hash (locked)",
            "/srv/bob/.ssh/id_rsa (user_ssh_keys): still present in the home /srv/bob",
        ]
    );
    let lock = CleanPolicy {
        passwords: PasswordMode::Lock,
        ..Default::default()
    };
    assert_eq!(
        super::verify(&view, &lock).len(),
        1,
        "a locked hash is enough with passwords: lock"
    );
}

#[test]
fn the_check_script_finds_boot_stable_leftovers_until_clean_ran() {
    let check = super::clean::check_script(&policy());
    let t = dirty_tree();
    let run_check = |root: &Path| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("check.sh");
        fs::write(&path, &check).expect("write");
        let out = Command::new("sh")
            .arg(&path)
            .env("ROOT", root)
            .output()
            .expect("sh");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run_check(t.dir.path());
    assert_eq!(code, Some(1), "{out}");
    for line in [
        "leftover: /etc/shadow (passwords): account root has a password hash",
        "leftover: /etc/shadow- (passwords)",
        "leftover: /srv/bob/.lesshst (shell_history)",
        "leftover: /home/alice/.ssh/id_ed25519 (user_ssh_keys)",
        "leftover: /root/.aws (credentials)",
        "leftover: /etc/salt/minion_id (config_management)",
        "leftover: /root/installer.run (installers)",
        "leftover: /home/alice/.ssh/authorized_keys (authorized_keys)",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} not in:\n{out}");
    }
    // Boot-time state (logs, machine id) is not the check's business.
    assert!(
        !out.contains("/var/log") && !out.contains("machine-id"),
        "{out}"
    );
    let (ok, stderr) = run(
        &["sh"],
        &clean_script(&policy(), OsKind::Linux),
        t.dir.path(),
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        run_check(t.dir.path()),
        (Some(0), "bakehouse-clean-check: nothing left\n".into())
    );
}
