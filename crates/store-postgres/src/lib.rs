//! The state store in PostgreSQL: any number of `unseen serve` replicas share one state,
//! and each episode is reported once, whichever replica receives its points.
//!
//! # How replicas agree
//!
//! - **One decision at a time.** `apply` runs in one transaction that first takes a
//!   transaction-level advisory lock of the schema (`pg_advisory_xact_lock`), reads the
//!   states of the batch's keys (one round trip, `= ANY($1)`), decides with the same
//!   `step` and `Decider` as every backend, and writes the changed states, the records
//!   and the triage state (one `UNNEST` upsert per table) before it commits. Two
//!   replicas given the same point therefore decide one after the other, and the second
//!   sees the state the first committed: the point opens its episode once.
//! - **The triage state** (image index, open incidents, risk ledgers) is kept in memory,
//!   as the embedded store keeps it, with the `triage_version` it was read at; a replica
//!   that finds another version under the lock reads it again before deciding.
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

/// A [`StateStore`] in a PostgreSQL schema.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// The triage state as of `triage_version`; `None` when it must be read again.
    triage: Mutex<(Option<i64>, TriageState)>,
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
            triage: Mutex::new((None, TriageState::default())),
            holder: format!("{}-{}", std::process::id(), random_hex()),
            temporary,
        })
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn lock_triage(&self) -> Result<MutexGuard<'_, (Option<i64>, TriageState)>, StoreError> {
        self.triage
            .lock()
            .map_err(|_| StoreError::Backend("triage state lock poisoned".into()))
    }

    fn meta(tx: &mut Transaction<'_>, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(tx
            .query_opt("SELECT value FROM unseen_meta WHERE name = $1", &[&name])
            .map_err(backend("read meta"))?
            .map(|r| r.get(0)))
    }

    fn set_meta(tx: &mut Transaction<'_>, name: &str, value: i64) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO unseen_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
        )
        .map_err(backend("write meta"))?;
        Ok(())
    }

    /// Takes the schema's decision lock for the rest of the transaction, and brings the
    /// in-memory triage state to the version committed (read again when another replica
    /// changed it).
    fn lock_and_sync(
        &self,
        tx: &mut Transaction<'_>,
        triage: &mut (Option<i64>, TriageState),
    ) -> Result<i64, StoreError> {
        // Two round trips (the lock, the version), and three more when the triage state
        // is read again: counted by the caller as `SYNC_ROUND_TRIPS`.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_id(&self.schema, "decide")],
        )
        .map_err(backend("take the decision lock"))?;
        let version = Self::meta(tx, "triage_version")?.unwrap_or(0);
        if triage.0 != Some(version) {
            triage.1 = load_triage(tx)?;
            triage.0 = Some(version);
        }
        Ok(version)
    }

    /// Writes what changed in the triage state: (round trips, rows written).
    fn write_triage(
        tx: &mut Transaction<'_>,
        triage: &mut TriageState,
    ) -> Result<(u64, u64), StoreError> {
        let (mut trips, mut rows) = (0, 0);
        let (mut up_keys, mut up_last, mut up_start, mut gone) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, state) in triage.index.take_dirty() {
            rows += 1;
            match state {
                Some(s) => {
                    up_keys.push(key.encode());
                    up_last.push(s.last_seen);
                    up_start.push(s.episode_start);
                }
                None => gone.push(key.encode()),
            }
        }
        if !up_keys.is_empty() {
            tx.execute(
                "INSERT INTO unseen_image_index (key, last_seen, episode_start) SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::int8[]) \
                 ON CONFLICT (key) DO UPDATE SET last_seen = EXCLUDED.last_seen, episode_start = EXCLUDED.episode_start",
                &[&up_keys, &up_last, &up_start],
            )
            .map_err(backend("write the image index"))?;
            trips += 1;
        }
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM unseen_image_index WHERE key = ANY($1)",
                &[&gone],
            )
            .map_err(backend("write the image index"))?;
            trips += 1;
        }
        let incidents = triage.incidents.take_dirty();
        rows += incidents.len() as u64;
        trips += Self::write_named(
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
        triage: &mut (Option<i64>, TriageState),
    ) -> Result<Applied, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client().transaction().map_err(backend("begin"))?;
        let synced = triage.0;
        let version = self.lock_and_sync(&mut tx, triage)?;
        // begin, the lock, the version, and the triage tables when read again.
        let mut round_trips: u64 = 3 + if synced == Some(version) { 0 } else { 3 };
        let mut rows_written: u64 = 0;
        let state = &mut triage.1;
        let decider = opts.decider();
        let mut applied = Applied::default();
        let mut last_seq = Self::meta(&mut tx, "last_seq")?.unwrap_or(0);
        let mut newest = Self::meta(&mut tx, "newest_point")?;
        let mut count = Self::meta(&mut tx, "key_count")?.unwrap_or(0).max(0) as u64;
        round_trips += 3;
        // The batch's keys, encoded once, and their states in one round trip.
        let encoded: Vec<Vec<u8>> = batch
            .iter()
            .map(|s| {
                let mut e = Vec::with_capacity(64);
                encode_key(&s.key, &mut e);
                e
            })
            .collect();
        let mut distinct: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut known: HashMap<Vec<u8>, KeyState> = HashMap::with_capacity(distinct.len());
        if !distinct.is_empty() {
            round_trips += 1;
            for row in tx
                .query(
                    "SELECT key, last_seen, episode_start FROM unseen_keys WHERE key = ANY($1)",
                    &[&distinct],
                )
                .map_err(backend("read keys"))?
            {
                known.insert(
                    row.get(0),
                    KeyState {
                        last_seen: row.get(1),
                        episode_start: row.get(2),
                    },
                );
            }
        }
        let mut touched: HashMap<&[u8], KeyState> = HashMap::new();
        let mut admission = Admission::new(opts);
        let mut records = Vec::new();
        for (i, s) in batch.iter().enumerate() {
            let key = encoded[i].as_slice();
            let prev = touched.get(key).or_else(|| known.get(key)).copied();
            let Some(st) = admission.step(i, s, prev, count, &mut applied.refused) else {
                continue;
            };
            if prev != Some(st.state) {
                touched.insert(key, st.state);
                if prev.is_none() {
                    count += 1;
                }
            }
            newest = Some(newest.map_or(s.time, |n| n.max(s.time)));
            decider.sighting(state, s, st.opened, prev.map(|p| p.last_seen), &mut records);
        }
        decider.end_batch(state, newest, &mut records);
        records.extend(opts.notices.iter().cloned());
        applied.new_keys = admission.into_used();
        if !touched.is_empty() {
            let mut keys: Vec<(&[u8], KeyState)> = touched.into_iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let k: Vec<&[u8]> = keys.iter().map(|(k, _)| *k).collect();
            let last: Vec<i64> = keys.iter().map(|(_, s)| s.last_seen).collect();
            let start: Vec<i64> = keys.iter().map(|(_, s)| s.episode_start).collect();
            rows_written += tx.execute(
                "INSERT INTO unseen_keys (key, last_seen, episode_start) SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::int8[]) \
                 ON CONFLICT (key) DO UPDATE SET last_seen = EXCLUDED.last_seen, episode_start = EXCLUDED.episode_start",
                &[&k, &last, &start],
            )
            .map_err(backend("write keys"))?;
            round_trips += 1;
        }
        if !records.is_empty() {
            let (mut seqs, mut times, mut jsons) = (Vec::new(), Vec::new(), Vec::new());
            for record in records {
                last_seq += 1;
                seqs.push(last_seq);
                times.push(record_time(&record).unwrap_or(opts.now));
                jsons.push(
                    serde_json::to_vec(&record)
                        .map_err(|e| StoreError::Backend(format!("encode record: {e}")))?,
                );
                applied.records.push((last_seq as u64, record));
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
        let (triage_trips, triage_rows) = Self::write_triage(&mut tx, state)?;
        let next_version = if triage_rows > 0 {
            version + 1
        } else {
            version
        };
        Self::set_meta(&mut tx, "last_seq", last_seq)?;
        Self::set_meta(&mut tx, "key_count", count as i64)?;
        Self::set_meta(&mut tx, "triage_version", next_version)?;
        if let Some(n) = newest {
            Self::set_meta(&mut tx, "newest_point", n)?;
            round_trips += 1;
        }
        tx.commit().map_err(backend("commit"))?;
        triage.0 = Some(next_version);
        applied.keys = count;
        // The meta rows and the commit.
        applied.io = unseen_store::StoreIo {
            round_trips: round_trips + triage_trips + 4,
            rows_written: rows_written + triage_rows + 4,
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

fn load_triage(tx: &mut Transaction<'_>) -> Result<TriageState, StoreError> {
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
    Ok(TriageState {
        index: Index::from_entries(entries),
        incidents: Incidents::from_open(incidents),
        risk: RiskLedger::from_entries(risk),
    })
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
        let mut triage = self.lock_triage()?;
        let result = self.apply_locked(batch, opts, &mut triage);
        if result.is_err() {
            // Not committed: what the batch did to the triage state in memory is read
            // back from the database before the next decision.
            triage.0 = None;
        }
        result
    }

    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        let mut encoded = Vec::new();
        encode_key(key, &mut encoded);
        let mut conn = self.pool.get()?;
        Ok(conn
            .client()
            .query_opt(
                "SELECT last_seen, episode_start FROM unseen_keys WHERE key = $1",
                &[&encoded],
            )
            .map_err(backend("read a key"))?
            .map(|r| KeyState {
                last_seen: r.get(0),
                episode_start: r.get(1),
            }))
    }

    fn key_count(&self) -> Result<u64, StoreError> {
        self.with_tx(|tx| Ok(Self::meta(tx, "key_count")?.unwrap_or(0).max(0) as u64))
    }

    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        let mut triage = self.lock_triage()?;
        let result = self.with_tx(|tx| {
            let version = self.lock_and_sync(tx, &mut triage)?;
            let Some(newest) = Self::meta(tx, "newest_point")? else {
                return Ok(0);
            };
            let horizon = newest.saturating_sub(i64::try_from(windows.gap()).unwrap_or(i64::MAX));
            let forgotten = tx
                .execute("DELETE FROM unseen_keys WHERE last_seen < $1", &[&horizon])
                .map_err(backend("forget keys"))?;
            if forgotten > 0 {
                let count = Self::meta(tx, "key_count")?.unwrap_or(0);
                Self::set_meta(tx, "key_count", (count - forgotten as i64).max(0))?;
            }
            if triage.1.index.forget(newest, windows) > 0
                && Self::write_triage(tx, &mut triage.1)?.1 > 0
            {
                Self::set_meta(tx, "triage_version", version + 1)?;
                triage.0 = Some(version + 1);
            }
            Ok(forgotten)
        });
        if result.is_err() {
            triage.0 = None;
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
        let mut triage = self.lock_triage()?;
        // Another replica may have opened or closed some: read them as committed.
        let mut conn = self.pool.get()?;
        let mut tx = conn.client().transaction().map_err(backend("begin"))?;
        let version = Self::meta(&mut tx, "triage_version")?.unwrap_or(0);
        if triage.0 != Some(version) {
            triage.1 = load_triage(&mut tx)?;
            triage.0 = Some(version);
        }
        tx.commit().map_err(backend("commit"))?;
        Ok(unseen_store::open_incidents_of(&triage.1))
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
        let mut conn = self.pool.get()?;
        let params: [&(dyn ToSql + Sync); 0] = [];
        let mut rows = conn
            .client()
            .query_raw(
                "SELECT key, last_seen, episode_start FROM unseen_keys",
                params,
            )
            .map_err(backend("read keys"))?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(row) = rows.next().map_err(backend("read keys"))? {
            let bytes: Vec<u8> = row.get(0);
            let key =
                decode_key(&bytes).ok_or_else(|| incompatible("a key is malformed".into()))?;
            f(
                &key,
                &KeyState {
                    last_seen: row.get(1),
                    episode_start: row.get(2),
                },
            );
        }
        Ok(())
    }
}
