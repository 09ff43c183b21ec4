//! The published rule, as data. Every other crate reads the rule's metadata from here,
//! so there is exactly one place that says "score 20" or "T1204".

use serde::Serialize;
use thiserror::Error;

use crate::duration::format_duration;

/// Metadata of a detection rule, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub version: u32,
    pub severity: &'static str,
    #[serde(rename = "type")]
    pub rule_type: &'static str,
    pub mitre_attack: &'static [&'static str],
    pub analytic_story: &'static [&'static str],
    /// The name Splunk Enterprise Security gives the correlation search.
    pub search_name: &'static str,
    #[serde(skip)]
    pub risk: RiskSpec,
}

/// How a finding becomes a risk event (`intermediate_findings.entities` in the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskSpec {
    pub object_type: &'static str,
    pub score: u32,
    /// `$host$` is replaced by the finding's host.
    pub message_template: &'static str,
}

impl Rule {
    /// The risk message for a host, as Splunk ES renders the template.
    pub fn risk_message(&self, host: &str) -> String {
        self.risk.message_template.replace("$host$", host)
    }
}

/// Splunk security_content `fea515a4-b1d8-4cd6-80d6-e0d71397b891`, version 10.
pub const SEED_RULE: Rule = Rule {
    id: "fea515a4-b1d8-4cd6-80d6-e0d71397b891",
    name: "Kubernetes Previously Unseen Container Image Name",
    version: 10,
    severity: "low",
    rule_type: "Anomaly",
    mitre_attack: &["T1204"],
    analytic_story: &["Abnormal Kubernetes Behavior using Splunk Infrastructure Monitoring"],
    search_name: "ESCU - Kubernetes Previously Unseen Container Image Name - Rule",
    risk: RiskSpec {
        object_type: "system",
        score: 20,
        message_template: "Kubernetes Previously Unseen Container Image Name on host $host$",
    },
};

/// The rule's three windows, in whole seconds (contract section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Windows {
    /// C: keys seen in [T − C, T) are candidates. Seed: 24h.
    pub current: u64,
    /// B: keys seen in [T − B, T − R) are known. Seed: 30d.
    pub baseline: u64,
    /// R: the baseline stops R before T. Seed: 1h.
    pub recent: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WindowsError {
    #[error("recent window ({recent}) must be shorter than the baseline ({baseline})")]
    RecentNotShorterThanBaseline { recent: String, baseline: String },
    #[error("recent window ({recent}) must not be longer than the current window ({current}): a key first seen in the recent window would fall outside the current one")]
    RecentLongerThanCurrent { recent: String, current: String },
    #[error("current window ({current}) must not be longer than the baseline ({baseline})")]
    CurrentLongerThanBaseline { current: String, baseline: String },
    #[error("recent window must be longer than 0s")]
    ZeroRecent,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            current: 24 * 3_600,
            baseline: 30 * 86_400,
            recent: 3_600,
        }
    }
}

impl Windows {
    pub fn new(current: u64, baseline: u64, recent: u64) -> Result<Self, WindowsError> {
        let w = Windows {
            current,
            baseline,
            recent,
        };
        if recent == 0 {
            return Err(WindowsError::ZeroRecent);
        }
        if recent >= baseline {
            return Err(WindowsError::RecentNotShorterThanBaseline {
                recent: format_duration(recent),
                baseline: format_duration(baseline),
            });
        }
        if recent > current {
            return Err(WindowsError::RecentLongerThanCurrent {
                recent: format_duration(recent),
                current: format_duration(current),
            });
        }
        if current > baseline {
            return Err(WindowsError::CurrentLongerThanBaseline {
                current: format_duration(current),
                baseline: format_duration(baseline),
            });
        }
        Ok(w)
    }

    /// B − R: a sighting more than this after the key's previous one opens a new
    /// episode (contract section 4).
    pub fn gap(&self) -> u64 {
        self.baseline - self.recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults() {
        let w = Windows::default();
        assert_eq!(
            (w.current, w.baseline, w.recent),
            (86_400, 2_592_000, 3_600)
        );
        assert_eq!(w.gap(), 2_592_000 - 3_600);
        assert_eq!(Windows::new(86_400, 2_592_000, 3_600), Ok(w));
    }

    #[test]
    fn rejects_inconsistent_windows() {
        assert_eq!(
            Windows::new(86_400, 3_600, 3_600).unwrap_err().to_string(),
            "recent window (1h) must be shorter than the baseline (1h)"
        );
        assert_eq!(
            Windows::new(60, 86_400, 3_600).unwrap_err().to_string(),
            "recent window (1h) must not be longer than the current window (1m): a key first seen in the recent window would fall outside the current one"
        );
        assert_eq!(
            Windows::new(31 * 86_400, 30 * 86_400, 3_600)
                .unwrap_err()
                .to_string(),
            "current window (31d) must not be longer than the baseline (30d)"
        );
        assert_eq!(
            Windows::new(60, 86_400, 0).unwrap_err(),
            WindowsError::ZeroRecent
        );
    }

    #[test]
    fn risk_message_follows_the_template() {
        assert_eq!(
            SEED_RULE.risk_message("node-1"),
            "Kubernetes Previously Unseen Container Image Name on host node-1"
        );
    }
}
