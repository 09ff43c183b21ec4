//! The in-memory store: the reference model.
//!
//! Deliberately simple (one mutex, ordered maps, no cleverness), so that it is obviously
//! right and the redb store can be checked against it. Nothing survives the process;
//! `apply` is atomic because it holds the lock for the whole batch.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use unseen_detect::episode::forgettable;
use unseen_detect::KeyState;
use unseen_findings::{Record, TriageState};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::Key;

use crate::{
    record_time, Admission, Applied, ApplyOptions, AuditEntry, Sighting, StateStore, StoreError,
};

/// A [`StateStore`] in memory.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: BTreeMap<Key, KeyState>,
    log: BTreeMap<u64, Record>,
    triage: TriageState,
    /// The last sequence number handed out (0: none yet).
    last_seq: u64,
    sinks: BTreeMap<String, u64>,
    newest: Option<UnixSecs>,
    learning_started_at: Option<UnixSecs>,
    key_mode: Option<String>,
    /// The query API's history: every record, until `prune_history`.
    history: BTreeMap<u64, Record>,
    audit: Vec<AuditEntry>,
}

impl Inner {
    /// Drops the findings every sink has passed (all of them when no sink is left: a
    /// new sink starts at the end).
    fn prune(&mut self) {
        let passed_by_all = self.sinks.values().copied().min().unwrap_or(self.last_seq);
        self.log.retain(|seq, _| *seq > passed_by_all);
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The triage state (image index, open incidents).
    pub fn triage(&self) -> Result<TriageState, StoreError> {
        Ok(self.lock()?.triage.clone())
    }

    /// Every tracked key and its state, in key order.
    pub fn states(&self) -> Result<Vec<(Key, KeyState)>, StoreError> {
        Ok(self
            .lock()?
            .keys
            .iter()
            .map(|(k, s)| (k.clone(), *s))
            .collect())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl StateStore for MemStore {
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError> {
        let mut inner = self.lock()?;
        let inner = &mut *inner;
        let decider = opts.decider();
        let mut applied = Applied::default();
        let mut records = Vec::new();
        let mut admission = Admission::new(opts);
        for (i, s) in batch.iter().enumerate() {
            let prev = inner.keys.get(&s.key).copied();
            let Some(st) =
                admission.step(i, s, prev, inner.keys.len() as u64, &mut applied.refused)
            else {
                continue;
            };
            inner.keys.insert(s.key.clone(), st.state);
            inner.newest = Some(inner.newest.map_or(s.time, |n| n.max(s.time)));
            let previous = prev.map(|p| p.last_seen);
            decider.sighting(&mut inner.triage, s, st.opened, previous, &mut records);
        }
        decider.end_batch(&mut inner.triage, inner.newest, &mut records);
        records.extend(opts.notices.iter().cloned());
        applied.new_keys = admission.into_used();
        // Nothing to write: the state is this memory.
        inner.triage.index.clear_dirty();
        inner.triage.incidents.clear_dirty();
        inner.triage.risk.clear_dirty();
        for record in records {
            inner.last_seq += 1;
            inner.log.insert(inner.last_seq, record.clone());
            inner.history.insert(inner.last_seq, record.clone());
            applied.records.push((inner.last_seq, record));
        }
        applied.keys = inner.keys.len() as u64;
        Ok(applied)
    }

    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        Ok(self.lock()?.keys.get(key).copied())
    }

    fn key_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.keys.len() as u64)
    }

    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let Some(newest) = inner.newest else {
            return Ok(0);
        };
        let before = inner.keys.len();
        inner
            .keys
            .retain(|_, state| !forgettable(state, newest, windows));
        inner.triage.index.forget(newest, windows);
        inner.triage.index.clear_dirty();
        Ok((before - inner.keys.len()) as u64)
    }

    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError> {
        Ok(self.lock()?.newest)
    }

    fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let end = inner.last_seq;
        inner.sinks.entry(sink.to_string()).or_insert(end);
        inner.prune();
        Ok(())
    }

    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let known = inner.sinks.remove(sink).is_some();
        inner.prune();
        Ok(known)
    }

    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match &inner.key_mode {
            Some(stored) if stored != mode => Err(StoreError::ModeMismatch {
                stored: stored.clone(),
                requested: mode.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                inner.key_mode = Some(mode.to_string());
                Ok(())
            }
        }
    }

    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .lock()?
            .sinks
            .iter()
            .map(|(name, cursor)| (name.clone(), *cursor))
            .collect())
    }

    fn pending(&self, sink: &str, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let inner = self.lock()?;
        let cursor = *inner.sinks.get(sink).ok_or_else(|| unknown(sink))?;
        Ok(inner
            .log
            .range(cursor + 1..)
            .take(limit)
            .map(|(seq, f)| (*seq, f.clone()))
            .collect())
    }

    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let last_seq = inner.last_seq;
        let cursor = inner.sinks.get_mut(sink).ok_or_else(|| unknown(sink))?;
        *cursor = (*cursor).max(seq.min(last_seq));
        inner.prune();
        Ok(())
    }

    fn log_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.log.len() as u64)
    }

    fn learning_started_at(&self, now: UnixSecs) -> Result<UnixSecs, StoreError> {
        Ok(*self.lock()?.learning_started_at.get_or_insert(now))
    }

    fn open_incidents(&self) -> Result<Vec<unseen_findings::Incident>, StoreError> {
        Ok(crate::open_incidents_of(&self.lock()?.triage))
    }

    fn history(&self, after: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        Ok(self
            .lock()?
            .history
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(seq, r)| (*seq, r.clone()))
            .collect())
    }

    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, Record)>, StoreError> {
        let inner = self.lock()?;
        Ok(seqs
            .iter()
            .filter_map(|seq| inner.history.get(seq).map(|r| (*seq, r.clone())))
            .collect())
    }

    fn prune_history(&self, before: UnixSecs) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let old: Vec<u64> = inner
            .history
            .iter()
            .take_while(|(_, r)| record_time(r).is_some_and(|t| t < before))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &old {
            inner.history.remove(seq);
        }
        Ok(old.len() as u64)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        inner.audit.push(entry.clone());
        Ok(inner.audit.len() as u64)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .audit
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .skip_while(|(seq, _)| *seq <= after)
            .take(limit)
            .collect())
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&Key, &KeyState)) -> Result<(), StoreError> {
        for (key, state) in &self.lock()?.keys {
            f(key, state);
        }
        Ok(())
    }
}

pub(crate) fn unknown(sink: &str) -> StoreError {
    StoreError::UnknownSink {
        sink: sink.to_string(),
    }
}
