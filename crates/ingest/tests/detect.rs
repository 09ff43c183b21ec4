//! Format detection, gzip, and the `Format` names.

mod common;

use common::*;
use unseen_ingest::{detect_format, Format, SourceStats};

const JSON_LINE: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"container.image.name","value":{"stringValue":"img"}}]},"scopeMetrics":[{"metrics":[{"name":"k8s.container.ready","gauge":{"dataPoints":[{"timeUnixNano":"1000000000","asInt":"1"}]}}]}]}]}"#;

fn proto_message() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    let request: ExportMetricsServiceRequest = serde_json::from_str(JSON_LINE).unwrap();
    request.encode_to_vec()
}

#[test]
fn detects_json_lines() {
    assert_eq!(detect_format(JSON_LINE.as_bytes()), Some(Format::OtlpJson));
    assert_eq!(
        detect_format(b"\xEF\xBB\xBF \r\n\t{"),
        Some(Format::OtlpJson)
    );
    let out = read(format!("\u{feff}\n{JSON_LINE}\n").as_bytes(), Format::Auto);
    assert_eq!(out.format(), Format::OtlpJson);
    assert_eq!(out.points.len(), 1);
}

#[test]
fn detects_yaml() {
    assert_eq!(
        detect_format(b"resourceMetrics:\n  - resource: {}\n"),
        Some(Format::OtlpYaml)
    );
    assert_eq!(
        detect_format(b"---\nresourceMetrics: []\n"),
        Some(Format::OtlpYaml)
    );
    assert_eq!(
        detect_format(b"\n\n  resourceMetrics: []\n"),
        Some(Format::OtlpYaml)
    );
    // Two documents: one request each.
    let out = read(
        b"---\nresourceMetrics: []\n---\nresourceMetrics: []\n---\n",
        Format::Auto,
    );
    assert_eq!(out.format(), Format::OtlpYaml);
    assert_eq!(out.stats().records, 2);
}

#[test]
fn detects_proto() {
    let framed = frame(&[proto_message()]);
    assert_eq!(detect_format(&framed), Some(Format::OtlpProto));
    let out = read(&framed, Format::Auto);
    assert_eq!(out.format(), Format::OtlpProto);
    assert_eq!(out.points.len(), 1);
    // The detector only sees the start: a cut-off head is still recognised.
    assert_eq!(detect_format(&framed[..6]), Some(Format::OtlpProto));
    // Implausible: length 0 or 1, no 0x0a tag, an inner length past the message.
    assert_eq!(detect_format(&[0, 0, 0, 1, 0x0a]), None);
    assert_eq!(detect_format(&[0, 0, 0, 9, 0x12, 0]), None);
    assert_eq!(detect_format(&[0, 0, 0, 3, 0x0a, 5, 0]), None);
    assert_eq!(
        detect_format(&[0x7f, 0, 0, 3, 0x0a, 1, 0]),
        None,
        "over 1 GiB"
    );
}

#[test]
fn detects_csv() {
    assert_eq!(detect_format(b"_time,host\n1,h\n"), Some(Format::Csv));
    assert_eq!(
        detect_format(b"\"k8s.node.name\",\"_time\"\r\n"),
        Some(Format::Csv)
    );
    assert_eq!(detect_format(b"\xEF\xBB\xBF_time"), Some(Format::Csv));
    assert_eq!(detect_format(b"time,host\n1,h\n"), None);
    assert_eq!(detect_format(b"a_time,_times\n"), None);
    let long_name = "x".repeat(200);
    assert_eq!(
        detect_format(format!("{long_name},_time\n").as_bytes()),
        Some(Format::Csv)
    );
    assert_eq!(
        detect_format(format!("{long_name}\n_time\n").as_bytes()),
        None
    );
}

#[test]
fn unknown_and_empty() {
    assert_eq!(detect_format(b""), None);
    assert_eq!(detect_format(b"<xml/>"), None);
    let out = read(b"<xml/>", Format::Auto);
    assert!(out.error().contains("cannot tell the format"));
    // Empty or blank input is an empty OTLP/JSON file, not an error.
    for input in [&b""[..], b"\n \n", b"\xEF\xBB\xBF"] {
        let out = read(input, Format::Auto);
        assert_eq!(out.format(), Format::OtlpJson);
        assert_eq!(out.stats(), SourceStats::default());
    }
}

#[test]
fn explicit_format_is_not_second_guessed() {
    // A JSON line read as CSV: a header without `_time`.
    let out = read(JSON_LINE.as_bytes(), Format::Csv);
    assert!(out.error().contains("no `_time` column"), "{}", out.error());
    // CSV read as JSON: one malformed record per line.
    let out = read(b"_time,host\n1,h\n", Format::OtlpJson);
    assert_eq!(out.stats().malformed_records, 2);
    assert_eq!(out.format(), Format::OtlpJson);
}

#[test]
fn gzip_for_every_format() {
    let json = format!("{JSON_LINE}\n");
    let csv = "_time,container.image.name\n1,img\n";
    let yaml = "resourceMetrics:\n  - resource:\n      attributes:\n        - key: container.image.name\n          value:\n            stringValue: img\n    scopeMetrics:\n      - metrics:\n          - name: k8s.container.ready\n            gauge:\n              dataPoints:\n                - timeUnixNano: \"1000000000\"\n";
    let proto = frame(&[proto_message()]);
    for (bytes, format) in [
        (json.as_bytes().to_vec(), Format::OtlpJson),
        (csv.as_bytes().to_vec(), Format::Csv),
        (yaml.as_bytes().to_vec(), Format::OtlpYaml),
        (proto, Format::OtlpProto),
    ] {
        let plain = read(&bytes, Format::Auto);
        assert_eq!(plain.format(), format);
        // Auto and explicit, and two gzip members back to back (`cat a.gz b.gz`).
        for explicit in [Format::Auto, format] {
            let zipped = read(&gzip(&bytes), explicit);
            assert_eq!(zipped.format(), format);
            assert_eq!(zipped.points, plain.points);
            assert_eq!(zipped.points.len(), 1, "{format}");
        }
        if format != Format::OtlpYaml && format != Format::Csv {
            let twice = [gzip(&bytes), gzip(&bytes)].concat();
            let out = read(&twice, Format::Auto);
            assert_eq!(out.points.len(), 2, "{format}");
        }
    }
}

#[test]
fn format_names_round_trip() {
    for format in Format::ALL {
        assert_eq!(format.name().parse::<Format>(), Ok(format));
        assert_eq!(format.to_string(), format.name());
    }
    assert_eq!("OTLP_JSON".parse::<Format>(), Ok(Format::OtlpJson));
    assert_eq!(" csv ".parse::<Format>(), Ok(Format::Csv));
}
