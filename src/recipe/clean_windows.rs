//! The Windows rendering of the clean policy: a PowerShell script.
//!
//! Items without a Windows counterpart are listed as comments and do nothing:
//! `passwords`, `machine_id`, `random_seed`, `dhcp_leases` and `cloud_init` are the job of Sysprep /
//! EC2Launch (`ec2launch reset`/`sysprep` at capture), `ephemeral_fstab` has no
//! equivalent. The rest map to: PSReadLine histories, OpenSSH host keys under
//! `C:\ProgramData\ssh`, event logs cleared with `wevtutil`, temp directories,
//! `extra_paths` plus the Windows Update download cache, and
//! `authorized_keys` (including `administrators_authorized_keys`) last.

use super::clean::CleanItem;
use super::model::CleanPolicy;

const PRELUDE: &str = r#"$ErrorActionPreference = 'Stop'
function Remove-BakehousePath([string[]]$Patterns) {
  foreach ($pattern in $Patterns) {
    Get-Item -Path $pattern -Force -ErrorAction SilentlyContinue |
      Remove-Item -Recurse -Force -ErrorAction SilentlyContinue
  }
}
"#;

/// Renders the PowerShell clean script for `policy`.
pub fn powershell_script(policy: &CleanPolicy) -> String {
    let items = policy.items();
    let names: Vec<&str> = items.iter().map(|i| i.name()).collect();
    let mut out = String::from("# bakehouse clean script for Windows (generated, do not edit).\n");
    out.push_str(&format!("# Items: {}\n", names.join(", ")));
    out.push_str(PRELUDE);
    for item in items {
        out.push_str(&format!("\n# {}\n", item.name()));
        out.push_str(&windows_item(item, policy));
    }
    out.push_str("\nWrite-Host 'bakehouse-clean: done'\n");
    out
}

fn windows_item(item: CleanItem, policy: &CleanPolicy) -> String {
    match item {
        CleanItem::Passwords
        | CleanItem::MachineId
        | CleanItem::CloudInit
        | CleanItem::RandomSeed
        | CleanItem::DhcpLeases => {
            "# Not applicable on Windows: Sysprep/EC2Launch resets this at capture.\n".to_string()
        }
        CleanItem::EphemeralFstab | CleanItem::ConfigManagement => {
            "# Not applicable on Windows.\n".to_string()
        }
        CleanItem::UserSshKeys => {
            remove(&[r"C:\Users\*\.ssh\id_*", r"C:\Users\*\.ssh\known_hosts"])
        }
        CleanItem::Credentials => remove(&[
            r"C:\Users\*\.aws",
            r"C:\Users\*\.azure",
            r"C:\Users\*\.docker\config.json",
            r"C:\Users\*\.kube\config",
            r"C:\Users\*\.git-credentials",
            r"C:\Users\*\AppData\Roaming\gcloud",
        ]),
        CleanItem::ShellHistory => remove(&[
            r"C:\Users\*\AppData\Roaming\Microsoft\Windows\PowerShell\PSReadLine\*_history.txt",
        ]),
        CleanItem::SshHostKeys => remove(&[r"C:\ProgramData\ssh\ssh_host_*"]),
        CleanItem::Logs => {
            // Some channels cannot be cleared; under 'Stop' a native
            // program's stderr would end the script.
            "$ErrorActionPreference = 'Continue'\nwevtutil el | ForEach-Object { & wevtutil cl \"$_\" 2>&1 | Out-Null }\n$ErrorActionPreference = 'Stop'\n".to_string()
        }
        CleanItem::TempFiles => remove(&[r"C:\Windows\Temp\*", r"C:\Users\*\AppData\Local\Temp\*"]),
        CleanItem::Installers => {
            let mut paths = vec![r"C:\Windows\SoftwareDistribution\Download\*"];
            paths.extend(policy.extra_paths.iter().map(String::as_str));
            remove(&paths)
        }
        CleanItem::AuthorizedKeys => remove(&[
            r"C:\ProgramData\ssh\administrators_authorized_keys",
            r"C:\Users\*\.ssh\authorized_keys",
        ]),
    }
}

fn remove(patterns: &[&str]) -> String {
    let quoted: Vec<String> = patterns
        .iter()
        .map(|p| format!("'{}'", p.replace('\'', "''")))
        .collect();
    format!("Remove-BakehousePath @({})\n", quoted.join(", "))
}
