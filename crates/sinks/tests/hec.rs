//! The Splunk HEC sink against an endpoint that checks each request as Splunk documents
//! HEC ("HTTP Event Collector REST API endpoints", "Format events for HTTP Event
//! Collector"): the path, `Authorization: Splunk <token>` (codes 2, 3, 4), gzip, the
//! event protocol (concatenated JSON envelopes; codes 5, 6, 12, 13), allowed indexes
//! (code 7) and server busy (503, code 9).

mod common;

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use unseen_sinks::hec::HecConfig;
use unseen_sinks::SinkConfig;
use unseen_store::conformance::{sighting, triage_opts};
use unseen_store::{MemStore, StateStore};

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "6f0e0e4c-2a5b-4a57-9c3e-5f3a1c2d7b10";

#[derive(Default)]
struct Hec {
    /// Answer 503 / code 9 to this many requests (an outage).
    busy: Mutex<u32>,
    /// Accepted envelopes.
    events: Mutex<Vec<Value>>,
    /// (token presented, status answered) of every request.
    requests: Mutex<Vec<(String, u16)>>,
    allowed_indexes: Vec<String>,
}

fn answer(status: StatusCode, text: &str, code: u32) -> axum::response::Response {
    (status, axum::Json(json!({ "text": text, "code": code }))).into_response()
}

async fn collector(
    State(hec): State<Arc<Hec>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let response = check(&hec, &uri, &headers, &token, &body);
    hec.requests
        .lock()
        .unwrap()
        .push((token, response.status().as_u16()));
    response
}

fn check(
    hec: &Hec,
    uri: &Uri,
    headers: &HeaderMap,
    auth: &str,
    body: &[u8],
) -> axum::response::Response {
    if uri.path() != "/services/collector/event" {
        return answer(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
            404,
        );
    }
    if auth.is_empty() {
        return answer(StatusCode::UNAUTHORIZED, "Token is required", 2);
    }
    let Some(token) = auth.strip_prefix("Splunk ") else {
        return answer(StatusCode::UNAUTHORIZED, "Invalid authorization", 3);
    };
    if token != TOKEN {
        return answer(StatusCode::FORBIDDEN, "Invalid token", 4);
    }
    {
        let mut busy = hec.busy.lock().unwrap();
        if *busy > 0 {
            *busy -= 1;
            return answer(StatusCode::SERVICE_UNAVAILABLE, "Server is busy", 9);
        }
    }
    assert_eq!(
        headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the sink compresses its bodies"
    );
    let mut plain = Vec::new();
    if flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .is_err()
    {
        return answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
    }
    let mut envelopes = Vec::new();
    for item in serde_json::Deserializer::from_slice(&plain).into_iter::<Value>() {
        let Ok(envelope) = item else {
            return answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        let Some(fields) = envelope.as_object() else {
            return answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        match fields.get("event") {
            None => return answer(StatusCode::BAD_REQUEST, "Event field is required", 12),
            Some(Value::Null) => {
                return answer(StatusCode::BAD_REQUEST, "Event field cannot be blank", 13)
            }
            Some(Value::String(s)) if s.is_empty() => {
                return answer(StatusCode::BAD_REQUEST, "Event field cannot be blank", 13)
            }
            Some(_) => {}
        }
        if fields.get("time").is_some_and(|t| !t.is_number()) {
            return answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        }
        for name in ["host", "source", "sourcetype", "index"] {
            if fields.get(name).is_some_and(|v| !v.is_string()) {
                return answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
            }
        }
        if let Some(index) = fields.get("index").and_then(Value::as_str) {
            if !hec.allowed_indexes.iter().any(|i| i == index) {
                return answer(StatusCode::BAD_REQUEST, "Incorrect index", 7);
            }
        }
        envelopes.push(envelope);
    }
    if envelopes.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "No data", 5);
    }
    hec.events.lock().unwrap().extend(envelopes);
    answer(StatusCode::OK, "Success", 0)
}

async fn serve_hec(hec: Arc<Hec>) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(collector).with_state(hec);
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}"), stop)
}

fn hec_sink(url: &str, token_file: &std::path::Path, index: Option<&str>) -> SinkConfig {
    let mut config = HecConfig::new(url, token_file);
    config.index = index.map(str::to_string);
    config.http = fast_http();
    SinkConfig::Hec(config)
}

