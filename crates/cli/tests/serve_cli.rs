//! `unseen serve`, `check-config` and `baseline import` as a user runs them: the real
//! binary, real files, real ports.

mod serve_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serve_support::*;

fn unseen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unseen"));
    // The tests set what they need; nothing leaks in from the environment.
    for (name, _) in std::env::vars() {
        if name.starts_with("UNSEEN_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/unseen.toml");

#[test]
fn check_config_accepts_the_example_and_shows_env_and_flag_overrides() {
    let out = unseen()
        .args(["check-config", "--config", EXAMPLE, "--max-keys", "42"])
        .env("UNSEEN_CLUSTER_NAME", "from-env")
        .env("UNSEEN_LEARN", "7d")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cluster_name = \"from-env\""), "{stdout}");
    assert!(stdout.contains("learn = \"7d\""), "{stdout}");
    assert!(stdout.contains("max_keys = 42"), "{stdout}");
    // What it prints is itself a valid config file.
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, stdout.as_bytes()).unwrap();
    let again = unseen()
        .args(["check-config", "--config"])
        .arg(&printed)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[test]
fn bad_configuration_is_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "otlp_grpc = \"0.0.0.0:4317\"\nmax_key = 10\n").unwrap();
    for command in ["check-config", "serve"] {
        let out = unseen()
            .arg(command)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{command}: {stderr}");
        assert!(
            stderr.contains("unknown field `max_key`"),
            "{command}: {stderr}"
        );
    }
    let out = unseen()
        .args(["check-config", "--baseline", "30q"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("setting `baseline`"), "{stderr}");
    let out = unseen()
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the config file") && stderr.contains("missing.toml"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_port_in_use_and_a_locked_state_directory() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = unseen()
        .args([
            "serve",
            "--otlp-http",
            &addr,
            "--otlp-grpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (setting `otlp_http`)")),
        "{stderr}"
    );

    // A second process on the same state directory.
    let cmd = ServeCmd::new(dir.path());
    let server = cmd.spawn();
    let out = unseen()
        .args(["baseline", "import", "--data"])
        .arg(&cmd.data)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/otel_k8scluster/expected_cluster_receiver.yaml"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Is another unseen running with the same state directory?"),
        "{stderr}"
    );
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
}

/// The documented way to start: import history, then serve. What the import holds is
/// known; only episodes that open after it are reported.
#[test]
fn baseline_import_then_serve_reports_only_what_is_new_after_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(7, 2, 600);
    let split = history.bodies.len() / 2;
    // The first half as the Collector's file exporter writes it (`format: proto`).
    let file = dir.path().join("history.otlp");
    let mut out = std::fs::File::create(&file).unwrap();
    for body in &history.bodies[..split] {
        out.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        out.write_all(body).unwrap();
    }
    drop(out);
    let cmd = ServeCmd::new(dir.path());
    let import = unseen()
        .args(["baseline", "import", "--data"])
        .arg(&cmd.data)
        .args(WINDOW_ARGS)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    assert!(stderr.contains("no findings reported"), "{stderr}");

    serve_the_rest_and_expect_only_its_episodes(&cmd, &history, split);
}

/// `--learn`: sightings are recorded, nothing is reported; after learning, only what
/// is new relative to what was learned is reported (as after a baseline import).
#[test]
fn learning_records_without_reporting() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(5, 2, 600);
    let split = history.bodies.len() / 2;
    let mut cmd = ServeCmd::new(dir.path());
    cmd.extra = vec!["--learn".into(), "1h".into()];
    let server = cmd.spawn();
    let addr = Mutex::new(server.http);
    for body in &history.bodies[..split] {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
    assert!(
        file_ids(&cmd.findings).is_empty(),
        "learning reported findings"
    );
    assert!(
        cmd.log_text().contains("learning: sightings are recorded"),
        "{}",
        cmd.log_text()
    );

    // Learning over (the flag removed): the second half reports only its own episodes.
    cmd.extra.clear();
    serve_the_rest_and_expect_only_its_episodes(&cmd, &history, split);
}

