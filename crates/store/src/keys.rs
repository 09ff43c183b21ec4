//! Every key's state in memory, compactly: what lets `serve` hold millions of keys.
//!
//! A key is four interned parts (host, cluster, node, image: a fleet's millions of keys
//! are made of a few hundred thousand distinct names) and its state, 24 bytes in fixed
//! chunks, found through the same 8-byte-slot open-addressing table as a scan's keys
//! ([`unseen_detect::table`]). With the table at most three quarters full that is about
//! 37 bytes a key, against ~400 for a hash map of encoded keys. The state's two times are
//! held as `u32`s (the latest sighting in Unix seconds, up to 2106, and the episode's
//! length so far); a state that does not fit (a time before 1970, an episode of over 136
//! years) is held whole in a side table, so no input is out of range.
//!
//! A key's hash is made of its parts' hashes (each part hashed once when it is interned,
//! seeded per process), so loading a snapshot, whose keys are already parts, hashes no
//! string per key. Positions of removed keys are reused; their parts' names stay interned
//! until the next start (a fleet's names are few next to its keys).

use std::hash::{BuildHasher, Hasher};

use hashbrown::{DefaultHashBuilder, HashMap};
use unseen_detect::intern::Interner;
use unseen_detect::table::{Chunks, KeyTable};
use unseen_detect::KeyState;

/// A key's parts in the order of [`crate::encode_key`]: host, cluster, node, image.
pub type Parts<'a> = [&'a str; 4];

/// Marks an entry whose key was removed (its position is on the free list).
const DEAD: u32 = u32::MAX;

const ZERO: KeyState = KeyState {
    last_seen: 0,
    episode_start: 0,
};

/// An entry's `last` when its state is in [`LiveKeys::wide`].
const WIDE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Interned ids of host, cluster, node and image; `parts[0] == DEAD` for a free entry.
    parts: [u32; 4],
    /// The latest sighting (Unix seconds), or [`WIDE`].
    last: u32,
    /// The latest sighting minus the episode's start.
    span: u32,
}

impl Entry {
    /// The entry of `state`, and whether it must be held in the side table instead.
    fn new(parts: [u32; 4], state: KeyState) -> (Entry, bool) {
        let last = u32::try_from(state.last_seen).ok().filter(|&l| l != WIDE);
        let span = state
            .last_seen
            .checked_sub(state.episode_start)
            .and_then(|s| u32::try_from(s).ok());
        match (last, span) {
            (Some(last), Some(span)) => (Entry { parts, last, span }, false),
            _ => (
                Entry {
                    parts,
                    last: WIDE,
                    span: 0,
                },
                true,
            ),
        }
    }
}

/// Keys and their states (see the module docs).
#[derive(Debug)]
pub struct LiveKeys {
    names: Interner,
    /// [`Interner::hash`] of each name, by id.
    name_hash: Vec<u64>,
    table: KeyTable,
    entries: Chunks<Entry>,
    /// States that do not fit an entry, by position (almost always empty).
    wide: HashMap<u32, KeyState>,
    free: Vec<u32>,
    /// Combines the four parts' hashes (seeded too).
    hasher: DefaultHashBuilder,
}

