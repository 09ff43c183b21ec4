//! The protobuf decoder as it was before the wire walker (the parent module): our own minimal
//! `prost` structs with `Bytes` fields. Kept as the reference the walker must agree with byte
//! for byte (points, issues and their messages, counts): by the tests, and, with the
//! `reference` feature, by [`crate::reference`] (the differential fuzz target and its corpus
//! test). Never on the run-time path.

use std::io::{self, BufRead, Read};

use bytes::Bytes;
use prost::Message;
use unseen_model::attr;

use crate::otlp::{self, DataKind, MetricPath};
use crate::sink::{self, Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

/// zstd's frame magic: the file exporter's `compression: zstd` compresses each message.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Reads frames until EOF. Only IO errors stop it.
pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    let max = sink.limits.max_record_bytes;
    let mut offset: u64 = 0;
    let mut index: u64 = 0;
    loop {
        let mut prefix = [0u8; 4];
        let got = read_full(reader, &mut prefix)?;
        if got == 0 {
            return Ok(());
        }
        index += 1;
        let position = Position::Record { index, offset };
        sink.record();
        if got < prefix.len() {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                format!("file ends inside a length prefix: expected 4 bytes, found {got}"),
            );
            return Ok(());
        }
        let len = u32::from_be_bytes(prefix);
        offset += 4;
        if u64::from(len) > max as u64 {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                sink::too_long("message", len.into(), max),
            );
            // Read and drop, so memory stays bounded; a truncated file just ends here.
            let skipped = io::copy(&mut reader.take(len.into()), &mut io::sink())?;
            offset += skipped;
            if skipped < u64::from(len) {
                return Ok(());
            }
            continue;
        }
        let len = len as usize; // <= max, a usize
                                // The prefix may lie: let the buffer grow with what actually arrives.
        let mut frame = Vec::with_capacity(len.min(1 << 20));
        reader.take(len as u64).read_to_end(&mut frame)?;
        offset += frame.len() as u64;
        if frame.len() < len {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                format!(
                    "file ends inside a message: expected {len} bytes, found {}",
                    frame.len()
                ),
            );
            return Ok(());
        }
        decode_frame(Bytes::from(frame), position, sink);
    }
}

/// Reads until `buf` is full or EOF; returns how many bytes were read.
fn read_full(reader: &mut dyn BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

/// Decodes one message and visits it; a message that does not decode is one
/// `MalformedRecord`.
pub(crate) fn decode_frame<V: Visitor>(frame: Bytes, position: Position, sink: &mut Sink<'_, V>) {
    if frame.starts_with(&ZSTD_MAGIC) {
        sink.issue(
            IssueKind::MalformedRecord,
            position,
            None,
            "message is zstd-compressed (file exporter `compression: zstd`), which unseen does not read; \
             export without compression (gzip the file instead if needed)"
                .to_string(),
        );
        return;
    }
    let request = ExportMetricsServiceRequest::decode(frame);
    let prepared = match &request {
        Ok(request) => prepare(request),
        Err(error) => Err(error.to_string()),
    };
    let (resources, metrics) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                format!("not an OTLP protobuf ExportMetricsServiceRequest: {error}"),
            );
            return;
        }
    };
    for metric in &metrics {
        let resource = &resources[metric.resource];
        for (kind, data) in [
            (DataKind::Gauge, &metric.gauge),
            (DataKind::Sum, &metric.sum),
        ] {
            match data {
                None => {}
                Some(Data::Counted(count)) => sink.other_points(*count),
                Some(Data::Points(data)) => {
                    for (pi, point) in data.data_points.iter().enumerate() {
                        let attributes = slots(&point.attributes);
                        ready_point(
                            sink,
                            position,
                            point.time_unix_nano,
                            &attributes,
                            resource,
                            || metric.path.point(kind, pi),
                        );
                    }
                }
            }
        }
        for (kind, count) in metric.other_kinds {
            match count {
                None => {}
                Some(count) if metric.ready => {
                    otlp::ready_of_wrong_kind(sink, position, kind, count, metric.path)
                }
                Some(count) => sink.other_points(count),
            }
        }
    }
}

