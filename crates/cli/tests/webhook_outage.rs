//! The webhook outage test: the webhook's endpoint is down while `unseen serve` produces
//! findings; they queue durably; the server restarts (SIGTERM, then SIGKILL); the
//! endpoint comes back and every incident the findings opened arrives (the webhook is an
//! alerting sink: in default mode it receives incidents, docs/triage.md).

mod serve_support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serve_support::*;

#[test]
fn findings_survive_a_webhook_outage_and_restarts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let hook = free_addr(); // nothing listens there yet
    let mut cmd = ServeCmd::new(dir.path());
    cmd.webhook = Some(format!("http://{hook}/hook"));
    // Every request is signed; the receiver refuses any whose signature does not verify.
    let secret = b"a shared secret, 32 bytes or so..".to_vec();
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    cmd.extra.extend([
        "--webhook-secret-file".to_string(),
        secret_file.display().to_string(),
    ]);
    let history = history(11, 1, 600);
    assert!(!history.expected.is_empty());

    let server = cmd.spawn();
    let addr = Mutex::new(server.http);
    for body in &history.bodies {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    // The file sink is not held back by the webhook.
    let expected_len = history.expected.len();
    let filed = wait_for(Duration::from_secs(15), || {
        file_ids(&cmd.findings).len() >= expected_len
    });
    assert!(
        filed,
        "the findings file did not get the findings\n{}",
        cmd.log_text()
    );

    // Restart twice while the endpoint is down: gracefully, then a crash.
    assert!(
        server.terminate(Duration::from_secs(15)),
        "no clean exit on SIGTERM\n{}",
        cmd.log_text()
    );
    // After each start, wait until its webhook sink has tried (and failed: nothing
    // listens) to deliver the pending incidents, so each restart really met the outage.
    let failures = || cmd.log_text().matches("delivery failed").count();
    let mut server = cmd.spawn();
    let before = failures();
    assert!(
        wait_for(Duration::from_secs(20), || failures() > before),
        "the restarted server's webhook sink made no attempt\n{}",
        cmd.log_text()
    );
    assert!(
        server.alive(),
        "the server did not restart\n{}",
        cmd.log_text()
    );
    server.kill();
    let server = cmd.spawn();
    let before = failures();
    assert!(
        wait_for(Duration::from_secs(20), || failures() > before),
        "the server restarted after the crash made no delivery attempt\n{}",
        cmd.log_text()
    );

    // Every finding belongs to an incident; each incident is sent when it opens.
    let incidents: BTreeSet<String> = file_incidents(&cmd.findings)
        .into_iter()
        .map(|id| format!("{id} open"))
        .collect();
    let receiver = Receiver::start_signed(hook, Some(secret.clone()));
    let delivered = wait_for(Duration::from_secs(30), || {
        let got: BTreeSet<String> = receiver.ids().into_iter().collect();
        incidents.is_subset(&got)
    });
    let clean = server.terminate(Duration::from_secs(15));

    let file: Vec<String> = file_ids(&cmd.findings);
    let file_set: BTreeSet<String> = file.iter().cloned().collect();
    let received = receiver.ids();
    let received_set: BTreeSet<String> = received.iter().cloned().collect();
    eprintln!(
        "webhook outage: {} episodes, {} incidents, {} records received in {} requests ({} after de-duplication), {:?}",
        expected_len,
        incidents.len(),
        received.len(),
        *receiver.requests.lock().unwrap(),
        received_set.len(),
        started.elapsed()
    );
    assert!(
        delivered,
        "not every incident reached the webhook\n{}",
        cmd.log_text()
    );
    assert_eq!(
        file.len(),
        file_set.len(),
        "the findings file repeats a finding"
    );
    assert_eq!(
        file_set, history.expected,
        "the findings file is the contract's episodes"
    );
    let opened: BTreeSet<String> = received_set
        .iter()
        .filter(|r| r.ends_with(" open"))
        .cloned()
        .collect();
    assert_eq!(
        opened, incidents,
        "the webhook got exactly the incidents of the file's findings (de-duplicated)"
    );
    assert_eq!(
        *receiver.verified.lock().unwrap(),
        *receiver.requests.lock().unwrap(),
        "every batch the receiver took carried a valid HMAC signature"
    );
    assert!(*receiver.verified.lock().unwrap() > 0);
    let log = cmd.log_text();
    assert!(log.contains("delivery failed"), "{log}");
    // The test's windows set `--current`, which the streaming rule does not use.
    assert!(
        log.contains("setting `current` has no effect on serve"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file carries no ANSI colour codes:\n{log}"
    );
    assert!(
        incidents.len() < file_set.len(),
        "{} incidents for {} findings: the episodes of a rollout share one",
        incidents.len(),
        file_set.len()
    );
    assert!(clean, "no clean exit on SIGTERM\n{}", cmd.log_text());
}
