//! Property tests: the redb store answers exactly as the in-memory reference model, and
//! both open exactly the episodes of the contract's definition (brute force).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use unseen_model::format_rfc3339;
use unseen_store::conformance::{key, opts, GAP, WINDOWS};
use unseen_store::{ApplyOptions, MemStore, RedbStore, Sighting, StateStore};

const POOL: usize = 5;

/// One step of a random session.
#[derive(Debug, Clone)]
enum Op {
    /// A batch: (key index, time, host.name?) each; `now` is `lag` after the batch's
    /// newest point (so never a future point, often a late one).
    Apply {
        points: Vec<(usize, i64, bool)>,
        lag: i64,
        report: bool,
        max_keys: u64,
    },
    Forget,
    Ack {
        sink: usize,
        seq: u64,
    },
    Pending {
        sink: usize,
        limit: usize,
    },
    /// The redb store is closed and opened again (its key states come back from the
    /// `keys` table and the state log).
    Reopen,
}

/// Times on a coarse grid (multiples of 100 s, so gaps of exactly B − R = 900 s are
/// common) or anywhere, up to 4,000 s: several episodes per key.
fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => (1i64..40).prop_map(|t| t * 100),
        1 => 1i64..4_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec((0..POOL, time(), any::<bool>()), 1..8),
            0i64..300,
            prop::bool::weighted(0.8),
            prop_oneof![3 => Just(u64::MAX), 1 => 0u64..=POOL as u64],
        )
            .prop_map(|(points, lag, report, max_keys)| Op::Apply {
                points,
                lag,
                report,
                max_keys,
            }),
        1 => Just(Op::Forget),
        1 => (0usize..2, 0u64..12).prop_map(|(sink, seq)| Op::Ack { sink, seq }),
        1 => (0usize..2, 0usize..5).prop_map(|(sink, limit)| Op::Pending { sink, limit }),
        1 => Just(Op::Reopen),
    ]
}

const SINKS: [&str; 2] = ["file", "webhook"];

fn batch_of(points: &[(usize, i64, bool)]) -> Vec<Sighting> {
    points
        .iter()
        .map(|&(k, time, host)| Sighting {
            key: key(k),
            time,
            host_name: host.then(|| format!("collector-{k}")),
            context: Default::default(),
            image_raw: None,
        })
        .collect()
}

fn snapshot(store: &dyn StateStore) -> impl PartialEq + std::fmt::Debug {
    let states: Vec<_> = (0..POOL).map(|k| store.get(&key(k)).unwrap()).collect();
    let pending: Vec<_> = SINKS
        .iter()
        .map(|s| store.pending(s, usize::MAX).unwrap())
        .collect();
    (
        states,
        store.key_count().unwrap(),
        store.newest_point().unwrap(),
        store.log_len().unwrap(),
        pending,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any session (out-of-order and late points, learning, key caps, forgetting, sink
    /// cursors): redb and the model give identical answers and end in identical states.
    #[test]
    fn redb_answers_as_the_model(
        ops in prop::collection::vec(op(), 1..24),
        // The log's size at which folding starts: at every batch, now and then, never.
        fold_bytes in prop_oneof![Just(0u64), 1u64..400, Just(u64::MAX)],
        // The fewest keys an `apply` folds: cycles of one batch, or of several.
        fold_chunk in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let open = || RedbStore::open(dir.path()).unwrap().with_fold(fold_bytes, fold_chunk);
        let mut redb = open();
        let mem = MemStore::new();
        let stores: [&dyn StateStore; 2] = [&redb, &mem];
        for s in stores {
            for sink in SINKS {
                s.register_sink(sink).unwrap();
            }
        }
        for op in &ops {
            match op {
                Op::Apply { points, lag, report, max_keys } => {
                    let batch = batch_of(points);
                    let newest = batch.iter().map(|s| s.time).max().unwrap_or(0);
                    let o = ApplyOptions { report: *report, max_keys: *max_keys, ..opts(newest + lag) };
                    let r = redb.apply(&batch, &o).unwrap().without_io();
                    let m = mem.apply(&batch, &o).unwrap();
                    prop_assert_eq!(r, m);
                }
                Op::Forget => {
                    prop_assert_eq!(redb.forget(&WINDOWS).unwrap(), mem.forget(&WINDOWS).unwrap());
                }
                Op::Ack { sink, seq } => {
                    redb.ack(SINKS[*sink], *seq).unwrap();
                    mem.ack(SINKS[*sink], *seq).unwrap();
                }
                Op::Pending { sink, limit } => {
                    prop_assert_eq!(
                        redb.pending(SINKS[*sink], *limit).unwrap(),
                        mem.pending(SINKS[*sink], *limit).unwrap()
                    );
                }
                Op::Reopen => {
                    drop(redb);
                    redb = open();
                    prop_assert_eq!(redb.states().unwrap(), mem.states().unwrap());
                }
            }
        }
        prop_assert_eq!(snapshot(&redb), snapshot(&mem));
        prop_assert_eq!(redb.states().unwrap(), mem.states().unwrap());
    }

    /// In-order points, split into batches at random: the episodes opened are exactly
    /// the contract's — sighting s_i of a key opens one iff i = 1 or s_i − s_(i−1) > B − R
    /// — with the right `previous_seen`, in both stores.
    #[test]
    fn in_order_points_open_exactly_the_contracts_episodes(
        mut points in prop::collection::vec((0..POOL, 0i64..6_000), 1..60),
        splits in prop::collection::vec(1usize..10, 1..60),
    ) {
        points.sort_by_key(|&(_, t)| t);
        // The brute-force model, from the definition.
        let mut times: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
        for &(k, t) in &points {
            times.entry(k).or_default().insert(t);
        }
        let mut expected = BTreeSet::new();
        for (k, ts) in &times {
            let ts: Vec<i64> = ts.iter().copied().collect();
            for i in 0..ts.len() {
                if i == 0 || ts[i] - ts[i - 1] > GAP {
                    let previous = (i > 0).then(|| format_rfc3339(ts[i - 1]));
                    expected.insert((key(*k).image, format_rfc3339(ts[i]), previous));
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(dir.path()).unwrap();
        let mem = MemStore::new();
        for store in [&redb as &dyn StateStore, &mem] {
            let mut opened = BTreeSet::new();
            let mut rest = &points[..];
            let mut split = splits.iter().cycle();
            while !rest.is_empty() {
                let n = (*split.next().unwrap()).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let batch: Vec<Sighting> = chunk
                    .iter()
                    .map(|&(k, t)| Sighting { key: key(k), time: t, host_name: None, context: Default::default(), image_raw: None })
                    .collect();
                let now = chunk.last().unwrap().1;
                for f in store.apply(&batch, &opts(now)).unwrap().into_findings() {
                    let first = batch.iter().map(|s| s.time).find(|&t| format_rfc3339(t) == f.first_seen).unwrap();
                    prop_assert_eq!(f.late, now - first > WINDOWS.recent as i64);
                    prop_assert!(opened.insert((f.image, f.first_seen, f.previous_seen)), "reported twice");
                }
            }
            prop_assert_eq!(&opened, &expected);
            for (k, ts) in &times {
                let state = store.get(&key(*k)).unwrap().unwrap();
                prop_assert_eq!(state.last_seen, *ts.last().unwrap());
            }
        }
    }
}
