//! Durable state for `unseen serve`.
//!
//! One rule is enforced here: **a batch of sightings changes the key states and appends
//! the findings it opens in one atomic, durable transaction.** The server acknowledges
//! a request only after the `apply` that holds its points returned, so nothing
//! acknowledged is lost and no episode is reported twice across restarts.
//!
//! Findings are appended to a log; each sink has a cursor into it (an outbox), so a
//! sink that is down keeps its findings until it is back, across restarts.
//!
//! # Backends
//!
//! - [`RedbStore`]: the embedded store, one file in the state directory.
//! - [`MemStore`]: in memory, deliberately simple: the reference model the redb store
//!   is checked against, and a store for the tests of other crates.
//!
//! Both pass the same conformance suite (`conformance`, behind the cargo feature of the
//! same name), and a property test checks that they answer every batch identically.
//!
//! # Durability and group commit
//!
//! [`StateStore::apply`] commits one write transaction with immediate durability: when it
//! returns, the batch is on disk (one `fsync`). An fsync costs about as much for one
//! point as for ten thousand, so the caller batches the points of many requests into
//! one `apply` (group commit) and acknowledges all of them when it returns. Never call
//! `apply` once per point.
//!
//! # Why redb
//!
//! - Pure Rust: no C toolchain, no system library, one static binary.
//! - ACID with copy-on-write B-trees: a commit writes new pages and then flips a
//!   checksummed commit slot, so a crash (even `SIGKILL` or power loss mid-commit) leaves
//!   the last committed state, never a torn one. Readers see snapshots and never block
//!   the writer.
//! - A single file: easy to back up, move, or delete to start over.
//! - No background compaction or flush threads (unlike LSM stores such as RocksDB):
//!   all work happens inside the calls, so latency and memory are predictable and a
//!   2-core machine is not shared with a compactor.
//!
//! After a crash, redb repairs the file on the next open (it walks the committed trees
//! to rebuild its allocator state): the open takes longer, nothing is lost.

mod keys;
mod mem;
mod redb_store;
mod snapshot;
pub mod state_log;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use mem::MemStore;
pub use redb_store::{decode_key, encode_key, RedbStore, FILE_NAME, SCHEMA_VERSION};

use std::sync::Arc;
use unseen_detect::{step, KeyState, Step};

use unseen_findings::{Decider, Suppressions, TriageSettings};
pub use unseen_findings::{Record, Sighting};
use unseen_model::{Rule, UnixSecs, Windows};
use unseen_normalize::{Key, KeyMode};

/// Makes a new entry of `dir` durable: a file created in it survives a power loss only
/// once the directory itself is synced (`fsync` of the file covers its contents, not its
/// name). Best effort on systems that cannot open a directory for syncing.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// How a batch is applied.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The rule, as data: its metadata and risk go into every finding.
    pub rule: Rule,
    /// How findings are grouped into incidents and scored (default mode).
    pub triage: TriageSettings,
    pub windows: Windows,
    /// Key mode name written into findings.
    pub mode: KeyMode,
    /// Server clock when the batch's requests arrived (decides `late`, `detected_at`).
    pub now: UnixSecs,
    /// False while learning: state is recorded, no finding is produced.
    pub report: bool,
    /// Suppression rules in force (shared: a reload swaps the whole set).
    pub suppressions: Arc<Suppressions>,
    /// New keys past this many tracked keys are refused.
    pub max_keys: u64,
    /// How many new keys each sender of the batch may still create; `None`: no limit
    /// but `max_keys`.
    pub new_keys: Option<NewKeyQuota>,
    /// Records that are not the rule's (the server's operational notices), appended to
    /// the log after the batch's own, in the same transaction.
    pub notices: Vec<Record>,
}

/// New keys per sender (a token, or a cluster), for one batch: the rate limit on new
/// keys, applied by the store because only it knows which keys are new.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKeyQuota {
    /// The sender of each sighting of the batch: an index into `allowance`.
    pub sender: Vec<u32>,
    /// New keys each sender may create in this batch.
    pub allowance: Vec<u64>,
}

/// The one place a backend decides whether a sighting may create a new key: under the
/// key cap, and within its sender's allowance. Every backend uses it, so the refusals
/// are the same whatever the store.
#[derive(Debug)]
pub struct Admission<'a> {
    opts: &'a ApplyOptions,
    used: Vec<u64>,
}

impl<'a> Admission<'a> {
    pub fn new(opts: &'a ApplyOptions) -> Self {
        let senders = opts.new_keys.as_ref().map_or(0, |q| q.allowance.len());
        Admission {
            opts,
            used: vec![0; senders],
        }
    }

    /// Sighting `index` would create a new key while the store tracks `keys`: may it?
    /// When it may, the key is counted against its sender.
    pub fn new_key(&mut self, index: usize, keys: u64) -> Result<(), Refusal> {
        if keys >= self.opts.max_keys {
            return Err(Refusal::KeyCapReached);
        }
        if let Some(quota) = &self.opts.new_keys {
            // A sighting without a sender (a quota shorter than the batch) is unlimited.
            if let Some(&sender) = quota.sender.get(index) {
                let sender = sender as usize;
                let allowed = quota.allowance.get(sender).copied().unwrap_or(u64::MAX);
                if self.used[sender] >= allowed {
                    return Err(Refusal::NewKeyRateLimited);
                }
                self.used[sender] += 1;
            }
        }
        Ok(())
    }

