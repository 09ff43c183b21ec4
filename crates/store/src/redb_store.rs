//! The embedded store: one redb file in the state directory.
//!
//! # Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `keys` | the key, encoded as four length-prefixed parts ([`encode_key`]) | `last_seen` i64 BE ++ `episode_start` i64 BE (16 bytes) |
//! | `findings` | sequence number (u64) | the finding as JSON |
//! | `sinks` | sink name | cursor: the last sequence number the sink acknowledged |
//! | `meta` | name | u64: `schema_version`, `last_seq`, `newest_point`, `learning_started_at` |
//! | `history` | sequence number (u64) | `detected_at` i64 BE ++ the record as JSON: the query API's history, pruned by age only |
//! | `audit` | sequence number (u64) | an [`AuditEntry`] as JSON |
//!
//! Times in `meta` are `UnixSecs` (i64) stored as their two's-complement bits in a u64.
//! The number of keys is the `keys` table's length, which redb keeps in the tree's root:
//! reading it is O(1) and, unlike a counter of our own, it cannot drift from the table.
//!
//! `last_seq` is kept apart from the log because the log is pruned: a sequence number is
//! never handed out twice, even once every finding has been delivered and deleted.

use std::fmt::Display;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashMap;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition, TableError, TableHandle, WriteTransaction,
};
use unseen_detect::episode::{forgettable, step};
use unseen_detect::KeyState;
use unseen_findings::risk::Ledger;
use unseen_findings::triage::IndexKey;
use unseen_findings::{Incident, Incidents, Index, Record, RiskLedger, TriageState};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::Key;

use crate::mem::unknown;
use crate::{
    record_time, Admission, Applied, ApplyOptions, AuditEntry, Sighting, StateStore, StoreError,
};

/// The store's file inside the state directory.
pub const FILE_NAME: &str = "state.redb";

/// The layout of the tables; bumped on any incompatible change. A file with another
/// version is refused ([`StoreError::Incompatible`]) rather than misread.
pub const SCHEMA_VERSION: u64 = 1;

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

const META_SCHEMA_VERSION: &str = "schema_version";
const META_LAST_SEQ: &str = "last_seq";
const META_NEWEST_POINT: &str = "newest_point";
const META_LEARNING_STARTED_AT: &str = "learning_started_at";

/// Keys scanned per `forget` transaction: bounds the transaction's size (dirty pages
/// held in memory) and how long it holds the write lock against `apply`.
const FORGET_CHUNK: usize = 10_000;

/// A [`StateStore`] in one redb file.
///
/// The file is locked while open: a second process (or a second `open` in the same
/// process) on the same directory gets [`StoreError::Open`].
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    forget_chunk: usize,
    /// The triage state, in memory (it is per distinct image, not per key) and written
    /// through: each `apply` writes what it changed in its own transaction. Loaded at
    /// open; reloaded from the file after a failed transaction, so memory never runs
    /// ahead of what is durable.
    triage: Mutex<TriageState>,
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
                .create(&path)
                .map_err(|e| open_error(&path, e))?;
            let store = RedbStore {
                db,
                path: path.clone(),
                forget_chunk: FORGET_CHUNK,
                triage: Mutex::new(TriageState::default()),
            };
            store.init()?;
            if created {
                // The new file's name, durable with its first commit (`init`).
                crate::sync_dir(dir).map_err(|e| StoreError::Open {
                    path: dir.display().to_string(),
                    message: format!("cannot sync the state directory: {e}"),
                })?;
            }
            store.reload_triage()?;
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

    /// Reads the triage state from the file.
    fn load_triage(&self) -> Result<TriageState, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let index = txn
            .open_table(INDEX)
            .map_err(self.backend("open image index"))?;
        let mut entries = Vec::new();
        for entry in index.iter().map_err(self.backend("read image index"))? {
            let (k, v) = entry.map_err(self.backend("read image index"))?;
            let key = IndexKey::decode(k.value())
                .ok_or_else(|| self.incompatible("an image index entry is malformed"))?;
            entries.push((key, decode_state(v.value())));
        }
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
            index: Index::from_entries(entries),
            incidents: Incidents::from_open(incidents),
            risk: RiskLedger::from_entries(risk),
        })
    }

    fn reload_triage(&self) -> Result<(), StoreError> {
        let loaded = self.load_triage()?;
        *self.lock_triage()? = loaded;
        Ok(())
    }

    fn lock_triage(&self) -> Result<MutexGuard<'_, TriageState>, StoreError> {
        self.triage
            .lock()
            .map_err(|_| StoreError::Backend("triage state lock poisoned".into()))
    }

    /// The triage state (image index, open incidents), as the file has it.
    pub fn triage(&self) -> Result<TriageState, StoreError> {
        self.load_triage()
    }

    /// Every tracked key and its state, in key order. Reads the whole table: for tests,
    /// tools and debugging, not for the hot path.
    pub fn states(&self) -> Result<Vec<(Key, KeyState)>, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
        let mut out = Vec::new();
        for entry in keys.iter().map_err(self.backend("read keys"))? {
            let (k, v) = entry.map_err(self.backend("read keys"))?;
            let key =
                decode_key(k.value()).ok_or_else(|| self.incompatible("a key is malformed"))?;
            out.push((key, decode_state(v.value())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
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
    out.clear();
    for part in [&key.host, &key.cluster, &key.node, &key.image] {
        // Key parts come from OTLP attribute values, far below 4 GiB.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
}

/// The inverse of [`encode_key`]; `None` for bytes it did not write.
pub fn decode_key(mut bytes: &[u8]) -> Option<Key> {
    let mut part = || -> Option<String> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        bytes = rest;
        String::from_utf8(s.to_vec()).ok()
    };
    let key = Key {
        host: part()?,
        cluster: part()?,
        node: part()?,
        image: part()?,
    };
    bytes.is_empty().then_some(key)
}

fn encode_state(state: &KeyState) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&state.last_seen.to_be_bytes());
    out[8..].copy_from_slice(&state.episode_start.to_be_bytes());
    out
}

