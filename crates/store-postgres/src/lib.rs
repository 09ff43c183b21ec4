//! The state store in PostgreSQL: any number of `unseen serve` replicas share one state,
//! and each episode is reported once, whichever replica receives its points.
//!
//! # How replicas agree
//!
//! - **One decision at a time.** `apply` runs in one transaction that first takes a
//!   transaction-level advisory lock of the schema (`pg_advisory_xact_lock`), brings the
//!   replica's memory up to date (below), decides with the same `step` and `Decider` as
//!   every backend, and writes what changed before it commits. Two replicas given the
//!   same point therefore decide one after the other, and the second sees the state the
//!   first committed: the point opens its episode once.
//! - **Key states are a log.** A commit appends one row to `unseen_state_log` holding every
//!   key state and image index entry it changed (as the embedded store does), so a sighting
//!   of a known key costs no row of its own. Each replica mirrors the key states it has
//!   read or written; under the lock it first reads the log rows appended since it was last
//!   exact. The mirror holds every key of the unfolded rows, so a key it lacks is read from
//!   `unseen_keys` (one `= ANY($1)` per commit, only for such keys). Every [`FOLD_ROWS`]
//!   rows, the committing replica folds the rows into `unseen_keys` and
//!   `unseen_image_index` (each once, its latest state) and deletes the rows of the fold
//!   before; `forget` appends a row of tombstones. A replica that fell behind a deleted
//!   row empties its mirror and reads the folded tables and the unfolded rows again.
//! - **The triage state** is kept in memory, as the embedded store keeps it: the image
//!   index through the state log, like the keys; the open incidents and risk ledgers
//!   with the `triage_version` they were read at (a replica that finds another version
//!   under the lock reads them again before deciding).
//! - **Sinks** are cluster-wide: one log, one cursor per sink, and a lease per sink
//!   (`unseen_sink_leases`): `pending` takes or renews the lease for this replica and
//!   returns nothing while another replica holds it, so each record is delivered by one
//!   replica, and a dead replica's sinks pass to another after [`LEASE_SECONDS`].
//! - **Migrations** (`migrations/*.sql`) are applied at open, under a session advisory
//!   lock, so replicas that start at once apply them once.
//!
//! Every store lives in one PostgreSQL schema (default `unseen`): several deployments,
//! or tests, can share a database.

mod migrate;
mod pool;

use std::sync::{Mutex, MutexGuard};

use hashbrown::HashMap;
use postgres::types::ToSql;
use postgres::Transaction;
use unseen_detect::KeyState;
use unseen_findings::risk::Ledger;
use unseen_findings::triage::IndexKey;
use unseen_findings::{Incident, Incidents, Index, Record, RiskLedger, TriageState};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::Key;
use unseen_store::state_log::{log_entry, log_index_entry, LogEntry, LogReader};
use unseen_store::{
    decode_key, encode_key, record_time, Admission, Applied, ApplyOptions, AuditEntry, Sighting,
    StateStore, StoreError,
};

pub use migrate::MIGRATIONS;
use pool::Pool;

/// How long a replica holds a sink's lease without renewing it (each `pending` renews).
pub const LEASE_SECONDS: i64 = 15;

/// Connections kept open at most.
pub const POOL_SIZE: usize = 8;

/// State log rows between folds into `unseen_keys`. A fold writes each key of those
/// rows once; the replica that commits the row that reaches it folds, in that commit.
pub const FOLD_ROWS: i64 = 256;

/// What a replica keeps in memory, under one lock.
#[derive(Debug, Default)]
struct Replica {
    /// The triage state as of `triage_version`; `None` when it must be read again.
    triage_version: Option<i64>,
    triage: TriageState,
    /// The latest state of every key this replica has read or written, exact as of
    /// `synced`: it holds every key of the unfolded log rows (so a key it lacks is read
    /// from `unseen_keys`), and each commit first reads the log rows other replicas
    /// appended since. A key seen before costs no read.
    keys: HashMap<Vec<u8>, KeyState>,
    /// The state log row up to which `keys` and the image index are exact; `None`:
    /// read them anew.
    synced: Option<i64>,
}

impl Replica {
    /// Forgets everything: read again from the database at the next decision (after a
    /// transaction that did not commit, whose changes it may hold).
    fn reset(&mut self) {
        *self = Replica::default();
    }

    /// Takes one entry of a state log row: a key's state or tombstone, or an image index
    /// entry's.
    fn learn(&mut self, entry: LogEntry<'_>) -> Result<(), StoreError> {
        if entry.index {
            let key = IndexKey::decode(entry.key).ok_or_else(malformed_log)?;
            self.triage.index.set_committed(key, entry.state);
            return Ok(());
        }
        match entry.state {
            Some(state) => put(&mut self.keys, entry.key, state),
            None => {
                self.keys.remove(entry.key);
            }
        }
        Ok(())
    }
}

/// Sets a key's state in a mirror, allocating only for a key it lacks.
fn put(keys: &mut HashMap<Vec<u8>, KeyState>, key: &[u8], state: KeyState) {
    match keys.get_mut(key) {
        Some(s) => *s = state,
        None => {
            keys.insert(key.to_vec(), state);
        }
    }
}

fn malformed_log() -> StoreError {
    incompatible("a row of the state log is malformed".into())
}

