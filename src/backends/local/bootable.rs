//! `builder.disk`: a tree (tarball, directory or bare filesystem base)
//! captured as a bootable whole disk, with GRUB for BIOS from the image's
//! own `grub-pc-bin` and `grub-common`.
//!
//! Layouts (all partitions 1 MiB aligned):
//! - `gpt`: 1 MiB BIOS-boot partition (GRUB's core image), 64 MiB EFI
//!   system partition (FAT32 with the tree's `/boot/efi`; bakehouse installs
//!   no UEFI loader),
//!   ext4 root on the rest;
//! - `mbr`: one bootable ext4 root partition; GRUB's core image in the gap
//!   before it (sectors 1–2047).
//!
//! What `grub-install` would do is split in two, so no device, loop device
//! or mount is needed: inside the build's sandbox, the image's own
//! `grub-mkimage` makes `core.img` (which finds the root by its filesystem
//! UUID), the modules are copied to `/boot/grub/i386-pc`, and bakehouse's
//! `grub.cfg` and `/etc/fstab` are written; on the host, `boot.img` and
//! `core.img` are embedded in the new disk the way `grub-bios-setup` does
//! it (see [`embed_grub`]). The menu boots `/vmlinuz` and `/initrd.img`,
//! the links Debian's kernel packages keep pointing at the newest kernel,
//! so a provisioner that installs another kernel changes what boots
//! without running `update-grub`.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::pipeline::{BuildContext, StepError};
use crate::recipe::{DiskSettings, DiskTable};

use super::capture::tree_usage;
use super::fsutil::{blocking, io_error, resolve_in_root};
use super::layout::{DiskLayout, ExtParams, Mounted, Partition, Table};
use super::sandbox::{Sandbox, Stage};

/// Plans the disk of `settings` for the tree and installs GRUB's files,
/// `grub.cfg` and `/etc/fstab` in it from inside the sandbox (see
/// [`install_script`]); returns the plan for capture.
pub(crate) async fn install(
    ctx: &BuildContext,
    sandbox: &Sandbox,
    settings: &DiskSettings,
) -> Result<DiskLayout, StepError> {
    let root = sandbox.root.clone();
    let (bytes, _) = blocking(move || tree_usage(&root).map_err(io_error(root.display()))).await?;
    let layout = plan(settings, bytes);
    let stage = Stage::create(&sandbox.root, "disk")?;
    let dir = stage.image_path("");
    let script = install_script(&layout, dir.trim_end_matches('/'));
    let result = async {
        let path = stage.write("install.sh", script.as_bytes(), 0o700)?;
        sandbox
            .run("bootloader", &["/bin/sh".to_string(), path])
            .await
    }
    .await;
    stage.remove()?;
    result?.record(ctx, "builder.disk: GRUB install").await?;
    let root = &layout.mounted[0].partition;
    if bytes > root.size - root.size / 20 {
        return Err(StepError::NonRetryable(format!(
            "builder.disk.size_mb: the tree ({} MiB) does not fit in the root partition ({} MiB)",
            bytes >> 20,
            root.size >> 20
        )));
    }
    Ok(layout)
}

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;
/// GPT type of a BIOS-boot partition.
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT type of an EFI system partition.
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type of a Linux filesystem.
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Size of the EFI system partition.
const ESP_SIZE: u64 = 64 * MIB;
/// Space GRUB's core image may use.
const CORE_MAX: u64 = MIB - 512;
/// Where GRUB's images are in the tree once installed.
pub(crate) const GRUB_DIR: &str = "boot/grub/i386-pc";

/// The ext4 features of a new root: what `mke2fs` 1.46/1.47 enable by
/// default, without newer ones (`orphan_file`) that older GRUBs can't read.
const NEW_EXT4_FEATURES: &str = "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum";

