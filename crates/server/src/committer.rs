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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use unseen_findings::{Incident, Record};
use unseen_findings::{Suppressions, TriageSettings};
use unseen_model::Rule;
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::KeyMode;
use unseen_store::{ApplyOptions, NewKeyQuota, Refusal, Sighting, StateStore, StoreError};

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
    /// New keys per second per sender (a token, or a cluster without tokens); 0: no limit.
    pub new_keys_per_second: u64,
    /// New keys a sender may create at once.
    pub new_keys_burst: u64,
    /// The query API's history keeps records this long (seconds, by `detected_at`).
    pub history_retention: u64,
}

/// A fault the server cannot go on after: a store call that panicked (a bug). A store
/// that panicked in the middle of a change may hold a state in memory that is neither
/// the one before nor the one after (the embedded store's lock is then poisoned, and
/// every later commit would fail), so the server stops, and its supervisor (systemd,
/// Kubernetes) starts it again from the store's durable state: what was acknowledged is
/// in it; what was not, its senders send again.
#[derive(Debug, Clone)]
pub struct Fatal {
    reason: Arc<std::sync::Mutex<Option<String>>>,
    stop: CancellationToken,
}

impl Fatal {
    /// Raising it cancels `stop` (the server's receivers, which starts the drain).
    pub fn new(stop: CancellationToken) -> Fatal {
        Fatal {
            reason: Arc::default(),
            stop,
        }
    }

    /// Records that `what` panicked (the first reason is kept) and stops the server.
    fn raise(&self, what: &str, error: tokio::task::JoinError) {
        let panic = match error.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string()),
            Err(error) => error.to_string(),
        };
        self.stop_because(format!(
            "{what} panicked, which is a bug (please report it, with this log): {panic}"
        ));
    }

    /// Stops the server when `error` says the store cannot go on: a call panicked
    /// while it held the state (in a task of its own, which did not stop the server:
    /// the query API's, say).
    fn check(&self, error: &StoreError) {
        if matches!(error, StoreError::Poisoned) {
            self.stop_because(error.to_string());
        }
    }

    fn stop_because(&self, why: String) {
        let reason = format!(
            "{why}. unseen stopped so that its supervisor starts it again from the store: what was acknowledged is in the store; what was not, its senders send again"
        );
        tracing::error!("{reason}");
        if let Ok(mut first) = self.reason.lock() {
            first.get_or_insert(reason);
        }
        self.stop.cancel();
    }

    /// Why the server stopped, if it was raised.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// The capacity notice is raised at most this often while the key cap holds.
pub const CAPACITY_NOTICE_EVERY: Duration = Duration::from_secs(3_600);

/// One request's sightings and where its answer goes.
struct Job {
    sightings: Vec<Sighting>,
    /// The name of the request's token; `None` without tokens (the sender of each
    /// sighting is then its cluster).
    token: Option<Arc<str>>,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// A request's share of a commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Sightings refused because of the key cap.
    pub key_cap: u64,
    /// Sightings refused because their sender created new keys too fast, who that was,
    /// and when its allowance covers them again.
    pub rate_limited: u64,
    pub rate_limited_sender: Option<String>,
    pub retry_after: Duration,
}

/// The rate of new keys, as token buckets per sender (`token` or `cluster` and a name).
/// Buckets that have filled up again are forgotten, so the map holds only senders that
/// created keys within the last `burst / rate` seconds.
#[derive(Debug, Default)]
struct NewKeyLimiter {
    buckets: HashMap<(bool, String), Bucket>,
    pruned: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl NewKeyLimiter {
    fn available(&mut self, sender: (bool, &str), rate: u64, burst: u64, now: Instant) -> u64 {
        match self.buckets.get_mut(&(sender.0, sender.1.to_string())) {
            Some(bucket) => {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(burst as f64);
                bucket.at = now;
                bucket.tokens.floor() as u64
            }
            None => burst,
        }
    }

    fn spend(&mut self, sender: (bool, &str), used: u64, burst: u64, now: Instant) {
        if used == 0 {
            return;
        }
        let bucket = self
            .buckets
            .entry((sender.0, sender.1.to_string()))
            .or_insert(Bucket {
                tokens: burst as f64,
                at: now,
            });
        bucket.tokens = (bucket.tokens - used as f64).max(0.0);
    }

    fn prune(&mut self, rate: u64, burst: u64, now: Instant) {
        if self
            .pruned
            .is_some_and(|at| now.duration_since(at) < FORGET_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * (rate as f64) < (burst as f64)
        });
    }
}

