//! A [`Detection`] becomes a [`Finding`]: the schema of `docs/findings.md`.
//!
//! The id is a UUIDv5 in the rule's own UUID as namespace, over the key and the
//! episode's first point. The same rule, key and episode give the same id on every
//! replica and every run, in `scan` and in `serve`, so downstream tools de-duplicate.
//!
//! In default mode a finding also carries its evidence and triage ([`Triage`]: workload
//! context, image identity, novelty scope, risk, incident), decided in one place
//! ([`Decider`]) that `scan`, `backtest` and every store backend call. Strict mode
//! output is the seed's, without any of it.

mod decide;
pub mod incident;
pub mod ocsf;
pub mod risk;
pub mod suppress;
mod table;
pub mod triage;
pub mod workload;

use serde::{Deserialize, Serialize};
use unseen_detect::Detection;
use unseen_model::{ctx, format_rfc3339, OwnedContext, Rule, UnixSecs};
use unseen_normalize::{ImageRef, Key};
use uuid::Uuid;

pub use decide::{Decider, Record, Sighting, TriageState};
pub use incident::{Incident, IncidentKind, IncidentState, Incidents};
pub use risk::RiskLedger;
pub use suppress::{Suppressed, Suppressions};
pub use table::render_table;
pub use triage::{Index, Novelty, RiskModifiers, Scope, TriageSettings};
pub use workload::Workload;

/// The finding schema version; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One finding, one JSON line. Field order is the documented order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub schema_version: u32,
    pub finding_id: String,
    pub rule: RuleRef,
    /// Key mode that produced it: `default` or `strict`.
    pub mode: String,
    /// When unseen reported it: the scan's `--at`, or the server's clock.
    pub detected_at: String,
    pub host: String,
    #[serde(rename = "k8s.cluster.name")]
    pub cluster: String,
    #[serde(rename = "k8s.node.name")]
    pub node: String,
    #[serde(rename = "container.image.name")]
    pub image: String,
    /// A `host.name` carried by the points, kept as evidence (null when none).
    #[serde(rename = "host.name")]
    pub host_name: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub previous_seen: Option<String>,
    pub late: bool,
    pub risk_object: String,
    pub risk_object_type: String,
    pub risk_score: u32,
    pub risk_message: String,
    pub search_name: String,
    /// Evidence and triage, default mode only (absent from strict-mode output).
    #[serde(flatten)]
    pub triage: Option<Triage>,
    /// Set when a suppression rule matched (`docs/triage.md`): the finding is recorded
    /// but opens no incident and reaches no alerting sink. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppressed>,
}

/// What a default-mode finding adds to the seed's fields. Absent attributes are null,
/// never invented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    #[serde(rename = "k8s.namespace.name")]
    pub namespace: Option<String>,
    #[serde(rename = "k8s.pod.name")]
    pub pod_name: Option<String>,
    #[serde(rename = "k8s.pod.uid")]
    pub pod_uid: Option<String>,
    #[serde(rename = "k8s.container.name")]
    pub container_name: Option<String>,
    #[serde(rename = "container.id")]
    pub container_id: Option<String>,
    #[serde(rename = "container.image.tag")]
    pub image_tag: Option<String>,
    pub workload: Option<Workload>,
    pub image: ImageRef,
    pub scope: Scope,
    pub registry_new: bool,
    pub look_alike: Option<String>,
    /// The incident this finding belongs to (null only where no incident is kept).
    pub incident_id: Option<String>,
}

