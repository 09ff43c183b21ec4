//! What each decoder reads, and how leniently (OTLP/JSON spec rules, Splunk CSV habits).

mod common;

use common::*;
use unseen_ingest::{Format, IssueKind, Position, SourceStats};

fn p(time: u64, node: Option<&str>, image: Option<&str>) -> Point {
    Point {
        time,
        host: None,
        cluster: None,
        node: node.map(str::to_string),
        image: image.map(str::to_string),
        ..Point::default()
    }
}

#[test]
fn json_point_attributes_win_and_only_strings_count() {
    let resource = [
        attr("k8s.node.name", "res-node"),
        attr("container.image.name", "res-image"),
        attr("k8s.cluster.name", "res-cluster"),
        r#"{"key":"host.name","value":{"intValue":"5"}}"#.to_string(),
    ]
    .join(",");
    let points = [
        format!(
            r#"{{"timeUnixNano":"1","attributes":[{}]}}"#,
            attr("container.image.name", "point-image")
        ),
        // A non-string on the point neither provides nor hides the resource's value.
        r#"{"timeUnixNano":2,"attributes":[{"key":"k8s.node.name","value":{"boolValue":true}}]}"#
            .to_string(),
        // Duplicate keys: the first string value wins.
        format!(
            r#"{{"timeUnixNano":"3","attributes":[{},{},{}]}}"#,
            r#"{"key":"host.name","value":{"arrayValue":{}}}"#,
            attr("host.name", "first"),
            attr("host.name", "second")
        ),
    ]
    .join(",");
    let line = json_request(&resource, "k8s.container.ready", "gauge", &points);
    let out = read(line.as_bytes(), Format::Auto);
    let cluster = Some("res-cluster".to_string());
    assert_eq!(
        out.points,
        vec![
            Point {
                cluster: cluster.clone(),
                ..p(1, Some("res-node"), Some("point-image"))
            },
            Point {
                cluster: cluster.clone(),
                ..p(2, Some("res-node"), Some("res-image"))
            },
            Point {
                cluster,
                host: Some("first".into()),
                ..p(3, Some("res-node"), Some("res-image"))
            },
        ]
    );
}

#[test]
fn json_is_lenient_as_the_spec_asks() {
    // snake_case names, numbers for 64-bit ints, nulls, unknown fields, enum names, NaN as
    // a string, escapes in strings, keys in any order, `name` after the data.
    let line = r#"{"resource_metrics":[{"resource":{"attributes":[{"value":{"string_value":"n\u0031"},"key":"k8s.node.name"}],"droppedAttributesCount":0,"entityRefs":[{"type":"k8s.pod"}]},"scope_metrics":[{"scope":null,"metrics":[{"sum":{"data_points":[{"time_unix_nano":1686772769034865545,"asDouble":"NaN","attributes":null,"exemplars":[]}],"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":false},"name":"k8s.container.ready","unit":"","metadata":[]}]},{"metrics":null},{}],"schemaUrl":null},{"resource":null,"scopeMetrics":null}],"extra":{"a":[1,2,{"b":null}]}}"#;
    let out = read(line.as_bytes(), Format::OtlpJson);
    assert!(out.issues.is_empty(), "{:?}", out.issue_texts());
    assert_eq!(
        out.points,
        vec![p(1_686_772_769_034_865_545, Some("n1"), None)]
    );
}

#[test]
fn json_other_metrics_are_counted_whatever_their_kind() {
    let metrics = r#"[{"name":"a","gauge":{"dataPoints":[{},{}]}},{"sum":{"dataPoints":[{"timeUnixNano":"1"}]},"name":"b"},{"name":"c","histogram":{"dataPoints":[{},{},{}]}},{"name":"d","exponentialHistogram":{"dataPoints":[{}]}},{"name":"e","summary":{"dataPoints":[{}]}},{"name":"f","gauge":{"dataPoints":null}},{"name":"g","gauge":null},{"name":"h"}]"#;
    let line = format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":{metrics}}}]}}]}}"#);
    let out = read(line.as_bytes(), Format::OtlpJson);
    assert_eq!(
        out.stats(),
        SourceStats {
            records: 1,
            ready_points: 0,
            other_points: 8,
            malformed_records: 0,
            malformed_points: 0,
        }
    );
}