/// Plans a new disk for a tree of `tree_bytes`: table, sizes and fresh
/// UUIDs.
pub(crate) fn plan(settings: &DiskSettings, tree_bytes: u64) -> DiskLayout {
    let wanted = (tree_bytes + tree_bytes / 4 + 256 * MIB).max(1024 * MIB);
    let size = settings
        .size_mb
        .map(|m| u64::from(m) * MIB)
        .unwrap_or(wanted.div_ceil(MIB) * MIB);
    let fresh = || uuid::Uuid::new_v4().to_string();
    let part = |number, offset, size, kind: &str, fs_type: &str, uuid: String| Partition {
        number,
        offset,
        size,
        kind: kind.to_string(),
        partuuid: fresh(),
        fs_type: fs_type.to_string(),
        uuid,
        label: String::new(),
        version: String::new(),
    };
    // The last MiB stays free (GPT's backup header).
    let (label, mut partitions) = match settings.table {
        DiskTable::Gpt => (
            "gpt",
            vec![
                part(1, MIB, MIB, BIOS_BOOT, "", String::new()),
                part(2, 2 * MIB, ESP_SIZE, ESP, "vfat", fat_volume_id()),
                part(3, 2 * MIB + ESP_SIZE, 0, LINUX_FS, "ext4", fresh()),
            ],
        ),
        DiskTable::Mbr => ("dos", vec![part(1, MIB, 0, "83", "ext4", fresh())]),
    };
    if label == "dos" {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        partitions[0].partuuid = format!("{id}-01");
    }
    let last = partitions.len() - 1;
    let root_offset = partitions[last].offset;
    partitions[last].size = size.saturating_sub(root_offset + MIB);
    partitions[last].label = "root".into();
    let root = partitions[last].clone();
    let esp = esp_of_table(&partitions);
    let inodes = (root.size / 16384).max(16384);
    DiskLayout {
        table: Table {
            label: label.into(),
            sector_size: 512,
            partitions,
        },
        fat: esp
            .map(|p| Mounted {
                partition: p,
                mountpoint: "/boot/efi".into(),
                ext: ExtParams::default(),
            })
            .into_iter()
            .collect(),
        mounted: vec![Mounted {
            partition: root,
            mountpoint: "/".into(),
            ext: ExtParams {
                features: NEW_EXT4_FEATURES.split(' ').map(str::to_string).collect(),
                block_size: 4096,
                inode_size: 256,
                inode_count: inodes,
            },
        }],
    }
}

/// The EFI system partition among `partitions`, labelled for mkfs.fat.
fn esp_of_table(partitions: &[Partition]) -> Option<Partition> {
    let mut esp = partitions.iter().find(|p| p.kind == ESP)?.clone();
    esp.label = "EFI".into();
    esp.version = "FAT32".into();
    Some(esp)
}

/// A FAT volume id (`XXXX-XXXX`).
fn fat_volume_id() -> String {
    let hex = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase();
    format!("{}-{}", &hex[..4], &hex[4..8])
}

/// The disk's total size in bytes.
pub(crate) fn disk_size(layout: &DiskLayout) -> u64 {
    layout
        .table
        .partitions
        .iter()
        .map(|p| p.offset + p.size)
        .max()
        .unwrap_or(0)
        + MIB
}

/// The `sfdisk` script that writes the planned table.
pub(crate) fn sfdisk_script(layout: &DiskLayout) -> String {
    let t = &layout.table;
    let mut s = format!("label: {}\nunit: sectors\n", t.label);
    if t.label == "dos" {
        if let Some((id, _)) = t
            .partitions
            .first()
            .and_then(|p| p.partuuid.split_once('-'))
        {
            s.push_str(&format!("label-id: 0x{id}\n"));
        }
    }
    for p in &t.partitions {
        let (start, size) = (p.offset / 512, p.size / 512);
        if t.label == "gpt" {
            s.push_str(&format!(
                "start={start}, size={size}, type={}, uuid={}\n",
                p.kind, p.partuuid
            ));
        } else {
            s.push_str(&format!(
                "start={start}, size={size}, type={}, bootable\n",
                p.kind
            ));
        }
    }
    s
}

/// The root partition of a planned disk.
fn root_of(layout: &DiskLayout) -> &Partition {
    &layout.mounted[0].partition
}

/// Where GRUB's core image goes: the BIOS-boot partition, or the gap
/// after the MBR.
fn core_sector(layout: &DiskLayout) -> u64 {
    layout
        .table
        .partitions
        .iter()
        .find(|p| p.kind == BIOS_BOOT)
        .map_or(1, |p| p.offset / 512)
}

