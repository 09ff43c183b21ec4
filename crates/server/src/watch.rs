//! Files that `serve` reads again while it runs (suppression rules, tokens): polled,
//! compared by their text rather than modification times, which catches every kind of
//! edit, a Kubernetes ConfigMap's swap of a symlink included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often such a file is read again.
pub const POLL: Duration = Duration::from_secs(1);

/// Reads `path` every [`POLL`] until `stop` and calls `changed` with each new text (one
/// that differs from the last seen, `last` at first), or `unreadable` once per spell of
/// failed reads (a file being replaced can be missing for a moment; after such a spell,
/// any text read is new, an empty one too).
pub(crate) async fn text_changes<E: Send + 'static>(
    path: PathBuf,
    last: String,
    read: fn(&Path) -> Result<String, E>,
    stop: CancellationToken,
    mut changed: impl FnMut(&str),
    mut unreadable: impl FnMut(E),
) {
    let mut last = Some(last);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
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
