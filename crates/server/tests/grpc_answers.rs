//! What the gRPC receiver answers to requests that tonic's own client never sends: an
//! unknown `grpc-encoding`, a content type other than protobuf gRPC, a truncated frame.
//! Sent with a raw HTTP/2 client; `docs/operations.md` documents the same answers.

mod support;

use bytes::Bytes;
use support::*;

/// The answer's HTTP status, `grpc-status` (from the headers or the trailers) and
/// headers.
struct Answer {
    http: u16,
    grpc_status: Option<i32>,
    grpc_message: String,
    headers: http::HeaderMap,
}

async fn send(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{}", unseen_server::GRPC_EXPORT_PATH))
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .expect("send headers");
    // The server may answer (a refused content type) before it reads the body, and close
    // the stream: then the body cannot be sent, which is fine.
    let _ = stream.send_data(body, true);
    let response = response.await.expect("an answer");
    let http = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk;
    }
    let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
    let get = |name: &str| {
        headers
            .get(name)
            .or_else(|| trailers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        http,
        grpc_status: get("grpc-status").and_then(|s| s.parse().ok()),
        grpc_message: get("grpc-message").unwrap_or_default(),
        headers,
    }
}

/// A gRPC message frame: compressed flag, length, bytes.
fn frame(compressed: bool, message: &[u8], claimed_len: Option<u32>) -> Bytes {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&claimed_len.unwrap_or(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_to_what_the_collector_never_sends() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |_| {}).await;
    let grpc = [("content-type", "application/grpc")];

    let deflate = send(
        server.grpc,
        &[
            ("content-type", "application/grpc"),
            ("grpc-encoding", "deflate"),
        ],
        frame(true, b"whatever", None),
    )
    .await;
    assert_eq!(deflate.grpc_status, Some(tonic::Code::Unimplemented as i32));
    let accepted = deflate
        .headers
        .get("grpc-accept-encoding")
        .and_then(|v| v.to_str().ok());
    assert!(
        accepted.is_some_and(|a| a.contains("gzip")),
        "{:?}",
        deflate.headers
    );

    let json = send(
        server.grpc,
        &[("content-type", "application/json")],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(json.http, 415, "{}", json.grpc_message);
    assert!(
        json.grpc_message.contains("is%20not%20gRPC"),
        "{}",
        json.grpc_message
    );

    let grpc_json = send(
        server.grpc,
        &[("content-type", "application/grpc+json")],
        frame(false, b"{}", None),
    )
    .await;
    assert_eq!(
        grpc_json.grpc_status,
        Some(tonic::Code::Unimplemented as i32)
    );
    assert!(
        grpc_json.grpc_message.contains("JSON"),
        "{}",
        grpc_json.grpc_message
    );

    let truncated = send(server.grpc, &grpc, frame(false, b"\x0a\x02", Some(100))).await;
    assert_eq!(
        truncated.grpc_status,
        Some(tonic::Code::InvalidArgument as i32),
        "{}",
        truncated.grpc_message
    );
    assert!(
        truncated.grpc_message.contains("truncated"),
        "{}",
        truncated.grpc_message
    );

    // `application/grpc+proto` is protobuf gRPC too, and the receiver still takes
    // requests after all of the above.
    let proto = send(
        server.grpc,
        &[("content-type", "application/grpc+proto")],
        frame(false, b"", None),
    )
    .await;
    assert_eq!(proto.grpc_status, Some(0), "{}", proto.grpc_message);
    server.stop_and_read().await;
}
