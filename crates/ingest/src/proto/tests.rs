//! The wire walker against the `prost` decoder it replaced (`legacy`): on every input, the
//! same points in the same order, the same issues (kind, location, message, byte for
//! byte) and the same counts. Inputs: the shared fixtures, data from `unseen generate`,
//! random messages built field by field from the OTLP grammar (valid and broken), random
//! bytes, and mutations (truncations, bit flips, byte edits) of all of them.

use std::io::{BufReader, Read};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use proptest::prelude::*;
use prost::Message;

use super::{count_points, decode_varint, legacy};
use crate::sink::Sink;
use crate::{Limits, Position, SourceStats};

// ---- running both decoders -------------------------------------------------------------

use crate::reference::Recorded as Seen;

#[derive(Debug, PartialEq)]
struct Outcome {
    seen: Seen,
    stats: SourceStats,
}

/// The limits the comparisons run with: the default, and a dimension limit small enough
/// that generated values go over it.
const LIMITS: [Limits; 2] = [
    Limits {
        max_record_bytes: 64 << 20,
        max_dimension_bytes: 4096,
    },
    Limits {
        max_record_bytes: 64 << 20,
        max_dimension_bytes: 8,
    },
];

fn walker(frame: &[u8], limits: Limits) -> Outcome {
    let mut seen = Seen::default();
    let mut sink = Sink::new("t", limits, &mut seen);
    sink.record();
    super::decode_frame(frame, Position::Body, &mut sink);
    let stats = sink.stats();
    Outcome { seen, stats }
}

fn prost(frame: &[u8], limits: Limits) -> Outcome {
    let mut seen = Seen::default();
    let mut sink = Sink::new("t", limits, &mut seen);
    sink.record();
    legacy::decode_frame(Bytes::copy_from_slice(frame), Position::Body, &mut sink);
    let stats = sink.stats();
    Outcome { seen, stats }
}

/// One message through both decoders; returns the walker's outcome.
fn agree(frame: &[u8]) -> Outcome {
    let mut first = None;
    for limits in LIMITS {
        let ours = walker(frame, limits);
        let reference = prost(frame, limits);
        assert_eq!(ours, reference, "message {frame:02x?}");
        first.get_or_insert(ours);
    }
    first.unwrap()
}

/// A framed source (file exporter framing) through both frame readers: with the reader
/// `read_source` uses (64 KiB `BufReader`), over the bytes in memory as `read_bytes` reads
/// them (every frame walked where it lies), and in small reads with small read-aheads, so
/// that frames arrive, and are walked, in pieces.
fn agree_framed(bytes: &[u8], limits: Limits) -> Outcome {
    #[derive(Clone, Copy)]
    enum Via {
        BufReader,
        Memory,
        Trickle,
    }
    let run = |new: Option<usize>, via: Via| {
        let mut seen = Seen::default();
        let mut sink = Sink::new("t", limits, &mut seen);
        let mut reader: Box<dyn std::io::BufRead> = match via {
            Via::Trickle => Box::new(BufReader::with_capacity(1000, Trickle(bytes))),
            Via::BufReader => Box::new(BufReader::with_capacity(64 << 10, bytes)),
            Via::Memory => Box::new(bytes),
        };
        match new {
            Some(read_ahead) => super::read_frames(&mut reader, &mut sink, read_ahead).unwrap(),
            None => legacy::read(&mut reader, &mut sink).unwrap(),
        }
        let stats = sink.stats();
        Outcome { seen, stats }
    };
    let reference = run(None, Via::BufReader);
    let ours = run(Some(super::READ_AHEAD), Via::BufReader);
    assert_eq!(ours, reference);
    assert_eq!(
        run(Some(super::READ_AHEAD), Via::Memory),
        reference,
        "in memory"
    );
    for read_ahead in [1, 100, 5000] {
        assert_eq!(
            run(Some(read_ahead), Via::Trickle),
            reference,
            "read-ahead {read_ahead}"
        );
    }
    ours
}

/// A reader that hands out at most 777 bytes per call.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(777).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn frame(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn unframe(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((prefix, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    out
}

// ---- real data ---------------------------------------------------------------------------

