//! A request body → the sightings the rule needs, and an account of every point it
//! could not use. Synchronous and IO-free: the receivers call it with the arrival time.

use bytes::Bytes;
use unseen_ingest::{BodyEncoding, Issue, IssueKind, Visitor};
use unseen_model::{
    format_duration, format_rfc3339, unix_secs_from_nanos, OwnedContext, PointRef, UnixSecs,
};
use unseen_normalize::{key_of, DropCounts, DropReason, KeyMode};
use unseen_store::Sighting;

use unseen_detect::episode::is_future;

/// How to decode: the key mode and the limits that apply to one request.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub mode: KeyMode,
    /// Largest dimension value kept, in bytes.
    pub max_dimension_bytes: usize,
    /// Largest decoded body, in bytes (the receivers check it first; this is the
    /// decoder's own guard).
    pub max_body_bytes: usize,
    /// Points further ahead of the server clock than this are rejected.
    pub max_clock_skew: u64,
}

/// What one request held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Usable points, in request order.
    pub sightings: Vec<Sighting>,
    /// `k8s.container.ready` points in the request, usable or not.
    pub ready_points: u64,
    /// Points of other metrics, skipped.
    pub other_points: u64,
    pub rejected: Rejections,
}

/// The points of one request that were not used, by reason, with one example each:
/// enough for the OTLP `partial_success` message and the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    /// Points the decoder refused (no timestamp, a dimension over the size limit).
    pub malformed: u64,
    pub first_malformed: Option<String>,
    /// Points without a complete key.
    pub missing: DropCounts,
    /// Points too far ahead of the server clock; the first one's time.
    pub future: u64,
    pub first_future: Option<UnixSecs>,
    /// New keys refused because the store tracks `max_keys` keys already.
    pub key_cap: u64,
    /// New keys refused because their sender created new keys too fast; the limit and
    /// who (`token \`name\`` or `cluster \`name\``).
    pub rate_limited: u64,
    pub rate_limited_sender: Option<String>,
    /// Points of a cluster their token may not report; the first one's (token, cluster).
    pub cluster_not_allowed: u64,
    pub first_not_allowed: Option<(String, String)>,
}

/// Metric label values for rejection reasons (never a name from the data).
pub const REASON_MALFORMED: &str = "malformed_point";
pub const REASON_FUTURE: &str = "future_timestamp";
pub const REASON_KEY_CAP: &str = "key_cap";
pub const REASON_RATE_LIMITED: &str = "new_key_rate";
pub const REASON_CLUSTER_NOT_ALLOWED: &str = "cluster_not_allowed";

impl Rejections {
    pub fn total(&self) -> u64 {
        self.malformed
            + self.missing.total()
            + self.future
            + self.key_cap
            + self.rate_limited
            + self.cluster_not_allowed
    }

    /// Counts by metric label.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        let mut out = vec![
            (REASON_MALFORMED, self.malformed),
            (REASON_FUTURE, self.future),
            (REASON_KEY_CAP, self.key_cap),
            (REASON_RATE_LIMITED, self.rate_limited),
            (REASON_CLUSTER_NOT_ALLOWED, self.cluster_not_allowed),
        ];
        out.extend(self.missing.iter().map(|(r, n)| (r.as_str(), n)));
        out.retain(|&(_, n)| n > 0);
        out
    }

    /// The `partial_success.error_message`: each reason with its count and what to do.
    /// Empty when nothing was rejected.
    pub fn message(&self, opts: &DecodeOptions, max_keys: u64) -> String {
        let mut parts = Vec::new();
        if self.malformed > 0 {
            parts.push(format!(
                "{} malformed (first: {})",
                self.malformed,
                self.first_malformed.as_deref().unwrap_or("unknown")
            ));
        }
        for (reason, n) in self.missing.iter() {
            parts.push(format!(
                "{n} without `{}`: {}",
                reason.attribute(),
                reason.fix(&opts.mode)
            ));
        }
        if self.future > 0 {
            parts.push(format!(
                "{} more than {} ahead of the server clock (first: {}); check the sender's clock",
                self.future,
                format_duration(opts.max_clock_skew),
                self.first_future.map(format_rfc3339).unwrap_or_default()
            ));
        }
        if self.key_cap > 0 {
            parts.push(format!(
                "{} of new keys refused: the server tracks {max_keys} keys, its limit (limits.max_keys); raise it or check for a runaway label",
                self.key_cap
            ));
        }
        if self.rate_limited > 0 {
            parts.push(format!(
                "{} of new keys refused: {} created new keys faster than limits.new_keys_per_second allows; retry later, or raise the limit if this is a real rollout",
                self.rate_limited,
                self.rate_limited_sender.as_deref().unwrap_or("the sender")
            ));
        }
        if self.cluster_not_allowed > 0 {
            let (token, cluster) = self.first_not_allowed.clone().unwrap_or_default();
            parts.push(format!(
                "{} of clusters the request's token may not report (first: cluster `{cluster}`, token `{token}`); give that collector its own token for the cluster, or add the cluster to the token's `clusters`",
                self.cluster_not_allowed
            ));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(
            "{} k8s.container.ready point(s) rejected: {}",
            self.total(),
            parts.join("; ")
        )
    }
}

