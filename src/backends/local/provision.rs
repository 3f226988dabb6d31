//! The provision step of a local build: each provisioner in the sandbox;
//! file uploads copied into the tree without leaving it. (The recipe's
//! `test` commands run later, against the captured image: `test_phase`.)

use std::fs;
use std::path::{Path, PathBuf};

use crate::backends::salt::salt_script;
use crate::pipeline::{BuildContext, StepError};
use crate::recipe::{LoadedRecipe, Provisioner, ShellProvisioner, ShellSource};

use super::fsutil::{blocking, io_error, remove_path, resolve_in_root, sh_quote};
use super::idmap::{self, Shift};
use super::sandbox::{RunResult, Sandbox, Stage};

/// Runs the provisioners not run yet (a retried step skips the ones that
/// finished: `state/provisioned` counts them).
pub(crate) async fn provision(
    ctx: &BuildContext,
    sandbox: &Sandbox,
    state_dir: &Path,
) -> Result<(), StepError> {
    let loaded = ctx.recipe()?;
    let recipe = &loaded.recipe;
    let done_file = state_dir.join("provisioned");
    let done: usize = fs::read_to_string(&done_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    for (index, provisioner) in recipe.provisioners.iter().enumerate().skip(done) {
        let label = format!("provisioners[{index}] ({})", describe(provisioner));
        tracing::info!(build = %ctx.build_id, provisioner = %label, "running");
        let started = std::time::Instant::now();
        let outcome = run_one(ctx, loaded, sandbox, index, provisioner, &label).await?;
        if let Some(result) = &outcome {
            result.record(ctx, &label).await?;
        }
        tracing::info!(
            build = %ctx.build_id,
            provisioner = %label,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "done"
        );
        fs::write(&done_file, (index + 1).to_string()).map_err(io_error(done_file.display()))?;
    }
    Ok(())
}

/// What a provisioner does, for messages: `shell inline`,
/// `shell script scripts/setup.sh`, `file files/motd -> /etc/motd`, ...
pub(crate) fn describe(p: &Provisioner) -> String {
    match p {
        Provisioner::Shell(s) => match &s.source {
            ShellSource::Inline(_) => "shell inline".to_string(),
            ShellSource::Script(path) => format!("shell script {path}"),
        },
        Provisioner::Powershell(_) => "powershell".to_string(),
        Provisioner::File(f) => format!("file {} -> {}", f.source, f.destination),
        Provisioner::Salt(s) => format!("salt state tree {}", s.state_tree),
        Provisioner::Ansible(a) => format!("ansible playbook {}", a.playbook),
    }
}

/// Runs one provisioner; `None` when nothing ran in the sandbox (a file
/// upload).
async fn run_one(
    ctx: &BuildContext,
    loaded: &LoadedRecipe,
    sandbox: &Sandbox,
    index: usize,
    provisioner: &Provisioner,
    label: &str,
) -> Result<Option<RunResult>, StepError> {
    let root = sandbox.root.clone();
    match provisioner {
        // `validate` refuses it in a Linux recipe and local builds refuse
        // Windows recipes at launch; this is the last line.
        Provisioner::Powershell(_) => Err(StepError::NonRetryable(format!(
            "{label}: powershell provisioners run on Windows images, which local builds do not bake"
        ))),
        Provisioner::Shell(shell) => {
            if !sandbox.has_shell() {
                return Err(StepError::BuildFailed(format!(
                    "{label}: the image has no /bin/sh"
                )));
            }
            let stage = Stage::create(&root, &format!("p{index}"))?;
            let result = match shell_argv(loaded, shell, &stage) {
                Ok(argv) => sandbox.run(label, &argv).await,
                Err(e) => Err(e),
            };
            stage.remove()?;
            result.map(Some)
        }
        Provisioner::File(file) => {
            let source = loaded.resolve(&file.source);
            let destination = file.destination.clone();
            let mode = parse_mode(file.mode.as_deref(), label)?;
            let copied = blocking(move || copy_into(&root, &source, &destination, mode)).await?;
            let _ = ctx.note(format!("{label}: copied {copied} file(s)")).await;
            tracing::info!(build = %ctx.build_id, provisioner = %label, copied, "uploaded");
            Ok(None)
        }
        Provisioner::Salt(salt) => {
            let mut trees = vec![(loaded.resolve(&salt.state_tree), "tree")];
            if let Some(pillar) = &salt.pillar_root {
                trees.push((loaded.resolve(pillar), "pillar"));
            }
            run_with_trees(sandbox, index, label, trees, |stage| {
                // pip in the image trusts what this machine trusts (a proxy
                // that inspects TLS included) for the bootstrap.
                let ca = match fs::read(HOST_CA_BUNDLE) {
                    Ok(bytes) if salt.bootstrap => {
                        Some(stage.write("host-ca.crt", &bytes, 0o644)?)
                    }
                    _ => None,
                };
                salt_script(salt, &sh_quote(stage.image_dir()), ca.as_deref())
                    .map_err(|e| StepError::NonRetryable(format!("{label}: {e}")))
            })
            .await
        }
        Provisioner::Ansible(ansible) => {
            let trees = vec![(loaded.resolve(&ansible.playbook_dir()), "playbook")];
            run_with_trees(sandbox, index, label, trees, |stage| {
                crate::backends::ansible::ansible_script(
                    ansible,
                    &sh_quote(&stage.image_path("playbook")),
                )
                .map_err(|e| StepError::NonRetryable(format!("{label}: {e}")))
            })
            .await
        }
    }
}

/// Runs a config-management provisioner (Salt, Ansible): `trees` (a host
/// directory and its name in the stage) copied into a new stage, then the
/// shell script `script` makes from the stage (which may write more files
/// into it). The script checks for its tool itself, on both backends. The
/// stage is removed on every path.
async fn run_with_trees(
    sandbox: &Sandbox,
    index: usize,
    label: &str,
    trees: Vec<(PathBuf, &str)>,
    script: impl FnOnce(&Stage) -> Result<String, StepError>,
) -> Result<Option<RunResult>, StepError> {
    let root = sandbox.root.clone();
    let stage = Stage::create(&root, &format!("p{index}"))?;
    let copies: Vec<_> = trees
        .into_iter()
        .map(|(from, name)| (from, stage.image_path(name)))
        .collect();
    let result = async {
        blocking(move || {
            copies
                .into_iter()
                .try_for_each(|(from, to)| copy_into(&root, &from, &to, None).map(|_| ()))
        })
        .await?;
        let argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), script(&stage)?];
        sandbox.run(label, &argv).await
    }
    .await;
    stage.remove()?;
    result.map(Some)
}

