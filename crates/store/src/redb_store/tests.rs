//! redb-specific behaviour: persistence across reopen, refusing incompatible files,
//! open errors, chunked forgetting, the key encoding. The backend-independent
//! contract is `crate::conformance`, run from `tests/conformance.rs`.

use super::*;
use crate::conformance::{key, opts, sighting, WINDOWS};
use crate::state_log::encode_state;
use crate::MemStore;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn state_log_cursors_and_learning_survive_reopen() {
    let dir = temp();
    let (a, b, c) = (key(1), key(2), key(3));
    let (before_states, before_pending_y) = {
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.learning_started_at(500).unwrap(), 500);
        store.register_sink("x").unwrap();
        store.register_sink("y").unwrap();
        let out = store
            .apply(
                &[
                    sighting(&a, 1_000),
                    sighting(&b, 1_000),
                    sighting(&c, 1_200),
                ],
                &opts(1_200),
            )
            .unwrap();
        assert_eq!(out.records.len(), 3);
        store.ack("x", 2).unwrap();
        (store.states().unwrap(), store.pending("y", 10).unwrap())
    };
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.states().unwrap(), before_states);
    assert_eq!(store.key_count().unwrap(), 3);
    assert_eq!(store.newest_point().unwrap(), Some(1_200));
    assert_eq!(store.learning_started_at(9_999).unwrap(), 500);
    assert_eq!(store.pending("y", 10).unwrap(), before_pending_y);
    let x: Vec<u64> = store
        .pending("x", 10)
        .unwrap()
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(x, [3]);
    assert_eq!(store.log_len().unwrap(), 3, "y has acknowledged nothing");
    // Sequence numbers go on; the continuing key does not reopen.
    let out = store
        .apply(
            &[sighting(&a, 1_300), sighting(&key(4), 1_300)],
            &opts(1_300),
        )
        .unwrap();
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.records[0].0, 4);
    assert_eq!(store.get(&a).unwrap().unwrap().episode_start, 1_000);
}

