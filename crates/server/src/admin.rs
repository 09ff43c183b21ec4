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
/// before the receivers close), and false while it cannot commit (the last commit
/// failed, or the committer stopped), with the reason.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready, and nothing keeps it from committing.
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.problem().is_none()
    }

    /// What keeps the server from committing; `None` clears it.
    pub fn set_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }
}

#[derive(Clone)]
struct AdminState {
    prometheus: PrometheusHandle,
    ready: Readiness,
    /// Said with every readiness answer (an intake open to the network without TLS).
    warning: Option<Arc<str>>,
}

pub fn router(prometheus: PrometheusHandle, ready: Readiness, warning: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            prometheus,
            ready,
            warning: warning.map(Arc::from),
        })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let warning = state
        .warning
        .as_deref()
        .map(|w| format!("warning: {w}\n"))
        .unwrap_or_default();
    if let Some(problem) = state.ready.problem() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {problem}\n{warning}"),
        )
    } else if state.ready.get() {
        (StatusCode::OK, format!("ready\n{warning}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: starting or shutting down\n{warning}"),
        )
    }
}

/// The warning of an intake that takes plaintext from beyond this host: no TLS, and a
/// receiver on an address other than loopback. Anyone who reaches it can write into the
/// state, and so hide an image from detection by sending it weeks early.
pub fn exposure_warning(
    tls: bool,
    tokens: bool,
    receivers: &[Option<std::net::SocketAddr>],
) -> Option<String> {
    let exposed: Vec<String> = receivers
        .iter()
        .flatten()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    if tls || exposed.is_empty() {
        return None;
    }
    let on = exposed.join(", ");
    Some(if tokens {
        format!(
            "the receivers on {on} take plaintext from the network: the bearer tokens travel in clear text; configure --tls-cert and --tls-key, see docs/operations.md"
        )
    } else {
        format!(
            "the receivers on {on} take plaintext from the network without TLS or tokens: anyone who reaches them can write into the state (and poison the baseline); configure --tls-cert and --tls-key (and --tls-client-ca) and --tokens, see docs/operations.md"
        )
    })
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Histograms are summarised lazily; do it when someone looks.
    state.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plaintext_beyond_loopback_is_a_warning() {
        let any: std::net::SocketAddr = "0.0.0.0:4318".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:4317".parse().unwrap();
        let w = exposure_warning(false, false, &[Some(local), Some(any)]).unwrap();
        assert!(
            w.contains("0.0.0.0:4318") && !w.contains("127.0.0.1"),
            "{w}"
        );
        assert!(w.contains("without TLS or tokens"), "{w}");
        let w = exposure_warning(false, true, &[Some(any)]).unwrap();
        assert!(w.contains("tokens travel in clear text"), "{w}");
        assert_eq!(exposure_warning(true, false, &[Some(any)]), None);
        assert_eq!(exposure_warning(false, false, &[Some(local), None]), None);
    }
}
