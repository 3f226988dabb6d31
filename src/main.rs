//! The `bakehouse` command line.

use std::io::Write;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = bakehouse::cli::Cli::parse();
    // Logs on stderr (a closed stderr is ignored: tracing drops what it
    // cannot write), with the step display on a terminal.
    bakehouse::cli::init_logging(&cli);
    let mut stdout = std::io::stdout().lock();
    match bakehouse::cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of stdout went away (`| head -1`): what it wanted was
        // written, and the command (a build included) succeeded.
        Err(e) if e.is_broken_pipe() => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::from(e);
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::from(code)
        }
    }
}
