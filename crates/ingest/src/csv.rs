//! Splunk CSV exports of a metrics search: a header row, `_time` (Unix seconds, fractional
//! allowed, or RFC 3339), one column per dimension under its dotted name, an optional
//! `metric_name` column, and value columns that the rule does not need.
//!
//! The dimension columns read are those of `otlp::ATTRS`, each when present: the rule's
//! four keys, and the evidence (`k8s.namespace.name`, `k8s.pod.name`, ...; an export from a
//! search `by` them). An empty cell is an absent dimension, as in Splunk. A key cell that is
//! not UTF-8 or over `limits.max_dimension_bytes` makes the row a malformed point; an
//! evidence cell that is either is absent, and the point is kept.
//!
//! Two parsers, one result. Most rows of an export are plain: no `"`, no `\r` but the
//! one of a `\r\n`, ending with `\n` in the read buffer. Those are split in place, sixteen
//! bytes at a time (SSE2 compares on x86_64, integer tricks elsewhere) for the `\n` and the
//! commas, and their fields are borrowed from the read buffer; the cells the rule reads are
//! checked for UTF-8 in one call, and `_time` in Unix seconds is read without going through
//! text. Every other row (quoted fields, a lone `\r`, a row longer than the buffer, the
//! last row without its `\n`, and the header, where a UTF-8 BOM may be) goes through
//! `csv-core`, the parser inside the `csv` crate, exactly as before: the two agree on every
//! byte sequence, which the tests check against the csv-core-only reader this replaced
//! (`csv/reference.rs`), on random CSV with quotes, CRLF, blank lines, BOMs, bad UTF-8,
//! tiny limits and read buffers of a few bytes.
//!
//! `csv-core` rather than `csv::Reader`: `csv::Reader` grows its record buffer to whatever a
//! row needs, and one runaway row (a quote never closed swallows the rest of the file)
//! would then sit in memory whole. Here the output buffers are ours, so a row over
//! `max_record_bytes` is skipped, read through without being kept. Buffers are reused
//! from row to row; memory is the read buffer plus one row.

use std::io::{self, BufRead, Read};

use unseen_model::{attr, same_bytes, Dims, PointRef};

use crate::otlp::{self, ATTRS, KEY_SLOTS};
use crate::sink::{self, Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

#[cfg(any(test, feature = "reference"))]
pub(crate) mod reference;
#[cfg(test)]
mod tests;

const TIME: &str = "_time";
const METRIC_NAME: &str = "metric_name";

/// Bytes asked of the reader at a time, and the longest row the plain-row path splits
/// (longer rows go through `csv-core`, which streams).
const READ_BUFFER: usize = 256 * 1024;

/// Reads the header and every row. A missing header or `_time` column stops it.
pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    read_with(reader, sink, true, READ_BUFFER)
}

/// [`read`], with the plain-row path on or off (off: every row through `csv-core`) and a
/// read buffer of `read_buffer` bytes: the tests and [`crate::reference`] make both vary.
pub(crate) fn read_with<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
    plain: bool,
    read_buffer: usize,
) -> Result<(), Fatal> {
    let mut rows = Rows::new(reader, sink.limits.max_record_bytes);
    rows.plain = plain;
    // Room for what `Rows::next` reads before the header.
    rows.read_buffer = read_buffer.max(4);
    let columns = header(&mut rows)?;
    read_rows(&mut rows, &columns, sink, u64::MAX)?;
    Ok(())
}

/// The header row: where the columns are. A missing header or `_time` column is fatal.
fn header(rows: &mut Rows<'_>) -> Result<Columns, Fatal> {
    let max = rows.max;
    match rows.next()? {
        Row::End => Err(Fatal::Unusable(
            "no header row: a CSV export starts with a header that names its columns, `_time` among them"
                .to_string(),
        )),
        Row::TooLong { size, .. } => Err(Fatal::Unusable(format!(
            "the header row is {size} bytes, over the limit of {max} bytes (limits.max_record_bytes)"
        ))),
        Row::Fields { .. } => Columns::new((0..rows.field_count()).map(|index| rows.field(index))),
    }
}

/// Reads rows until the input ends or the next row starts at or after byte `until` of the
/// input; returns where that row starts (the input's length at its end).
fn read_rows<V: Visitor>(
    rows: &mut Rows<'_>,
    columns: &Columns,
    sink: &mut Sink<'_, V>,
    until: u64,
) -> Result<u64, Fatal> {
    let max = rows.max;
    loop {
        if until != u64::MAX {
            let start = rows.row_start()?;
            if start >= until {
                return Ok(start);
            }
        }
        if rows.plain && rows.started && rows.plain_batch(BATCH, until) > 0 {
            emit_batch(rows, columns, sink);
            continue;
        }
        match rows.next()? {
            Row::End => return Ok(rows.offset()),
            Row::TooLong { line, size } => {
                sink.record();
                sink.issue(
                    IssueKind::MalformedRecord,
                    Position::Line(line),
                    None,
                    sink::too_long("row", size, max),
                );
            }
            Row::Fields { line } => {
                sink.record();
                emit(columns, &*rows, Position::Line(line), sink);
            }
        }
    }
}

