//! What the OTLP decoders (JSON lines, YAML, protobuf) share, and the CSV decoder with them:
//! the attributes they pick out of an attribute list ([`ATTRS`]: the four the rule keys on,
//! then the evidence of [`unseen_model::Context`]), resolving point-over-resource precedence,
//! the checks on a `k8s.container.ready` point, and the field paths of issues.
//!
//! The JSON and protobuf decoders differ only in how they get at the bytes; keeping the rules
//! here is what makes them agree (the differential tests check that they do).
//!
//! # Values the point cannot use
//!
//! Precedence comes first: a point's own string value of an attribute hides its resource's,
//! whatever it is. Then the resolved value is checked:
//! - a key attribute (host, cluster, node, image) that is not UTF-8 (protobuf; CSV) or is
//!   over `limits.max_dimension_bytes` rejects the point, with an issue that names it;
//! - an evidence attribute ([`unseen_model::CONTEXT_ATTRS`]) that is not UTF-8 or over the
//!   limit is absent (`None`), and the point is kept: evidence never costs a sighting.

use std::borrow::Cow;

use unseen_model::{attr, ctx, Context, Dims, PointRef, CONTEXT_ATTRS, CONTEXT_LEN};

use crate::sink::Sink;
use crate::{IssueKind, Position, Visitor};

/// How many of [`ATTRS`] are the rule's key attributes: the first ones.
pub(crate) const KEY_SLOTS: usize = 4;

/// How many attributes the decoders read.
pub(crate) const SLOTS: usize = KEY_SLOTS + CONTEXT_LEN;

/// The attributes the decoders read, in slot order: the four the rule keys on (the fields
/// of [`Dims`], in their order), then the evidence, slot `KEY_SLOTS + i` being
/// `CONTEXT_ATTRS[i]` (built from the model's list, so the two cannot drift apart).
pub(crate) const ATTRS: [&str; SLOTS] = {
    let mut attrs = [""; SLOTS];
    attrs[0] = attr::HOST_NAME;
    attrs[1] = attr::CLUSTER_NAME;
    attrs[2] = attr::NODE_NAME;
    attrs[3] = attr::IMAGE_NAME;
    let mut i = 0;
    while i < CONTEXT_LEN {
        attrs[KEY_SLOTS + i] = CONTEXT_ATTRS[i];
        i += 1;
    }
    attrs
};

/// The slot of an evidence attribute.
const fn context(slot: usize) -> usize {
    KEY_SLOTS + slot
}

/// The slot of an attribute the decoders read ([`ATTRS`]), `None` for every other key (the
/// common case, so it must be cheap: called for every attribute of every resource and
/// point). A dispatch on the length, then fixed-size compares (a few word compares each)
/// with the names of that length, one after the other: no hashing, no loop. The tests hold
/// it to [`ATTRS`].
#[inline(always)]
pub(crate) fn key_index(key: &[u8]) -> Option<usize> {
    #[inline(always)]
    fn is<const N: usize>(key: &[u8], want: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(key).is_ok_and(|key| key == want)
    }
    Some(match key.len() {
        9 if is(key, b"host.name") => 0,
        11 if is(key, b"k8s.pod.uid") => context(ctx::POD_UID),
        12 if is(key, b"k8s.pod.name") => context(ctx::POD_NAME),
        12 if is(key, b"container.id") => context(ctx::CONTAINER_ID),
        12 if is(key, b"k8s.job.name") => context(ctx::JOB),
        13 if is(key, b"k8s.node.name") => 2,
        16 if is(key, b"k8s.cluster.name") => 1,
        16 if is(key, b"k8s.cronjob.name") => context(ctx::CRONJOB),
        18 if is(key, b"k8s.namespace.name") => context(ctx::NAMESPACE),
        18 if is(key, b"k8s.container.name") => context(ctx::CONTAINER_NAME),
        18 if is(key, b"k8s.daemonset.name") => context(ctx::DAEMONSET),
        19 if is(key, b"container.image.tag") => context(ctx::IMAGE_TAG),
        19 if is(key, b"k8s.deployment.name") => context(ctx::DEPLOYMENT),
        19 if is(key, b"k8s.replicaset.name") => context(ctx::REPLICASET),
        20 if is(key, b"container.image.name") => 3,
        20 if is(key, b"k8s.statefulset.name") => context(ctx::STATEFULSET),
        _ => return None,
    })
}

