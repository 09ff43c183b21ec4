//! Random point sets through the real binary: the same points written as Splunk CSV
//! and as OTLP/JSON lines give identical findings, and those equal a deliberately
//! simple reference implementation of contract section 3 written here from the text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Command;

use proptest::prelude::*;
use serde_json::{json, Value};

const T: i64 = 1_700_000_000;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

#[derive(Debug, Clone)]
struct Point {
    ready: bool,
    time: i64,
    host: Option<String>,
    cluster: Option<String>,
    node: Option<String>,
    image: Option<String>,
    /// Put the dimensions on the resource (true) or on the data point.
    on_resource: bool,
}

fn offset() -> impl Strategy<Value = i64> {
    let edges = [0, HOUR, 24 * HOUR, 30 * DAY];
    prop_oneof![
        (0..edges.len(), -1i64..=1).prop_map(move |(i, d)| -edges[i] + d),
        -(31 * DAY)..=60i64,
    ]
}

fn opt(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(String::new())),
        8 => prop::sample::select(values).prop_map(|s| Some(s.to_string())),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (
        prop::bool::weighted(0.85),
        offset(),
        opt(&["vm-a", "vm-b"]),
        opt(&["prod", "dev"]),
        opt(&["node-1", "node-2"]),
        opt(&["nginx", "redis", "docker.io/library/busybox"]),
        any::<bool>(),
    )
        .prop_map(
            |(ready, o, host, cluster, node, image, on_resource)| Point {
                ready,
                time: T + o,
                host,
                cluster,
                node,
                image,
                on_resource,
            },
        )
}

fn attrs(p: &Point) -> Vec<Value> {
    let mut out = Vec::new();
    for (k, v) in [
        ("host.name", &p.host),
        ("k8s.cluster.name", &p.cluster),
        ("k8s.node.name", &p.node),
        ("container.image.name", &p.image),
    ] {
        if let Some(v) = v {
            out.push(json!({"key": k, "value": {"stringValue": v}}));
        }
    }
    // Noise the receiver always sends.
    out.push(json!({"key": "k8s.pod.name", "value": {"stringValue": "pod-x"}}));
    out
}

fn to_otlp_json(points: &[Point]) -> String {
    let mut out = String::new();
    for chunk in points.chunks(3) {
        let resource_metrics: Vec<Value> = chunk
            .iter()
            .map(|p| {
                let name = if p.ready { "k8s.container.ready" } else { "k8s.container.restarts" };
                let mut dp = json!({
                    "timeUnixNano": (p.time as u64 * 1_000_000_000 + 123).to_string(),
                    "asInt": "1",
                });
                let resource = if p.on_resource {
                    json!({"attributes": attrs(p)})
                } else {
                    dp["attributes"] = Value::Array(attrs(p));
                    // A decoy on the resource that the point's own value must override.
                    json!({"attributes": [{"key": "container.image.name", "value": {"stringValue": "decoy"}}]})
                };
                json!({
                    "resource": resource,
                    "scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": [dp]}}]}],
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "resourceMetrics": resource_metrics })).unwrap();
    }
    out
}

fn to_csv(points: &[Point]) -> String {
    let mut out = String::from(
        "_time,metric_name,host.name,k8s.cluster.name,k8s.node.name,container.image.name,k8s.pod.name,_value\n",
    );
    for p in points {
        // Without the resource decoy: in CSV the point's own value is the only one. When the
        // point carries no image but the resource had the decoy, OTLP yields the decoy.
        let image = match (&p.image, p.on_resource) {
            (None, false) => Some("decoy".to_string()),
            (v, _) => v.clone(),
        };
        let cell = |v: &Option<String>| v.clone().unwrap_or_default();
        writeln!(
            out,
            // The pod name the OTLP points carry as noise is evidence now: the CSV carries
            // it too, so that both formats give the same findings, context included.
            "{}.5,{},{},{},{},{},pod-x,1",
            p.time,
            if p.ready {
                "k8s.container.ready"
            } else {
                "k8s.container.restarts"
            },
            cell(&p.host),
            cell(&p.cluster),
            cell(&p.node),
            cell(&image),
        )
        .unwrap();
    }
    out
}

/// Section 2 + 3, from the text, in default mode with a configured cluster.
fn reference(
    points: &[Point],
    cluster_fallback: Option<&str>,
) -> BTreeSet<(String, String, String, String, i64, u64)> {
    let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let mut by_key: BTreeMap<(String, String, String, String), Vec<i64>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.ready) {
        let image = match (&p.image, p.on_resource) {
            (None, false) => Some("decoy".to_string()),
            (v, _) => v.clone(),
        };
        let Some(node) = present(&p.node) else {
            continue;
        };
        let Some(cluster) = present(&p.cluster).or(cluster_fallback.map(str::to_string)) else {
            continue;
        };
        let Some(image) = present(&image) else {
            continue;
        };
        // Default mode keys the image's canonical reference: a Docker Hub name without a
        // path is `docker.io/library/<name>` (contract section 2).
        let image = if image.contains('/') {
            image
        } else {
            format!("docker.io/library/{image}")
        };
        by_key
            .entry((node.clone(), cluster, node, image))
            .or_default()
            .push(p.time);
    }
    by_key
        .into_iter()
        .filter_map(|(k, ts)| {
            let current: Vec<i64> = ts
                .iter()
                .copied()
                .filter(|t| T - DAY <= *t && *t < T)
                .collect();
            let baseline = ts.iter().any(|t| T - 30 * DAY <= *t && *t < T - HOUR);
            (!current.is_empty() && !baseline).then(|| {
                (
                    k.0,
                    k.1,
                    k.2,
                    k.3,
                    *current.iter().min().unwrap(),
                    current.len() as u64,
                )
            })
        })
        .collect()
}

fn run(dir: &std::path::Path, name: &str, content: &str, cluster: Option<&str>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseen"));
    cmd.args(["scan", "--at", &T.to_string(), "--output", "json"]);
    if let Some(c) = cluster {
        cmd.args(["--cluster-name", c]);
    }
    let out = cmd.arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

proptest! {
    // Each case runs the binary twice; 48 cases keep this test to a few seconds.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn csv_and_otlp_json_agree_with_the_reference(
        points in prop::collection::vec(point(), 0..40),
        fallback in prop::option::of(Just("fallback")),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let from_json = run(dir.path(), "points.jsonl", &to_otlp_json(&points), fallback);
        let from_csv = run(dir.path(), "points.csv", &to_csv(&points), fallback);
        prop_assert_eq!(&from_json, &from_csv);

        let got: BTreeSet<_> = from_json
            .lines()
            .map(|l| {
                let f: Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| f[k].as_str().unwrap().to_string();
                let first = unseen_model::parse_time(&s("first_seen")).unwrap();
                (s("host"), s("k8s.cluster.name"), s("k8s.node.name"), s("container.image.name"), first, f["count"].as_u64().unwrap())
            })
            .collect();
        prop_assert_eq!(got, reference(&points, fallback));
    }
}
