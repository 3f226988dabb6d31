//! A recipe's jobs, written once for every backend: each provisioner
//! (`shell`, `powershell`, `file`, `salt`, `ansible`), each test command,
//! the clean script and the clean check. What differs between backends is
//! only how a [`Job`] is carried out (see [`super::Communicator`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::backends::{ansible, salt};
use crate::pipeline::StepError;
use crate::recipe::checks::{check_env_name, check_mode};
use crate::recipe::{
    clean_script, clean_windows, LoadedRecipe, OsKind, Provisioner, ShellProvisioner, ShellSource,
};

use super::{Destination, Job, Run, Shell, Source, Upload};

/// What the machine offers a job beyond the recipe.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// CA certificates the machine running bakehouse trusts, for pip in a
    /// Salt bootstrap (a local build shares this machine's network, and
    /// any TLS-inspecting proxy on it); none on EC2.
    pub host_ca: Option<Vec<u8>>,
}

/// The label of provisioner `index` in notes and errors: the recipe field
/// and what it does (`provisioners[1] (shell script scripts/setup.sh)`).
pub fn provisioner_label(index: usize, p: &Provisioner) -> String {
    format!("provisioners[{index}] ({})", describe(p))
}

/// What a provisioner does, for messages: `shell inline`,
/// `shell script scripts/setup.sh`, `file files/motd -> /etc/motd`, ...
pub fn describe(p: &Provisioner) -> String {
    match p {
        Provisioner::Shell(s) | Provisioner::Powershell(s) => match &s.source {
            ShellSource::Inline(_) => format!("{} inline", p.kind()),
            ShellSource::Script(path) => format!("{} script {path}", p.kind()),
        },
        Provisioner::File(f) => format!("file {} -> {}", f.source, f.destination),
        Provisioner::Salt(s) => format!("salt state tree {}", s.state_tree),
        Provisioner::Ansible(a) => format!("ansible playbook {}", a.playbook),
    }
}

fn refused(label: &str, message: impl std::fmt::Display) -> StepError {
    StepError::NonRetryable(format!("{label}: {message}"))
}

/// The job of provisioner `index` (0-based) of the recipe.
pub fn provisioner_job(
    recipe: &LoadedRecipe,
    index: usize,
    machine: &Machine,
) -> Result<Job, StepError> {
    let p = recipe
        .recipe
        .provisioners
        .get(index)
        .ok_or_else(|| StepError::NonRetryable(format!("no provisioners[{index}]")))?;
    let label = provisioner_label(index, p);
    let windows = recipe.recipe.os == OsKind::Windows;
    let (shell, uploads, run) = match p {
        Provisioner::Shell(_) | Provisioner::Salt(_) | Provisioner::Ansible(_) if windows => {
            return Err(refused(
                &label,
                "runs on Linux images only; this recipe has `os: windows` (use `type: powershell`)",
            ))
        }
        Provisioner::Powershell(_) if !windows => {
            return Err(refused(
                &label,
                "runs on Windows images only; this recipe has `os: linux` (use `type: shell`)",
            ))
        }
        Provisioner::Shell(s) => {
            let (uploads, run) = shell_parts(recipe, s, &label)?;
            (Shell::Sh, uploads, Some(run))
        }
        Provisioner::Powershell(s) => {
            let (uploads, run) = powershell_parts(recipe, s, &label)?;
            (Shell::PowerShell, uploads, Some(run))
        }
        Provisioner::File(f) => {
            let source = recipe.resolve(&f.source);
            let mode = f
                .mode
                .as_deref()
                .map(|m| parse_mode(&label, m))
                .transpose()?;
            let meta = std::fs::metadata(&source)
                .map_err(|e| refused(&label, format!("{}: {e}", f.source)))?;
            let upload = Upload {
                what: f.source.clone(),
                source: if meta.is_dir() {
                    Source::Tree(source)
                } else {
                    Source::File(source)
                },
                to: Destination::Machine {
                    path: f.destination.clone(),
                    mode,
                },
            };
            let shell = if windows {
                Shell::PowerShell
            } else {
                Shell::Sh
            };
            (shell, vec![upload], None)
        }
        Provisioner::Salt(s) => {
            let mut uploads = vec![tree(recipe, &s.state_tree, "tree")];
            if let Some(pillar) = &s.pillar_root {
                uploads.push(tree(recipe, pillar, "pillar"));
            }
            let ca = match &machine.host_ca {
                Some(bytes) if s.bootstrap => {
                    uploads.push(bytes_upload(
                        "host CA certificates",
                        "host-ca.crt",
                        bytes,
                        0o644,
                    ));
                    Some("\"$W/host-ca.crt\"")
                }
                _ => None,
            };
            let code = salt::salt_script(s, "\"$work\"", ca).map_err(|e| refused(&label, e))?;
            (Shell::Sh, uploads, Some(run(code, BTreeMap::new(), None)))
        }
        Provisioner::Ansible(a) => {
            let mut uploads = vec![tree(recipe, &a.playbook_dir(), "play")];
            if let Some(requirements) = &a.requirements {
                let content = read(recipe, &label, requirements)?;
                uploads.push(bytes_upload(
                    requirements,
                    "requirements.yml",
                    &content,
                    0o644,
                ));
            }
            let code = ansible::ansible_script(a).map_err(|e| refused(&label, e))?;
            (
                Shell::Sh,
                uploads,
                Some(run(code, BTreeMap::new(), Some("play".into()))),
            )
        }
    };
    Ok(Job {
        name: format!("provision/{}-{}", index + 1, p.kind()),
        label,
        shell,
        uploads,
        run,
    })
}

