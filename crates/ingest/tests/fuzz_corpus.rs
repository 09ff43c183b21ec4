//! The fast decoders against the plain ones they replaced (`unseen_ingest::reference`), with
//! the `differential` fuzz target's own checks (`fuzz/src/differential.rs`): the same points,
//! issues, counts, result and findings, on
//! - the fuzz target's checked-in corpus (`fuzz/corpus/differential/`, what `cargo fuzz cmin`
//!   kept of a fuzzing run; see `fuzz/README.md`), checked here exactly as the fuzzer
//!   checked it, on every CI run;
//! - the fuzz seeds (`fuzz/seeds/`), in every mode;
//! - the shared fixtures and `unseen generate`'s data, as protobuf files and request bodies,
//!   as CSV, and gzipped.

mod common;

#[path = "../../../fuzz/src/differential.rs"]
mod differential;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::{fixture, frame, gzip, yaml_to_json_line, CLUSTER_RECEIVER_YAML, EXPECTED_YAML};
use differential::{check, Mode, Summary};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, ResourceMetrics, ScopeMetrics};
use prost::Message;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fuzz/corpus/differential"
);
const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");

/// `unseen generate ... --format otlp-proto`, gzipped (see `src/proto/tests.rs`): 8 batches.
const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/generated.binpb.gz");

/// The files of `dir`, sorted; fails if it is missing or empty.
fn files(dir: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir} has no files");
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs every input (mode byte, then payload); fails naming each input where the decoders
/// disagree. Returns what the inputs gave, by mode.
fn check_all(inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> [Summary; 4] {
    let mut by_mode = [Summary::default(); 4];
    let mut failures = Vec::new();
    for (name, input) in inputs {
        assert!(!input.is_empty(), "{name}: empty");
        match check(&input) {
            Ok(summary) => by_mode[usize::from(Mode::of(input[0]).byte())].add(summary),
            Err(difference) => failures.push(format!("{name}: {difference}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the fast and the plain decoders disagree on {} input(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    by_mode
}

fn summary(by_mode: &[Summary; 4], mode: Mode) -> Summary {
    by_mode[usize::from(mode.byte())]
}

fn with_mode(mode: Mode, payload: &[u8]) -> Vec<u8> {
    let mut input = vec![mode.byte()];
    input.extend_from_slice(payload);
    input
}

#[test]
fn corpus_agrees() {
    let files = files(CORPUS);
    // A corpus that lost most of its files would still "pass": it must not.
    assert!(files.len() >= 100, "{CORPUS}: only {} files", files.len());
    let inputs = files
        .iter()
        .map(|path| (name(path), std::fs::read(path).unwrap()));
    let by_mode = check_all(inputs);
    // The corpus reaches what it is for in every mode. The points of a request body are the
    // walker's, as in a file, so fuzzing keeps the bodies' own paths there: issues.
    for mode in Mode::ALL {
        let s = summary(&by_mode, mode);
        assert!(s.issues > 0, "{mode:?}: no issues in the corpus: {s:?}");
        if mode != Mode::Request {
            assert!(s.points > 0, "{mode:?}: no points in the corpus: {s:?}");
            assert!(s.findings > 0, "{mode:?}: no findings in the corpus: {s:?}");
        }
    }
    let csv = summary(&by_mode, Mode::Csv);
    assert!(csv.errors > 0, "no unusable CSV in the corpus: {csv:?}");
}

#[test]
fn seeds_agree_in_every_mode() {
    let files = files(SEEDS);
    let inputs = files.iter().flat_map(|path| {
        let seed = std::fs::read(path).unwrap();
        Mode::ALL.map(|mode| {
            (
                format!("{} as {mode:?}", name(path)),
                with_mode(mode, &seed),
            )
        })
    });
    let by_mode = check_all(inputs);
    // Each seed is valid in its own format: the right mode finds its points.
    for mode in [Mode::Framed, Mode::Csv, Mode::Auto] {
        let s = summary(&by_mode, mode);
        assert!(s.points > 0, "{mode:?}: no points from the seeds: {s:?}");
    }
}

#[test]
fn modes_round_trip() {
    for mode in Mode::ALL {
        assert_eq!(Mode::of(mode.byte()), mode);
        assert_eq!(Mode::of(mode.byte() | 0xfc), mode);
    }
}

// ---- real data -------------------------------------------------------------------------

/// A fixture as a request (opentelemetry-proto's serde).
fn fixture_request(path: &str) -> ExportMetricsServiceRequest {
    serde_json::from_str(&yaml_to_json_line(&fixture(path))).unwrap()
}

/// The generated batches.
fn generated_requests() -> Vec<ExportMetricsServiceRequest> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(GENERATED).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while let Some((prefix, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        out.push(ExportMetricsServiceRequest::decode(&tail[..len]).unwrap());
        rest = &tail[len..];
    }
    out
}

/// One request per metric, each with its resource and scope: messages small enough for
/// the fuzz limits (4 KiB records) too.
fn per_metric(request: &ExportMetricsServiceRequest) -> Vec<ExportMetricsServiceRequest> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                out.push(ExportMetricsServiceRequest {
                    resource_metrics: vec![ResourceMetrics {
                        scope_metrics: vec![ScopeMetrics {
                            metrics: vec![m.clone()],
                            ..sm.clone()
                        }],
                        ..rm.clone()
                    }],
                });
            }
        }
    }
    out
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Every gauge and sum point of `requests` as a Splunk CSV export: a row per point, its own
/// attributes (the keys and some evidence) over its resource's, its time `shift` seconds
/// later. `quoted`: every cell quoted, CRLF, RFC 3339 times (the csv-core path); otherwise
/// bare cells, `\n` and Unix seconds with nanoseconds (the in-place path).
fn csv(requests: &[ExportMetricsServiceRequest], quoted: bool, shift: u64) -> Vec<u8> {
    const COLUMNS: [&str; 11] = [
        "_time",
        "metric_name",
        "host.name",
        "k8s.cluster.name",
        "k8s.node.name",
        "container.image.name",
        // Evidence, as an export `by` them has it.
        "k8s.namespace.name",
        "k8s.pod.name",
        "container.id",
        "k8s.deployment.name",
        "_value",
    ];
    let newline = if quoted { "\r\n" } else { "\n" };
    let cell = |text: &str| {
        if quoted || text.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    };
    let mut out = COLUMNS.map(cell).join(",") + newline;
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        let resource = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            let points = match &m.data {
                Some(metric::Data::Gauge(g)) => &g.data_points,
                Some(metric::Data::Sum(s)) => &s.data_points,
                _ => continue,
            };
            for p in points {
                let secs = p.time_unix_nano / 1_000_000_000 + shift;
                let nanos = p.time_unix_nano % 1_000_000_000;
                let time = if quoted {
                    unseen_model::format_rfc3339(secs as i64)
                } else {
                    format!("{secs}.{nanos:09}")
                };
                let mut row = vec![cell(&time), cell(&m.name)];
                for key in &COLUMNS[2..10] {
                    let value =
                        string_attr(&p.attributes, key).or_else(|| string_attr(resource, key));
                    row.push(cell(&value.unwrap_or_default()));
                }
                row.push(cell("1"));
                out += &(row.join(",") + newline);
            }
        }
    }
    out.into_bytes()
}

