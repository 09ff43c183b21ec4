//! The CSV reader (plain rows split in place, the rest through `csv-core`) against the
//! csv-core-only reader it replaced ([`super::reference`]): on any bytes, the same points,
//! the same issues (kind, location, message), the same counts, the same fatal error.

use std::io::{self, BufRead, BufReader, Read};

use proptest::prelude::*;

use super::{
    block_masks, plain_nanos, plain_seconds, read_with, reference, split_row, swar_masks, time,
    Masks,
};
use crate::detect::Opened;
use crate::sink::{Fatal, Sink};
use crate::{Limits, SourceStats};

use crate::reference::Recorded as Seen;

#[derive(Debug, PartialEq)]
struct Outcome {
    seen: Seen,
    stats: SourceStats,
    result: Result<(), String>,
}

/// Hands out at most `chunk` bytes per read, as pipes and sockets may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn outcome(limits: Limits, run: impl FnOnce(&mut Sink<'_, Seen>) -> Result<(), Fatal>) -> Outcome {
    let mut seen = Seen::default();
    let mut sink = Sink::new("src", limits, &mut seen);
    let result = run(&mut sink).map_err(|fatal| match fatal {
        Fatal::Io(error) => format!("io: {error}"),
        Fatal::Unusable(message) => message,
    });
    let stats = sink.stats();
    Outcome {
        seen,
        stats,
        result,
    }
}

/// The input as `read_source` hands it to a decoder: the first 64 KiB read ahead.
fn opened(data: &[u8], chunk: usize) -> BufReader<impl Read + '_> {
    Opened::new(Chunked { data, chunk })
        .expect("reading memory")
        .into_reader()
}

fn reference_outcome(data: &[u8], limits: Limits) -> Outcome {
    let mut reader = opened(data, usize::MAX);
    outcome(limits, |sink| reference::read(&mut reader, sink))
}

/// The new reader, with the plain-row path on or off, a read buffer of `buffer` bytes,
/// the input arriving `chunk` bytes at a time.
fn new_outcome(data: &[u8], limits: Limits, plain: bool, buffer: usize, chunk: usize) -> Outcome {
    let mut reader = opened(data, chunk);
    let reader: &mut dyn BufRead = &mut reader;
    outcome(limits, |sink| read_with(reader, sink, plain, buffer))
}

fn check(data: &[u8], limits: Limits, buffer: usize, chunk: usize) -> Result<(), TestCaseError> {
    let expected = reference_outcome(data, limits);
    for plain in [true, false] {
        let got = new_outcome(data, limits, plain, buffer, chunk);
        prop_assert_eq!(
            &got,
            &expected,
            "plain: {}, input: {:?}",
            plain,
            String::from_utf8_lossy(data)
        );
    }
    // And with the production buffer.
    let got = new_outcome(data, limits, true, super::READ_BUFFER, chunk);
    prop_assert_eq!(&got, &expected);
    Ok(())
}

