//! The clean policy, checked on what is captured: a recipe plants what
//! careless images carry (keys, credentials, histories of users whose
//! homes are outside `/home` or behind a link, logs under a linked
//! `/var/log`, leases, password hashes and their backups, config
//! management leftovers, installers), and the test opens both artifacts
//! itself (the qcow2 read with debugfs, the archive unpacked with tar) to
//! find none of it. (The archive checker failing on a leftover is a unit
//! test: `recipe::tests_clean`.)

mod local_support;

use std::fs;
use std::path::{Path, PathBuf};

use bakehouse::build::Step;

use local_support::{busybox_rootfs, dump, pack, qcow2_to_raw, untar, Harness};

/// Every planted path (inside the image) that must be gone.
const PLANTED: &[&str] = &[
    "/root/.ssh/id_rsa",
    "/root/.ssh/id_rsa.pub",
    "/root/.ssh/id_ed25519",
    "/root/.ssh/known_hosts",
    "/root/.ssh/authorized_keys",
    "/root/.aws/credentials",
    "/root/.config/gcloud/credentials.db",
    "/root/.azure/accessTokens.json",
    "/root/.docker/config.json",
    "/root/.kube/config",
    "/root/.netrc",
    "/root/.git-credentials",
    "/root/.pypirc",
    "/root/.npmrc",
    "/root/.bash_history",
    "/root/.python_history",
    "/root/.lesshst",
    "/root/.viminfo",
    "/root/.mysql_history",
    "/root/.psql_history",
    "/root/.sqlite_history",
    "/root/.node_repl_history",
    "/root/.rediscli_history",
    "/root/.local/share/fish/fish_history",
    "/root/.ansible/tmp/x",
    "/root/installer.run",
    "/root/jetpack-8.0.tar.gz",
    "/home/alice/.zsh_history",
    "/home/alice/.ssh/id_ed25519",
    "/srv/bob/.ssh/id_rsa",
    "/srv/bob/.bash_history",
    "/srv/carol/.ssh/id_rsa",
    "/srv/carol/.ash_history",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/passwd-",
    "/etc/sudoers.d/90-cloud-init-users",
    "/etc/salt/minion_id",
    "/etc/salt/pki/minion/minion.pem",
    "/var/cache/salt/minion/files/base/top.sls",
    "/var/lib/dhcp/dhclient.eth0.leases",
    "/var/lib/NetworkManager/internal-abc-eth0.lease",
    "/var/lib/systemd/random-seed",
    "/srv/log/journal/0123456789abcdef0123456789abcdef/system.journal",
    "/tmp/build.log",
    "/var/tmp/cache.bin",
];

/// The provisioner planting everything (busybox sh).
const PLANT: &str = r#"set -e
hash='$6$bakehous$Y0NABC1W5ab1HZbUuqIXC'
for p in /root/.ssh/id_rsa /root/.ssh/id_rsa.pub /root/.ssh/id_ed25519 /root/.ssh/known_hosts \
  /root/.ssh/authorized_keys /root/.aws/credentials /root/.config/gcloud/credentials.db \
  /root/.azure/accessTokens.json /root/.docker/config.json /root/.kube/config /root/.netrc \
  /root/.git-credentials /root/.pypirc /root/.npmrc /root/.bash_history /root/.python_history \
  /root/.lesshst /root/.viminfo /root/.mysql_history /root/.psql_history /root/.sqlite_history \
  /root/.node_repl_history /root/.rediscli_history /root/.local/share/fish/fish_history \
  /root/.ansible/tmp/x /root/installer.run /root/jetpack-8.0.tar.gz /home/alice/.zsh_history \
  /home/alice/.ssh/id_ed25519 /srv/bob/.ssh/id_rsa /srv/bob/.bash_history /srv/carol/.ssh/id_rsa \
  /srv/carol/.ash_history /etc/gshadow- /etc/passwd- /etc/sudoers.d/90-cloud-init-users \
  /etc/salt/minion_id /etc/salt/pki/minion/minion.pem /var/cache/salt/minion/files/base/top.sls \
  /var/lib/dhcp/dhclient.eth0.leases /var/lib/NetworkManager/internal-abc-eth0.lease \
  /var/lib/systemd/random-seed /tmp/build.log /var/tmp/cache.bin; do
  mkdir -p "$(dirname "$p")"
  echo "secret $p" > "$p"
