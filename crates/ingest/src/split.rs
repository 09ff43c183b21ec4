//! One source read on several threads: [`read_split`].
//!
//! A CSV export is cut into ranges at row boundaries and each range is read by its own
//! thread into its own visitor; the caller merges the visitors, in range order. Finding a
//! row boundary in the middle of a CSV is not possible in general (a `\n` may be inside a
//! quoted field), so the cut is a guess that is checked afterwards, which makes it exact:
//!
//! 1. Each range starts just after a `\n` at or after its share of the bytes, and reads rows
//!    until one starts at or after the next range's start. Ranges run in parallel.
//! 2. In order, each range's first row must start where the range before it stopped. The
//!    first range starts after the header, where a whole reading would, so by induction
//!    every range that passes read exactly the rows of a whole reading.
//! 3. A range that fails (its guess was inside a quoted field) is read again from where the
//!    range before it stopped, on the calling thread; its first result is dropped.
//!
//! An export without quoted line breaks never needs step 3. Lines in issues are counted
//! per range and made absolute afterwards, so issues say the same `file:line` as a whole
//! reading.
//!
//! Other formats, gzip input and small inputs are read whole, as [`crate::read_source`]
//! does: one range.

use std::io::{self, Read};

use unseen_model::PointRef;

use crate::csv::{self, RangeEnd};
use crate::sink::{Fatal, Sink};
use crate::{detect, Format, Issue, Limits, Position, SourceError, SourceStats, Visitor};

/// Below this many bytes per thread a source is read whole: threads would cost more than
/// they save, and each range's visitor holds its own keys.
pub const MIN_RANGE_BYTES: u64 = 4 << 20;

/// Input that can be read from any offset, by several threads at once: a regular file
/// (`pread`, so each range is read through its own buffer and nothing is mapped), or
/// bytes in memory.
pub trait Positioned: Sync {
    /// The input's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads into `buf` from byte `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Positioned for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..))
            .unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

#[cfg(unix)]
impl Positioned for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

#[cfg(windows)]
impl Positioned for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }
}

/// The first bytes of `input`, as many as format detection looks at
/// ([`crate::detect_format`]).
pub fn read_head<S: Positioned + ?Sized>(input: &S) -> io::Result<Vec<u8>> {
    let mut head = vec![0; detect::HEAD];
    let n = crate::proto::read_full(
        &mut At {
            source: input,
            offset: 0,
        },
        &mut head,
    )?;
    head.truncate(n);
    Ok(head)
}

/// A reader of a [`Positioned`] input from an offset on.
struct At<'s, S: ?Sized> {
    source: &'s S,
    offset: u64,
}

impl<S: Positioned + ?Sized> Read for At<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// What one range of a source gave: its visitor, its counts and its issues.
#[derive(Debug)]
pub struct Part<V> {
    pub visitor: V,
    pub stats: SourceStats,
    /// The range's first issues (at most the `keep_issues` asked for), in input order,
    /// with lines counted from the start of the source.
    pub issues: Vec<Issue>,
    /// Issues after those, not kept.
    pub more_issues: u64,
}

/// [`crate::read_source`] on up to `threads` threads: each range of `input` goes to a
/// visitor of its own, made by `make`, and the parts come back in input order. Merging
/// their visitors in that order, and replaying their issues, gives what one visitor would
/// have seen over the whole input, but for the order of points between ranges.
///
/// Issues are held, not passed to the visitors: only the first `keep_issues` of each range
/// are kept (a file of garbage has an issue per line).
pub fn read_split<S, V, F>(
    source_name: &str,
    input: &S,
    format: Format,
    limits: Limits,
    threads: usize,
    keep_issues: usize,
    make: F,
) -> Result<(Format, Vec<Part<V>>), SourceError>
where
    S: Positioned + ?Sized,
    V: Visitor + Send,
    F: Fn() -> V + Sync,
{
    let size = input.size().map_err(|error| io_error(source_name, error))?;
    let ranges = (threads as u64).min(size / MIN_RANGE_BYTES).max(1);
    let cuts: Vec<u64> = (1..ranges).map(|k| size / ranges * k).collect();
    read_split_at(
        source_name,
        input,
        format,
        limits,
        &cuts,
        keep_issues,
        &make,
    )
}

fn io_error(source_name: &str, error: io::Error) -> SourceError {
    crate::fatal_error(source_name, Fatal::Io(error))
}

