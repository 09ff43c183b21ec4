//! Opening a source: transparent gzip, and telling the format from the first bytes.

use std::io::{self, BufRead, BufReader, Cursor, Read};

use flate2::read::MultiGzDecoder;

use crate::Format;

/// How much is looked at to tell the format; also the read buffer's size.
pub(crate) const HEAD: usize = 64 * 1024;

pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A source with its first bytes (after gzip is removed) read ahead.
pub(crate) struct Opened<'a> {
    head: Vec<u8>,
    rest: Box<dyn Read + 'a>,
}

impl<'a> Opened<'a> {
    pub(crate) fn new(input: impl Read + 'a) -> io::Result<Self> {
        let mut input: Box<dyn Read + 'a> = Box::new(input);
        let head = read_head(&mut input)?;
        if !head.starts_with(&GZIP_MAGIC) {
            return Ok(Opened { head, rest: input });
        }
        // `Multi`: `gzip a; gzip b; cat a.gz b.gz` (and rotated, appended files) are valid
        // gzip and must decode whole, not stop after the first member.
        let decoder = MultiGzDecoder::new(Cursor::new(head).chain(input));
        let mut decoded: Box<dyn Read + 'a> = Box::new(GzipErrors(decoder));
        let head = read_head(&mut decoded)?;
        Ok(Opened {
            head,
            rest: decoded,
        })
    }

    /// The first bytes of the (decompressed) input, up to 64 KiB.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The whole (decompressed) input, from its first byte.
    pub(crate) fn into_reader(self) -> BufReader<impl Read + 'a> {
        BufReader::with_capacity(HEAD, Cursor::new(self.head).chain(self.rest))
    }
}

fn read_head(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD);
    input.take(HEAD as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Says which errors came from the gzip layer: "corrupt deflate stream" alone does not tell
/// a user that the file was compressed at all.
struct GzipErrors<R>(R);

impl<R: Read> Read for GzipErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|error| {
            io::Error::new(error.kind(), format!("gzip-compressed input: {error}"))
        })
    }
}

/// Tells the format of a (decompressed) input from its first bytes, `None` when it is none
/// of them (or empty). The rules, in order:
///
/// 1. OTLP protobuf (file exporter framing): after any empty frames (`00 00 00 00`, an
///    empty request), a 4-byte big-endian length from 2 bytes to 1 GiB, then the tag byte
///    `0x0a` (field 1 `resource_metrics`, length-delimited) and, where visible, a varint
///    length that fits in the message; or the length followed by zstd's magic (the
///    exporter's `compression: zstd`, reported per message); or only empty frames. Checked
///    on the raw bytes: a length prefix may contain whitespace bytes.
/// 2. After a UTF-8 BOM and ASCII whitespace: `{` is OTLP/JSON lines.
/// 3. `resourceMetrics:` or `---` is the golden YAML.
/// 4. A first line that parses as a CSV header with a `_time` column is Splunk CSV.
pub fn detect_format(head: &[u8]) -> Option<Format> {
    if is_proto_frame(head) {
        return Some(Format::OtlpProto);
    }
    let text = skip_blank(head);
    if text.starts_with(b"{") {
        return Some(Format::OtlpJson);
    }
    if text.starts_with(b"resourceMetrics:") || text.starts_with(b"---") {
        return Some(Format::OtlpYaml);
    }
    let line = match memchr::memchr(b'\n', text) {
        Some(end) => &text[..end],
        None => text,
    };
    if !line.is_empty() && crate::csv::header_has_time(line) {
        return Some(Format::Csv);
    }
    None
}

fn is_proto_frame(head: &[u8]) -> bool {
    // Empty requests (a zero length, nothing after it) are valid frames; look past them.
    let mut head = head;
    let mut empty_frames = 0;
    while let Some(rest) = head.strip_prefix(&[0u8; 4]) {
        head = rest;
        empty_frames += 1;
    }
    if head.is_empty() {
        return empty_frames > 0;
    }
    let Some((prefix, rest)) = head.split_first_chunk::<4>() else {
        return false;
    };
    let len = u64::from(u32::from_be_bytes(*prefix));
    if !(2..=1 << 30).contains(&len) {
        return false;
    }
    if rest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return true;
    }
    let Some((&0x0a, mut after_tag)) = rest.split_first() else {
        return false;
    };
    // The ResourceMetrics' own length must fit in the message (if the head shows it).
    let before = after_tag.len();
    match crate::proto::decode_varint(&mut after_tag) {
        Some(inner) => {
            let varint_len = (before - after_tag.len()) as u64;
            inner
                .checked_add(1 + varint_len)
                .is_some_and(|total| total <= len)
        }
        // Cut off by the end of the head: cannot check, the tag was enough.
        None => before < 10,
    }
}

/// Without a leading UTF-8 BOM and ASCII whitespace.
fn skip_blank(head: &[u8]) -> &[u8] {
    let text = head.strip_prefix(BOM).unwrap_or(head);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    &text[start..]
}

/// Whether the input is empty or only whitespace (read as an empty OTLP/JSON file).
pub(crate) fn is_blank(head: &[u8]) -> bool {
    head.len() < HEAD && skip_blank(head).is_empty()
}

/// The first bytes, escaped and quoted, for an error message.
pub(crate) fn show_bytes(head: &[u8]) -> String {
    const SHOWN: usize = 32;
    let shown = &head[..head.len().min(SHOWN)];
    let more = if head.len() > SHOWN { "..." } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

/// Reads the whole input into `buf`, up to `max` bytes; `false` if there was more.
pub(crate) fn read_all_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<bool> {
    reader.take(max as u64 + 1).read_to_end(buf)?;
    Ok(buf.len() <= max)
}
