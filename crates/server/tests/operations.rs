//! Running the server: health, readiness and metrics on the admin port, backpressure
//! when the commit queue is full, and a graceful stop with a request in flight.
//!
//! The overload and shutdown tests hold a commit "on disk" with [`GatedStore`], so
//! what is in flight is known without any timing.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use support::*;
use unseen_normalize::KeyMode;
use unseen_server::ServerError;
use unseen_store::{ApplyOptions, Sighting, StoreError};

fn hour_ago() -> i64 {
    unseen_server::now_secs() - 3_600
}

/// POSTs one request in a task (it may wait for a blocked commit).
fn spawn_http(server: &TestServer, point: &Pt) -> JoinHandle<HttpAnswer> {
    let url = server.http_url();
    let body = request(std::slice::from_ref(point)).encode_to_vec();
    tokio::spawn(async move { post_url(&http_client(), &url, PROTOBUF, None, body).await })
}

/// Exports one request over gRPC in a task, on the given connection.
fn spawn_grpc(
    channel: &Channel,
    point: &Pt,
) -> JoinHandle<Result<ExportMetricsServiceResponse, tonic::Status>> {
    let mut client = MetricsServiceClient::new(channel.clone());
    let request = request(std::slice::from_ref(point));
    tokio::spawn(async move { client.export(request).await.map(|r| r.into_inner()) })
}

/// Waits for whichever of two tasks finishes first; returns its output, the other task
/// and the index (0 or 1) of the one that finished.
async fn first_of<T>(a: JoinHandle<T>, b: JoinHandle<T>) -> (T, JoinHandle<T>, usize) {
    let (mut a, mut b) = (a, b);
    tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            out = &mut a => (out.expect("task"), b, 0),
            out = &mut b => (out.expect("task"), a, 1),
        }
    })
    .await
    .expect("one of the two requests is refused at once")
}

