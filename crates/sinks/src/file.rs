//! The findings file (exactly once) and standard output (at least once).
//!
//! # Exactly once in the file, across crashes
//!
//! A batch is written in one `write`, made durable with `fsync` (`sync_data`), and only
//! then acknowledged in the store. A crash (`SIGKILL`, power loss) can stop this at any
//! point; each case is repaired when the sink opens the file again:
//!
//! | crash | file holds | cursor | repair at the next start |
//! | --- | --- | --- | --- |
//! | before the write | nothing of the batch | before the batch | none: the batch is pending and written |
//! | during the write | a prefix of the batch, maybe a torn last line | before the batch | the torn line is cut off; the complete lines are recognised (below) |
//! | after `fsync`, before the ack | the whole batch | before the batch | recognised (below) |
//! | after the ack | the whole batch | after the batch | none |
//!
//! *Recognised*: the last complete line of the file names a `finding_id`. If that
//! finding is among the ones pending after the cursor, it and every pending finding
//! before it are already in the file (the file holds the log in order), so the cursor
//! moves past it without writing anything. Otherwise the file's end is older than the
//! cursor and nothing needs doing. So a restart never writes a line twice and never
//! skips one.
//!
//! The same repair runs after a failed write or a failed ack while running (the write
//! is first undone by truncating the file back to its length before the batch).
//!
//! Limits: the file is owned by unseen. Another writer appending to it, or an edit of its
//! last line, defeats the recognition (at worst one batch is written again). Rotate it
//! with `copytruncate` (the file is opened once, in append mode) or restart after
//! moving it. Power loss guarantees depend on the filesystem honouring `fsync`.
//!
//! # Standard output
//!
//! What was written to a pipe cannot be read back, so a crash between the write and the
//! ack writes that batch again after the restart: at least once. Consumers de-duplicate
//! by `finding_id`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use unseen_findings::Record;
use unseen_store::StateStore;

use crate::{set_pending_gauge, Failure, Format, SinkError};

/// Findings per write + fsync. An fsync costs about the same for one line as for
/// hundreds, so a backlog drains in few of them; the batch is small enough (~0.5 MiB)
/// to hold in memory and to recognise after a crash.
pub const FILE_BATCH: usize = 512;

/// How many pending findings recovery looks through for the file's last line. At most
/// one batch can be written and not acknowledged, so [`FILE_BATCH`] would do; the
/// margin covers a previous version that used larger batches.
const RECOVERY_SCAN: usize = 16 * FILE_BATCH;

/// Longest line recovery accepts. A finding is about 1 KiB; its strings are bounded by
/// the receivers' attribute limits, far below this.
const MAX_LINE: u64 = 1 << 20;

/// Every line the sink writes starts with this (`Finding`'s first field): how recovery
/// tells a torn finding from content that is not ours.
const LINE_PREFIX: &[u8] = b"{\"schema_version\":";
/// The same for OCSF lines (`serde_json` writes an object's keys in order).
const OCSF_LINE_PREFIX: &[u8] = b"{\"activity_id\":";

impl Format {
    fn line_prefix(self) -> &'static [u8] {
        match self {
            Format::Json => LINE_PREFIX,
            Format::Ocsf => OCSF_LINE_PREFIX,
        }
    }

    /// The `finding_id` a line of this format carries.
    fn finding_id(self, line: &serde_json::Value) -> Option<String> {
        let id = match self {
            Format::Json => line.get("finding_id"),
            Format::Ocsf => line.get("finding_info")?.get("uid"),
        };
        id?.as_str().map(str::to_owned)
    }
}

