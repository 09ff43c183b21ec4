//! Bad input and the explicit limits, over both transports: a refused request keeps
//! nothing and says why; a partly bad request keeps its good points and names the
//! problem in the OTLP partial success.

mod support;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::CompressionEncoding;
use unseen_normalize::Key;
use unseen_server::Config;
use unseen_store::StateStore;

use support::*;

/// A small body limit, so that oversize requests are cheap to build.
const LIMIT: usize = 64 << 10;

fn small_body_limit(config: &mut Config) {
    config.limits.max_body_bytes = LIMIT;
}

/// Seconds since the epoch, an hour ago: a normal, past point time.
fn hour_ago() -> i64 {
    unseen_server::now_secs() - 3_600
}

/// A request the server accepts, to check that it still works after a refusal.
async fn assert_still_accepts(server: &TestServer, image: &str) {
    let point = Pt::new("node-ok", image, hour_ago());
    assert_eq!(
        export(server, Via::HttpProtobuf, &request(&[point])).await,
        (0, String::new())
    );
}

// ----- body size -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_over_max_body_bytes_is_413_and_keeps_nothing() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, small_body_limit).await;
    let point = Pt::new("node-1", "big", hour_ago());
    let body = padded_request(&point, LIMIT).encode_to_vec();
    assert!(body.len() > LIMIT);
    let client = http_client();

    // Protobuf: the error is a google.rpc.Status in protobuf.
    let answer = post(&client, &server, PROTOBUF, None, body.clone()).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status
            .message
            .contains(&format!("over the limit of {LIMIT} bytes"))
            && status.message.contains("max_body_bytes"),
        "{}",
        status.message
    );

    // JSON: the same error as JSON. (Checked against Content-Length: the body is never
    // parsed, so its bytes need not be JSON.)
    let answer = post(&client, &server, JSON, None, body).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["code"], tonic::Code::ResourceExhausted as i32);
    assert!(json["message"].as_str().unwrap().contains("max_body_bytes"));

    assert_eq!(store.get(&point.key()).unwrap(), None);
    assert_still_accepts(&server, "small").await;
    assert_eq!(server.stop_and_read().await.len(), 1);
}

/// Without `Content-Length` (chunked), the limit holds while reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_chunked_body_over_max_body_bytes_is_413() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, small_body_limit).await;
    let point = Pt::new("node-1", "big", hour_ago());
    let body = padded_request(&point, LIMIT).encode_to_vec();

    // reqwest sends a Content-Length for a buffered body; write HTTP/1.1 by hand.
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {PROTOBUF}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        unseen_server::HTTP_PATH,
        server.http
    );
    let mut raw = head.into_bytes();
    for chunk in body.chunks(8 << 10) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it read everything: a failed write is
    // fine, the answer is what is checked.
    let _ = stream.write_all(&raw).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("max_body_bytes"), "{text}");
    assert_eq!(store.get(&point.key()).unwrap(), None);
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_over_max_body_bytes_is_resource_exhausted() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, small_body_limit).await;
    let point = Pt::new("node-1", "big", hour_ago());
    let status = server
        .grpc_client()
        .await
        .export(padded_request(&point, LIMIT))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&format!("{LIMIT} bytes"))
            && status.message().contains("max_body_bytes"),
        "{status:?}"
    );
    assert_eq!(store.get(&point.key()).unwrap(), None);
    assert_still_accepts(&server, "small").await;
    server.stop_and_read().await;
}

/// 10 MiB that gzip to a few KiB: under the limit as received, over it inflated. The
/// receiver stops inflating at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_bomb_is_413() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, small_body_limit).await;
    let point = Pt::new("node-1", "bomb", hour_ago());
    let bomb = gzip(&padded_request(&point, 10 << 20).encode_to_vec());
    assert!(bomb.len() < LIMIT, "a real bomb: {} bytes", bomb.len());
    let answer = post(&http_client(), &server, PROTOBUF, Some("gzip"), bomb).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status.message.contains("decompressed") && status.message.contains("max_body_bytes"),
        "{}",
        status.message
    );
    assert_eq!(store.get(&point.key()).unwrap(), None);
    assert_still_accepts(&server, "small").await;
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_bomb_is_resource_exhausted() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, small_body_limit).await;
    let point = Pt::new("node-1", "bomb", hour_ago());
    let status = server
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(padded_request(&point, 10 << 20))
        .await
        .expect_err("over the limit once inflated");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(&LIMIT.to_string()), "{status:?}");
    assert_eq!(store.get(&point.key()).unwrap(), None);
    assert_still_accepts(&server, "small").await;
    server.stop_and_read().await;
}