/// Writes a point's value of slot `slot` ([`ATTRS`] order) into its dimensions.
#[inline(always)]
pub(crate) fn set<'a>(dims: &mut Dims<'a>, slot: usize, value: Option<&'a str>) {
    let dim = match slot {
        0 => &mut dims.host_name,
        1 => &mut dims.cluster_name,
        2 => &mut dims.node_name,
        3 => &mut dims.image_name,
        _ => match dims.context.0.get_mut(slot - KEY_SLOTS) {
            Some(dim) => dim,
            None => return,
        },
    };
    *dim = value;
}

/// A dimension's value as a point resolves it (its own attribute over its resource's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    /// A protobuf `string_value` that is not UTF-8: reported on the point that uses it
    /// (a key attribute), or absent (evidence).
    BadUtf8,
}

/// A point's key values (the first [`KEY_SLOTS`] of [`ATTRS`]), once resolved.
pub(crate) type Keys<'a> = [Option<Value<'a>>; KEY_SLOTS];

/// A resolved evidence value as the point keeps it: absent when over the limit (or, before
/// this, not UTF-8).
#[inline(always)]
pub(crate) fn evidence(value: Option<&str>, limit: usize) -> Option<&str> {
    value.filter(|value| value.len() <= limit)
}

/// The relevant attributes of a resource's attribute list: the first string value of each
/// slot ([`ATTRS`] order).
///
/// A list with the same key twice is invalid OTLP; the first string value wins, as
/// pdata's `Map.Get` (what Collector components see) returns the first match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AttrSlots<'a>(pub(crate) [Option<Cow<'a, str>>; SLOTS]);

/// The relevant attributes of a data point's attribute list, as (slot, first string value)
/// in the order found: usually none (the `k8s_cluster` receiver puts every attribute on the
/// resource), and then nothing is allocated, nor copied per point; otherwise one allocation.
/// (Sixteen slots per point, as for a resource, would cost no allocation but four times the
/// memory of a line of many points.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PointAttrs<'a>(pub(crate) Vec<(usize, Cow<'a, str>)>);

/// An attribute list being read: offered each string value of a relevant key.
pub(crate) trait Offer<'a>: Default {
    /// Offers a string value for slot `index`; keeps the first.
    fn offer(&mut self, index: usize, value: Cow<'a, str>);
}

impl<'a> Offer<'a> for AttrSlots<'a> {
    #[inline]
    fn offer(&mut self, index: usize, value: Cow<'a, str>) {
        if let Some(slot @ None) = self.0.get_mut(index) {
            *slot = Some(value);
        }
    }
}

