//! Incidents instead of storms: what alerting sinks receive.
//!
//! Every episode is a finding. Findings are grouped into incidents, each sent when it
//! opens (at its first member: real time is not traded away) and once more, under the
//! same id, when it closes, with its final members. The model (`docs/triage.md`):
//!
//! 1. a `fleet`-scope episode opens an `image` incident for its image;
//! 2. an episode whose image has an open `image` incident (fleet-wide, or for its
//!    cluster) joins it while it is within the rollout window of its first member: a new
//!    image rolled out to 50 nodes is one incident;
//! 3. a `cluster`-scope episode otherwise opens an `image` incident for (cluster, image);
//! 4. an episode on a node that is itself new (its first sighting) opens a `new_node`
//!    incident, which the node's further episodes join within the rollout window;
//! 5. every other (`node`-scope) episode joins the `digest` incident of its cluster and
//!    digest window (UTC-aligned; 24 h by default), opened by the window's first one.
//!
//! Beside these, a risk object (the `host`) whose findings' scores add up past the risk
//! threshold within the risk window raises a `risk_threshold` incident ([`crate::risk`]),
//! which lists the findings that crossed it and takes the object's further findings
//! until its window ends.
//!
//! An incident closes when the stream's newest point passes the end of its window.
//! Ids are UUIDv5 over the incident's group and its opening time, so the same history
//! gives the same incidents in `scan`, `backtest` and `serve`, across restarts.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use serde::{Deserialize, Serialize};
use unseen_model::{format_rfc3339, parse_time, Rule, UnixSecs};
use uuid::Uuid;

use crate::risk::{Crossing, RiskEvent};
use crate::triage::{Novelty, Scope, TriageSettings};
use crate::{Finding, SCHEMA_VERSION};

/// How an incident groups its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// One new image (fleet- or cluster-wide) and its rollout.
    Image,
    /// A node seen for the first time, and the images it started with.
    NewNode,
    /// Known images on other nodes, gathered per cluster and window.
    Digest,
    /// A risk object's scores summed past the threshold within the risk window.
    RiskThreshold,
    /// Operational: the state is at its key cap, so points of new keys are refused and
    /// new images go unreported (rule `unseen.capacity`; no members).
    Capacity,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Image => "image",
            IncidentKind::NewNode => "new_node",
            IncidentKind::Digest => "digest",
            IncidentKind::RiskThreshold => "risk_threshold",
            IncidentKind::Capacity => "capacity",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Closed,
}

/// One incident, as sinks receive it (`docs/triage.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub schema_version: u32,
    pub incident_id: String,
    pub kind: IncidentKind,
    pub state: IncidentState,
    /// The scope of its first member (`node` for digests and new nodes of known images).
    pub scope: Scope,
    pub severity: String,
    /// Human summary, for a notification's title.
    pub title: String,
    /// Null for a fleet-wide image incident.
    pub cluster: Option<String>,
    /// The image, for `image` incidents.
    pub image: Option<String>,
    /// The node, for `new_node` incidents.
    pub node: Option<String>,
    /// The risk object (a `host`), for `risk_threshold` incidents; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_object: Option<String>,
    /// The first member's first point.
    pub opened_at: String,
    /// When its window ends: members join before, it closes after.
    pub closes_at: String,
    pub closed_at: Option<String>,
    /// When unseen opened it (the server clock, or a scan's `--at`).
    pub detected_at: String,
    /// The highest member risk score; for `risk_threshold` incidents, the sum of the
    /// members' scores.
    pub risk_score: u32,
    pub look_alike: Option<String>,
    pub rule_id: String,
    pub finding_count: u64,
    /// Member `finding_id`s, in the order they joined.
    pub findings: Vec<String>,
    pub nodes: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    /// `Kind/name` (or `name` when the kind is not known) of the members' workloads.
    pub workloads: BTreeSet<String>,
    pub images: BTreeSet<String>,
}

