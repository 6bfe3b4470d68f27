//! Serving HTTP/1 connections with limits, so that a slow, broken or hostile client costs the
//! service a bounded amount of memory and time and holds up nobody else.
//!
//! `axum::serve` sets no header read timeout and no connection limit; this loop is the same
//! shape (accept, one task per connection, graceful shutdown) with those limits added:
//! - a connection must send a request's headers within `client_timeout` of starting to read them
//!   (an idle keep-alive connection counts as starting), or it is closed;
//! - the headers of one request may take at most `max_header_bytes` (431 beyond that);
//! - at most `max_connections` connections are served at once; more are closed at accept.
//!
//! Bodies are bounded by the handlers (size and time; see `http::read_body`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};

use super::auth::Peer;
use super::metrics::Metrics;

/// The limits every connection is served under.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send one request's headers (and, in the handlers, its body).
    pub client_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { client_timeout: Duration::from_secs(30), max_header_bytes: 64 << 10, max_connections: 4096 }
    }
}

/// hyper refuses read buffers below this size.
const MIN_BUFFER: usize = 8192;

/// Accepts connections from `listener` and serves `router` on each until `shutdown` completes;
/// then stops accepting, lets every connection finish its request in flight, and returns.
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = Peer>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver; `closed()` on the sender tells when all are done.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.fetch_add(1, Relaxed);
            tracing::warn!(peer = %peer.addr, limit = limits.max_connections, "too many connections; closing this one");
            drop(io);
            continue;
        };
        let router = router.clone();
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            metrics.connections_open.fetch_add(1, Relaxed);
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move {
                    let response = tower_service::Service::call(&mut router, request.map(Body::new)).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.client_timeout)
                .max_buf_size(limits.max_header_bytes.max(MIN_BUFFER));
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            metrics.connections_open.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}
