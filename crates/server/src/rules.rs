//! The suppression rules file: read (for `serve` and `unseen suppress` alike) and
//! reloaded while `serve` runs.
//!
//! The file is read again every [`POLL`]; when its text changed, it is parsed whole and,
//! if valid, its rules (after those of the config) replace the rules in force for the
//! next commit. A file that does not parse leaves the rules in force as they were, with
//! an error in the log (file, line, what is wrong) and `result="error"` in
//! `unseen_suppression_reloads_total`. Comparing the text rather than modification times
//! catches every kind of edit, including a Kubernetes ConfigMap's swap of a symlink.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use unseen_findings::suppress::{SuppressError, MAX_RULES_BYTES};
use unseen_findings::Suppressions;

use crate::metrics as m;

/// How often the file is read again.
pub const POLL: std::time::Duration = crate::watch::POLL;

/// Reads a rules file: its text, or why it cannot be used (missing, over
/// [`MAX_RULES_BYTES`], not UTF-8). `serve` and `unseen suppress` both read it so.
pub fn read(path: &Path) -> Result<String, SuppressError> {
    crate::watch::read_bounded(path, MAX_RULES_BYTES).map_err(|mut message| {
        if message.starts_with("over the limit") {
            message.push_str("; a rule per image is better written as one glob or regex");
        }
        SuppressError {
            origin: path.display().to_string(),
            message,
        }
    })
}

/// Reads and checks a rules file.
pub fn load(path: &Path) -> Result<Suppressions, SuppressError> {
    Suppressions::parse(&path.display().to_string(), &read(path)?)
}

fn parse(path: &Path, text: &str, base: &Suppressions) -> Result<Suppressions, SuppressError> {
    let origin = path.display().to_string();
    let file = Suppressions::parse(&origin, text)?;
    base.clone()
        .merged(file)
        .map_err(|message| SuppressError { origin, message })
}

/// The rules in force at start: the config's, then the file's (a bad file fails the start).
pub(crate) fn initial(
    path: Option<&Path>,
    base: &Suppressions,
) -> Result<(Suppressions, Option<String>), SuppressError> {
    let Some(path) = path else {
        return Ok((base.clone(), None));
    };
    let text = read(path)?;
    Ok((parse(path, &text, base)?, Some(text)))
}

/// Polls the file until `stop`, sending each valid new set of rules.
pub(crate) async fn watch(
    path: PathBuf,
    base: Suppressions,
    last: String,
    tx: watch::Sender<Arc<Suppressions>>,
    stop: CancellationToken,
    reload: std::sync::Arc<tokio::sync::Notify>,
) {
    let file = path.clone();
    crate::watch::text_changes(
        path,
        last,
        read,
        crate::watch::When {
            stop,
            reload,
            poll: crate::watch::POLL,
        },
        |text| match parse(&file, text, &base) {
            Ok(rules) => {
                tracing::info!(file = %file.display(), rules = rules.rules.len(), "suppression rules reloaded");
                m::suppression_rules(rules.rules.len());
                m::suppression_reload(true);
                tx.send_replace(Arc::new(rules));
            }
            Err(e) => {
                tracing::error!(error = %e, "suppression rules not reloaded; the rules in force stay: fix the file");
                m::suppression_reload(false);
            }
        },
        |e| {
            tracing::error!(error = %e, "suppression rules not reloaded; the rules in force stay");
            m::suppression_reload(false);
        },
    )
    .await
}
