//! The layout of a whole-disk base: its partition table (from `sfdisk
//! --json`), what each partition holds (from `blkid -p`), which ext
//! filesystem is the root and where the others are mounted (from the
//! image's own `/etc/fstab`: `UUID=`, `LABEL=`, `PARTUUID=`). Pure parsing
//! here; the tools run in the tool sandbox (see `disk`).
//!
//! Supported: MBR (`dos`) and GPT tables; ext2/3/4 filesystems are read
//! into the tree and written back at capture, and so are FAT filesystems
//! the fstab mounts (the EFI system partition); BIOS-boot partitions, swap,
//! unmounted partitions and anything unformatted are kept byte for byte. LUKS, LVM, xfs, btrfs and other filesystems under an fstab
//! mount are refused with an error naming the partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One partition as `sfdisk --json` reports it.
#[derive(Clone, Debug, Deserialize)]
struct SfdiskPartition {
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct SfdiskTable {
    label: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "default_sector")]
    sectorsize: u64,
    #[serde(default)]
    partitions: Vec<SfdiskPartition>,
}

fn default_sector() -> u64 {
    512
}

#[derive(Clone, Debug, Deserialize)]
struct SfdiskOutput {
    partitiontable: SfdiskTable,
}

/// A partition with what `blkid` found in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Partition {
    /// 1-based number in the table.
    pub number: usize,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type (GPT type GUID or MBR type byte).
    pub kind: String,
    /// `PARTUUID` as the kernel names it.
    pub partuuid: String,
    /// Filesystem or content type (`ext4`, `vfat`, `swap`, `crypto_LUKS`,
    /// ...), empty when blkid found nothing.
    pub fs_type: String,
    /// Filesystem UUID.
    pub uuid: String,
    /// Filesystem label.
    pub label: String,
    /// Filesystem version as blkid reports it (`FAT32`, `FAT16`, `1.0`).
    #[serde(default)]
    pub version: String,
}

impl Partition {
    /// Whether the partition holds an ext filesystem bakehouse reads.
    pub fn is_ext(&self) -> bool {
        matches!(self.fs_type.as_str(), "ext2" | "ext3" | "ext4")
    }

    /// Whether `spec` (an fstab source) names this partition.
    pub fn matches(&self, spec: &str) -> bool {
        let eq = |a: &str, b: &str| !a.is_empty() && a.eq_ignore_ascii_case(b);
        match spec.split_once('=') {
            Some(("UUID", v)) => eq(&self.uuid, v),
            Some(("LABEL", v)) => self.label == v && !v.is_empty(),
            Some(("PARTUUID", v)) => eq(&self.partuuid, v),
            _ => false,
        }
    }

    /// How to name it in messages.
    pub fn describe(&self) -> String {
        format!(
            "partition {} ({}{})",
            self.number,
            if self.fs_type.is_empty() {
                "no filesystem"
            } else {
                &self.fs_type
            },
            if self.uuid.is_empty() {
                String::new()
            } else {
                format!(", UUID={}", self.uuid)
            }
        )
    }
}

/// A partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Table {
    /// `gpt` or `dos`.
    pub label: String,
    /// Sector size in bytes.
    pub sector_size: u64,
    /// The partitions, each with its offset (blkid results filled later).
    pub partitions: Vec<Partition>,
}

/// Parses `sfdisk --json` output; `None` when it is not a table bakehouse
/// reads (the caller then treats the image as a bare filesystem).
pub(crate) fn parse_sfdisk(json: &str) -> Result<Table, String> {
    let out: SfdiskOutput =
        serde_json::from_str(json).map_err(|e| format!("unreadable partition table: {e}"))?;
    let t = out.partitiontable;
    if !matches!(t.label.as_str(), "gpt" | "dos") {
        return Err(format!(
            "partition table {:?} is not supported (MBR or GPT)",
            t.label
        ));
    }
    let disk_id =
        t.id.unwrap_or_default()
            .trim_start_matches("0x")
            .to_ascii_lowercase();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| Partition {
            number: i + 1,
            offset: p.start * t.sectorsize,
            size: p.size * t.sectorsize,
            kind: p.kind.clone(),
            partuuid: match (&p.uuid, t.label.as_str()) {
                (Some(u), _) => u.to_ascii_lowercase(),
                (None, "dos") => format!("{disk_id}-{:02x}", i + 1),
                _ => String::new(),
            },
            fs_type: String::new(),
            uuid: String::new(),
            label: String::new(),
            version: String::new(),
        })
        .collect();
    Ok(Table {
        label: t.label,
        sector_size: t.sectorsize,
        partitions,
    })
}

