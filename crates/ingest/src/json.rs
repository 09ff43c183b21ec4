//! OTLP/JSON lines: one `ExportMetricsServiceRequest` per line, as the Collector's file
//! exporter writes them.
//!
//! The structs are our own, not `opentelemetry-proto`'s serde: that one drops enum names,
//! `NaN` and fractional doubles, and rejects a whole request over `null`, an empty
//! `arrayValue` or `entityRefs`. Ours read only what the rule
//! needs and are lenient everywhere else, as the OTLP/JSON spec asks of receivers:
//! - field names in lowerCamelCase, the proto snake_case names accepted as aliases;
//! - 64-bit integers as decimal strings or numbers;
//! - unknown fields ignored, `null` read as the default, enums never looked at.
//!
//! This is the hot path of `scan`, so strings are borrowed from the line where they have no
//! escapes, an attribute list keeps only the attributes the decoders read (`otlp::ATTRS`:
//! the four keys the rule uses and the evidence; a resource's in one slot each, a point's,
//! usually none, in a list that allocates only when there is one), and points of other
//! metrics are only counted when the metric's name comes before its data (the Collector
//! writes `name` first).
//!
//! An evidence attribute that is over `limits.max_dimension_bytes` is absent from the
//! point, which is kept; a key attribute over it rejects the point (see `otlp`).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead};
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor as DeVisitor};
use serde::Deserialize;
use unseen_model::attr;

use crate::otlp::{self, AttrSlots, DataKind, MetricPath, Offer, PointAttrs};
use crate::sink::{self, Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

/// Reads JSON lines until EOF. Only IO errors stop it.
pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    let max = sink.limits.max_record_bytes;
    let mut line = Vec::new();
    let mut number: u64 = 0;
    loop {
        let read = read_line_bounded(reader, &mut line, max)?;
        number += 1;
        match read {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong(size) => {
                sink.record();
                sink.issue(
                    IssueKind::MalformedRecord,
                    Position::Line(number),
                    None,
                    sink::too_long("line", size, max),
                );
            }
            LineRead::Line => {
                let mut text: &[u8] = &line;
                if number == 1 {
                    text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
                }
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                sink.record();
                decode_line(text, Position::Line(number), sink);
            }
        }
    }
}

/// Decodes one request and visits it; a bad line is one `MalformedRecord`.
pub(crate) fn decode_line<V: Visitor>(text: &[u8], position: Position, sink: &mut Sink<'_, V>) {
    match serde_json::from_slice::<Request<'_>>(text) {
        Ok(request) => visit(&request, position, sink),
        Err(error) => sink.issue(
            IssueKind::MalformedRecord,
            position,
            None,
            not_a_request(&error),
        ),
    }
}

/// The message for a record that is not a request (JSON syntax or shape).
pub(crate) fn not_a_request(error: &dyn fmt::Display) -> String {
    format!("not an OTLP/JSON ExportMetricsServiceRequest: {error}")
}

pub(crate) enum LineRead {
    Eof,
    /// `buf` holds the line without its `\n` (and without a `\r` before it).
    Line,
    /// The line (without its terminator) was this many bytes, over the limit; it was
    /// skipped without being kept.
    TooLong(u64),
}

/// Reads one line into `buf`, keeping at most `max + 1` bytes of it: memory stays bounded
/// by the limit however long the line is.
pub(crate) fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut total: u64 = 0;
    let mut any = false;
    let mut ends_with_cr = false;
    // The `\r` of a CRLF may be the last byte of one chunk; count it out at the end.
    let keep = max.saturating_add(1);
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            if !any {
                return Ok(LineRead::Eof);
            }
            break;
        }
        any = true;
        let (chunk, used, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        if !chunk.is_empty() {
            ends_with_cr = chunk.last() == Some(&b'\r');
        }
        total += chunk.len() as u64;
        if buf.len() < keep {
            let room = keep - buf.len();
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        reader.consume(used);
        if done {
            break;
        }
    }
    let size = total - u64::from(ends_with_cr);
    if size > max as u64 {
        buf.clear();
        return Ok(LineRead::TooLong(size));
    }
    if ends_with_cr {
        buf.pop();
    }
    Ok(LineRead::Line)
}