/// The module docs of the gRPC receiver: "OTLP says RESOURCE_EXHAUSTED for both sizes,
/// with a message that names the limit" — as the uncompressed case and the HTTP
/// receiver do, the operator is told which setting to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_bomb_message_names_the_setting() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, small_body_limit).await;
    let point = Pt::new("node-1", "bomb", hour_ago());
    let status = server
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(padded_request(&point, 10 << 20))
        .await
        .expect_err("over the limit once inflated");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_body_bytes"),
        "the message does not name limits.max_body_bytes: {:?}",
        status.message()
    );
    server.stop_and_read().await;
}

// ----- malformed bodies ----------------------------------------------------------------

/// Not a protobuf message: field 0 / a truncated varint.
const GARBAGE: &[u8] = b"\xff\xff\xff\xff\xff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_malformed_protobuf_is_400_with_a_message() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let answer = post(&http_client(), &server, PROTOBUF, None, GARBAGE).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status
            .message
            .contains("not an OTLP protobuf ExportMetricsServiceRequest"),
        "{}",
        status.message
    );
    assert_still_accepts(&server, "ok").await;
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_protobuf_is_invalid_argument() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let status = grpc_raw(
        server.channel().await,
        unseen_server::GRPC_EXPORT_PATH,
        GARBAGE.into(),
        false,
    )
    .await
    .expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("not an OTLP protobuf ExportMetricsServiceRequest"),
        "{status:?}"
    );
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_other_methods_are_unimplemented() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let status = grpc_raw(
        server.channel().await,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Default::default(),
        false,
    )
    .await
    .expect_err("traces are not served");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_invalid_json_is_400_answered_in_json() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let answer = post(
        &http_client(),
        &server,
        JSON,
        None,
        r#"{"resourceMetrics": [{"#,
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["code"], tonic::Code::InvalidArgument as i32);
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("JSON"), "{message}");
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_corrupt_gzip_is_400() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let answer = post(&http_client(), &server, PROTOBUF, Some("gzip"), "not gzip").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let status = answer.proto_status();
    assert!(
        status.message.contains("not valid gzip"),
        "{}",
        status.message
    );
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_unsupported_content_type_or_encoding_is_415() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let client = http_client();
    let body = request(&[Pt::new("node-1", "img", hour_ago())]).encode_to_vec();

    let answer = post(&client, &server, "text/plain", None, body.clone()).await;
    assert_eq!(answer.status, 415, "{answer:?}");
    // The content type is unknown: the error is in protobuf, the OTLP default.
    let status = answer.proto_status();
    assert!(
        status
            .message
            .contains("Content-Type `text/plain` is not supported"),
        "{}",
        status.message
    );

    let answer = post(&client, &server, PROTOBUF, Some("br"), body).await;
    assert_eq!(answer.status, 415, "{answer:?}");
    let status = answer.proto_status();
    assert!(
        status
            .message
            .contains("Content-Encoding `br` is not supported"),
        "{}",
        status.message
    );
    assert!(server.stop_and_read().await.is_empty());
}

/// Media types are compared without their parameters and case: a JSON request with a
/// charset is JSON, and is answered as `application/json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_parameters_and_case_are_ignored() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let point = Pt::new("node-1", "charset", hour_ago());
    let body = json_body(&request(std::slice::from_ref(&point)));
    let answer = post(
        &http_client(),
        &server,
        "Application/JSON; charset=utf-8",
        None,
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), serde_json::json!({}));
    assert!(store.get(&point.key()).unwrap().is_some());
    assert_eq!(server.stop_and_read().await, vec![point.finding_id()]);
}

