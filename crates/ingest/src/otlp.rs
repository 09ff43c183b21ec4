//! What the OTLP decoders (JSON lines, YAML, protobuf) share: picking the four attributes the
//! rule uses out of an attribute list, resolving point-over-resource precedence, the checks
//! on a `k8s.container.ready` point, and the field paths of issues.
//!
//! The JSON and protobuf decoders differ only in how they get at the bytes; keeping the rules
//! here is what makes them agree (the differential tests check that they do).

use std::borrow::Cow;

use unseen_model::{attr, Dims, PointRef};

use crate::sink::Sink;
use crate::{IssueKind, Position, Visitor};

/// The attribute keys the rule uses, in [`AttrSlots`] order.
pub(crate) const KEYS: [&str; 4] = [
    attr::HOST_NAME,
    attr::CLUSTER_NAME,
    attr::NODE_NAME,
    attr::IMAGE_NAME,
];

/// The slot of a key the rule uses, `None` for every other key (the common case, so it
/// must be cheap: the four keys have distinct lengths, so most keys fail on the length,
/// and the others are compared as fixed-size arrays, a few word compares).
#[inline(always)]
pub(crate) fn key_index(key: &[u8]) -> Option<usize> {
    fn is<const N: usize>(key: &[u8], want: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(key).is_ok_and(|key| key == want)
    }
    let (index, found) = match key.len() {
        9 => (0, is(key, b"host.name")),
        16 => (1, is(key, b"k8s.cluster.name")),
        13 => (2, is(key, b"k8s.node.name")),
        20 => (3, is(key, b"container.image.name")),
        _ => return None,
    };
    found.then_some(index)
}

/// One relevant attribute as found in one attribute list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Slot<'a> {
    /// Not in the list, or only with non-string values (which neither provide nor hide a
    /// dimension, contract section 1).
    #[default]
    Unset,
    Str(Cow<'a, str>),
}

/// A dimension's value as a point resolves it (its own attribute over its resource's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    /// A protobuf `string_value` that is not UTF-8: reported on the point that uses it.
    BadUtf8,
}

/// The four relevant attributes of one attribute list (a resource's or a point's).
///
/// A list with the same key twice is invalid OTLP; the first string value wins, as
/// pdata's `Map.Get` (what Collector components see) returns the first match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AttrSlots<'a>(pub(crate) [Slot<'a>; 4]);

impl<'a> AttrSlots<'a> {
    /// Offers a string value (or an undecodable one) for slot `index`; keeps the first.
    #[inline]
    pub(crate) fn offer(&mut self, index: usize, value: Slot<'a>) {
        if let Some(slot @ Slot::Unset) = self.0.get_mut(index) {
            *slot = value;
        }
    }
}

/// What is wrong with a point's dimensions.
fn dimension_problem(what: &str, key: &str, problem: Problem, limit: usize) -> String {
    match problem {
        Problem::TooLong(len) => format!(
            "{what} `{key}` is {len} bytes, over the limit of {limit} bytes (limits.max_dimension_bytes)"
        ),
        Problem::BadUtf8 => format!("{what} `{key}` is not valid UTF-8"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Problem {
    TooLong(usize),
    BadUtf8,
}

/// Checks one dimension value against the size limit; `what` is "attribute" or "column".
pub(crate) fn check_dimension(
    what: &str,
    key: &str,
    value: &str,
    limit: usize,
) -> Result<(), String> {
    if value.len() > limit {
        Err(dimension_problem(
            what,
            key,
            Problem::TooLong(value.len()),
            limit,
        ))
    } else {
        Ok(())
    }
}

/// The message for a dimension column or attribute that is not UTF-8.
pub(crate) fn bad_utf8(what: &str, key: &str) -> String {
    dimension_problem(what, key, Problem::BadUtf8, 0)
}

/// The point's own attributes over the resource's.
fn resolve<'a>(point: &'a AttrSlots<'_>, resource: &'a AttrSlots<'_>) -> [Option<Value<'a>>; 4] {
    std::array::from_fn(|index| match (&point.0[index], &resource.0[index]) {
        (Slot::Unset, slot) | (slot, _) => match slot {
            Slot::Unset => None,
            Slot::Str(value) => Some(Value::Str(value)),
        },
    })
}

/// A point's values checked against the size limit, as its dimensions.
fn dims<'a>(values: [Option<Value<'a>>; 4], limit: usize) -> Result<Dims<'a>, String> {
    let mut dims = Dims::default();
    for (index, (key, value)) in KEYS.iter().zip(values).enumerate() {
        let value = match value {
            None => continue,
            Some(Value::BadUtf8) => return Err(bad_utf8("attribute", key)),
            Some(Value::Str(value)) => value,
        };
        check_dimension("attribute", key, value, limit)?;
        // `KEYS` order.
        let dim = match index {
            0 => &mut dims.host_name,
            1 => &mut dims.cluster_name,
            2 => &mut dims.node_name,
            _ => &mut dims.image_name,
        };
        *dim = Some(value);
    }
    Ok(dims)
}

