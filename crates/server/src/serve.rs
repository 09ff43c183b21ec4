//! The accept loop of the HTTP listeners (the OTLP/HTTP receiver and the admin port).
//!
//! Written out instead of `axum::serve` for the limits it cannot set: hyper's
//! header-read timeout (a peer that trickles a request's header is closed after
//! `header_timeout`, not held for ever) and a connection age (an HTTP/2 connection is
//! asked to go away after [`MAX_CONNECTION_AGE`], so that no connection lives for ever
//! on PINGs alone). Graceful stop as before: on `stop`, each connection finishes the
//! request it is answering and closes; the loop returns when they all have.

use std::time::Duration;

use axum::Router;
use hyper::body::Incoming as HyperBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::conn::Incoming;

/// A connection older than this is asked to close once its requests are answered
/// (HTTP/1: after the next answer; HTTP/2: GOAWAY). Senders reconnect on their own.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(15 * 60);

/// The most hyper reads ahead on one HTTP/1 connection.
pub const READ_BUFFER: usize = 64 << 10;

/// Serves `router` on every connection of `incoming` until `stop`.
pub async fn serve_http(
    mut incoming: Incoming,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // What hyper buffers of a connection before the handler takes it (the default
        // is about 400 KiB; times the connections, memory outside the budget).
        .max_buf_size(READ_BUFFER);
    builder.http2().timer(TokioTimer::new());
    let connections = TaskTracker::new();
    loop {
        let io = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = incoming.next() => match accepted {
                Some((io, _addr)) => io,
                None => break,
            },
        };
        let service = router
            .clone()
            .map_request(|r: http::Request<HyperBody>| r.map(axum::body::Body::new));
        let builder = builder.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = TowerToHyperService::new(service);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let age = tokio::time::sleep(MAX_CONNECTION_AGE);
            tokio::pin!(age);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(error) = result {
                            if is_header_timeout(error.as_ref()) {
                                crate::metrics::timeout("header");
                            }
                            tracing::trace!(%error, "connection ended");
                        }
                        break;
                    }
                    _ = stop.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = &mut age, if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return true;
            }
        }
        source = e.source();
    }
    false
}
