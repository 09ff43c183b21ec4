//! Findings and incidents as OCSF Detection Findings (`unseen_findings::ocsf`): the
//! mapping of the key members, then every kind of record validated by
//! `scripts/ocsf_validate.py` against py-ocsf-models' `DetectionFinding`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use unseen_detect::Detection;
use unseen_findings::incident::Assigned;
use unseen_findings::{
    build, ocsf, Finding, Incident, IncidentState, Incidents, Novelty, Record, Scope, Suppressions,
    Triage, TriageSettings,
};
use unseen_model::{ctx, Context, OwnedContext, UnixSecs, CONTEXT_LEN, SEED_RULE};
use unseen_normalize::Key;

/// 2026-01-06T10:02:00Z: the episode's first point.
const T: UnixSecs = 1_767_693_720;
/// When unseen reported it.
const NOW: UnixSecs = T + 1;
const DIGEST: &str = "sha256:4bd1a1c1d3ab5b6f1a0e4b1bbf1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";

fn key(node: &str, image: &str) -> Key {
    Key {
        host: node.into(),
        cluster: "prod-eu".into(),
        node: node.into(),
        image: image.into(),
    }
}

/// A strict-mode finding, as the seed's rule reports it (no evidence, no triage).
fn strict_finding() -> Finding {
    let d = Detection {
        key: Key {
            host: "kind-control-plane".into(),
            cluster: "kind".into(),
            node: "kind-control-plane".into(),
            image: "registry.k8s.io/etcd".into(),
        },
        first_seen: T,
        last_seen: T + 10,
        count: 2,
        previous_seen: None,
        late: false,
        host_name: None,
        context: OwnedContext::default(),
        image_raw: None,
    };
    build(&SEED_RULE, "strict", &d, NOW)
}

/// A default-mode finding with its evidence and triage, as `Decider` makes it.
fn default_finding(
    node: &str,
    image_raw: &str,
    evidence: &[(usize, &str)],
    n: &Novelty,
) -> Finding {
    let mut slots: [Option<&str>; CONTEXT_LEN] = [None; CONTEXT_LEN];
    for &(slot, value) in evidence {
        slots[slot] = Some(value);
    }
    let context = OwnedContext::new(&Context(slots));
    let image = unseen_normalize::image::canonical(image_raw, context.get(ctx::IMAGE_TAG));
    let k = key(node, &image);
    let d = Detection {
        key: k.clone(),
        first_seen: T,
        last_seen: T,
        count: 1,
        previous_seen: Some(T - 40 * 86_400),
        late: false,
        host_name: Some("otel-collector-0".into()),
        context: context.clone(),
        image_raw: (image != image_raw).then(|| image_raw.to_string()),
    };
    let mut f = build(&SEED_RULE, "default", &d, NOW);
    f.risk_score = TriageSettings::default()
        .risk
        .score(SEED_RULE.risk.score, n);
    f.triage = Some(Triage::new(&k, &context, d.image_raw.as_deref(), n));
    f
}

fn api_finding() -> Finding {
    let novelty = Novelty {
        scope: Scope::Fleet,
        registry_new: false,
        look_alike: Some("ghcr.io/acme/apl".into()),
        new_node: false,
    };
    default_finding(
        "node-7",
        &format!("ghcr.io/acme/api:1.4.2@{DIGEST}"),
        &[
            (ctx::NAMESPACE, "payments"),
            (ctx::POD_NAME, "api-7d9f8b6c5d-x2k4q"),
            (ctx::POD_UID, "0b6f5d0e-3c1a-4b7e-9d2f-6a8c1e4b2d70"),
            (ctx::CONTAINER_NAME, "api"),
            (ctx::CONTAINER_ID, "containerd://6f1e2d3c4b5a"),
            (ctx::IMAGE_TAG, "1.4.2"),
            (ctx::DEPLOYMENT, "api"),
        ],
        &novelty,
    )
}

fn busybox_finding() -> Finding {
    let novelty = Novelty {
        scope: Scope::Node,
        registry_new: false,
        look_alike: None,
        new_node: false,
    };
    default_finding(
        "node-3",
        "busybox:1.36",
        &[
            (ctx::NAMESPACE, "debug-jane"),
            (ctx::POD_NAME, "debug-shell"),
        ],
        &novelty,
    )
}

