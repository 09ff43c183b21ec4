//! The one place where a sighting's outcome becomes findings and incidents.
//!
//! Every store backend runs the rule's `step` per key and calls [`Decider::sighting`]
//! with the result, then [`Decider::end_batch`]; `scan` calls [`Decider::batch`] with its
//! detections. So the triage logic exists once, whatever keeps the state, and the same
//! history gives the same findings and incidents everywhere.

use serde::{Deserialize, Serialize};
use unseen_detect::{BaselineKey, Detection, Episode};
use unseen_model::{OwnedContext, Rule, UnixSecs, Windows};
use unseen_normalize::{Key, KeyMode};

use crate::incident::{Assigned, Incident, Incidents};
use crate::risk::{RiskEvent, RiskLedger};
use crate::triage::{Index, TriageSettings};
use crate::{build, Finding, Suppressions, Triage};

/// One keyed sighting, ready for the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub key: Key,
    pub time: UnixSecs,
    /// `host.name` on the point, kept as finding evidence.
    pub host_name: Option<String>,
    /// The point's evidence attributes (empty in strict mode).
    pub context: OwnedContext,
    /// `container.image.name` as the point said it, when not the key's canonical image.
    pub image_raw: Option<String>,
}

/// One entry of the findings outbox: what sinks deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Finding(Box<Finding>),
    /// An incident, as opened or as closed (its `state` says which).
    Incident(Box<Incident>),
}

impl Record {
    pub fn finding(&self) -> Option<&Finding> {
        match self {
            Record::Finding(f) => Some(f),
            Record::Incident(_) => None,
        }
    }

    pub fn incident(&self) -> Option<&Incident> {
        match self {
            Record::Incident(i) => Some(i),
            Record::Finding(_) => None,
        }
    }

    /// One line of JSON, no trailing newline.
    pub fn to_json_line(&self) -> String {
        match self {
            Record::Finding(f) => f.to_json_line(),
            Record::Incident(i) => i.to_json_line(),
        }
    }
}

/// What the triage remembers beyond the keys: the image index and the open incidents.
/// Stores persist it (in the transaction of the batch that changed it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriageState {
    pub index: Index,
    pub incidents: Incidents,
    /// Per risk object, the recent risk events (`crate::risk`).
    pub risk: RiskLedger,
}

/// How sightings are decided: the rule (as data), the key mode, the windows, the triage
/// settings, and the clock of the batch.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    pub rule: &'a Rule,
    pub mode: &'a KeyMode,
    pub windows: Windows,
    pub settings: &'a TriageSettings,
    /// Suppression rules in force (none: nothing is suppressed).
    pub suppressions: &'a Suppressions,
    /// When the batch arrived (decides `detected_at`).
    pub now: UnixSecs,
    /// False while learning: state is recorded, nothing is reported.
    pub report: bool,
}

impl TriageState {
    /// The state of a batch run (`scan`): nothing persists it, so it tracks no changes,
    /// and its incidents (which nobody receives: a batch run returns findings) only give
    /// findings their `incident_id`.
    pub fn untracked() -> Self {
        TriageState {
            index: Index::untracked(),
            incidents: Incidents::without_members(),
            ..TriageState::default()
        }
    }
}

