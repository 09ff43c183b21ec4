//! The conformance suite against both backends.

mod mem {
    use unseen_store::{MemStore, StateStore};

    unseen_store::conformance_tests!(|| Box::new(MemStore::new()) as Box<dyn StateStore>);
}

mod redb {
    use tempfile::TempDir;
    use unseen_store::{RedbStore, StateStore};

    /// Fresh stores, each in its own temporary directory, kept until the test ends.
    fn make() -> impl FnMut() -> Box<dyn StateStore> {
        let mut dirs: Vec<TempDir> = Vec::new();
        move || {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = RedbStore::open(dir.path()).expect("open store");
            dirs.push(dir);
            Box::new(store) as Box<dyn StateStore>
        }
    }

    unseen_store::conformance_tests!(make());

    #[test]
    fn run_all_passes() {
        unseen_store::conformance::run_all(&mut make());
    }
}
