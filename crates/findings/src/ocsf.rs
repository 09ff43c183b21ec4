//! Findings and incidents as OCSF 1.x Detection Findings (class 2004), for SIEMs and
//! data lakes that take OCSF (Security Lake, Sentinel, Splunk's OCSF add-ons, …).
//!
//! One [`Finding`] or [`Incident`] is one OCSF event, one JSON object. The shape is that
//! of the `DetectionFinding` model of `py-ocsf-models` 0.10.0 (OCSF [`OCSF_VERSION`]),
//! which `scripts/ocsf_validate.py` checks it against (the tests run it):
//!
//! | OCSF member | finding | incident |
//! | --- | --- | --- |
//! | `class_uid`, `category_uid` | 2004, 2 | 2004, 2 |
//! | `activity_id`, `type_uid` | 1 Create, 200401 | 1 Create, 200401 when `open`; 3 Close, 200403 when `closed` |
//! | `time` (epoch ms) | `detected_at` | `detected_at`; `closed_at` when closed |
//! | `start_time`, `end_time` | `first_seen`, `last_seen` | `opened_at`, – |
//! | `count` | `count` | `finding_count` |
//! | `severity_id` | [`finding_severity`] | [`incident_severity`] |
//! | `status_id` | 1 New; 3 Suppressed when a suppression rule matched | 1 New (see [`incident`]) |
//! | `risk_score`, `message` | `risk_score`, `risk_message` | `risk_score`, `title` |
//! | `metadata.uid` | `finding_id` | `<incident_id>:<state>` (one per event) |
//! | `metadata.correlation_uid` | `incident_id` | `incident_id` |
//! | `finding_info.uid`, `.title` | `finding_id`, a title naming image, scope and node | `incident_id`, `title` |
//! | `finding_info.analytic` | the rule (`type_id` 1 Rule) | the rule, when it is one unseen knows |
//! | `finding_info.attacks` | the rule's ATT&CK techniques (T1204 User Execution, TA0002 Execution) | the same |
//! | `finding_info.related_events` | – | the member findings |
//! | `resources` | cluster, node, host, pod (or namespace), workload | cluster, nodes, namespaces, workloads |
//! | `evidences` | the `k8s.container.ready` point: container and image | the members' images |
//! | `unmapped` | the finding's other fields, under their `docs/findings.md` names | the incident's other fields |
//!
//! `unmapped` keeps the fields whose values went into `resources`, `evidences` and
//! `analytic` too (`k8s.*`, `container.*`, `image`, `workload`, `rule`): a query or
//! matcher written against the findings file reads the same names there. Only the
//! fields an OCSF member holds as is (ids, times, count, risk score, message) are left
//! out.
//!
//! An absent value is an absent member: nothing is ever `null`, at any depth.

use serde::Serialize;
use serde_json::{Map, Value};
use unseen_model::{parse_time, Rule, SEED_RULE};

use crate::{Finding, Incident, IncidentState, Record, RuleRef, Scope};

/// The OCSF schema version the events claim (`metadata.version`): the version that
/// `py-ocsf-models` 0.10.0, the model they are validated against, targets.
pub const OCSF_VERSION: &str = "1.5.0";

/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// `finding_info.types` of a finding (an incident adds `incident/<kind>`).
pub const FINDING_TYPE: &str = "previously_unseen_container_image";

const ACTIVITY_CREATE: u32 = 1;
const ACTIVITY_CLOSE: u32 = 3;

const STATUS_NEW: u32 = 1;
const STATUS_SUPPRESSED: u32 = 3;

const SEVERITY_INFORMATIONAL: u32 = 1;
const SEVERITY_LOW: u32 = 2;
const SEVERITY_MEDIUM: u32 = 3;
const SEVERITY_HIGH: u32 = 4;
const SEVERITY_CRITICAL: u32 = 5;

/// Analytic `type_id` 1: Rule.
const ANALYTIC_RULE: u32 = 1;

/// The ATT&CK techniques unseen names: (technique, name, tactic, tactic name). A rule's
/// technique that is not here is left out of `attacks` (the model requires a name, and
/// none is invented); it stays in `unmapped.rule.mitre_attack`.
const TECHNIQUES: [(&str, &str, &str, &str); 1] =
    [("T1204", "User Execution", "TA0002", "Execution")];

/// A record (what sinks deliver) as a Detection Finding.
pub fn record(r: &Record) -> Value {
    match r {
        Record::Finding(f) => finding(f),
        Record::Incident(i) => incident(i),
    }
}

