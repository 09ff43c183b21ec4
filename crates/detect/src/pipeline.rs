//! [`Pipelined`]: a [`BatchScan`] fed a few points behind the input, so that what each
//! point's lookup reads is fetched from memory while the points before it are processed.
//!
//! An export sorted by time interleaves every key, so with hundreds of thousands of keys
//! nearly every lookup misses the cache, and waiting for those misses was most of a scan's
//! time (`perf`: three quarters of the key lookup was the load of the table slot). A point
//! goes through two steps before it is observed:
//!
//! 1. On arrival its key (the image as the point spelled it) is hashed and its table slot
//!    prefetched.
//! 2. [`STEP`] points later its slot is read, and the entry it names prefetched.
//! 3. [`DEPTH`] points after arrival it is observed, its entry in the cache
//!    ([`BatchScan::observe_raw`]: the image is made canonical only the first time a key is
//!    seen spelled so).
//!
//! Points handed over one at a time ([`Pipelined::observe_with`]) are copied into a queue
//! of [`DEPTH`]; points that are all readable at once ([`Pipelined::observe_all`], a batch
//! of CSV rows) go through each step together, without a copy. Either way the scan sees
//! the points in exactly their input order: the result is the same as observing each at
//! once (property test).

use std::borrow::Cow;

use unseen_model::{Context, UnixSecs, CONTEXT_LEN};
use unseen_normalize::image::CanonicalMemo;
use unseen_normalize::KeyRef;

use crate::batch::{BatchScan, Placement};

/// Points between two steps of a point: enough work to cover a trip to memory.
pub const STEP: usize = 8;
/// Points between a point's arrival and its observation.
pub const DEPTH: usize = 2 * STEP;

/// Strings of a queued point: the key's four parts (the image as the point gave it),
/// `host.name`, the image tag, and the evidence attributes.
const HOST: usize = 0;
const CLUSTER: usize = 1;
const NODE: usize = 2;
const IMAGE: usize = 3;
const HOST_NAME: usize = 4;
const TAG: usize = 5;
const CONTEXT: usize = 6;
const SPANS: usize = CONTEXT + CONTEXT_LEN;

/// One point for [`Pipelined::observe_all`]: its key with the image as the point gave it
/// (`unseen_normalize::key_of_raw`), and the rest of what
/// [`BatchScan::observe_with`] takes.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    /// The key, its image as the point gave it.
    pub key: KeyRef<'a>,
    /// The point's `container.image.tag`, for the canonical image.
    pub tag: Option<&'a str>,
    pub t: UnixSecs,
    pub host_name: Option<&'a str>,
    /// The point's evidence attributes, kept in default mode.
    pub evidence: Option<&'a Context<'a>>,
}

/// A [`BatchScan`] fed a few points behind.
#[derive(Debug)]
pub struct Pipelined {
    scan: BatchScan,
    /// The canonical forms of image names; `None` takes them as given (strict mode).
    memo: Option<CanonicalMemo>,
    queue: Box<[Pending]>,
    /// The oldest queued point.
    head: usize,
    len: usize,
    /// The queued points from the oldest on whose entry is prefetched (step 2).
    fetched: usize,
    /// [`Pipelined::observe_all`]'s hashes, kept for their memory.
    hashes: Vec<u64>,
}

/// A point waiting for its turn: its strings copied into one buffer, reused from point to
/// point (no allocation once the buffers have grown to the longest point).
#[derive(Debug, Default, Clone)]
struct Pending {
    text: String,
    /// Where each string is in `text`, for the bits set in `present`.
    spans: [(u32, u32); SPANS],
    present: u32,
    /// The host is the node (default mode): only the node is copied.
    host_is_node: bool,
    /// Whether the point's evidence is kept (`CONTEXT`, and the image as spelled).
    evidence: bool,
    t: UnixSecs,
    hash: u64,
}

impl Pending {
    fn put(&mut self, at: usize, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        // Each string is at most a record long, and records are bounded well below 4 GiB.
        self.spans[at] = (start as u32, self.text.len() as u32);
        self.present |= 1 << at;
    }

    fn get(&self, at: usize) -> Option<&str> {
        let (start, end) = self.spans[at];
        (self.present & 1 << at != 0).then(|| &self.text[start as usize..end as usize])
    }

