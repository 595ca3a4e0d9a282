//! Limits on connections: a cap on how many are open, and an idle timeout. Each connection may
//! hold a request head of up to hyper's buffer limit (about 400 KB) in memory, so the cap is what
//! bounds the memory a flood of connections can take. At the cap the server stops accepting: new
//! connections wait in the kernel's backlog until one closes, and the connections already open
//! are served as usual. A connection with no traffic for the idle timeout is closed.
//!
//! The idle timeout is kept here rather than with poem's `Server::idle_timeout`, which wakes a
//! watchdog task on every read and write (client_credentials fell from about 0.75× to 0.65× of
//! the benchmark's ceiling with it).
//! Here a read or write records the time, and the timer is looked at only when the connection
//! is waiting; it is re-armed at most once per timeout.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Wraps an acceptor so that at most `max` of its connections are open at once, and each is
/// closed after `idle_timeout` without traffic.
pub struct LimitedAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    open: Gauge,
}

impl<A: Acceptor> LimitedAcceptor<A> {
    /// `open` is kept at the number of connections open (the `open_connections` metric).
    pub fn new(inner: A, max: usize, idle_timeout: Duration, open: Gauge) -> Self {
        LimitedAcceptor {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle_timeout,
            open,
        }
    }
}

impl<A: Acceptor> Acceptor for LimitedAcceptor<A> {
    type Io = Connection<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (io, local, remote, scheme) = self.inner.accept().await?;
        self.open.inc();
        let last_activity = Instant::now();
        let connection = Connection {
            io,
            _slot: Slot {
                _permit: permit,
                open: self.open.clone(),
            },
            idle_timeout: self.idle_timeout,
            last_activity,
            deadline: Box::pin(tokio::time::sleep_until(last_activity + self.idle_timeout)),
        };
        Ok((connection, local, remote, scheme))
    }
}

/// One of the `max` places for an open connection, given back (and counted) on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A connection that gives its slot back when it is dropped and ends itself when idle.
pub struct Connection<T> {
    io: T,
    _slot: Slot,
    idle_timeout: Duration,
    last_activity: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Connection<T> {
    /// Called when the connection is waiting for I/O: whether it has been idle too long. If
    /// not, the timer is armed to wake this task when it might have been.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let due = self.last_activity + self.idle_timeout;
            if Instant::now() >= due {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
        false
    }

    fn waiting<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        if self.idle_expired(cx) {
            let idle = std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection was idle too long");
            return Poll::Ready(Err(idle));
        }
        Poll::Pending
    }

    fn active<R>(&mut self, result: Poll<std::io::Result<R>>, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        match result {
            Poll::Pending => self.waiting(cx),
            ready => {
                self.last_activity = Instant::now();
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        self.active(result, cx)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.active(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.active(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