/// The API finding in its incident, the incident as opened, and as closed.
fn api_incident() -> (Finding, Incident, Incident) {
    let mut f = api_finding();
    let novelty = Novelty {
        scope: Scope::Fleet,
        registry_new: false,
        look_alike: Some("ghcr.io/acme/apl".into()),
        new_node: false,
    };
    let settings = TriageSettings::default();
    let mut incidents = Incidents::default();
    let Assigned::Opened(opened) =
        incidents.assign(&mut f, &novelty, T, &SEED_RULE, &settings, NOW)
    else {
        panic!("a fleet-new image opens an incident");
    };
    let closed = incidents.close_due(T + 86_400);
    assert_eq!(closed.len(), 1);
    (f, *opened, closed.into_iter().next().unwrap())
}

/// The busybox finding, suppressed by a rules file.
fn suppressed_finding() -> Finding {
    let rules = Suppressions::parse(
        "rules.toml",
        r#"
[[suppress]]
name = "debug-busybox"
reason = "busybox debug pods, started by hand during incidents"
"container.image.name" = "docker.io/library/busybox*"
"#,
    )
    .unwrap();
    let mut f = busybox_finding();
    f.suppressed = rules.check(&f, NOW);
    assert!(f.suppressed.is_some(), "the rule matches");
    f
}

fn ms(secs: UnixSecs) -> i64 {
    secs * 1000
}

