//! OTLP protobuf as the Collector's file exporter writes it with `format: proto`: each
//! `ExportMetricsServiceRequest` preceded by its length as a 4-byte big-endian unsigned
//! integer (contrib `exporter/fileexporter/file_writer.go`, `exportMessageAsBuffer`).
//!
//! The decoder walks the wire format over the frame's bytes ([`wire`]): no message
//! structs, no `Bytes` reference counts, no allocation per point or per attribute. It reads
//! only what the rule needs (field numbers from opentelemetry-proto's `.proto` files):
//!
//! ```text
//! ExportMetricsServiceRequest  1 resource_metrics: ResourceMetrics (repeated)
//! ResourceMetrics              1 resource: Resource, 2 scope_metrics: ScopeMetrics (repeated)
//! Resource                     1 attributes: KeyValue (repeated)
//! ScopeMetrics                 2 metrics: Metric (repeated)
//! Metric                       1 name, 5 gauge, 7 sum, 9 histogram,
//!                              10 exponential_histogram, 11 summary
//! Gauge, Sum                   1 data_points: NumberDataPoint (repeated)
//! NumberDataPoint              3 time_unix_nano (fixed64), 7 attributes: KeyValue (repeated)
//! KeyValue                     1 key, 2 value: AnyValue
//! AnyValue                     1 string_value
//! ```
//!
//! Everything else is skipped by its length. A metric other than `k8s.container.ready`
//! costs a name comparison and a walk over its data's top-level fields that counts its
//! points without reading them.
//!
//! What a message means, and when it is malformed, is exactly what the `prost` decoder
//! this replaced said (kept in the tests as `legacy`, the differential tests' reference):
//! - the whole message is first decoded as `prost` would with the structs above, the data
//!   fields of a metric being opaque bytes (the last occurrence of each kept); its first
//!   error, with prost's message, makes the message malformed;
//! - then, metric by metric, the gauge and sum of `k8s.container.ready` are decoded as a
//!   `NumberData` message of their own, and every other data field has its points counted;
//!   the first error there makes the message malformed;
//! - only then are the points visited: a malformed message yields no point.
//!
//! Both happen in one pass, keeping the first error of each kind, then a visit of what the
//! pass collected.
//!
//! Reading a file, a frame is not read whole and then walked: it is read through a window
//! (the read-ahead plus the top-level field being walked, [`Frame`]) and walked as it
//! arrives, so that the walk reads bytes that were just copied and are still in the core's
//! cache, and memory is one top-level field rather than one frame. When a
//! `ResourceMetrics` ends, the values its ready points use (the attributes of `otlp::ATTRS`:
//! the rule's four keys and the evidence) are copied out of the window into one text buffer:
//! the resource's once, each point's own (usually none) after them. They are checked for
//! UTF-8 in one go when the points are visited, each point's own value over its resource's.
//! A key value that is not UTF-8 rejects the point; an evidence value that is not (or is
//! over `limits.max_dimension_bytes`) is absent, and the point is kept.

use std::io::{self, BufRead, Read};

use unseen_model::attr;
use unseen_model::Dims;

use crate::otlp::{self, DataKind, MetricPath, Value, KEY_SLOTS, SLOTS};
use crate::sink::{self, Fatal, Sink};
use crate::{IssueKind, Position, Visitor};

#[cfg(any(test, feature = "reference"))]
pub(crate) mod legacy;
#[cfg(test)]
mod tests;
mod wire;

use wire::{Cursor, RECURSION_LIMIT};

/// zstd's frame magic: the file exporter's `compression: zstd` compresses each message.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How far ahead of the walk a frame is read. The walk then reads bytes that were just
/// copied and are still in the core's cache, rather than a frame of megabytes that has
/// left it; and the buffer grows only with what arrives (a length prefix may lie). At
/// least the `BufReader`'s capacity (64 KiB), so that reads bypass its buffer.
const READ_AHEAD: usize = 128 << 10;

/// Reads frames until EOF. Only IO errors stop it.
pub(crate) fn read<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
) -> Result<(), Fatal> {
    read_frames(reader, sink, READ_AHEAD)
}