#[test]
fn reopening_with_another_schema_version_is_refused() {
    let dir = temp();
    drop(RedbStore::open(dir.path()).unwrap());
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    let StoreError::Incompatible { path: p, message } = &err else {
        panic!("expected Incompatible, got {err:?}");
    };
    assert_eq!(p, &path.display().to_string());
    assert!(
        message.contains(&format!(
            "a newer unseen (state schema version {})",
            SCHEMA_VERSION + 1
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("this unseen reads version {SCHEMA_VERSION}")),
        "{message}"
    );
    assert!(message.contains("move the file away"), "{message}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

/// Files of the versions before: 1 (no state log) and 2 (an image index written through,
/// no index entries in the log). Their keys and index are read, and they are marked with
/// the current version, so that a release that would misread them refuses them from then
/// on.
#[test]
fn older_files_are_read_and_marked_with_the_current_version() {
    for version in SCHEMA_VERSIONS_UPGRADED {
        let dir = temp();
        let path = dir.path().join(FILE_NAME);
        let k = key(7);
        let mut encoded = Vec::new();
        encode_key(&k, &mut encoded);
        let state = KeyState {
            last_seen: 1_000,
            episode_start: 500,
        };
        let mut index = Index::default();
        index.observe(&k, 1_000, &WINDOWS);
        let (entry, entry_state) = index.take_dirty().remove(0);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(META_SCHEMA_VERSION, version).unwrap();
                meta.insert(META_LAST_SEQ, 0).unwrap();
                txn.open_table(KEYS)
                    .unwrap()
                    .insert(encoded.as_slice(), &encode_state(&state))
                    .unwrap();
                txn.open_table(INDEX)
                    .unwrap()
                    .insert(
                        entry.encode().as_slice(),
                        &encode_state(&entry_state.unwrap()),
                    )
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(state), "version {version}");
        assert_eq!(store.key_count().unwrap(), 1);
        assert_eq!(store.triage().unwrap().index.state_of(&entry), entry_state);
        assert_eq!(
            store.read_meta(META_SCHEMA_VERSION).unwrap(),
            Some(SCHEMA_VERSION)
        );
        // The first snapshot takes the old `keys` table's states over and empties it.
        let store = store.with_fold(1, 1);
        let mut t = 1_000;
        while store.read_meta(META_KEYS_SNAPSHOT).unwrap().is_none() {
            t += 60;
            store.apply(&[sighting(&key(8), t)], &opts(t)).unwrap();
        }
        let txn = store.db.begin_read().unwrap();
        for table in [KEYS, INDEX] {
            assert!(
                txn.open_table(table)
                    .is_err_and(|e| matches!(e, TableError::TableDoesNotExist(_))),
                "version {version}: the table {} is gone",
                table.name()
            );
        }
        drop((txn, store));
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(state), "version {version}");
        assert_eq!(store.key_count().unwrap(), 2);
        assert_eq!(store.triage().unwrap().index.state_of(&entry), entry_state);
    }
}

/// The log rows a snapshot covers are deleted once it is recorded: a missing, damaged or
/// older snapshot is refused at open, naming the file, rather than loading a state without
/// the keys it held.
#[test]
fn a_missing_or_damaged_snapshot_is_refused() {
    let dir = temp();
    let path = dir.path().join(SNAPSHOT_FILE);
    let keys: Vec<Sighting> = (0..50).map(|i| sighting(&key(i), 1_000)).collect();
    let first = {
        let store = RedbStore::open(dir.path()).unwrap().with_fold(1, 1);
        let mut t = 1_000;
        store.apply(&keys, &opts(t)).unwrap();
        let mut recorded = |store: &RedbStore| {
            // Each apply writes a chunk: a cycle of 50 keys ends within a few.
            for _ in 0..100 {
                t += 60;
                store.apply(&[sighting(&key(0), t)], &opts(t)).unwrap();
                if let Some(row) = store.read_meta(META_KEYS_SNAPSHOT).unwrap() {
                    return row;
                }
            }
            panic!("no snapshot was recorded");
        };
        let row = recorded(&store);
        let first = std::fs::read(&path).unwrap();
        // A later cycle, whose snapshot covers more rows.
        while recorded(&store) == row {}
        first
    };
    let good = std::fs::read(&path).unwrap();
    let reopened = RedbStore::open(dir.path()).unwrap();
    assert_eq!(reopened.key_count().unwrap(), 50);
    drop(reopened);
    let refused = |what: &str| {
        let e = RedbStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(SNAPSHOT_FILE) && e.contains(what), "{e}");
    };
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    refused("checksum");
    // An older snapshot than the one recorded.
    std::fs::write(&path, &first).unwrap();
    refused("older");
    std::fs::remove_file(&path).unwrap();
    refused("missing");
    // A partial snapshot left by a crash is removed; the good one is read.
    std::fs::write(&path, &good).unwrap();
    std::fs::write(dir.path().join("keys.snapshot.tmp"), b"partial").unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.key_count().unwrap(), 50);
    assert!(!dir.path().join("keys.snapshot.tmp").exists());
}

#[test]
fn another_programs_redb_file_is_refused() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let other: TableDefinition<&str, &str> = TableDefinition::new("settings");
        txn.open_table(other).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Incompatible { message, .. } if message.contains("settings") && message.contains("no unseen schema version")),
        "{err}"
    );
}

#[test]
fn a_meta_table_of_another_type_is_refused() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: TableDefinition<&str, &str> = TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Incompatible { message, .. } if message.contains("unexpected layout")),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_redb_is_refused() {
    let dir = temp();
    std::fs::write(
        dir.path().join(FILE_NAME),
        b"{\"this is\": \"not redb\"}\n".repeat(300),
    )
    .unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Incompatible { message, .. } if message.contains("not a state file of unseen")),
        "{err}"
    );
}