impl<'a> Offer<'a> for PointAttrs<'a> {
    #[inline]
    fn offer(&mut self, index: usize, value: Cow<'a, str>) {
        if index < SLOTS && self.0.iter().all(|&(slot, _)| slot != index) {
            if self.0.is_empty() {
                // One allocation for a point with attributes, however many it has.
                self.0.reserve_exact(SLOTS);
            }
            self.0.push((index, value));
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

/// The point's own attributes over the resource's: the keys, and its dimensions with the
/// evidence it keeps.
#[inline]
fn resolve<'a>(
    point: &'a PointAttrs<'_>,
    resource: &'a AttrSlots<'_>,
    limit: usize,
) -> (Keys<'a>, Dims<'a>) {
    let mut values: [Option<&'a str>; SLOTS] =
        std::array::from_fn(|index| resource.0[index].as_deref());
    for (index, value) in &point.0 {
        if let Some(slot) = values.get_mut(*index) {
            *slot = Some(value);
        }
    }
    let keys = std::array::from_fn(|index| values[index].map(Value::Str));
    let dims = Dims {
        context: Context(std::array::from_fn(|index| {
            evidence(values[KEY_SLOTS + index], limit)
        })),
        ..Dims::default()
    };
    (keys, dims)
}

/// Checks a point's key values and sets them in its dimensions: a key attribute that is
/// unusable is the point's issue.
#[inline(always)]
fn set_keys<'a>(dims: &mut Dims<'a>, keys: Keys<'a>, limit: usize) -> Result<(), String> {
    for (index, value) in keys.into_iter().enumerate() {
        let value = match value {
            None => continue,
            Some(Value::BadUtf8) => return Err(bad_utf8("attribute", ATTRS[index])),
            Some(Value::Str(value)) => value,
        };
        check_dimension("attribute", ATTRS[index], value, limit)?;
        set(dims, index, Some(value));
    }
    Ok(())
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
    point: &PointAttrs<'_>,
    resource: &AttrSlots<'_>,
    path: impl FnOnce() -> String,
) {
    let (keys, dims) = resolve(point, resource, sink.limits.max_dimension_bytes);
    ready_values(sink, position, time_unix_nano, keys, dims, path);
}

/// [`ready_point`] once the point's attributes are resolved over its resource's (its keys,
/// and its dimensions with the evidence it keeps, see [`evidence`]): for a decoder that
/// resolves them itself (the protobuf one, from raw bytes).
#[inline(always)]
pub(crate) fn ready_values<'a, V: Visitor>(
    sink: &mut Sink<'_, V>,
    position: Position,
    time_unix_nano: u64,
    keys: Keys<'a>,
    mut dims: Dims<'a>,
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
    match set_keys(&mut dims, keys, sink.limits.max_dimension_bytes) {
        Ok(()) => sink.point(PointRef {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain search of the table: what `key_index` must say.
    fn plain(key: &[u8]) -> Option<usize> {
        ATTRS.iter().position(|name| name.as_bytes() == key)
    }

    #[test]
    fn key_index_is_the_table() {
        for (slot, name) in ATTRS.iter().enumerate() {
            assert_eq!(key_index(name.as_bytes()), Some(slot), "{name}");
        }
        // The key slots are the fields of `Dims`, the rest `CONTEXT_ATTRS` (also checked at
        // compile time) and `Context::slot`.
        assert_eq!(
            ATTRS[..KEY_SLOTS],
            [
                attr::HOST_NAME,
                attr::CLUSTER_NAME,
                attr::NODE_NAME,
                attr::IMAGE_NAME
            ]
        );
        for (slot, name) in ATTRS.iter().enumerate().skip(KEY_SLOTS) {
            assert_eq!(Context::slot(name), Some(slot - KEY_SLOTS), "{name}");
        }
    }

    #[test]
    fn key_index_misses_near_misses() {
        let mut near: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"k8s.pod.uuid".to_vec(),
            b"k8s.node.uid".to_vec(),
            b"k8s.namespace.uid".to_vec(),
            b"container.image.names".to_vec(),
            b"K8S.POD.NAME".to_vec(),
        ];
        for name in ATTRS {
            let name = name.as_bytes();
            near.push(name[1..].to_vec());
            near.push(name[..name.len() - 1].to_vec());
            near.push([name, b"x"].concat());
            near.push([b"x", name].concat());
            for i in 0..name.len() {
                for flip in [0x01, 0x20, 0x80] {
                    let mut changed = name.to_vec();
                    changed[i] ^= flip;
                    near.push(changed);
                }
            }
        }
        for key in &near {
            assert_eq!(
                key_index(key),
                plain(key),
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn set_writes_each_slot_once() {
        for (slot, name) in ATTRS.iter().enumerate() {
            let mut dims = Dims::default();
            set(&mut dims, slot, Some("v"));
            let mut expected = Dims::default();
            expected.set(name, "v");
            assert_eq!(dims, expected, "{name}");
        }
        let mut dims = Dims::default();
        set(&mut dims, SLOTS, Some("v"));
        assert_eq!(dims, Dims::default(), "no slot past the table");
    }

    #[test]
    fn resolution_keeps_usable_evidence_only() {
        let mut resource = AttrSlots::default();
        resource.offer(0, Cow::Borrowed("host"));
        resource.offer(context(ctx::NAMESPACE), Cow::Borrowed("ns"));
        resource.offer(context(ctx::NAMESPACE), Cow::Borrowed("second"));
        resource.offer(context(ctx::POD_NAME), Cow::Borrowed("resource-pod"));
        resource.offer(context(ctx::IMAGE_TAG), Cow::Borrowed("too-long-tag"));
        let mut point = PointAttrs::default();
        point.offer(context(ctx::POD_NAME), Cow::Borrowed("point-pod"));
        point.offer(context(ctx::POD_NAME), Cow::Borrowed("second"));
        point.offer(context(ctx::JOB), Cow::Owned("job".to_string()));
        let (keys, mut dims) = resolve(&point, &resource, 10);
        assert_eq!(set_keys(&mut dims, keys, 10), Ok(()));
        assert_eq!(dims.host_name, Some("host"));
        assert_eq!(dims.context.get(ctx::NAMESPACE), Some("ns"));
        assert_eq!(dims.context.get(ctx::POD_NAME), Some("point-pod"));
        assert_eq!(dims.context.get(ctx::JOB), Some("job"));
        assert_eq!(dims.context.get(ctx::IMAGE_TAG), None, "over the limit");
        assert_eq!(dims.context.get(ctx::POD_UID), None);
        // A key over the limit is the point's issue.
        let (keys, mut dims) = resolve(&point, &resource, 3);
        assert_eq!(
            set_keys(&mut dims, keys, 3),
            Err("attribute `host.name` is 4 bytes, over the limit of 3 bytes (limits.max_dimension_bytes)".to_string())
        );
    }
}
