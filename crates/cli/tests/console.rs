//! The query API and the console against a real `unseen serve` holding a generated
//! history: checked by independent tools, as a user's browser and an API client would.
//!
//! - the findings the API lists are exactly those of the findings file;
//! - a real headless Chromium, driven by Playwright (`crates/api/tests/browser/console.mjs`),
//!   logs in, filters, acknowledges an incident, suppresses like a finding and sees the
//!   rule in force, opens the timeline and the inventory; its screenshots go to
//!   `UNSEEN_SCREENSHOTS` (default `target/console-screenshots`; `docs/console` holds the
//!   ones the docs show);
//! - schemathesis checks the running server against `/api/v1/openapi.json`.
//!
//! `scripts/test-deps.sh` installs Chromium, Node, Playwright and schemathesis; a missing
//! one fails this test, with the command that installs it.

mod serve_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serve_support::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository")
}

fn tool(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}): run scripts/test-deps.sh, which installs it")
    })
}

#[test]
fn the_console_and_the_api_pass_a_real_browser_and_schemathesis() {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, server, tokens, api) = serve_with_api(dir.path());
    let history = history(21, 2, 600);
    send_history_with_token(server.http, &history, tokens.collector);

    // Every acknowledged point is committed: the API lists the findings file's findings,
    // newest first.
    let mut listed: Vec<String> = api_walk(api, "/api/v1/findings", tokens.viewer, 100)
        .iter()
        .map(|f| f["finding_id"].as_str().expect("finding_id").to_string())
        .collect();
    let file = file_ids(&cmd.findings);
    assert_eq!(listed.len(), file.len(), "one item per finding");
    listed.reverse();
    assert_eq!(
        listed, file,
        "the findings file's order, newest first in the API"
    );
    let expected: BTreeSet<String> = history.expected.clone();
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);

    // The browser test first: it needs incidents nobody has acknowledged yet.
    let root = repo_root();
    let shots = std::env::var_os("UNSEEN_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/console-screenshots"));
    let browser = tool(
        Command::new("node")
            .arg(root.join("crates/api/tests/browser/console.mjs"))
            .env("UNSEEN_API", format!("http://{api}"))
            .env("UNSEEN_TOKEN", tokens.responder)
            .env("SCREENSHOTS", &shots),
        "node (with playwright-core and chromium)",
    );
    let out = String::from_utf8_lossy(&browser.stdout);
    assert!(
        browser.status.success() && out.contains(" passed, 0 failed"),
        "the browser test failed:\n{out}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&browser.stderr),
        cmd.log_text()
    );
    for shot in [
        "login",
        "incidents",
        "incident",
        "suppress",
        "timeline",
        "images",
        "image",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).is_file(),
            "screenshot {shot}.png"
        );
    }
    // What the browser did is in the state: the acknowledgement and the rule, audited.
    let (status, audit) = api_get(api, "/api/v1/audit?limit=50", tokens.admin);
    assert_eq!(status, 200);
    let actions: BTreeSet<String> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} by {}",
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap()
            )
        })
        .collect();
    assert!(actions.contains("incident.ack by responder"), "{actions:?}");
    assert!(
        actions.contains("suppression.create by responder"),
        "{actions:?}"
    );

    // Then schemathesis, with every check, against the document the server serves.
    let report = dir.path().join("schemathesis");
    let st = tool(
        Command::new("schemathesis")
            .arg("--config-file")
            .arg(root.join("crates/api/tests/schemathesis.toml"))
            .arg("run")
            .arg(format!("http://{api}/api/v1/openapi.json"))
            .args(["--checks", "all", "--max-examples", "25"])
            .args(["--generation-deterministic", "--workers", "1"])
            .arg("--header")
            .arg(format!("Authorization: Bearer {}", tokens.admin))
            .arg("--report-dir")
            .arg(&report)
            // Its cache of examples goes where the test's files go, not into the tree.
            .current_dir(dir.path())
            .env("NO_COLOR", "1"),
        "schemathesis",
    );
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(
        out.contains("No issues found") || out.contains("passed"),
        "{out}"
    );
    server.kill();
}