/// JSON lines appended to a file; see the [module docs](self).
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    format: Format,
    /// `None` after a failure lost the handle: reopened (and repaired) next time.
    file: Option<File>,
    /// The end of the file may hold lines that are not acknowledged (startup, or a
    /// failed write or ack): run [`recover`] before the next batch.
    needs_recovery: bool,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) and repairs the file.
    pub(crate) fn open(
        path: PathBuf,
        format: Format,
        store: &dyn StateStore,
        name: &'static str,
    ) -> Result<Self, SinkError> {
        let mut sink = FileSink::lost(path, format);
        sink.ensure_ready(store, name).map_err(|f| f.error)?;
        Ok(sink)
    }

    /// A sink whose file must be (re)opened and repaired before use.
    pub(crate) fn lost(path: PathBuf, format: Format) -> Self {
        FileSink {
            path,
            format,
            file: None,
            needs_recovery: true,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Moves the sink out (to a blocking thread), leaving a [`FileSink::lost`] behind.
    pub(crate) fn take(&mut self) -> Self {
        std::mem::replace(self, FileSink::lost(self.path.clone(), self.format))
    }

    fn ensure_ready(&mut self, store: &dyn StateStore, name: &'static str) -> Result<(), Failure> {
        if self.file.is_none() {
            self.file = Some(open_append(&self.path)?);
            self.needs_recovery = true;
        }
        if self.needs_recovery {
            if let Some(file) = self.file.as_mut() {
                recover(file, &self.path, self.format, store, name)?;
            }
            self.needs_recovery = false;
        }
        Ok(())
    }

    /// Writes the next pending batch, makes it durable, acknowledges it. Returns how
    /// many findings it wrote (0: nothing pending).
    pub(crate) fn deliver_next(
        &mut self,
        store: &dyn StateStore,
        name: &'static str,
    ) -> Result<usize, Failure> {
        self.ensure_ready(store, name)?;
        let batch = store.pending(name, FILE_BATCH).map_err(SinkError::from)?;
        set_pending_gauge(store, name, batch.len(), FILE_BATCH);
        let Some(&(last_seq, _)) = batch.last() else {
            return Ok(0);
        };
        let buf = json_lines(&batch, self.format);
        if buf.is_empty() {
            // Only incidents: nothing to write, and nothing to recover after a crash.
            store.ack(name, last_seq).map_err(SinkError::from)?;
            return Ok(batch.len());
        }
        let path = &self.path;
        let Some(file) = self.file.as_mut() else {
            // ensure_ready opened it.
            return Err(file_error(path, "the file is not open", None).into());
        };
        let before = file
            .metadata()
            .map_err(|e| file_error(path, "cannot read its length", Some(e)))?
            .len();
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // Undo the partial batch so that it is written again whole; if even that
            // fails, recovery sorts out the file's end before the next attempt.
            self.needs_recovery = true;
            let _ = file.set_len(before).and_then(|()| file.sync_all());
            return Err(file_error(
                path,
                "cannot write findings (they stay pending and are written when this is fixed)",
                Some(e),
            )
            .into());
        }
        if let Err(e) = store.ack(name, last_seq) {
            // Written, not acknowledged: recovery recognises the batch before the next
            // attempt instead of writing it twice.
            self.needs_recovery = true;
            return Err(SinkError::from(e).into());
        }
        Ok(batch.len())
    }
}

/// Standard output; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct StdoutSink {
    pub format: Format,
}

impl StdoutSink {
    pub(crate) fn deliver_next(
        &self,
        store: &dyn StateStore,
        name: &'static str,
    ) -> Result<usize, Failure> {
        let batch = store.pending(name, FILE_BATCH).map_err(SinkError::from)?;
        set_pending_gauge(store, name, batch.len(), FILE_BATCH);
        let Some(&(last_seq, _)) = batch.last() else {
            return Ok(0);
        };
        let buf = json_lines(&batch, self.format);
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)
            .and_then(|()| out.flush())
            .map_err(|e| SinkError::File {
                path: "-".into(),
                message: format!(
                    "cannot write findings to standard output: {e}; check what reads it (a closed pipe?) — findings stay pending and are retried"
                ),
            })?;
        store.ack(name, last_seq).map_err(SinkError::from)?;
        Ok(batch.len())
    }
}

