//! `unseen generate` through the real binary: every format it writes, `unseen scan` reads
//! back to the same findings; the same flags give the same bytes; bad flags say which.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const SMALL: &[&str] = &[
    "--clusters",
    "2",
    "--nodes-per-cluster",
    "3",
    "--pods-per-node",
    "4",
    "--images",
    "30",
    "--days",
    "2",
    "--interval",
    "30m",
    "--seed",
    "5",
];

/// The default `--start`, 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

fn unseen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unseen"))
        .args(args)
        .output()
        .expect("run unseen")
}

fn generate(format: &str, out: &Path) -> Output {
    let mut args = vec![
        "generate",
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let output = unseen(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Findings of `unseen scan` at `at`, without the `host.name` evidence (only the CSV export
/// carries one).
fn scan(file: &Path, at: i64) -> Vec<Value> {
    scan_with(file, at, &[])
}

fn scan_with(file: &Path, at: i64, extra: &[&str]) -> Vec<Value> {
    let at = at.to_string();
    let mut args = vec!["scan", "--at", &at, "--output", "json"];
    args.extend_from_slice(extra);
    args.push(file.to_str().unwrap());
    let output = unseen(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).unwrap();
            // What the CSV export does not carry (only the rule's four dimensions): the
            // rest of a finding, its novelty scope and incident included, must agree.
            let object = v.as_object_mut().unwrap();
            for field in [
                "host.name",
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.pod.uid",
                "k8s.container.name",
                "container.id",
                "container.image.tag",
                "workload",
            ] {
                object.remove(field);
            }
            if let Some(image) = object.get_mut("image").and_then(Value::as_object_mut) {
                image.remove("tag");
            }
            v
        })
        .collect()
}

/// A CSV export large enough to be read in ranges on several threads scans to the same
/// findings, the same summary and the same warnings, in the same order and at the same
/// lines, on one thread or several; with a quoted line break and bad rows where the ranges
/// are cut.
#[test]
fn a_csv_scans_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let output = unseen(&[
        "generate",
        "--format",
        "csv",
        "--out",
        path.to_str().unwrap(),
        "--clusters",
        "2",
        "--nodes-per-cluster",
        "10",
        "--pods-per-node",
        "20",
        "--images",
        "200",
        "--days",
        "1",
        "--interval",
        "5m",
        "--seed",
        "3",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let data = std::fs::read(&path).unwrap();
    assert!(
        data.len() > 24 << 20,
        "{} bytes: too few for three ranges",
        data.len()
    );
    // Odd rows at every eighth of the file: a bad time, a quoted image name with a line
    // break in it (a point of its own key), a row of too few fields.
    let mut odd = Vec::with_capacity(data.len() + 4096);
    let mut next = data.len() / 8;
    for line in data.split_inclusive(|&b| b == b'\n') {
        odd.extend_from_slice(line);
        if odd.len() >= next && line.ends_with(b"\n") {
            let eighth = odd.len() * 8 / data.len();
            odd.extend_from_slice(
                format!(
                    "not-a-time,k8s.container.ready,h,c,n,i,1\n\
                 {},k8s.container.ready,h{eighth},c,n,\"reg/odd\n{eighth}\",1\n\
                 1767225634,k8s.container.ready\n",
                    START + 86_400 - 60,
                )
                .as_bytes(),
            );
            next += data.len() / 8;
        }
    }
    std::fs::write(&path, &odd).unwrap();
    let at = (START + 86_400).to_string();
    let run = |threads: &str, strict: bool| {
        let mut args = vec![
            "scan",
            "--at",
            &at,
            "--output",
            "json",
            "--threads",
            threads,
        ];
        if strict {
            args.push("--strict");
        }
        args.push(path.to_str().unwrap());
        let output = unseen(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The summary's time taken differs from run to run.
        let stderr = String::from_utf8(output.stderr).unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .lines()
            .chain(stderr.lines().map(|l| l.split(" in ").next().unwrap_or(l)))
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    for strict in [false, true] {
        let one = run("1", strict);
        let findings = one.iter().filter(|l| l.starts_with('{')).count();
        assert!(findings > 8, "{one:?}");
        assert!(one.iter().any(|l| l.contains("reg/odd\\n3")), "{one:?}");
        assert_eq!(
            one.iter()
                .filter(|l| l.contains("warning: skipped"))
                .count(),
            16,
            "{one:?}"
        );
        for threads in ["2", "3", "0"] {
            let many = run(threads, strict);
            for (a, b) in one.iter().zip(&many) {
                assert_eq!(a, b, "--threads {threads}");
            }
            assert_eq!(one.len(), many.len(), "--threads {threads}");
        }
    }
}

#[test]
fn every_format_scans_to_the_same_findings() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (format, name) in [
        ("otlp-proto", "h.pb"),
        ("otlp-json", "h.jsonl"),
        ("csv", "h.csv"),
    ] {
        let path = dir.path().join(name);
        let output = generate(format, &path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("generated "), "{stderr}");
        assert!(stderr.contains("churn: "), "{stderr}");
        // Early in the history every key is new; at the end only the churn is.
        let early = scan(&path, START + 3600);
        let late = scan(&path, START + 2 * 86_400);
        // A protobuf file is mapped; read as a stream, it gives the same findings.
        assert_eq!(
            scan_with(&path, START + 3600, &["--no-mmap"]),
            early,
            "{format}"
        );
        results.push((format, early, late));
    }
    let (_, early, late) = &results[0];
    assert!(early.len() > 10, "{} findings early", early.len());
    assert!(late.len() < early.len());
    for (format, e, l) in &results[1..] {
        assert_eq!(e, early, "{format}");
        assert_eq!(l, late, "{format}");
    }
}

#[test]
fn the_same_flags_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    generate("csv", &a);
    generate("csv", &b);
    let a = std::fs::read(a).unwrap();
    assert!(a.starts_with(
        b"_time,metric_name,host.name,k8s.cluster.name,k8s.node.name,container.image.name,_value\n"
    ));
    assert_eq!(a, std::fs::read(b).unwrap());
}

#[test]
fn standard_output_works() {
    let mut args = vec!["generate", "--format", "otlp-json", "--out", "-"];
    args.extend_from_slice(SMALL);
    let output = unseen(&args);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.lines().count() > 10);
    assert!(text
        .lines()
        .all(|l| l.starts_with("{\"resourceMetrics\":[")));
}

#[test]
fn bad_flags_name_what_is_wrong() {
    let output = unseen(&["generate", "--days", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--out"));

    let output = unseen(&["generate", "--interval", "10x", "--out", "-"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--interval") && stderr.contains("unknown unit"),
        "{stderr}"
    );

    let output = unseen(&["generate", "--clusters", "0", "--out", "-"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("clusters must be at least 1"));

    let output = unseen(&["generate", "--start", "now+1d", "--out", "-"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("now-<DURATION>"));
}

#[test]
fn send_reports_an_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec![
        "generate",
        "--send",
        &url,
        "--concurrency",
        "1",
        "--max-retries",
        "1",
    ];
    args.extend_from_slice(&[
        "--clusters",
        "1",
        "--nodes-per-cluster",
        "1",
        "--days",
        "1",
        "--interval",
        "12h",
    ]);
    let output = unseen(&args);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("sending to {url}"))
            && stderr.contains("gave up after 2 attempts"),
        "{stderr}"
    );
}
