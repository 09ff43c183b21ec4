//! The plain decoders that the fast ones replaced, as a public API for checking them (the
//! `reference` feature, off by default): the differential fuzz target
//! (`fuzz/fuzz_targets/differential.rs`) and its corpus test run every input through both
//! and require the same points, issues, counts and findings.
//!
//! - OTLP protobuf: our own minimal `prost` structs (`proto/legacy.rs`) instead of the wire
//!   walker (`proto.rs`, `proto/wire.rs`).
//! - Splunk CSV: every row through `csv-core` (`csv/reference.rs`) instead of plain rows split
//!   in place (`csv.rs`).
//! - OTLP/JSON and the golden YAML have one decoder only: the same as [`crate::read_source`].
//!
//! Gzip, format detection, limits, counts and errors are [`crate::read_source`]'s and
//! [`crate::read_request`]'s own code, with the decoders swapped. Not for use at run time:
//! these decoders are slower, and they are kept only as the definition of what the fast
//! ones must do.

use std::io::{BufRead, Read};

use unseen_model::{PointRef, CONTEXT_LEN};

use crate::sink::{Fatal, Sink};
use crate::{
    csv, proto, BodyEncoding, Format, Issue, Limits, Position, SourceError, SourceStats, Visitor,
};

/// One point as the checks compare it, owned: its time, its four key dimensions (host,
/// cluster, node, image) and its evidence (`Dims::context`, in `CONTEXT_ATTRS` order).
pub type RecordedPoint = (u64, [Option<String>; 4], [Option<String>; CONTEXT_LEN]);

/// A [`Visitor`] that keeps everything it is told, in order: what two decoders are
/// compared on.
#[derive(Debug, Default, PartialEq)]
pub struct Recorded {
    pub points: Vec<RecordedPoint>,
    pub issues: Vec<Issue>,
}

impl Visitor for Recorded {
    fn point(&mut self, p: PointRef<'_>) {
        let d = p.dims;
        let own = |v: Option<&str>| v.map(str::to_string);
        self.points.push((
            p.time_unix_nano,
            [
                own(d.host_name),
                own(d.cluster_name),
                own(d.node_name),
                own(d.image_name),
            ],
            d.context.0.map(own),
        ));
    }

    fn issue(&mut self, issue: Issue) {
        self.issues.push(issue);
    }
}

/// [`crate::read_source`] with the plain decoders.
pub fn read_source(
    source_name: &str,
    input: impl Read,
    format: Format,
    limits: Limits,
    visitor: &mut impl Visitor,
) -> Result<(Format, SourceStats), SourceError> {
    crate::read_source_with(source_name, input, format, limits, visitor, plain)
}

/// [`crate::read_request`] with the plain protobuf decoder (JSON bodies: the one decoder).
pub fn read_request(
    source_name: &str,
    body: bytes::Bytes,
    encoding: BodyEncoding,
    limits: Limits,
    visitor: &mut impl Visitor,
) -> SourceStats {
    crate::read_request_with(
        source_name,
        body,
        encoding,
        limits,
        visitor,
        |body, sink| proto::legacy::decode_frame(body, Position::Body, sink),
    )
}

/// [`crate::read_source`] itself (the fast decoders), but with a read buffer of `buffer`
/// bytes where the fast decoders have their own: the protobuf walker's read-ahead (128 KiB)
/// and the CSV reader's read buffer (256 KiB). With a few bytes, frames and rows of a small
/// input arrive in pieces and straddle buffer boundaries, which the default sizes reach only
/// with inputs of megabytes. What comes out must not depend on `buffer`.
pub fn read_source_buffered(
    source_name: &str,
    input: impl Read,
    format: Format,
    limits: Limits,
    buffer: usize,
    visitor: &mut impl Visitor,
) -> Result<(Format, SourceStats), SourceError> {
    crate::read_source_with(
        source_name,
        input,
        format,
        limits,
        visitor,
        |format, reader, sink| match format {
            Format::OtlpProto => proto::read_frames(reader, sink, buffer.max(1)),
            Format::Csv => csv::read_with(reader, sink, true, buffer),
            format => crate::decode(format, reader, sink),
        },
    )
}

/// The plain decoder of each format.
fn plain<V: Visitor>(
    format: Format,
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    match format {
        Format::OtlpProto => proto::legacy::read(reader, sink),
        Format::Csv => csv::reference::read(reader, sink),
        format => crate::decode(format, reader, sink),
    }
}
