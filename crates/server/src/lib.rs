//! `unseen serve`: OTLP in, durable state, findings out.
//!
//! ```text
//!  OTLP/gRPC :4317 ─┐                       ┌─ one durable transaction ─┐
//!                   ├─ decode ─► queue ─► committer ─► store.apply ─────┴─► answer each request
//!  OTLP/HTTP :4318 ─┘  (per request)   (group commit)         │
//!                                                             └─► notify ─► sinks (outbox)
//!  admin :9464: /healthz /readyz /metrics
//! ```
//!
//! The rule that this crate enforces: **a request is answered "success" only after
//! everything it changed (key states, the findings it opened) is durable.** A crash
//! can lose only requests that were not acknowledged, and their senders retry them;
//! a retried point that was in fact committed is a repeat, which never opens an
//! episode (contract section 4), so retries cannot duplicate a finding either.
//!
//! [`run`] takes bound listeners and a shutdown token (tests bind port 0), and returns
//! once the receivers stopped, every accepted request was committed and answered,
//! and the sinks made their last delivery attempt.

mod admin;
pub mod auth;
mod body;
mod budget;
mod committer;
mod conn;
pub mod decode;
mod export;
mod grpc;
mod http;
pub mod metrics;
pub mod rules;
mod serve;
mod status;
pub mod tls;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use unseen_findings::suppress::SuppressError;
use unseen_findings::{Suppressions, TriageSettings};
use unseen_model::{format_duration, format_rfc3339, Windows, SEED_RULE};
use unseen_normalize::KeyMode;
use unseen_sinks::{SinkConfig, SinkError};
use unseen_store::{StateStore, StoreError};

pub use admin::Readiness;
pub use committer::now_secs;
pub use decode::{sighting, DecodeOptions, Unusable};
pub use grpc::EXPORT_PATH as GRPC_EXPORT_PATH;
pub use http::PATH as HTTP_PATH;

/// Everything `serve` is told, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// How findings are grouped into incidents and scored (default mode).
    pub triage: TriageSettings,
    pub windows: Windows,
    pub mode: KeyMode,
    /// Record without reporting for this many seconds after the first start.
    pub learn: Option<u64>,
    pub sinks: Vec<SinkConfig>,
    pub limits: Limits,
    /// How long shutdown waits for requests in flight before closing their
    /// connections (their senders retry them; nothing unanswered was acknowledged).
    pub shutdown_grace: Duration,
    /// Suppression rules of the config, always in force.
    pub suppressions: Suppressions,
    /// A rules file, read at start and again whenever it changes (see `rules`); its
    /// rules come after the config's.
    pub suppressions_file: Option<std::path::PathBuf>,
    /// TLS for every listener (receivers and admin); plaintext when `None`.
    pub tls: Option<tls::TlsFiles>,
    /// Bearer tokens bound to clusters (see `auth`); no authentication when `None`.
    pub tokens_file: Option<std::path::PathBuf>,
    /// Fired (`notify_waiters`) to read the TLS files, the tokens and the rules file
    /// again at once, rather than at their next poll: SIGHUP.
    pub reload: Arc<Notify>,
    /// The query API's history keeps records this long (seconds).
    pub history_retention: u64,
    /// Returns memory the process has freed to the operating system now (the binary's
    /// allocator knows how): called once the query API's first read of the history and
    /// key inventory is done, whose buffers at millions of keys are a tenth of the RSS.
    pub release_freed_memory: Option<fn()>,
}

/// The query API's history is kept this long by default: 90 days.
pub const DEFAULT_HISTORY_RETENTION: u64 = 90 * 86_400;