/// The fixtures and the generated data, every way the fuzz target reads: framed protobuf
/// (whole and one metric per message), each message as a request body, CSV both ways, and
/// auto-detected (gzipped protobuf, CSV).
#[test]
fn real_data_agrees() {
    let sources = [
        ("expected.yaml", vec![fixture_request(EXPECTED_YAML)]),
        (
            "expected_cluster_receiver.yaml",
            vec![fixture_request(CLUSTER_RECEIVER_YAML)],
        ),
        ("generated", generated_requests()),
    ];
    for (source, requests) in sources {
        let whole: Vec<Vec<u8>> = requests.iter().map(Message::encode_to_vec).collect();
        let split: Vec<ExportMetricsServiceRequest> =
            requests.iter().flat_map(per_metric).collect();
        let split: Vec<Vec<u8>> = split.iter().map(Message::encode_to_vec).collect();
        // The Splunk chart's capture has normalized times (1 ms after the epoch), which CSV
        // cannot carry (every row is then a malformed point): also moved to a real time.
        let shift = 1_686_772_769;
        let mut inputs = [
            ("framed", with_mode(Mode::Framed, &frame(&whole))),
            (
                "framed, per metric",
                with_mode(Mode::Framed, &frame(&split)),
            ),
            ("csv", with_mode(Mode::Csv, &csv(&requests, false, 0))),
            (
                "csv, quoted",
                with_mode(Mode::Csv, &csv(&requests, true, 0)),
            ),
            (
                "csv, later",
                with_mode(Mode::Csv, &csv(&requests, false, shift)),
            ),
            (
                "csv, quoted, later",
                with_mode(Mode::Csv, &csv(&requests, true, shift)),
            ),
            (
                "auto, gzipped framed",
                with_mode(Mode::Auto, &gzip(&frame(&split))),
            ),
            (
                "auto, csv",
                with_mode(Mode::Auto, &csv(&requests, false, shift)),
            ),
        ]
        .map(|(what, input)| (what.to_string(), input))
        .to_vec();
        for (i, message) in whole.iter().chain(&split).enumerate() {
            inputs.push((format!("request {i}"), with_mode(Mode::Request, message)));
        }
        let inputs = inputs
            .into_iter()
            .map(|(what, input)| (format!("{source}, {what}"), input));
        let by_mode = check_all(inputs);
        for mode in Mode::ALL {
            let s = summary(&by_mode, mode);
            assert!(s.points > 0, "{source}, {mode:?}: no points: {s:?}");
            assert!(s.findings > 0, "{source}, {mode:?}: no findings: {s:?}");
            // The evidence is compared too, not only absent on both sides.
            assert!(s.evidence > 0, "{source}, {mode:?}: no evidence: {s:?}");
        }
    }
}