/// What the committer keeps between commits.
#[derive(Debug, Default)]
struct CommitterState {
    limiter: NewKeyLimiter,
    /// When the capacity notice was last raised.
    capacity_noticed: Option<Instant>,
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
    pub async fn submit(
        &self,
        sightings: Vec<Sighting>,
        token: Option<Arc<str>>,
    ) -> Result<Committed, SubmitError> {
        if sightings.is_empty() {
            return Ok(Committed::default());
        }
        let permit = self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(()) => SubmitError::ShuttingDown,
        })?;
        let (reply, answer) = oneshot::channel();
        permit.send(Job {
            sightings,
            token,
            reply,
        });
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
    ready: crate::Readiness,
    close: CancellationToken,
    fatal: Fatal,
) -> (Committer, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue_requests.max(1));
    // Stopped with the committer (or by `close`, its parent).
    let forget_stop = close.child_token();
    let forgetting = tokio::spawn(forget_loop(
        store.clone(),
        config.windows,
        config.history_retention,
        forget_stop.clone(),
        fatal.clone(),
    ));
    let task = tokio::spawn(async move {
        // Run in a task of its own so that a panic is seen here: the server is then not
        // ready (it cannot commit), and says why.
        let ready_now = ready.clone();
        let closing = close.clone();
        let outcome = tokio::spawn(run(
            rx,
            store,
            config,
            notify,
            ready_now,
            close,
            fatal.clone(),
        ))
        .await;
        match outcome {
            Err(error) if error.is_panic() => fatal.raise("the committer", error),
            Err(error) => {
                tracing::error!(%error, "the committer stopped: requests can no longer be committed; restart unseen")
            }
            Ok(()) => {}
        }
        if !closing.is_cancelled() {
            ready.set_problem(Some(
                "the committer stopped (see the log): requests can no longer be committed; restart unseen".to_string(),
            ));
        }
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
    ready: crate::Readiness,
    close: CancellationToken,
    fatal: Fatal,
) {
    let mut state = CommitterState::default();
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
        let committed = commit(&store, &config, &mut state, jobs, points, &notify, &fatal).await;
        // Readiness follows the last commit: a store that fails every commit (a full disk)
        // makes the server not ready, so a load balancer sends to another replica.
        ready.set_problem(committed.err().map(|error| {
            format!("the last commit failed ({error}); requests are answered 'unavailable, retry' until one succeeds")
        }));
    }
    tracing::debug!("committer stopped: queue drained");
}

/// Who sends each sighting, for the rate of new keys: the batch's senders (token or
/// cluster, name) and, per sighting, an index into them.
fn senders(jobs: &[Job], points: usize) -> (Vec<(bool, String)>, Vec<u32>) {
    let mut names: Vec<(bool, String)> = Vec::new();
    let mut index: HashMap<(bool, &str), u32> = HashMap::new();
    let mut of = Vec::with_capacity(points);
    for job in jobs {
        let mut last: Option<(bool, &str, u32)> = None;
        for s in &job.sightings {
            let sender = match &job.token {
                Some(token) => (true, token.as_ref()),
                None => (false, s.key.cluster.as_str()),
            };
            // Consecutive points mostly share their sender: skip the hash then.
            let i = match last {
                Some((t, name, i)) if t == sender.0 && name == sender.1 => i,
                _ => *index.entry(sender).or_insert_with(|| {
                    names.push((sender.0, sender.1.to_string()));
                    names.len() as u32 - 1
                }),
            };
            last = Some((sender.0, sender.1, i));
            of.push(i);
        }
    }
    (names, of)
}

