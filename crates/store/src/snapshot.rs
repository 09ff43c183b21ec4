//! The state's snapshot: every key's state and the triage's image index in one file
//! beside the redb file, so that the embedded store holds millions of keys without a
//! B-tree of them.
//!
//! The state log (`state_log` in redb) says what each commit changed; a snapshot says what
//! every key's state was when it was written, and lets the log rows before it go. A
//! snapshot is written a chunk of positions at a time by successive `apply`s while keys go
//! on changing, so it is *fuzzy*: a key's entry may hold any state it had between the
//! cycle's start and its end. That is enough, because every log row after the cycle's
//! start (`row`) is replayed over it at open, and each log entry is a key's whole state
//! (or its tombstone): a key changed during the cycle ends at its last logged state; one
//! not changed has had its snapshot state since before `row`. A key listed twice (removed
//! and added again while the snapshot was written) is loaded twice; the later wins, and
//! the log decides anyway. The image index (per distinct image, cluster image, registry
//! and node: fewer entries than keys, but hundreds of thousands in a large fleet) is
//! written first, a chunk at a time in the same way, from the entries there were when the
//! cycle started (those added since are in the log), each with its state when written; its
//! log entries after `row` are replayed the same way.
//!
//! The file is written under a temporary name, synced, renamed over the previous one and
//! the directory synced, before the commit that lets the rows it covers go: a crash at any
//! point leaves either the previous snapshot or the new one, and every log row after it.
//!
//! # Layout (little-endian)
//!
//! | part | bytes |
//! | --- | --- |
//! | header | `unseenKS`, version `u32` (1), zero `u32`, `row` `u64`: the last log row before the cycle |
//! | index | per image index entry: the length of its [`IndexKey::encode`] `u32`, those bytes, last seen and episode start as `i64` |
//! | entries | per key: host, cluster, node, image as `u32` name ids, then last seen and episode start as `i64` |
//! | names | per name id from 0: its length `u32`, its UTF-8 bytes |
//! | footer | index entries `u64`, entries `u64`, names `u64`, where entries start `u64`, where names start `u64`, CRC-32 of every byte before it `u32`, zero `u32` |

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use hashbrown::HashMap;
use unseen_detect::KeyState;
use unseen_findings::triage::{IndexKey, IndexKeyRef};

use crate::keys::LiveKeys;

/// The snapshot's name inside the state directory.
pub const SNAPSHOT_FILE: &str = "keys.snapshot";
/// Where a snapshot is written before it is renamed to [`SNAPSHOT_FILE`].
const TEMP_FILE: &str = "keys.snapshot.tmp";

const MAGIC: &[u8; 8] = b"unseenKS";
const VERSION: u32 = 1;
const HEADER: u64 = 24;
const ENTRY: u64 = 32;
const FOOTER: u64 = 48;
/// Buffer of the writer and the reader.
const BUFFER: usize = 1 << 20;

/// A snapshot being written (see the module docs).
///
/// The caller encodes; a thread of the writer's own writes, checksums and, at the end,
/// syncs and renames, so that the `apply` that writes a chunk (or ends the cycle) does not
/// wait for the disk: at a million keys, the end of a cycle (a sync of a 60 MB file) took
/// 50–70 ms of an `apply` that otherwise takes a few.
#[derive(Debug)]
pub struct SnapshotWriter {
    /// To the writing thread; `None` once finished.
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Bytes not yet handed to the thread.
    buf: Vec<u8>,
    index: u64,
    entries_at: u64,
    entries: u64,
}

/// What the writing thread is given.
enum Job {
    Bytes(Vec<u8>),
    /// The footer up to its checksum: append the checksum, sync, rename, sync the directory.
    Finish(Vec<u8>),
}

/// Buffers in flight to the writing thread, at most: what an `apply` may run ahead of the
/// disk before it waits (`BUFFERS_IN_FLIGHT` × [`BUFFER`] bytes of memory, only while the
/// disk lags). More than a few `apply`s' chunks, so that a slow sync of the file does not
/// hold the commits.
const BUFFERS_IN_FLIGHT: usize = 64;

