//! The contract of [`StateStore`] as executable checks, run against every backend
//! (the way Quickwit tests its metastores): each check takes a factory of fresh, empty
//! stores and panics on the first deviation.
//!
//! Use it from a backend's tests with [`conformance_tests!`](crate::conformance_tests),
//! which makes one `#[test]` per check, or call [`run_all`]. Enabled by the cargo
//! feature `conformance`.
//!
//! The windows are small ([`WINDOWS`]: B − R = 900 s) so that the cases read easily.

use unseen_detect::KeyState;
use unseen_findings::{finding_id, Finding, IncidentKind, IncidentState, Scope, TriageSettings};
use unseen_model::{format_rfc3339, OwnedContext, UnixSecs, Windows, SEED_RULE};
use unseen_normalize::{Key, KeyMode};

use crate::{Applied, ApplyOptions, Record, Refusal, Sighting, StateStore, StoreError};

/// A factory of fresh, empty stores.
pub type Make<'a> = &'a mut dyn FnMut() -> Box<dyn StateStore>;

/// C = 200 s, B = 1000 s, R = 100 s: B − R = 900 s.
pub const WINDOWS: Windows = Windows {
    current: 200,
    baseline: 1_000,
    recent: 100,
};

/// B − R of [`WINDOWS`].
pub const GAP: UnixSecs = 900;

/// A key of the test pool.
pub fn key(i: usize) -> Key {
    Key {
        host: format!("node-{i}"),
        cluster: "cluster-a".into(),
        node: format!("node-{i}"),
        image: format!("registry.example/team/image-{i}"),
    }
}

/// A sighting without `host.name`.
pub fn sighting(key: &Key, time: UnixSecs) -> Sighting {
    Sighting {
        key: key.clone(),
        time,
        host_name: None,
        context: OwnedContext::default(),
        image_raw: None,
    }
}

/// Reporting, strict key mode, no key cap, [`WINDOWS`]. Strict mode: these checks are
/// about the rule and the outbox, where the modes do not differ, and in strict mode each
/// episode is one record of the log (no incidents in between); the triage checks
/// ([`triage_opts`]) use default mode.
pub fn opts(now: UnixSecs) -> ApplyOptions {
    ApplyOptions {
        rule: SEED_RULE,
        triage: TriageSettings::default(),
        windows: WINDOWS,
        mode: KeyMode {
            strict: true,
            cluster_name: None,
        },
        now,
        report: true,
        suppressions: Default::default(),
        max_keys: u64::MAX,
        new_keys: None,
        notices: Vec::new(),
    }
}

fn apply(store: &dyn StateStore, batch: &[Sighting], opts: &ApplyOptions) -> Applied {
    store.apply(batch, opts).expect("apply")
}

/// (key, first_seen, previous_seen, late) of each finding.
fn opened(applied: &Applied) -> Vec<(String, String, Option<String>, bool)> {
    applied
        .records
        .iter()
        .filter_map(|(_, r)| r.finding())
        .map(|f| {
            (
                f.image.clone(),
                f.first_seen.clone(),
                f.previous_seen.clone(),
                f.late,
            )
        })
        .collect()
}

fn expect(
    k: &Key,
    first_seen: UnixSecs,
    previous_seen: Option<UnixSecs>,
    late: bool,
) -> (String, String, Option<String>, bool) {
    (
        k.image.clone(),
        format_rfc3339(first_seen),
        previous_seen.map(format_rfc3339),
        late,
    )
}

fn state(last_seen: UnixSecs, episode_start: UnixSecs) -> Option<KeyState> {
    Some(KeyState {
        last_seen,
        episode_start,
    })
}

fn seqs(findings: &[(u64, Record)]) -> Vec<u64> {
    findings.iter().map(|(seq, _)| *seq).collect()
}

/// A key's first sighting opens an episode with no previous sighting; the finding
/// carries the key, the evidence, the rule and a deterministic id.
pub fn first_sighting_opens_an_episode(make: Make) {
    let store = make();
    let a = key(1);
    assert_eq!(store.key_count().unwrap(), 0);
    assert_eq!(store.newest_point().unwrap(), None);
    let batch = [Sighting {
        host_name: Some("collector-7".into()),
        ..sighting(&a, 10_000)
    }];
    let out = apply(&*store, &batch, &opts(10_005));
    assert!(out.refused.is_empty());
    assert_eq!(out.keys, 1);
    assert_eq!(seqs(&out.records), [1], "sequence numbers start at 1");
    let f = out.records[0].1.finding().expect("a finding");
    assert_eq!(f.finding_id, finding_id(&SEED_RULE, &a, 10_000));
    assert_eq!(f.rule.id, SEED_RULE.id);
    assert_eq!(f.mode, "strict");
    assert_eq!(f.detected_at, format_rfc3339(10_005));
    assert_eq!(
        (&f.host, &f.cluster, &f.node, &f.image),
        (&a.host, &a.cluster, &a.node, &a.image)
    );
    assert_eq!(f.host_name.as_deref(), Some("collector-7"));
    assert_eq!(f.first_seen, format_rfc3339(10_000));
    assert_eq!(f.last_seen, format_rfc3339(10_000));
    assert_eq!(f.count, 1);
    assert_eq!(f.previous_seen, None);
    assert!(!f.late);
    assert_eq!(store.get(&a).unwrap(), state(10_000, 10_000));
    assert_eq!(store.get(&key(2)).unwrap(), None);
    assert_eq!(store.key_count().unwrap(), 1);
    assert_eq!(store.newest_point().unwrap(), Some(10_000));
}

/// A sighting at most B − R after the previous one continues the episode.
pub fn a_sighting_within_the_gap_continues(make: Make) {
    let store = make();
    let a = key(1);
    apply(&*store, &[sighting(&a, 10_000)], &opts(10_000));
    let out = apply(&*store, &[sighting(&a, 10_000 + GAP)], &opts(10_000 + GAP));
    assert_eq!(out.records, [], "a gap of exactly B − R continues");
    assert_eq!(store.get(&a).unwrap(), state(10_000 + GAP, 10_000));
    let out = apply(&*store, &[sighting(&a, 10_001 + GAP)], &opts(10_001 + GAP));
    assert_eq!(out.records, []);
    assert_eq!(store.get(&a).unwrap(), state(10_001 + GAP, 10_000));
}

