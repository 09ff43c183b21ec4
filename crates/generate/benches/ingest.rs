//! In-process ingest on one core: realistic OTLP protobuf batches (from the generator) through
//! unseen's decoder (over the bytes in memory, as `scan` reads a mapped file, and as request
//! bodies, as `serve` reads them), and on to findings, next to a bare `prost::Message::decode` of the same
//! bytes into opentelemetry-proto's `ExportMetricsServiceRequest` (the naive reference).
//!
//! A plain `harness = false` main rather than criterion: each figure is one pass over
//! hundreds of megabytes, timed best-of-N, which needs no statistics engine, and criterion
//! would cost more compile time than the rest of this crate.
//!
//! `cargo bench -p unseen-generate --bench ingest -- [--smoke] [--ready-points N] [--runs N]`
//! prints a Markdown table and `BENCH key=value` lines for `scripts/bench.sh`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use unseen_detect::BatchScan;
use unseen_generate::{Encoder, Format, Generator, Params};
use unseen_ingest::{read_bytes, Issue, Limits, Visitor};
use unseen_model::{unix_secs_from_nanos, PointRef, Windows, SEED_RULE};
use unseen_normalize::image::CanonicalMemo;
use unseen_normalize::{key_of_memo, KeyMode};

/// The allocator of the `unseen` binary (its `main.rs`): these figures are what `scan` and
/// `serve` do, so they allocate as the binary does. (prost's decode, the reference, gains
/// from it as much as ours.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    ready_points: u64,
    runs: u32,
    /// `--profile ROW`: run only that row (`decode`, `findings` or `bodies`), `runs` times,
    /// and print its time: for `perf record`, which would otherwise see mostly the generator.
    profile: Option<String>,
    /// `--prost-file PATH`: only the bare prost decode of the frames of a file written by
    /// `unseen generate --format otlp-proto` (the reference of `scan`'s end-to-end row in
    /// `scripts/bench.sh`): the file is read into memory first, so prost pays no I/O.
    prost_file: Option<std::path::PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        ready_points: 400_000,
        runs: 3,
        profile: None,
        prost_file: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => {
                o.ready_points = 20_000;
                o.runs = 1;
            }
            "--ready-points" => {
                o.ready_points = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--ready-points N")
            }
            "--runs" => o.runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--profile" => o.profile = Some(args.next().expect("--profile decode|findings|bodies")),
            "--prost-file" => o.prost_file = Some(args.next().expect("--prost-file PATH").into()),
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    o
}

/// A fleet whose collections are one full-size batch per cluster, as a real collector sends.
fn history(ready_points: u64) -> (Vec<u8>, Params, u64, u64, u64) {
    let mut params = Params {
        clusters: 4,
        nodes_per_cluster: 50,
        pods_per_node: 20,
        images: 2000,
        interval_secs: 10,
        seed: 7,
        ..Params::default()
    };
    // About 1,300 containers per cluster: collections until the ready points are reached.
    let per_collection = 4 * 1_300;
    let ticks = (ready_points / per_collection).max(1) + 1;
    params.duration_secs = ticks * params.interval_secs;
    let mut g = Generator::new(params.clone()).unwrap();
    let mut enc = Encoder::new(Format::OtlpProto, Default::default());
    let mut bytes = Vec::new();
    while let Some(batch) = g.next_batch() {
        bytes.extend_from_slice(enc.encode(&batch));
        if g.stats().ready_points >= ready_points {
            break;
        }
    }
    let s = g.stats();
    (bytes, params, s.batches, s.points, s.ready_points)
}

fn frames(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let frame = &rest[4..4 + len];
        rest = &rest[4 + len..];
        Some(frame)
    })
}

/// The reference: decode everything prost's generated types hold, then find the ready points.
fn prost_decode(bytes: &[u8]) -> u64 {
    let mut ready = 0;
    for frame in frames(bytes) {
        let request = ExportMetricsServiceRequest::decode(frame).unwrap();
        for rm in &request.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    if m.name == "k8s.container.ready" {
                        ready += 1;
                    }
                }
            }
        }
        black_box(&request);
    }
    ready
}

struct Count(u64);

impl Visitor for Count {
    fn point(&mut self, point: PointRef<'_>) {
        black_box(point);
        self.0 += 1;
    }
    fn issue(&mut self, issue: Issue) {
        panic!("generated data has an issue: {issue}");
    }
}

fn ingest_decode(bytes: &[u8]) -> u64 {
    let mut v = Count(0);
    read_bytes(
        "bench",
        bytes,
        unseen_ingest::Format::OtlpProto,
        Limits::default(),
        &mut v,
    )
    .unwrap();
    v.0
}

struct Scan<'m> {
    mode: &'m KeyMode,
    memo: CanonicalMemo,
    scan: BatchScan,
    points: u64,
}