/// Paths of the nulls in `v`.
fn nulls(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(path.to_string()),
        Value::Object(m) => {
            for (k, v) in m {
                nulls(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                nulls(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn assert_no_nulls(v: &Value) {
    let mut found = Vec::new();
    nulls(v, "$", &mut found);
    assert!(found.is_empty(), "nulls at {found:?} in {v}");
}

/// The resource of `resources` with this `type`.
fn resource<'v>(v: &'v Value, kind: &str) -> &'v Value {
    v["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} resource in {}", v["resources"]))
}

#[test]
fn a_strict_finding_is_a_detection_finding_of_the_rule() {
    let f = strict_finding();
    let v = ocsf::finding(&f);
    assert_eq!(v["class_uid"], 2004);
    assert_eq!(v["category_uid"], 2);
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["type_uid"], 200401);
    assert_eq!(v["time"], ms(NOW));
    assert_eq!(v["start_time"], ms(T));
    assert_eq!(v["end_time"], ms(T + 10));
    assert_eq!(v["count"], 2);
    assert_eq!(v["severity_id"], 2, "score 20 of a `low` rule is Low");
    assert_eq!(v["severity"], "Low");
    assert_eq!(v["status_id"], 1);
    assert_eq!(v["risk_score"], 20);
    assert_eq!(v["message"], f.risk_message);

    let meta = &v["metadata"];
    assert_eq!(meta["version"], ocsf::OCSF_VERSION);
    assert_eq!(meta["version"], "1.5.0");
    assert_eq!(meta["product"]["name"], "unseen");
    assert_eq!(meta["product"]["vendor_name"], "unseen");
    assert_eq!(meta["product"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["uid"], f.finding_id);
    assert!(
        meta.get("correlation_uid").is_none(),
        "no incident in strict mode"
    );

    let info = &v["finding_info"];
    assert_eq!(info["uid"], f.finding_id);
    assert_eq!(
        info["title"],
        "Previously unseen container image registry.k8s.io/etcd on host kind-control-plane"
    );
    assert_eq!(
        info["types"],
        serde_json::json!(["previously_unseen_container_image"])
    );
    assert_eq!(info["created_time"], ms(NOW));
    assert_eq!(info["first_seen_time"], ms(T));
    assert_eq!(info["last_seen_time"], ms(T + 10));
    let analytic = &info["analytic"];
    assert_eq!(analytic["uid"], SEED_RULE.id);
    assert_eq!(analytic["name"], SEED_RULE.name);
    assert_eq!(analytic["type_id"], 1);
    assert_eq!(analytic["type"], "Rule");
    assert_eq!(analytic["version"], "10");
    assert_eq!(analytic["category"], "Anomaly");
    let attack = &info["attacks"][0];
    assert_eq!(attack["technique"]["uid"], "T1204");
    assert_eq!(attack["technique"]["name"], "User Execution");
    assert_eq!(attack["tactic"]["uid"], "TA0002");
    assert_eq!(attack["tactic"]["name"], "Execution");
    assert_eq!(info["attacks"].as_array().unwrap().len(), 1);

    assert_eq!(resource(&v, "kubernetes_cluster")["name"], "kind");
    assert_eq!(
        resource(&v, "kubernetes_node")["name"],
        "kind-control-plane"
    );
    assert_eq!(
        v["resources"].as_array().unwrap().len(),
        2,
        "host is the node"
    );
    let evidence = &v["evidences"][0];
    assert_eq!(evidence["name"], "k8s.container.ready");
    assert_eq!(
        evidence["resources"],
        serde_json::json!([{"type": "container_image", "name": "registry.k8s.io/etcd"}])
    );

    let unmapped = &v["unmapped"];
    assert_eq!(unmapped["mode"], "strict");
    assert_eq!(unmapped["late"], false);
    assert_eq!(
        unmapped["rule"]["mitre_attack"],
        serde_json::json!(["T1204"])
    );
    assert_eq!(unmapped["search_name"], SEED_RULE.search_name);
    for absent in [
        "scope",
        "host.name",
        "previous_seen",
        "finding_id",
        "count",
        "suppressed",
    ] {
        assert!(unmapped.get(absent).is_none(), "{absent} in {unmapped}");
    }
    assert_no_nulls(&v);
}

#[test]
fn a_default_finding_carries_its_evidence_triage_and_incident() {
    let (f, opened, _) = api_incident();
    let t = f.triage.as_ref().unwrap();
    let incident_id = t.incident_id.clone().unwrap();
    assert_eq!(incident_id, opened.incident_id);
    let v = ocsf::finding(&f);
    assert_eq!(v["type_uid"], 200401);
    assert_eq!(v["time"], ms(NOW));
    assert_eq!(v["risk_score"], 90, "20 + fleet 30 + look-alike 40");
    assert_eq!(v["severity_id"], 4, "a score of 80 or more is High");
    assert_eq!(v["metadata"]["correlation_uid"], incident_id);
    let info = &v["finding_info"];
    assert_eq!(info["uid"], f.finding_id);
    assert_eq!(
        info["title"],
        "New image ghcr.io/acme/api, never seen in the fleet, on node node-7 in prod-eu"
    );
    let desc = info["desc"].as_str().unwrap();
    assert!(desc.contains("ghcr.io/acme/apl"), "{desc}");
    assert!(
        desc.contains("previously seen at 2025-11-27T10:02:00Z"),
        "{desc}"
    );
    assert_eq!(info["attacks"][0]["technique"]["uid"], "T1204");

    let pod = resource(&v, "kubernetes_pod");
    assert_eq!(pod["name"], "api-7d9f8b6c5d-x2k4q");
    assert_eq!(pod["uid"], "0b6f5d0e-3c1a-4b7e-9d2f-6a8c1e4b2d70");
    assert_eq!(pod["namespace"], "payments");
    let workload = resource(&v, "kubernetes_deployment");
    assert_eq!(workload["name"], "api");
    assert_eq!(workload["data"]["derived"], false);
    assert_eq!(resource(&v, "kubernetes_node")["name"], "node-7");
    assert_eq!(resource(&v, "kubernetes_cluster")["name"], "prod-eu");

    let evidence = &v["evidences"][0]["resources"];
    assert_eq!(
        evidence[0],
        serde_json::json!({"type": "container", "name": "api", "uid": "containerd://6f1e2d3c4b5a", "namespace": "payments"})
    );
    let image = &evidence[1];
    assert_eq!(image["type"], "container_image");
    assert_eq!(image["name"], "ghcr.io/acme/api");
    assert_eq!(image["version"], "1.4.2");
    assert_eq!(image["uid"], DIGEST);
    assert_eq!(image["data"]["registry"], "ghcr.io");
    assert_eq!(image["data"]["repository"], "acme/api");
    assert_eq!(
        image["data"]["raw"],
        format!("ghcr.io/acme/api:1.4.2@{DIGEST}")
    );

    let unmapped = &v["unmapped"];
    assert_eq!(unmapped["mode"], "default");
    assert_eq!(unmapped["scope"], "fleet");
    assert_eq!(unmapped["registry_new"], false);
    assert_eq!(unmapped["look_alike"], "ghcr.io/acme/apl");
    assert_eq!(unmapped["incident_id"], incident_id);
    assert_eq!(unmapped["previous_seen"], "2025-11-27T10:02:00Z");
    assert_eq!(unmapped["host.name"], "otel-collector-0");
    assert_eq!(unmapped["k8s.pod.name"], "api-7d9f8b6c5d-x2k4q");
    assert_eq!(unmapped["k8s.cluster.name"], "prod-eu");
    assert_eq!(unmapped["workload"]["kind"], "Deployment");
    assert_eq!(unmapped["image"]["digest"], DIGEST);
    assert_no_nulls(&v);
}

#[test]
fn a_suppressed_finding_is_suppressed_and_has_no_incident() {
    let f = suppressed_finding();
    let v = ocsf::finding(&f);
    assert_eq!(v["status_id"], 3);
    assert_eq!(v["status"], "Suppressed");
    assert_eq!(
        v["status_detail"],
        "suppressed by rule debug-busybox: busybox debug pods, started by hand during incidents"
    );
    assert_eq!(v["unmapped"]["suppressed"]["rule"], "debug-busybox");
    assert_eq!(v["severity_id"], 2, "node scope, 10: Low");
    assert_eq!(
        v["finding_info"]["title"],
        "Image docker.io/library/busybox new to node node-3 in prod-eu"
    );
    assert_eq!(resource(&v, "kubernetes_pod")["namespace"], "debug-jane");
    // `debug-shell` names no workload, and none is invented.
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["type"] != "kubernetes_workload"));
    assert!(v["metadata"].get("correlation_uid").is_none());
    assert!(v["unmapped"].get("incident_id").is_none());
    assert!(v["unmapped"].get("k8s.pod.uid").is_none());
    assert_no_nulls(&v);
}

