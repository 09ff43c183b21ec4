//! Decoders for the inputs unseen reads: they turn bytes into `k8s.container.ready`
//! sightings ([`PointRef`]) and nothing else.
//!
//! Each point carries its key dimensions and its evidence attributes ([`unseen_model::Dims`],
//! with `context`), resolved the same way in every format (see `otlp.rs`).
//!
//! Every decoder streams: memory is bounded by one record (one JSON line, one protobuf
//! message, one CSV row), never by the file. A bad record is reported to the
//! [`Visitor`] with its location and decoding goes on; only an unreadable source
//! (IO error, unknown format, broken gzip stream) stops it.
//!
//! # Correctness
//!
//! The OTLP protobuf and CSV decoders are fast paths (a wire walker over the frame's bytes,
//! rows split in place) that must say exactly what the plain decoders they replaced said. The
//! plain ones are kept off the run-time path, as `unseen_ingest::reference` (the `reference`
//! feature): the property tests beside the code, and the `differential` fuzz target with its
//! checked-in corpus, which `tests/fuzz_corpus.rs` replays, require the same points, issues,
//! counts and findings from both.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use unseen_model::PointRef;

mod csv;
mod detect;
mod json;
mod otlp;
mod proto;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
mod sink;
mod split;
mod yaml;

pub use detect::detect_format;
pub use split::{read_head, read_split, Part, Positioned, MIN_RANGE_BYTES};

/// Input formats. `Auto` detects from the first bytes (after gzip is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Auto,
    /// One OTLP/JSON `ExportMetricsServiceRequest` per line (Collector file exporter).
    OtlpJson,
    /// OTLP protobuf messages, each prefixed by a 4-byte big-endian length
    /// (Collector file exporter with `format: proto`).
    OtlpProto,
    /// Splunk CSV export: header row, `_time`, dotted dimension columns, optional `metric_name`.
    Csv,
    /// The pdata "golden" YAML form used by the Collector's tests. Read whole: small files only.
    OtlpYaml,
}

impl Format {
    /// Every format, `Auto` first; the order the CLI lists them in.
    pub const ALL: [Format; 5] = [
        Format::Auto,
        Format::OtlpJson,
        Format::OtlpProto,
        Format::Csv,
        Format::OtlpYaml,
    ];

    /// The name users type (`--format otlp-json`) and logs show.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::OtlpJson => "otlp-json",
            Format::OtlpProto => "otlp-proto",
            Format::Csv => "csv",
            Format::OtlpYaml => "otlp-yaml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}`: use auto, otlp-json, otlp-proto, csv or otlp-yaml")]
pub struct ParseFormatError(pub String);

impl FromStr for Format {
    type Err = ParseFormatError;

    /// Accepts the names of [`Format::name`], case-insensitively, with `_` for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Format::ALL
            .into_iter()
            .find(|f| f.name() == wanted)
            .ok_or_else(|| ParseFormatError(s.to_string()))
    }
}

/// Where an issue is: `file:line` for text formats, `file:record N (byte B)` for protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub position: Position,
    /// Path inside the record, e.g. `resourceMetrics[0].scopeMetrics[1].metrics[2].gauge.dataPoints[3]`.
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line number.
    Line(u64),
    /// 1-based record number and the byte offset of its length prefix.
    Record { index: u64, offset: u64 },
    /// A whole request body (the receivers of `unseen serve`): no line or record number.
    Body,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Line(line) => write!(f, "{}:{}", self.source, line)?,
            Position::Record { index, offset } => {
                write!(f, "{}: record {} (byte {})", self.source, index, offset)?
            }
            Position::Body => write!(f, "{}", self.source)?,
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        Ok(())
    }
}

/// What was wrong with one record or one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub location: Location,
    pub kind: IssueKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// The whole record could not be decoded; none of its points were read.
    MalformedRecord,
    /// One `k8s.container.ready` point was unusable (no time, a key dimension over the size
    /// limit or not UTF-8). Evidence attributes never make a point unusable.
    MalformedPoint,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Receives what a decoder finds, in input order.
