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
