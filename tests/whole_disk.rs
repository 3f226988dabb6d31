//! Whole-disk bases (MBR and GPT, raw and qcow2): the root and `/boot`
//! found from the partition table and the image's fstab, provisioned in
//! place, and written back as a whole disk with the base's partition table,
//! UUIDs, labels, filesystem features and boot code. Bad layouts fail at
//! launch naming the base and what is wrong, and leave nothing behind.

mod local_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use local_support::disks::{self, Fs, BOOT_MARK, MIB};
use local_support::{busybox_rootfs, qcow2_to_raw, run, Harness};

const ROOT_UUID: &str = "0a1b2c3d-1111-4222-8333-444455556666";
const BOOT_UUID: &str = "0a1b2c3d-7777-4888-9999-aaaabbbbcccc";

/// A busybox root and a separate `/boot`, with an fstab naming them as
/// `fstab_root` and `LABEL=BOOT`.
fn trees(h: &Harness, fstab_root: &str, separate_boot: bool) -> (PathBuf, PathBuf) {
    let root = h.path("tree/root");
    let boot = h.path("tree/boot");
    busybox_rootfs(&root);
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::create_dir_all(&boot).unwrap();
    let kernel_dir = if separate_boot {
        boot.clone()
    } else {
        root.join("boot")
    };
    fs::write(kernel_dir.join("vmlinuz-test"), b"not a kernel\n").unwrap();
    let mut fstab = format!("# test disk\n{fstab_root} / ext4 errors=remount-ro 0 1\n");
    if separate_boot {
        fstab.push_str("LABEL=BOOT /boot ext4 defaults 0 2\n");
    }
    fstab.push_str("tmpfs /tmp tmpfs defaults 0 0\n");
    fs::write(root.join("etc/fstab"), fstab).unwrap();
    (root, boot)
}

fn recipe(h: &Harness, base: &str) -> PathBuf {
    h.write(
        "recipe/disk.yaml",
        &format!(
            "name: disk\nbase: {{path: {base}}}\nprovisioners:\n  - type: shell\n    inline:\n      - echo provisioned > /etc/provisioned\n      - echo new kernel > /boot/vmlinuz-new\n      - rm /boot/vmlinuz-test\n"
        ),
    )
}

/// The output disk as raw, in the harness.
fn output_raw(h: &Harness, out: &local_support::Outcome) -> PathBuf {
    let qcow2 = out.artifact(".qcow2");
    let info = run(Command::new("qemu-img").arg("info").arg(&qcow2));
    assert!(info.contains("file format: qcow2"), "{info}");
    run(Command::new("qemu-img").args(["check", "-q"]).arg(&qcow2));
    let scratch = h.path("check");
    fs::create_dir_all(&scratch).unwrap();
    qcow2_to_raw(&qcow2, &scratch)
}

fn bytes_at(raw: &Path, at: u64, len: usize) -> Vec<u8> {
    let all = fs::read(raw).unwrap();
    all[at as usize..at as usize + len].to_vec()
}

/// Builds the recipe on `base` and compares the output with `base_raw`.
async fn build_and_compare(h: &Harness, base: &Path, base_raw: &Path, offsets: &[u64], gpt: bool) {
    let name = base.file_name().unwrap().to_string_lossy().into_owned();
    let recipe = recipe(h, &format!("../{name}"));
    let id = format!("disk-{}", name.replace('.', "-"));
    let out = h.build(&recipe, &id).await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let raw = output_raw(h, &out);
    assert_eq!(
        disks::table(&raw),
        disks::table(base_raw),
        "partition table"
    );
    assert_eq!(
        fs::metadata(&raw).unwrap().len(),
        fs::metadata(base_raw).unwrap().len()
    );
    for &at in offsets {
        assert_eq!(disks::blkid(&raw, at), disks::blkid(base_raw, at));
        assert_eq!(disks::features(&raw, at), disks::features(base_raw, at));
    }
    assert_eq!(
        bytes_at(&raw, 0, 440),
        bytes_at(base_raw, 0, 440),
        "MBR boot code"
    );
    assert_eq!(&bytes_at(&raw, 0, BOOT_MARK.len())[..], BOOT_MARK);
    if gpt {
        assert_eq!(
            bytes_at(&raw, MIB, MIB as usize),
            bytes_at(base_raw, MIB, MIB as usize),
            "BIOS-boot partition"
        );
    }
    let root = offsets[offsets.len() - 1];
    assert_eq!(
        disks::debugfs_at(&raw, root, "cat /etc/provisioned"),
        "provisioned\n"
    );
    if offsets.len() == 2 {
        // /boot is its own filesystem: the root's /boot stays an empty mount point.
        let boot = offsets[0];
        assert_eq!(
            disks::debugfs_at(&raw, boot, "cat /vmlinuz-new"),
            "new kernel\n"
        );
        let listing = disks::debugfs_at(&raw, boot, "ls -l /");
        assert!(!listing.contains("vmlinuz-test"), "{listing}");
        let mountpoint = disks::debugfs_at(&raw, root, "ls /boot");
        assert!(!mountpoint.contains("vmlinuz"), "{mountpoint}");
    }
    // The tarball has the whole tree, /boot included.
    let tree = h.path(&format!("untar-{id}"));
    local_support::untar(&out.artifact(".tar.zst"), &tree);
    assert_eq!(
        fs::read_to_string(tree.join("boot/vmlinuz-new")).unwrap(),
        "new kernel\n"
    );
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
}