/// A sighting more than B − R after the previous one opens a new episode, which names
/// the sighting before the gap.
pub fn a_sighting_after_the_gap_opens_an_episode_with_previous_seen(make: Make) {
    let store = make();
    let a = key(1);
    let first = apply(&*store, &[sighting(&a, 10_000)], &opts(10_000));
    let t = 10_001 + GAP;
    let out = apply(&*store, &[sighting(&a, t)], &opts(t));
    assert_eq!(opened(&out), [expect(&a, t, Some(10_000), false)]);
    assert_eq!(seqs(&out.records), [2]);
    assert_eq!(
        out.records[0].1.finding().unwrap().finding_id,
        finding_id(&SEED_RULE, &a, t)
    );
    assert_ne!(
        out.records[0].1.finding().unwrap().finding_id,
        first.records[0].1.finding().unwrap().finding_id
    );
    assert_eq!(store.get(&a).unwrap(), state(t, t));
    assert_eq!(out.keys, 1);
}

/// A point older than (or as old as) the key's latest sighting never opens an episode
/// and never moves the state back, whatever the gap behind it.
pub fn out_of_order_points_never_open_nor_move_state_back(make: Make) {
    let store = make();
    let a = key(1);
    apply(&*store, &[sighting(&a, 20_000)], &opts(20_000));
    for t in [20_000, 19_999, 20_000 - GAP, 20_000 - GAP - 1, 1_000] {
        let out = apply(&*store, &[sighting(&a, t)], &opts(20_010));
        assert_eq!(out.records, [], "point at {t}");
        assert_eq!(
            store.get(&a).unwrap(),
            state(20_000, 20_000),
            "point at {t}"
        );
    }
    assert_eq!(store.newest_point().unwrap(), Some(20_000));
    // An older point of another key still counts as that key's sighting.
    let b = key(2);
    let out = apply(&*store, &[sighting(&b, 5_000)], &opts(20_010));
    assert_eq!(opened(&out), [expect(&b, 5_000, None, true)]);
    assert_eq!(
        store.newest_point().unwrap(),
        Some(20_000),
        "newest is a max"
    );
}

/// An episode whose first point arrives more than R after its own time is reported
/// with `late`; exactly R is on time.
pub fn late_flag(make: Make) {
    let store = make();
    let (a, b) = (key(1), key(2));
    let out = apply(&*store, &[sighting(&a, 10_000)], &opts(10_100));
    assert_eq!(opened(&out), [expect(&a, 10_000, None, false)]);
    let out = apply(&*store, &[sighting(&b, 10_000)], &opts(10_101));
    assert_eq!(opened(&out), [expect(&b, 10_000, None, true)]);
    // A reopened episode is late too when its point is.
    let t = 10_001 + GAP;
    let out = apply(&*store, &[sighting(&a, t)], &opts(t + 5_000));
    assert_eq!(opened(&out), [expect(&a, t, Some(10_000), true)]);
}

/// While learning (`report = false`), state is recorded and no finding is produced,
/// nor any sequence number used.
pub fn learning_records_state_without_findings(make: Make) {
    let store = make();
    store.register_sink("s").unwrap();
    let (a, b) = (key(1), key(2));
    let learning = ApplyOptions {
        report: false,
        ..opts(10_000)
    };
    let out = apply(
        &*store,
        &[sighting(&a, 10_000), sighting(&b, 10_000)],
        &learning,
    );
    assert_eq!(out.records, []);
    assert_eq!(out.keys, 2);
    assert_eq!(store.get(&a).unwrap(), state(10_000, 10_000));
    assert_eq!(store.newest_point().unwrap(), Some(10_000));
    assert_eq!(store.pending("s", 10).unwrap(), []);
    assert_eq!(store.log_len().unwrap(), 0);
    // Reporting: a key known from learning continues; after a gap, it reopens.
    let out = apply(&*store, &[sighting(&a, 10_100)], &opts(10_100));
    assert_eq!(out.records, []);
    let t = 10_101 + GAP;
    let out = apply(&*store, &[sighting(&a, t)], &opts(t));
    assert_eq!(opened(&out), [expect(&a, t, Some(10_100), false)]);
    assert_eq!(seqs(&out.records), [1]);
    assert_eq!(seqs(&store.pending("s", 10).unwrap()), [1]);
}

/// Each sender creates at most its allowance of new keys; its known keys, and other
/// senders' keys, are applied; what each created comes back in `new_keys`.
pub fn new_key_quota_limits_each_sender(make: Make) {
    let store = make();
    let (a, b, c, d, e) = (key(1), key(2), key(3), key(4), key(5));
    apply(&*store, &[sighting(&a, 1_000)], &opts(1_000));
    let batch = [
        sighting(&b, 1_000), // sender 0: new, within its one key
        sighting(&a, 1_001), // sender 0: known, never counted
        sighting(&c, 1_000), // sender 0: new, past its allowance
        sighting(&d, 1_000), // sender 1: new, within its two
        sighting(&b, 1_002), // sender 0: known now (created above)
        sighting(&e, 1_000), // sender 1: new, within its two
    ];
    let quota = ApplyOptions {
        new_keys: Some(crate::NewKeyQuota {
            sender: vec![0, 0, 0, 1, 0, 1],
            allowance: vec![1, 2],
        }),
        ..opts(2_000)
    };
    let out = apply(&*store, &batch, &quota);
    assert_eq!(out.refused, [(2, Refusal::NewKeyRateLimited)]);
    assert_eq!(out.new_keys, [1, 2]);
    assert_eq!(store.get(&c).unwrap(), None);
    for k in [&a, &b, &d, &e] {
        assert!(store.get(k).unwrap().is_some());
    }
    assert_eq!(store.key_count().unwrap(), 4);
    // The cap comes first: at it, a sender with allowance left is refused for the cap.
    let capped = ApplyOptions {
        max_keys: 4,
        new_keys: Some(crate::NewKeyQuota {
            sender: vec![0],
            allowance: vec![10],
        }),
        ..opts(2_000)
    };
    let out = apply(&*store, &[sighting(&c, 1_500)], &capped);
    assert_eq!(out.refused, [(0, Refusal::KeyCapReached)]);
    assert_eq!(out.new_keys, [0]);
}

/// Notices (records that are not the rule's) are appended after the batch's own
/// records, even to an empty batch, and reach every sink like the rest.
pub fn notices_are_appended_to_the_log(make: Make) {
    let store = make();
    store.register_sink("reader").unwrap();
    let notice = unseen_findings::Incident::capacity(10, 10, 3, 5_000);
    let with_notice = ApplyOptions {
        notices: vec![Record::Incident(Box::new(notice.clone()))],
        ..opts(5_000)
    };
    let out = apply(&*store, &[], &with_notice);
    assert_eq!(out.records.len(), 1);
    let out = apply(&*store, &[sighting(&key(1), 4_000)], &with_notice);
    assert_eq!(out.records.len(), 2);
    assert!(
        out.records[0].1.finding().is_some(),
        "the batch's own first"
    );
    assert_eq!(out.records[1].1.incident(), Some(&notice));
    let pending = store.pending("reader", 10).unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[0].1.incident(), Some(&notice));
    assert!(
        store.open_incidents().unwrap().is_empty(),
        "a notice is no open incident of the triage"
    );
}

