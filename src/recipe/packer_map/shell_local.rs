//! The shell-local provisioner: `command`, `inline`, `script` or `scripts`
//! with `environment_vars`/`env`, collected as [`LocalStep`]s that the CLI
//! runs in a sandbox on its own machine before the build (see
//! [`crate::recipe::shell_local`]), instead of recipe provisioners.

use super::Converter;
use crate::recipe::packer_ignored::SHELL_LOCAL;
use crate::recipe::packer_types::PackerShellLocal;
use crate::recipe::shell_local::LocalStep;

impl Converter<'_> {
    pub(super) fn shell_local(&mut self, field: &str, s: &PackerShellLocal) {
        let shell = &s.shell;
        self.extra(field, "a shell-local", &shell.other, SHELL_LOCAL);
        let env = self.environment(field, &shell.env, &shell.environment_vars);
        for (_, run) in self.shell_sources(field, "shell-local", shell, s.command.as_deref()) {
            self.local.push(LocalStep {
                label: format!("{field} (shell-local)"),
                run,
                env: env.clone(),
            });
        }
    }
}