#[tokio::test]
async fn gpt_disks_with_a_separate_boot_build_raw_and_qcow2() {
    let h = Harness::new(None);
    let (root, boot) = trees(&h, &format!("UUID={ROOT_UUID}"), true);
    let base = h.path("gpt.raw");
    let offsets = gpt_boot_and_root(
        &base,
        "5e1f0000-0000-4000-8000-0000000000aa",
        &boot,
        "BOOT",
        &root,
    );
    build_and_compare(&h, &base, &base, &offsets, true).await;
    let qcow2 = disks::to_qcow2(&base);
    build_and_compare(&h, &qcow2, &base, &offsets, true).await;
}

#[tokio::test]
async fn mbr_disks_found_by_partuuid_build_raw_and_qcow2() {
    let h = Harness::new(None);
    let (root, _) = trees(&h, "PARTUUID=1a2b3c4d-01", false);
    let base = h.path("mbr.raw");
    let offsets = disks::make_disk(
        &base,
        "dos",
        "0x1a2b3c4d",
        &[Fs {
            tree: &root,
            mib: 64,
            uuid: ROOT_UUID,
            label: "root",
        }],
    );
    build_and_compare(&h, &base, &base, &offsets, false).await;
    let qcow2 = disks::to_qcow2(&base);
    build_and_compare(&h, &qcow2, &base, &offsets, false).await;
}

/// A GPT disk at `base` with a 16 MiB `/boot` (labelled `boot_label`) and
/// a 48 MiB root filesystem; the partitions' byte offsets.
fn gpt_boot_and_root(
    base: &Path,
    disk_id: &str,
    boot: &Path,
    boot_label: &str,
    root: &Path,
) -> Vec<u64> {
    let fs = [
        Fs {
            tree: boot,
            mib: 16,
            uuid: BOOT_UUID,
            label: boot_label,
        },
        Fs {
            tree: root,
            mib: 48,
            uuid: ROOT_UUID,
            label: "root",
        },
    ];
    disks::make_disk(base, "gpt", disk_id, &fs)
}

/// A LUKS1 header at `offset` (what blkid looks for).
fn plant_luks(raw: &Path, offset: u64) {
    let mut bytes = fs::read(raw).unwrap();
    let at = offset as usize;
    bytes[at..at + 4096].fill(0);
    bytes[at..at + 6].copy_from_slice(b"LUKS\xba\xbe");
    bytes[at + 6..at + 8].copy_from_slice(&1u16.to_be_bytes());
    bytes[at + 8..at + 11].copy_from_slice(b"aes");
    bytes[at + 168..at + 204].copy_from_slice(b"12345678-1234-1234-1234-123456789abc");
    fs::write(raw, bytes).unwrap();
}

