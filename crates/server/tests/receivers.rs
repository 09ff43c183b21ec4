//! A generated fleet history through each receiver and encoding: the findings are
//! exactly the episodes of the contract (section 4), each once.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use unseen_store::{RedbStore, StateStore};

use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    GrpcGzip,
    HttpProtobuf,
    HttpJson,
    HttpGzip,
    HttpJsonGzip,
}

const ALL: [Transport; 6] = [
    Transport::Grpc,
    Transport::GrpcGzip,
    Transport::HttpProtobuf,
    Transport::HttpJson,
    Transport::HttpGzip,
    Transport::HttpJsonGzip,
];

/// Clients for every transport, to one server.
struct Clients {
    grpc: MetricsServiceClient<Channel>,
    grpc_gzip: MetricsServiceClient<Channel>,
    http: reqwest::Client,
}

impl Clients {
    async fn new(server: &TestServer) -> Clients {
        let channel = server.channel().await;
        Clients {
            grpc: MetricsServiceClient::new(channel.clone()),
            grpc_gzip: MetricsServiceClient::new(channel)
                .send_compressed(CompressionEncoding::Gzip),
            http: http_client(),
        }
    }

    /// Sends one request and checks the answer: success, in the request's content type,
    /// and no partial success (every point of a generated history is usable).
    async fn send(
        &mut self,
        server: &TestServer,
        transport: Transport,
        request: &ExportMetricsServiceRequest,
    ) {
        let response: ExportMetricsServiceResponse = match transport {
            Transport::Grpc | Transport::GrpcGzip => {
                let client = if transport == Transport::Grpc {
                    &mut self.grpc
                } else {
                    &mut self.grpc_gzip
                };
                client
                    .export(request.clone())
                    .await
                    .unwrap_or_else(|s| panic!("{transport:?}: {s:?}"))
                    .into_inner()
            }
            Transport::HttpProtobuf => {
                post(&self.http, server, PROTOBUF, None, request.encode_to_vec())
                    .await
                    .proto_response()
            }
            Transport::HttpGzip => post(
                &self.http,
                server,
                PROTOBUF,
                Some("gzip"),
                gzip(&request.encode_to_vec()),
            )
            .await
            .proto_response(),
            Transport::HttpJson | Transport::HttpJsonGzip => {
                let answer = if transport == Transport::HttpJson {
                    post(&self.http, server, JSON, None, json_body(request)).await
                } else {
                    let body = gzip(&json_body(request));
                    post(&self.http, server, JSON, Some("gzip"), body).await
                };
                assert_eq!(answer.status, 200, "{answer:?}");
                // No partial success: an empty object (OTLP JSON leaves defaults out).
                assert_eq!(answer.json(), serde_json::json!({}));
                return;
            }
        };
        assert_eq!(
            response.partial_success, None,
            "{transport:?}: nothing is rejected"
        );
    }
}

/// Two days at 10-minute collections: a few hundred requests, dozens of keys, several
/// episodes per key.
fn small_history() -> History {
    let history = history(5, 2, 600);
    assert!(
        history.max_episodes_per_key >= 2 && history.expected.len() > history.keys.len(),
        "the history must hold keys with several episodes ({} keys, {} episodes)",
        history.keys.len(),
        history.expected.len()
    );
    history
}

