//! Golden tests: the exact text of every error and issue message, as users see it
//! (`Display` of `SourceError` and of `Issue`).

mod common;

use std::io::{self, Read};

use common::*;
use unseen_ingest::{read_source, Format, IssueKind, Limits, Position};

fn one_issue(out: &Outcome) -> String {
    assert_eq!(out.issues.len(), 1, "{:?}", out.issue_texts());
    out.issues[0].to_string()
}

fn ready(points: &str) -> String {
    json_request(
        &attr("k8s.node.name", "n1"),
        "k8s.container.ready",
        "gauge",
        points,
    )
}

// ---- SourceError ------------------------------------------------------------------

#[test]
fn io_error() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let mut collect = Collect::default();
    let error =
        read_source("src", Broken, Format::Auto, Limits::default(), &mut collect).unwrap_err();
    assert_eq!(error.to_string(), "src: disk on fire");
}

#[test]
fn corrupt_gzip() {
    let mut bytes = gzip(b"{\"resourceMetrics\":[]}\n");
    bytes[10] = 0xff; // the first deflate block gets the reserved block type 3
    let out = read(&bytes, Format::Auto);
    assert_eq!(
        out.error(),
        "src: gzip-compressed input: corrupt deflate stream"
    );
}

#[test]
fn truncated_gzip() {
    let bytes = gzip(b"{\"resourceMetrics\":[]}\n");
    let out = read(&bytes[..bytes.len() - 4], Format::OtlpJson);
    assert_eq!(
        out.error(),
        "src: gzip-compressed input: unexpected end of file"
    );
}

#[test]
fn unknown_format() {
    let out = read(b"hello world\n", Format::Auto);
    assert_eq!(
        out.error(),
        "src: cannot tell the format from the first bytes (\"hello world\\n\"); \
         pass --format otlp-json, otlp-proto or csv (a CSV export needs a `_time` column)"
    );
    let out = read(
        b"\x00\x01\x02 binary junk, quite long, more than 32 bytes",
        Format::Auto,
    );
    assert_eq!(
        out.error(),
        "src: cannot tell the format from the first bytes (\"\\x00\\x01\\x02 binary junk, quite long, mor\"...); \
         pass --format otlp-json, otlp-proto or csv (a CSV export needs a `_time` column)"
    );
}

#[test]
fn csv_without_header() {
    let out = read(b"", Format::Csv);
    assert_eq!(
        out.error(),
        "src: no header row: a CSV export starts with a header that names its columns, `_time` among them"
    );
}

#[test]
fn csv_without_time_column() {
    let out = read(
        b"time,k8s.node.name,container.image.name\n1,n,i\n",
        Format::Csv,
    );
    assert_eq!(
        out.error(),
        "src: no `_time` column: the header has `time`, `k8s.node.name`, `container.image.name`; \
         unseen needs `_time` (Unix seconds or RFC 3339) to know when each row was seen"
    );
}

#[test]
fn csv_header_too_long() {
    let limits = Limits {
        max_record_bytes: 10,
        ..Limits::default()
    };
    let out = read_with(b"_time,container.image.name\n1,i\n", Format::Csv, limits);
    assert_eq!(
        out.error(),
        "src: the header row is 26 bytes, over the limit of 10 bytes (limits.max_record_bytes)"
    );
}

#[test]
fn unknown_format_name() {
    let error = "json-lines".parse::<Format>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown format `json-lines`: use auto, otlp-json, otlp-proto, csv or otlp-yaml"
    );
}

// ---- OTLP/JSON lines ----------------------------------------------------------------

#[test]
fn json_syntax_error() {
    let out = read(b"{\"resourceMetrics\": [}\n", Format::OtlpJson);
    assert_eq!(
        one_issue(&out),
        "src:1: not an OTLP/JSON ExportMetricsServiceRequest: expected value at line 1 column 22"
    );
    assert_eq!(out.issues[0].kind, IssueKind::MalformedRecord);
}

#[test]
fn json_wrong_shape() {
    let out = read(b"\n{\"resourceMetrics\": 5}\n", Format::OtlpJson);
    assert_eq!(
        one_issue(&out),
        "src:2: not an OTLP/JSON ExportMetricsServiceRequest: invalid type: integer `5`, expected a sequence at line 1 column 21"
    );
}

