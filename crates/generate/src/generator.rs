//! The generator: walks the history in time order and hands out one batch at a time.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::catalog::Catalog;
use crate::fleet::{Arrival, Cluster, EventCounts};
use crate::metrics::{
    self, MetricDef, ValueType, CONTAINER_ATTRIBUTES, CONTAINER_PROFILES, NODE_ATTRIBUTES,
    NODE_METRICS, POD_ATTRIBUTES, POD_METRICS,
};
use crate::params::{Params, ParamsError};
use crate::rng::Rng;

/// A position in one cluster's resources, in the order they are written: nodes, then pods,
/// then containers (the receiver's order in the fixtures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    stage: u8,
    i: u32,
    j: u32,
}

impl Cursor {
    const START: Cursor = Cursor {
        stage: 0,
        i: 0,
        j: 0,
    };
}

/// One resource of a batch.
#[derive(Debug, Clone, Copy)]
enum Item {
    Node(u32),
    Pod(u32),
    Container(u32, u32),
}

/// The resources from a cursor on.
struct Items<'g> {
    cluster: &'g Cluster,
    cursor: Cursor,
}

impl Iterator for Items<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let c = self.cluster;
        loop {
            let Cursor { stage, i, j } = self.cursor;
            match stage {
                0 if (i as usize) < c.nodes.len() => {
                    self.cursor.i += 1;
                    return Some(Item::Node(i));
                }
                1 if (i as usize) < c.pods.len() => {
                    self.cursor.i += 1;
                    return Some(Item::Pod(i));
                }
                2 if (i as usize) < c.pods.len() => {
                    if (j as usize) < c.pods[i as usize].containers.len() {
                        self.cursor.j += 1;
                        return Some(Item::Container(i, j));
                    }
                    self.cursor = Cursor {
                        stage,
                        i: i + 1,
                        j: 0,
                    };
                }
                0 | 1 => {
                    self.cursor = Cursor {
                        stage: stage + 1,
                        i: 0,
                        j: 0,
                    }
                }
                _ => return None,
            }
        }
    }
}

fn item_points(cluster: &Cluster, item: Item) -> usize {
    match item {
        Item::Node(_) => NODE_METRICS.len(),
        Item::Pod(_) => POD_METRICS.len(),
        Item::Container(p, c) => cluster.container_points(p as usize, c as usize),
    }
}

/// Counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    pub batches: u64,
    /// Data points of every metric.
    pub points: u64,
    /// `k8s.container.ready` points (one per container per collection).
    pub ready_points: u64,
}

/// A seeded synthetic fleet history. Sync and IO-free: it only computes batches.
///
/// Batches come in time order: collection after collection, and within one collection
/// cluster after cluster in the order their collectors scrape. Each cluster's collection is
/// one or more batches (split at `max_batch_points`, between resources).
#[derive(Debug)]
pub struct Generator {
    params: Params,
    catalog: Catalog,
    clusters: Vec<Cluster>,
    /// Cluster indexes by scrape phase, so that timestamps never go down.
    order: Vec<u32>,
    ticks: u64,
    tick: u64,
    pos: usize,
    /// Where the current cluster's collection continues, and its batch count so far;
    /// `None` before the cluster's collection starts.
    cursor: Option<(Cursor, u32)>,
    stats: GenStats,
}