/// Bytes the writing thread writes between two syncs of the file.
const SYNC_EVERY: usize = 8 << 20;

/// A finished snapshot being synced and put in place by its thread.
#[derive(Debug)]
pub struct Finishing {
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Finishing {
    /// `None` while the thread is still at it (unless `block`: then it waits); then
    /// whether the snapshot is in place.
    pub fn poll(&mut self, block: bool) -> Option<io::Result<()>> {
        if !block && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return None;
        }
        Some(join(self.thread.take()))
    }
}

/// Dropped unfinished (a cycle abandoned after a failed commit): waits for the thread, so
/// that it cannot rename a later cycle's temporary file into place.
impl Drop for Finishing {
    fn drop(&mut self) {
        let _ = join(self.thread.take());
    }
}

fn join(thread: Option<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    match thread {
        None => Ok(()),
        Some(t) => t
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the snapshot's writing thread panicked"))),
    }
}

/// The writing thread: checksums and writes what it is given, in order; at `Finish`, makes
/// the file the snapshot. Ends early on the first error (the caller's next hand-over fails
/// and reads it here), or when the writer is dropped (an abandoned cycle).
fn write_file(file: File, dir: PathBuf, rx: Receiver<Job>) -> io::Result<()> {
    let mut file = file;
    let mut crc = crc32fast::Hasher::new();
    let mut unsynced = 0;
    for job in rx {
        match job {
            Job::Bytes(bytes) => {
                crc.update(&bytes);
                file.write_all(&bytes)?;
                // Written back as it goes, so that the sync at the end is short: a sync
                // of the whole file at once held the disk for tens of milliseconds, and
                // the commits' own syncs behind it.
                unsynced += bytes.len();
                if unsynced >= SYNC_EVERY {
                    file.sync_data()?;
                    unsynced = 0;
                }
            }
            Job::Finish(mut footer) => {
                crc.update(&footer);
                footer.extend_from_slice(&crc.clone().finalize().to_le_bytes());
                footer.extend_from_slice(&0u32.to_le_bytes());
                file.write_all(&footer)?;
                file.sync_all()?;
                drop(file);
                std::fs::rename(dir.join(TEMP_FILE), dir.join(SNAPSHOT_FILE))?;
                return crate::sync_dir(&dir);
            }
        }
    }
    Ok(())
}

impl SnapshotWriter {
    /// Starts a snapshot in `dir` of the key states and image index entries as of log row
    /// `row` (and later): the index entries next ([`SnapshotWriter::write_index`]), then
    /// the keys.
    pub fn create(dir: &Path, row: u64) -> io::Result<Self> {
        let file = File::create(dir.join(TEMP_FILE))?;
        let (tx, rx) = sync_channel(BUFFERS_IN_FLIGHT);
        let to = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("unseen-snapshot".to_string())
            .spawn(move || write_file(file, to, rx))?;
        let mut w = SnapshotWriter {
            tx: Some(tx),
            thread: Some(thread),
            buf: Vec::with_capacity(BUFFER),
            index: 0,
            entries_at: HEADER,
            entries: 0,
        };
        w.buf.extend_from_slice(MAGIC);
        w.buf.extend_from_slice(&VERSION.to_le_bytes());
        w.buf.extend_from_slice(&0u32.to_le_bytes());
        w.buf.extend_from_slice(&row.to_le_bytes());
        Ok(w)
    }

