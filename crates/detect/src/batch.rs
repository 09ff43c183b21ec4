//! Batch evaluation at time T (contract section 3).
//!
//! current = keys with a point in [T − C, T); baseline = keys with a point in
//! [T − B, T − R); findings = current \ baseline. One pass, per-key state only, any
//! input order.
//!
//! The per-key state is what a scan's memory is made of (millions of keys), so it is
//! compact: each key part is interned once ([`Interner`]) and a key is four `u32` ids;
//! times are `u32` offsets from the window edges; the entries live in one `Vec`, indexed
//! by a table of `u32` positions. 36 bytes per key plus ~5 to 10 bytes of table. A key
//! whose numbers do not fit (a count over 2^30, a time more than 136 years from the
//! windows) moves to a full-width side table, so no input is out of range.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use unseen_model::{Context, OwnedContext, UnixSecs, Windows};
use unseen_normalize::{Key, KeyRef};

use crate::intern::{Interner, Recent};
use crate::Detection;
use unseen_normalize::quick_hash::{quick_hash, quick_hash_from};

/// Where a point fell relative to the windows; returned so callers can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In [T − C, T) only.
    Current,
    /// In [T − B, T − R) only.
    Baseline,
    /// In both (the windows overlap in [T − C, T − R)).
    Both,
    /// Before T − B: in no window. Kept only as `previous_seen` evidence.
    BeforeWindows,
    /// At or after T: in no window.
    AfterT,
}

/// `Entry::count` bits above the count.
const IN_BASELINE: u32 = 1 << 31;
/// The entry's numbers are in [`BatchScan::wide`].
const WIDE: u32 = 1 << 30;
/// Largest count kept in an entry.
const MAX_COMPACT_COUNT: u32 = WIDE - 1;

/// One tracked key and its aggregate, compact form.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Interned host, cluster, node, image.
    key: [u32; 4],
    /// Interned `host.name` evidence plus one; 0 when none was seen.
    host_name: u32,
    /// Points in the current window, with the [`IN_BASELINE`] and [`WIDE`] flags.
    count: u32,
    /// T − (first point in the current window), when the count is not 0.
    first: u32,
    /// T − (latest point in the current window), when the count is not 0.
    last: u32,
    /// (T − B) − (latest point before T − B); 0 when there is none (it is at least 1).
    before: u32,
}

/// The aggregate of an entry whose numbers do not fit [`Entry`].
#[derive(Debug, Clone, Copy, Default)]
struct Wide {
    current_count: u64,
    current_first: UnixSecs,
    current_last: UnixSecs,
    before_last: Option<UnixSecs>,
}

/// One run of the rule at time `at`.
#[derive(Debug)]
pub struct BatchScan {
    at: UnixSecs,
    current_start: UnixSecs,
    baseline_start: UnixSecs,
    baseline_end: UnixSecs,
    strings: Interner,
    /// Ids of recently seen key parts (host, cluster, node, image) and `host.name`s.
    recent: [Recent; 5],
    /// Entries of recently seen keys plus one, by [`key_slot`]; 0 for none. Checked
    /// against the key's text, so a slot holding another key is only a miss.
    recent_keys: Box<[u32]>,
    entries: Vec<Entry>,
    /// Positions in `entries`, by the hash of their key ids.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Full-width aggregates, by position in `entries`; almost always empty.
    wide: HashMap<u32, Wide>,
    /// The evidence of the first point in the current window of keys not (yet) known to
    /// be in the baseline, by position in `entries`. Only such keys can be findings, and
    /// only their points in the recent window reach here, so in a file sorted by time it
    /// holds little more than the findings: the key table stays compact.
    evidence: HashMap<u32, Evidence>,
}

/// What a finding says about its opening point beyond the key.
#[derive(Debug, Clone)]
struct Evidence {
    time: UnixSecs,
    context: OwnedContext,
    image_raw: Option<String>,
}

impl BatchScan {
    pub fn new(windows: Windows, at: UnixSecs) -> Self {
        Self::with_cache_slots(windows, at, RECENT_KEYS, RECENT_PARTS)
    }