fn describe_sender(sender: &(bool, String)) -> String {
    match sender {
        (true, name) => format!("token `{name}`"),
        (false, name) => format!("cluster `{name}`"),
    }
}

async fn commit(
    store: &Arc<dyn StateStore>,
    config: &CommitConfig,
    state: &mut CommitterState,
    jobs: Vec<Job>,
    points: usize,
    notify: &Notify,
    fatal: &Fatal,
) -> Result<(), String> {
    let rate = config.new_keys_per_second;
    let burst = config.new_keys_burst;
    let clock = Instant::now();
    let (sender_names, quota) = if rate > 0 {
        let (names, of) = senders(&jobs, points);
        let allowance = names
            .iter()
            .map(|(t, n)| state.limiter.available((*t, n), rate, burst, clock))
            .collect();
        (
            names,
            Some(NewKeyQuota {
                sender: of,
                allowance,
            }),
        )
    } else {
        (Vec::new(), None)
    };
    let mut batch = Vec::with_capacity(points);
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let start = batch.len();
        batch.extend(job.sightings);
        replies.push((start..batch.len(), job.reply));
    }
    let senders_of = quota.as_ref().map(|q| q.sender.clone());
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
        new_keys: quota,
        notices: Vec::new(),
    };
    m::learning(!opts.report);
    let started = Instant::now();
    let result = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.apply(&batch, &opts).map(|a| (a, opts)))
            .await
            .unwrap_or_else(|e| {
                // Answered "unavailable, retry" below, like any failed commit, while the
                // server stops.
                let message = format!("the commit did not finish: {e}");
                if e.is_panic() {
                    fatal.raise("a commit", e);
                }
                Err(StoreError::Backend(message))
            })
    };
    m::commit_seconds(started.elapsed());
    match result {
        Ok((applied, opts)) => {
            m::keys_tracked(applied.keys);
            m::store_io(applied.io);
            for warning in &applied.warnings {
                tracing::warn!(%warning, "the state store's upkeep failed; the batch is committed and the next one tries again");
            }
            for (sender, used) in sender_names.iter().zip(&applied.new_keys) {
                state
                    .limiter
                    .spend((sender.0, &sender.1), *used, burst, clock);
            }
            state.limiter.prune(rate, burst, clock);
            let capped = applied
                .refused
                .iter()
                .filter(|(_, why)| *why == Refusal::KeyCapReached)
                .count() as u64;
            m::capacity_reached(applied.keys >= config.max_keys);
            if capped > 0 {
                let notice =
                    capacity_notice(store, config, state, opts, applied.keys, capped, notify);
                if let Err(panic) = notice.await {
                    fatal.raise("writing the capacity notice", panic);
                }
            }
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
                        Refusal::NewKeyRateLimited => {
                            share.rate_limited += 1;
                            if share.rate_limited_sender.is_none() {
                                share.rate_limited_sender = senders_of
                                    .as_ref()
                                    .and_then(|of| of.get(index))
                                    .and_then(|&i| sender_names.get(i as usize))
                                    .map(describe_sender);
                            }
                        }
                    }
                    refused.next();
                }
                if share.rate_limited > 0 {
                    // When the sender's bucket holds these keys again, within a minute.
                    let secs = share.rate_limited.div_ceil(rate.max(1)).clamp(1, 60);
                    share.retry_after = Duration::from_secs(secs);
                }
                // A sender that gave up (a closed connection) is no error: its points
                // are committed, and a retry finds them already applied.
                let _ = reply.send(Ok(share));
            }
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, points, "commit failed; the requests are answered 'unavailable' and will be retried by their senders");
            fatal.check(&error);
            m::commit_failed();
            let message = error.to_string();
            for (_, reply) in replies {
                let _ = reply.send(Err(message.clone()));
            }
            Err(message)
        }
    }
}

