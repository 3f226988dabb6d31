//! Whole disks made with the host's tools (sfdisk, mke2fs -E offset=,
//! qemu-img), independently of bakehouse's own code: the bases of the
//! whole-disk tests and the readers that compare base and output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// 1 MiB, the alignment of every partition.
pub const MIB: u64 = 1 << 20;
/// GPT type of a BIOS-boot partition.
pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT type of a Linux filesystem.
pub const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Bytes planted in the boot code area of the MBR and the BIOS-boot
/// partition, which capture must keep.
pub const BOOT_MARK: &[u8] = b"BAKEHOUSE-TEST-BOOT-CODE";

/// One ext4 filesystem of a test disk.
pub struct Fs<'a> {
    /// The directory whose files it holds.
    pub tree: &'a Path,
    /// Size in MiB.
    pub mib: u64,
    /// Filesystem UUID.
    pub uuid: &'a str,
    /// Filesystem label.
    pub label: &'a str,
}

/// Makes a raw disk at `out`: `dos` (one bootable partition per fs) or
/// `gpt` (a 1 MiB BIOS-boot partition first, holding [`BOOT_MARK`], then
/// one partition per fs). Partitions start at 1 MiB and follow each other.
/// Returns each filesystem's byte offset.
pub fn make_disk(out: &Path, label: &str, disk_id: &str, filesystems: &[Fs]) -> Vec<u64> {
    let mut script = format!("label: {label}\nlabel-id: {disk_id}\nunit: sectors\n");
    let mut at = MIB;
    if label == "gpt" {
        script.push_str(&format!(
            "start={}, size={}, type={BIOS_BOOT}, uuid=5e1f0000-0000-4000-8000-000000000001\n",
            at / 512,
            MIB / 512
        ));
        at += MIB;
    }
    let mut offsets = Vec::new();
    for (i, f) in filesystems.iter().enumerate() {
        let kind = if label == "gpt" {
            format!("{LINUX_FS}, uuid=5e1f0000-0000-4000-8000-00000000001{i}")
        } else {
            format!("83{}", if i == 0 { ", bootable" } else { "" })
        };
        script.push_str(&format!(
            "start={}, size={}, type={kind}\n",
            at / 512,
            f.mib * MIB / 512
        ));
        offsets.push(at);
        at += f.mib * MIB;
    }
    let total = at + MIB;
    let _ = fs::remove_file(out);
    run(Command::new("truncate")
        .arg("-s")
        .arg(total.to_string())
        .arg(out));
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk {script}");
    for (f, offset) in filesystems.iter().zip(&offsets) {
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-E"])
            .arg(format!("offset={offset},root_owner=0:0"))
            .args(["-U", f.uuid, "-L", f.label, "-d"])
            .arg(f.tree)
            .arg(out)
            .arg(format!("{}k", f.mib * 1024)));
    }
    // Boot code: the first 440 bytes of the MBR and the BIOS-boot partition.
    let mut bytes = fs::read(out).unwrap();
    bytes[..BOOT_MARK.len()].copy_from_slice(BOOT_MARK);
    if label == "gpt" {
        let at = MIB as usize;
        bytes[at..at + BOOT_MARK.len()].copy_from_slice(BOOT_MARK);
    }
    fs::write(out, bytes).unwrap();
    offsets
}

/// `qemu-img convert` of a raw disk to a compressed qcow2 next to it.
pub fn to_qcow2(raw: &Path) -> PathBuf {
    let out = raw.with_extension("qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&out));
    out
}

/// The partition table as `sfdisk --json` reports it, without the device
/// name (which is the file's path).
pub fn table(raw: &Path) -> serde_json::Value {
    let out = run(Command::new("sfdisk").arg("--json").arg(raw));
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &mut v["partitiontable"];
    t.as_object_mut().unwrap().remove("device");
    for p in t["partitions"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("node");
    }
    v
}

/// `blkid -p` of the filesystem at `offset`: TYPE, UUID, LABEL (empty
/// when there is none).
pub fn blkid(raw: &Path, offset: u64) -> String {
    // Exit 2 means nothing was found: an empty answer.
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(raw)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    out.lines()
        .filter(|l| {
            ["TYPE=", "UUID=", "LABEL="]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A debugfs request on the filesystem at `offset` of a raw disk.
pub fn debugfs_at(raw: &Path, offset: u64, request: &str) -> String {
    let spec = format!("{}?offset={offset}", raw.display());
    run(Command::new("debugfs").arg("-R").arg(request).arg(spec))
}

/// `Filesystem features:` of the filesystem at `offset`.
pub fn features(raw: &Path, offset: u64) -> String {
    debugfs_at(raw, offset, "stats")
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default()
        .to_string()
}

/// A file `make` makes in the clone (once; cached in `.bakehouse/`).
fn made(rel: &str) -> PathBuf {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !top.join(rel).is_file() {
        run(Command::new("make").arg("-s").arg("-C").arg(top).arg(rel));
    }
    top.join(rel)
}

/// The demo's bootable base (`make` target: the bootable tree as a GPT
/// disk made by bakehouse with `recipes/debian-bootable.yaml`).
pub fn demo_disk() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| made(".bakehouse/bases/bookworm-bootable.qcow2"))
        .clone()
}

/// The bootable tree (`make` target: bookworm minbase with Debian's cloud
/// kernel, initramfs-tools, udev, systemd and grub-pc-bin, made once with
/// mmdebstrap and cached in the clone's `.bakehouse/bases/`).
pub fn boot_tree() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| made(".bakehouse/bases/bookworm-boot.tar.zst"))
        .clone()
}

/// Boots `disk` (qcow2) in qemu under TCG (KVM is not usable on these
/// machines) from a throwaway overlay, so the disk itself is not written,
/// until `marker` appears on the serial console or `timeout` passes;
/// returns the serial output. The disk is attached as virtio-blk and the
/// machine has no network.
pub fn boot_until(disk: &Path, marker: &str, timeout: std::time::Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(disk)
        .arg(&overlay));
    let serial = dir.path().join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-m", "1024", "-smp", "1", "-display", "none",
        ])
        .args(["-nic", "none", "-no-reboot"])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (make setup installs it)");
    let start = std::time::Instant::now();
    let text = loop {
        let text = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
        let exited = qemu.try_wait().unwrap().is_some();
        if text.contains(marker) || exited || start.elapsed() > timeout {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    let tail: String = text
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        text.contains(marker),
        "{} did not print {marker:?} within {:?} (booted {:?}); serial tail:\n{tail}",
        disk.display(),
        timeout,
        start.elapsed()
    );
    eprintln!(
        "{} booted to {marker:?} in {:?}",
        disk.display(),
        start.elapsed()
    );
    text
}