/// Every entry of the state log rows after `after` up to `upto`, in order (one round
/// trip).
fn read_log(
    tx: &mut Transaction<'_>,
    after: i64,
    upto: i64,
    f: &mut dyn FnMut(LogEntry<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut reader = LogReader::default();
    for row in tx
        .query(
            "SELECT states FROM unseen_state_log WHERE seq > $1 AND seq <= $2 ORDER BY seq",
            &[&after, &upto],
        )
        .map_err(backend("read the state log"))?
    {
        reader.read(row.get::<_, &[u8]>(0), malformed_log, &mut *f)?;
    }
    Ok(())
}

/// Appends a state log row of these key states (`None`: forgotten) and image index
/// entries as `next.state_seq + 1`; nothing when there are none. Returns whether it did.
fn append_log<'k>(
    tx: &mut Transaction<'_>,
    next: &mut Meta,
    keys: impl ExactSizeIterator<Item = (&'k [u8], Option<KeyState>)>,
    index: &[(IndexKey, Option<KeyState>)],
) -> Result<bool, StoreError> {
    if keys.len() == 0 && index.is_empty() {
        return Ok(false);
    }
    let mut blob = Vec::with_capacity(keys.len() * 100);
    for (key, state) in keys {
        log_entry(&mut blob, key, state.as_ref());
    }
    for (key, state) in index {
        log_index_entry(&mut blob, key, state.as_ref());
    }
    next.state_seq += 1;
    tx.execute(
        "INSERT INTO unseen_state_log (seq, states) VALUES ($1, $2)",
        &[&next.state_seq, &blob],
    )
    .map_err(backend("append to the state log"))?;
    Ok(true)
}

/// The counters of `unseen_meta`, read in one round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    last_seq: i64,
    key_count: i64,
    triage_version: i64,
    newest_point: Option<i64>,
    /// The newest row of `unseen_state_log`.
    state_seq: i64,
    /// Rows up to this one are folded into `unseen_keys`.
    folded_seq: i64,
    /// Rows up to this one are deleted.
    log_start: i64,
}

impl Meta {
    fn read(tx: &mut Transaction<'_>) -> Result<Meta, StoreError> {
        let mut meta = Meta::default();
        for row in tx
            .query("SELECT name, value FROM unseen_meta", &[])
            .map_err(backend("read meta"))?
        {
            let value: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "last_seq" => meta.last_seq = value,
                "key_count" => meta.key_count = value,
                "triage_version" => meta.triage_version = value,
                "newest_point" => meta.newest_point = Some(value),
                "state_seq" => meta.state_seq = value,
                "folded_seq" => meta.folded_seq = value,
                "log_start" => meta.log_start = value,
                _ => {}
            }
        }
        Ok(meta)
    }

    /// Writes the counters of `next` that differ from `self` (one round trip, none when
    /// nothing changed): (round trips, rows written).
    fn write_changes(
        &self,
        tx: &mut Transaction<'_>,
        next: &Meta,
    ) -> Result<(u64, u64), StoreError> {
        let pairs = [
            ("last_seq", Some(self.last_seq), Some(next.last_seq)),
            ("key_count", Some(self.key_count), Some(next.key_count)),
            (
                "triage_version",
                Some(self.triage_version),
                Some(next.triage_version),
            ),
            ("newest_point", self.newest_point, next.newest_point),
            ("state_seq", Some(self.state_seq), Some(next.state_seq)),
            ("folded_seq", Some(self.folded_seq), Some(next.folded_seq)),
            ("log_start", Some(self.log_start), Some(next.log_start)),
        ];
        let (mut names, mut values) = (Vec::new(), Vec::new());
        for (name, before, after) in pairs {
            if let Some(after) = after.filter(|a| before != Some(*a)) {
                names.push(name);
                values.push(after);
            }
        }
        if names.is_empty() {
            return Ok((0, 0));
        }
        tx.execute(
            "INSERT INTO unseen_meta (name, value) SELECT * FROM UNNEST($1::text[], $2::int8[]) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&names, &values],
        )
        .map_err(backend("write meta"))?;
        Ok((1, names.len() as u64))
    }
}

/// A [`StateStore`] in a PostgreSQL schema.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// What this replica keeps in memory: the triage state and its mirror of key states.
    replica: Mutex<Replica>,
    /// Log rows between folds ([`FOLD_ROWS`] unless a test sets it).
    fold_rows: i64,
    /// This replica's name in the sink leases.
    holder: String,
    /// Drops the schema when the store is dropped (tests).
    temporary: bool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn backend(what: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |e| StoreError::Backend(format!("PostgreSQL, {what}: {}", crate::pool::explain(&e)))
}

