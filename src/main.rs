//! The `tessera` binary: parse the command line, set up logging, run the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tessera::cli::LogFormat;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tessera::cli::Cli::parse();
    let serving = matches!(cli.command, tessera::cli::Command::Serve(_));
    let json = matches!(&cli.command, tessera::cli::Command::Serve(args) if args.log_format == LogFormat::Json);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(if serving { "info" } else { "warn" }));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!json && std::io::stderr().is_terminal());
    // The server logs a line per request through a writer that never blocks a request on
    // I/O; one-shot commands log only warnings, straight to stderr.
    let mut _log_writer = None;
    if serving {
        match tessera::log_writer::batched_stderr() {
            Ok((writer, guard)) => {
                if json {
                    logs.json().flatten_event(true).with_writer(writer).init();
                } else {
                    logs.with_writer(writer).init();
                }
                _log_writer = Some(guard);
            }
            Err(err) => {
                eprintln!("error: cannot start the log writer: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        logs.with_writer(std::io::stderr).init();
    }
    let outcome = tessera::cli::run(cli).await;
    drop(_log_writer); // writes what is left
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