impl Visitor for Scan<'_> {
    fn point(&mut self, point: PointRef<'_>) {
        self.points += 1;
        if let Ok(key) = key_of_memo(&point.dims, self.mode, &mut self.memo) {
            // As `unseen scan` does: the evidence of default-mode findings comes along.
            let evidence = (!self.mode.strict).then(|| {
                (
                    &point.dims.context,
                    point.dims.image_name.unwrap_or_default(),
                )
            });
            self.scan.observe_with(
                key,
                unix_secs_from_nanos(point.time_unix_nano),
                point.dims.host_name,
                evidence,
            );
        }
    }
    fn issue(&mut self, issue: Issue) {
        panic!("generated data has an issue: {issue}");
    }
}

/// The rule's batch state over `bytes`, read as `unseen scan` reads a mapped file.
fn scan_bytes<'m>(bytes: &[u8], at: i64, mode: &'m KeyMode) -> Scan<'m> {
    let mut v = Scan {
        memo: CanonicalMemo::default(),
        mode,
        scan: BatchScan::new(Windows::default(), at),
        points: 0,
    };
    read_bytes(
        "bench",
        bytes,
        unseen_ingest::Format::OtlpProto,
        Limits::default(),
        &mut v,
    )
    .unwrap();
    v
}

/// What `unseen scan` does per point: decode, key, batch rule state; then the findings.
fn ingest_to_findings(bytes: &[u8], at: i64) -> u64 {
    let mode = KeyMode::default();
    let v = scan_bytes(bytes, at, &mode);
    findings(v, &mode, at)
}

/// The same from request bodies, decoded as `serve` decodes them (`read_request`, one
/// body per batch, already in memory: no copy through `Read`).
fn bodies_to_findings(bodies: &[bytes::Bytes], at: i64) -> u64 {
    let mode = KeyMode::default();
    let mut v = Scan {
        memo: CanonicalMemo::default(),
        mode: &mode,
        scan: BatchScan::new(Windows::default(), at),
        points: 0,
    };
    for body in bodies {
        // A clone of `Bytes` is a reference count, not a copy.
        let stats = unseen_ingest::read_request(
            "bench",
            body.clone(),
            unseen_ingest::BodyEncoding::Protobuf,
            Limits::default(),
            &mut v,
        );
        assert_eq!(stats.malformed_records, 0);
    }
    findings(v, &mode, at)
}

/// The findings as `unseen scan` makes them: what the baseline window knew, streamed
/// into the triage's index, then the detections through the triage (`Decider::batch_with`).
fn findings(v: Scan<'_>, mode: &KeyMode, at: i64) -> u64 {
    with_decider(mode, at, |decider| {
        let mut state = unseen_findings::TriageState::untracked();
        v.scan
            .for_each_baseline_key(|c, n, i| decider.know_baseline(&mut state, c, n, i));
        let detections = v.scan.finish();
        let findings = decider.batch_with(detections, state);
        black_box(findings.len());
    });
    v.points
}

