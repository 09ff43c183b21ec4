//! The rows of a state log: what a commit changed, as one value instead of one row per
//! key. The embedded store and PostgreSQL both write their key states (and the image
//! index's) this way, so that a sighting of a known key costs no row of its own; each
//! folds the log into its key table later.
//!
//! A row is a sequence of entries, each a kind byte and then (integers big-endian):
//!
//! | kind | entry | then |
//! | --- | --- | --- |
//! | 1, 0 | a key's state, or its tombstone | `u32` length, the [`crate::encode_key`] bytes |
//! | 2, 3 | an image index entry's state, or its tombstone | `u32` length, the [`unseen_findings::triage::IndexKey::encode`] bytes |
//! | 4 | a name's id | `u32` id, `u32` length, the UTF-8 bytes |
//! | 5, 6 | a key's state, or its tombstone, by name ids | host, cluster, node and image ids, `u32` each |
//! | 7, 8 | an image index entry's state, or its tombstone, by name ids | the [`IndexKind`] byte, its two parts' ids, `u32` each |
//!
//! and, for a state (kinds 1, 2, 5 and 7), its 16 bytes: last seen, episode start.
//!
//! Kinds 4 to 8 are what the embedded store writes (kinds 0 to 3 are read from files of
//! schema 4, and written by PostgreSQL's replicas, which share one log): a key by ids is
//! 33 bytes where its text is ~120, and every sighting logs its key's state, so the log
//! grows a third as fast and fold cycles come a third as often. A name is logged (kind 4)
//! before the first entry that uses its id, in the same row or an earlier one, and again
//! after every point a snapshot may cover (a fold cycle's start), so that the rows after
//! a snapshot never refer to a name only a deleted row defined. Ids are a process's own:
//! a process after a restart logs its names afresh, and a reader takes each id to mean
//! what its latest definition said ([`LogReader`]).

use hashbrown::HashMap;
use unseen_detect::KeyState;
use unseen_findings::triage::{IndexKeyRef, IndexKind};

/// Log entry kinds: a key's state or tombstone, an image index entry's state or tombstone
/// (the entry's [`unseen_findings::triage::IndexKey::encode`] in place of the key).
pub const LOG_STATE: u8 = 1;
pub const LOG_FORGOTTEN: u8 = 0;
pub const LOG_INDEX_STATE: u8 = 2;
pub const LOG_INDEX_FORGOTTEN: u8 = 3;
/// A name's id, for the entries by ids after it.
pub const LOG_NAME: u8 = 4;
/// A key's state, or its tombstone, by its parts' name ids.
pub const LOG_KEY_IDS: u8 = 5;
pub const LOG_KEY_IDS_FORGOTTEN: u8 = 6;
/// An image index entry's state, or its tombstone, by its parts' name ids.
pub const LOG_INDEX_IDS: u8 = 7;
pub const LOG_INDEX_IDS_FORGOTTEN: u8 = 8;

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
    log_with(out, kinds, state, |out| {
        // Keys and index entries are made of attribute values, which the decoders cap
        // far below 4 GiB.
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        write(out);
    });
}

/// One entry of any kind with a state: the kind (`kinds[0]` for a state, `kinds[1]` for
/// a tombstone), what `write` appends, and the state, if any.
fn log_with(
    out: &mut Vec<u8>,
    kinds: [u8; 2],
    state: Option<&KeyState>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    out.push(if state.is_some() { kinds[0] } else { kinds[1] });
    write(out);
    if let Some(state) = state {
        out.extend_from_slice(&encode_state(state));
    }
}