/// [`read`], with the read-ahead as a parameter (the tests and [`crate::reference`] make it
/// small).
pub(crate) fn read_frames<V: Visitor>(
    reader: &mut dyn BufRead,
    sink: &mut Sink<'_, V>,
    read_ahead: usize,
) -> Result<(), Fatal> {
    let max = sink.limits.max_record_bytes;
    let mut offset: u64 = 0;
    let mut index: u64 = 0;
    // The frames' window (see `Frame`), reused: its length only grows, so frames are read
    // straight into it, without reallocation or zeroing.
    let mut buf: Vec<u8> = Vec::new();
    let mut walk = Walk::default();
    loop {
        // A frame already whole in the reader's buffer (input in memory, a mapped file, a
        // small frame) is walked where it lies, without the window's copy.
        let avail = loop {
            match reader.fill_buf() {
                Ok(avail) => break avail,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        };
        if let Some(len) = whole_frame(avail, max) {
            index += 1;
            let position = Position::Record { index, offset };
            sink.record();
            let outcome = walk.decode(&avail[4..4 + len]);
            reader.consume(4 + len);
            offset += 4 + len as u64;
            walk.report(outcome, position, sink);
            continue;
        }
        let mut prefix = [0u8; 4];
        let got = read_full(reader, &mut prefix)?;
        if got == 0 {
            return Ok(());
        }
        index += 1;
        let position = Position::Record { index, offset };
        sink.record();
        if got < prefix.len() {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                format!("file ends inside a length prefix: expected 4 bytes, found {got}"),
            );
            return Ok(());
        }
        let len = u32::from_be_bytes(prefix);
        offset += 4;
        if u64::from(len) > max as u64 {
            sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                sink::too_long("message", len.into(), max),
            );
            // Read and drop, so memory stays bounded; a truncated file just ends here.
            let skipped = io::copy(&mut reader.take(len.into()), &mut io::sink())?;
            offset += skipped;
            if skipped < u64::from(len) {
                return Ok(());
            }
            continue;
        }
        let mut frame = Frame {
            reader: &mut *reader,
            buf: &mut buf,
            len: len as usize, // <= max, a usize
            base: 0,
            filled: 0,
            read_ahead,
        };
        let outcome = walk.read_and_decode(&mut frame);
        let (len, got) = (frame.len, frame.read());
        offset += got as u64;
        match outcome? {
            Some(outcome) => walk.report(outcome, position, sink),
            None => {
                sink.issue(
                    IssueKind::MalformedRecord,
                    position,
                    None,
                    format!("file ends inside a message: expected {len} bytes, found {got}"),
                );
                return Ok(());
            }
        }
    }
}

/// The length of the frame at the start of `avail` when its prefix and all of its bytes are
/// there and it is within `max`.
#[inline]
fn whole_frame(avail: &[u8], max: usize) -> Option<usize> {
    let prefix: [u8; 4] = avail.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(prefix)).ok()?;
    (len <= max && avail.len() - 4 >= len).then_some(len)
}

/// Reads until `buf` is full or EOF; returns how many bytes were read.
pub(crate) fn read_full(reader: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

/// One frame being read, through a window: `buf[..filled]` holds the frame's bytes
/// `base..base + filled`. Bytes the walk is done with are dropped as more arrive, so the
/// buffer stays the size of a top-level field plus the read-ahead, and stays in the
/// core's cache.
struct Frame<'r, 'b> {
    reader: &'r mut dyn BufRead,
    buf: &'b mut Vec<u8>,
    /// The frame's length, from its prefix.
    len: usize,
    /// Where in the frame `buf` starts.
    base: usize,
    /// How much of `buf` holds frame bytes.
    filled: usize,
    /// [`READ_AHEAD`], but in the tests.
    read_ahead: usize,
}

impl Frame<'_, '_> {
    /// How much of the frame has been read.
    fn read(&self) -> usize {
        self.base + self.filled
    }

    /// Reads until the frame's bytes up to `want` (at most its length) are in, and up to
    /// `read_ahead` more; the bytes before `from` may be dropped. `false` if the input
    /// ended first.
    ///
    /// Each read at most doubles what the window holds: a length that lies (the prefix's,
    /// or a field's) costs no more memory than the bytes that actually arrive.
    #[inline(always)]
    fn fill(&mut self, from: usize, want: usize) -> io::Result<bool> {
        if self.read() >= want.min(self.len) {
            return Ok(true);
        }
        self.read_more(from, want)
    }

    #[inline(never)]
    fn read_more(&mut self, from: usize, want: usize) -> io::Result<bool> {
        let want = want.min(self.len);
        while self.read() < want {
            let mut end = (want.max(self.read() + self.read_ahead).min(self.len) - self.base)
                .min(self.filled + self.filled.max(self.read_ahead));
            if end > self.buf.len() && from > self.base {
                // Slide: drop what the walk is done with.
                let done = from - self.base;
                self.buf.copy_within(done..self.filled, 0);
                self.base = from;
                self.filled -= done;
                end -= done;
            }
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            let got = read_full(self.reader, &mut self.buf[self.filled..end])?;
            self.filled += got;
            if self.filled < end {
                break;
            }
        }
        Ok(self.read() >= want)
    }

    /// The window: the frame's bytes from `base` on, as far as they have been read.
    fn window(&self) -> &[u8] {
        &self.buf[..self.filled]
    }
}

/// A protobuf base-128 varint; `None` if `buf` ends inside it or it is over 10 bytes.
/// Lenient (a 10th byte over 1 wraps): what format detection and the point counting of
/// other metrics have always accepted.
#[inline]
pub(crate) fn decode_varint(buf: &mut &[u8]) -> Option<u64> {
    if let Some((&byte, rest)) = buf.split_first() {
        if byte < 0x80 {
            *buf = rest;
            return Some(u64::from(byte));
        }
    }
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Decodes one message and visits it; a message that does not decode is one
/// `MalformedRecord` and no point.
pub(crate) fn decode_frame<V: Visitor>(
    frame: impl AsRef<[u8]>,
    position: Position,
    sink: &mut Sink<'_, V>,
) {
    let frame = frame.as_ref();
    let mut walk = Walk::default();
    // A new walk's buffers start empty, and the values a k8s_cluster batch's ready points
    // use (their resources' attributes and their own) come to about a ninth of its bytes:
    // grown by doubling, the copies of a few-megabyte body were a twentieth of the time
    // from bodies to findings. One allocation of a quarter instead, which such a batch
    // does not outgrow (pages it does not touch cost nothing); more values grow it as
    // before.
    walk.text.reserve(frame.len() / 4);
    let outcome = walk.decode(frame);
    walk.report(outcome, position, sink);
}

/// Where something is in the frame: `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    /// Where `part` (a slice of `frame`) is in it.
    #[inline(always)]
    fn of(frame: &[u8], part: &[u8]) -> Span {
        Span {
            start: part.as_ptr() as usize - frame.as_ptr() as usize,
            len: part.len(),
        }
    }

    #[inline(always)]
    fn end(self) -> usize {
        self.start + self.len
    }
}

/// One relevant attribute of an attribute list: its slot (`otlp::ATTRS` order) and where its
/// first string value is (checked for UTF-8 only when a point uses it).
type Entry = (usize, Span);

/// The relevant attributes of one attribute list, in the order found: a range of
/// `Walk::resources` or `Walk::own`. Only what is there, not a slot per attribute: copied,
/// kept and read per point, so the fewer bytes the better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entries {
    start: usize,
    end: usize,
}

