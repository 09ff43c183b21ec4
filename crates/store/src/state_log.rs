//! The rows of a state log: what a commit changed, as one value instead of one row per
//! key. The embedded store and PostgreSQL both write their key states (and the image
//! index's) this way, so that a sighting of a known key costs no row of its own; each
//! folds the log into its key table later.
//!
//! A row is a sequence of entries: a kind byte, a big-endian `u32` length, that many
//! bytes of key (an [`crate::encode_key`] or an [`unseen_findings::triage::IndexKey`]'s
//! encoding), then for a state its 16 bytes (last seen, episode start, big-endian).

use unseen_detect::KeyState;

/// Log entry kinds: a key's state or tombstone, an image index entry's state or tombstone
/// (the entry's [`unseen_findings::triage::IndexKey::encode`] in place of the key).
pub const LOG_STATE: u8 = 1;
pub const LOG_FORGOTTEN: u8 = 0;
pub const LOG_INDEX_STATE: u8 = 2;
pub const LOG_INDEX_FORGOTTEN: u8 = 3;

/// A key state as 16 bytes: last seen, then the episode's start, big-endian.
pub fn encode_state(state: &KeyState) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&state.last_seen.to_be_bytes());
    out[8..].copy_from_slice(&state.episode_start.to_be_bytes());
    out
}

pub fn decode_state(bytes: &[u8; 16]) -> KeyState {
    let (last, start) = bytes.split_at(8);
    KeyState {
        last_seen: i64::from_be_bytes(last.try_into().unwrap_or_default()),
        episode_start: i64::from_be_bytes(start.try_into().unwrap_or_default()),
    }
}

/// Appends one entry to a log row: a key's new state, or (`None`) that it is forgotten.
pub fn log_entry(out: &mut Vec<u8>, key: &[u8], state: Option<&KeyState>) {
    let write = |out: &mut Vec<u8>| out.extend_from_slice(key);
    log_raw(out, [LOG_STATE, LOG_FORGOTTEN], key.len(), write, state);
}

/// Appends one entry to a log row: an image index entry's new state, or (`None`) that it
/// is forgotten.
pub fn log_index_entry(
    out: &mut Vec<u8>,
    key: &unseen_findings::triage::IndexKey,
    state: Option<&KeyState>,
) {
    let kinds = [LOG_INDEX_STATE, LOG_INDEX_FORGOTTEN];
    log_raw(
        out,
        kinds,
        key.encoded_len(),
        |out| key.encode_into(out),
        state,
    );
}

/// One log entry: the kind (`kinds[0]` for a state, `kinds[1]` for a tombstone), the
/// length, the `len` bytes that `write` appends, and the state, if any.
pub fn log_raw(
    out: &mut Vec<u8>,
    kinds: [u8; 2],
    len: usize,
    write: impl FnOnce(&mut Vec<u8>),
    state: Option<&KeyState>,
) {
    out.push(if state.is_some() { kinds[0] } else { kinds[1] });
    // Keys and index entries are made of attribute values, which the decoders cap far
    // below 4 GiB.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    write(out);
    if let Some(state) = state {
        out.extend_from_slice(&encode_state(state));
    }
}

/// The entries of a log row, in order; `None` for bytes [`log_entry`] did not write.
pub struct LogEntries<'a>(pub &'a [u8]);

/// One entry of a log row: a key's (or with `index`, an image index entry's) new state,
/// or `None` when it was forgotten.
pub struct LogEntry<'a> {
    pub index: bool,
    pub key: &'a [u8],
    pub state: Option<KeyState>,
}

impl<'a> Iterator for LogEntries<'a> {
    type Item = Option<LogEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.0.split_first()?;
        let entry = (|| {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            if rest.len() < len {
                return None;
            }
            let (key, rest) = rest.split_at(len);
            let index = matches!(kind, LOG_INDEX_STATE | LOG_INDEX_FORGOTTEN);
            match kind {
                LOG_STATE | LOG_INDEX_STATE => {
                    let (state, rest) = rest.split_first_chunk::<16>()?;
                    let state = Some(decode_state(state));
                    Some((LogEntry { index, key, state }, rest))
                }
                LOG_FORGOTTEN | LOG_INDEX_FORGOTTEN => Some((
                    LogEntry {
                        index,
                        key,
                        state: None,
                    },
                    rest,
                )),
                _ => None,
            }
        })();
        match entry {
            Some((entry, rest)) => {
                self.0 = rest;
                Some(Some(entry))
            }
            None => {
                self.0 = &[];
                Some(None)
            }
        }
    }
}