    /// Writes image index entries; all of them before the first key.
    pub fn write_index<'i>(
        &mut self,
        index: impl Iterator<Item = (IndexKeyRef<'i>, KeyState)>,
    ) -> io::Result<()> {
        debug_assert_eq!(self.entries, 0, "index entries after keys");
        for (key, state) in index {
            let start = self.buf.len();
            self.buf.extend_from_slice(&0u32.to_le_bytes());
            key.encode_into(&mut self.buf);
            let len = u32::try_from(self.buf.len() - start - 4)
                .map_err(|_| invalid("an index key over 4 GiB"))?;
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&state.last_seen.to_le_bytes());
            self.buf
                .extend_from_slice(&state.episode_start.to_le_bytes());
            self.entries_at += (self.buf.len() - start) as u64;
            self.index += 1;
            self.hand_over_full()?;
        }
        Ok(())
    }

    /// Hands the buffer to the thread once it is full.
    fn hand_over_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= BUFFER {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BUFFER));
            self.send(Job::Bytes(full))?;
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(job).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: at an error, which is the answer.
        self.tx = None;
        join(self.thread.take())?;
        Err(io::Error::other("the snapshot's writing thread stopped"))
    }

    /// Writes the keys at positions `from..to` (free positions are skipped).
    pub fn write(&mut self, keys: &LiveKeys, from: u32, to: u32) -> io::Result<()> {
        for at in from..to {
            let Some((ids, state)) = keys.ids(at) else {
                continue;
            };
            for id in ids {
                self.buf.extend_from_slice(&id.to_le_bytes());
            }
            self.buf.extend_from_slice(&state.last_seen.to_le_bytes());
            self.buf
                .extend_from_slice(&state.episode_start.to_le_bytes());
            self.entries += 1;
            self.hand_over_full()?;
        }
        Ok(())
    }

    /// Writes the names every entry written refers to (all of `keys`' names: they only
    /// grow while a table lives) and the footer; the thread then makes the file the
    /// snapshot, durably, while the caller goes on ([`Finishing::poll`]).
    pub fn finish(mut self, keys: &LiveKeys) -> io::Result<Finishing> {
        let names_at = self.entries_at + self.entries * ENTRY;
        for id in 0..keys.names() {
            let name = keys.name(id).as_bytes();
            let len = u32::try_from(name.len()).map_err(|_| invalid("a name over 4 GiB"))?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(name);
            self.hand_over_full()?;
        }
        let rest = std::mem::take(&mut self.buf);
        self.send(Job::Bytes(rest))?;
        let mut footer = Vec::with_capacity(FOOTER as usize);
        footer.extend_from_slice(&self.index.to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&u64::from(keys.names()).to_le_bytes());
        footer.extend_from_slice(&self.entries_at.to_le_bytes());
        footer.extend_from_slice(&names_at.to_le_bytes());
        self.send(Job::Finish(footer))?;
        self.tx = None;
        Ok(Finishing {
            thread: self.thread.take(),
        })
    }
}

/// Dropped unfinished (an abandoned cycle): the thread writes what it was given and stops;
/// waiting for it keeps it from writing into the next cycle's file.
impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.tx = None;
        let _ = join(self.thread.take());
    }
}