const FIXTURES: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/otel_k8scluster/expected.yaml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/otel_k8scluster/expected_cluster_receiver.yaml"
    ),
];

/// `unseen generate --clusters 2 --nodes-per-cluster 2 --pods-per-node 2 --images 20
/// --days 1 --interval 6h --seed 3 --max-batch-points 200 --format otlp-proto`, gzipped:
/// 8 batches as the generator's encoder writes them (534 points, 98 ready).
const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/generated.binpb.gz");

/// The fixtures (YAML, through opentelemetry-proto's serde and prost) and the generated
/// batches, one message each.
fn real_messages() -> &'static [Vec<u8>] {
    static MESSAGES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    MESSAGES.get_or_init(load_real_messages)
}

fn load_real_messages() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in FIXTURES {
        let yaml = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: serde_json::Value = serde_yaml::from_slice(&yaml).unwrap();
        let request: ExportMetricsServiceRequest = serde_json::from_value(value).unwrap();
        out.push(request.encode_to_vec());
    }
    let mut generated = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(GENERATED).unwrap())
        .read_to_end(&mut generated)
        .unwrap();
    out.extend(unframe(&generated));
    out
}

#[test]
fn real_messages_agree() {
    let messages = real_messages();
    assert_eq!(messages.len(), 10);
    let mut ready = 0;
    for m in messages {
        let out = agree(m);
        assert!(out.seen.issues.is_empty(), "{:?}", out.seen.issues);
        ready += out.stats.ready_points;
    }
    assert_eq!(ready, 10 + 13 + 98);
}

#[test]
fn truncated_real_messages_agree() {
    for m in real_messages() {
        // Every cut in the first bytes, then every 61st.
        for len in (0..m.len().min(300)).chain((300..m.len()).step_by(61)) {
            agree(&m[..len]);
        }
    }
}

#[test]
fn framed_sources_agree() {
    let messages = real_messages();
    // Frames of every size one after the other, so the reused buffers shrink and grow.
    let bytes = frame(messages);
    for limits in LIMITS {
        let out = agree_framed(&bytes, limits);
        assert_eq!(out.stats.records, messages.len() as u64);
        assert_eq!(out.stats.malformed_records, 0);
    }
    assert_eq!(agree_framed(&bytes, LIMITS[0]).stats.ready_points, 121);
    // A record limit between the frame sizes: some frames skipped.
    let limits = Limits {
        max_record_bytes: 30_000,
        ..Limits::default()
    };
    let skipped = agree_framed(&bytes, limits).stats.malformed_records;
    assert!((1..10).contains(&skipped), "{skipped}");
    // Truncated files: inside a prefix, inside a message, at a frame boundary.
    for len in (0..bytes.len()).step_by(997).chain([4, 5, bytes.len() - 1]) {
        agree_framed(&bytes[..len], LIMITS[0]);
    }
}

// ---- random messages from the grammar ----------------------------------------------------

/// splitmix64: a seed is a whole test case, and failures print it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy)]
enum Ty {
    Request,
    ResourceMetrics,
    Resource,
    KeyValue,
    AnyValue,
    ScopeMetrics,
    Scope,
    Metric,
    NumberData,
    NumberDataPoint,
    /// Histogram, exponential histogram, summary: `data_points = 1` and scalars.
    OtherData,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Msg(Ty),
    Key,
    Str,
    Name,
    Varint,
    Fixed64,
    Time,
}

