//! How fast the query API answers with 100,000 findings in the state (issue: "pages
//! answer in under 200 ms with 100,000 findings").
//!
//! A fleet of 10 clusters × 100 nodes, each node running 100 of 500 images, first seen
//! over ten days (in time order, as `serve` would see them), is applied to the embedded
//! store (redb, on disk) through the same `apply` and triage as `serve`: one finding per
//! key. Then the API is started over that store, as `serve` starts it, and every
//! request a console page makes is timed over loopback HTTP, 50 times each, reporting
//! the median, the 99th percentile and the worst. `--smoke` runs it at 2,000 findings.
//!
//! Output: a table, and `BENCH name=value` lines for `scripts/bench.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unseen_api::{Api, Directory, Principal, Role, RulesControl};
use unseen_findings::{Suppressions, TriageSettings};
use unseen_model::{ctx, Context, OwnedContext, UnixSecs, Windows, SEED_RULE};
use unseen_normalize::{Key, KeyMode};
use unseen_store::{ApplyOptions, RedbStore, Sighting, StateStore};

struct AnyToken;

impl Directory for AnyToken {
    fn authenticate(&self, _: &str) -> Result<Principal, String> {
        Ok(Principal {
            name: "bench".into(),
            role: Role::Admin,
        })
    }
    fn still_valid(&self, _: &Principal) -> bool {
        true
    }
}

struct NoRules;

impl RulesControl for NoRules {
    fn configured(&self) -> Suppressions {
        Suppressions::default()
    }
    fn set_api_rules(&self, _: Suppressions) -> Result<(), String> {
        Ok(())
    }
}

const START: UnixSecs = 1_780_000_000;

/// The API's clock: a minute after the newest finding (the clock is a plain `fn`).
static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn opts(now: UnixSecs) -> ApplyOptions {
    ApplyOptions {
        rule: SEED_RULE,
        triage: TriageSettings::default(),
        windows: Windows {
            current: 86_400,
            baseline: 30 * 86_400,
            recent: 3_600,
        },
        mode: KeyMode::default(),
        now,
        report: true,
        suppressions: Default::default(),
        max_keys: u64::MAX,
        new_keys: None,
        notices: Vec::new(),
    }
}