impl Entries {
    #[inline(always)]
    fn of(self, list: &[Entry]) -> &[Entry] {
        list.get(self.start..self.end).unwrap_or_default()
    }

    #[inline(always)]
    fn of_mut(self, list: &mut [Entry]) -> &mut [Entry] {
        list.get_mut(self.start..self.end).unwrap_or_default()
    }
}

/// What the walk found, in input order, to hand on once the whole message decoded.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// A gauge or sum point of `k8s.container.ready`.
    Point {
        time_unix_nano: u64,
        /// Its resource's values in `Walk::resources`, set when its `ResourceMetrics` ends.
        resource: Entries,
        /// Its own values in `Walk::own`: where they are in the frame while its
        /// `ResourceMetrics` is walked, then in `Walk::text`.
        own: Entries,
        path: MetricPath,
        kind: DataKind,
        index: usize,
    },
    /// `k8s.container.ready` as a histogram, exponential histogram or summary.
    WrongKind {
        kind: DataKind,
        points: u64,
        path: MetricPath,
    },
}

/// How a message decoded.
enum Outcome {
    Decoded,
    /// zstd-compressed (the file exporter's `compression: zstd`).
    Zstd,
    /// prost's error for its structure, or the first error in its metrics' data.
    Malformed(String),
}

/// One message's walk, and its buffers, reused from message to message: nothing is
/// allocated per point or per attribute.
///
/// Recursion budgets (`ctx`) are prost's: [`RECURSION_LIMIT`] for the top message's
/// fields, one less per nested message. Each nested-message function takes the budget of
/// the message its field is in, and reads its own fields with one less.
#[derive(Default)]
struct Walk {
    events: Vec<Event>,
    /// The values the ready points use, one after the other: copied while they are in the
    /// cache, checked for UTF-8 in one go, and compact for the visitor to read.
    text: Vec<u8>,
    /// The values of each resource with ready points (in the frame while its
    /// `ResourceMetrics` is walked, then in `text`), each resource's a range.
    resources: Vec<Entry>,
    /// The ready points' own values (likewise), each point's a range.
    own: Vec<Entry>,
    other_points: u64,
    /// The first error in the metrics' data, in the order the data is prepared (metric by
    /// metric; gauge, sum, histogram, exponential histogram, summary).
    data_error: Option<String>,
    /// The position of the next top-level field.
    pos: usize,
    /// The index of the next `ResourceMetrics`.
    ri: usize,
}

const REQUEST: &str = "ExportMetricsServiceRequest";
const RESOURCE_METRICS: &str = "ResourceMetrics";
const RESOURCE: &str = "Resource";
const SCOPE_METRICS: &str = "ScopeMetrics";
const METRIC: &str = "Metric";
const NUMBER_DATA: &str = "NumberData";
const NUMBER_DATA_POINT: &str = "NumberDataPoint";
const KEY_VALUE: &str = "KeyValue";
const ANY_VALUE: &str = "AnyValue";

