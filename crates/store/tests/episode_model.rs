//! Section 4 of the contract, end to end through a store: arrivals in any order, late
//! and future points, grouped into batches at random, against a model that keeps every
//! accepted sighting in a list and decides from that list alone.

use std::collections::BTreeMap;

use proptest::prelude::*;
use unseen_detect::episode::is_future;
use unseen_model::{parse_time, UnixSecs, Windows};
use unseen_normalize::{Key, KeyMode};
use unseen_store::{ApplyOptions, MemStore, RedbStore, Sighting, StateStore};

const T: UnixSecs = 1_700_000_000;
const SKEW: u64 = 5;

fn key(i: u8) -> Key {
    Key {
        host: format!("node-{i}"),
        cluster: "c".into(),
        node: format!("node-{i}"),
        image: format!("img-{}", i % 3),
    }
}

/// The model's finding: (key, first_seen, previous_seen, late).
type Opened = (Key, UnixSecs, Option<UnixSecs>, bool);

/// Every accepted sighting per key, in arrival order; nothing else.
fn model(arrivals: &[(u8, UnixSecs, UnixSecs)], w: &Windows) -> Vec<Opened> {
    let mut seen: BTreeMap<Key, Vec<UnixSecs>> = BTreeMap::new();
    let mut out = Vec::new();
    for &(k, t, now) in arrivals {
        if t > now + SKEW as i64 {
            continue; // future: rejected, changes nothing
        }
        let list = seen.entry(key(k)).or_default();
        let latest = list.iter().copied().max();
        let opens = match latest {
            None => true,
            Some(l) => t > l && t - l > w.gap() as i64,
        };
        if opens {
            out.push((key(k), t, latest, now - t > w.recent as i64));
        }
        list.push(t);
    }
    out
}

/// The server's path: drop future points, apply each group as one batch. A group is
/// the requests of one commit: they share its `now`.
fn through(
    store: &dyn StateStore,
    groups: &[Vec<(u8, UnixSecs, UnixSecs)>],
    w: &Windows,
) -> Vec<Opened> {
    let mut out = Vec::new();
    for group in groups.iter().filter(|g| !g.is_empty()) {
        let now = group[0].2;
        let batch: Vec<Sighting> = group
            .iter()
            .filter(|&&(_, t, arrived)| !is_future(t, arrived, SKEW))
            .map(|&(k, t, _)| Sighting {
                key: key(k),
                time: t,
                host_name: None,
                context: Default::default(),
                image_raw: None,
            })
            .collect();
        let opts = ApplyOptions {
            rule: unseen_model::SEED_RULE,
            triage: Default::default(),
            windows: *w,
            mode: KeyMode::default(),
            now,
            report: true,
            suppressions: Default::default(),
            max_keys: 1_000,
            new_keys: None,
            notices: Vec::new(),
        };
        let applied = store.apply(&batch, &opts).unwrap();
        for f in applied.into_findings() {
            let k = Key {
                host: f.host,
                cluster: f.cluster,
                node: f.node,
                image: f.image,
            };
            let first = parse_time(&f.first_seen).unwrap();
            let prev = f.previous_seen.map(|p| parse_time(&p).unwrap());
            out.push((k, first, prev, f.late));
        }
    }
    out
}

fn windows() -> impl Strategy<Value = Windows> {
    (1u64..8, 2u64..30, 1u64..6)
        .prop_filter_map("valid windows", |(c, b, r)| Windows::new(c, b, r).ok())
}

/// Commits: each a group of arrivals (a key, the point's time) sharing one `now`,
/// which never goes back. Points come soon after their time, late, or ahead of it
/// (future points when more than SKEW).
fn groups() -> impl Strategy<Value = Vec<Vec<(u8, UnixSecs, UnixSecs)>>> {
    prop::collection::vec(
        (prop::collection::vec((0u8..4, 0i64..60), 0..8), 0i64..70),
        0..12,
    )
    .prop_map(|groups| {
        let mut clock = T;
        groups
            .into_iter()
            .map(|(points, at)| {
                clock = clock.max(T + at);
                points.into_iter().map(|(k, t)| (k, T + t, clock)).collect()
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn memstore_opens_exactly_the_models_episodes(w in windows(), groups in groups()) {
        let arrivals: Vec<_> = groups.concat();
        prop_assert_eq!(through(&MemStore::new(), &groups, &w), model(&arrivals, &w));
    }

    #[test]
    fn redb_opens_exactly_the_models_episodes(w in windows(), groups in groups()) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let arrivals: Vec<_> = groups.concat();
        prop_assert_eq!(through(&store, &groups, &w), model(&arrivals, &w));
    }
}

#[test]
fn a_future_point_is_rejected_and_does_not_move_state() {
    let w = Windows::new(4, 20, 2).unwrap();
    // The future point (t = T + 30 arriving at T) would, if accepted, hide the episode
    // that the point at T + 25 opens (25 > B − R = 18 after T).
    let groups = vec![vec![(0, T, T), (0, T + 30, T)], vec![(0, T + 25, T + 25)]];
    let expected = vec![(key(0), T, None, false), (key(0), T + 25, Some(T), false)];
    assert_eq!(model(&groups.concat(), &w), expected);
    assert_eq!(through(&MemStore::new(), &groups, &w), expected);
}