/// At the key cap, new keys are refused (and leave no trace) while known keys of the
/// same batch are applied.
pub fn key_cap_refuses_only_new_keys(make: Make) {
    let store = make();
    let (a, b, c, d, e) = (key(1), key(2), key(3), key(4), key(5));
    let capped = |now, max_keys| ApplyOptions {
        max_keys,
        ..opts(now)
    };
    let batch = [
        sighting(&a, 1_000),
        sighting(&b, 1_000),
        sighting(&c, 5_000),
        sighting(&a, 1_001),
        sighting(&d, 1_000),
        sighting(&b, 2_000),
    ];
    let out = apply(&*store, &batch, &capped(2_000, 2));
    assert_eq!(
        out.refused,
        [(2, Refusal::KeyCapReached), (4, Refusal::KeyCapReached)]
    );
    assert_eq!(
        opened(&out),
        [
            expect(&a, 1_000, None, true),
            expect(&b, 1_000, None, true),
            expect(&b, 2_000, Some(1_000), false),
        ]
    );
    assert_eq!(out.keys, 2);
    assert_eq!(store.key_count().unwrap(), 2);
    assert_eq!(store.get(&a).unwrap(), state(1_001, 1_000));
    assert_eq!(store.get(&b).unwrap(), state(2_000, 2_000));
    assert_eq!(store.get(&c).unwrap(), None);
    assert_eq!(store.get(&d).unwrap(), None);
    assert_eq!(
        store.newest_point().unwrap(),
        Some(2_000),
        "a refused point changes nothing"
    );
    // Still at the cap: a known key reopens, a new one is refused.
    let out = apply(
        &*store,
        &[sighting(&e, 3_000), sighting(&a, 3_000)],
        &capped(3_000, 2),
    );
    assert_eq!(out.refused, [(0, Refusal::KeyCapReached)]);
    assert_eq!(opened(&out), [expect(&a, 3_000, Some(1_001), false)]);
    // A higher cap admits it.
    let out = apply(&*store, &[sighting(&e, 3_000)], &capped(3_000, 3));
    assert_eq!(out.refused, []);
    assert_eq!(out.keys, 3);
    // A cap of 0 refuses every new key.
    let out = apply(&*make(), &[sighting(&a, 1)], &capped(1, 0));
    assert_eq!((out.refused.len(), out.keys), (1, 0));
}

/// A batch may hold the same key several times: each sighting steps from the state the
/// previous one left (read-your-writes inside the transaction), and counts once
/// against the key cap.
pub fn same_key_several_times_in_one_batch(make: Make) {
    let store = make();
    let a = key(1);
    let batch = [
        sighting(&a, 1_000),
        sighting(&a, 1_500),
        sighting(&a, 3_000),
        sighting(&a, 2_000),
        sighting(&a, 3_000),
        sighting(&a, 3_100),
    ];
    let out = apply(&*store, &batch, &opts(3_100));
    assert_eq!(
        opened(&out),
        [
            expect(&a, 1_000, None, true),
            // 3_100 − 3_000 is exactly R: on time.
            expect(&a, 3_000, Some(1_500), false),
        ]
    );
    assert_eq!(seqs(&out.records), [1, 2]);
    assert_eq!(store.get(&a).unwrap(), state(3_100, 3_000));
    assert_eq!(out.keys, 1);

    let store = make();
    let one = ApplyOptions {
        max_keys: 1,
        ..opts(1_001)
    };
    let out = apply(
        &*store,
        &[
            sighting(&a, 1_000),
            sighting(&a, 1_001),
            sighting(&key(2), 1_001),
        ],
        &one,
    );
    assert_eq!(out.refused, [(2, Refusal::KeyCapReached)]);
    assert_eq!(out.records.len(), 1);
}

/// The same key and episode start give the same finding id in every store, at any
/// time; distinct episodes and keys give distinct ids. The mode is written as given.
pub fn finding_ids_are_deterministic(make: Make) {
    let batch: Vec<Sighting> = (0..5)
        .flat_map(|i| {
            let k = key(i);
            [sighting(&k, 1_000 + i as i64), sighting(&k, 5_000)]
        })
        .collect();
    let ids = |store: &dyn StateStore, now, strict| -> Vec<String> {
        let o = ApplyOptions {
            mode: KeyMode {
                strict,
                cluster_name: None,
            },
            ..opts(now)
        };
        let out = apply(store, &batch, &o);
        let findings: Vec<&Finding> = out
            .records
            .iter()
            .filter_map(|(_, r)| r.finding())
            .collect();
        for f in &findings {
            assert_eq!(f.mode, if strict { "strict" } else { "default" });
        }
        findings.into_iter().map(|f| f.finding_id.clone()).collect()
    };
    let first = ids(&*make(), 6_000, false);
    let second = ids(&*make(), 90_000, true);
    assert_eq!(first, second, "ids depend on the key and episode only");
    let expected: Vec<String> = (0..5)
        .flat_map(|i| {
            let k = key(i);
            [
                finding_id(&SEED_RULE, &k, 1_000 + i as i64),
                finding_id(&SEED_RULE, &k, 5_000),
            ]
        })
        .collect();
    assert_eq!(first, expected);
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len());
}

/// `forget` removes exactly the keys last seen more than B − R before the newest point;
/// a forgotten key's next sighting opens an episode with no previous sighting.
pub fn forgetting(make: Make) {
    let store = make();
    assert_eq!(store.forget(&WINDOWS).unwrap(), 0, "empty store");
    let (a, b, c) = (key(1), key(2), key(3));
    let batch = [
        sighting(&a, 1_000),
        sighting(&b, 1_500),
        sighting(&c, 1_901),
    ];
    apply(&*store, &batch, &opts(1_901));
    assert_eq!(store.forget(&WINDOWS).unwrap(), 1);
    assert_eq!(store.get(&a).unwrap(), None);
    assert_eq!(store.key_count().unwrap(), 2);
    assert_eq!(store.forget(&WINDOWS).unwrap(), 0, "nothing left to forget");
    // B is exactly B − R behind the newest point: kept; one second more: forgotten.
    apply(&*store, &[sighting(&c, 1_500 + GAP)], &opts(1_500 + GAP));
    assert_eq!(store.forget(&WINDOWS).unwrap(), 0);
    assert_eq!(store.get(&b).unwrap(), state(1_500, 1_500));
    apply(&*store, &[sighting(&c, 1_501 + GAP)], &opts(1_501 + GAP));
    assert_eq!(store.forget(&WINDOWS).unwrap(), 1);
    assert_eq!(store.get(&b).unwrap(), None);
    assert_eq!(store.key_count().unwrap(), 1);
    // A forgotten key comes back as never seen (it would have opened an episode anyway).
    let t = 2_500;
    let out = apply(&*store, &[sighting(&a, t)], &opts(t));
    assert_eq!(opened(&out), [expect(&a, t, None, false)]);
    // The windows passed decide: a wider gap forgets nothing.
    let wide = Windows {
        baseline: 100_000,
        ..WINDOWS
    };
    assert_eq!(store.forget(&wide).unwrap(), 0);
    assert_eq!(store.key_count().unwrap(), 2);
}