// ----- partial success -----------------------------------------------------------------

/// Good points and points an hour ahead of the server clock in one request: the future
/// ones are rejected and counted, the others are committed and reported.
async fn future_points(via: Via) {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let now = unseen_server::now_secs();
    let good = [
        Pt::new("node-1", "good-a", now - 120),
        Pt::new("node-2", "good-b", now - 60),
    ];
    let future: Vec<Pt> = (0..3)
        .map(|i| Pt::new("node-1", &format!("future-{i}"), now + 3_600))
        .collect();
    // Interleaved, so that rejections in the middle do not cut the rest.
    let points = [
        future[0].clone(),
        good[0].clone(),
        future[1].clone(),
        good[1].clone(),
        future[2].clone(),
    ];
    let (rejected, message) = export(&server, via, &request(&points)).await;
    assert_eq!(rejected, 3, "{message}");
    assert!(
        message.contains("3 more than") && message.contains("ahead of the server clock"),
        "{message}"
    );
    for p in &future {
        assert_eq!(store.get(&p.key()).unwrap(), None, "{p:?} stored");
    }
    for p in &good {
        assert!(store.get(&p.key()).unwrap().is_some(), "{p:?} not stored");
    }
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &good.iter().map(Pt::finding_id).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_points_are_rejected_the_rest_kept_grpc() {
    future_points(Via::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_points_are_rejected_the_rest_kept_http_protobuf() {
    future_points(Via::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_points_are_rejected_the_rest_kept_http_json() {
    future_points(Via::HttpJson).await;
}

/// A point without `k8s.node.name` has no key; the others of its request do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_node_name_is_partial_success_naming_the_attribute() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let mut good = Vec::new();
    for via in [Via::Grpc, Via::HttpProtobuf, Via::HttpJson] {
        let ok = Pt::new("node-1", &format!("image-{via:?}"), hour_ago());
        let mut nameless = Pt::new("node-1", "nameless", hour_ago());
        nameless.node = None;
        let (rejected, message) = export(&server, via, &request(&[nameless, ok.clone()])).await;
        assert_eq!(rejected, 1, "{via:?}: {message}");
        assert!(
            message.contains("1 without `k8s.node.name`"),
            "{via:?}: {message}"
        );
        assert!(store.get(&ok.key()).unwrap().is_some());
        good.push(ok);
    }
    assert_eq!(store.key_count().unwrap(), 3);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &good.iter().map(Pt::finding_id).collect());
}

/// No `k8s.cluster.name` and no configured cluster name: rejected, and the message says
/// what to configure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_cluster_without_cluster_name_is_partial_success() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let ok = Pt::new("node-1", "with-cluster", hour_ago());
    let mut clusterless = Pt::new("node-1", "clusterless", hour_ago());
    clusterless.cluster = None;
    let (rejected, message) =
        export(&server, Via::HttpJson, &request(&[clusterless, ok.clone()])).await;
    assert_eq!(rejected, 1, "{message}");
    assert!(
        message.contains("without `k8s.cluster.name`") && message.contains("cluster_name"),
        "{message}"
    );
    assert!(store.get(&ok.key()).unwrap().is_some());
    assert_eq!(store.key_count().unwrap(), 1);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &[ok.finding_id()].into());
}

/// With `cluster_name` configured, the same point is complete: its key has that cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_cluster_name_completes_points_without_one() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| {
        c.mode.cluster_name = Some("configured".to_string());
    })
    .await;
    let mut clusterless = Pt::new("node-1", "clusterless", hour_ago());
    clusterless.cluster = None;
    let (rejected, message) = export(&server, Via::Grpc, &request(&[clusterless.clone()])).await;
    assert_eq!((rejected, message.as_str()), (0, ""));
    clusterless.cluster = Some("configured".to_string());
    assert!(store.get(&clusterless.key()).unwrap().is_some());
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &[clusterless.finding_id()].into());
}

