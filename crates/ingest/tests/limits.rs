//! Every limit, at and just past its value, for every format; and that a record over the
//! limit is read through without being kept (decoding goes on after it).

mod common;

use std::io::{self, Read};

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use unseen_ingest::{read_source, Format, IssueKind, Limits, Position};

fn limits(record: usize) -> Limits {
    Limits {
        max_record_bytes: record,
        ..Limits::default()
    }
}

fn line(image: &str) -> String {
    json_request(
        &attr("container.image.name", image),
        "k8s.container.ready",
        "gauge",
        r#"{"timeUnixNano":"5"}"#,
    )
}

fn proto(image: &str) -> Vec<u8> {
    let request: ExportMetricsServiceRequest = serde_json::from_str(&line(image)).unwrap();
    request.encode_to_vec()
}

/// `prefix`, then `len` bytes of `fill`, then `suffix`, without holding them in memory.
struct Generated {
    prefix: io::Cursor<Vec<u8>>,
    fill: u8,
    left: u64,
    suffix: io::Cursor<Vec<u8>>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prefix.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.left > 0 {
            let n = buf.len().min(self.left as usize);
            buf[..n].fill(self.fill);
            self.left -= n as u64;
            return Ok(n);
        }
        self.suffix.read(buf)
    }
}

#[test]
fn json_line_at_and_over_the_limit() {
    let a = line("a");
    let max = a.len();
    let text = format!("{a}\n{}\n{a}", line("bb"));
    let out = read_with(text.as_bytes(), Format::OtlpJson, limits(max));
    assert_eq!(out.points.len(), 2, "lines of exactly the limit are read");
    assert_eq!(out.issues.len(), 1);
    assert_eq!(out.issues[0].location.position, Position::Line(2));
    assert_eq!(out.issues[0].kind, IssueKind::MalformedRecord);
}

#[test]
fn json_huge_line_is_skipped_not_buffered() {
    // 64 MiB on one line against a 1 KiB limit, then a good line.
    let input = Generated {
        prefix: io::Cursor::new(b"{\"x\":\"".to_vec()),
        fill: b'x',
        left: 64 << 20,
        suffix: io::Cursor::new(format!("\"}}\n{}\n", line("a")).into_bytes()),
    };
    let mut collect = Collect::default();
    let (_, stats) =
        read_source("src", input, Format::OtlpJson, limits(1024), &mut collect).unwrap();
    assert_eq!(stats.records, 2);
    assert_eq!(stats.ready_points, 1);
    assert_eq!(
        collect.issues[0].message,
        format!(
            "line is {} bytes, over the limit of 1024 bytes (limits.max_record_bytes); skipped",
            (64 << 20) + 8
        )
    );
}

#[test]
fn proto_message_at_and_over_the_limit() {
    let (a, b) = (proto("a"), proto("bb"));
    let max = a.len();
    let bytes = frame(&[a.clone(), b, a]);
    let out = read_with(&bytes, Format::OtlpProto, limits(max));
    assert_eq!(out.points.len(), 2);
    assert_eq!(out.issues.len(), 1);
    assert_eq!(
        out.issues[0].location.position,
        Position::Record {
            index: 2,
            offset: 4 + max as u64
        }
    );
    assert_eq!(out.stats().records, 3);
}

#[test]
fn proto_huge_frame_is_skipped_not_buffered() {
    let len: u32 = 64 << 20;
    let mut suffix = Vec::new();
    suffix.extend_from_slice(&frame(&[proto("a")]));
    let input = Generated {
        prefix: io::Cursor::new(len.to_be_bytes().to_vec()),
        fill: 0,
        left: len.into(),
        suffix: io::Cursor::new(suffix),
    };
    let mut collect = Collect::default();
    let (_, stats) =
        read_source("src", input, Format::OtlpProto, limits(1024), &mut collect).unwrap();
    assert_eq!(
        (stats.records, stats.ready_points, stats.malformed_records),
        (2, 1, 1)
    );
    assert_eq!(
        collect.issues[0].location.position,
        Position::Record {
            index: 1,
            offset: 0
        }
    );
    // A length prefix claiming 4 GiB in a short file: one issue, no allocation of 4 GiB.
    let out = read(&[0xff, 0xff, 0xff, 0xff, 0x0a, 0], Format::OtlpProto);
    assert_eq!(out.stats().malformed_records, 1);
    assert!(out.issues[0]
        .message
        .starts_with("message is 4294967295 bytes, over the limit"));
}

