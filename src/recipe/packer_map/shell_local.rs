//! The shell-local provisioner: `command`, `inline`, `script` or `scripts`
//! with `environment_vars`/`env`, collected as [`LocalStep`]s that the CLI
//! runs in a sandbox on its own machine before the build (see
//! [`crate::recipe::shell_local`]), instead of recipe provisioners.

use super::Converter;
use crate::recipe::locate::{field_index, field_key};
use crate::recipe::packer_ignored::SHELL_LOCAL;
use crate::recipe::packer_types::PackerShellLocal;
use crate::recipe::shell_local::{LocalRun, LocalStep};

impl Converter<'_> {
    pub(super) fn shell_local(&mut self, field: &str, s: &PackerShellLocal) {
        self.extra(field, "a shell-local", &s.other, SHELL_LOCAL);
        let env = self.environment(field, &s.env, &s.environment_vars);
        let kinds = usize::from(s.command.is_some())
            + usize::from(s.inline.is_some())
            + usize::from(s.script.is_some())
            + usize::from(s.scripts.is_some());
        if kinds != 1 {
            self.problems.push((
                field.to_string(),
                "a shell-local provisioner needs exactly one of `command`, `inline`, `script` or `scripts`".to_string(),
            ));
            return;
        }
        let mut runs = Vec::new();
        if let Some(command) = &s.command {
            runs.push(LocalRun::Inline(vec![
                self.render(&field_key(field, "command"), command)
            ]));
        }
        if let Some(lines) = &s.inline {
            runs.push(LocalRun::Inline(
                self.render_list(&field_key(field, "inline"), lines),
            ));
        }
        if let Some(script) = &s.script {
            runs.push(LocalRun::Script(
                self.render(&field_key(field, "script"), script),
            ));
        }
        for (i, script) in s.scripts.iter().flatten().enumerate() {
            let f = field_index(&field_key(field, "scripts"), i);
            runs.push(LocalRun::Script(self.render(&f, script)));
        }
        for run in runs {
            self.local.push(LocalStep {
                label: format!("{field} (shell-local)"),
                run,
                env: env.clone(),
            });
        }
    }
}