    fn key(&self) -> KeyRef<'_> {
        let get = |at| self.get(at).unwrap_or_default();
        let node = get(NODE);
        KeyRef {
            host: if self.host_is_node { node } else { get(HOST) },
            cluster: get(CLUSTER),
            node,
            image: Cow::Borrowed(get(IMAGE)),
        }
    }
}

impl Pipelined {
    /// A pipeline into `scan`; `memo` makes image names canonical (default mode), `None`
    /// takes them as given (strict mode).
    pub fn new(scan: BatchScan, memo: Option<CanonicalMemo>) -> Self {
        Pipelined {
            scan,
            memo,
            queue: vec![Pending::default(); DEPTH].into_boxed_slice(),
            head: 0,
            len: 0,
            fetched: 0,
            hashes: Vec::new(),
        }
    }

    /// Where a point at `t` falls.
    pub fn placement(&self, t: UnixSecs) -> Placement {
        self.scan.placement(t)
    }

    /// [`BatchScan::observe_with`], a few points later, for a key whose image is as the
    /// point gave it (`unseen_normalize::key_of_raw`), with the point's image tag. The
    /// placement is known at once.
    #[inline]
    pub fn observe_with(
        &mut self,
        key: KeyRef<'_>,
        tag: Option<&str>,
        t: UnixSecs,
        host_name: Option<&str>,
        evidence: Option<&Context<'_>>,
    ) -> Placement {
        let placement = self.scan.placement(t);
        if placement == Placement::AfterT {
            return placement;
        }
        let hash = self.scan.hash_key(&key);
        self.scan.prefetch(hash);
        if self.len == DEPTH {
            self.observe_oldest();
        }
        let pending = &mut self.queue[(self.head + self.len) % DEPTH];
        self.len += 1;
        pending.text.clear();
        pending.present = 0;
        pending.t = t;
        pending.hash = hash;
        pending.host_is_node = std::ptr::eq(key.host, key.node) || key.host == key.node;
        if !pending.host_is_node {
            pending.put(HOST, key.host);
        }
        pending.put(CLUSTER, key.cluster);
        pending.put(NODE, key.node);
        pending.put(IMAGE, &key.image);
        if let Some(host_name) = host_name {
            pending.put(HOST_NAME, host_name);
        }
        if let Some(tag) = tag {
            pending.put(TAG, tag);
        }
        pending.evidence = evidence.is_some();
        if let Some(context) = evidence {
            for (slot, value) in context.0.iter().enumerate() {
                if let Some(value) = value {
                    pending.put(CONTEXT + slot, value);
                }
            }
        }
        if self.len - self.fetched > STEP {
            let pending = &self.queue[(self.head + self.fetched) % DEPTH];
            self.scan.prefetch_entry(pending.hash);
            self.fetched += 1;
        }
        placement
    }

    fn observe_oldest(&mut self) {
        let pending = &self.queue[self.head];
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        self.fetched = self.fetched.saturating_sub(1);
        let context = Context(std::array::from_fn(|slot| pending.get(CONTEXT + slot)));
        let key = pending.key();
        let evidence = pending
            .evidence
            .then(|| (&context, pending.get(IMAGE).unwrap_or_default()));
        self.scan.observe_raw(
            key,
            pending.hash,
            pending.get(TAG),
            self.memo.as_mut(),
            pending.t,
            pending.get(HOST_NAME),
            evidence,
        );
    }