    /// [`BatchScan::new`] with caches of `keys` and `parts` slots (powers of two): tests
    /// make them tiny, so that every lookup meets another key's slot.
    fn with_cache_slots(windows: Windows, at: UnixSecs, keys: usize, parts: usize) -> Self {
        // Windows are at most u64 seconds; saturate rather than wrap for absurd inputs.
        let back = |d: u64| at.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX));
        BatchScan {
            at,
            current_start: back(windows.current),
            baseline_start: back(windows.baseline),
            baseline_end: back(windows.recent),
            strings: Interner::default(),
            recent: std::array::from_fn(|_| Recent::new(parts)),
            recent_keys: vec![0; keys].into_boxed_slice(),
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            wide: HashMap::new(),
            evidence: HashMap::new(),
        }
    }

    pub fn placement(&self, t: UnixSecs) -> Placement {
        if t >= self.at {
            return Placement::AfterT;
        }
        let current = t >= self.current_start;
        let baseline = t >= self.baseline_start && t < self.baseline_end;
        match (current, baseline) {
            (true, true) => Placement::Both,
            (true, false) => Placement::Current,
            (false, true) => Placement::Baseline,
            // `Windows::new` ensures R ≤ C ≤ B, so a point in neither window is older
            // than T − B.
            (false, false) => Placement::BeforeWindows,
        }
    }

    /// Records one point of `key` at `t`.
    #[inline]
    pub fn observe(&mut self, key: KeyRef<'_>, t: UnixSecs, host_name: Option<&str>) -> Placement {
        self.observe_with(key, t, host_name, None)
    }

    /// [`BatchScan::observe`], keeping the point's evidence (its context attributes and
    /// the image name as the point said it) for the finding the key may become.
    pub fn observe_with(
        &mut self,
        key: KeyRef<'_>,
        t: UnixSecs,
        host_name: Option<&str>,
        evidence: Option<(&Context<'_>, &str)>,
    ) -> Placement {
        let placement = self.placement(t);
        if placement == Placement::AfterT {
            return placement;
        }
        let at = self.entry(&key);
        if let (Placement::Current, Some((context, raw))) = (placement, evidence) {
            if self.entries[at].count & IN_BASELINE == 0 && self.before_current(at, t) {
                self.keep_evidence(at as u32, t, context, raw, &key.image);
            }
        }
        if let Placement::Current | Placement::Both = placement {
            self.add_current(at, t);
            if self.entries[at].host_name == 0 {
                if let Some(h) = host_name.filter(|h| !h.is_empty()) {
                    let id = self.recent[4].intern(&mut self.strings, h);
                    // Ids stay below u32::MAX (the interner's limit), so this cannot wrap.
                    self.entries[at].host_name = id + 1;
                }
            }
        }
        match placement {
            Placement::Baseline | Placement::Both => self.entries[at].count |= IN_BASELINE,
            Placement::BeforeWindows => self.add_before(at, t),
            _ => {}
        }
        placement
    }

    /// Whether `t` is before every current-window point of entry `at` so far (or it has
    /// none): only then can the point's evidence be the finding's. Answered from the
    /// entry itself, so that the many later points of a key cost no lookup of its
    /// evidence.
    #[inline]
    fn before_current(&self, at: usize, t: UnixSecs) -> bool {
        let entry = &self.entries[at];
        if entry.count & WIDE == 0 {
            let offset = self.at.checked_sub(t).and_then(|d| u32::try_from(d).ok());
            return entry.count & MAX_COMPACT_COUNT == 0
                || offset.is_none_or(|offset| offset > entry.first);
        }
        self.wide
            .get(&(at as u32))
            .is_none_or(|w| w.current_count == 0 || t < w.current_first)
    }

    /// Keeps the evidence of the earliest current-window point of entry `at`.
    #[cold]
    fn keep_evidence(
        &mut self,
        at: u32,
        t: UnixSecs,
        context: &Context<'_>,
        raw: &str,
        image: &str,
    ) {
        let make = || Evidence {
            time: t,
            context: OwnedContext::new(context),
            image_raw: (raw != image).then(|| raw.to_string()),
        };
        match self.evidence.get_mut(&at) {
            Some(kept) if kept.time <= t => {}
            Some(kept) => *kept = make(),
            None => {
                self.evidence.insert(at, make());
            }
        }
    }

    /// Calls `f(cluster, node, image)` for every key with a point in the baseline window:
    /// what the fleet knew before the recent window, for a finding's novelty scope.
    pub fn for_each_baseline_key(&self, mut f: impl FnMut(&str, &str, &str)) {
        for e in self.entries.iter().filter(|e| e.count & IN_BASELINE != 0) {
            f(
                self.strings.get(e.key[1]),
                self.strings.get(e.key[2]),
                self.strings.get(e.key[3]),
            );
        }
    }

    /// The position of `key`'s entry, added if new.
    #[inline]
    fn entry(&mut self, key: &KeyRef<'_>) -> usize {
        // In default mode the host is the node, the same text.
        let host_is_node = std::ptr::eq(key.host, key.node) || key.host == key.node;
        let slot = key_slot(key) & (self.recent_keys.len() - 1);
        if let Some(at) = self.recent_keys[slot].checked_sub(1) {
            let at = at as usize;
            let [host, cluster, node, image] = self.entries[at].key;
            let text = |id| self.strings.bytes(id);
            if text(node) == key.node.as_bytes()
                && text(image) == key.image.as_bytes()
                && text(cluster) == key.cluster.as_bytes()
                && if host_is_node {
                    host == node
                } else {
                    text(host) == key.host.as_bytes()
                }
            {
                return at;
            }
        }
        let at = self.find_or_add(key, host_is_node);
        // Entries are indexed by u32 below u32::MAX (`find_or_add`): + 1 does not wrap.
        self.recent_keys[slot] = at as u32 + 1;
        at
    }

    /// [`BatchScan::entry`] without the cache of recent keys.
    fn find_or_add(&mut self, key: &KeyRef<'_>, host_is_node: bool) -> usize {
        let strings = &mut self.strings;
        let [host, cluster, node, image, _] = &mut self.recent;
        let node_id = node.intern(strings, key.node);
        let host_id = if host_is_node {
            node_id
        } else {
            host.intern(strings, key.host)
        };
        let ids = [
            host_id,
            cluster.intern(strings, key.cluster),
            node_id,
            image.intern(strings, &key.image),
        ];
        let hash = hash_ids(&self.hasher, &ids);
        let entries = &mut self.entries;
        if let Some(&at) = self.index.find(hash, |&at| entries[at as usize].key == ids) {
            return at as usize;
        }
        let at = u32::try_from(entries.len())
            .ok()
            .filter(|&at| at < u32::MAX)
            .expect("over 4 billion keys: more than one scan can track");
        entries.push(Entry {
            key: ids,
            host_name: 0,
            count: 0,
            first: 0,
            last: 0,
            before: 0,
        });
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, at, |&at| hash_ids(hasher, &entries[at as usize].key));
        at as usize
    }

    /// A point in the current window.
    fn add_current(&mut self, at: usize, t: UnixSecs) {
        let entry = &mut self.entries[at];
        if entry.count & WIDE == 0 {
            let count = entry.count & MAX_COMPACT_COUNT;
            // t is in [T − C, T): the offset is at least 1.
            let offset = self.at.checked_sub(t).and_then(|d| u32::try_from(d).ok());
            if let (Some(offset), true) = (offset, count < MAX_COMPACT_COUNT) {
                if count == 0 {
                    entry.first = offset;
                    entry.last = offset;
                } else {
                    entry.first = entry.first.max(offset);
                    entry.last = entry.last.min(offset);
                }
                entry.count += 1;
                return;
            }
        }
        let wide = self.widen(at);
        if wide.current_count == 0 || t < wide.current_first {
            wide.current_first = t;
        }
        if wide.current_count == 0 || t > wide.current_last {
            wide.current_last = t;
        }
        wide.current_count += 1;
    }

    /// A point before T − B.
    fn add_before(&mut self, at: usize, t: UnixSecs) {
        let entry = &mut self.entries[at];
        if entry.count & WIDE == 0 {
            // t < T − B: the offset is at least 1 (0 means "none"; only windows built
            // without `Windows::new`, R ≥ B, could give 0, and those go wide).
            let offset = self
                .baseline_start
                .checked_sub(t)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|&d| d != 0);
            if let Some(offset) = offset {
                entry.before = match entry.before {
                    0 => offset,
                    before => before.min(offset),
                };
                return;
            }
        }
        let wide = self.widen(at);
        wide.before_last = Some(wide.before_last.map_or(t, |b| b.max(t)));
    }

    /// The full-width aggregate of entry `at`, moved there if it is still compact.
    fn widen(&mut self, at: usize) -> &mut Wide {
        let entry = self.entries[at];
        let wide = if entry.count & WIDE == 0 {
            self.entries[at].count = (entry.count & IN_BASELINE) | WIDE;
            Some(self.decode(&entry))
        } else {
            None
        };
        let at = at as u32; // entries are indexed by u32
        match wide {
            Some(wide) => self.wide.entry(at).insert(wide).into_mut(),
            None => self
                .wide
                .get_mut(&at)
                .expect("a wide entry has a wide aggregate"),
        }
    }

    /// The aggregate of a compact entry at full width.
    fn decode(&self, entry: &Entry) -> Wide {
        let count = entry.count & MAX_COMPACT_COUNT;
        Wide {
            current_count: count.into(),
            current_first: self.at - i64::from(entry.first),
            current_last: self.at - i64::from(entry.last),
            before_last: (entry.before != 0).then(|| self.baseline_start - i64::from(entry.before)),
        }
    }

    /// Keys tracked so far.
    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    /// The findings, ordered by first sighting, then key.
    pub fn finish(mut self) -> Vec<Detection> {
        let mut evidence = std::mem::take(&mut self.evidence);
        let mut out: Vec<Detection> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.count & IN_BASELINE == 0)
            .filter_map(|(at, e)| {
                let a = match e.count & WIDE {
                    0 => self.decode(e),
                    _ => self.wide[&(at as u32)],
                };
                let kept = evidence.remove(&(at as u32));
                (a.current_count > 0).then(|| Detection {
                    key: Key {
                        host: self.strings.get(e.key[0]).to_string(),
                        cluster: self.strings.get(e.key[1]).to_string(),
                        node: self.strings.get(e.key[2]).to_string(),
                        image: self.strings.get(e.key[3]).to_string(),
                    },
                    first_seen: a.current_first,
                    last_seen: a.current_last,
                    count: a.current_count,
                    previous_seen: a.before_last,
                    // A batch run reports what it sees at T; whether a point arrived late is
                    // unknowable from history files.
                    late: false,
                    host_name: e
                        .host_name
                        .checked_sub(1)
                        .map(|id| self.strings.get(id).to_string()),
                    context: kept.as_ref().map(|k| k.context.clone()).unwrap_or_default(),
                    image_raw: kept.and_then(|k| k.image_raw),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.first_seen, &a.key).cmp(&(b.first_seen, &b.key)));
        out
    }
}

