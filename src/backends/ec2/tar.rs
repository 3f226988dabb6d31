//! A small deterministic ustar writer: enough to carry a directory (a Salt
//! state tree, an Ansible playbook directory, a file provisioner's
//! directory) inside one SSM command. Owners are root, times are zero,
//! entries are sorted, so the same tree gives the same bytes.

use std::fs;
use std::path::Path;

const BLOCK: usize = 512;

/// Archives the contents of `dir` (not `dir` itself). `file_mode`
/// overrides the mode of regular files; directories get 0755 and files
/// keep 0755/0644 from the executable bit otherwise.
pub(super) fn tar_dir(dir: &Path, file_mode: Option<u32>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    walk(dir, "", file_mode, &mut out)?;
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, file_mode: Option<u32>, out: &mut Vec<u8>) -> Result<(), String> {
    let mut entries: Vec<(String, std::path::PathBuf)> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort();
    for (name, path) in entries {
        let rel = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.extend_from_slice(&header(&rel, 0o777, 0, b'2', &target.to_string_lossy())?);
        } else if meta.is_dir() {
            out.extend_from_slice(&header(&format!("{rel}/"), 0o755, 0, b'5', "")?);
            walk(&path, &format!("{rel}/"), file_mode, out)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mode = file_mode.unwrap_or(if executable(&meta) { 0o755 } else { 0o644 });
            out.extend_from_slice(&header(&rel, mode, data.len() as u64, b'0', "")?);
            out.extend_from_slice(&data);
            let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
    }
    Ok(())
}

fn executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// Splits a path into the ustar `prefix` (≤ 155 bytes) and `name` (≤ 100).
fn split_name(path: &str) -> Result<(&str, &str), String> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    let too_long = || format!("path {path:?} is too long for a tar archive");
    let bytes = path.as_bytes();
    // The last slash that leaves a name of at most 100 bytes (ignoring a
    // trailing slash of a directory).
    let search_end = path.len().saturating_sub(1);
    (0..search_end)
        .rev()
        .filter(|&i| bytes[i] == b'/')
        .find(|&i| path.len() - i - 1 <= 100)
        .filter(|&i| i <= 155)
        .map(|i| (&path[..i], &path[i + 1..]))
        .ok_or_else(too_long)
}

fn octal(field: &mut [u8], value: u64) -> Result<(), String> {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    if text.len() > width {
        return Err(format!("value {value} does not fit a tar header field"));
    }
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
    Ok(())
}

fn put(field: &mut [u8], text: &str) -> Result<(), String> {
    if text.len() > field.len() {
        return Err(format!("{text:?} is too long for a tar header field"));
    }
    field[..text.len()].copy_from_slice(text.as_bytes());
    Ok(())
}

fn header(path: &str, mode: u32, size: u64, kind: u8, link: &str) -> Result<[u8; BLOCK], String> {
    let mut h = [0u8; BLOCK];
    let (prefix, name) = split_name(path)?;
    put(&mut h[0..100], name)?;
    octal(&mut h[100..108], u64::from(mode))?;
    octal(&mut h[108..116], 0)?;
    octal(&mut h[116..124], 0)?;
    octal(&mut h[124..136], size)?;
    octal(&mut h[136..148], 0)?;
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    put(&mut h[157..257], link)?;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put(&mut h[265..297], "root")?;
    put(&mut h[297..329], "root")?;
    put(&mut h[345..500], prefix)?;
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn system_tar_extracts_what_we_write() {
        let src = tempfile::tempdir().unwrap();
        let long_dir = "d".repeat(90);
        fs::create_dir_all(src.path().join("states/web").join(&long_dir)).unwrap();
        fs::write(src.path().join("top.sls"), "base:\n  '*':\n    - web\n").unwrap();
        fs::write(src.path().join("states/web/init.sls"), vec![b'x'; 1500]).unwrap();
        fs::write(
            src.path()
                .join("states/web")
                .join(&long_dir)
                .join("f".repeat(60)),
            "deep",
        )
        .unwrap();
        fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("top.sls", src.path().join("link.sls")).unwrap();

        let bytes = tar_dir(src.path(), None).unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        assert_eq!(bytes, tar_dir(src.path(), None).unwrap(), "deterministic");
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("a.tar");
        fs::write(&archive, &bytes).unwrap();
        let out = work.path().join("out");
        fs::create_dir(&out).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            fs::read_to_string(out.join("top.sls")).unwrap(),
            "base:\n  '*':\n    - web\n"
        );
        assert_eq!(
            fs::read(out.join("states/web/init.sls")).unwrap(),
            vec![b'x'; 1500]
        );
        assert_eq!(
            fs::read_to_string(out.join("states/web").join(&long_dir).join("f".repeat(60)))
                .unwrap(),
            "deep"
        );
        assert_eq!(
            fs::metadata(out.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::metadata(out.join("top.sls"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert_eq!(
            fs::read_link(out.join("link.sls"))
                .unwrap()
                .to_string_lossy(),
            "top.sls"
        );
    }

    #[test]
    fn file_mode_override_and_limits() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "a").unwrap();
        let bytes = tar_dir(src.path(), Some(0o600)).unwrap();
        assert_eq!(&bytes[100..108], b"0000600\0");
        assert!(split_name(&"x".repeat(101)).is_err());
        assert_eq!(split_name("a/b").unwrap(), ("", "a/b"));
    }
}
