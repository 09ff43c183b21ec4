//! Shared by the sink tests: stores of both backends that can be "restarted", findings
//! from the test key pool, a real HTTP receiver for the webhook, polling.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use unseen_findings::Finding;
use unseen_sinks::SinkConfig;
use unseen_store::conformance::{key, opts, sighting};
use unseen_store::{MemStore, RedbStore, StateStore, StoreError};

/// Both backends, behind one "process" abstraction: `restart` gives the store a new
/// process would see (the same memory store; the redb store closed and reopened).
pub enum Backend {
    Mem(Arc<MemStore>),
    Redb(tempfile::TempDir, Option<Arc<RedbStore>>),
}

impl Backend {
    pub fn all() -> Vec<Backend> {
        vec![Backend::mem(), Backend::redb()]
    }

    pub fn mem() -> Backend {
        Backend::Mem(Arc::new(MemStore::new()))
    }

    pub fn redb() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path()).expect("open redb store");
        Backend::Redb(dir, Some(Arc::new(store)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Mem(_) => "mem",
            Backend::Redb(..) => "redb",
        }
    }

    pub fn store(&self) -> Arc<dyn StateStore> {
        match self {
            Backend::Mem(s) => s.clone(),
            Backend::Redb(_, s) => s.clone().expect("store open"),
        }
    }

    /// Closes and reopens the store. Every other handle must be gone (sink tasks
    /// joined): redb holds a lock on its file.
    pub fn restart(&mut self) {
        if let Backend::Redb(dir, slot) = self {
            let old = slot.take().expect("store open");
            assert_eq!(Arc::strong_count(&old), 1, "a sink still holds the store");
            drop(old);
            *slot = Some(Arc::new(
                RedbStore::open(dir.path()).expect("reopen redb store"),
            ));
        }
    }
}

/// Applies one sighting for each of the keys `range` (each opens an episode) and
/// returns the findings in log order.
pub fn add_findings(store: &dyn StateStore, range: std::ops::Range<usize>) -> Vec<Finding> {
    let batch: Vec<_> = range
        .map(|i| sighting(&key(i), 10_000 + i as i64))
        .collect();
    let applied = store.apply(&batch, &opts(20_000)).expect("apply");
    assert_eq!(
        applied.records.len(),
        batch.len(),
        "each key opens an episode"
    );
    applied
        .records
        .into_iter()
        .map(|(_, r)| r.finding().cloned().expect("strict mode: only findings"))
        .collect()
}

pub fn ids(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(|f| f.finding_id.clone()).collect()
}

/// The sinks of one "process" run.
pub struct Running {
    pub notify: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub handles: Vec<JoinHandle<()>>,
}

pub fn start(store: Arc<dyn StateStore>, sinks: Vec<SinkConfig>) -> Running {
    start_with_tick(store, sinks, unseen_sinks::TICK)
}

/// [`start`] with another safety-net tick.
pub fn start_with_tick(
    store: Arc<dyn StateStore>,
    sinks: Vec<SinkConfig>,
    tick: std::time::Duration,
) -> Running {
    let notify = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let handles =
        unseen_sinks::start_with_tick(store, sinks, notify.clone(), shutdown.clone(), tick)
            .expect("start sinks");
    Running {
        notify,
        shutdown,
        handles,
    }
}

impl Running {
    /// Graceful stop: cancel, wait for the tasks (bounded).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .expect("sink task stops within 20 s")
                .expect("sink task did not panic");
        }
    }

    /// A crash: the tasks are aborted wherever they are.
    pub async fn kill(self) {
        for h in &self.handles {
            h.abort();
        }
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The findings file's lines, parsed; a line that is not a finding fails the test.
pub fn file_findings(path: &Path) -> Vec<Finding> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "file ends mid-line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a finding ({e}): {l}")))
        .collect()
}

pub fn file_ids(path: &Path) -> Vec<String> {
    ids(&file_findings(path))
}

pub fn pending_count(store: &dyn StateStore, sink: &str) -> usize {
    store.pending(sink, usize::MAX).expect("pending").len()
}

/// A store whose `ack` fails (always, or the first `n` times): a crash between the
/// write and the ack, seen from the sink.
pub struct FailingAck {
    pub inner: Arc<dyn StateStore>,
    pub failures_left: Mutex<Option<u32>>,
    /// Calls of `pending`: one per delivery attempt of a sink.
    pub pending_calls: std::sync::atomic::AtomicU64,
}

impl FailingAck {
    pub fn always(inner: Arc<dyn StateStore>) -> Arc<Self> {
        Arc::new(FailingAck {
            inner,
            failures_left: Mutex::new(None),
            pending_calls: Default::default(),
        })
    }
    pub fn times(inner: Arc<dyn StateStore>, n: u32) -> Arc<Self> {
        Arc::new(FailingAck {
            inner,
            failures_left: Mutex::new(Some(n)),
            pending_calls: Default::default(),
        })
    }
}