pub trait Visitor {
    fn point(&mut self, point: PointRef<'_>);

    /// Several points at once, in input order, all still readable: a visitor can start
    /// the work of the later ones (fetching what they will look up) before finishing the
    /// first. The CSV decoder hands on its plain rows this way; the default takes them one
    /// by one.
    fn points(&mut self, points: &[PointRef<'_>]) {
        for &point in points {
            self.point(point);
        }
    }

    fn issue(&mut self, issue: Issue);
}

/// Counts for one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Lines, rows or protobuf messages read (blank lines not counted).
    pub records: u64,
    /// `k8s.container.ready` points handed to the visitor.
    pub ready_points: u64,
    /// Points of other metrics, skipped.
    pub other_points: u64,
    pub malformed_records: u64,
    pub malformed_points: u64,
}

/// Explicit limits; each has a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record (JSON line, protobuf message, CSV row, YAML file), in bytes.
    pub max_record_bytes: usize,
    /// Largest dimension value the rule keeps (image names and the like), in bytes. A point
    /// with a longer key attribute (host, cluster, node, image) is a
    /// [`IssueKind::MalformedPoint`]; a longer evidence attribute (`Dims::context`) is
    /// absent from the point, which is kept: evidence never costs a sighting.
    pub max_dimension_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 64 << 20,
            max_dimension_bytes: 4096,
        }
    }
}

/// A source that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: {error}")]
    Io {
        source_name: String,
        // Not `#[source]`: the message already includes it, and error chains would
        // print it twice.
        error: std::io::Error,
    },
    #[error("{source_name}: cannot tell the format from the first bytes ({found}); pass --format otlp-json, otlp-proto or csv (a CSV export needs a `_time` column)")]
    UnknownFormat { source_name: String, found: String },
    #[error("{source_name}: {message}")]
    Unusable {
        source_name: String,
        message: String,
    },
}

/// How an OTLP request body is encoded (OTLP/HTTP `Content-Type`, or gRPC: protobuf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/x-protobuf`, and every gRPC request.
    Protobuf,
    /// `application/json`: the OTLP JSON mapping.
    Json,
}

/// Decodes one OTLP `ExportMetricsServiceRequest` body, already decompressed and
/// without any framing: what the OTLP receivers get. The same decoders as
/// [`read_source`], so a request and a file holding the same message give the same
/// points.
///
/// A body that is not a request is one [`IssueKind::MalformedRecord`] (with
/// [`Position::Body`]) and no point; a body over `limits.max_record_bytes` is one too.
pub fn read_request(
    source_name: &str,
    body: bytes::Bytes,
    encoding: BodyEncoding,
    limits: Limits,
    visitor: &mut impl Visitor,
) -> SourceStats {
    read_request_with(
        source_name,
        body,
        encoding,
        limits,
        visitor,
        |body, sink| proto::decode_frame(body, Position::Body, sink),
    )
}