/// The build machine's CA certificates (Debian's bundle).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An octal mode from the recipe.
fn parse_mode(mode: Option<&str>, label: &str) -> Result<Option<u32>, StepError> {
    mode.map(|m| {
        u32::from_str_radix(m, 8)
            .map_err(|_| StepError::NonRetryable(format!("{label}: invalid mode {m:?}")))
    })
    .transpose()
}

/// The command running a shell provisioner: its script (inline commands
/// with `set -e`, or the script file) written into the stage, with the
/// provisioner's environment exported.
fn shell_argv(
    loaded: &LoadedRecipe,
    shell: &ShellProvisioner,
    stage: &Stage,
) -> Result<Vec<String>, StepError> {
    let exports: String = shell
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect();
    match &shell.source {
        ShellSource::Inline(lines) => {
            let script = format!("set -e\n{exports}{}\n", lines.join("\n"));
            let path = stage.write("inline.sh", script.as_bytes(), 0o700)?;
            Ok(vec!["/bin/sh".into(), path])
        }
        ShellSource::Script(written) => {
            let source = loaded.resolve(written);
            let content = fs::read(&source).map_err(io_error(source.display()))?;
            let name = Path::new(written)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into());
            let path = stage.write(&name, &content, 0o755)?;
            // A script with a `#!` line runs with its interpreter; others with sh.
            let run = if content.starts_with(b"#!") {
                "exec \"$0\""
            } else {
                "exec /bin/sh \"$0\""
            };
            Ok(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{exports}{run}"),
                path,
            ])
        }
    }
}

