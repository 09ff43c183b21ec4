//! Group commit: every request's sightings go through one queue to one task that
//! applies whatever has accumulated in a single durable transaction, then answers
//! each request.
//!
//! Why one writer: the store's transactions are serial anyway, and an fsync costs
//! about the same for one point as for a hundred thousand. While a commit is on disk,
//! the next requests queue up and go together into the next one, so the commit rate
//! adapts to the load without a timer: an idle server commits a lone request at once
//! (lowest latency), a busy one commits large batches (highest throughput).
//!
//! Backpressure: the queue holds at most `queue_requests` requests. A request that
//! finds it full is answered "unavailable, retry after 1 s" at once, before its
//! points are taken: nothing is acknowledged that is not committed, and memory stays
//! bounded however fast clients send.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use unseen_findings::{Suppressions, TriageSettings};
use unseen_model::Rule;
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::KeyMode;
use unseen_store::{ApplyOptions, Refusal, Sighting, StateStore, StoreError};

use crate::metrics as m;

/// How often keys past the forgetting horizon are removed.
pub const FORGET_EVERY: Duration = Duration::from_secs(60);

/// What the committer needs to know, fixed for the life of the server.
#[derive(Debug, Clone)]
pub struct CommitConfig {
    /// The rule, as data, and how its findings are triaged.
    pub rule: Rule,
    pub triage: TriageSettings,
    pub windows: Windows,
    pub mode: KeyMode,
    pub max_keys: u64,
    /// Sightings per transaction, at most (more waits for the next one).
    pub max_batch_points: usize,
    /// Until this time (server clock), sightings are recorded without reporting.
    pub learning_until: Option<UnixSecs>,
    /// The suppression rules in force: each commit takes the latest.
    pub suppressions: tokio::sync::watch::Receiver<Arc<Suppressions>>,
}

/// One request's sightings and where its answer goes.
struct Job {
    sightings: Vec<Sighting>,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// A request's share of a commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Sightings refused because of the key cap.
    pub key_cap: u64,
}

/// Why a request could not be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: retry later.
    Overloaded,
    /// The server is stopping.
    ShuttingDown,
    /// The store failed; nothing of the request was kept.
    Store(String),
}

/// The receivers' side of the queue.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Queues the sightings and waits until they are durable. Fails at once when the
    /// queue is full.
    pub async fn submit(&self, sightings: Vec<Sighting>) -> Result<Committed, SubmitError> {
        if sightings.is_empty() {
            return Ok(Committed::default());
        }
        let permit = self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(()) => SubmitError::ShuttingDown,
        })?;
        let (reply, answer) = oneshot::channel();
        permit.send(Job { sightings, reply });
        m::queue_depth(self.tx.max_capacity() - self.tx.capacity());
        match answer.await {
            Ok(Ok(committed)) => Ok(committed),
            Ok(Err(message)) => Err(SubmitError::Store(message)),
            // The committer is gone (a panic): the request was not committed.
            Err(_) => Err(SubmitError::ShuttingDown),
        }
    }
}

/// Starts the committer task. It runs until every [`Committer`] is dropped or `close`
/// is cancelled, and then until the queue is empty: what was queued is committed and
/// answered; what is submitted after `close` is refused (the server is stopping).
pub fn start(
    store: Arc<dyn StateStore>,
    config: CommitConfig,
    queue_requests: usize,
    notify: Arc<Notify>,
    close: CancellationToken,
) -> (Committer, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue_requests.max(1));
    // Stopped with the committer (or by `close`, its parent).
    let forget_stop = close.child_token();
    let forgetting = tokio::spawn(forget_loop(
        store.clone(),
        config.windows,
        forget_stop.clone(),
    ));
    let task = tokio::spawn(async move {
        run(rx, store, config, notify, close).await;
        // The queue is drained; a forget in progress finishes (in transactions of its
        // own), and the task ends.
        forget_stop.cancel();
        let _ = forgetting.await;
    });
    (Committer { tx }, task)
}