async fn replay_and_check(transport: Transport) {
    let history = small_history();
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let mut clients = Clients::new(&server).await;
    for request in &history.requests {
        clients.send(&server, transport, request).await;
    }
    drop(clients);
    // Every key of the history is in the state.
    for key in &history.keys {
        assert!(store.get(key).unwrap().is_some(), "{key:?} not stored");
    }
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &history.expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_protobuf_reports_exactly_the_contract_episodes() {
    replay_and_check(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_reports_exactly_the_contract_episodes() {
    replay_and_check(Transport::GrpcGzip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_reports_exactly_the_contract_episodes() {
    replay_and_check(Transport::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_reports_exactly_the_contract_episodes() {
    replay_and_check(Transport::HttpJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_reports_exactly_the_contract_episodes() {
    replay_and_check(Transport::HttpGzip).await;
}

/// One server, the requests spread over all the transports in turn (JSON with gzip
/// too): the receivers share one pipeline and one state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_transports_into_one_server_report_each_episode_once() {
    let history = small_history();
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let mut clients = Clients::new(&server).await;
    for (i, request) in history.requests.iter().enumerate() {
        clients.send(&server, ALL[i % ALL.len()], request).await;
    }
    drop(clients);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &history.expected);
}

/// A sender retries what it thinks was lost: requests already committed are repeats,
/// which open no episode (contract section 4), so nothing is reported twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_requests_report_nothing_twice() {
    let history = small_history();
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let mut clients = Clients::new(&server).await;
    let half = history.requests.len() / 2;
    for request in &history.requests[..half] {
        clients
            .send(&server, Transport::HttpProtobuf, request)
            .await;
    }
    let before = server
        .wait_for_findings(
            history
                .opened_by
                .iter()
                .filter(|(i, _)| *i < half)
                .map(|(_, id)| id)
                .collect::<BTreeSet<_>>()
                .len(),
        )
        .await;
    // The first half again (as retries over the other transport), then the rest.
    for request in &history.requests[..half] {
        clients.send(&server, Transport::Grpc, request).await;
    }
    for request in &history.requests[half..] {
        clients
            .send(&server, Transport::HttpProtobuf, request)
            .await;
    }
    drop(clients);
    let got = server.stop_and_read().await;
    assert!(got.starts_with(&before));
    assert_same_findings(&got, &history.expected);
}

/// Restarts do not change what is reported (contract section 4): half the history,
/// a stop, a new server on the same state directory, the other half. Each episode is
/// reported once across both runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_state_reports_each_episode_once() {
    let history = small_history();
    let dir = tempfile::tempdir().unwrap();
    let split = history.requests.len() / 2;

    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    let server = TestServer::start(store.clone(), |_| {}).await;
    let mut clients = Clients::new(&server).await;
    for request in &history.requests[..split] {
        clients
            .send(&server, Transport::HttpProtobuf, request)
            .await;
    }
    drop(clients);
    let mut got = server.stop_and_read().await;
    // `run` returned: it holds the store no more, so it can be opened again (redb
    // locks its file).
    drop(store);
    let store = Arc::new(RedbStore::open(dir.path()).expect("the state reopens"));

    let server = TestServer::start(store, |_| {}).await;
    let mut clients = Clients::new(&server).await;
    for request in &history.requests[split..] {
        clients.send(&server, Transport::Grpc, request).await;
    }
    drop(clients);
    got.extend(server.stop_and_read().await);
    assert_same_findings(&got, &history.expected);
}

/// A request of more than 256 KiB is decoded on the blocking pool: every point of it
/// is committed and reported all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_is_kept_whole() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |_| {}).await;
    let t = unseen_server::now_secs() - 3_600;
    let points: Vec<Pt> = (0..3_000)
        .map(|i| Pt::new(&format!("node-{}", i % 7), &format!("image-{i:05}"), t))
        .collect();
    let request = request(&points);
    assert!(request.encoded_len() > 256 << 10);
    let mut clients = Clients::new(&server).await;
    clients
        .send(&server, Transport::HttpProtobuf, &request)
        .await;
    drop(clients);
    assert_eq!(store.key_count().unwrap(), 3_000);
    let got = server.stop_and_read().await;
    assert_same_findings(&got, &points.iter().map(Pt::finding_id).collect());
}

/// What a finding says (contract section 5), as the server fills it in: the key, the
/// `host.name` evidence, `previous_seen` for a returning key, and `late` from the
/// server's clock (more than R between the point and its arrival).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_carries_the_key_the_evidence_and_lateness() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let now = unseen_server::now_secs();
    let fresh = Pt::new("node-1", "fresh", now - 60);
    let late = Pt::new("node-2", "late", now - 3_600);
    let before = Pt::new("node-3", "returning", now - 7 * 3_600);
    let back = Pt::new("node-3", "returning", now - 60);
    let mut first = request(&[fresh.clone(), late.clone(), before.clone()]);
    add_attribute(&mut first, 0, "host.name", "collector-7");
    add_attribute(&mut first, 0, "k8s.namespace.name", "payments");
    add_attribute(&mut first, 0, "k8s.pod.name", "api-7d4b9c6f8d-x2x7q");
    add_attribute(&mut first, 0, "container.image.tag", "1.2.3");
    let mut clients = Clients::new(&server).await;
    clients.send(&server, Transport::HttpProtobuf, &first).await;
    // Seven hours later than its last sighting: more than B − R, a new episode.
    clients
        .send(
            &server,
            Transport::Grpc,
            &request(std::slice::from_ref(&back)),
        )
        .await;
    drop(clients);
    let (result, path, _dir) = {
        server.shutdown.cancel();
        server.finish().await
    };
    assert!(result.is_ok(), "{result:?}");
    let findings = file_findings(&path);
    assert_eq!(findings.len(), 4, "{findings:?}");

    let f = &findings[&fresh.finding_id()];
    assert_eq!(f["rule"]["id"], SEED_RULE_ID);
    assert_eq!(f["mode"], "default");
    assert_eq!(
        f["host"], "node-1",
        "the node is the host in the default mode"
    );
    assert_eq!(f["k8s.node.name"], "node-1");
    assert_eq!(f["k8s.cluster.name"], "test");
    assert_eq!(
        f["container.image.name"], "docker.io/library/fresh",
        "default mode keys the image's canonical reference"
    );
    assert_eq!(f["image"]["raw"], "fresh");
    assert_eq!(f["image"]["registry"], "docker.io");
    assert_eq!(f["image"]["repository"], "library/fresh");
    assert_eq!(f["image"]["tag"], "1.2.3");
    assert_eq!(f["host.name"], "collector-7");
    // Workload context from the opening point; absent attributes are null.
    assert_eq!(f["k8s.namespace.name"], "payments");
    assert_eq!(f["k8s.pod.name"], "api-7d4b9c6f8d-x2x7q");
    assert_eq!(f["container.image.tag"], "1.2.3");
    assert_eq!(f["k8s.pod.uid"], serde_json::Value::Null);
    assert_eq!(f["workload"]["kind"], "Deployment");
    assert_eq!(f["workload"]["name"], "api");
    assert_eq!(f["workload"]["derived"], true);
    assert_eq!(f["scope"], "fleet");
    assert!(f["incident_id"].is_string());
    assert_eq!(f["first_seen"], unseen_model::format_rfc3339(fresh.time));
    assert_eq!(f["previous_seen"], serde_json::Value::Null);
    assert_eq!(f["late"], false);

    let f = &findings[&late.finding_id()];
    assert_eq!(f["late"], true);
    assert_eq!(f["host.name"], serde_json::Value::Null);
    for field in [
        "k8s.namespace.name",
        "k8s.pod.name",
        "container.image.tag",
        "workload",
    ] {
        assert_eq!(
            f[field],
            serde_json::Value::Null,
            "{field} is absent, so null"
        );
    }

    assert!(findings.contains_key(&before.finding_id()));
    let f = &findings[&back.finding_id()];
    assert_eq!(f["first_seen"], unseen_model::format_rfc3339(back.time));
    assert_eq!(
        f["previous_seen"],
        unseen_model::format_rfc3339(before.time)
    );
    assert_eq!(f["late"], false);
}

const SEED_RULE_ID: &str = "fea515a4-b1d8-4cd6-80d6-e0d71397b891";
