//! Sinks: each drains the store's outbox under its own cursor, so a sink that is down
//! loses nothing and a restart resumes where it stopped.
//!
//! - `file`: JSON lines to a file (exactly once, see [`file`](mod@file)) or to stdout (at least
//!   once), as unseen's JSON or as OCSF.
//! - `webhook`: POST JSON (or OCSF), signed, retries with backoff; at least once,
//!   de-duplicable by `finding_id` (see [`webhook`]).
//! - `hec`: Splunk HTTP Event Collector, findings as ES risk events (see [`hec`]).
//! - `alertmanager`: one alert per incident, re-sent while open, resolved when it closes
//!   (see [`alertmanager`]).
//!
//! # The delivery loop
//!
//! Every sink runs the same loop in its own task:
//!
//! 1. `pending(name, batch)`: the oldest findings after the sink's cursor;
//! 2. deliver them (write + fsync, or one POST);
//! 3. `ack(name, last_seq)`: move the cursor past them.
//!
//! It repeats until nothing is pending, then waits for `notify` (fired by the server
//! after each commit that produced findings) or a one-second tick (a safety net: a
//! missed notification delays a finding by at most a second, never loses it). A failed
//! delivery is retried after an exponential backoff with jitter; nothing is acked
//! before it is delivered, so a finding is never skipped. What can happen is a repeat:
//! a crash after delivery and before the ack delivers the batch again after the
//! restart. The file sink detects that case (its own output is readable); the others
//! cannot, and are at least once.
//!
//! Store calls and file writes block, so they run on Tokio's blocking pool.

pub mod alertmanager;
mod backoff;
pub mod file;
pub mod hec;
pub mod http;
pub mod webhook;

use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use unseen_findings::Record;
use unseen_store::StateStore;

use alertmanager::{AlertmanagerConfig, AlertmanagerSink};
use backoff::Backoff;
use file::{FileSink, StdoutSink};
use hec::{HecConfig, HecSink};
pub use http::{HttpOptions, Secret};
use webhook::{WebhookConfig, WebhookSink};

/// How often a sink looks at its outbox without being notified.
pub const TICK: Duration = Duration::from_secs(1);

/// The longest the last delivery attempt on shutdown may take: a slow receiver must
/// not hold up a stop. What it did not deliver stays in the outbox.
pub const FINAL_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Backoff of the file and stdout sinks (disk full, a closed pipe): these are local
/// and usually fixed by a person, so retrying every few seconds is enough.
const LOCAL_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const LOCAL_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Metric names (labels: `sink` = the sink's [`SinkConfig::name`], never a finding's
/// content).
pub const METRIC_DELIVERED: &str = "unseen_findings_delivered_total";
pub const METRIC_ERRORS: &str = "unseen_sink_errors_total";
pub const METRIC_PENDING: &str = "unseen_sink_pending";

/// How a file or webhook writes records.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// unseen's own schema (`docs/findings.md`, `docs/triage.md`).
    #[default]
    Json,
    /// OCSF 1.x Detection Finding (class 2004), `unseen_findings::ocsf`.
    Ocsf,
}

/// Where findings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// JSON lines appended to a file.
    File { path: PathBuf, format: Format },
    /// JSON lines on standard output.
    Stdout { format: Format },
    /// POST to a URL.
    Webhook(WebhookConfig),
    /// Splunk HTTP Event Collector.
    Hec(HecConfig),
    /// Prometheus Alertmanager.
    Alertmanager(AlertmanagerConfig),
}

