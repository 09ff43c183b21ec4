//! The embedded store: one redb file in the state directory.
//!
//! # Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `keys` | schema 3 and before: the key, encoded as four length-prefixed parts ([`encode_key`]) → `last_seen` i64 BE ++ `episode_start` i64 BE (16 bytes); read at open until the first key snapshot, which empties it |
//! | `state_log` | commit number (u64) | the key states and image index entries one `apply` changed, by their names' ids (with each name's id logged before its first use), or as text: the entries of [`crate::state_log`] |
//! | `image_index` | schema 3 and before: [`IndexKey::encode`] → the entry's state, as in `keys`; read until the first snapshot, which empties it |
//! | `findings` | sequence number (u64) | the finding as JSON |
//! | `sinks` | sink name | cursor: the last sequence number the sink acknowledged |
//! | `meta` | name | u64: `schema_version`, `last_seq`, `newest_point`, `learning_started_at` |
//! | `history` | sequence number (u64) | `detected_at` i64 BE ++ the record as JSON: the query API's history, pruned by age only |
//! | `audit` | sequence number (u64) | an [`AuditEntry`] as JSON |
//!
//! Times in `meta` are `UnixSecs` (i64) stored as their two's-complement bits in a u64.
//!
//! # Key states: in memory, logged, snapshotted
//!
//! Every key's state is held in memory ([`LiveKeys`]: about 37 bytes a key), so deciding a
//! sighting costs a hash lookup, not a B-tree search. What an `apply` changed is written
//! as **one row** of `state_log`, in the same transaction as its records: a known key's
//! sighting costs an append of 33 bytes (its names' ids and its state), not a B-tree
//! insert.
//!
//! The log is **folded** in the background of later `apply`s: once it holds more than
//! `fold_log_bytes` (and more than a snapshot of every key would take) that no cycle
//! covers, a fold cycle starts. Each `apply` then writes a bounded chunk of the key states
//! into a new snapshot file ([`crate::snapshot`], 32 bytes a key, beside the redb file),
//! after the image index's entries, written the same way. The `apply`s only encode:
//! the snapshot's own thread writes, and once the last chunk is handed over, syncs the
//! file and renames it into place, and the first `apply` after that records it
//! (`keys_snapshot_row`); the rows the cycle covers are then deleted, a few by each later
//! `apply`, oldest first. No `apply` pays for a whole fold, a whole deletion or a sync of
//! the snapshot (each stalled acknowledgements by tens to hundreds of milliseconds), and no B-tree
//! holds one row per key: at millions of keys, its page writes were what a fold cost, and
//! reading it back what a restart cost. `open` reads the snapshot, then replays the log
//! rows after it (a forgotten key is a tombstone in the log).
//!
//! `last_seq` is kept apart from the log because the log is pruned: a sequence number is
//! never handed out twice, even once every finding has been delivered and deleted.

use std::fmt::Display;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use std::collections::VecDeque;

use hashbrown::HashMap;
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition, TableError, TableHandle,
    WriteTransaction,
};
use unseen_detect::episode::forgettable;
use unseen_detect::KeyState;
use unseen_findings::risk::Ledger;
use unseen_findings::triage::{IndexKey, Slot};
use unseen_findings::{Incident, Incidents, Index, Record, RiskLedger, TriageState};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::Key;

use crate::keys::{LiveKeys, Parts};
use crate::mem::unknown;
use crate::snapshot::{self, Finishing, SnapshotWriter, SNAPSHOT_FILE};
use crate::state_log::{
    decode_state, log_index_ids, log_key_ids, log_name, read_raw, LogEntry, LogReader, LoggedNames,
    RawEntry,
};
use crate::{
    record_time, Admission, Applied, ApplyOptions, AuditEntry, Sighting, StateStore, StoreError,
};

/// The store's file inside the state directory.
pub const FILE_NAME: &str = "state.redb";

/// The layout of the tables; bumped on any incompatible change. A file with another
/// version is refused ([`StoreError::Incompatible`]) rather than misread.
pub const SCHEMA_VERSION: u64 = 5;

/// Older layouts that are read as they are, and marked [`SCHEMA_VERSION`] at open so
/// that no release that would misread the file opens it: version 1 had no `state_log`
/// (every change went to `keys`), version 2 logged key states but wrote the image index
/// through, version 3 folded key states into `keys` (version 4 snapshots them: a release
/// of version 3 would read an emptied `keys` table and report the fleet again), version 4
/// logged every key by its text (version 5 logs name ids: a release of version 4 would
/// take those rows for damage).
const SCHEMA_VERSIONS_UPGRADED: [u64; 4] = [1, 2, 3, 4];

/// Key states as schema 3 and before folded them: read until the first snapshot.
const KEYS: TableDefinition<&[u8], &[u8; 16]> = TableDefinition::new("keys");
const FINDINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("findings");
const SINKS: TableDefinition<&str, u64> = TableDefinition::new("sinks");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The triage's image index: [`IndexKey::encode`] → state (as in `keys`).
const INDEX: TableDefinition<&[u8], &[u8; 16]> = TableDefinition::new("image_index");
/// Open incidents: group → the incident as JSON.
const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("open_incidents");
/// Settings the state is bound to: `key_mode` → its description.
const BOUND: TableDefinition<&str, &str> = TableDefinition::new("bound_settings");
const BOUND_KEY_MODE: &str = "key_mode";
/// Risk ledgers: risk object → its recent risk events and last firing, as JSON.
const RISK: TableDefinition<&str, &[u8]> = TableDefinition::new("risk_ledger");
/// The query API's history: sequence number → `detected_at` (i64 BE) ++ the record as
/// JSON. The time prefix lets pruning stop without parsing JSON. Tables added after a
/// state file was made are created when it is opened (no schema change).
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// The audit log of the query API: sequence number → [`AuditEntry`] as JSON.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Key states changed since they were last folded into `keys` (see the module docs).
const STATE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("state_log");

const META_SCHEMA_VERSION: &str = "schema_version";
const META_LAST_SEQ: &str = "last_seq";
const META_NEWEST_POINT: &str = "newest_point";
const META_LEARNING_STARTED_AT: &str = "learning_started_at";
/// The `row` of the key snapshot the log relies on: rows up to it may have been deleted,
/// so the snapshot must be there.
const META_KEYS_SNAPSHOT: &str = "keys_snapshot_row";

/// Keys scanned per `forget` transaction: bounds the transaction's size (dirty pages
/// held in memory) and how long it holds the write lock against `apply`.
const FORGET_CHUNK: usize = 10_000;

/// The log's size at which a fold cycle starts, at least (and at least the size of a
/// snapshot of every key: [`SNAPSHOT_ENTRY_BYTES`] a key, so that writing snapshots costs no
/// more than the log they let go). It bounds what `open` replays: about 2 million key
/// states by ids at this size, one per key at the scaled size (10 million keys: 320 MB;
/// a restart on 10 million imported keys, ~7 million of them in the log, answers in
/// about 4.5 s on 2 CPUs: BENCHMARKS.md), twice that with a cycle under way.
pub const FOLD_LOG_BYTES: u64 = 64 << 20;

/// Bytes of a key in a snapshot (see [`crate::snapshot`]).
const SNAPSHOT_ENTRY_BYTES: u64 = 32;

/// redb's page cache (its default is 1 GiB). Key states are in memory, so the cache
/// serves the API's reads of history and the pages commits write; at the default, the
/// pages a fleet's first day wrote (its findings, twice: log and history) stayed
/// resident, about 0.9 GB of RSS for a 110,000-key fleet. At 32 MiB it is about 3 bytes a
/// key at 10 M keys.
const CACHE_BYTES: usize = 32 << 20;

/// The chunk of a fold cycle one `apply` writes, at least, in units of
/// [`SNAPSHOT_PER_CHUNK`] key positions; with twice the batch's own changed keys and
/// entries when that is more, a cycle ends before the log has grown by half of what it
/// covers.
pub const FOLD_CHUNK_MIN: usize = 4096;

