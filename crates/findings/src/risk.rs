//! Risk-based alerting as Splunk ES does it: every finding is a risk event on its risk
//! object (the `host`), scores add up per object over a rolling window (24 h by default),
//! and a sum over the threshold (100 by default) raises one `risk_threshold` incident.
//!
//! The sum at a finding's time `t` is over the object's findings with a first point in
//! `(t − window, t]` (event time, not arrival time, so `scan`, `backtest` and `serve`
//! agree). It fires when the sum **exceeds** the threshold, as ES's "Risk Threshold
//! Exceeded For Object Over 24 Hours" does, and at most once per window: after firing at
//! `t₀`, the object's next crossing counts only from `t₀ + window` on. Meanwhile the
//! object's further findings join the open incident, which closes at `t₀ + window`.
//! Suppressed findings carry no risk (the seed's filter macro drops them before ES sees
//! them).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use unseen_model::UnixSecs;

use crate::triage::Scope;
use crate::Finding;

/// One finding's contribution to its object's sum, with what the incident lists of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskEvent {
    /// The episode's first point.
    pub time: UnixSecs,
    pub score: u32,
    pub finding_id: String,
    pub scope: Scope,
    pub cluster: String,
    pub node: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl RiskEvent {
    pub fn of(finding: &Finding, time: UnixSecs) -> Self {
        let triage = finding.triage.as_ref();
        RiskEvent {
            time,
            score: finding.risk_score,
            finding_id: finding.finding_id.clone(),
            scope: triage.map_or(Scope::Node, |t| t.scope),
            cluster: finding.cluster.clone(),
            node: finding.node.clone(),
            image: finding.image.clone(),
            namespace: triage.and_then(|t| t.namespace.clone()),
            workload: triage.and_then(|t| t.workload.as_ref()).map(|w| w.label()),
        }
    }
}

/// One risk object's recent events and when it last fired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Within one window of the newest, in the order they came.
    pub events: Vec<RiskEvent>,
    /// The time of the finding that last crossed the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<UnixSecs>,
}

impl Ledger {
    fn newest(&self) -> Option<UnixSecs> {
        self.events.iter().map(|e| e.time).max()
    }
}

/// The threshold crossed: the events of the window, oldest first, and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub events: Vec<RiskEvent>,
    pub sum: u64,
}

/// Every risk object's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskLedger {
    objects: BTreeMap<String, Ledger>,
    /// Objects changed since the last [`RiskLedger::take_dirty`].
    dirty: BTreeSet<String>,
    /// The stream time of the last sweep of idle objects.
    swept: Option<UnixSecs>,
}

