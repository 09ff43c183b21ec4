//! The query API inside `serve`: tokens with a role read it and receivers refuse them;
//! a suppression rule made through the API is in force for the next commit (a finding
//! it matches is recorded, marked, and opens no incident), and again after a restart,
//! read back from the audit log.

mod support;

use prost::Message;
use serde_json::{json, Value};
use support::*;

const COLLECTOR: &str = "collector-token";
const RESPONDER: &str = "responder-token";

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tokens file: a Collector's token and an analyst's (a role, no clusters).
fn write_tokens(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[token]]\nname = \"collector\"\nsha256 = \"{}\"\nclusters = [\"*\"]\n\n[[token]]\nname = \"jane\"\nsha256 = \"{}\"\nrole = \"responder\"\n",
        sha256_hex(COLLECTOR),
        sha256_hex(RESPONDER)
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn post(server: &TestServer, token: &str, points: &[Pt]) -> u16 {
    http_client()
        .post(server.http_url())
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {token}"))
        .body(request(points).encode_to_vec())
        .send()
        .await
        .expect("the HTTP receiver answers")
        .status()
        .as_u16()
}

async fn api(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http_client()
        .request(method, format!("http://{}{path}", server.api))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_made_through_the_api_suppresses_the_next_findings_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (_, store) = mem_store();
    let with_tokens =
        |path: std::path::PathBuf| move |c: &mut unseen_server::Config| c.tokens_file = Some(path);
    let server = TestServer::start(store.clone(), with_tokens(tokens.clone())).await;
    let now = unseen_server::now_secs();
    let image = "registry.example/team/api";

    // Each token is for its own side.
    assert_eq!(
        post(&server, RESPONDER, &[Pt::new("n0", image, now - 90)]).await,
        401
    );
    let (status, body) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/findings",
        COLLECTOR,
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no `role`"),
        "{body}"
    );

    assert_eq!(
        post(&server, COLLECTOR, &[Pt::new("n1", image, now - 60)]).await,
        200
    );
    server.wait_for_findings(1).await;
    let (status, page) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/findings",
        RESPONDER,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let first = &page["items"][0];
    let in_file = file_findings(&server.findings);
    assert_eq!(
        &in_file[first["finding_id"].as_str().unwrap()],
        first,
        "the findings file's object"
    );
    assert!(first["suppressed"].is_null());

    // "Suppress like this": the draft from the finding, with a reason.
    let id = first["finding_id"].as_str().unwrap();
    let (status, mut draft) = api(
        &server,
        reqwest::Method::GET,
        &format!("/api/v1/findings/{id}/suppression"),
        RESPONDER,
        None,
    )
    .await;
    assert_eq!(status, 200);
    draft["name"] = json!("team-api");
    draft["reason"] = json!("the team's own API");
    let (status, rule) = api(
        &server,
        reqwest::Method::POST,
        "/api/v1/suppressions",
        RESPONDER,
        Some(draft),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["author"], "jane");

    // The next finding of that image is suppressed, opens no incident.
    assert_eq!(
        post(&server, COLLECTOR, &[Pt::new("n2", image, now - 50)]).await,
        200
    );
    server.wait_for_findings(2).await;
    let (_, suppressed) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/findings?suppressed=true",
        RESPONDER,
        None,
    )
    .await;
    let items = suppressed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{suppressed}");
    assert_eq!(items[0]["k8s.node.name"], "n2");
    assert_eq!(items[0]["suppressed"]["rule"], "team-api");
    assert!(
        items[0]["incident_id"].is_null(),
        "a suppressed finding opens no incident"
    );
    server.stop_and_read().await;

    // After a restart the rule is still in force: it is read back from the audit log.
    let server = TestServer::start(store, with_tokens(tokens)).await;
    assert_eq!(
        post(&server, COLLECTOR, &[Pt::new("n3", image, now - 40)]).await,
        200
    );
    server.wait_for_findings(1).await;
    let (_, page) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/findings?node=n3",
        RESPONDER,
        None,
    )
    .await;
    assert_eq!(page["items"][0]["suppressed"]["rule"], "team-api", "{page}");
    let (_, rules) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/suppressions",
        RESPONDER,
        None,
    )
    .await;
    assert_eq!(rules["items"][0]["source"], "api");
    assert_eq!(rules["items"][0]["active"], true);
    server.stop_and_read().await;
}