/// Serves `history.bodies[split..]` and checks that the findings are exactly the
/// episodes those bodies open: what came before `split` counts as known.
fn serve_the_rest_and_expect_only_its_episodes(cmd: &ServeCmd, history: &History, split: usize) {
    let server = cmd.spawn();
    let addr = Mutex::new(server.http);
    for body in &history.bodies[split..] {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    let expected: BTreeSet<String> = history
        .opened_by
        .iter()
        .filter(|(i, _)| *i >= split)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(!expected.is_empty() && expected.len() < history.expected.len());
    wait_for(Duration::from_secs(10), || {
        file_ids(&cmd.findings).len() >= expected.len()
    });
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
    let got = file_ids(&cmd.findings);
    assert_eq!(got.len(), expected.len(), "no repeats");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// `baseline import` writes no findings, so a configuration whose findings go nowhere
/// is fine for it (and still refused by `serve` and `check-config`).
#[test]
fn baseline_import_takes_a_config_without_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/otel_k8scluster/expected_cluster_receiver.yaml"
    );
    let import = unseen()
        .args(["baseline", "import", "--findings", "off", "--data"])
        .arg(dir.path().join("data"))
        .arg(fixture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    assert!(stderr.contains("no findings reported"), "{stderr}");
    for command in ["check-config", "serve"] {
        let out = unseen()
            .args([command, "--findings", "off", "--data"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("findings would go nowhere"),
            "{command}: {stderr}"
        );
    }
}

/// A state made under one key mode refuses a run under another, saying how to start
/// over; a corrupt state file is called corrupt, not "held by another process".
#[test]
fn the_state_is_bound_to_its_key_mode_and_corruption_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/otel_k8scluster/expected_cluster_receiver.yaml"
    );
    let import = |extra: &[&str]| {
        unseen()
            .args(["baseline", "import", "--data"])
            .arg(&data)
            .args(extra)
            .arg(fixture)
            .output()
            .unwrap()
    };
    let first = import(&["--cluster-name", "prod"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = import(&["--cluster-name", "prod"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for other in [
        &["--strict", "true"][..],
        &["--cluster-name", "staging"][..],
    ] {
        let out = import(other);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{other:?}: {stderr}");
        assert!(
            stderr.contains("made with key mode `default, cluster_name=prod`")
                && stderr.contains("move the state directory away"),
            "{other:?}: {stderr}"
        );
    }
    // A damaged file.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("state.redb"),
        b"this is not a redb file at all, just text",
    )
    .unwrap();
    let out = unseen()
        .args(["baseline", "import", "--data"])
        .arg(&broken)
        .arg(fixture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a state file of unseen"), "{stderr}");
    assert!(!stderr.contains("another unseen"), "{stderr}");
}

/// A stock Collector without a cluster name: its points are rejected in the partial
/// success, and the log says so (with the fix) at once, not only the metrics.
#[test]
fn rejected_points_are_logged_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = ServeCmd::new(dir.path());
    let server = cmd.spawn();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"k8s.node.name","value":{{"stringValue":"n1"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"k8s.container.ready","gauge":{{"dataPoints":[{{"timeUnixNano":"{now_ns}","asInt":"1","attributes":[{{"key":"container.image.name","value":{{"stringValue":"docker.io/library/nginx"}}}}]}}]}}}}]}}]}}]}}"#
    );
    let (status, answer) = http(
        server.http,
        "POST",
        "/v1/metrics",
        "application/json",
        body.as_bytes(),
    )
    .expect("the server answers");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("rejectedDataPoints"), "{answer}");
    let logged = wait_for(Duration::from_secs(20), || {
        let log = cmd.log_text();
        log.contains("without `k8s.cluster.name`") && log.contains("WARN")
    });
    assert!(
        logged,
        "the rejection is not in the log:\n{}",
        cmd.log_text()
    );
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
}

/// SIGHUP reads the watched files again (TLS, tokens, rules); it must not stop the
/// process, as the default action of SIGHUP would.
#[test]
fn sighup_reloads_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    let mut cmd = ServeCmd::new(dir.path());
    cmd.extra = vec!["--suppressions".into(), rules.display().to_string()];
    let mut server = cmd.spawn();
    let pid = server.child.id().to_string();
    // The handler is installed before the receivers listen, which `spawn` waited for.
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent);
    assert!(
        wait_for(Duration::from_secs(20), || cmd.log_text().contains(
            "SIGHUP: reading the TLS files, tokens and suppression rules again"
        )),
        "{}",
        cmd.log_text()
    );
    assert!(
        server.alive(),
        "SIGHUP stopped the server\n{}",
        cmd.log_text()
    );
    let (status, _) = http(server.admin, "GET", "/readyz", "text/plain", b"").unwrap();
    assert_eq!(status, 200);
    assert!(server.terminate(Duration::from_secs(30)));
}