/// A metric with its data decoded (the rule's metric) or counted (any other), so that a
/// message is visited only once all of it decoded: a `MalformedRecord` means that none of
/// its points were read, as for the other formats.
struct Prepared {
    path: MetricPath,
    /// Index into the resources' attributes.
    resource: usize,
    ready: bool,
    gauge: Option<Data>,
    sum: Option<Data>,
    other_kinds: [(DataKind, Option<u64>); 3],
}

enum Data {
    Points(NumberData),
    Counted(u64),
}

type PreparedRequest<'r> = (Vec<AttrSlots<'r>>, Vec<Prepared>);

fn prepare(request: &ExportMetricsServiceRequest) -> Result<PreparedRequest<'_>, String> {
    let mut resources = Vec::with_capacity(request.resource_metrics.len());
    let mut prepared = Vec::new();
    for (ri, rm) in request.resource_metrics.iter().enumerate() {
        resources.push(
            rm.resource
                .as_ref()
                .map(|r| slots(&r.attributes))
                .unwrap_or_default(),
        );
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            for (mi, metric) in sm.metrics.iter().enumerate() {
                let ready = metric.name == attr::READY_METRIC.as_bytes();
                let data = |bytes: &Option<Bytes>| -> Result<Option<Data>, String> {
                    let Some(bytes) = bytes else { return Ok(None) };
                    Ok(Some(if ready {
                        Data::Points(NumberData::decode(bytes.clone()).map_err(|e| e.to_string())?)
                    } else {
                        Data::Counted(count_points(bytes)?)
                    }))
                };
                let count = |bytes: &Option<Bytes>| bytes.as_deref().map(count_points).transpose();
                prepared.push(Prepared {
                    path: MetricPath {
                        resource: ri,
                        scope: si,
                        metric: mi,
                    },
                    resource: ri,
                    ready,
                    gauge: data(&metric.gauge)?,
                    sum: data(&metric.sum)?,
                    other_kinds: [
                        (DataKind::Histogram, count(&metric.histogram)?),
                        (
                            DataKind::ExponentialHistogram,
                            count(&metric.exponential_histogram)?,
                        ),
                        (DataKind::Summary, count(&metric.summary)?),
                    ],
                });
            }
        }
    }
    Ok((resources, prepared))
}

/// The relevant attributes of a list (`otlp::ATTRS`), borrowed from the frame.
fn slots(attributes: &[KeyValue]) -> AttrSlots<'_> {
    let mut slots = AttrSlots::default();
    for kv in attributes {
        // A plain search of the table, not `otlp::key_index`: the tests hold that to this.
        let Some(index) = otlp::ATTRS
            .iter()
            .position(|name| name.as_bytes() == kv.key)
        else {
            continue;
        };
        let Some(value) = kv.value.as_ref().and_then(|v| v.string_value.as_ref()) else {
            continue;
        };
        let slot = match std::str::from_utf8(value) {
            Ok(value) => Slot::Str(value),
            Err(_) => Slot::BadUtf8,
        };
        slots.offer(index, slot);
    }
    slots
}

/// Counts the `data_points` (field 1) of a Gauge, Sum, Histogram, ExponentialHistogram or
/// Summary without decoding them: walks the fields, skipping each.
fn count_points(mut buf: &[u8]) -> Result<u64, String> {
    let truncated = || "metric data ends inside a field".to_string();
    let mut count = 0;
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok_or_else(truncated)?;
        let (field, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => {
                decode_varint(&mut buf).ok_or_else(truncated)?;
                0
            }
            1 => 8,
            2 => {
                if field == 1 {
                    count += 1;
                }
                decode_varint(&mut buf).ok_or_else(truncated)?
            }
            5 => 4,
            _ => return Err(format!("invalid wire type {wire} in metric data")),
        };
        let skip = usize::try_from(skip)
            .ok()
            .filter(|&n| n <= buf.len())
            .ok_or_else(truncated)?;
        buf = &buf[skip..];
    }
    Ok(count)
}

