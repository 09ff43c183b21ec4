//! Encoders: the bytes of one batch in each format unseen reads. One batch at a time, into a
//! reused buffer, so writing a history of any length takes the memory of one batch.

use std::io::Write;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};
use prost::Message;

use crate::generator::{Batch, FlatPoint, Value};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Collector file exporter with `format: proto`: each `ExportMetricsServiceRequest`
    /// prefixed by its length, 4 bytes big-endian.
    OtlpProto,
    /// The Collector file exporter's default: one OTLP/JSON request per line.
    OtlpJson,
    /// A Splunk CSV export of a metrics search (see [`CSV_HEADER`]).
    Csv,
}

/// Which points a CSV export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvMetrics {
    /// Only `k8s.container.ready`: what the rule's `mstats` search reads. The default.
    #[default]
    Ready,
    /// Every metric, told apart by `metric_name` (node and pod metrics have an empty image).
    All,
}

/// The CSV header: `_time` (Unix seconds), `metric_name`, the rule's four dimensions under
/// their dotted names, and the value. `host.name` is the collector's node, as the
/// `resourcedetection` processor sets it in a pipeline to Splunk.
pub const CSV_HEADER: &str =
    "_time,metric_name,host.name,k8s.cluster.name,k8s.node.name,container.image.name,_value\n";

/// Encodes batches in one format.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    csv_metrics: CsvMetrics,
    buf: Vec<u8>,
    started: bool,
}

impl Encoder {
    pub fn new(format: Format, csv_metrics: CsvMetrics) -> Encoder {
        Encoder {
            format,
            csv_metrics,
            buf: Vec::with_capacity(1 << 20),
            started: false,
        }
    }

    /// The bytes of one batch, to append to the output (for CSV, the header comes with the
    /// first batch). Valid until the next call.
    pub fn encode(&mut self, batch: &Batch<'_>) -> &[u8] {
        self.buf.clear();
        match self.format {
            Format::OtlpProto => encode_frame(&batch.to_request(), &mut self.buf),
            Format::OtlpJson => {
                write_json(&batch.to_request(), &mut self.buf);
                self.buf.push(b'\n');
            }
            Format::Csv => {
                if !self.started {
                    self.buf.extend_from_slice(CSV_HEADER.as_bytes());
                }
                write_csv(batch, self.csv_metrics, &mut self.buf);
            }
        }
        self.started = true;
        &self.buf
    }
}

/// One file-exporter frame: the 4-byte big-endian length, then the message.
pub fn encode_frame(request: &ExportMetricsServiceRequest, out: &mut Vec<u8>) {
    let len = request.encoded_len();
    // A batch of at most `max_batch_points` points is far below 4 GiB; a larger message
    // could not be framed at all.
    let prefix = u32::try_from(len).expect("an OTLP batch under 4 GiB");
    out.reserve(4 + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    request
        .encode(out)
        .expect("a Vec grows to hold the message");
}

fn write_csv(batch: &Batch<'_>, metrics: CsvMetrics, out: &mut Vec<u8>) {
    let secs = batch.time_unix_nano() / 1_000_000_000;
    let host = batch.collector_host();
    let cluster = batch.cluster_name();
    let mut row = |p: FlatPoint<'_>| {
        let _ = write!(out, "{secs},{},", p.metric.name);
        csv_field(out, host);
        out.push(b',');
        csv_field(out, cluster);
        out.push(b',');
        csv_field(out, p.node_name);
        out.push(b',');
        csv_field(out, p.image_name.unwrap_or(""));
        out.push(b',');
        let _ = match p.value {
            Value::Int(v) => write!(out, "{v}"),
            Value::Double(v) => write!(out, "{v}"),
        };
        out.push(b'\n');
    };
    match metrics {
        CsvMetrics::Ready => batch.for_each_ready(&mut row),
        CsvMetrics::All => batch.for_each_point(&mut row),
    }
}