/// `f` with the `Decider` that `unseen scan` uses: the seed rule, default windows and
/// triage settings, no suppressions, reporting at `at`.
fn with_decider<R>(
    mode: &KeyMode,
    at: i64,
    f: impl FnOnce(&unseen_findings::Decider<'_>) -> R,
) -> R {
    let settings = unseen_findings::TriageSettings::default();
    let suppressions = unseen_findings::Suppressions::default();
    let decider = unseen_findings::Decider {
        rule: &SEED_RULE,
        mode,
        windows: Windows::default(),
        settings: &settings,
        suppressions: &suppressions,
        now: at,
        report: true,
    };
    f(&decider)
}

/// For `--profile triage`: the detections and baseline keys of the scan, kept so that
/// the triage alone can run again and again.
#[allow(clippy::type_complexity)]
fn scanned(
    bytes: &[u8],
    at: i64,
) -> (Vec<unseen_detect::Detection>, Vec<(String, String, String)>) {
    let mode = KeyMode::default();
    let v = scan_bytes(bytes, at, &mode);
    let mut known = Vec::new();
    v.scan
        .for_each_baseline_key(|c, n, i| known.push((c.to_string(), n.to_string(), i.to_string())));
    (v.scan.finish(), known)
}

/// The triage step of [`findings`] alone.
fn triage(
    detections: Vec<unseen_detect::Detection>,
    known: &[(String, String, String)],
    at: i64,
) -> u64 {
    with_decider(&KeyMode::default(), at, |decider| {
        let mut state = unseen_findings::TriageState::untracked();
        for (c, n, i) in known {
            decider.know_baseline(&mut state, c, n, i);
        }
        let findings = decider.batch_with(detections, state);
        black_box(&findings);
        findings.len() as u64
    })
}

fn best(runs: u32, mut f: impl FnMut() -> u64) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut out = 0;
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

fn main() {
    let o = options();
    if let Some(path) = &o.prost_file {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (d, ready) = best(o.runs, || prost_decode(&bytes));
        println!(
            "bare prost decode of {}: {ready} ready points, best {:.3} s of {}, {:.0} ready points/s",
            path.display(),
            d.as_secs_f64(),
            o.runs,
            ready as f64 / d.as_secs_f64()
        );
        println!("BENCH file_ready_points={ready}");
        println!(
            "BENCH file_prost_ready_pps={:.0}",
            ready as f64 / d.as_secs_f64()
        );
        return;
    }
    let t = Instant::now();
    let (bytes, params, batches, points, ready) = history(o.ready_points);
    eprintln!(
        "generated {} batches, {points} points ({ready} k8s.container.ready), {:.0} MB in {:.1} s",
        batches,
        bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let at = (params.start_unix_secs + params.duration_secs) as i64;
    let bodies: Vec<bytes::Bytes> = frames(&bytes).map(bytes::Bytes::copy_from_slice).collect();
    if let Some(row) = &o.profile {
        let (d, n) = match row.as_str() {
            "decode" => best(o.runs, || ingest_decode(&bytes)),
            "findings" => best(o.runs, || ingest_to_findings(&bytes, at)),
            "bodies" => best(o.runs, || bodies_to_findings(&bodies, at)),
            "triage" => {
                let (detections, known) = scanned(&bytes, at);
                let (d, n) = best(o.runs, || triage(detections.clone(), &known, at));
                println!(
                    "triage of {n} detections: best {:.1} ms",
                    d.as_secs_f64() * 1e3
                );
                return;
            }
            other => panic!("--profile {other}: expected decode, findings or bodies"),
        };
        assert_eq!(n, ready);
        println!(
            "{row}: best {:.3} s, {:.0} ready points/s",
            d.as_secs_f64(),
            ready as f64 / d.as_secs_f64()
        );
        return;
    }

    let rows: Vec<(&str, Duration, u64)> = vec![
        {
            let (d, n) = best(o.runs, || prost_decode(&bytes));
            (
                "bare `prost::Message::decode` (opentelemetry-proto types)",
                d,
                n,
            )
        },
        {
            let (d, n) = best(o.runs, || ingest_decode(&bytes));
            (
                "unseen_ingest::read_bytes (as `scan` reads a mapped protobuf file), decode only",
                d,
                n,
            )
        },
        {
            let (d, n) = best(o.runs, || ingest_to_findings(&bytes, at));
            ("unseen_ingest → key → BatchScan → findings", d, n)
        },
        {
            let (d, n) = best(o.runs, || bodies_to_findings(&bodies, at));
            (
                "the same from request bodies (`read_request`, as `serve`)",
                d,
                n,
            )
        },
    ];
    for (name, _, n) in &rows {
        assert_eq!(
            *n, ready,
            "{name} found {n} ready points, the generator wrote {ready}"
        );
    }

    println!(
        "In-process ingest, one thread: {batches} OTLP protobuf batches, {:.1} MB, {points} points of which {ready} k8s.container.ready; best of {}.\n",
        bytes.len() as f64 / 1e6,
        o.runs
    );
    println!("| path | time | ready points/s | all points/s | MB/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, d, _) in &rows {
        let s = d.as_secs_f64();
        println!(
            "| {name} | {:.3} s | {:.0} | {:.0} | {:.0} |",
            s,
            ready as f64 / s,
            points as f64 / s,
            bytes.len() as f64 / 1e6 / s
        );
    }
    let prost = rows[0].1.as_secs_f64();
    let decode = rows[1].1.as_secs_f64();
    let full = rows[2].1.as_secs_f64();
    let body = rows[3].1.as_secs_f64();
    println!(
        "\nratio (speed vs bare prost decode): decode only {:.2}×, to findings {:.2}×, from bodies to findings {:.2}× (target ≥ 2×)",
        prost / decode,
        prost / full,
        prost / body
    );
    println!("BENCH ingest_bytes={}", bytes.len());
    println!("BENCH ingest_ready_points={ready}");
    println!("BENCH ingest_points={points}");
    println!("BENCH prost_ready_pps={:.0}", ready as f64 / prost);
    println!("BENCH ingest_decode_ready_pps={:.0}", ready as f64 / decode);
    println!("BENCH ingest_findings_ready_pps={:.0}", ready as f64 / full);
    println!("BENCH ingest_decode_ratio={:.2}", prost / decode);
    println!("BENCH ingest_findings_ratio={:.2}", prost / full);
    println!("BENCH ingest_bodies_ready_pps={:.0}", ready as f64 / body);
    println!("BENCH ingest_bodies_ratio={:.2}", prost / body);
}