done
# bob's home is outside /home; carol's /home entry is a link.
echo "bob:x:1001:1001::/srv/bob:/bin/sh" >> /etc/passwd
echo "carol:x:1002:1002::/home/carol:/bin/sh" >> /etc/passwd
ln -s /srv/carol /home/carol
echo "bob:$hash:19000:0:99999:7:::" >> /etc/shadow
echo "carol:!$hash:19000:0:99999:7:::" >> /etc/shadow
cp /etc/shadow /etc/shadow-
# /var/log is a link; a journal named after a machine id, a log with text.
mkdir -p /srv/log/journal/0123456789abcdef0123456789abcdef
echo j > /srv/log/journal/0123456789abcdef0123456789abcdef/system.journal
cp -a /var/log/. /srv/log/ 2>/dev/null || true
rm -rf /var/log && ln -s /srv/log /var/log
echo "sshd: accepted key" > /var/log/auth.log
echo 0123456789abcdef0123456789abcdef > /etc/machine-id
cat >> /etc/fstab <<'EOF'
/dev/vdb /mnt/data auto defaults,nofail 0 2
/dev/vdc /srv/cache auto defaults,x-systemd.requires=cloud-init.service 0 2
EOF
"#;

/// `path` inside `root` with links on the way followed inside `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    let mut at = root.to_path_buf();
    let mut parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        let next = at.join(&part);
        match fs::read_link(&next) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    at = root.to_path_buf();
                }
                parts.extend(
                    t.split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(String::from),
                );
            }
            _ => at = next,
        }
    }
    at
}

/// Asserts nothing planted is in the tree `root` (an artifact's content).
fn assert_nothing_left(root: &Path, what: &str) {
    let left: Vec<&str> = PLANTED
        .iter()
        .copied()
        .filter(|p| fs::symlink_metadata(inside(root, p)).is_ok())
        .collect();
    assert_eq!(left, Vec::<&str>::new(), "left in the {what}");
    let shadow = fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(!shadow.contains('$'), "hashes in the {what}: {shadow}");
    let log = fs::read_to_string(inside(root, "/var/log/auth.log")).unwrap();
    assert_eq!(log, "", "log text in the {what}");
    let journal = inside(root, "/var/log/journal");
    assert!(
        fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0) == 0,
        "journal directories in the {what}"
    );
    let fstab = fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
    assert!(
        !fstab.contains("nofail") && !fstab.contains("cloud-init"),
        "ephemeral fstab lines in the {what}: {fstab}"
    );
    assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
    // Kept: the homes themselves, the link and the passwd entries.
    assert!(inside(root, "/home/carol").is_dir(), "{what}");
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("carol:x:1002"));
}

fn seeded_recipe(h: &Harness, name: &str) -> PathBuf {
    busybox_rootfs(&h.path("base-root"));
    let base = h.path("recipe/base.tar.gz");
    fs::create_dir_all(base.parent().unwrap()).unwrap();
    pack(&h.path("base-root"), &base);
    h.write("recipe/plant.sh", PLANT);
    h.write(
        &format!("recipe/{name}.yaml"),
        &format!(
            "name: {name}\nbase: {{path: base.tar.gz}}\nprovisioners:\n  - type: shell\n    script: plant.sh\n"
        ),
    )
}

#[tokio::test]
async fn a_seeded_image_is_captured_with_nothing_left_in_either_artifact() {
    let h = Harness::new(None);
    let recipe = seeded_recipe(&h, "seeded");
    let out = h.build(&recipe, "seeded-1").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);

    let raw = qcow2_to_raw(&out.artifact(".qcow2"), h.dir.path());
    let from_qcow2 = h.path("qcow2-tree");
    dump(&raw, &from_qcow2);
    assert_nothing_left(&from_qcow2, "qcow2");
    let from_tar = h.path("tar-tree");
    untar(&out.artifact(".tar.zst"), &from_tar);
    assert_nothing_left(&from_tar, "tar.zst");

    // The record lists what was removed.
    let notes: String = out
        .record
        .steps
        .iter()
        .filter(|s| s.step == Step::Clean)
        .flat_map(|s| s.notes.clone())
        .collect();
    for path in [
        "/srv/carol/.ssh/id_rsa",
        "/root/.aws",
        "/etc/shadow-",
        "/srv/log/auth.log",
    ] {
        assert!(
            notes.contains(path),
            "{path} not in the clean note: {notes}"
        );
    }
}
