//! Replays a generated history to a live server over OTLP/HTTP (`POST /v1/metrics`,
//! `application/x-protobuf`), as a collector's `otlphttp` exporter would: paced to a rate,
//! several requests in flight, retrying 429/502/503/504 and connection failures (honouring
//! `Retry-After`), never retrying a request the server accepted or refused for its data.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use reqwest::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use thiserror::Error;
use tokio::task::JoinSet;

use crate::generator::Generator;

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The server: `http://host:4318` (then `/v1/metrics` is appended) or a full URL.
    pub endpoint: String,
    /// Data points (of every metric) per second; `None`: as fast as the server takes them.
    pub rate: Option<u64>,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
    /// Requests in flight at once. With 1, the server receives batches in time order.
    pub concurrency: usize,
    /// Retries of one request before giving up.
    pub max_retries: u32,
    /// Per attempt.
    pub timeout: Duration,
    /// Encode the whole history before the first request, so that sending costs only the
    /// sending: a load test then measures the server, not the generator sharing its cores.
    /// Holds every request body in memory at once (about 440 bytes per data point).
    pub preload: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            endpoint: "http://127.0.0.1:4318".to_string(),
            rate: None,
            gzip: false,
            concurrency: 2,
            max_retries: 10,
            timeout: Duration::from_secs(30),
            preload: false,
        }
    }
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct SendStats {
    /// Requests the server accepted (200).
    pub requests: u64,
    pub points: u64,
    pub ready_points: u64,
    /// Request bodies as sent (compressed when `gzip`).
    pub bytes: u64,
    /// With `preload`: how long encoding the history took, before sending started (not
    /// part of `elapsed`).
    pub preload: Duration,
    /// Attempts repeated after a retryable answer or a connection failure.
    pub retries: u64,
    /// Points the server refused in a partial success (`rejected_data_points`).
    pub rejected_points: u64,
    pub elapsed: Duration,
    /// From a request's first attempt to the server's 200: how long until its points were
    /// acknowledged (durable, for unseen).
    pub latency: Latency,
}

#[derive(Debug, Error)]
pub enum SendError {
    #[error("--send {0}: not an http:// or https:// URL")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the server refused a batch with {status}: {message} (not retried: the data is wrong or too large)")]
    Refused { status: StatusCode, message: String },
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// Sends the rest of `generator`'s history. `progress` is called after each batch is handed
/// to a sender, with the counts of the acknowledged ones so far.
pub async fn send(
    generator: &mut Generator,
    options: &SendOptions,
    progress: &mut dyn FnMut(&SendStats, &Generator),
) -> Result<SendStats, SendError> {
    let url = endpoint_url(&options.endpoint)?;
    let client = reqwest::Client::builder()
        .timeout(options.timeout)
        .build()
        .map_err(SendError::Client)?;
    let mut stats = SendStats::default();
    let mut encode = Encode::default();
    let mut preloaded = std::collections::VecDeque::new();
    if options.preload {
        let t = Instant::now();
        while let Some(body) = encode.next(generator, options.gzip) {
            preloaded.push_back(body);
            if preloaded.len() % 16 == 0 {
                progress(&stats, generator);
            }
        }
        stats.preload = t.elapsed();
        progress(&stats, generator);
    }
    let started = Instant::now();
    let mut in_flight: JoinSet<Result<Acked, SendError>> = JoinSet::new();
    let mut dispatched_points = 0u64;
    loop {
        let next = if options.preload {
            preloaded.pop_front()
        } else {
            encode.next(generator, options.gzip)
        };
        let Some(Body {
            payload,
            points,
            ready,
        }) = next
        else {
            break;
        };
        // Pace by points: batch n may leave once the points before it fit the rate.
        if let Some(rate) = options.rate.filter(|&r| r > 0) {
            let due = started + Duration::from_secs_f64(dispatched_points as f64 / rate as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        dispatched_points += points;
        while in_flight.len() >= options.concurrency.max(1) {
            if let Some(done) = in_flight.join_next().await {
                account(&mut stats, done)?;
            }
        }
        let request = Request {
            client: client.clone(),
            url: url.clone(),
            body: payload,
            gzip: options.gzip,
            points,
            ready,
            max_retries: options.max_retries,
        };
        in_flight.spawn(request.run());
        stats.elapsed = started.elapsed();
        progress(&stats, generator);
    }
    while let Some(done) = in_flight.join_next().await {
        account(&mut stats, done)?;
    }
    stats.elapsed = started.elapsed();
    progress(&stats, generator);
    Ok(stats)
}

/// One request body, ready to send.
struct Body {
    payload: Bytes,
    points: u64,
    ready: u64,
}

/// Encodes the generator's batches, one at a time, into a reused buffer.
#[derive(Default)]
struct Encode {
    buf: Vec<u8>,
}

impl Encode {
    fn next(&mut self, generator: &mut Generator, gzip: bool) -> Option<Body> {
        let batch = generator.next_batch()?;
        self.buf.clear();
        batch
            .to_request()
            .encode(&mut self.buf)
            .expect("a Vec grows to hold the message");
        let payload = if gzip {
            self::gzip(&self.buf)
        } else {
            Bytes::copy_from_slice(&self.buf)
        };
        Some(Body {
            payload,
            points: batch.points() as u64,
            ready: batch.ready_points() as u64,
        })
    }
}

/// [`send`] on a runtime of its own: one IO thread, the generator on the caller's.
pub fn send_blocking(
    generator: &mut Generator,
    options: &SendOptions,
    progress: &mut dyn FnMut(&SendStats, &Generator),
) -> Result<SendStats, SendError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(SendError::Runtime)?;
    runtime.block_on(send(generator, options, progress))
}

fn account(
    stats: &mut SendStats,
    done: Result<Result<Acked, SendError>, tokio::task::JoinError>,
) -> Result<(), SendError> {
    let acked = match done {
        Ok(result) => result?,
        // A sender task panicked: propagate it as the bug it is.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    stats.requests += 1;
    stats.points += acked.points;
    stats.ready_points += acked.ready;
    stats.bytes += acked.bytes;
    stats.retries += u64::from(acked.retries);
    stats.rejected_points += acked.rejected;
    stats.latency.record(acked.latency);
    Ok(())
}

fn endpoint_url(endpoint: &str) -> Result<reqwest::Url, SendError> {
    let mut url =
        reqwest::Url::parse(endpoint).map_err(|_| SendError::Url(endpoint.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SendError::Url(endpoint.to_string()));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1/metrics");
    }
    Ok(url)
}

fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to a Vec");
    Bytes::from(enc.finish().expect("writing to a Vec"))
}

struct Request {
    client: reqwest::Client,
    url: reqwest::Url,
    body: Bytes,
    gzip: bool,
    points: u64,
    ready: u64,
    max_retries: u32,
}

struct Acked {
    points: u64,
    ready: u64,
    bytes: u64,
    retries: u32,
    rejected: u64,
    latency: Duration,
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error: only the message is read.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Request {
    async fn run(self) -> Result<Acked, SendError> {
        let started = Instant::now();
        let mut retries = 0u32;
        loop {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/x-protobuf")
                .body(self.body.clone());
            if self.gzip {
                request = request.header(CONTENT_ENCODING, "gzip");
            }
            let (wait, last) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = response.bytes().await.unwrap_or_default();
                    if status.is_success() {
                        let rejected = ExportMetricsServiceResponse::decode(body.as_ref())
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_data_points.max(0) as u64);
                        return Ok(Acked {
                            points: self.points,
                            ready: self.ready,
                            bytes: self.body.len() as u64,
                            retries,
                            rejected,
                            latency: started.elapsed(),
                        });
                    }
                    let message = error_message(&body);
                    if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                        return Err(SendError::Refused { status, message });
                    }
                    (retry_after, format!("{status}: {message}"))
                }
                Err(e) => (None, format!("{e}")),
            };
            if retries >= self.max_retries {
                return Err(SendError::GaveUp {
                    attempts: retries + 1,
                    last,
                });
            }
            let backoff =
                Duration::from_millis(100u64 << retries.min(6)).min(Duration::from_secs(5));
            tokio::time::sleep(wait.unwrap_or(backoff)).await;
            retries += 1;
        }
    }
}