#[test]
fn a_path_that_is_not_a_directory_is_an_open_error_naming_it() {
    let dir = temp();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for bad in [file.clone(), file.join("below")] {
        let err = RedbStore::open(&bad).unwrap_err();
        let StoreError::Open { path, message } = &err else {
            panic!("expected Open, got {err:?}");
        };
        assert_eq!(path, &bad.display().to_string());
        assert!(message.contains("writable directory"), "{message}");
        assert!(err.to_string().contains(&bad.display().to_string()));
    }
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_is_an_open_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        // Root (or a capability) writes anyway: nothing to check here.
        eprintln!("skipped: this user can write to a read-only directory");
        return;
    }
    let err = RedbStore::open(&ro).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path, message } if path.ends_with(FILE_NAME) && message.contains("writable")),
        "{err}"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = temp();
    let _first = RedbStore::open(dir.path()).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { message, .. } if message.contains("another unseen")),
        "{err}"
    );
}

#[test]
fn forgetting_in_small_chunks_matches_the_model() {
    let dir = temp();
    let mut store = RedbStore::open(dir.path()).unwrap();
    store.forget_chunk = 3;
    let model = MemStore::new();
    // 20 keys, last seen 100 s apart; the newest point is at 20 * 100.
    let batch: Vec<Sighting> = (0..20)
        .map(|i| sighting(&key(i), 100 * (i as i64 + 1)))
        .collect();
    let o = opts(2_000);
    assert_eq!(
        store.apply(&batch, &o).unwrap().without_io(),
        model.apply(&batch, &o).unwrap()
    );
    let forgotten = store.forget(&WINDOWS).unwrap();
    assert_eq!(forgotten, model.forget(&WINDOWS).unwrap());
    // last_seen < 2_000 − GAP (900): keys 0..=9 (100..=1_000 s).
    assert_eq!(forgotten, 10);
    assert_eq!(store.states().unwrap(), model.states().unwrap());
    assert_eq!(store.key_count().unwrap(), 10);
    assert_eq!(store.forget(&WINDOWS).unwrap(), 0);
}

#[test]
fn key_count_is_the_number_of_keys() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap();
    for round in 0..3i64 {
        let batch: Vec<Sighting> = (0..50)
            .map(|i| sighting(&key(i * (round as usize + 1)), 1_000 * (round + 1)))
            .collect();
        let out = store.apply(&batch, &opts(1_000 * (round + 1))).unwrap();
        assert_eq!(out.keys, store.states().unwrap().len() as u64);
        assert_eq!(store.key_count().unwrap(), out.keys);
    }
    store.forget(&WINDOWS).unwrap();
    assert_eq!(
        store.key_count().unwrap(),
        store.states().unwrap().len() as u64
    );
}

#[test]
fn key_encoding_round_trips_and_is_unambiguous() {
    let k = Key {
        host: "a|b".into(),
        cluster: "c".into(),
        node: "".into(),
        image: "é/ü:1".into(),
    };
    let mut buf = Vec::new();
    encode_key(&k, &mut buf);
    assert_eq!(decode_key(&buf), Some(k.clone()));
    let shifted = Key {
        host: "a".into(),
        cluster: "b|c".into(),
        ..k.clone()
    };
    let mut other = Vec::new();
    encode_key(&shifted, &mut other);
    assert_ne!(buf, other);
    assert_eq!(decode_key(&buf[..buf.len() - 1]), None);
    buf.push(0);
    assert_eq!(decode_key(&buf), None);
    let s = KeyState {
        last_seen: -5,
        episode_start: i64::MAX,
    };
    assert_eq!(decode_state(&encode_state(&s)), s);
    assert_eq!(meta_to_secs(secs_to_meta(-1)), -1);
}

