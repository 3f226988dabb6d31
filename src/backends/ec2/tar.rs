//! A deterministic tar of a directory: enough to carry a tree (a Salt
//! state tree, an Ansible playbook directory, a file provisioner's
//! directory) inside one SSM command. Owners are root, times are zero,
//! entries are sorted, so the same tree gives the same bytes.

use std::fs;
use std::path::Path;

/// Archives the contents of `dir` (not `dir` itself). `file_mode`
/// overrides the mode of regular files; directories get 0755 and files
/// keep 0755/0644 from the executable bit otherwise.
pub(super) fn tar_dir(dir: &Path, file_mode: Option<u32>) -> Result<Vec<u8>, String> {
    tar_dirs(&[(dir.to_path_buf(), "")], file_mode)
}

/// Archives several directories, each under its `prefix` (`tree/`, ...).
pub(super) fn tar_dirs(
    dirs: &[(std::path::PathBuf, &str)],
    file_mode: Option<u32>,
) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for (dir, prefix) in dirs {
        walk(dir, prefix, file_mode, &mut builder)?;
    }
    builder.into_inner().map_err(|e| {
        let names: Vec<String> = dirs.iter().map(|(d, _)| d.display().to_string()).collect();
        format!("finishing the archive of {}: {e}", names.join(", "))
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    // Names of root only; the values cannot be too long.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

fn walk(
    dir: &Path,
    prefix: &str,
    file_mode: Option<u32>,
    out: &mut tar::Builder<Vec<u8>>,
) -> Result<(), String> {
    let failed = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let mut entries: Vec<(String, std::path::PathBuf)> = fs::read_dir(dir)
        .map_err(|e| failed(dir, e))?
        .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
        .collect::<Result<_, _>>()
        .map_err(|e| failed(dir, e))?;
    entries.sort();
    for (name, path) in entries {
        let rel = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(&path).map_err(|e| failed(&path, e))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| failed(&path, e))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            out.append_link(&mut h, &rel, &target)
                .map_err(|e| failed(&path, e))?;
        } else if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            out.append_data(&mut h, format!("{rel}/"), std::io::empty())
                .map_err(|e| failed(&path, e))?;
            walk(&path, &format!("{rel}/"), file_mode, out)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(|e| failed(&path, e))?;
            let mode = file_mode.unwrap_or(if executable(&meta) { 0o755 } else { 0o644 });
            let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
            out.append_data(&mut h, &rel, data.as_slice())
                .map_err(|e| failed(&path, e))?;
        }
    }
    Ok(())
}

fn executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const BLOCK: usize = 512;

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
    fn file_mode_override_and_long_paths() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), "a").unwrap();
        let bytes = tar_dir(src.path(), Some(0o600)).unwrap();
        assert_eq!(&bytes[100..108], b"0000600\0");

        // Longer than ustar's 100 + 155 bytes: a GNU long name entry.
        let deep = (0..6)
            .map(|i| format!("{i}{}", "d".repeat(60)))
            .collect::<Vec<_>>()
            .join("/");
        fs::create_dir_all(src.path().join(&deep)).unwrap();
        fs::write(src.path().join(&deep).join("leaf"), "leaf").unwrap();
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("long.tar");
        fs::write(&archive, tar_dir(src.path(), None).unwrap()).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(work.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            fs::read_to_string(work.path().join(&deep).join("leaf")).unwrap(),
            "leaf"
        );
        assert_eq!(fs::read_to_string(work.path().join("a")).unwrap(), "a");
    }
}
