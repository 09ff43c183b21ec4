//! Prometheus Alertmanager: one alert per incident, kept firing while the incident is
//! open and resolved when it closes.
//!
//! # The alerts
//!
//! `POST <alertmanager_url>/api/v2/alerts`, a JSON array of alerts. An incident's alert:
//!
//! - labels (what routes and de-duplicates it; all low-cardinality except the id):
//!   `alertname="UnseenContainerImage"`, `severity` (`high`, `medium`, `low`), `cluster`
//!   (absent for a fleet-wide incident), `namespace` (when the incident has exactly one),
//!   `scope` (`fleet`, `cluster`, `node`), `kind` (`image`, `new_node`, `digest`,
//!   `risk_threshold`) and `incident_id`;
//! - annotations: `summary` (the incident's title), `description`, `image`, `nodes`,
//!   `namespaces`, `workloads`, `findings`, `risk_score`, `look_alike`, and `link` when
//!   `link` is configured (`<link>/incidents/<incident_id>`, also the `generatorURL`);
//! - `startsAt` when it opened; `endsAt` [`ENDS_AFTER_RESENDS`] re-sends ahead.
//!
//! # Firing and resolving
//!
//! Alertmanager expects clients to re-send firing alerts: one not refreshed before its
//! `endsAt` resolves by itself. So the sink re-posts every open incident (from the
//! store's triage state, so a restart loses none) every `resend` interval, each time
//! with `endsAt` three intervals ahead; when an incident closes, its record in the
//! outbox is posted with `endsAt` = now, which resolves it. Re-sends and the outbox are
//! handled by the same task, the resolution always after any re-send of the same
//! incident, so a closed incident never fires again. If an incident's labels change
//! while it is open (a second namespace joins: the `namespace` label goes), the alert
//! under its old labels is resolved at once.
//!
//! In strict mode (no incidents) each finding is an alert of its own (labels
//! `alertname`, `severity`, `cluster`, `finding_id`), posted once with `endsAt` one
//! hour after it was sent.
//!
//! At least once, like the webhook: a batch is acknowledged after a 2xx; Alertmanager
//! de-duplicates by labels, so a repeat is harmless.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Map, Value};
use unseen_findings::{Incident, IncidentState, Record};

use crate::http::{body_preview, Endpoint, HttpOptions};
use crate::{Failure, SinkError};

/// Records per request.
pub const ALERTMANAGER_BATCH: usize = 100;

/// `endsAt` of a firing alert is this many re-send intervals ahead, so one or two lost
/// re-sends do not resolve it.
pub const ENDS_AFTER_RESENDS: u32 = 3;

/// How long a strict-mode finding's alert fires.
pub const STRICT_ALERT_FOR: Duration = Duration::from_secs(3600);

/// The `alertname` of every alert.
pub const ALERTNAME: &str = "UnseenContainerImage";

/// Nodes listed in the `nodes` annotation at most.
const NODES_SHOWN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// How often firing alerts are re-sent (Alertmanager's clients send every 30 s to
    /// a few minutes).
    pub resend: Duration,
    /// Base URL of the incident links (`<link>/incidents/<id>`); no link when `None`.
    pub link: Option<String>,
    pub http: HttpOptions,
}

impl AlertmanagerConfig {
    pub fn new(url: impl Into<String>) -> Self {
        AlertmanagerConfig {
            url: url.into(),
            resend: Duration::from_secs(60),
            link: None,
            http: HttpOptions::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct AlertmanagerSink {
    endpoint: Endpoint,
    config: AlertmanagerConfig,
    /// The labels last posted for each firing incident.
    firing: BTreeMap<String, Map<String, Value>>,
    last_resend: Option<Instant>,
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    unseen_model::format_rfc3339(secs)
}

impl AlertmanagerSink {
    pub(crate) fn new(config: &AlertmanagerConfig) -> Result<Self, SinkError> {
        let endpoint = Endpoint::new("alertmanager", &config.url, config.http.timeout)?
            .with_path("/api/v2/alerts");
        if config.resend.is_zero() {
            return Err(SinkError::Http {
                sink: "alertmanager",
                url: endpoint.shown.clone(),
                message: "the re-send interval must be longer than 0s".into(),
            });
        }
        Ok(AlertmanagerSink {
            endpoint,
            config: config.clone(),
            firing: BTreeMap::new(),
            last_resend: None,
        })
    }

    /// Whether the open incidents are due to be re-sent.
    pub(crate) fn resend_due(&self) -> bool {
        self.last_resend
            .is_none_or(|at| at.elapsed() >= self.config.resend)
    }

    /// Re-posts every open incident as firing.
    pub(crate) async fn resend(&mut self, open: &[Incident]) -> Result<(), Failure> {
        let now = SystemTime::now();
        let mut alerts = Vec::new();
        for incident in open {
            self.firing_alert(incident, now, &mut alerts);
        }
        if !alerts.is_empty() {
            self.post_alerts(&alerts).await?;
        }
        self.last_resend = Some(Instant::now());
        Ok(())
    }

    /// The firing alert of an open incident, after the resolution of its alert under
    /// labels it no longer has.
    fn firing_alert(&mut self, incident: &Incident, now: SystemTime, out: &mut Vec<Value>) {
        let labels = labels(incident);
        if let Some(before) = self.firing.get(&incident.incident_id) {
            if before != &labels {
                out.push(self.alert(incident, before.clone(), now, true));
            }
        }
        out.push(self.alert(incident, labels.clone(), now, false));
        self.firing.insert(incident.incident_id.clone(), labels);
    }

    fn alert(
        &self,
        incident: &Incident,
        labels: Map<String, Value>,
        now: SystemTime,
        resolved: bool,
    ) -> Value {
        let ends = if resolved {
            now
        } else {
            now + self.config.resend * ENDS_AFTER_RESENDS
        };
        let mut annotations = Map::new();
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                annotations.insert(k.into(), Value::String(v));
            }
        };
        put("summary", incident.title.clone());
        put("description", describe(incident));
        put("image", join(incident.images.iter(), usize::MAX));
        put("nodes", join(incident.nodes.iter(), NODES_SHOWN));
        put("namespaces", join(incident.namespaces.iter(), usize::MAX));
        put("workloads", join(incident.workloads.iter(), usize::MAX));
        put("findings", incident.finding_count.to_string());
        put("risk_score", incident.risk_score.to_string());
        put(
            "look_alike",
            incident.look_alike.clone().unwrap_or_default(),
        );
        let link = self.config.link.as_ref().map(|base| {
            format!(
                "{}/incidents/{}",
                base.trim_end_matches('/'),
                incident.incident_id
            )
        });
        if let Some(link) = &link {
            put("link", link.clone());
        }
        let mut alert = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": incident.opened_at,
            "endsAt": rfc3339(ends),
        });
        if let (Some(link), Value::Object(map)) = (link, &mut alert) {
            map.insert("generatorURL".into(), Value::String(link));
        }
        alert
    }

    async fn post_alerts(&self, alerts: &[Value]) -> Result<(), Failure> {
        let body = serde_json::to_vec(alerts).map_err(|e| {
            self.endpoint
                .transient(format!("cannot encode alerts: {e}"))
        })?;
        let request = self
            .endpoint
            .client
            .post(self.endpoint.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.endpoint.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let what = format!("answered {status}{}", body_preview(response).await);
        Err(self.endpoint.refused(
            status,
            &headers,
            what,
            "Alertmanager refused the alerts: check alertmanager_url (its base URL, e.g. http://alertmanager:9093)",
        ))
    }
}