/// Removes what a snapshot being written when the process stopped left behind.
pub fn remove_partial(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(TEMP_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// What a snapshot holds.
#[derive(Debug)]
pub struct Snapshot {
    pub keys: LiveKeys,
    pub index: HashMap<IndexKey, KeyState>,
    /// The last log row before its cycle started: the rows after it are to be replayed.
    pub row: u64,
}

/// The footer's figures.
struct Footer {
    index: u64,
    entries: u64,
    names: u64,
    entries_at: u64,
    names_at: u64,
    crc: u32,
}

/// Header and footer bytes, side by side.
type Ends = [u8; (HEADER + FOOTER) as usize];

/// Opens the snapshot in `dir` and reads and checks its header and footer (not the
/// checksum: that needs every byte).
fn open(dir: &Path) -> io::Result<Option<(File, Footer, Ends)>> {
    let mut file = match File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len < HEADER + FOOTER {
        return Err(invalid("the file is shorter than its header and footer"));
    }
    let mut ends: Ends = [0; (HEADER + FOOTER) as usize];
    file.read_exact(&mut ends[..HEADER as usize])?;
    file.seek(SeekFrom::Start(len - FOOTER))?;
    file.read_exact(&mut ends[HEADER as usize..])?;
    let f = &ends[HEADER as usize..];
    let footer = Footer {
        index: u64_at(f, 0),
        entries: u64_at(f, 8),
        names: u64_at(f, 16),
        entries_at: u64_at(f, 24),
        names_at: u64_at(f, 32),
        crc: u32::from_le_bytes(f[40..44].try_into().unwrap_or_default()),
    };
    if footer.entries_at < HEADER
        || footer
            .entries
            .checked_mul(ENTRY)
            .and_then(|b| b.checked_add(footer.entries_at))
            != Some(footer.names_at)
        || footer.names_at > len - FOOTER
    {
        return Err(invalid("the footer's sizes do not match the file"));
    }
    if &ends[..8] != MAGIC {
        return Err(invalid("not a snapshot of unseen"));
    }
    if ends[8..12] != VERSION.to_le_bytes() {
        return Err(invalid("a snapshot version this release does not read"));
    }
    Ok(Some((file, footer, ends)))
}

/// Reads `count` index entries from the index section's bytes.
fn parse_index(section: &[u8], count: u64) -> io::Result<HashMap<IndexKey, KeyState>> {
    let mut index = HashMap::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
    let mut rest = section;
    while let Some((n, tail)) = rest.split_first_chunk::<4>() {
        let n = u32::from_le_bytes(*n) as usize;
        let (key, tail) = tail
            .split_at_checked(n)
            .ok_or_else(|| invalid("an index entry runs past the index"))?;
        let key = IndexKey::decode(key).ok_or_else(|| invalid("an index entry is malformed"))?;
        let (state, tail) = tail
            .split_first_chunk::<16>()
            .ok_or_else(|| invalid("an index entry runs past the index"))?;
        let state = KeyState {
            last_seen: i64::from_le_bytes(state[..8].try_into().unwrap_or_default()),
            episode_start: i64::from_le_bytes(state[8..].try_into().unwrap_or_default()),
        };
        index.insert(key, state);
        rest = tail;
    }
    if !rest.is_empty() || index.len() as u64 != count {
        return Err(invalid("the index does not match the footer"));
    }
    Ok(index)
}

/// Reads the snapshot in `dir`, if there is one. An error says what is wrong with the
/// file (its checksum covers every byte).
pub fn read(dir: &Path) -> io::Result<Option<Snapshot>> {
    let Some((mut file, footer, ends)) = open(dir)? else {
        return Ok(None);
    };
    let len = file.metadata()?.len();
    // The names first (few next to the keys), so that the entries can be loaded as they
    // are read.
    let mut name_bytes = vec![0u8; (len - FOOTER - footer.names_at) as usize];
    file.seek(SeekFrom::Start(footer.names_at))?;
    file.read_exact(&mut name_bytes)?;
    let mut list: Vec<&str> =
        Vec::with_capacity(usize::try_from(footer.names).unwrap_or(0).min(1 << 24));
    let mut rest = name_bytes.as_slice();
    while let Some((n, tail)) = rest.split_first_chunk::<4>() {
        let n = u32::from_le_bytes(*n) as usize;
        let name = tail
            .get(..n)
            .ok_or_else(|| invalid("a name runs past the names"))?;
        list.push(std::str::from_utf8(name).map_err(|_| invalid("a name is not UTF-8"))?);
        rest = &tail[n..];
    }
    if !rest.is_empty() || list.len() as u64 != footer.names {
        return Err(invalid("the names do not match the footer"));
    }
    file.seek(SeekFrom::Start(HEADER))?;
    let mut reader = BufReader::with_capacity(BUFFER, file);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&ends[..HEADER as usize]);
    let mut section = vec![0u8; (footer.entries_at - HEADER) as usize];
    reader.read_exact(&mut section)?;
    hasher.update(&section);
    let index = parse_index(&section, footer.index)?;
    drop(section);
    let mut keys = LiveKeys::with_capacity(usize::try_from(footer.entries).unwrap_or(0));
    let mut loader = keys.loader(&list);
    let mut block = vec![0u8; (ENTRY as usize) * 4096];
    let mut left = footer.entries;
    while left > 0 {
        let n = left.min(4096);
        let block = &mut block[..(n * ENTRY) as usize];
        reader.read_exact(block)?;
        hasher.update(block);
        for e in block.chunks_exact(ENTRY as usize) {
            let id =
                |i: usize| u32::from_le_bytes(e[4 * i..4 * i + 4].try_into().unwrap_or_default());
            let state = KeyState {
                last_seen: i64::from_le_bytes(e[16..24].try_into().unwrap_or_default()),
                episode_start: i64::from_le_bytes(e[24..].try_into().unwrap_or_default()),
            };
            loader
                .upsert([id(0), id(1), id(2), id(3)], state)
                .ok_or_else(|| invalid("an entry names a name the file does not have"))?;
        }
        left -= n;
    }
    hasher.update(&name_bytes);
    hasher.update(&ends[HEADER as usize..HEADER as usize + 40]);
    if hasher.finalize() != footer.crc {
        return Err(invalid("the checksum does not match: the file is damaged"));
    }
    Ok(Some(Snapshot {
        keys,
        index,
        row: u64_at(&ends, 16),
    }))
}

/// The image index of the snapshot in `dir` and its row, without its keys: what the
/// store reads back after a transaction that failed. (Its checksum was checked at open.)
pub fn read_index(dir: &Path) -> io::Result<Option<(HashMap<IndexKey, KeyState>, u64)>> {
    let Some((mut file, footer, ends)) = open(dir)? else {
        return Ok(None);
    };
    let mut section = vec![0u8; (footer.entries_at - HEADER) as usize];
    file.seek(SeekFrom::Start(HEADER))?;
    file.read_exact(&mut section)?;
    Ok(Some((
        parse_index(&section, footer.index)?,
        u64_at(&ends, 16),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(t: i64) -> KeyState {
        KeyState {
            last_seen: t,
            episode_start: t - 1,
        }
    }

    #[test]
    fn a_snapshot_reads_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let mut keys = LiveKeys::default();
        // Enough keys and names that the writer hands its thread many full buffers.
        for i in 0..80_000 {
            let node = format!("ip-10-0-{}-{}", i / 250, i % 250);
            keys.upsert(
                [&node, "prod", &node, &format!("ghcr.io/a/s-{}", i % 37)],
                state(i),
            );
        }
        // A forgotten key leaves a free position and a name no key uses.
        let gone = keys
            .find(["ip-10-0-0-7", "prod", "ip-10-0-0-7", "ghcr.io/a/s-7"])
            .unwrap();
        keys.remove(gone);
        let index: Vec<(IndexKey, KeyState)> = (0..3)
            .map(|i| {
                let key = IndexKey {
                    kind: unseen_findings::triage::IndexKind::Image,
                    a: format!("ghcr.io/a/s-{i}"),
                    b: String::new(),
                };
                (key, state(i))
            })
            .collect();
        let mut w = SnapshotWriter::create(dir.path(), 42).unwrap();
        // In pieces, as successive applies write it.
        w.write_index(index[..1].iter().map(|(k, s)| (k.as_ref(), *s)))
            .unwrap();
        w.write_index(index[1..].iter().map(|(k, s)| (k.as_ref(), *s)))
            .unwrap();
        w.write(&keys, 0, 1000).unwrap();
        w.write(&keys, 1000, keys.positions()).unwrap();
        w.finish(&keys).unwrap().poll(true).unwrap().unwrap();
        assert!(!dir.path().join(TEMP_FILE).exists());
        let Snapshot {
            keys: again,
            index: index_again,
            row,
        } = read(dir.path()).unwrap().unwrap();
        assert_eq!(row, 42);
        assert_eq!(index_again, index.iter().cloned().collect());
        assert_eq!(read_index(dir.path()).unwrap(), Some((index_again, 42)));
        let list = |k: &LiveKeys| {
            let mut v: Vec<_> = k
                .iter()
                .map(|(_, p, s)| (p.map(String::from), s.last_seen, s.episode_start))
                .collect();
            v.sort();
            v
        };
        assert_eq!(list(&again), list(&keys));
        assert_eq!(again.len(), 79_999);
        // The forgotten key's node name is not interned again.
        assert_eq!(again.names(), keys.names() - 1);

        let path = dir.path().join(SNAPSHOT_FILE);
        let good = std::fs::read(&path).unwrap();
        for at in [3, 30, good.len() / 2, good.len() - 40, good.len() - 10] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                read(dir.path()).is_err(),
                "a flipped bit at {at} is refused"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let e = read(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