impl Default for LiveKeys {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl LiveKeys {
    /// A table that holds `keys` keys without growing.
    pub fn with_capacity(keys: usize) -> Self {
        LiveKeys {
            names: Interner::default(),
            name_hash: Vec::new(),
            table: KeyTable::for_len(keys),
            entries: Chunks::default(),
            wide: HashMap::new(),
            free: Vec::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Positions handed out so far: every key's position is below this.
    pub fn positions(&self) -> u32 {
        self.entries.len() as u32
    }

    #[inline]
    fn combine(&self, hashes: [u64; 4]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for x in hashes {
            h.write_u64(x);
        }
        h.finish()
    }

    /// The position of the key `parts`, if held.
    pub fn find(&self, parts: Parts<'_>) -> Option<u32> {
        let hash = self.combine(parts.map(|p| self.names.hash(p)));
        self.table.find(hash, |at| {
            let e = &self.entries[at as usize];
            (0..4).all(|i| self.names.bytes(e.parts[i]) == parts[i].as_bytes())
        })
    }

    /// Adds the key `parts`, which is not held, with `state`; returns its position.
    pub fn insert(&mut self, parts: Parts<'_>, state: KeyState) -> u32 {
        let ids = parts.map(|p| self.intern(p));
        self.insert_ids(ids, state)
    }

    /// The id of `name`, interned if it was not (names are never removed: an id names
    /// one string until the next start).
    pub fn intern(&mut self, name: &str) -> u32 {
        let hash = self.names.hash(name);
        let id = self.names.intern_hashed(name, hash);
        if id as usize == self.name_hash.len() {
            self.name_hash.push(hash);
        }
        id
    }

    fn hash_ids(&self, ids: [u32; 4]) -> u64 {
        self.combine(ids.map(|id| self.name_hash[id as usize]))
    }

    /// [`LiveKeys::insert`] of a key given by its names' ids (this table's:
    /// [`LiveKeys::intern`]), which is not held.
    pub fn insert_ids(&mut self, ids: [u32; 4], state: KeyState) -> u32 {
        let hash = self.hash_ids(ids);
        let (entry, _) = Entry::new(ids, ZERO);
        let at = match self.free.pop() {
            Some(at) => {
                self.entries[at as usize] = entry;
                at
            }
            None => {
                let at = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&at| at < u32::MAX - 1)
                    .expect("over 4 billion keys: more than one store can hold");
                self.entries.push(entry);
                at
            }
        };
        self.table.insert(hash, at);
        self.set_state(at, state);
        at
    }

    /// Sets the state of the key with ids `ids` (this table's: [`LiveKeys::intern`]),
    /// adding it if it is new: for loading, where a snapshot taken while keys changed may
    /// list a key twice (the later wins), and replaying the log.
    pub fn upsert_ids(&mut self, ids: [u32; 4], state: KeyState) {
        let hash = self.hash_ids(ids);
        match self
            .table
            .find(hash, |at| self.entries[at as usize].parts == ids)
        {
            Some(at) => self.set_state(at, state),
            None => {
                self.insert_ids(ids, state);
            }
        }
    }

    /// Sets the state of the key `parts`, adding it if it is new.
    pub fn upsert(&mut self, parts: Parts<'_>, state: KeyState) {
        match self.find(parts) {
            Some(at) => self.set_state(at, state),
            None => {
                self.insert(parts, state);
            }
        }
    }

    /// Removes the key at `at` (a position [`LiveKeys::find`] or an insert gave).
    pub fn remove(&mut self, at: u32) {
        let Some(entry) = self.entries.get(at as usize).filter(|e| e.parts[0] != DEAD) else {
            return;
        };
        let hash = self.hash_ids(entry.parts);
        self.table.remove(hash, |p| p == at);
        self.entries[at as usize].parts[0] = DEAD;
        self.wide.remove(&at);
        self.free.push(at);
    }

    /// Removes the key with ids `ids` (this table's), if held.
    pub fn remove_ids(&mut self, ids: [u32; 4]) {
        let hash = self.hash_ids(ids);
        if let Some(at) = self
            .table
            .find(hash, |at| self.entries[at as usize].parts == ids)
        {
            self.remove(at);
        }
    }

    /// Removes the key `parts`, if held.
    pub fn remove_key(&mut self, parts: Parts<'_>) {
        if let Some(at) = self.find(parts) {
            self.remove(at);
        }
    }

    pub fn state(&self, at: u32) -> KeyState {
        self.state_of(&self.entries[at as usize], at)
    }

    #[inline]
    fn state_of(&self, e: &Entry, at: u32) -> KeyState {
        if e.last == WIDE {
            return self.wide.get(&at).copied().unwrap_or(ZERO);
        }
        KeyState {
            last_seen: i64::from(e.last),
            episode_start: i64::from(e.last) - i64::from(e.span),
        }
    }

    pub fn set_state(&mut self, at: u32, state: KeyState) {
        let e = &mut self.entries[at as usize];
        let (packed, wide) = Entry::new(e.parts, state);
        *e = packed;
        if wide {
            self.wide.insert(at, state);
        } else if !self.wide.is_empty() {
            self.wide.remove(&at);
        }
    }

    /// The key at position `at` and its state; `None` for a free or unused position.
    pub fn get(&self, at: u32) -> Option<(Parts<'_>, KeyState)> {
        let e = self
            .entries
            .get(at as usize)
            .filter(|e| e.parts[0] != DEAD)?;
        Some((e.parts.map(|id| self.names.get(id)), self.state_of(e, at)))
    }

    /// The key at position `at` as interned ids, and its state (for snapshots).
    pub fn ids(&self, at: u32) -> Option<([u32; 4], KeyState)> {
        let e = self
            .entries
            .get(at as usize)
            .filter(|e| e.parts[0] != DEAD)?;
        Some((e.parts, self.state_of(e, at)))
    }

    /// Every key and its state, in position order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Parts<'_>, KeyState)> {
        (0..self.positions()).filter_map(|at| self.get(at).map(|(p, s)| (at, p, s)))
    }