/// A rollout (three findings, one incident, opened and closed) and a suppressed finding.
fn produce(store: &dyn StateStore) -> Vec<unseen_findings::Finding> {
    let node = |n: &str, image: &str| unseen_normalize::Key {
        host: n.into(),
        cluster: "a".into(),
        node: n.into(),
        image: image.into(),
    };
    let rollout: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| sighting(&node(n, "registry.example/team/new"), 10_000))
        .collect();
    let mut findings: Vec<_> = store
        .apply(&rollout, &triage_opts(10_000))
        .unwrap()
        .findings()
        .cloned()
        .collect();
    let rules = unseen_findings::Suppressions::parse(
        "rules.toml",
        "[[suppress]]\nreason = \"debug\"\n\"container.image.name\" = \"registry.example/debug/*\"\n",
    )
    .unwrap();
    let opts = unseen_store::ApplyOptions {
        suppressions: Arc::new(rules),
        ..triage_opts(10_400)
    };
    let applied = store
        .apply(
            &[sighting(
                &node("n1", "registry.example/debug/shell"),
                10_400,
            )],
            &opts,
        )
        .unwrap();
    findings.extend(applied.findings().cloned());
    findings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_events_reach_hec_as_splunk_expects_them_across_an_outage() {
    let hec = Arc::new(Hec {
        busy: Mutex::new(3),
        allowed_indexes: vec!["security".into()],
        ..Hec::default()
    });
    let (url, stop) = serve_hec(hec.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hec.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let run = start(
        store.clone(),
        vec![hec_sink(&url, &token_file, Some("security"))],
    );
    let findings = produce(store.as_ref());
    run.notify.notify_waiters();
    wait_until("the outbox is delivered", LIMIT, || {
        pending_count(store.as_ref(), "hec") == 0
    })
    .await;
    run.stop().await;
    stop.cancel();

    let busy_answers = hec
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, status)| *status == 503)
        .count();
    assert_eq!(busy_answers, 3, "503 / code 9 is retried");
    let events = hec.events.lock().unwrap().clone();
    let (risk, incidents): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|e| e["sourcetype"] == "unseen:finding");
    // Every finding but the suppressed one is a risk event.
    let sent: Vec<&str> = risk
        .iter()
        .map(|e| e["event"]["finding_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = findings
        .iter()
        .filter(|f| f.suppressed.is_none())
        .map(|f| f.finding_id.as_str())
        .collect();
    assert_eq!(sent, expected);
    assert_eq!(
        findings.len(),
        expected.len() + 1,
        "one finding was suppressed"
    );
    for (e, f) in risk.iter().zip(findings.iter()) {
        assert_eq!(e["index"], "security");
        assert_eq!(e["source"], "unseen");
        assert_eq!(e["host"], f.host.as_str());
        assert_eq!(e["time"], unseen_model::parse_time(&f.first_seen).unwrap());
        let event = &e["event"];
        for field in [
            "risk_object",
            "risk_object_type",
            "risk_score",
            "risk_message",
            "search_name",
        ] {
            assert!(!event[field].is_null(), "risk event field {field}: {event}");
        }
        assert_eq!(event["annotations"]["mitre_attack"], json!(["T1204"]));
    }
    assert!(
        incidents
            .iter()
            .all(|e| e["sourcetype"] == "unseen:incident" && e["event"]["incident_id"].is_string()),
        "{incidents:?}"
    );
    let states: Vec<&str> = incidents
        .iter()
        .map(|e| e["event"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["open", "closed"]);
}

/// A refused token is not sent again; the events stay pending; a new token in the file
/// resumes delivery without a restart. A wrong index is an error that stays pending too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_not_retried_and_a_new_one_resumes() {
    let hec = Arc::new(Hec {
        allowed_indexes: vec!["security".into()],
        ..Hec::default()
    });
    let (url, stop) = serve_hec(hec.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hec.token");
    std::fs::write(&token_file, "not-the-token").unwrap();
    let inner: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let store = FailingAck::times(inner.clone(), 0);
    let run = start(store.clone(), vec![hec_sink(&url, &token_file, None)]);
    produce(inner.as_ref());
    run.notify.notify_waiters();
    wait_until("Splunk refused the token", LIMIT, || {
        hec.requests.lock().unwrap().iter().any(|(_, s)| *s == 403)
    })
    .await;
    // Several more attempts of the sink (each looks at its outbox first)…
    let attempts = store.pending_calls.load(Ordering::SeqCst);
    wait_until("the sink tried again several times", LIMIT, || {
        store.pending_calls.load(Ordering::SeqCst) >= attempts + 4
    })
    .await;
    // … sent nothing more with the refused token, and delivered nothing.
    assert_eq!(
        hec.requests.lock().unwrap().len(),
        1,
        "one request with the bad token"
    );
    assert!(
        pending_count(inner.as_ref(), "hec") > 0,
        "the events stay pending"
    );
    // The operator puts the right token in the file: delivery resumes.
    std::fs::write(&token_file, TOKEN).unwrap();
    wait_until("delivered with the new token", LIMIT, || {
        pending_count(inner.as_ref(), "hec") == 0
    })
    .await;
    assert!(!hec.events.lock().unwrap().is_empty());
    run.stop().await;

    // An index the token may not write to: code 7, nothing acknowledged.
    let other: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let run = start(
        other.clone(),
        vec![hec_sink(&url, &token_file, Some("main"))],
    );
    produce(other.as_ref());
    run.notify.notify_waiters();
    let before = hec.events.lock().unwrap().len();
    wait_until("Splunk refused the index", LIMIT, || {
        hec.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == 400)
            .count()
            >= 2
    })
    .await;
    assert_eq!(hec.events.lock().unwrap().len(), before);
    assert!(pending_count(other.as_ref(), "hec") > 0);
    run.stop().await;
    stop.cancel();
}

#[test]
fn a_missing_or_empty_token_file_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    for (file, says) in [
        (dir.path().join("absent"), "cannot read the secret file"),
        (empty, "is empty"),
    ] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(async {
            let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
            unseen_sinks::start(
                store,
                vec![hec_sink("http://127.0.0.1:1", &file, None)],
                Default::default(),
                CancellationToken::new(),
            )
            .expect_err("refused")
        });
        assert!(err.to_string().contains(says), "{err}");
    }
}