/// [`read_split`] with ranges cut at (just after the next `\n` from) `cuts`, any
/// offsets: what the tests vary.
pub(crate) fn read_split_at<S, V, F>(
    source_name: &str,
    input: &S,
    format: Format,
    limits: Limits,
    cuts: &[u64],
    keep_issues: usize,
    make: &F,
) -> Result<(Format, Vec<Part<V>>), SourceError>
where
    S: Positioned + ?Sized,
    V: Visitor + Send,
    F: Fn() -> V + Sync,
{
    let at = |offset| At {
        source: input,
        offset,
    };
    let head = read_head(input).map_err(|e| io_error(source_name, e))?;
    let csv = match format {
        Format::Csv => true,
        Format::Auto => detect::detect_format(&head) == Some(Format::Csv),
        _ => false,
    };
    if cuts.is_empty() || !csv || head.starts_with(&detect::GZIP_MAGIC) {
        let mut held = Held::new(make(), keep_issues);
        let (format, stats) = crate::read_source(source_name, at(0), format, limits, &mut held)?;
        return Ok((format, vec![held.into_part(stats)]));
    }
    let header = csv::read_header(&mut at(0), limits)
        .map_err(|fatal| crate::fatal_error(source_name, fatal))?;
    // Range starts: the header's end, then just after the first `\n` at or after each cut.
    let mut starts = vec![header.end];
    for &cut in cuts {
        let start = row_boundary(input, cut).map_err(|e| io_error(source_name, e))?;
        if start.is_some_and(|start| start > *starts.last().unwrap_or(&0)) {
            starts.extend(start);
        }
    }
    let until = |k: usize| starts.get(k + 1).copied().unwrap_or(u64::MAX);
    let read = |k: usize, from: u64| -> Result<(Part<V>, RangeEnd), Fatal> {
        let mut held = Held::new(make(), keep_issues);
        let mut sink = Sink::new(source_name, limits, &mut held);
        let end = csv::read_range(&mut at(from), &header, from, until(k), &mut sink)?;
        let stats = sink.stats();
        Ok((held.into_part(stats), end))
    };
    let mut results: Vec<Result<(Part<V>, RangeEnd), Fatal>> = std::thread::scope(|scope| {
        let read = &read;
        let starts = &starts;
        let others: Vec<_> = (1..starts.len())
            .map(|k| scope.spawn(move || read(k, starts[k])))
            .collect();
        let mut results = vec![read(0, starts[0])];
        for handle in others {
            results.push(match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            });
        }
        results
    });
    // Check each range against the one before it; read again the ones that guessed wrong.
    let mut parts = Vec::with_capacity(results.len());
    // Where the range before stopped, and the `\n`s before that.
    let mut lines_before = 0;
    let mut stopped = 0;
    for (k, result) in results.drain(..).enumerate() {
        let (mut part, end) = match result {
            // The first range starts after the header, as a whole reading does.
            Ok((part, end)) if k == 0 || end.first_row == stopped => (part, end),
            // Guessed inside a quoted field: again from a row boundary. A range that
            // starts at the stop has no blank lines before its first row: `lead` is 0.
            Ok(_) => read(k, stopped).map_err(|f| crate::fatal_error(source_name, f))?,
            Err(fatal) => return Err(crate::fatal_error(source_name, fatal)),
        };
        // Lines of the range's issues count from its start. The first range's start is
        // the header's end; for the others, `lines_before` counts up to where the range
        // before stopped, which is this range's first row, `lead` lines after its start.
        let base = match k {
            0 => header.newlines,
            _ => lines_before - end.lead,
        };
        for issue in &mut part.issues {
            if let Position::Line(line) = &mut issue.location.position {
                *line += base;
            }
        }
        lines_before = base + end.newlines;
        stopped = end.end;
        parts.push(part);
    }
    Ok((Format::Csv, parts))
}

/// Just after the first `\n` at or after `cut` (`cut` itself when a `\n` is before it);
/// `None` when there is none before the end.
fn row_boundary<S: Positioned + ?Sized>(input: &S, cut: u64) -> io::Result<Option<u64>> {
    if cut == 0 {
        return Ok(None);
    }
    let mut block = vec![0; 64 << 10];
    let mut offset = cut - 1;
    loop {
        let n = input.read_at(&mut block, offset)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(at) = memchr::memchr(b'\n', &block[..n]) {
            return Ok(Some(offset + at as u64 + 1));
        }
        offset += n as u64;
    }
}

/// A visitor that passes points on and holds the first issues.
struct Held<V> {
    visitor: V,
    issues: Vec<Issue>,
    keep: usize,
    more: u64,
}

impl<V> Held<V> {
    fn new(visitor: V, keep: usize) -> Self {
        Held {
            visitor,
            issues: Vec::new(),
            keep,
            more: 0,
        }
    }

    fn into_part(self, stats: SourceStats) -> Part<V> {
        Part {
            visitor: self.visitor,
            stats,
            issues: self.issues,
            more_issues: self.more,
        }
    }
}

impl<V: Visitor> Visitor for Held<V> {
    #[inline]
    fn point(&mut self, point: PointRef<'_>) {
        self.visitor.point(point);
    }

    #[inline]
    fn points(&mut self, points: &[PointRef<'_>]) {
        self.visitor.points(points);
    }

    fn issue(&mut self, issue: Issue) {
        if self.issues.len() < self.keep {
            self.issues.push(issue);
        } else {
            self.more += 1;
        }
    }
}