#[tokio::test]
async fn unsupported_layouts_fail_at_launch_naming_the_problem_and_leave_nothing() {
    let h = Harness::new(None);
    let cases: [(&str, &str, bool, &str); 3] = [
        (
            "luks",
            "UUID=0a1b2c3d-1111-4222-8333-444455556666",
            true,
            "LUKS",
        ),
        (
            "noroot",
            "UUID=00000000-0000-4000-8000-000000000000",
            true,
            "no root filesystem",
        ),
        (
            "missing",
            "UUID=0a1b2c3d-1111-4222-8333-444455556666",
            true,
            "which no partition of the disk has",
        ),
    ];
    for (name, fstab_root, separate_boot, expected) in cases {
        let _ = fs::remove_dir_all(h.path("tree"));
        let (root, boot) = trees(&h, fstab_root, separate_boot);
        let base = h.path(&format!("{name}.raw"));
        let boot_label = if name == "missing" { "OTHER" } else { "BOOT" };
        let offsets = gpt_boot_and_root(
            &base,
            "5e1f0000-0000-4000-8000-0000000000bb",
            &boot,
            boot_label,
            &root,
        );
        if name == "luks" {
            plant_luks(&base, offsets[0]);
        }
        if name == "noroot" {
            // Two candidate roots, neither named by its own fstab.
            let other = h.path("tree/root2");
            busybox_rootfs(&other);
            fs::write(
                other.join("etc/fstab"),
                "UUID=elsewhere / ext4 defaults 0 1\n",
            )
            .unwrap();
            run(Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-E"])
                .arg(format!("offset={}", offsets[0]))
                .arg("-d")
                .arg(&other)
                .arg(&base)
                .arg("16384k"));
        }
        let recipe = recipe(&h, &format!("../{name}.raw"));
        let out = h.build(&recipe, &format!("bad-{name}")).await;
        let (step, kind, cause) = out.error.clone().expect("the build fails");
        assert_eq!(
            (step.to_string(), kind.as_str()),
            ("launch".to_string(), "NonRetryable"),
            "{name}"
        );
        assert!(
            cause.contains(&format!("{name}.raw")) && cause.contains(expected),
            "{name}: {cause}"
        );
        assert!(h.work_dirs().is_empty(), "{name}: {:?}", h.work_dirs());
        assert!(h.our_mounts().is_empty());
        assert!(
            !h.path("images/disk").exists()
                || local_support::names(&h.path("images/disk")).is_empty()
        );
    }
}

/// `Block count` × `Block size` of the ext filesystem at `offset`.
fn filesystem_bytes(raw: &Path, offset: u64) -> u64 {
    let stats = disks::debugfs_at(raw, offset, "stats");
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {stats}"))
    };
    field("Block count:") * field("Block size:")
}

