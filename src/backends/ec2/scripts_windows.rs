//! A [`Job`] as one PowerShell command for SSM `AWS-RunPowerShellScript`
//! (the Windows half of the SSM communicator; the jobs themselves, with
//! the clean policy and Sysprep, are in [`crate::communicator::jobs`]).
//! As on Linux, content travels inline, base64 encoded, in here-strings,
//! and is written into a private temporary directory (`$work`) removed
//! when the command ends; a tree travels as a tar unpacked by `tar.exe`
//! (bsdtar, shipped with Windows Server 2019 and later).
//!
//! PowerShell is not installed on the machines that test bakehouse, so
//! these scripts are checked by their content, not run.

use crate::communicator::jobs::file_name;
use crate::communicator::{Destination, Job, Source};
use crate::pipeline::StepError;

use super::scripts::{base64_lines, payloads};

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

/// Unpacks the tar at `$file` into `$dir` with tar.exe, failing with its
/// exit code (native stderr must not end the script under 'Stop').
const UNTAR: &str = "New-Item -ItemType Directory -Force -Path $dir | Out-Null\n$ErrorActionPreference = 'Continue'\n& tar.exe -x -f $file -C $dir\nif ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n$ErrorActionPreference = 'Stop'\n";

/// A job as a PowerShell script, content up to `max` bytes inline.
pub(super) fn render(job: &Job, max: usize) -> Result<String, StepError> {
    let mut script = format!(
        "# bakehouse: {}\n$ErrorActionPreference = 'Stop'\n$work = Join-Path $env:TEMP ('bakehouse-' + [guid]::NewGuid())\nNew-Item -ItemType Directory -Path $work | Out-Null\ntry {{\n",
        job.label
    );
    for (i, (upload, payload)) in job.uploads.iter().zip(payloads(job, max)?).enumerate() {
        let file = match (&upload.to, payload.tree) {
            (Destination::Work { name, .. }, false) => name.clone(),
            _ => format!("upload-{i}"),
        };
        script.push_str(&format!(
            "$file = Join-Path $work {}\n$encoded = @'\n{}'@\n[IO.File]::WriteAllBytes($file, [Convert]::FromBase64String(($encoded -replace '\\s', '')))\n",
            ps_quote(&file),
            base64_lines(&payload.bytes)
        ));
        match (&upload.to, payload.tree) {
            (Destination::Work { .. }, false) => {}
            (Destination::Work { name, .. }, true) => {
                script.push_str(&format!(
                    "$dir = Join-Path $work {}\n{UNTAR}",
                    ps_quote(name)
                ));
            }
            (Destination::Machine { path, .. }, true) => {
                script.push_str(&format!("$dir = {}\n{UNTAR}", ps_quote(path)));
            }
            (Destination::Machine { path, .. }, false) => {
                let dest = ps_quote(path);
                let target = match &upload.source {
                    Source::File(p) if path.ends_with(['\\', '/']) => {
                        format!("Join-Path {dest} {}", ps_quote(&file_name(p)))
                    }
                    _ => dest,
                };
                script.push_str(&format!(
                    "$target = {target}\nNew-Item -ItemType Directory -Force -Path (Split-Path -Parent $target) | Out-Null\nCopy-Item -Force -Path $file -Destination $target\nWrite-Host \"bakehouse: wrote $target ({} bytes)\"\n",
                    payload.bytes.len()
                ));
            }
        }
    }
    if let Some(run) = &job.run {
        for (name, value) in &run.env {
            script.push_str(&format!("$env:{name} = {}\n", ps_quote(value)));
        }
        if let Some(dir) = &run.cwd {
            script.push_str(&format!(
                "Set-Location (Join-Path $work {})\n",
                ps_quote(dir)
            ));
        }
        script.push_str(&run.code);
        if !run.code.ends_with('\n') {
            script.push('\n');
        }
    }
    script.push_str(
        "} finally {\n  Set-Location $env:TEMP\n  Remove-Item -Recurse -Force -Path $work -ErrorAction SilentlyContinue\n}\n",
    );
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::super::scripts::tests::{clean_command, provisioner_command};
    use super::super::scripts::Document;
    use super::*;
    use crate::communicator::jobs::RUN_PS1;
    use crate::recipe::{parse, Format, LoadedRecipe, Provisioner, ShellSource};
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;
    use std::collections::BTreeMap;

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
        let c = &provisioner_command(&r, 0, 48 * 1024).unwrap();
        assert_eq!(c.document, Document::PowerShell);
        assert_eq!(c.name, "provision/1-powershell");
        assert!(
            c.script.contains("$env:SITE = 'it''s $HOME'\n"),
            "{}",
            c.script
        );
        assert!(c.script.contains(RUN_PS1));
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
        // EC2Config images: its answer file, generalized without a shutdown.
        let ec2config = body.find("Ec2ConfigService").unwrap();
        assert!(body[ec2config..].contains("/generalize /oobe /quit"));
        assert!(!body.contains("/shutdown"));
        assert!(body.contains("'Ec2SetPassword', 'Ec2SetComputerName', 'Ec2HandleUserData'"));
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
        let e = provisioner_command(&r, 0, 1024).unwrap_err();
        assert!(
            e.to_string().contains("provisioners[0] (shell inline)"),
            "{e}"
        );
    }
}
