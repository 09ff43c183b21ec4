//! The admin port: liveness, readiness and Prometheus metrics. Kept off the
//! receivers' ports so it can stay on loopback while they listen on every interface.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// Whether the server takes requests: true once the receivers listen and the store is
/// open, false again as soon as shutdown starts (so a load balancer stops sending
/// before the receivers close).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    prometheus: PrometheusHandle,
    ready: Readiness,
}

pub fn router(prometheus: PrometheusHandle, ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { prometheus, ready })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down\n",
        )
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Histograms are summarised lazily; do it when someone looks.
    state.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