impl crate::Post for AlertmanagerSink {
    fn batch_limit(&self) -> usize {
        ALERTMANAGER_BATCH
    }

    /// Posts a batch of the outbox: opened incidents fire, closed ones resolve. Only
    /// the last state of an incident in the batch is sent.
    async fn post(&mut self, batch: &[(u64, Record)]) -> Result<(), Failure> {
        let now = SystemTime::now();
        let mut last: BTreeMap<&str, &Incident> = BTreeMap::new();
        let mut alerts = Vec::new();
        for (_, record) in batch {
            match record {
                Record::Incident(i) => {
                    last.insert(&i.incident_id, i);
                }
                Record::Finding(f) if crate::webhook::alerts(record) => {
                    let mut labels = Map::new();
                    labels.insert("alertname".into(), ALERTNAME.into());
                    labels.insert("severity".into(), f.rule.severity.clone().into());
                    labels.insert("cluster".into(), f.cluster.clone().into());
                    labels.insert("finding_id".into(), f.finding_id.clone().into());
                    alerts.push(json!({
                        "labels": labels,
                        "annotations": {
                            "summary": f.risk_message,
                            "image": f.image,
                            "nodes": f.node,
                        },
                        "startsAt": f.first_seen,
                        "endsAt": rfc3339(now + STRICT_ALERT_FOR),
                    }));
                }
                Record::Finding(_) => {}
            }
        }
        let mut resolved = Vec::new();
        for incident in last.values() {
            match incident.state {
                IncidentState::Open => self.firing_alert(incident, now, &mut alerts),
                IncidentState::Closed => {
                    let labels = self
                        .firing
                        .get(&incident.incident_id)
                        .cloned()
                        .unwrap_or_else(|| labels(incident));
                    if labels != self::labels(incident) {
                        alerts.push(self.alert(incident, self::labels(incident), now, true));
                    }
                    alerts.push(self.alert(incident, labels, now, true));
                    resolved.push(incident.incident_id.clone());
                }
            }
        }
        if !alerts.is_empty() {
            self.post_alerts(&alerts).await?;
        }
        for id in resolved {
            self.firing.remove(&id);
        }
        Ok(())
    }
}

/// The labels of an incident's alert (see the module docs).
pub fn labels(incident: &Incident) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert("alertname".into(), ALERTNAME.into());
    labels.insert("severity".into(), incident.severity.clone().into());
    if let Some(cluster) = &incident.cluster {
        labels.insert("cluster".into(), cluster.clone().into());
    }
    if incident.namespaces.len() == 1 {
        if let Some(ns) = incident.namespaces.iter().next() {
            labels.insert("namespace".into(), ns.clone().into());
        }
    }
    labels.insert("scope".into(), incident.scope.as_str().into());
    labels.insert("kind".into(), incident.kind.as_str().into());
    labels.insert("incident_id".into(), incident.incident_id.clone().into());
    labels
}

fn join<'a>(items: impl ExactSizeIterator<Item = &'a String>, at_most: usize) -> String {
    let total = items.len();
    let mut out: Vec<&str> = items.take(at_most).map(String::as_str).collect();
    let more = total - out.len();
    let tail = format!("… and {more} more");
    if more > 0 {
        out.push(&tail);
    }
    out.join(", ")
}

fn describe(i: &Incident) -> String {
    let mut lines = vec![i.title.clone()];
    if let Some(image) = &i.image {
        lines.push(format!("Image: {image}"));
    }
    if let Some(object) = &i.risk_object {
        lines.push(format!(
            "Risk object: host {object} (score {})",
            i.risk_score
        ));
    }
    lines.push(format!(
        "{} finding(s) on {} node(s), opened {}, window ends {}.",
        i.finding_count,
        i.nodes.len(),
        i.opened_at,
        i.closes_at
    ));
    lines.join("\n")
}