/// Key positions per unit of a fold chunk: a snapshot entry is a 32-byte copy (the unit
/// was a B-tree insert when keys were folded into `keys`).
const SNAPSHOT_PER_CHUNK: usize = 16;

/// Log rows deleted by one `apply`, at most, once their cycle has ended: more than the one
/// row an `apply` appends, so the log drains.
const RETIRE_ROWS: usize = 4;

/// What is held in memory: the triage state and every key's state.
struct Live {
    /// The triage state (it is per distinct image, not per key): each `apply` writes
    /// what it changed in its own transaction (open incidents and risk ledgers to their
    /// tables, image index entries to its log row, snapshotted with the keys).
    /// Reloaded from the file after a failed transaction, so memory never runs ahead of
    /// what is durable.
    triage: TriageState,
    /// Every tracked key and its state, as committed. Changed only after the transaction
    /// that made the change durable has committed.
    keys: LiveKeys,
    /// The legacy `keys` and `image_index` tables (schema 3 and before) may hold states:
    /// the commit that records the first snapshot deletes them.
    legacy_tables: bool,
    /// The rows of `state_log`, oldest first: (number, bytes).
    rows: VecDeque<(u64, u64)>,
    /// Rows up to this number are covered by a finished fold cycle: they may go.
    retire_upto: u64,
    /// Bytes of the rows no fold cycle covers yet.
    unfolded_bytes: u64,
    /// The newest point time committed (`meta`'s `newest_point`), so that deciding and
    /// forgetting need no read of the file.
    newest: Option<UnixSecs>,
    /// The number the next log row gets (from 1).
    next_row: u64,
    /// The fold cycle under way, if any.
    fold: Option<Fold>,
    /// The name ids logged since the last fold cycle's start (or this process's): an
    /// entry by ids is preceded by its names until then ([`crate::state_log`]).
    logged_names: LoggedNames,
}

impl Live {
    /// Records the log row just committed as number `next_row`, of `bytes` bytes.
    fn record_row(&mut self, bytes: usize) {
        self.rows.push_back((self.next_row, bytes as u64));
        self.unfolded_bytes += bytes as u64;
        self.next_row += 1;
    }
}

/// A fold cycle: the snapshot being written (its image index written, key positions from
/// `next` still to write); once it is in place, the log rows up to `last_row` may be
/// deleted.
struct Fold {
    /// The image index's entries when the cycle started, not written yet: they go first.
    index: Vec<Slot>,
    /// `None` once every chunk is written.
    snapshot: Option<SnapshotWriter>,
    /// Every chunk written: the snapshot being synced and renamed into place by its
    /// thread; the first `apply` after that records it.
    finishing: Option<Finishing>,
    next: u32,
    /// Positions handed out when the cycle started: keys added since are in the log.
    end: u32,
    last_row: u64,
}