/// One finding as a Detection Finding (activity Create).
///
/// `time` is `detected_at` in epoch milliseconds (its `first_seen` if that does not parse,
/// which cannot happen for a finding this code built; 0 as a last resort, the member
/// being required). Other times that do not parse are left out.
pub fn finding(f: &Finding) -> Value {
    let triage = f.triage.as_ref();
    let severity = finding_severity(f.risk_score, &f.rule.severity);
    let (status, status_detail) = match &f.suppressed {
        Some(s) => (
            STATUS_SUPPRESSED,
            Some(format!("suppressed by rule {}: {}", s.rule, s.reason)),
        ),
        None => (STATUS_NEW, None),
    };
    let incident_id = triage.and_then(|t| t.incident_id.as_deref());

    let metadata = metadata(f.finding_id.clone(), incident_id.map(str::to_string));
    let finding_info = Obj::new()
        .put("uid", f.finding_id.as_str())
        .put("title", finding_title(f))
        .put("desc", finding_desc(f))
        .put("analytic", analytic_of(&f.rule))
        .put("types", vec![FINDING_TYPE])
        .put_opt("created_time", ms(&f.detected_at))
        .put_opt("first_seen_time", ms(&f.first_seen))
        .put_opt("last_seen_time", ms(&f.last_seen))
        .put_list(
            "attacks",
            attacks(f.rule.mitre_attack.iter().map(String::as_str)),
        )
        .build();

    let unmapped = unmapped(
        f,
        &[
            "finding_id",
            "detected_at",
            "first_seen",
            "last_seen",
            "count",
            "risk_score",
            "risk_message",
        ],
    );

    let time = ms(&f.detected_at)
        .or_else(|| ms(&f.first_seen))
        .unwrap_or(0);
    event(ACTIVITY_CREATE, time)
        .put_opt("start_time", ms(&f.first_seen))
        .put_opt("end_time", ms(&f.last_seen))
        .put("count", f.count)
        .put("severity_id", severity)
        .put("severity", severity_caption(severity))
        .put("status_id", status)
        .put("status", status_caption(status))
        .put_opt("status_detail", status_detail)
        .put("risk_score", f.risk_score)
        .put("message", f.risk_message.as_str())
        .put("metadata", metadata)
        .put("finding_info", finding_info)
        .put_list("resources", finding_resources(f))
        .put_list("evidences", finding_evidences(f))
        .put_opt("unmapped", unmapped)
        .build()
}

