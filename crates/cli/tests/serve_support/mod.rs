//! Shared by the tests that run `unseen serve` as a child process: starting and stopping
//! it, a replayed history and the findings it must produce, a raw HTTP/1.1 client and a
//! webhook receiver (plain std: what is tested is the server, not a client library).

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use unseen_generate::{Churn, Encoder, Format, Generator, Params};
use unseen_model::SEED_RULE;
use unseen_normalize::Key;

/// Small windows so that a short history holds several episodes per key:
/// B − R = 5 h 30 min.
pub const CURRENT: &str = "1h";
pub const BASELINE: &str = "6h";
pub const RECENT: &str = "30m";
pub const GAP_SECS: i64 = 6 * 3600 - 30 * 60;
/// The same, as flags.
pub const WINDOW_ARGS: [&str; 6] = [
    "--current",
    CURRENT,
    "--baseline",
    BASELINE,
    "--recent",
    RECENT,
];

/// An address nothing listens on now (bound, then released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// One `unseen serve` process and its addresses.
pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

/// How to start the server; the same for every restart, but fresh ports each time (a
/// killed process's port may linger).
#[derive(Clone)]
pub struct ServeCmd {
    pub data: PathBuf,
    pub findings: PathBuf,
    pub webhook: Option<String>,
    /// The children's stderr, appended across restarts, shown when a test fails.
    pub log: PathBuf,
    /// More arguments for `serve`.
    pub extra: Vec<String>,
}

impl ServeCmd {
    pub fn new(dir: &Path) -> ServeCmd {
        ServeCmd {
            data: dir.join("data"),
            findings: dir.join("findings.jsonl"),
            webhook: None,
            log: dir.join("serve.log"),
            extra: Vec::new(),
        }
    }

    /// Starts the server and waits until its OTLP/HTTP port accepts connections. The
    /// ports are picked free just before; another process may take one in between, so
    /// a server that exits at once is started again on other ports.
    pub fn spawn(&self) -> Server {
        for _ in 0..10 {
            let mut server = self.spawn_once();
            let up = wait_for(Duration::from_secs(20), || {
                !server.alive()
                    || TcpStream::connect_timeout(&server.http, Duration::from_millis(200)).is_ok()
            });
            if up && server.alive() {
                return server;
            }
            server.kill();
        }
        panic!(
            "unseen serve did not start in 10 attempts\n{}",
            self.log_text()
        );
    }

