//! The qemu builder with `disk_image: true`: a local build on the disk
//! `iso_url` names (the tripleo path: a qcow2 guest image customised into
//! another qcow2).
//!
//! - `iso_url` (or the first of `iso_urls`) becomes `base.path`, relative
//!   to the template's directory; `file://` URLs are read as paths, other
//!   URLs are refused (download the disk first).
//! - `iso_checksum`: `none`, or `sha256:HEX` (bare hex too), checked
//!   against the disk when the template is loaded; other kinds are refused.
//! - `memory` and `cpus` become the sandbox's `builder.memory_mb` and
//!   `builder.cpus`; the provisioners have network (`builder.network`), as
//!   Packer's VM has user-mode networking.
//! - the name is `bakehouse_name`, else `vm_name` less its extension, else
//!   `packer-BUILD_NAME`, as Packer names the disk.
//! - `disk_size` (MiB, or a number with `K`, `M`, `G` or `T`) becomes
//!   `builder.disk_size`: the disk grows and its last partition with it,
//!   unless `skip_resize_disk` is set. Unlike Packer, an unset `disk_size`
//!   keeps the base's size rather than growing it to 40960M.
//! - `format` must be `qcow2` (a local build writes a compressed qcow2);
//!   options about booting the VM are accepted and ignored
//!   ([`super::super::packer_ignored::QEMU`]).

use std::path::Path;

use super::{package_name, Converter, B};
use crate::recipe::locate::field_key;
use crate::recipe::model::{Base, BuilderSettings};
use crate::recipe::packer_types::{NumberOrString, Qemu};

impl Converter<'_> {
    pub(super) fn qemu_name(&mut self, q: &Qemu) -> String {
        if let Some(n) = self.declared_name() {
            return n;
        }
        // Packer names the disk `packer-BUILD_NAME` without `vm_name`.
        let default = format!("packer-{}", self.build_name);
        let written = q.vm_name.as_ref().unwrap_or(&default);
        let field = field_key(B, "vm_name");
        self.map("name", &field);
        let stable = self.stable(written);
        let stem = [".qcow2", ".raw", ".img"]
            .iter()
            .find_map(|ext| stable.strip_suffix(ext))
            .unwrap_or(&stable);
        let name = package_name(stem);
        if name.is_empty() {
            self.problems.push((
                field,
                format!("cannot derive a recipe name from {written:?}; declare a `bakehouse_name` variable"),
            ));
        }
        name
    }

    pub(super) fn qemu_base(&mut self, q: &Qemu) -> Base {
        if !q.disk_image {
            self.problems.push((
                field_key(B, "disk_image"),
                "bakehouse builds on an existing disk, not from an installer ISO: set `disk_image: true` and `iso_url` to a qcow2 or raw disk (a recipe with `builder.disk` makes one from a tarball)".to_string(),
            ));
        }
        let (field, url) = match (&q.iso_url, q.iso_urls.first()) {
            (Some(url), None) => (field_key(B, "iso_url"), url),
            (None, Some(url)) => (format!("{}[0]", field_key(B, "iso_urls")), url),
            (found, _) => {
                let which = if found.is_some() {
                    "not both"
                } else {
                    "one is required"
                };
                self.problems.push((
                    B.to_string(),
                    format!("set `iso_url` or `iso_urls` to the base disk ({which})"),
                ));
                return Base::Path(String::new());
            }
        };
        self.map("base.path", &field);
        let url = self.render(&field, url);
        let path = match url.strip_prefix("file://") {
            Some(path) => path.to_string(),
            None if url.contains("://") => {
                self.problems.push((
                    field,
                    format!("{url}: bakehouse reads the base disk from this machine; download it and set the file's path"),
                ));
                return Base::Path(String::new());
            }
            None => url,
        };
        if let Some(checksum) = &q.iso_checksum {
            let field = field_key(B, "iso_checksum");
            let checksum = self.render(&field, checksum);
            self.check_checksum(&field, &checksum, &path);
        }
        Base::Path(path)
    }

    /// Checks the disk at `path` (relative to the template) against
    /// `iso_checksum`; a missing disk is reported by the base check.
    fn check_checksum(&mut self, field: &str, checksum: &str, path: &str) {
        let checksum = checksum.trim().to_ascii_lowercase();
        if checksum == "none" {
            return;
        }
        let hex = checksum.strip_prefix("sha256:").unwrap_or(&checksum);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.problems.push((
                field.to_string(),
                format!("{checksum:?}: give `none` or a sha256 (`sha256:` and 64 hex digits); other kinds are not checked"),
            ));
            return;
        }
        let disk = Path::new(&self.dir).join(path);
        if !disk.is_file() {
            return;
        }
        match crate::registry::locate::file_digest(&disk) {
            Ok(found) if found == format!("sha256:{hex}") => {}
            Ok(found) => self.problems.push((
                field.to_string(),
                format!("{path} has {found}, not the sha256:{hex} the template expects"),
            )),
            Err(e) => self
                .problems
                .push((field.to_string(), format!("{path}: {e}"))),
        }
    }

    pub(super) fn qemu_builder(&mut self, q: &Qemu) -> BuilderSettings {
        if let Some(format) = &q.format {
            if format != "qcow2" {
                self.problems.push((
                    field_key(B, "format"),
                    format!("format {format:?}: a local build writes a compressed qcow2 (`qemu-img convert -O raw` it afterwards)"),
                ));
            }
        }
        self.map("builder.memory_mb", &field_key(B, "memory"));
        self.map("builder.cpus", &field_key(B, "cpus"));
        self.map("builder.disk_size", &field_key(B, "disk_size"));
        let disk_size = match &q.disk_size {
            Some(size) if !q.skip_resize_disk => self.disk_mib(&field_key(B, "disk_size"), size),
            _ => None,
        };
        BuilderSettings {
            disk_size,
            // Packer's qemu VM has user-mode networking.
            network: true,
            memory_mb: q
                .memory
                .as_ref()
                .and_then(|m| self.whole_number(&field_key(B, "memory"), m)),
            cpus: q
                .cpus
                .as_ref()
                .and_then(|c| self.whole_number(&field_key(B, "cpus"), c)),
            ..BuilderSettings::default()
        }
    }

    /// Packer's `disk_size` in MiB: a number of MiB, or digits with a `K`,
    /// `M`, `G` or `T` suffix (binary units, as Packer reads them).
    fn disk_mib(&mut self, field: &str, size: &NumberOrString) -> Option<u32> {
        let text = match size {
            NumberOrString::Number(n) => n.to_string(),
            NumberOrString::String(s) => self.render(field, s),
        };
        let text = text.trim();
        let (digits, unit) = match text.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
            _ => (text, 'M'),
        };
        let kib: Option<u64> = digits.parse::<u64>().ok().and_then(|n| match unit {
            'K' => Some(n),
            'M' => n.checked_mul(1 << 10),
            'G' => n.checked_mul(1 << 20),
            'T' => n.checked_mul(1 << 30),
            _ => None,
        });
        match kib.and_then(|k| u32::try_from(k.div_ceil(1 << 10)).ok()) {
            Some(mib) => Some(mib),
            None => {
                self.problems.push((
                    field.to_string(),
                    format!("{text:?} is not a size (MiB, or a number with K, M, G or T)"),
                ));
                None
            }
        }
    }
}