/// `max_keys` = 3: the first three keys are kept, later new keys are refused, known keys
/// still count; the refusals show in the metrics under `reason="key_cap"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cap_refuses_new_keys_past_max_keys() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| {
        c.limits.max_keys = 3;
        // An alerting sink that never delivers: what it would be sent stays in the log.
        c.sinks
            .push(unseen_sinks::SinkConfig::webhook("http://127.0.0.1:9/"));
    })
    .await;
    let t = hour_ago();
    let p = |image: &str, time| Pt::new("node-1", image, time);
    let (rejected, message) = export(
        &server,
        Via::HttpProtobuf,
        &request(&[p("a", t), p("b", t)]),
    )
    .await;
    assert_eq!((rejected, message.as_str()), (0, ""));

    // Past the cap, new keys are refused and the request is answered "busy, retry"
    // (429 with Retry-After), not acknowledged: its sender keeps the points and tries
    // again. What could be kept was kept.
    let answer = post(
        &http_client(),
        &server,
        PROTOBUF,
        None,
        request(&[p("c", t), p("d", t), p("e", t)]).encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("60"), "{answer:?}");
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status.message.contains("2 of new keys refused")
            && status.message.contains("tracks 3 keys")
            && status.message.contains("max_keys")
            && status.message.contains("other points were kept"),
        "{}",
        status.message
    );

    // A known key is no new key: kept. A new one is refused, over gRPC too, as
    // RESOURCE_EXHAUSTED with a RetryInfo (retryable, in OTLP's terms).
    let refused = server
        .grpc_client()
        .await
        .export(request(&[p("a", t + 60), p("f", t + 60)]))
        .await
        .expect_err("a new key past the cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_keys"),
        "{}",
        refused.message()
    );
    let details = RpcStatus::decode(refused.details()).expect("a google.rpc.Status");
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
    let info = RetryInfo::decode(details.details[0].value.as_slice()).expect("a RetryInfo");
    assert_eq!(info.retry_delay.map(|d| d.seconds), Some(60));

    for image in ["a", "b", "c"] {
        assert!(store.get(&p(image, t).key()).unwrap().is_some(), "{image}");
    }
    for image in ["d", "e", "f"] {
        assert_eq!(store.get(&p(image, t).key()).unwrap(), None, "{image}");
    }
    assert_eq!(
        store.get(&p("a", t).key()).unwrap().unwrap().last_seen,
        t + 60
    );
    assert_eq!(store.key_count().unwrap(), 3);

    let text = server.metrics_text().await;
    let refused = sample(
        &text,
        "unseen_points_rejected_total",
        &[("receiver", "http"), ("reason", "key_cap")],
    );
    assert!(refused.is_some_and(|n| n >= 2.0), "{text}");
    let refused = sample(
        &text,
        "unseen_points_rejected_total",
        &[("receiver", "grpc"), ("reason", "key_cap")],
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        sample(&text, "unseen_capacity_reached", &[]),
        Some(1.0),
        "{text}"
    );

    // The operational notice, once (two refusals within the hour): an incident of kind
    // `capacity`, rule `unseen.capacity`, in the log the alerting sinks read.
    let notices: Vec<_> = store
        .pending("webhook", 1_000)
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| r.incident().cloned())
        .filter(|i| i.kind == unseen_findings::IncidentKind::Capacity)
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].rule_id, "unseen.capacity");
    assert_eq!(notices[0].severity, "high");
    assert!(
        notices[0].title.contains("key cap") && notices[0].title.contains("max_keys"),
        "{}",
        notices[0].title
    );

    let got = server.stop_and_read().await;
    assert_same_findings(&got, &["a", "b", "c"].map(|i| p(i, t).finding_id()).into());
}