#[test]
fn json_bad_time_string() {
    let out = read(
        ready(r#"{"timeUnixNano":"soon"}"#).as_bytes(),
        Format::OtlpJson,
    );
    assert_eq!(
        one_issue(&out),
        "src:1: not an OTLP/JSON ExportMetricsServiceRequest: invalid value: string \"soon\", \
         expected an unsigned 64-bit integer as a decimal string or a number at line 1 column 205"
    );
}

#[test]
fn json_line_too_long() {
    let limits = Limits {
        max_record_bytes: 16,
        ..Limits::default()
    };
    let out = read_with(b"{\"resourceMetrics\":[]}\r\n", Format::OtlpJson, limits);
    assert_eq!(
        one_issue(&out),
        "src:1: line is 22 bytes, over the limit of 16 bytes (limits.max_record_bytes); skipped"
    );
}

#[test]
fn point_without_time() {
    let out = read(
        ready(r#"{"asInt":"1"},{"timeUnixNano":"0"},{"timeUnixNano":null}"#).as_bytes(),
        Format::Auto,
    );
    let texts = out.issue_texts();
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            text,
            &format!(
                "src:1: resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[{i}]: \
                 k8s.container.ready point has no timeUnixNano (0); every point needs a time"
            )
        );
    }
    assert_eq!(texts.len(), 3);
    assert!(out
        .issues
        .iter()
        .all(|i| i.kind == IssueKind::MalformedPoint));
    assert_eq!(out.stats().malformed_points, 3);
}

#[test]
fn dimension_too_long() {
    let limits = Limits {
        max_dimension_bytes: 8,
        ..Limits::default()
    };
    let line = json_request(
        &attr("container.image.name", "registry.example/app"),
        "k8s.container.ready",
        "sum",
        r#"{"timeUnixNano":"1"}"#,
    );
    let out = read_with(line.as_bytes(), Format::Auto, limits);
    assert_eq!(
        one_issue(&out),
        "src:1: resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0]: attribute `container.image.name` \
         is 20 bytes, over the limit of 8 bytes (limits.max_dimension_bytes)"
    );
}

#[test]
fn ready_as_histogram_summary_exponential_histogram() {
    for (kind, shown) in [
        ("histogram", "a histogram"),
        ("summary", "a summary"),
        ("exponentialHistogram", "an exponential histogram"),
    ] {
        let line = json_request(
            "",
            "k8s.container.ready",
            kind,
            r#"{"timeUnixNano":"1"},{}"#,
        );
        let out = read(line.as_bytes(), Format::Auto);
        assert_eq!(
            out.issue_texts(),
            (0..2)
                .map(|i| format!(
                    "src:1: resourceMetrics[0].scopeMetrics[0].metrics[0].{kind}.dataPoints[{i}]: \
                     k8s.container.ready is {shown} here; only gauge and sum points are read"
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(out.stats().malformed_points, 2);
        assert_eq!(out.stats().other_points, 0);
    }
}

// ---- OTLP protobuf --------------------------------------------------------------------

#[test]
fn proto_not_a_message() {
    // A valid frame whose content is not an ExportMetricsServiceRequest: field 1 is
    // length-delimited but its length runs past the end.
    let out = read(&frame(&[vec![0x0a, 0x05, 0x01]]), Format::OtlpProto);
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): not an OTLP protobuf ExportMetricsServiceRequest: \
         failed to decode Protobuf message: ExportMetricsServiceRequest.resource_metrics: buffer underflow"
    );
    assert_eq!(
        out.issues[0].location.position,
        Position::Record {
            index: 1,
            offset: 0
        }
    );
}

#[test]
fn proto_bad_metric_data() {
    // A k8s.container.ready metric whose gauge bytes are not a Gauge.
    let metric = [&[0x0a, 19][..], b"k8s.container.ready", &[0x2a, 2, 0x0a, 9]].concat();
    let scope = [&[0x12, metric.len() as u8][..], &metric].concat();
    let rm = [&[0x12, scope.len() as u8][..], &scope].concat();
    let request = [&[0x0a, rm.len() as u8][..], &rm].concat();
    let out = read(&frame(&[request]), Format::OtlpProto);
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): not an OTLP protobuf ExportMetricsServiceRequest: \
         failed to decode Protobuf message: NumberData.data_points: buffer underflow"
    );
}

#[test]
fn proto_zstd() {
    let out = read(&frame(&[vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0]]), Format::Auto);
    assert_eq!(out.format(), Format::OtlpProto);
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): message is zstd-compressed (file exporter `compression: zstd`), \
         which unseen does not read; export without compression (gzip the file instead if needed)"
    );
}

#[test]
fn proto_message_too_long() {
    let limits = Limits {
        max_record_bytes: 4,
        ..Limits::default()
    };
    let out = read_with(
        &frame(&[vec![0x0a, 0x03, 0x12, 0x01, 0x00], vec![]]),
        Format::OtlpProto,
        limits,
    );
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): message is 5 bytes, over the limit of 4 bytes (limits.max_record_bytes); skipped"
    );
    // The next frame is read after the skipped one.
    assert_eq!(out.stats().records, 2);
}

#[test]
fn proto_truncated_prefix() {
    let mut bytes = frame(&[vec![]]);
    bytes.extend_from_slice(&[0, 0]);
    let out = read(&bytes, Format::OtlpProto);
    assert_eq!(
        one_issue(&out),
        "src: record 2 (byte 4): file ends inside a length prefix: expected 4 bytes, found 2"
    );
}

#[test]
fn proto_truncated_message() {
    let bytes = frame(&[vec![0x0a, 0x00, 0x0a, 0x00]]);
    let out = read(&bytes[..6], Format::OtlpProto);
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): file ends inside a message: expected 4 bytes, found 2"
    );
}