/// Pieces that CSV parsers disagree on when they are careless.
const PIECES: &[&[u8]] = &[
    b",",
    b",",
    b",",
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\"",
    b"\"\"",
    b"",
    b" ",
    b"a",
    b"node-1",
    b"img",
    b"1686772769",
    b"1686772769.25",
    b"0",
    b"-5",
    b"1.",
    b".5",
    b"99999999999999999999",
    b"2023-06-14T19:59:29Z",
    b"k8s.container.ready",
    b"metric_name",
    b"_time",
    b"k8s.node.name",
    b"container.image.name",
    b"k8s.namespace.name",
    b"container.id",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3\xa9",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

const COLUMNS: &[&str] = &[
    "_time",
    "metric_name",
    "host.name",
    "k8s.cluster.name",
    "k8s.node.name",
    "container.image.name",
    "_value",
    "k8s.namespace.name",
    "k8s.pod.name",
    "container.image.tag",
];

/// A cell: plain, quoted (with `""`, commas and newlines inside), empty or odd.
fn cell() -> impl Strategy<Value = Vec<u8>> {
    let text = prop::collection::vec(prop::sample::select(PIECES.to_vec()), 0..4)
        .prop_map(|pieces| pieces.concat());
    prop_oneof![
        6 => prop::sample::select(vec![
            "1686772769", "1686772770.5", "k8s.container.ready", "k8s.pod.phase", "node-1",
            "node-2", "prod", "docker.io/library/nginx", "1", "", " x ", "2023-06-14 19:59:29Z",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => text.clone().prop_map(|t| {
            let mut q = b"\"".to_vec();
            q.extend(t.iter().flat_map(|&b| if b == b'"' { vec![b'"', b'"'] } else { vec![b] }));
            q.push(b'"');
            q
        }),
        1 => text,
    ]
}

/// A CSV file: a header of the usual columns in any order, rows of (mostly) as many
/// cells, any terminators, blank lines, sometimes a BOM or no final terminator; or
/// arbitrary pieces.
fn csv_file() -> impl Strategy<Value = Vec<u8>> {
    let terminator = prop::sample::select(vec![
        &b"\n"[..],
        b"\n",
        b"\r\n",
        b"\r",
        b"\n\n",
        b"\r\n\r\n",
    ]);
    let structured = (
        any::<bool>(),
        Just(COLUMNS.to_vec()).prop_shuffle(),
        1usize..=COLUMNS.len(),
        any::<bool>(),
        prop::collection::vec(
            (prop::collection::vec(cell(), 0..12), terminator.clone()),
            0..12,
        ),
        terminator,
        any::<bool>(),
    )
        .prop_map(
            |(bom, columns, n, quote_header, rows, header_end, last_end)| {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(b"\xef\xbb\xbf");
                }
                let names: Vec<String> = columns[..n]
                    .iter()
                    .map(|c| {
                        if quote_header {
                            format!("\"{c}\"")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                out.extend_from_slice(names.join(",").as_bytes());
                out.extend_from_slice(header_end);
                let count = rows.len();
                for (i, (mut cells, end)) in rows.into_iter().enumerate() {
                    // Mostly rows with the header's field count.
                    if cells.len() > 2 {
                        cells.resize(n, b"1686772769".to_vec());
                    }
                    out.extend_from_slice(&cells.join(&b","[..]));
                    if i + 1 < count || last_end {
                        out.extend_from_slice(end);
                    }
                }
                out
            },
        );
    let pieces =
        prop::collection::vec(prop::sample::select(PIECES.to_vec()), 0..60).prop_map(|pieces| {
            let mut out = b"_time,k8s.node.name,container.image.name,k8s.pod.name\n".to_vec();
            out.extend(pieces.concat());
            out
        });
    let bytes = prop::collection::vec(any::<u8>(), 0..200);
    prop_oneof![6 => structured, 3 => pieces, 1 => bytes]
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        2 => Just(Limits::default()),
        1 => (1usize..80, 1usize..12).prop_map(|(max_record_bytes, max_dimension_bytes)| Limits {
            max_record_bytes,
            max_dimension_bytes,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn same_as_the_csv_core_reader(
        data in csv_file(),
        limits in limits(),
        buffer in prop_oneof![1usize..8, 8usize..64, 64usize..300],
        chunk in prop_oneof![Just(usize::MAX), 1usize..5, 5usize..100],
    ) {
        check(&data, limits, buffer, chunk)?;
    }

    /// A CSV read in ranges cut anywhere (in quoted fields, in CRLFs, in blank lines, past
    /// the end) says what the whole reading says: the same points in the same order, the
    /// same issues at the same lines, the same counts, the same fatal error.
    #[test]
    fn ranges_read_what_the_whole_reads(
        data in csv_file(),
        limits in limits(),
        cuts in prop::collection::vec(0usize..400, 0..6),
        keep in prop_oneof![Just(usize::MAX), 0usize..3],
    ) {
        check_ranges(&data, limits, &cuts, keep)?;
    }

    #[test]
    fn plain_seconds_agree_with_parse_time(
        cell in prop_oneof!["[0-9.+ -]{0,22}", "[0-9]{0,21}(\\.[0-9]{0,3})?", "[0-9/:;]{6,12}"]
    ) {
        if let Some(secs) = plain_seconds(cell.as_bytes()) {
            prop_assert_eq!(unseen_model::parse_time(&cell), Ok(secs as i64));
        }
        if let Some(nanos) = plain_nanos(cell.as_bytes()) {
            prop_assert_eq!(time(cell.as_bytes()), Ok(nanos));
        }
    }

    #[test]
    fn block_masks_are_the_bytes(block in prop::array::uniform16(prop::sample::select(vec![b',', b'\n', b'a', b'-', b'+', 0x0b, 0x8a, 0xac, 0x2c ^ 0x80, 0, 0xff]))) {
        let mut expected = Masks { commas: 0, newlines: 0, high: 0 };
        for (i, &b) in block.iter().enumerate() {
            expected.commas |= u32::from(b == b',') << i;
            expected.newlines |= u32::from(b == b'\n') << i;
            expected.high |= u32::from(b >= 0x80) << i;
        }
        prop_assert_eq!(block_masks(&block), expected);
        prop_assert_eq!(swar_masks(&block), expected);
    }

    #[test]
    fn split_row_finds_what_a_byte_loop_finds(
        bytes in prop::collection::vec(prop::sample::select(vec![b',', b'\n', b'a', b'\r', 0x2d, 0xac, 0x8a, 0, 0x80, 0x7f, 0xff]), 0..100),
        from in 0usize..100,
    ) {
        let from = from.min(bytes.len());
        let mut commas = vec![7];
        let got = split_row(&bytes, from, &mut commas);
        let newline = bytes[from..].iter().position(|&b| b == b'\n').map(|i| from + i);
        let stop = newline.unwrap_or(bytes.len());
        let mut expected = vec![7];
        expected.extend((from..stop).filter(|&i| bytes[i] == b','));
        prop_assert_eq!(got.map(|s| s.newline), newline);
        if let Some(split) = got {
            prop_assert_eq!(split.ascii, bytes[from..stop].is_ascii());
        }
        prop_assert_eq!(commas, expected);
    }
}

fn check_ranges(
    data: &[u8],
    limits: Limits,
    cuts: &[usize],
    keep: usize,
) -> Result<(), TestCaseError> {
    let mut whole = Seen::default();
    let expected = crate::read_bytes("src", data, crate::Format::Csv, limits, &mut whole)
        .map(|(_, stats)| stats)
        .map_err(|e| e.to_string());
    let cuts: Vec<u64> = cuts.iter().map(|&c| c as u64).collect();
    let got = crate::split::read_split_at(
        "src",
        data,
        crate::Format::Csv,
        limits,
        &cuts,
        keep,
        &|| Seen::default(),
    );
    let parts = match (got, expected) {
        (Err(got), Err(expected)) => {
            prop_assert_eq!(got.to_string(), expected);
            return Ok(());
        }
        (Ok((_, parts)), Ok(expected)) => {
            let mut stats = SourceStats::default();
            for part in &parts {
                stats.records += part.stats.records;
                stats.ready_points += part.stats.ready_points;
                stats.other_points += part.stats.other_points;
                stats.malformed_records += part.stats.malformed_records;
                stats.malformed_points += part.stats.malformed_points;
            }
            prop_assert_eq!(stats, expected);
            parts
        }
        (got, expected) => {
            prop_assert!(false, "split: {:?}, whole: {:?}", got.map(|_| ()), expected);
            unreachable!()
        }
    };
    let points: Vec<_> = parts
        .iter()
        .flat_map(|p| p.visitor.points.clone())
        .collect();
    prop_assert_eq!(
        &points,
        &whole.points,
        "input: {:?}",
        String::from_utf8_lossy(data)
    );
    // Issues never reach the parts' visitors; the held ones, replayed in order, are the
    // whole reading's first ones.
    prop_assert!(parts.iter().all(|p| p.visitor.issues.is_empty()));
    let held: Vec<_> = parts.iter().flat_map(|p| p.issues.clone()).collect();
    let all = held.len() as u64 + parts.iter().map(|p| p.more_issues).sum::<u64>();
    prop_assert_eq!(all, whole.issues.len() as u64);
    let shown = whole.issues.len().min(keep);
    prop_assert_eq!(&held[..shown.min(held.len())], &whole.issues[..shown]);
    Ok(())
}

#[test]
fn ranges_of_a_large_export() {
    // Rows of every kind, quoted line breaks among them, cut at every few hundred bytes.
    let mut data =
        b"\xef\xbb\xbf_time,metric_name,k8s.node.name,container.image.name\r\n\n".to_vec();
    for i in 0..2_000u32 {
        let row = match i % 6 {
            0 => format!(
                "{},k8s.container.ready,node-{},img-{}\n",
                1_700_000_000 + i,
                i % 7,
                i % 13
            ),
            1 => format!(
                "{},k8s.container.ready,\"node,\n{}\",img\r\n",
                1_700_000_000 + i,
                i % 7
            ),
            2 => format!("{}.5,other,node-{},img\r\n", 1_700_000_000 + i, i % 7),
            3 => format!("\n{},k8s.container.ready,n\r,img\n", 1_700_000_000 + i),
            4 => format!("bad,k8s.container.ready,n,img\n\n{i}\n"),
            _ => format!(
                "{},k8s.container.ready,,\"{}\"\n",
                1_700_000_000 + i,
                "\n".repeat(i as usize % 3)
            ),
        };
        data.extend_from_slice(row.as_bytes());
    }
    for step in [97, 300, 1_000, 20_000] {
        let cuts: Vec<usize> = (1..data.len() / step).map(|k| k * step).collect();
        for keep in [usize::MAX, 5] {
            check_ranges(&data, Limits::default(), &cuts, keep).unwrap();
        }
    }
}

#[test]
fn long_rows_and_many_rows() {
    // Rows longer than the read buffer, rows over the limit, rows that straddle refills,
    // with and without quotes, LF and CRLF.
    let mut data = b"_time,metric_name,k8s.node.name,container.image.name\r\n".to_vec();
    for i in 0..3_000u32 {
        let image = "i".repeat((i as usize * 7) % 700);
        let row = match i % 5 {
            0 => format!(
                "{},k8s.container.ready,node-{},{image}\n",
                1_700_000_000 + i,
                i % 7
            ),
            1 => format!(
                "{},k8s.container.ready,\"node,{}\",img\r\n",
                1_700_000_000 + i,
                i % 7
            ),
            2 => format!("{}.5,other,node-{},{image}\r\n", 1_700_000_000 + i, i % 7),
            3 => format!("\n{},k8s.container.ready,n\r,img\n", 1_700_000_000 + i),
            _ => format!("{},k8s.container.ready,,{image}\n", 1_700_000_000 + i),
        };
        data.extend_from_slice(row.as_bytes());
    }
    for limits in [
        Limits::default(),
        Limits {
            max_record_bytes: 300,
            max_dimension_bytes: 100,
        },
    ] {
        for buffer in [7, 100, 512, 4096, super::READ_BUFFER] {
            for chunk in [3, 1000, usize::MAX] {
                check(&data, limits, buffer, chunk).unwrap();
            }
        }
    }
    let expected = reference_outcome(&data, Limits::default());
    assert_eq!(expected.stats.records, 3_600);
    assert!(expected.seen.points.len() > 1_500);
}

#[test]
fn plain_seconds_cases() {
    assert_eq!(plain_seconds(b"1686772769"), Some(1_686_772_769));
    assert_eq!(plain_seconds(b"1686772769.999"), Some(1_686_772_769));
    assert_eq!(plain_seconds(b"0001"), Some(1));
    assert_eq!(plain_seconds(b"12345678"), Some(12_345_678));
    assert_eq!(plain_seconds(b"1234567890123"), Some(1_234_567_890_123));
    assert_eq!(plain_seconds(b"00000000"), Some(0));
    assert_eq!(plain_seconds(b"99999999.5"), Some(99_999_999));
    assert_eq!(plain_seconds(b"1234567:"), None);
    assert_eq!(plain_seconds(b"/2345678"), None);
    assert_eq!(
        plain_seconds(b"999999999999999999"),
        Some(999_999_999_999_999_999)
    );
    for other in [
        &b""[..],
        b"1.",
        b".5",
        b"1.2.3",
        b"-1",
        b"+1",
        b" 1",
        b"1e9",
        b"1000000000000000000",
    ] {
        assert_eq!(
            plain_seconds(other),
            None,
            "{}",
            String::from_utf8_lossy(other)
        );
    }
}