/// `Retry-After` in delay-seconds; an HTTP-date (rare from OTLP servers) falls back to the
/// exponential back-off. Capped at a minute so that a confused server cannot stall a replay.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn error_message(body: &[u8]) -> String {
    if let Ok(status) = RpcStatus::decode(body) {
        if !status.message.is_empty() {
            return status.message;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no message".to_string()
    } else {
        text.chars().take(300).collect()
    }
}

/// Latencies in a log-linear histogram (16 steps per power of two, within 6 %): constant
/// memory however long the replay.
#[derive(Debug, Clone)]
pub struct Latency {
    counts: Vec<u64>,
    total: u64,
    max_micros: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            counts: vec![0; BUCKETS],
            total: 0,
            max_micros: 0,
        }
    }
}

const SUB: u32 = 16;
const BUCKETS: usize = (SUB as usize) * 60;

fn bucket(micros: u64) -> usize {
    if micros < u64::from(SUB) {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros(); // >= 4
    let sub = (micros >> (exp - 4)) & u64::from(SUB - 1);
    ((exp - 3) * SUB) as usize + sub as usize
}

fn bucket_floor(index: usize) -> u64 {
    if index < SUB as usize {
        return index as u64;
    }
    let exp = index as u32 / SUB + 3;
    let sub = index as u64 % u64::from(SUB);
    (u64::from(SUB) + sub) << (exp - 4)
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros).min(BUCKETS - 1)] += 1;
        self.total += 1;
        self.max_micros = self.max_micros.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1), rounded down to its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_floor(i).min(self.max_micros)));
            }
        }
        Some(Duration::from_micros(self.max_micros))
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            65_432,
            10_000_000,
            1 << 40,
        ] {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= v && v - floor <= v / 16, "{v}: floor {floor}");
        }
    }

    #[test]
    fn quantiles() {
        let mut l = Latency::default();
        assert_eq!(l.quantile(0.5), None);
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile(0.5).unwrap().as_micros() as f64;
        assert!((47_000.0..=50_000.0).contains(&p50), "{p50}");
        let p99 = l.quantile(0.99).unwrap().as_micros() as f64;
        assert!((93_000.0..=99_000.0).contains(&p99), "{p99}");
        assert_eq!(l.max(), Duration::from_millis(100));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:4318").unwrap().as_str(),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(
            endpoint_url("http://h:1/custom").unwrap().as_str(),
            "http://h:1/custom"
        );
        assert!(endpoint_url("127.0.0.1:4318").is_err());
        assert!(endpoint_url("ftp://h/").is_err());
    }
}