/// A [`StateStore`] in one redb file.
///
/// The file is locked while open: a second process (or a second `open` in the same
/// process) on the same directory gets [`StoreError::Open`].
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// The state directory: the snapshot's.
    dir: PathBuf,
    forget_chunk: usize,
    /// Whether a cycle waits for a log as large as a snapshot (off in tests of the fold).
    fold_scales: bool,
    /// Whether the `apply` after the last chunk waits for the snapshot's thread to put it
    /// in place, rather than finding it done or not (on in tests of the fold, which must
    /// not depend on the disk's speed).
    snapshot_waits: bool,
    fold_log_bytes: u64,
    fold_chunk_min: usize,
    /// The state in memory; `apply` holds it for the whole transaction, so it is also
    /// what makes decisions one at a time.
    live: Mutex<Live>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in `dir` (creating the directory and the file as needed).
    ///
    /// Errors: [`StoreError::Open`] when the directory or file cannot be created or
    /// opened (not writable, not a directory, already open by another process);
    /// [`StoreError::Incompatible`] when the file is not a state file of this version of
    /// unseen (another schema version, another program's redb file, not redb at all).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            message: format!(
                "cannot create the state directory: {e}; point the state directory at a writable directory"
            ),
        })?;
        let path = dir.join(FILE_NAME);
        let created = !path.exists();
        // redb may panic on a file damaged in ways its checksums do not cover (debug
        // builds assert): report it as an unreadable file rather than crash.
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<RedbStore, StoreError> {
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| open_error(&path, e))?;
            let store = RedbStore {
                db,
                path: path.clone(),
                dir: dir.to_path_buf(),
                forget_chunk: FORGET_CHUNK,
                fold_scales: true,
                snapshot_waits: false,
                fold_log_bytes: FOLD_LOG_BYTES,
                fold_chunk_min: FOLD_CHUNK_MIN,
                live: Mutex::new(Live {
                    triage: TriageState::default(),
                    keys: LiveKeys::default(),
                    legacy_tables: false,
                    rows: VecDeque::new(),
                    retire_upto: 0,
                    unfolded_bytes: 0,
                    newest: None,
                    next_row: 1,
                    fold: None,
                    logged_names: LoggedNames::default(),
                }),
            };
            store.init()?;
            if created {
                // The new file's name, durable with its first commit (`init`).
                crate::sync_dir(dir).map_err(|e| StoreError::Open {
                    path: dir.display().to_string(),
                    message: format!("cannot sync the state directory: {e}"),
                })?;
            }
            store.load()?;
            Ok(store)
        }));
        opened.unwrap_or_else(|_| {
            Err(StoreError::Incompatible {
                path: path.display().to_string(),
                message: format!("the file cannot be read (redb panicked on it); {MOVE_AWAY}"),
            })
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the triage state, with the image index `index` (the snapshot's or the legacy
    /// table's, with the log's entries after it replayed: [`RedbStore::committed_index`]).
    fn load_triage(
        &self,
        txn: &ReadTransaction,
        index: HashMap<IndexKey, KeyState>,
    ) -> Result<TriageState, StoreError> {
        let open = txn
            .open_table(INCIDENTS)
            .map_err(self.backend("open incidents"))?;
        let mut incidents = Vec::new();
        for entry in open.iter().map_err(self.backend("read incidents"))? {
            let (group, json) = entry.map_err(self.backend("read incidents"))?;
            let incident: Incident = serde_json::from_slice(json.value())
                .map_err(|e| self.incompatible(&format!("an open incident cannot be read: {e}")))?;
            incidents.push((group.value().to_string(), incident));
        }
        let ledgers = txn
            .open_table(RISK)
            .map_err(self.backend("open risk ledger"))?;
        let mut risk = Vec::new();
        for entry in ledgers.iter().map_err(self.backend("read risk ledger"))? {
            let (object, json) = entry.map_err(self.backend("read risk ledger"))?;
            let ledger: Ledger = serde_json::from_slice(json.value()).map_err(|e| {
                self.incompatible(&format!("a risk ledger entry cannot be read: {e}"))
            })?;
            risk.push((object.value().to_string(), ledger));
        }
        Ok(TriageState {
            index: Index::from_entries(index),
            incidents: Incidents::from_open(incidents),
            risk: RiskLedger::from_entries(risk),
        })
    }

    /// The legacy `image_index` table's entries (schema 3 and before; empty since).
    fn legacy_index(
        &self,
        txn: &ReadTransaction,
    ) -> Result<HashMap<IndexKey, KeyState>, StoreError> {
        let table = txn
            .open_table(INDEX)
            .map_err(self.backend("open image index"))?;
        let mut entries = HashMap::new();
        for entry in table.iter().map_err(self.backend("read image index"))? {
            let (k, v) = entry.map_err(self.backend("read image index"))?;
            let key = IndexKey::decode(k.value()).ok_or_else(|| self.malformed_index())?;
            entries.insert(key, decode_state(v.value()));
        }
        Ok(entries)
    }

    /// The committed image index, read from the file: the snapshot's (or the legacy
    /// table's) with the log's index entries after it replayed. Keys are not read.
    fn committed_index(
        &self,
        txn: &ReadTransaction,
    ) -> Result<HashMap<IndexKey, KeyState>, StoreError> {
        let (mut index, covered) = match snapshot::read_index(&self.dir) {
            Ok(Some(found)) => found,
            Ok(None) => (self.legacy_index(txn)?, 0),
            Err(e) => return Err(self.snapshot_unreadable(&e)),
        };
        let log = txn
            .open_table(STATE_LOG)
            .map_err(self.backend("open state log"))?;
        let mut reader = LogReader::default();
        for row in log
            .range(covered.saturating_add(1)..)
            .map_err(self.backend("read state log"))?
        {
            let (_, blob) = row.map_err(self.backend("read state log"))?;
            reader.read(
                blob.value(),
                || self.malformed_log(),
                |entry| {
                    if entry.index {
                        self.replay_index(&mut index, &entry)?;
                    }
                    Ok(())
                },
            )?;
        }
        Ok(index)
    }

    /// Applies a log's image index entry to `index`.
    fn replay_index(
        &self,
        index: &mut HashMap<IndexKey, KeyState>,
        entry: &LogEntry<'_>,
    ) -> Result<(), StoreError> {
        let key = IndexKey::decode(entry.key).ok_or_else(|| self.malformed_index())?;
        match entry.state {
            Some(state) => index.insert(key, state),
            None => index.remove(&key),
        };
        Ok(())
    }

    /// The snapshot cannot be used: an error naming its file.
    fn snapshot_incompatible(&self, message: String) -> StoreError {
        StoreError::Incompatible {
            path: self.dir.join(SNAPSHOT_FILE).display().to_string(),
            message,
        }
    }

    fn snapshot_unreadable(&self, e: &std::io::Error) -> StoreError {
        self.snapshot_incompatible(format!(
            "the snapshot cannot be read: {e}; restore the state directory from a backup, or {MOVE_AWAY}"
        ))
    }

    fn malformed_index(&self) -> StoreError {
        self.incompatible("an image index entry is malformed")
    }

    fn malformed_log(&self) -> StoreError {
        self.incompatible("a state log row is malformed")
    }

    /// Reads the triage state back after a failed transaction.
    fn reload_triage(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let index = self.committed_index(&txn)?;
        let triage = self.load_triage(&txn, index)?;
        self.lock_live()?.triage = triage;
        Ok(())
    }

    fn lock_live(&self) -> Result<MutexGuard<'_, Live>, StoreError> {
        self.live.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Sets the log's size at which a fold cycle starts ([`FOLD_LOG_BYTES`] by default)
    /// and the smallest chunk an `apply` folds ([`FOLD_CHUNK_MIN`]): small values make
    /// every `apply` fold, and cycles span many, for tests of the fold itself.
    pub fn with_fold(mut self, log_bytes: u64, min_chunk: usize) -> Self {
        self.fold_log_bytes = log_bytes;
        self.fold_chunk_min = min_chunk.max(1);
        self.fold_scales = false;
        self.snapshot_waits = true;
        self
    }

    /// Loads every key's state (the snapshot, or the legacy `keys` table, then the log's
    /// rows after it in order) and the triage state, in one pass over the log.
    fn load(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
        let read = |name| -> Result<Option<u64>, StoreError> {
            Ok(meta
                .get(name)
                .map_err(self.backend("read meta"))?
                .map(|v| v.value()))
        };
        let newest = read(META_NEWEST_POINT)?.map(meta_to_secs);
        let recorded = read(META_KEYS_SNAPSHOT)?;
        snapshot::remove_partial(&self.dir).map_err(|e| {
            self.snapshot_incompatible(format!("cannot remove a partly written snapshot: {e}"))
        })?;
        let table = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
        let legacy = table.len().map_err(self.backend("count keys"))?
            + txn
                .open_table(INDEX)
                .map_err(self.backend("open image index"))?
                .len()
                .map_err(self.backend("count image index"))?;
        let (mut keys, mut index, covered) = match snapshot::read(&self.dir) {
            Ok(Some(found)) if recorded.is_none_or(|r| r <= found.row) => {
                (found.keys, found.index, found.row)
            }
            Ok(Some(found)) => {
                let row = found.row;
                return Err(self.snapshot_incompatible(format!(
                    "the snapshot covers the log up to row {row}, older than the row {} the log relies on: it is not this state's snapshot; restore the state directory from a backup, or {MOVE_AWAY}",
                    recorded.unwrap_or_default()
                )))
            }
            Ok(None) if recorded.is_some() => {
                return Err(self.snapshot_incompatible(format!(
                    "the snapshot is missing, and the log's rows before it are gone: restore the state directory from a backup, or {MOVE_AWAY}"
                )))
            }
            Ok(None) => {
                let mut keys = LiveKeys::with_capacity(usize::try_from(legacy).unwrap_or(0));
                for entry in table.iter().map_err(self.backend("read keys"))? {
                    let (k, v) = entry.map_err(self.backend("read keys"))?;
                    let parts = split_key(k.value()).ok_or_else(|| self.malformed_key())?;
                    keys.insert(parts, decode_state(v.value()));
                }
                (keys, self.legacy_index(&txn)?, 0)
            }
            Err(e) => return Err(self.snapshot_unreadable(&e)),
        };
        let log = txn
            .open_table(STATE_LOG)
            .map_err(self.backend("open state log"))?;
        let mut rows = VecDeque::new();
        // Rows are numbered from 1, so that "every row up to next_row − 1" is never a
        // row to come, even with the log empty.
        let mut next_row = 1;
        // A logged name id → its id in `keys`: keys by ids are replayed without hashing
        // a string each (a log may hold millions of them).
        let mut ids: HashMap<u32, u32> = HashMap::new();
        for row in log.iter().map_err(self.backend("read state log"))? {
            let (n, blob) = row.map_err(self.backend("read state log"))?;
            let (n, blob) = (n.value(), blob.value());
            rows.push_back((n, blob.len() as u64));
            next_row = n + 1;
            // Rows the snapshot covers changed nothing it does not hold.
            if n <= covered {
                continue;
            }
            read_raw(
                blob,
                || self.malformed_log(),
                |entry| {
                    let local = |id: &u32| ids.get(id).copied().ok_or_else(|| self.malformed_log());
                    match entry {
                        RawEntry::Name { id, name } => {
                            ids.insert(id, keys.intern(name));
                        }
                        RawEntry::Key { ids: logged, state } => {
                            let at = [
                                local(&logged[0])?,
                                local(&logged[1])?,
                                local(&logged[2])?,
                                local(&logged[3])?,
                            ];
                            match state {
                                Some(state) => keys.upsert_ids(at, state),
                                None => keys.remove_ids(at),
                            }
                        }
                        RawEntry::Index {
                            kind,
                            ids: logged,
                            state,
                        } => {
                            let (a, b) = (local(&logged[0])?, local(&logged[1])?);
                            let key = IndexKey {
                                kind,
                                a: keys.name(a).to_string(),
                                b: keys.name(b).to_string(),
                            };
                            match state {
                                Some(state) => index.insert(key, state),
                                None => index.remove(&key),
                            };
                        }
                        RawEntry::Text(entry) if entry.index => {
                            self.replay_index(&mut index, &entry)?;
                        }
                        RawEntry::Text(entry) => {
                            let parts = split_key(entry.key).ok_or_else(|| self.malformed_key())?;
                            match entry.state {
                                Some(state) => keys.upsert(parts, state),
                                None => keys.remove_key(parts),
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        // Numbers go on after the snapshot's row even when every row is gone: a row
        // numbered again below it would be taken as covered by it at the next open.
        next_row = next_row.max(covered.max(recorded.unwrap_or(0)) + 1);
        let triage = self.load_triage(&txn, index)?;
        let mut live = self.lock_live()?;
        live.triage = triage;
        live.keys = keys;
        live.legacy_tables = legacy > 0;
        live.unfolded_bytes = rows.iter().map(|r| r.1).sum();
        live.rows = rows;
        live.retire_upto = 0;
        live.newest = newest;
        live.next_row = next_row;
        live.fold = None;
        live.logged_names = LoggedNames::default();
        Ok(())
    }

    fn malformed_key(&self) -> StoreError {
        self.incompatible("a key is malformed")
    }

    /// Every committed key and its state, copied a bounded chunk at a time under the lock
    /// and handed to `f` after it is released, so that `f` never holds `apply` off and no
    /// copy of every key is made. A key added or forgotten during the walk may be missed;
    /// one forgotten and added again during it may be met twice.
    fn walk_keys(&self, f: &mut dyn FnMut(&Key, &KeyState)) -> Result<(), StoreError> {
        const WALK_CHUNK: u32 = 1 << 16;
        let mut from = 0;
        // A chunk's names are copied into one reused buffer and handed out through one
        // reused `Key`: a walk of 10 M keys allocates nothing per key (the API's key
        // inventory walks every key, again and again while someone reads it).
        let mut text = String::new();
        let mut copy: Vec<([usize; 4], KeyState)> = Vec::new();
        let mut key = Key {
            host: String::new(),
            cluster: String::new(),
            node: String::new(),
            image: String::new(),
        };
        loop {
            let live = self.lock_live()?;
            let end = live.keys.positions();
            if from >= end {
                return Ok(());
            }
            let to = end.min(from.saturating_add(WALK_CHUNK));
            text.clear();
            copy.extend(
                (from..to)
                    .filter_map(|at| live.keys.get(at))
                    .map(|(parts, s)| {
                        (
                            parts.map(|p| {
                                text.push_str(p);
                                text.len()
                            }),
                            s,
                        )
                    }),
            );
            drop(live);
            let mut start = 0;
            for (ends, s) in copy.drain(..) {
                for (field, end) in [
                    &mut key.host,
                    &mut key.cluster,
                    &mut key.node,
                    &mut key.image,
                ]
                .into_iter()
                .zip(ends)
                {
                    field.clear();
                    field.push_str(&text[start..end]);
                    start = end;
                }
                f(&key, &s);
            }
            from = to;
        }
    }

    /// The triage state (image index, open incidents), as the file has it.
    pub fn triage(&self) -> Result<TriageState, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        self.load_triage(&txn, self.committed_index(&txn)?)
    }

    /// Every tracked key and its state, in key order. For tests, tools and debugging, not
    /// for the hot path.
    pub fn states(&self) -> Result<Vec<(Key, KeyState)>, StoreError> {
        let mut out = Vec::new();
        self.walk_keys(&mut |k, state| out.push((k.clone(), *state)))?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Keys and index entries in the fold cycle under way, and bytes in the log: for
    /// tests of the fold.
    #[cfg(test)]
    fn fold_status(&self) -> Result<(usize, u64), StoreError> {
        let live = self.lock_live()?;
        Ok((
            live.fold
                .as_ref()
                .map_or(0, |f| (f.end - f.next) as usize + f.index.len()),
            live.rows.iter().map(|r| r.1).sum(),
        ))
    }

    /// Checks the schema version, or writes it into a new file, and creates the tables.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.table_error(e))?;
            let version = meta
                .get(META_SCHEMA_VERSION)
                .map_err(self.backend("read meta"))?
                .map(|v| v.value());
            match version {
                Some(SCHEMA_VERSION) => {}
                Some(v) if SCHEMA_VERSIONS_UPGRADED.contains(&v) => {
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(self.backend("write meta"))?;
                }
                Some(v) => {
                    let which = if v > SCHEMA_VERSION {
                        "a newer"
                    } else {
                        "an older"
                    };
                    return Err(self.incompatible(&format!(
                        "it was written by {which} unseen (state schema version {v}); this unseen reads version {SCHEMA_VERSION}: run the release that wrote it, or {MOVE_AWAY}"
                    )));
                }
                None => {
                    let foreign: Vec<String> = txn
                        .list_tables()
                        .map_err(self.backend("list tables"))?
                        .map(|t| t.name().to_string())
                        .filter(|name| name != META.name())
                        .collect();
                    if !foreign.is_empty() {
                        return Err(self.incompatible(&format!(
                            "it is a redb file with tables ({}) but no unseen schema version: not a state file of unseen; {MOVE_AWAY}",
                            foreign.join(", ")
                        )));
                    }
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(self.backend("write meta"))?;
                    meta.insert(META_LAST_SEQ, 0)
                        .map_err(self.backend("write meta"))?;
                }
            }
            // Creates the tables in a new file; checks their types in an existing one.
            txn.open_table(KEYS).map_err(|e| self.table_error(e))?;
            txn.open_table(FINDINGS).map_err(|e| self.table_error(e))?;
            txn.open_table(SINKS).map_err(|e| self.table_error(e))?;
            txn.open_table(INDEX).map_err(|e| self.table_error(e))?;
            txn.open_table(INCIDENTS).map_err(|e| self.table_error(e))?;
            txn.open_table(RISK).map_err(|e| self.table_error(e))?;
            txn.open_table(BOUND).map_err(|e| self.table_error(e))?;
            txn.open_table(HISTORY).map_err(|e| self.table_error(e))?;
            txn.open_table(AUDIT).map_err(|e| self.table_error(e))?;
            txn.open_table(STATE_LOG).map_err(|e| self.table_error(e))?;
        }
        txn.commit().map_err(self.backend("commit"))
    }

    /// A write transaction that is durable when `commit` returns (one fsync). This is
    /// redb's default; it is set here so that no change of default weakens it.
    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(self.backend("begin write"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(self.backend("set durability"))?;
        Ok(txn)
    }

    fn read_meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
        let value = meta
            .get(name)
            .map_err(self.backend("read meta"))?
            .map(|v| v.value());
        Ok(value)
    }

    fn backend<E: Display>(&self, what: &'static str) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Backend(format!("{what} in {}: {e}", self.path.display()))
    }

    fn incompatible(&self, message: &str) -> StoreError {
        StoreError::Incompatible {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn table_error(&self, e: TableError) -> StoreError {
        match e {
            TableError::TableTypeMismatch { .. }
            | TableError::TableIsMultimap(_)
            | TableError::TypeDefinitionChanged { .. } => self.incompatible(&format!(
                "a table has an unexpected layout ({e}): not a state file of unseen; {MOVE_AWAY}"
            )),
            e => StoreError::Backend(format!("open table in {}: {e}", self.path.display())),
        }
    }
}

const MOVE_AWAY: &str =
    "move the file away to start with an empty state (every running image is then reported once more as new)";

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    let path_s = path.display().to_string();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Open {
                path: path_s,
                message: format!(
                    "{e} Is another unseen running with the same state directory? Each replica needs its own."
                ),
            }
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Incompatible {
            path: path_s,
            message: format!("redb file format version {v} is not supported; {MOVE_AWAY}"),
        },
        DatabaseError::Storage(StorageError::Corrupted(m)) => StoreError::Incompatible {
            path: path_s,
            message: format!("not a state file of unseen, or damaged ({m}); {MOVE_AWAY}"),
        },
        // redb's word for "not a redb file" (magic number mismatch).
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Incompatible {
                path: path_s,
                message: format!("not a state file of unseen ({io}); {MOVE_AWAY}"),
            }
        }
        DatabaseError::Storage(StorageError::Io(io)) => StoreError::Open {
            path: path_s,
            message: format!("{io}; the state directory must be writable by unseen"),
        },
        e => StoreError::Open {
            path: path_s,
            message: e.to_string(),
        },
    }
}

/// Encodes a key as its four parts, each a u32 big-endian length then the bytes. The
/// lengths make the encoding unambiguous (`"a|b","c"` and `"a","b|c"` differ).
pub fn encode_key(key: &Key, out: &mut Vec<u8>) {
    encode_parts(parts_of(key), out);
}

/// [`encode_key`] of a key given as its parts.
pub(crate) fn encode_parts(parts: Parts<'_>, out: &mut Vec<u8>) {
    out.clear();
    for part in parts {
        // Key parts come from OTLP attribute values, far below 4 GiB.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
}

fn parts_of(key: &Key) -> Parts<'_> {
    [&key.host, &key.cluster, &key.node, &key.image]
}

/// The inverse of [`encode_key`]; `None` for bytes it did not write.
pub fn decode_key(bytes: &[u8]) -> Option<Key> {
    let [host, cluster, node, image] = split_key(bytes)?.map(String::from);
    Some(Key {
        host,
        cluster,
        node,
        image,
    })
}

/// [`decode_key`] without copies: the parts, borrowed.
fn split_key(mut bytes: &[u8]) -> Option<Parts<'_>> {
    let mut part = || -> Option<&str> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        bytes = rest;
        std::str::from_utf8(s).ok()
    };
    let parts = [part()?, part()?, part()?, part()?];
    bytes.is_empty().then_some(parts)
}

fn secs_to_meta(t: UnixSecs) -> u64 {
    t as u64
}

fn meta_to_secs(v: u64) -> UnixSecs {
    v as i64
}

impl StateStore for RedbStore {
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError> {
        let mut live = self.lock_live()?;
        if batch.is_empty() && opts.notices.is_empty() {
            return Ok(Applied {
                keys: live.keys.len() as u64,
                ..Applied::default()
            });
        }
        let result = self.apply_locked(batch, opts, &mut live);
        if result.is_err() {
            // The transaction did not commit: what the batch did to the in-memory triage
            // state is not durable, so it is read back from the file. (Key states are
            // changed only after a commit.)
            drop(live);
            self.reload_triage()?;
        }
        result
    }

    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        let live = self.lock_live()?;
        Ok(live.keys.find(parts_of(key)).map(|at| live.keys.state(at)))
    }

    fn key_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock_live()?.keys.len() as u64)
    }

    /// Forgets in chunks of a bounded size, one durable transaction each, so that many
    /// keys to forget never make one huge transaction nor hold `apply` off for long.
    /// Each chunk checks its keys against the newest point time afresh (an `apply`
    /// between chunks may have seen them again), removes them from memory, and logs a
    /// tombstone for each, so that replaying an older log row or the snapshot cannot bring
    /// them back.
    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        self.forget_index(windows)?;
        let live = self.lock_live()?;
        let Some(newest) = live.newest else {
            return Ok(0);
        };
        // Positions, not keys: 4 bytes each. A position freed and taken by another key
        // between chunks is checked afresh like any other.
        let candidates: Vec<u32> = live
            .keys
            .iter()
            .filter(|(_, _, state)| forgettable(state, newest, windows))
            .map(|(at, _, _)| at)
            .collect();
        drop(live);
        let mut forgotten = 0;
        for chunk in candidates.chunks(self.forget_chunk.max(1)) {
            let mut guard = self.lock_live()?;
            let live = &mut *guard;
            let newest = live.newest.unwrap_or(newest);
            let (mut doomed, mut blob, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
            for &at in chunk {
                if let Some((ids, state)) = live.keys.ids(at) {
                    if forgettable(&state, newest, windows) {
                        log_names(
                            &live.keys,
                            &mut live.logged_names,
                            &mut fresh,
                            ids,
                            &mut blob,
                        );
                        log_key_ids(&mut blob, ids, None);
                        doomed.push(at);
                    }
                }
            }
            if doomed.is_empty() {
                continue;
            }
            self.append_row(live, &blob, &fresh)?;
            for &at in &doomed {
                live.keys.remove(at);
            }
            forgotten += doomed.len() as u64;
        }
        Ok(forgotten)
    }

    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError> {
        Ok(self.lock_live()?.newest)
    }

    fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut sinks = txn.open_table(SINKS).map_err(self.backend("open sinks"))?;
            if sinks
                .get(sink)
                .map_err(self.backend("read sink"))?
                .is_some()
            {
                drop(sinks);
                return txn.abort().map_err(self.backend("abort"));
            }
            let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let end = meta
                .get(META_LAST_SEQ)
                .map_err(self.backend("read meta"))?
                .map_or(0, |v| v.value());
            sinks
                .insert(sink, end)
                .map_err(self.backend("write sink"))?;
            let mut log = txn
                .open_table(FINDINGS)
                .map_err(self.backend("open findings"))?;
            self.prune(&sinks, &mut log, end)?;
        }
        txn.commit().map_err(self.backend("commit"))
    }

    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        {
            let mut sinks = txn.open_table(SINKS).map_err(self.backend("open sinks"))?;
            if sinks
                .remove(sink)
                .map_err(self.backend("remove sink"))?
                .is_none()
            {
                drop(sinks);
                txn.abort().map_err(self.backend("abort"))?;
                return Ok(false);
            }
            let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let last_seq = meta
                .get(META_LAST_SEQ)
                .map_err(self.backend("read meta"))?
                .map_or(0, |v| v.value());
            let mut log = txn
                .open_table(FINDINGS)
                .map_err(self.backend("open findings"))?;
            self.prune(&sinks, &mut log, last_seq)?;
        }
        txn.commit().map_err(self.backend("commit"))?;
        Ok(true)
    }

    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut bound = txn
                .open_table(BOUND)
                .map_err(self.backend("open bound settings"))?;
            let stored = bound
                .get(BOUND_KEY_MODE)
                .map_err(self.backend("read key mode"))?
                .map(|v| v.value().to_string());
            match stored {
                Some(stored) if stored != mode => {
                    drop(bound);
                    txn.abort().map_err(self.backend("abort"))?;
                    return Err(StoreError::ModeMismatch {
                        stored,
                        requested: mode.to_string(),
                    });
                }
                Some(_) => {
                    drop(bound);
                    return txn.abort().map_err(self.backend("abort"));
                }
                None => {
                    bound
                        .insert(BOUND_KEY_MODE, mode)
                        .map_err(self.backend("write key mode"))?;
                }
            }
        }
        txn.commit().map_err(self.backend("commit"))
    }

    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let sinks = txn.open_table(SINKS).map_err(self.backend("open sinks"))?;
        let mut out = Vec::new();
        for entry in sinks.iter().map_err(self.backend("read sinks"))? {
            let (name, cursor) = entry.map_err(self.backend("read sinks"))?;
            out.push((name.value().to_string(), cursor.value()));
        }
        Ok(out)
    }

    fn pending(&self, sink: &str, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let sinks = txn.open_table(SINKS).map_err(self.backend("open sinks"))?;
        let cursor = sinks
            .get(sink)
            .map_err(self.backend("read sink"))?
            .ok_or_else(|| unknown(sink))?
            .value();
        let log = txn
            .open_table(FINDINGS)
            .map_err(self.backend("open findings"))?;
        let mut out = Vec::new();
        for entry in log
            .range((Bound::Excluded(cursor), Bound::Unbounded))
            .map_err(self.backend("read findings"))?
            .take(limit)
        {
            let (seq, json) = entry.map_err(self.backend("read findings"))?;
            let seq = seq.value();
            let finding = serde_json::from_slice(json.value()).map_err(|e| {
                self.incompatible(&format!("finding {seq} in the log cannot be read: {e}"))
            })?;
            out.push((seq, finding));
        }
        Ok(out)
    }

    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut sinks = txn.open_table(SINKS).map_err(self.backend("open sinks"))?;
            let cursor = sinks
                .get(sink)
                .map_err(self.backend("read sink"))?
                .ok_or_else(|| unknown(sink))?
                .value();
            let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let last_seq = meta
                .get(META_LAST_SEQ)
                .map_err(self.backend("read meta"))?
                .map_or(0, |v| v.value());
            let moved = cursor.max(seq.min(last_seq));
            if moved == cursor {
                drop((sinks, meta));
                return txn.abort().map_err(self.backend("abort"));
            }
            sinks
                .insert(sink, moved)
                .map_err(self.backend("write sink"))?;
            let mut log = txn
                .open_table(FINDINGS)
                .map_err(self.backend("open findings"))?;
            self.prune(&sinks, &mut log, last_seq)?;
        }
        txn.commit().map_err(self.backend("commit"))
    }

    fn log_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let log = txn
            .open_table(FINDINGS)
            .map_err(self.backend("open findings"))?;
        log.len().map_err(self.backend("count findings"))
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        // The in-memory copy is the file's after every commit (reloaded after a failed one).
        Ok(crate::open_incidents_of(&self.lock_live()?.triage))
    }

    fn history(&self, after: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let history = txn
            .open_table(HISTORY)
            .map_err(self.backend("open history"))?;
        let mut out = Vec::new();
        for entry in history
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map_err(self.backend("read history"))?
            .take(limit)
        {
            let (seq, bytes) = entry.map_err(self.backend("read history"))?;
            out.push((
                seq.value(),
                self.history_record(seq.value(), bytes.value())?,
            ));
        }
        Ok(out)
    }

    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, Record)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let history = txn
            .open_table(HISTORY)
            .map_err(self.backend("open history"))?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(bytes) = history.get(seq).map_err(self.backend("read history"))? {
                out.push((seq, self.history_record(seq, bytes.value())?));
            }
        }
        Ok(out)
    }

    fn prune_history(&self, before: UnixSecs) -> Result<u64, StoreError> {
        let txn = self.begin_write()?;
        let pruned = {
            let mut history = txn
                .open_table(HISTORY)
                .map_err(self.backend("open history"))?;
            let mut last = None;
            let mut count = 0;
            for entry in history.iter().map_err(self.backend("read history"))? {
                let (seq, bytes) = entry.map_err(self.backend("read history"))?;
                let at = bytes
                    .value()
                    .get(..8)
                    .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
                match at {
                    Some(at) if at < before => {
                        last = Some(seq.value());
                        count += 1;
                    }
                    _ => break,
                }
            }
            if let Some(last) = last {
                history
                    .retain_in(..=last, |_, _| false)
                    .map_err(self.backend("prune history"))?;
            }
            count
        };
        if pruned > 0 {
            txn.commit().map_err(self.backend("commit"))?;
        } else {
            txn.abort().map_err(self.backend("abort"))?;
        }
        Ok(pruned)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let json = serde_json::to_vec(entry).map_err(self.backend("encode audit entry"))?;
        let txn = self.begin_write()?;
        let seq = {
            let mut audit = txn.open_table(AUDIT).map_err(self.backend("open audit"))?;
            let last = audit
                .last()
                .map_err(self.backend("read audit"))?
                .map_or(0, |(seq, _)| seq.value());
            audit
                .insert(last + 1, json.as_slice())
                .map_err(self.backend("append audit entry"))?;
            last + 1
        };
        txn.commit().map_err(self.backend("commit"))?;
        Ok(seq)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let audit = txn.open_table(AUDIT).map_err(self.backend("open audit"))?;
        let mut out = Vec::new();
        for entry in audit
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map_err(self.backend("read audit"))?
            .take(limit)
        {
            let (seq, json) = entry.map_err(self.backend("read audit"))?;
            let seq = seq.value();
            let entry = serde_json::from_slice(json.value()).map_err(|e| {
                self.incompatible(&format!("audit entry {seq} cannot be read: {e}"))
            })?;
            out.push((seq, entry));
        }
        Ok(out)
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&Key, &KeyState)) -> Result<(), StoreError> {
        self.walk_keys(f)
    }

    fn learning_started_at(&self, now: UnixSecs) -> Result<UnixSecs, StoreError> {
        if let Some(t) = self.read_meta(META_LEARNING_STARTED_AT)? {
            return Ok(meta_to_secs(t));
        }
        let txn = self.begin_write()?;
        let started = {
            let mut meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let existing = meta
                .get(META_LEARNING_STARTED_AT)
                .map_err(self.backend("read meta"))?
                .map(|v| v.value());
            match existing {
                // Another caller set it between our read and this transaction.
                Some(t) => return Ok(meta_to_secs(t)),
                None => {
                    meta.insert(META_LEARNING_STARTED_AT, secs_to_meta(now))
                        .map_err(self.backend("write meta"))?;
                    now
                }
            }
        };
        txn.commit().map_err(self.backend("commit"))?;
        Ok(started)
    }
}