#[test]
fn json_metric_name_is_exact() {
    for name in [
        "K8s.container.ready",
        "k8s.container.ready ",
        "k8s_container_ready",
    ] {
        let line = json_request("", name, "gauge", r#"{"timeUnixNano":"1"}"#);
        let out = read(line.as_bytes(), Format::OtlpJson);
        assert_eq!(out.stats().other_points, 1, "{name}");
        assert!(out.points.is_empty());
    }
}

#[test]
fn json_bad_lines_do_not_stop_the_file() {
    let good = json_request(
        &attr("k8s.node.name", "n"),
        "k8s.container.ready",
        "gauge",
        r#"{"timeUnixNano":"7"}"#,
    );
    let text = format!("{good}\nnot json\n\n   \n[1,2]\n{good}\r\n{{\"resourceMetrics\":[{{\"scopeMetrics\":[{{\"metrics\":[{{\"name\":1}}]}}]}}]}}\n{good}");
    let out = read(text.as_bytes(), Format::Auto);
    assert_eq!(out.points.len(), 3);
    let lines: Vec<Position> = out.issues.iter().map(|i| i.location.position).collect();
    assert_eq!(
        lines,
        [Position::Line(2), Position::Line(5), Position::Line(7)]
    );
    assert!(out
        .issues
        .iter()
        .all(|i| i.kind == IssueKind::MalformedRecord));
    assert_eq!(out.stats().records, 6, "blank lines are not records");
    assert_eq!(out.stats().malformed_records, 3);
}

#[test]
fn json_invalid_utf8_is_a_bad_line() {
    let mut text = json_request(
        &attr("k8s.node.name", "XX"),
        "k8s.container.ready",
        "gauge",
        r#"{"timeUnixNano":"7"}"#,
    )
    .into_bytes();
    let at = text.windows(2).position(|w| w == b"XX").unwrap();
    text[at] = 0xff;
    let out = read(&text, Format::OtlpJson);
    assert_eq!(out.stats().malformed_records, 1);
    assert!(
        out.issues[0].message.contains("invalid unicode"),
        "{}",
        out.issues[0].message
    );
}

#[test]
fn csv_reads_splunk_exports() {
    let csv = "\u{feff}\"_time\",\"host.name\",\"k8s.cluster.name\",\"k8s.node.name\",\"container.image.name\",\"metric_name\",\"_value\"\r\n\
        \"2023-06-14T19:59:29.034+00:00\",h,c,n,\"docker.io/library/nginx\",k8s.container.ready,1\r\n\
        \r\n\
        1686772769.9,,,n,img,k8s.container.ready,0\r\n\
        1686772769,h,c,n,img,k8s.pod.phase,1\r\n\
        \"2023-06-14 19:59:29Z\",\"a,b\",\"quoted \"\"x\"\"\",\"multi\nline\",img,k8s.container.ready,1\n\
        1686772770,h,c,n,img,k8s.container.ready,1";
    let out = read(csv.as_bytes(), Format::Auto);
    assert_eq!(out.format(), Format::Csv);
    assert!(out.issues.is_empty(), "{:?}", out.issue_texts());
    let t = 1_686_772_769_000_000_000;
    assert_eq!(
        out.points,
        vec![
            Point {
                time: t,
                host: Some("h".into()),
                cluster: Some("c".into()),
                node: Some("n".into()),
                image: Some("docker.io/library/nginx".into()),
                ..Point::default()
            },
            Point {
                time: t,
                host: None,
                cluster: None,
                node: Some("n".into()),
                image: Some("img".into()),
                ..Point::default()
            },
            Point {
                time: t,
                host: Some("a,b".into()),
                cluster: Some("quoted \"x\"".into()),
                node: Some("multi\nline".into()),
                image: Some("img".into()),
                ..Point::default()
            },
            Point {
                time: t + 1_000_000_000,
                host: Some("h".into()),
                cluster: Some("c".into()),
                node: Some("n".into()),
                image: Some("img".into()),
                ..Point::default()
            },
        ]
    );
    assert_eq!(out.stats().other_points, 1);
    assert_eq!(out.stats().records, 5);
}

#[test]
fn csv_line_numbers_count_blank_and_multiline_rows() {
    let csv = "_time,k8s.node.name\n\n1,\"a\nb\"\n\n\nbad,n\n";
    let out = read(csv.as_bytes(), Format::Csv);
    assert_eq!(out.issues.len(), 1);
    assert_eq!(out.issues[0].location.position, Position::Line(7));
    // The message names the column; CSV issues carry no field path.
    assert_eq!(out.issues[0].location.field, None);
    assert!(out.issues[0].message.starts_with("column `_time`"));
}

#[test]
fn csv_without_metric_name_reads_every_row() {
    let out = read(
        b"_time,container.image.name,_value\n1,a,0\n2,b,1\n",
        Format::Csv,
    );
    assert_eq!(out.points.len(), 2);
    assert_eq!(out.stats().other_points, 0);
}
