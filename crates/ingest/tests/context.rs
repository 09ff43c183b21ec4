//! The evidence attributes (`Dims::context`) in every format: present when the attributes
//! are there (a point's own over its resource's, only string values, the first of a key
//! given twice), absent otherwise, and absent, without costing the point, when a value is
//! over `limits.max_dimension_bytes` or not UTF-8. The key attributes keep rejecting such
//! points.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use unseen_ingest::{read_request, BodyEncoding, Format, Limits, Position};
use unseen_model::{ctx, CONTEXT_LEN};

/// Small enough that the 40-byte container ID is over it.
const LIMITS: Limits = Limits {
    max_record_bytes: 1 << 20,
    max_dimension_bytes: 32,
};

const LONG: &str = "0123456789abcdef0123456789abcdef01234567";

fn non_string(key: &str) -> String {
    format!(r#"{{"key":"{key}","value":{{"intValue":"5"}}}}"#)
}

/// One request: a resource with evidence, and four points of `k8s.container.ready`.
fn request_json() -> String {
    let resource = [
        attr("k8s.node.name", "n1"),
        attr("container.image.name", "img"),
        attr("k8s.namespace.name", "ns"),
        attr("k8s.pod.name", "res-pod"),
        // Not a string: as if absent.
        non_string("k8s.pod.uid"),
        // Over the limit: absent, the points stay.
        attr("container.id", LONG),
        // Twice: the first string value wins.
        non_string("k8s.deployment.name"),
        attr("k8s.deployment.name", "dep"),
        attr("k8s.deployment.name", "dep2"),
        // Replaced by the bytes `\xff\xfe` in the protobuf tests.
        attr("k8s.container.name", "BADUTF8"),
    ]
    .join(",");
    let points = [
        // The resource's evidence only.
        r#"{"timeUnixNano":"1"}"#.to_string(),
        // Its own over the resource's; a non-string neither provides nor hides.
        format!(
            r#"{{"timeUnixNano":"2","attributes":[{},{},{}]}}"#,
            attr("k8s.pod.name", "pt-pod"),
            r#"{"key":"k8s.namespace.name","value":{"boolValue":true}}"#,
            attr("k8s.job.name", "job-1"),
        ),
        // Its own value over the limit: it still hides the resource's (precedence first,
        // then the check), and the point stays.
        format!(
            r#"{{"timeUnixNano":"3","attributes":[{}]}}"#,
            attr("k8s.pod.name", LONG),
        ),
        // A key over the limit still rejects the point.
        format!(
            r#"{{"timeUnixNano":"4","attributes":[{}]}}"#,
            attr("k8s.node.name", LONG),
        ),
    ]
    .join(",");
    json_request(&resource, "k8s.container.ready", "gauge", &points)
}

fn context(values: &[(usize, &str)]) -> [Option<String>; CONTEXT_LEN] {
    let mut context: [Option<String>; CONTEXT_LEN] = Default::default();
    for &(slot, value) in values {
        context[slot] = Some(value.to_string());
    }
    context
}

/// What every format must give for [`request_json`]; `container` is the value of
/// `k8s.container.name` (`BADUTF8`, or absent where the protobuf tests broke it).
fn expected(container: Option<&str>) -> Vec<Point> {
    let point = |time, values: &[(usize, &str)]| {
        let mut context = context(values);
        context[ctx::CONTAINER_NAME] = container.map(str::to_string);
        Point {
            time,
            node: Some("n1".into()),
            image: Some("img".into()),
            context,
            ..Point::default()
        }
    };
    vec![
        point(
            1,
            &[
                (ctx::NAMESPACE, "ns"),
                (ctx::POD_NAME, "res-pod"),
                (ctx::DEPLOYMENT, "dep"),
            ],
        ),
        point(
            2,
            &[
                (ctx::NAMESPACE, "ns"),
                (ctx::POD_NAME, "pt-pod"),
                (ctx::DEPLOYMENT, "dep"),
                (ctx::JOB, "job-1"),
            ],
        ),
        point(3, &[(ctx::NAMESPACE, "ns"), (ctx::DEPLOYMENT, "dep")]),
    ]
}

fn check(out: &Outcome, expected: &[Point], what: &str) {
    assert_eq!(out.points, expected, "{what}");
    let messages: Vec<&str> = out.issues.iter().map(|i| i.message.as_str()).collect();
    assert_eq!(
        messages,
        ["attribute `k8s.node.name` is 40 bytes, over the limit of 32 bytes (limits.max_dimension_bytes)"],
        "{what}"
    );
}

fn proto(json: &str) -> Vec<u8> {
    let request: ExportMetricsServiceRequest = serde_json::from_str(json).unwrap();
    request.encode_to_vec()
}

/// `message` with the string value `BADUTF8` made `\xff\xfeDUTF8`: not UTF-8.
fn break_utf8(mut message: Vec<u8>) -> Vec<u8> {
    let at = message
        .windows(7)
        .position(|w| w == b"BADUTF8")
        .expect("the placeholder");
    message[at] = 0xff;
    message[at + 1] = 0xfe;
    message
}

fn body(bytes: &[u8], encoding: BodyEncoding) -> Outcome {
    let mut collect = Collect::default();
    read_request("src", bytes.to_vec().into(), encoding, LIMITS, &mut collect);
    Outcome {
        result: Ok((Format::OtlpProto, Default::default())),
        points: collect.points,
        issues: collect.issues,
    }
}

#[test]
fn otlp_json_lines() {
    let line = request_json();
    let out = read_with(format!("{line}\n").as_bytes(), Format::OtlpJson, LIMITS);
    check(&out, &expected(Some("BADUTF8")), "json");
    assert_eq!(out.stats().ready_points, 3);
    assert_eq!(out.stats().malformed_points, 1);
}

#[test]
fn otlp_yaml() {
    // JSON is YAML: the same request through the YAML decoder.
    let out = read_with(request_json().as_bytes(), Format::OtlpYaml, LIMITS);
    check(&out, &expected(Some("BADUTF8")), "yaml");
}

#[test]
fn otlp_protobuf_frames() {
    let message = proto(&request_json());
    let out = read_with(
        &frame(std::slice::from_ref(&message)),
        Format::OtlpProto,
        LIMITS,
    );
    check(&out, &expected(Some("BADUTF8")), "proto");
    // Not UTF-8: absent, and the points stay.
    let out = read_with(&frame(&[break_utf8(message)]), Format::OtlpProto, LIMITS);
    check(&out, &expected(None), "proto, not UTF-8");
    assert_eq!(out.stats().ready_points, 3);
}

#[test]
fn otlp_protobuf_point_value_not_utf8() {
    // On the point: its own value, not UTF-8, is absent and hides the resource's.
    let line = json_request(
        &[
            attr("k8s.node.name", "n1"),
            attr("k8s.container.name", "res"),
        ]
        .join(","),
        "k8s.container.ready",
        "sum",
        &format!(
            r#"{{"timeUnixNano":"9","attributes":[{},{}]}}"#,
            attr("k8s.container.name", "BADUTF8"),
            attr("k8s.pod.name", "p")
        ),
    );
    let out = read_with(
        &frame(&[break_utf8(proto(&line))]),
        Format::OtlpProto,
        LIMITS,
    );
    assert!(out.issues.is_empty(), "{:?}", out.issue_texts());
    assert_eq!(
        out.points,
        [Point {
            time: 9,
            node: Some("n1".into()),
            context: context(&[(ctx::POD_NAME, "p")]),
            ..Point::default()
        }]
    );
    // A key not UTF-8 still rejects the point.
    let line = line.replace(
        "\"k8s.container.name\",\"value\":{\"stringValue\":\"BADUTF8\"",
        "\"k8s.node.name\",\"value\":{\"stringValue\":\"BADUTF8\"",
    );
    let out = read_with(
        &frame(&[break_utf8(proto(&line))]),
        Format::OtlpProto,
        LIMITS,
    );
    assert!(out.points.is_empty());
    assert!(
        out.issues[0]
            .message
            .ends_with("attribute `k8s.node.name` is not valid UTF-8"),
        "{:?}",
        out.issue_texts()
    );
}

#[test]
fn request_bodies() {
    let message = proto(&request_json());
    let out = body(&message, BodyEncoding::Protobuf);
    check(&out, &expected(Some("BADUTF8")), "protobuf body");
    assert_eq!(out.issues[0].location.position, Position::Body);
    let out = body(&break_utf8(message), BodyEncoding::Protobuf);
    check(&out, &expected(None), "protobuf body, not UTF-8");
    let out = body(request_json().as_bytes(), BodyEncoding::Json);
    check(&out, &expected(Some("BADUTF8")), "JSON body");
}

#[test]
fn absent_without_the_attributes() {
    let line = json_request(
        &attr("k8s.node.name", "n1"),
        "k8s.container.ready",
        "gauge",
        r#"{"timeUnixNano":"1"}"#,
    );
    let expected = [Point {
        time: 1,
        node: Some("n1".into()),
        ..Point::default()
    }];
    let json = read(line.as_bytes(), Format::OtlpJson);
    assert_eq!(json.points, expected);
    let proto = read(&frame(&[proto(&line)]), Format::OtlpProto);
    assert_eq!(proto.points, expected);
    let yaml = read(line.as_bytes(), Format::OtlpYaml);
    assert_eq!(yaml.points, expected);
    let csv = read(b"_time,k8s.node.name\n1,n1\n", Format::Csv);
    assert_eq!(
        csv.points,
        [Point {
            time: 1_000_000_000,
            ..expected[0].clone()
        }]
    );
}

#[test]
fn csv_with_context_columns() {
    let header = "_time,k8s.node.name,container.image.name,k8s.namespace.name,k8s.pod.name,container.id,k8s.job.name,_value";
    let rows: [Vec<u8>; 7] = [
        // Plain (split in place); an over-long evidence cell and an empty one are absent.
        format!("1,n1,img,ns,pod,{LONG},,1\n").into_bytes(),
        // Quoted (through csv-core).
        b"\"2\",\"n1\",\"img\",\"n,s\",\"pod\",\"cid\",\"job\",\"1\"\r\n".to_vec(),
        // Evidence not UTF-8: absent, the point stays; plain and quoted.
        b"3,n1,img,\xff,pod,cid,job,1\n".to_vec(),
        b"\"4\",n1,img,\"\xfe\",pod,cid,job,1\n".to_vec(),
        // A key not UTF-8, or over the limit, still rejects the row.
        b"5,\xff,img,ns,pod,cid,job,1\n".to_vec(),
        format!("6,n1,{LONG},ns,pod,cid,job,1\n").into_bytes(),
        // Every evidence cell empty.
        b"7,n1,img,,,,,1\n".to_vec(),
    ];
    let csv = [format!("{header}\n").into_bytes(), rows.concat()].concat();
    let out = read_with(&csv, Format::Csv, LIMITS);
    let point = |secs: u64, values: &[(usize, &str)]| Point {
        time: secs * 1_000_000_000,
        node: Some("n1".into()),
        image: Some("img".into()),
        context: context(values),
        ..Point::default()
    };
    assert_eq!(
        out.points,
        [
            point(1, &[(ctx::NAMESPACE, "ns"), (ctx::POD_NAME, "pod")]),
            point(
                2,
                &[
                    (ctx::NAMESPACE, "n,s"),
                    (ctx::POD_NAME, "pod"),
                    (ctx::CONTAINER_ID, "cid"),
                    (ctx::JOB, "job")
                ]
            ),
            point(
                3,
                &[
                    (ctx::POD_NAME, "pod"),
                    (ctx::CONTAINER_ID, "cid"),
                    (ctx::JOB, "job")
                ]
            ),
            point(
                4,
                &[
                    (ctx::POD_NAME, "pod"),
                    (ctx::CONTAINER_ID, "cid"),
                    (ctx::JOB, "job")
                ]
            ),
            point(7, &[]),
        ]
    );
    assert_eq!(
        out.issue_texts(),
        [
            "src:6: column `k8s.node.name` is not valid UTF-8",
            "src:7: column `container.image.name` is 40 bytes, over the limit of 32 bytes (limits.max_dimension_bytes)",
        ]
    );
    // The plain reference reads the same.
    let mut plain = Collect::default();
    unseen_ingest::reference::read_source("src", &csv[..], Format::Csv, LIMITS, &mut plain)
        .unwrap();
    assert_eq!(plain.points, out.points);
}
