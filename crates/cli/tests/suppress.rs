//! `unseen suppress add|list|remove|test` and `scan --suppressions`, through the binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// `suppress list` as JSON lines.
fn list(rules: &str) -> Vec<Value> {
    json_lines(&ok(&unseen(&[
        "suppress", "list", "--file", rules, "--output", "json",
    ])))
}

/// `scan` at the end of the generated day, with a baseline window before the data.
fn scan(history: &Path, extra: &[&str]) -> String {
    let at = (1_767_225_600 + 86_400).to_string();
    let mut args = vec![
        "scan",
        "--at",
        &at,
        "--baseline",
        "25h",
        "--recent",
        "24h",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    args.push(history.to_str().unwrap());
    ok(&unseen(&args))
}

/// A day of a small fleet, scanned at its end with a baseline window before the data:
/// a finding for every key of it.
fn findings(dir: &Path) -> (std::path::PathBuf, Vec<Value>) {
    let history = dir.join("fleet.jsonl");
    ok(&unseen(&[
        "generate",
        "--format",
        "otlp-json",
        "--out",
        history.to_str().unwrap(),
        "--clusters",
        "2",
        "--nodes-per-cluster",
        "5",
        "--pods-per-node",
        "6",
        "--images",
        "20",
        "--days",
        "1",
        "--interval",
        "10m",
    ]));
    let out = scan(&history, &[]);
    let path = dir.join("findings.jsonl");
    std::fs::write(&path, &out).unwrap();
    (path, json_lines(&out))
}

#[test]
fn rules_are_added_listed_tested_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (findings_path, found) = findings(dir.path());
    assert!(found.len() > 10, "the fleet gives findings");
    let cluster = found[0]["k8s.cluster.name"].as_str().unwrap().to_string();
    let rules = dir.path().join("rules.toml");
    let rules_arg = rules.to_str().unwrap();
    // A comment the edits must keep.
    std::fs::write(&rules, "# owned by the platform team\n").unwrap();

    ok(&unseen(&[
        "suppress",
        "add",
        "--file",
        rules_arg,
        "--name",
        "one-cluster",
        "--reason",
        "a test cluster",
        "--author",
        "tester",
        "--match",
        &format!("k8s.cluster.name={cluster}"),
    ]));
    ok(&unseen(&[
        "suppress",
        "add",
        "--file",
        rules_arg,
        "--reason",
        "expired long ago",
        "--expires",
        "2000-01-01T00:00:00Z",
        "--regex",
        "k8s.node.name=.*",
    ]));
    let listed = list(rules_arg);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "one-cluster");
    assert_eq!(listed[0]["author"], "tester");
    let derived = listed[1]["name"].as_str().unwrap().to_string();
    assert!(derived.starts_with("s-"), "{derived}");
    assert_eq!(listed[1]["expires"], "2000-01-01T00:00:00Z");

    // `test`: exactly the findings of that cluster; the expired rule matches none.
    let tested = json_lines(&ok(&unseen(&[
        "suppress",
        "test",
        "--file",
        rules_arg,
        "--output",
        "json",
        findings_path.to_str().unwrap(),
    ])));
    let expected: Vec<&Value> = found
        .iter()
        .filter(|f| f["k8s.cluster.name"] == cluster.as_str())
        .collect();
    assert_eq!(tested.len(), expected.len());
    assert!(tested.iter().all(|t| t["rule"] == "one-cluster"));
    // At a time before its expiry, the other rule catches the rest.
    let early = json_lines(&ok(&unseen(&[
        "suppress",
        "test",
        "--file",
        rules_arg,
        "--at",
        "1999-12-31T00:00:00Z",
        "--output",
        "json",
        findings_path.to_str().unwrap(),
    ])));
    assert_eq!(early.len(), found.len());

    // `scan --suppressions` marks the same findings.
    let history = dir.path().join("fleet.jsonl");
    let scanned = json_lines(&scan(&history, &["--suppressions", rules_arg]));
    let marked: Vec<&Value> = scanned
        .iter()
        .filter(|f| f["suppressed"]["rule"] == "one-cluster")
        .collect();
    assert_eq!(marked.len(), expected.len());
    assert!(scanned
        .iter()
        .filter(|f| f["k8s.cluster.name"] != cluster.as_str())
        .all(|f| f.get("suppressed").is_none()));

    // Remove by name: the comment and the other rule stay.
    ok(&unseen(&[
        "suppress",
        "remove",
        "--file",
        rules_arg,
        "one-cluster",
    ]));
    let text = std::fs::read_to_string(&rules).unwrap();
    assert!(text.contains("# owned by the platform team"), "{text}");
    let listed = list(rules_arg);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], derived.as_str());
}

#[test]
fn bad_edits_are_refused_and_leave_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let rules_arg = rules.to_str().unwrap();
    ok(&unseen(&[
        "suppress",
        "add",
        "--file",
        rules_arg,
        "--name",
        "a",
        "--reason",
        "r",
        "--match",
        "scope=node",
    ]));
    let before = std::fs::read_to_string(&rules).unwrap();
    for (args, want) in [
        (
            vec!["--name", "a", "--reason", "r", "--match", "scope=fleet"],
            "two rules are named `a`",
        ),
        (
            vec!["--reason", "r", "--match", "clustr=x"],
            "unknown key `clustr`",
        ),
        (vec!["--reason", "r"], "at least one matcher"),
        (vec!["--reason", "r", "--match", "scope"], "FIELD=PATTERN"),
        (vec!["--reason", "r", "--regex", "scope=("], "--regex"),
        (
            vec!["--reason", "r", "--match", "scope=x", "--expires", "soon"],
            "--expires",
        ),
    ] {
        let mut all = vec!["suppress", "add", "--file", rules_arg];
        all.extend(args);
        let err = failed(&unseen(&all));
        assert!(err.contains(want), "{all:?}: {err}");
        assert_eq!(std::fs::read_to_string(&rules).unwrap(), before);
    }
    let err = failed(&unseen(&[
        "suppress", "remove", "--file", rules_arg, "nope",
    ]));
    assert!(
        err.contains("no rule named `nope`") && err.contains("a"),
        "{err}"
    );
    // A findings line that is not a finding names its file and line.
    let findings = dir.path().join("f.jsonl");
    std::fs::write(&findings, "{\"not\": \"a finding\"}\n").unwrap();
    let err = failed(&unseen(&[
        "suppress",
        "test",
        "--file",
        rules_arg,
        findings.to_str().unwrap(),
    ]));
    assert!(err.contains("f.jsonl:1"), "{err}");
}
