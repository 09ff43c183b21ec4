//! The findings file: order, acks, and exactly once across crashes, on both stores.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use unseen_sinks::file::FILE_BATCH;
use unseen_sinks::{SinkConfig, SinkError};
use unseen_store::StateStore;

const LIMIT: Duration = Duration::from_secs(20);

fn file_sink(path: &std::path::Path) -> Vec<SinkConfig> {
    vec![SinkConfig::File {
        path: path.to_path_buf(),
        format: Default::default(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_in_several_batches_and_acks() {
    for backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/findings.jsonl");
        let store = backend.store();
        let run = start(store.clone(), file_sink(&path));
        let n = 2 * FILE_BATCH + 17;
        let expected = ids(&add_findings(store.as_ref(), 0..n));
        run.notify.notify_waiters();
        wait_until("every finding is written and acked", LIMIT, || {
            pending_count(store.as_ref(), "file") == 0 && file_ids(&path).len() >= n
        })
        .await;
        run.stop().await;
        assert_eq!(
            file_ids(&path),
            expected,
            "{}: the log, in order, once",
            backend.name()
        );
        assert_eq!(
            store.log_len().unwrap(),
            0,
            "{}: acked entries are pruned",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_after_the_cursor() {
    for mut backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let run = start(backend.store(), file_sink(&path));
        let mut expected = ids(&add_findings(backend.store().as_ref(), 0..3));
        run.stop().await; // the final drain writes them
        assert_eq!(file_ids(&path), expected);

        backend.restart();
        let store = backend.store();
        let run = start(store.clone(), file_sink(&path));
        expected.extend(ids(&add_findings(store.as_ref(), 3..5)));
        run.stop().await;
        assert_eq!(
            file_ids(&path),
            expected,
            "{}: appended, nothing repeated",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_sink_before_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let store = Backend::mem().store();
    // A tick far beyond the wait below: only the notification can deliver in time.
    let run = start_with_tick(
        store.clone(),
        file_sink(&path),
        Duration::from_secs(24 * 3600),
    );
    for round in 0..3 {
        add_findings(store.as_ref(), round..round + 1);
        run.notify.notify_waiters();
        wait_until("the notified finding is written", LIMIT, || {
            file_ids(&path).len() > round
        })
        .await;
    }
    run.stop().await;
    assert_eq!(file_ids(&path).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let store = Backend::mem().store();
    let run = start(store.clone(), file_sink(&path));
    // No notification: only the final drain on shutdown can have written these.
    let expected = ids(&add_findings(store.as_ref(), 0..10));
    run.stop().await;
    assert_eq!(file_ids(&path), expected);
    assert_eq!(pending_count(store.as_ref(), "file"), 0);
}

/// The crash between fsync and ack: the lines are in the file, the cursor is before
/// them. The restarted sink must recognise them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_fsync_and_ack_repeats_nothing() {
    for mut backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let real = backend.store();
        real.register_sink("file").unwrap();
        let mut expected = ids(&add_findings(real.as_ref(), 0..FILE_BATCH + 100));

        let crashing_calls = FailingAck::always(real.clone());
        let crashing: Arc<dyn StateStore> = crashing_calls.clone();
        drop(real);
        let run = start(crashing.clone(), file_sink(&path));
        wait_until("the first batch is written", LIMIT, || {
            file_ids(&path).len() >= FILE_BATCH
        })
        .await;
        // Let it retry (in-process recovery, its ack fails again) a few times.
        let calls = || {
            crashing_calls
                .pending_calls
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let seen = calls();
        wait_until("the sink retried", LIMIT, || calls() >= seen + 3).await;
        run.kill().await;
        drop(crashing);
        drop(crashing_calls);
        assert_eq!(
            file_ids(&path).len(),
            FILE_BATCH,
            "nothing acked, nothing written twice"
        );
        assert_eq!(
            pending_count(backend.store().as_ref(), "file"),
            FILE_BATCH + 100
        );

        backend.restart();
        let store = backend.store();
        let run = start(store.clone(), file_sink(&path));
        expected.extend(ids(&add_findings(
            store.as_ref(),
            FILE_BATCH + 100..FILE_BATCH + 110,
        )));
        run.notify.notify_waiters();
        wait_until("everything is written", LIMIT, || {
            pending_count(store.as_ref(), "file") == 0
        })
        .await;
        run.stop().await;
        assert_eq!(
            file_ids(&path),
            expected,
            "{}: every finding once, in order",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_acks_while_running_repeat_nothing() {
    for backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let real = backend.store();
        real.register_sink("file").unwrap();
        let expected = ids(&add_findings(real.as_ref(), 0..50));
        // The batch's ack fails, then recovery's own ack fails, then acks work.
        let flaky: Arc<dyn StateStore> = FailingAck::times(real.clone(), 2);
        let run = start(flaky, file_sink(&path));
        wait_until("everything is acked", LIMIT, || {
            pending_count(real.as_ref(), "file") == 0
        })
        .await;
        run.stop().await;
        assert_eq!(file_ids(&path), expected, "{}: once each", backend.name());
    }
}

/// A crash in the middle of a write: complete lines, then a torn one; nothing acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_line_is_cut_and_written_again() {
    for backend in Backend::all() {
        for torn_len in [5usize, 200] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("findings.jsonl");
            let store = backend.store();
            store.register_sink("file").unwrap();
            let before = store.pending("file", usize::MAX).unwrap().len();
            assert_eq!(before, 0);
            let findings = add_findings(store.as_ref(), torn_len..torn_len + 5);
            let mut f = std::fs::File::create(&path).unwrap();
            for finding in &findings[..3] {
                writeln!(f, "{}", finding.to_json_line()).unwrap();
            }
            let line = findings[3].to_json_line();
            f.write_all(&line.as_bytes()[..torn_len]).unwrap();
            drop(f);

            let run = start(store.clone(), file_sink(&path));
            run.notify.notify_waiters();
            wait_until("everything is written", LIMIT, || {
                pending_count(store.as_ref(), "file") == 0
            })
            .await;
            run.stop().await;
            assert_eq!(
                file_ids(&path),
                ids(&findings),
                "{}, torn after {torn_len} bytes: the three complete lines recognised, the torn one rewritten",
                backend.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_first_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let store = Backend::mem().store();
    store.register_sink("file").unwrap();
    let findings = add_findings(store.as_ref(), 0..2);
    std::fs::write(&path, &findings[0].to_json_line().as_bytes()[..40]).unwrap();
    let run = start(store.clone(), file_sink(&path));
    run.stop().await;
    assert_eq!(file_ids(&path), ids(&findings));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_ours_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "line one\nsomething without a newline").unwrap();
    let store = Backend::mem().store();
    let err = unseen_sinks::start(
        store,
        file_sink(&path),
        Default::default(),
        Default::default(),
    )
    .expect_err("a foreign file is refused");
    let msg = err.to_string();
    assert!(matches!(err, SinkError::File { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the path: {msg}"
    );
    assert!(msg.contains("not a findings file"), "says why: {msg}");
    assert!(msg.contains("move it away"), "says what to do: {msg}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "line one\nsomething without a newline",
        "left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let path = blocker.join("findings.jsonl");
    let err = unseen_sinks::start(
        Backend::mem().store(),
        file_sink(&path),
        Default::default(),
        Default::default(),
    )
    .expect_err("cannot create a file under a file");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names the path: {msg}"
    );
    assert!(
        msg.contains("choose another findings path"),
        "says what to do: {msg}"
    );
}

/// A write that fails (disk full) acknowledges nothing; the sink keeps retrying and
/// still stops on request.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_keeps_findings_pending() {
    let store = Backend::mem().store();
    let counting = FailingAck::times(store.clone(), 0);
    let run = start(
        counting.clone(),
        file_sink(std::path::Path::new("/dev/full")),
    );
    add_findings(store.as_ref(), 0..5);
    run.notify.notify_waiters();
    // Several attempts (each looks at the outbox first), every one of them failing.
    let calls = || {
        counting
            .pending_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let seen = calls();
    wait_until("the sink tried several times", LIMIT, || {
        calls() >= seen + 3
    })
    .await;
    assert_eq!(pending_count(store.as_ref(), "file"), 5, "nothing acked");
    run.stop().await;
    assert_eq!(
        pending_count(store.as_ref(), "file"),
        5,
        "nor by the final attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_findings_outputs_are_refused() {
    let err = unseen_sinks::start(
        Backend::mem().store(),
        vec![SinkConfig::findings("x.jsonl"), SinkConfig::findings("-")],
        Default::default(),
        Default::default(),
    )
    .expect_err("file and stdout share a cursor");
    assert!(
        matches!(err, SinkError::Duplicate { name: "file" }),
        "{err}"
    );
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = unseen_sinks::start(
        Backend::mem().store(),
        vec![],
        Default::default(),
        Default::default(),
    )
    .expect_err("no runtime");
    assert!(matches!(err, SinkError::NoRuntime));
}

/// Standard output: the test re-runs itself as a child process whose stdout it reads
/// (the harness's own output is skipped).
#[test]
fn stdout_gets_json_lines() {
    const CHILD: &str = "UNSEEN_SINKS_STDOUT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Backend::mem().store();
            let run = start(store.clone(), vec![SinkConfig::findings("-")]);
            add_findings(store.as_ref(), 0..3);
            run.stop().await;
            assert_eq!(pending_count(store.as_ref(), "file"), 0);
        });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdout_gets_json_lines",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<unseen_findings::Finding> = stdout
        .lines()
        // The harness prints "test … " without a newline before the first one.
        .filter_map(|l| l.find("{\"schema_version\"").map(|at| &l[at..]))
        .map(|l| serde_json::from_str(l).expect("a finding"))
        .collect();
    let expected = add_findings(Backend::mem().store().as_ref(), 0..3);
    assert_eq!(ids(&lines), ids(&expected), "{stdout}");
}

/// `format = "ocsf"`: every finding as an OCSF Detection Finding, once, in order, also
/// when acks fail (recovery recognises its own OCSF lines by `finding_info.uid`); the
/// lines validate against py-ocsf-models (`scripts/ocsf_validate.py`, installed by the
/// test script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_lines_are_written_once_and_validate() {
    for backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.ocsf.jsonl");
        let real = backend.store();
        real.register_sink("file").unwrap();
        let expected = ids(&add_findings(real.as_ref(), 0..50));
        let flaky: Arc<dyn StateStore> = FailingAck::times(real.clone(), 2);
        let run = start(
            flaky,
            vec![SinkConfig::File {
                path: path.clone(),
                format: unseen_sinks::Format::Ocsf,
            }],
        );
        wait_until("everything is acked", LIMIT, || {
            pending_count(real.as_ref(), "file") == 0
        })
        .await;
        run.stop().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let uids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["class_uid"], 2004, "{l}");
                v["finding_info"]["uid"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(uids, expected, "{}: once each, in order", backend.name());
        let validator = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/ocsf_validate.py"
        );
        let check = std::process::Command::new("python3")
            .arg(validator)
            .arg(&path)
            .output()
            .expect("python3 runs (scripts/test.sh installs it with py-ocsf-models)");
        assert!(
            check.status.success(),
            "the OCSF lines do not validate (run scripts/test.sh, which installs py-ocsf-models):\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// A sink removed from the configuration: its cursor goes at the next start, so the log
/// it held back is pruned (and the start says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_no_longer_configured_has_its_cursor_removed() {
    for backend in Backend::all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let store = backend.store();
        store.register_sink("file").unwrap();
        store.register_sink("webhook").unwrap();
        add_findings(store.as_ref(), 0..20);
        assert_eq!(store.log_len().unwrap(), 20, "both cursors hold the log");
        let run = start(store.clone(), file_sink(&path));
        wait_until("the file has everything", LIMIT, || {
            pending_count(store.as_ref(), "file") == 0
        })
        .await;
        run.stop().await;
        let names: Vec<String> = store.sinks().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["file"], "{}", backend.name());
        assert_eq!(
            store.log_len().unwrap(),
            0,
            "{}: nothing holds the delivered log any more",
            backend.name()
        );
    }
}
