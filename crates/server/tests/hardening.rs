//! The limits that hold a hostile peer: connections per listener (the admin port keeps
//! its own), header, body and idle timeouts, and the budget of bytes in flight. Each test
//! plays the peer on loopback and waits on the event it means (a connection closed, an
//! answer, a gauge reaching a value), never on a sleep.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unseen_store::StateStore;

use support::*;

fn hour_ago() -> i64 {
    unseen_server::now_secs() - 3_600
}

/// Reads until the server closes the connection (EOF or an error); what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection");
    got
}

/// Polls the metrics until `check` holds for the sample (a gauge reaching a value).
async fn wait_for_sample(
    server: &TestServer,
    name: &str,
    labels: &[(&str, &str)],
    check: impl Fn(f64) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = server.metrics_text().await;
        if sample(&text, name, labels).is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {labels:?} never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accepted_request_works(server: &TestServer, image: &str) {
    let point = Pt::new("node-ok", image, hour_ago());
    assert_eq!(
        export(
            server,
            Via::HttpProtobuf,
            &request(std::slice::from_ref(&point))
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        export(server, Via::Grpc, &request(&[point])).await,
        (0, String::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_max_connections_closes_the_next_one_and_probes_still_answer() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |c| c.limits.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    wait_for_sample(
        &server,
        "unseen_connections",
        &[("listener", "http")],
        |n| n == 4.0,
    )
    .await;

    // One more is closed at once, without an answer.
    let mut extra = TcpStream::connect(server.http).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(read_until_closed(&mut extra).await, b"");
    let text = server.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "unseen_connections_refused_total",
            &[("listener", "http")]
        ),
        Some(1.0),
        "{text}"
    );

    // The admin port (its own slots) and the gRPC port (its own cap) still answer.
    assert_eq!(server.admin_get("/healthz").await.unwrap().0, 200);
    let point = Pt::new("node-1", "while-full", hour_ago());
    assert_eq!(
        export(&server, Via::Grpc, &request(&[point])).await,
        (0, String::new())
    );

    // A slot given back is a slot for the next sender.
    drop(held.pop());
    wait_for_sample(
        &server,
        "unseen_connections",
        &[("listener", "http")],
        |n| n == 3.0,
    )
    .await;
    let point = Pt::new("node-1", "after", hour_ago());
    assert_eq!(
        export(&server, Via::HttpProtobuf, &request(&[point])).await,
        (0, String::new())
    );
    drop(held);
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |c| c.limits.idle_timeout = 1).await;
    for addr in [server.http, server.grpc, server.admin] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let sent = read_until_closed(&mut silent).await;
        // HTTP says nothing; HTTP/2 (gRPC) opens with its SETTINGS frame, no more.
        if addr != server.grpc {
            assert_eq!(sent, b"", "{addr}");
        }
    }
    let text = server.metrics_text().await;
    assert!(
        sample(&text, "unseen_request_timeouts_total", &[("kind", "idle")])
            .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    // A connection in use is not idle: a sender that keeps talking keeps it.
    accepted_request_works(&server, "busy").await;
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_header_is_closed_after_the_header_timeout() {
    let (_, store) = mem_store();
    let server = TestServer::start(store, |c| {
        c.limits.header_timeout = 1;
        // Far beyond the header timeout: the peer below is never idle.
        c.limits.idle_timeout = 600;
    })
    .await;
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    write
        .write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The slow-loris peer: one header line at a time, never the blank line that ends
    // them. (The pace is the peer's behaviour, not a wait: the test ends when the
    // server closes the connection.)
    let deadline = Instant::now() + DEADLINE;
    while !closed.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the trickled header was never cut off"
        );
        if write.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(DEADLINE, closed)
        .await
        .unwrap()
        .unwrap();
    let text = server.metrics_text().await;
    assert!(
        sample(
            &text,
            "unseen_request_timeouts_total",
            &[("kind", "header")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    accepted_request_works(&server, "after").await;
    server.stop_and_read().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_refused_after_the_body_timeout() {
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| {
        c.limits.body_timeout = 1;
        c.limits.idle_timeout = 600;
    })
    .await;
    let point = Pt::new("node-1", "stalled", hour_ago());
    let body = request(std::slice::from_ref(&point)).encode_to_vec();

    // HTTP: the header says more bytes than ever come.
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // gRPC: half a frame, the stream left open.
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}{}",
            server.grpc,
            unseen_server::GRPC_EXPORT_PATH
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body[..body.len() / 2]);
    send.send_data(Bytes::from(frame), false).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("an answer")
        .unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        status.as_deref(),
        Some(&*(tonic::Code::DeadlineExceeded as i32).to_string()),
        "{response:?}"
    );
    let message = response.headers().get("grpc-message").unwrap();
    assert!(
        message.to_str().unwrap().contains("body_timeout"),
        "{message:?}"
    );

    assert_eq!(store.get(&point.key()).unwrap(), None);
    let text = server.metrics_text().await;
    assert_eq!(
        sample(&text, "unseen_request_timeouts_total", &[("kind", "body")]),
        Some(2.0),
        "{text}"
    );
    accepted_request_works(&server, "after").await;
    server.stop_and_read().await;
}

/// Starts an HTTP request whose header announces `body` and sends all of it but its
/// last KiB: it holds its announced length from the budget until it is finished.
async fn stalled_upload(server: &TestServer, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() - 1024]).await.unwrap();
    stream
}