impl Decider<'_> {
    /// One sighting that the store applied, with what the rule's `step` said of it.
    /// Appends the records it produces to `out`, in order: a finding, then the incident
    /// it opened, if any.
    ///
    /// `previous` is the key's latest sighting before this one (the store's state of the
    /// key). When both fall in the same quantum of time ([`crate::triage::same_quantum`]),
    /// the first sighting of the key in that quantum has taught the index all it records
    /// of this one, which then costs no index lookup (most sightings of a running fleet
    /// are such). Each quantum's first sighting is always looked up: were the test
    /// "seen less than a quantum ago", a key seen every minute would never be looked up
    /// again, and its image would drop out of the index one gap after it started.
    pub fn sighting(
        &self,
        state: &mut TriageState,
        s: &Sighting,
        opened: Option<Episode>,
        previous: Option<UnixSecs>,
        out: &mut Vec<Record>,
    ) {
        if self.mode.strict {
            // The seed's rule: no index, no incidents.
            if let (Some(episode), true) = (opened, self.report) {
                let mut finding = finding_of(self, s, episode);
                finding.suppressed = self.suppressions.check(&finding, self.now);
                out.push(Record::Finding(Box::new(finding)));
            }
            return;
        }
        let episode = opened.filter(|_| self.report);
        // Read before the sighting is applied: what the fleet knew without it.
        let novelty = episode.map(|_| state.index.novelty(&s.key, s.time, &self.windows));
        let recent = previous
            .is_some_and(|p| s.time >= p && crate::triage::same_quantum(p, s.time, &self.windows));
        if opened.is_some() || !recent {
            state.index.observe(&s.key, s.time, &self.windows);
        }
        let (Some(episode), Some(novelty)) = (episode, novelty) else {
            return;
        };
        let mut finding = finding_of(self, s, episode);
        finding.risk_score = self.settings.risk.score(self.rule.risk.score, &novelty);
        finding.triage = Some(Triage::new(
            &s.key,
            &s.context,
            s.image_raw.as_deref(),
            &novelty,
        ));
        // Suppressed: recorded, but it opens and joins no incident (the image is known
        // all the same: the index saw the sighting above).
        finding.suppressed = self.suppressions.check(&finding, self.now);
        if finding.suppressed.is_some() {
            out.push(Record::Finding(Box::new(finding)));
            return;
        }
        let assigned = state.incidents.assign(
            &mut finding,
            &novelty,
            s.time,
            self.rule,
            self.settings,
            self.now,
        );
        let risk = self.risk(state, &finding, s.time);
        out.push(Record::Finding(Box::new(finding)));
        if let Assigned::Opened(incident) = assigned {
            out.push(Record::Incident(incident));
        }
        if let Some(incident) = risk {
            out.push(Record::Incident(incident));
        }
    }

    /// The finding as a risk event of its object, and the `risk_threshold` incident it
    /// opens (returned) or joins.
    fn risk(
        &self,
        state: &mut TriageState,
        finding: &Finding,
        t: UnixSecs,
    ) -> Option<Box<Incident>> {
        let threshold = self.settings.risk_threshold;
        if threshold == 0 {
            return None;
        }
        let crossing = state.risk.add(
            &finding.risk_object,
            RiskEvent::of(finding, t),
            threshold,
            self.settings.risk_window,
        );
        state
            .incidents
            .risk(finding, t, crossing, self.rule, self.settings, self.now)
    }

    /// After a batch: closes the incidents whose window the stream has passed
    /// (`newest`, the newest point time applied so far).
    pub fn end_batch(
        &self,
        state: &mut TriageState,
        newest: Option<UnixSecs>,
        out: &mut Vec<Record>,
    ) {
        if self.mode.strict {
            return;
        }
        if let Some(newest) = newest {
            for incident in state.incidents.close_due(newest) {
                out.push(Record::Incident(Box::new(incident)));
            }
            state.risk.sweep(newest, self.settings.risk_window);
        }
    }

    /// A batch run's detections (contract section 3, at `self.now`) as findings. What the
    /// fleet knew is what `known` lists, the (cluster, node, image) of every key with a
    /// point in the baseline window; detections are then decided in order of their first
    /// point, as a stream would have seen them.
    pub fn batch<'k>(
        &self,
        detections: Vec<Detection>,
        known: impl IntoIterator<Item = (&'k str, &'k str, &'k str)>,
    ) -> Vec<Finding> {
        let mut state = TriageState::untracked();
        if !self.mode.strict {
            for (cluster, node, image) in known {
                self.know_baseline(&mut state, cluster, node, image);
            }
        }
        self.batch_with(detections, state)
    }

    /// Marks a key of the baseline window as known in `state`, for [`Decider::batch_with`]:
    /// a caller that walks the baseline keys feeds them here one by one (the index keeps
    /// an entry per distinct image, cluster image, registry and node, not per key).
    pub fn know_baseline(&self, state: &mut TriageState, cluster: &str, node: &str, image: &str) {
        self.know_baseline_key(state, &BaselineKey::whole(cluster, node, image));
    }

    /// [`Decider::know_baseline`] for a key whose marks say which of its entries to index
    /// (`BatchScan::for_each_baseline_key_marked`: not those an earlier key made, nor those
    /// no finding reads).
    pub fn know_baseline_key(&self, state: &mut TriageState, key: &BaselineKey<'_>) {
        // Known from the baseline window, which ends R before T: every finding's first
        // point is within the gap of it.
        let recent = i64::try_from(self.windows.recent).unwrap_or(i64::MAX);
        let baseline_end = self.now.saturating_sub(recent).saturating_sub(1);
        state.index.know_again(key, baseline_end, &self.windows);
    }

    /// [`Decider::batch`] with what the baseline knew already in `state` (made with
    /// [`TriageState::untracked`]).
    pub fn batch_with(
        &self,
        mut detections: Vec<Detection>,
        mut state: TriageState,
    ) -> Vec<Finding> {
        if self.mode.strict {
            return detections
                .iter()
                .map(|d| {
                    let mut f = build(self.rule, self.mode.name(), d, self.now);
                    f.suppressed = self.suppressions.check(&f, self.now);
                    f
                })
                .collect();
        }
        // A batch run returns findings only: the risk ledger would raise incidents that
        // nobody receives, so it is not kept.
        let settings = TriageSettings {
            risk_threshold: 0,
            ..*self.settings
        };
        let this = Decider {
            settings: &settings,
            ..*self
        };
        detections.sort_by(|a, b| (a.first_seen, &a.key).cmp(&(b.first_seen, &b.key)));
        let mut out = Vec::new();
        let mut findings = Vec::with_capacity(detections.len());
        for d in detections {
            let (last_seen, count) = (d.last_seen, d.count);
            let episode = Episode {
                first_seen: d.first_seen,
                previous_seen: d.previous_seen,
                late: d.late,
            };
            let s = Sighting {
                key: d.key,
                time: d.first_seen,
                host_name: d.host_name,
                context: d.context,
                image_raw: d.image_raw,
            };
            this.sighting(&mut state, &s, Some(episode), None, &mut out);
            // The batch's own aggregate (count, last point) over the stream's first point.
            for record in out.drain(..) {
                if let Record::Finding(mut f) = record {
                    f.last_seen = unseen_model::format_rfc3339(last_seen);
                    f.count = count;
                    findings.push(*f);
                }
            }
        }
        findings
    }
}

/// The finding of an episode that `s` opened (one point so far).
fn finding_of(decider: &Decider<'_>, s: &Sighting, episode: Episode) -> Finding {
    crate::build_parts(
        decider.rule,
        decider.mode.name(),
        &s.key,
        crate::Episode {
            first_seen: s.time,
            last_seen: s.time,
            count: 1,
            previous_seen: episode.previous_seen,
            late: episode.late,
        },
        s.host_name.as_deref(),
        decider.now,
    )
}