impl Incident {
    /// An open incident with no members yet.
    fn blank(
        kind: IncidentKind,
        scope: Scope,
        severity: &str,
        incident_id: String,
        rule: &Rule,
        (opened, closes): (UnixSecs, UnixSecs),
        detected_at: UnixSecs,
    ) -> Incident {
        Incident {
            schema_version: SCHEMA_VERSION,
            incident_id,
            kind,
            state: IncidentState::Open,
            scope,
            severity: severity.to_string(),
            title: String::new(),
            cluster: None,
            image: None,
            node: None,
            risk_object: None,
            opened_at: format_rfc3339(opened),
            closes_at: format_rfc3339(closes),
            closed_at: None,
            detected_at: format_rfc3339(detected_at),
            risk_score: 0,
            look_alike: None,
            rule_id: rule.id.to_string(),
            finding_count: 0,
            findings: Vec::new(),
            nodes: BTreeSet::new(),
            namespaces: BTreeSet::new(),
            workloads: BTreeSet::new(),
            images: BTreeSet::new(),
        }
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The operational notice that the state is at its key cap: raised by the server
    /// (at most once an hour while it lasts), not by the rule. `refused`: points of new
    /// keys refused when it was raised. Its id is one per hour, so a notice re-sent
    /// within the hour is the same notice.
    pub fn capacity(keys: u64, max_keys: u64, refused: u64, now: UnixSecs) -> Incident {
        let hour = now - now.rem_euclid(3_600);
        let rule = Rule {
            id: CAPACITY_RULE_ID,
            ..unseen_model::SEED_RULE
        };
        let group = group(IncidentKind::Capacity, "", "");
        let id = incident_id(&rule, &group, hour);
        let mut incident = Incident::blank(
            IncidentKind::Capacity,
            Scope::Fleet,
            "high",
            id,
            &rule,
            (now, now + 3_600),
            now,
        );
        incident.title = format!(
            "unseen is at its key cap ({keys} of limits.max_keys = {max_keys}): points of new keys are refused ({refused} in the last commit), so new images go unreported. Raise limits.max_keys, or find the sender creating keys (unseen_points_rejected_total{{reason=\"key_cap\"}})"
        );
        incident
    }

    fn add(&mut self, finding: &Finding) {
        self.finding_count += 1;
        self.findings.push(finding.finding_id.clone());
        self.nodes.insert(finding.node.clone());
        self.images.insert(finding.image.clone());
        self.risk_score = self.risk_score.max(finding.risk_score);
        if let Some(t) = &finding.triage {
            if let Some(ns) = &t.namespace {
                self.namespaces.insert(ns.clone());
            }
            if let Some(w) = &t.workload {
                self.workloads.insert(w.label());
            }
            if self.look_alike.is_none() {
                self.look_alike = t.look_alike.clone();
            }
        }
        self.title = self.render_title();
    }

    /// A member of a `risk_threshold` incident: its score adds up.
    fn add_risk(&mut self, event: &RiskEvent) {
        self.finding_count += 1;
        self.findings.push(event.finding_id.clone());
        self.nodes.insert(event.node.clone());
        self.images.insert(event.image.clone());
        self.risk_score = self.risk_score.saturating_add(event.score);
        self.scope = self.scope.max(event.scope);
        if let Some(ns) = &event.namespace {
            self.namespaces.insert(ns.clone());
        }
        if let Some(w) = &event.workload {
            self.workloads.insert(w.clone());
        }
        if self.finding_count == 1 {
            self.cluster = Some(event.cluster.clone());
        } else if self.cluster.as_deref() != Some(event.cluster.as_str()) {
            // Members from more than one cluster: the object spans them.
            self.cluster = None;
        }
        self.title = self.render_title();
    }

    fn render_title(&self) -> String {
        let nodes = match self.nodes.len() {
            1 => "1 node".to_string(),
            n => format!("{n} nodes"),
        };
        let cluster = self.cluster.as_deref().unwrap_or("the fleet");
        let image = self.image.as_deref().unwrap_or("");
        match (self.kind, self.scope) {
            (IncidentKind::Image, Scope::Fleet) => {
                format!("New image {image}, never seen in the fleet: {nodes}")
            }
            (IncidentKind::Image, _) => format!("Image {image} new to cluster {cluster}: {nodes}"),
            (IncidentKind::NewNode, _) => format!(
                "New node {} in {cluster}: {} images",
                self.node.as_deref().unwrap_or(""),
                self.images.len()
            ),
            (IncidentKind::Digest, _) => format!(
                "{} known images on new nodes in {cluster} ({nodes})",
                self.finding_count
            ),
            (IncidentKind::RiskThreshold, _) => format!(
                "Risk threshold exceeded for host {}: score {} from {} findings",
                self.risk_object.as_deref().unwrap_or(""),
                self.risk_score,
                self.finding_count
            ),
            (IncidentKind::Capacity, _) => self.title.clone(),
        }
    }
}

/// An open incident and its window, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    incident: Incident,
    opened: UnixSecs,
    closes: UnixSecs,
}

/// The open incidents, by group (kind, cluster, image / node / window).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incidents {
    /// Hashed, not ordered: every finding looks up one to three groups here. Whatever
    /// leaves in an order sorts first (`close_due`, `take_dirty`'s ordered set).
    open: HashMap<String, Open>,
    /// Groups changed (or closed) since the last [`Incidents::take_dirty`].
    dirty: BTreeSet<String>,
    /// Incidents closed out of turn (replaced by a new one of the same group, see
    /// [`Incidents::assign`]), handed out by the next [`Incidents::close_due`].
    closed_early: Vec<(UnixSecs, Incident)>,
    /// True: incidents only group (findings get their `incident_id`), and keep no
    /// members, nodes or title (a batch run, which hands out no incidents).
    skip_members: bool,
}