/// The fields of each message (OTLP field numbers), the ones the decoder reads and some
/// it skips.
fn grammar(ty: Ty) -> &'static [(u32, Kind)] {
    use Kind::*;
    match ty {
        Ty::Request => &[(1, Msg(Ty::ResourceMetrics))],
        Ty::ResourceMetrics => &[
            (1, Msg(Ty::Resource)),
            (2, Msg(Ty::ScopeMetrics)),
            (2, Msg(Ty::ScopeMetrics)),
            (3, Str),
        ],
        Ty::Resource => &[(1, Msg(Ty::KeyValue)), (2, Varint)],
        Ty::KeyValue => &[(1, Key), (2, Msg(Ty::AnyValue))],
        Ty::AnyValue => &[(1, Str), (2, Varint), (3, Varint), (4, Fixed64), (7, Str)],
        Ty::ScopeMetrics => &[
            (1, Msg(Ty::Scope)),
            (2, Msg(Ty::Metric)),
            (2, Msg(Ty::Metric)),
            (2, Msg(Ty::Metric)),
            (3, Str),
        ],
        Ty::Scope => &[(1, Str), (2, Str), (3, Msg(Ty::KeyValue))],
        Ty::Metric => &[
            (1, Name),
            (5, Msg(Ty::NumberData)),
            (5, Msg(Ty::NumberData)),
            (7, Msg(Ty::NumberData)),
            (2, Str),
            (3, Str),
            (5, Msg(Ty::NumberData)),
            (7, Msg(Ty::NumberData)),
            (9, Msg(Ty::OtherData)),
            (10, Msg(Ty::OtherData)),
            (11, Msg(Ty::OtherData)),
            (12, Msg(Ty::KeyValue)),
        ],
        Ty::NumberData => &[
            (1, Msg(Ty::NumberDataPoint)),
            (1, Msg(Ty::NumberDataPoint)),
            (2, Varint),
            (3, Varint),
        ],
        Ty::NumberDataPoint => &[
            (2, Fixed64),
            (3, Time),
            (3, Time),
            (7, Msg(Ty::KeyValue)),
            (4, Fixed64),
            (6, Fixed64),
            (7, Msg(Ty::KeyValue)),
            (8, Varint),
        ],
        Ty::OtherData => &[(1, Msg(Ty::NumberDataPoint)), (2, Varint)],
    }
}

