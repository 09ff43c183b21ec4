//! The suppression rules file, reloaded while `serve` runs.
//!
//! The file is read again every [`POLL`]; when its bytes changed, it is parsed whole and,
//! if valid, its rules (after those of the config) replace the rules in force for the
//! next commit. A file that does not parse leaves the rules in force as they were, with
//! an error in the log (file, line, what is wrong) and `result="error"` in
//! `unseen_suppression_reloads_total`. Comparing bytes rather than modification times
//! catches every kind of edit, including a Kubernetes ConfigMap's swap of a symlink.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use unseen_findings::suppress::{SuppressError, MAX_RULES_BYTES};
use unseen_findings::Suppressions;

use crate::metrics as m;

/// How often the file is read again.
pub const POLL: Duration = Duration::from_secs(1);

/// Reads the file: its bytes, or why they cannot be used.
fn read(path: &Path) -> Result<Vec<u8>, SuppressError> {
    let err = |message: String| SuppressError {
        origin: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_RULES_BYTES {
        return Err(err(format!(
            "{} bytes, over the limit of {MAX_RULES_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn parse(path: &Path, bytes: &[u8], base: &Suppressions) -> Result<Suppressions, SuppressError> {
    let origin = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|e| SuppressError {
        origin: origin.clone(),
        message: format!("not UTF-8 ({e})"),
    })?;
    let file = Suppressions::parse(&origin, text)?;
    base.clone()
        .merged(file)
        .map_err(|message| SuppressError { origin, message })
}

/// The rules in force at start: the config's, then the file's (a bad file fails the start).
pub(crate) fn initial(
    path: Option<&Path>,
    base: &Suppressions,
) -> Result<(Suppressions, Option<Vec<u8>>), SuppressError> {
    let Some(path) = path else {
        return Ok((base.clone(), None));
    };
    let bytes = read(path)?;
    Ok((parse(path, &bytes, base)?, Some(bytes)))
}

/// Polls the file until `stop`, sending each valid new set of rules.
pub(crate) async fn watch(
    path: PathBuf,
    base: Suppressions,
    mut last: Vec<u8>,
    tx: watch::Sender<Arc<Suppressions>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read_path = path.clone();
        let Ok(bytes) = tokio::task::spawn_blocking(move || read(&read_path)).await else {
            continue;
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => {
                // A file being replaced can be missing for a moment: the rules in force
                // stay, and the next poll tries again. Logged once per distinct state.
                if !last.is_empty() {
                    tracing::error!(error = %e, "suppression rules not reloaded; the rules in force stay");
                    m::suppression_reload(false);
                    last.clear();
                }
                continue;
            }
        };
        if bytes == last {
            continue;
        }
        match parse(&path, &bytes, &base) {
            Ok(rules) => {
                tracing::info!(file = %path.display(), rules = rules.rules.len(), "suppression rules reloaded");
                m::suppression_rules(rules.rules.len());
                m::suppression_reload(true);
                tx.send_replace(Arc::new(rules));
            }
            Err(e) => {
                tracing::error!(error = %e, "suppression rules not reloaded; the rules in force stay: fix the file");
                m::suppression_reload(false);
            }
        }
        last = bytes;
    }
}