/// A new sink starts at the end of the log; registering again keeps the cursor.
pub fn a_new_sink_starts_at_the_end(make: Make) {
    let store = make();
    apply(&*store, &[sighting(&key(1), 1_000)], &opts(1_000));
    store.register_sink("s").unwrap();
    assert_eq!(store.pending("s", 10).unwrap(), []);
    let out = apply(&*store, &[sighting(&key(2), 1_000)], &opts(1_000));
    assert_eq!(seqs(&out.records), [2]);
    let pending = store.pending("s", 10).unwrap();
    assert_eq!(
        pending, out.records,
        "pending gives back what apply returned"
    );
    store.register_sink("s").unwrap();
    assert_eq!(seqs(&store.pending("s", 10).unwrap()), [2], "cursor kept");
}

/// `pending` pages from the cursor; `ack` moves it forwards only, and never past the
/// last finding (so no later finding is skipped).
pub fn pending_and_ack(make: Make) {
    let store = make();
    store.register_sink("s").unwrap();
    let batch: Vec<Sighting> = (1..=3).map(|i| sighting(&key(i), 1_000)).collect();
    apply(&*store, &batch, &opts(1_000));
    assert_eq!(seqs(&store.pending("s", 2).unwrap()), [1, 2]);
    assert_eq!(seqs(&store.pending("s", 10).unwrap()), [1, 2, 3]);
    assert_eq!(store.pending("s", 0).unwrap(), []);
    store.ack("s", 2).unwrap();
    assert_eq!(seqs(&store.pending("s", 10).unwrap()), [3]);
    store.ack("s", 1).unwrap();
    assert_eq!(
        seqs(&store.pending("s", 10).unwrap()),
        [3],
        "ack never moves back"
    );
    store.ack("s", 3).unwrap();
    assert_eq!(store.pending("s", 10).unwrap(), []);
    store.ack("s", 100).unwrap();
    let out = apply(&*store, &[sighting(&key(9), 1_000)], &opts(1_000));
    assert_eq!(seqs(&out.records), [4]);
    assert_eq!(
        seqs(&store.pending("s", 10).unwrap()),
        [4],
        "an ack past the end does not skip later findings"
    );
}

/// Two sinks have independent cursors; the log keeps what any sink still needs, and
/// drops what all have passed. Sequence numbers are never reused.
pub fn sinks_are_independent_and_the_log_is_pruned(make: Make) {
    let store = make();
    store.register_sink("a").unwrap();
    store.register_sink("b").unwrap();
    let batch: Vec<Sighting> = (1..=3).map(|i| sighting(&key(i), 1_000)).collect();
    apply(&*store, &batch, &opts(1_000));
    assert_eq!(store.log_len().unwrap(), 3);
    store.ack("a", 3).unwrap();
    assert_eq!(store.pending("a", 10).unwrap(), []);
    assert_eq!(seqs(&store.pending("b", 10).unwrap()), [1, 2, 3]);
    assert_eq!(store.log_len().unwrap(), 3, "b still needs them");
    store.ack("b", 1).unwrap();
    assert_eq!(store.log_len().unwrap(), 2);
    assert_eq!(seqs(&store.pending("b", 10).unwrap()), [2, 3]);
    store.ack("b", 3).unwrap();
    assert_eq!(store.log_len().unwrap(), 0);
    let out = apply(&*store, &[sighting(&key(4), 1_000)], &opts(1_000));
    assert_eq!(seqs(&out.records), [4], "numbers go on after pruning");
    assert_eq!(seqs(&store.pending("a", 10).unwrap()), [4]);
    // A removed sink no longer holds the log.
    store.ack("a", 4).unwrap();
    assert_eq!(store.log_len().unwrap(), 1);
    assert!(store.remove_sink("b").unwrap());
    assert!(!store.remove_sink("b").unwrap());
    assert_eq!(store.log_len().unwrap(), 0);
    assert!(matches!(
        store.pending("b", 1),
        Err(StoreError::UnknownSink { .. })
    ));
    // Findings appended while no sink is registered go to nobody: the first sink
    // registered starts after them and they are dropped.
    assert!(store.remove_sink("a").unwrap());
    apply(&*store, &[sighting(&key(5), 1_000)], &opts(1_000));
    assert_eq!(store.log_len().unwrap(), 1);
    store.register_sink("c").unwrap();
    assert_eq!(store.log_len().unwrap(), 0);
    assert_eq!(store.pending("c", 10).unwrap(), []);
}

/// Reading or acknowledging for a sink never registered is an error, not a silent
/// default.
pub fn unknown_sinks_are_errors(make: Make) {
    let store = make();
    assert!(matches!(
        store.pending("nope", 1),
        Err(StoreError::UnknownSink { sink }) if sink == "nope"
    ));
    assert!(matches!(
        store.ack("nope", 1),
        Err(StoreError::UnknownSink { .. })
    ));
}

/// `learning_started_at` keeps its first value.
pub fn learning_started_at_is_set_once(make: Make) {
    let store = make();
    assert_eq!(store.learning_started_at(100).unwrap(), 100);
    assert_eq!(store.learning_started_at(200).unwrap(), 100);
    apply(&*store, &[sighting(&key(1), 300)], &opts(300));
    assert_eq!(store.learning_started_at(400).unwrap(), 100);
}

/// An empty batch changes nothing and reports the key count.
pub fn an_empty_batch_changes_nothing(make: Make) {
    let store = make();
    apply(&*store, &[sighting(&key(1), 300)], &opts(300));
    let out = apply(&*store, &[], &opts(400));
    assert_eq!(
        out,
        Applied {
            keys: 1,
            ..Applied::default()
        }
    );
    assert_eq!(store.newest_point().unwrap(), Some(300));
}

/// Default mode with a 300 s rollout window and a 1,000 s digest window.
pub fn triage_opts(now: UnixSecs) -> ApplyOptions {
    ApplyOptions {
        mode: KeyMode::default(),
        triage: TriageSettings {
            rollout_window: 300,
            digest_window: 1_000,
            ..TriageSettings::default()
        },
        ..opts(now)
    }
}

fn on(cluster: &str, node: &str, image: &str) -> Key {
    Key {
        host: node.into(),
        cluster: cluster.into(),
        node: node.into(),
        image: image.into(),
    }
}

