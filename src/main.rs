//! The `tessera` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tessera::cli::Cli::parse();
    // The server logs requests at info; one-shot commands keep stdout for their output.
    let default_level = if matches!(cli.command, tessera::cli::Command::Serve(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .init();
    tessera::cli::run(cli).await
}