/// A large batch: ten thousand new keys in one transaction, then the same keys again.
#[test]
fn apply_of_10_000_new_then_known_keys() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap();
    let keys: Vec<Key> = (0..10_000)
        .map(|i| Key {
            host: format!("ip-10-0-{}-{}.ec2.internal", i % 200, i % 250),
            cluster: "prod-eu-west-1".into(),
            node: format!("ip-10-0-{}-{}.ec2.internal", i % 200, i % 250),
            image: format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/service-{i}"),
        })
        .collect();
    let new: Vec<Sighting> = keys.iter().map(|k| sighting(k, 1_700_000_000)).collect();
    let known: Vec<Sighting> = keys.iter().map(|k| sighting(k, 1_700_000_060)).collect();
    let out = store.apply(&new, &opts(1_700_000_000)).unwrap();
    assert_eq!(out.records.len(), 10_000);
    assert_eq!(out.keys, 10_000);
    let out = store.apply(&known, &opts(1_700_000_060)).unwrap();
    assert_eq!(out.records.len(), 0);
    assert_eq!(store.key_count().unwrap(), 10_000);
    assert_eq!(store.log_len().unwrap(), 10_000);
    let mem = MemStore::new();
    mem.apply(&new, &opts(1_700_000_000)).unwrap();
    mem.apply(&known, &opts(1_700_000_060)).unwrap();
    assert_eq!(mem.states().unwrap(), store.states().unwrap());
}

/// The triage state (image index, open incidents) is written with each batch: a store
/// reopened between batches produces exactly the records of one that never stopped, and
/// forgetting drops index entries past B − R from the file too.
#[test]
fn triage_state_survives_reopen_and_gives_the_same_records() {
    use crate::conformance::triage_opts;
    let on = |node: &str, image: &str| unseen_normalize::Key {
        host: node.into(),
        cluster: "a".into(),
        node: node.into(),
        image: image.into(),
    };
    let batches: Vec<(i64, Vec<Sighting>)> = vec![
        (1_000, vec![sighting(&on("n1", "r.example/t/api"), 1_000)]),
        (
            1_060,
            vec![
                sighting(&on("n2", "r.example/t/api"), 1_060),
                sighting(&on("n3", "r.example/t/web"), 1_060),
            ],
        ),
        // n1's scores cross the risk threshold (70 + 50), then one more joins.
        (
            1_100,
            vec![sighting(&on("n1", "r.example/t/search-indexer"), 1_100)],
        ),
        (
            1_150,
            vec![sighting(&on("n1", "r.example/t/gateway"), 1_150)],
        ),
        (1_200, vec![sighting(&on("n4", "r.example/t/api"), 1_200)]),
        (1_400, vec![sighting(&on("n5", "r.example/t/web"), 1_400)]),
        (2_500, vec![sighting(&on("n1", "r.example/t/api"), 2_500)]),
    ];
    let reference = MemStore::new();
    let mut expected = Vec::new();
    for (now, batch) in &batches {
        expected.extend(reference.apply(batch, &triage_opts(*now)).unwrap().records);
    }
    // Without folding, folding at every apply (the index entries go from the log into
    // their table, the log rows are retired), and cycles that span applies.
    for (fold_bytes, chunk) in [(FOLD_LOG_BYTES, FOLD_CHUNK_MIN), (1, 1), (300, 2)] {
        let open = |dir: &Path| RedbStore::open(dir).unwrap().with_fold(fold_bytes, chunk);
        triage_survives_reopen(&batches, &expected, &reference, &open, fold_bytes == 1);
    }
}

fn triage_survives_reopen(
    batches: &[(i64, Vec<Sighting>)],
    expected: &[(u64, Record)],
    reference: &MemStore,
    open: &dyn Fn(&Path) -> RedbStore,
    folds_everything: bool,
) {
    use crate::conformance::triage_opts;
    let dir = temp();
    let mut got = Vec::new();
    for (now, batch) in batches {
        // A fresh open for every batch: everything the next one needs is in the file.
        let store = open(dir.path());
        got.extend(store.apply(batch, &triage_opts(*now)).unwrap().records);
    }
    assert_eq!(got, expected);
    assert!(got.iter().any(|(_, r)| r.incident().is_some()));
    let risk = got
        .iter()
        .filter_map(|(_, r)| r.incident())
        .filter(|i| i.kind == unseen_findings::IncidentKind::RiskThreshold)
        .count();
    assert_eq!(risk, 1, "the risk threshold fired once, across reopens");
    let store = open(dir.path());
    assert_eq!(
        store.triage().unwrap().index,
        reference.triage().unwrap().index
    );
    if folds_everything {
        // Applies (of a sighting that changes nothing) fold the last cycle and retire
        // its rows: the snapshot alone holds the index then.
        let repeat = &batches.last().unwrap().1;
        for _ in 0..1_000 {
            if store.fold_status().unwrap() == (0, 0) {
                break;
            }
            store.apply(repeat, &triage_opts(2_500)).unwrap();
        }
        assert_eq!(store.fold_status().unwrap(), (0, 0), "the log drains");
        assert_eq!(store.lock_live().unwrap().rows.len(), 0);
        let (index, _) = snapshot::read_index(dir.path()).unwrap().unwrap();
        assert_eq!(
            Index::from_entries(index),
            reference.triage().unwrap().index
        );
    }
    assert_eq!(
        store.triage().unwrap().risk.entries().collect::<Vec<_>>(),
        reference
            .triage()
            .unwrap()
            .risk
            .entries()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.triage().unwrap().incidents.open().count(),
        reference.triage().unwrap().incidents.open().count()
    );
    // 2,500 − 1,400 > B − R (900 s): `web` and nodes n2–n5 are forgotten.
    store.forget(&WINDOWS).unwrap();
    let left = store.triage().unwrap().index.len();
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.triage().unwrap().index.len(), left);
    assert!(left < reference.triage().unwrap().index.len());
}