/// Explicit limits; each has a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, received and decompressed.
    pub max_body_bytes: usize,
    /// Largest dimension value (an image name, ...), in bytes; a longer one rejects the point.
    pub max_dimension_bytes: usize,
    /// Keys tracked at most; new keys past it are rejected.
    pub max_keys: u64,
    /// Points further ahead of the server clock are rejected, in seconds.
    pub max_clock_skew: u64,
    /// Requests waiting for a commit at most; more are answered "unavailable, retry".
    pub queue_requests: usize,
    /// Sightings per transaction at most.
    pub max_batch_points: usize,
    /// Connections open at once per receiver listener; the admin listener has its own
    /// (`ADMIN_CONNECTIONS`).
    pub max_connections: usize,
    /// Request bytes (received and inflated) held at once across all requests; a
    /// request past it is answered "busy, retry".
    pub max_inflight_bytes: usize,
    /// An HTTP/1 request's header arrives within this (seconds).
    pub header_timeout: u64,
    /// A request's body arrives within this (seconds).
    pub body_timeout: u64,
    /// A connection that sends nothing for this long is closed (seconds).
    pub idle_timeout: u64,
    /// New keys per second that one token (without tokens: one cluster) may create,
    /// on average; 0: no limit.
    pub new_keys_per_second: u64,
    /// New keys one token (or cluster) may create at once, before the rate applies.
    pub new_keys_burst: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_dimension_bytes: 4096,
            max_keys: 5_000_000,
            max_clock_skew: 300,
            queue_requests: 1024,
            max_batch_points: 200_000,
            max_connections: 1024,
            max_inflight_bytes: 512 << 20,
            header_timeout: 10,
            body_timeout: 60,
            idle_timeout: 120,
            new_keys_per_second: 1_000,
            new_keys_burst: 100_000,
        }
    }
}

/// The bound listeners.
pub struct Listeners {
    pub otlp_grpc: TcpListener,
    pub otlp_http: TcpListener,
    pub admin: TcpListener,
    /// The query API and the console; `None`: off.
    pub api: Option<TcpListener>,
}

/// Connections the API listener takes at once (its own slots, as the admin port's).
pub const API_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Sinks(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("suppression rules: {0}")]
    Suppressions(#[from] SuppressError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Tokens(#[from] auth::TokensError),
    #[error("the query API cannot start: {0}")]
    Api(String),
    /// A store call panicked: see [`committer::Fatal`].
    #[error("{0}")]
    Fatal(String),
    #[error("the {receiver} receiver failed: {message}")]
    Receiver {
        receiver: &'static str,
        message: String,
    },
}

