//! Differential tests: our decoders against a plain reference.
//!
//! Random `ExportMetricsServiceRequest`s are built as `opentelemetry-proto` structs (the
//! plain decoder's types), then written as framed protobuf (prost) and as OTLP/JSON lines
//! (our own small writer, in randomly chosen but valid styles). Both of our decoders must
//! yield exactly what a straightforward extraction over the structs yields: the same points
//! in the same order, the same number of issues, the same counts.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;
use unseen_ingest::{Format, Limits};
use unseen_model::CONTEXT_ATTRS;

/// Small enough that some generated values are over it.
const DIM_LIMIT: usize = 8;

fn limits() -> Limits {
    Limits {
        max_dimension_bytes: DIM_LIMIT,
        ..Limits::default()
    }
}

// ---- generation ---------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("n1".to_string()),
        Just("img:1.0".to_string()),
        Just("ünï\"\\\n\t/".to_string()),
        Just("nine-byte".to_string()),
        "[a-z.:/-]{1,10}",
    ]
}

fn any_value() -> impl Strategy<Value = Option<AnyValue>> {
    use any_value::Value as V;
    let some = |v: V| Some(AnyValue { value: Some(v) });
    prop_oneof![
        6 => text().prop_map(move |s| some(V::StringValue(s))),
        1 => any::<i64>().prop_map(move |i| some(V::IntValue(i))),
        1 => any::<bool>().prop_map(move |b| some(V::BoolValue(b))),
        1 => (-1e9f64..1e9).prop_map(move |d| some(V::DoubleValue(d))),
        1 => Just(some(V::ArrayValue(ArrayValue { values: vec![] }))),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(move |b| some(V::BytesValue(b))),
        1 => Just(Some(AnyValue { value: None })),
        1 => Just(None),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let key = prop_oneof![
        Just("host.name"),
        Just("k8s.cluster.name"),
        Just("k8s.node.name"),
        Just("container.image.name"),
        Just("k8s.pod.name"),
        Just("container.image.tag"),
        // Evidence sharing a length with a key (16, 20) or with each other (12, 18, 19).
        Just("k8s.cronjob.name"),
        Just("k8s.statefulset.name"),
        Just("container.id"),
        Just("k8s.namespace.name"),
        Just("k8s.container.name"),
        Just("k8s.replicaset.name"),
        Just("k8s.pod.uid"),
    ];
    prop::collection::vec(
        (key, any_value()).prop_map(|(key, value)| KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
        0..7,
    )
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 4 => 1u64..=u64::MAX]
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (time(), attributes(), any::<bool>(), any::<i64>()).prop_map(|(t, attributes, int, v)| {
        NumberDataPoint {
            attributes,
            time_unix_nano: t,
            start_time_unix_nano: t / 2,
            value: Some(if int {
                number_data_point::Value::AsInt(v)
            } else {
                number_data_point::Value::AsDouble(v as f64 / 3.0)
            }),
            ..Default::default()
        }
    })
}

fn data() -> impl Strategy<Value = Option<metric::Data>> {
    use metric::Data as D;
    let points = || prop::collection::vec(number_point(), 0..4);
    let times = || prop::collection::vec((time(), attributes()), 0..3);
    prop_oneof![
        4 => points().prop_map(|data_points| Some(D::Gauge(Gauge { data_points }))),
        3 => (points(), 0..3i32, any::<bool>()).prop_map(|(data_points, t, m)| Some(D::Sum(Sum {
            data_points,
            aggregation_temporality: t,
            is_monotonic: m,
        }))),
        1 => times().prop_map(|ts| Some(D::Histogram(Histogram {
            data_points: ts.into_iter().map(|(t, attributes)| HistogramDataPoint {
                time_unix_nano: t, attributes, count: 3, bucket_counts: vec![1, 2], explicit_bounds: vec![0.5],
                sum: Some(1.5), ..Default::default()
            }).collect(),
            aggregation_temporality: 2,
        }))),
        1 => times().prop_map(|ts| Some(D::ExponentialHistogram(ExponentialHistogram {
            data_points: ts.into_iter().map(|(t, attributes)| ExponentialHistogramDataPoint {
                time_unix_nano: t, attributes, count: 1, scale: 2, ..Default::default()
            }).collect(),
            aggregation_temporality: 1,
        }))),
        1 => times().prop_map(|ts| Some(D::Summary(Summary {
            data_points: ts.into_iter().map(|(t, attributes)| SummaryDataPoint {
                time_unix_nano: t, attributes, count: 2, sum: 4.0, ..Default::default()
            }).collect(),
        }))),
        1 => Just(None),
    ]
}

fn metric() -> impl Strategy<Value = Metric> {
    let name = prop_oneof![
        3 => Just("k8s.container.ready"),
        1 => Just("k8s.pod.phase"),
        1 => Just("k8s.container.ready.x"),
        1 => Just(""),
    ];
    (name, data()).prop_map(|(name, data)| Metric {
        name: name.to_string(),
        unit: "1".to_string(),
        data,
        ..Default::default()
    })
}

fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope = prop::collection::vec(metric(), 0..4).prop_map(|metrics| ScopeMetrics {
        metrics,
        ..Default::default()
    });
    let resource = (
        prop::option::weighted(0.9, attributes()),
        prop::collection::vec(scope, 0..3),
    )
        .prop_map(|(attributes, scope_metrics)| ResourceMetrics {
            resource: attributes.map(|attributes| Resource {
                attributes,
                ..Default::default()
            }),
            scope_metrics,
            ..Default::default()
        });
    prop::collection::vec(resource, 0..4)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

// ---- the reference ------------------------------------------------------------------

#[derive(Debug, Default, PartialEq)]
struct Expected {
    points: Vec<Point>,
    issues: usize,
    other_points: u64,
}

/// First string value of `key`, as pdata's `Map.Get` would find it among strings.
fn first_string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .filter(|kv| kv.key == key)
        .find_map(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

fn reference(requests: &[ExportMetricsServiceRequest]) -> Expected {
    let mut expected = Expected::default();
    for request in requests {
        for rm in &request.resource_metrics {
            let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let ready = m.name == "k8s.container.ready";
                    let (number_points, other_points) = match &m.data {
                        None => (&[][..], 0),
                        Some(metric::Data::Gauge(g)) => (&g.data_points[..], 0),
                        Some(metric::Data::Sum(s)) => (&s.data_points[..], 0),
                        Some(metric::Data::Histogram(h)) => (&[][..], h.data_points.len()),
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            (&[][..], h.data_points.len())
                        }
                        Some(metric::Data::Summary(s)) => (&[][..], s.data_points.len()),
                    };
                    if !ready {
                        expected.other_points += (number_points.len() + other_points) as u64;
                        continue;
                    }
                    expected.issues += other_points;
                    for p in number_points {
                        if p.time_unix_nano == 0 {
                            expected.issues += 1;
                            continue;
                        }
                        let dim = |key| {
                            first_string(&p.attributes, key).or_else(|| first_string(resource, key))
                        };
                        let keys = [
                            "host.name",
                            "k8s.cluster.name",
                            "k8s.node.name",
                            "container.image.name",
                        ];
                        if keys
                            .iter()
                            .any(|k| dim(k).is_some_and(|v| v.len() > DIM_LIMIT))
                        {
                            expected.issues += 1;
                            continue;
                        }
                        let owned = |key| dim(key).map(str::to_string);
                        expected.points.push(Point {
                            time: p.time_unix_nano,
                            host: owned(keys[0]),
                            cluster: owned(keys[1]),
                            node: owned(keys[2]),
                            image: owned(keys[3]),
                            // Evidence over the limit is absent; the point stays.
                            context: CONTEXT_ATTRS.map(|key| {
                                dim(key)
                                    .filter(|v| v.len() <= DIM_LIMIT)
                                    .map(str::to_string)
                            }),
                        });
                    }
                }
            }
        }
    }
    expected
}