    /// Distinct names interned (ids are below this).
    pub fn names(&self) -> u32 {
        self.names.len() as u32
    }

    /// The name with id `id`.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id)
    }

    /// A loader of keys named by another table's ids (a snapshot's), which maps them to
    /// this table's as it meets them.
    pub fn loader<'k>(&'k mut self, names: &'k [&'k str]) -> Loader<'k> {
        Loader {
            keys: self,
            names,
            ids: vec![u32::MAX; names.len()],
        }
    }
}

/// Adds keys named by ids of a list of names: see [`LiveKeys::loader`]. Names no key
/// uses are never interned, so a restart sheds the names of forgotten keys.
pub struct Loader<'k> {
    keys: &'k mut LiveKeys,
    names: &'k [&'k str],
    /// This table's id of each of `names`, or `u32::MAX` before it is met.
    ids: Vec<u32>,
}

impl Loader<'_> {
    /// Sets the state of the key whose parts are `names[ids[i]]`; `None` if an id is
    /// not one of the names.
    pub fn upsert(&mut self, ids: [u32; 4], state: KeyState) -> Option<()> {
        let mut own = [0; 4];
        for (o, id) in own.iter_mut().zip(ids) {
            let slot = self.ids.get_mut(id as usize)?;
            if *slot == u32::MAX {
                *slot = self.keys.intern(self.names[id as usize]);
            }
            *o = *slot;
        }
        self.keys.upsert_ids(own, state);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Times that fit an entry and times that do not: before 1970, past 2106, the
    /// marker itself, episodes longer than a `u32`.
    fn state(t: i64) -> KeyState {
        KeyState {
            last_seen: t,
            episode_start: if t % 3 == 0 {
                t.saturating_sub(1 << 33)
            } else {
                t / 2
            },
        }
    }

    fn prop_time() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::strategy::Just;
        proptest::prop_oneof![
            -5i64..5,
            1_700_000_000i64..1_700_000_010,
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) - 1),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Against a map of owned keys: upserts and removals in any order, then a reload
        /// through a loader (as from a snapshot) holds the same.
        #[test]
        fn live_keys_are_a_map(ops in proptest::collection::vec((0u8..3, 0usize..4, 0usize..3, 0usize..4, prop_time()), 0..200)) {
            let names = ["", "n", "node-1", "ip-10-0-0-1.ec2.internal"];
            let images = ["nginx", "docker.io/library/nginx", "ghcr.io/a/b", "n"];
            let mut keys = LiveKeys::with_capacity(0);
            let mut model: BTreeMap<[String; 4], KeyState> = BTreeMap::new();
            for (op, h, c, i, t) in ops {
                let parts = [names[h], names[c], names[(h + 1) % 4], images[i]];
                let owned = parts.map(String::from);
                if op == 0 {
                    keys.remove_key(parts);
                    model.remove(&owned);
                } else {
                    keys.upsert(parts, state(t));
                    model.insert(owned, state(t));
                }
                proptest::prop_assert_eq!(keys.len(), model.len());
            }
            let listed: BTreeMap<[String; 4], KeyState> =
                keys.iter().map(|(_, p, s)| (p.map(String::from), s)).collect();
            proptest::prop_assert_eq!(&listed, &model);
            for (k, s) in &model {
                let at = keys.find([&k[0], &k[1], &k[2], &k[3]]);
                proptest::prop_assert_eq!(at.map(|at| keys.state(at)), Some(*s));
            }
            // A reload by ids, every key listed twice (the later state wins).
            let all: Vec<&str> = (0..keys.names()).map(|id| keys.name(id)).collect();
            let mut again = LiveKeys::with_capacity(keys.len());
            let mut loader = again.loader(&all);
            for at in 0..keys.positions() {
                if let Some((ids, s)) = keys.ids(at) {
                    loader.upsert(ids, state(99)).unwrap();
                    loader.upsert(ids, s).unwrap();
                }
            }
            proptest::prop_assert!(loader.upsert([u32::MAX, 0, 0, 0], state(1)).is_none());
            let reloaded: BTreeMap<[String; 4], KeyState> =
                again.iter().map(|(_, p, s)| (p.map(String::from), s)).collect();
            proptest::prop_assert_eq!(&reloaded, &model);
        }
    }
}