/// What [`Incidents::assign`] did with a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assigned {
    /// It opened this incident (to be sent now).
    Opened(Box<Incident>),
    /// It joined an open incident.
    Joined,
}

/// The rule id of the capacity notice.
pub const CAPACITY_RULE_ID: &str = "unseen.capacity";

fn group(kind: IncidentKind, cluster: &str, what: &str) -> String {
    // Not `format!`: this runs for every finding.
    let kind = kind.as_str();
    let mut g = String::with_capacity(kind.len() + cluster.len() + what.len() + 2);
    g.push_str(kind);
    g.push('\0');
    g.push_str(cluster);
    g.push('\0');
    g.push_str(what);
    g
}

fn incident_id(rule: &Rule, group: &str, opened: UnixSecs) -> String {
    let namespace = Uuid::parse_str(rule.id).unwrap_or(Uuid::NAMESPACE_OID);
    let mut name = b"incident\0".to_vec();
    name.extend_from_slice(group.as_bytes());
    name.extend_from_slice(&opened.to_be_bytes());
    Uuid::new_v5(&namespace, &name).to_string()
}

impl Incidents {
    /// Open incidents as persisted (a store loading its state). Incidents whose times do
    /// not parse are skipped: they were written by this code, so that cannot happen
    /// short of a corrupt store, which the store reports on its own.
    pub fn from_open(incidents: impl IntoIterator<Item = (String, Incident)>) -> Self {
        let open = incidents
            .into_iter()
            .filter_map(|(group, incident)| {
                let opened = parse_time(&incident.opened_at).ok()?;
                let closes = parse_time(&incident.closes_at).ok()?;
                Some((
                    group,
                    Open {
                        incident,
                        opened,
                        closes,
                    },
                ))
            })
            .collect();
        Incidents {
            open,
            ..Incidents::default()
        }
    }

    /// Incidents that only give findings their `incident_id`: no members are kept (see
    /// [`crate::TriageState::untracked`]).
    pub fn without_members() -> Self {
        Incidents {
            skip_members: true,
            ..Incidents::default()
        }
    }