/// The key mode stays bound across reopening the file.
#[test]
fn the_key_mode_survives_reopen() {
    let dir = temp();
    RedbStore::open(dir.path())
        .unwrap()
        .bind_key_mode("default, cluster_name=prod")
        .unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    store.bind_key_mode("default, cluster_name=prod").unwrap();
    let err = store.bind_key_mode("strict").unwrap_err();
    assert!(
        err.to_string()
            .contains("made with key mode `default, cluster_name=prod`"),
        "{err}"
    );
}

/// The key states live in memory, logged per `apply` and folded into the `keys` table
/// over later ones. Whatever the fold threshold, and reopened at any point (mid-cycle,
/// after forgetting), the store answers as the model and reopens at the same states.
#[test]
fn logged_states_fold_and_reopen_as_the_model_at_any_threshold() {
    let mut logs = Vec::new();
    for (fold_bytes, chunk) in [(0, 1), (1, 3), (200, 2), (5_000, 4096), (u64::MAX, 1)] {
        let dir = temp();
        let open = || {
            let mut s = RedbStore::open(dir.path())
                .unwrap()
                .with_fold(fold_bytes, chunk);
            s.forget_chunk = 4;
            s
        };
        let mut store = open();
        let model = MemStore::new();
        let mut folds_seen = false;
        for round in 0..40i64 {
            // 30 keys, a third of them seen each round; one round in ten far later,
            // so that some keys open new episodes and some become forgettable.
            let t = 1_000 * round + if round % 10 == 9 { 5_000 } else { 0 };
            let batch: Vec<Sighting> = (0..30)
                .filter(|i| (i + round as usize).is_multiple_of(3))
                .map(|i| sighting(&key(i), t + i as i64))
                .collect();
            let o = opts(t + 30);
            assert_eq!(
                store.apply(&batch, &o).unwrap().without_io(),
                model.apply(&batch, &o).unwrap(),
                "fold at {fold_bytes} bytes, round {round}"
            );
            folds_seen |= store.fold_status().unwrap().0 > 0;
            if round % 7 == 3 {
                assert_eq!(
                    store.forget(&WINDOWS).unwrap(),
                    model.forget(&WINDOWS).unwrap()
                );
            }
            if round % 5 == 4 {
                drop(store);
                store = open();
            }
            assert_eq!(
                store.states().unwrap(),
                model.states().unwrap(),
                "round {round}"
            );
            assert_eq!(store.key_count().unwrap(), model.key_count().unwrap());
        }
        assert!(
            folds_seen || fold_bytes == u64::MAX,
            "no fold at {fold_bytes}"
        );
        logs.push(store.fold_status().unwrap().1);
    }
    // Never folded, the log holds all 40 batches; folded at every batch, a few.
    let never = logs[4];
    assert!(logs[0] * 4 < never && logs[1] * 4 < never, "{logs:?}");
    assert!(logs[3] <= 5_000 * 2 && logs[3] < never, "{logs:?}");
}