/// Every provisioner's job, in order.
pub fn provisioner_jobs(recipe: &LoadedRecipe, machine: &Machine) -> Result<Vec<Job>, StepError> {
    (0..recipe.recipe.provisioners.len())
        .map(|i| provisioner_job(recipe, i, machine))
        .collect()
}

/// The label of test command `index` in notes and errors.
pub fn test_label(index: usize, command: &str) -> String {
    let shown: String = command.chars().take(80).collect();
    format!("test[{index}] `{shown}`")
}

/// A Linux test command as a script: it stops at the first failure.
pub fn test_body(command: &str) -> String {
    format!("set -e\n{command}\n")
}

/// The recipe's test commands, one job each, in order.
pub fn test_jobs(recipe: &LoadedRecipe) -> Vec<Job> {
    recipe
        .recipe
        .test
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let label = test_label(i, command);
            let (shell, uploads, run) = match recipe.recipe.os {
                OsKind::Windows => (
                    Shell::PowerShell,
                    vec![ps1_upload(
                        "the command",
                        &commands_ps1(std::slice::from_ref(command)),
                    )],
                    RUN_PS1,
                ),
                OsKind::Linux => (
                    Shell::Sh,
                    vec![bytes_upload(
                        "the command",
                        "test.sh",
                        test_body(command).as_bytes(),
                        0o600,
                    )],
                    RUN_SH,
                ),
            };
            Job {
                name: format!("test/{}", i + 1),
                label,
                shell,
                uploads,
                run: Some(self::run(run.into(), BTreeMap::new(), None)),
            }
        })
        .collect()
}

/// The clean policy as one job (on Windows followed by Sysprep).
pub fn clean_job(recipe: &LoadedRecipe) -> Job {
    match recipe.recipe.os {
        OsKind::Windows => {
            let mut body = clean_windows::powershell_script(&recipe.recipe.clean);
            body.push_str(SYSPREP);
            Job {
                name: "clean".into(),
                label: "clean script and sysprep".into(),
                shell: Shell::PowerShell,
                uploads: vec![ps1_upload("the clean script", &body)],
                run: Some(run(RUN_PS1.into(), BTreeMap::new(), None)),
            }
        }
        OsKind::Linux => {
            let body = clean_script(&recipe.recipe.clean, recipe.recipe.os);
            script_job("clean", "clean", "the clean script", &body)
        }
    }
}

