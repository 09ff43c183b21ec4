//! The Alertmanager sink against a real Alertmanager (Debian's `prometheus-alertmanager`,
//! which the test script installs): an incident's alert appears in `/api/v2/alerts` with
//! the documented labels, is re-sent while open (its `updatedAt` moves), and resolves
//! when the incident closes.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use unseen_model::{ctx, Context, OwnedContext};
use unseen_sinks::alertmanager::AlertmanagerConfig;
use unseen_sinks::SinkConfig;
use unseen_store::conformance::{sighting, triage_opts};
use unseen_store::{MemStore, StateStore};

const LIMIT: Duration = Duration::from_secs(30);

/// A running Alertmanager, stopped on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    for candidate in ["prometheus-alertmanager", "alertmanager"] {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate.to_string();
        }
    }
    panic!(
        "no Alertmanager binary (prometheus-alertmanager): run scripts/test.sh, which installs Debian's prometheus-alertmanager"
    );
}

async fn start_alertmanager() -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: a single instance on loopback.
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let ready = format!("{}/-/ready", am.url);
    poll("alertmanager is ready", || async {
        reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    })
    .await;
    am
}

async fn alerts(url: &str) -> Vec<Value> {
    let body = reqwest::get(format!("{url}/api/v2/alerts"))
        .await
        .expect("GET /api/v2/alerts")
        .text()
        .await
        .unwrap();
    serde_json::from_str::<Vec<Value>>(&body).expect("an array of alerts")
}

/// Polls an external process (Alertmanager has no way to notify us) every 50 ms until
/// `probe` gives a value; panics with `what` after [`LIMIT`].
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls Alertmanager until `cond` holds of its alerts.
async fn wait_alerts(url: &str, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    poll(what, || async {
        let got = alerts(url).await;
        cond(&got).then_some(got)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_fire_are_resent_and_resolve_in_a_real_alertmanager() {
    let am = start_alertmanager().await;
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let mut config = AlertmanagerConfig::new(am.url.clone());
    config.resend = Duration::from_secs(1);
    config.link = Some("https://unseen.example".into());
    config.http = fast_http();
    let run = start(store.clone(), vec![SinkConfig::Alertmanager(config)]);

    // A new image rolled out to three nodes of cluster `a`, in namespace `payments`.
    let mut context = Context::default();
    context.0[ctx::NAMESPACE] = Some("payments");
    let node = |n: &str| unseen_normalize::Key {
        host: n.into(),
        cluster: "a".into(),
        node: n.into(),
        image: "registry.example/team/new".into(),
    };
    let rollout: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            let mut s = sighting(&node(n), 10_000);
            s.context = OwnedContext::new(&context);
            s
        })
        .collect();
    let applied = store.apply(&rollout, &triage_opts(10_000)).unwrap();
    let incident = applied
        .records
        .iter()
        .find_map(|(_, r)| r.incident())
        .expect("the rollout opened an incident")
        .clone();
    run.notify.notify_waiters();

    let id = incident.incident_id.clone();
    let firing = wait_alerts(&am.url, "the incident's alert fires", |a| {
        a.iter().any(|x| x["labels"]["incident_id"] == id.as_str())
    })
    .await;
    let alert = firing
        .iter()
        .find(|x| x["labels"]["incident_id"] == id.as_str())
        .unwrap();
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "UnseenContainerImage");
    assert_eq!(labels["severity"], "high");
    assert_eq!(labels["scope"], "fleet");
    assert_eq!(labels["kind"], "image");
    assert_eq!(labels["namespace"], "payments");
    assert!(
        labels.get("cluster").is_none(),
        "a fleet-wide incident has no cluster label: {labels}"
    );
    assert_eq!(alert["status"]["state"], "active");
    let annotations = &alert["annotations"];
    assert_eq!(annotations["image"], "registry.example/team/new");
    assert_eq!(
        annotations["link"],
        format!("https://unseen.example/incidents/{id}").as_str()
    );
    assert_eq!(alert["generatorURL"], annotations["link"]);
    assert_eq!(alert["startsAt"], "1970-01-01T02:46:40.000Z");

    // Re-sent while open, with what the incident holds now (the members that joined
    // after the first post): Alertmanager records a later update.
    let updated = alert["updatedAt"].as_str().unwrap().to_string();
    wait_alerts(
        &am.url,
        "the open incident is re-sent with its members",
        |a| {
            a.iter().any(|x| {
                x["labels"]["incident_id"] == id.as_str()
                    && x["updatedAt"].as_str().is_some_and(|u| u != updated)
                    && x["annotations"]["nodes"] == "n1, n2, n3"
                    && x["annotations"]["findings"] == "3"
            })
        },
    )
    .await;

    // The stream passes the rollout window: the incident closes and its alert resolves.
    store
        .apply(&[sighting(&node("n1"), 10_400)], &triage_opts(10_400))
        .unwrap();
    run.notify.notify_waiters();
    wait_alerts(&am.url, "the closed incident's alert resolves", |a| {
        !a.iter().any(|x| x["labels"]["incident_id"] == id.as_str())
    })
    .await;
    wait_until("the outbox is drained", LIMIT, || {
        pending_count(store.as_ref(), "alertmanager") == 0
    })
    .await;
    assert!(
        store.open_incidents().unwrap().is_empty(),
        "nothing is left to re-send"
    );
    run.stop().await;
}
