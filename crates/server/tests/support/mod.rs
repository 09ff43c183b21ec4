//! Shared by the server's integration tests: an in-process server on port 0, OTLP
//! requests (a generated history and hand-made points), clients for both transports, a
//! store that blocks its commits on demand, and the `google.rpc` messages of the error
//! details.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use unseen_detect::KeyState;
use unseen_generate::{Churn, Generator, Params};
use unseen_model::{UnixSecs, Windows, SEED_RULE};
use unseen_normalize::{Key, KeyMode};
use unseen_server::{Config, Limits, Listeners, ServerError};
use unseen_sinks::SinkConfig;
use unseen_store::{Applied, ApplyOptions, MemStore, Sighting, StateStore, StoreError};

/// Small windows so that two days of history hold several episodes per key:
/// C = 1 h, B = 6 h, R = 30 min, so B − R = 5 h 30 min.
pub const WINDOWS: Windows = Windows {
    current: 3_600,
    baseline: 6 * 3_600,
    recent: 30 * 60,
};
pub const GAP_SECS: i64 = 6 * 3_600 - 30 * 60;

/// How long any single wait in a test may take before it fails: generous for a loaded
/// 2-core machine, never reached when the server works.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// The `metrics` recorder is process-global: install one Prometheus recorder per test
/// binary and hand its handle to every server. (Under nextest each test is its own
/// process; under `cargo test` the tests of a binary share it, so metric assertions
/// only check lower bounds and label sets.)
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("no other global recorder");
            handle
        })
        .clone()
}

/// The value of the first sample of `name` whose labels contain every `labels` pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// The configuration every test starts from: small windows, default key mode with no
/// cluster name, no learning, findings to a JSON-lines file, default limits.
pub fn config(findings: &Path) -> Config {
    Config {
        triage: Default::default(),
        windows: WINDOWS,
        mode: KeyMode::default(),
        learn: None,
        sinks: vec![SinkConfig::File {
            path: findings.to_path_buf(),
            format: Default::default(),
        }],
        limits: Limits::default(),
        // Long enough never to cut a test's request short; a working drain takes
        // milliseconds.
        shutdown_grace: Duration::from_secs(30),
        suppressions: Default::default(),
        suppressions_file: None,
        tls: None,
        tokens_file: None,
        history_retention: unseen_server::DEFAULT_HISTORY_RETENTION,
        release_freed_memory: None,
        reload: Default::default(),
    }
}

/// One `unseen_server::run` in a task of the test's runtime, on three port-0 listeners.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The query API (it refuses every request unless the config has a tokens file).
    pub api: SocketAddr,
    pub findings: PathBuf,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ServerError>>,
    /// How the admin port is reached: `http`, or `https` with a client that trusts the
    /// test's CA (TLS tests).
    admin_client: (&'static str, reqwest::Client),
    _dir: TempDir,
}

impl TestServer {
    /// Starts a server on `store` with the [`config`] changed by `tweak`, and waits
    /// until it is ready.
    pub async fn start(store: Arc<dyn StateStore>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_reached_by(store, tweak, ("http", http_client()), "127.0.0.1").await
    }

