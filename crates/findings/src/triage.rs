//! What the fleet already knows, per distinct image: the novelty of an episode.
//!
//! The key and its episodes stay exactly the contract's (section 4); this is evidence on
//! top. An episode of (cluster, node, image) is:
//!
//! - `node` scope when the image runs, or ran within B − R, elsewhere in the same cluster
//!   (a rollout or a rescheduling put a known image on another node);
//! - `cluster` scope when it is new to the cluster but known in another;
//! - `fleet` scope when no cluster ran it within B − R.
//!
//! "Known" uses the rule's own gap: an image is known at `t` when some sighting of it (any
//! node) is at most B − R before `t`, or later (out of order). Because the episode's own
//! key had no sighting within B − R (that is what opened the episode), such a sighting is
//! always another node's. Sightings are applied in order, so of the nodes that see a new
//! image in the same second, the first one applied is `fleet` scope and the rest join it.
//!
//! The index is kept per distinct image, cluster image, registry and node, not per key:
//! its size is the fleet's catalogue, not its containers (see BENCHMARKS.md).

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};

use serde::{Deserialize, Serialize};
use unseen_detect::{BaselineKey, KeyState};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::image::registry_of;
use unseen_normalize::lookalike::look_alike;
use unseen_normalize::Key;

/// How far an episode's image is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Node,
    Cluster,
    Fleet,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Cluster => "cluster",
            Scope::Fleet => "fleet",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the index says about an episode, read before its own sighting is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Novelty {
    pub scope: Scope,
    /// The first image from its registry in the fleet (within B − R).
    pub registry_new: bool,
    /// For a fleet-new image: the known repository it is a near-miss of.
    pub look_alike: Option<String>,
    /// The node itself is new: this is its first sighting (within B − R).
    pub new_node: bool,
}

/// Which part of the index an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKind {
    /// (cluster, image)
    ClusterImage = 1,
    /// (image)
    Image = 2,
    /// (registry)
    Registry = 3,
    /// (cluster, node)
    Node = 4,
}

impl IndexKind {
    pub fn from_u8(b: u8) -> Option<IndexKind> {
        Some(match b {
            1 => IndexKind::ClusterImage,
            2 => IndexKind::Image,
            3 => IndexKind::Registry,
            4 => IndexKind::Node,
            _ => return None,
        })
    }
}

/// One entry of the index: its kind and its parts (one or two strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexKey {
    pub kind: IndexKind,
    pub a: String,
    /// Empty for one-part kinds.
    pub b: String,
}

impl IndexKey {
    fn new(kind: IndexKind, a: &str, b: &str) -> Self {
        IndexKey {
            kind,
            a: a.to_string(),
            b: b.to_string(),
        }
    }

    /// A stable byte encoding (kind, then length-prefixed parts), for stores.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// The length of [`IndexKey::encode`]'s bytes.
    pub fn encoded_len(&self) -> usize {
        1 + 8 + self.a.len() + self.b.len()
    }

    /// [`IndexKey::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.as_ref().encode_into(out)
    }

    pub fn as_ref(&self) -> IndexKeyRef<'_> {
        IndexKeyRef {
            kind: self.kind,
            a: &self.a,
            b: &self.b,
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<IndexKey> {
        let (&kind, mut rest) = bytes.split_first()?;
        let kind = IndexKind::from_u8(kind)?;
        let mut part = || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            let text = std::str::from_utf8(tail.get(..len)?).ok()?.to_string();
            rest = &tail[len..];
            Some(text)
        };
        let a = part()?;
        let b = part()?;
        Some(IndexKey { kind, a, b })
    }
}

