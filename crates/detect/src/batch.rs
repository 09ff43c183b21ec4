//! Batch evaluation at time T (contract section 3).
//!
//! current = keys with a point in [T − C, T); baseline = keys with a point in
//! [T − B, T − R); findings = current \ baseline. One pass, per-key state only, any
//! input order.

use hashbrown::HashMap;
use unseen_model::{UnixSecs, Windows};
use unseen_normalize::{Key, KeyRef};

use crate::Detection;

/// Where a point fell relative to the windows; returned so callers can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In [T − C, T) only.
    Current,
    /// In [T − B, T − R) only.
    Baseline,
    /// In both (the windows overlap in [T − C, T − R)).
    Both,
    /// Before T − B: in no window. Kept only as `previous_seen` evidence.
    BeforeWindows,
    /// At or after T: in no window.
    AfterT,
}

#[derive(Debug, Default)]
struct Agg {
    current_count: u64,
    current_first: UnixSecs,
    current_last: UnixSecs,
    in_baseline: bool,
    /// The latest point before T − B.
    before_last: Option<UnixSecs>,
    host_name: Option<String>,
}

/// One run of the rule at time `at`.
#[derive(Debug)]
pub struct BatchScan {
    at: UnixSecs,
    current_start: UnixSecs,
    baseline_start: UnixSecs,
    baseline_end: UnixSecs,
    keys: HashMap<Key, Agg>,
}

impl BatchScan {
    pub fn new(windows: Windows, at: UnixSecs) -> Self {
        // Windows are at most u64 seconds; saturate rather than wrap for absurd inputs.
        let back = |d: u64| at.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX));
        BatchScan {
            at,
            current_start: back(windows.current),
            baseline_start: back(windows.baseline),
            baseline_end: back(windows.recent),
            keys: HashMap::new(),
        }
    }

    pub fn placement(&self, t: UnixSecs) -> Placement {
        if t >= self.at {
            return Placement::AfterT;
        }
        let current = t >= self.current_start;
        let baseline = t >= self.baseline_start && t < self.baseline_end;
        match (current, baseline) {
            (true, true) => Placement::Both,
            (true, false) => Placement::Current,
            (false, true) => Placement::Baseline,
            // `Windows::new` ensures R ≤ C ≤ B, so a point in neither window is older
            // than T − B.
            (false, false) => Placement::BeforeWindows,
        }
    }

    /// Records one point of `key` at `t`.
    pub fn observe(&mut self, key: KeyRef<'_>, t: UnixSecs, host_name: Option<&str>) -> Placement {
        let placement = self.placement(t);
        if placement == Placement::AfterT {
            return placement;
        }
        let agg = match self.keys.get_mut(&key) {
            Some(agg) => agg,
            None => self.keys.entry(key.to_owned_key()).or_default(),
        };
        match placement {
            Placement::Current | Placement::Both => {
                if agg.current_count == 0 || t < agg.current_first {
                    agg.current_first = t;
                }
                if agg.current_count == 0 || t > agg.current_last {
                    agg.current_last = t;
                }
                agg.current_count += 1;
                if agg.host_name.is_none() {
                    agg.host_name = host_name.filter(|h| !h.is_empty()).map(str::to_string);
                }
            }
            _ => {}
        }
        match placement {
            Placement::Baseline | Placement::Both => agg.in_baseline = true,
            Placement::BeforeWindows => {
                agg.before_last = Some(agg.before_last.map_or(t, |b| b.max(t)));
            }
            _ => {}
        }
        placement
    }

    /// Keys tracked so far.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// The findings, ordered by first sighting, then key.
    pub fn finish(self) -> Vec<Detection> {
        let mut out: Vec<Detection> = self
            .keys
            .into_iter()
            .filter(|(_, a)| a.current_count > 0 && !a.in_baseline)
            .map(|(key, a)| Detection {
                key,
                first_seen: a.current_first,
                last_seen: a.current_last,
                count: a.current_count,
                previous_seen: a.before_last,
                // A batch run reports what it sees at T; whether a point arrived late is
                // unknowable from history files.
                late: false,
                host_name: a.host_name,
            })
            .collect();
        out.sort_by(|a, b| (a.first_seen, &a.key).cmp(&(b.first_seen, &b.key)));
        out
    }
}
