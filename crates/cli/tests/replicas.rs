//! Replicas on one PostgreSQL state, as a user runs them: three `unseen serve --store
//! postgres://…` processes, each given the same generated history at once by a
//! Collector of its own, report every episode of the contract exactly once across their
//! three findings files. Then the faults: PostgreSQL's connections cut mid-stream, and
//! the replica holding the findings sink's lease killed.
//!
//! `UNSEEN_TEST_POSTGRES` names the database (default: the local server, trust auth).
//! Each test works in a schema of its own, dropped at the end.

mod serve_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serve_support::*;

fn url() -> String {
    std::env::var("UNSEEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([url().as_str(), "-Atqc", sql])
        .output()
        .expect("psql (the PostgreSQL client) runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A schema for one test, dropped when it ends (pass or fail).
struct Schema(String);

impl Schema {
    fn new(test: &str) -> Schema {
        // The process id alone repeats (ids wrap around on a busy machine); the clock's
        // nanoseconds make the name a run's own.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("unseen_it_{test}_{}_{nanos}", std::process::id());
        psql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        Schema(name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                url().as_str(),
                "-Atqc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .output();
    }
}

fn replica(dir: &std::path::Path, i: usize, schema: &Schema) -> (ServeCmd, Server) {
    let sub = dir.join(format!("replica-{i}"));
    std::fs::create_dir_all(&sub).unwrap();
    let mut cmd = ServeCmd::new(&sub);
    cmd.extra = vec![
        "--store".into(),
        url(),
        "--store-schema".into(),
        schema.0.clone(),
    ];
    let server = cmd.spawn();
    (cmd, server)
}

/// The finding ids of every replica's findings file, all together (duplicates kept).
fn all_ids(cmds: &[ServeCmd]) -> Vec<String> {
    cmds.iter().flat_map(|c| file_ids(&c.findings)).collect()
}

/// Sends the history to every address at once, one sender thread per replica, each
/// request until acknowledged. A request never acknowledged fails the test with every
/// replica's log (what refused it, or where it hung).
fn send_to_all(addrs: &[&Mutex<SocketAddr>], history: &History, cmds: &[ServeCmd]) {
    let failed = std::thread::scope(|s| {
        let senders: Vec<_> = addrs
            .iter()
            .map(|addr| {
                s.spawn(|| {
                    for body in &history.bodies {
                        send_until_acked(addr, body, Duration::from_secs(120));
                    }
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|t| t.join())
            .filter(Result::is_err)
            .count()
    });
    if failed > 0 {
        let logs: Vec<String> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| format!("--- replica {i} ---\n{}", c.log_text()))
            .collect();
        panic!(
            "{failed} sender(s) failed (their panics are above)\n{}",
            logs.join("\n")
        );
    }
}

/// No replica's log says it panicked. A replica goes on after a panic in a call that
/// held its memory (it reads that memory again from the database), so the tests above
/// would pass over such a bug without this.
fn assert_no_replica_panicked(cmds: &[ServeCmd]) {
    for (i, cmd) in cmds.iter().enumerate() {
        let log = cmd.log_text();
        assert!(!log.contains("panicked"), "replica {i} panicked:\n{log}");
    }
}

#[test]
fn three_replicas_report_each_episode_exactly_once() {
    let schema = Schema::new("three");
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<(ServeCmd, Server)> =
        (0..3).map(|i| replica(dir.path(), i, &schema)).collect();
    let history = history(31, 2, 600);
    let addrs: Vec<Mutex<SocketAddr>> = replicas.iter().map(|(_, s)| Mutex::new(s.http)).collect();
    let cmds: Vec<ServeCmd> = replicas.iter().map(|(c, _)| c.clone()).collect();
    send_to_all(&addrs.iter().collect::<Vec<_>>(), &history, &cmds);
    // Every request was acknowledged, so every episode is committed; the sinks deliver
    // them (one replica at a time, whichever holds the lease).
    let delivered = wait_for(Duration::from_secs(60), || {
        all_ids(&cmds).len() >= history.expected.len()
    });
    let got = all_ids(&cmds);
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert!(
        delivered,
        "{} of {} findings delivered",
        got.len(),
        history.expected.len()
    );
    assert_eq!(
        got.len(),
        unique.len(),
        "a finding was reported twice across the replicas"
    );
    let (missing, extra) = compare(&got, &history.expected);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    // Key states are in the state log until a fold writes them to `unseen_keys`: the
    // count that every decision kept is the state's.
    assert_eq!(
        psql(&format!(
            "SELECT value FROM {}.unseen_meta WHERE name = 'key_count'",
            schema.0
        )),
        history.keys.to_string(),
        "one state: every key once"
    );
    assert_no_replica_panicked(&cmds);
    for (_, server) in replicas {
        server.kill();
    }
}

#[test]
fn connections_cut_mid_stream_lose_nothing_and_a_dead_lease_holder_is_replaced() {
    let schema = Schema::new("faults");
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<(ServeCmd, Server)> =
        (0..2).map(|i| replica(dir.path(), i, &schema)).collect();
    let history = history(32, 2, 600);
    let cmds: Vec<ServeCmd> = replicas.iter().map(|(c, _)| c.clone()).collect();
    let addrs: Vec<Mutex<SocketAddr>> = replicas.iter().map(|(_, s)| Mutex::new(s.http)).collect();
    let half = history.bodies.len() / 2;

    // First half to replica 0, cutting every connection of unseen to PostgreSQL at a
    // third of it: requests in flight fail (503, retried by the sender), the replica
    // connects again by itself.
    let cut_at = half / 3;
    let mut cuts = 0;
    let mut after_cut = Vec::new();
    for (i, body) in history.bodies[..half].iter().enumerate() {
        if i == cut_at {
            cuts = psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'unseen'",
            )
            .parse::<u32>()
            .unwrap();
            // The first request after the cut meets the dead connection: "unavailable,
            // retry" (503), never a success that was not committed nor a client error;
            // then the replica reconnects by itself.
            let addr = *addrs[0].lock().unwrap();
            let recovered = wait_for(Duration::from_secs(60), || {
                let status = http(addr, "POST", "/v1/metrics", "application/x-protobuf", body)
                    .map_or(0, |(status, _)| status);
                after_cut.push(status);
                status == 200
            });
            assert!(recovered, "the replica did not recover: {after_cut:?}");
            continue;
        }
        send_until_acked(&addrs[0], body, Duration::from_secs(120));
    }
    assert!(cuts > 0, "connections were cut");
    assert!(
        after_cut.contains(&503) && after_cut.iter().all(|s| *s == 503 || *s == 200),
        "answers after the cut: {after_cut:?}"
    );

    // The findings sink's lease holder (replica 0, the one that committed) is killed;
    // replica 1 takes the lease once it expires and delivers what is left.
    let holder = psql(&format!(
        "SELECT holder FROM {}.unseen_sink_leases WHERE name = 'file'",
        schema.0
    ));
    assert!(!holder.is_empty(), "a replica holds the file sink's lease");
    let mut replicas = replicas.into_iter();
    let (_, first) = replicas.next().unwrap();
    let (_, second) = replicas.next().unwrap();
    first.kill();
    for body in &history.bodies[half..] {
        send_until_acked(&addrs[1], body, Duration::from_secs(120));
    }
    let delivered = wait_for(
        Duration::from_secs(unseen_store_postgres::LEASE_SECONDS as u64 + 60),
        || all_ids(&cmds).into_iter().collect::<BTreeSet<_>>().len() >= history.expected.len(),
    );
    let got = all_ids(&cmds);
    assert!(
        delivered,
        "{} distinct of {} findings delivered",
        got.iter().collect::<BTreeSet<_>>().len(),
        history.expected.len()
    );
    let (missing, extra) = compare(&got, &history.expected);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert!(
        !file_ids(&cmds[1].findings).is_empty(),
        "the second replica delivered after the first died"
    );
    let new_holder = psql(&format!(
        "SELECT holder FROM {}.unseen_sink_leases WHERE name = 'file'",
        schema.0
    ));
    assert_ne!(new_holder, holder, "the lease passed to the live replica");
    assert_no_replica_panicked(&cmds);
    second.kill();
}