    /// The open incidents, with their groups, in no particular order.
    pub fn open(&self) -> impl Iterator<Item = (&String, &Incident)> {
        self.open.iter().map(|(g, o)| (g, &o.incident))
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The groups changed since the last call, each with its incident (or `None` once
    /// closed), for a store to write in the same transaction.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Incident>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|g| {
                let incident = self.open.get(&g).map(|o| o.incident.clone());
                (g, incident)
            })
            .collect()
    }

    /// Whether an episode at `t` joins the open incident of `group`. An episode older
    /// than the incident's first member (out of order) joins too.
    /// Forgets what changed without writing it anywhere (a store that keeps nothing).
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }

    fn joinable(&self, group: &str, t: UnixSecs) -> bool {
        self.open.get(group).is_some_and(|o| t < o.closes)
    }

    /// Puts `finding` (an episode opened at `t` with `novelty`) into its incident and sets
    /// its `incident_id`.
    pub fn assign(
        &mut self,
        finding: &mut Finding,
        novelty: &Novelty,
        t: UnixSecs,
        rule: &Rule,
        settings: &TriageSettings,
        detected_at: UnixSecs,
    ) -> Assigned {
        let cluster = finding.cluster.as_str();
        let image = finding.image.as_str();
        let node = finding.node.as_str();
        let rollout = i64::try_from(settings.rollout_window).unwrap_or(i64::MAX);
        // Each group is made only when the ones before it did not take the episode (this
        // runs for every finding).
        let fleet_group = group(IncidentKind::Image, "", image);
        let (chosen, kind, scope, window) = if novelty.scope == Scope::Fleet
            || self.joinable(&fleet_group, t)
        {
            (fleet_group, IncidentKind::Image, novelty.scope, None)
        } else {
            let cluster_group = group(IncidentKind::Image, cluster, image);
            if self.joinable(&cluster_group, t) || novelty.scope == Scope::Cluster {
                (cluster_group, IncidentKind::Image, novelty.scope, None)
            } else {
                let node_group = group(IncidentKind::NewNode, cluster, node);
                if self.joinable(&node_group, t) || novelty.new_node {
                    (node_group, IncidentKind::NewNode, novelty.scope, None)
                } else {
                    let width = i64::try_from(settings.digest_window.max(1)).unwrap_or(i64::MAX);
                    let start = t.div_euclid(width) * width;
                    let g = group(IncidentKind::Digest, cluster, &start.to_string());
                    (g, IncidentKind::Digest, Scope::Node, Some((start, width)))
                }
            }
        };
        if self.joinable(&chosen, t) {
            let open = self
                .open
                .get_mut(&chosen)
                .expect("joinable incidents are open");
            finding.set_incident(&open.incident.incident_id);
            if !self.skip_members {
                open.incident.add(finding);
                self.dirty.insert(chosen);
            }
            return Assigned::Joined;
        }
        // A group whose incident is still open but no longer joinable (an episode past its
        // window, in the same batch as the points that end it) is closed now, so that the
        // new incident can take its place and nothing is lost.
        if let Some(old) = self.open.remove(&chosen) {
            self.closed_early.push(close(old));
        }
        let (opened, closes) = match window {
            Some((start, width)) => (start, start.saturating_add(width)),
            None => (t, t.saturating_add(rollout)),
        };
        let id = incident_id(rule, &chosen, opened);
        let severity = match (kind, scope) {
            (IncidentKind::Image, Scope::Fleet) => "high",
            (IncidentKind::Image, _) | (IncidentKind::NewNode, _) => "medium",
            (IncidentKind::Digest, _) => "low",
            (IncidentKind::RiskThreshold, _) | (IncidentKind::Capacity, _) => "high",
        };
        let mut incident = Incident::blank(
            kind,
            scope,
            severity,
            id.clone(),
            rule,
            (opened, closes),
            detected_at,
        );
        incident.cluster = match (kind, scope) {
            (IncidentKind::Image, Scope::Fleet) => None,
            _ => Some(cluster.to_string()),
        };
        incident.image = (kind == IncidentKind::Image).then(|| image.to_string());
        incident.node = (kind == IncidentKind::NewNode).then(|| node.to_string());
        finding.set_incident(&id);
        if !self.skip_members {
            incident.add(finding);
        }
        self.insert_open(chosen, &incident, opened, closes);
        Assigned::Opened(Box::new(incident))
    }

    /// A finding's risk (an episode opened at `t`): it joins its object's open
    /// `risk_threshold` incident, or opens one when its event crossed the threshold
    /// (`crossing`, from [`crate::risk::RiskLedger::add`]). Returns the incident it opened.
    pub fn risk(
        &mut self,
        finding: &Finding,
        t: UnixSecs,
        crossing: Option<Crossing>,
        rule: &Rule,
        settings: &TriageSettings,
        detected_at: UnixSecs,
    ) -> Option<Box<Incident>> {
        let object = finding.risk_object.as_str();
        let chosen = group(IncidentKind::RiskThreshold, "", object);
        if self.joinable(&chosen, t) {
            let open = self
                .open
                .get_mut(&chosen)
                .expect("joinable incidents are open");
            open.incident.add_risk(&RiskEvent::of(finding, t));
            self.dirty.insert(chosen);
            return None;
        }
        let crossing = crossing?;
        if let Some(old) = self.open.remove(&chosen) {
            self.closed_early.push(close(old));
        }
        let window = i64::try_from(settings.risk_window.max(1)).unwrap_or(i64::MAX);
        let (opened, closes) = (t, t.saturating_add(window));
        let id = incident_id(rule, &chosen, opened);
        let mut incident = Incident::blank(
            IncidentKind::RiskThreshold,
            Scope::Node,
            "high",
            id,
            rule,
            (opened, closes),
            detected_at,
        );
        incident.risk_object = Some(object.to_string());
        for event in &crossing.events {
            incident.add_risk(event);
        }
        self.insert_open(chosen, &incident, opened, closes);
        Some(Box::new(incident))
    }

    fn insert_open(
        &mut self,
        group: String,
        incident: &Incident,
        opened: UnixSecs,
        closes: UnixSecs,
    ) {
        self.open.insert(
            group.clone(),
            Open {
                incident: incident.clone(),
                opened,
                closes,
            },
        );
        self.dirty.insert(group);
    }

    /// Closes the incidents whose window ended at or before `stream_time` (the newest
    /// point time), returning them in their final form, oldest first.
    pub fn close_due(&mut self, stream_time: UnixSecs) -> Vec<Incident> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| o.closes <= stream_time)
            .map(|(g, _)| g.clone())
            .collect();
        let mut closed = std::mem::take(&mut self.closed_early);
        for g in due {
            if let Some(o) = self.open.remove(&g) {
                closed.push(close(o));
            }
            self.dirty.insert(g);
        }
        closed.sort_by(|a, b| (a.0, &a.1.incident_id).cmp(&(b.0, &b.1.incident_id)));
        closed.into_iter().map(|(_, i)| i).collect()
    }
}

/// An open incident in its final form.
fn close(o: Open) -> (UnixSecs, Incident) {
    let mut incident = o.incident;
    incident.state = IncidentState::Closed;
    incident.closed_at = Some(format_rfc3339(o.closes));
    (o.opened, incident)
}