impl SinkConfig {
    /// The name of the sink's outbox cursor in the store, and its metric label.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::File { .. } | SinkConfig::Stdout { .. } => "file",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Hec(_) => "hec",
            SinkConfig::Alertmanager(_) => "alertmanager",
        }
    }

    /// A webhook with the default timing (see [`HttpOptions::default`]), JSON, unsigned.
    pub fn webhook(url: impl Into<String>) -> Self {
        SinkConfig::Webhook(WebhookConfig::new(url))
    }

    /// `-` is standard output, anything else a file path; unseen's JSON.
    pub fn findings(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if path.as_os_str() == "-" {
            SinkConfig::Stdout {
                format: Format::Json,
            }
        } else {
            SinkConfig::File {
                path,
                format: Format::Json,
            }
        }
    }

    /// The same sink writing `format` (files, stdout and the webhook; others ignore it).
    pub fn with_format(mut self, new: Format) -> Self {
        match &mut self {
            SinkConfig::File { format, .. } | SinkConfig::Stdout { format } => *format = new,
            SinkConfig::Webhook(w) => w.format = new,
            SinkConfig::Hec(_) | SinkConfig::Alertmanager(_) => {}
        }
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("findings file {path}: {message}")]
    File { path: String, message: String },
    /// An HTTP sink (webhook, hec, alertmanager) and its URL, shown without credentials.
    #[error("{sink} {url}: {message}")]
    Http {
        sink: &'static str,
        url: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] unseen_store::StoreError),
    /// Two sinks would share one outbox cursor.
    #[error("two sinks named `{name}`: configure at most one findings output (a file or `-`), one webhook, one HEC and one Alertmanager")]
    Duplicate { name: &'static str },
    /// An attempt that did not finish (cut short on shutdown, or a worker that
    /// panicked); its findings stay pending.
    #[error("delivery interrupted: {0}")]
    Interrupted(String),
    /// [`start`] must run inside a Tokio runtime.
    #[error("sinks must be started from within a Tokio runtime")]
    NoRuntime,
}

/// Starts one task per sink. Each registers its cursor, delivers what is pending at
/// once, then again every time `notify` fires, until `shutdown`; on shutdown it makes
/// one last attempt to deliver what is pending and returns.
///
/// Fire `notify` with [`Notify::notify_waiters`]: every sink shares it, and
/// `notify_one` would wake only one of them (the others would still deliver within
/// [`TICK`]). A notification that arrives while a sink is busy delivering is not lost.
///
/// Before any task starts, this registers the cursors, opens the findings file and
/// repairs it after a crash (see [`file`](mod@file)), and checks the webhook URL, so a
/// misconfiguration is an error here rather than a log line later. That work blocks
/// (file and store IO, milliseconds); it happens once, at startup.
pub fn start(
    store: Arc<dyn StateStore>,
    sinks: Vec<SinkConfig>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, SinkError> {
    start_with_tick(store, sinks, notify, shutdown, TICK)
}

/// [`start`] with another safety-net tick (a test that shows `notify` alone delivers sets
/// it far beyond the test's own bound).
pub fn start_with_tick(
    store: Arc<dyn StateStore>,
    sinks: Vec<SinkConfig>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
    tick: Duration,
) -> Result<Vec<JoinHandle<()>>, SinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;
    let mut names = Vec::new();
    for config in &sinks {
        if names.contains(&config.name()) {
            return Err(SinkError::Duplicate {
                name: config.name(),
            });
        }
        names.push(config.name());
    }
    describe_metrics();
    // A cursor whose sink is no longer configured would hold every later record in the
    // log forever: it goes, and the log is pruned past it. (A sink configured again
    // later starts at the end of the log, like any new sink.)
    for (stale, cursor) in store.sinks()? {
        if !names.contains(&stale.as_str()) {
            store.remove_sink(&stale)?;
            tracing::warn!(
                sink = %stale,
                cursor,
                "a sink is no longer configured: its outbox cursor is removed (what it had not delivered is not kept for it)"
            );
        }
    }

    // Open everything first: a bad second sink must not leave the first one running.
    let mut opened = Vec::with_capacity(sinks.len());
    for config in sinks {
        let name = config.name();
        store.register_sink(name)?;
        let backoff = |h: &HttpOptions| Backoff::new(h.initial_backoff, h.max_backoff);
        let sink = match config {
            SinkConfig::File { path, format } => {
                Sink::File(FileSink::open(path, format, store.as_ref(), name)?)
            }
            SinkConfig::Stdout { format } => Sink::Stdout(StdoutSink { format }),
            SinkConfig::Webhook(c) => Sink::Webhook(WebhookSink::new(&c)?, backoff(&c.http)),
            SinkConfig::Hec(c) => Sink::Hec(HecSink::new(&c)?, backoff(&c.http)),
            SinkConfig::Alertmanager(c) => {
                Sink::Alertmanager(AlertmanagerSink::new(&c)?, backoff(&c.http))
            }
        };
        opened.push((name, sink));
    }
    Ok(opened
        .into_iter()
        .map(|(name, sink)| {
            let task = Task {
                store: store.clone(),
                name,
                notify: notify.clone(),
                shutdown: shutdown.clone(),
                tick,
            };
            runtime.spawn(task.run(sink))
        })
        .collect())
}