fn max_fields(ty: Ty) -> u64 {
    match ty {
        Ty::Request | Ty::ScopeMetrics | Ty::NumberData => 4,
        Ty::ResourceMetrics | Ty::Metric => 5,
        Ty::Resource => 6,
        Ty::KeyValue | Ty::AnyValue | Ty::Scope | Ty::OtherData => 3,
        Ty::NumberDataPoint => 4,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a varint, sometimes in a longer (still valid) form.
fn put_varint_any(rng: &mut Rng, out: &mut Vec<u8>, v: u64) {
    if v < 1 << 56 && rng.chance(3) {
        // One redundant continuation byte.
        let mut tmp = Vec::new();
        put_varint(&mut tmp, v);
        let last = tmp.len() - 1;
        tmp[last] |= 0x80;
        tmp.push(0);
        out.extend_from_slice(&tmp);
    } else {
        put_varint(out, v);
    }
}

fn put_bytes(rng: &mut Rng, out: &mut Vec<u8>, bytes: &[u8], bad: bool) {
    let mut len = bytes.len() as u64;
    if bad && rng.chance(4) {
        len = match rng.below(4) {
            0 => len + 1,
            1 => len.saturating_sub(1),
            2 => len + 1 + rng.below(300),
            _ => rng.next(),
        };
    }
    put_varint_any(rng, out, len);
    out.extend_from_slice(bytes);
}

const KEYS: [&str; 13] = [
    "host.name",
    "k8s.cluster.name",
    "k8s.node.name",
    "container.image.name",
    "k8s.pod.name",
    "container.image.tag",
    "",
    // Evidence sharing a length with a key (16, 20) or with each other (12, 18).
    "k8s.cronjob.name",
    "k8s.statefulset.name",
    "container.id",
    "k8s.namespace.name",
    "k8s.daemonset.name",
    // Almost an attribute read.
    "k8s.pod.uuid",
];
const STRINGS: [&[u8]; 9] = [
    b"",
    b"n1",
    b"img:1.0",
    b"nine-byte",
    b"registry.example.com/team/app",
    "ünï".as_bytes(),
    b"\xff\xfe",
    b"a\x80",
    b"\x0a\x00",
];
const NAMES: [&str; 5] = [
    "k8s.container.ready",
    "k8s.container.ready",
    "k8s.pod.phase",
    "k8s.container.ready.x",
    "",
];

/// A field the grammar does not have here: any tag, any wire type (groups, stray group
/// ends, invalid wire types 6 and 7 when `bad`).
fn random_field(rng: &mut Rng, out: &mut Vec<u8>, depth: u32, bad: bool) {
    let tag = if bad && rng.chance(5) {
        rng.pick(&[0u64, 1 << 29, (1 << 29) - 1, 1 << 32])
    } else {
        1 + rng.below(20)
    };
    let wire = if bad {
        rng.below(8)
    } else {
        rng.pick(&[0u64, 1, 2, 3, 5])
    };
    put_varint_any(rng, out, tag << 3 | wire);
    match wire {
        0 => {
            if bad && rng.chance(10) {
                out.extend_from_slice(&[0xff; 9]);
                out.push(rng.pick(&[0x01, 0x02, 0x7f, 0x80]));
            } else {
                let v = rng.next() >> rng.below(64);
                put_varint_any(rng, out, v);
            }
        }
        1 => out.extend_from_slice(&rng.next().to_le_bytes()),
        2 => {
            let len = rng.below(12) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            put_bytes(rng, out, &bytes, bad);
        }
        3 => {
            if depth < 8 {
                for _ in 0..rng.below(3) {
                    random_field(rng, out, depth + 1, bad);
                }
            }
            let end = if bad && rng.chance(10) { tag + 1 } else { tag };
            put_varint(out, end << 3 | 4);
        }
        5 => out.extend_from_slice(&(rng.next() as u32).to_le_bytes()),
        _ => {}
    }
}

/// One message of type `ty`; `bad` allows every kind of damage.
fn message(rng: &mut Rng, ty: Ty, depth: u32, bad: bool, out: &mut Vec<u8>) {
    let natural = |kind: Kind| match kind {
        Kind::Msg(_) | Kind::Key | Kind::Str | Kind::Name => 2,
        Kind::Varint => 0,
        Kind::Fixed64 | Kind::Time => 1,
    };
    let fields = match ty {
        // Enough structure to reach the points often.
        Ty::Request | Ty::ResourceMetrics | Ty::ScopeMetrics | Ty::Metric | Ty::NumberData => {
            1 + rng.below(max_fields(ty))
        }
        _ => rng.below(max_fields(ty) + 1),
    };
    if matches!(ty, Ty::Metric) && rng.chance(70) {
        // The name first, as writers do.
        put_varint(out, 1 << 3 | 2);
        let name = rng.pick(&NAMES);
        put_bytes(rng, out, name.as_bytes(), bad);
    }
    for _ in 0..fields {
        if rng.chance(if bad { 12 } else { 5 }) {
            random_field(rng, out, depth, bad);
            continue;
        }
        let (tag, kind) = rng.pick(grammar(ty));
        let wire = if bad && rng.chance(3) {
            rng.below(6)
        } else {
            natural(kind)
        };
        put_varint_any(rng, out, u64::from(tag) << 3 | wire);
        if wire != natural(kind) {
            // Something of the wire type written, which the field's type is not.
            match wire {
                0 => put_varint(out, rng.below(1000)),
                1 => out.extend_from_slice(&rng.next().to_le_bytes()),
                2 => put_bytes(rng, out, b"\x08\x01", bad),
                5 => out.extend_from_slice(&[1, 2, 3, 4]),
                _ => {}
            }
            continue;
        }
        match kind {
            Kind::Msg(child) => {
                let mut inner = Vec::new();
                if depth < 7 {
                    message(rng, child, depth + 1, bad, &mut inner);
                }
                put_bytes(rng, out, &inner, bad);
            }
            Kind::Key => {
                let key = rng.pick(&KEYS);
                put_bytes(rng, out, key.as_bytes(), bad)
            }
            Kind::Str => {
                let s = rng.pick(&STRINGS);
                put_bytes(rng, out, s, bad)
            }
            Kind::Name => {
                let name = rng.pick(&NAMES);
                put_bytes(rng, out, name.as_bytes(), bad)
            }
            Kind::Varint => {
                let v = rng.below(3);
                put_varint_any(rng, out, v)
            }
            Kind::Fixed64 => out.extend_from_slice(&rng.next().to_le_bytes()),
            Kind::Time => {
                let t = if rng.chance(20) { 0 } else { rng.next() };
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
    }
}

fn request(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let bad = rng.chance(35);
    let mut out = Vec::new();
    message(&mut rng, Ty::Request, 0, bad, &mut out);
    out
}

/// Truncations, bit flips, byte edits.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = |rng: &mut Rng, len: usize| rng.below(len as u64 + 1) as usize;
        match rng.below(5) {
            0 => {
                let len = at(rng, bytes.len());
                bytes.truncate(len);
            }
            1 if !bytes.is_empty() => {
                let i = at(rng, bytes.len() - 1);
                bytes[i] ^= 1 << rng.below(8);
            }
            2 if !bytes.is_empty() => {
                let i = at(rng, bytes.len() - 1);
                bytes[i] = rng.next() as u8;
            }
            3 => {
                let i = at(rng, bytes.len());
                bytes.insert(i, rng.next() as u8);
            }
            4 if !bytes.is_empty() => {
                let i = at(rng, bytes.len() - 1);
                bytes.remove(i);
            }
            _ => {}
        }
    }
}

#[test]
fn the_grammar_makes_points_and_errors() {
    // The generator reaches both sides: messages with ready points and malformed ones.
    let (mut points, mut malformed, mut point_issues) = (0, 0, 0);
    for seed in 0..2000 {
        let out = agree(&request(seed));
        points += out.stats.ready_points;
        malformed += out.stats.malformed_records;
        point_issues += out.stats.malformed_points;
    }
    assert!(points > 200, "{points}");
    assert!(malformed > 200, "{malformed}");
    assert!(point_issues > 50, "{point_issues}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_agree(seed in any::<u64>()) {
        agree(&request(seed));
    }

    #[test]
    fn mutated_random_messages_agree(seed in any::<u64>()) {
        let mut bytes = request(seed);
        mutate(&mut Rng(seed ^ 0x5555), &mut bytes);
        agree(&bytes);
    }

    #[test]
    fn random_bytes_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes);
    }

    #[test]
    fn random_fields_agree(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            random_field(&mut rng, &mut bytes, 0, true);
        }
        agree(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_messages_agree(which in 0usize..10, seed in any::<u64>()) {
        let mut bytes = real_messages()[which].clone();
        mutate(&mut Rng(seed), &mut bytes);
        agree(&bytes);
    }

    /// Files of several frames, real (mutated or not) and random, maybe cut short: a
    /// frame is walked as it arrives, and the walk must agree when it turns out broken
    /// halfway; the buffers are reused from frame to frame.
    #[test]
    fn framed_sources_of_mutated_messages_agree(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut messages = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let mut message = if rng.chance(70) {
                real_messages()[rng.below(10) as usize].clone()
            } else {
                request(rng.next())
            };
            if rng.chance(60) {
                mutate(&mut rng, &mut message);
            }
            messages.push(message);
        }
        let mut bytes = frame(&messages);
        if rng.chance(20) {
            let len = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.truncate(len);
        }
        agree_framed(&bytes, LIMITS[rng.below(2) as usize]);
    }
}

