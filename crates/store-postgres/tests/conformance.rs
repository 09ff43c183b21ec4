//! The conformance suite of every backend, against a real PostgreSQL: each store in a
//! schema of its own, dropped with it. `UNSEEN_TEST_POSTGRES` names the database
//! (default: the local server every machine of this project runs, trust auth).

fn url() -> String {
    std::env::var("UNSEEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_string())
}

unseen_store::conformance_tests!(|| {
    Box::new(
        unseen_store_postgres::PostgresStore::open_temporary(&url())
            .expect("PostgreSQL at UNSEEN_TEST_POSTGRES (default 127.0.0.1:5432, database test)"),
    ) as Box<dyn unseen_store::StateStore>
});

/// A commit costs a fixed number of round trips whatever its size (one read of the
/// batch's keys that this replica has not seen, one write per table), and what it writes
/// is counted: a sighting of a known key writes no row of its own.
#[test]
fn a_commit_costs_round_trips_per_batch_not_per_point() {
    use unseen_store::conformance::{key, opts, sighting};
    use unseen_store::StateStore;
    let store = unseen_store_postgres::PostgresStore::open_temporary(&url()).unwrap();
    // The first commit also reads the triage state (its version is new to the store).
    store
        .apply(&[sighting(&key(9_999), 1_000)], &opts(1_000))
        .unwrap();
    let small: Vec<_> = (0..1).map(|i| sighting(&key(i), 1_000)).collect();
    let large: Vec<_> = (1..501).map(|i| sighting(&key(i), 1_000)).collect();
    let a = store.apply(&small, &opts(1_000)).unwrap().io;
    let b = store.apply(&large, &opts(1_000)).unwrap().io;
    assert_eq!(a.round_trips, b.round_trips, "{a:?} {b:?}");
    // One log row for the 500 states, two rows per record (outbox, history).
    assert!(b.rows_written > 2 * 500, "{b:?}");
    assert!(b.rows_written < 500 + 2 * 500, "no row per key: {b:?}");
    // Known keys seen again: no read of their states (this replica wrote them), no
    // records; the log row and two counters (the log's newest row, the newest point).
    let again: Vec<_> = (1..501).map(|i| sighting(&key(i), 1_010)).collect();
    let c = store.apply(&again, &opts(1_010)).unwrap().io;
    assert_eq!(
        c.round_trips,
        a.round_trips - 3,
        "no key read, no records: {c:?} against {a:?}"
    );
    assert_eq!(c.rows_written, 3, "{c:?}");
}

/// Two replicas on one schema, folding every two log rows, fed one interleaved history:
/// batches to one or the other, some to both (the second finds them decided), a stretch
/// to one alone (the other falls behind rows a fold deleted and reads its mirror anew),
/// a `forget` on one (the other finds the new key epoch). Together they report exactly
/// what one store reports, each record once, and hold its key states. In strict mode
/// (the rule alone), and in default mode, where the image index's changes also travel
/// through the log (keys share images across nodes, so scopes and incidents depend on
/// what the other replica learned).
#[test]
fn replicas_agree_through_the_state_log_across_folds_and_forgets() {
    use unseen_store::conformance::{key, opts};
    replicas_agree("strict", opts, key, 2);
}

#[test]
fn replicas_agree_on_the_triage_through_the_state_log() {
    // Folds far enough apart that a reloaded triage state must read the unfolded rows'
    // image index entries again (every 2 rows, too few are unfolded to tell).
    const FOLD_ROWS: i64 = 8;
    use unseen_store::conformance::triage_opts;
    let key = |i: usize| unseen_normalize::Key {
        host: format!("node-{}", i % 8),
        cluster: format!("cluster-{}", i % 2),
        node: format!("node-{}", i % 8),
        image: format!("registry.example/team/image-{}", i / 8),
    };
    replicas_agree("triage", triage_opts, key, FOLD_ROWS);
}

fn replicas_agree(
    name: &str,
    opts: fn(i64) -> unseen_store::ApplyOptions,
    key: fn(usize) -> unseen_normalize::Key,
    fold_rows: i64,
) {
    use unseen_store::conformance::{sighting, WINDOWS};
    use unseen_store::{MemStore, Sighting, StateStore};
    use unseen_store_postgres::PostgresStore;
    let schema = format!("unseen_it_log_{name}_{}", std::process::id());
    let a = PostgresStore::open(&url(), &schema, None)
        .unwrap()
        .with_fold_rows(fold_rows);
    let b = PostgresStore::open(&url(), &schema, None)
        .unwrap()
        .with_fold_rows(fold_rows);
    let reference = MemStore::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let records = |out: &unseen_store::Applied| -> Vec<String> {
        out.records.iter().map(|(_, r)| r.to_json_line()).collect()
    };
    let (mut expected, mut reported) = (Vec::new(), Vec::new());
    let mut t = 1_000;
    for step in 0..160 {
        // Steps of up to 250 s over 40 keys (64 in all, below): some keys go quiet for more than the gap
        // (900 s) and open new episodes; some points are up to a minute late.
        t += (next() % 250) as i64;
        // Keys 40 to 59 (in default mode, images 5 to 7) appear only while one replica is
        // alone; then keys 60 to 63 put image 7 on other nodes, and the other replica
        // must know it from what the folds left (an image the fleet runs: not `fleet`).
        let (first, keys) = match step {
            0..=39 => (0, 40),
            40..=59 => (40, 20),
            60..=65 => (60, 4),
            _ => (0, 64),
        };
        let batch: Vec<Sighting> = (0..1 + next() % 6)
            .map(|_| {
                let k = key((first + next() % keys) as usize);
                sighting(&k, t - (next() % 60) as i64)
            })
            .collect();
        let o = opts(t);
        expected.extend(records(&reference.apply(&batch, &o).unwrap()));
        let replicas: &[&PostgresStore] = match step {
            40..=59 => &[&a],
            _ if step % 5 == 0 => &[&a, &b],
            _ if step % 5 == 1 => &[&b, &a],
            _ if step % 2 == 0 => &[&a],
            _ => &[&b],
        };
        for (i, replica) in replicas.iter().enumerate() {
            let out = replica.apply(&batch, &o).unwrap();
            if i > 0 {
                assert!(out.records.is_empty(), "step {step}: decided twice");
            }
            reported.extend(records(&out));
        }
        if step == 100 {
            let forgotten = reference.forget(&WINDOWS).unwrap();
            assert!(forgotten > 0, "the history leaves keys to forget");
            assert_eq!(b.forget(&WINDOWS).unwrap(), forgotten);
        }
    }
    let findings = expected
        .iter()
        .filter(|r| r.contains("\"finding_id\""))
        .count();
    assert!(
        findings > 40,
        "episodes beyond the first of each key: {findings}"
    );
    assert_eq!(reported, expected);
    let states = |store: &dyn StateStore| {
        let mut all = Vec::new();
        store
            .for_each_key(&mut |k, s| all.push((k.clone(), *s)))
            .unwrap();
        all.sort_by(|x: &(unseen_normalize::Key, _), y| x.0.cmp(&y.0));
        all
    };
    let want = states(&reference);
    for replica in [&a, &b] {
        assert_eq!(states(replica), want);
        assert_eq!(replica.key_count().unwrap(), reference.key_count().unwrap());
        for i in 0..40 {
            assert_eq!(
                replica.get(&key(i)).unwrap(),
                reference.get(&key(i)).unwrap()
            );
        }
    }
    drop((a, b));
    let mut client = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}

/// Replicas that start at once on a new schema all open it (the schema and the
/// migrations are made once, under the migration lock) and share it.
#[test]
fn replicas_starting_at_once_migrate_once() {
    use unseen_store::conformance::{key, opts, sighting};
    use unseen_store::StateStore;
    let schema = format!("unseen_it_start_{}", std::process::id());
    let stores: Vec<unseen_store_postgres::PostgresStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| unseen_store_postgres::PostgresStore::open(&url(), &schema, None)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("every replica opens the schema"))
            .collect()
    });
    stores[0]
        .apply(&[sighting(&key(1), 1_000)], &opts(1_000))
        .unwrap();
    let again = stores[3]
        .apply(&[sighting(&key(1), 1_000)], &opts(1_000))
        .unwrap();
    assert_eq!(
        again.findings().count(),
        0,
        "one state: the episode is known"
    );
    drop(stores);
    let mut client = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    let migrations: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.unseen_schema_migrations"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(migrations as usize, unseen_store_postgres::MIGRATIONS.len());
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}