/// One incident as a Detection Finding: activity Create (200401) when it opens, Close
/// (200403) when it closes, both under `finding_info.uid` = `incident_id`.
///
/// `status_id` is New (1) in both: OCSF's status is the review state, set by the consumer,
/// and unseen reviews nothing. A closed incident is final (its window ended, no member
/// joins it any more), which activity Close says; it is not Resolved (4, "reviewed,
/// remediated"), and saying so would take a new image off a SOC's queue after 15 minutes.
/// `status_detail` says when it closed.
///
/// `time` is `detected_at` when open, `closed_at` when closed (in epoch milliseconds).
pub fn incident(i: &Incident) -> Value {
    let closed = i.state == IncidentState::Closed;
    let activity = if closed {
        ACTIVITY_CLOSE
    } else {
        ACTIVITY_CREATE
    };
    let severity = incident_severity(&i.severity, i.risk_score);
    let state = if closed { "closed" } else { "open" };
    let rule = known_rule(&i.rule_id);

    let related: Vec<Value> = i
        .findings
        .iter()
        .map(|id| {
            Obj::new()
                .put("uid", id.as_str())
                .put("type_uid", CLASS_UID * 100 + ACTIVITY_CREATE)
                .put("type", type_name(ACTIVITY_CREATE))
                .build()
        })
        .collect();
    let finding_info = Obj::new()
        .put("uid", i.incident_id.as_str())
        .put("title", i.title.as_str())
        .put("desc", incident_desc(i))
        .put_opt("analytic", rule.map(|r| analytic_of(&RuleRef::of(r))))
        .put(
            "types",
            vec![
                FINDING_TYPE.to_string(),
                format!("incident/{}", i.kind.as_str()),
            ],
        )
        .put_opt("created_time", ms(&i.detected_at))
        .put_opt("first_seen_time", ms(&i.opened_at))
        .put_opt(
            "modified_time",
            i.closed_at.as_deref().filter(|_| closed).and_then(ms),
        )
        .put_list(
            "attacks",
            attacks(
                rule.into_iter()
                    .flat_map(|r| r.mitre_attack.iter().copied()),
            ),
        )
        .put_list("related_events", related)
        .build();

    let mut resources = Vec::new();
    if let Some(c) = i.cluster.as_deref().filter(|c| !c.is_empty()) {
        resources.push(resource("kubernetes_cluster", c).build());
    }
    for n in &i.nodes {
        resources.push(resource("kubernetes_node", n).build());
    }
    for ns in &i.namespaces {
        resources.push(resource("kubernetes_namespace", ns).build());
    }
    for w in &i.workloads {
        let r = match w.split_once('/') {
            Some((kind, name)) => resource(&workload_type(Some(kind)), name),
            None => resource(&workload_type(None), w),
        };
        resources.push(r.build());
    }
    let images: Vec<Value> = i
        .images
        .iter()
        .map(|img| resource("container_image", img).build())
        .collect();
    let evidences = if images.is_empty() {
        Vec::new()
    } else {
        vec![Obj::new()
            .put("name", "container.image.name")
            .put("resources", images)
            .build()]
    };

    let unmapped = unmapped(
        i,
        &[
            "incident_id",
            "title",
            "detected_at",
            "opened_at",
            "closed_at",
            "risk_score",
            "finding_count",
            "findings",
            "nodes",
            "namespaces",
            "workloads",
            "images",
        ],
    );

    let time = if closed {
        i.closed_at
            .as_deref()
            .and_then(ms)
            .or_else(|| ms(&i.closes_at))
    } else {
        None
    }
    .or_else(|| ms(&i.detected_at))
    .unwrap_or(0);
    let status_detail = closed.then(|| {
        format!(
            "closed at {}: its window ended, its members are final",
            i.closed_at.as_deref().unwrap_or(&i.closes_at)
        )
    });
    event(activity, time)
        .put_opt("start_time", ms(&i.opened_at))
        .put("count", i.finding_count)
        .put("severity_id", severity)
        .put("severity", severity_caption(severity))
        .put("status_id", STATUS_NEW)
        .put("status", status_caption(STATUS_NEW))
        .put_opt("status_detail", status_detail)
        .put("risk_score", i.risk_score)
        .put("message", i.title.as_str())
        .put(
            "metadata",
            metadata(
                format!("{}:{state}", i.incident_id),
                Some(i.incident_id.clone()),
            ),
        )
        .put("finding_info", finding_info)
        .put_list("resources", resources)
        .put_list("evidences", evidences)
        .put_opt("unmapped", unmapped)
        .build()
}

/// The `severity_id` of a finding: its risk score in bands, 80 and over High (4), 50 to
/// 79 Medium (3), under 50 Low (2); but never below the rule's own severity
/// (`informational` 1, `low` 2, `medium` 3, `high` 4, `critical` 5).
///
/// With the seed rule (`low`, 20) and the default risk modifiers: strict mode (20),
/// `node` (10) and `cluster` (30) scope are Low; `fleet` (50, 70 with `registry_new`) is
/// Medium; a fleet-new look-alike of a known image (90 and over) is High.
pub fn finding_severity(risk_score: u32, rule_severity: &str) -> u32 {
    let banded = match risk_score {
        80.. => SEVERITY_HIGH,
        50..=79 => SEVERITY_MEDIUM,
        _ => SEVERITY_LOW,
    };
    banded.max(named_severity(rule_severity).unwrap_or(0))
}

/// The `severity_id` of an incident: its `severity` (`low` 2, `medium` 3, `high` 4;
/// also `informational` 1 and `critical` 5), else its risk score as
/// [`finding_severity`] bands it.
pub fn incident_severity(severity: &str, risk_score: u32) -> u32 {
    named_severity(severity).unwrap_or_else(|| finding_severity(risk_score, ""))
}

fn named_severity(s: &str) -> Option<u32> {
    match s.to_ascii_lowercase().as_str() {
        "informational" | "info" => Some(SEVERITY_INFORMATIONAL),
        "low" => Some(SEVERITY_LOW),
        "medium" => Some(SEVERITY_MEDIUM),
        "high" => Some(SEVERITY_HIGH),
        "critical" => Some(SEVERITY_CRITICAL),
        _ => None,
    }
}

fn severity_caption(id: u32) -> &'static str {
    match id {
        SEVERITY_INFORMATIONAL => "Informational",
        SEVERITY_LOW => "Low",
        SEVERITY_MEDIUM => "Medium",
        SEVERITY_HIGH => "High",
        SEVERITY_CRITICAL => "Critical",
        _ => "Unknown",
    }
}

fn status_caption(id: u32) -> &'static str {
    match id {
        STATUS_NEW => "New",
        STATUS_SUPPRESSED => "Suppressed",
        _ => "Unknown",
    }
}