/// The fleet's knowledge, per distinct image, cluster image, registry and node: for each,
/// the latest sighting and the start of its current run (a [`KeyState`], stepped with the
/// rule's gap like a key).
///
/// Entries are kept as ids of counted strings ([`Names`]): a fleet has hundreds of
/// thousands of (cluster, image) pairs made of a few thousand strings, and an entry of two
/// owned strings cost ~230 bytes where ~50 do.
#[derive(Debug, Clone, Default)]
pub struct Index {
    names: Names,
    entries: HashMap<Slot, KeyState>,
    /// The images of `entries`, by registry and length: a fleet-new image is compared
    /// (for look-alikes) only with images of its registry within two characters of its
    /// length, so that a fleet's first day, when every image is new, is not quadratic.
    /// Each with the start of its current run (kept equal to its entry's), so that the
    /// images not established yet (all of them on a first day) are passed over by an
    /// integer compare rather than a lookup each. An image here is held by its entry.
    by_length: HashMap<(String, usize), Vec<(u32, UnixSecs)>>,
    /// Entries changed since the last [`Index::take_dirty`]: what a store must write.
    /// Each holds its names, so that a forgotten entry can still be named to the store.
    dirty: HashSet<Slot>,
    /// Nothing persists this index (a batch run): changes are not tracked, which halves
    /// its memory.
    untracked: bool,
}

/// An entry of the index: its kind and its parts as [`Names`] ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    kind: IndexKind,
    a: u32,
    b: u32,
}

/// The strings of the index's entries, each kept once and counted: an entry holds its two
/// parts, a dirty mark holds them too, and a string no one holds any more is dropped and
/// its id given to the next new string (images come and go; the names must not grow
/// with them).
#[derive(Debug, Clone, Default)]
struct Names {
    /// Ids of held strings, by the hash of their text.
    ids: HashTable<u32>,
    slots: Vec<NameSlot>,
    /// Ids of dropped strings, to reuse.
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
}

#[derive(Debug, Clone)]
struct NameSlot {
    text: Box<str>,
    /// Holders; 0 for a free slot.
    refs: u32,
}

impl Names {
    fn find(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.ids
            .find(hash, |&id| &*self.slots[id as usize].text == s)
            .copied()
    }

    fn get(&self, id: u32) -> &str {
        &self.slots[id as usize].text
    }

    /// The id of `s`, held once more (added when new).
    fn hold(&mut self, s: &str) -> u32 {
        let hash = self.hasher.hash_one(s);
        let Names {
            ids,
            slots,
            free,
            hasher,
        } = self;
        if let Some(&id) = ids.find(hash, |&id| &*slots[id as usize].text == s) {
            slots[id as usize].refs += 1;
            return id;
        }
        let slot = NameSlot {
            text: s.into(),
            refs: 1,
        };
        let id = match free.pop() {
            Some(id) => {
                slots[id as usize] = slot;
                id
            }
            None => {
                slots.push(slot);
                u32::try_from(slots.len() - 1).expect("over 4 billion names in the image index")
            }
        };
        ids.insert_unique(hash, id, |&id| hasher.hash_one(&slots[id as usize].text));
        id
    }

    fn hold_id(&mut self, id: u32) {
        self.slots[id as usize].refs += 1;
    }

    fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            let hash = self.hasher.hash_one(&slot.text);
            if let Ok(entry) = self.ids.find_entry(hash, |&i| i == id) {
                entry.remove();
            }
            slot.text = Box::default();
            self.free.push(id);
        }
    }
}

/// An index entry borrowed from the index: what [`Index::entries`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexKeyRef<'a> {
    pub kind: IndexKind,
    pub a: &'a str,
    pub b: &'a str,
}

impl IndexKeyRef<'_> {
    /// [`IndexKey::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        for part in [self.a, self.b] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }

    pub fn to_owned(&self) -> IndexKey {
        IndexKey::new(self.kind, self.a, self.b)
    }
}

/// Two indexes are equal when they know the same: the same entries (ids, what is dirty
/// and the order of the length buckets are bookkeeping).
impl PartialEq for Index {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .entries()
                .all(|(k, s)| other.get(k.kind, k.a, k.b) == Some(&s))
    }
}

