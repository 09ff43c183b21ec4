//! Suppression while serving: the rules file is read at start, reloaded when it changes
//! (a bad edit keeps the rules in force), and suppressed findings are in the findings
//! file, marked, with no incident.

mod support;

use std::path::Path;

use support::*;

fn write_rules(path: &Path, text: &str) {
    // As an editor or `unseen suppress` does: a new file renamed over the old one.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn rule(name: &str, image_glob: &str) -> String {
    format!(
        "[[suppress]]\nname = \"{name}\"\nreason = \"{name} images\"\n\"container.image.name\" = \"{image_glob}\"\n"
    )
}

/// Sends one point and waits until the findings file holds `total` findings.
async fn send(server: &TestServer, point: Pt, total: usize) {
    export(server, Via::HttpProtobuf, &request(&[point])).await;
    server.wait_for_findings(total).await;
}

async fn reloads(server: &TestServer, result: &str) -> f64 {
    sample(
        &server.metrics_text().await,
        "unseen_suppression_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_file_is_reloaded_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    write_rules(&rules, &rule("debug", "registry.example/debug/*"));
    let (_, store) = mem_store();
    let path = rules.clone();
    let server = TestServer::start(store, move |c| c.suppressions_file = Some(path)).await;
    assert_eq!(
        sample(
            &server.metrics_text().await,
            "unseen_suppression_rules",
            &[]
        ),
        Some(1.0)
    );
    let now = unseen_server::now_secs();
    let debug = "registry.example/debug/shell";
    let tools = "registry.example/tools/curl";

    send(&server, Pt::new("n1", debug, now - 60), 1).await;
    send(&server, Pt::new("n1", tools, now - 60), 2).await;
    let marks = |server: &TestServer| {
        let mut by_node_image: Vec<(String, Option<String>)> = file_findings(&server.findings)
            .values()
            .map(|f| {
                (
                    format!(
                        "{} {}",
                        f["k8s.node.name"].as_str().unwrap(),
                        f["container.image.name"].as_str().unwrap()
                    ),
                    f["suppressed"]["rule"].as_str().map(str::to_string),
                )
            })
            .collect();
        by_node_image.sort();
        by_node_image
    };
    assert_eq!(
        marks(&server),
        vec![
            (format!("n1 {debug}"), Some("debug".to_string())),
            (format!("n1 {tools}"), None),
        ]
    );

    // The file now suppresses the tools instead: the next commit uses it.
    let ok_before = reloads(&server, "ok").await;
    write_rules(&rules, &rule("tools", "registry.example/tools/*"));
    eventually("the rules file to be reloaded", async || {
        reloads(&server, "ok").await > ok_before
    })
    .await;
    send(&server, Pt::new("n2", debug, now - 30), 3).await;
    send(&server, Pt::new("n2", tools, now - 30), 4).await;
    let got = marks(&server);
    assert!(got.contains(&(format!("n2 {debug}"), None)), "{got:?}");
    assert!(
        got.contains(&(format!("n2 {tools}"), Some("tools".to_string()))),
        "{got:?}"
    );

    // A bad edit is refused and the rules in force stay.
    let errors_before = reloads(&server, "error").await;
    write_rules(&rules, "[[suppress]]\nreason = \"no matcher\"\n");
    eventually("the bad rules file to be refused", async || {
        reloads(&server, "error").await > errors_before
    })
    .await;
    send(&server, Pt::new("n3", tools, now - 10), 5).await;
    assert!(marks(&server).contains(&(format!("n3 {tools}"), Some("tools".to_string()))));
    server.stop_and_read().await;
}

/// Starts a server whose rules file holds `text`; the start must fail: its error.
async fn start_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, text).unwrap();
    let mut config = config(&dir.path().join("findings.jsonl"));
    config.suppressions_file = Some(rules);
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = unseen_server::Listeners {
        otlp_grpc: bind().await.unwrap(),
        otlp_http: bind().await.unwrap(),
        admin: bind().await.unwrap(),
        api: None,
    };
    let (_, store) = mem_store();
    unseen_server::run(
        listeners,
        config,
        store,
        prometheus(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("a bad rules file is an error at start")
    .to_string()
}

#[tokio::test]
async fn a_bad_rules_file_fails_the_start_with_its_line() {
    let message = start_error("[[suppress]]\nreason = \"x\"\nscope = \n").await;
    assert!(message.contains("rules.toml"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    // Over the size limit.
    let big = "# padding\n".repeat((unseen_findings::suppress::MAX_RULES_BYTES / 10 + 1) as usize);
    let message = start_error(&big).await;
    assert!(message.contains("over the limit"), "{message}");
}