#[tokio::test]
async fn builder_disk_size_grows_the_disk_and_its_last_partition_keeping_ids() {
    let h = Harness::new(None);
    for (label, fstab_root) in [
        ("gpt", format!("UUID={ROOT_UUID}")),
        ("dos", "PARTUUID=1a2b3c4d-01".to_string()),
    ] {
        let _ = fs::remove_dir_all(h.path("tree"));
        let (root, _) = trees(&h, &fstab_root, false);
        let base = h.path(&format!("grow-{label}.raw"));
        let disk_id = if label == "gpt" {
            "5e1f0000-0000-4000-8000-0000000000cc"
        } else {
            "0x1a2b3c4d"
        };
        let offsets = disks::make_disk(
            &base,
            label,
            disk_id,
            &[Fs {
                tree: &root,
                mib: 48,
                uuid: ROOT_UUID,
                label: "root",
            }],
        );
        let at = offsets[0];
        // qcow2 for one, raw for the other.
        let base = if label == "dos" {
            disks::to_qcow2(&base)
        } else {
            base
        };
        let base_raw = h.path(&format!("grow-{label}.raw"));
        let name = base.file_name().unwrap().to_string_lossy().into_owned();
        let recipe = h.write(
            "recipe/grow.yaml",
            &format!("name: grow\nbase: {{path: ../{name}}}\nbuilder: {{disk_size: 256}}\nprovisioners:\n  - type: shell\n    inline: [\"echo provisioned > /etc/provisioned\"]\n"),
        );
        let out = h.build(&recipe, &format!("grow-{label}")).await;
        assert_eq!(out.status(), "SUCCEEDED", "{label}: {:?}", out.error);
        let raw = output_raw(&h, &out);
        assert_eq!(fs::metadata(&raw).unwrap().len(), 256 * MIB, "{label}");
        let (before, after) = (disks::table(&base_raw), disks::table(&raw));
        let (tb, ta) = (&before["partitiontable"], &after["partitiontable"]);
        assert_eq!(ta["label"], tb["label"]);
        assert_eq!(ta["id"], tb["id"]);
        let (pb, pa) = (
            tb["partitions"].as_array().unwrap(),
            ta["partitions"].as_array().unwrap(),
        );
        assert_eq!(pa.len(), pb.len());
        for (b, a) in pb.iter().zip(pa) {
            for key in ["start", "type", "uuid"] {
                assert_eq!(a[key], b[key], "{label} {key}");
            }
        }
        let last = pa.last().unwrap();
        let grown = last["size"].as_u64().unwrap() * 512;
        assert!(
            grown > 200 * MIB,
            "{label}: the root partition is {grown} bytes"
        );
        assert!(last["start"].as_u64().unwrap() * 512 + grown <= 256 * MIB);
        let fs_bytes = filesystem_bytes(&raw, at);
        assert!(
            fs_bytes <= grown && grown - fs_bytes < 4096,
            "{label}: a {fs_bytes}-byte filesystem in a {grown}-byte partition"
        );
        assert_eq!(
            disks::blkid(&raw, at),
            disks::blkid(&base_raw, at),
            "{label}"
        );
        assert_eq!(
            disks::debugfs_at(&raw, at, "cat /etc/provisioned"),
            "provisioned\n"
        );
        let verify = run(Command::new("sfdisk").arg("--verify").arg(&raw));
        assert!(verify.contains("No errors detected"), "{label}: {verify}");
        assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
    }

    // A disk never shrinks, and only a whole disk grows.
    let _ = fs::remove_dir_all(h.path("tree"));
    let (root, _) = trees(&h, &format!("UUID={ROOT_UUID}"), false);
    let big = h.path("big.raw");
    disks::make_disk(
        &big,
        "gpt",
        "5e1f0000-0000-4000-8000-0000000000dd",
        &[Fs {
            tree: &root,
            mib: 300,
            uuid: ROOT_UUID,
            label: "root",
        }],
    );
    local_support::pack(&root, &h.path("tree.tar.gz"));
    for (base, expected) in [
        (
            "big.raw",
            "256 MiB is smaller than the base disk (303 MiB): a disk only grows",
        ),
        ("tree.tar.gz", "builder.disk_size grows a whole-disk base"),
    ] {
        let recipe = h.write(
            "recipe/shrink.yaml",
            &format!("name: shrink\nbase: {{path: ../{base}}}\nbuilder: {{disk_size: 256}}\n"),
        );
        let out = h
            .build(&recipe, &format!("shrink-{}", base.replace('.', "-")))
            .await;
        let (step, _, cause) = out.error.clone().expect("the build fails");
        assert_eq!(step.to_string(), "launch");
        assert!(cause.contains(expected) && cause.contains(base), "{cause}");
        assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
    }
}