/// A known key's sighting writes no B-tree row of its own: the batch's changed states are
/// one log row, and a fold writes each key once however often it was seen.
#[test]
fn known_keys_cost_one_log_row_per_batch() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap();
    let first: Vec<Sighting> = (0..500).map(|i| sighting(&key(i), 1_000)).collect();
    store.apply(&first, &opts(1_000)).unwrap();
    let again: Vec<Sighting> = (0..500).map(|i| sighting(&key(i), 1_060)).collect();
    let (_, before) = store.fold_status().unwrap();
    let out = store.apply(&again, &opts(1_060)).unwrap();
    assert!(out.records.is_empty());
    // The log row, the two meta rows.
    assert_eq!(out.io.rows_written, 3);
    // Below the fold threshold: no cycle, the states are in the log, each key by its
    // names' ids (logged by the first batch): 33 bytes.
    let (cycle, log_bytes) = store.fold_status().unwrap();
    assert_eq!(cycle, 0);
    assert_eq!(log_bytes - before, 500 * 33);
}

/// With the triage on, each image index entry a batch moves on logs 26 bytes (its kind
/// and its names' ids) beside the keys' 33, once its names are logged; after a restart,
/// the names are logged again (ids are a process's own), and a second restart reads both
/// processes' rows as they meant.
#[test]
fn index_entries_are_logged_by_ids_and_names_again_after_a_restart() {
    use crate::conformance::triage_opts;
    let dir = temp();
    let batch = |t: i64| -> Vec<Sighting> { (0..200).map(|i| sighting(&key(i), t)).collect() };
    let store = RedbStore::open(dir.path()).unwrap();
    store.apply(&batch(1_000), &triage_opts(1_000)).unwrap();
    let (_, before) = store.fold_status().unwrap();
    store.apply(&batch(1_060), &triage_opts(1_060)).unwrap();
    let (_, after) = store.fold_status().unwrap();
    let entries = store.triage().unwrap().index.len() as u64;
    assert!(entries > 0);
    assert_eq!(after - before, 200 * 33 + entries * 26);
    drop(store);
    let store = RedbStore::open(dir.path()).unwrap();
    store.apply(&batch(1_120), &triage_opts(1_120)).unwrap();
    let (_, restarted) = store.fold_status().unwrap();
    assert!(
        restarted - after > 200 * 33 + entries * 26,
        "the names are logged again"
    );
    let (states, triage) = (store.states().unwrap(), store.triage().unwrap());
    drop(store);
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.states().unwrap(), states);
    assert!(states.iter().all(|(_, s)| s.last_seen == 1_120));
    assert_eq!(store.triage().unwrap().index, triage.index);
}

/// Applies one sighting a minute after another from t = 1,000, each without a warning,
/// until a snapshot is recorded; fails after `at_most` applies.
fn apply_until_a_snapshot_is_recorded(store: &RedbStore, at_most: i64) {
    let mut t = 1_000;
    while store.read_meta(META_KEYS_SNAPSHOT).unwrap().is_none() {
        t += 60;
        let out = store.apply(&[sighting(&key(0), t)], &opts(t)).unwrap();
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(t < 1_000 + 60 * at_most, "no snapshot was recorded");
    }
}

/// A snapshot that cannot be started (its temporary file's name taken by a directory)
/// does not fail the batch that committed: the batch says so in `warnings`, and the next
/// one starts the cycle once it can.
#[test]
fn a_snapshot_that_cannot_start_does_not_fail_the_batch() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap().with_fold(1, 1);
    let blocker = dir.path().join("keys.snapshot.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let keys: Vec<Sighting> = (0..20).map(|i| sighting(&key(i), 1_000)).collect();
    let out = store.apply(&keys, &opts(1_000)).unwrap();
    assert_eq!(out.keys, 20);
    assert!(
        out.warnings.iter().any(|w| w.contains(SNAPSHOT_FILE)),
        "{:?}",
        out.warnings
    );
    assert_eq!(store.fold_status().unwrap().0, 0, "no cycle started");
    std::fs::remove_dir(&blocker).unwrap();
    apply_until_a_snapshot_is_recorded(&store, 100);
    drop(store);
    assert_eq!(
        RedbStore::open(dir.path()).unwrap().key_count().unwrap(),
        20
    );
}