/// The header of a CSV held in memory, for reading its rows in ranges ([`read_range`]).
pub(crate) struct Header {
    columns: Columns,
    /// Where the header's reading stopped: the rows start here, after blank lines.
    pub(crate) end: u64,
    /// The `\n`s up to `end`.
    pub(crate) newlines: u64,
}

/// Reads the header of the input `reader` reads from its start, with the same errors as
/// [`read`].
pub(crate) fn read_header(reader: &mut dyn Read, limits: crate::Limits) -> Result<Header, Fatal> {
    let mut rows = Rows::new(reader, limits.max_record_bytes);
    let columns = header(&mut rows)?;
    Ok(Header {
        columns,
        end: rows.offset(),
        newlines: rows.newlines,
    })
}

/// Where one range of rows ([`read_range`]) started and stopped, as offsets into the
/// whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeEnd {
    /// Where its first row starts (after blank lines): the range read the same rows as a
    /// reading of the whole input only if this is where the range before it stopped.
    pub(crate) first_row: u64,
    /// Where the row after its last starts (the input's length at its end).
    pub(crate) end: u64,
    /// The `\n`s from where it started to `first_row`.
    pub(crate) lead: u64,
    /// The `\n`s from where it started to `end`. Lines in its issues count from where it
    /// started.
    pub(crate) newlines: u64,
}

/// Reads the rows of the input from byte `from` (just after a `\n`, or the header's end),
/// which `reader` reads from, until one starts at or after byte `until`, as a reading of
/// the whole input would if a row started at `first_row` (see [`RangeEnd`]). Lines in
/// issues count from `from`.
pub(crate) fn read_range<V: Visitor>(
    reader: &mut dyn Read,
    header: &Header,
    from: u64,
    until: u64,
    sink: &mut Sink<'_, V>,
) -> Result<RangeEnd, Fatal> {
    let mut rows = Rows::new(reader, sink.limits.max_record_bytes);
    rows.consumed = from;
    rows.after_header();
    let first_row = rows.row_start()?;
    let lead = rows.newlines;
    let end = read_rows(&mut rows, &header.columns, sink, until)?;
    Ok(RangeEnd {
        first_row,
        end,
        lead,
        newlines: rows.newlines,
    })
}

/// Where the columns the rule reads are.
struct Columns {
    count: usize,
    time: usize,
    metric_name: Option<usize>,
    /// (slot, column) of each of [`ATTRS`] that is present, in slot order.
    dims: Vec<(usize, usize)>,
    /// The first and the last column of `dims`, when any is present.
    dims_span: Option<(usize, usize)>,
}

impl Columns {
    fn new<'f>(header: impl Iterator<Item = &'f [u8]>) -> Result<Columns, Fatal> {
        let names: Vec<String> = header
            .map(|name| String::from_utf8_lossy(name).trim().to_string())
            .collect();
        let find = |wanted: &str| names.iter().position(|name| name == wanted);
        let Some(time) = find(TIME) else {
            // A file that is not CSV at all has one huge "column": show little of it.
            const SHOWN: usize = 8;
            let mut shown: Vec<String> = names
                .iter()
                .take(SHOWN)
                .map(|n| match n.char_indices().nth(40) {
                    Some((cut, _)) => format!("`{}...`", &n[..cut]),
                    None => format!("`{n}`"),
                })
                .collect();
            if names.len() > SHOWN {
                shown.push(format!("and {} more", names.len() - SHOWN));
            }
            return Err(Fatal::Unusable(format!(
                "no `_time` column: the header has {}; unseen needs `_time` (Unix seconds or RFC 3339) \
                 to know when each row was seen",
                shown.join(", ")
            )));
        };
        let dims: Vec<(usize, usize)> = ATTRS
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| Some((slot, find(name)?)))
            .collect();
        let present = || dims.iter().map(|&(_, column)| column);
        let dims_span = present().min().zip(present().max());
        Ok(Columns {
            count: names.len(),
            time,
            metric_name: find(METRIC_NAME),
            dims,
            dims_span,
        })
    }
}