/// Splits tool output made of sections, each opened by a `@@ <number>`
/// line (a partition's number), into (number, the section's text).
pub(crate) fn sections(output: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut current = false;
    for line in output.lines() {
        if let Some(n) = line.strip_prefix("@@ ") {
            current = match n.trim().parse() {
                Ok(n) => {
                    out.push((n, String::new()));
                    true
                }
                Err(_) => false,
            };
        } else if let (true, Some((_, text))) = (current, out.last_mut()) {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// Fills in `blkid -p -o export` results, given as [`sections`] of that
/// partition's `KEY=value` lines.
pub(crate) fn apply_blkid(table: &mut Table, output: &str) {
    for (n, text) in sections(output) {
        let Some(p) = table.partitions.iter_mut().find(|p| p.number == n) else {
            continue;
        };
        for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
            match key {
                "TYPE" => p.fs_type = value.to_string(),
                "UUID" => p.uuid = value.to_string(),
                "LABEL" => p.label = value.to_string(),
                "VERSION" => p.version = value.to_string(),
                _ => {}
            }
        }
    }
}

/// One line of an fstab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FstabEntry {
    /// Line number (1-based).
    pub line: usize,
    /// Source (`UUID=...`, `/dev/...`).
    pub spec: String,
    /// Mount point.
    pub mountpoint: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Options.
    pub options: String,
}

/// The entries of an fstab (comments and short lines skipped).
pub(crate) fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| FstabEntry {
                line: i + 1,
                spec: f[0].to_string(),
                mountpoint: f[1].to_string(),
                fs_type: f[2].to_string(),
                options: f.get(3).unwrap_or(&"defaults").to_string(),
            })
        })
        .collect()
}

/// An ext filesystem of the disk and where it is mounted in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mounted {
    /// The partition.
    pub partition: Partition,
    /// Its mount point (`/` for the root).
    pub mountpoint: String,
    /// How the base's filesystem was made (capture makes it again alike).
    #[serde(default)]
    pub ext: ExtParams,
}

/// The parameters of an ext filesystem that its readers depend on: the
/// bootloader of the image reads `/boot` with its own ext driver, which
/// may not know features a newer `mke2fs` enables by default, so capture
/// recreates the base's feature set, block size and inode size exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExtParams {
    /// `Filesystem features:` of `debugfs -R stats`.
    pub features: Vec<String>,
    /// Block size in bytes.
    pub block_size: u64,
    /// Inode size in bytes.
    pub inode_size: u64,
    /// Number of inodes.
    pub inode_count: u64,
}

/// Features that describe a filesystem's state rather than how it was made
/// (`mke2fs -O` refuses them).
const STATE_FEATURES: [&str; 3] = ["needs_recovery", "orphan_present", "test_fs"];

impl ExtParams {
    /// Reads `debugfs -R stats` output.
    pub fn parse_stats(text: &str) -> ExtParams {
        let mut p = ExtParams::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "Filesystem features" => {
                    p.features = value
                        .split_whitespace()
                        .filter(|f| !STATE_FEATURES.contains(f))
                        .map(str::to_string)
                        .collect();
                }
                "Block size" => p.block_size = value.parse().unwrap_or(0),
                "Inode size" => p.inode_size = value.parse().unwrap_or(0),
                "Inode count" => p.inode_count = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        p
    }