fn findings_of(applied: &Applied) -> Vec<Finding> {
    applied
        .records
        .iter()
        .filter_map(|(_, r)| r.finding().cloned())
        .collect()
}

fn incidents_of(applied: &Applied) -> Vec<unseen_findings::Incident> {
    applied
        .records
        .iter()
        .filter_map(|(_, r)| r.incident().cloned())
        .collect()
}

/// A new image rolled out to several nodes is one incident: its first episode is
/// fleet scope and opens it (sent at once, after the finding), the others join it, and
/// it closes with every member once the stream passes its window.
pub fn a_rollout_is_one_incident(make: Make) {
    let store = make();
    let image = "registry.example/team/new-api";
    let first = apply(
        &*store,
        &[sighting(&on("a", "n1", image), 10_000)],
        &triage_opts(10_000),
    );
    let f = &findings_of(&first)[0];
    let t = f.triage.as_ref().expect("default mode triages");
    assert_eq!(t.scope, Scope::Fleet);
    assert!(t.registry_new, "first image of its registry");
    let opened = incidents_of(&first);
    assert_eq!(opened.len(), 1, "opened with its first member");
    assert_eq!(
        (opened[0].kind, opened[0].state, opened[0].scope),
        (IncidentKind::Image, IncidentState::Open, Scope::Fleet)
    );
    assert_eq!(opened[0].findings, std::slice::from_ref(&f.finding_id));
    assert_eq!(
        t.incident_id.as_deref(),
        Some(opened[0].incident_id.as_str())
    );
    assert!(
        matches!(first.records[1].1, Record::Incident(_)),
        "finding first, then its incident"
    );

    let rest: Vec<Sighting> = (2..=5)
        .map(|n| sighting(&on("a", &format!("n{n}"), image), 10_060))
        .collect();
    let more = apply(&*store, &rest, &triage_opts(10_060));
    assert!(incidents_of(&more).is_empty(), "joining sends nothing");
    assert_eq!(findings_of(&more).len(), 4);
    for f in findings_of(&more) {
        let t = f.triage.unwrap();
        assert_eq!(
            t.scope,
            Scope::Node,
            "the image runs elsewhere in the cluster now"
        );
        assert_eq!(
            t.incident_id.as_deref(),
            Some(opened[0].incident_id.as_str())
        );
    }
    // Still within the window: nothing closes.
    let quiet = apply(
        &*store,
        &[sighting(&on("a", "n1", image), 10_299)],
        &triage_opts(10_299),
    );
    assert!(quiet.records.is_empty());
    let end = apply(
        &*store,
        &[sighting(&on("a", "n1", image), 10_300)],
        &triage_opts(10_300),
    );
    let closed = incidents_of(&end);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].incident_id, opened[0].incident_id);
    assert_eq!(closed[0].state, IncidentState::Closed);
    assert_eq!(closed[0].finding_count, 5);
    assert_eq!(closed[0].nodes.len(), 5);
}

/// An image that runs without a pause stays known for as long as it runs: its key's
/// sightings come closer together than the index's quantum (so most are not looked up
/// in the index), yet a node that starts it long after the gap is node scope, not fleet.
pub fn a_running_image_stays_known(make: Make) {
    let store = make();
    let image = "registry.example/team/web";
    let learn = ApplyOptions {
        report: false,
        ..triage_opts(1_000)
    };
    apply(&*store, &[sighting(&on("a", "a1", image), 1_000)], &learn);
    // Every second for three times B − R, in batches of 100.
    let end = 1_000 + 3 * GAP;
    let mut t = 1_001;
    while t <= end {
        let batch: Vec<Sighting> = (t..(t + 100).min(end + 1))
            .map(|s| sighting(&on("a", "a1", image), s))
            .collect();
        t += batch.len() as i64;
        let out = apply(&*store, &batch, &triage_opts(t - 1));
        assert!(findings_of(&out).is_empty(), "a running key opens nothing");
    }
    let out = apply(
        &*store,
        &[sighting(&on("a", "a9", image), end)],
        &triage_opts(end),
    );
    let f = findings_of(&out);
    assert_eq!(f.len(), 1, "the new node's key opens an episode");
    let triage = f[0].triage.as_ref().expect("default mode triages");
    assert_eq!(
        (triage.scope, triage.registry_new),
        (Scope::Node, false),
        "the image ran on a1 a second before"
    );
}

/// Scope, new nodes and digests: a known image on another node of its cluster is node
/// scope and goes to the cluster's digest; an image known only in another cluster is
/// cluster scope with an incident of its own; a node's first sighting opens a
/// `new_node` incident that its further images join.
pub fn scopes_new_nodes_and_digests(make: Make) {
    let store = make();
    let known = "registry.example/team/web";
    let elsewhere = "registry.example/team/batch";
    // Learned, not reported: the fleet runs `known` on a1, `other` on a2, `elsewhere` in b.
    let learn = ApplyOptions {
        report: false,
        ..triage_opts(1_000)
    };
    apply(
        &*store,
        &[
            sighting(&on("a", "a1", known), 1_000),
            sighting(&on("a", "a2", "registry.example/team/other"), 1_000),
            sighting(&on("b", "b1", elsewhere), 1_000),
        ],
        &learn,
    );
    let out = apply(
        &*store,
        &[
            sighting(&on("a", "a2", known), 1_100),
            sighting(&on("a", "a2", elsewhere), 1_100),
            sighting(&on("a", "a9", known), 1_100),
            sighting(&on("a", "a9", "registry.example/team/other"), 1_150),
        ],
        &triage_opts(1_150),
    );
    let f = findings_of(&out);
    let scope = |i: usize| f[i].triage.as_ref().unwrap().scope;
    assert_eq!(
        (scope(0), scope(1), scope(2), scope(3)),
        (Scope::Node, Scope::Cluster, Scope::Node, Scope::Node)
    );
    let opened = incidents_of(&out);
    let kinds: Vec<IncidentKind> = opened.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            IncidentKind::Digest,
            IncidentKind::Image,
            IncidentKind::NewNode
        ],
        "one incident each, opened in the order of their first members"
    );
    assert_eq!(opened[1].cluster.as_deref(), Some("a"));
    assert_eq!(opened[0].severity, "low");
    let incident = |i: usize| f[i].triage.as_ref().unwrap().incident_id.clone().unwrap();
    assert_eq!(
        incident(2),
        incident(3),
        "the new node's images join its incident"
    );
    assert_eq!(incident(2), opened[2].incident_id);
    // Within the rollout window, the cluster incident of the image takes its next
    // episode in the cluster.
    let later = apply(
        &*store,
        &[sighting(&on("a", "a1", elsewhere), 1_200)],
        &triage_opts(1_200),
    );
    assert!(incidents_of(&later).is_empty());
    assert_eq!(
        findings_of(&later)[0]
            .triage
            .as_ref()
            .unwrap()
            .incident_id
            .as_deref(),
        Some(opened[1].incident_id.as_str()),
    );
    // Past it, a node-scope episode goes to the digest of its window.
    let digest = apply(
        &*store,
        &[sighting(
            &on("a", "a1", "registry.example/team/other"),
            1_500,
        )],
        &triage_opts(1_500),
    );
    assert_eq!(
        findings_of(&digest)[0]
            .triage
            .as_ref()
            .unwrap()
            .incident_id
            .as_deref(),
        Some(opened[0].incident_id.as_str()),
    );
}

