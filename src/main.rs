//! The `tessera` binary: parse the command line, set up logging, run the command.

use std::io::{BufWriter, IsTerminal, Stderr, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a server log line may wait in the buffer before it reaches stderr.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tessera::cli::Cli::parse();
    let serving = matches!(cli.command, tessera::cli::Command::Serve(_));
    // The server logs a line per request. Lines go into a buffer that a timer flushes, so the
    // request path neither makes a write syscall nor wakes a logging thread per line (at
    // thousands of requests per second both showed up in the latency tail). One-shot commands
    // log only warnings, straight to stderr.
    let buffer = Arc::new(LogBuffer(Mutex::new(BufWriter::with_capacity(
        64 * 1024,
        std::io::stderr(),
    ))));
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(if serving { "info" } else { "warn" }));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    if serving {
        logs.with_writer(buffer.clone()).init();
        let buffer = buffer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                flush(&buffer);
            }
        });
    } else {
        logs.with_writer(std::io::stderr).init();
    }
    let outcome = tessera::cli::run(cli).await;
    flush(&buffer);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines waiting for the next flush.
struct LogBuffer(Mutex<BufWriter<Stderr>>);

impl Write for &LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut out) => out.write(bytes),
            Err(_) => Ok(bytes.len()), // a panicked logger must not take requests down with it
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut out) => out.flush(),
            Err(_) => Ok(()),
        }
    }
}

fn flush(mut buffer: &LogBuffer) {
    let _ = buffer.flush();
}