/// The `Metric.data` fields in the order their data is prepared: kind, prost field name
/// (for error messages).
const DATA_FIELDS: [(DataKind, &str); 5] = [
    (DataKind::Gauge, "gauge"),
    (DataKind::Sum, "sum"),
    (DataKind::Histogram, "histogram"),
    (DataKind::ExponentialHistogram, "exponential_histogram"),
    (DataKind::Summary, "summary"),
];

impl Walk {
    fn reset(&mut self) {
        self.events.clear();
        self.text.clear();
        self.resources.clear();
        self.own.clear();
        self.other_points = 0;
        self.data_error = None;
        self.pos = 0;
        self.ri = 0;
    }

    /// Walks a whole message.
    fn decode(&mut self, frame: &[u8]) -> Outcome {
        self.reset();
        if frame.starts_with(&ZSTD_MAGIC) {
            return Outcome::Zstd;
        }
        while self.pos < frame.len() {
            if let Err(error) = self.top_field(frame, 0) {
                return Outcome::Malformed(error.to_string());
            }
        }
        self.data_outcome()
    }

    /// Reads a frame and walks it as it arrives, top-level field by top-level field, so
    /// that the walk reads what was just copied. `None` if the input ends inside it.
    ///
    /// A field that decodes from the bytes read so far decodes the same from the whole
    /// frame: every bound is only further away then. A field that does not is decided on
    /// the whole frame: what it collected is dropped, the rest of the frame read, and the
    /// field walked again.
    fn read_and_decode(&mut self, frame: &mut Frame<'_, '_>) -> io::Result<Option<Outcome>> {
        self.reset();
        if !frame.fill(0, ZSTD_MAGIC.len())? {
            return Ok(None);
        }
        if frame.window().starts_with(&ZSTD_MAGIC) {
            return Ok(frame.fill(0, frame.len)?.then_some(Outcome::Zstd));
        }
        while self.pos < frame.len {
            if frame.read() < frame.len {
                // The next field's key and length, then the field (or, for a field that is
                // not length-delimited, the rest of the frame).
                if !frame.fill(self.pos, self.pos + 2 * MAX_VARINT)? {
                    return Ok(None);
                }
                let end = field_end(frame.window(), self.pos - frame.base)
                    .map_or(frame.len, |end| frame.base + end);
                if !frame.fill(self.pos, end)? {
                    return Ok(None);
                }
            }
            let before = (
                self.events.len(),
                self.text.len(),
                self.resources.len(),
                self.own.len(),
                self.other_points,
                self.data_error.is_some(),
            );
            if let Err(error) = self.top_field(frame.window(), frame.base) {
                if frame.read() == frame.len {
                    return Ok(Some(Outcome::Malformed(error.to_string())));
                }
                let (events, text, resources, own, other_points, data_error) = before;
                self.events.truncate(events);
                self.text.truncate(text);
                self.resources.truncate(resources);
                self.own.truncate(own);
                self.other_points = other_points;
                if !data_error {
                    self.data_error = None;
                }
                if !frame.fill(self.pos, frame.len)? {
                    return Ok(None);
                }
            }
        }
        Ok(Some(self.data_outcome()))
    }

    fn data_outcome(&mut self) -> Outcome {
        match self.data_error.take() {
            Some(error) => Outcome::Malformed(error),
            None => Outcome::Decoded,
        }
    }