/// The clean check of the booted image (see
/// [`crate::recipe::clean::check_script`]); none for Windows, whose
/// generalized image Sysprep has reset.
pub fn clean_check_job(recipe: &LoadedRecipe) -> Option<Job> {
    (recipe.recipe.os == OsKind::Linux).then(|| {
        let body = crate::recipe::clean::check_script(&recipe.recipe.clean);
        script_job(
            "test/clean-check",
            "clean check of the booted image",
            "the clean check",
            &body,
        )
    })
}

/// A generated `sh` script (`what`, for messages) as a job.
fn script_job(name: &str, label: &str, what: &str, body: &str) -> Job {
    Job {
        name: name.into(),
        label: label.into(),
        shell: Shell::Sh,
        uploads: vec![bytes_upload(what, "script.sh", body.as_bytes(), 0o600)],
        run: Some(run("sh \"$work/script.sh\"".into(), BTreeMap::new(), None)),
    }
}

/// Runs `$work/test.sh` stopping at the first failure.
const RUN_SH: &str = "sh -e \"$work/test.sh\"";

/// Runs `$work\payload.ps1` in a child PowerShell and fails with its exit
/// code (a script that throws exits 1). (Under 'Stop', a native program's
/// stderr would end the outer script: its exit code decides instead.)
pub const RUN_PS1: &str = "$ErrorActionPreference = 'Continue'\n& powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File (Join-Path $work 'payload.ps1')\nif ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n";

/// Sysprep without shutdown, by whichever launch agent the image has:
/// EC2Launch v2 (`EC2Launch.exe sysprep`, Windows Server 2016 and later
/// AMIs), else EC2Launch v1's `SysprepInstance.ps1`, else EC2Config's
/// `Ec2ConfigService\Sysprep2008.xml` answer file with `sysprep.exe
/// /generalize /oobe /quit` after setting EC2Config to regenerate the
/// password and computer name at first boot (Windows Server 2012 R2 and
/// older). The clean step then stops the builder as for Linux.
pub const SYSPREP: &str = r#"
# Sysprep (generalize) without shutting down: the clean step stops the builder.
$ec2launch2 = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
$ec2launch1 = Join-Path $env:ProgramData 'Amazon\EC2-Windows\Launch\Scripts'
$ec2config = Join-Path $env:ProgramFiles 'Amazon\Ec2ConfigService'
if (Test-Path $ec2launch2) {
  & $ec2launch2 sysprep --clean=true --shutdown=false
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
} elseif (Test-Path (Join-Path $ec2launch1 'SysprepInstance.ps1')) {
  & (Join-Path $ec2launch1 'InitializeInstance.ps1') -Schedule
  & (Join-Path $ec2launch1 'SysprepInstance.ps1') -NoShutdown
} elseif (Test-Path (Join-Path $ec2config 'sysprep2008.xml')) {
  $settings = Join-Path $ec2config 'Settings\config.xml'
  [xml]$config = Get-Content -Path $settings
  foreach ($plugin in $config.Ec2ConfigurationSettings.Plugins.Plugin) {
    if ($plugin.Name -in @('Ec2SetPassword', 'Ec2SetComputerName', 'Ec2HandleUserData')) { $plugin.State = 'Enabled' }
  }
  $config.Save($settings)
  & (Join-Path $env:SystemRoot 'System32\Sysprep\sysprep.exe') /generalize /oobe /quit "/unattend:$(Join-Path $ec2config 'sysprep2008.xml')"
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
} else {
  [Console]::Error.WriteLine('bakehouse: no launch agent found (EC2Launch v2, EC2Launch v1 or EC2Config): cannot generalize this image')
  exit 3
}
Write-Host 'bakehouse-sysprep: done'
"#;

/// A shell provisioner's upload and command: inline commands with `set -e`,
/// or the script run with its `#!` interpreter (else `sh`).
fn shell_parts(
    recipe: &LoadedRecipe,
    s: &ShellProvisioner,
    label: &str,
) -> Result<(Vec<Upload>, Run), StepError> {
    let (upload, code) = match &s.source {
        ShellSource::Inline(commands) => (
            bytes_upload(
                "the inline commands",
                "inline.sh",
                format!("set -e\n{}\n", commands.join("\n")).as_bytes(),
                0o600,
            ),
            "sh -e \"$work/inline.sh\"".to_string(),
        ),
        ShellSource::Script(path) => {
            let content = read(recipe, label, path)?;
            let interpreter =
                interpreter(&content).map_err(|e| refused(label, format!("{path}: {e}")))?;
            (
                bytes_upload(path, "script", &content, 0o700),
                format!("{interpreter} \"$work/script\""),
            )
        }
    };
    check_env(label, &s.env)?;
    Ok((vec![upload], run(code, s.env.clone(), None)))
}

