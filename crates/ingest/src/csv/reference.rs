//! The CSV reader as it was before plain rows were split in place: every row through
//! `csv-core`, input straight from the `BufRead`. Kept verbatim (but for this comment, the
//! imports, and the evidence columns, read plainly through `Dims::set`) as the reference
//! that the new reader is held to: by the
//! tests, and, with the `reference` feature, by [`crate::reference`] (the differential fuzz
//! target and its corpus test). Never on the run-time path.

use std::io::{self, BufRead};

use unseen_model::{attr, Dims, PointRef};

use crate::otlp::{self, ATTRS};
use crate::sink::{self, Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

const TIME: &str = "_time";
const METRIC_NAME: &str = "metric_name";

/// Reads the header and every row. A missing header or `_time` column stops it.
pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    let max = sink.limits.max_record_bytes;
    let mut rows = Rows::new(reader, max);
    let columns = match rows.next()? {
        Row::End => {
            return Err(Fatal::Unusable(
                "no header row: a CSV export starts with a header that names its columns, `_time` among them"
                    .to_string(),
            ))
        }
        Row::TooLong { size, .. } => {
            return Err(Fatal::Unusable(format!(
                "the header row is {size} bytes, over the limit of {max} bytes (limits.max_record_bytes)"
            )))
        }
        Row::Fields { .. } => Columns::new((0..rows.field_count()).map(|index| rows.field(index)))?,
    };
    loop {
        match rows.next()? {
            Row::End => return Ok(()),
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
                row(&columns, &rows, Position::Line(line), sink);
            }
        }
    }
}

/// Where the columns the rule reads are.
struct Columns {
    count: usize,
    time: usize,
    metric_name: Option<usize>,
    /// Index of each of [`ATTRS`], when present.
    dims: [Option<usize>; otlp::SLOTS],
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
        Ok(Columns {
            count: names.len(),
            time,
            metric_name: find(METRIC_NAME),
            dims: ATTRS.map(find),
        })
    }
}

/// Checks one row and hands on its point.
fn row<V: Visitor>(columns: &Columns, rows: &Rows<'_>, position: Position, sink: &mut Sink<'_, V>) {
    let count = rows.field_count();
    if count != columns.count {
        sink.issue(
            IssueKind::MalformedRecord,
            position,
            None,
            format!("row has {count} fields, the header has {}", columns.count),
        );
        return;
    }
    if let Some(index) = columns.metric_name {
        if rows.field(index) != attr::READY_METRIC.as_bytes() {
            sink.other_points(1);
            return;
        }
    }
    // The message names the column already; a field path would only repeat it.
    let point_issue = |sink: &mut Sink<'_, V>, _column: &str, message: String| {
        sink.issue(IssueKind::MalformedPoint, position, None, message);
    };
    let time_unix_nano = match time(rows.field(columns.time)) {
        Ok(nanos) => nanos,
        Err(message) => return point_issue(sink, TIME, message),
    };
    let mut dims = Dims::default();
    for (key, index) in ATTRS.iter().zip(columns.dims) {
        let Some(index) = index else { continue };
        let cell = rows.field(index);
        if cell.is_empty() {
            continue; // an empty cell is an absent dimension, as in Splunk
        }
        if unseen_model::Context::slot(key).is_some() {
            // Evidence: absent when it is not UTF-8 or over the limit; the point stays.
            if let Ok(value) = std::str::from_utf8(cell) {
                if value.len() <= sink.limits.max_dimension_bytes {
                    dims.set(key, value);
                }
            }
            continue;
        }
        let Ok(value) = std::str::from_utf8(cell) else {
            return point_issue(sink, key, otlp::bad_utf8("column", key));
        };
        if let Err(message) =
            otlp::check_dimension("column", key, value, sink.limits.max_dimension_bytes)
        {
            return point_issue(sink, key, message);
        }
        dims.set(key, value);
    }
    sink.point(PointRef {
        time_unix_nano,
        dims,
    });
}

/// `_time` as nanoseconds, floored to the second.
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

/// Bounded incremental CSV reading.
pub(crate) struct Rows<'r> {
    reader: &'r mut dyn BufRead,
    core: csv_core::Reader,
    max: usize,
    /// Unquoted field bytes of the current row, and where each field ends in it.
    out: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
    /// `\n`s consumed so far: the line of the next byte is `newlines + 1`.
    newlines: u64,
}

pub(crate) enum Row {
    End,
    Fields { line: u64 },
    TooLong { line: u64, size: u64 },
}

impl<'r> Rows<'r> {
    pub(crate) fn new(reader: &'r mut dyn BufRead, max: usize) -> Self {
        Rows {
            reader,
            core: csv_core::Reader::new(),
            max,
            out: vec![0; 1024],
            ends: vec![0; 32],
            fields: 0,
            newlines: 0,
        }
    }

    pub(crate) fn field_count(&self) -> usize {
        self.fields
    }

    pub(crate) fn field(&self, index: usize) -> &[u8] {
        let start = match index {
            0 => 0,
            _ => self.ends.get(index - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(index).copied().unwrap_or(start);
        self.out.get(start..end).unwrap_or_default()
    }

    fn fill(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.reader.fill_buf() {
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        self.reader.fill_buf()
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
            self.reader.consume(blank);
            self.newlines += newlines;
            if !all {
                return Ok(());
            }
        }
    }

    pub(crate) fn next(&mut self) -> io::Result<Row> {
        self.skip_blank()?;
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
            let input = match self.reader.fill_buf() {
                Ok(input) => input,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let (result, nin, nout, nend) = if over {
                self.core
                    .read_record(input, &mut scratch_out, &mut scratch_ends)
            } else {
                self.core
                    .read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..])
            };
            let consumed = &input[..nin];
            self.newlines += consumed.iter().filter(|&&b| b == b'\n').count() as u64;
            for &b in consumed.iter().rev().take(2).rev() {
                tail = [tail[1], b];
            }
            size += nin as u64;
            self.reader.consume(nin);
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
