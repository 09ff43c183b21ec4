//! Throughput and allocations per decoder, on the Splunk chart fixture repeated.
//! A measurement, not a pass/fail test:
//!
//! `cargo bench -p unseen-ingest --bench decode`

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use unseen_ingest::{read_source, Format, Issue, Limits, Visitor};
use unseen_model::PointRef;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Default)]
struct Count(u64);

impl Visitor for Count {
    fn point(&mut self, _: PointRef<'_>) {
        self.0 += 1;
    }
    fn issue(&mut self, issue: Issue) {
        panic!("{issue}");
    }
}

fn measure(name: &str, bytes: &[u8], format: Format) {
    let mut count = Count::default();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let (_, stats) = read_source("bench", bytes, format, Limits::default(), &mut count).unwrap();
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let points = stats.ready_points + stats.other_points;
    println!(
        "{name:<12} {:>7.1} MB  {:>7.0} MB/s  {:>9.0} points/s (all metrics)  {:>8.0} ready/s  {:>6.1} allocations/record  {:>5.2} allocations/point",
        bytes.len() as f64 / 1e6,
        bytes.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64(),
        stats.ready_points as f64 / elapsed.as_secs_f64(),
        allocations as f64 / stats.records as f64,
        allocations as f64 / points as f64,
    );
}

fn main() {
    const COPIES: usize = 400;
    let yaml = fixture(CLUSTER_RECEIVER_YAML);
    let line = yaml_to_json_line(&yaml);
    let json = format!("{line}\n").repeat(COPIES);
    let request: ExportMetricsServiceRequest = serde_json::from_str(&line).unwrap();
    let proto = frame(&vec![request.encode_to_vec(); COPIES]);
    let mut csv = String::from(
        "_time,host.name,k8s.cluster.name,k8s.node.name,container.image.name,metric_name,_value\n",
    );
    for i in 0..COPIES * 234 {
        csv += &format!(
            "{},,dev-operator,kind-control-plane,registry.k8s.io/kube-apiserver-amd64,{},1\n",
            1_700_000_000 + i,
            if i % 18 == 0 {
                "k8s.container.ready"
            } else {
                "k8s.pod.phase"
            }
        );
    }
    let gz = gzip(json.as_bytes());
    measure("otlp-json", json.as_bytes(), Format::OtlpJson);
    measure("otlp-json.gz", &gz, Format::OtlpJson);
    measure("otlp-proto", &proto, Format::OtlpProto);
    measure("csv", csv.as_bytes(), Format::Csv);
    measure("otlp-yaml", &yaml, Format::OtlpYaml);
}
