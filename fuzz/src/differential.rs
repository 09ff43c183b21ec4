//! The differential oracle: one input through the fast decoders (`unseen_ingest::read_source`
//! and `read_request`, what `unseen` runs) and through the plain ones they replaced
//! (`unseen_ingest::reference`, the `reference` feature), which must agree exactly: the same
//! points (time, every dimension and every evidence attribute, in order), the same issues (kind, location, message), the
//! same counts, the same result, and the same findings once the points go through the rule.
//!
//! Shared, as source, by the `differential` fuzz target (through this crate) and by the
//! corpus replay test of unseen-ingest (`crates/ingest/tests/fuzz_corpus.rs`, which includes
//! this file with `#[path]`), so that the test checks exactly what the fuzzer checked. It
//! depends on nothing but the workspace crates.
//!
//! An input is one mode byte, then the payload. The mode byte's two low bits choose:
//!
//! | byte & 3 | mode | fast | plain |
//! | --- | --- | --- | --- |
//! | 0 | [`Mode::Framed`] | `read_source(OtlpProto)`, `read_bytes`, and with read-aheads of a few bytes | `reference::read_source(OtlpProto)` |
//! | 1 | [`Mode::Request`] | `read_request(Protobuf)` | `reference::read_request(Protobuf)` |
//! | 2 | [`Mode::Csv`] | `read_source(Csv)`, `read_bytes`, and with read buffers of a few bytes | `reference::read_source(Csv)` |
//! | 3 | [`Mode::Auto`] | `read_source(Auto)` and `read_bytes` (gzip, detection, then the decoder) | `reference::read_source(Auto)` |
//!
//! Every input runs with each of [`LIMITS`]. In [`Mode::Auto`], a payload that is not gzip
//! and does not look like protobuf or CSV is skipped: OTLP/JSON and YAML have one decoder,
//! which their own targets fuzz, and the fuzzer's time (and corpus) is better spent here on
//! the formats with two.

use unseen_detect::BatchScan;
use unseen_findings::Finding;
use unseen_ingest::{
    read_bytes, read_request, read_source, reference, BodyEncoding, Format, Limits, SourceStats,
};
use unseen_model::{unix_secs_from_nanos, Windows, SEED_RULE};
use unseen_normalize::{key_of, KeyMode};

/// What the first byte of an input selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The file exporter's length-prefixed OTLP protobuf.
    Framed,
    /// One OTLP protobuf request body, as `unseen serve` decodes it.
    Request,
    /// Splunk CSV.
    Csv,
    /// `--format auto`: gzip, detection, then whichever decoder.
    Auto,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Framed, Mode::Request, Mode::Csv, Mode::Auto];

    /// The mode of an input's first byte.
    pub fn of(byte: u8) -> Mode {
        Mode::ALL[usize::from(byte & 3)]
    }

    /// The first byte of an input in this mode.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// Small limits, so that the fuzzer reaches the over-the-limit paths with small inputs (as
/// the other targets), and a record limit that real messages fit under with a dimension
/// limit that some real image names go over (node names and short image names do not).
pub const LIMITS: [Limits; 2] = [
    Limits {
        max_record_bytes: 4096,
        max_dimension_bytes: 64,
    },
    Limits {
        max_record_bytes: 1 << 20,
        max_dimension_bytes: 32,
    },
];

/// The read-aheads (protobuf) and read buffers (CSV) the fast decoders also run with, beside
/// their own: frames and rows then arrive in pieces.
const BUFFERS: [usize; 3] = [1, 61, 1000];

/// Everything a decoder said about one input; a point owned: the time, the four dimensions
/// (host, cluster, node, image) and the evidence (`Dims::context`).
type Seen = unseen_ingest::reference::Recorded;
type Point = unseen_ingest::reference::RecordedPoint;

#[derive(Debug, PartialEq)]
struct Outcome {
    seen: Seen,
    /// The format read and the counts, or the error's message.
    result: Result<(Format, SourceStats), String>,
}

/// What an input gave (the fast decoders' account, summed over [`LIMITS`]); the same for
/// both decoders, or [`check`] would have said so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub points: u64,
    /// Evidence attributes present on the points.
    pub evidence: u64,
    pub issues: u64,
    pub findings: u64,
    /// Runs that ended in a `SourceError` (an unusable source).
    pub errors: u64,
}

impl Summary {
    pub fn add(&mut self, other: Summary) {
        self.points += other.points;
        self.evidence += other.evidence;
        self.issues += other.issues;
        self.findings += other.findings;
        self.errors += other.errors;
    }
}

/// Runs `input` (mode byte, then payload) through both decoders with each of [`LIMITS`];
/// `Err` says where they disagree. An empty input has no mode: nothing to compare.
pub fn check(input: &[u8]) -> Result<Summary, String> {
    let Some((&byte, payload)) = input.split_first() else {
        return Ok(Summary::default());
    };
    let mode = Mode::of(byte);
    let mut summary = Summary::default();
    if mode == Mode::Auto && !two_decoders(payload) {
        return Ok(summary);
    }
    for limits in LIMITS {
        let plain = run(mode, payload, limits, Decoders::Plain);
        let fast = run(mode, payload, limits, Decoders::Fast);
        let context = |what: &str| format!("{mode:?}, {limits:?}, {what}");
        compare(&plain, &fast, &context("fast"))?;
        if matches!(mode, Mode::Framed | Mode::Csv | Mode::Auto) {
            let in_memory = run(mode, payload, limits, Decoders::InMemory);
            compare(&plain, &in_memory, &context("fast, in memory"))?;
            for buffer in BUFFERS {
                let buffered = run(mode, payload, limits, Decoders::Buffered(buffer));
                compare(
                    &plain,
                    &buffered,
                    &context(&format!("fast, buffer {buffer}")),
                )?;
            }
        }
        let plain_findings = findings(&plain.seen.points);
        let fast_findings = findings(&fast.seen.points);
        first_difference(&plain_findings, &fast_findings).map_or(Ok(()), |d| {
            Err(format!("{}: findings: {d}", context("fast")))
        })?;
        summary.add(Summary {
            points: fast.seen.points.len() as u64,
            evidence: fast.seen.points.iter().flat_map(|p| &p.2).flatten().count() as u64,
            issues: fast.seen.issues.len() as u64,
            findings: fast_findings.len() as u64,
            errors: u64::from(fast.result.is_err()),
        });
    }
    Ok(summary)
}