/// The script run in the build's sandbox before capture: checks the image
/// can boot (a kernel, an initramfs and GRUB for BIOS), installs GRUB's
/// modules and core image, and writes `grub.cfg` and the root and ESP
/// lines of `/etc/fstab` (other fstab lines are kept). `stage` is the
/// stage directory inside the image.
pub(crate) fn install_script(layout: &DiskLayout, stage: &str) -> String {
    let root = root_of(layout);
    let mut fstab = format!(
        "# written by bakehouse (builder.disk)\nUUID={} / ext4 errors=remount-ro 0 1\n",
        root.uuid
    );
    if let Some(esp) = layout.fat.first().map(|m| &m.partition) {
        fstab.push_str(&format!(
            "UUID={} /boot/efi vfat umask=0077,nofail 0 1\n",
            esp.uuid
        ));
    }
    let part = if layout.table.label == "gpt" {
        "part_gpt"
    } else {
        "part_msdos"
    };
    format!(
        r#"set -eu
fail() {{ echo "builder.disk: $*" >&2; exit 3; }}
lib=/usr/lib/grub/i386-pc
[ -f "$lib/boot.img" ] || fail "the image has no GRUB for BIOS ($lib/boot.img): install grub-pc-bin"
command -v grub-mkimage >/dev/null || fail "the image has no grub-mkimage: install grub-common"
[ -e /vmlinuz ] || [ -e /boot/vmlinuz ] || fail "the image has no kernel (/vmlinuz): install a linux-image package"
[ -e /initrd.img ] || [ -e /boot/initrd.img ] || fail "the image has no initramfs (/initrd.img): install initramfs-tools"
mkdir -p /{grub_dir} /boot/efi
cp "$lib"/*.mod "$lib"/*.lst /{grub_dir}/
cp "$lib/boot.img" /{grub_dir}/boot.img
cat > {stage}/early.cfg <<'EOF'
search --no-floppy --fs-uuid --set=root {uuid}
set prefix=($root)/boot/grub
EOF
grub-mkimage -O i386-pc -o /{grub_dir}/core.img -c {stage}/early.cfg -p /boot/grub \
  biosdisk {part} ext2 search search_fs_uuid
k=/vmlinuz; i=/initrd.img
[ -e /vmlinuz ] || {{ k=/boot/vmlinuz; i=/boot/initrd.img; }}
cat > /boot/grub/grub.cfg <<EOF
# written by bakehouse (builder.disk): boots the kernel /vmlinuz points at
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
insmod {part}
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry 'Linux' {{
  linux $k root=UUID={uuid} ro console=tty0 console=ttyS0,115200
  initrd $i
}}
EOF
{{ cat <<'EOF'
{fstab}EOF
  if [ -f /etc/fstab ]; then grep -vE '^[[:space:]]*[^#[:space:]]+[[:space:]]+/(boot/efi)?[[:space:]]' /etc/fstab | grep -v '^# UNCONFIGURED' || true; fi
}} > {stage}/fstab
cat {stage}/fstab > /etc/fstab
"#,
        grub_dir = GRUB_DIR,
        uuid = root.uuid,
    )
}

/// Reads a file GRUB's install left in the tree, without following links,
/// at most `max` bytes.
pub(crate) fn read_grub_file(root: &Path, name: &str, max: u64) -> Result<Vec<u8>, StepError> {
    use std::os::unix::fs::OpenOptionsExt;
    let rel = format!("{GRUB_DIR}/{name}");
    let path = resolve_in_root(root, Path::new(&rel), false).map_err(io_error(&rel))?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_error(&rel))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(&rel))?;
    if bytes.len() as u64 > max {
        return Err(StepError::NonRetryable(format!(
            "/{rel} is larger than {max} bytes: it does not fit where GRUB's images go"
        )));
    }
    Ok(bytes)
}

/// Offset of the LBA of the core image in `boot.img`
/// (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
const KERNEL_SECTOR: usize = 0x5c;
/// Offset of the boot drive byte in `boot.img` (`GRUB_BOOT_MACHINE_BOOT_DRIVE`;
/// 0xff: the drive the BIOS booted from).
const BOOT_DRIVE: usize = 0x64;
/// End of the boot code in an MBR (the disk signature and table follow).
const BOOT_CODE_END: usize = 440;

/// Embeds GRUB in `disk` (the first sectors of the raw disk and the core
/// image's area), as `grub-bios-setup` does for a contiguous core image:
/// `boot.img`'s code goes into the MBR (the partition table is kept) with
/// the core image's first sector patched in; the core image's first
/// sector (`diskboot.img`) gets the one block list entry that loads the
/// rest of it. Returns (MBR boot code, core image at `core_sector`).
pub(crate) fn embed_grub(
    mbr: &[u8; 512],
    boot_img: &[u8],
    core_img: &[u8],
    core_sector: u64,
) -> Result<([u8; 512], Vec<u8>), String> {
    if boot_img.len() != 512 {
        return Err(format!(
            "boot.img has {} bytes, 512 expected",
            boot_img.len()
        ));
    }
    if core_img.len() < 512 || core_img.len() as u64 > CORE_MAX {
        return Err(format!(
            "core.img has {} bytes (between 512 and {CORE_MAX} expected)",
            core_img.len()
        ));
    }
    let mut out = *mbr;
    out[..BOOT_CODE_END].copy_from_slice(&boot_img[..BOOT_CODE_END]);
    // The BIOS parameter block area stays as the disk had it.
    out[3..0x5a].copy_from_slice(&mbr[3..0x5a]);
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    out[BOOT_DRIVE] = 0xff;
    let mut core = core_img.to_vec();
    let sectors = core.len().div_ceil(512);
    core.resize(sectors * 512, 0);
    // struct grub_pc_bios_boot_blocklist { u64 start; u16 len; u16 segment; }
    // at the end of diskboot.img.
    let at = 512 - 12;
    let rest = u16::try_from(sectors - 1).map_err(|_| "core.img is too large".to_string())?;
    core[at..at + 8].copy_from_slice(&(core_sector + 1).to_le_bytes());
    core[at + 8..at + 10].copy_from_slice(&rest.to_le_bytes());
    Ok((out, core))
}

/// Where the core image goes, for the capture.
pub(crate) fn core_offset(layout: &DiskLayout) -> u64 {
    core_sector(layout) * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(table: DiskTable, size_mb: Option<u32>) -> DiskSettings {
        DiskSettings { table, size_mb }
    }

    #[test]
    fn gpt_plans_bios_boot_esp_and_root_filling_the_disk() {
        let l = plan(&settings(DiskTable::Gpt, Some(2048)), 0);
        let p = &l.table.partitions;
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].offset, p[0].size, p[0].kind.as_str()),
            (MIB, MIB, BIOS_BOOT)
        );
        assert_eq!((p[1].offset, p[1].fs_type.as_str()), (2 * MIB, "vfat"));
        assert_eq!(p[2].offset, 66 * MIB);
        assert_eq!(disk_size(&l), 2048 * MIB);
        assert_eq!(l.mounted[0].partition, p[2]);
        assert_eq!(core_offset(&l), MIB);
        let script = sfdisk_script(&l);
        assert!(script.starts_with("label: gpt\n"), "{script}");
        assert!(
            script.contains(&format!(
                "start=135168, size={}, type={LINUX_FS}, uuid={}",
                (2048 - 67) * 2048,
                p[2].partuuid
            )),
            "{script}"
        );
    }

    #[test]
    fn mbr_plans_one_bootable_root_and_the_gap_for_grub() {
        let l = plan(&settings(DiskTable::Mbr, None), 3000 * MIB);
        let p = &l.table.partitions;
        assert_eq!(p.len(), 1);
        assert!(disk_size(&l) >= 3000 * MIB + 750 * MIB, "{}", disk_size(&l));
        assert_eq!(core_offset(&l), 512);
        let script = sfdisk_script(&l);
        let id = p[0].partuuid.trim_end_matches("-01");
        assert!(script.contains(&format!("label-id: 0x{id}\n")), "{script}");
        assert!(script.contains("type=83, bootable"), "{script}");
        assert_eq!(
            plan(&settings(DiskTable::Mbr, None), 0).mounted[0]
                .partition
                .size,
            1022 * MIB
        );
    }

    #[test]
    fn grub_is_embedded_like_grub_bios_setup_does() {
        let mut mbr = [0u8; 512];
        mbr[446..512].fill(0xab);
        mbr[440..446].copy_from_slice(b"DISKID");
        let boot: Vec<u8> = (0..512).map(|i| (i % 251) as u8).collect();
        let mut core = vec![0x11u8; 3 * 512 + 7];
        core[500..504].copy_from_slice(&2u32.to_le_bytes());
        let (out, placed) = embed_grub(&mbr, &boot, &core, 2048).unwrap();
        assert_eq!(&out[440..512], &mbr[440..512], "signature and table kept");
        assert_eq!(&out[..3], &boot[..3]);
        assert_eq!(&out[0x5a..0x5c], &boot[0x5a..0x5c]);
        assert_eq!(
            u64::from_le_bytes(out[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(out[0x64], 0xff);
        assert_eq!(placed.len(), 4 * 512);
        assert_eq!(
            u64::from_le_bytes(placed[500..508].try_into().unwrap()),
            2049
        );
        assert_eq!(u16::from_le_bytes(placed[508..510].try_into().unwrap()), 3);
        assert!(embed_grub(&mbr, &boot[..100], &core, 1).is_err());
        assert!(embed_grub(&mbr, &boot, &vec![0; MIB as usize], 1).is_err());
    }
}
