//! What every decoder reports into: the caller's [`Visitor`] plus the counts, in one place,
//! so that a count can never disagree with what the visitor saw.

use std::io;

use unseen_model::PointRef;

use crate::{Issue, IssueKind, Limits, Location, Position, SourceStats, Visitor};

/// Why a decoder stopped before the end of its input.
#[derive(Debug)]
pub(crate) enum Fatal {
    /// Reading failed (including a corrupt gzip stream).
    Io(io::Error),
    /// The source cannot be decoded at all (a CSV without a header or without `_time`).
    Unusable(String),
}

impl From<io::Error> for Fatal {
    fn from(error: io::Error) -> Self {
        Fatal::Io(error)
    }
}

/// Forwards points and issues to the visitor and keeps [`SourceStats`] in step.
pub(crate) struct Sink<'s, V: Visitor> {
    source: &'s str,
    pub(crate) limits: Limits,
    visitor: &'s mut V,
    stats: SourceStats,
}

impl<'s, V: Visitor> Sink<'s, V> {
    pub(crate) fn new(source: &'s str, limits: Limits, visitor: &'s mut V) -> Self {
        Sink {
            source,
            limits,
            visitor,
            stats: SourceStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> SourceStats {
        self.stats
    }

    /// One record (line, row, message) was read, good or bad.
    #[inline]
    pub(crate) fn record(&mut self) {
        self.stats.records += 1;
    }

    #[inline]
    pub(crate) fn other_points(&mut self, count: u64) {
        self.stats.other_points += count;
    }

    /// A `k8s.container.ready` point that passed every check.
    #[inline]
    pub(crate) fn point(&mut self, point: PointRef<'_>) {
        self.stats.ready_points += 1;
        self.visitor.point(point);
    }

    /// Points that passed every check, in input order, handed on together.
    #[inline]
    pub(crate) fn points(&mut self, points: &[PointRef<'_>]) {
        if !points.is_empty() {
            self.stats.ready_points += points.len() as u64;
            self.visitor.points(points);
        }
    }

    /// Reports an issue. `field` is built only here, on the rare bad path.
    pub(crate) fn issue(
        &mut self,
        kind: IssueKind,
        position: Position,
        field: Option<String>,
        message: String,
    ) {
        match kind {
            IssueKind::MalformedRecord => self.stats.malformed_records += 1,
            IssueKind::MalformedPoint => self.stats.malformed_points += 1,
        }
        self.visitor.issue(Issue {
            location: Location {
                source: self.source.to_string(),
                position,
                field,
            },
            kind,
            message,
        });
    }
}

/// The message for a record over `limits.max_record_bytes`; `what` is "line", "row", ...
pub(crate) fn too_long(what: &str, size: u64, limit: usize) -> String {
    format!(
        "{what} is {size} bytes, over the limit of {limit} bytes (limits.max_record_bytes); skipped"
    )
}