/// A CSV field, quoted when it holds a delimiter, a quote or a line break (RFC 4180).
fn csv_field(out: &mut Vec<u8>, value: &str) {
    if !value
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for b in value.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// OTLP/JSON (protobuf JSON mapping with OTLP's rules: lowerCamelCase names, 64-bit
/// integers as decimal strings, enums as integers, default values left out).
///
/// Written by hand rather than with `opentelemetry-proto`'s `with-serde`: that would pull
/// serde into the generator for one function, and the bytes would depend on how that crate
/// serialises (which has changed between versions). Covers what the generator emits:
/// gauges and sums of number points, attributes of every `AnyValue` kind.
pub fn write_json(request: &ExportMetricsServiceRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"resourceMetrics\":[");
    for (i, rm) in request.resource_metrics.iter().enumerate() {
        comma(out, i);
        out.push(b'{');
        let mut first = true;
        if let Some(resource) = &rm.resource {
            field(out, &mut first, "resource");
            out.push(b'{');
            let mut inner = true;
            attributes(out, &mut inner, &resource.attributes);
            if resource.dropped_attributes_count != 0 {
                field(out, &mut inner, "droppedAttributesCount");
                let _ = write!(out, "{}", resource.dropped_attributes_count);
            }
            out.push(b'}');
        }
        field(out, &mut first, "scopeMetrics");
        out.push(b'[');
        for (j, sm) in rm.scope_metrics.iter().enumerate() {
            comma(out, j);
            out.push(b'{');
            let mut inner = true;
            if let Some(scope) = &sm.scope {
                field(out, &mut inner, "scope");
                out.push(b'{');
                let mut s = true;
                string_field(out, &mut s, "name", &scope.name);
                string_field(out, &mut s, "version", &scope.version);
                attributes(out, &mut s, &scope.attributes);
                out.push(b'}');
            }
            field(out, &mut inner, "metrics");
            out.push(b'[');
            for (k, m) in sm.metrics.iter().enumerate() {
                comma(out, k);
                out.push(b'{');
                let mut f = true;
                string_field(out, &mut f, "name", &m.name);
                string_field(out, &mut f, "description", &m.description);
                string_field(out, &mut f, "unit", &m.unit);
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        field(out, &mut f, "gauge");
                        out.push(b'{');
                        let mut d = true;
                        number_points(out, &mut d, &g.data_points);
                        out.push(b'}');
                    }
                    Some(metric::Data::Sum(sum)) => {
                        field(out, &mut f, "sum");
                        out.push(b'{');
                        let mut d = true;
                        number_points(out, &mut d, &sum.data_points);
                        if sum.aggregation_temporality != 0 {
                            field(out, &mut d, "aggregationTemporality");
                            let _ = write!(out, "{}", sum.aggregation_temporality);
                        }
                        if sum.is_monotonic {
                            field(out, &mut d, "isMonotonic");
                            out.extend_from_slice(b"true");
                        }
                        out.push(b'}');
                    }
                    // The generator emits gauges only; histograms and summaries never reach
                    // this writer.
                    _ => {}
                }
                out.push(b'}');
            }
            out.push(b']');
            string_field(out, &mut inner, "schemaUrl", &sm.schema_url);
            out.push(b'}');
        }
        out.push(b']');
        string_field(out, &mut first, "schemaUrl", &rm.schema_url);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