impl RedbStore {
    /// A history entry's record (after its time prefix).
    fn history_record(&self, seq: u64, bytes: &[u8]) -> Result<Record, StoreError> {
        serde_json::from_slice(bytes.get(8..).unwrap_or_default())
            .map_err(|e| self.incompatible(&format!("history record {seq} cannot be read: {e}")))
    }

    /// Forgets the image index entries past B − R, as `forget` does keys: one small
    /// transaction (the index is per distinct image), only when something is forgotten.
    fn forget_index(&self, windows: &Windows) -> Result<(), StoreError> {
        let Some(newest) = self.read_meta(META_NEWEST_POINT)?.map(meta_to_secs) else {
            return Ok(());
        };
        let mut live = self.lock_live()?;
        if live.triage.index.forget(newest, windows) == 0 {
            return Ok(());
        }
        let (mut blob, mut fresh) = (Vec::new(), Vec::new());
        log_index_by_ids(&mut live, &mut fresh, &mut blob);
        let result = self.append_row(&mut live, &blob, &fresh);
        if result.is_err() {
            drop(live);
            self.reload_triage()?;
        }
        result
    }

    /// Writes `blob` as the next log row, in a transaction of its own, and records it in
    /// `live`; if it fails, the names it would have logged (`fresh`) are not logged.
    fn append_row(&self, live: &mut Live, blob: &[u8], fresh: &[u32]) -> Result<(), StoreError> {
        let row = live.next_row;
        let result = self.begin_write().and_then(|txn| {
            txn.open_table(STATE_LOG)
                .map_err(self.backend("open state log"))?
                .insert(row, blob)
                .map_err(self.backend("append state log"))?;
            txn.commit().map_err(self.backend("commit"))
        });
        match result {
            Ok(()) => {
                live.record_row(blob.len());
                Ok(())
            }
            Err(e) => {
                live.logged_names.unmark(fresh);
                Err(e)
            }
        }
    }

