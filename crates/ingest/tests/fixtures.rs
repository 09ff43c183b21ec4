//! The two real captures in shared/fixtures decode to exactly the points they hold, and
//! identically through YAML, OTLP/JSON lines and OTLP protobuf.

mod common;

use std::collections::BTreeSet;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use unseen_ingest::{Format, SourceStats};
use unseen_model::{ctx, CONTEXT_LEN};

fn images(points: &[Point]) -> BTreeSet<&str> {
    points.iter().filter_map(|p| p.image.as_deref()).collect()
}

/// The fixture through opentelemetry-proto's own serde and prost, as file exporter frames.
fn as_proto(yaml: &[u8]) -> Vec<u8> {
    let request: ExportMetricsServiceRequest =
        serde_json::from_str(&yaml_to_json_line(yaml)).unwrap();
    frame(&[request.encode_to_vec()])
}

/// Decodes a fixture every way and checks that all ways agree; returns the YAML outcome.
fn all_ways(path: &str) -> Outcome {
    let yaml = fixture(path);
    let via_yaml = read(&yaml, Format::Auto);
    assert_eq!(via_yaml.format(), Format::OtlpYaml);
    let json = yaml_to_json_line(&yaml) + "\n";
    let via_json = read(json.as_bytes(), Format::Auto);
    assert_eq!(via_json.format(), Format::OtlpJson);
    let proto = as_proto(&yaml);
    let via_proto = read(&proto, Format::Auto);
    assert_eq!(via_proto.format(), Format::OtlpProto);
    for other in [&via_json, &via_proto] {
        assert_eq!(other.points, via_yaml.points);
        assert_eq!(other.stats(), via_yaml.stats());
        assert!(other.issues.is_empty(), "{:?}", other.issue_texts());
    }
    assert!(via_yaml.issues.is_empty(), "{:?}", via_yaml.issue_texts());
    via_yaml
}

#[test]
fn k8sclusterreceiver_e2e_fixture() {
    let out = all_ways(EXPECTED_YAML);
    assert_eq!(
        out.stats(),
        SourceStats {
            records: 1,
            ready_points: 10,
            other_points: 65,
            malformed_records: 0,
            malformed_points: 0,
        }
    );
    assert_eq!(
        images(&out.points),
        BTreeSet::from([
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
    for p in &out.points {
        assert_eq!(p.time, 1_686_772_769_034_865_545);
        assert_eq!(p.host, None, "the receiver sets no host.name");
        assert_eq!(p.cluster, None, "the receiver sets no k8s.cluster.name");
        assert_eq!(p.node.as_deref(), Some("kind-control-plane"));
    }
    // Input order is kept: the first container resource is etcd's.
    assert_eq!(out.points[0].image.as_deref(), Some("registry.k8s.io/etcd"));
    // Its evidence, from its resource (the receiver sets no owner on a container's).
    let mut context: [Option<String>; CONTEXT_LEN] = Default::default();
    for (slot, value) in [
        (ctx::NAMESPACE, "kube-system"),
        (ctx::POD_NAME, "etcd-kind-control-plane"),
        (ctx::POD_UID, "16463557-8966-458d-b356-54f16895a1dd"),
        (ctx::CONTAINER_NAME, "etcd"),
        (
            ctx::CONTAINER_ID,
            "065c7c8b8e35d285df3e05ada86520ab9a55dd5cb25331c1fb0e39739ae7fdfa",
        ),
        (ctx::IMAGE_TAG, "3.5.4-0"),
    ] {
        context[slot] = Some(value.to_string());
    }
    assert_eq!(out.points[0].context, context);
    for p in &out.points {
        for slot in [
            ctx::NAMESPACE,
            ctx::POD_NAME,
            ctx::POD_UID,
            ctx::CONTAINER_NAME,
            ctx::CONTAINER_ID,
            ctx::IMAGE_TAG,
        ] {
            assert!(p.ctx(slot).is_some_and(|v| !v.is_empty()), "{p:?}");
        }
        for slot in [
            ctx::DEPLOYMENT,
            ctx::STATEFULSET,
            ctx::DAEMONSET,
            ctx::JOB,
            ctx::CRONJOB,
            ctx::REPLICASET,
        ] {
            assert_eq!(p.ctx(slot), None, "{p:?}");
        }
    }
}

#[test]
fn splunk_chart_cluster_receiver_fixture() {
    let out = all_ways(CLUSTER_RECEIVER_YAML);
    assert_eq!(
        out.stats(),
        SourceStats {
            records: 1,
            ready_points: 13,
            other_points: 221,
            malformed_records: 0,
            malformed_points: 0,
        }
    );
    assert_eq!(
        images(&out.points),
        BTreeSet::from([
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
    for p in &out.points {
        assert_eq!(p.time, 1_000_000);
        assert_eq!(p.host, None);
        assert_eq!(p.cluster.as_deref(), Some("dev-operator"));
        assert_eq!(p.node.as_deref(), Some("kind-control-plane"));
        // The chart's capture carries the attributes on the data points.
        assert!(p.ctx(ctx::NAMESPACE).is_some(), "{p:?}");
        assert!(p.ctx(ctx::POD_NAME).is_some(), "{p:?}");
        assert!(p.ctx(ctx::CONTAINER_ID).is_some(), "{p:?}");
    }
}

#[test]
fn fixtures_gzipped_and_as_json_lines_batches() {
    // Several batches in one file, gzip-compressed: the file exporter's daily shape.
    let line = yaml_to_json_line(&fixture(EXPECTED_YAML));
    let text = format!("{line}\n{line}\n\n{line}\n");
    let out = read(&gzip(text.as_bytes()), Format::Auto);
    assert_eq!(out.format(), Format::OtlpJson);
    assert_eq!(out.stats().records, 3);
    assert_eq!(out.stats().ready_points, 30);
    assert_eq!(out.stats().other_points, 195);
}
