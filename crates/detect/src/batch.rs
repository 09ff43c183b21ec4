//! Batch evaluation at time T (contract section 3).
//!
//! current = keys with a point in [T − C, T); baseline = keys with a point in
//! [T − B, T − R); findings = current \ baseline. One pass, per-key state only, any
//! input order.
//!
//! The per-key state is what a scan's memory is made of (millions of keys), so it is
//! compact: each key part is interned once ([`Interner`]) and a key is four `u32` ids;
//! times are `u32` offsets from the window edges; the entries live in chunks of 64 Ki
//! ([`Chunks`]), indexed by a [`KeyTable`] of 8-byte slots found by the hash of the key's
//! text. 36 bytes per key plus 10 to 21 bytes of table. A key whose numbers do not fit (a count over 2^30, a time
//! more than 136 years from the windows) moves to a full-width side table, so no input is
//! out of range.
//!
//! A scan of a large file is cut into ranges, each scanned on its own thread into its own
//! `BatchScan`, then [merged](BatchScan::merge) in file order: every aggregate here is a
//! minimum, a maximum, a sum or an "or", so the merge is the scan of the whole.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

use hashbrown::{DefaultHashBuilder, HashMap};
use unseen_model::{Context, OwnedContext, UnixSecs, Windows};
use unseen_normalize::{Key, KeyRef};

use crate::intern::{Interner, Recent};
use crate::table::{prefetch, Chunks, KeyTable};
use crate::Detection;
use unseen_normalize::image::{tag_matters, CanonicalMemo};
use unseen_normalize::quick_hash::same_bytes;

/// A key of the baseline window ([`BatchScan::for_each_baseline_key_marked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineKey<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub image: &'a str,
    /// Index the image (and its registry).
    pub index_image: bool,
    /// Index the node in its cluster.
    pub index_node: bool,
    /// Index the image in its cluster.
    pub index_cluster_image: bool,
}

impl<'a> BaselineKey<'a> {
    /// A key all of whose entries are to be indexed.
    pub fn whole(cluster: &'a str, node: &'a str, image: &'a str) -> Self {
        BaselineKey {
            cluster,
            node,
            image,
            index_image: true,
            index_node: true,
            index_cluster_image: true,
        }
    }
}

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

/// A table id with this bit set is an alias's.
const ALIAS: u32 = 1 << 31;

/// Another spelling of a key's image (`nginx` for `docker.io/library/nginx`, a name with
/// its tag): the key's entry, and the spelling interned.
#[derive(Debug, Clone, Copy)]
struct Alias {
    entry: u32,
    image: u32,
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
    /// Ids of recently seen key parts (host, cluster, node, image) and `host.name`s: a
    /// new key's parts are mostly known ones.
    recent: [Recent; 5],
    entries: Chunks<Entry>,
    /// Positions in `entries`, and of `aliases` (with [`ALIAS`] set), by the hash of their
    /// key's text ([`BatchScan::hash_key`]).
    table: KeyTable,
    /// Spellings of keys' images other than the canonical one, seen in points.
    aliases: Vec<Alias>,
    /// Seeded per scan, so that no input can choose keys whose hashes collide.
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