/// A snapshot that cannot be put in place (its name taken by a directory that is not
/// empty) is found so by its writing thread; the `apply` that learns it is not failed: it
/// says so in `warnings`, the cycle is dropped with the log kept, and a later cycle puts a
/// snapshot in place once it can.
#[test]
fn a_snapshot_that_cannot_be_put_in_place_does_not_fail_the_batch() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap().with_fold(1, 1);
    let blocker = dir.path().join(SNAPSHOT_FILE);
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("in-the-way"), b"x").unwrap();
    let keys: Vec<Sighting> = (0..20).map(|i| sighting(&key(i), 1_000)).collect();
    store.apply(&keys, &opts(1_000)).unwrap();
    let mut t = 1_000;
    let warned = loop {
        t += 60;
        let out = store.apply(&[sighting(&key(0), t)], &opts(t)).unwrap();
        assert_eq!(out.keys, 20);
        if let Some(w) = out
            .warnings
            .iter()
            .find(|w| w.contains("finish the snapshot"))
        {
            break w.clone();
        }
        assert!(t < 1_000 + 60 * 100, "the failed snapshot was not reported");
    };
    assert!(warned.contains(SNAPSHOT_FILE), "{warned}");
    assert_eq!(store.read_meta(META_KEYS_SNAPSHOT).unwrap(), None);
    std::fs::remove_file(blocker.join("in-the-way")).unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    while store.read_meta(META_KEYS_SNAPSHOT).unwrap().is_none() {
        t += 60;
        let out = store.apply(&[sighting(&key(0), t)], &opts(t)).unwrap();
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(t < 1_000 * 60 * 200, "no snapshot was recorded");
    }
    let states = store.states().unwrap();
    drop(store);
    assert_eq!(
        RedbStore::open(dir.path()).unwrap().states().unwrap(),
        states
    );
}

/// As a server runs: the `apply`s do not wait for the snapshot's thread; one of the
/// `apply`s after it has put the snapshot in place records it, and a reopened store holds
/// the same states.
#[test]
fn a_snapshot_put_in_place_by_its_thread_is_recorded_by_a_later_apply() {
    let dir = temp();
    let mut store = RedbStore::open(dir.path()).unwrap().with_fold(1, 1);
    store.snapshot_waits = false;
    let keys: Vec<Sighting> = (0..20).map(|i| sighting(&key(i), 1_000)).collect();
    store.apply(&keys, &opts(1_000)).unwrap();
    // Each apply is a durable commit: the thread's sync of a small file ends within a
    // few; the bound only stops a broken build.
    apply_until_a_snapshot_is_recorded(&store, 1_000_000);
    let states = store.states().unwrap();
    drop(store);
    assert_eq!(
        RedbStore::open(dir.path()).unwrap().states().unwrap(),
        states
    );
}

/// A call that panicked while it held the state in memory leaves it unknown: every call
/// after is refused with `Poisoned` (which stops `serve`), never answered from it.
#[test]
fn a_panic_while_the_state_is_held_makes_every_later_call_refused() {
    let dir = temp();
    let store = RedbStore::open(dir.path()).unwrap();
    store
        .apply(&[sighting(&key(1), 1_000)], &opts(1_000))
        .unwrap();
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let _held = store.live.lock().unwrap();
            panic!("a bug in the middle of a change");
        })
        .join()
        .is_err()
    });
    assert!(panicked);
    assert!(matches!(
        store.apply(&[sighting(&key(2), 1_100)], &opts(1_100)),
        Err(StoreError::Poisoned)
    ));
    assert!(matches!(store.get(&key(1)), Err(StoreError::Poisoned)));
    drop(store);
    // Started again: the durable state, as it was before the panic.
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.key_count().unwrap(), 1);
    assert_eq!(store.get(&key(2)).unwrap(), None);
}