impl RiskLedger {
    /// Ledgers as persisted.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Ledger)>) -> Self {
        RiskLedger {
            objects: entries.into_iter().collect(),
            ..RiskLedger::default()
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Ledger)> {
        self.objects.iter()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects changed since the last call, each with its ledger (`None` once
    /// forgotten), for a store to write in the batch's transaction.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Ledger>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|o| {
                let ledger = self.objects.get(&o).cloned();
                (o, ledger)
            })
            .collect()
    }

    /// Forgets what changed without writing it anywhere (a store that keeps nothing).
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }

    /// Adds `event` to `object`'s sum; `Some` when the sum now exceeds `threshold` and the
    /// object has not fired within `window` of the event.
    pub fn add(
        &mut self,
        object: &str,
        event: RiskEvent,
        threshold: u32,
        window: u64,
    ) -> Option<Crossing> {
        let window = i64::try_from(window.max(1)).unwrap_or(i64::MAX);
        let t = event.time;
        let ledger = self.objects.entry(object.to_string()).or_default();
        ledger.events.push(event);
        // Keep one window behind the newest event (an out-of-order one may be older).
        let newest = ledger.newest().unwrap_or(t);
        ledger
            .events
            .retain(|e| e.time > newest.saturating_sub(window));
        self.dirty.insert(object.to_string());
        if ledger
            .fired_at
            .is_some_and(|fired| t.abs_diff(fired) < window.unsigned_abs())
        {
            return None;
        }
        let from = t.saturating_sub(window);
        let mut events: Vec<RiskEvent> = ledger
            .events
            .iter()
            .filter(|e| e.time > from && e.time <= t)
            .cloned()
            .collect();
        let sum: u64 = events.iter().map(|e| u64::from(e.score)).sum();
        if sum <= u64::from(threshold) {
            return None;
        }
        ledger.fired_at = Some(t);
        events.sort_by(|a, b| (a.time, &a.finding_id).cmp(&(b.time, &b.finding_id)));
        Some(Crossing { events, sum })
    }

    /// Forgets the objects with no event within `window` of `stream_time` and no firing
    /// that still counts. Walks every object, so it runs at most once per 1/24 of the
    /// window of stream time.
    pub fn sweep(&mut self, stream_time: UnixSecs, window: u64) {
        let window = i64::try_from(window.max(1)).unwrap_or(i64::MAX);
        if self
            .swept
            .is_some_and(|s| stream_time >= s && stream_time - s < (window / 24).max(1))
        {
            return;
        }
        self.swept = Some(stream_time);
        let horizon = stream_time.saturating_sub(window);
        let idle: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, l)| {
                l.newest().is_none_or(|n| n <= horizon) && l.fired_at.is_none_or(|f| f <= horizon)
            })
            .map(|(o, _)| o.clone())
            .collect();
        for object in idle {
            self.objects.remove(&object);
            self.dirty.insert(object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: UnixSecs, score: u32, id: &str) -> RiskEvent {
        RiskEvent {
            time,
            score,
            finding_id: id.into(),
            scope: Scope::Node,
            cluster: "c".into(),
            node: "n1".into(),
            image: "i".into(),
            namespace: None,
            workload: None,
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn fires_once_when_the_sum_exceeds_the_threshold() {
        let mut ledger = RiskLedger::default();
        for i in 0..5 {
            // 5 × 20 = 100: not over 100.
            assert_eq!(
                ledger.add("n1", event(1_000 + i, 20, &format!("f{i}")), 100, DAY),
                None
            );
        }
        let crossing = ledger.add("n1", event(1_010, 20, "f5"), 100, DAY).unwrap();
        assert_eq!(crossing.sum, 120);
        assert_eq!(crossing.events.len(), 6);
        assert_eq!(crossing.events[0].finding_id, "f0");
        // Within the window: no second firing, however high the sum.
        for i in 0..10 {
            assert_eq!(ledger.add("n1", event(2_000 + i, 90, "g"), 100, DAY), None);
        }
        // Another object is counted on its own.
        assert_eq!(ledger.add("n2", event(2_000, 90, "h"), 100, DAY), None);
        // A window after the firing, a new crossing counts.
        let t = 1_010 + DAY as i64;
        let again = ledger.add("n1", event(t, 90, "k"), 100, DAY).unwrap();
        // The rolling window (t − 24 h, t] holds the ten 90s of t₀+1000 and this one.
        assert_eq!(again.sum, 90 * 11);
    }

    #[test]
    fn the_sum_rolls_over_the_window() {
        let mut ledger = RiskLedger::default();
        assert_eq!(ledger.add("n1", event(0, 60, "a"), 100, DAY), None);
        // 60 + 60 at exactly one window later: the first has left (t − window, t].
        assert_eq!(ledger.add("n1", event(DAY as i64, 60, "b"), 100, DAY), None);
        let c = ledger
            .add("n1", event(DAY as i64 + 5, 41, "c"), 100, DAY)
            .unwrap();
        assert_eq!(c.sum, 101);
        assert_eq!(
            c.events
                .iter()
                .map(|e| e.finding_id.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn idle_objects_are_forgotten_and_written_as_gone() {
        let mut ledger = RiskLedger::default();
        ledger.add("n1", event(0, 10, "a"), 100, DAY);
        ledger.add("n2", event(DAY as i64, 10, "b"), 100, DAY);
        assert_eq!(ledger.take_dirty().len(), 2);
        ledger.sweep(DAY as i64 + 1, DAY);
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger.take_dirty(), vec![("n1".to_string(), None)]);
        // Not again within 1/24 of the window: an old object added since stays a while.
        ledger.add("n3", event(0, 10, "c"), 100, DAY);
        ledger.sweep(DAY as i64 + 100, DAY);
        assert_eq!(ledger.len(), 2);
        ledger.sweep(DAY as i64 + 3_601, DAY);
        assert_eq!(ledger.len(), 1);
        ledger.sweep(2 * DAY as i64 + 3_601, DAY);
        assert!(ledger.is_empty());
    }
}