    /// [`TestServer::start`] for a server whose admin port is reached by `admin` (a
    /// scheme and a client).
    pub async fn start_reached_by(
        store: Arc<dyn StateStore>,
        tweak: impl FnOnce(&mut Config),
        admin_client: (&'static str, reqwest::Client),
        receivers_ip: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let findings = dir.path().join("findings.jsonl");
        let mut config = config(&findings);
        tweak(&mut config);
        let bind = |ip: &str| TcpListener::bind(format!("{ip}:0"));
        let listeners = Listeners {
            otlp_grpc: bind(receivers_ip).await.expect("bind gRPC"),
            otlp_http: bind(receivers_ip).await.expect("bind HTTP"),
            admin: bind("127.0.0.1").await.expect("bind admin"),
            api: Some(bind("127.0.0.1").await.expect("bind the API")),
        };
        let api = listeners.api.as_ref().unwrap().local_addr().unwrap();
        let grpc = listeners.otlp_grpc.local_addr().unwrap();
        let http = listeners.otlp_http.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(unseen_server::run(
            listeners,
            config,
            store,
            prometheus(),
            shutdown.clone(),
        ));
        let server = TestServer {
            grpc,
            http,
            admin,
            api,
            findings,
            shutdown,
            task,
            admin_client,
            _dir: dir,
        };
        // The listeners are bound already, so requests would queue in the backlog
        // anyway; waiting for /readyz makes a failed start fail here, with its error.
        let deadline = Instant::now() + DEADLINE;
        loop {
            if server.task.is_finished() {
                panic!(
                    "the server stopped during its start: {:?}",
                    server.task.await
                );
            }
            if let Ok((200, _)) = server.admin_get("/readyz").await {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}{}", self.http, unseen_server::HTTP_PATH)
    }

    /// GET on the admin port: status and body.
    pub async fn admin_get(&self, path: &str) -> reqwest::Result<(u16, String)> {
        let (scheme, client) = &self.admin_client;
        let host = match *scheme {
            // The test certificates name `localhost`.
            "https" => format!("localhost:{}", self.admin.port()),
            _ => self.admin.to_string(),
        };
        let response = client
            .get(format!("{scheme}://{host}{path}"))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    pub async fn metrics_text(&self) -> String {
        let (status, text) = self.admin_get("/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        text
    }

    /// The generated gRPC client, on its own connection.
    pub async fn grpc_client(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gRPC receiver")
    }

    /// Waits for `run` to return (after the token was cancelled) and returns its result.
    pub async fn finish(self) -> (Result<(), ServerError>, PathBuf, TempDir) {
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task did not panic");
        (result, self.findings, self._dir)
    }

    /// Stops the server, checks that `run` returned `Ok`, and returns the findings
    /// file's ids in order (the sinks' last delivery attempt is part of the stop).
    pub async fn stop_and_read(self) -> Vec<String> {
        self.shutdown.cancel();
        let (result, findings, _dir) = self.finish().await;
        assert!(result.is_ok(), "run returned an error: {result:?}");
        file_ids(&findings)
    }

    /// Polls the findings file until it holds at least `n` findings; returns its ids.
    pub async fn wait_for_findings(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ids = file_ids(&self.findings);
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "{} finding(s) delivered, expected {n}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The findings file's `finding_id`s in order (duplicates kept). A line that is not a
/// finding fails the test.
pub fn file_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    complete_lines(&text)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a findings line is not JSON ({e}): {line}"));
            v["finding_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no finding_id: {line}"))
                .to_string()
        })
        .collect()
}

/// Asserts that `got` holds each of `expected` exactly once and nothing else.
pub fn assert_same_findings(got: &[String], expected: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let dups: Vec<_> = got.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(dups.is_empty(), "findings delivered twice: {dups:?}");
    let got: BTreeSet<String> = seen.into_iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} findings, {} expected; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// A client that ignores proxy settings from the environment (the server is local).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("an HTTP client")
}

/// An OTLP/HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl HttpAnswer {
    /// The protobuf `ExportMetricsServiceResponse` of a 200.
    pub fn proto_response(&self) -> ExportMetricsServiceResponse {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.content_type, PROTOBUF);
        ExportMetricsServiceResponse::decode(self.body.clone())
            .expect("the body is an ExportMetricsServiceResponse")
    }

    /// The JSON body (a response or a status).
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type, JSON, "{self:?}");
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The protobuf `google.rpc.Status` of an error answer.
    pub fn proto_status(&self) -> RpcStatus {
        assert_eq!(self.content_type, PROTOBUF, "{self:?}");
        RpcStatus::decode(self.body.clone()).expect("the body is a google.rpc.Status")
    }
}