    /// The `mke2fs -O` argument that sets exactly these features.
    pub fn feature_arg(&self) -> String {
        std::iter::once("none")
            .chain(self.features.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What is read into the tree and written back at capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiskLayout {
    /// The table.
    pub table: Table,
    /// The ext filesystems in mount order (root first, then by depth).
    pub mounted: Vec<Mounted>,
    /// The FAT filesystems it mounts (the EFI system partition at
    /// `/boot/efi`): read into the tree with mtools and made again at
    /// capture with `mkfs.fat`, with the same volume id, label and FAT size.
    #[serde(default)]
    pub fat: Vec<Mounted>,
}

/// Refuses partitions bakehouse cannot keep safely.
pub(crate) fn check_supported(table: &Table) -> Result<(), String> {
    for p in &table.partitions {
        match p.fs_type.as_str() {
            "crypto_LUKS" => {
                return Err(format!("{} is LUKS-encrypted: not supported", p.describe()))
            }
            "LVM2_member" => {
                return Err(format!(
                    "{} is an LVM physical volume: not supported",
                    p.describe()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The root and the other ext mounts, from the root's fstab. `fstab_of`
/// reads `/etc/fstab` of a candidate (`None` when it has none).
pub(crate) fn resolve_mounts(
    table: &Table,
    mut fstab_of: impl FnMut(&Partition) -> Option<String>,
) -> Result<DiskLayout, String> {
    check_supported(table)?;
    let candidates: Vec<&Partition> = table.partitions.iter().filter(|p| p.is_ext()).collect();
    let mut root = None;
    for p in &candidates {
        let Some(text) = fstab_of(p) else { continue };
        let entries = parse_fstab(&text);
        let names_itself = entries
            .iter()
            .any(|e| e.mountpoint == "/" && p.matches(&e.spec));
        if names_itself || candidates.len() == 1 {
            root = Some(((*p).clone(), entries));
            break;
        }
    }
    let Some((root, entries)) = root else {
        let found: Vec<String> = table.partitions.iter().map(Partition::describe).collect();
        return Err(format!(
            "no root filesystem found (an ext2/3/4 partition with /etc/fstab naming it as /); the disk has: {}",
            found.join("; ")
        ));
    };
    let mut mounted = vec![Mounted {
        partition: root.clone(),
        mountpoint: "/".into(),
        ext: ExtParams::default(),
    }];
    let mut fat = Vec::new();
    for e in &entries {
        if e.mountpoint == "/" || !e.mountpoint.starts_with('/') {
            continue;
        }
        if e.mountpoint.split('/').any(|c| c == "." || c == "..") {
            return Err(format!(
                "/etc/fstab line {}: mount point {} has a . or .. component",
                e.line, e.mountpoint
            ));
        }
        let by_name = ["UUID=", "LABEL=", "PARTUUID="]
            .iter()
            .any(|p| e.spec.starts_with(p));
        let target = table.partitions.iter().find(|p| p.matches(&e.spec));
        match target {
            Some(p) if p.is_ext() && p.number == root.number => {}
            Some(p) if p.is_ext() => mounted.push(Mounted {
                partition: p.clone(),
                mountpoint: e.mountpoint.clone(),
                ext: ExtParams::default(),
            }),
            Some(p) if p.fs_type == "vfat" => fat.push(Mounted {
                partition: p.clone(),
                mountpoint: e.mountpoint.clone(),
                ext: ExtParams::default(),
            }),
            Some(p) if p.fs_type == "swap" => {}
            Some(p) => {
                return Err(format!(
                "/etc/fstab line {}: {} on {} is {}: only ext2/3/4 filesystems can be provisioned",
                e.line,
                e.mountpoint,
                e.spec,
                p.describe()
            ))
            }
            None if by_name && !e.options.split(',').any(|o| o == "nofail") => {
                return Err(format!(
                    "/etc/fstab line {}: {} names {}, which no partition of the disk has",
                    e.line, e.mountpoint, e.spec
                ))
            }
            None => {}
        }
    }
    mounted[1..].sort_by_key(|m| m.mountpoint.matches('/').count());
    Ok(DiskLayout {
        table: table.clone(),
        mounted,
        fat,
    })
}

/// Partition numbers by mount point, for messages and tests.
pub(crate) fn mount_map(layout: &DiskLayout) -> BTreeMap<String, usize> {
    layout
        .mounted
        .iter()
        .map(|m| (m.mountpoint.clone(), m.partition.number))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT: &str = r#"{"partitiontable": {"label": "gpt", "id": "218BD7FD-FD1E", "device": "d", "unit": "sectors", "sectorsize": 512,
      "partitions": [
        {"node": "d1", "start": 2048, "size": 2048, "type": "21686148-6449-6E6F-744E-656564454649", "uuid": "AAA-1"},
        {"node": "d2", "start": 4096, "size": 8192, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "uuid": "AAA-2"},
        {"node": "d3", "start": 12288, "size": 8192, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "AAA-3"},
        {"node": "d4", "start": 20480, "size": 60000, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "AAA-4"}]}}"#;

    const BLKID: &str = "@@ 2\nTYPE=vfat\nUUID=ABCD-EF01\n@@ 3\nTYPE=ext4\nUUID=boot-uuid\nLABEL=boot\n@@ 4\nTYPE=ext4\nUUID=root-uuid\nLABEL=root\n";

    fn table() -> Table {
        let mut t = parse_sfdisk(GPT).unwrap();
        apply_blkid(&mut t, BLKID);
        t
    }

    #[test]
    fn gpt_partitions_get_offsets_partuuids_and_filesystems() {
        let t = table();
        assert_eq!(t.label, "gpt");
        assert_eq!(t.partitions[3].offset, 20480 * 512);
        assert_eq!(t.partitions[3].partuuid, "aaa-4");
        assert_eq!(
            (
                t.partitions[2].fs_type.as_str(),
                t.partitions[2].label.as_str()
            ),
            ("ext4", "boot")
        );
        assert_eq!(t.partitions[0].fs_type, "");
    }

    #[test]
    fn mbr_partuuids_follow_the_disk_id() {
        let t = parse_sfdisk(r#"{"partitiontable": {"label": "dos", "id": "0x1A2B3C4D", "partitions": [{"start": 2048, "size": 10, "type": "83"}]}}"#).unwrap();
        assert_eq!(t.partitions[0].partuuid, "1a2b3c4d-01");
        assert!(parse_sfdisk(r#"{"partitiontable": {"label": "sun"}}"#).is_err());
    }

    #[test]
    fn the_root_is_the_ext_filesystem_its_fstab_names_and_boot_is_mounted() {
        let fstab = "# comment\nUUID=root-uuid / ext4 defaults 0 1\nLABEL=boot /boot ext4 defaults 0 2\nPARTUUID=aaa-2 /boot/efi vfat umask=0077 0 1\n/dev/vdb /mnt auto nofail 0 2\ntmpfs /tmp tmpfs defaults 0 0\n";
        let layout =
            resolve_mounts(&table(), |p| (p.number == 4).then(|| fstab.to_string())).unwrap();
        assert_eq!(
            mount_map(&layout),
            BTreeMap::from([("/".to_string(), 4), ("/boot".to_string(), 3)])
        );
        assert_eq!(layout.mounted[0].mountpoint, "/");
        assert_eq!(layout.fat.len(), 1);
        assert_eq!(
            (
                layout.fat[0].mountpoint.as_str(),
                layout.fat[0].partition.number
            ),
            ("/boot/efi", 2)
        );
    }

    #[test]
    fn sections_follow_their_markers_and_skip_text_before_the_first() {
        let out = sections("noise\n@@ 2\na\nb\n@@ x\nlost\n@@ 4\n");
        assert_eq!(out, vec![(2, "a\nb\n".to_string()), (4, String::new())]);
    }

    #[test]
    fn ext_parameters_come_from_debugfs_stats_without_state_flags() {
        let stats = "Filesystem volume name:   root\nInode count:              65536\nBlock size:               4096\nInode size:\t          256\nFilesystem features:      has_journal ext_attr extent 64bit needs_recovery metadata_csum\n";
        let p = ExtParams::parse_stats(stats);
        assert_eq!(
            (p.block_size, p.inode_size, p.inode_count),
            (4096, 256, 65536)
        );
        assert_eq!(
            p.feature_arg(),
            "none,has_journal,ext_attr,extent,64bit,metadata_csum"
        );
    }

    #[test]
    fn missing_roots_missing_uuids_luks_and_lvm_are_refused() {
        let none = resolve_mounts(&table(), |_| None).unwrap_err();
        assert!(
            none.contains("no root filesystem found") && none.contains("vfat"),
            "{none}"
        );
        let fstab = "UUID=root-uuid / ext4 defaults 0 1\nUUID=gone /srv ext4 defaults 0 2\n";
        let missing =
            resolve_mounts(&table(), |p| (p.number == 4).then(|| fstab.to_string())).unwrap_err();
        assert!(
            missing.contains("line 2") && missing.contains("UUID=gone"),
            "{missing}"
        );
        let dots =
            "UUID=root-uuid / ext4 defaults 0 1\nLABEL=boot /boot/../../etc ext4 defaults 0 2\n";
        let err =
            resolve_mounts(&table(), |p| (p.number == 4).then(|| dots.to_string())).unwrap_err();
        assert!(err.contains("line 2") && err.contains(".."), "{err}");
        let xfs = "UUID=root-uuid / ext4 defaults 0 1\nUUID=ABCD-EF01 /data xfs defaults 0 2\n";
        let mut t = table();
        t.partitions[1].fs_type = "xfs".into();
        let err = resolve_mounts(&t, |p| (p.number == 4).then(|| xfs.to_string())).unwrap_err();
        assert!(err.contains("only ext2/3/4"), "{err}");
        for kind in ["crypto_LUKS", "LVM2_member"] {
            let mut t = table();
            t.partitions[0].fs_type = kind.into();
            let err = resolve_mounts(&t, |_| None).unwrap_err();
            assert!(
                err.contains("partition 1") && err.contains("not supported"),
                "{err}"
            );
        }
    }
}