/// The fields of one row, wherever they are: split in place (a plain row, [`PlainRow`]) or
/// copied out by `csv-core` (the current row of [`Rows`]).
trait Fields<'b>: Copy {
    fn count(&self) -> usize;
    fn field(&self, index: usize) -> &'b [u8];
    /// Fields `first` to `last` as one text, when the row is plain and those bytes are all
    /// UTF-8, with where the text starts in the read buffer.
    fn text(&self, first: usize, last: usize) -> Option<(&'b str, usize)>;
    /// Field `index` as a slice of a [`Fields::text`] that covers it.
    fn field_text(&self, text: Option<(&'b str, usize)>, index: usize) -> Option<&'b str>;
}

impl<'b> Fields<'b> for &'b Rows<'_> {
    fn count(&self) -> usize {
        self.field_count()
    }

    #[inline]
    fn field(&self, index: usize) -> &'b [u8] {
        Rows::field(self, index)
    }

    #[inline]
    fn text(&self, first: usize, last: usize) -> Option<(&'b str, usize)> {
        self.plain()?.text(first, last)
    }

    #[inline]
    fn field_text(&self, text: Option<(&'b str, usize)>, index: usize) -> Option<&'b str> {
        self.plain()?.field_text(text, index)
    }
}

/// A plain row where it lies in the read buffer: each field ends at a comma or at the
/// row's end, at `ends`.
#[derive(Debug, Clone, Copy)]
struct PlainRow<'b> {
    buf: &'b [u8],
    start: usize,
    ends: &'b [usize],
    /// Every byte of the row is ASCII (checked while splitting it).
    ascii: bool,
}

impl PlainRow<'_> {
    /// Where field `index` is in `buf`.
    #[inline]
    fn span(&self, index: usize) -> (usize, usize) {
        let start = match index {
            0 => self.start,
            _ => self.ends.get(index - 1).map_or(self.start, |e| e + 1),
        };
        (start, self.ends.get(index).copied().unwrap_or(start))
    }
}

impl<'b> Fields<'b> for PlainRow<'b> {
    fn count(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn field(&self, index: usize) -> &'b [u8] {
        let (start, end) = self.span(index);
        self.buf.get(start..end).unwrap_or_default()
    }

    #[inline]
    fn text(&self, first: usize, last: usize) -> Option<(&'b str, usize)> {
        let (start, _) = self.span(first);
        let (_, end) = self.span(last);
        let bytes = self.buf.get(start..end)?;
        let text = if self.ascii {
            debug_assert!(bytes.is_ascii(), "split_row said the row is ASCII");
            // SAFETY: `ascii` says that `split_row` found every byte of this row ASCII
            // (and ASCII is UTF-8). `bytes` is part of the row: the spans come from its
            // commas and its end. The row's bytes have not changed since: a `PlainRow`
            // borrows the buffer, which changes only in `Rows::refill` (through `&mut`).
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).ok()?
        };
        Some((text, start))
    }

    #[inline]
    fn field_text(&self, text: Option<(&'b str, usize)>, index: usize) -> Option<&'b str> {
        let (text, at) = text?;
        let (start, end) = self.span(index);
        // Fields start and end at ASCII commas: always on character boundaries.
        text.get(start.checked_sub(at)?..end.checked_sub(at)?)
    }
}

/// What one row was, besides its point.
enum RowRead {
    /// A `k8s.container.ready` point, handed to `point`.
    Point,
    /// A point of another metric.
    Other,
    Issue(IssueKind, String),
}

/// Reads a row read alone, and hands on what it was.
#[inline]
fn emit<'b, V: Visitor>(
    columns: &Columns,
    fields: impl Fields<'b>,
    position: Position,
    sink: &mut Sink<'_, V>,
) {
    let limit = sink.limits.max_dimension_bytes;
    match row(columns, fields, limit, |point| sink.point(point)) {
        RowRead::Point => {}
        RowRead::Other => sink.other_points(1),
        RowRead::Issue(kind, message) => sink.issue(kind, position, None, message),
    }
}