/// Appends one entry to a log row: that name `id` means `name` from here on.
pub fn log_name(out: &mut Vec<u8>, id: u32, name: &str) {
    out.push(LOG_NAME);
    out.extend_from_slice(&id.to_be_bytes());
    // Names are attribute values, which the decoders cap far below 4 GiB.
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Appends one entry to a log row: a key's new state, or (`None`) that it is forgotten,
/// by its parts' name ids (host, cluster, node, image), each logged by [`log_name`] first.
pub fn log_key_ids(out: &mut Vec<u8>, ids: [u32; 4], state: Option<&KeyState>) {
    log_with(out, [LOG_KEY_IDS, LOG_KEY_IDS_FORGOTTEN], state, |out| {
        ids.iter()
            .for_each(|id| out.extend_from_slice(&id.to_be_bytes()));
    });
}

/// Appends one entry to a log row: an image index entry's new state, or (`None`) that it
/// is forgotten, by its parts' name ids, each logged by [`log_name`] first.
pub fn log_index_ids(out: &mut Vec<u8>, kind: IndexKind, ids: [u32; 2], state: Option<&KeyState>) {
    log_with(
        out,
        [LOG_INDEX_IDS, LOG_INDEX_IDS_FORGOTTEN],
        state,
        |out| {
            out.push(kind as u8);
            ids.iter()
                .for_each(|id| out.extend_from_slice(&id.to_be_bytes()));
        },
    );
}

/// Which name ids a writer has logged since the log's last point a snapshot may cover:
/// an entry by ids is preceded by its names' [`log_name`] entries until then.
#[derive(Debug, Default)]
pub struct LoggedNames {
    bits: Vec<u64>,
}

impl LoggedNames {
    /// Marks `id` logged; whether it was not yet (and must be logged now).
    pub fn mark(&mut self, id: u32) -> bool {
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        fresh
    }

    /// Takes back [`LoggedNames::mark`]s whose row was not written.
    pub fn unmark(&mut self, ids: &[u32]) {
        for &id in ids {
            if let Some(word) = self.bits.get_mut((id / 64) as usize) {
                *word &= !(1u64 << (id % 64));
            }
        }
    }

    /// Every name must be logged again (a snapshot may cover every row so far).
    pub fn clear(&mut self) {
        self.bits.clear();
    }
}

/// One entry of a log row as written: [`read_raw`] hands these out, for a reader that
/// maps ids to names itself ([`LogReader`] hands out text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEntry<'a> {
    /// That `id` means `name` from here on.
    Name { id: u32, name: &'a str },
    /// A key's state (or `None`: forgotten) by its names' ids: host, cluster, node, image.
    Key {
        ids: [u32; 4],
        state: Option<KeyState>,
    },
    /// An image index entry's state (or `None`: forgotten) by its two parts' ids.
    Index {
        kind: IndexKind,
        ids: [u32; 2],
        state: Option<KeyState>,
    },
    /// A key or index entry as text.
    Text(LogEntry<'a>),
}

/// Hands each entry of `row` to `f`, in order, as written; `malformed()` when the row
/// holds bytes no writer here wrote.
pub fn read_raw<'a, E>(
    row: &'a [u8],
    malformed: impl Fn() -> E,
    mut f: impl FnMut(RawEntry<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = row;
    while let Some((&kind, tail)) = rest.split_first() {
        let entry = match kind {
            LOG_NAME => {
                rest = tail;
                (|| {
                    let id = take_u32(&mut rest)?;
                    let len = usize::try_from(take_u32(&mut rest)?).ok()?;
                    let name = std::str::from_utf8(take(&mut rest, len)?).ok()?;
                    Some(RawEntry::Name { id, name })
                })()
            }
            LOG_KEY_IDS | LOG_KEY_IDS_FORGOTTEN => {
                rest = tail;
                (|| {
                    let mut ids = [0; 4];
                    for id in &mut ids {
                        *id = take_u32(&mut rest)?;
                    }
                    let state = take_state(&mut rest, kind == LOG_KEY_IDS)?;
                    Some(RawEntry::Key { ids, state })
                })()
            }
            LOG_INDEX_IDS | LOG_INDEX_IDS_FORGOTTEN => {
                rest = tail;
                (|| {
                    let index_kind = IndexKind::from_u8(*take(&mut rest, 1)?.first()?)?;
                    let ids = [take_u32(&mut rest)?, take_u32(&mut rest)?];
                    let state = take_state(&mut rest, kind == LOG_INDEX_IDS)?;
                    Some(RawEntry::Index {
                        kind: index_kind,
                        ids,
                        state,
                    })
                })()
            }
            _ => {
                // A text entry, parsed as [`LogEntries`] does.
                let mut one = LogEntries(rest);
                let entry = one.next().flatten();
                rest = one.0;
                entry.map(RawEntry::Text)
            }
        };
        f(entry.ok_or_else(&malformed)?)?;
    }
    Ok(())
}

/// Reads log rows in order, resolving entries by ids to the names logged before them.
/// One reader reads the rows of one replay, oldest first: an id means what its latest
/// [`LOG_NAME`] entry said.
#[derive(Debug, Default)]
pub struct LogReader {
    names: HashMap<u32, Box<str>>,
    /// The key (or index entry) of an entry by ids, encoded as its text entry's would be.
    scratch: Vec<u8>,
}

impl LogReader {
    /// Hands each entry of `row` to `f`, in order, an entry by ids as the text entry it
    /// stands for; `malformed()` when the row holds bytes no writer here wrote, or an id
    /// no name was logged for.
    pub fn read<E>(
        &mut self,
        row: &[u8],
        malformed: impl Fn() -> E,
        mut f: impl FnMut(LogEntry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Self { names, scratch } = self;
        read_raw(row, &malformed, |entry| {
            let name = |id: u32| names.get(&id).map(|n| &**n).ok_or_else(&malformed);
            let (index, state) = match entry {
                RawEntry::Name { id, name } => {
                    names.insert(id, name.into());
                    return Ok(());
                }
                RawEntry::Text(entry) => return f(entry),
                RawEntry::Key { ids, state } => {
                    let parts = [name(ids[0])?, name(ids[1])?, name(ids[2])?, name(ids[3])?];
                    crate::redb_store::encode_parts(parts, scratch);
                    (false, state)
                }
                RawEntry::Index { kind, ids, state } => {
                    let (a, b) = (name(ids[0])?, name(ids[1])?);
                    scratch.clear();
                    IndexKeyRef { kind, a, b }.encode_into(scratch);
                    (true, state)
                }
            };
            f(LogEntry {
                index,
                key: scratch,
                state,
            })
        })
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

/// A state's 16 bytes when `present`; `Some(None)` for a tombstone.
fn take_state(rest: &mut &[u8], present: bool) -> Option<Option<KeyState>> {
    if !present {
        return Some(None);
    }
    let (head, tail) = rest.split_first_chunk::<16>()?;
    *rest = tail;
    Some(Some(decode_state(head)))
}

/// The entries of a log row, in order; `None` for bytes [`log_entry`] did not write.
struct LogEntries<'a>(&'a [u8]);

/// One entry of a log row: a key's (or with `index`, an image index entry's) new state,
/// or `None` when it was forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(t: i64) -> KeyState {
        KeyState {
            last_seen: t,
            episode_start: t - 10,
        }
    }

    /// An entry as a reader hands it out: (index, key, state).
    type Read = (bool, Vec<u8>, Option<KeyState>);

    /// What a reader hands out for `rows`, or the error.
    fn read(rows: &[&[u8]]) -> Result<Vec<Read>, &'static str> {
        let mut reader = LogReader::default();
        let mut out = Vec::new();
        for row in rows {
            reader.read(
                row,
                || "malformed",
                |e| {
                    out.push((e.index, e.key.to_vec(), e.state));
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }

    fn text_key(parts: [&str; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::redb_store::encode_parts(parts, &mut out);
        out
    }

    fn text_index(kind: IndexKind, a: &str, b: &str) -> Vec<u8> {
        let mut out = Vec::new();
        IndexKeyRef { kind, a, b }.encode_into(&mut out);
        out
    }

    /// Entries by ids read as the text entries they stand for, mixed with text entries in
    /// one row, tombstones included.
    #[test]
    fn entries_by_ids_read_as_their_text() {
        let mut row = Vec::new();
        for (id, name) in [(0, "node-1"), (1, "prod"), (2, "nginx"), (3, "")] {
            log_name(&mut row, id, name);
        }
        log_key_ids(&mut row, [0, 1, 0, 2], Some(&state(100)));
        let text = text_key(["h", "c", "n", "i"]);
        log_entry(&mut row, &text, Some(&state(50)));
        log_index_ids(&mut row, IndexKind::Image, [2, 3], Some(&state(100)));
        log_key_ids(&mut row, [0, 1, 0, 2], None);
        log_index_ids(&mut row, IndexKind::ClusterImage, [1, 2], None);
        assert_eq!(
            read(&[&row]).unwrap(),
            vec![
                (
                    false,
                    text_key(["node-1", "prod", "node-1", "nginx"]),
                    Some(state(100))
                ),
                (false, text, Some(state(50))),
                (
                    true,
                    text_index(IndexKind::Image, "nginx", ""),
                    Some(state(100))
                ),
                (false, text_key(["node-1", "prod", "node-1", "nginx"]), None),
                (
                    true,
                    text_index(IndexKind::ClusterImage, "prod", "nginx"),
                    None
                ),
            ]
        );
        // A known key's sighting, its names logged before: 33 bytes.
        let mut again = Vec::new();
        log_key_ids(&mut again, [0, 1, 0, 2], Some(&state(160)));
        assert_eq!(again.len(), 33);
    }

    /// Ids are a process's own: after a restart, a process may give an id another name.
    /// Each entry reads as the latest definition before it meant.
    #[test]
    fn an_id_means_its_latest_definition() {
        let mut first = Vec::new();
        log_name(&mut first, 0, "a");
        log_key_ids(&mut first, [0; 4], Some(&state(100)));
        let mut second = Vec::new();
        log_name(&mut second, 0, "b");
        log_key_ids(&mut second, [0; 4], Some(&state(200)));
        let out = read(&[&first, &second]).unwrap();
        assert_eq!(out[0].1, text_key(["a"; 4]));
        assert_eq!(out[1].1, text_key(["b"; 4]));
    }

    /// An id no name was logged for, a truncated entry, an unknown kind or index kind, and
    /// a name that is not UTF-8 are malformed, not guessed at.
    #[test]
    fn malformed_rows_are_refused() {
        let mut undefined = Vec::new();
        log_name(&mut undefined, 0, "a");
        log_key_ids(&mut undefined, [0, 0, 0, 1], Some(&state(1)));
        let mut index_undefined = Vec::new();
        log_name(&mut index_undefined, 0, "a");
        log_index_ids(&mut index_undefined, IndexKind::Image, [0, 9], None);
        let mut truncated = Vec::new();
        log_name(&mut truncated, 0, "a");
        log_key_ids(&mut truncated, [0; 4], Some(&state(1)));
        truncated.pop();
        let mut bad_kind = index_undefined.clone();
        let at = bad_kind.len() - 9;
        bad_kind[at] = 99;
        let mut not_utf8 = Vec::new();
        log_name(&mut not_utf8, 0, "a");
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        for (what, row) in [
            ("undefined id", undefined),
            ("undefined index id", index_undefined),
            ("truncated", truncated),
            ("unknown index kind", bad_kind),
            ("name not UTF-8", not_utf8),
            ("unknown kind", vec![42, 0, 0]),
        ] {
            assert_eq!(read(&[&row]), Err("malformed"), "{what}");
        }
    }

    proptest::proptest! {
        /// Rows of random entries, each key by text or by ids (names defined as a writer
        /// defines them, ids reused for other names as by another process), read as
        /// the text entries they stand for; cut anywhere, a row reads as a prefix of its
        /// entries (then malformed), never as something else, and never panics.
        #[test]
        fn rows_read_as_written_and_cut_rows_as_a_prefix(
            ops in proptest::collection::vec((0u8..4, proptest::array::uniform4(0u32..5), 0i64..1000), 1..40),
            names in proptest::collection::vec("[a-c]{0,3}", 5),
            cut in 0usize..2000,
        ) {
            let mut row = Vec::new();
            let mut expected = Vec::new();
            let mut logged = LoggedNames::default();
            // An id means names[(id + shift) % 5]; `shift` changes as a restart would.
            let mut shift = 0;
            let name = |id: u32, shift: usize| names[(id as usize + shift) % 5].as_str();
            for (op, ids, t) in ops {
                let st = (t % 3 != 0).then(|| state(t));
                let parts = ids.map(|id| name(id, shift));
                match op {
                    0 => {
                        log_entry(&mut row, &text_key(parts), st.as_ref());
                        expected.push((false, text_key(parts), st));
                    }
                    1 | 2 => {
                        for id in ids {
                            if logged.mark(id) {
                                log_name(&mut row, id, name(id, shift));
                            }
                        }
                        if op == 1 {
                            log_key_ids(&mut row, ids, st.as_ref());
                            expected.push((false, text_key(parts), st));
                        } else {
                            log_index_ids(&mut row, IndexKind::ClusterImage, [ids[0], ids[1]], st.as_ref());
                            expected.push((true, text_index(IndexKind::ClusterImage, parts[0], parts[1]), st));
                        }
                    }
                    _ => {
                        shift += 1;
                        logged.clear();
                    }
                }
            }
            proptest::prop_assert_eq!(read(&[&row]).unwrap(), expected.clone());
            let cut = cut.min(row.len());
            let mut reader = LogReader::default();
            let mut got = Vec::new();
            let _ = reader.read(&row[..cut], || "malformed", |e| {
                got.push((e.index, e.key.to_vec(), e.state));
                Ok(())
            });
            proptest::prop_assert_eq!(&got[..], &expected[..got.len()]);
        }
    }

    #[test]
    fn logged_names_are_marked_once_until_cleared_or_unmarked() {
        let mut logged = LoggedNames::default();
        assert!(logged.mark(3));
        assert!(!logged.mark(3));
        assert!(logged.mark(200));
        logged.unmark(&[200]);
        assert!(logged.mark(200));
        logged.clear();
        assert!(logged.mark(3));
    }
}