/// New keys past a sender's rate are refused like the cap (429, retry); another
/// sender's are not, and known keys never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_past_the_rate_of_their_cluster_are_refused_retryable() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| {
        // 3 at once, then one every 1000 s: nothing refills during the test.
        c.limits.new_keys_burst = 3;
        c.limits.new_keys_per_second = 1;
    })
    .await;
    let t = hour_ago();
    let in_cluster = |cluster: &str, image: &str| {
        let mut p = Pt::new("node-1", image, t);
        p.cluster = Some(cluster.to_string());
        p
    };
    let first: Vec<Pt> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|i| in_cluster("alpha", i))
        .collect();
    let answer = post(
        &http_client(),
        &server,
        PROTOBUF,
        None,
        request(&first).encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, 429, "{answer:?}");
    let status = answer.proto_status();
    assert!(
        status.message.contains("2 of new keys refused")
            && status.message.contains("cluster `alpha`")
            && status.message.contains("new_keys_per_second"),
        "{}",
        status.message
    );
    // Two points over a rate of one a second: retry after two seconds.
    assert_eq!(answer.retry_after.as_deref(), Some("2"), "{answer:?}");
    let kept: Vec<bool> = first
        .iter()
        .map(|p| store.get(&p.key()).unwrap().is_some())
        .collect();
    assert_eq!(kept, [true, true, true, false, false]);

    // Another cluster has its own allowance; alpha's known keys are still taken.
    let (rejected, message) = export(
        &server,
        Via::Grpc,
        &request(&[in_cluster("beta", "a"), in_cluster("alpha", "a")]),
    )
    .await;
    assert_eq!((rejected, message.as_str()), (0, ""));
    let text = server.metrics_text().await;
    let refused = sample(
        &text,
        "unseen_points_rejected_total",
        &[("receiver", "http"), ("reason", "new_key_rate")],
    );
    assert_eq!(refused, Some(2.0), "{text}");
    server.stop_and_read().await;
}

/// A dimension over `max_dimension_bytes` makes its point malformed; the rest is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimension_over_max_dimension_bytes_is_a_malformed_point() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| c.limits.max_dimension_bytes = 64).await;
    let mut good = Vec::new();
    for via in [Via::Grpc, Via::HttpJson] {
        let ok = Pt::new("node-1", &format!("ok-{via:?}"), hour_ago());
        let long = Pt::new("node-1", &"x".repeat(100), hour_ago());
        let (rejected, message) = export(&server, via, &request(&[long.clone(), ok.clone()])).await;
        assert_eq!(rejected, 1, "{via:?}: {message}");
        assert!(
            message.contains("1 malformed")
                && message.contains("container.image.name")
                && message.contains("max_dimension_bytes"),
            "{via:?}: {message}"
        );
        assert_eq!(store.get(&long.key()).unwrap(), None);
        assert!(store.get(&ok.key()).unwrap().is_some());
        good.push(ok);
    }
    // Exactly at the limit is fine.
    let edge = Pt::new("node-1", &"y".repeat(64), hour_ago());
    assert_eq!(
        export(
            &server,
            Via::HttpProtobuf,
            &request(std::slice::from_ref(&edge))
        )
        .await,
        (0, String::new())
    );
    good.push(edge);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &good.iter().map(Pt::finding_id).collect());
}

/// Strict mode (the seed exactly): the host is `host.name`, and a point without one has
/// no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_needs_host_name() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| c.mode.strict = true).await;
    let with = Pt::new("node-1", "with-host", hour_ago());
    let without = Pt::new("node-1", "without-host", hour_ago());
    let mut req = request(&[with.clone(), without]);
    add_attribute(&mut req, 0, "host.name", "host-a");
    let (rejected, message) = export(&server, Via::Grpc, &req).await;
    assert_eq!(rejected, 1, "{message}");
    assert!(
        message.contains("1 without `host.name`") && message.contains("strict mode"),
        "{message}"
    );
    // Strict mode keys the image exactly as the point names it.
    let key = Key {
        host: "host-a".into(),
        image: with.image.clone(),
        ..with.key()
    };
    assert!(store.get(&key).unwrap().is_some());
    assert_eq!(store.key_count().unwrap(), 1);
    let got = server.stop_and_read().await;
    let id = unseen_findings::finding_id(&unseen_model::SEED_RULE, &key, with.time);
    assert_eq!(got, vec![id]);
}