    /// Sighting `index` of the batch, whose key's state is `prev` (`None`: a key the
    /// store does not track, while it tracks `keys`): the rule's step, or `None` when the
    /// new key is refused (the refusal is pushed onto `refused`). Every backend decides
    /// through it.
    pub fn step(
        &mut self,
        index: usize,
        s: &Sighting,
        prev: Option<KeyState>,
        keys: u64,
        refused: &mut Vec<(usize, Refusal)>,
    ) -> Option<Step> {
        if prev.is_none() {
            if let Err(why) = self.new_key(index, keys) {
                refused.push((index, why));
                return None;
            }
        }
        Some(step(prev, s.time, self.opts.now, &self.opts.windows))
    }

    /// New keys created per sender.
    pub fn into_used(self) -> Vec<u64> {
        self.used
    }
}

impl ApplyOptions {
    /// The decider every backend hands its sightings to.
    pub fn decider(&self) -> Decider<'_> {
        Decider {
            rule: &self.rule,
            mode: &self.mode,
            windows: self.windows,
            settings: &self.triage,
            suppressions: &self.suppressions,
            now: self.now,
            report: self.report,
        }
    }
}

/// Why one sighting of a batch was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is new and the store already tracks `max_keys` keys.
    KeyCapReached,
    /// The key is new and its sender has created its allowance of new keys.
    NewKeyRateLimited,
}

/// What one `apply` did.
///
/// Sequence numbers start at 1 and grow by one per finding, for the life of the store:
/// pruning the log never makes a number be used again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Records the batch appended to the log (findings, in input order, and the incidents
    /// they opened or closed), with their log sequence numbers.
    pub records: Vec<(u64, Record)>,
    /// Refused sightings: index into the batch, and why.
    pub refused: Vec<(usize, Refusal)>,
    /// Keys tracked after the batch.
    pub keys: u64,
    /// New keys created per sender of `ApplyOptions::new_keys` (empty without it).
    pub new_keys: Vec<u64>,
    /// What the batch cost the backend (exported as metrics: the steady-state cost of a
    /// point, per backend).
    pub io: StoreIo,
    /// Problems of the backend's upkeep that did not fail the batch (a snapshot that could
    /// not be started: the next batch tries again); the caller logs them.
    pub warnings: Vec<String>,
}

/// The input/output of one `apply`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreIo {
    /// Requests sent to a database server and waited for (0 for the embedded stores).
    pub round_trips: u64,
    /// Rows (B-tree entries) written or deleted: key states, records, triage state.
    pub rows_written: u64,
}

impl Applied {
    /// The same without `io` and `warnings`: what the batch did, whatever it cost the
    /// backend (two backends answer a batch identically, at different costs).
    pub fn without_io(self) -> Applied {
        Applied {
            io: StoreIo::default(),
            warnings: Vec::new(),
            ..self
        }
    }

    /// The findings among the records, in order.
    pub fn findings(&self) -> impl Iterator<Item = &unseen_findings::Finding> {
        self.records.iter().filter_map(|(_, r)| r.finding())
    }

    /// The findings among the records, owned, in order.
    pub fn into_findings(self) -> Vec<unseen_findings::Finding> {
        self.records
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Finding(f) => Some(*f),
                Record::Incident(_) => None,
            })
            .collect()
    }
}

/// A store that cannot do what was asked. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {message}")]
    Open { path: String, message: String },
    #[error("state store error: {0}")]
    Backend(String),
    #[error("state store at {path} is corrupt or from an incompatible version: {message}")]
    Incompatible { path: String, message: String },
    /// The state was made under another key mode (see [`StateStore::bind_key_mode`]).
    #[error("the state was made with key mode `{stored}`, and this run uses `{requested}`: keys of one mode are not keys of the other, so every running image would be reported again as new. Run with the mode the state was made with, or start over: stop unseen, move the state directory away, then `unseen baseline import` (or `serve --learn`) to relearn the fleet")]
    ModeMismatch { stored: String, requested: String },
    /// A sink's cursor was used before [`StateStore::register_sink`].
    #[error("unknown sink `{sink}`: register it before reading or acknowledging its findings")]
    UnknownSink { sink: String },
    /// A call panicked while it changed the state in memory (a bug): what is in memory
    /// may be neither the state before nor the one after, so the store refuses every
    /// call until the process starts again and reads its durable state.
    #[error("the state store is unusable: a call panicked while it changed the state in memory (a bug, reported in the log above); restart unseen, which reads the state again from what is durable")]
    Poisoned,
}