/// `stat` of `path` in the filesystem at `offset`: (mode, uid, gid, links).
fn inode(raw: &Path, offset: u64, path: &str) -> (String, String, String, String) {
    let stat = disks::debugfs_at(raw, offset, &format!("stat \"{path}\""));
    let field = |key: &str| {
        stat.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    (
        field("Mode:"),
        field("User:"),
        field("Group:"),
        field("Links:"),
    )
}

#[tokio::test]
async fn a_kept_base_takes_every_kind_of_change_in_place_and_stays_as_it_was() {
    let h = Harness::new(None);
    let (root, boot) = trees(&h, &format!("UUID={ROOT_UUID}"), true);
    for d in ["etc/old", "var/gone/deep", "srv"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/old/a"), "a").unwrap();
    fs::write(root.join("var/gone/deep/f"), "f").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("srv/link")).unwrap();
    let base = h.path("gpt.raw");
    let offsets = gpt_boot_and_root(
        &base,
        "5e1f0000-0000-4000-8000-0000000000bb",
        &boot,
        "BOOT",
        &root,
    );
    disks::to_qcow2(&base);
    let (boot_at, root_at) = (offsets[0], offsets[1]);
    let steps = [
        "rm -r /var/gone",
        "rm -r /etc/old && echo now-a-file > /etc/old",
        "mkdir -p /opt/x && echo one > /opt/x/one && ln /opt/x/one /opt/x/two",
        "ln -s ../x/one '/opt/x/link with space' && mkfifo /opt/x/fifo",
        "rm /srv/link && mkdir /srv/link && echo in > /srv/link/file",
        "chown 5:6 /usr/bin/tool && chmod 4755 /usr/bin/tool",
        "echo build-secret > /opt/x/tmp && rm /opt/x/tmp",
        "dd if=/dev/zero of=/opt/x/big bs=1024 count=3000 2>/dev/null",
        "rm /boot/vmlinuz-test && echo k > /boot/vmlinuz-new",
        // 20 MB rewritten uncompressed: the disk is compressed again.
        "yes bakehouse | head -c 20000000 > /opt/x/text",
    ];
    let mut text = "name: inplace\nbase: {path: ../gpt.qcow2}\nprovisioners:\n".to_string();
    for step in steps {
        text.push_str(&format!(
            "  - type: shell\n    inline: [{}]\n",
            serde_json::to_string(step).unwrap()
        ));
    }
    let recipe = h.write("recipe/inplace.yaml", &text);
    let out = h.build(&recipe, "inplace-1").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let notes = local_support::notes(&out.record);
    assert!(
        notes.contains("written in place into the kept base disk"),
        "{notes}"
    );
    assert!(notes.contains("compressed again to"), "{notes}");
    let qcow2_size = fs::metadata(out.artifact(".qcow2")).unwrap().len();
    assert!(qcow2_size < 8 << 20, "{qcow2_size} bytes: not compressed");
    let raw = output_raw(&h, &out);
    for at in [boot_at, root_at] {
        run(Command::new("e2fsck")
            .arg("-fn")
            .arg(format!("{}?offset={at}", raw.display())));
    }
    let cat = |path: &str| disks::debugfs_at(&raw, root_at, &format!("cat \"{path}\""));
    assert_eq!(cat("/etc/old"), "now-a-file\n");
    assert_eq!(cat("/srv/link/file"), "in\n");
    assert_eq!(cat("/opt/x/two"), "one\n");
    let listing = disks::debugfs_at(&raw, root_at, "ls -l /var");
    assert!(!listing.contains("gone"), "{listing}");
    let listing = disks::debugfs_at(&raw, root_at, "ls -l /opt/x");
    assert!(
        !listing.contains("tmp"),
        "removed during the build: {listing}"
    );
    assert_eq!(inode(&raw, root_at, "/opt/x/one").3, "2", "hard link kept");
    assert_eq!(inode(&raw, root_at, "/opt/x/big").0, "0644");
    let text = disks::debugfs_at(&raw, root_at, "stat /opt/x/text");
    assert!(text.contains("Size: 20000000"), "{text}");
    let tool = inode(&raw, root_at, "/usr/bin/tool");
    assert_eq!(
        (tool.0.as_str(), tool.1.as_str(), tool.2.as_str()),
        ("04755", "5", "6")
    );
    let fifo = disks::debugfs_at(&raw, root_at, "stat /opt/x/fifo");
    assert!(fifo.contains("Type: FIFO"), "{fifo}");
    let link = disks::debugfs_at(&raw, root_at, "stat \"/opt/x/link with space\"");
    assert!(link.contains("Fast link dest: \"../x/one\""), "{link}");
    assert_eq!(disks::debugfs_at(&raw, boot_at, "cat /vmlinuz-new"), "k\n");
    assert!(!disks::debugfs_at(&raw, boot_at, "ls /").contains("vmlinuz-test"));
    // The archive agrees with the disk.
    let tree = h.path("untar-inplace");
    local_support::untar(&out.artifact(".tar.zst"), &tree);
    let meta = fs::symlink_metadata(tree.join("usr/bin/tool")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (5, 6, 0o4755)
    );

    // A second build on the base finds it as it was (the first build's
    // changes are not in it); a name debugfs cannot take makes capture
    // write the filesystems whole.
    let recipe = h.write(
        "recipe/whole.yaml",
        "name: whole\nbase: {path: ../gpt.qcow2}\nprovisioners:\n  - type: shell\n    inline: ['test -d /etc/old && test -d /var/gone && echo q > /etc/a\\\"b']\n",
    );
    let out = h.build(&recipe, "inplace-2").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let notes = local_support::notes(&out.record);
    assert!(
        notes.contains("written whole (/etc/a\"b: a name with a double quote)"),
        "{notes}"
    );
    let raw = output_raw(&h, &out);
    assert_eq!(disks::debugfs_at(&raw, root_at, "cat /etc/old/a"), "a");
    // (debugfs cannot name it: the listing shows it.)
    let listing = disks::debugfs_at(&raw, root_at, "ls -l /etc");
    assert!(listing.contains("a\"b"), "{listing}");
    let kept = h.path("work/.disks");
    assert_eq!(local_support::names(&kept).len(), 1, "one kept base");
    assert!(h.work_dirs().is_empty(), "{:?}", h.work_dirs());
    assert!(h.our_mounts().is_empty(), "{:?}", h.our_mounts());
}