/// Checks one row: its point goes to `point` (built where it is kept, not moved there),
/// or it says what else the row was.
#[inline]
fn row<'b>(
    columns: &Columns,
    fields: impl Fields<'b>,
    limit: usize,
    point: impl FnOnce(PointRef<'b>),
) -> RowRead {
    let count = fields.count();
    if count != columns.count {
        return RowRead::Issue(
            IssueKind::MalformedRecord,
            format!("row has {count} fields, the header has {}", columns.count),
        );
    }
    if let Some(index) = columns.metric_name {
        if !same_bytes(fields.field(index), attr::READY_METRIC.as_bytes()) {
            return RowRead::Other;
        }
    }
    // The message names the column already; a field path would only repeat it.
    let point_issue = |message: String| RowRead::Issue(IssueKind::MalformedPoint, message);
    let cell = fields.field(columns.time);
    let time_unix_nano = match plain_nanos(cell) {
        Some(nanos) => nanos,
        None => match time(cell) {
            Ok(nanos) => nanos,
            Err(message) => return point_issue(message),
        },
    };
    // Validating the cells from the first dimension to the last at once is cheaper than
    // cell by cell; when those bytes are not all UTF-8 (perhaps in a column the rule does
    // not read), each cell is checked alone.
    let text = columns
        .dims_span
        .and_then(|(first, last)| fields.text(first, last));
    let mut dims = Dims::default();
    for &(slot, index) in &columns.dims {
        let key = slot < KEY_SLOTS;
        let text = match fields.field_text(text, index) {
            Some(text) => text,
            None => match std::str::from_utf8(fields.field(index)) {
                Ok(text) => text,
                Err(_) if key => return point_issue(otlp::bad_utf8("column", ATTRS[slot])),
                // Evidence that is not UTF-8 is absent.
                Err(_) => continue,
            },
        };
        if text.is_empty() {
            continue; // an empty cell is an absent dimension, as in Splunk
        }
        if text.len() > limit {
            if !key {
                continue; // evidence over the limit is absent
            }
            if let Err(message) = otlp::check_dimension("column", ATTRS[slot], text, limit) {
                return point_issue(message);
            }
        }
        // By slot, not through `Dims::set`, which matches the key's text.
        otlp::set(&mut dims, slot, Some(text));
    }
    point(PointRef {
        time_unix_nano,
        dims,
    });
    RowRead::Point
}

/// Rows split at once, at most: enough points for the visitor to work on several at a
/// time ([`Visitor::points`]), few enough to stay in the cache.
const BATCH: usize = 64;

/// Hands on the rows of [`Rows::plain_batch`]: their points together, in order, except
/// where a row has an issue, which comes after the points before it.
fn emit_batch<V: Visitor>(rows: &Rows<'_>, columns: &Columns, sink: &mut Sink<'_, V>) {
    let limit = sink.limits.max_dimension_bytes;
    let mut points: Vec<PointRef<'_>> = Vec::with_capacity(rows.batch.len());
    for batched in &rows.batch {
        sink.record();
        let position = Position::Line(batched.line);
        let read = match batched.row {
            Batched::TooLong(size) => RowRead::Issue(
                IssueKind::MalformedRecord,
                sink::too_long("row", size, rows.max),
            ),
            Batched::Fields { start, ends, ascii } => {
                let fields = PlainRow {
                    buf: &rows.buf,
                    start,
                    ends: &rows.batch_ends[ends.0..ends.1],
                    ascii,
                };
                row(columns, fields, limit, |point| points.push(point))
            }
        };
        match read {
            RowRead::Point => {}
            RowRead::Other => sink.other_points(1),
            RowRead::Issue(kind, message) => {
                sink.points(&points);
                points.clear();
                sink.issue(kind, position, None, message);
            }
        }
    }
    sink.points(&points);
}

/// `_time` as nanoseconds for the common cells ([`plain_seconds`] in range): what [`time`]
/// gives for them, without the detour through text.
#[inline(always)]
fn plain_nanos(cell: &[u8]) -> Option<u64> {
    plain_seconds(cell)
        .filter(|&secs| secs > 0)
        .and_then(|secs| secs.checked_mul(1_000_000_000))
}

/// `_time` as nanoseconds, floored to the second.
#[cold]
#[inline(never)]
fn time(cell: &[u8]) -> Result<u64, String> {
    let Ok(text) = std::str::from_utf8(cell) else {
        return Err("column `_time` is not valid UTF-8".to_string());
    };
    let secs =
        unseen_model::parse_time(text).map_err(|error| format!("column `_time`: {error}"))?;
    u64::try_from(secs)
        .ok()
        .filter(|&secs| secs > 0)
        .and_then(|secs| secs.checked_mul(1_000_000_000))
        .ok_or_else(|| {
            format!("column `_time` is `{text}`: every point needs a time after 1970-01-01T00:00:00Z and before 2554")
        })
}

