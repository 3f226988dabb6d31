//! Reading a qcow2 header to refuse images that are not self-contained: a
//! backing file (which `qemu-img` would open, at any host path the image
//! names, and copy into the output) or an external data file. Only the
//! header is read, by this code, before any tool touches the image.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// `QFI\xfb`.
const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bit of an external data file (qcow2 v3).
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Longest backing file name quoted in an error.
const MAX_NAME: usize = 200;

/// What makes a qcow2 image depend on other files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Qcow2Problem {
    /// Not a qcow2 image at all.
    #[error("not a qcow2 image (no QFI magic)")]
    NotQcow2,
    /// The header is cut short.
    #[error("the qcow2 header is truncated")]
    Truncated,
    /// It names a backing file.
    #[error("it names a backing file ({0:?}); bases must be self-contained (flatten it with `qemu-img convert -O qcow2 IN OUT`)")]
    BackingFile(String),
    /// Its data lives in an external file.
    #[error("its data is in an external data file; bases must be self-contained (flatten it with `qemu-img convert -O qcow2 IN OUT`)")]
    ExternalDataFile,
}

/// Checks that the qcow2 image at `path` is self-contained.
pub(crate) fn check_self_contained(path: &Path) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; 512];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    header.truncate(read);
    let mut name = Vec::new();
    let problem = inspect(&header, |offset, len| {
        use std::io::{Seek, SeekFrom};
        let len = len.min(MAX_NAME as u32) as usize;
        name = vec![0u8; len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut name))
            .map(|()| String::from_utf8_lossy(&name).into_owned())
            .unwrap_or_else(|_| "<unreadable>".into())
    });
    match problem {
        None => Ok(()),
        Some(p) => Err(p.to_string()),
    }
}

/// The problem of a header, if any; `name_at(offset, len)` reads the
/// backing file name for the message.
fn inspect(header: &[u8], mut name_at: impl FnMut(u64, u32) -> String) -> Option<Qcow2Problem> {
    let be64 = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    let be32 = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    if header.get(..4) != Some(&MAGIC[..]) {
        return Some(Qcow2Problem::NotQcow2);
    }
    let (Some(version), Some(backing_offset), Some(backing_len)) = (be32(4), be64(8), be32(16))
    else {
        return Some(Qcow2Problem::Truncated);
    };
    if backing_offset != 0 {
        return Some(Qcow2Problem::BackingFile(name_at(
            backing_offset,
            backing_len,
        )));
    }
    if version >= 3 {
        let Some(incompatible) = be64(72) else {
            return Some(Qcow2Problem::Truncated);
        };
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Some(Qcow2Problem::ExternalDataFile);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, backing: u64, incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[16..20].copy_from_slice(&5u32.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    #[test]
    fn self_contained_images_pass() {
        assert_eq!(inspect(&header(3, 0, 0), |_, _| String::new()), None);
        assert_eq!(
            inspect(&header(2, 0, INCOMPAT_DATA_FILE), |_, _| String::new()),
            None
        );
    }

    #[test]
    fn backing_and_data_files_and_garbage_are_refused() {
        assert_eq!(
            inspect(&header(3, 512, 0), |o, l| format!("{o}:{l}")),
            Some(Qcow2Problem::BackingFile("512:5".into()))
        );
        assert_eq!(
            inspect(&header(3, 0, INCOMPAT_DATA_FILE), |_, _| String::new()),
            Some(Qcow2Problem::ExternalDataFile)
        );
        assert_eq!(
            inspect(b"QFI\xfb\0\0", |_, _| String::new()),
            Some(Qcow2Problem::Truncated)
        );
        assert_eq!(
            inspect(b"hello", |_, _| String::new()),
            Some(Qcow2Problem::NotQcow2)
        );
        assert_eq!(
            inspect(&header(3, 0, 0)[..60], |_, _| String::new()),
            Some(Qcow2Problem::Truncated)
        );
    }
}
