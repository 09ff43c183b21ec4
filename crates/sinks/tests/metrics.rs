//! The sinks' metrics, as Prometheus renders them (own test binary: one global recorder).

mod common;

use std::time::Duration;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_errors_and_pending_per_sink() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("recorder");
    let store = Backend::mem().store();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let addr = closed_port();
    let run = start(
        store.clone(),
        vec![
            unseen_sinks::SinkConfig::File {
                path: path.clone(),
                format: Default::default(),
            },
            webhook(addr),
        ],
    );
    add_findings(store.as_ref(), 0..12);
    run.notify.notify_waiters();
    wait_until(
        "the file sink delivered and the webhook failed twice",
        Duration::from_secs(20),
        || {
            let text = handle.render();
            value(&text, r#"unseen_findings_delivered_total{sink="file"}"#) == Some(12.0)
                && value(&text, r#"unseen_sink_errors_total{sink="webhook"}"#)
                    .is_some_and(|v| v >= 2.0)
        },
    )
    .await;
    let text = handle.render();
    assert_eq!(
        value(&text, r#"unseen_sink_pending{sink="webhook"}"#),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"unseen_sink_pending{sink="file"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"unseen_findings_delivered_total{sink="webhook"}"#),
        None,
        "{text}"
    );

    let rx = Receiver::new(vec![]);
    let (_, stop_rx, _) = serve(rx.clone(), addr).await;
    wait_until("the webhook delivered", Duration::from_secs(20), || {
        value(
            &handle.render(),
            r#"unseen_findings_delivered_total{sink="webhook"}"#,
        ) == Some(12.0)
    })
    .await;
    run.stop().await;
    stop_rx.cancel();
    // The gauge is set when the sink looks at its outbox: after the delivery, the next
    // look finds it empty.
    let text = handle.render();
    assert_eq!(
        value(&text, r#"unseen_sink_pending{sink="webhook"}"#),
        Some(0.0),
        "{text}"
    );
    assert!(text.contains("# HELP unseen_sink_errors_total"), "{text}");
    // No finding content in any label.
    assert!(!text.contains("image-"), "{text}");
}