/// A 64-bit advisory lock id for `what` in `schema` (FNV-1a: stable across releases).
fn lock_id(schema: &str, what: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "unseen:"
        .bytes()
        .chain(schema.bytes())
        .chain([b':'])
        .chain(what.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn incompatible(message: String) -> StoreError {
    StoreError::Incompatible {
        path: "PostgreSQL".into(),
        message,
    }
}

impl PostgresStore {
    /// Opens the store in `schema` of the database at `url` (a `postgres://` URL or
    /// key=value string), creating the schema and applying the migrations as needed.
    /// With `ca_file` (PEM), connections use TLS, required and verified against that CA
    /// (see `pool::tls`).
    pub fn open(
        url: &str,
        schema: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<PostgresStore, StoreError> {
        Self::open_with(url, schema, ca_file, false)
    }

    /// A store in a new schema of its own, dropped with the store: for tests.
    pub fn open_temporary(url: &str) -> Result<PostgresStore, StoreError> {
        Self::open_temporary_with(url, None)
    }

    /// [`open_temporary`](Self::open_temporary) over TLS verified against `ca_file`.
    pub fn open_temporary_with(
        url: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<PostgresStore, StoreError> {
        let schema = format!("unseen_test_{}", random_hex());
        Self::open_with(url, &schema, ca_file, true)
    }

    fn open_with(
        url: &str,
        schema: &str,
        ca_file: Option<&std::path::Path>,
        temporary: bool,
    ) -> Result<PostgresStore, StoreError> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Open {
                path: schema.to_string(),
                message: "the schema name must be lower-case letters, digits and `_`".into(),
            });
        }
        let pool = Pool::new(url, schema, POOL_SIZE, ca_file)?;
        {
            let mut conn = pool.get()?;
            migrate::apply(conn.client(), schema)?;
        }
        Ok(PostgresStore {
            pool,
            schema: schema.to_string(),
            replica: Mutex::new(Replica::default()),
            fold_rows: FOLD_ROWS,
            holder: format!("{}-{}", std::process::id(), random_hex()),
            temporary,
        })
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Folds the state log every `rows` rows instead of every [`FOLD_ROWS`] (tests, which
    /// make folds and replicas that fall behind them happen in a few commits).
    pub fn with_fold_rows(mut self, rows: i64) -> Self {
        self.fold_rows = rows.max(1);
        self
    }

    /// Has the database end a session of this store idle in a transaction for `limit`
    /// instead of [`pool::IDLE_IN_TRANSACTION`] (tests, which play a replica that stops
    /// mid-commit).
    #[cfg(test)]
    fn with_idle_in_transaction(mut self, limit: std::time::Duration) -> Self {
        self.pool.set_idle_in_transaction(limit);
        self
    }

    /// The replica's memory, for one decision at a time. A call that panicked while it
    /// held it (a bug) leaves it poisoned: it is only a cache of what is committed, so
    /// it is dropped and read again from the database, rather than failing every commit
    /// after (which would leave this replica answering "unavailable" until restarted).
    fn lock_replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|poisoned| {
            let mut replica = poisoned.into_inner();
            replica.reset();
            self.replica.clear_poison();
            replica
        })
    }

    fn meta(tx: &mut Transaction<'_>, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(tx
            .query_opt("SELECT value FROM unseen_meta WHERE name = $1", &[&name])
            .map_err(backend("read meta"))?
            .map(|r| r.get(0)))
    }

    /// Takes the schema's decision lock for the rest of the transaction, reads the
    /// counters, and brings what this replica holds in memory to what is committed: the
    /// open incidents and risk ledgers (read again when another replica changed them),
    /// and the mirror of key states and the image index (the state log's rows since they
    /// were last exact, or, when they fell behind a deleted row, the folded tables and
    /// every unfolded row).
    /// Returns the counters and the round trips it took.
    fn lock_and_sync(
        &self,
        tx: &mut Transaction<'_>,
        replica: &mut Replica,
    ) -> Result<(Meta, u64), StoreError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_id(&self.schema, "decide")],
        )
        .map_err(backend("take the decision lock"))?;
        let meta = Meta::read(tx)?;
        let mut trips = 2;
        let from = match replica.synced {
            Some(seq) if seq >= meta.log_start => seq,
            // New, or behind a row a fold deleted: the folded tables, then every unfolded
            // row.
            _ => {
                replica.keys.clear();
                replica.triage.index = load_index(tx)?;
                trips += 1;
                meta.folded_seq
            }
        };
        if replica.triage_version != Some(meta.triage_version) {
            (replica.triage.incidents, replica.triage.risk) = load_open(tx)?;
            replica.triage_version = Some(meta.triage_version);
            trips += 2;
        }
        if from < meta.state_seq {
            trips += 1;
            read_log(tx, from, meta.state_seq, &mut |entry| replica.learn(entry))?;
        }
        replica.synced = Some(meta.state_seq);
        Ok((meta, trips))
    }

    /// Folds the log rows after `next.folded_seq` into `unseen_keys` and
    /// `unseen_image_index` (each key and entry once, its latest state), and deletes the rows of the fold before (kept until now so that a
    /// replica a few commits behind reads on from the log rather than start over).
    /// Returns (round trips, rows written).
    fn fold(tx: &mut Transaction<'_>, next: &mut Meta) -> Result<(u64, u64), StoreError> {
        type Latest = std::collections::BTreeMap<Vec<u8>, Option<KeyState>>;
        let (mut latest, mut index) = (Latest::new(), Latest::new());
        read_log(tx, next.folded_seq, next.state_seq, &mut |entry| {
            let into = if entry.index { &mut index } else { &mut latest };
            into.insert(entry.key.to_vec(), entry.state);
            Ok(())
        })?;
        let what = "fold the state log";
        let (trips, mut rows) = Self::write_states(tx, "unseen_keys", latest, what)?;
        let (index_trips, index_rows) = Self::write_states(tx, "unseen_image_index", index, what)?;
        rows += index_rows;
        let trips = trips + index_trips + 2;
        rows += tx
            .execute(
                "DELETE FROM unseen_state_log WHERE seq <= $1",
                &[&next.folded_seq],
            )
            .map_err(backend("retire state log rows"))?;
        next.log_start = next.folded_seq;
        next.folded_seq = next.state_seq;
        Ok((trips, rows))
    }

    /// Upserts (`Some`) or deletes (`None`) rows of a table of key → state (`unseen_keys`,
    /// `unseen_image_index`): one statement each. Returns (round trips, rows written).
    fn write_states(
        tx: &mut Transaction<'_>,
        table: &str,
        states: impl IntoIterator<Item = (Vec<u8>, Option<KeyState>)>,
        what: &'static str,
    ) -> Result<(u64, u64), StoreError> {
        let (mut keys, mut last, mut start, mut gone) = (vec![], vec![], vec![], vec![]);
        for (key, state) in states {
            match state {
                Some(s) => {
                    keys.push(key);
                    last.push(s.last_seen);
                    start.push(s.episode_start);
                }
                None => gone.push(key),
            }
        }
        // Rows written: every entry, upserted or deleted.
        let rows = (keys.len() + gone.len()) as u64;
        let mut trips = 0;
        if !keys.is_empty() {
            tx.execute(
                    &format!(
                        "INSERT INTO {table} (key, last_seen, episode_start) SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::int8[]) \
                         ON CONFLICT (key) DO UPDATE SET last_seen = EXCLUDED.last_seen, episode_start = EXCLUDED.episode_start"
                    ),
                    &[&keys, &last, &start],
                )
                .map_err(backend(what))?;
            trips += 1;
        }
        if !gone.is_empty() {
            tx.execute(
                &format!("DELETE FROM {table} WHERE key = ANY($1)"),
                &[&gone],
            )
            .map_err(backend(what))?;
            trips += 1;
        }
        Ok((trips, rows))
    }

    /// Writes what changed of the open incidents and risk ledgers (the image index's
    /// changes go to the state log): (round trips, rows written).
    fn write_triage(
        tx: &mut Transaction<'_>,
        triage: &mut TriageState,
    ) -> Result<(u64, u64), StoreError> {
        let incidents = triage.incidents.take_dirty();
        let mut rows = incidents.len() as u64;
        let mut trips = Self::write_named(
            tx,
            "unseen_open_incidents",
            "grp",
            "incident",
            incidents,
            "incident",
        )?;
        let ledgers = triage.risk.take_dirty();
        rows += ledgers.len() as u64;
        trips += Self::write_named(
            tx,
            "unseen_risk_ledger",
            "object",
            "ledger",
            ledgers,
            "risk ledger",
        )?;
        Ok((trips, rows))
    }

    /// Upserts (`Some`) or deletes (`None`) rows of a table of name → JSON: the open
    /// incidents, the risk ledgers. Names are bytea: incident groups hold NUL separators.
    fn write_named<T: serde::Serialize>(
        tx: &mut Transaction<'_>,
        table: &str,
        name: &str,
        value: &str,
        dirty: Vec<(String, Option<T>)>,
        what: &'static str,
    ) -> Result<u64, StoreError> {
        let mut trips = 0;
        let (mut names, mut jsons, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (key, entry) in dirty {
            match entry {
                Some(v) => {
                    jsons.push(
                        serde_json::to_vec(&v)
                            .map_err(|e| StoreError::Backend(format!("encode {what}: {e}")))?,
                    );
                    names.push(key.into_bytes());
                }
                None => gone.push(key.into_bytes()),
            }
        }
        if !names.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO {table} ({name}, {value}) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT ({name}) DO UPDATE SET {value} = EXCLUDED.{value}"
                ),
                &[&names, &jsons],
            )
            .map_err(backend("write the triage state"))?;
            trips += 1;
        }
        if !gone.is_empty() {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {name} = ANY($1)"),
                &[&gone],
            )
            .map_err(backend("write the triage state"))?;
            trips += 1;
        }
        Ok(trips)
    }

    fn apply_locked(
        &self,
        batch: &[Sighting],
        opts: &ApplyOptions,
        replica: &mut Replica,
    ) -> Result<Applied, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client().transaction().map_err(backend("begin"))?;
        let (meta, sync_trips) = self.lock_and_sync(&mut tx, replica)?;
        // begin, then what the sync took.
        let mut round_trips: u64 = 1 + sync_trips;
        let mut rows_written: u64 = 0;
        let mut next = meta;
        let decider = opts.decider();
        let mut applied = Applied::default();
        let mut count = meta.key_count.max(0) as u64;
        // The batch's keys, encoded once. The mirror holds every key of an unfolded log
        // row, so a key it lacks has its latest state in `unseen_keys`, or none: those
        // are read in one round trip, and a key seen before by this replica costs none.
        let encoded: Vec<Vec<u8>> = batch
            .iter()
            .map(|s| {
                let mut e = Vec::with_capacity(64);
                encode_key(&s.key, &mut e);
                e
            })
            .collect();
        let mut missing: Vec<&[u8]> = encoded
            .iter()
            .map(Vec::as_slice)
            .filter(|k| !replica.keys.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            round_trips += 1;
            for row in tx
                .query(
                    "SELECT key, last_seen, episode_start FROM unseen_keys WHERE key = ANY($1)",
                    &[&missing],
                )
                .map_err(backend("read keys"))?
            {
                replica.keys.insert(
                    row.get(0),
                    KeyState {
                        last_seen: row.get(1),
                        episode_start: row.get(2),
                    },
                );
            }
        }
        let Replica { triage, keys, .. } = &mut *replica;
        let mut touched: HashMap<&[u8], KeyState> = HashMap::new();
        let mut admission = Admission::new(opts);
        let mut records = Vec::new();
        for (i, s) in batch.iter().enumerate() {
            let key = encoded[i].as_slice();
            let prev = touched.get(key).or_else(|| keys.get(key)).copied();
            let Some(st) = admission.step(i, s, prev, count, &mut applied.refused) else {
                continue;
            };
            if prev != Some(st.state) {
                touched.insert(key, st.state);
                if prev.is_none() {
                    count += 1;
                }
            }
            next.newest_point = Some(next.newest_point.map_or(s.time, |n| n.max(s.time)));
            decider.sighting(
                triage,
                s,
                st.opened,
                prev.map(|p| p.last_seen),
                &mut records,
            );
        }
        decider.end_batch(triage, next.newest_point, &mut records);
        records.extend(opts.notices.iter().cloned());
        applied.new_keys = admission.into_used();
        // The changed states: one row of the state log, whatever the number of keys (a
        // known key seen again writes no row of its own; folds write each key once).
        // The image index's changed entries ride in the same row (an entry changes at most
        // once a quantum, an hour by default, but on a fleet every entry does each hour).
        let mut changed: Vec<(&[u8], KeyState)> = touched.into_iter().collect();
        changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let index_changed = triage.index.take_dirty();
        let states = changed.iter().map(|&(k, s)| (k, Some(s)));
        if append_log(&mut tx, &mut next, states, &index_changed)? {
            round_trips += 1;
            rows_written += 1;
        }
        if !records.is_empty() {
            let (mut seqs, mut times, mut jsons) = (Vec::new(), Vec::new(), Vec::new());
            for record in records {
                next.last_seq += 1;
                seqs.push(next.last_seq);
                times.push(record_time(&record).unwrap_or(opts.now));
                jsons.push(
                    serde_json::to_vec(&record)
                        .map_err(|e| StoreError::Backend(format!("encode record: {e}")))?,
                );
                applied.records.push((next.last_seq as u64, record));
            }
            tx.execute(
                "INSERT INTO unseen_log (seq, record) SELECT * FROM UNNEST($1::int8[], $2::bytea[])",
                &[&seqs, &jsons],
            )
            .map_err(backend("append records"))?;
            tx.execute(
                "INSERT INTO unseen_history (seq, detected_at, record) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::bytea[])",
                &[&seqs, &times, &jsons],
            )
            .map_err(backend("append history"))?;
            round_trips += 2;
            rows_written += 2 * seqs.len() as u64;
        }
        let (triage_trips, triage_rows) = Self::write_triage(&mut tx, triage)?;
        round_trips += triage_trips;
        rows_written += triage_rows;
        if triage_rows > 0 {
            next.triage_version += 1;
        }
        if next.state_seq - next.folded_seq >= self.fold_rows {
            let (trips, rows) = Self::fold(&mut tx, &mut next)?;
            round_trips += trips;
            rows_written += rows;
        }
        next.key_count = count as i64;
        let (trips, rows) = meta.write_changes(&mut tx, &next)?;
        round_trips += trips;
        rows_written += rows;
        tx.commit().map_err(backend("commit"))?;
        round_trips += 1;
        // Committed: the mirror takes the batch's states.
        for (key, state) in changed {
            put(keys, key, state);
        }
        replica.synced = Some(next.state_seq);
        replica.triage_version = Some(next.triage_version);
        applied.keys = count;
        applied.io = unseen_store::StoreIo {
            round_trips,
            rows_written,
        };
        Ok(applied)
    }

    /// A transaction that holds the sinks' lock (register, remove, ack and prune one at
    /// a time across replicas).
    fn prune_log(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        tx.execute(
            "DELETE FROM unseen_log WHERE seq <= (SELECT COALESCE((SELECT min(cursor) FROM unseen_sinks), (SELECT value FROM unseen_meta WHERE name = 'last_seq')))",
            &[],
        )
        .map_err(backend("prune the log"))?;
        Ok(())
    }

    /// Rows `(seq, bytes)` of `sql` (`$1` = after, `$2` = limit), decoded.
    fn after_seq<T>(
        &self,
        sql: &str,
        after: u64,
        limit: usize,
        what: &'static str,
        decode: impl Fn(i64, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        conn.client()
            .query(sql, &[&after, &limit])
            .map_err(backend(what))?
            .into_iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let bytes: Vec<u8> = r.get(1);
                Ok((seq as u64, decode(seq, &bytes)?))
            })
            .collect()
    }

    /// `f` in a read-only transaction that sees one snapshot (REPEATABLE READ): the
    /// state log and `unseen_keys` as of one moment, without the decision lock.
    fn with_snapshot<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn
            .client()
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(backend("begin"))?;
        let out = f(&mut tx)?;
        tx.commit().map_err(backend("commit"))?;
        Ok(out)
    }

    /// Each key state of the unfolded log rows, oldest first (a key's last is its latest).
    fn for_each_unfolded(
        tx: &mut Transaction<'_>,
        f: &mut dyn FnMut(&[u8], Option<KeyState>),
    ) -> Result<(), StoreError> {
        let meta = Meta::read(tx)?;
        read_log(tx, meta.folded_seq, meta.state_seq, &mut |entry| {
            if !entry.index {
                f(entry.key, entry.state);
            }
            Ok(())
        })
    }

    fn with_tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client().transaction().map_err(backend("begin"))?;
        let out = f(&mut tx)?;
        tx.commit().map_err(backend("commit"))?;
        Ok(out)
    }
}