fn decode_state(bytes: &[u8; 16]) -> KeyState {
    let (last, start) = bytes.split_at(8);
    KeyState {
        last_seen: i64::from_be_bytes(last.try_into().unwrap_or_default()),
        episode_start: i64::from_be_bytes(start.try_into().unwrap_or_default()),
    }
}

fn secs_to_meta(t: UnixSecs) -> u64 {
    t as u64
}

fn meta_to_secs(v: u64) -> UnixSecs {
    v as i64
}

impl StateStore for RedbStore {
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError> {
        if batch.is_empty() && opts.notices.is_empty() {
            return Ok(Applied {
                keys: self.key_count()?,
                ..Applied::default()
            });
        }
        let mut triage = self.lock_triage()?;
        let result = self.apply_locked(batch, opts, &mut triage);
        if result.is_err() {
            // The transaction did not commit: what the batch did to the in-memory triage
            // state is not durable, so it is read back from the file.
            drop(triage);
            self.reload_triage()?;
        }
        result
    }

    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        let mut encoded = Vec::new();
        encode_key(key, &mut encoded);
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
        let state = keys
            .get(encoded.as_slice())
            .map_err(self.backend("read key"))?
            .map(|v| decode_state(v.value()));
        Ok(state)
    }

    fn key_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
        keys.len().map_err(self.backend("count keys"))
    }

    /// Scans the keys in chunks of a bounded size, one durable transaction each, so a
    /// large table never makes one huge transaction nor holds `apply` off for long. Each
    /// chunk reads the newest point time afresh; an `apply` between chunks is fine.
    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        self.forget_index(windows)?;
        let mut forgotten = 0;
        // The last key scanned by the previous chunk.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let txn = self.begin_write()?;
            let (doomed, next) = {
                let meta = txn.open_table(META).map_err(self.backend("open meta"))?;
                let Some(newest) = meta
                    .get(META_NEWEST_POINT)
                    .map_err(self.backend("read meta"))?
                    .map(|v| meta_to_secs(v.value()))
                else {
                    return Ok(forgotten);
                };
                let mut keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
                let lower = match &after {
                    Some(k) => Bound::Excluded(k.as_slice()),
                    None => Bound::Unbounded,
                };
                let mut doomed = Vec::new();
                let mut next = None;
                let mut scanned = 0;
                for entry in keys
                    .range::<&[u8]>((lower, Bound::Unbounded))
                    .map_err(self.backend("scan keys"))?
                {
                    let (k, v) = entry.map_err(self.backend("scan keys"))?;
                    if forgettable(&decode_state(v.value()), newest, windows) {
                        doomed.push(k.value().to_vec());
                    }
                    scanned += 1;
                    if scanned == self.forget_chunk {
                        next = Some(k.value().to_vec());
                        break;
                    }
                }
                for k in &doomed {
                    keys.remove(k.as_slice())
                        .map_err(self.backend("forget key"))?;
                }
                (doomed.len() as u64, next)
            };
            if doomed > 0 {
                txn.commit().map_err(self.backend("commit"))?;
                forgotten += doomed;
            } else {
                // Nothing changed: no commit, no fsync.
                txn.abort().map_err(self.backend("abort"))?;
            }
            match next {
                Some(k) => after = Some(k),
                None => return Ok(forgotten),
            }
        }
    }

    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError> {
        Ok(self.read_meta(META_NEWEST_POINT)?.map(meta_to_secs))
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
        Ok(crate::open_incidents_of(&*self.lock_triage()?))
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
        let txn = self.db.begin_read().map_err(self.backend("begin read"))?;
        let keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
        for entry in keys.iter().map_err(self.backend("read keys"))? {
            let (k, v) = entry.map_err(self.backend("read keys"))?;
            let key =
                decode_key(k.value()).ok_or_else(|| self.incompatible("a key is malformed"))?;
            f(&key, &decode_state(v.value()));
        }
        Ok(())
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
        let mut triage = self.lock_triage()?;
        if triage.index.forget(newest, windows) == 0 {
            return Ok(());
        }
        let result = self.begin_write().and_then(|txn| {
            self.write_triage(&txn, &mut triage)?;
            txn.commit().map_err(self.backend("commit"))
        });
        if result.is_err() {
            drop(triage);
            self.reload_triage()?;
        }
        result
    }

    /// [`StateStore::apply`] with the triage state locked: one write transaction for the
    /// keys, the records and the triage state.
    fn apply_locked(
        &self,
        batch: &[Sighting],
        opts: &ApplyOptions,
        triage: &mut TriageState,
    ) -> Result<Applied, StoreError> {
        let decider = opts.decider();
        let txn = self.begin_write()?;
        let mut applied = Applied::default();
        {
            let mut keys = txn.open_table(KEYS).map_err(self.backend("open keys"))?;
            let mut log = txn
                .open_table(FINDINGS)
                .map_err(self.backend("open findings"))?;
            let mut meta = txn.open_table(META).map_err(self.backend("open meta"))?;
            let read_meta = |meta: &redb::Table<&str, u64>, name| {
                meta.get(name)
                    .map(|v| v.map(|v| v.value()))
                    .map_err(self.backend("read meta"))
            };
            let mut last_seq = read_meta(&meta, META_LAST_SEQ)?.unwrap_or(0);
            let mut newest = read_meta(&meta, META_NEWEST_POINT)?.map(meta_to_secs);
            let mut count = keys.len().map_err(self.backend("count keys"))?;
            let mut encoded = Vec::with_capacity(256);
            let mut records = Vec::new();
            // The states this batch changed, written to the table once at the end: a
            // batch holds many sightings of each key (one per collection interval), and
            // a B-tree read and write per sighting would cost several times more. A key
            // repeated in the batch steps from the state its previous sighting left.
            let mut touched: HashMap<Vec<u8>, KeyState> = HashMap::new();
            let mut admission = Admission::new(opts);
            for (i, s) in batch.iter().enumerate() {
                encode_key(&s.key, &mut encoded);
                let prev = match touched.get(encoded.as_slice()) {
                    Some(state) => Some(*state),
                    None => keys
                        .get(encoded.as_slice())
                        .map_err(self.backend("read key"))?
                        .map(|v| decode_state(v.value())),
                };
                if prev.is_none() {
                    if let Err(why) = admission.new_key(i, count) {
                        applied.refused.push((i, why));
                        continue;
                    }
                }
                let st = step(prev, s.time, opts.now, &opts.windows);
                if prev != Some(st.state) {
                    match touched.get_mut(encoded.as_slice()) {
                        Some(state) => *state = st.state,
                        None => {
                            touched.insert(encoded.clone(), st.state);
                        }
                    }
                    if prev.is_none() {
                        count += 1;
                    }
                }
                newest = Some(newest.map_or(s.time, |n| n.max(s.time)));
                let previous = prev.map(|p| p.last_seen);
                decider.sighting(triage, s, st.opened, previous, &mut records);
            }
            decider.end_batch(triage, newest, &mut records);
            records.extend(opts.notices.iter().cloned());
            applied.new_keys = admission.into_used();
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
            // Sorted, so that the B-tree is written in key order.
            let mut touched: Vec<(Vec<u8>, KeyState)> = touched.into_iter().collect();
            touched.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, state) in &touched {
                keys.insert(key.as_slice(), &encode_state(state))
                    .map_err(self.backend("write key"))?;
            }
            applied.io.rows_written = touched.len() as u64 + 2 * applied.records.len() as u64 + 2;
            self.write_triage(&txn, triage)?;
            meta.insert(META_LAST_SEQ, last_seq)
                .map_err(self.backend("write meta"))?;
            if let Some(newest) = newest {
                meta.insert(META_NEWEST_POINT, secs_to_meta(newest))
                    .map_err(self.backend("write meta"))?;
            }
            applied.keys = count;
        }
        txn.commit().map_err(self.backend("commit"))?;
        Ok(applied)
    }

    /// Writes what changed in the triage state since it was last written.
    fn write_triage(
        &self,
        txn: &WriteTransaction,
        triage: &mut TriageState,
    ) -> Result<(), StoreError> {
        let mut index = txn
            .open_table(INDEX)
            .map_err(self.backend("open image index"))?;
        for (key, state) in triage.index.take_dirty() {
            let key = key.encode();
            match state {
                Some(state) => index
                    .insert(key.as_slice(), &encode_state(&state))
                    .map(drop),
                None => index.remove(key.as_slice()).map(drop),
            }
            .map_err(self.backend("write image index"))?;
        }
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

#[cfg(test)]
mod tests;
