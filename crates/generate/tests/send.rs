//! The replayer against a real OTLP/HTTP endpoint on loopback: retries with Retry-After,
//! refusals, partial success, gzip, pacing.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use unseen_generate::{send, Generator, Params, SendError, SendOptions};

/// What the server answers to each request, in turn; after the script, 200.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16, Option<&'static str>),
    Partial(i64),
}

#[derive(Default)]
struct Server {
    script: Vec<Answer>,
    /// What the test's progress callback last saw the generator encode, and its value
    /// when the first request arrived.
    encoded: Arc<std::sync::atomic::AtomicU64>,
    encoded_at_first_request: Option<u64>,
    calls: usize,
    accepted_ready: u64,
    accepted_points: u64,
    gzipped: usize,
    times: Vec<Instant>,
}

type Shared = Arc<Mutex<Server>>;

async fn export(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let call = s.calls;
    s.calls += 1;
    s.times.push(Instant::now());
    if call == 0 {
        s.encoded_at_first_request = Some(s.encoded.load(std::sync::atomic::Ordering::SeqCst));
    }
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let raw = if gzip {
        s.gzipped += 1;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    let request = ExportMetricsServiceRequest::decode(&raw[..]).expect("a valid OTLP request");
    let mut partial = None;
    match s.script.get(call).copied() {
        Some(Answer::Status(code, retry_after)) => {
            let mut response = (
                StatusCode::from_u16(code).unwrap(),
                // google.rpc.Status { code: 8, message: "..." }
                status_body(&format!("scripted {code}")),
            )
                .into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static(after));
            }
            return response;
        }
        Some(Answer::Partial(n)) => partial = Some(n),
        None => {}
    }
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                s.accepted_points += 1;
                if m.name == "k8s.container.ready" {
                    s.accepted_ready += 1;
                }
            }
        }
    }
    let response = ExportMetricsServiceResponse {
        partial_success: partial.map(|n| ExportMetricsPartialSuccess {
            rejected_data_points: n,
            error_message: "some points were bad".to_string(),
        }),
    };
    (StatusCode::OK, response.encode_to_vec()).into_response()
}

fn status_body(message: &str) -> Vec<u8> {
    // Field 2 (message), length-delimited.
    let mut out = vec![0x08, 8, 0x12, message.len() as u8];
    out.extend_from_slice(message.as_bytes());
    out
}

async fn start(script: Vec<Answer>) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Server {
        script,
        ..Server::default()
    }));
    let app = Router::new()
        .route("/v1/metrics", post(export))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn generator() -> Generator {
    Generator::new(Params {
        clusters: 2,
        nodes_per_cluster: 2,
        pods_per_node: 3,
        images: 20,
        duration_secs: 3600,
        interval_secs: 600,
        ..Params::default()
    })
    .unwrap()
}