    /// [`BatchScan::new`] with a key table of `keys` slots to start with and caches of
    /// `parts` slots (powers of two): tests make them tiny, so that the table grows and
    /// every part lookup meets another part's slot.
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
            entries: Chunks::default(),
            table: KeyTable::with_slots(keys),
            aliases: Vec::new(),
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
        let hash = self.hash_key(&key);
        self.observe_hashed(key, hash, t, host_name, evidence)
    }

    /// The hash of `key` for [`BatchScan::observe_hashed`] and [`BatchScan::prefetch`].
    #[inline]
    pub fn hash_key(&self, key: &KeyRef<'_>) -> u64 {
        let host = (!host_is_node(key)).then_some(key.host.as_bytes());
        self.key_hash(
            key.cluster.as_bytes(),
            key.node.as_bytes(),
            key.image.as_bytes(),
            host,
        )
    }

    /// Asks the CPU to bring the table slot of a key of hash `hash` into the cache, so that
    /// its lookup, a few points later, does not wait for memory: with hundreds of
    /// thousands of keys interleaved, that wait is most of a lookup.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(hash);
    }

    /// Asks the CPU to bring the entry of the first key in the table under `hash` into the
    /// cache (most likely the key's own), after a [`BatchScan::prefetch`] has brought its
    /// slot: the entry is the lookup's second trip to memory.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        if let Some(id) = self.table.find(hash, |_| true) {
            if let Some(entry) = self.entries.get(self.resolve(id) as usize) {
                prefetch(std::ptr::from_ref(entry).cast(), size_of::<Entry>());
            }
        }
    }

    /// [`BatchScan::observe_with`] for a key whose hash ([`BatchScan::hash_key`]) is known.
    pub fn observe_hashed(
        &mut self,
        key: KeyRef<'_>,
        hash: u64,
        t: UnixSecs,
        host_name: Option<&str>,
        evidence: Option<(&Context<'_>, &str)>,
    ) -> Placement {
        self.observe_raw(key, hash, None, None, t, host_name, evidence)
    }

    /// [`BatchScan::observe_hashed`] for a key whose image is as the point gave it, with
    /// the point's image tag: `memo` makes it canonical (default mode; `None` takes it as
    /// it is, strict mode), but only the first time the key is seen spelled so. After that
    /// the spelling finds the key's entry by itself (an alias in the table when it is not
    /// the canonical one), so a known key costs one lookup and no parse of its image.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_raw(
        &mut self,
        key: KeyRef<'_>,
        hash: u64,
        tag: Option<&str>,
        memo: Option<&mut CanonicalMemo>,
        t: UnixSecs,
        host_name: Option<&str>,
        evidence: Option<(&Context<'_>, &str)>,
    ) -> Placement {
        let placement = self.placement(t);
        if placement == Placement::AfterT {
            return placement;
        }
        let at = self.entry_raw(&key, hash, tag, memo);
        if let (Placement::Current, Some((context, raw))) = (placement, evidence) {
            if self.entries[at].count & IN_BASELINE == 0 && self.before_current(at, t) {
                self.keep_evidence(at as u32, t, context, raw);
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
    fn keep_evidence(&mut self, at: u32, t: UnixSecs, context: &Context<'_>, raw: &str) {
        let image = self.strings.get(self.entries[at as usize].key[3]);
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

    /// [`BatchScan::for_each_baseline_key`], saying of each key which of its parts a
    /// consumer that indexes images, nodes and cluster images for the findings' novelty
    /// needs to index: each image once (every image may be a look-alike's original), each
    /// node in its cluster and each image in its cluster once, and those only for the
    /// nodes and images of keys that may be findings (the keys with no point in the
    /// baseline). The rest no finding reads, and a baseline of millions of keys would
    /// otherwise index hundreds of thousands of cluster images for a handful of findings.
    pub fn for_each_baseline_key_marked(&self, mut f: impl FnMut(&BaselineKey<'_>)) {
        let pair = |a: u32, b: u32| u64::from(a) << 32 | u64::from(b);
        // What the findings may read: their images, and their nodes in their clusters.
        let mut finding_images = vec![false; self.strings.len()];
        let mut finding_nodes = hashbrown::HashSet::new();
        for e in self.entries.iter().filter(|e| e.count & IN_BASELINE == 0) {
            let [_, cluster, node, image] = e.key;
            finding_images[image as usize] = true;
            finding_nodes.insert(pair(cluster, node));
        }
        let mut images = vec![false; self.strings.len()];
        let (mut nodes, mut cluster_images) =
            (hashbrown::HashSet::new(), hashbrown::HashSet::new());
        for e in self.entries.iter().filter(|e| e.count & IN_BASELINE != 0) {
            let [_, cluster, node, image] = e.key;
            let index_node =
                finding_nodes.contains(&pair(cluster, node)) && nodes.insert(pair(cluster, node));
            let index_cluster_image =
                finding_images[image as usize] && cluster_images.insert(pair(cluster, image));
            f(&BaselineKey {
                cluster: self.strings.get(cluster),
                node: self.strings.get(node),
                image: self.strings.get(image),
                index_image: !std::mem::replace(&mut images[image as usize], true),
                index_node,
                index_cluster_image,
            });
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

    /// The position of the entry of `key` (its image canonical), added if new.
    fn entry(&mut self, key: &KeyRef<'_>) -> usize {
        let hash = self.hash_key(key);
        self.entry_raw(key, hash, None, None)
    }

    /// The position of the entry of `key`, whose image is as a point gave it, under `hash`
    /// (its [`BatchScan::hash_key`]); added if new. The spelling is looked up first: the
    /// table holds each key under its canonical image, and under every other spelling
    /// seen of it as an alias. Only a spelling not seen before is made canonical by `memo`
    /// (with the point's `tag`). That the canonical image's entry is the key's is
    /// `canonical`'s idempotence: the canonical form of a canonical form, under any tag,
    /// is itself (property test in `unseen-normalize`).
    #[inline]
    fn entry_raw(
        &mut self,
        key: &KeyRef<'_>,
        hash: u64,
        tag: Option<&str>,
        memo: Option<&mut CanonicalMemo>,
    ) -> usize {
        let host_is_node = host_is_node(key);
        let (entries, strings, aliases) = (&self.entries, &self.strings, &self.aliases);
        let found = self.table.find(hash, |id| {
            let (at, image) = match id & ALIAS {
                0 => (id, entries[id as usize].key[3]),
                _ => {
                    let alias = &aliases[(id & !ALIAS) as usize];
                    (alias.entry, alias.image)
                }
            };
            let [host, cluster, node, _] = entries[at as usize].key;
            let is = |id, s: &str| same_bytes(strings.bytes(id), s.as_bytes());
            is(node, key.node)
                && is(image, &key.image)
                && is(cluster, key.cluster)
                && if host_is_node {
                    host == node
                } else {
                    is(host, key.host)
                }
        });
        if let Some(id) = found {
            return self.resolve(id) as usize;
        }
        self.entry_cold(key, hash, tag, memo, host_is_node)
    }

    /// [`BatchScan::entry_raw`] for a spelling of a key not seen before.
    #[cold]
    fn entry_cold(
        &mut self,
        key: &KeyRef<'_>,
        hash: u64,
        tag: Option<&str>,
        memo: Option<&mut CanonicalMemo>,
        host_is_node: bool,
    ) -> usize {
        let image = match memo {
            Some(memo) => memo.canonical(&key.image, tag),
            None => Cow::Borrowed(&*key.image),
        };
        if *image == *key.image {
            let at = self.add(key, host_is_node);
            self.table.insert(hash, at as u32);
            return at;
        }
        let canonical = KeyRef {
            image,
            ..key.clone()
        };
        let at = self.entry(&canonical);
        if tag_matters(&key.image) {
            // Its canonical form depends on the point's tag: no alias by the name alone.
            return at;
        }
        let image = self.recent[3].intern(&mut self.strings, &key.image);
        let alias = u32::try_from(self.aliases.len())
            .ok()
            .filter(|&a| a < ALIAS)
            .expect("over 2 billion spellings of keys: more than one scan can track");
        self.aliases.push(Alias {
            entry: at as u32,
            image,
        });
        self.table.insert(hash, alias | ALIAS);
        at
    }

    /// The entry of table id `id`: itself, or its alias's.
    #[inline]
    fn resolve(&self, id: u32) -> u32 {
        match id & ALIAS {
            0 => id,
            _ => self.aliases[(id & !ALIAS) as usize].entry,
        }
    }

    /// The hash of a key's text; `host` is `None` when it is the node.
    #[inline]
    fn key_hash(&self, cluster: &[u8], node: &[u8], image: &[u8], host: Option<&[u8]>) -> u64 {
        key_hash(&self.hasher, cluster, node, image, host)
    }

    /// Adds an entry for `key`, which has none.
    fn add(&mut self, key: &KeyRef<'_>, host_is_node: bool) -> usize {
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
        let at = u32::try_from(self.entries.len())
            .ok()
            .filter(|&at| at < ALIAS)
            .expect("over 2 billion keys: more than one scan can track");
        self.entries.push(Entry {
            key: ids,
            host_name: 0,
            count: 0,
            first: 0,
            last: 0,
            before: 0,
        });
        at as usize
    }

    /// Adds what `other`, a scan of the input after this one's, saw: afterwards this is
    /// the scan of both inputs, one after the other. Both must be runs at the same time
    /// with the same windows.
    pub fn merge(&mut self, mut other: BatchScan) {
        assert_eq!(
            (
                self.at,
                self.current_start,
                self.baseline_start,
                self.baseline_end
            ),
            (
                other.at,
                other.current_start,
                other.baseline_start,
                other.baseline_end
            ),
            "merging scans of different runs"
        );
        let mut their_evidence = std::mem::take(&mut other.evidence);
        for (theirs, e) in other.entries.iter().enumerate() {
            let text = |id| other.strings.get(id);
            let key = KeyRef {
                host: text(e.key[0]),
                cluster: text(e.key[1]),
                node: text(e.key[2]),
                image: text(e.key[3]).into(),
            };
            let at = self.entry(&key);
            let theirs = theirs as u32;
            let (mine, their) = (self.aggregate(at), other.aggregate(theirs as usize));
            let both = |a: Option<UnixSecs>, b: Option<UnixSecs>, pick: fn(i64, i64) -> i64| match (
                a, b,
            ) {
                (Some(a), Some(b)) => Some(pick(a, b)),
                (a, b) => a.or(b),
            };
            let current =
                |w: &Wide| (w.current_count > 0).then_some((w.current_first, w.current_last));
            let (first, last) = match (current(&mine), current(&their)) {
                (Some(m), Some(t)) => (m.0.min(t.0), m.1.max(t.1)),
                (m, t) => m.or(t).unwrap_or_default(),
            };
            let merged = Wide {
                current_count: mine.current_count + their.current_count,
                current_first: first,
                current_last: last,
                before_last: both(mine.before_last, their.before_last, i64::max),
            };
            let baseline = (self.entries[at].count | e.count) & IN_BASELINE;
            self.set_aggregate(at, merged, baseline);
            if self.entries[at].host_name == 0 {
                if let Some(id) = e.host_name.checked_sub(1) {
                    let id = self.recent[4].intern(&mut self.strings, other.strings.get(id));
                    self.entries[at].host_name = id + 1;
                }
            }
            // The earliest point's evidence; between equal times, the one read first.
            if let Some(kept) = their_evidence.remove(&theirs) {
                let at = at as u32;
                match self.evidence.get(&at) {
                    Some(mine) if mine.time <= kept.time => {}
                    _ => {
                        self.evidence.insert(at, kept);
                    }
                }
            }
        }
    }

    /// The aggregate of entry `at` at full width.
    fn aggregate(&self, at: usize) -> Wide {
        let entry = &self.entries[at];
        match entry.count & WIDE {
            0 => self.decode(entry),
            _ => self.wide[&(at as u32)],
        }
    }

    /// Sets the aggregate of entry `at`, compact when its numbers fit.
    fn set_aggregate(&mut self, at: usize, a: Wide, baseline: u32) {
        let offset = |from: UnixSecs, t: UnixSecs| {
            from.checked_sub(t)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|&d| d != 0)
        };
        let current = match a.current_count {
            0 => Some((0, 0, 0)),
            n => u32::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_COMPACT_COUNT)
                .zip(offset(self.at, a.current_first))
                .zip(offset(self.at, a.current_last))
                .map(|((n, first), last)| (n, first, last)),
        };
        let before = match a.before_last {
            None => Some(0),
            Some(t) => offset(self.baseline_start, t),
        };
        let entry = &mut self.entries[at];
        if let (Some((count, first, last)), Some(before)) = (current, before) {
            entry.count = count | baseline;
            entry.first = first;
            entry.last = last;
            entry.before = before;
            self.wide.remove(&(at as u32));
        } else {
            entry.count = baseline | WIDE;
            self.wide.insert(at as u32, a);
        }
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

/// Slots of a new scan's [`KeyTable`]; it doubles as keys are added.
const RECENT_KEYS: usize = 1 << 12;

/// Slots of each [`Recent`] cache of key parts.
const RECENT_PARTS: usize = 1 << 12;

/// Whether the key's host is its node (always so in default mode, where it is the same
/// `&str`): then the host is neither hashed nor interned again.
#[inline]
fn host_is_node(key: &KeyRef<'_>) -> bool {
    std::ptr::eq(key.host, key.node) || key.host == key.node
}

/// The hash of a key's text (`host` is `None` when it is the node), each part with its
/// length, so that no two keys run together.
#[inline]
fn key_hash(
    hasher: &DefaultHashBuilder,
    cluster: &[u8],
    node: &[u8],
    image: &[u8],
    host: Option<&[u8]>,
) -> u64 {
    let mut h = hasher.build_hasher();
    for part in [node, image, cluster] {
        h.write_usize(part.len());
        h.write(part);
    }
    if let Some(host) = host {
        h.write(host);
    }
    h.finish()
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Scans of consecutive pieces of an input, merged in order, are the scan of the
        /// whole: the same findings with the same evidence, the same keys in the same order,
        /// the same baseline. Times reach far outside the windows (wide entries), pieces may
        /// be empty, and default-mode keys (host is node) mix with strict ones.
        #[test]
        fn merged_pieces_are_the_whole(
            points in proptest::collection::vec(
                (0usize..4, 0usize..2, 0usize..3, 0usize..4, prop_time(), proptest::option::of(0usize..3), 0usize..3),
                0..120,
            ),
            cuts in proptest::collection::vec(0usize..120, 0..4),
        ) {
            let hosts = ["n", "node-1", "vm-a", "other"];
            let clusters = ["c", "prod-eu-west-1-01"];
            let nodes = ["n", "node-1", "ip-10-0-0-2.eu-west-1.compute.internal"];
            let images = ["i", "registry/team-1/service-1", "registry/team-1/service-1@sha256:ab", "x"];
            let pods = ["pod-a", "pod-b", "pod-c"];
            let feed = |scan: &mut BatchScan, points: &[TestPoint]| {
                for &(h, c, n, i, offset, vm, pod) in points {
                    let node = nodes[n];
                    let host = if h == 0 { node } else { hosts[h] };
                    let key = KeyRef { host, cluster: clusters[c], node, image: images[i].into() };
                    let mut context = Context::default();
                    context.0[0] = Some(pods[pod]);
                    let raw = if i == 2 { "registry/team-1/service-1:v1" } else { images[i] };
                    scan.observe_with(key, T.saturating_add(offset), vm.map(|v| hosts[v]), Some((&context, raw)));
                }
            };
            let mut whole = BatchScan::new(Windows::default(), T);
            feed(&mut whole, &points);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(points.len())).collect();
            cuts.sort_unstable();
            cuts.push(points.len());
            let mut merged = BatchScan::with_cache_slots(Windows::default(), T, 1, 1);
            let mut from = 0;
            for cut in cuts {
                let mut piece = BatchScan::with_cache_slots(Windows::default(), T, 1, 1);
                feed(&mut piece, &points[from..cut]);
                merged.merge(piece);
                from = cut;
            }
            let baseline = |scan: &BatchScan| {
                let mut keys = Vec::new();
                scan.for_each_baseline_key(|c, n, i| keys.push((c.to_string(), n.to_string(), i.to_string())));
                keys
            };
            proptest::prop_assert_eq!(merged.keys(), whole.keys());
            proptest::prop_assert_eq!(baseline(&merged), baseline(&whole));
            proptest::prop_assert_eq!(merged.finish(), whole.finish());
        }
    }

    /// Host, cluster, node, image (indices), time offset, `host.name`, pod.
    type TestPoint = (usize, usize, usize, usize, i64, Option<usize>, usize);

    /// Times around the windows, and far from them.
    fn prop_time() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![
            // Equal times, so that which evidence is the first one's matters.
            6 => prop::sample::select(vec![-10i64, -20, -3_000, -31 * 86_400]),
            8 => -40i64 * 86_400..10,
            1 => Just(i64::MIN),
            1 => Just(-200 * 365 * 86_400i64),
            1 => -4_000i64..-3_000,
        ]
    }

    #[test]
    fn a_merge_sums_counts_past_the_compact_range() {
        let mut a = BatchScan::new(Windows::default(), T);
        a.observe(key("i"), T - 10, None);
        a.entries[0].count += MAX_COMPACT_COUNT - 1;
        let mut b = BatchScan::new(Windows::default(), T);
        b.observe(key("i"), T - 5, Some("vm"));
        b.observe(key("i"), T - 20, None);
        a.merge(b);
        let d = a.finish();
        assert_eq!(d[0].count, u64::from(MAX_COMPACT_COUNT) + 2);
        assert_eq!((d[0].first_seen, d[0].last_seen), (T - 20, T - 5));
        assert_eq!(d[0].host_name.as_deref(), Some("vm"));
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