impl Generator {
    pub fn new(params: Params) -> Result<Generator, ParamsError> {
        params.validate()?;
        let ticks = params.ticks();
        let interval_nanos = params.interval_secs * 1_000_000_000;
        let mut rng = Rng::new(params.seed);
        let catalog = Catalog::new(params.images, &mut rng);

        // Base images go round-robin over every deployment of the fleet, from a seeded
        // order, so that each is in use when there are enough deployments.
        let mut base: Vec<u32> = catalog.base.clone().collect();
        for i in (1..base.len()).rev() {
            base.swap(i, rng.index(i + 1));
        }
        let mut next_base = 0usize;
        let mut take_base = || {
            if base.is_empty() {
                return catalog.system.start;
            }
            let image = base[next_base % base.len()];
            next_base += 1;
            image
        };
        let mut clusters = Vec::with_capacity(params.clusters as usize);
        for index in 0..params.clusters {
            let mut cluster = Cluster::new(index, &params, interval_nanos, params.seed);
            cluster.populate(index, &params, &catalog, &mut take_base);
            clusters.push(cluster);
        }

        // Fresh images arrive one by one, evenly spread over the history (± half a spacing),
        // each in one cluster.
        let fresh = u64::from(catalog.fresh.end - catalog.fresh.start);
        let spacing = ticks / (fresh + 1);
        for (k, image) in catalog.fresh.clone().enumerate() {
            let at = (u128::from(k as u64 + 1) * u128::from(ticks) / u128::from(fresh + 1)) as u64;
            let jitter = rng.below(spacing + 1);
            let tick = (at + jitter)
                .saturating_sub(spacing / 2)
                .clamp(1, ticks.max(2) - 1);
            let cluster = rng.index(clusters.len());
            clusters[cluster]
                .arrivals
                .push_back(Arrival { tick, image });
        }
        for cluster in &mut clusters {
            cluster.arrivals.make_contiguous().sort_by_key(|a| a.tick);
        }

        let mut order: Vec<u32> = (0..params.clusters).collect();
        order.sort_by_key(|&c| (clusters[c as usize].phase_nanos, c));
        Ok(Generator {
            params,
            catalog,
            clusters,
            order,
            ticks,
            tick: 0,
            pos: 0,
            cursor: None,
            stats: GenStats::default(),
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The next batch, or `None` at the end of the history.
    pub fn next_batch(&mut self) -> Option<Batch<'_>> {
        let max = self.params.max_batch_points;
        // Find the batch with short borrows first; build the view over it at the end.
        let (c, start, end, points, ready, index, last) = loop {
            if self.tick >= self.ticks {
                return None;
            }
            if self.pos >= self.order.len() {
                self.tick += 1;
                self.pos = 0;
                continue;
            }
            let c = self.order[self.pos] as usize;
            let (start, index) = match self.cursor {
                Some(state) => state,
                None => {
                    let offset = self.tick * self.params.interval_secs;
                    self.clusters[c].advance(self.tick, offset, &self.params, &self.catalog);
                    (Cursor::START, 0)
                }
            };
            let cluster = &self.clusters[c];
            let mut items = Items {
                cluster,
                cursor: start,
            };
            let (mut points, mut ready) = (0usize, 0usize);
            let mut end = start;
            while let Some(item) = items.next() {
                let n = item_points(cluster, item);
                if points > 0 && points + n > max {
                    break;
                }
                points += n;
                ready += usize::from(matches!(item, Item::Container(..)));
                end = items.cursor;
            }
            let last = Items {
                cluster,
                cursor: end,
            }
            .next()
            .is_none();
            if last {
                self.pos += 1;
                self.cursor = None;
            } else {
                self.cursor = Some((end, index + 1));
            }
            if points > 0 {
                break (c, start, end, points, ready, index, last);
            }
        };
        self.stats.batches += 1;
        self.stats.points += points as u64;
        self.stats.ready_points += ready as u64;
        let cluster = &self.clusters[c];
        let secs = self.params.start_unix_secs + self.tick * self.params.interval_secs;
        Some(Batch {
            cluster,
            catalog: &self.catalog,
            tick: self.tick,
            time_unix_nano: secs * 1_000_000_000 + cluster.phase_nanos,
            start,
            end,
            points,
            ready_points: ready,
            index,
            last,
        })
    }

    /// Collections done and in all (for progress bars).
    pub fn progress(&self) -> (u64, u64) {
        (self.tick.min(self.ticks), self.ticks)
    }

    pub fn stats(&self) -> GenStats {
        self.stats
    }

    /// Churn so far, over every cluster.
    pub fn events(&self) -> EventCounts {
        let mut total = EventCounts::default();
        for c in &self.clusters {
            let e = &c.events;
            total.rollouts += e.rollouts;
            total.image_renames += e.image_renames;
            total.new_deployments += e.new_deployments;
            total.pod_moves += e.pod_moves;
            total.node_joins += e.node_joins;
            total.node_leaves += e.node_leaves;
            total.node_replacements += e.node_replacements;
            total.restarts += e.restarts;
            total.suspensions += e.suspensions;
            total.returns += e.returns;
        }
        total
    }

    /// Running containers and nodes now, over every cluster.
    pub fn size(&self) -> (usize, usize) {
        let containers = self.clusters.iter().map(Cluster::containers).sum();
        let nodes = self.clusters.iter().map(|c| c.nodes.len()).sum();
        (containers, nodes)
    }

    /// The history as OTLP requests.
    pub fn requests(self) -> Requests {
        Requests(self)
    }
}

/// [`Generator::requests`].
#[derive(Debug)]
pub struct Requests(Generator);

impl Iterator for Requests {
    type Item = ExportMetricsServiceRequest;

    fn next(&mut self) -> Option<ExportMetricsServiceRequest> {
        self.0.next_batch().map(|b| b.to_request())
    }
}

/// A point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Double(f64),
}

/// One data point with the dimensions a flat export (CSV) keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlatPoint<'a> {
    pub metric: &'static MetricDef,
    pub node_name: &'a str,
    /// For container metrics.
    pub image_name: Option<&'a str>,
    pub image_tag: Option<&'a str>,
    pub value: Value,
}