/// A powershell provisioner's upload and command: the commands (each
/// followed by an exit code check) or the script, as a `.ps1`.
fn powershell_parts(
    recipe: &LoadedRecipe,
    s: &ShellProvisioner,
    label: &str,
) -> Result<(Vec<Upload>, Run), StepError> {
    let upload = match &s.source {
        ShellSource::Inline(commands) => ps1_upload("the inline commands", &commands_ps1(commands)),
        ShellSource::Script(path) => {
            let body = read(recipe, label, path)?;
            Upload {
                what: path.clone(),
                source: Source::Bytes(ps1(&body)),
                to: work("payload.ps1", 0o600),
            }
        }
    };
    check_env(label, &s.env)?;
    Ok((vec![upload], run(RUN_PS1.into(), s.env.clone(), None)))
}

/// PowerShell `commands` as one script: it stops at the first error of a
/// cmdlet ($ErrorActionPreference) and at the first program that exits
/// non-zero (each command is followed by a `$LASTEXITCODE` check, so each
/// must be a complete statement).
fn commands_ps1(commands: &[String]) -> String {
    let mut body = String::from("$ErrorActionPreference = 'Stop'\n");
    for command in commands {
        body.push_str(&format!(
            "$global:LASTEXITCODE = 0\n{command}\nif ($LASTEXITCODE -ne 0) {{ exit $LASTEXITCODE }}\n"
        ));
    }
    body
}

/// A `.ps1` body as Windows PowerShell 5.1 reads it right: UTF-8 with a
/// byte order mark (without one it assumes the ANSI code page).
fn ps1(body: &[u8]) -> Vec<u8> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if body.starts_with(BOM) {
        body.to_vec()
    } else {
        [BOM, body].concat()
    }
}

fn ps1_upload(what: &str, body: &str) -> Upload {
    Upload {
        what: what.into(),
        source: Source::Bytes(ps1(body.as_bytes())),
        to: work("payload.ps1", 0o600),
    }
}

fn work(name: &str, mode: u32) -> Destination {
    Destination::Work {
        name: name.into(),
        mode,
    }
}

fn bytes_upload(what: &str, name: &str, content: &[u8], mode: u32) -> Upload {
    Upload {
        what: what.into(),
        source: Source::Bytes(content.to_vec()),
        to: work(name, mode),
    }
}

/// A directory of the recipe's (`written`) uploaded as `$work/name`.
fn tree(recipe: &LoadedRecipe, written: &str, name: &str) -> Upload {
    Upload {
        what: format!("directory {written}"),
        source: Source::Tree(recipe.resolve(written)),
        to: work(name, 0o700),
    }
}

fn run(code: String, env: BTreeMap<String, String>, cwd: Option<String>) -> Run {
    Run {
        code,
        env,
        cwd,
        timeout: None,
    }
}

fn read(recipe: &LoadedRecipe, label: &str, written: &str) -> Result<Vec<u8>, StepError> {
    std::fs::read(recipe.resolve(written)).map_err(|e| refused(label, format!("{written}: {e}")))
}

/// Environment variable names both shells accept.
fn check_env(label: &str, env: &BTreeMap<String, String>) -> Result<(), StepError> {
    env.keys()
        .try_for_each(|name| check_env_name(name).map_err(|e| refused(label, format!("env: {e}"))))
}

/// How to run a script: its `#!` line's interpreter, else `sh`. (Run by
/// name, so a work directory on a `noexec` mount does not matter.)
pub fn interpreter(content: &[u8]) -> Result<String, String> {
    let Some(rest) = content.strip_prefix(b"#!") else {
        return Ok("sh".into());
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "the #! line is not UTF-8".to_string())?;
    let line = line.trim();
    if line.is_empty() || line.contains(['\'', '"', '`', '$', ';', '&', '|', '\\']) {
        return Err(format!("unsupported #! line {line:?}"));
    }
    Ok(line.to_string())
}