/// A commit that fails after the replica decided (here: its records collide with a row
/// put in the outbox behind its back) leaves nothing behind, in the database or in the
/// replica's memory (its key mirror, image index and open incidents): the same batch
/// applied again reports what one store reports for it, once.
#[test]
fn a_failed_commit_leaves_no_trace_in_the_replica() {
    use unseen_store::conformance::{key, sighting, triage_opts as opts, GAP};
    use unseen_store::{MemStore, StateStore};
    use unseen_store_postgres::PostgresStore;
    let store = PostgresStore::open_temporary(&url()).unwrap();
    let reference = MemStore::new();
    // Every record (findings and the incidents they open or join): default mode, so
    // that the triage state the failed commit changed in memory is checked too.
    let ids = |out: &unseen_store::Applied| -> Vec<String> {
        out.records.iter().map(|(_, r)| r.to_json_line()).collect()
    };
    let first: Vec<_> = (0..20).map(|i| sighting(&key(i), 1_000)).collect();
    assert_eq!(
        ids(&store.apply(&first, &opts(1_000)).unwrap()),
        ids(&reference.apply(&first, &opts(1_000)).unwrap())
    );
    // Known keys seen again (in the replica's mirror), a key after the gap (a new
    // episode), and new keys: every kind of state the failed commit had decided.
    let t = 1_001 + GAP;
    let mut batch: Vec<_> = (0..10).map(|i| sighting(&key(i), 1_500)).collect();
    batch.push(sighting(&key(15), t));
    batch.extend((20..25).map(|i| sighting(&key(i), t)));
    let mut client = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    let schema = store.schema().to_string();
    let next_seq: i64 = client
        .query_one(
            &format!("SELECT value + 1 FROM {schema}.unseen_meta WHERE name = 'last_seq'"),
            &[],
        )
        .unwrap()
        .get(0);
    client
        .execute(
            &format!("INSERT INTO {schema}.unseen_log (seq, record) VALUES ($1, '\\x00')"),
            &[&next_seq],
        )
        .unwrap();
    let failed = store.apply(&batch, &opts(t));
    assert!(failed.is_err(), "the outbox row collides: {failed:?}");
    client
        .execute(
            &format!("DELETE FROM {schema}.unseen_log WHERE seq = $1"),
            &[&next_seq],
        )
        .unwrap();
    let expected = ids(&reference.apply(&batch, &opts(t)).unwrap());
    let findings = expected
        .iter()
        .filter(|r| r.contains("\"finding_id\""))
        .count();
    assert_eq!(findings, 6, "key 15's second episode and five new keys");
    assert_eq!(ids(&store.apply(&batch, &opts(t)).unwrap()), expected);
    assert_eq!(store.key_count().unwrap(), reference.key_count().unwrap());
    for i in 0..25 {
        assert_eq!(store.get(&key(i)).unwrap(), reference.get(&key(i)).unwrap());
    }
}