/// The findings of a batch as JSON lines. The file and stdout carry findings only: the
/// incidents in the outbox are for the alerting sinks, and are passed over here.
fn json_lines(batch: &[(u64, Record)], format: Format) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.len() * 1024);
    for finding in batch.iter().filter_map(|(_, r)| r.finding()) {
        match format {
            Format::Json => buf.extend_from_slice(finding.to_json_line().as_bytes()),
            Format::Ocsf => {
                // A `Value` of strings and numbers: cannot fail.
                serde_json::to_writer(&mut buf, &unseen_findings::ocsf::finding(finding))
                    .unwrap_or_default()
            }
        }
        buf.push(b'\n');
    }
    buf
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            file_error(
                path,
                "cannot create its directory; create it or choose another findings path",
                Some(e),
            )
        })?;
    }
    let created = !path.exists();
    // Read access for recovery; append so that every write goes to the end, whatever
    // else truncated the file (copytruncate).
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            file_error(
                path,
                "cannot open it for appending; check its permissions or choose another findings path",
                Some(e),
            )
        })?;
    if created {
        // The new file's name is durable before any finding in it is acknowledged: an
        // fsync of the file does not cover its directory entry.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        unseen_store::sync_dir(dir).map_err(|e| {
            file_error(path, "cannot sync its directory after creating it", Some(e))
        })?;
    }
    Ok(file)
}

pub(crate) fn file_error(path: &Path, what: &str, cause: Option<std::io::Error>) -> SinkError {
    SinkError::File {
        path: path.display().to_string(),
        message: match cause {
            Some(e) => format!("{what}: {e}"),
            None => what.to_string(),
        },
    }
}

/// What [`recover`] did, for the logs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Recovered {
    /// Bytes of a torn last line cut off.
    truncated: u64,
    /// Pending findings found already written and acknowledged without writing.
    skipped: usize,
}

/// Repairs the end of the file after a crash or a failed attempt: cuts a torn last line
/// and acknowledges the pending findings that the file already holds. See the
/// [module docs](self).
fn recover(
    file: &mut File,
    path: &Path,
    format: Format,
    store: &dyn StateStore,
    name: &'static str,
) -> Result<Recovered, SinkError> {
    let io = |what: &'static str| move |e: std::io::Error| file_error(path, what, Some(e));
    let mut done = Recovered::default();
    let len = file.metadata().map_err(io("cannot read its length"))?.len();
    if len == 0 {
        return Ok(done);
    }
    // The torn tail and the last complete line both fit in this window.
    let window = len.min(2 * MAX_LINE + 2);
    let start = len - window;
    let mut buf = vec![0u8; window as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(io("cannot read its end"))?;

    // 1. A torn last line: bytes after the last newline.
    let complete = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        None => return Err(not_ours(path, "its last line is longer than 1 MiB")),
    };
    let tail = &buf[complete..];
    if !tail.is_empty() {
        let prefix = format.line_prefix();
        let looks_torn = tail.starts_with(prefix) || prefix.starts_with(tail);
        if !looks_torn || tail.len() as u64 > MAX_LINE {
            return Err(not_ours(
                path,
                "it does not end with a newline and its last line is not a finding",
            ));
        }
        let keep = start + complete as u64;
        file.set_len(keep)
            .and_then(|()| file.sync_all())
            .map_err(io("cannot cut off a torn last line"))?;
        done.truncated = len - keep;
        tracing::warn!(
            path = %path.display(),
            bytes = done.truncated,
            "cut off a torn last line of the findings file (a crash while writing); its finding is written again"
        );
    }

    // 2. The last complete line: is its finding still pending?
    let lines = &buf[..complete];
    let Some(body) = lines.strip_suffix(b"\n") else {
        return Ok(done);
    };
    let line_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &body[line_start..];
    let id = (line_start > 0 || start == 0)
        .then(|| serde_json::from_slice::<serde_json::Value>(last).ok())
        .flatten()
        .and_then(|v| format.finding_id(&v));
    let Some(id) = id else {
        tracing::warn!(
            path = %path.display(),
            "the last line of the findings file is not a finding; cannot check for findings written before a crash and not acknowledged (at most one batch may repeat)"
        );
        return Ok(done);
    };
    let pending = store.pending(name, RECOVERY_SCAN)?;
    if let Some(i) = pending
        .iter()
        .position(|(_, r)| r.finding().is_some_and(|f| f.finding_id == id))
    {
        store.ack(name, pending[i].0)?;
        done.skipped = i + 1;
        tracing::info!(
            path = %path.display(),
            findings = done.skipped,
            "findings written before a crash but not acknowledged are already in the file; not writing them again"
        );
    }
    Ok(done)
}

fn not_ours(path: &Path, why: &str) -> SinkError {
    file_error(
        path,
        &format!("{why}: this is not a findings file written by unseen (or it was edited); move it away or choose another findings path"),
        None,
    )
}
