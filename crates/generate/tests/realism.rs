//! Generated data looks like the receiver's: checked against the real receiver output in the
//! shared fixtures, and for the churn the model promises.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, ResourceMetrics};
use unseen_generate::metrics::{CONTAINER_PROFILES, NODE_METRICS, POD_METRICS};
use unseen_generate::{Churn, Encoder, Format, Generator, Params, SECS_PER_DAY};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/otel_k8scluster/expected.yaml"
);

fn attr_keys(rm: &ResourceMetrics) -> BTreeSet<String> {
    rm.resource
        .as_ref()
        .map(|r| r.attributes.iter().map(|kv| kv.key.clone()).collect())
        .unwrap_or_default()
}

fn attr<'a>(rm: &'a ResourceMetrics, key: &str) -> Option<&'a str> {
    rm.resource.as_ref()?.attributes.iter().find_map(|kv| {
        if kv.key != key {
            return None;
        }
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn metric_names(rm: &ResourceMetrics) -> Vec<&str> {
    rm.scope_metrics
        .iter()
        .flat_map(|sm| sm.metrics.iter().map(|m| m.name.as_str()))
        .collect()
}

/// What the fixture says about each kind of resource: attribute sets and, per metric name,
/// (description, unit, value kind).
struct Fixture {
    container_attrs: BTreeSet<BTreeSet<String>>,
    pod_attrs: BTreeSet<BTreeSet<String>>,
    node_attrs: BTreeSet<BTreeSet<String>>,
    container_metric_lists: BTreeSet<Vec<String>>,
    metrics: HashMap<String, (String, String, &'static str)>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(FIXTURE).expect("the shared fixture");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut f = Fixture {
        container_attrs: BTreeSet::new(),
        pod_attrs: BTreeSet::new(),
        node_attrs: BTreeSet::new(),
        container_metric_lists: BTreeSet::new(),
        metrics: HashMap::new(),
    };
    for rm in yaml["resourceMetrics"].as_sequence().unwrap() {
        let keys: BTreeSet<String> = rm["resource"]["attributes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap().to_string())
            .collect();
        let mut names = Vec::new();
        for sm in rm["scopeMetrics"].as_sequence().unwrap() {
            for m in sm["metrics"].as_sequence().unwrap() {
                let name = m["name"].as_str().unwrap().to_string();
                let point = &m["gauge"]["dataPoints"][0];
                let kind = if point["asDouble"].is_null() {
                    "int"
                } else {
                    "double"
                };
                f.metrics.insert(
                    name.clone(),
                    (
                        m["description"].as_str().unwrap().to_string(),
                        m["unit"].as_str().unwrap().to_string(),
                        kind,
                    ),
                );
                names.push(name);
            }
        }
        if names.iter().any(|n| n == "k8s.container.ready") {
            f.container_attrs.insert(keys);
            f.container_metric_lists.insert(names);
        } else if names.iter().any(|n| n == "k8s.pod.phase") {
            f.pod_attrs.insert(keys);
        } else if names.iter().any(|n| n == "k8s.node.condition_ready") {
            f.node_attrs.insert(keys);
        }
    }
    f
}

fn with_cluster(set: &BTreeSet<String>) -> BTreeSet<String> {
    let mut set = set.clone();
    set.insert("k8s.cluster.name".to_string());
    set
}

fn small() -> Params {
    Params {
        clusters: 2,
        nodes_per_cluster: 4,
        pods_per_node: 6,
        images: 40,
        duration_secs: 12 * SECS_PER_DAY,
        interval_secs: 600,
        seed: 42,
        return_gap_secs: Some(3 * SECS_PER_DAY),
        ..Params::default()
    }
}

#[test]
fn resources_metrics_and_attributes_match_the_receiver() {
    let fx = fixture();
    // The fixture itself: every container resource has the same 8 attributes.
    assert_eq!(fx.container_attrs.len(), 1, "{:?}", fx.container_attrs);
    let container_attrs = with_cluster(fx.container_attrs.iter().next().unwrap());
    assert_eq!(container_attrs.len(), 9);
    let pod_attrs = with_cluster(fx.pod_attrs.iter().next().unwrap());
    let node_attrs = with_cluster(fx.node_attrs.iter().next().unwrap());
    // Every metric list a fixture container has is one of the documented profiles.
    let profiles: BTreeSet<Vec<String>> = CONTAINER_PROFILES
        .iter()
        .map(|p| p.iter().map(|m| m.name.to_string()).collect())
        .collect();
    for list in &fx.container_metric_lists {
        let mut sorted = list.clone();
        sorted.sort();
        assert!(
            profiles.iter().any(|p| {
                let mut p = p.clone();
                p.sort();
                p == sorted
            }),
            "the fixture has a container with {list:?}, not a documented profile"
        );
    }

    let mut seen_profiles = BTreeSet::new();
    let (mut containers, mut pods, mut nodes) = (0u64, 0u64, 0u64);
    for request in Generator::new(small()).unwrap().requests() {
        for rm in &request.resource_metrics {
            let keys = attr_keys(rm);
            let names: Vec<String> = metric_names(rm).into_iter().map(String::from).collect();
            if names.iter().any(|n| n == "k8s.container.ready") {
                containers += 1;
                assert_eq!(keys, container_attrs);
                assert!(profiles.contains(&names), "{names:?}");
                seen_profiles.insert(names);
            } else if names == ["k8s.pod.phase"] {
                pods += 1;
                assert_eq!(keys, pod_attrs);
            } else if names == ["k8s.node.condition_ready"] {
                nodes += 1;
                assert_eq!(keys, node_attrs);
            } else {
                panic!("unexpected resource with metrics {names:?}");
            }
            assert!(attr(rm, "k8s.cluster.name").is_some_and(|c| !c.is_empty()));
            assert_eq!(rm.schema_url, "https://opentelemetry.io/schemas/1.18.0");
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().unwrap();
                assert_eq!(
                    scope.name,
                    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/k8sclusterreceiver"
                );
                for m in &sm.metrics {
                    // Description, unit and value type exactly as the receiver's.
                    let (description, unit, kind) = &fx.metrics[&m.name];
                    assert_eq!(&m.description, description, "{}", m.name);
                    assert_eq!(&m.unit, unit, "{}", m.name);
                    let Some(metric::Data::Gauge(g)) = &m.data else {
                        panic!("{} is not a gauge", m.name)
                    };
                    assert_eq!(g.data_points.len(), 1);
                    let got = match g.data_points[0].value {
                        Some(number_data_point::Value::AsInt(_)) => "int",
                        Some(number_data_point::Value::AsDouble(_)) => "double",
                        None => "none",
                    };
                    assert_eq!(got, *kind, "{}", m.name);
                    assert!(g.data_points[0].attributes.is_empty());
                }
            }
        }
    }
    assert!(containers > 0 && pods > 0 && nodes > 0);
    assert_eq!(
        seen_profiles.len(),
        CONTAINER_PROFILES.len(),
        "{seen_profiles:?}"
    );
    assert_eq!(POD_METRICS.len(), 1);
    assert_eq!(NODE_METRICS.len(), 1);
}

#[test]
fn batches_are_bounded_and_one_ready_point_per_container_per_collection() {
    for max in [8192usize, 300] {
        let params = Params {
            clusters: 2,
            nodes_per_cluster: 30,
            pods_per_node: 40,
            images: 100,
            duration_secs: 6 * 3600,
            interval_secs: 3600,
            max_batch_points: max,
            ..Params::default()
        };
        let mut g = Generator::new(params).unwrap();
        let mut last_time = 0u64;
        let mut per_collection: BTreeMap<(u64, String), (usize, usize, BTreeSet<String>)> =
            BTreeMap::new();
        let mut split = 0;
        while let Some(batch) = g.next_batch() {
            assert!(batch.points() <= max, "{} points", batch.points());
            if !batch.is_last_of_collection() {
                split += 1;
                assert!(batch.points() > max - 6, "{} points", batch.points());
            }
            assert!(batch.time_unix_nano() >= last_time, "time went back");
            last_time = batch.time_unix_nano();
            let request = batch.to_request();
            let points: usize = request
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            assert_eq!(p.time_unix_nano, batch.time_unix_nano());
                        }
                        g.data_points.len()
                    }
                    _ => 0,
                })
                .sum();
            assert_eq!(points, batch.points());
            let entry = per_collection
                .entry((batch.tick(), batch.cluster_name().to_string()))
                .or_default();
            for rm in &request.resource_metrics {
                let names = metric_names(rm);
                let ready = names
                    .iter()
                    .filter(|n| **n == "k8s.container.ready")
                    .count();
                entry.0 += ready;
                if let Some(id) = attr(rm, "container.id") {
                    entry.1 += 1;
                    assert_eq!(ready, 1);
                    assert!(entry.2.insert(id.to_string()), "container {id} twice");
                }
            }
        }
        // 6 collections × 2 clusters.
        assert_eq!(per_collection.len(), 12);
        for ((tick, cluster), (ready, containers, _)) in &per_collection {
            assert_eq!(ready, containers, "collection {tick} of {cluster}");
            assert!(*containers > 1000, "{containers}");
        }
        assert!(split > 0, "max {max}: no collection needed splitting");
        let stats = g.stats();
        assert_eq!(
            stats.ready_points,
            per_collection.values().map(|v| v.0 as u64).sum::<u64>()
        );
    }
}