impl StateStore for FailingAck {
    fn apply(
        &self,
        batch: &[unseen_store::Sighting],
        opts: &unseen_store::ApplyOptions,
    ) -> Result<unseen_store::Applied, StoreError> {
        self.inner.apply(batch, opts)
    }
    fn get(
        &self,
        key: &unseen_normalize::Key,
    ) -> Result<Option<unseen_detect::KeyState>, StoreError> {
        self.inner.get(key)
    }
    fn key_count(&self) -> Result<u64, StoreError> {
        self.inner.key_count()
    }
    fn forget(&self, windows: &unseen_model::Windows) -> Result<u64, StoreError> {
        self.inner.forget(windows)
    }
    fn newest_point(&self) -> Result<Option<unseen_model::UnixSecs>, StoreError> {
        self.inner.newest_point()
    }
    fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        self.inner.register_sink(sink)
    }
    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError> {
        self.inner.remove_sink(sink)
    }
    fn pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.pending_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.pending(sink, limit)
    }
    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let mut left = self.failures_left.lock().unwrap();
        match left.as_mut() {
            None => return Err(StoreError::Backend("injected: crash before the ack".into())),
            Some(0) => {}
            Some(n) => {
                *n -= 1;
                return Err(StoreError::Backend("injected: ack failed".into()));
            }
        }
        drop(left);
        self.inner.ack(sink, seq)
    }
    fn log_len(&self) -> Result<u64, StoreError> {
        self.inner.log_len()
    }
    fn learning_started_at(
        &self,
        now: unseen_model::UnixSecs,
    ) -> Result<unseen_model::UnixSecs, StoreError> {
        self.inner.learning_started_at(now)
    }

    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError> {
        self.inner.bind_key_mode(mode)
    }

    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.sinks()
    }

    fn open_incidents(&self) -> Result<Vec<unseen_findings::Incident>, StoreError> {
        self.inner.open_incidents()
    }

    fn history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.inner.history(after, limit)
    }

    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.inner.history_get(seqs)
    }

    fn prune_history(&self, before: unseen_model::UnixSecs) -> Result<u64, StoreError> {
        self.inner.prune_history(before)
    }

    fn append_audit(&self, entry: &unseen_store::AuditEntry) -> Result<u64, StoreError> {
        self.inner.append_audit(entry)
    }

    fn audit(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::AuditEntry)>, StoreError> {
        self.inner.audit(after, limit)
    }

    fn for_each_key(
        &self,
        f: &mut dyn FnMut(&unseen_normalize::Key, &unseen_detect::KeyState),
    ) -> Result<(), StoreError> {
        self.inner.for_each_key(f)
    }
}

/// What the test receiver answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <value>`.
    RetryAfter(u16, &'static str),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub content_type: Option<String>,
    pub ids: Vec<String>,
    pub status: u16,
}

/// A webhook receiver: answers from `plan` (then 200), refuses bodies with more than
/// `max_batch` findings with 413, records everything.
#[derive(Default)]
pub struct Receiver {
    pub plan: Mutex<VecDeque<Reply>>,
    pub max_batch: Mutex<Option<usize>>,
    pub log: Mutex<Vec<Received>>,
}

impl Receiver {
    pub fn new(plan: Vec<Reply>) -> Arc<Self> {
        Arc::new(Receiver {
            plan: Mutex::new(plan.into()),
            ..Default::default()
        })
    }

    /// Finding ids of the requests answered 2xx (duplicates kept).
    pub fn accepted_ids(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.ids.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let records: Vec<unseen_store::Record> =
        serde_json::from_slice(&body).expect("body is a JSON array of records");
    // Findings by id; incidents as `<incident_id> <state>`.
    let ids: Vec<String> = records
        .iter()
        .map(|r| match r {
            unseen_store::Record::Finding(f) => f.finding_id.clone(),
            unseen_store::Record::Incident(i) => format!("{} {:?}", i.incident_id, i.state),
        })
        .collect();
    let too_big = rx.max_batch.lock().unwrap().is_some_and(|m| ids.len() > m);
    let reply = if too_big {
        Reply::Status(413)
    } else {
        rx.plan
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Status(200))
    };
    let status = match reply {
        Reply::Status(s) | Reply::RetryAfter(s, _) => s,
    };
    rx.log.lock().unwrap().push(Received {
        at,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ids,
        status,
    });
    let code = StatusCode::from_u16(status).expect("status");
    match reply {
        Reply::RetryAfter(_, value) => {
            (code, [("retry-after", value)], "slow down").into_response()
        }
        Reply::Status(_) => (code, "from the test receiver").into_response(),
    }
}

/// Serves `rx` on `addr` (port 0 for any) until the returned token is cancelled.
pub async fn serve(
    rx: Arc<Receiver>,
    addr: SocketAddr,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let app = Router::new().route("/hook", post(receive)).with_state(rx);
    let signal = stop.clone();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .expect("receiver runs");
    });
    (addr, stop, handle)
}

/// An address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Fast retries for tests.
pub fn fast_http() -> unseen_sinks::HttpOptions {
    unseen_sinks::HttpOptions {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

pub fn webhook(addr: SocketAddr) -> SinkConfig {
    let mut hook = unseen_sinks::webhook::WebhookConfig::new(format!("http://{addr}/hook"));
    hook.http = fast_http();
    SinkConfig::Webhook(hook)
}