/// [`read_request`] with the protobuf decoder as a parameter (`reference` passes the
/// plain one): the limit, the counts and the JSON path are the same for both.
fn read_request_with<V: Visitor>(
    source_name: &str,
    body: bytes::Bytes,
    encoding: BodyEncoding,
    limits: Limits,
    visitor: &mut V,
    protobuf: impl FnOnce(bytes::Bytes, &mut sink::Sink<'_, V>),
) -> SourceStats {
    let mut sink = sink::Sink::new(source_name, limits, visitor);
    sink.record();
    if body.len() > limits.max_record_bytes {
        sink.issue(
            IssueKind::MalformedRecord,
            Position::Body,
            None,
            sink::too_long("body", body.len() as u64, limits.max_record_bytes),
        );
        return sink.stats();
    }
    match encoding {
        BodyEncoding::Protobuf => protobuf(body, &mut sink),
        BodyEncoding::Json => json::decode_line(&body, Position::Body, &mut sink),
    }
    sink.stats()
}

/// Decodes one source. `input` may be gzip-compressed (detected by its magic bytes).
/// Returns the detected format and the counts.
///
/// With [`Format::Auto`] the format is told from the first bytes ([`detect_format`]). An
/// input that is empty or only whitespace is read as [`Format::OtlpJson`] with no records:
/// a file exporter that has not written yet leaves exactly that, and it is not an error.
pub fn read_source(
    source_name: &str,
    input: impl Read,
    format: Format,
    limits: Limits,
    visitor: &mut impl Visitor,
) -> Result<(Format, SourceStats), SourceError> {
    read_source_with(source_name, input, format, limits, visitor, decode)
}

/// The decoder of each format, as [`read_source`] runs them.
fn decode<V: Visitor>(
    format: Format,
    reader: &mut dyn std::io::BufRead,
    sink: &mut sink::Sink<'_, V>,
) -> Result<(), sink::Fatal> {
    match format {
        Format::OtlpJson | Format::Auto => json::read(reader, sink),
        Format::OtlpProto => proto::read(reader, sink),
        Format::Csv => csv::read(reader, sink),
        Format::OtlpYaml => yaml::read(reader, sink),
    }
}

/// [`read_source`] with the decoders as a parameter (`reference` passes the plain ones):
/// gzip, format detection, the counts and the errors are the same for all.
fn read_source_with<V: Visitor>(
    source_name: &str,
    input: impl Read,
    format: Format,
    limits: Limits,
    visitor: &mut V,
    decode: impl FnOnce(
        Format,
        &mut dyn std::io::BufRead,
        &mut sink::Sink<'_, V>,
    ) -> Result<(), sink::Fatal>,
) -> Result<(Format, SourceStats), SourceError> {
    let io_error = |error| SourceError::Io {
        source_name: source_name.to_string(),
        error,
    };
    let opened = detect::Opened::new(input).map_err(io_error)?;
    let format = resolve_format(source_name, format, opened.head())?;
    let mut sink = sink::Sink::new(source_name, limits, visitor);
    let mut reader = opened.into_reader();
    let result = decode(format, &mut reader, &mut sink);
    finish(source_name, format, result, &sink)
}

/// [`read_source`] over input that is already in memory (a mapped file, a buffer): the
/// decoders walk it where it lies instead of copying it through a reader's buffer. Gzip
/// input is decompressed as a stream, as [`read_source`] does. Same points, issues and
/// counts as [`read_source`] over the same bytes.
pub fn read_bytes(
    source_name: &str,
    input: &[u8],
    format: Format,
    limits: Limits,
    visitor: &mut impl Visitor,
) -> Result<(Format, SourceStats), SourceError> {
    if input.starts_with(&detect::GZIP_MAGIC) {
        return read_source(source_name, input, format, limits, visitor);
    }
    let format = resolve_format(source_name, format, &input[..input.len().min(detect::HEAD)])?;
    let mut sink = sink::Sink::new(source_name, limits, visitor);
    // `&[u8]` is a `BufRead` whose buffer is all of it.
    let mut reader = input;
    let result = decode(format, &mut reader, &mut sink);
    finish(source_name, format, result, &sink)
}

/// The format to read `head` (the input's first bytes, decompressed) with.
fn resolve_format(source_name: &str, format: Format, head: &[u8]) -> Result<Format, SourceError> {
    Ok(match format {
        Format::Auto => match detect::detect_format(head) {
            Some(format) => format,
            None if detect::is_blank(head) => Format::OtlpJson,
            None => {
                return Err(SourceError::UnknownFormat {
                    source_name: source_name.to_string(),
                    found: detect::show_bytes(head),
                })
            }
        },
        format => format,
    })
}

fn finish<V: Visitor>(
    source_name: &str,
    format: Format,
    result: Result<(), sink::Fatal>,
    sink: &sink::Sink<'_, V>,
) -> Result<(Format, SourceStats), SourceError> {
    match result {
        Ok(()) => Ok((format, sink.stats())),
        Err(fatal) => Err(fatal_error(source_name, fatal)),
    }
}

/// The error of a source whose decoding stopped.
fn fatal_error(source_name: &str, fatal: sink::Fatal) -> SourceError {
    match fatal {
        sink::Fatal::Io(error) => SourceError::Io {
            source_name: source_name.to_string(),
            error,
        },
        sink::Fatal::Unusable(message) => SourceError::Unusable {
            source_name: source_name.to_string(),
            message,
        },
    }
}