// ---- our own OTLP/JSON writer --------------------------------------------------------

/// The valid variations a writer may choose.
#[derive(Debug, Clone, Copy)]
struct Style {
    snake_case: bool,
    ints_as_numbers: bool,
    name_last: bool,
    enums_as_names: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| Style {
        snake_case: a,
        ints_as_numbers: b,
        name_last: c,
        enums_as_names: d,
    })
}

/// Standard base64 with padding, as OTLP/JSON writes `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Style {
    fn key(&self, camel: &str) -> String {
        if !self.snake_case {
            return q(camel);
        }
        let mut out = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        q(&out)
    }

    fn int(&self, v: impl ToString) -> String {
        if self.ints_as_numbers {
            v.to_string()
        } else {
            q(&v.to_string())
        }
    }

    fn field(&self, camel: &str, value: String) -> String {
        format!("{}:{value}", self.key(camel))
    }

    fn list<T>(&self, items: &[T], f: impl Fn(&T) -> String) -> String {
        format!("[{}]", items.iter().map(f).collect::<Vec<_>>().join(","))
    }

    fn any_value(&self, v: &AnyValue) -> String {
        use any_value::Value as V;
        match &v.value {
            None => "{}".to_string(),
            Some(V::StringValue(s)) => format!("{{{}}}", self.field("stringValue", q(s))),
            Some(V::IntValue(i)) => format!("{{{}}}", self.field("intValue", self.int(i))),
            Some(V::BoolValue(b)) => format!("{{{}}}", self.field("boolValue", b.to_string())),
            Some(V::DoubleValue(d)) => format!(
                "{{{}}}",
                self.field("doubleValue", serde_json::to_string(d).unwrap())
            ),
            Some(V::ArrayValue(a)) => format!(
                "{{{}}}",
                self.field(
                    "arrayValue",
                    format!(
                        "{{{}}}",
                        self.field("values", self.list(&a.values, |v| self.any_value(v)))
                    )
                )
            ),
            Some(V::BytesValue(b)) => format!("{{{}}}", self.field("bytesValue", q(&base64(b)))),
            Some(other) => panic!("not generated: {other:?}"),
        }
    }

    fn attributes(&self, attributes: &[KeyValue]) -> String {
        self.list(attributes, |kv| match &kv.value {
            Some(v) => format!(
                "{{{},{}}}",
                self.field("key", q(&kv.key)),
                self.field("value", self.any_value(v))
            ),
            None => format!("{{{}}}", self.field("key", q(&kv.key))),
        })
    }

    fn point(&self, time: u64, attributes: &[KeyValue], extra: &str) -> String {
        format!(
            "{{{},{},{extra}}}",
            self.field("attributes", self.attributes(attributes)),
            self.field("timeUnixNano", self.int(time))
        )
    }

    fn data(&self, data: &metric::Data) -> String {
        use metric::Data as D;
        let temporality = |t: i32| {
            if self.enums_as_names {
                q([
                    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
                    "AGGREGATION_TEMPORALITY_DELTA",
                    "AGGREGATION_TEMPORALITY_CUMULATIVE",
                ][t as usize % 3])
            } else {
                t.to_string()
            }
        };
        let number = |p: &NumberDataPoint| {
            let value = match p.value {
                Some(number_data_point::Value::AsInt(i)) => self.field("asInt", self.int(i)),
                Some(number_data_point::Value::AsDouble(d)) => {
                    self.field("asDouble", serde_json::to_string(&d).unwrap())
                }
                None => self.field("flags", "0".into()),
            };
            self.point(p.time_unix_nano, &p.attributes, &value)
        };
        let counted = |count: u64| self.field("count", self.int(count));
        match data {
            D::Gauge(g) => format!(
                "{}:{{{}}}",
                q("gauge"),
                self.field("dataPoints", self.list(&g.data_points, number))
            ),
            D::Sum(s) => format!(
                "{}:{{{},{},{}}}",
                q("sum"),
                self.field("dataPoints", self.list(&s.data_points, number)),
                self.field(
                    "aggregationTemporality",
                    temporality(s.aggregation_temporality)
                ),
                self.field("isMonotonic", s.is_monotonic.to_string())
            ),
            D::Histogram(h) => format!(
                "{}:{{{}}}",
                q("histogram"),
                self.field(
                    "dataPoints",
                    self.list(&h.data_points, |p| self.point(
                        p.time_unix_nano,
                        &p.attributes,
                        &format!(
                            "{},{}",
                            counted(p.count),
                            self.field(
                                "bucketCounts",
                                self.list(&p.bucket_counts, |c| self.int(c))
                            )
                        )
                    ))
                )
            ),
            D::ExponentialHistogram(h) => format!(
                "{}:{{{}}}",
                self.key("exponentialHistogram"),
                self.field(
                    "dataPoints",
                    self.list(&h.data_points, |p| self.point(
                        p.time_unix_nano,
                        &p.attributes,
                        &counted(p.count)
                    ))
                )
            ),
            D::Summary(s) => format!(
                "{}:{{{}}}",
                q("summary"),
                self.field(
                    "dataPoints",
                    self.list(&s.data_points, |p| self.point(
                        p.time_unix_nano,
                        &p.attributes,
                        &counted(p.count)
                    ))
                )
            ),
        }
    }

    fn metric(&self, m: &Metric) -> String {
        let mut fields = vec![self.field("unit", q(&m.unit))];
        if let Some(data) = &m.data {
            fields.push(self.data(data));
        }
        let name = self.field("name", q(&m.name));
        if self.name_last {
            fields.push(name);
        } else {
            fields.insert(0, name);
        }
        format!("{{{}}}", fields.join(","))
    }
}