/// Runs until `shutdown` is cancelled, then drains (see the module docs).
pub async fn run(
    listeners: Listeners,
    config: Config,
    store: Arc<dyn StateStore>,
    prometheus: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    metrics::describe();
    let now = now_secs();
    let learning_until = match config.learn {
        Some(secs) if secs > 0 => {
            let started = blocking(&store, move |s| s.learning_started_at(now)).await?;
            let until = started.saturating_add(secs as i64);
            if now < until {
                tracing::info!(
                    started = %format_rfc3339(started),
                    until = %format_rfc3339(until),
                    "learning: sightings are recorded, findings start after {}",
                    format_duration(secs)
                );
            }
            Some(until)
        }
        _ => None,
    };
    let keys = blocking(&store, |s| s.key_count()).await?;
    metrics::keys_tracked(keys);

    // The suppression rules, then the sinks: a bad file or sink configuration fails the
    // start before any port is open.
    let (file_rules, rules_bytes) = rules::initial(config.suppressions_file.as_deref())?;
    let origin = config
        .suppressions_file
        .as_ref()
        .map_or_else(|| "config".to_string(), |p| p.display().to_string());
    let (rule_sources, rules_rx) =
        rules::Sources::new(config.suppressions.clone(), file_rules, &origin)?;
    metrics::suppression_rules(rules_rx.borrow().rules.len());
    let rules_stop = CancellationToken::new();
    if let (Some(path), Some(bytes)) = (config.suppressions_file.clone(), rules_bytes) {
        tokio::spawn(rules::watch(
            path,
            bytes,
            rule_sources.clone(),
            rules_stop.clone(),
            config.reload.clone(),
        ));
    }

    // TLS, before any port takes a connection: a bad file fails the start.
    let tls = match &config.tls {
        Some(files) => Some(tls::Tls::load(files.clone())?),
        None => None,
    };
    let watchers_stop = CancellationToken::new();
    if let Some(tls) = &tls {
        tokio::spawn(
            tls.clone()
                .watch(watchers_stop.clone(), config.reload.clone()),
        );
    }
    let with_tls = |p: tls::Protocols| tls.clone().map(|t| (t, p));
    let tokens = match &config.tokens_file {
        Some(path) => {
            let (tokens, text) = auth::load(path)?;
            tracing::info!(file = %path.display(), tokens = tokens.len(), "bearer tokens in force");
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(tokens));
            tokio::spawn(auth::watch(
                path.clone(),
                text,
                tx,
                watchers_stop.clone(),
                config.reload.clone(),
            ));
            Some(rx)
        }
        None => None,
    };

    let notify = Arc::new(Notify::new());
    let sinks_stop = CancellationToken::new();
    // On the blocking pool: opening the sinks reads and writes the store (their cursors),
    // and a store may block (PostgreSQL's client does).
    let sink_tasks = {
        let (store, sinks, notify, stop) = (
            store.clone(),
            config.sinks.clone(),
            notify.clone(),
            sinks_stop.clone(),
        );
        tokio::task::spawn_blocking(move || unseen_sinks::start(store, sinks, notify, stop))
            .await
            .map_err(|e| ServerError::Receiver {
                receiver: "sinks",
                message: e.to_string(),
            })??
    };

    let ready = Readiness::default();
    // The receivers stop on `shutdown`, when one of them fails, or on a fault the server
    // cannot go on after (`fatal`).
    let stop = shutdown.child_token();
    let fatal = committer::Fatal::new(stop.clone());
    let commit_close = CancellationToken::new();
    let (committer, commit_task) = committer::start(
        store.clone(),
        committer::CommitConfig {
            rule: SEED_RULE,
            triage: config.triage,
            windows: config.windows,
            mode: config.mode.clone(),
            max_keys: config.limits.max_keys,
            max_batch_points: config.limits.max_batch_points,
            learning_until,
            suppressions: rules_rx,
            new_keys_per_second: config.limits.new_keys_per_second,
            new_keys_burst: config.limits.new_keys_burst,
            history_retention: config.history_retention,
        },
        config.limits.queue_requests,
        notify,
        ready.clone(),
        commit_close.clone(),
        fatal.clone(),
    );
    // The query API reads the audit log before any receiver opens, so that the rules
    // made through it are in force for the first commit.
    let api = match listeners.api.is_some() {
        true => {
            let directory = Arc::new(ApiDirectory {
                tokens: tokens.clone(),
            });
            let store = store.clone();
            let sources = rule_sources.clone();
            let mode = config.mode.clone();
            let secure = config.tls.is_some();
            let api = tokio::task::spawn_blocking(move || {
                unseen_api::Api::new(store, directory, sources, mode, secure, now_secs)
            })
            .await
            .map_err(|e| ServerError::Api(e.to_string()))?
            .map_err(|e| ServerError::Api(e.to_string()))?;
            Some(api)
        }
        false => None,
    };
    let pipeline = export::Pipeline {
        opts: DecodeOptions {
            mode: config.mode.clone(),
            max_dimension_bytes: config.limits.max_dimension_bytes,
            max_body_bytes: config.limits.max_body_bytes,
            max_clock_skew: config.limits.max_clock_skew,
        },
        max_keys: config.limits.max_keys,
        committer,
        rejection_logged: Default::default(),
        tokens,
        budget: budget::Budget::new(config.limits.max_inflight_bytes),
        body_timeout: Duration::from_secs(config.limits.body_timeout),
    };

    let grpc_addr = listeners.otlp_grpc.local_addr().ok();
    let http_addr = listeners.otlp_http.local_addr().ok();
    let admin_addr = listeners.admin.local_addr().ok();
    let max_connections = conn::connection_slots(config.limits.max_connections);
    let idle = Some(Duration::from_secs(config.limits.idle_timeout));
    let header_timeout = Duration::from_secs(config.limits.header_timeout);
    // Closes every receiver connection when the grace period is over (see `conn`).
    let kill = CancellationToken::new();
    let accept_stop = CancellationToken::new();
    let incoming = |listener, p, name| {
        let limits = conn::ListenerLimits {
            name,
            max_connections,
            idle_timeout: idle,
        };
        conn::Incoming::start(
            listener,
            kill.clone(),
            with_tls(p),
            limits,
            accept_stop.clone(),
        )
        .map_err(|e| ServerError::Receiver {
            receiver: "listener",
            message: e.to_string(),
        })
    };
    let http_incoming = incoming(listeners.otlp_http, tls::Protocols::Http, http::RECEIVER)?;
    let grpc_incoming = incoming(listeners.otlp_grpc, tls::Protocols::Grpc, grpc::RECEIVER)?;
    // The admin listener's connections are not killed at the grace period's end: probes
    // answer until the process exits. Its slots are its own: however many connections
    // the receivers hold, probes get through.
    let admin_incoming = conn::Incoming::start(
        listeners.admin,
        CancellationToken::new(),
        with_tls(tls::Protocols::Admin),
        conn::ListenerLimits {
            name: "admin",
            max_connections: conn::ADMIN_CONNECTIONS,
            idle_timeout: idle,
        },
        accept_stop.clone(),
    )
    .map_err(|e| ServerError::Receiver {
        receiver: "admin",
        message: e.to_string(),
    })?;
    let http_task = {
        let router = http::router(pipeline.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            serve::serve_http(http_incoming, router, header_timeout, stop.clone()).await;
            stop.cancel();
            Ok::<(), ServerError>(())
        })
    };
    let grpc_task = {
        let service = grpc::MetricsService::new(pipeline);
        let stop = stop.clone();
        let incoming = grpc_incoming.into_stream();
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                // No connection lives for ever (on PINGs alone): after this age it is
                // asked to go away (GOAWAY) and its sender reconnects.
                .max_connection_age(serve::MAX_CONNECTION_AGE)
                .max_connection_age_grace(Duration::from_secs(config.limits.body_timeout))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                .await
                .map_err(|e| ServerError::Receiver {
                    receiver: grpc::RECEIVER,
                    message: e.to_string(),
                });
            stop.cancel();
            result
        })
    };

    let exposure = admin::exposure_warning(
        config.tls.is_some(),
        config.tokens_file.is_some(),
        &[grpc_addr, http_addr],
    );
    if let Some(warning) = &exposure {
        tracing::warn!("{warning}");
    }
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(serve::serve_http(
        admin_incoming,
        admin::router(prometheus, ready.clone(), exposure),
        header_timeout,
        admin_stop.clone(),
    ));
    let api_addr = listeners.api.as_ref().and_then(|l| l.local_addr().ok());
    let api_task = match (listeners.api, api) {
        (Some(listener), Some(api)) => {
            if config.tls.is_none() && api_addr.is_some_and(|a| !a.ip().is_loopback()) {
                tracing::warn!(api = ?api_addr, "the query API takes plaintext from the network: tokens and console session cookies travel in clear text; configure --tls-cert and --tls-key, see docs/api.md");
            }
            if config.tokens_file.is_none() {
                tracing::warn!("the query API answers 401 to every request: it needs a tokens file (--tokens) with a token that has a `role` (docs/api.md)");
            }
            let incoming = conn::Incoming::start(
                listener,
                CancellationToken::new(),
                with_tls(tls::Protocols::Admin),
                conn::ListenerLimits {
                    name: "api",
                    max_connections: API_CONNECTIONS,
                    idle_timeout: idle,
                },
                accept_stop.clone(),
            )
            .map_err(|e| ServerError::Receiver {
                receiver: "api",
                message: e.to_string(),
            })?;
            // Rules made through the API of another replica (a shared store) come into
            // force here at the next turn.
            tokio::spawn(sync_api_rules(api.clone(), watchers_stop.clone()));
            // The history and the key inventory, read while points are already taken.
            let warm = api.clone();
            let release = config.release_freed_memory;
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let read = warm.warm();
                if let Some(release) = release {
                    release();
                }
                match read {
                    Ok((findings, images)) => tracing::info!(
                        findings,
                        images,
                        seconds = started.elapsed().as_secs_f64(),
                        "query API: history and key inventory read"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "query API: the history or the key inventory cannot be read yet; the first request tries again")
                    }
                }
            });
            Some(tokio::spawn(serve::serve_http(
                incoming,
                unseen_api::router(api),
                header_timeout,
                admin_stop.clone(),
            )))
        }
        _ => None,
    };
    ready.set(true);
    tracing::info!(
        otlp_grpc = ?grpc_addr,
        otlp_http = ?http_addr,
        admin = ?admin_addr,
        api = ?api_addr,
        keys,
        "unseen serve is ready"
    );

    stop.cancelled().await;
    ready.set(false);
    tracing::info!("stopping: draining requests in flight");
    let (http_abort, grpc_abort) = (http_task.abort_handle(), grpc_task.abort_handle());
    let mut receivers = Box::pin(async { (http_task.await, grpc_task.await) });
    let finished = match tokio::time::timeout(config.shutdown_grace, &mut receivers).await {
        Ok(finished) => Some(finished),
        Err(_) => {
            tracing::warn!(
                grace = ?config.shutdown_grace,
                "requests still in flight after the grace period; their connections are closed and their senders will retry"
            );
            kill.cancel();
            // The receivers end as soon as their connections are gone; the bound only
            // guards against a bug keeping them.
            match tokio::time::timeout(Duration::from_secs(5), &mut receivers).await {
                Ok(finished) => Some(finished),
                Err(_) => {
                    http_abort.abort();
                    grpc_abort.abort();
                    None
                }
            }
        }
    };
    let mut errors = Vec::new();
    for result in finished.into_iter().flat_map(|(http, grpc)| [http, grpc]) {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(ServerError::Receiver {
                receiver: "otlp",
                message: e.to_string(),
            }),
        }
    }
    // The receivers are done (or out of time): the committer commits and answers what
    // is queued, refuses anything later, and ends.
    commit_close.cancel();
    let _ = commit_task.await;
    sinks_stop.cancel();
    rules_stop.cancel();
    for task in sink_tasks {
        let _ = task.await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    if let Some(task) = api_task {
        let _ = task.await;
    }
    accept_stop.cancel();
    watchers_stop.cancel();
    tracing::info!("stopped");
    if let Some(reason) = fatal.reason() {
        return Err(ServerError::Fatal(reason));
    }
    match errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Reads the audit log every [`watch::POLL`] and puts the rules made through the API (by
/// any replica) in force, until `stop`.
async fn sync_api_rules(api: Arc<unseen_api::Api>, stop: CancellationToken) {
    loop {
        let turn = api.clone();
        match tokio::task::spawn_blocking(move || turn.sync_rules()).await {
            Ok(Ok(true)) => tracing::info!("suppression rules made through the API reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the audit log; retried"),
            Err(e) => tracing::warn!(error = %e, "cannot read the audit log; retried"),
        }
        tokio::select! {
            _ = tokio::time::sleep(watch::POLL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The tokens, as the query API sees them: a token with a `role`.
struct ApiDirectory {
    tokens: Option<tokio::sync::watch::Receiver<Arc<auth::Tokens>>>,
}

impl unseen_api::Directory for ApiDirectory {
    fn authenticate(&self, authorization: &str) -> Result<unseen_api::Principal, String> {
        let Some(tokens) = &self.tokens else {
            return Err("the query API needs a tokens file (`--tokens`) with a token that has a `role` (viewer, responder, admin): see docs/api.md".into());
        };
        let token = tokens
            .borrow()
            .authenticate(Some(authorization))
            .map_err(|r| r.message().to_string())?;
        match token.role {
            Some(role) => Ok(unseen_api::Principal {
                name: token.name.clone(),
                role,
            }),
            None => Err(format!(
                "token `{}` has no `role`: it is a receiver's token; give it a role (viewer, responder or admin) in the tokens file to use the API",
                token.name
            )),
        }
    }

    fn still_valid(&self, principal: &unseen_api::Principal) -> bool {
        self.tokens.as_ref().is_some_and(|t| {
            t.borrow()
                .by_name(&principal.name)
                .is_some_and(|t| t.role == Some(principal.role))
        })
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn StateStore>,
    f: impl FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(format!("store task failed: {e}"))))
}
