//! `unseen backtest` through the real binary: the same history gives the same findings
//! and incidents in `backtest` as in `serve` (across a restart), and its daily report
//! holds together (scopes add up, every fleet-new image opens its own incident).

mod serve_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use serve_support::*;

fn unseen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unseen"))
        .args(args)
        .output()
        .expect("run unseen")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// finding_id → incident_id of the finding lines of a JSON-lines file.
fn incident_of(records: &[Value]) -> BTreeMap<String, String> {
    records
        .iter()
        .filter(|r| r.get("finding_id").is_some())
        .map(|f| {
            (
                f["finding_id"].as_str().unwrap().to_string(),
                f["incident_id"].as_str().expect("an incident").to_string(),
            )
        })
        .collect()
}

#[test]
fn backtest_and_serve_across_a_restart_give_the_same_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(7, 2, 600);
    // The file exporter's framing: what `backtest` reads.
    let file = dir.path().join("history.pb");
    let mut framed = Vec::new();
    for body in &history.bodies {
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(body);
    }
    std::fs::write(&file, framed).unwrap();

    // `serve`, restarted half way (SIGTERM), and again after a SIGKILL.
    let cmd = ServeCmd::new(dir.path());
    let server = cmd.spawn();
    let addr = Mutex::new(server.http);
    let (first, rest) = history.bodies.split_at(history.bodies.len() / 2);
    for body in first {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
    let server = cmd.spawn();
    *addr.lock().unwrap() = server.http;
    let (second, third) = rest.split_at(rest.len() / 2);
    for body in second {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    server.kill();
    let server = cmd.spawn();
    *addr.lock().unwrap() = server.http;
    for body in third {
        send_until_acked(&addr, body, Duration::from_secs(20));
    }
    let expected = history.expected.len();
    let filed = wait_for(Duration::from_secs(15), || {
        file_ids(&cmd.findings).len() >= expected
    });
    assert!(filed, "the findings file is short\n{}", cmd.log_text());
    assert!(
        server.terminate(Duration::from_secs(15)),
        "{}",
        cmd.log_text()
    );
    let served = incident_of(&json_lines(&cmd.findings));

    let out = dir.path().join("backtest.jsonl");
    let (from, to) = ((now() - 3 * 86_400).to_string(), now().to_string());
    let mut args = vec!["backtest", "--from", &from, "--to", &to];
    args.extend_from_slice(&WINDOW_ARGS);
    args.extend_from_slice(&["--findings", out.to_str().unwrap(), file.to_str().unwrap()]);
    let report = ok(&unseen(&args));
    let records = json_lines(&out);
    let backtested = incident_of(&records);
    assert_eq!(
        backtested.keys().cloned().collect::<BTreeSet<_>>(),
        history.expected,
        "backtest reports the contract's episodes"
    );
    assert_eq!(
        backtested, served,
        "every finding has the same incident in backtest and in serve across restarts"
    );
    let days: Vec<Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total: u64 = days.iter().map(|d| d["findings"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, expected);
}

const FLEET: &[&str] = &[
    "--clusters",
    "2",
    "--nodes-per-cluster",
    "6",
    "--pods-per-node",
    "8",
    "--images",
    "60",
    "--days",
    "8",
    "--interval",
    "5m",
    "--seed",
    "7",
];

/// The default `--start` of `generate`, 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

#[test]
fn the_daily_report_adds_up_and_fleet_new_images_open_their_own_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.pb");
    let mut args = vec![
        "generate",
        "--format",
        "otlp-proto",
        "--out",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(FLEET);
    ok(&unseen(&args));

    // Five days of baseline (shorter windows, so that the baseline is full), three
    // reported.
    let from = (START + 5 * 86_400).to_string();
    let to = (START + 8 * 86_400).to_string();
    let out = dir.path().join("records.jsonl");
    let plot = dir.path().join("noise.svg");
    let base = [
        "backtest",
        "--baseline",
        "4d",
        "--from",
        &from,
        "--to",
        &to,
        "--findings",
        out.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    let report = ok(&unseen(&base));
    let days: Vec<Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        days.iter()
            .map(|d| d["day"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["2026-01-06", "2026-01-07", "2026-01-08"],
        "one object per UTC day of the period, quiet days included"
    );
    let records = json_lines(&out);
    let findings: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("finding_id").is_some())
        .collect();
    let opened: BTreeMap<&str, &Value> = records
        .iter()
        .filter(|r| r["state"] == "open")
        .map(|r| (r["incident_id"].as_str().unwrap(), r))
        .collect();
    let sum = |field: &str| -> u64 { days.iter().map(|d| d[field].as_u64().unwrap()).sum() };
    assert_eq!(sum("findings") as usize, findings.len());
    assert_eq!(sum("notifications") as usize, opened.len());
    for d in &days {
        let s = &d["by_scope"];
        let scopes = s["node"].as_u64().unwrap()
            + s["cluster"].as_u64().unwrap()
            + s["fleet"].as_u64().unwrap();
        assert_eq!(scopes, d["findings"].as_u64().unwrap(), "{d}");
        assert!(d["incidents"].as_u64().unwrap() <= d["findings"].as_u64().unwrap());
    }
    assert!(!findings.is_empty(), "the churn makes findings");
    assert!(
        opened.len() < findings.len(),
        "{} notifications for {} findings",
        opened.len(),
        findings.len()
    );
    // Every fleet-scope episode is the first member of its own incident, opened when
    // that episode is; every finding's incident was opened.
    for f in &findings {
        let incident = opened[f["incident_id"].as_str().unwrap()];
        if f["scope"] == "fleet" {
            assert_eq!(incident["findings"][0], f["finding_id"], "{f}");
            assert_eq!(incident["opened_at"], f["first_seen"], "{f}");
            assert_eq!(incident["kind"], "image");
        }
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("notifications</title>").count(), days.len());

    // The same run as a table, for people.
    let mut table = base.to_vec();
    table.splice(1..1, ["--output", "table"]);
    let text = ok(&unseen(&table));
    assert!(text.starts_with("DAY"), "{text}");
    assert_eq!(text.lines().count(), days.len() + 1);

    // Strict mode: the seed's rule, one notification per finding. It needs `host.name`,
    // which only the CSV export of the generated fleet carries.
    let csv = dir.path().join("fleet.csv");
    let mut args = vec![
        "generate",
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
    ];
    args.extend_from_slice(FLEET);
    ok(&unseen(&args));
    let mut strict = base.to_vec();
    *strict.last_mut().unwrap() = csv.to_str().unwrap();
    strict.insert(1, "--strict");
    let strict_days: Vec<Value> = ok(&unseen(&strict))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let strict_findings: u64 = strict_days
        .iter()
        .map(|d| d["findings"].as_u64().unwrap())
        .sum();
    assert!(strict_findings > 0);
    for d in &strict_days {
        assert_eq!(d["notifications"], d["findings"]);
        assert_eq!(d["incidents"], 0);
    }
}

#[test]
fn bad_periods_are_errors_naming_the_flag() {
    let out = unseen(&[
        "backtest",
        "--from",
        "2026-01-02T00:00:00Z",
        "--to",
        "2026-01-01T00:00:00Z",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--to") && err.contains("after --from"),
        "{err}"
    );
    let out = unseen(&["backtest", "--from", "yesterday", "--to", "1", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}