    fn spawn_once(&self) -> Server {
        let http = free_addr();
        let grpc = free_addr();
        let admin = free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseen"));
        cmd.arg("serve")
            .args(["--otlp-http", &http.to_string()])
            .args(["--otlp-grpc", &grpc.to_string()])
            .args(["--admin", &admin.to_string()])
            .arg("--data")
            .arg(&self.data)
            .arg("--findings")
            .arg(&self.findings)
            .args(WINDOW_ARGS)
            .args(&self.extra);
        if let Some(url) = &self.webhook {
            cmd.args(["--webhook", url]);
        }
        // The query API's default port would be shared by the tests running at once.
        if !self.extra.iter().any(|a| a == "--api") {
            cmd.args(["--api", "off"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start unseen serve");
        Server {
            child,
            http,
            grpc,
            admin,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Server {
    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns whether it exited cleanly.
    pub fn terminate(mut self, limit: Duration) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "cannot send SIGTERM to {pid}");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A test that fails (panics) before it stops its servers must not leave them running:
/// they would go on using the ports, the database schema and the CPU of the tests after.
impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A generated history: OTLP/HTTP protobuf bodies in time order, and the episodes the
/// contract says they open.
pub struct History {
    pub bodies: Vec<Vec<u8>>,
    pub expected: BTreeSet<String>,
    /// Each expected finding id with the index of the body whose point opens it.
    pub opened_by: Vec<(usize, String)>,
    pub ready_points: u64,
    /// Episodes per key, at most.
    pub max_episodes_per_key: usize,
    pub keys: usize,
}

/// `days` of a small fleet's history at `interval_secs`, ending an hour ago (never
/// ahead of the server's clock), with enough churn that keys come back after more than
/// B − R.
pub fn history(seed: u64, days: u64, interval_secs: u64) -> History {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
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
    let mut encoder = Encoder::new(Format::OtlpProto, Default::default());
    let mut bodies = Vec::new();
    // The contract's model (section 4), points in time order per key: a sighting opens
    // an episode iff it is the key's first or comes more than B − R after the previous.
    let mut last: HashMap<Key, i64> = HashMap::new();
    let mut episodes: HashMap<Key, usize> = HashMap::new();
    let mut expected = BTreeSet::new();
    let mut ready_points = 0;
    let mut opened_by = Vec::new();
    while let Some(batch) = generator.next_batch() {
        let secs = (batch.time_unix_nano() / 1_000_000_000) as i64;
        let cluster = batch.cluster_name().to_string();
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
            let prev = last.get(&key).copied();
            if prev.is_none_or(|prev| secs - prev > GAP_SECS) {
                let id = unseen_findings::finding_id(&SEED_RULE, &key, secs);
                opened_by.push((bodies.len(), id.clone()));
                expected.insert(id);
                *episodes.entry(key.clone()).or_default() += 1;
            }
            if prev.is_none_or(|prev| secs > prev) {
                last.insert(key, secs);
            }
        });
        // The file exporter's frame: a 4-byte length, then the request.
        let frame = encoder.encode(&batch);
        bodies.push(frame[4..].to_vec());
    }
    History {
        bodies,
        expected,
        opened_by,
        ready_points,
        max_episodes_per_key: episodes.values().copied().max().unwrap_or(0),
        keys: last.len(),
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the status and
/// body of the answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, method, path, content_type, body, None)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// POSTs one OTLP/HTTP protobuf request until the server answers 200, as a collector's
/// exporter retries what was not acknowledged. `addr` is read on every attempt (the
/// server moves on restart). Panics on an answer that must not be retried (4xx other
/// than 429) or after `limit`.
pub fn send_until_acked(addr: &Mutex<SocketAddr>, body: &[u8], limit: Duration) -> u32 {
    send_until_acked_as(addr, body, limit, None)
}

/// [`send_until_acked`] with a bearer token, when given.
pub fn send_until_acked_as(
    addr: &Mutex<SocketAddr>,
    body: &[u8],
    limit: Duration,
    token: Option<&str>,
) -> u32 {
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let target = *addr.lock().unwrap();
        match http_request(
            target,
            "POST",
            "/v1/metrics",
            "application/x-protobuf",
            body,
            token,
        ) {
            Ok((200, _)) => return attempts,
            Ok((429 | 502 | 503 | 504, _)) => {}
            Ok((status, body)) => panic!(
                "the server refused a request with {status}: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(_) => {} // down or restarting
        }
        assert!(
            Instant::now() < deadline,
            "a request was not acknowledged within {limit:?}"
        );
        // The server said "retry": a sender's pause before the next attempt, not a
        // wait for an event.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The findings file's `finding_id`s in order (duplicates kept). A line that is not a
/// finding fails the test.
pub fn file_ids(path: &Path) -> Vec<String> {
    file_findings_field(path, "finding_id")
}

/// The incident of each line of a findings file, in order.
pub fn file_incidents(path: &Path) -> Vec<String> {
    file_findings_field(path, "incident_id")
}

fn file_findings_field(path: &Path, field: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    complete_lines(&text)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a findings line is not JSON ({e}): {line}"));
            v[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field}: {line}"))
                .to_string()
        })
        .collect()
}

/// Polls until `cond` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Duplicates, and the expected ids that are missing, for a failure message.
pub fn compare(got: &[String], expected: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut seen = BTreeSet::new();
    let dups = got.iter().filter(|id| !seen.insert(*id)).cloned().collect();
    let missing = expected
        .difference(&seen.iter().map(|s| s.to_string()).collect())
        .cloned()
        .collect();
    (dups, missing)
}

/// A webhook receiver on `addr`: reads each POST (HTTP/1.1, `Content-Length`), records
/// the `finding_id`s of its JSON array body, answers 200 and closes the connection.
pub struct Receiver {
    pub ids: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<Mutex<u64>>,
    /// Requests whose HMAC signature checked out (when a secret is set).
    pub verified: Arc<Mutex<u64>>,
}

impl Receiver {
    pub fn start(addr: SocketAddr) -> Receiver {
        Receiver::start_signed(addr, None)
    }

    /// A receiver that verifies the `X-Unseen-Signature` of every request with `secret`
    /// (HMAC-SHA256 over `<timestamp>.<body>`, docs/sinks.md) and refuses, with 401, any
    /// request whose signature is missing or wrong.
    pub fn start_signed(addr: SocketAddr, secret: Option<Vec<u8>>) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind the webhook receiver");
        let ids = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let verified = Arc::new(Mutex::new(0));
        let (ids2, requests2, verified2) = (ids.clone(), requests.clone(), verified.clone());
        let secret = Arc::new(secret);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (ids, requests, verified) =
                    (ids2.clone(), requests2.clone(), verified2.clone());
                let secret = secret.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &ids, &requests, &verified, secret.as_deref());
                });
            }
        });
        Receiver {
            ids,
            requests,
            verified,
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

fn serve_one(
    stream: TcpStream,
    ids: &Mutex<Vec<String>>,
    requests: &Mutex<u64>,
    verified: &Mutex<u64>,
    secret: Option<&[u8]>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    assert!(line.starts_with("POST "), "the webhook sends POST: {line}");
    let mut length = 0usize;
    let mut content_type = String::new();
    let (mut signature, mut timestamp) = (String::new(), String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_string(),
                "x-unseen-signature" => signature = value.trim().to_string(),
                "x-unseen-timestamp" => timestamp = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    assert_eq!(content_type, "application/json");
    if let Some(secret) = secret {
        // An independent check: ring's HMAC over the bytes as received.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mut message = timestamp.clone().into_bytes();
        message.push(b'.');
        message.extend_from_slice(&body);
        let tag = signature
            .strip_prefix("sha256=")
            .and_then(|hex| {
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .unwrap_or_default();
        let fresh = timestamp.parse::<u64>().is_ok_and(|t| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            t.abs_diff(now) < 300
        });
        if !fresh || ring::hmac::verify(&key, &message, &tag).is_err() {
            let mut stream = stream;
            stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return stream.flush();
        }
        *verified.lock().unwrap() += 1;
    }
    let records: Vec<serde_json::Value> =
        serde_json::from_slice(&body).expect("the webhook body is a JSON array of records");
    {
        let mut ids = ids.lock().unwrap();
        // Incidents (default mode) as `<incident_id> <state>` (risk threshold incidents,
        // which no finding names as its own, as `<incident_id> <state> risk_threshold`),
        // findings (strict mode) by id.
        for r in records {
            ids.push(match r["incident_id"].as_str() {
                Some(incident) => {
                    let state = r["state"].as_str().expect("state");
                    match r["kind"].as_str() {
                        Some("risk_threshold") => format!("{incident} {state} risk_threshold"),
                        _ => format!("{incident} {state}"),
                    }
                }
                None => r["finding_id"].as_str().expect("finding_id").to_string(),
            });
        }
        *requests.lock().unwrap() += 1;
    }
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    stream.flush()
}

/// SplitMix64: a seeded generator for the kill schedule (no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
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

/// The tokens of [`write_tokens`]: a Collector's (it may report any cluster) and one
/// per API role.
pub struct TestTokens {
    pub path: PathBuf,
    pub collector: &'static str,
    pub viewer: &'static str,
    pub responder: &'static str,
    pub admin: &'static str,
}

/// Writes a tokens file (SHA-256 digests, as the file holds them) into `dir`.
pub fn write_tokens(dir: &Path) -> TestTokens {
    let tokens = TestTokens {
        path: dir.join("tokens.toml"),
        collector: "collector-secret-0123456789",
        viewer: "viewer-secret-0123456789",
        responder: "responder-secret-0123456789",
        admin: "admin-secret-0123456789",
    };
    let hex = |t: &str| -> String {
        ring::digest::digest(&ring::digest::SHA256, t.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let text = format!(
        "[[token]]\nname = \"collector\"\nsha256 = \"{}\"\nclusters = [\"*\"]\n\n\
         [[token]]\nname = \"viewer\"\nsha256 = \"{}\"\nrole = \"viewer\"\n\n\
         [[token]]\nname = \"responder\"\nsha256 = \"{}\"\nrole = \"responder\"\n\n\
         [[token]]\nname = \"admin\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        hex(tokens.collector),
        hex(tokens.viewer),
        hex(tokens.responder),
        hex(tokens.admin)
    );
    std::fs::write(&tokens.path, text).expect("write the tokens file");
    tokens
}

/// One HTTP/1.1 request with a bearer token; the status and body of the answer.
pub fn http_with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, method, path, content_type, body, Some(token))
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with a bearer token
/// when given; the status and the (de-chunked) body of the answer.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = find(&response, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = response[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Sends every body of `history` with the Collector's token, each until acknowledged.
pub fn send_history_with_token(addr: SocketAddr, history: &History, token: &str) {
    let addr = Mutex::new(addr);
    for body in &history.bodies {
        send_until_acked_as(&addr, body, Duration::from_secs(60), Some(token));
    }
}

/// GET of the query API, as JSON.
pub fn api_get(addr: SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) =
        http_with_token(addr, "GET", path, "application/json", b"", token).expect("API request");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, json)
}

/// Every item of a list endpoint of the query API, walking its `next` cursors with
/// pages of `limit`.
pub fn api_walk(api: SocketAddr, path: &str, token: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, body) = api_get(api, &url, token);
        assert_eq!(status, 200, "GET {url}: {body}");
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return items,
        }
    }
}

/// A server with the tokens of [`write_tokens`] and the query API on a free port.
pub fn serve_with_api(dir: &Path) -> (ServeCmd, Server, TestTokens, SocketAddr) {
    let tokens = write_tokens(dir);
    let api = free_addr();
    let mut cmd = ServeCmd::new(dir);
    cmd.extra = vec![
        "--tokens".into(),
        tokens.path.display().to_string(),
        "--api".into(),
        api.to_string(),
    ];
    let server = cmd.spawn();
    (cmd, server, tokens, api)
}