/// POSTs `body` to the OTLP/HTTP receiver.
pub async fn post(
    client: &reqwest::Client,
    server: &TestServer,
    content_type: &str,
    content_encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> HttpAnswer {
    post_url(
        client,
        &server.http_url(),
        content_type,
        content_encoding,
        body,
    )
    .await
}

/// [`post`] to a URL (for tasks that do not borrow the server).
pub async fn post_url(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    content_encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> HttpAnswer {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(encoding) = content_encoding {
        request = request.header(reqwest::header::CONTENT_ENCODING, encoding);
    }
    let response = request.send().await.expect("the HTTP receiver answers");
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let status = response.status().as_u16();
    HttpAnswer {
        status,
        content_type,
        retry_after,
        body: response.bytes().await.expect("the answer's body"),
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// OTLP/JSON of a request, with the generator's encoder (the OTLP JSON mapping).
pub fn json_body(request: &ExportMetricsServiceRequest) -> Vec<u8> {
    let mut out = Vec::new();
    unseen_generate::encode::write_json(request, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// gRPC with raw bodies
// ---------------------------------------------------------------------------------------

/// Sends `body` as the Export request message, whatever its bytes (the generated client
/// can only send valid requests). `gzip` compresses the message.
pub async fn grpc_raw(
    channel: Channel,
    path: &'static str,
    body: Bytes,
    gzip: bool,
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Requests as raw bytes, responses as `ExportMetricsServiceResponse`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportMetricsServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportMetricsServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// google.rpc messages (as in crates/server/src/status.rs: the server's private copy)
// ---------------------------------------------------------------------------------------

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

// ---------------------------------------------------------------------------------------
// Hand-made points
// ---------------------------------------------------------------------------------------

/// One `k8s.container.ready` point; `None` leaves the attribute out.
#[derive(Debug, Clone)]
pub struct Pt {
    pub node: Option<String>,
    pub cluster: Option<String>,
    pub image: String,
    pub time: UnixSecs,
}

impl Pt {
    /// A complete point on `node`, in cluster `test`.
    pub fn new(node: &str, image: &str, time: UnixSecs) -> Pt {
        Pt {
            node: Some(node.to_string()),
            cluster: Some("test".to_string()),
            image: image.to_string(),
            time,
        }
    }

    /// Its key in the default mode (host = node, the image's canonical reference).
    pub fn key(&self) -> Key {
        let node = self.node.clone().expect("a key needs a node");
        Key {
            host: node.clone(),
            cluster: self.cluster.clone().expect("a key needs a cluster"),
            node,
            image: unseen_normalize::image::canonical(&self.image, None).into_owned(),
        }
    }

    /// The id of the finding it opens when it is its key's first sighting.
    pub fn finding_id(&self) -> String {
        unseen_findings::finding_id(&SEED_RULE, &self.key(), self.time)
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// An OTLP request with one resource (a container) per point, as the k8s_cluster
/// receiver sends them.
pub fn request(points: &[Pt]) -> ExportMetricsServiceRequest {
    let resource_metrics = points
        .iter()
        .map(|p| {
            let mut attributes = Vec::new();
            if let Some(cluster) = &p.cluster {
                attributes.push(string_kv("k8s.cluster.name", cluster));
            }
            if let Some(node) = &p.node {
                attributes.push(string_kv("k8s.node.name", node));
            }
            attributes.push(string_kv("container.image.name", &p.image));
            attributes.push(string_kv("k8s.container.name", "app"));
            ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "k8s.container.ready".to_string(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: p.time as u64 * 1_000_000_000,
                                value: Some(number_data_point::Value::AsInt(1)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// Adds a string attribute to the resource of the `index`th point of a [`request`].
pub fn add_attribute(
    request: &mut ExportMetricsServiceRequest,
    index: usize,
    key: &str,
    value: &str,
) {
    request.resource_metrics[index]
        .resource
        .as_mut()
        .expect("a resource")
        .attributes
        .push(string_kv(key, value));
}

/// The findings file's lines as JSON objects, by `finding_id`.
pub fn file_findings(path: &Path) -> HashMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    complete_lines(&text)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (v["finding_id"].as_str().expect("finding_id").to_string(), v)
        })
        .collect()
}

/// A valid request whose protobuf encoding is over `bytes`: one point with a padding
/// attribute (compresses to almost nothing, which makes it a gzip bomb too).
pub fn padded_request(point: &Pt, bytes: usize) -> ExportMetricsServiceRequest {
    let mut request = request(std::slice::from_ref(point));
    add_attribute(&mut request, 0, "padding", &"0".repeat(bytes));
    request
}

// ---------------------------------------------------------------------------------------
// A generated history
// ---------------------------------------------------------------------------------------

/// A generated history: OTLP requests in time order, and the episodes the contract says
/// they open.
pub struct History {
    pub requests: Vec<ExportMetricsServiceRequest>,
    /// Every episode's finding id.
    pub expected: BTreeSet<String>,
    /// Each expected finding id with the index of the request whose point opens it.
    pub opened_by: Vec<(usize, String)>,
    pub ready_points: u64,
    /// Episodes per key, at most.
    pub max_episodes_per_key: usize,
    pub keys: BTreeSet<Key>,
    /// Names from the data (images, nodes, cluster), for the metrics' cardinality test.
    pub names: BTreeSet<String>,
}

/// `days` of a small fleet's history at `interval_secs`, ending an hour ago (never ahead
/// of the server's clock), with churn enough that keys come back after more than B − R.
pub fn history(seed: u64, days: u64, interval_secs: u64) -> History {
    let now = unseen_server::now_secs() as u64;
    let duration_secs = days * 86_400;
    let params = Params {
        clusters: 1,
        nodes_per_cluster: 3,
        pods_per_node: 2,
        images: 24,
        duration_secs,
        interval_secs,
        seed,
        start_unix_secs: now - duration_secs - 3_600,
        max_batch_points: 8192,
        // Seasonal images come back after more than B − R.
        return_gap_secs: Some(8 * 3_600),
        churn: Churn {
            pod_moves_per_pod_per_day: 1.0,
            node_replacements_per_node_per_day: 0.5,
            scaling_per_cluster_per_day: 2.0,
            ..Churn::default()
        },
    };
    let mut generator = Generator::new(params).expect("valid params");
    let mut requests = Vec::new();
    // The contract's model (section 4), points in time order per key: a sighting opens
    // an episode iff it is the key's first or comes more than B − R after the previous.
    let mut last: HashMap<Key, i64> = HashMap::new();
    let mut episodes: HashMap<Key, usize> = HashMap::new();
    let mut expected = BTreeSet::new();
    let mut opened_by = Vec::new();
    let mut ready_points = 0;
    let mut names = BTreeSet::new();
    while let Some(batch) = generator.next_batch() {
        let secs = (batch.time_unix_nano() / 1_000_000_000) as i64;
        let cluster = batch.cluster_name().to_string();
        names.insert(cluster.clone());
        batch.for_each_ready(|p| {
            ready_points += 1;
            let key = Key {
                host: p.node_name.to_string(),
                cluster: cluster.clone(),
                node: p.node_name.to_string(),
                image: p
                    .image_name
                    .expect("a container point has an image")
                    .to_string(),
            };
            names.insert(key.node.clone());
            names.insert(key.image.clone());
            let prev = last.get(&key).copied();
            if prev.is_none_or(|prev| secs - prev > GAP_SECS) {
                let id = unseen_findings::finding_id(&SEED_RULE, &key, secs);
                opened_by.push((requests.len(), id.clone()));
                expected.insert(id);
                *episodes.entry(key.clone()).or_default() += 1;
            }
            if prev.is_none_or(|prev| secs > prev) {
                last.insert(key, secs);
            }
        });
        requests.push(batch.to_request());
    }
    History {
        requests,
        expected,
        opened_by,
        ready_points,
        max_episodes_per_key: episodes.values().copied().max().unwrap_or(0),
        keys: last.into_keys().collect(),
        names,
    }
}

// ---------------------------------------------------------------------------------------
// A store whose commits wait for the test
// ---------------------------------------------------------------------------------------

/// A [`MemStore`] whose `apply` blocks until the test opens the gate: a commit "on disk"
/// for as long as the test needs (overload, shutdown with a request in flight). It can
/// also fail commits on demand.
#[derive(Debug, Default)]
pub struct GatedStore {
    pub inner: MemStore,
    gate: Mutex<Gate>,
    opened: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    open: bool,
    /// `apply` calls that started (blocked or not).
    entered: usize,
    /// The next this many `apply` calls fail (after the gate), changing nothing.
    fail: usize,
    /// The next `apply` call panics (after the gate), changing nothing: a bug.
    panic: bool,
    /// The next `apply` call fails with `StoreError::Poisoned` (after the gate): a call
    /// elsewhere panicked while it held the state.
    poisoned: bool,
    /// The number of sightings of each `apply` call, in order.
    batches: Vec<usize>,
    /// `forget` blocks while this is set (a key table that takes long to scan).
    hold_forget: bool,
    /// `forget` calls that started.
    forgets: usize,
}

/// The error of a failed commit.
pub const STORE_FAILURE: &str = "the disk is on fire";

/// The message of a commit that panics.
pub const STORE_PANIC: &str = "an index out of bounds, say";

impl GatedStore {
    /// A store whose commits block until [`GatedStore::open`].
    pub fn closed() -> Arc<GatedStore> {
        Arc::new(GatedStore::default())
    }

    /// A store whose commits do not block.
    pub fn opened() -> Arc<GatedStore> {
        let store = GatedStore::closed();
        store.open();
        store
    }

    /// Makes the next `n` commits fail.
    pub fn fail_next(&self, n: usize) {
        self.gate.lock().unwrap().fail = n;
    }

    /// Makes the next commit panic with [`STORE_PANIC`].
    pub fn panic_next(&self) {
        self.gate.lock().unwrap().panic = true;
    }

    /// Makes the next commit find the store poisoned.
    pub fn poison_next(&self) {
        self.gate.lock().unwrap().poisoned = true;
    }

    /// Lets every blocked and later `apply` through.
    pub fn open(&self) {
        self.gate.lock().unwrap().open = true;
        self.opened.notify_all();
    }

    /// Opens the gate when dropped: a failing test must not leave a commit blocked on
    /// the blocking pool (the runtime would wait for it forever on drop).
    pub fn open_on_drop(self: &Arc<Self>) -> OpenOnDrop {
        OpenOnDrop(self.clone())
    }

    pub fn entered(&self) -> usize {
        self.gate.lock().unwrap().entered
    }

    /// The number of sightings of each commit so far.
    pub fn batches(&self) -> Vec<usize> {
        self.gate.lock().unwrap().batches.clone()
    }

    /// Waits until `n` commits have started.
    pub async fn wait_entered(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.entered() < n {
            assert!(Instant::now() < deadline, "no commit started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub struct OpenOnDrop(Arc<GatedStore>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
        self.0.release_forget();
    }
}

impl GatedStore {
    /// Makes `forget` block until [`GatedStore::release_forget`].
    pub fn hold_forget(&self) {
        self.gate.lock().unwrap().hold_forget = true;
    }

    pub fn release_forget(&self) {
        self.gate.lock().unwrap().hold_forget = false;
        self.opened.notify_all();
    }

    /// `forget` calls that started (blocked or not).
    pub fn forgets(&self) -> usize {
        self.gate.lock().unwrap().forgets
    }
}

impl StateStore for GatedStore {
    fn apply(&self, batch: &[Sighting], opts: &ApplyOptions) -> Result<Applied, StoreError> {
        let mut gate = self.gate.lock().unwrap();
        gate.entered += 1;
        gate.batches.push(batch.len());
        while !gate.open {
            gate = self.opened.wait(gate).unwrap();
        }
        if gate.fail > 0 {
            gate.fail -= 1;
            return Err(StoreError::Backend(STORE_FAILURE.to_string()));
        }
        if std::mem::take(&mut gate.poisoned) {
            return Err(StoreError::Poisoned);
        }
        let panic = std::mem::take(&mut gate.panic);
        // Not while the gate is held: the test's own lock stays usable.
        drop(gate);
        if panic {
            panic!("{STORE_PANIC}");
        }
        self.inner.apply(batch, opts)
    }
    fn get(&self, key: &Key) -> Result<Option<KeyState>, StoreError> {
        self.inner.get(key)
    }
    fn key_count(&self) -> Result<u64, StoreError> {
        self.inner.key_count()
    }
    fn forget(&self, windows: &Windows) -> Result<u64, StoreError> {
        let mut gate = self.gate.lock().unwrap();
        gate.forgets += 1;
        while gate.hold_forget {
            gate = self.opened.wait(gate).unwrap();
        }
        drop(gate);
        self.inner.forget(windows)
    }
    fn newest_point(&self) -> Result<Option<UnixSecs>, StoreError> {
        self.inner.newest_point()
    }
    fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        self.inner.register_sink(sink)
    }
    fn remove_sink(&self, sink: &str) -> Result<bool, StoreError> {
        self.inner.remove_sink(sink)
    }
    fn pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.inner.pending(sink, limit)
    }
    fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.ack(sink, seq)
    }
    fn log_len(&self) -> Result<u64, StoreError> {
        self.inner.log_len()
    }
    fn learning_started_at(&self, now: UnixSecs) -> Result<UnixSecs, StoreError> {
        self.inner.learning_started_at(now)
    }

    fn bind_key_mode(&self, mode: &str) -> Result<(), StoreError> {
        self.inner.bind_key_mode(mode)
    }

    fn sinks(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.sinks()
    }

    fn open_incidents(&self) -> Result<Vec<unseen_findings::Incident>, StoreError> {
        self.inner.open_incidents()
    }

    fn history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.inner.history(after, limit)
    }

    fn history_get(&self, seqs: &[u64]) -> Result<Vec<(u64, unseen_store::Record)>, StoreError> {
        self.inner.history_get(seqs)
    }

    fn prune_history(&self, before: unseen_model::UnixSecs) -> Result<u64, StoreError> {
        self.inner.prune_history(before)
    }

    fn append_audit(&self, entry: &unseen_store::AuditEntry) -> Result<u64, StoreError> {
        self.inner.append_audit(entry)
    }

    fn audit(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, unseen_store::AuditEntry)>, StoreError> {
        self.inner.audit(after, limit)
    }

    fn for_each_key(
        &self,
        f: &mut dyn FnMut(&unseen_normalize::Key, &unseen_detect::KeyState),
    ) -> Result<(), StoreError> {
        self.inner.for_each_key(f)
    }
}

/// A fresh in-memory store, both as itself (to look at keys) and as the server's.
pub fn mem_store() -> (Arc<MemStore>, Arc<dyn StateStore>) {
    let store = Arc::new(MemStore::new());
    (store.clone(), store)
}

/// Polls `cond` until it holds; fails the test after [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// One export over a chosen transport
// ---------------------------------------------------------------------------------------

/// The transports of the partial-success tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// Exports `request` over `via`, checks that it succeeded (in the request's content
/// type, for HTTP), and returns its partial success: rejected points and the message
/// (`(0, "")` when there is none).
pub async fn export(
    server: &TestServer,
    via: Via,
    request: &ExportMetricsServiceRequest,
) -> (i64, String) {
    let response = match via {
        Via::Grpc => server
            .grpc_client()
            .await
            .export(request.clone())
            .await
            .unwrap_or_else(|s| panic!("gRPC export failed: {s:?}"))
            .into_inner(),
        Via::HttpProtobuf => post(
            &http_client(),
            server,
            PROTOBUF,
            None,
            request.encode_to_vec(),
        )
        .await
        .proto_response(),
        Via::HttpJson => {
            let answer = post(&http_client(), server, JSON, None, json_body(request)).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            let json = answer.json();
            let Some(partial) = json.get("partialSuccess") else {
                assert_eq!(json, serde_json::json!({}));
                return (0, String::new());
            };
            // OTLP JSON writes int64 as a string.
            let rejected = partial["rejectedDataPoints"]
                .as_str()
                .map(|s| s.parse().expect("an integer"))
                .unwrap_or(0);
            let message = partial["errorMessage"].as_str().unwrap_or("").to_string();
            return (rejected, message);
        }
    };
    match response.partial_success {
        Some(p) => (p.rejected_data_points, p.error_message),
        None => (0, String::new()),
    }
}

/// The lines of a file that a sink may be appending to: a last line without its newline
/// is a write in progress (a reader can see part of one `write`), not a broken line.
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end + 1],
        None => "",
    };
    complete.lines()
}
