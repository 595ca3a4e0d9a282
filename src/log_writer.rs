//! A log writer for the server that never does I/O on a request thread.
//!
//! Request threads append formatted lines to an in-memory buffer; a background thread swaps
//! the buffer out every [`FLUSH_INTERVAL`] and writes it to stderr. A write to stderr can
//! block (a pipe that is not drained, a log file on a disk busy committing its journal), and
//! a request holding the log lock while blocked would stall every other request; here only
//! the writer thread waits. If the writer falls behind by more than [`MAX_PENDING`] bytes,
//! new lines are dropped and counted rather than letting memory grow without bound.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait before it reaches stderr.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The most unwritten log bytes kept in memory.
pub(crate) const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    /// (pending bytes, closing)
    state: Mutex<(Vec<u8>, bool)>,
    wake: Condvar,
    dropped: AtomicU64,
}

/// The handle tracing writes through (`&BatchedStderr: Write`, so `Arc<BatchedStderr>` is a
/// `MakeWriter`).
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Owns the writer thread; dropping it writes what is left and stops the thread.
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread.
pub fn batched_stderr() -> std::io::Result<(Arc<BatchedStderr>, WriterGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("tessera-log".into())
            .spawn(move || write_loop(&shared))?
    };
    Ok((
        Arc::new(BatchedStderr { shared: shared.clone() }),
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_loop(shared: &Shared) {
    let mut out = std::io::stderr();
    loop {
        let (batch, closing) = {
            let Ok(guard) = shared.state.lock() else { return };
            let Ok((mut guard, _)) = shared.wake.wait_timeout(guard, FLUSH_INTERVAL) else {
                return;
            };
            (std::mem::take(&mut guard.0), guard.1)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "WARN tessera: {dropped} log lines dropped: stderr was not keeping up"
            );
        }
        let _ = out.flush();
        if closing {
            return;
        }
    }
}

impl Write for &BatchedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut state) = self.shared.state.lock() {
            if state.0.len() + bytes.len() <= MAX_PENDING {
                state.0.extend_from_slice(bytes);
            } else {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.1 = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_and_bounded() {
        let shared = Arc::new(Shared::default());
        let writer = BatchedStderr { shared: shared.clone() };
        (&writer).write_all(b"one\n").unwrap();
        (&writer).write_all(b"two\n").unwrap();
        assert_eq!(shared.state.lock().unwrap().0, b"one\ntwo\n");
        let big = vec![b'x'; MAX_PENDING];
        (&writer).write_all(&big).unwrap();
        assert_eq!(
            shared.dropped.load(Ordering::Relaxed),
            1,
            "a line that does not fit is dropped, not blocked on"
        );
        assert_eq!(shared.state.lock().unwrap().0.len(), 8);
    }
}