    /// [`StateStore::apply`] with the state locked: one write transaction for the log of
    /// changed key states, a chunk of the fold under way, the records and the triage
    /// state; the key states in memory change once it has committed.
    fn apply_locked(
        &self,
        batch: &[Sighting],
        opts: &ApplyOptions,
        live: &mut Live,
    ) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        let mut pending = Pending::default();
        let mut blob = Vec::new();
        let Decided {
            records,
            newest,
            logged,
        } = self.decide_batch(batch, opts, live, &mut pending, &mut blob, &mut applied)?;
        let txn = match self.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                live.logged_names.unmark(&pending.names);
                return Err(e);
            }
        };
        // The image index entries the batch changed go to the same log row.
        let logged = logged + log_index_by_ids(live, &mut pending.names, &mut blob);
        // The cycle is out of `live` while its chunk is written (it writes from `live`'s
        // keys); it goes back whatever happens.
        let mut fold = live.fold.take();
        let outcome = (|| {
            let mut log = txn
                .open_table(FINDINGS)
                .map_err(self.backend("open findings"))?;
            let mut meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let mut last_seq = meta
                .get(META_LAST_SEQ)
                .map_err(self.backend("read meta"))?
                .map_or(0, |v| v.value());
            let mut json = Vec::with_capacity(1024);
            let mut history = txn
                .open_table(HISTORY)
                .map_err(self.backend("open history"))?;
            for record in records {
                // One encoding for both: the time prefix, then the JSON the log keeps.
                json.clear();
                let at = record_time(&record).unwrap_or(opts.now);
                json.extend_from_slice(&at.to_be_bytes());
                serde_json::to_writer(&mut json, &record)
                    .map_err(self.backend("encode finding"))?;
                last_seq += 1;
                log.insert(last_seq, &json[8..])
                    .map_err(self.backend("append finding"))?;
                history
                    .insert(last_seq, json.as_slice())
                    .map_err(self.backend("append history"))?;
                applied.records.push((last_seq, record));
            }
            let mut state_log = txn
                .open_table(STATE_LOG)
                .map_err(self.backend("open state log"))?;
            if !blob.is_empty() {
                state_log
                    .insert(live.next_row, blob.as_slice())
                    .map_err(self.backend("append state log"))?;
            }
            let chunk = self.fold_chunk(&txn, &mut state_log, live, &mut fold, 2 * logged)?;
            if let Some(row) = chunk.snapshot_row {
                meta.insert(META_KEYS_SNAPSHOT, row)
                    .map_err(self.backend("write meta"))?;
            }
            applied.io.rows_written =
                u64::from(!blob.is_empty()) + chunk.written + 2 * applied.records.len() as u64 + 2;
            self.write_triage(&txn, &mut live.triage)?;
            meta.insert(META_LAST_SEQ, last_seq)
                .map_err(self.backend("write meta"))?;
            if let Some(newest) = newest {
                meta.insert(META_NEWEST_POINT, secs_to_meta(newest))
                    .map_err(self.backend("write meta"))?;
            }
            Ok::<_, StoreError>(chunk)
        })();
        let committed =
            outcome.and_then(|chunk| txn.commit().map(|()| chunk).map_err(self.backend("commit")));
        live.fold = fold;
        let folded = match committed {
            Ok(folded) => folded,
            Err(e) => {
                // The cycle is dropped (a snapshot that failed to write would fail every
                // later chunk; one already renamed into place is a good one, but the
                // commit that would let the log go did not happen). The log is kept; a
                // later cycle takes it all again. The names the row would have logged
                // are not logged.
                live.fold = None;
                live.logged_names.unmark(&pending.names);
                return Err(e);
            }
        };
        if !blob.is_empty() {
            live.record_row(blob.len());
        }
        applied.warnings.extend(folded.warning.clone());
        folded.done(live);
        // The batch is durable: its states are the keys' states now.
        for (&at, &state) in &pending.known {
            live.keys.set_state(at, state);
        }
        for (ids, state) in pending.new_ids {
            live.keys.insert_ids(ids, state);
        }
        applied.keys = live.keys.len() as u64;
        if newest.is_some() {
            live.newest = newest;
        }
        let threshold = if self.fold_scales {
            self.fold_log_bytes
                .max(live.keys.len() as u64 * SNAPSHOT_ENTRY_BYTES)
        } else {
            self.fold_log_bytes
        };
        if live.fold.is_none() && live.unfolded_bytes >= threshold {
            // The batch has committed: a snapshot that cannot be started now (the
            // directory not writable for a moment) must not fail it. No cycle starts;
            // the next `apply` tries again, and the log keeps everything meanwhile.
            if let Err(e) = self.start_fold(live) {
                applied.warnings.push(e.to_string());
            }
        }
        Ok(applied)
    }

    /// Decides every sighting of the batch (in memory: nothing is written), leaving the
    /// changed states in `pending`, and the log row that lists them in `blob`. Returns the
    /// records and the newest point time.
    fn decide_batch<'b>(
        &self,
        batch: &'b [Sighting],
        opts: &ApplyOptions,
        live: &mut Live,
        pending: &mut Pending<'b>,
        blob: &mut Vec<u8>,
        applied: &mut Applied,
    ) -> Result<Decided, StoreError> {
        let decider = opts.decider();
        let mut newest = live.newest;
        let mut count = live.keys.len() as u64;
        let mut records = Vec::new();
        let mut admission = Admission::new(opts);
        // Known keys the batch changed, in the order it first changed them.
        let mut order: Vec<u32> = Vec::new();
        let Live {
            keys,
            triage,
            logged_names,
            ..
        } = live;
        for (i, s) in batch.iter().enumerate() {
            let at = keys.find(parts_of(&s.key));
            // A key repeated in the batch (one sighting per collection interval) steps
            // from the state its previous sighting left.
            let prev = match at {
                Some(at) => Some(pending.known.get(&at).copied().unwrap_or(keys.state(at))),
                None => pending.new.get(&s.key).copied(),
            };
            let Some(st) = admission.step(i, s, prev, count, &mut applied.refused) else {
                continue;
            };
            if prev != Some(st.state) {
                match at {
                    Some(at) => {
                        if pending.known.insert(at, st.state).is_none() {
                            order.push(at);
                        }
                    }
                    None => {
                        if prev.is_none() {
                            count += 1;
                        }
                        pending.new.insert(&s.key, st.state);
                    }
                }
            }
            newest = Some(newest.map_or(s.time, |n| n.max(s.time)));
            let previous = prev.map(|p| p.last_seen);
            decider.sighting(triage, s, st.opened, previous, &mut records);
        }
        // Logged by name ids: a known key's are in its entry; a new key's names are
        // interned now (a name interned for a row that does not commit stays interned
        // unused until the next start, like a forgotten key's).
        for &at in &order {
            if let (Some((ids, _)), Some(state)) = (keys.ids(at), pending.known.get(&at)) {
                log_names(keys, logged_names, &mut pending.names, ids, blob);
                log_key_ids(blob, ids, Some(state));
            }
        }
        for (key, state) in &pending.new {
            let ids = parts_of(key).map(|part| keys.intern(part));
            log_names(keys, logged_names, &mut pending.names, ids, blob);
            log_key_ids(blob, ids, Some(state));
            pending.new_ids.push((ids, *state));
        }
        decider.end_batch(triage, newest, &mut records);
        records.extend(opts.notices.iter().cloned());
        applied.new_keys = admission.into_used();
        Ok(Decided {
            records,
            newest,
            logged: order.len() + pending.new.len(),
        })
    }

    /// Starts a fold cycle over every row written so far: a new snapshot, with the image
    /// index as committed now, and every key (written over the next `apply`s).
    fn start_fold(&self, live: &mut Live) -> Result<(), StoreError> {
        let last_row = live.next_row - 1;
        let snapshot = SnapshotWriter::create(&self.dir, last_row)
            .map_err(self.snapshot_error("start the snapshot"))?;
        live.fold = Some(Fold {
            index: live.triage.index.slots(),
            snapshot: Some(snapshot),
            finishing: None,
            next: 0,
            end: live.keys.positions(),
            last_row,
        });
        live.unfolded_bytes = 0;
        // The snapshot will cover every row so far: the rows after it must not rely on
        // their names' entries.
        live.logged_names.clear();
        Ok(())
    }

    fn snapshot_error<E: Display>(&self, what: &'static str) -> impl Fn(E) -> StoreError + '_ {
        move |e| {
            StoreError::Backend(format!(
                "{what} in {}: {e}",
                self.dir.join(SNAPSHOT_FILE).display()
            ))
        }
    }

    /// Writes the next chunk of the fold under way, at least `at_least` (and at least
    /// `fold_chunk_min`) times [`SNAPSHOT_PER_CHUNK`] key positions into the snapshot, and
    /// deletes up to [`RETIRE_ROWS`] of the rows a finished cycle covers. When the chunk
    /// ends the cycle, the snapshot's thread makes it durable and puts it in place; the
    /// first call that finds it in place records it in `txn`. A snapshot that cannot be
    /// written drops the cycle with a warning, not an error: the batch is not at fault.
    /// What is returned is applied to memory once `txn` has committed.
    fn fold_chunk(
        &self,
        txn: &WriteTransaction,
        state_log: &mut redb::Table<u64, &[u8]>,
        live: &Live,
        fold: &mut Option<Fold>,
        at_least: usize,
    ) -> Result<Folded, StoreError> {
        let mut folded = Folded::default();
        for &(row, _) in live.rows.iter().take(RETIRE_ROWS) {
            if row > live.retire_upto {
                break;
            }
            state_log
                .remove(row)
                .map_err(self.backend("delete folded log rows"))?;
            folded.retired += 1;
        }
        let Some(cycle) = fold else {
            return Ok(folded);
        };
        if let Some(finishing) = &mut cycle.finishing {
            // Tests of the fold wait (`snapshot_waits`), so that when a cycle ends does
            // not depend on the disk's speed.
            match finishing.poll(self.snapshot_waits) {
                // Still syncing: the cycle waits (the log keeps everything meanwhile).
                None => return Ok(folded),
                Some(Ok(())) => {
                    if live.legacy_tables {
                        for table in [KEYS.name(), INDEX.name()] {
                            txn.delete_table(redb::TableDefinition::<&[u8], &[u8; 16]>::new(table))
                                .map_err(self.backend("delete the tables the snapshot replaces"))?;
                        }
                    }
                    folded.snapshot_row = Some(cycle.last_row);
                }
                Some(Err(e)) => self.abandon_cycle(fold, &mut folded, "finish the snapshot", e),
            }
            return Ok(folded);
        }
        // Positions are in the file once written, committed or not: the cycle's progress
        // is not rolled back (a position written twice is loaded twice, the later wins,
        // and the log decides anyway).
        let budget = at_least.max(self.fold_chunk_min);
        let mut positions = budget.saturating_mul(SNAPSHOT_PER_CHUNK);
        let Some(snapshot) = &mut cycle.snapshot else {
            return Ok(folded);
        };
        // The index first (in any order: taken from the end); an entry costs about two
        // keys' positions (it is encoded from its names, ~80 bytes).
        let mut written = Ok(());
        if !cycle.index.is_empty() {
            let n = cycle.index.len().min(positions / 2);
            let from = cycle.index.len() - n;
            let index = &live.triage.index;
            written =
                snapshot.write_index(cycle.index.drain(from..).filter_map(|s| index.entry(s)));
            folded.written += n as u64;
            positions -= 2 * n;
        }
        if written.is_ok() && cycle.index.is_empty() {
            let positions = u32::try_from(positions).unwrap_or(u32::MAX);
            let to = cycle.end.min(cycle.next.saturating_add(positions));
            written = snapshot.write(&live.keys, cycle.next, to);
            folded.written += u64::from(to - cycle.next);
            cycle.next = to;
            if written.is_ok() && cycle.next >= cycle.end {
                if let Some(snapshot) = cycle.snapshot.take() {
                    written = snapshot
                        .finish(&live.keys)
                        .map(|f| cycle.finishing = Some(f));
                }
            }
        }
        if let Err(e) = written {
            self.abandon_cycle(fold, &mut folded, "write the snapshot", e);
        }
        Ok(folded)
    }

    /// A snapshot that cannot be written or put in place does not fail the batch (it is
    /// not at fault): the cycle is dropped with a warning, the log is kept, and a later
    /// cycle takes it all again, as when one cannot start.
    fn abandon_cycle(
        &self,
        fold: &mut Option<Fold>,
        folded: &mut Folded,
        what: &'static str,
        e: std::io::Error,
    ) {
        folded.warning = Some(self.snapshot_error(what)(e).to_string());
        *fold = None;
    }

    /// Writes the open incidents and risk ledgers changed since they were last written
    /// (the image index's changes go to the state log: [`log_index`]).
    fn write_triage(
        &self,
        txn: &WriteTransaction,
        triage: &mut TriageState,
    ) -> Result<(), StoreError> {
        let mut open = txn
            .open_table(INCIDENTS)
            .map_err(self.backend("open incidents"))?;
        for (group, incident) in triage.incidents.take_dirty() {
            match incident {
                Some(incident) => {
                    let json =
                        serde_json::to_vec(&incident).map_err(self.backend("encode incident"))?;
                    open.insert(group.as_str(), json.as_slice()).map(drop)
                }
                None => open.remove(group.as_str()).map(drop),
            }
            .map_err(self.backend("write incidents"))?;
        }
        let dirty = triage.risk.take_dirty();
        if dirty.is_empty() {
            // Most batches change no ledger: no table to open.
            return Ok(());
        }
        let mut ledgers = txn
            .open_table(RISK)
            .map_err(self.backend("open risk ledger"))?;
        for (object, ledger) in dirty {
            match ledger {
                Some(ledger) => {
                    let json =
                        serde_json::to_vec(&ledger).map_err(self.backend("encode risk ledger"))?;
                    ledgers.insert(object.as_str(), json.as_slice()).map(drop)
                }
                None => ledgers.remove(object.as_str()).map(drop),
            }
            .map_err(self.backend("write risk ledger"))?;
        }
        Ok(())
    }

    /// Deletes the log entries every registered sink has passed (with no sink left,
    /// everything up to `last_seq`: a new sink starts at the end anyway).
    fn prune(
        &self,
        sinks: &redb::Table<&str, u64>,
        log: &mut redb::Table<u64, &[u8]>,
        last_seq: u64,
    ) -> Result<(), StoreError> {
        let mut passed_by_all = last_seq;
        for entry in sinks.iter().map_err(self.backend("read sinks"))? {
            let (_, cursor) = entry.map_err(self.backend("read sinks"))?;
            passed_by_all = passed_by_all.min(cursor.value());
        }
        log.retain_in(..=passed_by_all, |_, _| false)
            .map_err(self.backend("prune findings"))
    }
}