/// Why one point gives no sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// No complete key.
    Missing(DropReason),
    /// Its time (given) is more than the allowed skew ahead of `now`.
    Future(UnixSecs),
}

/// The sighting a point gives, arriving at `now`: the one place that turns a decoded
/// point into what the store applies (the receivers and `baseline import` both use it).
pub fn sighting(
    point: &PointRef<'_>,
    mode: &KeyMode,
    now: UnixSecs,
    max_clock_skew: u64,
) -> Result<Sighting, Unusable> {
    let key = key_of(&point.dims, mode).map_err(Unusable::Missing)?;
    let time = unix_secs_from_nanos(point.time_unix_nano);
    if is_future(time, now, max_clock_skew) {
        return Err(Unusable::Future(time));
    }
    // Evidence for the finding the sighting may open; strict mode reports the seed's
    // fields only, so it keeps none (and allocates nothing for it).
    let (context, image_raw) = if mode.strict {
        (OwnedContext::default(), None)
    } else {
        let raw = point.dims.image_name.unwrap_or_default();
        (
            OwnedContext::new(&point.dims.context),
            (raw != key.image).then(|| raw.to_string()),
        )
    };
    Ok(Sighting {
        key: key.to_owned_key(),
        time,
        host_name: point.dims.host_name.map(str::to_string),
        context,
        image_raw,
    })
}

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Decodes one body that arrived at `now`.
pub fn decode(
    body: Bytes,
    encoding: BodyEncoding,
    opts: &DecodeOptions,
    now: UnixSecs,
) -> Result<Decoded, Malformed> {
    let source = match encoding {
        BodyEncoding::Protobuf => "request (protobuf)",
        BodyEncoding::Json => "request (JSON)",
    };
    let limits = unseen_ingest::Limits {
        max_record_bytes: opts.max_body_bytes,
        max_dimension_bytes: opts.max_dimension_bytes,
    };
    let mut visitor = RequestVisitor {
        opts,
        now,
        decoded: Decoded::default(),
        malformed_body: None,
    };
    let stats = unseen_ingest::read_request(source, body, encoding, limits, &mut visitor);
    if let Some(message) = visitor.malformed_body {
        return Err(Malformed(message));
    }
    let mut decoded = visitor.decoded;
    decoded.ready_points = stats.ready_points + stats.malformed_points;
    decoded.other_points = stats.other_points;
    Ok(decoded)
}

struct RequestVisitor<'o> {
    opts: &'o DecodeOptions,
    now: UnixSecs,
    decoded: Decoded,
    malformed_body: Option<String>,
}

impl Visitor for RequestVisitor<'_> {
    fn point(&mut self, point: PointRef<'_>) {
        let rejected = &mut self.decoded.rejected;
        match sighting(&point, &self.opts.mode, self.now, self.opts.max_clock_skew) {
            Ok(sighting) => self.decoded.sightings.push(sighting),
            Err(Unusable::Missing(reason)) => rejected.missing.add(reason),
            Err(Unusable::Future(time)) => {
                rejected.future += 1;
                rejected.first_future.get_or_insert(time);
            }
        }
    }

    fn issue(&mut self, issue: Issue) {
        match issue.kind {
            IssueKind::MalformedRecord => {
                self.malformed_body.get_or_insert(issue.message);
            }
            IssueKind::MalformedPoint => {
                let rejected = &mut self.decoded.rejected;
                rejected.malformed += 1;
                if rejected.first_malformed.is_none() {
                    let at = issue.location.field.as_deref().unwrap_or("a point");
                    rejected.first_malformed = Some(format!("{at}: {}", issue.message));
                }
            }
        }
    }
}