    /// Observes `sightings`, in order, after the queued points: the steps of the module
    /// docs, each over all of them, with no copy (they are all readable at once).
    pub fn observe_all(&mut self, sightings: &[Sighting<'_>]) {
        self.scan();
        self.hashes.clear();
        for s in sightings {
            let hash = self.scan.hash_key(&s.key);
            self.scan.prefetch(hash);
            self.hashes.push(hash);
        }
        for &hash in &self.hashes {
            self.scan.prefetch_entry(hash);
        }
        for (s, &hash) in sightings.iter().zip(&self.hashes) {
            let evidence = s.evidence.map(|context| (context, &*s.key.image));
            self.scan.observe_raw(
                s.key.clone(),
                hash,
                s.tag,
                self.memo.as_mut(),
                s.t,
                s.host_name,
                evidence,
            );
        }
    }

    /// The scan, with every queued point observed.
    pub fn scan(&mut self) -> &mut BatchScan {
        while self.len > 0 {
            self.observe_oldest();
        }
        &mut self.scan
    }

    /// The scan, with every queued point observed.
    pub fn into_scan(mut self) -> BatchScan {
        self.scan();
        self.scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unseen_model::Windows;
    use unseen_normalize::image::canonical;

    const T: UnixSecs = 1_700_000_000;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Fed through the queue, in batches ([`Pipelined::observe_all`], mixed with
        /// single points), or at once, a scan ends the same, whatever the number of points
        /// against the queue's depth.
        #[test]
        fn the_queue_changes_nothing(
            points in proptest::collection::vec(
                (0usize..3, 0usize..2, 0usize..3, 0usize..5, prop_time(), proptest::option::of(0usize..3), proptest::option::of(0usize..3)),
                0..80,
            ),
            strict in proptest::bool::ANY,
            batches in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let hosts = ["n", "vm-a", "other"];
            let clusters = ["c", "prod"];
            let nodes = ["n", "node-1", "ip-10-0-0-2.eu-west-1.compute.internal"];
            let images = ["nginx", "registry.io/team-1/service-1:v1", "x", "quay.io/a/b", "sha256"];
            let pods = ["pod-a", "pod-b", ""];
            // Tags for the name `sha256`, whose canonical form is its tag's digest.
            let hexes = [None, Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"), Some("1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")];
            let contexts: Vec<Context<'_>> = points
                .iter()
                .map(|p| {
                    let mut context = Context::default();
                    context.0[1] = p.6.map(|pod| pods[pod]);
                    context
                })
                .collect();
            let memo = || (!strict).then(|| CanonicalMemo::with_slots(2));
            let mut direct = BatchScan::new(Windows::default(), T);
            let mut queued = Pipelined::new(BatchScan::new(Windows::default(), T), memo());
            let mut batched = Pipelined::new(BatchScan::new(Windows::default(), T), memo());
            let sighting = |k: usize| {
                let (h, c, n, i, offset, vm, _) = points[k];
                let node = nodes[n];
                Sighting {
                    key: KeyRef { host: if h == 0 { node } else { hosts[h] }, cluster: clusters[c], node, image: images[i].into() },
                    tag: if i == 4 { hexes[points[k].6.unwrap_or(0)] } else { None },
                    t: T.saturating_add(offset),
                    host_name: vm.map(|v| hosts[v]),
                    evidence: (!strict).then_some(&contexts[k]),
                }
            };
            for k in 0..points.len() {
                let s = sighting(k);
                let raw = images[points[k].3];
                let image = if strict { raw.into() } else { canonical(raw, s.tag) };
                let key = KeyRef { image, ..s.key.clone() };
                proptest::prop_assert_eq!(
                    direct.observe_with(key, s.t, s.host_name, s.evidence.map(|c| (c, raw))),
                    queued.observe_with(s.key, s.tag, s.t, s.host_name, s.evidence)
                );
            }
            // Batches at the cuts; a single point through the queue before each.
            let mut cuts: Vec<usize> = batches.into_iter().map(|c| c.min(points.len())).collect();
            cuts.sort_unstable();
            cuts.push(points.len());
            let mut from = 0;
            for cut in cuts {
                if from < cut {
                    let s = sighting(from);
                    batched.observe_with(s.key, s.tag, s.t, s.host_name, s.evidence);
                    from += 1;
                }
                let sightings: Vec<Sighting<'_>> = (from..cut.max(from))
                    .map(sighting)
                    .filter(|s| batched.placement(s.t) != Placement::AfterT)
                    .collect();
                batched.observe_all(&sightings);
                from = cut.max(from);
            }
            let (queued, batched) = (queued.into_scan(), batched.into_scan());
            proptest::prop_assert_eq!(direct.keys(), queued.keys());
            proptest::prop_assert_eq!(direct.keys(), batched.keys());
            let direct = direct.finish();
            proptest::prop_assert_eq!(&direct, &queued.finish());
            proptest::prop_assert_eq!(&direct, &batched.finish());
        }
    }

    fn prop_time() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![
            4 => prop::sample::select(vec![-10i64, -20, -3_000, -31 * 86_400, 5]),
            4 => -40i64 * 86_400..10,
        ]
    }
}