#[test]
fn csv_row_at_and_over_the_limit() {
    let header = "_time,container.image.name"; // 26 bytes
    let at = format!("1,{}", "a".repeat(24)); // 26 bytes
    let over = format!("1,{}", "a".repeat(25));
    for terminator in ["\n", "\r\n"] {
        let csv = [header, &at, &over, &at, ""].join(terminator);
        let out = read_with(csv.as_bytes(), Format::Csv, limits(26));
        assert_eq!(out.points.len(), 2, "{:?}", out.issue_texts());
        assert_eq!(
            out.issue_texts(),
            ["src:3: row is 27 bytes, over the limit of 26 bytes (limits.max_record_bytes); skipped"]
        );
    }
}

#[test]
fn csv_runaway_quote_is_bounded() {
    // A quote that never closes makes the rest of a 64 MiB file one row.
    let input = Generated {
        prefix: io::Cursor::new(b"_time,container.image.name\n1,\"".to_vec()),
        fill: b'x',
        left: 64 << 20,
        suffix: io::Cursor::new(b"\n1,img\n".to_vec()),
    };
    let mut collect = Collect::default();
    let (_, stats) = read_source("src", input, Format::Csv, limits(1024), &mut collect).unwrap();
    assert_eq!((stats.records, stats.malformed_records), (1, 1));
    assert_eq!(collect.issues[0].location.position, Position::Line(2));
}

#[test]
fn yaml_file_at_and_over_the_limit() {
    let yaml = b"resourceMetrics: []\n";
    let out = read_with(yaml, Format::OtlpYaml, limits(yaml.len()));
    assert!(out.issues.is_empty());
    assert_eq!(out.stats().records, 1);
    let out = read_with(yaml, Format::OtlpYaml, limits(yaml.len() - 1));
    assert_eq!(out.stats().malformed_records, 1);
}

#[test]
fn dimension_at_and_over_the_limit_in_every_format() {
    let limits = Limits {
        max_dimension_bytes: 4,
        ..Limits::default()
    };
    let yaml_of = |image: &str| {
        format!(
            "resourceMetrics:\n  - scopeMetrics:\n      - metrics:\n          - name: k8s.container.ready\n            gauge:\n              dataPoints:\n                - timeUnixNano: \"5\"\n                  attributes:\n                    - key: container.image.name\n                      value:\n                        stringValue: {image}\n"
        )
        .into_bytes()
    };
    type Make = Box<dyn Fn(&str) -> Vec<u8>>;
    let inputs: Vec<(Format, Make)> = vec![
        (Format::OtlpJson, Box::new(|i: &str| line(i).into_bytes())),
        (Format::OtlpProto, Box::new(|i: &str| frame(&[proto(i)]))),
        (
            Format::Csv,
            Box::new(|i: &str| format!("_time,container.image.name\n5,{i}\n").into_bytes()),
        ),
        (Format::OtlpYaml, Box::new(yaml_of)),
    ];
    for (format, make) in inputs {
        let out = read_with(&make("abcd"), format, limits);
        assert_eq!(out.points.len(), 1, "{format}: {:?}", out.issue_texts());
        let out = read_with(&make("abcde"), format, limits);
        assert_eq!(out.points.len(), 0, "{format}");
        assert_eq!(out.stats().malformed_points, 1, "{format}");
        assert!(
            out.issues[0].message.ends_with(
                "`container.image.name` is 5 bytes, over the limit of 4 bytes (limits.max_dimension_bytes)"
            ),
            "{format}: {}",
            out.issues[0].message
        );
    }
}