/// The message for a point without a time.
pub(crate) const NO_TIME: &str =
    "k8s.container.ready point has no timeUnixNano (0); every point needs a time";

/// Where a metric is inside its request; builds the field path of an issue lazily.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetricPath {
    pub(crate) resource: usize,
    pub(crate) scope: usize,
    pub(crate) metric: usize,
}

impl MetricPath {
    pub(crate) fn point(self, kind: DataKind, index: usize) -> String {
        format!(
            "resourceMetrics[{}].scopeMetrics[{}].metrics[{}].{}.dataPoints[{}]",
            self.resource,
            self.scope,
            self.metric,
            kind.json_name(),
            index
        )
    }
}

/// The `data` oneof of an OTLP `Metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataKind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl DataKind {
    /// The OTLP/JSON field name, as used in issue paths for every format.
    pub(crate) fn json_name(self) -> &'static str {
        match self {
            DataKind::Gauge => "gauge",
            DataKind::Sum => "sum",
            DataKind::Histogram => "histogram",
            DataKind::ExponentialHistogram => "exponentialHistogram",
            DataKind::Summary => "summary",
        }
    }

    fn article_name(self) -> &'static str {
        match self {
            DataKind::Gauge => "a gauge",
            DataKind::Sum => "a sum",
            DataKind::Histogram => "a histogram",
            DataKind::ExponentialHistogram => "an exponential histogram",
            DataKind::Summary => "a summary",
        }
    }
}

/// Checks one gauge or sum point of `k8s.container.ready` and hands it on.
#[inline]
pub(crate) fn ready_point<V: Visitor>(
    sink: &mut Sink<'_, V>,
    position: Position,
    time_unix_nano: u64,
    point: &AttrSlots<'_>,
    resource: &AttrSlots<'_>,
    path: impl FnOnce() -> String,
) {
    ready_values(
        sink,
        position,
        time_unix_nano,
        resolve(point, resource),
        path,
    );
}

/// [`ready_point`] once the point's attributes are resolved over its resource's: for a
/// decoder that resolves them itself (the protobuf one, from raw bytes).
#[inline]
pub(crate) fn ready_values<V: Visitor>(
    sink: &mut Sink<'_, V>,
    position: Position,
    time_unix_nano: u64,
    values: [Option<Value<'_>>; 4],
    path: impl FnOnce() -> String,
) {
    if time_unix_nano == 0 {
        sink.issue(
            IssueKind::MalformedPoint,
            position,
            Some(path()),
            NO_TIME.to_string(),
        );
        return;
    }
    match dims(values, sink.limits.max_dimension_bytes) {
        Ok(dims) => sink.point(PointRef {
            time_unix_nano,
            dims,
        }),
        Err(message) => sink.issue(IssueKind::MalformedPoint, position, Some(path()), message),
    }
}

/// `k8s.container.ready` carried as something other than a gauge or sum: its points can
/// not be sightings of the rule's metric as the receiver emits it, and silently counting
/// them would hide a pipeline that changed the metric's type. One issue per point.
pub(crate) fn ready_of_wrong_kind<V: Visitor>(
    sink: &mut Sink<'_, V>,
    position: Position,
    kind: DataKind,
    points: u64,
    path: MetricPath,
) {
    for index in 0..points {
        sink.issue(
            IssueKind::MalformedPoint,
            position,
            Some(path.point(kind, usize::try_from(index).unwrap_or(usize::MAX))),
            format!(
                "k8s.container.ready is {} here; only gauge and sum points are read",
                kind.article_name()
            ),
        );
    }
}