/// Whole seconds of a cell that is only digits, optionally followed by `.` and at least
/// one digit (the common forms of `_time`), at most 18 digits before the point so that it
/// fits without overflow checks; `None` for every other cell (which `parse_time` reads).
#[inline(always)]
fn plain_seconds(cell: &[u8]) -> Option<u64> {
    let mut secs: u64 = 0;
    let mut digits = 0;
    // Eight digits at once (Unix seconds have ten): check and convert in a word.
    if let Some(first) = cell.first_chunk::<8>() {
        let x = u64::from_le_bytes(*first);
        let all_digits = x & 0xF0F0_F0F0_F0F0_F0F0 == 0x3030_3030_3030_3030
            && x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0
                == 0x3030_3030_3030_3030;
        if all_digits {
            // Byte i is digit i (little-endian): combine pairs, then quads, then halves.
            let x = x - 0x3030_3030_3030_3030;
            let x = (x * 10 + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
            let x = (x * 100 + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
            secs = (x * 10_000 + (x >> 32)) & 0xFFFF_FFFF;
            digits = 8;
        }
    }
    // At most 18 digits (checked once, not per digit): no overflow.
    for &b in cell.get(digits..cell.len().min(19)).unwrap_or_default() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        secs = secs * 10 + u64::from(digit);
        digits += 1;
    }
    match &cell[digits..] {
        _ if digits == 0 || digits > 18 => None,
        [] => Some(secs),
        // Non-negative, so the fraction floors away.
        [b'.', frac @ ..] if !frac.is_empty() && frac.iter().all(u8::is_ascii_digit) => Some(secs),
        _ => None,
    }
}

/// Bounded incremental CSV reading over our own read buffer.
pub(crate) struct Rows<'r> {
    reader: &'r mut dyn Read,
    core: csv_core::Reader,
    max: usize,
    /// Split plain rows in place (see the module docs); off only to test the other path.
    plain: bool,
    /// Read buffer (allocated at the first read, `read_buffer` bytes): unread input is
    /// `buf[pos..end]`.
    buf: Vec<u8>,
    read_buffer: usize,
    pos: usize,
    end: usize,
    eof: bool,
    /// Whether `csv-core` has read the first row (and with it any BOM).
    started: bool,
    /// The first `"` or `\r` at or after where it was last looked for (at most the
    /// current row's start), or `end` for none; `None` when not looked for since the
    /// buffer last moved.
    special_at: Option<usize>,
    /// Where the current row's fields are.
    from: FieldsIn,
    /// Plain rows: the end of each field in `buf` (a comma or the row's end).
    plain_ends: Vec<usize>,
    /// `csv-core` rows: unquoted field bytes, and where each field ends in them.
    out: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
    /// `\n`s consumed so far: the line of the next byte is `newlines + 1`.
    newlines: u64,
    /// Input bytes before `buf[0]` (and before the reader's first byte, for a range).
    consumed: u64,
    /// Rows split by [`Rows::plain_batch`], and the ends of their fields.
    batch: Vec<BatchedRow>,
    batch_ends: Vec<usize>,
}

/// A row of a batch ([`Rows::plain_batch`]).
#[derive(Debug, Clone, Copy)]
struct BatchedRow {
    line: u64,
    row: Batched,
}