/// Copies `source` (a file, or a directory recursively) to `destination`
/// inside the tree at `root`, resolving every path as the chrooted image
/// would, so links in the tree never lead onto the host. A file goes to
/// `destination`, or into it when it ends in `/` or is a directory; a
/// directory's contents go into `destination`. `mode` applies to every
/// file copied (default: the source's mode). Returns the number of files.
pub(crate) fn copy_into(
    root: &Path,
    source: &Path,
    destination: &str,
    mode: Option<u32>,
) -> Result<usize, StepError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(source).map_err(io_error(source.display()))?;
    let dest = PathBuf::from(destination);
    if meta.is_file() {
        let mut target = resolve_in_root(root, &dest, true).map_err(io_error(destination))?;
        if destination.ends_with('/') || target.is_dir() {
            let name = source.file_name().unwrap_or_default();
            target =
                resolve_in_root(root, &dest.join(name), true).map_err(io_error(destination))?;
        }
        copy_file(
            source,
            &target,
            mode.unwrap_or(meta.permissions().mode() & 0o7777),
        )?;
        hand_over(root, &target)?;
        return Ok(1);
    }
    let mut count = 0;
    for entry in walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry =
            entry.map_err(|e| StepError::NonRetryable(format!("{}: {e}", source.display())))?;
        let rel = entry.path().strip_prefix(source).unwrap_or(Path::new(""));
        let in_image = dest.join(rel);
        let ft = entry.file_type();
        let target = resolve_in_root(root, &in_image, !ft.is_symlink())
            .map_err(io_error(in_image.display()))?;
        if ft.is_dir() {
            if !target.is_dir() {
                remove_path(&target).map_err(io_error(target.display()))?;
                fs::create_dir_all(&target).map_err(io_error(target.display()))?;
            }
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(io_error(entry.path().display()))?;
            remove_path(&target).map_err(io_error(target.display()))?;
            std::os::unix::fs::symlink(&link, &target).map_err(io_error(target.display()))?;
        } else if ft.is_file() {
            let source_mode = entry
                .metadata()
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            copy_file(entry.path(), &target, mode.unwrap_or(source_mode))?;
            count += 1;
        }
    }
    let top = resolve_in_root(root, &dest, true).map_err(io_error(destination))?;
    hand_over(root, &top)?;
    Ok(count)
}

/// Gives what the host just wrote at `target` (a file or a tree) and the
/// directories it may have created above it to root of the sandbox (see
/// [`super::idmap`]); entries the image already had keep their owners.
fn hand_over(root: &Path, target: &Path) -> Result<(), StepError> {
    idmap::shift_tree(target, Shift::In).map_err(io_error(target.display()))?;
    let mut dir = target.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        idmap::shift_one(d, Shift::In).map_err(io_error(d.display()))?;
        dir = d.parent();
    }
    Ok(())
}

/// Copies one file to a resolved target, creating its directory.
fn copy_file(source: &Path, target: &Path, mode: u32) -> Result<(), StepError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent.display()))?;
    }
    if fs::symlink_metadata(target).is_ok_and(|m| !m.is_file()) {
        remove_path(target).map_err(io_error(target.display()))?;
    }
    fs::copy(source, target).map_err(io_error(format!(
        "copying {} to {}",
        source.display(),
        target.display()
    )))?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(io_error(target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn uploads_follow_tree_links_inside_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("root");
        fs::create_dir_all(root.join("srv/etc")).unwrap();
        // An absolute link that would point at the host's /etc outside a chroot.
        symlink("/srv/etc", root.join("etc")).unwrap();
        let src = host.path().join("motd");
        fs::write(&src, "hello\n").unwrap();
        assert_eq!(copy_into(&root, &src, "/etc/motd", Some(0o600)).unwrap(), 1);
        let landed = root.join("srv/etc/motd");
        assert_eq!(fs::read_to_string(&landed).unwrap(), "hello\n");
        assert_eq!(
            fs::metadata(&landed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Into an existing directory (trailing slash): keeps the file name.
        assert_eq!(copy_into(&root, &src, "/opt/", None).unwrap(), 1);
        assert!(root.join("opt/motd").is_file());
    }

    #[test]
    fn directories_are_copied_recursively_with_links() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let src = host.path().join("app");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::write(src.join("README"), "x").unwrap();
        symlink("bin/run", src.join("start")).unwrap();
        assert_eq!(copy_into(&root, &src, "/opt/app", Some(0o750)).unwrap(), 2);
        assert_eq!(
            fs::read_to_string(root.join("opt/app/bin/run")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            fs::metadata(root.join("opt/app/README"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        assert_eq!(
            fs::read_link(root.join("opt/app/start")).unwrap(),
            PathBuf::from("bin/run")
        );
    }
}