/// Walks a decoded request: points of `k8s.container.ready` are checked and handed on,
/// points of other metrics counted.
pub(crate) fn visit<V: Visitor>(request: &Request<'_>, position: Position, sink: &mut Sink<'_, V>) {
    let no_attributes = AttrSlots::default();
    for (ri, rm) in request.resource_metrics.iter().flatten().enumerate() {
        let resource = rm
            .resource
            .as_ref()
            .map_or(&no_attributes, |r| &r.attributes);
        for (si, sm) in rm.scope_metrics.iter().flatten().enumerate() {
            for (mi, metric) in sm.metrics.iter().flatten().enumerate() {
                let path = MetricPath {
                    resource: ri,
                    scope: si,
                    metric: mi,
                };
                visit_metric(metric, resource, position, path, sink);
            }
        }
    }
}

fn visit_metric<V: Visitor>(
    metric: &Metric<'_>,
    resource: &AttrSlots<'_>,
    position: Position,
    path: MetricPath,
    sink: &mut Sink<'_, V>,
) {
    let ready = metric.name == attr::READY_METRIC;
    for (kind, data) in [
        (DataKind::Gauge, &metric.gauge),
        (DataKind::Sum, &metric.sum),
    ] {
        match data {
            None => {}
            Some(NumberData::Counted(count)) => sink.other_points(*count),
            Some(NumberData::Points(points)) if !ready => sink.other_points(points.len() as u64),
            Some(NumberData::Points(points)) => {
                for (pi, point) in points.iter().enumerate() {
                    otlp::ready_point(
                        sink,
                        position,
                        point.time_unix_nano.0,
                        &point.attributes,
                        resource,
                        || path.point(kind, pi),
                    );
                }
            }
        }
    }
    for (kind, count) in [
        (DataKind::Histogram, metric.histogram),
        (DataKind::ExponentialHistogram, metric.exponential_histogram),
        (DataKind::Summary, metric.summary),
    ] {
        match count {
            None => {}
            Some(count) if ready => otlp::ready_of_wrong_kind(sink, position, kind, count, path),
            Some(count) => sink.other_points(count),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The request, as far as the rule needs it. `Option` on every container field is how `null`
// (and a missing field) reads as the default.

#[derive(Deserialize, Default)]
pub(crate) struct Request<'a> {
    #[serde(
        rename = "resourceMetrics",
        alias = "resource_metrics",
        borrow,
        default
    )]
    resource_metrics: Option<Vec<ResourceMetrics<'a>>>,
}

#[derive(Deserialize)]
struct ResourceMetrics<'a> {
    #[serde(borrow, default)]
    resource: Option<Resource<'a>>,
    #[serde(rename = "scopeMetrics", alias = "scope_metrics", borrow, default)]
    scope_metrics: Option<Vec<ScopeMetrics<'a>>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow, default)]
    attributes: Attributes<AttrSlots<'a>>,
}

#[derive(Deserialize)]
struct ScopeMetrics<'a> {
    #[serde(borrow, default)]
    metrics: Option<Vec<Metric<'a>>>,
}

/// A metric: its name, and per data kind either the points (gauge or sum of a metric that
/// may be `k8s.container.ready`) or just how many there are.
struct Metric<'a> {
    name: Str<'a>,
    gauge: Option<NumberData<'a>>,
    sum: Option<NumberData<'a>>,
    histogram: Option<u64>,
    exponential_histogram: Option<u64>,
    summary: Option<u64>,
}

enum NumberData<'a> {
    Points(Vec<NumberDataPoint<'a>>),
    /// The metric's name came first and is not the rule's: points only counted.
    Counted(u64),
}

#[derive(Deserialize)]
struct NumberDataPoint<'a> {
    #[serde(borrow, default)]
    attributes: Attributes<PointAttrs<'a>>,
    #[serde(rename = "timeUnixNano", alias = "time_unix_nano", default)]
    time_unix_nano: U64,
}

/// `{"dataPoints": [...]}` of a gauge or sum, decoded.
#[derive(Deserialize)]
struct Points<'a> {
    #[serde(rename = "dataPoints", alias = "data_points", borrow, default)]
    data_points: Option<Vec<NumberDataPoint<'a>>>,
}