#[derive(Debug, Clone, Copy)]
enum Batched {
    /// Over the size limit: its size.
    TooLong(u64),
    /// Its fields start at `start` in `buf` and end at `batch_ends[ends.0..ends.1]`.
    Fields {
        start: usize,
        ends: (usize, usize),
        ascii: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldsIn {
    /// In `buf`, the row starting at `start`, separated by one comma each; `ascii` when
    /// every byte of the row is ASCII (checked while splitting it).
    Buf { start: usize, ascii: bool },
    /// In `out`, back to back.
    Out,
}

pub(crate) enum Row {
    End,
    Fields { line: u64 },
    TooLong { line: u64, size: u64 },
}

impl<'r> Rows<'r> {
    pub(crate) fn new(reader: &'r mut dyn Read, max: usize) -> Self {
        Rows {
            reader,
            core: csv_core::Reader::new(),
            max,
            plain: true,
            buf: Vec::new(),
            read_buffer: READ_BUFFER,
            pos: 0,
            end: 0,
            eof: false,
            started: false,
            special_at: None,
            from: FieldsIn::Out,
            plain_ends: Vec::with_capacity(32),
            out: vec![0; 1024],
            ends: vec![0; 32],
            fields: 0,
            newlines: 0,
            consumed: 0,
            batch: Vec::with_capacity(BATCH),
            batch_ends: Vec::with_capacity(BATCH * 16),
        }
    }

    /// Where the next unread byte is in the input.
    fn offset(&self) -> u64 {
        self.consumed + self.pos as u64
    }

    /// Sets up a reader that starts at a row boundary after the header, as the whole
    /// input's reader is there: plain rows are split in place, and `csv-core` has read
    /// (so it takes no `\u{feff}` at the range's start for a BOM).
    fn after_header(&mut self) {
        self.started = true;
        // A lone `\n` leaves csv-core where a row's terminator leaves it, having read.
        let _ = self.core.read_record(b"\n", &mut [0; 1], &mut [0; 1]);
    }

    /// Skips blank lines; returns where the next row starts (the input's length at its end).
    fn row_start(&mut self) -> io::Result<u64> {
        // Blank lines are rare: look for them only when the next byte is not a row's.
        let blank = |b: &u8| *b == b'\n' || *b == b'\r';
        if self
            .buf
            .get(self.pos..self.end)
            .and_then(<[u8]>::first)
            .is_none_or(blank)
        {
            self.skip_blank()?;
        }
        Ok(self.offset())
    }

    pub(crate) fn field_count(&self) -> usize {
        self.fields
    }

    /// The current row, when it is plain: its fields where they lie in `buf`.
    #[inline]
    fn plain(&self) -> Option<PlainRow<'_>> {
        let FieldsIn::Buf { start, ascii } = self.from else {
            return None;
        };
        Some(PlainRow {
            buf: &self.buf,
            start,
            ends: &self.plain_ends,
            ascii,
        })
    }

    #[inline]
    pub(crate) fn field(&self, index: usize) -> &[u8] {
        if let Some(row) = self.plain() {
            return row.field(index);
        }
        let start = match index {
            0 => 0,
            _ => self.ends.get(index - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(index).copied().unwrap_or(start);
        self.out.get(start..end).unwrap_or_default()
    }

    /// Reads more input after what is unread, moving the unread bytes to the front first.
    /// Returns whether any byte was added (false at the end of the input, or when the
    /// buffer is full of one unread row).
    fn refill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.is_empty() {
            self.buf = vec![0; self.read_buffer];
        }
        if self.pos > 0 {
            self.consumed += self.pos as u64;
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        self.special_at = None;
        if self.end == self.buf.len() {
            return Ok(false);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Unread input, refilled when there is none; empty only at the end of the input.
    fn fill(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.end && self.refill()? {}
        Ok(&self.buf[self.pos..self.end])
    }

    /// Skips blank lines (which `csv-core` would skip too), counting them, so that the
    /// line of a row is the line of its first byte.
    fn skip_blank(&mut self) -> io::Result<()> {
        loop {
            let available = self.fill()?;
            let blank = available
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            let newlines = available[..blank].iter().filter(|&&b| b == b'\n').count() as u64;
            let all = blank == available.len() && blank > 0;
            self.pos += blank;
            self.newlines += newlines;
            if !all {
                return Ok(());
            }
        }
    }

    pub(crate) fn next(&mut self) -> io::Result<Row> {
        // No fields until a row is read (`Rows::text` relies on it: see there).
        self.from = FieldsIn::Out;
        self.fields = 0;
        self.row_start()?;
        if self.plain && self.started {
            if let Some(row) = self.plain_row()? {
                return Ok(row);
            }
        }
        if !self.started {
            // `csv-core` strips a UTF-8 BOM only when its first input holds all of it, and
            // takes an input that is only the BOM for the end: give it a byte more.
            while self.end - self.pos < 4 && self.refill()? {}
        }
        self.core_row()
    }

    /// Splits the plain rows that lie whole in the buffer from the next one on, up to `max`
    /// of them and none starting at or after byte `until` of the input, into `batch`: rows
    /// whose points the visitor gets together. Stops at a row that is not plain, a blank
    /// line, or the end of what is buffered, without reading: [`Rows::next`] takes it from
    /// there. Returns how many rows it split. What each row says is what [`Rows::next`]
    /// would have said of it.
    fn plain_batch(&mut self, max: usize, until: u64) -> usize {
        self.batch.clear();
        self.batch_ends.clear();
        self.from = FieldsIn::Out;
        self.fields = 0;
        while self.batch.len() < max {
            let start = self.pos;
            if start >= self.end
                || self.consumed + start as u64 >= until
                || matches!(self.buf[start], b'\n' | b'\r')
            {
                break;
            }
            let mark = self.batch_ends.len();
            let Some(Split { newline, ascii }) =
                split_row(&self.buf[..self.end], start, &mut self.batch_ends)
            else {
                self.batch_ends.truncate(mark);
                break;
            };
            // `start` is not a `\n`: the row has a byte before its `\n`.
            let content_end = match self.buf[newline - 1] {
                b'\r' => newline - 1,
                _ => newline,
            };
            if next_special(&mut self.special_at, &self.buf, start, self.end) < content_end {
                self.batch_ends.truncate(mark);
                break;
            }
            self.pos = newline + 1;
            self.newlines += 1;
            let line = self.newlines;
            let size = content_end - start;
            let row = if size > self.max {
                self.batch_ends.truncate(mark);
                Batched::TooLong(size as u64)
            } else {
                self.batch_ends.push(content_end);
                Batched::Fields {
                    start,
                    ends: (mark, self.batch_ends.len()),
                    ascii,
                }
            };
            self.batch.push(BatchedRow { line, row });
        }
        self.batch.len()
    }

    /// The next row, if it is plain (see the module docs); `None` leaves the input as it
    /// was, for `csv-core`. Called at the start of a row, after blank lines.
    #[inline]
    fn plain_row(&mut self) -> io::Result<Option<Row>> {
        let Split { newline, ascii } = loop {
            self.plain_ends.clear();
            if let Some(split) = split_row(&self.buf[..self.end], self.pos, &mut self.plain_ends) {
                break split;
            }
            // No `\n` yet: read on, unless the buffer is all this row or the input ended.
            if !self.refill()? {
                return Ok(None);
            }
        };
        let start = self.pos;
        // `skip_blank` leaves a row's first byte, which is neither `\r` nor `\n`.
        let content_end = match self.buf[newline - 1] {
            b'\r' => newline - 1,
            _ => newline,
        };
        // A `"` or a `\r` in the row makes it one for `csv-core`; the `\r` of a `\r\n`
        // is at `content_end`, and allowed.
        if next_special(&mut self.special_at, &self.buf, start, self.end) < content_end {
            return Ok(None);
        }
        self.pos = newline + 1;
        let line = self.newlines + 1;
        self.newlines += 1;
        let size = content_end - start;
        if size > self.max {
            self.fields = 0;
            self.from = FieldsIn::Out;
            return Ok(Some(Row::TooLong {
                line,
                size: size as u64,
            }));
        }
        // The commas of the row are in `plain_ends` already (a `\r` before the `\n` is none).
        self.plain_ends.push(content_end);
        self.fields = self.plain_ends.len();
        self.from = FieldsIn::Buf { start, ascii };
        Ok(Some(Row::Fields { line }))
    }

    /// The next row through `csv-core`.
    fn core_row(&mut self) -> io::Result<Row> {
        self.started = true;
        self.from = FieldsIn::Out;
        let line = self.newlines + 1;
        let mut size: u64 = 0; // input bytes of this row, terminator included
        let mut tail = [0u8; 2]; // the last two input bytes of this row
        let mut outlen = 0;
        let mut endlen = 0;
        let mut over = false;
        // Where output goes once the row is over the limit: overwritten, never kept.
        let mut scratch_out = [0u8; 256];
        let mut scratch_ends = [0usize; 16];
        loop {
            self.fill()?;
            let input = &self.buf[self.pos..self.end];
            let (result, nin, nout, nend) = if over {
                self.core
                    .read_record(input, &mut scratch_out, &mut scratch_ends)
            } else {
                self.core
                    .read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..])
            };
            let consumed = &input[..nin];
            self.newlines += memchr::memchr_iter(b'\n', consumed).count() as u64;
            for &b in consumed.iter().rev().take(2).rev() {
                tail = [tail[1], b];
            }
            size += nin as u64;
            self.pos += nin;
            if !over {
                outlen += nout;
                endlen += nend;
            }
            use csv_core::ReadRecordResult as R;
            match result {
                R::InputEmpty => {}
                R::OutputFull if !over => self.out.resize(self.out.len() * 2, 0),
                R::OutputEndsFull if !over => self.ends.resize(self.ends.len() * 2, 0),
                R::OutputFull | R::OutputEndsFull => {}
                R::Record => {
                    // The size of a row is its content, without `\n`, `\r` or `\r\n`.
                    let terminator = match tail {
                        [b'\r', b'\n'] => 2,
                        [_, b'\n' | b'\r'] => 1,
                        _ => 0,
                    };
                    let size = size.saturating_sub(terminator);
                    if over || size > self.max as u64 {
                        self.fields = 0;
                        return Ok(Row::TooLong { line, size });
                    }
                    self.fields = endlen;
                    return Ok(Row::Fields { line });
                }
                R::End => return Ok(Row::End),
            }
            // Past the limit (without the terminator, not yet read): stop keeping output.
            if !over && size > self.max as u64 {
                over = true;
            }
        }
    }
}

/// Finds the first `\n` in `buf` from `from` on, pushing the position of every comma
/// before it into `commas`; `None` when there is no `\n`. Also tells whether every byte
/// before the `\n` is ASCII. Sixteen bytes at a time ([`block_masks`]): rows are short,
/// and `memchr` would pay its set-up once for the `\n` and again for every comma.
#[inline]
fn split_row(buf: &[u8], from: usize, commas: &mut Vec<usize>) -> Option<Split> {
    let rest = buf.get(from..).unwrap_or_default();
    let mut blocks = rest.chunks_exact(16);
    let mut at = from;
    let mut high = 0; // non-ASCII bytes seen
    for block in &mut blocks {
        let masks = block_masks(block.try_into().unwrap_or(&[0; 16]));
        if masks.newlines != 0 {
            // Only what is before the first `\n`: the bits below its bit.
            let before = (masks.newlines & masks.newlines.wrapping_neg()) - 1;
            push_bits(commas, at, masks.commas & before);
            return Some(Split {
                newline: at + masks.newlines.trailing_zeros() as usize,
                ascii: high | (masks.high & before) == 0,
            });
        }
        push_bits(commas, at, masks.commas);
        high |= masks.high;
        at += 16;
    }
    for (i, &b) in blocks.remainder().iter().enumerate() {
        match b {
            b'\n' => {
                return Some(Split {
                    newline: at + i,
                    ascii: high == 0,
                })
            }
            b',' => commas.push(at + i),
            _ => high |= u32::from(!b.is_ascii()),
        }
    }
    None
}

/// What [`split_row`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    /// Where the first `\n` is.
    newline: usize,
    /// Whether every byte from where the search started to `newline` is ASCII.
    ascii: bool,
}

/// Pushes `at` plus the index of every bit set in `bits`, lowest first.
#[inline(always)]
fn push_bits(out: &mut Vec<usize>, at: usize, mut bits: u32) {
    while bits != 0 {
        out.push(at + bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// Bit `i` of each mask is about byte `i` of a block of sixteen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Masks {
    /// The byte is `,`.
    commas: u32,
    /// The byte is `\n`.
    newlines: u32,
    /// The byte is not ASCII (its high bit is set).
    high: u32,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn block_masks(block: &[u8; 16]) -> Masks {
    // SAFETY: `sse2::masks` only needs the CPU to have SSE2, and this function exists
    // only where the target guarantees it (`target_feature = "sse2"`, which every x86_64
    // target has). It reads nothing but its argument, a reference.
    unsafe { sse2::masks(block) }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn block_masks(block: &[u8; 16]) -> Masks {
    swar_masks(block)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};

    use super::Masks;

    /// [`super::block_masks`] with SSE2: two compares and three movemasks.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn masks(block: &[u8; 16]) -> Masks {
        let (low, high) = block.split_at(8);
        let word = |half: &[u8]| i64::from_le_bytes(half.try_into().unwrap_or_default());
        // One unaligned 16-byte load once compiled.
        let v = _mm_set_epi64x(word(high), word(low));
        let commas = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8)));
        let newlines = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)));
        // movemask sets the low 16 bits only: the casts keep them.
        Masks {
            commas: commas as u32,
            newlines: newlines as u32,
            high: _mm_movemask_epi8(v) as u32,
        }
    }
}

