//! The webhook against a real HTTP server on 127.0.0.1: outages, retries, restarts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use unseen_sinks::webhook::WEBHOOK_BATCH;
use unseen_sinks::{SinkConfig, SinkError};

const LIMIT: Duration = Duration::from_secs(20);

fn set(ids: Vec<String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

/// Down (nothing listening), then up but answering 503, then well: every finding
/// arrives, and the batches are JSON arrays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_after_an_outage_and_errors() {
    for backend in Backend::all() {
        let store = backend.store();
        let addr = closed_port();
        let run = start(store.clone(), vec![webhook(addr)]);
        let n = WEBHOOK_BATCH * 2 + 5;
        let expected = ids(&add_findings(store.as_ref(), 0..n));
        run.notify.notify_waiters();
        // Several connection attempts fail meanwhile (20 ms .. 200 ms backoff).
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            pending_count(store.as_ref(), "webhook"),
            n,
            "nothing acked while down"
        );

        let rx = Receiver::new(vec![
            Reply::Status(503),
            Reply::Status(500),
            Reply::Status(502),
        ]);
        let (_, stop_rx, _) = serve(rx.clone(), addr).await;
        wait_until("every finding is acked", LIMIT, || {
            pending_count(store.as_ref(), "webhook") == 0
        })
        .await;
        run.stop().await;
        stop_rx.cancel();

        let requests = rx.requests();
        assert_eq!(
            requests
                .iter()
                .map(|r| r.status)
                .take(3)
                .collect::<Vec<_>>(),
            [503, 500, 502]
        );
        assert!(requests
            .iter()
            .all(|r| r.content_type.as_deref() == Some("application/json")));
        assert!(requests.iter().all(|r| r.ids.len() <= WEBHOOK_BATCH));
        let accepted = rx.accepted_ids();
        assert_eq!(
            set(accepted.clone()),
            set(expected.clone()),
            "{}",
            backend.name()
        );
        // Acked after each 2xx, so nothing accepted is sent again here.
        assert_eq!(accepted, expected, "{}: in log order, once", backend.name());
    }
}

/// Default mode: the webhook is an alerting sink and receives the incidents (opened,
/// then closed), never the findings one by one; the findings file receives the findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_incidents_and_the_file_gets_findings() {
    use unseen_store::conformance::{sighting, triage_opts};
    for backend in Backend::all() {
        let store = backend.store();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let addr = closed_port();
        let rx = Receiver::new(vec![]);
        let (_, stop_rx, _) = serve(rx.clone(), addr).await;
        let run = start(
            store.clone(),
            vec![
                SinkConfig::File {
                    path: path.clone(),
                    format: Default::default(),
                },
                webhook(addr),
            ],
        );
        // One image rolled out to three nodes, then a point past the rollout window.
        let node = |n: &str| unseen_normalize::Key {
            host: n.into(),
            cluster: "a".into(),
            node: n.into(),
            image: "registry.example/team/new".into(),
        };
        let rollout: Vec<_> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| sighting(&node(n), 10_000))
            .collect();
        let first = store.apply(&rollout, &triage_opts(10_000)).unwrap();
        let findings: Vec<String> = first.findings().map(|f| f.finding_id.clone()).collect();
        let incident = first.records[1].1.incident().unwrap().incident_id.clone();
        store
            .apply(&[sighting(&node("n1"), 10_400)], &triage_opts(10_400))
            .unwrap();
        run.notify.notify_waiters();
        wait_until("both sinks drained", LIMIT, || {
            pending_count(store.as_ref(), "webhook") == 0
                && pending_count(store.as_ref(), "file") == 0
        })
        .await;
        run.stop().await;
        stop_rx.cancel();
        assert_eq!(
            rx.accepted_ids(),
            [format!("{incident} Open"), format!("{incident} Closed")],
            "{}",
            backend.name()
        );
        assert_eq!(file_ids(&path), findings, "{}", backend.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_respected() {
    let rx = Receiver::new(vec![
        Reply::RetryAfter(429, "1"),
        Reply::RetryAfter(503, "1"),
    ]);
    let (addr, stop_rx, _) = serve(rx.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let store = Backend::mem().store();
    // A 20 ms backoff: only Retry-After can explain a one-second wait.
    let run = start(store.clone(), vec![webhook(addr)]);
    let expected = ids(&add_findings(store.as_ref(), 0..3));
    run.notify.notify_waiters();
    wait_until("delivered", LIMIT, || {
        pending_count(store.as_ref(), "webhook") == 0
    })
    .await;
    run.stop().await;
    stop_rx.cancel();

    let requests = rx.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 503, 200]
    );
    for pair in requests.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    }
    assert_eq!(rx.accepted_ids(), expected);
}

/// A 4xx is a misconfiguration to fix, not a reason to drop findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_retried_not_dropped() {
    let rx = Receiver::new(vec![
        Reply::Status(401),
        Reply::Status(404),
        Reply::Status(400),
    ]);
    let (addr, stop_rx, _) = serve(rx.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let store = Backend::mem().store();
    let run = start(store.clone(), vec![webhook(addr)]);
    let expected = ids(&add_findings(store.as_ref(), 0..4));
    run.notify.notify_waiters();
    wait_until("delivered", LIMIT, || {
        pending_count(store.as_ref(), "webhook") == 0
    })
    .await;
    run.stop().await;
    stop_rx.cancel();
    let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 404, 400, 200]);
    assert_eq!(rx.accepted_ids(), expected);
}