/// The contract every backend meets (embedded redb now; PostgreSQL later). One
/// conformance suite (`conformance`) runs against each implementation.
pub trait StateStore: Send + Sync {
    /// Applies a batch in one durable transaction: for each sighting in order, the
    /// rule's `step` against the key's state, then [`Decider::sighting`] (the image index,
    /// findings, incidents); after the batch [`Decider::end_batch`]. The records produced
    /// are appended to the log. Returns only after the transaction is durable, with the
    /// triage state (index, open incidents) in the same transaction.
    ///
    /// A batch may hold the same key several times: each sighting sees the state left
    /// by the ones before it. A refused sighting (a new key at the key cap) changes
    /// nothing, not even the newest point time. Future points must be rejected by the
    /// caller before (`unseen_detect::episode::is_future`).
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError>;

    /// The state of one key.
    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError>;

    /// Keys tracked.
    fn key_count(&self) -> Result<u64, StoreError>;

    /// Forgets keys whose latest sighting is more than B − R older than the newest
    /// point time seen by the store (contract section 4). Returns how many.
    fn forget(&self, windows: &Windows) -> Result<u64, StoreError>;

    /// The newest point time applied so far.
    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError>;

    /// Makes `sink` known. A new sink starts at the end of the log (it receives findings
    /// from now on); a known one keeps its cursor.
    fn register_sink(&self, sink: &str) -> Result<(), StoreError>;

    /// Forgets `sink` and its cursor (a sink removed from the configuration), so that
    /// it no longer holds findings in the log. Returns whether it was known.
    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError>;

    /// The registered sinks and their cursors, by name.
    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Records the key mode (`mode`: a description such as `default` or `strict`) the
    /// state is made with, on the first call; on later calls (across restarts), another
    /// mode is [`StoreError::ModeMismatch`] and nothing changes.
    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError>;

    /// Up to `limit` findings after `sink`'s cursor, oldest first.
    fn pending(&self, sink: &str, limit: usize) -> Result<Vec<(u64, Record)>, StoreError>;

    /// Moves `sink`'s cursor to `seq` (inclusive). Log entries every sink has passed
    /// may be deleted.
    ///
    /// The cursor never moves backwards (an older `seq` is a no-op) nor past the last
    /// finding appended (a larger `seq` stops there, so no future finding is skipped).
    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError>;

    /// Findings still kept in the log: not yet passed by every registered sink.
    fn log_len(&self) -> Result<u64, StoreError>;

    /// When learning started: set to `now` on the first call, returned unchanged on
    /// every later call, across restarts.
    fn learning_started_at(&self, now: UnixSecs) -> Result<UnixSecs, StoreError>;

    /// The incidents open now (as of the last committed batch), oldest first: what a
    /// sink that keeps alerts firing (Alertmanager) re-sends.
    fn open_incidents(&self) -> Result<Vec<unseen_findings::Incident>, StoreError>;

    /// The history the query API reads: every record `apply` appended, under the same
    /// sequence number as in the log, oldest first, after `after`, at most `limit`.
    /// Unlike the log it is not pruned by the sinks' cursors, only by [`Self::prune_history`].
    fn history(&self, after: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError>;

    /// The history records of these sequence numbers, in the order asked; numbers that
    /// are not (or no longer) in the history are left out.
    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, Record)>, StoreError>;

    /// Drops the history records detected before `before` (oldest first, stopping at the
    /// first newer one). Returns how many.
    fn prune_history(&self, before: UnixSecs) -> Result<u64, StoreError>;

    /// Appends an entry to the audit log, durably; returns its sequence number (from 1,
    /// growing by one).
    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError>;

    /// Audit entries after `after`, oldest first, at most `limit`. Never pruned.
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError>;

    /// Calls `f` with every tracked key and its state (in no particular order), from one
    /// consistent snapshot: the image inventory of the query API.
    fn for_each_key(&self, f: &mut dyn FnMut(&Key, &KeyState)) -> Result<(), StoreError>;
}

/// One change made through the query API (`docs/api.md`): who did what to what, and
/// when. The audit log is the whole state of the analyst workflow: an incident's status
/// (acknowledged, resolved) and the suppression rules made in the console are folds over
/// it, so no change is made without its record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When, by the server's clock.
    pub at: UnixSecs,
    /// The token's name (a console session acts as its token).
    pub actor: String,
    /// What: `incident.ack`, `incident.resolve`, `suppression.create`, `suppression.expire`.
    pub action: String,
    /// On what: an incident id, a suppression rule's name.
    pub target: String,
    /// The analyst's note, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the action needs to be replayed: a suppression rule as TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// When a record was detected (its `detected_at`): what the history is pruned by.
pub fn record_time(record: &Record) -> Option<UnixSecs> {
    let at = match record {
        Record::Finding(f) => &f.detected_at,
        Record::Incident(i) => &i.detected_at,
    };
    unseen_model::parse_time(at).ok()
}

/// Open incidents in the order they opened.
pub fn open_incidents_of(triage: &unseen_findings::TriageState) -> Vec<unseen_findings::Incident> {
    let mut open: Vec<unseen_findings::Incident> =
        triage.incidents.open().map(|(_, i)| i.clone()).collect();
    open.sort_by(|a, b| (&a.opened_at, &a.incident_id).cmp(&(&b.opened_at, &b.incident_id)));
    open
}