/// [`block_masks`] eight bytes at a time in plain integers, for targets without SSE2.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn swar_masks(block: &[u8; 16]) -> Masks {
    const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    // Bit i set where the high bit of byte i is: gathered into the top byte by one
    // multiplication (no two bits meet).
    let gather = |high: u64| ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32;
    // The high bit of each byte of `x` that is 0, and only those.
    let zeros = |x: u64| gather(!(((x & LOW7) + LOW7) | x | LOW7));
    let (low, high) = block.split_at(8);
    let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or_default());
    let (low, high) = (word(low), word(high));
    Masks {
        commas: zeros(low ^ COMMAS) | zeros(high ^ COMMAS) << 8,
        newlines: zeros(low ^ NEWLINES) | zeros(high ^ NEWLINES) << 8,
        high: gather(low & !LOW7) | gather(high & !LOW7) << 8,
    }
}

/// The first `"` or `\r` in `buf[from..end]` (or `end`), remembered in `at` until `from`
/// passes it.
#[inline]
fn next_special(at: &mut Option<usize>, buf: &[u8], from: usize, end: usize) -> usize {
    match *at {
        Some(found) if found >= from => found,
        _ => {
            let found = memchr::memchr2(b'"', b'\r', &buf[from..end]).map_or(end, |i| from + i);
            *at = Some(found);
            found
        }
    }
}

/// The fields of a CSV header line, for format detection: whether it names a `_time` column.
pub(crate) fn header_has_time(line: &[u8]) -> bool {
    use csv_core::ReadFieldResult as F;
    let mut input: &[u8] = line;
    let mut core = csv_core::Reader::new();
    // Room for `_time` and the spaces around it; a longer name is not `_time`.
    let mut field = [0u8; 64];
    let mut len = 0;
    let mut too_long = false;
    loop {
        let (result, nin, nout) = core.read_field(input, &mut field[len..]);
        input = &input[nin..];
        len += nout;
        match result {
            F::InputEmpty => {}
            F::OutputFull => {
                too_long = true;
                len = 0;
            }
            F::Field { record_end } => {
                if !too_long && field[..len].trim_ascii() == TIME.as_bytes() {
                    return true;
                }
                if record_end {
                    return false;
                }
                len = 0;
                too_long = false;
            }
            F::End => return false,
        }
    }
}
