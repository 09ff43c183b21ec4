//! The invariants of the decoder targets: decode the input with `read_source` (or
//! `read_request`) with small limits, and check what must hold for any bytes at all.
//!
//! Shared, as source, like `differential.rs`: this crate uses it for the fuzz targets, and a
//! corpus replay test can include it with `#[path]` to check the decoder targets' corpora
//! (`fuzz/corpus/<target>/`) exactly as the fuzzer did. It depends on nothing but
//! `unseen-ingest` and `unseen-model`.

use unseen_ingest::{read_request, read_source, BodyEncoding, Format, Issue, Limits, Visitor};
use unseen_model::PointRef;

#[derive(Default)]
struct Count {
    points: u64,
    issues: u64,
}

impl Visitor for Count {
    fn point(&mut self, point: PointRef<'_>) {
        // Decoders never hand on a point without a time, nor a dimension or an evidence
        // attribute over the limit.
        assert_ne!(point.time_unix_nano, 0);
        let d = point.dims;
        for value in [d.host_name, d.cluster_name, d.node_name, d.image_name]
            .into_iter()
            .chain(d.context.0)
            .flatten()
        {
            assert!(value.len() <= LIMITS.max_dimension_bytes);
        }
        self.points += 1;
    }

    fn issue(&mut self, issue: Issue) {
        assert!(!issue.message.is_empty());
        self.issues += 1;
    }
}

/// Small limits, so that the fuzzer reaches the over-the-limit paths with small inputs.
const LIMITS: Limits = Limits {
    max_record_bytes: 4096,
    max_dimension_bytes: 64,
};

/// Decodes `data` as `format`; any outcome but a panic (or a broken invariant) is fine.
pub fn run(data: &[u8], format: Format) {
    let mut count = Count::default();
    if let Ok((_, stats)) = read_source("fuzz", data, format, LIMITS, &mut count) {
        // The counts agree with what the visitor saw.
        assert_eq!(stats.ready_points, count.points);
        assert_eq!(
            stats.malformed_records + stats.malformed_points,
            count.issues
        );
    }
}

/// Decodes `data` as one OTLP request body (what `unseen serve` hands the decoders), in
/// `encoding`, with the same invariants; a body is one record, and a malformed one has
/// no points.
pub fn run_request(data: &[u8], encoding: BodyEncoding) {
    let mut count = Count::default();
    let stats = read_request("fuzz", data.to_vec().into(), encoding, LIMITS, &mut count);
    assert_eq!(stats.records, 1);
    assert_eq!(stats.ready_points, count.points);
    assert_eq!(
        stats.malformed_records + stats.malformed_points,
        count.issues
    );
    if stats.malformed_records > 0 {
        assert_eq!(count.points, 0);
        assert_eq!(stats.other_points, 0);
    }
}