fn activity_caption(id: u32) -> &'static str {
    match id {
        ACTIVITY_CREATE => "Create",
        ACTIVITY_CLOSE => "Close",
        _ => "Unknown",
    }
}

fn type_name(activity: u32) -> String {
    format!("Detection Finding: {}", activity_caption(activity))
}

/// The members every event has, in OCSF's order of importance.
fn event(activity: u32, time: i64) -> Obj {
    Obj::new()
        .put("class_uid", CLASS_UID)
        .put("class_name", "Detection Finding")
        .put("category_uid", CATEGORY_UID)
        .put("category_name", "Findings")
        .put("activity_id", activity)
        .put("activity_name", activity_caption(activity))
        .put("type_uid", CLASS_UID * 100 + activity)
        .put("type_name", type_name(activity))
        .put("time", time)
}

fn metadata(uid: String, correlation_uid: Option<String>) -> Value {
    let product = Obj::new()
        .put("name", "unseen")
        .put("vendor_name", "unseen")
        .put("version", env!("CARGO_PKG_VERSION"))
        .build();
    Obj::new()
        .put("product", product)
        .put("version", OCSF_VERSION)
        .put("uid", uid)
        .put_opt("correlation_uid", correlation_uid)
        .build()
}

fn analytic_of(rule: &RuleRef) -> Value {
    Obj::new()
        .put("uid", rule.id.as_str())
        .put("name", rule.name.as_str())
        .put("type_id", ANALYTIC_RULE)
        .put("type", "Rule")
        .put("version", rule.version.to_string())
        .put_opt(
            "category",
            Some(rule.rule_type.as_str()).filter(|t| !t.is_empty()),
        )
        .build()
}

/// The rules unseen knows by id (an incident carries only its rule's id).
fn known_rule(id: &str) -> Option<&'static Rule> {
    (id == SEED_RULE.id).then_some(&SEED_RULE)
}

fn attacks<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<Value> {
    ids.filter_map(|id| TECHNIQUES.iter().find(|t| t.0 == id))
        .map(|&(technique, name, tactic, tactic_name)| {
            let technique = Obj::new()
                .put("uid", technique)
                .put("name", name)
                .put(
                    "src_url",
                    format!("https://attack.mitre.org/techniques/{technique}/"),
                )
                .build();
            let tactic = Obj::new()
                .put("uid", tactic)
                .put("name", tactic_name)
                .put(
                    "src_url",
                    format!("https://attack.mitre.org/tactics/{tactic}/"),
                )
                .build();
            Obj::new()
                .put("technique", technique)
                .put("tactic", tactic)
                .build()
        })
        .collect()
}

/// `" in <cluster>"`, or nothing for an unnamed cluster.
fn in_cluster(cluster: &str) -> String {
    if cluster.is_empty() {
        String::new()
    } else {
        format!(" in {cluster}")
    }
}

/// A title for people: what is new, how far, where (the risk message names only the host).
fn finding_title(f: &Finding) -> String {
    let (image, node, cluster) = (&f.image, &f.node, &f.cluster);
    match f.triage.as_ref().map(|t| t.scope) {
        Some(Scope::Fleet) => format!(
            "New image {image}, never seen in the fleet, on node {node}{}",
            in_cluster(cluster)
        ),
        Some(Scope::Cluster) if !cluster.is_empty() => {
            format!("Image {image} new to cluster {cluster}, on node {node}")
        }
        Some(Scope::Cluster) => format!("Image {image} new to its cluster, on node {node}"),
        Some(Scope::Node) => format!("Image {image} new to node {node}{}", in_cluster(cluster)),
        None => format!(
            "Previously unseen container image {image} on host {}",
            f.host
        ),
    }
}

fn finding_desc(f: &Finding) -> String {
    let mut desc = format!(
        "{}: container image {} first seen at {}",
        f.risk_message,
        f.triage.as_ref().map_or(&f.image, |t| &t.image.raw),
        f.first_seen
    );
    match &f.previous_seen {
        Some(p) => desc.push_str(&format!(", previously seen at {p}.")),
        None => desc.push_str(", not seen before within the baseline."),
    }
    if let Some(l) = f.triage.as_ref().and_then(|t| t.look_alike.as_deref()) {
        desc.push_str(&format!(
            " Its name is a near-miss of the known {l} (a possible typosquat)."
        ));
    }
    desc
}

fn incident_desc(i: &Incident) -> String {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut desc = format!(
        "Incident of kind {}, {} scope: {} on {}, opened at {}, its window closing at {}.",
        i.kind.as_str(),
        i.scope.as_str(),
        plural(
            usize::try_from(i.finding_count).unwrap_or(usize::MAX),
            "finding",
            "findings"
        ),
        plural(i.nodes.len(), "node", "nodes"),
        i.opened_at,
        i.closes_at
    );
    if let Some(l) = &i.look_alike {
        desc.push_str(&format!(
            " The image's name is a near-miss of the known {l} (a possible typosquat)."
        ));
    }
    desc
}

