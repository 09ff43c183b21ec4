//! The engine against deliberately simple reference implementations of the contract.
//!
//! The references are written straight from the text of sections 3 and 4, with sets
//! and loops and no cleverness; the engine must agree with them on random point sets
//! that put many points exactly on the window boundaries.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use unseen_detect::{episode, BatchScan, Detection};
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::{Key, KeyRef};

const T: UnixSecs = 1_700_000_000;

fn key(i: u8) -> Key {
    Key {
        host: format!("node-{}", i % 3),
        cluster: "c".into(),
        node: format!("node-{}", i % 3),
        image: format!("img-{}", i % 4),
    }
}

/// Section 3, literally: current \ baseline with half-open intervals.
fn reference_batch(
    points: &[(Key, UnixSecs)],
    w: Windows,
    at: UnixSecs,
) -> Vec<(Key, UnixSecs, UnixSecs, u64)> {
    let (c, b, r) = (w.current as i64, w.baseline as i64, w.recent as i64);
    let current: BTreeSet<&Key> = points
        .iter()
        .filter(|(_, t)| at - c <= *t && *t < at)
        .map(|(k, _)| k)
        .collect();
    let baseline: BTreeSet<&Key> = points
        .iter()
        .filter(|(_, t)| at - b <= *t && *t < at - r)
        .map(|(k, _)| k)
        .collect();
    let mut out: Vec<_> = current
        .difference(&baseline)
        .map(|k| {
            let ts: Vec<UnixSecs> = points
                .iter()
                .filter(|(pk, t)| pk == *k && at - c <= *t && *t < at)
                .map(|(_, t)| *t)
                .collect();
            let first = *ts.iter().min().unwrap();
            let last = *ts.iter().max().unwrap();
            ((*k).clone(), first, last, ts.len() as u64)
        })
        .collect();
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

fn engine_batch(points: &[(Key, UnixSecs)], w: Windows, at: UnixSecs) -> Vec<Detection> {
    let mut scan = BatchScan::new(w, at);
    for (k, t) in points {
        scan.observe(k.as_ref(), *t, None);
    }
    scan.finish()
}

/// Offsets from T that sit on, just before and just after every boundary.
fn boundary_offset(w: Windows) -> impl Strategy<Value = i64> {
    let (c, b, r) = (w.current as i64, w.baseline as i64, w.recent as i64);
    let edges = [0, r, c, b];
    prop_oneof![
        (0..edges.len(), -1i64..=1).prop_map(move |(i, d)| -edges[i] + d),
        -(b + 10)..=10i64,
    ]
}

fn windows() -> impl Strategy<Value = Windows> {
    (1u64..6, 0u64..6, 1u64..12).prop_map(|(r, extra_c, extra_b)| {
        let c = r + extra_c;
        Windows::new(c, c + extra_b, r).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn batch_matches_the_reference(
        (w, points) in windows().prop_flat_map(|w| {
            (Just(w), prop::collection::vec((0u8..12, boundary_offset(w)), 0..60))
        })
    ) {
        let points: Vec<(Key, UnixSecs)> = points.into_iter().map(|(k, o)| (key(k), T + o)).collect();
        let expected = reference_batch(&points, w, T);
        let got: Vec<_> = engine_batch(&points, w, T)
            .into_iter()
            .map(|d| (d.key, d.first_seen, d.last_seen, d.count))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn batch_ignores_input_order(
        points in prop::collection::vec((0u8..12, boundary_offset(Windows::default())), 0..60),
        seed in any::<u64>(),
    ) {
        let w = Windows::default();
        let points: Vec<(Key, UnixSecs)> = points.into_iter().map(|(k, o)| (key(k), T + o)).collect();
        let mut shuffled = points.clone();
        // A cheap deterministic shuffle.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(engine_batch(&points, w, T), engine_batch(&shuffled, w, T));
    }

    /// Section 4: in time order, the episodes opened are exactly the sightings that some
    /// batch run reports as a key's first point in its recent window. The model runs the
    /// batch reference at every possible T.
    #[test]
    fn episodes_in_order_equal_every_batch_run(
        (w, points) in windows().prop_flat_map(|w| {
            (Just(w), prop::collection::vec((0u8..6, 0i64..80), 0..40))
        })
    ) {
        let mut points: Vec<(Key, UnixSecs)> = points.into_iter().map(|(k, t)| (key(k), T + t)).collect();
        points.sort_by_key(|(_, t)| *t);

        let mut model: BTreeSet<(Key, UnixSecs)> = BTreeSet::new();
        let (lo, hi) = (T - 1, T + 80 + w.current as i64 + 1);
        for at in lo..=hi {
            for (k, first, _, _) in reference_batch(&points, w, at) {
                // Reported at `at` with its first point in the recent window.
                if first >= at - w.recent as i64 {
                    model.insert((k, first));
                }
            }
        }

        let mut states: BTreeMap<Key, episode::KeyState> = BTreeMap::new();
        let mut opened = BTreeSet::new();
        for (k, t) in &points {
            let s = episode::step(states.get(k).copied(), *t, *t, &w);
            states.insert(k.clone(), s.state);
            if let Some(e) = s.opened {
                prop_assert!(!e.late);
                opened.insert((k.clone(), e.first_seen));
            }
        }
        prop_assert_eq!(opened, model);
    }

    /// Out of order: a point older than the key's latest sighting never opens an
    /// episode and never moves state back; arrival more than R after the point's time
    /// marks an episode late.
    #[test]
    fn out_of_order_and_late_points(
        (w, arrivals) in windows().prop_flat_map(|w| {
            (Just(w), prop::collection::vec((0u8..4, 0i64..80, 0i64..20), 0..40))
        })
    ) {
        let mut states: BTreeMap<Key, episode::KeyState> = BTreeMap::new();
        let mut latest: BTreeMap<Key, UnixSecs> = BTreeMap::new();
        for (k, t, delay) in arrivals {
            let (k, t) = (key(k), T + t);
            let now = t + delay;
            let prev_latest = latest.get(&k).copied();
            let s = episode::step(states.get(&k).copied(), t, now, &w);
            match prev_latest {
                None => prop_assert!(s.opened.is_some()),
                Some(l) if t <= l => {
                    prop_assert!(s.opened.is_none());
                    prop_assert_eq!(s.state.last_seen, l);
                }
                Some(l) => {
                    prop_assert_eq!(s.opened.is_some(), t - l > w.gap() as i64);
                    if let Some(e) = s.opened {
                        prop_assert_eq!(e.previous_seen, Some(l));
                    }
                }
            }
            if let Some(e) = s.opened {
                prop_assert_eq!(e.late, delay > w.recent as i64);
                prop_assert_eq!(e.first_seen, t);
            }
            latest.insert(k.clone(), prev_latest.map_or(t, |l| l.max(t)));
            states.insert(k, s.state);
        }
    }
}

#[test]
fn seed_windows_on_the_exact_boundaries() {
    let w = Windows::default();
    let k = key(0);
    let hour = 3_600;
    let b = 30 * 86_400;
    // A point exactly at T − R is recent, one second earlier is baseline.
    let at_recent_edge = engine_batch(&[(k.clone(), T - hour)], w, T);
    assert_eq!(at_recent_edge.len(), 1);
    assert!(engine_batch(&[(k.clone(), T - hour), (k.clone(), T - hour - 1)], w, T).is_empty());
    // A point exactly at T − B is baseline; one second earlier is forgotten.
    assert!(engine_batch(&[(k.clone(), T - 1), (k.clone(), T - b)], w, T).is_empty());
    let reported = engine_batch(&[(k.clone(), T - 1), (k.clone(), T - b - 1)], w, T);
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].previous_seen, Some(T - b - 1));
    // T itself is outside the half-open window.
    assert!(engine_batch(&[(k, T)], w, T).is_empty());
}

#[test]
fn borrowed_lookups_find_owned_keys() {
    let mut scan = BatchScan::new(Windows::default(), T);
    let k = key(1);
    scan.observe(
        KeyRef {
            host: "node-1",
            cluster: "c",
            node: "node-1",
            image: "img-1".into(),
        },
        T - 10,
        Some("vm-a"),
    );
    scan.observe(k.as_ref(), T - 5, Some("vm-b"));
    assert_eq!(scan.keys(), 1);
    let d = scan.finish();
    assert_eq!(d[0].count, 2);
    assert_eq!(d[0].host_name.as_deref(), Some("vm-a"));
}
