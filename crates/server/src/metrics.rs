//! Metric names and the only places they are recorded. Labels are closed sets
//! (receiver, reason, outcome): never an image, host or cluster name, so a hostile or
//! churning fleet cannot blow up the metrics' cardinality.

use std::time::Duration;

pub const POINTS_RECEIVED: &str = "unseen_points_received_total";
pub const POINTS_ACCEPTED: &str = "unseen_points_accepted_total";
pub const POINTS_REJECTED: &str = "unseen_points_rejected_total";
pub const OTHER_POINTS: &str = "unseen_other_points_total";
pub const REQUESTS: &str = "unseen_requests_total";
pub const KEYS_TRACKED: &str = "unseen_keys_tracked";
pub const KEYS_FORGOTTEN: &str = "unseen_keys_forgotten_total";
pub const FINDINGS: &str = "unseen_findings_total";
pub const INCIDENT_RECORDS: &str = "unseen_incident_records_total";
pub const COMMIT_SECONDS: &str = "unseen_commit_duration_seconds";
pub const COMMIT_FAILURES: &str = "unseen_commit_failures_total";
pub const QUEUE_DEPTH: &str = "unseen_commit_queue_depth";
pub const LEARNING: &str = "unseen_learning";
pub const SUPPRESSED: &str = "unseen_findings_suppressed_total";
pub const SUPPRESSION_RULES: &str = "unseen_suppression_rules";
pub const SUPPRESSION_RELOADS: &str = "unseen_suppression_reloads_total";
pub const INFLIGHT_BYTES: &str = "unseen_request_bytes_in_flight";
pub const CONNECTIONS: &str = "unseen_connections";
pub const CONNECTIONS_REFUSED: &str = "unseen_connections_refused_total";
pub const TIMEOUTS: &str = "unseen_request_timeouts_total";
pub const CAPACITY: &str = "unseen_capacity_reached";
pub const STORE_ROUND_TRIPS: &str = "unseen_store_round_trips_total";
pub const STORE_ROWS_WRITTEN: &str = "unseen_store_rows_written_total";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        STORE_ROUND_TRIPS,
        "Requests the commits sent to the state's database server and waited for (0 with the embedded store)."
    );
    describe_counter!(
        STORE_ROWS_WRITTEN,
        "Rows the commits wrote or deleted in the state: key states, records, triage state."
    );
    describe_counter!(
        POINTS_RECEIVED,
        "k8s.container.ready points received, by receiver."
    );
    describe_counter!(
        POINTS_ACCEPTED,
        "k8s.container.ready points committed to the state, by receiver."
    );
    describe_counter!(
        POINTS_REJECTED,
        "k8s.container.ready points rejected (OTLP partial success), by receiver and reason."
    );
    describe_counter!(
        OTHER_POINTS,
        "Points of other metrics, skipped, by receiver."
    );
    describe_counter!(REQUESTS, "Export requests, by receiver and outcome.");
    describe_gauge!(KEYS_TRACKED, "Keys in the state.");
    describe_counter!(
        KEYS_FORGOTTEN,
        "Keys forgotten because their last sighting is past the horizon (B - R)."
    );
    describe_counter!(FINDINGS, "Findings produced (before delivery to sinks).");
    describe_counter!(
        INCIDENT_RECORDS,
        "Incident records (an incident opened, or closed) produced for the alerting sinks."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Duration of one durable group commit."
    );
    describe_counter!(
        COMMIT_FAILURES,
        "Group commits that failed (their requests were answered 'unavailable')."
    );
    describe_gauge!(QUEUE_DEPTH, "Requests waiting for a commit.");
    describe_gauge!(
        LEARNING,
        "1 while learning (sightings recorded, no findings), 0 after."
    );
    describe_counter!(
        SUPPRESSED,
        "Findings a suppression rule matched (recorded, never alerted on)."
    );
    describe_gauge!(SUPPRESSION_RULES, "Suppression rules in force.");
    describe_gauge!(
        INFLIGHT_BYTES,
        Unit::Bytes,
        "Request bytes (received and inflated) held by requests not yet answered (limits.max_inflight_bytes)."
    );
    describe_gauge!(CONNECTIONS, "Open connections, by listener.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at once because their listener was at limits.max_connections, by listener."
    );
    describe_counter!(
        TIMEOUTS,
        "Requests or connections closed by a timeout, by kind (header, body, idle)."
    );
    describe_gauge!(
        CAPACITY,
        "1 while new keys are refused because the state holds limits.max_keys keys."
    );
    describe_counter!(
        SUPPRESSION_RELOADS,
        "Reloads of the suppression rules file, by result (ok, error: the old rules stay)."
    );
}

pub fn inflight_bytes(bytes: usize) {
    metrics::gauge!(INFLIGHT_BYTES).set(bytes as f64);
}

pub fn connections(listener: &'static str, open: usize) {
    metrics::gauge!(CONNECTIONS, "listener" => listener).set(open as f64);
}

pub fn connection_refused(listener: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "listener" => listener).increment(1);
}

pub fn timeout(kind: &'static str) {
    metrics::counter!(TIMEOUTS, "kind" => kind).increment(1);
}

pub fn capacity_reached(on: bool) {
    metrics::gauge!(CAPACITY).set(if on { 1.0 } else { 0.0 });
}

pub fn suppressed(n: u64) {
    metrics::counter!(SUPPRESSED).increment(n);
}

pub fn suppression_rules(n: usize) {
    metrics::gauge!(SUPPRESSION_RULES).set(n as f64);
}

pub fn suppression_reload(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(SUPPRESSION_RELOADS, "result" => result).increment(1);
}

pub fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub fn commit_seconds(elapsed: Duration) {
    metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

pub fn commit_failed() {
    metrics::counter!(COMMIT_FAILURES).increment(1);
}

/// What a commit cost the store: round trips to a database server (0 for the embedded
/// store) and rows written.
pub fn store_io(io: unseen_store::StoreIo) {
    metrics::counter!(STORE_ROUND_TRIPS).increment(io.round_trips);
    metrics::counter!(STORE_ROWS_WRITTEN).increment(io.rows_written);
}

pub fn keys_tracked(keys: u64) {
    metrics::gauge!(KEYS_TRACKED).set(keys as f64);
}

pub fn keys_forgotten(n: u64) {
    metrics::counter!(KEYS_FORGOTTEN).increment(n);
}

pub fn findings(n: u64) {
    metrics::counter!(FINDINGS).increment(n);
}

/// Incident records (opened or closed) appended to the outbox.
pub fn incidents(n: u64) {
    metrics::counter!(INCIDENT_RECORDS).increment(n);
}

pub fn learning(on: bool) {
    metrics::gauge!(LEARNING).set(if on { 1.0 } else { 0.0 });
}

/// One request's accounting.
pub fn request(
    receiver: &'static str,
    outcome: &'static str,
    received: u64,
    accepted: u64,
    other: u64,
    rejected: &[(&'static str, u64)],
) {
    metrics::counter!(REQUESTS, "receiver" => receiver, "outcome" => outcome).increment(1);
    if received > 0 {
        metrics::counter!(POINTS_RECEIVED, "receiver" => receiver).increment(received);
    }
    if accepted > 0 {
        metrics::counter!(POINTS_ACCEPTED, "receiver" => receiver).increment(accepted);
    }
    if other > 0 {
        metrics::counter!(OTHER_POINTS, "receiver" => receiver).increment(other);
    }
    for &(reason, n) in rejected {
        metrics::counter!(POINTS_REJECTED, "receiver" => receiver, "reason" => reason).increment(n);
    }
}