/// Sends the last KiB of a [`stalled_upload`] and reads the answer's status line.
async fn finish_upload(mut stream: TcpStream, body: &[u8]) -> String {
    stream.write_all(&body[body.len() - 1024..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_budget_of_bytes_in_flight_are_told_to_retry() {
    const BODY: usize = 256 << 10;
    let (store, dyn_store) = mem_store();
    let server = TestServer::start(dyn_store, |c| {
        c.limits.max_body_bytes = BODY;
        // The least the settings allow: one largest request, body and decoded points.
        c.limits.max_inflight_bytes = BODY * 5 / 2;
    })
    .await;

    // Two uploads hold two bodies of the budget (their announced lengths).
    let (one, two) = (
        Pt::new("node-1", "one", hour_ago()),
        Pt::new("node-1", "two", hour_ago()),
    );
    let one_body = padded_request(&one, BODY - 1024).encode_to_vec();
    let two_body = padded_request(&two, BODY - 1024).encode_to_vec();
    assert!(one_body.len() <= BODY && two_body.len() <= BODY);
    let one_stream = stalled_upload(&server, &one_body).await;
    let two_stream = stalled_upload(&server, &two_body).await;
    let held = (one_body.len() + two_body.len()) as f64;
    wait_for_sample(&server, "unseen_request_bytes_in_flight", &[], |n| {
        n >= held
    })
    .await;

    // Another of 200 KiB does not fit in what is left: 429 with Retry-After, at once and
    // before its body is read; RESOURCE_EXHAUSTED with a RetryInfo over gRPC. Nothing of
    // it is kept.
    let other = Pt::new("node-1", "other", hour_ago());
    let other_request = padded_request(&other, 200 << 10);
    let answer = post(
        &http_client(),
        &server,
        PROTOBUF,
        None,
        other_request.encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    let status = answer.proto_status();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        status.message.contains("max_inflight_bytes"),
        "{}",
        status.message
    );
    let refused = server
        .grpc_client()
        .await
        .export(other_request.clone())
        .await
        .expect_err("over the budget");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let details = RpcStatus::decode(refused.details()).expect("a google.rpc.Status");
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
    assert_eq!(store.get(&other.key()).unwrap(), None);

    // The first upload finishes, but decoding it needs room for its points too, which
    // the second still holds: told to retry. The second then has the room: kept.
    assert_eq!(
        finish_upload(one_stream, &one_body).await,
        "HTTP/1.1 429 Too Many Requests"
    );
    assert_eq!(
        finish_upload(two_stream, &two_body).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(store.get(&one.key()).unwrap(), None);
    assert!(store.get(&two.key()).unwrap().is_some());

    // Everything given back; now the others fit.
    wait_for_sample(&server, "unseen_request_bytes_in_flight", &[], |n| n == 0.0).await;
    assert_eq!(
        export(&server, Via::HttpProtobuf, &other_request).await,
        (0, String::new())
    );
    assert_eq!(
        export(&server, Via::Grpc, &padded_request(&one, BODY - 1024)).await,
        (0, String::new())
    );
    server.stop_and_read().await;
}