/// `{"dataPoints": [...]}` of any kind, counted: the points are skipped, not decoded.
#[derive(Deserialize)]
struct PointCount {
    #[serde(rename = "dataPoints", alias = "data_points", default)]
    data_points: Option<Count>,
}

impl PointCount {
    fn get(this: Option<PointCount>) -> u64 {
        this.and_then(|c| c.data_points).map_or(0, |c| c.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Metric<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetricVisitor<'a>(PhantomData<Metric<'a>>);

        impl<'de: 'a, 'a> DeVisitor<'de> for MetricVisitor<'a> {
            type Value = Metric<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an OTLP Metric object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metric<'a>, A::Error> {
                let mut name: Option<Str<'a>> = None;
                let mut metric = Metric {
                    name: Str::default(),
                    gauge: None,
                    sum: None,
                    histogram: None,
                    exponential_histogram: None,
                    summary: None,
                };
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "name" => {
                            if name.is_some() {
                                return Err(de::Error::duplicate_field("name"));
                            }
                            name = Some(map.next_value()?);
                        }
                        "gauge" | "sum" => {
                            let known_other =
                                name.as_ref().is_some_and(|n| *n != attr::READY_METRIC);
                            let data = if known_other {
                                Some(NumberData::Counted(PointCount::get(map.next_value()?)))
                            } else {
                                map.next_value::<Option<Points<'a>>>()?
                                    .map(|p| NumberData::Points(p.data_points.unwrap_or_default()))
                            };
                            if &*key.0 == "gauge" {
                                metric.gauge = data;
                            } else {
                                metric.sum = data;
                            }
                        }
                        "histogram" => metric.histogram = Some(PointCount::get(map.next_value()?)),
                        "exponentialHistogram" | "exponential_histogram" => {
                            metric.exponential_histogram = Some(PointCount::get(map.next_value()?))
                        }
                        "summary" => metric.summary = Some(PointCount::get(map.next_value()?)),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                metric.name = name.unwrap_or_default();
                Ok(metric)
            }
        }

        deserializer.deserialize_map(MetricVisitor(PhantomData))
    }
}

/// The number of elements of an array (`null` is none), each skipped unread.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl<'de> DeVisitor<'de> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of data points")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut count = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Count(count))
            }
        }

        deserializer.deserialize_seq(CountVisitor)
    }
}

/// A string borrowed from the input where it has no escapes. `null` reads as `""`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a str>);

        impl<'de: 'a, 'a> DeVisitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Str<'a>, E> {
                Ok(Str::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Str<'a>, E> {
                Ok(Str::default())
            }
        }

        deserializer.deserialize_any(StrVisitor(PhantomData))
    }
}

/// `"123"`, `123` or `null` (0): how OTLP/JSON writes `fixed64` times.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct U64(u64);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct U64Visitor;

        impl<'de> DeVisitor<'de> for U64Visitor {
            type Value = U64;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unsigned 64-bit integer as a decimal string or a number")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<U64, E> {
                Ok(U64(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<U64, E> {
                u64::try_from(v)
                    .map(U64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<U64, E> {
                v.parse()
                    .map(U64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }

            fn visit_unit<E: de::Error>(self) -> Result<U64, E> {
                Ok(U64(0))
            }

            fn visit_none<E: de::Error>(self) -> Result<U64, E> {
                Ok(U64(0))
            }
        }

        deserializer.deserialize_any(U64Visitor)
    }
}

impl PartialEq<u64> for U64 {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

/// An attribute list, reduced while it is read to the attributes the decoders read: a
/// resource's ([`AttrSlots`]) or a point's ([`PointAttrs`]).
#[derive(Default)]
struct Attributes<T>(T);

impl<T> std::ops::Deref for Attributes<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de: 'a, 'a, T: Offer<'a>> Deserialize<'de> for Attributes<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor<'a, T>(PhantomData<(&'a (), T)>);

        impl<'de: 'a, 'a, T: Offer<'a>> DeVisitor<'de> for AttributesVisitor<'a, T> {
            type Value = Attributes<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of attributes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Attributes<T>, A::Error> {
                let mut slots = T::default();
                while let Some(kv) = seq.next_element::<KeyValue<'a>>()? {
                    if let (Some(index), Some(value)) = (kv.index, kv.value) {
                        slots.offer(index, value.0);
                    }
                }
                Ok(Attributes(slots))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Attributes<T>, E> {
                Ok(Attributes(T::default()))
            }

            fn visit_none<E: de::Error>(self) -> Result<Attributes<T>, E> {
                Ok(Attributes(T::default()))
            }
        }

        deserializer.deserialize_any(AttributesVisitor(PhantomData))
    }
}