#[test]
fn an_incident_opens_and_closes_under_one_uid() {
    let (f, opened, closed) = api_incident();
    assert_eq!(opened.state, IncidentState::Open);
    assert_eq!(closed.state, IncidentState::Closed);
    let open = ocsf::incident(&opened);
    let close = ocsf::incident(&closed);

    assert_eq!(open["activity_id"], 1);
    assert_eq!(open["type_uid"], 200401);
    assert_eq!(close["activity_id"], 3);
    assert_eq!(close["activity_name"], "Close");
    assert_eq!(close["type_uid"], 200403);
    for v in [&open, &close] {
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["finding_info"]["uid"], opened.incident_id);
        assert_eq!(v["finding_info"]["title"], opened.title);
        assert_eq!(v["severity_id"], 4, "a fleet-new image incident is high");
        assert_eq!(v["status_id"], 1, "closing is not a review");
        assert_eq!(v["count"], 1);
        assert_eq!(v["risk_score"], 90);
        assert_eq!(v["start_time"], ms(T));
        assert_eq!(v["metadata"]["correlation_uid"], opened.incident_id);
        assert_eq!(v["finding_info"]["related_events"][0]["uid"], f.finding_id);
        assert_eq!(v["finding_info"]["related_events"][0]["type_uid"], 200401);
        assert_eq!(v["finding_info"]["analytic"]["uid"], SEED_RULE.id);
        assert_eq!(v["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0002");
        assert_eq!(
            v["finding_info"]["types"],
            serde_json::json!(["previously_unseen_container_image", "incident/image"])
        );
        assert_eq!(resource(v, "kubernetes_node")["name"], "node-7");
        assert_eq!(resource(v, "kubernetes_namespace")["name"], "payments");
        assert_eq!(resource(v, "kubernetes_deployment")["name"], "api");
        assert_eq!(
            v["evidences"][0]["resources"][0]["name"],
            "ghcr.io/acme/api"
        );
        assert_eq!(v["unmapped"]["kind"], "image");
        assert_eq!(v["unmapped"]["scope"], "fleet");
        assert!(
            v["unmapped"].get("cluster").is_none(),
            "fleet-wide: no cluster"
        );
        assert_no_nulls(v);
    }
    assert_eq!(open["time"], ms(NOW));
    assert_eq!(
        open["metadata"]["uid"],
        format!("{}:open", opened.incident_id)
    );
    assert!(open.get("status_detail").is_none());
    assert!(open["finding_info"].get("modified_time").is_none());
    let closed_at = T + 15 * 60;
    assert_eq!(closed.closed_at.as_deref(), Some("2026-01-06T10:17:00Z"));
    assert_eq!(close["time"], ms(closed_at));
    assert_eq!(close["finding_info"]["modified_time"], ms(closed_at));
    assert_eq!(
        close["metadata"]["uid"],
        format!("{}:closed", opened.incident_id)
    );
    assert_eq!(close["unmapped"]["state"], "closed");
}

#[test]
fn records_dispatch_to_their_kind() {
    let (f, opened, _) = api_incident();
    assert_eq!(
        ocsf::record(&Record::Finding(Box::new(f.clone()))),
        ocsf::finding(&f)
    );
    assert_eq!(
        ocsf::record(&Record::Incident(Box::new(opened.clone()))),
        ocsf::incident(&opened)
    );
}