/// One batch: what one collector exports in one request. Borrows the generator.
#[derive(Debug)]
pub struct Batch<'g> {
    cluster: &'g Cluster,
    catalog: &'g Catalog,
    tick: u64,
    time_unix_nano: u64,
    start: Cursor,
    end: Cursor,
    points: usize,
    ready_points: usize,
    index: u32,
    last: bool,
}

impl<'g> Batch<'g> {
    /// Every point of the batch has this time (one collection).
    pub fn time_unix_nano(&self) -> u64 {
        self.time_unix_nano
    }

    /// The collection number, from 0.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    pub fn cluster_name(&self) -> &'g str {
        &self.cluster.name
    }

    /// Data points of every metric.
    pub fn points(&self) -> usize {
        self.points
    }

    /// `k8s.container.ready` points: one per container resource.
    pub fn ready_points(&self) -> usize {
        self.ready_points
    }

    /// This batch's place among its collection's batches, from 0.
    pub fn index_in_collection(&self) -> u32 {
        self.index
    }

    /// Whether this batch ends its cluster's collection.
    pub fn is_last_of_collection(&self) -> bool {
        self.last
    }

    /// The node the cluster receiver runs on: what a `resourcedetection` processor puts in
    /// `host.name` (written in the CSV export only).
    pub fn collector_host(&self) -> &'g str {
        self.cluster.collector_host()
    }

    fn items(&self) -> impl Iterator<Item = Item> + 'g {
        let end = self.end;
        let mut items = Items {
            cluster: self.cluster,
            cursor: self.start,
        };
        std::iter::from_fn(move || {
            if items.cursor == end {
                return None;
            }
            items.next()
        })
    }

    /// The batch as the OTLP request a collector sends.
    pub fn to_request(&self) -> ExportMetricsServiceRequest {
        let c = self.cluster;
        let t = self.time_unix_nano;
        let resource_metrics = self
            .items()
            .map(|item| match item {
                Item::Node(n) => {
                    let node = &c.nodes[n as usize];
                    let values = [node.name.as_str(), node.uid.as_str(), c.name.as_str()];
                    resource(
                        &NODE_ATTRIBUTES,
                        &values,
                        NODE_METRICS
                            .iter()
                            .map(|m| metric(m, t, Value::Int(1)))
                            .collect(),
                    )
                }
                Item::Pod(p) => {
                    let pod = &c.pods[p as usize];
                    let workload = &c.workloads[pod.workload as usize];
                    let values = [
                        workload.namespace,
                        c.nodes[pod.node as usize].name.as_str(),
                        pod.name.as_str(),
                        pod.uid.as_str(),
                        c.name.as_str(),
                    ];
                    // Phase 2: Running.
                    resource(
                        &POD_ATTRIBUTES,
                        &values,
                        POD_METRICS
                            .iter()
                            .map(|m| metric(m, t, Value::Int(2)))
                            .collect(),
                    )
                }
                Item::Container(p, k) => {
                    let pod = &c.pods[p as usize];
                    let workload = &c.workloads[pod.workload as usize];
                    let spec = &workload.containers[k as usize];
                    let state = &pod.containers[k as usize];
                    let values = [
                        state.id.as_str(),
                        self.catalog.get(spec.image).name.as_str(),
                        spec.tag.as_str(),
                        spec.name.as_str(),
                        workload.namespace,
                        c.nodes[pod.node as usize].name.as_str(),
                        pod.name.as_str(),
                        pod.uid.as_str(),
                        c.name.as_str(),
                    ];
                    let metrics = CONTAINER_PROFILES[spec.profile as usize]
                        .iter()
                        .map(|m| metric(m, t, self.container_value(p, k, m)))
                        .collect();
                    resource(&CONTAINER_ATTRIBUTES, &values, metrics)
                }
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn container_value(&self, p: u32, k: u32, m: &MetricDef) -> Value {
        let pod = &self.cluster.pods[p as usize];
        let spec = &self.cluster.workloads[pod.workload as usize].containers[k as usize];
        let state = &pod.containers[k as usize];
        match m.name {
            "k8s.container.restarts" => Value::Int(i64::from(state.restarts)),
            "k8s.container.ready" => Value::Int(i64::from(self.tick >= state.unready_until)),
            "k8s.container.cpu_request" => Value::Double(spec.cpu_request),
            "k8s.container.memory_request" => Value::Int(spec.memory_request),
            "k8s.container.cpu_limit" => Value::Double(spec.cpu_limit),
            "k8s.container.memory_limit" => Value::Int(spec.memory_limit),
            other => unreachable!("{other} is not a container metric"),
        }
    }

    /// Every data point, flattened, in the order of [`Batch::to_request`].
    pub fn for_each_point(&self, mut f: impl FnMut(FlatPoint<'g>)) {
        let c = self.cluster;
        for item in self.items() {
            match item {
                Item::Node(n) => {
                    for m in NODE_METRICS {
                        f(FlatPoint {
                            metric: m,
                            node_name: &c.nodes[n as usize].name,
                            image_name: None,
                            image_tag: None,
                            value: Value::Int(1),
                        });
                    }
                }
                Item::Pod(p) => {
                    let pod = &c.pods[p as usize];
                    for m in POD_METRICS {
                        f(FlatPoint {
                            metric: m,
                            node_name: &c.nodes[pod.node as usize].name,
                            image_name: None,
                            image_tag: None,
                            value: Value::Int(2),
                        });
                    }
                }
                Item::Container(p, k) => {
                    let pod = &c.pods[p as usize];
                    let spec = &c.workloads[pod.workload as usize].containers[k as usize];
                    for m in CONTAINER_PROFILES[spec.profile as usize] {
                        f(FlatPoint {
                            metric: m,
                            node_name: &c.nodes[pod.node as usize].name,
                            image_name: Some(&self.catalog.get(spec.image).name),
                            image_tag: Some(&spec.tag),
                            value: self.container_value(p, k, m),
                        });
                    }
                }
            }
        }
    }

    /// The `k8s.container.ready` points only (cheaper than [`Batch::for_each_point`]).
    pub fn for_each_ready(&self, mut f: impl FnMut(FlatPoint<'g>)) {
        let c = self.cluster;
        for item in self.items() {
            if let Item::Container(p, k) = item {
                let pod = &c.pods[p as usize];
                let spec = &c.workloads[pod.workload as usize].containers[k as usize];
                let ready = self.tick >= pod.containers[k as usize].unready_until;
                f(FlatPoint {
                    metric: &metrics::CONTAINER_READY,
                    node_name: &c.nodes[pod.node as usize].name,
                    image_name: Some(&self.catalog.get(spec.image).name),
                    image_tag: Some(&spec.tag),
                    value: Value::Int(i64::from(ready)),
                });
            }
        }
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn resource(keys: &[&str], values: &[&str], metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: keys
                .iter()
                .zip(values)
                .map(|(k, v)| string_attr(k, v))
                .collect(),
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: metrics::SCOPE_NAME.to_string(),
                version: metrics::SCOPE_VERSION.to_string(),
                ..Default::default()
            }),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: metrics::SCHEMA_URL.to_string(),
    }
}

fn metric(def: &MetricDef, time_unix_nano: u64, value: Value) -> Metric {
    debug_assert_eq!(
        def.value_type,
        match value {
            Value::Int(_) => ValueType::Int,
            Value::Double(_) => ValueType::Double,
        }
    );
    let value = match value {
        Value::Int(v) => number_data_point::Value::AsInt(v),
        Value::Double(v) => number_data_point::Value::AsDouble(v),
    };
    Metric {
        name: def.name.to_string(),
        description: def.description.to_string(),
        unit: def.unit.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano,
                value: Some(value),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}