#[test]
fn proto_attribute_not_utf8() {
    // resource attribute k8s.node.name = "\xff", one gauge point at time 1.
    let kv = [&[0x0a, 13][..], b"k8s.node.name", &[0x12, 3, 0x0a, 1, 0xff]].concat();
    let resource = [&[0x0a, kv.len() as u8][..], &kv].concat();
    let point = [0x19, 1, 0, 0, 0, 0, 0, 0, 0];
    let gauge = [&[0x0a, point.len() as u8][..], &point].concat();
    let metric = [
        &[0x0a, 19][..],
        b"k8s.container.ready",
        &[0x2a, gauge.len() as u8],
        &gauge,
    ]
    .concat();
    let scope = [&[0x12, metric.len() as u8][..], &metric].concat();
    let rm = [
        &[0x0a, resource.len() as u8][..],
        &resource,
        &[0x12, scope.len() as u8],
        &scope,
    ]
    .concat();
    let request = [&[0x0a, rm.len() as u8][..], &rm].concat();
    let out = read(&frame(&[request]), Format::Auto);
    assert_eq!(
        one_issue(&out),
        "src: record 1 (byte 0): resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]: \
         attribute `k8s.node.name` is not valid UTF-8"
    );
}

// ---- CSV ------------------------------------------------------------------------------

#[test]
fn csv_row_issues() {
    let limits = Limits {
        max_record_bytes: 40,
        max_dimension_bytes: 5,
    };
    let csv = b"_time,container.image.name,k8s.node.name\n\
        soon,img,n\n\
        0,img,n\n\
        -5,img,n\n\
        1,img\n\
        1,imageimage,n\n\
        1,img,\xff\n\
        \xff,img,n\n\
        1,\"a very long image name that is over forty bytes\",n\n\
        1,img,n\n";
    let out = read_with(csv, Format::Auto, limits);
    assert_eq!(out.format(), Format::Csv);
    assert_eq!(
        out.issue_texts(),
        [
            "src:2: column `_time`: invalid time `soon`: use RFC 3339 (`2026-11-28T17:00:00Z`) or Unix seconds (`1764349200`)",
            "src:3: column `_time` is `0`: every point needs a time after 1970-01-01T00:00:00Z and before 2554",
            "src:4: column `_time` is `-5`: every point needs a time after 1970-01-01T00:00:00Z and before 2554",
            "src:5: row has 2 fields, the header has 3",
            "src:6: column `container.image.name` is 10 bytes, over the limit of 5 bytes (limits.max_dimension_bytes)",
            "src:7: column `k8s.node.name` is not valid UTF-8",
            "src:8: column `_time` is not valid UTF-8",
            "src:9: row is 53 bytes, over the limit of 40 bytes (limits.max_record_bytes); skipped",
        ]
    );
    assert_eq!(out.points.len(), 1);
    let stats = out.stats();
    assert_eq!(
        (
            stats.records,
            stats.malformed_records,
            stats.malformed_points
        ),
        (9, 2, 6)
    );
}

#[test]
fn csv_time_out_of_range() {
    let out = read(b"_time\n99999999999\n", Format::Csv);
    assert_eq!(
        one_issue(&out),
        "src:2: column `_time` is `99999999999`: every point needs a time after 1970-01-01T00:00:00Z and before 2554"
    );
}

// ---- YAML -----------------------------------------------------------------------------

#[test]
fn yaml_too_large() {
    let limits = Limits {
        max_record_bytes: 10,
        ..Limits::default()
    };
    let out = read_with(b"resourceMetrics: []\n", Format::Auto, limits);
    assert_eq!(
        one_issue(&out),
        "src:1: YAML input is over the limit of 10 bytes (limits.max_record_bytes); \
         OTLP YAML is read whole, use OTLP/JSON lines for large inputs"
    );
}

#[test]
fn yaml_syntax_error() {
    let out = read(b"resourceMetrics: [\n", Format::OtlpYaml);
    assert_eq!(
        one_issue(&out),
        "src:1: not OTLP YAML: did not find expected node content at line 2 column 1, while parsing a flow node"
    );
}

#[test]
fn yaml_wrong_shape() {
    let out = read(b"resourceMetrics: 5\n", Format::OtlpYaml);
    assert_eq!(
        one_issue(&out),
        "src:1: not an OTLP/JSON ExportMetricsServiceRequest: invalid type: integer `5`, expected a sequence"
    );
}

#[test]
fn yaml_point_issue_has_a_path() {
    let yaml = b"resourceMetrics:\n  - scopeMetrics:\n      - metrics:\n          - name: other\n          - gauge:\n              dataPoints:\n                - asInt: \"1\"\n            name: k8s.container.ready\n";
    let out = read(yaml, Format::Auto);
    assert_eq!(
        one_issue(&out),
        "src:1: resourceMetrics[0].scopeMetrics[0].metrics[1].gauge.dataPoints[0]: \
         k8s.container.ready point has no timeUnixNano (0); every point needs a time"
    );
}
