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

/// The rules in force come from three places, in this order: the config (fixed), the
/// rules file (reloaded), the query API (its audit log). A change to either of the last
/// two is merged with the others and handed to the committer; a merge that fails (two
/// rules of one name) leaves the rules in force as they were.
#[derive(Debug)]
pub struct Sources {
    base: Suppressions,
    parts: std::sync::Mutex<(Suppressions, Suppressions)>,
    tx: watch::Sender<Arc<Suppressions>>,
}

impl Sources {
    /// The config's rules and the file's: the rules in force at start (a clash fails
    /// the start), and the channel the committer reads them from.
    pub fn new(
        base: Suppressions,
        file: Suppressions,
        origin: &str,
    ) -> Result<(Arc<Sources>, watch::Receiver<Arc<Suppressions>>), SuppressError> {
        let merged = base
            .clone()
            .merged(file.clone())
            .map_err(|message| SuppressError {
                origin: origin.to_string(),
                message,
            })?;
        let (tx, rx) = watch::channel(Arc::new(merged));
        let parts = std::sync::Mutex::new((file, Suppressions::default()));
        Ok((Arc::new(Sources { base, parts, tx }), rx))
    }

    fn publish(&self, file: &Suppressions, api: &Suppressions) -> Result<usize, String> {
        let merged = self
            .base
            .clone()
            .merged(file.clone())?
            .merged(api.clone())?;
        let n = merged.rules.len();
        self.tx.send_replace(Arc::new(merged));
        Ok(n)
    }

    /// The rules file's new rules.
    pub fn set_file(&self, file: Suppressions) -> Result<usize, String> {
        let mut parts = self
            .parts
            .lock()
            .map_err(|_| "rules lock poisoned".to_string())?;
        let n = self.publish(&file, &parts.1)?;
        parts.0 = file;
        Ok(n)
    }

    /// The query API's rules.
    pub fn set_api(&self, api: Suppressions) -> Result<usize, String> {
        let mut parts = self
            .parts
            .lock()
            .map_err(|_| "rules lock poisoned".to_string())?;
        let n = self.publish(&parts.0, &api)?;
        parts.1 = api;
        m::suppression_rules(n);
        Ok(n)
    }

    /// The config's and the file's rules (what the API lists as `configured`).
    pub fn configured(&self) -> Suppressions {
        let file = self.parts.lock().map(|p| p.0.clone()).unwrap_or_default();
        Suppressions {
            rules: self.base.rules.iter().cloned().chain(file.rules).collect(),
        }
    }
}

impl unseen_api::RulesControl for Sources {
    fn configured(&self) -> Suppressions {
        Sources::configured(self)
    }

    fn set_api_rules(&self, rules: Suppressions) -> Result<(), String> {
        self.set_api(rules).map(drop)
    }
}

/// The rules file's rules at start (a bad file fails the start), and its text.
pub(crate) fn initial(
    path: Option<&Path>,
) -> Result<(Suppressions, Option<String>), SuppressError> {
    let Some(path) = path else {
        return Ok((Suppressions::default(), None));
    };
    let text = read(path)?;
    Ok((
        Suppressions::parse(&path.display().to_string(), &text)?,
        Some(text),
    ))
}

/// Polls the file until `stop`, handing each valid new set of rules to `sources`.
pub(crate) async fn watch(
    path: PathBuf,
    last: String,
    sources: Arc<Sources>,
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
        |text| {
            let parsed = Suppressions::parse(&file.display().to_string(), text)
                .map_err(|e| e.to_string())
                .and_then(|rules| sources.set_file(rules));
            match parsed {
                Ok(rules) => {
                    tracing::info!(file = %file.display(), rules, "suppression rules reloaded");
                    m::suppression_rules(rules);
                    m::suppression_reload(true);
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "suppression rules not reloaded; the rules in force stay: fix the file");
                    m::suppression_reload(false);
                }
            }
        },
        |e| {
            tracing::error!(error = %e, "suppression rules not reloaded; the rules in force stay");
            m::suppression_reload(false);
        },
    )
    .await
}