    /// Reports a walked message: its points and issues, or why it is malformed.
    fn report<V: Visitor>(&self, outcome: Outcome, position: Position, sink: &mut Sink<'_, V>) {
        match outcome {
            Outcome::Decoded => self.visit(position, sink),
            Outcome::Zstd => sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                "message is zstd-compressed (file exporter `compression: zstd`), which unseen does not read; \
                 export without compression (gzip the file instead if needed)"
                    .to_string(),
            ),
            Outcome::Malformed(error) => sink.issue(
                IssueKind::MalformedRecord,
                position,
                None,
                format!("not an OTLP protobuf ExportMetricsServiceRequest: {error}"),
            ),
        }
    }

    /// One field of `ExportMetricsServiceRequest`, at `self.pos`; `window` holds the
    /// frame from `base` on, as far as it has been read.
    fn top_field(&mut self, window: &[u8], base: usize) -> wire::Result<()> {
        let ctx = RECURSION_LIMIT;
        let mut cur = Cursor::at(window, self.pos - base);
        let (tag, wire) = cur.key()?;
        if tag == 1 {
            wire::prefetch_ahead(window, cur.pos(), PREFETCH_PER_FIELD);
            self.resource_metrics(&mut cur, wire, ctx)
                .map_err(|e| e.push(REQUEST, "resource_metrics"))?;
            self.ri += 1;
        } else {
            cur.skip(wire, tag, ctx)?;
        }
        self.pos = base + cur.pos();
        Ok(())
    }

    fn resource_metrics(&mut self, cur: &mut Cursor<'_>, wire: u8, ctx: u32) -> wire::Result<()> {
        let end = cur.enter(wire, ctx)?;
        let ctx = ctx - 1;
        // The resource's values (where they are in the window): `resource[slot]` for each
        // bit `slot` of `found` (the first string value of each wins).
        let mut resource = [Span { start: 0, len: 0 }; SLOTS];
        let mut found = 0;
        let events = self.events.len();
        let mut si = 0;
        while cur.pos() < end {
            let (tag, wire) = cur.key()?;
            match tag {
                1 => self::resource(cur, wire, ctx, &mut resource, &mut found)
                    .map_err(|e| e.push(RESOURCE_METRICS, "resource"))?,
                2 => {
                    self.scope_metrics(cur, wire, ctx, si)
                        .map_err(|e| e.push(RESOURCE_METRICS, "scope_metrics"))?;
                    si += 1;
                }
                _ => cur.skip(wire, tag, ctx)?,
            }
        }
        cur.leave(end)?;
        // The resource is complete (it may come after the metrics): copy out its values,
        // once for all its points, and each point's own.
        let window = cur.buf();
        let mut copied = None;
        for event in &mut self.events[events..] {
            if let Event::Point {
                resource: values,
                own,
                ..
            } = event
            {
                *values = *copied.get_or_insert_with(|| {
                    copy_resource(
                        &mut self.text,
                        &mut self.resources,
                        window,
                        &resource,
                        found,
                    )
                });
                for (_, value) in own.of_mut(&mut self.own) {
                    *value = copy(&mut self.text, window, *value);
                }
            }
        }
        Ok(())
    }

    fn scope_metrics(
        &mut self,
        cur: &mut Cursor<'_>,
        wire: u8,
        ctx: u32,
        si: usize,
    ) -> wire::Result<()> {
        let end = cur.enter(wire, ctx)?;
        let ctx = ctx - 1;
        let mut mi = 0;
        while cur.pos() < end {
            let (tag, wire) = match cur.peek() {
                Some(0x12) => {
                    cur.advance(1);
                    (2, wire::LEN)
                }
                // scope, schema_url
                Some(0x0a | 0x1a) => {
                    cur.advance(1);
                    cur.skip_len(ctx)?;
                    continue;
                }
                _ => cur.key()?,
            };
            if tag == 2 {
                let path = MetricPath {
                    resource: self.ri,
                    scope: si,
                    metric: mi,
                };
                self.metric(cur, wire, ctx, path)
                    .map_err(|e| e.push(SCOPE_METRICS, "metrics"))?;
                mi += 1;
            } else {
                cur.skip(wire, tag, ctx)?;
            }
        }
        cur.leave(end)
    }

    fn metric(
        &mut self,
        cur: &mut Cursor<'_>,
        wire: u8,
        ctx: u32,
        path: MetricPath,
    ) -> wire::Result<()> {
        let end = cur.enter(wire, ctx)?;
        let ctx = ctx - 1;
        let mut name: &[u8] = b"";
        // The last occurrence of each, as prost keeps it.
        let mut data: [&[u8]; 5] = [&[]; 5];
        // Which of `data` the metric has (bit `slot`).
        let mut present = 0u8;
        while cur.pos() < end {
            // The usual fields by their one-byte keys (tag << 3 | wire type 2); any other
            // key the general way.
            let slot = match cur.peek() {
                Some(0x0a) => {
                    cur.advance(1);
                    name = cur.len_bytes().map_err(|e| e.push(METRIC, "name"))?;
                    continue;
                }
                // description, unit
                Some(0x12 | 0x1a) => {
                    cur.advance(1);
                    cur.skip_len(ctx)?;
                    continue;
                }
                Some(0x2a) => 0,
                Some(0x3a) => 1,
                Some(0x4a) => 2,
                Some(0x52) => 3,
                Some(0x5a) => 4,
                _ => {
                    let (tag, wire) = cur.key()?;
                    let slot = match tag {
                        1 => {
                            name = cur.bytes(wire).map_err(|e| e.push(METRIC, "name"))?;
                            continue;
                        }
                        5 => 0,
                        7 => 1,
                        9 => 2,
                        10 => 3,
                        11 => 4,
                        _ => {
                            cur.skip(wire, tag, ctx)?;
                            continue;
                        }
                    };
                    data[slot] = cur
                        .bytes(wire)
                        .map_err(|e| e.push(METRIC, DATA_FIELDS[slot].1))?;
                    present |= 1 << slot;
                    continue;
                }
            };
            cur.advance(1);
            data[slot] = cur
                .len_bytes()
                .map_err(|e| e.push(METRIC, DATA_FIELDS[slot].1))?;
            present |= 1 << slot;
        }
        cur.leave(end)?;
        if self.data_error.is_none() && present != 0 {
            let ready = name == attr::READY_METRIC.as_bytes();
            if let Err(error) = self.prepare(cur.buf(), ready, &data, present, path) {
                self.data_error = Some(error);
            }
        }
        Ok(())
    }

    /// A metric's data (`data[slot]` for each bit of `present`): the ready metric's
    /// points collected, any other's counted.
    fn prepare(
        &mut self,
        frame: &[u8],
        ready: bool,
        data: &[&[u8]; 5],
        mut present: u8,
        path: MetricPath,
    ) -> Result<(), String> {
        while present != 0 {
            let slot = present.trailing_zeros() as usize;
            present &= present - 1;
            let (kind, _) = DATA_FIELDS[slot];
            let bytes = data[slot];
            match kind {
                DataKind::Gauge | DataKind::Sum if ready => {
                    self.number_data(frame, bytes, kind, path)
                        .map_err(|e| e.to_string())?;
                }
                DataKind::Gauge | DataKind::Sum => self.other_points += count_points(bytes)?,
                _ if ready => self.events.push(Event::WrongKind {
                    kind,
                    points: count_points(bytes)?,
                    path,
                }),
                _ => self.other_points += count_points(bytes)?,
            }
        }
        Ok(())
    }

    /// A gauge or sum of `k8s.container.ready`, decoded as its own message (`NumberData`:
    /// `repeated NumberDataPoint data_points = 1`); its points are collected.
    fn number_data(
        &mut self,
        frame: &[u8],
        bytes: &[u8],
        kind: DataKind,
        path: MetricPath,
    ) -> wire::Result<()> {
        let mut cur = Cursor::new(bytes);
        let ctx = RECURSION_LIMIT;
        let mut index = 0;
        while !cur.at_end() {
            let (tag, wire) = cur.key()?;
            if tag == 1 {
                let (time_unix_nano, own) = number_point(frame, &mut cur, wire, ctx, &mut self.own)
                    .map_err(|e| e.push(NUMBER_DATA, "data_points"))?;
                self.events.push(Event::Point {
                    time_unix_nano,
                    // Set when the `ResourceMetrics` ends.
                    resource: Entries { start: 0, end: 0 },
                    own,
                    path,
                    kind,
                    index,
                });
                index += 1;
            } else {
                cur.skip(wire, tag, ctx)?;
            }
        }
        Ok(())
    }

    /// Hands on what the walk collected: the message decoded.
    fn visit<V: Visitor>(&self, position: Position, sink: &mut Sink<'_, V>) {
        sink.other_points(self.other_points);
        // The values are text up to the first that is not UTF-8 (if any): one check for
        // all of them, and one per value after that one.
        let valid = match std::str::from_utf8(&self.text) {
            Ok(text) => text,
            Err(error) => {
                std::str::from_utf8(&self.text[..error.valid_up_to()]).unwrap_or_default()
            }
        };
        for event in &self.events {
            match *event {
                Event::Point {
                    time_unix_nano,
                    resource,
                    own,
                    path,
                    kind,
                    index,
                } => {
                    let text = |span: Span| match valid.get(span.start..span.end()) {
                        Some(text) => Ok(text),
                        None => std::str::from_utf8(&self.text[span.start..span.end()]),
                    };
                    let limit = sink.limits.max_dimension_bytes;
                    let mut keys: otlp::Keys<'_> = [None; KEY_SLOTS];
                    let mut dims = Dims::default();
                    // Its resource's values, then its own over them.
                    let values = resource.of(&self.resources).iter();
                    for &(slot, span) in values.chain(own.of(&self.own)) {
                        if let Some(key) = keys.get_mut(slot) {
                            *key = Some(match text(span) {
                                Ok(text) => Value::Str(text),
                                Err(_) => Value::BadUtf8,
                            });
                        } else if let Some(value) = dims.context.0.get_mut(slot - KEY_SLOTS) {
                            // Evidence over the limit or not UTF-8 is absent.
                            *value = match span.len <= limit {
                                true => text(span).ok(),
                                false => None,
                            };
                        }
                    }
                    otlp::ready_values(sink, position, time_unix_nano, keys, dims, || {
                        path.point(kind, index)
                    });
                }
                Event::WrongKind { kind, points, path } => {
                    otlp::ready_of_wrong_kind(sink, position, kind, points, path)
                }
            }
        }
    }
}