// ----- admin port ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_without_names_from_the_data() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    assert_eq!(
        server.admin_get("/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        server.admin_get("/readyz").await.unwrap(),
        (200, "ready\n".into())
    );

    // Names that would blow up the metrics' cardinality if they became labels.
    let names = [
        "node-c0ffee-secret",
        "cluster-c0ffee-secret",
        "registry.example/c0ffee/secret-image",
        "host-c0ffee-secret",
    ];
    let mut point = Pt::new(names[0], names[2], hour_ago());
    point.cluster = Some(names[1].to_string());
    let mut request = request(&[point.clone()]);
    // A `host.name` on the point is kept as evidence; it must not reach the metrics.
    add_attribute(&mut request, 0, "host.name", names[3]);
    assert_eq!(
        export(&server, Via::HttpProtobuf, &request).await,
        (0, String::new())
    );
    // A rejected point too (its reason is a label; its names are not).
    let mut future = Pt::new(
        names[0],
        "registry.example/c0ffee/future",
        hour_ago() + 7_200,
    );
    future.cluster = Some(names[1].to_string());
    let (rejected, _) = export(&server, Via::Grpc, &support::request(&[future])).await;
    assert_eq!(rejected, 1);
    server.wait_for_findings(1).await;

    // The sink counts its delivery just after writing the file.
    let mut text = String::new();
    eventually("the sink's delivery counter", async || {
        text = server.metrics_text().await;
        sample(
            &text,
            "unseen_findings_delivered_total",
            &[("sink", "file")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    for metric in [
        "unseen_points_received_total",
        "unseen_points_accepted_total",
        "unseen_points_rejected_total",
        "unseen_requests_total",
        "unseen_keys_tracked",
        "unseen_commit_duration_seconds",
        "unseen_commit_queue_depth",
        "unseen_findings_total",
        "unseen_incident_records_total",
        "unseen_findings_delivered_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(metric)),
            "{metric} missing:\n{text}"
        );
    }
    assert!(
        sample(
            &text,
            "unseen_points_received_total",
            &[("receiver", "http")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "unseen_points_rejected_total",
            &[("receiver", "grpc"), ("reason", "future_timestamp")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    for name in names.iter().chain(&["c0ffee"]) {
        assert!(!text.contains(name), "`{name}` in the metrics:\n{text}");
    }

    assert_eq!(server.stop_and_read().await, vec![point.finding_id()]);
}

// ----- overload ------------------------------------------------------------------------

/// `queue_requests` = 1: one request committing (held), one queued, and the next is
/// answered at once "unavailable, retry after 1 s". Which of the two later requests
/// gets the queue's one place is up to the scheduler, so the test sends both and checks
/// that exactly one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_overload_is_503_with_retry_after_and_queued_requests_succeed() {
    let store = GatedStore::closed();
    let _open = store.open_on_drop();
    let server = TestServer::start(store.clone(), |c| c.limits.queue_requests = 1).await;
    let t = hour_ago();
    let points = ["a", "b", "c"].map(|i| Pt::new("node-1", i, t));

    let committing = spawn_http(&server, &points[0]);
    store.wait_entered(1).await;
    let (refused, queued, which) = first_of(
        spawn_http(&server, &points[1]),
        spawn_http(&server, &points[2]),
    )
    .await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    let status = refused.proto_status();
    assert_eq!(status.code, tonic::Code::Unavailable as i32);
    assert!(
        status.message.contains("overloaded") && status.message.contains("retry after 1 s"),
        "{}",
        status.message
    );
    // Nothing else was answered: one commit is still on disk, one request waits.
    assert!(!committing.is_finished() && !queued.is_finished());
    assert_eq!(store.entered(), 1);

    store.open();
    for task in [committing, queued] {
        let answer = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(answer.proto_response().partial_success, None);
    }
    // The refused request, retried, is accepted.
    let retried = spawn_http(&server, &points[1 + which]).await.unwrap();
    assert_eq!(retried.proto_response().partial_success, None);

    let got = server.stop_and_read().await;
    assert_same_findings(&got, &points.iter().map(Pt::finding_id).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_overload_is_unavailable_with_retry_info_and_queued_requests_succeed() {
    let store = GatedStore::closed();
    let _open = store.open_on_drop();
    let server = TestServer::start(store.clone(), |c| c.limits.queue_requests = 1).await;
    let channel = server.channel().await;
    let t = hour_ago();
    let points = ["a", "b", "c"].map(|i| Pt::new("node-1", i, t));

    let committing = spawn_grpc(&channel, &points[0]);
    store.wait_entered(1).await;
    let (refused, queued, which) = first_of(
        spawn_grpc(&channel, &points[1]),
        spawn_grpc(&channel, &points[2]),
    )
    .await;
    let status = refused.expect_err("the queue is full");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("overloaded"),
        "{}",
        status.message()
    );
    // `grpc-status-details-bin`: a google.rpc.Status with a RetryInfo of 1 s, which the
    // Collector's exporter uses to time its retry.
    let details = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
    assert_eq!(details.code, tonic::Code::Unavailable as i32);
    assert_eq!(details.message, status.message());
    assert_eq!(details.details.len(), 1, "{details:?}");
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
    let info = RetryInfo::decode(details.details[0].value.as_slice()).expect("a RetryInfo");
    assert_eq!(
        info.retry_delay,
        Some(ProtoDuration {
            seconds: 1,
            nanos: 0
        })
    );
    assert!(!committing.is_finished() && !queued.is_finished());
    assert_eq!(store.entered(), 1);

    store.open();
    for task in [committing, queued] {
        let response = tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .expect("queued requests are committed");
        assert_eq!(response.partial_success, None);
    }
    let retried = spawn_grpc(&channel, &points[1 + which])
        .await
        .unwrap()
        .expect("the retry is accepted");
    assert_eq!(retried.partial_success, None);
    drop(channel);

    let got = server.stop_and_read().await;
    assert_same_findings(&got, &points.iter().map(Pt::finding_id).collect());
}

// ----- graceful shutdown ---------------------------------------------------------------

/// Shutdown while a request's commit is on disk: the server stops being ready at once,
/// still answers the request after the commit, and `run` returns `Ok` with the
/// request's finding delivered.
async fn graceful_shutdown(via: Via) {
    let store = GatedStore::closed();
    let _open = store.open_on_drop();
    let server = TestServer::start(store.clone(), |_| {}).await;
    let point = Pt::new("node-1", "in-flight", hour_ago());
    let channel = server.channel().await;
    let in_flight: JoinHandle<Result<(), String>> = match via {
        Via::Grpc => {
            let task = spawn_grpc(&channel, &point);
            tokio::spawn(async move {
                match task.await.unwrap() {
                    Ok(r) if r.partial_success.is_none() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
        }
        _ => {
            let task = spawn_http(&server, &point);
            tokio::spawn(async move {
                let answer = task.await.unwrap();
                match answer.status {
                    200 if answer.proto_response().partial_success.is_none() => Ok(()),
                    _ => Err(format!("{answer:?}")),
                }
            })
        }
    };
    store.wait_entered(1).await;

    server.shutdown.cancel();
    eventually("/readyz to report shutting down", async || {
        matches!(server.admin_get("/readyz").await, Ok((503, body)) if body.contains("shutting down"))
    })
    .await;
    // `run` waits for the request, which waits for its commit.
    assert!(!server.task.is_finished());
    assert!(!in_flight.is_finished());

    store.open();
    let answered = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answered, Ok(()), "the request in flight is answered");
    drop(channel);
    let (result, findings, _dir) = server.finish().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(file_ids(&findings), vec![point.finding_id()]);
    // The store holds what was acknowledged.
    assert_eq!(
        unseen_store::StateStore::get(&store.inner, &point.key())
            .unwrap()
            .map(|s| s.last_seen),
        Some(point.time)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_the_http_request_in_flight() {
    graceful_shutdown(Via::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_the_grpc_request_in_flight() {
    graceful_shutdown(Via::Grpc).await;
}

/// The HTTP server keeps idle keep-alive connections from holding up a stop, and a
/// stopped server's findings file holds each acknowledged point's finding once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_idle_connections_open_returns_promptly() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |c| c.shutdown_grace = Duration::from_secs(60)).await;
    let client = http_client();
    let mut grpc = server.grpc_client().await;
    let t = hour_ago();
    let points: Vec<Pt> = (0..4)
        .map(|i| Pt::new("node-1", &format!("i{i}"), t))
        .collect();
    let answer = post(
        &client,
        &server,
        PROTOBUF,
        None,
        request(&points[..2]).encode_to_vec(),
    )
    .await;
    assert_eq!(answer.proto_response().partial_success, None);
    grpc.export(request(&points[2..])).await.expect("accepted");
    // Both connections stay open (the clients are alive) while the server stops; the
    // stop must not wait for the 60 s grace period (`stop_and_read` allows 20 s).
    let got = server.stop_and_read().await;
    assert_same_findings(
        &got,
        &points.iter().map(Pt::finding_id).collect::<BTreeSet<_>>(),
    );
    drop((client, grpc));
}

// ----- store failure -------------------------------------------------------------------

/// A failed commit: nothing of the request is kept, and it is answered "unavailable,
/// retry" (HTTP 503 with `Retry-After`, gRPC UNAVAILABLE with a RetryInfo), so the
/// sender retries; the retry is committed and reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_answered_retry_and_keeps_nothing() {
    let store = GatedStore::opened();
    let server = TestServer::start(store.clone(), |_| {}).await;
    let via_http = Pt::new("node-1", "via-http", hour_ago());
    let via_grpc = Pt::new("node-1", "via-grpc", hour_ago());

    store.fail_next(1);
    let body = request(std::slice::from_ref(&via_http)).encode_to_vec();
    let answer = post(&http_client(), &server, PROTOBUF, None, body).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::Unavailable as i32);
    assert!(
        status.message.contains("nothing of this request was kept")
            && status.message.contains(STORE_FAILURE),
        "{}",
        status.message
    );

    store.fail_next(1);
    let status = server
        .grpc_client()
        .await
        .export(request(std::slice::from_ref(&via_grpc)))
        .await
        .expect_err("the commit failed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains(STORE_FAILURE), "{status:?}");
    let details = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
    assert_eq!(details.details.len(), 1, "{details:?}");
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);

    for point in [&via_http, &via_grpc] {
        assert_eq!(
            unseen_store::StateStore::get(&store.inner, &point.key()).unwrap(),
            None
        );
    }
    let text = server.metrics_text().await;
    assert!(
        sample(&text, "unseen_commit_failures_total", &[]).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // While commits fail, the server is not ready (a load balancer sends elsewhere),
    // and says why.
    let (status, body) = server.admin_get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the last commit failed") && body.contains(STORE_FAILURE),
        "{body}"
    );

    // The senders retry.
    assert_eq!(
        export(
            &server,
            Via::HttpProtobuf,
            &request(std::slice::from_ref(&via_http))
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        export(
            &server,
            Via::Grpc,
            &request(std::slice::from_ref(&via_grpc))
        )
        .await,
        (0, String::new())
    );
    // A commit that succeeds makes it ready again.
    assert_eq!(server.admin_get("/readyz").await.unwrap().0, 200);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &[via_http.finding_id(), via_grpc.finding_id()].into());
}

/// A commit that panics (a bug) may leave the store's memory half changed: its requests
/// are answered "unavailable, retry", and the server stops by itself with an error that
/// says what panicked, so that its supervisor starts it again from the durable state.
/// What was acknowledged before is delivered in the stop. The same when the store
/// says it is poisoned (a call that panicked elsewhere, the query API's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_panics_or_finds_the_store_poisoned_stops_the_server() {
    for poisoned in [false, true] {
        a_broken_store_stops_the_server(poisoned).await;
    }
}

async fn a_broken_store_stops_the_server(poisoned: bool) {
    let store = GatedStore::opened();
    let server = TestServer::start(store.clone(), |_| {}).await;
    let before = Pt::new("node-1", "acknowledged", hour_ago());
    let during = Pt::new("node-1", "in-the-panic", hour_ago());
    let client = http_client();
    let send = |point: &Pt| {
        let body = request(std::slice::from_ref(point)).encode_to_vec();
        post(&client, &server, PROTOBUF, None, body)
    };
    let acknowledged = send(&before).await;
    assert_eq!(acknowledged.status, 200, "{acknowledged:?}");

    if poisoned {
        store.poison_next();
    } else {
        store.panic_next();
    }
    let answer = send(&during).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(
        unseen_store::StateStore::get(&store.inner, &during.key()).unwrap(),
        None
    );
    // Nobody cancels the server's token: it stops by itself.
    let (result, findings, _dir) = server.finish().await;
    let Err(ServerError::Fatal(reason)) = result else {
        panic!("run returned {result:?}");
    };
    let why = match poisoned {
        true => StoreError::Poisoned.to_string(),
        false => format!(
            "a commit panicked, which is a bug (please report it, with this log): {STORE_PANIC}"
        ),
    };
    assert!(reason.starts_with(&why), "{reason}");
    assert_same_findings(&file_ids(&findings), &[before.finding_id()].into());
}

/// Forgetting scans the whole key table (seconds, with millions of keys): it runs beside
/// the commits, so that neither the first acknowledgement after a restart nor any later
/// one waits for it, and it still removes the keys past the horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_runs_beside_the_commits_and_forgets_old_keys() {
    let store = GatedStore::opened();
    let _release = store.open_on_drop();
    // A state from an earlier run: one key last seen more than B − R before the newest
    // point, one recent.
    let newest = hour_ago();
    let old = Pt::new("node-1", "old", newest - GAP_SECS - 60);
    let recent = Pt::new("node-1", "recent", newest);
    let sightings: Vec<Sighting> = [&old, &recent]
        .iter()
        .map(|p| Sighting {
            key: p.key(),
            time: p.time,
            host_name: None,
            context: Default::default(),
            image_raw: None,
        })
        .collect();
    let opts = ApplyOptions {
        rule: unseen_model::SEED_RULE,
        triage: Default::default(),
        windows: WINDOWS,
        mode: KeyMode::default(),
        now: newest,
        report: false,
        suppressions: Default::default(),
        max_keys: u64::MAX,
        new_keys: None,
        notices: Vec::new(),
    };
    unseen_store::StateStore::apply(&store.inner, &sightings, &opts).unwrap();
    store.hold_forget();

    let server = TestServer::start(store.clone(), |_| {}).await;
    // The forget at start is under way, and held.
    let deadline = std::time::Instant::now() + DEADLINE;
    while store.forgets() == 0 {
        assert!(std::time::Instant::now() < deadline, "no forget started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = Pt::new("node-2", "new", newest);
    assert_eq!(
        export(
            &server,
            Via::HttpProtobuf,
            &request(std::slice::from_ref(&new))
        )
        .await,
        (0, String::new()),
        "a request is acknowledged while forgetting is held"
    );
    assert_eq!(store.forgets(), 1);
    assert!(unseen_store::StateStore::get(&store.inner, &old.key())
        .unwrap()
        .is_some());

    store.release_forget();
    while unseen_store::StateStore::get(&store.inner, &old.key())
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key was not forgotten"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(unseen_store::StateStore::get(&store.inner, &recent.key())
        .unwrap()
        .is_some());
    let text = server.metrics_text().await;
    assert!(
        sample(&text, "unseen_keys_forgotten_total", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &[new.finding_id()].into());
}

// ----- start and stop edges ------------------------------------------------------------

/// A findings path that cannot be opened fails the start with the sink's error, before
/// anything is served: `run` returns it and the listeners are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_findings_path_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is no file to append to.
    let mut config = config(dir.path());
    config.sinks = vec![unseen_sinks::SinkConfig::File {
        path: dir.path().to_path_buf(),
        format: Default::default(),
    }];
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = unseen_server::Listeners {
        otlp_grpc: bind().await.unwrap(),
        otlp_http: bind().await.unwrap(),
        admin: bind().await.unwrap(),
        api: None,
    };
    let http = listeners.otlp_http.local_addr().unwrap();
    let (_, store) = mem_store();
    let result = tokio::time::timeout(
        DEADLINE,
        unseen_server::run(
            listeners,
            config,
            store,
            prometheus(),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("a failed start returns at once");
    match result {
        Err(unseen_server::ServerError::Sinks(e)) => {
            let message = e.to_string();
            assert!(
                message.contains("findings file") && message.contains("cannot open it"),
                "{message}"
            );
        }
        other => panic!("expected the sink's error, got {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the HTTP port still accepts connections"
    );
}

/// `Config.shutdown_grace`: "how long shutdown waits for requests in flight before
/// closing their connections". A request whose body never finishes holds its
/// connection past the grace period; once `run` has returned, that connection must be
/// closed (the sender retries elsewhere), not left to a receiver task still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_still_in_flight_after_the_grace_period_are_closed() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |c| {
        c.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let body = request(&[Pt::new("node-1", "slow", hour_ago())]).encode_to_vec();
    // `Expect: 100-continue`: the server says "100 Continue" when the handler starts
    // reading the body, so the request is known to be in flight.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        unseen_server::HTTP_PATH,
        server.http,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("the server asks for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
    // Half the body, and no more: in flight until the grace period ends.
    stream.write_all(&body[..body.len() / 2]).await.unwrap();

    server.shutdown.cancel();
    let (result, _, _) = server.finish().await;
    assert!(result.is_ok(), "{result:?}");
    // Closed: EOF or a reset, at once. A live connection would wait for the rest of
    // the body (the bound only keeps a failure from hanging the test).
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is still open after `run` returned: {read:?}"
    );
}
