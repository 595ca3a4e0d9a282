//! The accept loop: every connection is served by hyper's HTTP/1.1 server with the limits
//! poem's own `Server` does not expose. A request head must arrive whole within
//! `request_head_timeout` of the connection opening or of the previous response (review
//! finding 4: a head trickled one line every few seconds kept a connection, and with enough of
//! them the server, forever), so a connection that says nothing is closed as soon as one that
//! trickles; and hyper's read buffer is bounded, so a head cannot take more than
//! [`READ_BUFFER_BYTES`] of memory per connection. Bodies have their own deadline in
//! [`super::form::guard`]. Graceful shutdown lets requests in flight finish, for at most a
//! grace period.
//!
//! HTTP/1.1 only: cleartext HTTP/2 (h2c) multiplies every per-connection bound by its
//! concurrent streams (200 buffered bodies per connection), has no head deadline, and keeps a
//! connection alive on PINGs; browsers never speak it, and TLS is terminated by a reverse proxy
//! that speaks HTTP/1.1 to Tessera. A client that tries it gets an error and the connection
//! closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use poem::listener::Acceptor;
use poem::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite};

/// hyper's read buffer per connection, which bounds the request head. Generous next to
/// [`super::form::MAX_HEAD_BYTES`], which answers a large head with a proper error first;
/// hyper itself answers 431 beyond this.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How connections are served.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// The longest wait for a whole request head (and so the longest idle keep-alive).
    pub head_timeout: Duration,
    /// How long requests in flight get to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// Accepts connections from `acceptor` and serves `endpoint` on each until `shutdown`
/// completes, then lets in-flight requests finish for at most `limits.shutdown_grace`.
pub async fn serve<A, E>(
    mut acceptor: A,
    endpoint: E,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    A: Acceptor,
    A::Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(READ_BUFFER_BYTES);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (io, local, remote, scheme) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                // Running out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            let request = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            async move {
                let response = endpoint.get_response(request).await;
                Ok::<_, std::convert::Infallible>(hyper::Response::from(response))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A connection ending in an error (a client gone, a head too slow) is routine.
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
    Ok(())
}