/// Per image: the sorted collection ticks in which it was seen (any cluster, any node).
fn sightings(params: Params) -> (BTreeMap<String, Vec<u64>>, Generator) {
    let mut g = Generator::new(params).unwrap();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while let Some(batch) = g.next_batch() {
        let tick = batch.tick();
        batch.for_each_ready(|p| {
            let ticks = seen.entry(p.image_name.unwrap().to_string()).or_default();
            if ticks.last() != Some(&tick) {
                ticks.push(tick);
            }
        });
    }
    (seen, g)
}

#[test]
fn the_history_churns() {
    let params = small();
    let per_day = SECS_PER_DAY / params.interval_secs;
    let gap_ticks = params.return_gap_secs.unwrap() / params.interval_secs;
    let (seen, g) = sightings(params.clone());
    let new_after_day_one: Vec<&String> = seen
        .iter()
        .filter(|(_, ticks)| ticks[0] > per_day)
        .map(|(image, _)| image)
        .collect();
    assert!(
        new_after_day_one.len() >= 3,
        "images first seen after day 1: {new_after_day_one:?}"
    );
    let returning: Vec<&String> = seen
        .iter()
        .filter(|(_, ticks)| ticks.windows(2).any(|w| w[1] - w[0] > gap_ticks))
        .map(|(image, _)| image)
        .collect();
    assert!(!returning.is_empty(), "no image came back after a gap");
    assert!(seen.len() <= params.images as usize);

    let e = g.events();
    assert!(e.rollouts > 10, "{e:?}");
    assert!(
        e.image_renames + e.new_deployments >= new_after_day_one.len() as u64,
        "{e:?}"
    );
    assert!(e.pod_moves > 0, "{e:?}");
    assert!(e.node_joins + e.node_replacements > 0, "{e:?}");
    assert!(e.restarts > 0, "{e:?}");
    assert!(e.suspensions > 0 && e.returns > 0, "{e:?}");
}