impl Eq for Index {}

/// How precisely the index records sightings: a later sighting less than this after the
/// one recorded is not recorded (B − R / 256, at most an hour: 1 h of the default 29 days).
/// So what the index knows of an image lags by less than this, which moves the edge of
/// "known within B − R" by as much and nothing else; it is the same in `scan`, `serve`
/// and `backtest`, which feed the index the same sightings.
pub fn quantum(windows: &Windows) -> i64 {
    i64::try_from(windows.gap() / 256)
        .unwrap_or(i64::MAX)
        .clamp(1, 3_600)
}

/// Whether `a` and `b` fall in the same quantum of time (quanta counted from the epoch,
/// so that every run and every replica draws the same boundaries).
pub fn same_quantum(a: UnixSecs, b: UnixSecs, windows: &Windows) -> bool {
    let q = quantum(windows);
    a.div_euclid(q) == b.div_euclid(q)
}

/// Whether `state` says "seen within B − R of `t`" (or after `t`).
fn known(state: Option<&KeyState>, t: UnixSecs, windows: &Windows) -> bool {
    let gap = i64::try_from(windows.gap()).unwrap_or(i64::MAX);
    state.is_some_and(|s| s.last_seen >= t.saturating_sub(gap))
}

impl Index {
    /// An empty index that no store persists: it does not track what changed.
    pub fn untracked() -> Self {
        Index {
            untracked: true,
            ..Index::default()
        }
    }

    /// An index holding `entries` (a store loading what it persisted).
    pub fn from_entries(entries: impl IntoIterator<Item = (IndexKey, KeyState)>) -> Self {
        let mut index = Index::default();
        for (key, state) in entries {
            index.set_committed(key, Some(state));
        }
        index
    }

    fn length_bucket(image: &str) -> Option<(String, usize)> {
        let registry = registry_of(image)?;
        Some((registry.to_string(), image.len()))
    }

    fn add_image(&mut self, id: u32, start: UnixSecs) {
        if let Some(bucket) = Self::length_bucket(self.names.get(id)) {
            self.by_length.entry(bucket).or_default().push((id, start));
        }
    }

    /// The image's run started anew (or earlier, a late point): rare, so a search of its
    /// bucket is cheap enough.
    fn restart_image(&mut self, id: u32, start: UnixSecs) {
        if let Some(bucket) = Self::length_bucket(self.names.get(id)) {
            let images = self.by_length.get_mut(&bucket).into_iter().flatten();
            for (_, s) in images.filter(|(i, _)| *i == id) {
                *s = start;
            }
        }
    }