/// Slots of [`BatchScan::recent_keys`]: more than the distinct keys of a typical fleet's
/// export (tens of thousands of containers would be more, and only slower).
const RECENT_KEYS: usize = 1 << 14;

/// Slots of each [`Recent`] cache of key parts.
const RECENT_PARTS: usize = 1 << 12;

/// The slot of a key in [`BatchScan::recent_keys`] (before masking): a cheap hash of its
/// node and image. Collisions cost a miss, never a wrong entry.
#[inline]
fn key_slot(key: &KeyRef<'_>) -> usize {
    // Not the cluster: a fleet has few, and the slot is checked against it anyway.
    quick_hash_from(quick_hash(key.node.as_bytes()), key.image.as_bytes()) as usize
}

#[inline]
fn hash_ids(hasher: &DefaultHashBuilder, ids: &[u32; 4]) -> u64 {
    let pair = |a: u32, b: u32| u64::from(a) | u64::from(b) << 32;
    hasher.hash_one((pair(ids[0], ids[1]), pair(ids[2], ids[3])))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixSecs = 1_700_000_000;

    fn key(image: &str) -> KeyRef<'_> {
        KeyRef {
            host: "n",
            cluster: "c",
            node: "n",
            image: image.into(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// With one-slot caches every lookup meets the previous key's slot: what the
        /// caches return must still be checked against the text.
        #[test]
        fn tiny_caches_change_nothing(
            points in proptest::collection::vec(
                (0usize..4, 0usize..3, 0usize..4, 0usize..3, -40i64 * 86_400..10, proptest::option::of(0usize..3)),
                0..100,
            )
        ) {
            let hosts = ["n", "node-1", "ip-10-0-0-1.eu-west-1.compute.internal", "other"];
            let clusters = ["c", "prod", "prod-eu-west-1-01"];
            let nodes = ["n", "node-1", "ip-10-0-0-1.eu-west-1.compute.internal", "ip-10-0-0-2.eu-west-1.compute.internal"];
            let images = ["i", "registry/team-1/service-1", "registry/team-1/service-2"];
            let mut big = BatchScan::new(Windows::default(), T);
            let mut tiny = BatchScan::with_cache_slots(Windows::default(), T, 1, 1);
            for (h, c, n, i, offset, vm) in points {
                // Default mode passes the node's own `&str` as the host.
                let node = nodes[n];
                let host = if h == 0 { node } else { hosts[h] };
                let key = KeyRef { host, cluster: clusters[c], node, image: images[i].into() };
                let vm = vm.map(|v| hosts[v]);
                proptest::prop_assert_eq!(big.observe(key.clone(), T + offset, vm), tiny.observe(key, T + offset, vm));
            }
            proptest::prop_assert_eq!(big.keys(), tiny.keys());
            proptest::prop_assert_eq!(big.finish(), tiny.finish());
        }
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 36);
    }

    #[test]
    fn a_count_over_the_compact_range_goes_wide() {
        let mut scan = BatchScan::new(Windows::default(), T);
        scan.observe(key("i"), T - 10, Some("vm"));
        scan.observe(key("i"), T - 32 * 86_400, None);
        // As if MAX_COMPACT_COUNT − 1 points more had been seen.
        scan.entries[0].count += MAX_COMPACT_COUNT - 2;
        scan.observe(key("i"), T - 20, None);
        assert!(scan.wide.is_empty());
        scan.observe(key("i"), T - 5, None);
        assert_eq!(scan.wide.len(), 1);
        scan.observe(key("i"), T - 30, None);
        scan.observe(key("i"), T - 31 * 86_400, None);
        let d = scan.finish();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].count, u64::from(MAX_COMPACT_COUNT) + 2);
        assert_eq!((d[0].first_seen, d[0].last_seen), (T - 30, T - 5));
        assert_eq!(d[0].previous_seen, Some(T - 31 * 86_400));
        assert_eq!(d[0].host_name.as_deref(), Some("vm"));
    }

    #[test]
    fn times_far_from_the_windows_go_wide() {
        let century: i64 = 100 * 365 * 86_400;
        // Points in [T − 2.5 centuries, T) are current and not baseline.
        let w = Windows::new(
            3 * century as u64,
            4 * century as u64,
            5 * century as u64 / 2,
        )
        .unwrap();
        let mut scan = BatchScan::new(w, T);
        scan.observe(key("far"), T - 2 * century, None);
        scan.observe(key("far"), T - 10, None);
        scan.observe(key("old"), T - 10, None);
        scan.observe(key("old"), i64::MIN, None);
        scan.observe(key("old"), T - 5 * century, None);
        scan.observe(key("near"), T - 10, None);
        scan.observe(key("base"), T - 3 * century, None);
        assert_eq!(scan.wide.len(), 3);
        let d = scan.finish();
        let got: Vec<_> = d
            .iter()
            .map(|d| {
                (
                    d.key.image.as_str(),
                    d.first_seen,
                    d.last_seen,
                    d.count,
                    d.previous_seen,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("far", T - 2 * century, T - 10, 2, None),
                ("near", T - 10, T - 10, 1, None),
                ("old", T - 10, T - 10, 1, Some(T - 5 * century)),
            ]
        );
    }
}