fn number_points(out: &mut Vec<u8>, first: &mut bool, points: &[NumberDataPoint]) {
    field(out, first, "dataPoints");
    out.push(b'[');
    for (i, p) in points.iter().enumerate() {
        comma(out, i);
        out.push(b'{');
        let mut f = true;
        attributes(out, &mut f, &p.attributes);
        if p.start_time_unix_nano != 0 {
            field(out, &mut f, "startTimeUnixNano");
            let _ = write!(out, "\"{}\"", p.start_time_unix_nano);
        }
        if p.time_unix_nano != 0 {
            field(out, &mut f, "timeUnixNano");
            let _ = write!(out, "\"{}\"", p.time_unix_nano);
        }
        // A oneof member is written even when it holds the default (`"asInt":"0"`).
        match p.value {
            Some(number_data_point::Value::AsInt(v)) => {
                field(out, &mut f, "asInt");
                let _ = write!(out, "\"{v}\"");
            }
            Some(number_data_point::Value::AsDouble(v)) => {
                field(out, &mut f, "asDouble");
                double(out, v);
            }
            None => {}
        }
        if p.flags != 0 {
            field(out, &mut f, "flags");
            let _ = write!(out, "{}", p.flags);
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn attributes(out: &mut Vec<u8>, first: &mut bool, attrs: &[KeyValue]) {
    if attrs.is_empty() {
        return;
    }
    field(out, first, "attributes");
    key_values(out, attrs);
}

fn key_values(out: &mut Vec<u8>, attrs: &[KeyValue]) {
    out.push(b'[');
    for (i, kv) in attrs.iter().enumerate() {
        comma(out, i);
        out.extend_from_slice(b"{\"key\":");
        string(out, &kv.key);
        if let Some(value) = &kv.value {
            out.extend_from_slice(b",\"value\":");
            any_value(out, value);
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn any_value(out: &mut Vec<u8>, value: &AnyValue) {
    use any_value::Value as V;
    out.push(b'{');
    match &value.value {
        Some(V::StringValue(s)) => {
            out.extend_from_slice(b"\"stringValue\":");
            string(out, s);
        }
        Some(V::BoolValue(b)) => {
            let _ = write!(out, "\"boolValue\":{b}");
        }
        Some(V::IntValue(i)) => {
            let _ = write!(out, "\"intValue\":\"{i}\"");
        }
        Some(V::DoubleValue(d)) => {
            out.extend_from_slice(b"\"doubleValue\":");
            double(out, *d);
        }
        Some(V::ArrayValue(a)) => {
            out.extend_from_slice(b"\"arrayValue\":{\"values\":[");
            for (i, v) in a.values.iter().enumerate() {
                comma(out, i);
                any_value(out, v);
            }
            out.extend_from_slice(b"]}");
        }
        Some(V::KvlistValue(l)) => {
            out.extend_from_slice(b"\"kvlistValue\":{\"values\":");
            key_values(out, &l.values);
            out.push(b'}');
        }
        Some(V::BytesValue(b)) => {
            out.extend_from_slice(b"\"bytesValue\":\"");
            base64(out, b);
            out.push(b'"');
        }
        // Profiles-only string table reference; not a metrics value.
        Some(V::StringValueStrindex(_)) | None => {}
    }
    out.push(b'}');
}

/// A JSON number, or the strings the protobuf JSON mapping uses for non-finite values.
fn double(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // Rust prints the shortest string that reads back as the same f64, never with an
        // exponent: valid JSON.
        let _ = write!(out, "{v}");
    }
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

fn field(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A string field, left out when empty (proto3 default).
fn string_field(out: &mut Vec<u8>, first: &mut bool, name: &str, value: &str) {
    if !value.is_empty() {
        field(out, first, name);
        string(out, value);
    }
}

/// A JSON string literal.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * k)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            s(|o| string(o, "a\"b\\c\nd\u{1}é")),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    #[test]
    fn doubles_are_json_numbers_or_named_strings() {
        assert_eq!(s(|o| double(o, 0.1)), "0.1");
        assert_eq!(s(|o| double(o, 2.0)), "2");
        assert_eq!(s(|o| double(o, 1e300)).parse::<f64>().unwrap(), 1e300);
        assert_eq!(s(|o| double(o, f64::NAN)), "\"NaN\"");
        assert_eq!(s(|o| double(o, f64::NEG_INFINITY)), "\"-Infinity\"");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(s(|o| base64(o, b"")), "");
        assert_eq!(s(|o| base64(o, b"f")), "Zg==");
        assert_eq!(s(|o| base64(o, b"fo")), "Zm8=");
        assert_eq!(s(|o| base64(o, b"foo")), "Zm9v");
        assert_eq!(s(|o| base64(o, b"foob")), "Zm9vYg==");
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(
            s(|o| csv_field(o, "docker.io/library/nginx")),
            "docker.io/library/nginx"
        );
        assert_eq!(s(|o| csv_field(o, "a,\"b\"")), "\"a,\"\"b\"\"\"");
    }
}
