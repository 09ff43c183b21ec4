//! A flood on loopback, as a hostile peer would send it, against the real binary: many
//! slow connections (a header never finished, a body announced and never sent) and many
//! large requests at once, for a bounded time. The process's peak memory stays under
//! the bound `docs/operations.md` states for these limits, and a legitimate client
//! still gets every one of its requests acknowledged (retrying when told to, as the
//! Collector does).

mod serve_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serve_support::*;
use unseen_generate::{Churn, Encoder, Format, Generator, Params};

const MIB: u64 = 1 << 20;
const MAX_BODY: u64 = 16 * MIB;
const BUDGET: u64 = 64 * MIB;
const MAX_CONNECTIONS: u64 = 512;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(12);

/// Kilobytes of a `VmRSS:`/`VmHWM:` line of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in\n{text}"))
}

/// The first body of a generated fleet (`nodes` × `pods` containers, `seed`) that holds
/// at least `ready` readiness points (the generator interleaves batches of other metrics).
fn readiness_body(
    nodes: u32,
    pods: u32,
    max_batch_points: usize,
    seed: u64,
    ready: usize,
) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let params = Params {
        clusters: 1,
        nodes_per_cluster: nodes,
        pods_per_node: pods,
        images: (nodes * pods / 10).max(1),
        duration_secs: 60,
        interval_secs: 60,
        seed,
        start_unix_secs: now - 7_200,
        max_batch_points,
        return_gap_secs: None,
        churn: Churn::default(),
    };
    let mut generator = Generator::new(params).expect("valid params");
    let mut encoder = Encoder::new(Format::OtlpProto, Default::default());
    while let Some(batch) = generator.next_batch() {
        let mut points = 0;
        batch.for_each_ready(|_| points += 1);
        if points >= ready {
            return encoder.encode(&batch)[4..].to_vec();
        }
    }
    panic!("no batch of {ready} readiness points")
}

/// One large OTLP/HTTP protobuf body: a big fleet's containers at one instant (thousands
/// of readiness points among their other metrics, each container its own resource), as a
/// Collector in front of a large cluster batches them.
fn large_body() -> Vec<u8> {
    readiness_body(200, 50, 24_000, 7, 2_000)
}

/// A small request of its own keys, as a legitimate collector sends.
fn small_body(i: u64) -> Vec<u8> {
    readiness_body(1, 1, 100, 1_000 + i, 1)
}

/// A slow peer: opens a connection and sends part of a request, then nothing. The
/// server's timeouts close it; the peer opens another at once, for the whole flood.
fn slow_peer(addr: SocketAddr, body_too: bool, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let head = if body_too {
            format!(
                "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY
            )
        } else {
            "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: applic".to_string()
        };
        if stream.write_all(head.as_bytes()).is_err() {
            continue;
        }
        if body_too && stream.write_all(&vec![0u8; 256 << 10]).is_err() {
            continue;
        }
        // Until the server closes it (or the flood ends).
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }
}

#[test]
fn a_flood_of_slow_and_large_requests_stays_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ServeCmd::new(dir.path());
    cmd.extra = [
        "--max-body-bytes",
        &MAX_BODY.to_string(),
        "--max-inflight-bytes",
        &BUDGET.to_string(),
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--header-timeout",
        "2s",
        "--body-timeout",
        "3s",
        "--idle-timeout",
        "10s",
    ]
    .map(String::from)
    .to_vec();
    let mut server = cmd.spawn();
    let pid = server.child.id();
    let (http, admin) = (server.http, server.admin);
    assert!(wait_for(Duration::from_secs(20), || {
        http_get(admin, "/readyz").is_some_and(|(s, _)| s == 200)
    }));
    let large = Arc::new(large_body());
    assert!(
        large.len() as u64 > 4 * MIB && large.len() as u64 <= MAX_BODY,
        "{} bytes",
        large.len()
    );
    // Warm-up: the large body's keys become known (their findings written, the store's
    // pages cached); what the state holds is not the flood's. The baseline is taken
    // after it.
    send_until_acked(&Mutex::new(http), &large, Duration::from_secs(60));
    let idle_kib = status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // 160 slow peers on HTTP, half in the header, half in the body; 40 on gRPC, which
    // only open connections (HTTP/2 is idle until it sends).
    for i in 0..160 {
        let (stop, opened) = (stop.clone(), opened.clone());
        threads.push(std::thread::spawn(move || {
            slow_peer(http, i % 2 == 0, stop, opened)
        }));
    }
    let grpc = server.grpc;
    for _ in 0..40 {
        let (stop, opened) = (stop.clone(), opened.clone());
        threads.push(std::thread::spawn(move || {
            slow_peer(grpc, false, stop, opened)
        }));
    }
    // 24 senders of large bodies, as fast as the server answers them.
    let answers: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Default::default();
    for _ in 0..24 {
        let (stop, large, answers) = (stop.clone(), large.clone(), answers.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // 0: the connection failed (closed at the cap, reset while sending).
                let status = http_post(http, &large).unwrap_or_default();
                *answers.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }

    // The legitimate collector: a small request at a time, each retried until it is
    // acknowledged, for as long as the flood lasts.
    let started = Instant::now();
    let legit_addr = Mutex::new(http);
    let mut acked = 0u64;
    let mut attempts = 0u64;
    while started.elapsed() < FLOOD {
        attempts += u64::from(send_until_acked(
            &legit_addr,
            &small_body(acked),
            Duration::from_secs(60),
        ));
        acked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let peak_kib = status_kib(pid, "VmHWM:");
    let alive = server.alive();
    let healthz = http_get(admin, "/healthz");
    let log = cmd.log_text();
    server.terminate(Duration::from_secs(30));

    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "flood: idle RSS {} MiB, peak {} MiB; legit {acked} acked in {attempts} attempts; large answers {answers:?}; slow connections opened {}",
        idle_kib / 1024,
        peak_kib / 1024,
        opened.load(Ordering::Relaxed)
    );
    assert!(alive, "the server died\n{log}");
    assert_eq!(healthz.map(|(s, _)| s), Some(200));
    assert!(
        acked >= 5,
        "the legitimate client got {acked} through\n{log}"
    );
    // The flood did press on the budget: large senders were told to retry.
    assert!(answers.get(&429).is_some_and(|&n| n > 0), "{answers:?}");
    // The bound of docs/operations.md: the running server's memory + 2 × the budget + 64
    // KiB per HTTP/1 connection + one commit of max_batch_points sightings (300 bytes each).
    let max_batch_points = 200_000;
    let bound_kib =
        idle_kib + 2 * BUDGET / 1024 + MAX_CONNECTIONS * 64 + max_batch_points * 300 / 1024;
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB (idle {idle_kib} KiB)"
    );
}

/// GET on a fresh connection: status and body, `None` when it fails.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    http(addr, "GET", path, "text/plain", b"").ok()
}

/// POST of a protobuf body: the status, `None` when the connection failed.
fn http_post(addr: SocketAddr, body: &[u8]) -> Option<u16> {
    http(addr, "POST", "/v1/metrics", "application/x-protobuf", body)
        .ok()
        .map(|(s, _)| s)
}
