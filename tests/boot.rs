//! Bootable disks, proven by booting them: a tree with a Debian kernel
//! becomes a GPT disk (BIOS-boot, EFI system partition, ext4 root) and an
//! MBR disk with `builder.disk`; a second recipe is built on each of those
//! whole disks, and each output boots in qemu (TCG) to a marker printed by
//! a systemd unit the provisioners installed. Partition tables, UUIDs and
//! labels of base and output are compared. `make demo`'s output boots to
//! the login prompt on the serial console.

mod local_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use local_support::disks::{self, boot_tree, boot_until, demo_disk};
use local_support::{qcow2_to_raw, run, Harness};

/// The most a TCG boot to the marker may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A systemd unit printing `marker` and the running kernel on the serial
/// console, ordered after the units named in `after`.
fn marker_unit(marker: &str, after: &str) -> String {
    // The "again-*" unit of a build on a first build's output runs after
    // that build's "boot-*" unit, so its marker means both ran. No
    // poweroff: the test stops the machine once it has seen its marker.
    format!(
        "[Unit]\nDescription=bakehouse boot marker\nAfter=multi-user.target {after}\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo {marker} $(uname -r) > /dev/ttyS0'\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// A recipe installing the marker unit, on `base`, with `extra` builder
/// settings.
fn recipe(h: &Harness, name: &str, base: &str, builder: &str, marker: &str) -> PathBuf {
    let after = match name.strip_prefix("again-") {
        Some(table) => format!("boot-{table}.service"),
        None => String::new(),
    };
    h.write(
        &format!("recipe/files/{name}.service"),
        &marker_unit(marker, &after),
    );
    h.write(
        &format!("recipe/{name}.yaml"),
        &format!(
            "name: {name}\nbase: {{path: {base}}}\n{builder}provisioners:\n  - type: file\n    source: files/{name}.service\n    destination: /etc/systemd/system/{name}.service\n  - type: shell\n    inline:\n      - systemctl enable {name}.service\n      - mkdir -p /boot/efi/EFI/bakehouse && echo {marker} > /boot/efi/EFI/bakehouse/{name}\n"
        ),
    )
}

/// (offset, blkid) of each filesystem partition of a raw disk.
fn filesystems(raw: &Path) -> Vec<(u64, String)> {
    let table = disks::table(raw);
    table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_u64().unwrap() * 512)
        .map(|at| (at, disks::blkid(raw, at)))
        .filter(|(_, b)| !b.is_empty())
        .collect()
}

async fn bake_and_boot(table: &str) {
    let h = Harness::new(None);
    let tree = h.path("bookworm-boot.tar.zst");
    fs::copy(boot_tree(), &tree).unwrap();
    let first = recipe(
        &h,
        &format!("boot-{table}"),
        "../bookworm-boot.tar.zst",
        &format!("builder:\n  disk: {{table: {table}}}\n"),
        "BAKEHOUSE-FIRST",
    );
    let out = h.build(&first, &format!("first-{table}")).await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let base = h.path(&format!("base-{table}.qcow2"));
    fs::copy(out.artifact(".qcow2"), &base).unwrap();
    let base_raw = qcow2_to_raw(&base, h.dir.path());
    let expected = if table == "gpt" { "gpt" } else { "dos" };
    assert_eq!(disks::table(&base_raw)["partitiontable"]["label"], expected);
    let kinds: Vec<String> = filesystems(&base_raw).into_iter().map(|(_, b)| b).collect();
    assert!(
        kinds
            .iter()
            .any(|b| b.contains("TYPE=ext4") && b.contains("LABEL=root")),
        "{kinds:?}"
    );
    if table == "gpt" {
        assert!(
            kinds.iter().any(|b| b.contains("TYPE=vfat")),
            "the EFI system partition: {kinds:?}"
        );
    }

    // A recipe on the whole disk: same table, UUIDs and labels; it boots.
    let second = recipe(
        &h,
        &format!("again-{table}"),
        &format!("../base-{table}.qcow2"),
        "",
        "BAKEHOUSE-SECOND",
    );
    let out = h.build(&second, &format!("second-{table}")).await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let disk = out.artifact(".qcow2");
    let info = run(Command::new("qemu-img").arg("info").arg(&disk));
    assert!(info.contains("file format: qcow2"), "{info}");
    let raw = qcow2_to_raw(&disk, h.dir.path());
    assert_eq!(disks::table(&raw), disks::table(&base_raw));
    assert_eq!(filesystems(&raw), filesystems(&base_raw));
    if table == "gpt" {
        // The EFI system partition was read into /boot/efi and written back.
        let (esp, _) = filesystems(&raw)
            .into_iter()
            .find(|(_, b)| b.contains("vfat"))
            .unwrap();
        for (file, marker) in [
            ("boot-gpt", "BAKEHOUSE-FIRST"),
            ("again-gpt", "BAKEHOUSE-SECOND"),
        ] {
            let text = run(Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(format!("{}@@{esp}", raw.display()))
                .arg(format!("::/EFI/bakehouse/{file}")));
            assert_eq!(text.trim(), marker);
        }
    }
    let before = run(Command::new("sha256sum").arg(&disk));
    let serial = boot_until(&disk, "BAKEHOUSE-SECOND 6.1", BOOT_TIMEOUT);
    // Both units ran: the first recipe's survived the second build.
    assert!(serial.contains("BAKEHOUSE-FIRST 6.1"), "{serial}");
    assert!(serial.contains("-cloud-amd64"), "{serial}");
    assert_eq!(
        run(Command::new("sha256sum").arg(&disk)),
        before,
        "booting changed the artifact"
    );
}

#[tokio::test]
async fn a_gpt_disk_from_packages_is_rebuilt_and_boots() {
    bake_and_boot("gpt").await;
}

#[tokio::test]
async fn an_mbr_disk_from_packages_is_rebuilt_and_boots() {
    bake_and_boot("mbr").await;
}

#[tokio::test]
async fn the_demo_output_boots_to_a_login_prompt() {
    let h = Harness::new(None);
    demo_disk();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/demo.yaml");
    let out = h.build(&demo, "demo-boot").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let disk = out.artifact(".qcow2");
    let raw = qcow2_to_raw(&disk, h.dir.path());
    assert_eq!(
        disks::table(&raw),
        disks::table(&qcow2_to_raw(&demo_disk(), h.dir.path()))
    );
    let serial = boot_until(&disk, "debian login:", BOOT_TIMEOUT);
    assert!(serial.contains("Debian GNU/Linux 12"), "{serial}");
}

#[tokio::test]
async fn installing_another_kernel_boots_that_kernel() {
    let h = Harness::new(None);
    let base = h.path("bootable.qcow2");
    fs::copy(demo_disk(), &base).unwrap();
    h.write(
        "recipe/files/kernel.service",
        &marker_unit("BAKEHOUSE-KERNEL", ""),
    );
    let recipe = h.write(
        "recipe/kernel.yaml",
        "name: kernel\nbase: {path: ../bootable.qcow2}\nbuilder: {network: true}\nprovisioners:\n  - type: shell\n    env: {DEBIAN_FRONTEND: noninteractive}\n    inline:\n      - apt-get update\n      - apt-get install -y --no-install-recommends linux-image-amd64\n      - update-initramfs -u -k all\n      - ls -l /vmlinuz\n  - type: file\n    source: files/kernel.service\n    destination: /etc/systemd/system/kernel.service\n  - type: shell\n    inline: [systemctl enable kernel.service]\n",
    );
    let out = h.build(&recipe, "kernel").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    let serial = boot_until(
        &out.artifact(".qcow2"),
        "BAKEHOUSE-KERNEL 6.1",
        BOOT_TIMEOUT,
    );
    let line = serial
        .lines()
        .find(|l| l.contains("BAKEHOUSE-KERNEL"))
        .unwrap_or_default();
    assert!(
        line.trim_end().ends_with("-amd64") && !line.contains("cloud"),
        "booted {line:?}"
    );
}

/// The tripleo path: a Packer template with the qemu builder on a local
/// qcow2 (`disk_image: true`) is a local build on that disk, and its
/// output boots with what the template's provisioners installed.
#[tokio::test]
async fn a_packer_qemu_disk_image_template_builds_locally_and_boots() {
    let h = Harness::new(None);
    // The root filesystem's size as the guest sees it, printed before the
    // marker (so it is on the console once the marker is).
    h.write(
        "recipe/files/tripleo.service",
        &marker_unit(
            "root-kib=$(df -k --output=size / | tail -n 1) BAKEHOUSE-TRIPLEO",
            "",
        ),
    );
    fs::copy(demo_disk(), h.path("recipe/guest-image.qcow2")).unwrap();
    let template = h.write(
        "recipe/overcloud.json",
        r#"{
  "variables": {"base": "guest-image.qcow2"},
  "builders": [{
    "type": "qemu",
    "disk_image": true,
    "iso_url": "{{user `base`}}",
    "iso_checksum": "none",
    "format": "qcow2",
    "vm_name": "overcloud-full.qcow2",
    "disk_size": "3328M",
    "memory": 2048,
    "headless": true,
    "ssh_username": "root",
    "shutdown_command": "shutdown -P now"
  }],
  "provisioners": [
    {"type": "file", "source": "files/tripleo.service", "destination": "/etc/systemd/system/tripleo.service"},
    {"type": "shell", "inline": ["systemctl enable tripleo.service"]}
  ]
}"#,
    );
    let out = h.build(&template, "tripleo").await;
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    assert_eq!(
        out.record.version.as_deref().map(|v| v.split('@').next()),
        Some(Some("overcloud-full"))
    );
    let disk = out.artifact(".qcow2");
    // The base's table, but for the last (root) partition, which grew to
    // the end of the larger disk (`disk_size`).
    let grown = disks::table(&qcow2_to_raw(&disk, h.dir.path()));
    let mut expected = disks::table(&qcow2_to_raw(&demo_disk(), h.dir.path()));
    let sectors = |t: &serde_json::Value| -> u64 {
        let parts = t["partitiontable"]["partitions"].as_array().unwrap();
        parts[parts.len() - 1]["size"].as_u64().unwrap()
    };
    let (base_root, grown_root) = (sectors(&expected), sectors(&grown));
    assert!(
        grown_root >= base_root + 255 * 2048,
        "{base_root} -> {grown_root} sectors"
    );
    let t = &mut expected["partitiontable"];
    t["lastlba"] = grown["partitiontable"]["lastlba"].clone();
    let last = t["partitions"].as_array().unwrap().len() - 1;
    t["partitions"][last]["size"] = grown_root.into();
    assert_eq!(grown, expected);
    let console = boot_until(&disk, "BAKEHOUSE-TRIPLEO 6.1", BOOT_TIMEOUT);
    let root_kib: u64 = console
        .split("root-kib=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no root size in {console}"));
    // Only a filesystem made at the grown size can be larger than the
    // base's whole partition.
    assert!(
        root_kib * 2 > base_root && root_kib * 2 <= grown_root,
        "the guest's / is {root_kib} KiB; partitions {base_root} -> {grown_root} sectors"
    );
}
