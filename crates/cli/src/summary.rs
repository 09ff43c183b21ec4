//! The summary block printed on stderr after a scan: short, readable, every count.

use std::fmt::Write;
use std::time::Duration;

use unseen_ingest::SourceStats;
use unseen_model::{format_duration, format_rfc3339, UnixSecs, Windows};
use unseen_normalize::{DropCounts, KeyMode};

use crate::scan::Placements;

pub struct Summary<'a> {
    pub at: UnixSecs,
    pub windows: Windows,
    pub mode: &'a KeyMode,
    pub files: usize,
    pub bytes: u64,
    pub stats: SourceStats,
    pub drops: DropCounts,
    pub placements: Placements,
    pub keys: usize,
    pub findings: usize,
    pub elapsed: Duration,
}

impl Summary<'_> {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &self.windows;
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            s,
            "unseen scan at {} ({} mode; current {}, baseline {}, recent {})",
            format_rfc3339(self.at),
            self.mode.name(),
            format_duration(w.current),
            format_duration(w.baseline),
            format_duration(w.recent),
        );
        let _ = writeln!(
            s,
            "  read       {} file{}, {} bytes, {} record{} in {:.2}s ({:.0} points/s)",
            self.files,
            plural(self.files as u64),
            self.bytes,
            self.stats.records,
            plural(self.stats.records),
            secs,
            self.stats.ready_points as f64 / secs.max(1e-9),
        );
        let _ = writeln!(
            s,
            "  points     {} k8s.container.ready, {} of other metrics skipped",
            self.stats.ready_points, self.stats.other_points
        );
        let kept = self.stats.ready_points - self.drops.total();
        let _ = writeln!(
            s,
            "  kept       {} ({} in the windows, {} older, {} at or after --at), {} key{}",
            kept,
            self.placements.in_windows,
            self.placements.before_windows,
            self.placements.after_at,
            self.keys,
            plural(self.keys as u64)
        );
        let _ = writeln!(s, "  dropped    {}", self.drops.total());
        for (reason, n) in self.drops.iter() {
            let _ = writeln!(
                s,
                "    {n} without {}: {}",
                reason.attribute(),
                reason.fix(self.mode)
            );
        }
        let _ = writeln!(
            s,
            "  malformed  {} record{}, {} point{}",
            self.stats.malformed_records,
            plural(self.stats.malformed_records),
            self.stats.malformed_points,
            plural(self.stats.malformed_points)
        );
        let _ = writeln!(s, "  findings   {}", self.findings);
        s
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