#[test]
fn severity_follows_the_risk_score_and_never_undercuts_the_rule() {
    assert_eq!(ocsf::finding_severity(1, "low"), 2);
    assert_eq!(ocsf::finding_severity(20, "low"), 2);
    assert_eq!(ocsf::finding_severity(49, "low"), 2);
    assert_eq!(ocsf::finding_severity(50, "low"), 3);
    assert_eq!(ocsf::finding_severity(79, "low"), 3);
    assert_eq!(ocsf::finding_severity(80, "low"), 4);
    assert_eq!(ocsf::finding_severity(100, "low"), 4);
    assert_eq!(ocsf::finding_severity(10, "High"), 4);
    assert_eq!(ocsf::finding_severity(10, "critical"), 5);
    assert_eq!(ocsf::finding_severity(10, "whatever"), 2);
    assert_eq!(ocsf::incident_severity("low", 100), 2);
    assert_eq!(ocsf::incident_severity("medium", 0), 3);
    assert_eq!(ocsf::incident_severity("high", 0), 4);
    assert_eq!(ocsf::incident_severity("unheard-of", 90), 4);
}

// --- Validation against py-ocsf-models ---------------------------------------------

const VALIDATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/ocsf_validate.py"
);

/// Fails (never skips) when the validator cannot run here.
fn require_validator() {
    let hint = "the OCSF validation test needs python3 with py-ocsf-models 0.10.0 (pydantic v2). \
                Run the CI entry point `.ci/run`, which installs the tests' dependencies, or \
                `python3 -m pip install 'py-ocsf-models==0.10.0'`";
    let probe = Command::new("python3")
        .args([
            "-c",
            "import pydantic, py_ocsf_models.events.findings.detection_finding",
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 could not be run ({e}): {hint}"));
    assert!(
        probe.status.success(),
        "py-ocsf-models is not importable ({}): {hint}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

/// Writes `lines` to a file of its own and runs the validator on it.
fn validate(name: &str, lines: &[String]) -> Output {
    require_validator();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ocsf-{name}.jsonl"));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    Command::new("python3")
        .arg(VALIDATOR)
        .arg(&path)
        .output()
        .expect("python3 runs")
}

#[test]
fn every_kind_of_record_validates_as_a_detection_finding() {
    let (member, opened, closed) = api_incident();
    let records = [
        ocsf::finding(&strict_finding()),
        ocsf::finding(&member),
        ocsf::finding(&busybox_finding()),
        ocsf::finding(&suppressed_finding()),
        ocsf::record(&Record::Incident(Box::new(opened))),
        ocsf::record(&Record::Incident(Box::new(closed))),
    ];
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    let out = validate("valid", &lines);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-ocsf-models rejects the events:\n{stderr}{stdout}"
    );
    assert_eq!(stdout.trim(), format!("{} lines valid", lines.len()));
}

#[test]
fn the_validator_rejects_what_the_model_would_let_through() {
    let good = ocsf::finding(&strict_finding());
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        v.to_string()
    };
    let lines = [
        // 1: a misspelt top-level member (pydantic alone ignores unknown keys).
        with(&|v| {
            let s = v.as_object_mut().unwrap().remove("risk_score").unwrap();
            v["risk_scor"] = s;
        }),
        // 2: a misspelt nested member.
        with(&|v| v["finding_info"]["analytic"]["verison"] = "10".into()),
        // 3: a null.
        with(&|v| v["finding_info"]["desc"] = Value::Null),
        // 4: another class.
        with(&|v| v["class_uid"] = 2003.into()),
        // 5: a number as a string (lax pydantic would coerce it).
        with(&|v| v["time"] = v["time"].to_string().into()),
        // 6: a required member missing.
        with(&|v| {
            v["finding_info"].as_object_mut().unwrap().remove("title");
        }),
        // 7: type_uid not class_uid * 100 + activity_id.
        with(&|v| v["type_uid"] = 200403.into()),
        // 8: valid.
        good.to_string(),
    ];
    let out = validate("invalid", &lines);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "line 1: $.risk_scor is not a member of the model",
        "line 2: $.finding_info.analytic.verison is not a member of the model",
        "line 3: $.finding_info.desc is null",
        "line 4: $.class_uid is 2003, not 2004",
        "line 5: $.time: Input should be a valid integer",
        "line 6: $.finding_info.title: Field required",
        "line 7: $.type_uid is 200403",
        "7 of 8 lines invalid",
    ] {
        assert!(stderr.contains(expected), "`{expected}` not in:\n{stderr}");
    }
    assert!(!stderr.contains("line 8"), "{stderr}");
}
