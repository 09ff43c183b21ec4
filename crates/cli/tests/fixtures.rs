//! The real binary over the real fixtures, checked against what their provenance says
//! they contain (`shared/fixtures/otel_k8scluster/PROVENANCE.md`), not against our
//! own earlier output.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const FIRST: &str = "expected.yaml";
const SECOND: &str = "expected_cluster_receiver.yaml";

fn fixture(name: &str) -> String {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/otel_k8scluster"
    ))
    .join(name)
    .display()
    .to_string()
}

fn scan(args: &[&str]) -> (Vec<Value>, String, Output) {
    let out = Command::new(env!("CARGO_BIN_EXE_unseen"))
        .arg("scan")
        .args(args)
        .output()
        .expect("run unseen");
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    let findings = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is a JSON finding"))
        .collect();
    (
        findings,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out,
    )
}

fn images(findings: &[Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|f| f["container.image.name"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn first_fixture_default_mode_needs_a_cluster_name() {
    let (findings, stderr, out) = scan(&[
        "--at",
        "2023-06-14T20:00:00Z",
        "--output",
        "json",
        &fixture(FIRST),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(findings.is_empty());
    assert!(
        stderr.contains("10 without k8s.cluster.name: set --cluster-name"),
        "{stderr}"
    );
}

#[test]
fn first_fixture_every_image_is_new_with_an_empty_baseline() {
    let (findings, stderr, out) = scan(&[
        "--at",
        "2023-06-14T20:00:00Z",
        "--cluster-name",
        "kind",
        "--output",
        "json",
        &fixture(FIRST),
    ]);
    assert!(out.status.success(), "{stderr}");
    // PROVENANCE: 10 container resources with k8s.container.ready, 9 distinct images,
    // one node `kind-control-plane`, points at 1686772769034865545 ns.
    assert_eq!(
        images(&findings),
        set(&[
            "docker.io/kindest/kindnetd",
            "docker.io/kindest/local-path-provisioner",
            "docker.io/library/otelcontribcol",
            "registry.k8s.io/coredns/coredns",
            "registry.k8s.io/etcd",
            "registry.k8s.io/kube-apiserver-amd64",
            "registry.k8s.io/kube-controller-manager-amd64",
            "registry.k8s.io/kube-proxy-amd64",
            "registry.k8s.io/kube-scheduler-amd64",
        ])
    );
    assert_eq!(findings.len(), 9);
    let ids: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["finding_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 9, "finding ids are distinct");
    let total: u64 = findings.iter().map(|f| f["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10);
    for f in &findings {
        assert_eq!(f["host"], "kind-control-plane");
        assert_eq!(f["k8s.node.name"], "kind-control-plane");
        assert_eq!(f["k8s.cluster.name"], "kind");
        assert_eq!(f["host.name"], Value::Null);
        assert_eq!(f["first_seen"], "2023-06-14T19:59:29Z");
        assert_eq!(f["previous_seen"], Value::Null);
        assert_eq!(f["late"], false);
        assert_eq!(f["risk_object"], "kind-control-plane");
        // Default mode: the seed's 20 with the risk modifiers; a new cluster's images
        // are all new to the fleet (+30), the first of each registry more (+20).
        let score = if f["registry_new"] == true { 70 } else { 50 };
        assert_eq!(f["scope"], "fleet");
        assert_eq!(f["risk_score"], score);
        assert_eq!(f["rule"]["id"], "fea515a4-b1d8-4cd6-80d6-e0d71397b891");
        assert_eq!(f["detected_at"], "2023-06-14T20:00:00Z");
    }
    let coredns = findings
        .iter()
        .find(|f| f["container.image.name"] == "registry.k8s.io/coredns/coredns")
        .unwrap();
    assert_eq!(coredns["count"], 2, "two coredns containers, one key");
}

#[test]
fn first_fixture_is_old_news_an_hour_later() {
    // At T + 1h the points fall in the baseline window: nothing is new any more.
    let (findings, stderr, out) = scan(&[
        "--at",
        "2023-06-14T21:00:00Z",
        "--cluster-name",
        "kind",
        "--output",
        "json",
        &fixture(FIRST),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(findings.is_empty(), "{findings:?}");
}

#[test]
fn strict_mode_finds_nothing_without_host_name() {
    let (findings, stderr, out) = scan(&[
        "--strict",
        "--at",
        "2023-06-14T20:00:00Z",
        "--output",
        "json",
        &fixture(FIRST),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(findings.is_empty());
    assert!(
        stderr.contains("10 without host.name: strict mode needs `host.name`"),
        "{stderr}"
    );
}

#[test]
fn second_fixture_attributes_on_the_data_points() {
    // Timestamps are normalized to 1000000 ns, i.e. second 0 of the epoch.
    let (findings, stderr, out) = scan(&["--at", "1", "--output", "json", &fixture(SECOND)]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        images(&findings),
        set(&[
            "docker.io/kindest/kindnetd",
            "docker.io/kindest/local-path-provisioner",
            "ghcr.io/open-telemetry/opentelemetry-operator/opentelemetry-operator",
            "ghcr.io/open-telemetry/opentelemetry-operator/target-allocator",
            "quay.io/signalfx/splunk-otel-collector",
            "registry.k8s.io/coredns/coredns",
            "registry.k8s.io/etcd",
            "registry.k8s.io/kube-apiserver-amd64",
            "registry.k8s.io/kube-controller-manager-amd64",
            "registry.k8s.io/kube-proxy-amd64",
            "registry.k8s.io/kube-scheduler-amd64",
        ])
    );
    assert_eq!(findings.len(), 11);
    let total: u64 = findings.iter().map(|f| f["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 13, "13 k8s.container.ready points");
    for f in &findings {
        assert_eq!(f["k8s.cluster.name"], "dev-operator");
        assert_eq!(f["host"], "kind-control-plane");
        assert_eq!(f["first_seen"], "1970-01-01T00:00:00Z");
    }
    assert!(stderr.contains("13 k8s.container.ready"), "{stderr}");
}

#[test]
fn finding_ids_do_not_depend_on_the_run() {
    let args = ["--at", "1", "--output", "json", &fixture(SECOND)];
    let (a, _, _) = scan(&args);
    let (b, _, _) = scan(&args);
    let ids = |f: &[Value]| {
        f.iter()
            .map(|f| f["finding_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
}

#[test]
fn both_fixtures_together_in_one_scan() {
    // Different times and clusters: at second 1 only the second file is current; the
    // first file's 2023 points are after --at and ignored.
    let (findings, stderr, out) = scan(&[
        "--at",
        "1",
        "--cluster-name",
        "kind",
        "--output",
        "json",
        &fixture(FIRST),
        &fixture(SECOND),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(findings.len(), 11);
    assert!(stderr.contains("10 at or after --at"), "{stderr}");
}

/// `scan --output ocsf`: the same findings as `--output json`, each an OCSF Detection
/// Finding that py-ocsf-models accepts (scripts/ocsf_validate.py, strictly: unknown keys,
/// nulls and coercions are errors). The test script installs py-ocsf-models.
#[test]
fn ocsf_output_validates_against_the_ocsf_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let common = ["--at", "2023-06-14T20:00:00Z", "--cluster-name", "kind"];
        let (json, stderr, out) =
            scan(&[&common[..], &["--output", "json", &fixture(FIRST)][..]].concat());
        assert!(out.status.success(), "{stderr}");
        assert!(!json.is_empty());
        let (ocsf, stderr, out) =
            scan(&[&common[..], &["--output", "ocsf", &fixture(FIRST)][..]].concat());
        assert!(out.status.success(), "{stderr}");
        let ids = |v: &[Value], f: fn(&Value) -> &Value| -> Vec<String> {
            v.iter()
                .map(|x| f(x).as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            ids(&ocsf, |x| &x["finding_info"]["uid"]),
            ids(&json, |x| &x["finding_id"]),
            "the same findings, in the same order"
        );
        assert!(ocsf.iter().all(|x| x["class_uid"] == 2004));
        let path = dir.path().join("ocsf.jsonl");
        let lines: Vec<String> = ocsf.iter().map(|v| v.to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let validator = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/ocsf_validate.py"
        );
        let check = Command::new("python3")
            .arg(validator)
            .arg(&path)
            .output()
            .expect("python3 runs (the test script installs it with py-ocsf-models)");
        assert!(
            check.status.success(),
            "the OCSF output does not validate (run scripts/test.sh, which installs py-ocsf-models):\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
