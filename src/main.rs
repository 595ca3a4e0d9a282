//! The `tessera` binary: parse the command line, set up logging, run the command.

use std::io::IsTerminal;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tessera::cli::Cli::parse();
    // The server logs a line per request at info; one-shot commands keep stdout for output.
    let default_level = if matches!(cli.command, tessera::cli::Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    // Log lines are formatted on the request path but written by a background thread in
    // batches, so a request never waits on a write to stderr.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::BufWriter::new(std::io::stderr()));
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer)
        .init();
    match tessera::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::debug!(error = %err, "command failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
