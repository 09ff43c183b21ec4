//! Group commit: the requests queued while a commit is on disk go together into the
//! next one, and each gets its own share of the outcome.
//!
//! Alone in its test binary: it reads the process-global queue-depth gauge, which no
//! other test may move meanwhile.

mod support;

use prost::Message;
use tokio::task::JoinHandle;

use support::*;

fn spawn_http(server: &TestServer, points: &[Pt]) -> JoinHandle<HttpAnswer> {
    let url = server.http_url();
    let body = request(points).encode_to_vec();
    tokio::spawn(async move { post_url(&http_client(), &url, PROTOBUF, None, body).await })
}

/// The partial success of an HTTP protobuf answer: rejected points and the message.
fn partial(answer: &HttpAnswer) -> (i64, String) {
    match answer.proto_response().partial_success {
        Some(p) => (p.rejected_data_points, p.error_message),
        None => (0, String::new()),
    }
}

/// Whether the request was told to retry (429: new keys refused at the cap), and the
/// message of its answer.
fn refused_at_cap(answer: &HttpAnswer) -> (bool, String) {
    if answer.status == 429 {
        return (true, answer.proto_status().message);
    }
    let (rejected, message) = partial(answer);
    assert_eq!(rejected, 0, "{message}");
    (false, message)
}

/// One commit held on disk, two requests queued behind it, and a key cap that one of
/// their keys runs into. Both requests go into the next commit together, and the one
/// refusal is reported to the request it belongs to, not to its neighbour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_share_one_commit_and_each_gets_its_own_refusals() {
    let store = GatedStore::closed();
    let _open = store.open_on_drop();
    let server = TestServer::start(store.clone(), |c| c.limits.max_keys = 4).await;
    let t = unseen_server::now_secs() - 3_600;
    let first = Pt::new("node-1", "first", t);
    let y = [Pt::new("node-1", "y1", t), Pt::new("node-1", "y2", t)];
    let z = [Pt::new("node-2", "z1", t), Pt::new("node-2", "z2", t)];

    let committing = spawn_http(&server, std::slice::from_ref(&first));
    store.wait_entered(1).await;
    let (ty, tz) = (spawn_http(&server, &y), spawn_http(&server, &z));
    // Both are queued once the queue has been two deep: nothing leaves the queue while
    // the first commit is held.
    eventually("two requests in the commit queue", async || {
        let text = server.metrics_text().await;
        sample(&text, "unseen_commit_queue_depth", &[]) == Some(2.0)
    })
    .await;
    store.open();

    assert_eq!(partial(&committing.await.unwrap()), (0, String::new()));
    let (ay, az) = (ty.await.unwrap(), tz.await.unwrap());
    let (ry, my) = refused_at_cap(&ay);
    let (rz, mz) = refused_at_cap(&az);
    // Two commits: the first request's, then both queued ones together; then the
    // capacity notice, in a commit of its own with no sightings.
    assert_eq!(store.batches(), vec![1, 4, 0]);
    // 1 key + 3 more fit; whichever request came second in the batch lost its second
    // key, and only that request hears of it (told to retry; its first key is kept).
    assert!(ry != rz, "y: {my:?}, z: {mz:?}");
    let (refused, kept) = if ry { (&y, &z) } else { (&z, &y) };
    let message = if ry { &my } else { &mz };
    assert!(
        message.contains("1 of new keys refused") && message.contains("max_keys"),
        "{message}"
    );
    let get = |p: &Pt| unseen_store::StateStore::get(&store.inner, &p.key()).unwrap();
    for p in kept.iter().chain([&first, &refused[0]]) {
        assert!(get(p).is_some(), "{p:?} not stored");
    }
    assert_eq!(get(&refused[1]), None);

    let got = server.stop_and_read().await;
    let expected = kept
        .iter()
        .chain([&first, &refused[0]])
        .map(Pt::finding_id)
        .collect();
    assert_same_findings(&got, &expected);
}
