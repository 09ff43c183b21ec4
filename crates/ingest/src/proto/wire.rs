//! Protobuf wire-format primitives over a `&[u8]`, with exactly `prost`'s (0.14) acceptance
//! rules and error messages, so that a message we reject is one `prost` rejects, with the
//! same `DecodeError` text (users see it in issues, golden tests pin it).
//!
//! The rules that matter, from `prost::encoding`:
//! - a varint is at most 10 bytes, and a 10th byte must be 0 or 1 (`u64` overflow);
//! - a key is a varint up to `u32::MAX`, wire type 0 to 5, tag at least 1;
//! - a nested message reads its length, checks it against what is left of the *whole*
//!   buffer (not the parent's end), reads fields until its end is reached or passed, then
//!   fails with "delimited length exceeded" if it went past;
//! - unknown fields are skipped, groups (wire types 3/4) included, with the recursion
//!   limit (100 levels, counted from the top message) applying to nested groups;
//! - a known field with another wire type is "invalid wire type: X (expected Y)";
//! - each enclosing known field adds `Message.field: ` to the message, innermost first.

use std::fmt;

/// prost's `RECURSION_LIMIT`: the depth budget of the top-level message's fields.
pub(crate) const RECURSION_LIMIT: u32 = 100;

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A protobuf decoding error, displayed exactly as `prost::DecodeError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    kind: ErrorKind,
    /// (message, field) pairs, innermost first, as prost pushes them.
    stack: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    InvalidVarint,
    RecursionLimitReached,
    InvalidWireType(u64),
    InvalidKey(u64),
    InvalidTag,
    UnexpectedWireType { actual: u8, expected: u8 },
    BufferUnderflow,
    DelimitedLengthExceeded,
    UnexpectedEndGroupTag,
}

impl DecodeError {
    #[cold]
    #[inline(never)]
    pub(crate) fn new(kind: ErrorKind) -> DecodeError {
        DecodeError(Box::new(Inner {
            kind,
            stack: Vec::new(),
        }))
    }

    /// Adds the enclosing field, as prost's derived `merge_field` does.
    #[cold]
    #[inline(never)]
    pub(crate) fn push(mut self, message: &'static str, field: &'static str) -> DecodeError {
        self.0.stack.push((message, field));
        self
    }
}

/// prost's `Debug` names of the wire types.
fn wire_type_name(wire: u8) -> &'static str {
    match wire {
        VARINT => "Varint",
        FIXED64 => "SixtyFourBit",
        LEN => "LengthDelimited",
        START_GROUP => "StartGroup",
        END_GROUP => "EndGroup",
        _ => "ThirtyTwoBit",
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to decode Protobuf message: ")?;
        for &(message, field) in &self.0.stack {
            write!(f, "{message}.{field}: ")?;
        }
        match self.0.kind {
            ErrorKind::InvalidVarint => f.write_str("invalid varint"),
            ErrorKind::RecursionLimitReached => f.write_str("recursion limit reached"),
            ErrorKind::InvalidWireType(value) => write!(f, "invalid wire type value: {value}"),
            ErrorKind::InvalidKey(key) => write!(f, "invalid key value: {key}"),
            ErrorKind::InvalidTag => f.write_str("invalid tag value: 0"),
            ErrorKind::UnexpectedWireType { actual, expected } => write!(
                f,
                "invalid wire type: {} (expected {})",
                wire_type_name(actual),
                wire_type_name(expected)
            ),
            ErrorKind::BufferUnderflow => f.write_str("buffer underflow"),
            ErrorKind::DelimitedLengthExceeded => f.write_str("delimited length exceeded"),
            ErrorKind::UnexpectedEndGroupTag => f.write_str("unexpected end group tag"),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

#[cold]
#[inline(never)]
fn err<T>(kind: ErrorKind) -> Result<T> {
    Err(DecodeError::new(kind))
}

/// A read position in one buffer (a whole message: bounds checks are against its end).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// A cursor at `pos` (at most `buf.len()`).
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        debug_assert!(pos <= buf.len());
        Cursor { buf, pos }
    }

    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The whole buffer.
    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// The bytes from the read position to the end of the buffer.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Moves the read position on by `n` bytes of [`Cursor::rest`].
    #[inline(always)]
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        self.pos += n;
    }

    /// The byte at the read position, if any (to dispatch on a one-byte key).
    #[inline(always)]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// A varint (prost `decode_varint`).
    #[inline(always)]
    pub(crate) fn varint(&mut self) -> Result<u64> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
            if let Some(&b2) = self.buf.get(self.pos + 1) {
                if b2 < 0x80 {
                    self.pos += 2;
                    return Ok(u64::from(b & 0x7f) | u64::from(b2) << 7);
                }
            }
        }
        let (value, pos) = varint_slow(self.buf, self.pos)?;
        self.pos = pos;
        Ok(value)
    }

    /// A field key (prost `decode_key`): (tag, wire type).
    #[inline(always)]
    pub(crate) fn key(&mut self) -> Result<(u32, u8)> {
        // The common case: a one-byte key of a valid wire type and a non-zero tag.
        if let Some(&b) = self.buf.get(self.pos) {
            if (8..0x80).contains(&b) && (b & 7) <= FIXED32 {
                self.pos += 1;
                return Ok((u32::from(b >> 3), b & 7));
            }
        }
        let (tag, wire, pos) = key_slow(self.buf, self.pos)?;
        self.pos = pos;
        Ok((tag, wire))
    }

    #[inline(always)]
    fn check_wire(actual: u8, expected: u8) -> Result<()> {
        if actual != expected {
            return err(ErrorKind::UnexpectedWireType { actual, expected });
        }
        Ok(())
    }

    /// A length-delimited `bytes`/`string` field's value (prost `bytes::merge`).
    #[inline(always)]
    pub(crate) fn bytes(&mut self, wire: u8) -> Result<&'a [u8]> {
        Self::check_wire(wire, LEN)?;
        let len = self.varint()?;
        if len > self.remaining() as u64 {
            return err(ErrorKind::BufferUnderflow);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// [`Cursor::bytes`] after a one-byte key of wire type 2 was read (by [`Cursor::peek`]
    /// and [`Cursor::advance`]).
    #[inline(always)]
    pub(crate) fn len_bytes(&mut self) -> Result<&'a [u8]> {
        self.bytes(LEN)
    }

    /// [`Cursor::skip`] of a length-delimited field, after its one-byte key was read.
    #[inline(always)]
    pub(crate) fn skip_len(&mut self, ctx: u32) -> Result<()> {
        if ctx == 0 {
            return err(ErrorKind::RecursionLimitReached);
        }
        let len = self.varint()?;
        if len > self.remaining() as u64 {
            return err(ErrorKind::BufferUnderflow);
        }
        self.pos += len as usize;
        Ok(())
    }

    /// A `fixed64` field's value (prost `fixed64::merge`).
    #[inline(always)]
    pub(crate) fn fixed64(&mut self, wire: u8) -> Result<u64> {
        Self::check_wire(wire, FIXED64)?;
        match self.buf.get(self.pos..self.pos + 8) {
            Some(bytes) => {
                self.pos += 8;
                Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            }
            None => err(ErrorKind::BufferUnderflow),
        }
    }

    /// Enters a nested message field (prost `message::merge` up to `merge_loop`'s loop):
    /// returns where it ends. `ctx` is the recursion budget of the field's own message.
    /// Read its fields `while cursor.pos() < end`, then call [`Cursor::leave`].
    #[inline(always)]
    pub(crate) fn enter(&mut self, wire: u8, ctx: u32) -> Result<usize> {
        Self::check_wire(wire, LEN)?;
        if ctx == 0 {
            return err(ErrorKind::RecursionLimitReached);
        }
        let len = self.varint()?;
        if len > self.remaining() as u64 {
            return err(ErrorKind::BufferUnderflow);
        }
        Ok(self.pos + len as usize)
    }

    /// Leaves a nested message: a field that ran past its end is an error.
    #[inline(always)]
    pub(crate) fn leave(&self, end: usize) -> Result<()> {
        if self.pos != end {
            return err(ErrorKind::DelimitedLengthExceeded);
        }
        Ok(())
    }

    /// Skips an unknown field (prost `skip_field`), groups included. `ctx` is the recursion
    /// budget of the message the field is in.
    #[inline(always)]
    pub(crate) fn skip(&mut self, wire: u8, tag: u32, ctx: u32) -> Result<()> {
        if ctx == 0 {
            return err(ErrorKind::RecursionLimitReached);
        }
        let len = match wire {
            VARINT => {
                self.varint()?;
                0
            }
            FIXED64 => 8,
            LEN => self.varint()?,
            FIXED32 => 4,
            START_GROUP => {
                self.pos = skip_group(self.buf, self.pos, tag, ctx)?;
                0
            }
            _ => return err(ErrorKind::UnexpectedEndGroupTag),
        };
        if len > self.remaining() as u64 {
            return err(ErrorKind::BufferUnderflow);
        }
        self.pos += len as usize;
        Ok(())
    }
}

// The slow paths take and return the position rather than `&mut Cursor`, so that a
// cursor's address never escapes and it can live in registers.

/// A varint of more than two bytes, or an invalid one: (value, position after it).
#[inline(never)]
fn varint_slow(buf: &[u8], pos: usize) -> Result<(u64, usize)> {
    let mut value: u64 = 0;
    for (count, &byte) in buf[pos..].iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (count * 7);
        if byte < 0x80 {
            if count == 9 && byte >= 0x02 {
                return err(ErrorKind::InvalidVarint);
            }
            return Ok((value, pos + count + 1));
        }
    }
    err(ErrorKind::InvalidVarint)
}

/// A key of more than one byte, or an invalid one: (tag, wire type, position after it).
#[inline(never)]
fn key_slow(buf: &[u8], pos: usize) -> Result<(u32, u8, usize)> {
    let (key, pos) = varint_slow(buf, pos)?;
    if key > u64::from(u32::MAX) {
        return err(ErrorKind::InvalidKey(key));
    }
    let wire = key & 7;
    if wire > u64::from(FIXED32) {
        return err(ErrorKind::InvalidWireType(wire));
    }
    let tag = key as u32 >> 3;
    if tag < 1 {
        return err(ErrorKind::InvalidTag);
    }
    Ok((tag, wire as u8, pos))
}

/// Skips a group's fields up to its end-group key: the position after it.
#[inline(never)]
fn skip_group(buf: &[u8], pos: usize, tag: u32, ctx: u32) -> Result<usize> {
    let mut cur = Cursor { buf, pos };
    loop {
        let (inner_tag, inner_wire) = cur.key()?;
        if inner_wire == END_GROUP {
            if inner_tag != tag {
                return err(ErrorKind::UnexpectedEndGroupTag);
            }
            return Ok(cur.pos);
        }
        cur.skip(inner_wire, inner_tag, ctx - 1)?;
    }
}

/// How far ahead of the walk [`prefetch_ahead`] asks for bytes: a few `ResourceMetrics`.
const PREFETCH_DISTANCE: usize = 4 << 10;

/// Asks the CPU to bring `buf[from + PREFETCH_DISTANCE..][..len]` into its cache. A
/// request body is walked where it lies, in memory the core has not read yet, and the
/// walk's many small dependent reads stall on each line; the hardware prefetcher does not
/// run far enough ahead of them. A hint only: no effect on what the walk reads.
#[inline(always)]
pub(crate) fn prefetch_ahead(buf: &[u8], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = from.saturating_add(PREFETCH_DISTANCE);
        let end = start.saturating_add(len).min(buf.len());
        let mut at = start;
        while at < end {
            // SAFETY: `at < buf.len()`, so the address is inside `buf`; a prefetch never
            // faults and changes no memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    buf.as_ptr().add(at).cast(),
                )
            };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, from, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prost_varint(bytes: &[u8]) -> Option<(u64, usize)> {
        let mut buf = bytes;
        prost::encoding::decode_varint(&mut buf)
            .ok()
            .map(|v| (v, bytes.len() - buf.len()))
    }

    fn ours(bytes: &[u8]) -> Option<(u64, usize)> {
        let mut c = Cursor::new(bytes);
        c.varint().ok().map(|v| (v, c.pos()))
    }

    #[test]
    fn varints_as_prost() {
        let cases: &[&[u8]] = &[
            &[],
            &[0],
            &[0x7f],
            &[0x80],
            &[0x80, 0],
            &[0x96, 0x01, 0x07],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0xff; 11],
            &[0xff; 9],
        ];
        for case in cases {
            assert_eq!(ours(case), prost_varint(case), "{case:x?}");
        }
        for a in 0..=255u8 {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let case = [a, b, 0x80, 0x01];
                assert_eq!(ours(&case), prost_varint(&case), "{case:x?}");
                assert_eq!(ours(&case[..2]), prost_varint(&case[..2]), "{case:x?}");
            }
        }
    }

    #[test]
    fn errors_display_as_prost() {
        let e = DecodeError::new(ErrorKind::UnexpectedWireType {
            actual: 0,
            expected: 2,
        })
        .push("KeyValue", "key")
        .push("Resource", "attributes");
        assert_eq!(
            e.to_string(),
            "failed to decode Protobuf message: KeyValue.key: Resource.attributes: \
             invalid wire type: Varint (expected LengthDelimited)"
        );
    }
}