#[test]
fn a_long_history_brings_images_back_after_more_than_thirty_days() {
    let params = Params {
        clusters: 1,
        nodes_per_cluster: 2,
        pods_per_node: 2,
        images: 40,
        duration_secs: 80 * SECS_PER_DAY,
        interval_secs: 3600,
        churn: Churn {
            restarts_per_pod_per_day: 0.0,
            ..Churn::default()
        },
        ..Params::default()
    };
    assert_eq!(params.return_gap(), 35 * SECS_PER_DAY);
    let (seen, _) = sightings(params);
    let thirty_days = 30 * 24;
    assert!(seen
        .values()
        .any(|ticks| ticks.windows(2).any(|w| w[1] - w[0] > thirty_days)));
}

#[test]
fn not_ready_containers_and_moving_pods_show_in_the_points() {
    let mut g = Generator::new(small()).unwrap();
    let (mut zeros, mut ones) = (0u64, 0u64);
    let mut nodes_of_image: HashMap<String, BTreeSet<String>> = HashMap::new();
    while let Some(batch) = g.next_batch() {
        batch.for_each_ready(|p| {
            match p.value {
                unseen_generate::Value::Int(0) => zeros += 1,
                unseen_generate::Value::Int(1) => ones += 1,
                other => panic!("ready is {other:?}"),
            }
            nodes_of_image
                .entry(p.image_name.unwrap().to_string())
                .or_default()
                .insert(p.node_name.to_string());
        });
    }
    assert!(
        zeros > 0 && ones > 10 * zeros,
        "{zeros} not ready, {ones} ready"
    );
    let all_nodes: BTreeSet<&String> = nodes_of_image.values().flatten().collect();
    // Nodes joined: more node names than the fleet started with.
    assert!(all_nodes.len() > 8, "{} nodes", all_nodes.len());
}

fn bytes(params: &Params, format: Format) -> Vec<u8> {
    let mut g = Generator::new(params.clone()).unwrap();
    let mut enc = Encoder::new(format, Default::default());
    let mut out = Vec::new();
    while let Some(batch) = g.next_batch() {
        out.extend_from_slice(enc.encode(&batch));
    }
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let mut params = small();
    params.duration_secs = 2 * SECS_PER_DAY;
    for format in [Format::OtlpProto, Format::OtlpJson, Format::Csv] {
        let a = bytes(&params, format);
        let b = bytes(&params, format);
        assert!(!a.is_empty());
        assert!(a == b, "{format:?}: same seed, different bytes");
        let mut other = params.clone();
        other.seed += 1;
        assert!(bytes(&other, format) != a, "{format:?}: seed ignored");
    }
}

#[test]
fn bad_params_are_refused_with_the_reason() {
    let zero = Params {
        clusters: 0,
        ..Params::default()
    };
    assert_eq!(
        Generator::new(zero).unwrap_err().to_string(),
        "clusters must be at least 1"
    );
    let short = Params {
        duration_secs: 5,
        interval_secs: 10,
        ..Params::default()
    };
    assert!(Generator::new(short)
        .unwrap_err()
        .to_string()
        .contains("shorter than one interval"));
    let tiny = Params {
        max_batch_points: 3,
        ..Params::default()
    };
    assert!(Generator::new(tiny)
        .unwrap_err()
        .to_string()
        .contains("max batch points"));
}

#[test]
fn the_smallest_fleet_works() {
    let params = Params {
        clusters: 1,
        nodes_per_cluster: 1,
        pods_per_node: 0,
        images: 1,
        duration_secs: 3600,
        interval_secs: 600,
        ..Params::default()
    };
    let (seen, g) = sightings(params);
    assert_eq!(seen.len(), 1);
    assert_eq!(g.stats().batches, 6);
    // The collector deployment and its daemon set: two containers per collection.
    assert_eq!(g.stats().ready_points, 12);
}
