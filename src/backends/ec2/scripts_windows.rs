//! The PowerShell commands sent to a Windows builder through SSM
//! `AWS-RunPowerShellScript`: one per provisioner (`powershell`, `file`),
//! per test command, and the clean policy followed by Sysprep. As on
//! Linux, content travels inline, base64 encoded, in a here-string, and is
//! written into a private temporary directory removed when the command
//! ends.
//!
//! Sysprep is EC2Launch v2's (`EC2Launch.exe sysprep`, Windows Server 2016
//! and later AMIs), else EC2Launch v1's `SysprepInstance.ps1`; it runs
//! without shutting down, and the clean step then stops the builder as for
//! Linux. Images that have neither (EC2Config, Windows Server 2012 R2 and
//! older) fail the clean step with a message saying so.
//!
//! PowerShell is not installed on the machines that test bakehouse, so
//! these scripts are checked by their content, not run.

use std::collections::BTreeMap;

use crate::pipeline::StepError;
use crate::recipe::{clean_windows, LoadedRecipe, Provisioner, ShellSource};

use super::scripts::{
    base64_lines, check_env_name, check_inline_size, nonretryable, CommandSpec, Document,
};
use super::tar::tar_dir;

/// A PowerShell single-quoted string (a `'` is doubled).
pub(super) fn ps_quote(text: &str) -> String {
    // PowerShell also takes the typographic single quotes U+2018-U+201B
    // as quotes: each is doubled like `'`.
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
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

/// Runs the `.ps1` at `$payload` in a child PowerShell and fails with its
/// exit code (a script that throws exits 1).
/// (Under 'Stop', a native program's stderr would end the outer script:
/// its exit code decides instead.)
const RUN_PAYLOAD: &str = "$ErrorActionPreference = 'Continue'\n& powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File $payload\nif ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n";

/// A script that writes `payload` to `$work\<file_name>` (`$payload`), sets
/// `env`, and runs `action`; the directory is removed on every path.
fn with_payload(
    label: &str,
    what: &str,
    payload: &[u8],
    max: usize,
    env: &BTreeMap<String, String>,
    file_name: &str,
    action: &str,
) -> Result<String, StepError> {
    check_inline_size(label, what, payload, max, "powershell")?;
    let mut script = format!(
        "# bakehouse: {label}\n$ErrorActionPreference = 'Stop'\n$work = Join-Path $env:TEMP ('bakehouse-' + [guid]::NewGuid())\nNew-Item -ItemType Directory -Path $work | Out-Null\ntry {{\n$payload = Join-Path $work {}\n$encoded = @'\n",
        ps_quote(file_name)
    );
    script.push_str(&base64_lines(payload));
    script.push_str(
        "'@\n[IO.File]::WriteAllBytes($payload, [Convert]::FromBase64String(($encoded -replace '\\s', '')))\n",
    );
    for (name, value) in env {
        check_env_name(label, name)?;
        script.push_str(&format!("$env:{name} = {}\n", ps_quote(value)));
    }
    script.push_str(action);
    if !action.ends_with('\n') {
        script.push('\n');
    }
    script.push_str(
        "} finally {\n  Remove-Item -Recurse -Force -Path $work -ErrorAction SilentlyContinue\n}\n",
    );
    Ok(script)
}

/// A Windows provisioner's PowerShell script.
pub(super) fn provisioner_script(
    recipe: &LoadedRecipe,
    p: &Provisioner,
    label: &str,
    max: usize,
) -> Result<String, StepError> {
    let script = match p {
        Provisioner::Powershell(s) => match &s.source {
            ShellSource::Inline(commands) => {
                powershell(label, "the inline commands", commands, max, &s.env)?
            }
            ShellSource::Script(path) => {
                let body = std::fs::read(recipe.resolve(path))
                    .map_err(|e| nonretryable(label, format!("{path}: {e}")))?;
                with_payload(
                    label,
                    path,
                    &ps1(&body),
                    max,
                    &s.env,
                    "payload.ps1",
                    RUN_PAYLOAD,
                )?
            }
        },
        Provisioner::File(f) => {
            let source = recipe.resolve(&f.source);
            let dest = ps_quote(&f.destination);
            if source.is_dir() {
                // tar.exe (bsdtar) ships with Windows Server 2019 and later.
                let payload = tar_dir(&source, None).map_err(|e| nonretryable(label, e))?;
                let action = format!(
                    "New-Item -ItemType Directory -Force -Path {dest} | Out-Null\n$ErrorActionPreference = 'Continue'\n& tar.exe -x -f $payload -C {dest}\nif ($LASTEXITCODE -ne 0) {{ exit $LASTEXITCODE }}\n"
                );
                with_payload(
                    label,
                    &format!("directory {} as tar", f.source),
                    &payload,
                    max,
                    &BTreeMap::new(),
                    "payload.tar",
                    &action,
                )?
            } else {
                let content = std::fs::read(&source)
                    .map_err(|e| nonretryable(label, format!("{}: {e}", f.source)))?;
                let file_name = std::path::Path::new(&f.source)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let target = if f.destination.ends_with(['\\', '/']) {
                    format!("Join-Path {dest} {}", ps_quote(&file_name))
                } else {
                    dest.clone()
                };
                let action = format!(
                    "$target = {target}\nNew-Item -ItemType Directory -Force -Path (Split-Path -Parent $target) | Out-Null\nCopy-Item -Force -Path $payload -Destination $target\nWrite-Host \"bakehouse: wrote $target ({} bytes)\"\n",
                    content.len()
                );
                with_payload(
                    label,
                    &f.source,
                    &content,
                    max,
                    &BTreeMap::new(),
                    "payload",
                    &action,
                )?
            }
        }
        Provisioner::Shell(_) | Provisioner::Salt(_) | Provisioner::Ansible(_) => {
            return Err(nonretryable(
                label,
                "runs on Linux images only; this recipe has `os: windows` (use `type: powershell`)",
            ))
        }
    };
    Ok(script)
}

/// PowerShell `commands` as one script: it stops at the first error of a
/// cmdlet ($ErrorActionPreference) and at the first program that exits
/// non-zero (each command is followed by a `$LASTEXITCODE` check, so each
/// must be a complete statement).
pub(super) fn powershell(
    label: &str,
    what: &str,
    commands: &[String],
    max: usize,
    env: &BTreeMap<String, String>,
) -> Result<String, StepError> {
    let mut body = String::from("$ErrorActionPreference = 'Stop'\n");
    for command in commands {
        body.push_str(&format!(
            "$global:LASTEXITCODE = 0\n{command}\nif ($LASTEXITCODE -ne 0) {{ exit $LASTEXITCODE }}\n"
        ));
    }
    with_payload(
        label,
        what,
        &ps1(body.as_bytes()),
        max,
        env,
        "payload.ps1",
        RUN_PAYLOAD,
    )
}

/// Sysprep without shutdown, by whichever launch agent the image has.
pub(super) const SYSPREP: &str = r#"
# Sysprep (generalize) without shutting down: the clean step stops the builder.
$ec2launch2 = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
$ec2launch1 = Join-Path $env:ProgramData 'Amazon\EC2-Windows\Launch\Scripts'
if (Test-Path $ec2launch2) {
  & $ec2launch2 sysprep --clean=true --shutdown=false
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
} elseif (Test-Path (Join-Path $ec2launch1 'SysprepInstance.ps1')) {
  & (Join-Path $ec2launch1 'InitializeInstance.ps1') -Schedule
  & (Join-Path $ec2launch1 'SysprepInstance.ps1') -NoShutdown
} else {
  [Console]::Error.WriteLine('bakehouse: neither EC2Launch v2 nor EC2Launch v1 is installed: images with EC2Config (Windows Server 2012 R2 and older) are not supported')
  exit 3
}
Write-Host 'bakehouse-sysprep: done'
"#;

/// The Windows clean policy and Sysprep, as one command.
pub(super) fn clean_command(recipe: &LoadedRecipe) -> Result<CommandSpec, StepError> {
    let mut body = clean_windows::powershell_script(&recipe.recipe.clean);
    body.push_str(SYSPREP);
    let body = ps1(body.as_bytes());
    let label = "clean script and sysprep";
    let script = with_payload(
        label,
        "the clean script",
        &body,
        usize::MAX,
        &BTreeMap::new(),
        "payload.ps1",
        RUN_PAYLOAD,
    )?;
    Ok(CommandSpec {
        name: "clean".into(),
        label: label.into(),
        script,
        document: Document::PowerShell,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{parse, Format};
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;

    fn recipe(dir: &std::path::Path, yaml: &str) -> LoadedRecipe {
        let path = dir.join("recipe.yaml");
        std::fs::write(&path, yaml).unwrap();
        parse(yaml, Format::Yaml, &path).unwrap()
    }

    /// What a script's base64 here-string carries.
    fn body_of(script: &str) -> String {
        let encoded: String = script
            .split("@'\n")
            .nth(1)
            .and_then(|rest| rest.split("\n'@").next())
            .unwrap()
            .replace('\n', "");
        String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap()
    }

    const WINDOWS: &str = "name: win\nos: windows\nbase: {image: ami-12345678}\n";

    #[test]
    fn quoting_doubles_single_quotes() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("$env:X `n"), "'$env:X `n'");
        assert_eq!(ps_quote("it\u{2019}s"), "'it\u{2019}\u{2019}s'");
    }

    #[test]
    fn powershell_inline_travels_base64_and_sets_env_literally() {
        let dir = tempfile::tempdir().unwrap();
        let r = recipe(
            dir.path(),
            &format!("{WINDOWS}provisioners:\n  - type: powershell\n    inline: ['Install-WindowsFeature Web-Server']\n    env: {{SITE: \"it's $HOME\"}}\n"),
        );
        let c = &super::super::scripts::provisioner_command(&r, 0, 48 * 1024).unwrap();
        assert_eq!(c.document, Document::PowerShell);
        assert_eq!(c.name, "provision/1-powershell");
        assert!(
            c.script.contains("$env:SITE = 'it''s $HOME'\n"),
            "{}",
            c.script
        );
        assert!(c.script.contains(RUN_PAYLOAD));
        assert!(c.script.trim_end().ends_with('}'));
        // the commands are inside the base64 here-string, not in the script
        assert!(!c.script.contains("Install-WindowsFeature"));
        let body = body_of(&c.script);
        assert!(
            body.starts_with('\u{feff}'),
            "UTF-8 with a BOM for PowerShell 5.1"
        );
        // a program failing mid-script fails the provisioner
        assert!(
            body.contains("$global:LASTEXITCODE = 0\nInstall-WindowsFeature Web-Server\nif ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"),
            "{body}"
        );
    }

    #[test]
    fn clean_runs_the_policy_then_sysprep_without_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let r = recipe(dir.path(), WINDOWS);
        let c = clean_command(&r).unwrap();
        assert_eq!(c.document, Document::PowerShell);
        let body = body_of(&c.script);
        let clean = body.find("bakehouse-clean: done").unwrap();
        let sysprep = body.find("sysprep --clean=true --shutdown=false").unwrap();
        assert!(clean < sysprep);
    }

    #[test]
    fn linux_provisioners_are_refused_by_name() {
        // (validate reports it first; this is the backend's own guard)
        let dir = tempfile::tempdir().unwrap();
        let mut r = recipe(dir.path(), WINDOWS);
        r.recipe
            .provisioners
            .push(Provisioner::Shell(crate::recipe::ShellProvisioner {
                source: ShellSource::Inline(vec!["ls".into()]),
                env: BTreeMap::new(),
            }));
        let e = super::super::scripts::provisioner_command(&r, 0, 1024).unwrap_err();
        assert!(e.to_string().contains("provisioner 1 (shell)"), "{e}");
    }
}