/// What `decide_batch` decided: the records, the newest point time, and how many
/// states its log row holds.
struct Decided {
    records: Vec<Record>,
    newest: Option<UnixSecs>,
    logged: usize,
}

/// The key states a batch changes, until its transaction commits: known keys' by
/// position, new keys' by the batch's own keys.
#[derive(Default)]
struct Pending<'b> {
    known: HashMap<u32, KeyState>,
    new: HashMap<&'b Key, KeyState>,
    /// Name ids the batch's log row defines: not logged after all if it is not written.
    names: Vec<u32>,
    /// The new keys by their names' ids (interned to log them), to add once committed.
    new_ids: Vec<([u32; 4], KeyState)>,
}

/// What one `apply` folded, applied to memory after its commit.
#[derive(Default)]
struct Folded {
    /// Key positions written.
    written: u64,
    /// The cycle ended: its snapshot, of the log up to this row, is in place, and the
    /// rows it covers may go once the transaction that records it has committed.
    snapshot_row: Option<u64>,
    /// Rows deleted, from the front.
    retired: usize,
    /// The snapshot could not be written or put in place: the cycle was dropped.
    warning: Option<String>,
}

impl Folded {
    fn done(&self, live: &mut Live) {
        live.rows.drain(..self.retired);
        if let Some(row) = self.snapshot_row {
            live.retire_upto = row;
            live.legacy_tables = false;
            live.fold = None;
        }
    }
}

/// Logs (once since the last fold cycle's start) the names of `ids` not logged yet,
/// adding them to `fresh`.
fn log_names(
    keys: &LiveKeys,
    logged: &mut LoggedNames,
    fresh: &mut Vec<u32>,
    ids: impl IntoIterator<Item = u32>,
    blob: &mut Vec<u8>,
) {
    for id in ids {
        if logged.mark(id) {
            log_name(blob, id, keys.name(id));
            fresh.push(id);
        }
    }
}

/// Appends the image index entries changed since the last call to a log row by their
/// names' ids (interned with the keys' names, and logged as [`log_names`] does); returns
/// how many.
fn log_index_by_ids(live: &mut Live, fresh: &mut Vec<u32>, blob: &mut Vec<u8>) -> usize {
    let Live {
        keys,
        triage,
        logged_names,
        ..
    } = live;
    let mut n = 0;
    triage.index.drain_dirty(|key, state| {
        let ids = [keys.intern(key.a), keys.intern(key.b)];
        log_names(keys, logged_names, fresh, ids, blob);
        log_index_ids(blob, key.kind, ids, state.as_ref());
        n += 1;
    });
    n
}

#[cfg(test)]
mod tests;
