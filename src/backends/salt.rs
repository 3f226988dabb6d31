//! The salt provisioner's script, written once for both backends (the
//! local sandbox runs it with `sh`, EC2 sends it through SSM): it expects
//! the state tree in `$W/tree` (and the pillar tree in `$W/pillar`), runs
//! `salt-call --local` with a minion configuration under `$W` so no minion
//! id, key, file cache or log is left in the image, and with `bootstrap:
//! true` first installs Salt from PyPI into a virtualenv (Debian bookworm
//! does not package Salt): under `$W`, removed with it, unless
//! `keep_salt: true` puts it in `/opt/bakehouse-salt` with `salt-call` in
//! `/usr/local/bin`. Packages apt installed for the virtualenv and the
//! build of Salt's C extensions (`python3-venv`, `python3-dev`, `gcc`)
//! are purged again unless kept.

use crate::recipe::{sh_quote, SaltProvisioner};

/// Where a kept Salt lives in the image.
pub const KEPT_SALT: &str = "/opt/bakehouse-salt";

/// The script for `salt`; `work` is a shell word naming the work
/// directory (`"$work"`, or a quoted path); `ca_file`, a shell word naming
/// a CA bundle (in the image) pip trusts for PyPI.
pub fn salt_script(
    salt: &SaltProvisioner,
    work: &str,
    ca_file: Option<&str>,
) -> Result<String, serde_json::Error> {
    let mut s = format!("set -eu\nW={work}\n");
    if salt.bootstrap {
        if let Some(ca) = ca_file {
            s.push_str(&format!("export PIP_CERT={ca}\n"));
        }
        let venv = if salt.keep_salt {
            sh_quote(KEPT_SALT)
        } else {
            "\"$W/venv\"".to_string()
        };
        s.push_str(&format!(
            r#"packages() {{ dpkg-query -W -f='${{Package}}\n' 2>/dev/null | sort || true; }}
packages > "$W/packages.before"
if command -v apt-get >/dev/null 2>&1; then
  # Salt's dependencies include C extensions without wheels (timelib).
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv python3-dev gcc libc6-dev >/dev/null
elif ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "bakehouse: bootstrap needs python3 with venv, a C compiler and Python headers (or apt-get to install them)" >&2; exit 127
fi
echo "bakehouse: installing Salt from PyPI into {venv_shown}"
python3 -m venv {venv}
{venv}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir salt
salt_call={venv}/bin/salt-call
"#,
            venv_shown = if salt.keep_salt { KEPT_SALT } else { "a temporary virtualenv" },
        ));
        if salt.keep_salt {
            s.push_str(&format!(
                "mkdir -p /usr/local/bin\nln -sf {venv}/bin/salt-call /usr/local/bin/salt-call\n"
            ));
        }
    } else {
        s.push_str("command -v salt-call >/dev/null 2>&1 || { echo \"bakehouse: salt-call is not installed: install Salt in the base or an earlier provisioner, or set bootstrap: true\" >&2; exit 127; }\nsalt_call=salt-call\n");
    }
    s.push_str(
        r#"mkdir -p "$W/conf"
cat > "$W/conf/minion" <<BAKEHOUSE_MINION
file_client: local
id: bakehouse-build
cachedir: $W/cache
pki_dir: $W/pki
sock_dir: $W/sock
log_file: $W/salt.log
BAKEHOUSE_MINION
status=0
"$salt_call" --config-dir "$W/conf" --local --retcode-passthrough --file-root "$W/tree""#,
    );
    if salt.pillar_root.is_some() {
        s.push_str(r#" --pillar-root "$W/pillar""#);
    }
    s.push_str(" state.apply");
    if !salt.states.is_empty() {
        s.push(' ');
        s.push_str(&sh_quote(&salt.states.join(",")));
    }
    if !salt.pillar.is_empty() {
        s.push(' ');
        s.push_str(&sh_quote(&format!(
            "pillar={}",
            serde_json::to_string(&salt.pillar)?
        )));
    }
    s.push_str(" || status=$?\n");
    if salt.bootstrap && !salt.keep_salt {
        // What the bootstrap installed goes again, after the run.
        s.push_str(
            r#"packages > "$W/packages.after"
added=$(comm -13 "$W/packages.before" "$W/packages.after")
if [ -n "$added" ]; then
  echo "bakehouse: removing what the Salt bootstrap installed:" $added
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $added >/dev/null
fi
"#,
        );
    }
    s.push_str("exit $status\n");
    Ok(s)
}