/// 413: the sink halves its batches until the receiver takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_too_large_halves_the_batch() {
    let rx = Receiver::new(vec![]);
    *rx.max_batch.lock().unwrap() = Some(30);
    let (addr, stop_rx, _) = serve(rx.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let store = Backend::mem().store();
    let run = start(store.clone(), vec![webhook(addr)]);
    let expected = ids(&add_findings(store.as_ref(), 0..130));
    run.notify.notify_waiters();
    wait_until("delivered", LIMIT, || {
        pending_count(store.as_ref(), "webhook") == 0
    })
    .await;
    run.stop().await;
    stop_rx.cancel();
    let sizes: Vec<(usize, u16)> = rx
        .requests()
        .iter()
        .map(|r| (r.ids.len(), r.status))
        .collect();
    // 100 → 50 → 25, then batches of at most 25.
    assert_eq!(&sizes[..3], &[(100, 413), (50, 413), (25, 200)]);
    assert!(
        sizes[3..].iter().all(|&(n, s)| n <= 25 && s == 200),
        "{sizes:?}"
    );
    assert_eq!(rx.accepted_ids(), expected);
}

/// Findings queued while the receiver is down survive a restart of the process (the
/// outbox is in the store) and arrive when it comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_restart() {
    for mut backend in [Backend::redb()] {
        let addr = closed_port();
        let run = start(backend.store(), vec![webhook(addr)]);
        let expected = ids(&add_findings(backend.store().as_ref(), 0..20));
        run.notify.notify_waiters();
        tokio::time::sleep(Duration::from_millis(200)).await;
        run.stop().await; // the final attempt fails too: the receiver is still down

        backend.restart();
        let store = backend.store();
        assert_eq!(
            pending_count(store.as_ref(), "webhook"),
            20,
            "kept across the restart"
        );
        let rx = Receiver::new(vec![]);
        let (_, stop_rx, _) = serve(rx.clone(), addr).await;
        let run = start(store.clone(), vec![webhook(addr)]);
        wait_until("delivered", LIMIT, || {
            pending_count(store.as_ref(), "webhook") == 0
        })
        .await;
        run.stop().await;
        stop_rx.cancel();
        assert_eq!(rx.accepted_ids(), expected);
    }
}

/// A crash after the receiver's 2xx and before the ack: the batch is sent again
/// (at least once), and de-duplicating by `finding_id` gives the full set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_repeats_a_batch_that_dedups_by_finding_id() {
    let backend = Backend::redb();
    let real = backend.store();
    real.register_sink("webhook").unwrap();
    let expected = ids(&add_findings(real.as_ref(), 0..10));
    let rx = Receiver::new(vec![]);
    let (addr, stop_rx, _) = serve(rx.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let flaky: std::sync::Arc<dyn unseen_store::StateStore> = FailingAck::times(real.clone(), 1);
    let run = start(flaky, vec![webhook(addr)]);
    wait_until("delivered", LIMIT, || {
        pending_count(real.as_ref(), "webhook") == 0
    })
    .await;
    run.stop().await;
    stop_rx.cancel();
    let accepted = rx.accepted_ids();
    assert_eq!(accepted.len(), 20, "the batch arrived twice: {accepted:?}");
    assert_eq!(set(accepted), set(expected));
}

/// Both sinks read the same log under their own cursors: a webhook outage does not
/// hold back the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let store = Backend::redb().store();
    let addr = closed_port();
    let run = start(
        store.clone(),
        vec![
            SinkConfig::File {
                path: path.clone(),
                format: Default::default(),
            },
            webhook(addr),
        ],
    );
    let expected = ids(&add_findings(store.as_ref(), 0..7));
    run.notify.notify_waiters();
    wait_until("the file has them", LIMIT, || file_ids(&path).len() == 7).await;
    assert_eq!(pending_count(store.as_ref(), "webhook"), 7);
    let rx = Receiver::new(vec![]);
    let (_, stop_rx, _) = serve(rx.clone(), addr).await;
    wait_until("the webhook has them", LIMIT, || {
        pending_count(store.as_ref(), "webhook") == 0
    })
    .await;
    run.stop().await;
    stop_rx.cancel();
    assert_eq!(file_ids(&path), expected);
    assert_eq!(rx.accepted_ids(), expected);
    assert_eq!(store.log_len().unwrap(), 0, "passed by both: pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_without_showing_credentials() {
    for (url, expect) in [
        ("not a url", "not a valid URL"),
        ("ftp://example.com/x", "only http:// and https://"),
    ] {
        let err = unseen_sinks::start(
            Backend::mem().store(),
            vec![SinkConfig::webhook(url)],
            Default::default(),
            Default::default(),
        )
        .expect_err(url);
        assert!(matches!(err, SinkError::Http { .. }));
        assert!(err.to_string().contains(expect), "{err}");
    }
    let err = unseen_sinks::start(
        Backend::mem().store(),
        vec![SinkConfig::webhook(
            "ftp://user:hunter2@example.com/x?token=s3cret",
        )],
        Default::default(),
        Default::default(),
    )
    .expect_err("ftp");
    let msg = err.to_string();
    assert!(!msg.contains("hunter2") && !msg.contains("s3cret"), "{msg}");
    assert!(msg.contains("ftp://example.com/x"), "{msg}");
}
