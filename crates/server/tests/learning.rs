//! Learning (`Config.learn`): for a while after the *first* start, sightings are
//! recorded without reporting. The start of learning is kept in the store, so a
//! restart does not start it again.

mod support;

use std::sync::Arc;

use unseen_store::{RedbStore, StateStore};

use support::*;

const LEARN: u64 = 3_600;

fn hour_ago() -> i64 {
    unseen_server::now_secs() - 3_600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_records_without_reporting() {
    let (store, dyn_store) = mem_store();
    let started = unseen_server::now_secs();
    let server = TestServer::start(dyn_store, |c| c.learn = Some(LEARN)).await;
    let points = [
        Pt::new("node-1", "learned-a", hour_ago()),
        Pt::new("node-2", "learned-b", hour_ago()),
    ];
    for (via, point) in [Via::HttpProtobuf, Via::Grpc].into_iter().zip(&points) {
        assert_eq!(
            export(&server, via, &request(std::slice::from_ref(point))).await,
            (0, String::new())
        );
    }
    for point in &points {
        let state = store.get(&point.key()).unwrap().expect("recorded");
        assert_eq!(state.last_seen, point.time);
    }
    // The first start began learning, and it is kept in the store.
    let began = store.learning_started_at(0).unwrap();
    assert!(began >= started && began <= unseen_server::now_secs());
    assert_eq!(server.stop_and_read().await, Vec::<String>::new());
}

/// A first start two hours ago with one hour of learning: learning is over at this
/// start, and findings are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_that_began_before_a_restart_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let now = unseen_server::now_secs();
    {
        let first = RedbStore::open(dir.path()).unwrap();
        assert_eq!(first.learning_started_at(now - 7_200).unwrap(), now - 7_200);
    }
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    let server = TestServer::start(store.clone(), |c| c.learn = Some(LEARN)).await;
    let point = Pt::new("node-1", "after-learning", hour_ago());
    assert_eq!(
        export(
            &server,
            Via::HttpJson,
            &request(std::slice::from_ref(&point))
        )
        .await,
        (0, String::new())
    );
    assert!(store.get(&point.key()).unwrap().is_some());
    assert_eq!(server.stop_and_read().await, vec![point.finding_id()]);
    assert_eq!(store.learning_started_at(now).unwrap(), now - 7_200);
}

/// A first start ten minutes ago with one hour of learning: this (re)start is still
/// learning. What it learns is known afterwards: once learning is over, a learned key
/// is not reported, a new one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_restart_learning() {
    let dir = tempfile::tempdir().unwrap();
    let now = unseen_server::now_secs();
    {
        let first = RedbStore::open(dir.path()).unwrap();
        assert_eq!(first.learning_started_at(now - 600).unwrap(), now - 600);
    }
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    let server = TestServer::start(store.clone(), |c| c.learn = Some(LEARN)).await;
    let learned = Pt::new("node-1", "learned", hour_ago());
    assert_eq!(
        export(&server, Via::Grpc, &request(std::slice::from_ref(&learned))).await,
        (0, String::new())
    );
    assert_eq!(
        store.get(&learned.key()).unwrap().map(|s| s.last_seen),
        Some(learned.time)
    );
    assert_eq!(server.stop_and_read().await, Vec::<String>::new());
    assert_eq!(store.learning_started_at(now).unwrap(), now - 600);

    // Learning over (configured off): the learned key, seen again within B − R, is
    // known; a new key is reported.
    let server = TestServer::start(store.clone(), |c| c.learn = None).await;
    let again = Pt::new("node-1", "learned", learned.time + 60);
    let new = Pt::new("node-1", "new", learned.time + 60);
    assert_eq!(
        export(&server, Via::HttpProtobuf, &request(&[again, new.clone()])).await,
        (0, String::new())
    );
    assert_eq!(server.stop_and_read().await, vec![new.finding_id()]);
}