/// The image index as folded (the unfolded rows' entries come on top, as the keys').
fn load_index(tx: &mut Transaction<'_>) -> Result<Index, StoreError> {
    let mut entries = Vec::new();
    for row in tx
        .query(
            "SELECT key, last_seen, episode_start FROM unseen_image_index",
            &[],
        )
        .map_err(backend("read the image index"))?
    {
        let key: Vec<u8> = row.get(0);
        let key = IndexKey::decode(&key)
            .ok_or_else(|| incompatible("an image index entry is malformed".into()))?;
        entries.push((
            key,
            KeyState {
                last_seen: row.get(1),
                episode_start: row.get(2),
            },
        ));
    }
    Ok(Index::from_entries(entries))
}

/// The open incidents and the risk ledgers.
fn load_open(tx: &mut Transaction<'_>) -> Result<(Incidents, RiskLedger), StoreError> {
    let mut incidents = Vec::new();
    for row in tx
        .query("SELECT grp, incident FROM unseen_open_incidents", &[])
        .map_err(backend("read incidents"))?
    {
        let json: Vec<u8> = row.get(1);
        let incident: Incident = serde_json::from_slice(&json)
            .map_err(|e| incompatible(format!("an open incident cannot be read: {e}")))?;
        let group: Vec<u8> = row.get(0);
        let group = String::from_utf8(group)
            .map_err(|_| incompatible("an incident group is not UTF-8".into()))?;
        incidents.push((group, incident));
    }
    let mut risk = Vec::new();
    for row in tx
        .query("SELECT object, ledger FROM unseen_risk_ledger", &[])
        .map_err(backend("read risk ledgers"))?
    {
        let json: Vec<u8> = row.get(1);
        let ledger: Ledger = serde_json::from_slice(&json)
            .map_err(|e| incompatible(format!("a risk ledger cannot be read: {e}")))?;
        let object: Vec<u8> = row.get(0);
        let object = String::from_utf8(object)
            .map_err(|_| incompatible("a risk object is not UTF-8".into()))?;
        risk.push((object, ledger));
    }
    Ok((
        Incidents::from_open(incidents),
        RiskLedger::from_entries(risk),
    ))
}

