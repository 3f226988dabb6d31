//! The `bakehouse` command line.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BAKEHOUSE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,bakehouse=info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = bakehouse::cli::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match bakehouse::cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::from(e);
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(code)
        }
    }
}