/// One attribute: the slot of its key (if the decoders read it) and its string value (if
/// it is a string). Values of other keys are skipped unread.
struct KeyValue<'a> {
    index: Option<usize>,
    value: Option<Str<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for KeyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyValueVisitor<'a>(PhantomData<KeyValue<'a>>);

        impl<'de: 'a, 'a> DeVisitor<'de> for KeyValueVisitor<'a> {
            type Value = KeyValue<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute {\"key\": ..., \"value\": ...}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyValue<'a>, A::Error> {
                // `key` usually comes first; if `value` comes first it must be kept
                // until the key is known.
                let mut key: Option<Option<usize>> = None;
                let mut value: Option<Option<Str<'a>>> = None;
                while let Some(field) = map.next_key::<Str<'de>>()? {
                    match &*field.0 {
                        "key" => {
                            if key.is_some() {
                                return Err(de::Error::duplicate_field("key"));
                            }
                            let k: Str<'de> = map.next_value()?;
                            key = Some(otlp::key_index(k.0.as_bytes()));
                        }
                        "value" => {
                            if value.is_some() {
                                return Err(de::Error::duplicate_field("value"));
                            }
                            value = Some(if key == Some(None) {
                                map.next_value::<IgnoredAny>()?;
                                None
                            } else {
                                map.next_value::<Option<AnyValue<'a>>>()?.and_then(|v| v.0)
                            });
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(KeyValue {
                    index: key.flatten(),
                    value: value.flatten(),
                })
            }
        }

        deserializer.deserialize_map(KeyValueVisitor(PhantomData))
    }
}

/// An `AnyValue`, kept only if it is a `stringValue`.
struct AnyValue<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyValueVisitor<'a>(PhantomData<AnyValue<'a>>);

        impl<'de: 'a, 'a> DeVisitor<'de> for AnyValueVisitor<'a> {
            type Value = AnyValue<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AnyValue object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue<'a>, A::Error> {
                let mut string = None;
                while let Some(field) = map.next_key::<Str<'de>>()? {
                    match &*field.0 {
                        "stringValue" | "string_value" => {
                            // `null` is the oneof not set: no string.
                            string = map.next_value::<Option<Str<'a>>>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(AnyValue(string))
            }
        }

        deserializer.deserialize_map(AnyValueVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<String, u64>> {
        // A tiny buffer, so that lines and CRLFs straddle refills.
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line_bounded(&mut reader, &mut buf, max).unwrap() {
                LineRead::Eof => return out,
                LineRead::Line => out.push(Ok(String::from_utf8(buf.clone()).unwrap())),
                LineRead::TooLong(size) => out.push(Err(size)),
            }
        }
    }

    #[test]
    fn bounded_lines() {
        assert_eq!(lines(b"", 4), vec![]);
        assert_eq!(
            lines(b"ab\r\ncdef\n\nxyz", 4),
            vec![
                Ok("ab".into()),
                Ok("cdef".into()),
                Ok("".into()),
                Ok("xyz".into())
            ]
        );
        assert_eq!(
            lines(b"abcd\r\nabcde\nab", 4),
            vec![Ok("abcd".into()), Err(5), Ok("ab".into())]
        );
        assert_eq!(lines(b"abcdefghij\r", 4), vec![Err(10)]);
    }

    #[test]
    fn strings_are_borrowed_when_unescaped() {
        let line = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"k8s.node.name","value":{"stringValue":"plain"}},{"key":"container.image.name","value":{"stringValue":"esc\u0061ped"}}]}}]}"#;
        let request: Request<'_> = serde_json::from_slice(line).unwrap();
        let rm = &request.resource_metrics.as_ref().unwrap()[0];
        let slots = &rm.resource.as_ref().unwrap().attributes.0 .0;
        assert!(matches!(&slots[2], Some(Cow::Borrowed("plain"))));
        assert!(matches!(&slots[3], Some(Cow::Owned(s)) if s == "escaped"));
    }
}
