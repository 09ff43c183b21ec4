//! What the generator writes, unseen reads back: the same `k8s.container.ready` points, in
//! the same order, from every format.

use unseen_generate::{CsvMetrics, Encoder, Format, Generator, Params, SECS_PER_DAY};
use unseen_ingest::{read_source, Issue, Limits, SourceStats, Visitor};
use unseen_model::PointRef;

/// (time in whole seconds, host.name, cluster, node, image)
type Point = (u64, Option<String>, String, String, String);

#[derive(Default)]
struct Collect {
    points: Vec<Point>,
    issues: Vec<Issue>,
}

impl Visitor for Collect {
    fn point(&mut self, p: PointRef<'_>) {
        let d = p.dims;
        self.points.push((
            p.time_unix_nano / 1_000_000_000,
            d.host_name.map(String::from),
            d.cluster_name.unwrap_or_default().to_string(),
            d.node_name.unwrap_or_default().to_string(),
            d.image_name.unwrap_or_default().to_string(),
        ));
    }

    fn issue(&mut self, issue: Issue) {
        self.issues.push(issue);
    }
}

fn params() -> Params {
    Params {
        clusters: 3,
        nodes_per_cluster: 5,
        pods_per_node: 8,
        images: 60,
        duration_secs: 3 * SECS_PER_DAY,
        interval_secs: 1800,
        seed: 9,
        // Small batches, so that collections span several.
        max_batch_points: 500,
        ..Params::default()
    }
}

/// The generator's own account: (points, collector host per point, file bytes).
fn generate(format: Format, metrics: CsvMetrics) -> (Vec<Point>, Vec<u8>, u64) {
    let mut g = Generator::new(params()).unwrap();
    let mut enc = Encoder::new(format, metrics);
    let mut bytes = Vec::new();
    let mut points = Vec::new();
    while let Some(batch) = g.next_batch() {
        let secs = batch.time_unix_nano() / 1_000_000_000;
        let cluster = batch.cluster_name();
        let host = batch.collector_host();
        batch.for_each_ready(|p| {
            points.push((
                secs,
                (format == Format::Csv).then(|| host.to_string()),
                cluster.to_string(),
                p.node_name.to_string(),
                p.image_name.unwrap().to_string(),
            ))
        });
        bytes.extend_from_slice(enc.encode(&batch));
    }
    (points, bytes, g.stats().points)
}

fn read(bytes: &[u8], format: unseen_ingest::Format) -> (Collect, SourceStats) {
    let mut visitor = Collect::default();
    let (detected, stats) = read_source(
        "generated",
        bytes,
        unseen_ingest::Format::Auto,
        Limits::default(),
        &mut visitor,
    )
    .unwrap();
    assert_eq!(detected, format, "format detection");
    (visitor, stats)
}

#[test]
fn every_format_reads_back_as_the_same_points() {
    let (truth, proto, all_points) = generate(Format::OtlpProto, CsvMetrics::Ready);
    assert!(truth.len() > 10_000, "{}", truth.len());
    let (json_truth, json, _) = generate(Format::OtlpJson, CsvMetrics::Ready);
    let (csv_truth, csv, _) = generate(Format::Csv, CsvMetrics::Ready);
    assert_eq!(json_truth, truth);

    let (from_proto, stats) = read(&proto, unseen_ingest::Format::OtlpProto);
    assert!(from_proto.issues.is_empty(), "{:?}", from_proto.issues);
    assert_eq!(from_proto.points, truth);
    assert_eq!(stats.ready_points + stats.other_points, all_points);

    let (from_json, stats) = read(&json, unseen_ingest::Format::OtlpJson);
    assert!(from_json.issues.is_empty(), "{:?}", from_json.issues);
    assert_eq!(from_json.points, truth);
    assert_eq!(stats.ready_points + stats.other_points, all_points);

    let (from_csv, stats) = read(&csv, unseen_ingest::Format::Csv);
    assert!(from_csv.issues.is_empty(), "{:?}", from_csv.issues);
    assert_eq!(from_csv.points, csv_truth);
    assert_eq!(stats.other_points, 0);
    // The CSV carries the collector's host.name; the rule's key parts are the same.
    let strip = |points: &[Point]| -> Vec<Point> {
        points
            .iter()
            .map(|(t, _, c, n, i)| (*t, None, c.clone(), n.clone(), i.clone()))
            .collect()
    };
    assert_eq!(strip(&from_csv.points), truth);
    assert!(from_csv
        .points
        .iter()
        .all(|p| p.1.as_deref().is_some_and(|h| !h.is_empty())));
}

#[test]
fn a_csv_of_every_metric_still_yields_only_the_ready_points() {
    let (truth, csv, all_points) = generate(Format::Csv, CsvMetrics::All);
    let (from_csv, stats) = read(&csv, unseen_ingest::Format::Csv);
    assert!(from_csv.issues.is_empty(), "{:?}", from_csv.issues);
    assert_eq!(from_csv.points, truth);
    assert_eq!(stats.ready_points + stats.other_points, all_points);
    assert!(stats.other_points > stats.ready_points);
}

#[test]
fn json_lines_follow_the_otlp_json_rules() {
    let (_, json, _) = generate(Format::OtlpJson, CsvMetrics::Ready);
    let text = String::from_utf8(json).unwrap();
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rm = &v["resourceMetrics"];
        assert!(rm.as_array().is_some_and(|a| !a.is_empty()));
        for r in rm.as_array().unwrap() {
            for m in r["scopeMetrics"][0]["metrics"].as_array().unwrap() {
                let p = &m["gauge"]["dataPoints"][0];
                // 64-bit integers are strings.
                assert!(p["timeUnixNano"].is_string(), "{p}");
                assert!(p["asInt"].is_string() || p["asDouble"].is_number(), "{p}");
                // Empty strings (proto3 defaults) are left out.
                assert!(m.get("unit").is_none_or(|u| u != ""), "{m}");
            }
        }
    }
    assert!(lines > 100);
}