/// An octal file mode from the recipe.
fn parse_mode(label: &str, mode: &str) -> Result<u32, StepError> {
    check_mode(mode)
        .and_then(|()| u32::from_str_radix(mode, 8).map_err(|e| e.to_string()))
        .map_err(|e| refused(label, e))
}

/// The file name of `path` as written (for a file uploaded into a
/// directory).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{parse, Format};

    fn recipe(dir: &Path, yaml: &str) -> LoadedRecipe {
        let path = dir.join("recipe.yaml");
        std::fs::write(&path, yaml).unwrap();
        parse(yaml, Format::Yaml, &path).unwrap()
    }

    #[test]
    fn interpreters_come_from_the_shebang_and_odd_ones_are_refused() {
        assert_eq!(interpreter(b"echo hi\n").unwrap(), "sh");
        assert_eq!(
            interpreter(b"#!/usr/bin/env python3\nprint(1)\n").unwrap(),
            "/usr/bin/env python3"
        );
        assert!(interpreter(b"#!/bin/sh; rm -rf /\n").is_err());
        assert!(interpreter(b"#!\n").is_err());
    }

    /// (validate refuses these first; jobs are the backends' own guard)
    #[test]
    fn provisioners_of_the_other_os_are_refused_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recipe(
            dir.path(),
            "name: l\nbase: {image: ami-12345678}\nprovisioners:\n  - type: shell\n    inline: [ls]\n",
        );
        r.recipe.os = OsKind::Windows;
        let e = provisioner_job(&r, 0, &Machine::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("provisioners[0] (shell inline): runs on Linux images only"),
            "{e}"
        );
        r.recipe.os = OsKind::Linux;
        r.recipe.provisioners[0] = Provisioner::Powershell(ShellProvisioner {
            source: ShellSource::Inline(vec!["dir".into()]),
            env: BTreeMap::new(),
        });
        let e = provisioner_job(&r, 0, &Machine::default()).unwrap_err();
        assert!(e.to_string().contains("runs on Windows images only"), "{e}");
    }

    #[test]
    fn a_bad_env_name_or_mode_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("motd"), "hi").unwrap();
        let mut r = recipe(
            dir.path(),
            "name: l\nbase: {image: ami-12345678}\nprovisioners:\n  - type: shell\n    inline: [ls]\n  - type: file\n    source: motd\n    destination: /etc/motd\n",
        );
        if let Provisioner::Shell(s) = &mut r.recipe.provisioners[0] {
            s.env.insert("A-B".into(), "x".into());
        }
        if let Provisioner::File(f) = &mut r.recipe.provisioners[1] {
            f.mode = Some("9".into());
        }
        let e = provisioner_job(&r, 0, &Machine::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("env: \"A-B\" is not a valid environment variable name"),
            "{e}"
        );
        let e = provisioner_job(&r, 1, &Machine::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("mode \"9\" must be 3 or 4 octal digits"),
            "{e}"
        );
    }

    #[test]
    fn salt_uploads_the_host_ca_only_for_a_bootstrap_that_has_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("salt")).unwrap();
        let r = recipe(
            dir.path(),
            "name: l\nbase: {image: ami-12345678}\nprovisioners:\n  - type: salt\n    state_tree: salt\n    bootstrap: true\n",
        );
        let with_ca = Machine {
            host_ca: Some(b"CA".to_vec()),
        };
        let job = provisioner_job(&r, 0, &with_ca).unwrap();
        assert_eq!(job.uploads.len(), 2);
        assert!(job
            .run
            .unwrap()
            .code
            .contains("export PIP_CERT=\"$W/host-ca.crt\""));
        let job = provisioner_job(&r, 0, &Machine::default()).unwrap();
        assert_eq!(job.uploads.len(), 1);
        assert!(!job.run.unwrap().code.contains("PIP_CERT"));
    }
}