/// Whether `read_source(Auto)` may pick a format with a fast and a plain decoder: gzip (whose
/// content is known only once decompressed), or what detects as protobuf or CSV.
fn two_decoders(payload: &[u8]) -> bool {
    const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
    let head = &payload[..payload.len().min(64 << 10)];
    payload.starts_with(GZIP_MAGIC)
        || matches!(
            unseen_ingest::detect_format(head),
            Some(Format::OtlpProto | Format::Csv)
        )
}

#[derive(Debug, Clone, Copy)]
enum Decoders {
    Plain,
    Fast,
    /// The fast decoders over the payload in memory (`read_bytes`, as `scan` reads a file).
    InMemory,
    /// The fast decoders with this read-ahead or read buffer.
    Buffered(usize),
}

fn run(mode: Mode, payload: &[u8], limits: Limits, decoders: Decoders) -> Outcome {
    let mut seen = Seen::default();
    let format = match mode {
        Mode::Framed => Format::OtlpProto,
        Mode::Csv => Format::Csv,
        Mode::Auto => Format::Auto,
        Mode::Request => {
            let body = payload.to_vec().into();
            let encoding = BodyEncoding::Protobuf;
            let stats = match decoders {
                Decoders::Plain => {
                    reference::read_request("fuzz", body, encoding, limits, &mut seen)
                }
                Decoders::Fast | Decoders::InMemory | Decoders::Buffered(_) => {
                    read_request("fuzz", body, encoding, limits, &mut seen)
                }
            };
            return Outcome {
                seen,
                result: Ok((Format::OtlpProto, stats)),
            };
        }
    };
    let result = match decoders {
        Decoders::Plain => reference::read_source("fuzz", payload, format, limits, &mut seen),
        Decoders::Fast => read_source("fuzz", payload, format, limits, &mut seen),
        Decoders::InMemory => read_bytes("fuzz", payload, format, limits, &mut seen),
        Decoders::Buffered(buffer) => {
            reference::read_source_buffered("fuzz", payload, format, limits, buffer, &mut seen)
        }
    };
    Outcome {
        seen,
        result: result.map_err(|error| error.to_string()),
    }
}

/// `Err` with the first difference between the plain decoders' outcome and another.
fn compare(plain: &Outcome, other: &Outcome, context: &str) -> Result<(), String> {
    if plain == other {
        return Ok(());
    }
    let difference = first_difference(&plain.seen.points, &other.seen.points)
        .map(|d| format!("points: {d}"))
        .or_else(|| {
            first_difference(&plain.seen.issues, &other.seen.issues).map(|d| format!("issues: {d}"))
        })
        .unwrap_or_else(|| format!("result: plain {:?}, other {:?}", plain.result, other.result));
    Err(format!("{context}: {difference}"))
}

/// The first index where two lists differ, with both items (or the lengths).
fn first_difference<T: PartialEq + std::fmt::Debug>(plain: &[T], other: &[T]) -> Option<String> {
    if let Some(i) = (0..plain.len().min(other.len())).find(|&i| plain[i] != other[i]) {
        return Some(format!("#{i}: plain {:?}, other {:?}", plain[i], other[i]));
    }
    (plain.len() != other.len())
        .then(|| format!("plain has {}, other {}", plain.len(), other.len()))
}

/// The findings of `points`, as `unseen scan` makes them (`key_of`, `BatchScan`,
/// `unseen_findings::build`), in both key modes, at T just after the newest point and
/// two days later (most points then out of the current window).
fn findings(points: &[Point]) -> Vec<Finding> {
    let Some(newest) = points.iter().map(|p| unix_secs_from_nanos(p.0)).max() else {
        return Vec::new();
    };
    let modes = [
        KeyMode {
            strict: false,
            cluster_name: Some("fuzz-cluster".to_string()),
        },
        KeyMode {
            strict: true,
            cluster_name: None,
        },
    ];
    let mut out = Vec::new();
    for mode in &modes {
        for at in [newest + 1, newest + 2 * 86_400] {
            let mut scan = BatchScan::new(Windows::default(), at);
            for (time, [host, cluster, node, image], context) in points {
                let dims = unseen_model::Dims {
                    host_name: host.as_deref(),
                    cluster_name: cluster.as_deref(),
                    node_name: node.as_deref(),
                    image_name: image.as_deref(),
                    context: unseen_model::Context(context.each_ref().map(Option::as_deref)),
                };
                if let Ok(key) = key_of(&dims, mode) {
                    scan.observe(key, unix_secs_from_nanos(*time), dims.host_name);
                }
            }
            out.extend(
                scan.finish()
                    .iter()
                    .map(|d| unseen_findings::build(&SEED_RULE, mode.name(), d, at)),
            );
        }
    }
    out
}
