//! Bearer tokens bound to clusters, over both receivers: no or an unknown token is
//! refused (401 / UNAUTHENTICATED); a token's points for another cluster are rejected in
//! the partial success, its own accepted; the tokens file is reloaded while serving.

mod support;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use support::*;
use tonic::metadata::MetadataValue;
use unseen_store::StateStore;

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tokens_file(entries: &[(&str, &str, &[&str])]) -> String {
    entries
        .iter()
        .map(|(name, token, clusters)| {
            format!(
                "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nclusters = [{}]\n",
                sha256_hex(token),
                clusters
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn point(cluster: &str, node: &str) -> Pt {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Pt {
        cluster: Some(cluster.to_string()),
        ..Pt::new(node, "registry.example/team/api", now - 60)
    }
}

async fn post_with(
    server: &TestServer,
    token: Option<&str>,
    points: &[Pt],
) -> (u16, Option<String>, Vec<u8>) {
    let mut request = http_client()
        .post(server.http_url())
        .header("content-type", "application/x-protobuf")
        .body(request(points).encode_to_vec());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("the HTTP receiver answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, challenge, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_bound_to_their_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        tokens_file(&[
            ("collector-a", "token-a", &["cluster-a"]),
            ("ops", "token-ops", &["*"]),
        ]),
    )
    .unwrap();
    let (store, dyn_store) = mem_store();
    let path = file.clone();
    let server = TestServer::start(dyn_store, move |c| c.tokens_file = Some(path)).await;

    // HTTP: no token, a wrong one, another scheme.
    for token in [None, Some("nope")] {
        let (status, challenge, _) = post_with(&server, token, &[point("cluster-a", "a1")]).await;
        assert_eq!(
            (status, challenge.as_deref()),
            (401, Some("Bearer")),
            "{token:?}"
        );
    }
    // gRPC: no token.
    let status = server
        .grpc_client()
        .await
        .export(request(&[point("cluster-a", "a1")]))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(store.key_count().unwrap(), 0, "nothing refused was written");

    // Token A: its cluster's point is kept, cluster B's rejected with the reason.
    let (status, _, body) = post_with(
        &server,
        Some("token-a"),
        &[point("cluster-a", "a1"), point("cluster-b", "b1")],
    )
    .await;
    assert_eq!(status, 200);
    let answer = ExportMetricsServiceResponse::decode(body.as_slice()).unwrap();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("cluster `cluster-b`")
            && partial.error_message.contains("token `collector-a`"),
        "{}",
        partial.error_message
    );
    assert!(
        !partial.error_message.contains("token-a"),
        "the token itself is never shown"
    );
    assert!(store
        .get(&point("cluster-a", "a1").key())
        .unwrap()
        .is_some());
    assert!(store
        .get(&point("cluster-b", "b1").key())
        .unwrap()
        .is_none());

    // gRPC with the `*` token: any cluster.
    let mut grpc_request = tonic::Request::new(request(&[point("cluster-b", "b2")]));
    grpc_request.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer token-ops"),
    );
    let answer = server
        .grpc_client()
        .await
        .export(grpc_request)
        .await
        .expect("the ops token may report any cluster")
        .into_inner();
    assert!(answer
        .partial_success
        .is_none_or(|p| p.rejected_data_points == 0));
    assert!(store
        .get(&point("cluster-b", "b2").key())
        .unwrap()
        .is_some());

    // Reload: a new token for cluster B works once the file says so; token A, removed,
    // is refused.
    std::fs::write(
        &file,
        tokens_file(&[("collector-b", "token-b", &["cluster-b"])]),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _, _) = post_with(&server, Some("token-b"), &[point("cluster-b", "b3")]).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            std::time::Instant::now() < deadline,
            "the tokens file was not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, _) = post_with(&server, Some("token-a"), &[point("cluster-a", "a2")]).await;
    assert_eq!(status, 401, "a token removed from the file is refused");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "unseen_points_rejected_total{receiver=\"http\",reason=\"cluster_not_allowed\"} 1"
        ),
        "{metrics}"
    );
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        "[[token]]\nname = \"a\"\nsha256 = \"plain-token\"\nclusters = [\"x\"]\n",
    )
    .unwrap();
    let (_, store) = mem_store();
    let listeners = |_: ()| async {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        unseen_server::Listeners {
            otlp_grpc: bind().await.unwrap(),
            otlp_http: bind().await.unwrap(),
            admin: bind().await.unwrap(),
            api: None,
        }
    };
    let mut config = config(&dir.path().join("findings.jsonl"));
    config.tokens_file = Some(file);
    let err = unseen_server::run(
        listeners(()).await,
        config,
        store,
        prometheus(),
        Default::default(),
    )
    .await
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("tokens.toml") && text.contains("64 hex digits"),
        "{text}"
    );
}