/// Raises the capacity notice (an operational incident, `unseen.capacity`) in a commit
/// of its own, unless it was raised within [`CAPACITY_NOTICE_EVERY`]. The state being at
/// its cap is also the gauge `unseen_capacity_reached`, for a continuous alert.
async fn capacity_notice(
    store: &Arc<dyn StateStore>,
    config: &CommitConfig,
    state: &mut CommitterState,
    mut opts: ApplyOptions,
    keys: u64,
    refused: u64,
    notify: &Notify,
) -> Result<(), tokio::task::JoinError> {
    if state
        .capacity_noticed
        .is_some_and(|at| at.elapsed() < CAPACITY_NOTICE_EVERY)
    {
        return Ok(());
    }
    tracing::error!(
        keys,
        max_keys = config.max_keys,
        refused,
        "the state is at its key cap (limits.max_keys): points of new keys are refused, so new images go unreported. Raise limits.max_keys, or find what creates keys (a runaway label, a hostile sender: unseen_points_rejected_total by reason). Raised as an `unseen.capacity` incident at most once an hour"
    );
    let notice = Incident::capacity(keys, config.max_keys, refused, opts.now);
    opts.notices = vec![Record::Incident(Box::new(notice))];
    opts.new_keys = None;
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || store.apply(&[], &opts)).await;
    match result {
        Ok(Ok(_)) => {
            state.capacity_noticed = Some(Instant::now());
            m::incidents(1);
            notify.notify_waiters();
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "the capacity notice could not be written; tried again at the next refusal")
        }
        // A bug: the caller stops the server.
        Err(error) if error.is_panic() => return Err(error),
        Err(error) => {
            tracing::warn!(%error, "the capacity notice could not be written; tried again at the next refusal")
        }
    }
    Ok(())
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
///
/// The same task drops the query API's history records older than `history_retention`
/// (by the server clock): a walk from the oldest record that stops at the first one kept.
async fn forget_loop(
    store: Arc<dyn StateStore>,
    windows: Windows,
    history_retention: u64,
    stop: CancellationToken,
    fatal: Fatal,
) {
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
        if scanned_at != Some(newest) && forget(&store, &windows, &fatal).await {
            scanned_at = Some(newest);
        }
        prune_history(&store, history_retention).await;
        tokio::select! {
            _ = tokio::time::sleep(FORGET_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Drops the history records past the retention; a failure is retried at the next turn.
async fn prune_history(store: &Arc<dyn StateStore>, retention: u64) {
    let store = store.clone();
    let before = now_secs().saturating_sub(retention.min(i64::MAX as u64) as UnixSecs);
    match tokio::task::spawn_blocking(move || store.prune_history(before)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(pruned)) => tracing::info!(pruned, "dropped history records past the retention"),
        Ok(Err(error)) => tracing::warn!(%error, "pruning the history failed; retried later"),
        Err(error) => tracing::warn!(%error, "pruning the history failed; retried later"),
    }
}

/// One pass over the keys; false when it failed (it is retried at the next turn).
async fn forget(store: &Arc<dyn StateStore>, windows: &Windows, fatal: &Fatal) -> bool {
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
            fatal.check(&error);
            false
        }
        Err(error) if error.is_panic() => {
            fatal.raise("forgetting old keys", error);
            false
        }
        Err(error) => {
            tracing::warn!(%error, "forgetting old keys failed; retried later");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_refills_at_its_rate_up_to_its_burst_and_full_buckets_are_forgotten() {
        let mut limiter = NewKeyLimiter::default();
        let t0 = Instant::now();
        let alpha = (false, "alpha");
        assert_eq!(limiter.available(alpha, 10, 100, t0), 100, "a new sender");
        limiter.spend(alpha, 100, 100, t0);
        assert_eq!(limiter.available(alpha, 10, 100, t0), 0);
        let later = t0 + Duration::from_millis(2_500);
        assert_eq!(limiter.available(alpha, 10, 100, later), 25);
        limiter.spend(alpha, 5, 100, later);
        // Another sender, or the same name as a token, is another bucket.
        assert_eq!(limiter.available((true, "alpha"), 10, 100, later), 100);
        let much_later = later + Duration::from_secs(3_600);
        assert_eq!(
            limiter.available(alpha, 10, 100, much_later),
            100,
            "at most the burst"
        );
        limiter.prune(10, 100, much_later);
        assert!(limiter.buckets.is_empty(), "{:?}", limiter.buckets);
    }
}