/// A protobuf base-128 varint; `None` if `buf` ends inside it or it is over 10 bytes.
fn decode_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The messages (opentelemetry-proto `collector/metrics/v1`, `metrics/v1`, `common/v1`,
// `resource/v1`), reduced to what the rule reads. Field numbers are the proto's.

#[derive(Clone, PartialEq, Message)]
struct ExportMetricsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceMetrics {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeMetrics {
    #[prost(message, repeated, tag = "2")]
    metrics: Vec<Metric>,
}

/// The `data` oneof members are kept as undecoded bytes (same wire type as a message):
/// decoded only for `k8s.container.ready`, counted for everything else.
#[derive(Clone, PartialEq, Message)]
struct Metric {
    /// Bytes, not `String`: compared, never kept.
    #[prost(bytes = "bytes", tag = "1")]
    name: Bytes,
    #[prost(bytes = "bytes", optional, tag = "5")]
    gauge: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "7")]
    sum: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "9")]
    histogram: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "10")]
    exponential_histogram: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "11")]
    summary: Option<Bytes>,
}

/// `Gauge` and `Sum` alike: `repeated NumberDataPoint data_points = 1`.
#[derive(Clone, PartialEq, Message)]
struct NumberData {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<NumberDataPoint>,
}

#[derive(Clone, PartialEq, Message)]
struct NumberDataPoint {
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(message, repeated, tag = "7")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

/// Only `string_value`; bytes so that the UTF-8 check happens only for the relevant keys.
#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(bytes = "bytes", optional, tag = "1")]
    string_value: Option<Bytes>,
}

// ---------------------------------------------------------------------------------------
// `otlp`'s attribute slots and point checks as they were with this decoder, so that the
// reference does not move when `otlp` does.

#[derive(Debug, Clone, Default)]
enum Slot<'a> {
    #[default]
    Unset,
    Str(&'a str),
    BadUtf8,
}

#[derive(Debug, Clone, Default)]
struct AttrSlots<'a>([Slot<'a>; otlp::SLOTS]);

impl<'a> AttrSlots<'a> {
    fn offer(&mut self, index: usize, value: Slot<'a>) {
        if let Some(slot @ Slot::Unset) = self.0.get_mut(index) {
            *slot = value;
        }
    }
}

fn resolve<'a>(
    point: &'a AttrSlots<'_>,
    resource: &'a AttrSlots<'_>,
    limit: usize,
) -> Result<unseen_model::Dims<'a>, String> {
    let mut dims = unseen_model::Dims::default();
    for (index, key) in otlp::ATTRS.iter().enumerate() {
        let value = match (&point.0[index], &resource.0[index]) {
            (Slot::Unset, slot) | (slot, _) => slot,
        };
        // Evidence that is not UTF-8 or over the limit is absent; the point stays.
        let evidence = unseen_model::Context::slot(key).is_some();
        match value {
            Slot::Unset => {}
            Slot::BadUtf8 if evidence => {}
            Slot::BadUtf8 => return Err(otlp::bad_utf8("attribute", key)),
            Slot::Str(value) if evidence => {
                if value.len() <= limit {
                    dims.set(key, value);
                }
            }
            Slot::Str(value) => {
                otlp::check_dimension("attribute", key, value, limit)?;
                dims.set(key, value);
            }
        }
    }
    Ok(dims)
}

fn ready_point<V: Visitor>(
    sink: &mut Sink<'_, V>,
    position: Position,
    time_unix_nano: u64,
    point: &AttrSlots<'_>,
    resource: &AttrSlots<'_>,
    path: impl FnOnce() -> String,
) {
    if time_unix_nano == 0 {
        sink.issue(
            IssueKind::MalformedPoint,
            position,
            Some(path()),
            otlp::NO_TIME.to_string(),
        );
        return;
    }
    match resolve(point, resource, sink.limits.max_dimension_bytes) {
        Ok(dims) => sink.point(unseen_model::PointRef {
            time_unix_nano,
            dims,
        }),
        Err(message) => sink.issue(IssueKind::MalformedPoint, position, Some(path()), message),
    }
}