/// One OTLP/JSON line for a request.
fn to_otlp_json(request: &ExportMetricsServiceRequest, style: Style) -> String {
    let s = style;
    let rms = s.list(&request.resource_metrics, |rm| {
        let resource = match &rm.resource {
            Some(r) => format!(
                "{},",
                s.field(
                    "resource",
                    format!("{{{}}}", s.field("attributes", s.attributes(&r.attributes)))
                )
            ),
            None => String::new(),
        };
        let scopes = s.list(&rm.scope_metrics, |sm| {
            format!(
                "{{{},{}}}",
                s.field("scope", format!("{{{}}}", s.field("name", q("test")))),
                s.field("metrics", s.list(&sm.metrics, |m| s.metric(m)))
            )
        });
        format!("{{{resource}{}}}", s.field("scopeMetrics", scopes))
    });
    format!("{{{}}}", s.field("resourceMetrics", rms))
}

// ---- the properties -------------------------------------------------------------------

fn check(out: &Outcome, expected: &Expected, records: usize) {
    let stats = out.stats();
    assert_eq!(out.points, expected.points);
    assert_eq!(out.issues.len(), expected.issues, "{:?}", out.issue_texts());
    assert_eq!(stats.malformed_points as usize, expected.issues);
    assert_eq!(stats.malformed_records, 0);
    assert_eq!(stats.other_points, expected.other_points);
    assert_eq!(stats.ready_points as usize, expected.points.len());
    assert_eq!(stats.records as usize, records);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn proto_and_json_agree_with_the_reference(
        requests in prop::collection::vec(request(), 1..4),
        styles in prop::collection::vec(style(), 4),
    ) {
        let expected = reference(&requests);

        let proto = frame(&requests.iter().map(|r| r.encode_to_vec()).collect::<Vec<_>>());
        let out = read_with(&proto, Format::Auto, limits());
        prop_assert_eq!(out.format(), Format::OtlpProto);
        check(&out, &expected, requests.len());

        let json: String = requests
            .iter()
            .zip(&styles)
            .map(|(r, s)| to_otlp_json(r, *s) + "\n")
            .collect();
        let out = read_with(json.as_bytes(), Format::Auto, limits());
        prop_assert_eq!(out.format(), Format::OtlpJson);
        check(&out, &expected, requests.len());

        // The writer's JSON is what opentelemetry-proto's serde reads too (when in its
        // comfort zone: camelCase, no enum names), and reads back to the same request.
        let plain = Style { snake_case: false, ints_as_numbers: false, name_last: false, enums_as_names: false };
        for r in &requests {
            let parsed: ExportMetricsServiceRequest = serde_json::from_str(&to_otlp_json(r, plain)).unwrap();
            prop_assert_eq!(reference(std::slice::from_ref(&parsed)), reference(std::slice::from_ref(r)));
        }
    }
}

