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
/// batch's keys, one upsert per table), and what it writes is counted.
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
    assert!(b.rows_written >= 500 + 2 * 500, "{b:?}");
    // Known keys seen again: their states are rewritten, nothing else.
    let again: Vec<_> = (1..501).map(|i| sighting(&key(i), 1_010)).collect();
    let c = store.apply(&again, &opts(1_010)).unwrap().io;
    assert_eq!(
        c.round_trips,
        a.round_trips - 2,
        "no records to append: {c:?}"
    );
    assert_eq!(c.rows_written, 500 + 4, "{c:?}");
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
