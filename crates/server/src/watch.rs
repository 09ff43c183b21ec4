//! Files that `serve` reads again while it runs (suppression rules, tokens): polled,
//! compared by their text rather than modification times, which catches every kind of
//! edit, a Kubernetes ConfigMap's swap of a symlink included. `reload` (SIGHUP) makes
//! every watcher read its file at once rather than at its next poll.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Reads a watched file's text, at most `max` bytes of UTF-8; the error says which of
/// those it is not, for the caller to name the file and the setting.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("over the limit of {max} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))
}

/// How often such a file is read again.
pub const POLL: Duration = Duration::from_secs(1);

/// When a watcher reads its file: every `poll`, and whenever `reload` fires, until `stop`.
pub(crate) struct When {
    pub stop: CancellationToken,
    pub reload: std::sync::Arc<tokio::sync::Notify>,
    pub poll: Duration,
}

/// Reads `path` every `poll` ([`POLL`]; and when `reload` fires) until `stop` and calls `changed` with each new text (one
/// that differs from the last seen, `last` at first), or `unreadable` once per spell of
/// failed reads (a file being replaced can be missing for a moment; after such a spell,
/// any text read is new, an empty one too).
pub(crate) async fn text_changes<E: Send + 'static>(
    path: PathBuf,
    last: String,
    read: fn(&Path) -> Result<String, E>,
    when: When,
    mut changed: impl FnMut(&str),
    mut unreadable: impl FnMut(E),
) {
    let When { stop, reload, poll } = when;
    let mut last = Some(last);
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = reload.notified() => {}
        }
        let read_path = path.clone();
        let Ok(text) = tokio::task::spawn_blocking(move || read(&read_path)).await else {
            continue;
        };
        match text {
            Ok(text) => {
                if last.as_ref() != Some(&text) {
                    changed(&text);
                    last = Some(text);
                }
            }
            Err(e) => {
                if last.take().is_some() {
                    unreadable(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// `reload` (SIGHUP) reads the file at once: with a poll far beyond the test, only
    /// the reload can have seen the change.
    #[tokio::test]
    async fn a_reload_reads_the_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "one").unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let (stop, reload) = (
            CancellationToken::new(),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (changed, told) = (seen.clone(), Arc::new(tokio::sync::Notify::new()));
        let told_task = told.clone();
        let task = tokio::spawn(text_changes(
            path.clone(),
            "one".to_string(),
            |p| std::fs::read_to_string(p),
            When {
                stop: stop.clone(),
                reload: reload.clone(),
                poll: Duration::from_secs(24 * 3600),
            },
            move |text| {
                changed.lock().unwrap().push(text.to_string());
                told_task.notify_one();
            },
            |_e: std::io::Error| {},
        ));
        std::fs::write(&path, "two").unwrap();
        // The watcher waits in its select once it has made its first (immediate) read;
        // fire until it has seen the change.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            reload.notify_waiters();
            if tokio::time::timeout(Duration::from_millis(50), told.notified())
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reload read nothing"
            );
        }
        assert_eq!(*seen.lock().unwrap(), ["two"]);
        stop.cancel();
        task.await.unwrap();
    }
}