/// Bytes prefetched per `ResourceMetrics` walked: about one k8s_cluster container's.
const PREFETCH_PER_FIELD: usize = 2 << 10;

/// A varint's longest form.
const MAX_VARINT: usize = 10;

/// Where the top-level field at `pos` ends, if it is length-delimited and its key and
/// length are there to read; `None` otherwise (the frame is then read whole).
fn field_end(frame: &[u8], pos: usize) -> Option<usize> {
    let mut cur = Cursor::at(frame, pos);
    let (_, wire) = cur.key().ok()?;
    if wire != wire::LEN {
        return None;
    }
    let len = cur.varint().ok()?;
    cur.pos().checked_add(usize::try_from(len).ok()?)
}

/// A `Resource`; a second one in the same `ResourceMetrics` adds its attributes (prost
/// merges an optional message field that appears twice).
fn resource(
    cur: &mut Cursor<'_>,
    wire: u8,
    ctx: u32,
    values: &mut [Span; SLOTS],
    found: &mut u32,
) -> wire::Result<()> {
    let end = cur.enter(wire, ctx)?;
    let ctx = ctx - 1;
    while cur.pos() < end {
        let (tag, wire) = match cur.peek() {
            Some(0x0a) => {
                cur.advance(1);
                (1, wire::LEN)
            }
            _ => cur.key()?,
        };
        if tag == 1 {
            let attribute =
                key_value(cur, wire, ctx).map_err(|e| e.push(RESOURCE, "attributes"))?;
            if let Some((index, value)) = attribute {
                let bit = 1 << index;
                if *found & bit == 0 {
                    *found |= bit;
                    values[index] = Span::of(cur.buf(), value);
                }
            }
        } else {
            cur.skip(wire, tag, ctx)?;
        }
    }
    cur.leave(end)
}