/// Default-mode findings carry the point's evidence; strict mode has none of it.
pub fn evidence_is_kept_with_the_episode(make: Make) {
    let store = make();
    let mut context = unseen_model::Context::default();
    context.0[unseen_model::ctx::NAMESPACE] = Some("payments");
    context.0[unseen_model::ctx::POD_NAME] = Some("api-7d4b9c6f8d-x2x7q");
    context.0[unseen_model::ctx::IMAGE_TAG] = Some("1.4.2");
    let s = Sighting {
        context: OwnedContext::new(&context),
        image_raw: Some("Registry.Example/team/api:1.4.2".into()),
        ..sighting(&on("a", "n1", "registry.example/team/api"), 5_000)
    };
    let out = apply(&*store, std::slice::from_ref(&s), &triage_opts(5_000));
    let t = findings_of(&out)[0].triage.clone().unwrap();
    assert_eq!(t.namespace.as_deref(), Some("payments"));
    assert_eq!(t.pod_name.as_deref(), Some("api-7d4b9c6f8d-x2x7q"));
    assert_eq!(t.pod_uid, None, "absent is null, never invented");
    assert_eq!(t.image_tag.as_deref(), Some("1.4.2"));
    let w = t.workload.unwrap();
    assert_eq!(
        (w.kind.as_deref(), w.name.as_str(), w.derived),
        (Some("Deployment"), "api", true)
    );
    assert_eq!(t.image.raw, "Registry.Example/team/api:1.4.2");
    assert_eq!(t.image.registry.as_deref(), Some("registry.example"));
    assert_eq!(t.image.repository.as_deref(), Some("team/api"));
    let strict = make();
    let out = apply(&*strict, &[s], &opts(5_000));
    assert_eq!(findings_of(&out)[0].triage, None);
}

/// A check of the suite.
pub type Check = fn(Make);

/// Every check, by name.
pub const ALL: &[(&str, Check)] = &[
    (
        "first_sighting_opens_an_episode",
        first_sighting_opens_an_episode,
    ),
    (
        "a_sighting_within_the_gap_continues",
        a_sighting_within_the_gap_continues,
    ),
    (
        "a_sighting_after_the_gap_opens_an_episode_with_previous_seen",
        a_sighting_after_the_gap_opens_an_episode_with_previous_seen,
    ),
    (
        "out_of_order_points_never_open_nor_move_state_back",
        out_of_order_points_never_open_nor_move_state_back,
    ),
    ("late_flag", late_flag),
    (
        "learning_records_state_without_findings",
        learning_records_state_without_findings,
    ),
    (
        "key_cap_refuses_only_new_keys",
        key_cap_refuses_only_new_keys,
    ),
    (
        "new_key_quota_limits_each_sender",
        new_key_quota_limits_each_sender,
    ),
    (
        "notices_are_appended_to_the_log",
        notices_are_appended_to_the_log,
    ),
    (
        "same_key_several_times_in_one_batch",
        same_key_several_times_in_one_batch,
    ),
    (
        "finding_ids_are_deterministic",
        finding_ids_are_deterministic,
    ),
    ("forgetting", forgetting),
    ("a_new_sink_starts_at_the_end", a_new_sink_starts_at_the_end),
    ("pending_and_ack", pending_and_ack),
    (
        "sinks_are_independent_and_the_log_is_pruned",
        sinks_are_independent_and_the_log_is_pruned,
    ),
    ("unknown_sinks_are_errors", unknown_sinks_are_errors),
    (
        "learning_started_at_is_set_once",
        learning_started_at_is_set_once,
    ),
    (
        "an_empty_batch_changes_nothing",
        an_empty_batch_changes_nothing,
    ),
    ("a_rollout_is_one_incident", a_rollout_is_one_incident),
    ("scopes_new_nodes_and_digests", scopes_new_nodes_and_digests),
    ("a_running_image_stays_known", a_running_image_stays_known),
    (
        "evidence_is_kept_with_the_episode",
        evidence_is_kept_with_the_episode,
    ),
    (
        "suppressed_findings_are_recorded_but_open_no_incident",
        suppressed_findings_are_recorded_but_open_no_incident,
    ),
    (
        "risk_threshold_fires_once_per_window",
        risk_threshold_fires_once_per_window,
    ),
    (
        "sinks_lists_the_registered_cursors",
        sinks_lists_the_registered_cursors,
    ),
    ("the_key_mode_is_bound", the_key_mode_is_bound),
    (
        "history_outlives_the_log_and_is_pruned_by_age",
        history_outlives_the_log_and_is_pruned_by_age,
    ),
    (
        "audit_entries_are_kept_in_order",
        audit_entries_are_kept_in_order,
    ),
    (
        "for_each_key_visits_every_key",
        for_each_key_visits_every_key,
    ),
];

/// The history keeps every record under its log number after the sinks passed it,
/// reads from any point and by number, and is pruned by `detected_at` only.
pub fn history_outlives_the_log_and_is_pruned_by_age(make: Make) {
    let store = make();
    store.register_sink("a").unwrap();
    apply(&*store, &[sighting(&key(1), 1_000)], &opts(1_000));
    apply(
        &*store,
        &[sighting(&key(2), 2_000), sighting(&key(3), 2_000)],
        &opts(2_000),
    );
    store.ack("a", 3).unwrap();
    assert_eq!(store.log_len().unwrap(), 0);
    let all = store.history(0, 100).unwrap();
    assert_eq!(
        seqs(&all),
        [1, 2, 3],
        "the sinks' cursors do not prune the history"
    );
    let images: Vec<&str> = all
        .iter()
        .map(|(_, r)| r.finding().expect("a finding").image.as_str())
        .collect();
    assert_eq!(images, [&key(1).image, &key(2).image, &key(3).image]);
    assert_eq!(seqs(&store.history(1, 1).unwrap()), [2], "after, limit");
    assert_eq!(store.history(3, 10).unwrap(), []);
    let got = store.history_get(&[3, 9, 1]).unwrap();
    assert_eq!(
        seqs(&got),
        [3, 1],
        "in the order asked, unknown numbers left out"
    );
    assert_eq!(got[1].1, all[0].1);
    // detected_at is the batch's `now`: 1,000 for the first record, 2,000 for the rest.
    assert_eq!(
        store.prune_history(1_000).unwrap(),
        0,
        "nothing older than 1,000"
    );
    assert_eq!(store.prune_history(1_500).unwrap(), 1);
    assert_eq!(seqs(&store.history(0, 100).unwrap()), [2, 3]);
    assert_eq!(store.history_get(&[1]).unwrap(), []);
    assert_eq!(store.prune_history(1_500).unwrap(), 0, "idempotent");
    assert_eq!(store.prune_history(3_000).unwrap(), 2);
    assert_eq!(store.history(0, 100).unwrap(), []);
    let out = apply(&*store, &[sighting(&key(4), 3_000)], &opts(3_000));
    assert_eq!(seqs(&out.records), [4]);
    assert_eq!(seqs(&store.history(0, 100).unwrap()), [4], "numbers go on");
}