fn record_of(seq: i64, json: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(json)
        .map_err(|e| incompatible(format!("record {seq} cannot be read: {e}")))
}

fn unknown(sink: &str) -> StoreError {
    StoreError::UnknownSink {
        sink: sink.to_string(),
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if self.temporary {
            // On a thread of its own: the client blocks (see `pool`'s `Drop`).
            let (pool, schema) = (&self.pool, &self.schema);
            std::thread::scope(|s| {
                s.spawn(|| {
                    if let Ok(mut conn) = pool.get() {
                        let _ = conn
                            .client()
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                    }
                });
            });
        }
    }
}

impl StateStore for PostgresStore {
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError> {
        if batch.is_empty() && opts.notices.is_empty() {
            return Ok(Applied {
                keys: self.key_count()?,
                ..Applied::default()
            });
        }
        let mut replica = self.lock_replica();
        let result = self.apply_locked(batch, opts, &mut replica);
        if result.is_err() {
            // Not committed: what the batch did to the state in memory is read back from
            // the database before the next decision.
            replica.reset();
        }
        result
    }

    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        let mut encoded = Vec::new();
        encode_key(key, &mut encoded);
        self.with_snapshot(|tx| {
            // The latest unfolded state, else the folded one.
            let mut unfolded = None;
            Self::for_each_unfolded(tx, &mut |k, state| {
                if k == encoded.as_slice() {
                    unfolded = Some(state);
                }
            })?;
            if let Some(state) = unfolded {
                return Ok(state);
            }
            Ok(tx
                .query_opt(
                    "SELECT last_seen, episode_start FROM unseen_keys WHERE key = $1",
                    &[&encoded],
                )
                .map_err(backend("read a key"))?
                .map(|r| KeyState {
                    last_seen: r.get(0),
                    episode_start: r.get(1),
                }))
        })
    }

    fn key_count(&self) -> Result<u64, StoreError> {
        self.with_tx(|tx| Ok(Meta::read(tx)?.key_count.max(0) as u64))
    }

    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        let mut replica = self.lock_replica();
        let result = self.with_tx(|tx| {
            let (meta, _) = self.lock_and_sync(tx, &mut replica)?;
            let Some(newest) = meta.newest_point else {
                return Ok(0);
            };
            // What to forget: the keys past the horizon, in `unseen_keys` and in the
            // mirror, which holds the latest state of every key of the unfolded rows (so a
            // folded key with a newer unfolded state is judged by that). Forgetting is a
            // row of tombstones in the state log, which every replica reads as it reads
            // states.
            let horizon = newest.saturating_sub(i64::try_from(windows.gap()).unwrap_or(i64::MAX));
            let forgettable =
                |s: &KeyState| unseen_detect::episode::forgettable(s, newest, windows);
            let mut doomed: std::collections::BTreeSet<Vec<u8>> = tx
                .query(
                    "SELECT key FROM unseen_keys WHERE last_seen < $1",
                    &[&horizon],
                )
                .map_err(backend("find keys to forget"))?
                .into_iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .filter(|k| replica.keys.get(k).is_none_or(forgettable))
                .collect();
            doomed.extend(
                replica
                    .keys
                    .iter()
                    .filter(|(_, s)| forgettable(s))
                    .map(|(k, _)| k.clone()),
            );
            replica.triage.index.forget(newest, windows);
            let index_changed = replica.triage.index.take_dirty();
            let mut next = meta;
            let tombstones = doomed.iter().map(|k| (k.as_slice(), None));
            if !append_log(tx, &mut next, tombstones, &index_changed)? {
                return Ok(0);
            }
            let doomed: Vec<Vec<u8>> = doomed.into_iter().collect();
            tx.execute("DELETE FROM unseen_keys WHERE key = ANY($1)", &[&doomed])
                .map_err(backend("forget keys"))?;
            next.key_count = (next.key_count - doomed.len() as i64).max(0);
            meta.write_changes(tx, &next)?;
            for key in &doomed {
                replica.keys.remove(key.as_slice());
            }
            replica.synced = Some(next.state_seq);
            Ok(doomed.len() as u64)
        });
        if result.is_err() {
            replica.reset();
        }
        result
    }

    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError> {
        self.with_tx(|tx| Self::meta(tx, "newest_point"))
    }

    fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        self.with_tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(&self.schema, "decide")])
                .map_err(backend("take the decision lock"))?;
            tx.execute(
                "INSERT INTO unseen_sinks (name, cursor) SELECT $1, value FROM unseen_meta WHERE name = 'last_seq' ON CONFLICT (name) DO NOTHING",
                &[&sink],
            )
            .map_err(backend("register a sink"))?;
            Self::prune_log(tx)
        })
    }

    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError> {
        self.with_tx(|tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_id(&self.schema, "decide")],
            )
            .map_err(backend("take the decision lock"))?;
            let removed = tx
                .execute("DELETE FROM unseen_sinks WHERE name = $1", &[&sink])
                .map_err(backend("remove a sink"))?;
            tx.execute("DELETE FROM unseen_sink_leases WHERE name = $1", &[&sink])
                .map_err(backend("remove a sink's lease"))?;
            Self::prune_log(tx)?;
            Ok(removed > 0)
        })
    }

    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.pool.get()?;
        Ok(conn
            .client()
            .query("SELECT name, cursor FROM unseen_sinks ORDER BY name", &[])
            .map_err(backend("read sinks"))?
            .into_iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError> {
        let stored = self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO unseen_bound_settings (name, value) VALUES ('key_mode', $1) ON CONFLICT (name) DO NOTHING",
                &[&mode],
            )
            .map_err(backend("bind the key mode"))?;
            Ok(tx
                .query_one("SELECT value FROM unseen_bound_settings WHERE name = 'key_mode'", &[])
                .map_err(backend("read the key mode"))?
                .get::<_, String>(0))
        })?;
        if stored != mode {
            return Err(StoreError::ModeMismatch {
                stored,
                requested: mode.to_string(),
            });
        }
        Ok(())
    }

    /// Takes or renews this replica's lease on `sink` first: while another replica holds
    /// it, nothing is pending here.
    fn pending(&self, sink: &str, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        self.with_tx(|tx| {
            let cursor: i64 = tx
                .query_opt("SELECT cursor FROM unseen_sinks WHERE name = $1", &[&sink])
                .map_err(backend("read a sink"))?
                .ok_or_else(|| unknown(sink))?
                .get(0);
            let held = tx
                .query_opt(
                    "INSERT INTO unseen_sink_leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                     WHERE unseen_sink_leases.holder = EXCLUDED.holder OR unseen_sink_leases.expires_at < now() \
                     RETURNING holder",
                    &[&sink, &self.holder, &(LEASE_SECONDS as f64)],
                )
                .map_err(backend("take a sink's lease"))?;
            if held.is_none() {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            tx.query(
                "SELECT seq, record FROM unseen_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&cursor, &limit],
            )
            .map_err(backend("read the log"))?
            .into_iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let json: Vec<u8> = r.get(1);
                Ok((seq as u64, record_of(seq, &json)?))
            })
            .collect()
        })
    }

    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.with_tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(&self.schema, "decide")])
                .map_err(backend("take the decision lock"))?;
            let moved = tx
                .execute(
                    "UPDATE unseen_sinks SET cursor = GREATEST(cursor, LEAST($2, (SELECT value FROM unseen_meta WHERE name = 'last_seq'))) WHERE name = $1",
                    &[&sink, &seq],
                )
                .map_err(backend("move a sink's cursor"))?;
            if moved == 0 {
                return Err(unknown(sink));
            }
            Self::prune_log(tx)
        })
    }

    fn log_len(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        Ok(conn
            .client()
            .query_one("SELECT count(*) FROM unseen_log", &[])
            .map_err(backend("count the log"))?
            .get::<_, i64>(0) as u64)
    }

    fn learning_started_at(&self, now: UnixSecs) -> Result<UnixSecs, StoreError> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO unseen_meta (name, value) VALUES ('learning_started_at', $1) ON CONFLICT (name) DO NOTHING",
                &[&now],
            )
            .map_err(backend("write meta"))?;
            Ok(Self::meta(tx, "learning_started_at")?.unwrap_or(now))
        })
    }

    fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let mut replica = self.lock_replica();
        // Another replica may have opened or closed some: read them as committed.
        let mut conn = self.pool.get()?;
        let mut tx = conn.client().transaction().map_err(backend("begin"))?;
        let version = Meta::read(&mut tx)?.triage_version;
        if replica.triage_version != Some(version) {
            (replica.triage.incidents, replica.triage.risk) = load_open(&mut tx)?;
            replica.triage_version = Some(version);
        }
        tx.commit().map_err(backend("commit"))?;
        Ok(unseen_store::open_incidents_of(&replica.triage))
    }

    fn history(&self, after: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        self.after_seq(
            "SELECT seq, record FROM unseen_history WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
            "read the history",
            record_of,
        )
    }

    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, Record)>, StoreError> {
        let wanted: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
        let mut conn = self.pool.get()?;
        let mut found: HashMap<i64, Record> = HashMap::new();
        for r in conn
            .client()
            .query(
                "SELECT seq, record FROM unseen_history WHERE seq = ANY($1)",
                &[&wanted],
            )
            .map_err(backend("read the history"))?
        {
            let seq: i64 = r.get(0);
            let json: Vec<u8> = r.get(1);
            found.insert(seq, record_of(seq, &json)?);
        }
        Ok(wanted
            .iter()
            .filter_map(|s| found.get(s).map(|r| (*s as u64, r.clone())))
            .collect())
    }

    fn prune_history(&self, before: UnixSecs) -> Result<u64, StoreError> {
        // Oldest first, stopping at the first record kept (as the other backends).
        self.with_tx(|tx| {
            let pruned = tx
                .execute(
                    "DELETE FROM unseen_history WHERE seq < COALESCE((SELECT min(seq) FROM unseen_history WHERE detected_at >= $1), 9223372036854775807)",
                    &[&before],
                )
                .map_err(backend("prune the history"))?;
            Ok(pruned)
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let json = serde_json::to_vec(entry)
            .map_err(|e| StoreError::Backend(format!("encode audit entry: {e}")))?;
        self.with_tx(|tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_id(&self.schema, "audit")],
            )
            .map_err(backend("take the audit lock"))?;
            let seq: i64 = tx
                .query_one("SELECT COALESCE(max(seq), 0) + 1 FROM unseen_audit", &[])
                .map_err(backend("read the audit log"))?
                .get(0);
            tx.execute(
                "INSERT INTO unseen_audit (seq, entry) VALUES ($1, $2)",
                &[&seq, &json],
            )
            .map_err(backend("append an audit entry"))?;
            Ok(seq as u64)
        })
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        self.after_seq(
            "SELECT seq, entry FROM unseen_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
            "read the audit log",
            |seq, json| {
                serde_json::from_slice(json)
                    .map_err(|e| incompatible(format!("audit entry {seq} cannot be read: {e}")))
            },
        )
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&Key, &KeyState)) -> Result<(), StoreError> {
        let decode = |bytes: &[u8]| {
            decode_key(bytes).ok_or_else(|| incompatible("a key is malformed".into()))
        };
        self.with_snapshot(|tx| {
            // The unfolded states (the latest of each key) over the folded ones.
            let mut unfolded: HashMap<Vec<u8>, Option<KeyState>> = HashMap::new();
            Self::for_each_unfolded(tx, &mut |k, state| {
                unfolded.insert(k.to_vec(), state);
            })?;
            let params: [&(dyn ToSql + Sync); 0] = [];
            let mut rows = tx
                .query_raw(
                    "SELECT key, last_seen, episode_start FROM unseen_keys",
                    params,
                )
                .map_err(backend("read keys"))?;
            use postgres::fallible_iterator::FallibleIterator;
            while let Some(row) = rows.next().map_err(backend("read keys"))? {
                let bytes: &[u8] = row.get(0);
                let state = match unfolded.remove(bytes) {
                    Some(newer) => newer,
                    None => Some(KeyState {
                        last_seen: row.get(1),
                        episode_start: row.get(2),
                    }),
                };
                if let Some(state) = state {
                    f(&decode(bytes)?, &state);
                }
            }
            let mut rest: Vec<(Vec<u8>, KeyState)> = unfolded
                .into_iter()
                .filter_map(|(k, s)| Some((k, s?)))
                .collect();
            rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (bytes, state) in rest {
                f(&decode(&bytes)?, &state);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unseen_store::conformance::{key, opts, sighting};

    fn url() -> String {
        std::env::var("UNSEEN_TEST_POSTGRES")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_string())
    }

    /// A decision that panics while it holds the replica's memory leaves it half
    /// changed: the next decision drops it and reads what is committed, so the replica
    /// goes on deciding exactly (fails without the reset: a poisoned lock, or a key
    /// the panic left in memory that was never committed taken as known).
    #[test]
    fn a_decision_that_panicked_leaves_the_replica_deciding_from_what_is_committed() {
        let store =
            PostgresStore::open_temporary(&url()).expect("PostgreSQL at UNSEEN_TEST_POSTGRES");
        let t = 1_700_000_000;
        let first = store.apply(&[sighting(&key(1), t)], &opts(t)).unwrap();
        assert_eq!(first.records.len(), 1, "a new key is an episode");
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let mut replica = store.replica.lock().unwrap();
                // What an uncommitted decision leaves: a key taken as known.
                let mut encoded = Vec::new();
                encode_key(&key(2), &mut encoded);
                put(
                    &mut replica.keys,
                    &encoded,
                    KeyState {
                        last_seen: t,
                        episode_start: t,
                    },
                );
                panic!("a decision's bug");
            })
            .join()
            .is_err()
        });
        assert!(panicked && store.replica.is_poisoned());
        let next = store
            .apply(
                &[sighting(&key(1), t + 60), sighting(&key(2), t + 60)],
                &opts(t + 60),
            )
            .expect("the replica decides again");
        let opened: Vec<&str> = next
            .records
            .iter()
            .filter_map(|(_, r)| r.finding())
            .map(|f| f.node.as_str())
            .collect();
        assert_eq!(opened, ["node-2"], "key 2 was never committed: it is new");
        assert!(!store.replica.is_poisoned());
    }

    /// A replica that stops in the middle of a commit (its machine lost, its VM frozen)
    /// holds the schema's decision lock in a session idle in its transaction: the
    /// database ends that session after the bound, and the other replicas decide on
    /// (without the bound, `apply` below waits for as long as the session lives).
    #[test]
    fn a_replica_stopped_mid_commit_does_not_hold_the_others_up() {
        let bound = std::time::Duration::from_secs(1);
        let stopped = PostgresStore::open_temporary(&url())
            .expect("PostgreSQL at UNSEEN_TEST_POSTGRES")
            .with_idle_in_transaction(bound);
        let mut conn = stopped.pool.get().unwrap();
        let mut tx = conn.client().transaction().unwrap();
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_id(stopped.schema(), "decide")],
        )
        .unwrap();
        // The stopped replica's commit goes no further; another replica commits.
        let other = PostgresStore::open(&url(), stopped.schema(), None).unwrap();
        let t = 1_700_000_000;
        let (done, decided) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(other.apply(&[sighting(&key(1), t)], &opts(t)));
        });
        // An upper bound for a failure to show, far above the one second expected. On
        // failure the lock is let go first, so that the other thread ends too.
        let Ok(applied) = decided.recv_timeout(std::time::Duration::from_secs(60)) else {
            drop(tx);
            panic!("the other replica waited on the stopped one for a minute");
        };
        assert_eq!(applied.expect("committed").records.len(), 1);
        let ended = tx
            .execute("SELECT 1", &[])
            .expect_err("the session was ended");
        // Closed by the server, whose reason may or may not have been read before.
        assert!(
            ended.is_closed() || pool::explain(&ended).contains("idle-in-transaction"),
            "{}",
            pool::explain(&ended)
        );
    }
}