// ---- cases worth naming ------------------------------------------------------------------

fn nested(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![tag << 3 | 2];
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

fn string(tag: u8, s: &[u8]) -> Vec<u8> {
    nested(tag, &[s])
}

fn kv(key: &str, value: &[u8]) -> Vec<u8> {
    nested(
        1,
        &[&string(1, key.as_bytes()), &nested(2, &[&string(1, value)])],
    )
}

fn ready_gauge(points: &[&[u8]]) -> Vec<u8> {
    let data_points: Vec<u8> = points.iter().flat_map(|p| nested(1, &[p])).collect();
    nested(
        2,
        &[
            &string(1, b"k8s.container.ready"),
            &nested(5, &[&data_points]),
        ],
    )
}

fn time(t: u64) -> Vec<u8> {
    [&[0x19][..], &t.to_le_bytes()].concat()
}

#[test]
fn named_cases_agree() {
    let resource = nested(
        1,
        &[
            &kv("k8s.node.name", b"n1"),
            &kv("container.image.name", b"img"),
        ],
    );
    let resource2 = nested(1, &[&kv("k8s.node.name", b"n2"), &kv("host.name", b"h")]);
    let point = time(5);
    let metric = ready_gauge(&[
        &point,
        &[],
        &[
            &time(7)[..],
            &nested(
                7,
                &[&string(1, b"host.name"), &nested(2, &[&string(1, b"p")])],
            ),
        ]
        .concat(),
    ]);
    let cases: Vec<Vec<u8>> = vec![
        // Two `resource` fields: their attributes add up, the first value of a key wins.
        nested(1, &[&resource, &nested(2, &[&metric]), &resource2]),
        // A value given twice: the last string wins; a non-string after it does not hide it.
        nested(
            1,
            &[
                &nested(
                    1,
                    &[&nested(
                        1,
                        &[
                            &string(1, b"k8s.node.name"),
                            &nested(2, &[&string(1, b"first")]),
                            &nested(2, &[&string(1, b"second")]),
                            &nested(2, &[&[0x18, 0x05][..]]),
                        ],
                    )],
                ),
                &nested(2, &[&metric]),
            ],
        ),
        // A gauge given twice: the last one is read.
        nested(
            1,
            &[&nested(
                2,
                &[&nested(
                    2,
                    &[
                        &string(1, b"k8s.container.ready"),
                        &nested(5, &[&nested(1, &[&time(1)])]),
                        &nested(5, &[&nested(1, &[&time(2)]), &nested(1, &[&time(3)])]),
                        &nested(7, &[&nested(1, &[&time(4)])]),
                        &nested(9, &[&nested(1, &[]), &nested(1, &[])]),
                    ],
                )],
            )],
        ),
        // A data field past the metric's end but inside the message.
        [
            &nested(1, &[&nested(2, &[&[0x12, 4, 0x2a, 10][..]])])[..],
            &[0; 12],
        ]
        .concat(),
    ];
    for case in &cases {
        agree(case);
    }
    assert_eq!(agree(&cases[0]).seen.points.len(), 2);
    assert_eq!(agree(&cases[2]).seen.points.len(), 3);
}

#[test]
fn nested_groups_at_the_recursion_limit_agree() {
    // Unknown groups nested around prost's limit of 100, at the top and inside an AnyValue.
    for depth in [1usize, 50, 94, 95, 96, 97, 98, 99, 100, 101, 150] {
        // Field 15: start group, ..., end group, ...
        let group = [vec![0x7b; depth], vec![0x7c; depth]].concat();
        agree(&group);
        let any_value = nested(2, &[&group]);
        let kv = nested(1, &[&string(1, b"host.name"), &any_value]);
        agree(&nested(
            1,
            &[&nested(1, &[&kv]), &nested(2, &[&ready_gauge(&[&time(1)])])],
        ));
        // And inside a point's attribute (the ready metric's data is a message of its own).
        let point = [
            &time(1)[..],
            &nested(7, &[&string(1, b"host.name"), &any_value]),
        ]
        .concat();
        agree(&nested(1, &[&nested(2, &[&ready_gauge(&[&point])])]));
    }
}

#[test]
fn zstd_and_empty_agree() {
    agree(&[]);
    agree(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
}

// ---- the lenient varint of detection and point counting -------------------------------

#[test]
fn varints() {
    let mut buf: &[u8] = &[0x96, 0x01, 0x07];
    assert_eq!(decode_varint(&mut buf), Some(150));
    assert_eq!(buf, &[0x07]);
    assert_eq!(decode_varint(&mut &[0x80u8][..]), None, "cut off");
    assert_eq!(decode_varint(&mut &[0xffu8; 11][..]), None, "over 10 bytes");
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(decode_varint(&mut &max[..]), Some(u64::MAX));
}

#[test]
fn counts_points_of_every_wire_type() {
    // field 1 (len 0) x2, field 2 varint, field 3 fixed64, field 4 fixed32, field 1 (len 1)
    let data = [
        0x0a, 0, 0x0a, 0, 0x10, 0x96, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0, 0x0a,
        1, 9,
    ];
    assert_eq!(count_points(&data), Ok(3));
    assert!(count_points(&[0x0a, 5, 0]).is_err(), "length past the end");
    assert!(count_points(&[0x0b]).is_err(), "group wire type");
}