/// Audit entries are numbered from 1, kept whole and in order, and read from any point.
pub fn audit_entries_are_kept_in_order(make: Make) {
    let store = make();
    assert_eq!(store.audit(0, 10).unwrap(), []);
    let entry = |i: i64| crate::AuditEntry {
        at: 1_000 + i,
        actor: format!("analyst-{i}"),
        action: "incident.ack".into(),
        target: format!("incident-{i}"),
        note: (i % 2 == 0).then(|| format!("note {i}")),
        detail: (i == 3).then(|| "reason = \"x\"".to_string()),
    };
    for i in 1..=4 {
        assert_eq!(store.append_audit(&entry(i)).unwrap(), i as u64);
    }
    let all = store.audit(0, 10).unwrap();
    assert_eq!(
        all,
        (1..=4).map(|i| (i as u64, entry(i))).collect::<Vec<_>>()
    );
    assert_eq!(store.audit(2, 1).unwrap(), [(3, entry(3))]);
    assert_eq!(store.audit(4, 10).unwrap(), []);
}

/// `for_each_key` sees every tracked key once, with its state.
pub fn for_each_key_visits_every_key(make: Make) {
    let store = make();
    let mut seen = Vec::new();
    store
        .for_each_key(&mut |k, s| seen.push((k.clone(), *s)))
        .unwrap();
    assert_eq!(seen, []);
    apply(
        &*store,
        &[sighting(&key(1), 1_000), sighting(&key(2), 1_010)],
        &opts(1_010),
    );
    apply(&*store, &[sighting(&key(1), 1_020)], &opts(1_020));
    store
        .for_each_key(&mut |k, s| seen.push((k.clone(), *s)))
        .unwrap();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            (key(1), state(1_020, 1_000).unwrap()),
            (key(2), state(1_010, 1_010).unwrap()),
        ]
    );
}

/// The first key mode is recorded; the same again is fine, another one is refused.
pub fn the_key_mode_is_bound(make: Make) {
    let store = make();
    store.bind_key_mode("default").unwrap();
    store.bind_key_mode("default").unwrap();
    match store.bind_key_mode("strict") {
        Err(StoreError::ModeMismatch { stored, requested }) => {
            assert_eq!((stored.as_str(), requested.as_str()), ("default", "strict"))
        }
        other => panic!("another mode must be refused: {other:?}"),
    }
    store.bind_key_mode("default").unwrap();
}

/// `sinks` lists every registered cursor with its position, in name order; a removed
/// one is gone.
pub fn sinks_lists_the_registered_cursors(make: Make) {
    let store = make();
    assert!(store.sinks().unwrap().is_empty());
    store.register_sink("webhook").unwrap();
    apply(
        &*store,
        &[sighting(&key(1), 300), sighting(&key(2), 300)],
        &opts(300),
    );
    store.register_sink("file").unwrap();
    store.ack("webhook", 1).unwrap();
    assert_eq!(
        store.sinks().unwrap(),
        vec![("file".to_string(), 2), ("webhook".to_string(), 1)]
    );
    assert!(store.remove_sink("webhook").unwrap());
    assert_eq!(store.sinks().unwrap(), vec![("file".to_string(), 2)]);
}

/// A host whose findings' scores add up past the threshold within the risk window
/// raises one `risk_threshold` incident listing them; its further findings join it and
/// raise no other until a window after the first; then a new crossing fires again.
pub fn risk_threshold_fires_once_per_window(make: Make) {
    let store = make();
    let at = |now| ApplyOptions {
        triage: TriageSettings {
            risk_threshold: 100,
            risk_window: 1_000,
            ..triage_opts(now).triage
        },
        ..triage_opts(now)
    };
    let risk_incidents = |applied: &Applied| -> Vec<unseen_findings::Incident> {
        incidents_of(applied)
            .into_iter()
            .filter(|i| i.kind == IncidentKind::RiskThreshold)
            .collect()
    };
    // Names far apart, so that none is a look-alike of another (which would add to its score).
    let names = [
        "",
        "payments",
        "inventory",
        "search-indexer",
        "gateway",
        "notifier",
        "scheduler",
        "reporting",
        "metrics-agent",
        "billing",
    ];
    let image = |n: usize| format!("registry.example/team/{}", names[n]);
    // A fleet-new image of a new registry scores 20 + 30 + 20 = 70; the next ones 50.
    let first = apply(
        &*store,
        &[sighting(&on("a", "n1", &image(1)), 10_000)],
        &at(10_000),
    );
    assert_eq!(findings_of(&first)[0].risk_score, 70);
    assert!(risk_incidents(&first).is_empty(), "70 is not over 100");
    // Another host's findings count for it alone.
    let other = apply(
        &*store,
        &[sighting(&on("a", "n9", &image(9)), 10_005)],
        &at(10_005),
    );
    assert!(risk_incidents(&other).is_empty());
    let second = apply(
        &*store,
        &[sighting(&on("a", "n1", &image(2)), 10_010)],
        &at(10_010),
    );
    let crossed = risk_incidents(&second);
    assert_eq!(crossed.len(), 1, "70 + 50 = 120 crosses 100");
    let incident = &crossed[0];
    assert_eq!(incident.state, IncidentState::Open);
    assert_eq!(incident.risk_object.as_deref(), Some("n1"));
    assert_eq!(incident.risk_score, 120);
    assert_eq!(
        incident.findings,
        vec![
            findings_of(&first)[0].finding_id.clone(),
            findings_of(&second)[0].finding_id.clone()
        ],
        "lists the contributing findings, oldest first"
    );
    assert_eq!(incident.scope, Scope::Fleet);
    assert_eq!(
        findings_of(&second)[0]
            .triage
            .as_ref()
            .unwrap()
            .incident_id
            .as_deref(),
        incidents_of(&second)
            .iter()
            .find(|i| i.kind == IncidentKind::Image)
            .map(|i| i.incident_id.as_str()),
        "a finding's own incident stays its grouping incident"
    );
    // Within the window: joins, fires nothing, however high the sum.
    let third = apply(
        &*store,
        &[sighting(&on("a", "n1", &image(3)), 10_020)],
        &at(10_020),
    );
    assert!(risk_incidents(&third).is_empty(), "once per window");
    // The window ends at 10,010 + 1,000: it closes with its three members (the stream
    // passes it with a point of another host's running key, which opens no episode).
    let clock = on("a", "n8", &image(8));
    apply(&*store, &[sighting(&clock, 10_500)], &at(10_500));
    let end = apply(&*store, &[sighting(&clock, 11_010)], &at(11_010));
    let closed = risk_incidents(&end);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].incident_id, incident.incident_id);
    assert_eq!(closed[0].state, IncidentState::Closed);
    assert_eq!((closed[0].finding_count, closed[0].risk_score), (3, 170));
    // A window later a new crossing fires again: (10,020, 11,030] holds 50 + 50 … + 50.
    let mut again = Vec::new();
    for (n, t) in [(4, 11_020), (5, 11_025), (6, 11_030)] {
        let applied = apply(&*store, &[sighting(&on("a", "n1", &image(n)), t)], &at(t));
        again.push(risk_incidents(&applied).len());
    }
    assert_eq!(again, [0, 0, 1], "100 is not over 100; 150 is");
    // Off at 0.
    let off = make();
    let zero = |now| ApplyOptions {
        triage: TriageSettings {
            risk_threshold: 0,
            ..at(now).triage
        },
        ..at(now)
    };
    let mut any = 0;
    for n in 1..=5 {
        let applied = apply(
            &*off,
            &[sighting(&on("a", "n1", &image(n)), 10_000)],
            &zero(10_000),
        );
        any += risk_incidents(&applied).len();
    }
    assert_eq!(any, 0);
}