    fn remove_image(&mut self, id: u32) {
        if let Some(bucket) = Self::length_bucket(self.names.get(id)) {
            if let Some(images) = self.by_length.get_mut(&bucket) {
                images.retain(|(i, _)| *i != id);
                if images.is_empty() {
                    self.by_length.remove(&bucket);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry's state, if the index has it.
    pub fn state_of(&self, key: &IndexKey) -> Option<KeyState> {
        self.get(key.kind, &key.a, &key.b).copied()
    }

    pub fn entries(&self) -> impl Iterator<Item = (IndexKeyRef<'_>, KeyState)> {
        self.entries
            .iter()
            .map(|(slot, state)| (self.key_of(slot), *state))
    }

    /// Where every entry is now (12 bytes each), to read them later with
    /// [`Index::entry`]: a store writes the index a chunk at a time while it changes.
    pub fn slots(&self) -> Vec<Slot> {
        self.entries.keys().copied().collect()
    }

    /// The entry at `slot`, if there is one now. After the entry at `slot` was forgotten,
    /// its names may have gone to new strings: `slot` then names an entry added since, if
    /// any, never one that another slot of the same [`Index::slots`] names.
    pub fn entry(&self, slot: Slot) -> Option<(IndexKeyRef<'_>, KeyState)> {
        let state = self.entries.get(&slot)?;
        Some((self.key_of(&slot), *state))
    }

    fn key_of(&self, slot: &Slot) -> IndexKeyRef<'_> {
        IndexKeyRef {
            kind: slot.kind,
            a: self.names.get(slot.a),
            b: self.names.get(slot.b),
        }
    }

    /// The entries changed since the last call, with their new states (or `None` when
    /// forgotten), in order, for a store to write in the same transaction as the keys.
    pub fn take_dirty(&mut self) -> Vec<(IndexKey, Option<KeyState>)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        self.drain_dirty(|key, state| out.push((key.to_owned(), state)));
        out.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        out
    }

    /// [`Index::take_dirty`] without a copy: hands each entry changed since the last call
    /// to `f`, borrowed, with its new state (or `None`), in no particular order.
    pub fn drain_dirty(&mut self, mut f: impl FnMut(IndexKeyRef<'_>, Option<KeyState>)) {
        let dirty = std::mem::take(&mut self.dirty);
        for slot in &dirty {
            f(self.key_of(slot), self.entries.get(slot).copied());
        }
        for slot in dirty {
            self.names.release(slot.a);
            self.names.release(slot.b);
        }
    }

    /// Forgets what changed without writing it anywhere (a store that keeps nothing).
    pub fn clear_dirty(&mut self) {
        for slot in std::mem::take(&mut self.dirty) {
            self.names.release(slot.a);
            self.names.release(slot.b);
        }
    }

    /// The entry's place, when both its names are held (it may still be absent).
    fn slot(&self, kind: IndexKind, a: &str, b: &str) -> Option<Slot> {
        Some(Slot {
            kind,
            a: self.names.find(a)?,
            b: self.names.find(b)?,
        })
    }

    fn get(&self, kind: IndexKind, a: &str, b: &str) -> Option<&KeyState> {
        self.entries.get(&self.slot(kind, a, b)?)
    }

    /// A new entry, holding its names.
    fn insert(&mut self, kind: IndexKind, a: &str, b: &str, state: KeyState) -> Slot {
        let slot = Slot {
            kind,
            a: self.names.hold(a),
            b: self.names.hold(b),
        };
        self.entries.insert(slot, state);
        if kind == IndexKind::Image {
            self.add_image(slot.a, state.episode_start);
        }
        slot
    }

    /// Marks `slot` changed (a store writes it with the next batch).
    fn mark_dirty(&mut self, slot: Slot) {
        if !self.untracked && self.dirty.insert(slot) {
            self.names.hold_id(slot.a);
            self.names.hold_id(slot.b);
        }
    }

    /// Removes the entry at `slot` and lets go of its names.
    fn remove(&mut self, slot: Slot) {
        if self.entries.remove(&slot).is_some() {
            if slot.kind == IndexKind::Image {
                self.remove_image(slot.a);
            }
            self.names.release(slot.a);
            self.names.release(slot.b);
        }
    }

    /// What the fleet knew about `key`'s image and node before a sighting at `t`.
    pub fn novelty(&self, key: &Key, t: UnixSecs, windows: &Windows) -> Novelty {
        let in_cluster = known(
            self.get(IndexKind::ClusterImage, &key.cluster, &key.image),
            t,
            windows,
        );
        let in_fleet = known(self.get(IndexKind::Image, &key.image, ""), t, windows);
        let scope = match (in_cluster, in_fleet) {
            (true, _) => Scope::Node,
            (false, true) => Scope::Cluster,
            (false, false) => Scope::Fleet,
        };
        let registry_new = registry_of(&key.image)
            .is_some_and(|r| !known(self.get(IndexKind::Registry, r, ""), t, windows));
        let look_alike = match (scope, registry_of(&key.image)) {
            (Scope::Fleet, Some(registry)) => {
                // Images the fleet has run for at least R: what a typosquat imitates (and
                // not the other new images of the same rollout or first day).
                let recent = i64::try_from(windows.recent).unwrap_or(i64::MAX);
                let established = |image: &str| {
                    self.get(IndexKind::Image, image, "").is_some_and(|s| {
                        known(Some(s), t, windows) && t.saturating_sub(s.episode_start) >= recent
                    })
                };
                let len = key.image.len();
                let registry = registry.to_string();
                let candidates = (len.saturating_sub(2)..=len + 2)
                    .filter_map(|l| self.by_length.get(&(registry.clone(), l)))
                    .flatten()
                    .filter(|(_, start)| t.saturating_sub(*start) >= recent)
                    .map(|&(image, _)| self.names.get(image))
                    .filter(|image| established(image));
                look_alike(&key.image, candidates).map(str::to_string)
            }
            _ => None,
        };
        let new_node = !known(
            self.get(IndexKind::Node, &key.cluster, &key.node),
            t,
            windows,
        );
        Novelty {
            scope,
            registry_new,
            look_alike,
            new_node,
        }
    }

    /// Applies a sighting of `key` at `t`.
    pub fn observe(&mut self, key: &Key, t: UnixSecs, windows: &Windows) {
        self.know(&key.cluster, &key.node, &key.image, t, windows);
    }

    /// Marks (cluster, node, image) as known at `t` without reading it first: what a batch
    /// run knows from its baseline window.
    pub fn know(&mut self, cluster: &str, node: &str, image: &str, t: UnixSecs, w: &Windows) {
        self.know_again(&BaselineKey::whole(cluster, node, image), t, w);
    }

    /// [`Index::know`] of the entries of the key that its marks say to index: a scan's
    /// baseline leaves out the entries an earlier key made already (at the same `t`, they
    /// would not change) and those no finding reads
    /// (`BatchScan::for_each_baseline_key_marked`).
    pub fn know_again(&mut self, key: &BaselineKey<'_>, t: UnixSecs, w: &Windows) {
        let BaselineKey {
            cluster,
            node,
            image,
            index_image,
            index_node,
            index_cluster_image,
        } = *key;
        // Without a `Key` to build: this runs once per baseline key of a scan.
        if index_cluster_image {
            self.bump(IndexKind::ClusterImage, cluster, image, t, w);
        }
        if index_image {
            self.bump(IndexKind::Image, image, "", t, w);
            if let Some(registry) = registry_of(image) {
                self.bump(IndexKind::Registry, registry, "", t, w);
            }
        }
        if index_node {
            self.bump(IndexKind::Node, cluster, node, t, w);
        }
    }

    fn bump(&mut self, kind: IndexKind, a: &str, b: &str, t: UnixSecs, windows: &Windows) {
        // The common case, a known entry whose latest sighting is this one or later, or
        // less than a quantum before this one, changes nothing and allocates nothing:
        // every sighting of a running image would otherwise rewrite its four entries (and
        // the store write them) at every commit.
        let found = self.slot(kind, a, b);
        let prev = found.and_then(|slot| self.entries.get(&slot)).copied();
        if prev.is_some_and(|p| t >= p.last_seen && t - p.last_seen < quantum(windows)) {
            return;
        }
        let next = unseen_detect::step(prev, t, t, windows).state;
        if prev == Some(next) {
            return;
        }
        let slot = match (found, prev) {
            (Some(slot), Some(prev)) => {
                self.entries.insert(slot, next);
                if kind == IndexKind::Image && prev.episode_start != next.episode_start {
                    self.restart_image(slot.a, next.episode_start);
                }
                slot
            }
            _ => self.insert(kind, a, b, next),
        };
        self.mark_dirty(slot);
    }

    /// Sets an entry to what another writer committed (`None`: forgotten), without
    /// marking it changed: a replica learning another's changes from a shared log.
    pub fn set_committed(&mut self, key: IndexKey, state: Option<KeyState>) {
        let found = self
            .slot(key.kind, &key.a, &key.b)
            .filter(|slot| self.entries.contains_key(slot));
        match (found, state) {
            (Some(slot), Some(next)) => {
                if let Some(prev) = self.entries.insert(slot, next) {
                    if key.kind == IndexKind::Image && prev.episode_start != next.episode_start {
                        self.restart_image(slot.a, next.episode_start);
                    }
                }
            }
            (None, Some(next)) => {
                self.insert(key.kind, &key.a, &key.b, next);
            }
            (Some(slot), None) => {
                self.remove(slot);
            }
            (None, None) => {}
        }
    }

    /// Forgets entries whose latest sighting is more than B − R before `newest`: they
    /// can no longer make anything known. Returns how many.
    pub fn forget(&mut self, newest: UnixSecs, windows: &Windows) -> usize {
        let doomed: Vec<Slot> = self
            .entries
            .iter()
            .filter(|(_, s)| unseen_detect::episode::forgettable(s, newest, windows))
            .map(|(slot, _)| *slot)
            .collect();
        for &slot in &doomed {
            // Marked first: the mark holds the names the entry lets go of.
            self.mark_dirty(slot);
            self.remove(slot);
        }
        doomed.len()
    }
}

/// Risk modifiers, added to the rule's score in default mode (strict mode keeps the
/// seed's score). The result is clamped to 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskModifiers {
    pub fleet: i32,
    pub cluster: i32,
    pub node: i32,
    pub registry_new: i32,
    pub look_alike: i32,
    pub new_node: i32,
}

impl Default for RiskModifiers {
    fn default() -> Self {
        RiskModifiers {
            fleet: 30,
            cluster: 10,
            node: -10,
            registry_new: 20,
            look_alike: 40,
            new_node: 0,
        }
    }
}

impl RiskModifiers {
    /// The score of an episode with `novelty`, from the rule's `base`.
    pub fn score(&self, base: u32, novelty: &Novelty) -> u32 {
        let mut score = i64::from(base);
        score += i64::from(match novelty.scope {
            Scope::Fleet => self.fleet,
            Scope::Cluster => self.cluster,
            Scope::Node => self.node,
        });
        if novelty.registry_new {
            score += i64::from(self.registry_new);
        }
        if novelty.look_alike.is_some() {
            score += i64::from(self.look_alike);
        }
        if novelty.new_node {
            score += i64::from(self.new_node);
        }
        score.clamp(1, 100) as u32
    }
}

/// The triage settings (`[triage]` in the config): grouping windows and risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriageSettings {
    /// Further episodes of a fleet- or cluster-new image join its incident for this long
    /// after the incident's first member (seconds). Also how long a new node's incident
    /// takes the node's images.
    pub rollout_window: u64,
    /// Node-scope episodes are gathered into one digest per cluster and window (seconds,
    /// aligned to the Unix epoch, so 24 h windows are UTC days).
    pub digest_window: u64,
    pub risk: RiskModifiers,
    /// A risk object whose findings' scores add up past this within `risk_window` raises
    /// a `risk_threshold` incident (`crate::risk`); 0 turns it off.
    pub risk_threshold: u32,
    /// The rolling window of the risk sum (seconds).
    pub risk_window: u64,
}

impl Default for TriageSettings {
    fn default() -> Self {
        TriageSettings {
            rollout_window: 15 * 60,
            digest_window: 86_400,
            risk: RiskModifiers::default(),
            risk_threshold: 100,
            risk_window: 86_400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixSecs = 1_700_000_000;

    fn key(cluster: &str, node: &str, image: &str) -> Key {
        Key {
            host: node.into(),
            cluster: cluster.into(),
            node: node.into(),
            image: image.into(),
        }
    }

    #[test]
    fn scope_follows_where_the_image_ran_within_the_gap() {
        let w = Windows::default();
        let mut index = Index::default();
        let nginx = "docker.io/library/nginx";
        let first = key("prod", "n1", nginx);
        let n = index.novelty(&first, T, &w);
        assert_eq!(n.scope, Scope::Fleet);
        assert!(n.registry_new && n.new_node);
        index.observe(&first, T, &w);
        // Same second, another node: the image is known now.
        let n = index.novelty(&key("prod", "n2", nginx), T, &w);
        assert_eq!((n.scope, n.registry_new), (Scope::Node, false));
        // Another cluster.
        assert_eq!(
            index
                .novelty(&key("staging", "s1", nginx), T + 60, &w)
                .scope,
            Scope::Cluster
        );
        // Past the gap nothing is known any more.
        let later = T + w.gap() as i64 + 1;
        assert_eq!(
            index.novelty(&key("prod", "n2", nginx), later, &w).scope,
            Scope::Fleet
        );
        assert_eq!(
            index
                .novelty(&key("prod", "n2", nginx), later - 1, &w)
                .scope,
            Scope::Node
        );
    }

    #[test]
    fn look_alikes_only_for_fleet_new_images() {
        let w = Windows::default();
        let mut index = Index::default();
        index.observe(&key("prod", "n1", "docker.io/library/nginx"), T, &w);
        // Run for less than R: not yet an image a typosquat would imitate.
        let n = index.novelty(&key("prod", "n2", "docker.io/library/ngnix"), T + 10, &w);
        assert_eq!((n.scope, n.look_alike), (Scope::Fleet, None));
        let later = T + w.recent as i64;
        index.observe(&key("prod", "n1", "docker.io/library/nginx"), later, &w);
        let n = index.novelty(&key("prod", "n2", "docker.io/library/ngnix"), later, &w);
        assert_eq!(n.scope, Scope::Fleet);
        assert_eq!(n.look_alike.as_deref(), Some("docker.io/library/nginx"));
        assert!(!n.registry_new);
        let n = index.novelty(&key("prod", "n2", "docker.io/library/redis"), later, &w);
        assert_eq!(n.look_alike, None);
        // Forgotten images are no look-alikes; the length index follows.
        let gone = later + w.gap() as i64 + 1;
        index.forget(gone, &w);
        let n = index.novelty(&key("prod", "n2", "docker.io/library/ngnix"), gone, &w);
        assert_eq!(n.look_alike, None);
        assert!(index.by_length.is_empty());
    }

    proptest::proptest! {
        /// The length buckets and the run starts they keep are only a shortcut: the
        /// look-alike is the one a search of every known image gives, whatever the order
        /// of the sightings (late ones, returns after the gap, forgetting).
        #[test]
        fn look_alikes_are_those_of_a_search_of_every_image(
            steps in proptest::collection::vec((0usize..4, 0i64..8, 0u8..6), 1..40),
        ) {
            let w = Windows::default();
            let images = ["docker.io/acme/api", "docker.io/acme/apj", "docker.io/acme/aqi", "docker.io/acme/ap"];
            let hour = w.recent as i64;
            let mut index = Index::default();
            for (image, at, action) in steps {
                // Times in hours, some of them past the gap of others.
                let t = T + at * hour + if action == 5 { w.gap() as i64 } else { 0 };
                let probe = key("prod", "n", images[image]);
                if action == 0 {
                    index.forget(t, &w);
                    continue;
                }
                let fast = index.novelty(&probe, t, &w).look_alike;
                let established: Vec<&str> = images
                    .iter()
                    .copied()
                    .filter(|i| {
                        index.get(IndexKind::Image, i, "").is_some_and(|s| {
                            known(Some(s), t, &w) && t.saturating_sub(s.episode_start) >= hour
                        })
                    })
                    .collect();
                let scope = index.novelty(&probe, t, &w).scope;
                let slow = (scope == Scope::Fleet)
                    .then(|| look_alike(images[image], established))
                    .flatten()
                    .map(str::to_string);
                proptest::prop_assert_eq!(fast, slow);
                index.observe(&probe, t, &w);
            }
        }
    }

    /// A store writes the index a chunk at a time from the slots there were when it
    /// started ([`Index::slots`]), while entries are forgotten and their names' ids go to
    /// new strings. An old slot then names nothing, or an entry there is now, and no two
    /// old slots name the same entry: the chunks never write an entry twice nor one that
    /// is gone.
    #[test]
    fn old_slots_name_current_entries_once_after_their_ids_are_reused() {
        let w = Windows::default();
        let later = T + w.gap() as i64 + 1;
        let mut reused = 0;
        // Which freed id goes to which new string depends on the order they are freed
        // and taken, which follows the iteration order of the index's hash maps, seeded
        // anew for each index: fleets of 1 to 8 images, then as many others, cover cases
        // where an old slot's ids all went to a new entry's names in about six rounds of
        // seven (83 of 96 measured), so 16 rounds miss them all less than once in 10^13
        // runs.
        for n in (1..=8).cycle().take(8 * 16) {
            let mut index = Index::default();
            for i in 0..n {
                index.observe(
                    &key("prod", &format!("n{i}"), &format!("ghcr.io/acme/app-{i}")),
                    T,
                    &w,
                );
            }
            index.clear_dirty();
            let old = index.slots();
            assert_eq!(index.forget(later, &w), old.len());
            index.clear_dirty();
            for i in 0..n {
                index.observe(
                    &key("stage", &format!("m{i}"), &format!("quay.io/o/db-{i}")),
                    later,
                    &w,
                );
            }
            index.clear_dirty();
            let named: Vec<IndexKey> = old
                .iter()
                .filter_map(|&slot| index.entry(slot))
                .map(|(k, state)| {
                    assert_eq!(index.get(k.kind, k.a, k.b), Some(&state));
                    k.to_owned()
                })
                .collect();
            let distinct: HashSet<&IndexKey> = named.iter().collect();
            assert_eq!(distinct.len(), named.len(), "{n} images: {named:?}");
            assert!(named
                .iter()
                .all(|k| k.a == "stage" || k.a.starts_with("quay.io")));
            reused += named.len();
        }
        assert!(
            reused > 0,
            "no old slot named a new entry: the case is not tested"
        );
    }

    #[test]
    fn dirty_entries_are_reported_once_and_unchanged_sightings_are_free() {
        let w = Windows::default();
        let mut index = Index::default();
        let k = key("prod", "n1", "ghcr.io/acme/api");
        index.observe(&k, T, &w);
        let dirty = index.take_dirty();
        assert_eq!(dirty.len(), 4);
        index.observe(&k, T, &w);
        assert!(index.take_dirty().is_empty());
        for (k, _) in &dirty {
            assert_eq!(IndexKey::decode(&k.encode()).as_ref(), Some(k));
        }
        assert_eq!(index.forget(T + w.gap() as i64 + 1, &w), 4);
        assert!(index.take_dirty().iter().all(|(_, s)| s.is_none()));
    }

    #[test]
    fn risk_modifiers_move_the_score_within_bounds() {
        let r = RiskModifiers::default();
        let novelty = |scope, registry_new, look: bool| Novelty {
            scope,
            registry_new,
            look_alike: look.then(|| "x".to_string()),
            new_node: false,
        };
        assert_eq!(r.score(20, &novelty(Scope::Node, false, false)), 10);
        assert_eq!(r.score(20, &novelty(Scope::Cluster, false, false)), 30);
        assert_eq!(r.score(20, &novelty(Scope::Fleet, false, false)), 50);
        assert_eq!(r.score(20, &novelty(Scope::Fleet, true, true)), 100);
        let harsh = RiskModifiers { node: -50, ..r };
        assert_eq!(harsh.score(20, &novelty(Scope::Node, false, false)), 1);
    }
}