/// A `NumberDataPoint`: its time, and its own relevant attributes, pushed to `own` (where
/// they are in `frame`).
fn number_point(
    frame: &[u8],
    cur: &mut Cursor<'_>,
    wire: u8,
    ctx: u32,
    own: &mut Vec<Entry>,
) -> wire::Result<(u64, Entries)> {
    let end = cur.enter(wire, ctx)?;
    let ctx = ctx - 1;
    let mut time_unix_nano = 0;
    let start = own.len();
    // Bit `slot`: the point has a value for it already (the first string value wins).
    let mut found = 0;
    while cur.pos() < end {
        let (tag, wire) = cur.key()?;
        match tag {
            3 => {
                time_unix_nano = cur
                    .fixed64(wire)
                    .map_err(|e| e.push(NUMBER_DATA_POINT, "time_unix_nano"))?
            }
            7 => {
                let attribute = key_value(cur, wire, ctx)
                    .map_err(|e| e.push(NUMBER_DATA_POINT, "attributes"))?;
                if let Some((index, value)) = attribute {
                    offer(own, &mut found, index, Span::of(frame, value));
                }
            }
            _ => cur.skip(wire, tag, ctx)?,
        }
    }
    cur.leave(end)?;
    Ok((
        time_unix_nano,
        Entries {
            start,
            end: own.len(),
        },
    ))
}

/// Copies a resource's values (`values[slot]` for each bit `slot` of `found`) out of the
/// window to the end of `text`, and lists them in `list`: where they are in it.
#[inline(always)]
fn copy_resource(
    text: &mut Vec<u8>,
    list: &mut Vec<Entry>,
    window: &[u8],
    values: &[Span; SLOTS],
    found: u32,
) -> Entries {
    let start = list.len();
    let count = found.count_ones() as usize;
    text.reserve(count * CHUNK);
    list.reserve(count);
    let mut bits = found;
    while bits != 0 {
        let slot = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if let Some(&value) = values.get(slot) {
            list.push((slot, copy(text, window, value)));
        }
    }
    Entries {
        start,
        end: list.len(),
    }
}

/// Copies a value out of the window to the end of `text`: where it is there.
///
/// Most values are short, and for them a `memcpy` call costs more than the copy: a value
/// of up to [`CHUNK`] bytes (when the window has that many from its start) is copied as a
/// whole chunk, a copy of fixed size that compiles to a few vector moves, and the bytes
/// after the value are cut off again.
#[inline(always)]
fn copy(text: &mut Vec<u8>, window: &[u8], value: Span) -> Span {
    let start = text.len();
    let chunk = window
        .get(value.start..)
        .and_then(<[u8]>::first_chunk::<CHUNK>);
    match chunk {
        Some(chunk) if value.len <= CHUNK => {
            text.extend_from_slice(chunk);
            text.truncate(start + value.len);
        }
        _ => text.extend_from_slice(&window[value.start..value.end()]),
    }
    Span {
        start,
        len: value.len,
    }
}

/// See [`copy`]: longer than most names, image references and container IDs.
const CHUNK: usize = 64;

/// Keeps the first string value of each relevant key (pdata's `Map.Get`): `found` has bit
/// `slot` set once `list` has a value for it.
#[inline(always)]
fn offer(list: &mut Vec<Entry>, found: &mut u32, index: usize, value: Span) {
    let bit = 1 << index;
    if *found & bit == 0 {
        *found |= bit;
        list.push((index, value));
    }
}