fn resource(kind: &str, name: &str) -> Obj {
    Obj::new().put("type", kind).put("name", name)
}

/// `kubernetes_deployment`, …; `kubernetes_workload` when the kind is not known.
fn workload_type(kind: Option<&str>) -> String {
    match kind {
        Some(k) if !k.is_empty() => format!("kubernetes_{}", k.to_ascii_lowercase()),
        _ => "kubernetes_workload".to_string(),
    }
}

/// What the finding is about: its cluster, node (and host, when another), pod and workload.
fn finding_resources(f: &Finding) -> Vec<Value> {
    let mut out = Vec::new();
    if !f.cluster.is_empty() {
        out.push(resource("kubernetes_cluster", &f.cluster).build());
    }
    if !f.node.is_empty() {
        out.push(resource("kubernetes_node", &f.node).build());
    }
    if !f.host.is_empty() && f.host != f.node {
        out.push(resource("host", &f.host).build());
    }
    let Some(t) = &f.triage else {
        return out;
    };
    let namespace = t.namespace.as_deref();
    if t.pod_name.is_some() || t.pod_uid.is_some() {
        out.push(
            Obj::new()
                .put("type", "kubernetes_pod")
                .put_opt("name", t.pod_name.as_deref())
                .put_opt("uid", t.pod_uid.as_deref())
                .put_opt("namespace", namespace)
                .build(),
        );
    } else if let Some(ns) = namespace {
        out.push(resource("kubernetes_namespace", ns).build());
    }
    if let Some(w) = &t.workload {
        let data = Obj::new().put("derived", w.derived).build();
        out.push(
            resource(&workload_type(w.kind.as_deref()), &w.name)
                .put_opt("namespace", namespace)
                .put("data", data)
                .build(),
        );
    }
    out
}

/// The point that raised it: a container (when the point named one) running the image.
fn finding_evidences(f: &Finding) -> Vec<Value> {
    let mut resources = Vec::new();
    let mut image = resource("container_image", &f.image);
    if let Some(t) = &f.triage {
        if t.container_name.is_some() || t.container_id.is_some() {
            resources.push(
                Obj::new()
                    .put("type", "container")
                    .put_opt("name", t.container_name.as_deref())
                    .put_opt("uid", t.container_id.as_deref())
                    .put_opt("namespace", t.namespace.as_deref())
                    .build(),
            );
        }
        let data = Obj::new()
            .put_opt("registry", t.image.registry.as_deref())
            .put_opt("repository", t.image.repository.as_deref())
            .put_opt("tag", t.image.tag.as_deref())
            .put_opt("digest", t.image.digest.as_deref())
            .put("raw", t.image.raw.as_str())
            .build();
        image = image
            .put_opt("version", t.image.tag.as_deref())
            .put_opt("uid", t.image.digest.as_deref())
            .put("data", data);
    }
    resources.push(image.build());
    vec![Obj::new()
        .put("name", "k8s.container.ready")
        .put("resources", resources)
        .build()]
}

/// `value` serialized, without the fields in `mapped` (they have OCSF members) and
/// without nulls; `None` when nothing is left.
fn unmapped(value: &impl Serialize, mapped: &[&str]) -> Option<Value> {
    let Ok(Value::Object(mut fields)) = serde_json::to_value(value) else {
        return None;
    };
    for key in mapped {
        fields.remove(*key);
    }
    match without_nulls(Value::Object(fields)) {
        Value::Object(m) if m.is_empty() => None,
        v => Some(v),
    }
}

/// `v` with every null object member removed, at any depth (and nulls in arrays).
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|v| !v.is_null())
                .map(without_nulls)
                .collect(),
        ),
        v => v,
    }
}

/// An RFC 3339 time (or Unix seconds) as epoch milliseconds.
fn ms(t: &str) -> Option<i64> {
    parse_time(t).ok().map(|s| s.saturating_mul(1000))
}

/// A JSON object under construction.
struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Obj(Map::new())
    }

    fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// `key` only when there is a value.
    fn put_opt<V: Into<Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    /// `key` only when the list is not empty.
    fn put_list(self, key: &str, values: Vec<Value>) -> Self {
        if values.is_empty() {
            self
        } else {
            self.put(key, values)
        }
    }

    fn build(self) -> Value {
        Value::Object(self.0)
    }
}