fn options(endpoint: &str) -> SendOptions {
    SendOptions {
        endpoint: endpoint.to_string(),
        concurrency: 1,
        max_retries: 3,
        ..SendOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_overload_answers_honouring_retry_after_and_delivers_everything() {
    let (url, state) = start(vec![
        Answer::Status(429, Some("1")),
        Answer::Status(503, None),
        Answer::Status(502, None),
    ])
    .await;
    let mut g = generator();
    let started = Instant::now();
    let stats = send(&mut g, &options(&url), &mut |_, _| {}).await.unwrap();
    let s = state.lock().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 not honoured"
    );
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.requests, g.stats().batches);
    assert_eq!(s.calls as u64, g.stats().batches + 3);
    assert_eq!(stats.ready_points, g.stats().ready_points);
    assert_eq!(s.accepted_ready, g.stats().ready_points);
    assert_eq!(s.accepted_points, g.stats().points);
    assert_eq!(stats.latency.count(), stats.requests);
    assert!(stats.latency.max() >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_stops_the_replay_with_the_servers_message() {
    let (url, state) = start(vec![Answer::Status(400, None)]).await;
    let mut g = generator();
    let err = send(&mut g, &options(&url), &mut |_, _| {})
        .await
        .unwrap_err();
    match &err {
        SendError::Refused { status, message } => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(message, "scripted 400");
        }
        other => panic!("{other:?}"),
    }
    // Not retried.
    assert_eq!(state.lock().unwrap().calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_the_retry_budget() {
    let (url, state) = start(vec![Answer::Status(503, Some("0")); 10]).await;
    let mut g = generator();
    let err = send(&mut g, &options(&url), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::GaveUp { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(state.lock().unwrap().calls, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_reported() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut g = generator();
    let mut opts = options(&format!("http://127.0.0.1:{port}"));
    opts.max_retries = 1;
    let err = send(&mut g, &opts, &mut |_, _| {}).await.unwrap_err();
    assert!(
        matches!(err, SendError::GaveUp { attempts: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_counted_not_retried() {
    let (url, state) = start(vec![Answer::Partial(7)]).await;
    let mut g = generator();
    let stats = send(&mut g, &options(&url), &mut |_, _| {}).await.unwrap();
    assert_eq!(stats.rejected_points, 7);
    assert_eq!(stats.retries, 0);
    assert_eq!(state.lock().unwrap().calls as u64, stats.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_concurrency_deliver_the_same_points() {
    let (url, state) = start(vec![]).await;
    let mut g = generator();
    let mut opts = options(&url);
    opts.gzip = true;
    opts.concurrency = 4;
    let mut calls = 0;
    let stats = send(&mut g, &opts, &mut |_, _| calls += 1).await.unwrap();
    let s = state.lock().unwrap();
    assert_eq!(s.gzipped as u64, stats.requests);
    assert_eq!(s.accepted_ready, g.stats().ready_points);
    assert!(calls as u64 > stats.requests);
    // Compressed bodies are smaller than the points' raw protobuf would be.
    assert!(
        stats.bytes < g.stats().points * 100,
        "{} bytes",
        stats.bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_paces_points() {
    let (url, state) = start(vec![]).await;
    let mut g = generator();
    let total = {
        let mut probe = generator();
        while probe.next_batch().is_some() {}
        probe.stats().points
    };
    let mut opts = options(&url);
    // The whole history in about 1.5 s.
    opts.rate = Some(total * 2 / 3);
    let started = Instant::now();
    let stats = send(&mut g, &opts, &mut |_, _| {}).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(stats.points, total);
    // The last batch leaves once the others fit the rate.
    let batches = stats.requests;
    let min = Duration::from_secs_f64(1.5 * (batches - 1) as f64 / batches as f64 * 0.9);
    // Only the lower bound is the rate's: a loaded machine may send slower, never faster.
    assert!(elapsed >= min, "{elapsed:?} < {min:?}");
    let s = state.lock().unwrap();
    assert!(s.times.last().unwrap().duration_since(s.times[0]) >= min / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_encodes_everything_first_then_sends_the_same_history() {
    use std::sync::atomic::Ordering;
    let (url, state) = start(vec![Answer::Status(503, Some("0"))]).await;
    let encoded = state.lock().unwrap().encoded.clone();
    let mut g = generator();
    let mut opts = options(&url);
    opts.preload = true;
    opts.concurrency = 2;
    let stats = send(&mut g, &opts, &mut |_, g| {
        encoded.store(g.stats().batches, Ordering::SeqCst)
    })
    .await
    .unwrap();
    let s = state.lock().unwrap();
    // Every batch was encoded before the first request left.
    assert_eq!(s.encoded_at_first_request, Some(g.stats().batches));
    assert!(g.next_batch().is_none());
    // And the replay is the same as without preloading: every point, retries included.
    assert_eq!(stats.requests, g.stats().batches);
    assert_eq!(stats.retries, 1);
    assert_eq!(s.accepted_ready, g.stats().ready_points);
    assert_eq!(s.accepted_points, g.stats().points);
    assert!(stats.preload > Duration::ZERO);
}