fn describe_metrics() {
    metrics::describe_counter!(
        METRIC_DELIVERED,
        "Findings delivered (and acknowledged in the outbox) by each sink."
    );
    metrics::describe_counter!(
        METRIC_ERRORS,
        "Failed delivery attempts by each sink; each is retried."
    );
    metrics::describe_gauge!(
        METRIC_PENDING,
        "Findings waiting in each sink's outbox, as of the sink's last look (see the docs of unseen_sinks for the precision)."
    );
}

enum Sink {
    File(FileSink),
    Stdout(StdoutSink),
    Webhook(WebhookSink, Backoff),
    Hec(HecSink, Backoff),
    Alertmanager(AlertmanagerSink, Backoff),
}

/// An HTTP sink: posts a batch of the outbox once.
pub(crate) trait Post {
    /// Records per request.
    fn batch_limit(&self) -> usize;
    /// `Ok` when the receiver took the whole batch.
    fn post(
        &mut self,
        batch: &[(u64, Record)],
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send;
}

/// A delivery attempt that failed: the batch stays pending.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: SinkError,
    /// The receiver asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// A client error (4xx): the operator must fix something; logged as an error.
    pub permanent: bool,
}

impl From<SinkError> for Failure {
    fn from(error: SinkError) -> Self {
        Failure {
            error,
            retry_after: None,
            permanent: false,
        }
    }
}

struct Task {
    store: Arc<dyn StateStore>,
    name: &'static str,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
    tick: Duration,
}