// ---- CSV and JSON lines agree -----------------------------------------------------------

fn dim() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("n1".to_string()),
        Just("a,b".to_string()),
        Just("quo\"te".to_string()),
        Just("line\nbreak".to_string()),
        Just("ünï".to_string()),
        "[a-z0-9./:-]{1,12}",
    ])
}

#[derive(Debug, Clone)]
struct Row {
    secs: u64,
    time_style: u8,
    /// The four keys, then three evidence attributes (`COLUMNS` order).
    dims: [Option<String>; 7],
}

fn row() -> impl Strategy<Value = Row> {
    (
        1u64..4_000_000_000,
        0u8..3,
        [dim(), dim(), dim(), dim(), dim(), dim(), dim()],
    )
        .prop_map(|(secs, time_style, dims)| Row {
            secs,
            time_style,
            dims,
        })
}

fn csv_cell(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn csv_and_json_lines_agree(rows in prop::collection::vec(row(), 0..20), column_order in Just([3usize, 5, 0, 2, 6, 1, 4])) {
        const KEYS: [&str; 7] = [
            "host.name",
            "k8s.cluster.name",
            "k8s.node.name",
            "container.image.name",
            "k8s.namespace.name",
            "k8s.pod.name",
            "container.image.tag",
        ];
        let mut csv = String::from("_value,");
        csv += &column_order.iter().map(|&i| KEYS[i]).collect::<Vec<_>>().join(",");
        csv += ",_time\r\n";
        let mut json = String::new();
        for r in &rows {
            csv += "1,";
            for &i in &column_order {
                csv += &r.dims[i].as_deref().map(csv_cell).unwrap_or_default();
                csv += ",";
            }
            csv += &match r.time_style {
                0 => r.secs.to_string(),
                1 => format!("{}.75", r.secs),
                _ => unseen_model::format_rfc3339(r.secs as i64),
            };
            csv += "\r\n";
            let attrs: Vec<String> = KEYS
                .iter()
                .zip(&r.dims)
                .filter_map(|(k, v)| v.as_ref().map(|v| format!(r#"{{"key":"{k}","value":{{"stringValue":{}}}}}"#, q(v))))
                .collect();
            json += &json_request("", "k8s.container.ready", "gauge", &format!(
                r#"{{"timeUnixNano":"{}","attributes":[{}]}}"#,
                r.secs * 1_000_000_000,
                attrs.join(",")
            ));
            json += "\n";
        }
        let from_csv = read(csv.as_bytes(), Format::Auto);
        let from_json = read(json.as_bytes(), Format::OtlpJson);
        prop_assert_eq!(from_csv.format(), Format::Csv);
        prop_assert!(from_csv.issues.is_empty(), "{:?}", from_csv.issue_texts());
        prop_assert_eq!(from_csv.points.len(), rows.len());
        prop_assert_eq!(&from_csv.points, &from_json.points);
    }
}