pub fn now_secs() -> UnixSecs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as UnixSecs)
        .unwrap_or(0)
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn StateStore>,
    config: CommitConfig,
    notify: Arc<Notify>,
    close: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            job = rx.recv() => job,
            _ = close.cancelled(), if !rx.is_closed() => {
                // Refuse new requests, keep the queued ones.
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        let mut points = jobs[0].sightings.len();
        while points < config.max_batch_points {
            match rx.try_recv() {
                Ok(job) => {
                    points += job.sightings.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        m::queue_depth(rx.len());
        commit(&store, &config, jobs, points, &notify).await;
    }
    tracing::debug!("committer stopped: queue drained");
}

async fn commit(
    store: &Arc<dyn StateStore>,
    config: &CommitConfig,
    jobs: Vec<Job>,
    points: usize,
    notify: &Notify,
) {
    let mut batch = Vec::with_capacity(points);
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let start = batch.len();
        batch.extend(job.sightings);
        replies.push((start..batch.len(), job.reply));
    }
    let now = now_secs();
    let opts = ApplyOptions {
        rule: config.rule.clone(),
        triage: config.triage,
        windows: config.windows,
        mode: config.mode.clone(),
        now,
        report: config.learning_until.is_none_or(|until| now >= until),
        suppressions: config.suppressions.borrow().clone(),
        max_keys: config.max_keys,
    };
    m::learning(!opts.report);
    let started = Instant::now();
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || store.apply(&batch, &opts))
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(format!("commit task failed: {e}"))));
    m::commit_seconds(started.elapsed());
    match result {
        Ok(applied) => {
            m::keys_tracked(applied.keys);
            let findings = applied
                .records
                .iter()
                .filter(|(_, r)| r.finding().is_some())
                .count() as u64;
            m::findings(findings);
            m::suppressed(
                applied
                    .records
                    .iter()
                    .filter(|(_, r)| r.finding().is_some_and(|f| f.suppressed.is_some()))
                    .count() as u64,
            );
            m::incidents(applied.records.len() as u64 - findings);
            if !applied.records.is_empty() {
                notify.notify_waiters();
            }
            // `refused` is in batch order, and each request holds one range of the batch.
            let mut refused = applied.refused.iter().peekable();
            for (range, reply) in replies {
                let mut share = Committed::default();
                while let Some(&&(index, why)) = refused.peek() {
                    if !range.contains(&index) {
                        break;
                    }
                    match why {
                        Refusal::KeyCapReached => share.key_cap += 1,
                    }
                    refused.next();
                }
                // A sender that gave up (a closed connection) is no error: its points
                // are committed, and a retry finds them already applied.
                let _ = reply.send(Ok(share));
            }
        }
        Err(error) => {
            tracing::error!(%error, points, "commit failed; the requests are answered 'unavailable' and will be retried by their senders");
            m::commit_failed();
            let message = error.to_string();
            for (_, reply) in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}

/// Forgets keys past the horizon (B − R behind the newest point) at start, then every
/// [`FORGET_EVERY`] while new points arrive, until `stop`.
///
/// Why a task of its own rather than a step of the committer: forgetting scans the whole
/// key table, which with millions of keys takes seconds; in the committer, it would hold
/// back the first acknowledgement after a restart and, every minute, every request
/// waiting behind it. The store interleaves the two safely: `forget` works in small
/// transactions of its own, each of which sees the state every `apply` before it left.
///
/// Nothing becomes forgettable unless the newest point time moves (the horizon is
/// relative to it), so an idle server does not rescan its keys.
async fn forget_loop(store: Arc<dyn StateStore>, windows: Windows, stop: CancellationToken) {
    // The newest point time at the last pass that succeeded; `None` before the first.
    let mut scanned_at: Option<Option<UnixSecs>> = None;
    loop {
        let newest = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.newest_point())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        };
        if scanned_at != Some(newest) && forget(&store, &windows).await {
            scanned_at = Some(newest);
        }
        tokio::select! {
            _ = tokio::time::sleep(FORGET_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass over the keys; false when it failed (it is retried at the next turn).
async fn forget(store: &Arc<dyn StateStore>, windows: &Windows) -> bool {
    let store = store.clone();
    let windows = *windows;
    match tokio::task::spawn_blocking(move || {
        let forgotten = store.forget(&windows)?;
        Ok::<_, StoreError>((forgotten, store.key_count()?))
    })
    .await
    {
        Ok(Ok((forgotten, keys))) => {
            m::keys_tracked(keys);
            if forgotten > 0 {
                m::keys_forgotten(forgotten);
                tracing::info!(forgotten, keys, "forgot keys past the horizon (B − R)");
            }
            true
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "forgetting old keys failed; retried later");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "forgetting old keys failed; retried later");
            false
        }
    }
}