impl Task {
    async fn run(self, mut sink: Sink) {
        let mut local_backoff = Backoff::new(LOCAL_INITIAL_BACKOFF, LOCAL_MAX_BACKOFF);
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(sink = self.name, "sink started");
        loop {
            // Register interest before draining, so a `notify_waiters` fired while we
            // deliver wakes the wait below instead of being missed.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();

            let (delivered, result) = self.drain(&mut sink, true).await;
            let backoff = match &mut sink {
                Sink::Webhook(_, b) | Sink::Hec(_, b) | Sink::Alertmanager(_, b) => b,
                Sink::File(_) | Sink::Stdout(_) => &mut local_backoff,
            };
            if delivered > 0 {
                backoff.reset();
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            match result {
                Ok(()) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = notified => {}
                        _ = tick.tick() => {}
                    }
                }
                Err(failure) => {
                    let delay = match failure.retry_after {
                        Some(asked) => {
                            backoff.skip();
                            asked
                        }
                        None => backoff.next_delay(),
                    };
                    self.report(&failure, Some(delay));
                    // During a backoff, new findings do not shorten the wait: the sink is
                    // failing, not idle.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Shutdown: one last attempt, so a clean stop leaves nothing behind when the
        // sink is up. What is still pending stays in the outbox for the next start.
        let final_drain =
            tokio::time::timeout(FINAL_DRAIN_LIMIT, self.drain(&mut sink, false)).await;
        let (delivered, result) = final_drain.unwrap_or_else(|_| {
            (
                0,
                Err(Failure::from(SinkError::Interrupted(format!(
                    "the last attempt took longer than {FINAL_DRAIN_LIMIT:?}"
                )))),
            )
        });
        match result {
            Ok(()) => tracing::info!(sink = self.name, delivered, "sink stopped, outbox drained"),
            Err(failure) => {
                self.report(&failure, None);
                tracing::warn!(
                    sink = self.name,
                    delivered,
                    "sink stopped with findings still pending; they stay in the outbox and are delivered after the next start"
                );
            }
        }
    }

    fn report(&self, failure: &Failure, retry_in: Option<Duration>) {
        metrics::counter!(METRIC_ERRORS, "sink" => self.name).increment(1);
        let retry_in = retry_in.map(|d| format!("{d:?}"));
        if failure.permanent {
            tracing::error!(sink = self.name, error = %failure.error, retry_in, "delivery refused; findings stay pending and are retried until this is fixed");
        } else {
            tracing::warn!(sink = self.name, error = %failure.error, retry_in, "delivery failed; findings stay pending and are retried");
        }
    }

    /// Delivers batches until nothing is pending (`Ok`) or an attempt fails (or, with
    /// `yield_to_shutdown`, shutdown is asked for: the final drain takes over). Returns
    /// how many findings were delivered and acknowledged either way.
    async fn drain(&self, sink: &mut Sink, yield_to_shutdown: bool) -> (u64, Result<(), Failure>) {
        let mut delivered = 0u64;
        loop {
            if yield_to_shutdown && self.shutdown.is_cancelled() {
                return (delivered, Ok(()));
            }
            let step = match sink {
                Sink::File(file) => self.file_step(file).await,
                Sink::Stdout(out) => self.stdout_step(out.format).await,
                Sink::Webhook(hook, _) => self.http_step(hook).await,
                Sink::Hec(hec, _) => self.http_step(hec).await,
                Sink::Alertmanager(am, _) => {
                    if am.resend_due() {
                        // Before the outbox: a close in it then comes after this re-send.
                        let open = self
                            .blocking(|store| {
                                store
                                    .open_incidents()
                                    .map_err(|e| SinkError::from(e).into())
                            })
                            .await;
                        if let Err(failure) = match open {
                            Ok(open) => am.resend(&open).await,
                            Err(failure) => Err(failure),
                        } {
                            return (delivered, Err(failure));
                        }
                    }
                    self.http_step(am).await
                }
            };
            match step {
                Ok(0) => return (delivered, Ok(())),
                Ok(n) => {
                    delivered += n as u64;
                    metrics::counter!(METRIC_DELIVERED, "sink" => self.name).increment(n as u64);
                }
                Err(failure) => return (delivered, Err(failure)),
            }
        }
    }

    /// Runs a blocking closure on the blocking pool. A panic in it is a bug; it is
    /// reported as a failure (and retried) rather than taking the task down.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StateStore) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(Failure::from(SinkError::Interrupted(format!(
                    "sink worker failed: {e}"
                ))))
            })
    }

    /// One file batch: pending → write → fsync → ack, all on the blocking pool (one
    /// thread hop per batch). The file moves into the closure and back.
    async fn file_step(&self, file: &mut FileSink) -> Result<usize, Failure> {
        let name = self.name;
        let mut owned = file.take();
        let (path, format) = (owned.path().to_path_buf(), owned.format());
        let (owned, result) = self
            .blocking(move |store| {
                let result = owned.deliver_next(store, name);
                Ok((owned, result))
            })
            .await
            // Only a panic gets here, and it lost the open file: the next attempt
            // reopens it and repairs its end, as after a crash.
            .unwrap_or_else(|f| (FileSink::lost(path, format), Err(f)));
        *file = owned;
        result
    }

    async fn stdout_step(&self, format: Format) -> Result<usize, Failure> {
        let name = self.name;
        self.blocking(move |store| StdoutSink { format }.deliver_next(store, name))
            .await
    }

    /// One batch of an HTTP sink: pending → post → ack.
    async fn http_step(&self, sink: &mut impl Post) -> Result<usize, Failure> {
        let name = self.name;
        let limit = sink.batch_limit();
        let batch: Vec<(u64, Record)> = self
            .blocking(move |store| {
                let batch = store.pending(name, limit).map_err(SinkError::from)?;
                set_pending_gauge(store, name, batch.len(), limit);
                Ok(batch)
            })
            .await?;
        let Some(&(last_seq, _)) = batch.last() else {
            return Ok(0);
        };
        sink.post(&batch).await?;
        self.blocking(move |store| {
            store
                .ack(name, last_seq)
                .map_err(|e| SinkError::from(e).into())
        })
        .await?;
        Ok(batch.len())
    }
}

/// Sets the pending gauge after a look at the outbox that returned `seen` findings
/// with a limit of `limit`.
///
/// The store tells how many findings are pending for a sink only by listing them, so
/// below the batch size the count is exact; at or above it, the gauge shows the log's
/// length (findings not yet passed by every sink), which equals this sink's backlog
/// when it is the furthest behind (the case worth alerting on) and bounds it otherwise.
pub(crate) fn set_pending_gauge(
    store: &dyn StateStore,
    name: &'static str,
    seen: usize,
    limit: usize,
) {
    let pending = if seen < limit {
        seen as u64
    } else {
        store.log_len().unwrap_or(seen as u64).max(seen as u64)
    };
    metrics::gauge!(METRIC_PENDING, "sink" => name).set(pending as f64);
}