/// Suppressed findings are recorded and marked, open and join no incident, and a rule
/// stops matching at its expiry (judged at the batch's clock); the image they show is
/// known all the same.
pub fn suppressed_findings_are_recorded_but_open_no_incident(make: Make) {
    let store = make();
    let rules = unseen_findings::Suppressions::parse(
        "rules.toml",
        "[[suppress]]\nname = \"debug\"\nreason = \"debug pods\"\nexpires = \"1970-01-01T03:00:00Z\"\n\"container.image.name\" = \"registry.example/debug/*\"\n",
    )
    .expect("valid rules");
    let with_rules = |now| ApplyOptions {
        suppressions: std::sync::Arc::new(rules.clone()),
        ..triage_opts(now)
    };
    let image = "registry.example/debug/shell";
    let first = apply(
        &*store,
        &[sighting(&on("a", "n1", image), 10_000)],
        &with_rules(10_000),
    );
    let found = findings_of(&first);
    assert_eq!(found.len(), 1, "still recorded");
    let s = found[0].suppressed.as_ref().expect("marked suppressed");
    assert_eq!(
        (s.rule.as_str(), s.reason.as_str()),
        ("debug", "debug pods")
    );
    assert!(incidents_of(&first).is_empty(), "opens no incident");
    assert_eq!(found[0].triage.as_ref().unwrap().incident_id, None);
    // Another node: the image is known now (node scope), still suppressed, nothing sent.
    let second = apply(
        &*store,
        &[sighting(&on("a", "n2", image), 10_060)],
        &with_rules(10_060),
    );
    let f = &findings_of(&second)[0];
    assert!(f.suppressed.is_some());
    assert_eq!(f.triage.as_ref().unwrap().scope, Scope::Node);
    assert!(incidents_of(&second).is_empty());
    // Past the expiry (03:00 = 10,800 s) the rule no longer matches: the next episode
    // is an ordinary finding with its incident.
    let other = "registry.example/debug/tools";
    let after = apply(
        &*store,
        &[sighting(&on("a", "n1", other), 10_800)],
        &with_rules(10_800),
    );
    assert_eq!(findings_of(&after)[0].suppressed, None);
    assert_eq!(incidents_of(&after).len(), 1);
    // Strict mode marks too (and nothing else changes in its output).
    let strict = make();
    let strict_opts = ApplyOptions {
        suppressions: std::sync::Arc::new(rules.clone()),
        ..opts(10_000)
    };
    let got = apply(
        &*strict,
        &[sighting(&on("a", "n1", image), 10_000)],
        &strict_opts,
    );
    let f = &findings_of(&got)[0];
    assert!(f.triage.is_none());
    assert_eq!(
        f.suppressed.as_ref().map(|s| s.rule.as_str()),
        Some("debug")
    );
}

/// Runs every check in turn; panics at the first failure, naming the check.
pub fn run_all(make: Make) {
    for (name, check) in ALL {
        eprintln!("conformance: {name}");
        check(&mut *make);
    }
}

/// One `#[test]` per check of the suite, for a backend. `$make` is an expression giving
/// a `FnMut() -> Box<dyn StateStore>` that returns a fresh, empty store each call.
///
/// ```ignore
/// mod mem {
///     unseen_store::conformance_tests!(|| Box::new(unseen_store::MemStore::new()) as Box<dyn unseen_store::StateStore>);
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            first_sighting_opens_an_episode,
            a_sighting_within_the_gap_continues,
            a_sighting_after_the_gap_opens_an_episode_with_previous_seen,
            out_of_order_points_never_open_nor_move_state_back,
            late_flag,
            learning_records_state_without_findings,
            key_cap_refuses_only_new_keys,
            new_key_quota_limits_each_sender,
            notices_are_appended_to_the_log,
            same_key_several_times_in_one_batch,
            finding_ids_are_deterministic,
            forgetting,
            a_new_sink_starts_at_the_end,
            pending_and_ack,
            sinks_are_independent_and_the_log_is_pruned,
            unknown_sinks_are_errors,
            learning_started_at_is_set_once,
            an_empty_batch_changes_nothing,
            a_rollout_is_one_incident,
            scopes_new_nodes_and_digests,
            a_running_image_stays_known,
            evidence_is_kept_with_the_episode,
            suppressed_findings_are_recorded_but_open_no_incident,
            risk_threshold_fires_once_per_window,
            sinks_lists_the_registered_cursors,
            the_key_mode_is_bound,
            history_outlives_the_log_and_is_pruned_by_age,
            audit_entries_are_kept_in_order,
            for_each_key_visits_every_key,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let mut make = $make;
                $crate::conformance::$check(&mut make);
            }
        )*
        /// The macro's list and `conformance::ALL` name the same checks.
        #[test]
        fn every_check_is_listed() {
            let listed: &[&str] = &[$(stringify!($check)),*];
            let all: Vec<&str> = $crate::conformance::ALL.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, all.as_slice());
        }
    };
}