const _: () = assert!(SLOTS <= 32, "a bit per slot in a `u32`");

/// What a `KeyValue` offers: the slot index of its key and its string value, when its key
/// is one the decoders read (`otlp::ATTRS`) and its value has a `string_value`.
type Found<'a> = Option<(usize, &'a [u8])>;

/// A `KeyValue`: what it offers.
#[inline(always)]
fn key_value<'a>(cur: &mut Cursor<'a>, wire: u8, ctx: u32) -> wire::Result<Found<'a>> {
    if wire == wire::LEN {
        if let Some(found) = string_key_value(cur) {
            return Ok(found);
        }
    }
    let (found, pos) = key_value_fields(*cur, wire, ctx)?;
    cur.advance(pos - cur.pos());
    Ok(found)
}

/// The shape of nearly every attribute, read without the general field loop: a
/// `KeyValue` of under 128 bytes holding exactly a key and a value whose only field is a
/// `string_value` (`0a kl key.. 12 vl 0a sl value..`, every length one byte, the parts
/// tiling the message exactly). Any other shape, valid or not, is `None`: the general
/// walk reads it.
#[inline(always)]
fn string_key_value<'a>(cur: &mut Cursor<'a>) -> Option<Found<'a>> {
    let rest = cur.rest();
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    // `len < 0x80`: a one-byte varint. 6 bytes of tags and lengths around key and value.
    if !(6..0x80).contains(&len) {
        return None;
    }
    let message = rest.get(..len)?;
    let &[0x0a, key_len, ref tail @ ..] = message else {
        return None;
    };
    let (key, tail) = tail.split_at_checked(usize::from(key_len))?;
    let &[0x12, value_len, 0x0a, string_len, ref string @ ..] = tail else {
        return None;
    };
    if usize::from(value_len) != string.len() + 2 || usize::from(string_len) != string.len() {
        return None;
    }
    cur.advance(1 + len);
    Some(otlp::key_index(key).map(|index| (index, string)))
}

/// Any `KeyValue`, field by field; also returns the position after it. (Takes the cursor
/// by value: a cursor whose address is never taken stays in registers.)
#[inline(never)]
fn key_value_fields<'a>(
    mut cur: Cursor<'a>,
    wire: u8,
    ctx: u32,
) -> wire::Result<(Found<'a>, usize)> {
    let cur = &mut cur;
    let end = cur.enter(wire, ctx)?;
    let ctx = ctx - 1;
    let mut key: &[u8] = b"";
    let mut string_value = None;
    while cur.pos() < end {
        let (tag, wire) = cur.key()?;
        match tag {
            1 => key = cur.bytes(wire).map_err(|e| e.push(KEY_VALUE, "key"))?,
            // The value is merged across occurrences: the last `string_value` wins.
            2 => {
                if let Some(value) =
                    any_value(cur, wire, ctx).map_err(|e| e.push(KEY_VALUE, "value"))?
                {
                    string_value = Some(value);
                }
            }
            _ => cur.skip(wire, tag, ctx)?,
        }
    }
    cur.leave(end)?;
    let found = match (otlp::key_index(key), string_value) {
        (Some(index), Some(value)) => Some((index, value)),
        _ => None,
    };
    Ok((found, cur.pos()))
}

/// An `AnyValue`'s last `string_value`, if any.
fn any_value<'a>(cur: &mut Cursor<'a>, wire: u8, ctx: u32) -> wire::Result<Option<&'a [u8]>> {
    let end = cur.enter(wire, ctx)?;
    let ctx = ctx - 1;
    let mut string_value = None;
    while cur.pos() < end {
        let (tag, wire) = cur.key()?;
        if tag == 1 {
            string_value = Some(
                cur.bytes(wire)
                    .map_err(|e| e.push(ANY_VALUE, "string_value"))?,
            );
        } else {
            cur.skip(wire, tag, ctx)?;
        }
    }
    cur.leave(end)?;
    Ok(string_value)
}

/// Counts the `data_points` (field 1) of a Gauge, Sum, Histogram, ExponentialHistogram or
/// Summary without decoding them: walks the fields, skipping each.
fn count_points(mut buf: &[u8]) -> Result<u64, String> {
    let truncated = || "metric data ends inside a field".to_string();
    let mut count = 0;
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok_or_else(truncated)?;
        let (field, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => {
                decode_varint(&mut buf).ok_or_else(truncated)?;
                0
            }
            1 => 8,
            2 => {
                if field == 1 {
                    count += 1;
                }
                decode_varint(&mut buf).ok_or_else(truncated)?
            }
            5 => 4,
            _ => return Err(format!("invalid wire type {wire} in metric data")),
        };
        let skip = usize::try_from(skip)
            .ok()
            .filter(|&n| n <= buf.len())
            .ok_or_else(truncated)?;
        buf = &buf[skip..];
    }
    Ok(count)
}