impl Triage {
    /// The evidence of an episode's opening point, with its novelty.
    pub fn new(
        key: &Key,
        context: &OwnedContext,
        image_raw: Option<&str>,
        novelty: &Novelty,
    ) -> Self {
        let own = |slot| context.get(slot).map(str::to_string);
        let raw = image_raw.unwrap_or(&key.image);
        Triage {
            namespace: own(ctx::NAMESPACE),
            pod_name: own(ctx::POD_NAME),
            pod_uid: own(ctx::POD_UID),
            container_name: own(ctx::CONTAINER_NAME),
            container_id: own(ctx::CONTAINER_ID),
            image_tag: own(ctx::IMAGE_TAG),
            workload: workload::workload_of(context),
            image: unseen_normalize::image::parse(raw, context.get(ctx::IMAGE_TAG)),
            scope: novelty.scope,
            registry_new: novelty.registry_new,
            look_alike: novelty.look_alike.clone(),
            incident_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
    pub version: u32,
    pub severity: String,
    #[serde(rename = "type")]
    pub rule_type: String,
    pub mitre_attack: Vec<String>,
    pub analytic_story: Vec<String>,
}

impl RuleRef {
    pub fn of(rule: &Rule) -> Self {
        RuleRef {
            id: rule.id.into(),
            name: rule.name.into(),
            version: rule.version,
            severity: rule.severity.into(),
            rule_type: rule.rule_type.into(),
            mitre_attack: rule.mitre_attack.iter().map(|s| s.to_string()).collect(),
            analytic_story: rule.analytic_story.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The deterministic id of an episode.
///
/// Each part is length-prefixed so that no two different keys can encode the same
/// bytes (`"a|b"` vs `"a","|b"`).
pub fn finding_id(rule: &Rule, key: &Key, first_seen: UnixSecs) -> String {
    let namespace = Uuid::parse_str(rule.id).unwrap_or(Uuid::NAMESPACE_OID);
    let mut name = Vec::with_capacity(
        key.host.len() + key.cluster.len() + key.node.len() + key.image.len() + 64,
    );
    for part in [&key.host, &key.cluster, &key.node, &key.image] {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    name.extend_from_slice(&first_seen.to_be_bytes());
    Uuid::new_v5(&namespace, &name).to_string()
}

/// Builds the finding for a detection.
pub fn build(rule: &Rule, mode: &str, detection: &Detection, detected_at: UnixSecs) -> Finding {
    build_parts(
        rule,
        mode,
        &detection.key,
        Episode {
            first_seen: detection.first_seen,
            last_seen: detection.last_seen,
            count: detection.count,
            previous_seen: detection.previous_seen,
            late: detection.late,
        },
        detection.host_name.as_deref(),
        detected_at,
    )
}

/// What a finding says of its episode, beside the key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Episode {
    pub first_seen: UnixSecs,
    pub last_seen: UnixSecs,
    pub count: u64,
    pub previous_seen: Option<UnixSecs>,
    pub late: bool,
}

/// [`build`] from borrowed parts: the serve path builds findings from a sighting without
/// copying it into a `Detection` first.
pub(crate) fn build_parts(
    rule: &Rule,
    mode: &str,
    key: &Key,
    episode: Episode,
    host_name: Option<&str>,
    detected_at: UnixSecs,
) -> Finding {
    Finding {
        schema_version: SCHEMA_VERSION,
        finding_id: finding_id(rule, key, episode.first_seen),
        rule: RuleRef::of(rule),
        mode: mode.to_string(),
        detected_at: format_rfc3339(detected_at),
        host: key.host.clone(),
        cluster: key.cluster.clone(),
        node: key.node.clone(),
        image: key.image.clone(),
        host_name: host_name.map(str::to_string),
        first_seen: format_rfc3339(episode.first_seen),
        last_seen: format_rfc3339(episode.last_seen),
        count: episode.count,
        previous_seen: episode.previous_seen.map(format_rfc3339),
        late: episode.late,
        risk_object: key.host.clone(),
        risk_object_type: rule.risk.object_type.to_string(),
        risk_score: rule.risk.score,
        risk_message: rule.risk_message(&key.host),
        search_name: rule.search_name.to_string(),
        triage: None,
        suppressed: None,
    }
}

impl Finding {
    /// Records the incident the finding belongs to.
    pub fn set_incident(&mut self, id: &str) {
        if let Some(t) = &mut self.triage {
            t.incident_id = Some(id.to_string());
        }
    }

    /// One line of JSON, no trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unseen_model::SEED_RULE;

    fn key() -> Key {
        Key {
            host: "n1".into(),
            cluster: "c".into(),
            node: "n1".into(),
            image: "docker.io/library/nginx".into(),
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = finding_id(&SEED_RULE, &key(), 100);
        assert_eq!(a, finding_id(&SEED_RULE, &key(), 100));
        assert_ne!(a, finding_id(&SEED_RULE, &key(), 101));
        let mut other = key();
        other.image.push('x');
        assert_ne!(a, finding_id(&SEED_RULE, &other, 100));
        // Moving a byte between parts changes the id.
        let shifted = Key {
            host: "n".into(),
            cluster: "1c".into(),
            ..key()
        };
        assert_ne!(a, finding_id(&SEED_RULE, &shifted, 100));
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }

    #[test]
    fn finding_carries_the_rule_and_risk() {
        let d = Detection {
            key: key(),
            first_seen: 1_686_772_769,
            last_seen: 1_686_772_779,
            count: 2,
            previous_seen: None,
            late: false,
            host_name: None,
            context: Default::default(),
            image_raw: None,
        };
        let f = build(&SEED_RULE, "default", &d, 1_686_772_800);
        let v: serde_json::Value = serde_json::from_str(&f.to_json_line()).unwrap();
        assert_eq!(v["rule"]["id"], "fea515a4-b1d8-4cd6-80d6-e0d71397b891");
        assert_eq!(v["rule"]["mitre_attack"][0], "T1204");
        assert_eq!(v["risk_score"], 20);
        assert_eq!(v["risk_object_type"], "system");
        assert_eq!(v["host"], "n1");
        assert_eq!(v["container.image.name"], "docker.io/library/nginx");
        assert_eq!(v["first_seen"], "2023-06-14T19:59:29Z");
        assert_eq!(v["previous_seen"], serde_json::Value::Null);
        assert_eq!(
            v["risk_message"],
            "Kubernetes Previously Unseen Container Image Name on host n1"
        );
        let back: Finding = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
    }
}
