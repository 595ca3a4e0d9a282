//! Limits on connections: a cap on how many are open, a cap per client address, and an idle
//! timeout. Each connection may hold a request head of up to hyper's read buffer
//! ([`super::server::READ_BUFFER_BYTES`]) in memory, so the cap is what bounds the memory a
//! flood of connections can take. At the cap the server stops accepting: new connections wait
//! in the kernel's backlog until one closes, and the connections already open are served as
//! usual. One address may hold only `max_per_address` of them (review finding 4: one host
//! holding every slot stops the server); a connection beyond that is closed at once. Trusted
//! reverse proxies carry many clients' connections and are exempt. A connection with no
//! traffic for the idle timeout is closed.
//!
//! The idle timeout is kept here rather than with poem's `Server::idle_timeout`, which wakes a
//! watchdog task on every read and write (client_credentials fell from about 0.75× to 0.65× of
//! the benchmark's ceiling with it).
//! Here a read or write records the time, and the timer is looked at only when the connection
//! is waiting; it is re-armed at most once per timeout.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::net::AddressRange;

/// How many connections may be open, in all and per address.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max: usize,
    pub max_per_address: usize,
    pub idle_timeout: Duration,
    /// Addresses exempt from `max_per_address` (trusted reverse proxies).
    pub exempt: Vec<AddressRange>,
}

/// Open connections per client address, for the per-address cap.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts one more connection from `ip`, unless it already has `max`.
    fn try_add(&self, ip: IpAddr, max: usize) -> bool {
        let Ok(mut counts) = self.0.lock() else { return true };
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove(&self, ip: IpAddr) {
        if let Ok(mut counts) = self.0.lock() {
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Wraps an acceptor so that at most `limits.max` of its connections are open at once, at
/// most `limits.max_per_address` from one address, and each is closed after
/// `limits.idle_timeout` without traffic.
pub struct LimitedAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    per_address: Arc<PerAddress>,
    open: Gauge,
}

impl<A: Acceptor> LimitedAcceptor<A> {
    /// `open` is kept at the number of connections open (the `open_connections` metric).
    pub fn new(inner: A, limits: ConnectionLimits, open: Gauge) -> Self {
        LimitedAcceptor {
            inner,
            permits: Arc::new(Semaphore::new(limits.max.max(1))),
            limits,
            per_address: Arc::default(),
            open,
        }
    }

    /// The address a connection counts against, or `None` if it is exempt from the cap.
    fn counted_address(&self, remote: &RemoteAddr) -> Option<IpAddr> {
        let ip = remote.as_socket_addr()?.ip();
        (!self.limits.exempt.iter().any(|range| range.contains(ip))).then_some(crate::net::counted_as(ip))
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
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            let address = self.counted_address(&remote);
            if let Some(ip) = address {
                if !self.per_address.try_add(ip, self.limits.max_per_address) {
                    // Dropping the socket closes it; the permit stays for the next one.
                    tracing::debug!(%ip, "connection refused: too many open from this address");
                    continue;
                }
            }
            self.open.inc();
            let last_activity = Instant::now();
            let idle_timeout = self.limits.idle_timeout;
            let connection = Connection {
                io,
                _slot: Slot {
                    _permit: permit,
                    open: self.open.clone(),
                    address,
                    per_address: self.per_address.clone(),
                },
                idle_timeout,
                last_activity,
                deadline: Box::pin(tokio::time::sleep_until(last_activity + idle_timeout)),
            };
            return Ok((connection, local, remote, scheme));
        }
    }
}

/// One of the `max` places for an open connection, given back (and counted) on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    /// The address this connection counts against, if any.
    address: Option<IpAddr>,
    per_address: Arc<PerAddress>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
        if let Some(ip) = self.address {
            self.per_address.remove(ip);
        }
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