/// Applies `findings` first sightings (one per key) in time order; returns the newest time.
fn fill(
    store: &dyn StateStore,
    clusters: usize,
    nodes: usize,
    per_node: usize,
    images: usize,
) -> UnixSecs {
    let total = clusters * nodes * per_node;
    let span: UnixSecs = 10 * 86_400;
    let mut batch = Vec::with_capacity(2_000);
    let mut now = START;
    for i in 0..total {
        // Keys in a spread order: node-major would put an image's rollout in one batch.
        let node = i % (clusters * nodes);
        let slot = i / (clusters * nodes);
        let image = (node * 7 + slot * 13) % images;
        let (cluster, node) = (node / nodes, node % nodes);
        let time = START + (i as UnixSecs) * span / total as UnixSecs;
        let ns = format!("team-{}", image % 40);
        let deploy = format!("svc-{image}");
        let pod = format!("svc-{image}-5d8f7c9b6-{node:05}");
        let mut slots = [None; unseen_model::CONTEXT_LEN];
        slots[ctx::NAMESPACE] = Some(ns.as_str());
        slots[ctx::POD_NAME] = Some(pod.as_str());
        slots[ctx::DEPLOYMENT] = Some(deploy.as_str());
        let node_name = format!("ip-10-{cluster}-{}-{}.ec2.internal", node / 250, node % 250);
        batch.push(Sighting {
            key: Key {
                host: node_name.clone(),
                cluster: format!("prod-{cluster:02}"),
                node: node_name,
                image: format!(
                    "123456789012.dkr.ecr.us-east-1.amazonaws.com/team-{}/svc-{image}",
                    image % 40
                ),
            },
            time,
            host_name: None,
            context: OwnedContext::new(&Context(slots)),
            image_raw: None,
        });
        now = time;
        if batch.len() == 2_000 {
            store.apply(&batch, &opts(now + 5)).expect("apply");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.apply(&batch, &opts(now + 5)).expect("apply");
    }
    now
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (clusters, nodes, per_node, images) = if smoke {
        (2, 10, 100, 200)
    } else {
        (10, 100, 100, 500)
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).expect("open the store"));
    let t = Instant::now();
    let newest = fill(store.as_ref(), clusters, nodes, per_node, images);
    let fill_s = t.elapsed().as_secs_f64();
    let records = store.history(0, usize::MAX).expect("history");
    let findings = records
        .iter()
        .filter(|(_, r)| r.finding().is_some())
        .count();
    let incidents: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|(_, r)| r.incident().map(|i| i.incident_id.clone()))
        .collect();
    drop(records);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    CLOCK.store(newest + 60, std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    let api = Api::new(
        store.clone(),
        Arc::new(AnyToken),
        Arc::new(NoRules),
        KeyMode::default(),
        false,
        || CLOCK.load(std::sync::atomic::Ordering::Relaxed),
    )
    .expect("the API starts");
    let load_s = t.elapsed().as_secs_f64();
    let (addr, client) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, unseen_api::router(api)).await });
        (addr, reqwest::Client::new())
    });
    let get = |path: &str| -> (Duration, usize, serde_json::Value) {
        runtime.block_on(async {
            let t = Instant::now();
            let resp = client
                .get(format!("http://{addr}{path}"))
                .header("authorization", "Bearer x")
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body = resp.bytes().await.expect("body");
            let took = t.elapsed();
            assert!(status.is_success(), "{path}: {status}");
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (took, body.len(), json)
        })
    };
    // Cursors and ids taken from the answers, as the console takes them.
    let first = get("/api/v1/findings?limit=50").2;
    let mid_cursor = (findings / 2).to_string();
    let incident_list = get("/api/v1/incidents?limit=50").2;
    let an_incident = incident_list["items"][0]["incident_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let a_finding = first["items"][0]["finding_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let image = first["items"][0]["container.image.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pages: Vec<(&str, String)> = vec![
        ("console", "/".into()),
        ("findings", "/api/v1/findings?limit=50".into()),
        (
            "findings_deep",
            format!("/api/v1/findings?limit=50&cursor={mid_cursor}"),
        ),
        (
            "findings_namespace",
            "/api/v1/findings?limit=50&namespace=team-7&scope=node".into(),
        ),
        (
            "findings_image",
            "/api/v1/findings?limit=50&image=svc-49".into(),
        ),
        ("finding", format!("/api/v1/findings/{a_finding}")),
        ("incidents", "/api/v1/incidents?limit=50".into()),
        (
            "incidents_filtered",
            "/api/v1/incidents?limit=50&status=new&namespace=team-3".into(),
        ),
        ("incident", format!("/api/v1/incidents/{an_incident}")),
        ("images", "/api/v1/images?limit=50".into()),
        ("images_q", "/api/v1/images?limit=50&q=svc-4".into()),
        ("image", format!("/api/v1/images/{image}")),
        ("timeline", "/api/v1/timeline".into()),
    ];
    println!(
        "{findings} findings, {} incidents in the state (filled in {fill_s:.1} s); the API read them in {load_s:.2} s",
        incidents.len()
    );
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10}",
        "request", "median", "p99", "max", "bytes"
    );
    let mut worst_p99 = Duration::ZERO;
    for (name, path) in &pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..50 {
            let (t, b, _) = get(path);
            times.push(t);
            bytes = b;
        }
        times.sort();
        let (median, p99, max) = (
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
        );
        worst_p99 = worst_p99.max(p99);
        println!(
            "{name:<20} {:>8.2}ms {:>8.2}ms {:>8.2}ms {bytes:>10}",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        println!("BENCH api_{name}_p99_ms={:.2}", p99.as_secs_f64() * 1e3);
        println!(
            "BENCH api_{name}_median_ms={:.2}",
            median.as_secs_f64() * 1e3
        );
    }
    println!("BENCH api_findings_total={findings}");
    println!("BENCH api_incidents_total={}", incidents.len());
    println!("BENCH api_load_s={load_s:.2}");
    println!(
        "BENCH api_worst_p99_ms={:.2}",
        worst_p99.as_secs_f64() * 1e3
    );
}
