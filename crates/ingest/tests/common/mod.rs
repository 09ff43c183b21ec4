//! Helpers shared by the integration tests.
#![allow(dead_code)]

use unseen_ingest::{read_source, Format, Issue, Limits, SourceError, SourceStats, Visitor};
use unseen_model::{PointRef, CONTEXT_LEN};

/// A point with owned strings, comparable across decoders.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Point {
    pub time: u64,
    pub host: Option<String>,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub image: Option<String>,
    /// The evidence attributes (`Dims::context`), in `CONTEXT_ATTRS` order.
    pub context: [Option<String>; CONTEXT_LEN],
}

impl Point {
    pub fn from_ref(p: PointRef<'_>) -> Point {
        Point {
            time: p.time_unix_nano,
            host: p.dims.host_name.map(str::to_string),
            cluster: p.dims.cluster_name.map(str::to_string),
            node: p.dims.node_name.map(str::to_string),
            image: p.dims.image_name.map(str::to_string),
            context: p.dims.context.0.map(|v| v.map(str::to_string)),
        }
    }

    /// Evidence slot `slot` (`unseen_model::ctx`).
    pub fn ctx(&self, slot: usize) -> Option<&str> {
        self.context[slot].as_deref()
    }
}

/// Keeps everything a decoder reports.
#[derive(Debug, Default)]
pub struct Collect {
    pub points: Vec<Point>,
    pub issues: Vec<Issue>,
}

impl Visitor for Collect {
    fn point(&mut self, point: PointRef<'_>) {
        self.points.push(Point::from_ref(point));
    }
    fn issue(&mut self, issue: Issue) {
        self.issues.push(issue);
    }
}

pub struct Outcome {
    pub result: Result<(Format, SourceStats), SourceError>,
    pub points: Vec<Point>,
    pub issues: Vec<Issue>,
}

impl Outcome {
    /// The stats, panicking (with the error) if the source failed.
    pub fn stats(&self) -> SourceStats {
        match &self.result {
            Ok((_, stats)) => *stats,
            Err(error) => panic!("source failed: {error}"),
        }
    }
    pub fn format(&self) -> Format {
        match &self.result {
            Ok((format, _)) => *format,
            Err(error) => panic!("source failed: {error}"),
        }
    }
    /// The one error message, panicking if the source did not fail.
    pub fn error(&self) -> String {
        match &self.result {
            Ok(_) => panic!("expected the source to fail"),
            Err(error) => error.to_string(),
        }
    }
    /// Every issue as `Display` shows it.
    pub fn issue_texts(&self) -> Vec<String> {
        self.issues.iter().map(ToString::to_string).collect()
    }
}

pub fn read_with(bytes: &[u8], format: Format, limits: Limits) -> Outcome {
    let mut collect = Collect::default();
    let result = read_source("src", bytes, format, limits, &mut collect);
    Outcome {
        result,
        points: collect.points,
        issues: collect.issues,
    }
}

pub fn read(bytes: &[u8], format: Format) -> Outcome {
    read_with(bytes, format, Limits::default())
}

/// File exporter framing: a 4-byte big-endian length before each message.
pub fn frame(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub const EXPECTED_YAML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/otel_k8scluster/expected.yaml"
);
pub const CLUSTER_RECEIVER_YAML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/otel_k8scluster/expected_cluster_receiver.yaml"
);

pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The YAML fixture as one OTLP/JSON line.
pub fn yaml_to_json_line(yaml: &[u8]) -> String {
    let value: serde_json::Value = serde_yaml::from_slice(yaml).unwrap();
    serde_json::to_string(&value).unwrap()
}

/// A minimal OTLP/JSON request with one metric of one resource; `points` is the JSON of
/// the data points array.
pub fn json_request(resource_attrs: &str, metric: &str, kind: &str, points: &str) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{resource_attrs}]}},"scopeMetrics":[{{"metrics":[{{"name":"{metric}","{kind}":{{"dataPoints":[{points}]}}}}]}}]}}]}}"#
    )
}

pub fn attr(key: &str, value: &str) -> String {
    format!(r#"{{"key":"{key}","value":{{"stringValue":"{value}"}}}}"#)
}
