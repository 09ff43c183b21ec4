//! Bearer tokens bound to clusters: who may write into the state, and for which
//! clusters.
//!
//! The tokens file (`--tokens`) is TOML, `[[token]]` tables of `name`, `sha256` (hex
//! SHA-256 of the token's bytes: the file holds no token) and `clusters` (names, or
//! `["*"]` for any). With it, every request needs `Authorization: Bearer <token>` (what
//! the Collector's `bearertokenauth` extension sends) of a listed token: otherwise 401 /
//! `UNAUTHENTICATED`. A point whose cluster (after the key mode's fallback) is not one of
//! its token's is rejected in the partial success, so a compromised collector in one
//! cluster cannot write another's baseline. The file is read again every [`POLL`] and a
//! valid change applies to the next request; an invalid one is logged and the tokens in
//! force stay. Tokens are never logged; names are.
//!
//! A token may also have a `role` (`viewer`, `responder`, `admin`): it then opens the
//! query API and the console (`unseen_api`). A token with a role and no `clusters` is an
//! API token only, refused by the receivers; a token without a role is a receiver's,
//! refused by the API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the file is read again.
pub const POLL: std::time::Duration = crate::watch::POLL;

/// The largest tokens file read.
pub const MAX_TOKENS_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokens file {origin}: {message}")]
pub struct TokensError {
    pub origin: String,
    pub message: String,
}

/// One token: its name (for logs and messages), its digest, the clusters it may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    /// `None`: any cluster.
    clusters: Option<BTreeSet<String>>,
    /// May send points (it lists `clusters`).
    receiver: bool,
    /// What it may do through the query API; `None`: nothing.
    pub role: Option<unseen_api::Role>,
}

impl Token {
    pub fn allows(&self, cluster: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.contains(cluster))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    #[serde(default)]
    clusters: Option<Vec<String>>,
    #[serde(default)]
    role: Option<unseen_api::Role>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Why a request was refused (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    NotBearer,
    Unknown,
    /// An API token (a role, no clusters) sent to a receiver.
    NotReceiver,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "no token: send `Authorization: Bearer <token>` (the Collector's bearertokenauth extension) with a token listed in unseen's tokens file",
            Refusal::NotBearer => "the Authorization header is not `Bearer <token>`",
            Refusal::Unknown => "the token is not one of unseen's tokens file (or was removed from it)",
            Refusal::NotReceiver => "the token is an API token (it has a `role` and no `clusters`): list the clusters it may report in the tokens file to send points with it",
        }
    }
}

impl Tokens {
    /// Parses a tokens file's text; errors name the file, the line and what is wrong.
    pub fn parse(origin: &str, text: &str) -> Result<Tokens, TokensError> {
        let err = |message: String| TokensError {
            origin: origin.to_string(),
            message,
        };
        let file: File =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let mut tokens = Vec::new();
        let mut names = BTreeSet::new();
        for entry in file.token {
            let at = format!("token `{}`", entry.name);
            if entry.name.is_empty() {
                return Err(err("a token without a name: give each a `name`".into()));
            }
            if !names.insert(entry.name.clone()) {
                return Err(err(format!("{at} is listed twice: names must differ")));
            }
            let hex = entry.sha256.trim().to_ascii_lowercase();
            let digest: Option<Vec<u8>> = (hex.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .flatten();
            let Some(digest) = digest else {
                return Err(err(format!(
                    "{at}: `sha256` is not 64 hex digits; write the SHA-256 of the token (e.g. `printf %s \"$TOKEN\" | sha256sum`), never the token"
                )));
            };
            let receiver = entry.clusters.is_some();
            let listed = match entry.clusters {
                None if entry.role.is_none() => {
                    return Err(err(format!(
                        "{at}: no `clusters` and no `role`: list the clusters it may report (or [\"*\"] for any) for a Collector's token, or give a `role` (viewer, responder, admin) for the API"
                    )))
                }
                None => Vec::new(),
                Some(c) if c.is_empty() => {
                    return Err(err(format!(
                        "{at}: `clusters` is empty; list the clusters it may report, or [\"*\"] for any"
                    )))
                }
                Some(c) => c,
            };
            let clusters = if listed.iter().any(|c| c == "*") {
                None
            } else {
                Some(listed.into_iter().collect())
            };
            let mut d = [0u8; 32];
            d.copy_from_slice(&digest);
            if tokens.iter().any(|t: &Arc<Token>| t.digest == d) {
                return Err(err(format!(
                    "{at} has the digest of another token: each collector needs its own"
                )));
            }
            tokens.push(Arc::new(Token {
                name: entry.name,
                digest: d,
                clusters,
                receiver,
                role: entry.role,
            }));
        }
        Ok(Tokens { tokens })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token of a receiver's request: one that may send points.
    pub fn authenticate_receiver(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Token>, Refusal> {
        let token = self.authenticate(authorization)?;
        if !token.receiver {
            return Err(Refusal::NotReceiver);
        }
        Ok(token)
    }

    /// A token listed under `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Token>> {
        self.tokens.iter().find(|t| t.name == name)
    }

    /// The token of a request's `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Token>, Refusal> {
        let header = authorization.ok_or(Refusal::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(Refusal::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::NotBearer);
        }
        let digest = sha256(token.trim().as_bytes());
        // Digests are compared whole (no early exit), though a timing difference on a
        // digest tells an attacker nothing about a token.
        self.tokens
            .iter()
            .find(|t| {
                t.digest
                    .iter()
                    .zip(&digest)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            })
            .cloned()
            .ok_or(Refusal::Unknown)
    }
}

/// Reads a tokens file's text (bounded, UTF-8).
pub fn read(path: &Path) -> Result<String, TokensError> {
    crate::watch::read_bounded(path, MAX_TOKENS_BYTES).map_err(|message| TokensError {
        origin: path.display().to_string(),
        message,
    })
}

/// Reads and checks a tokens file.
pub fn load(path: &Path) -> Result<(Tokens, String), TokensError> {
    let text = read(path)?;
    Ok((Tokens::parse(&path.display().to_string(), &text)?, text))
}

/// Polls the file until `stop`, sending each valid new set of tokens.
pub(crate) async fn watch(
    path: PathBuf,
    last: String,
    tx: watch::Sender<Arc<Tokens>>,
    stop: CancellationToken,
    reload: Arc<tokio::sync::Notify>,
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
        |text| match Tokens::parse(&file.display().to_string(), text) {
            Ok(tokens) => {
                tracing::info!(file = %file.display(), tokens = tokens.len(), "tokens reloaded");
                tx.send_replace(Arc::new(tokens));
            }
            Err(e) => {
                tracing::error!(error = %e, "tokens not reloaded; the tokens in force stay: fix the file")
            }
        },
        |e| tracing::error!(error = %e, "tokens not reloaded; the tokens in force stay"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        sha256(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tokens_are_matched_by_digest_and_bound_to_clusters() {
        let text = format!(
            "[[token]]\nname = \"prod\"\nsha256 = \"{}\"\nclusters = [\"prod-eu\"]\n\n[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nclusters = [\"*\"]\n",
            hex(b"s3cret-prod"),
            hex(b"s3cret-ops").to_uppercase()
        );
        let tokens = Tokens::parse("tokens.toml", &text).unwrap();
        let prod = tokens.authenticate(Some("Bearer s3cret-prod")).unwrap();
        assert_eq!(prod.name, "prod");
        assert!(prod.allows("prod-eu") && !prod.allows("staging"));
        let ops = tokens.authenticate(Some("bearer s3cret-ops")).unwrap();
        assert!(ops.allows("anything"));
        assert_eq!(tokens.authenticate(None), Err(Refusal::Missing));
        assert_eq!(
            tokens.authenticate(Some("Basic abc")),
            Err(Refusal::NotBearer)
        );
        assert_eq!(
            tokens.authenticate(Some("Bearer nope")),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let e = |t: &str| Tokens::parse("t.toml", t).unwrap_err().message;
        assert!(
            e("[[token]]\nname = \"a\"\nsha256 = \"abc\"\nclusters = [\"x\"]\n")
                .contains("64 hex digits")
        );
        let h = hex(b"x");
        assert!(e(&format!(
            "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nclusters = []\n"
        ))
        .contains("`clusters` is empty"));
        assert!(e(&format!("[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nclusters = [\"x\"]\n[[token]]\nname = \"a\"\nsha256 = \"{}\"\nclusters = [\"x\"]\n", hex(b"y"))).contains("listed twice"));
        assert!(e(&format!("[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nclusters = [\"x\"]\n[[token]]\nname = \"b\"\nsha256 = \"{h}\"\nclusters = [\"x\"]\n")).contains("digest of another token"));
        assert!(e("[[token]]\nname = \"a\"\ntoken = \"plain\"\n").contains("unknown field"));
        assert!(e(&format!("[[token]]\nname = \"a\"\nsha256 = \"{h}\"\n"))
            .contains("no `clusters` and no `role`"));
        assert!(e(&format!(
            "[[token]]\nname = \"a\"\nsha256 = \"{h}\"\nrole = \"root\"\n"
        ))
        .contains("unknown variant"));
    }

    #[test]
    fn roles_open_the_api_and_only_tokens_with_clusters_send() {
        let text = format!(
            "[[token]]\nname = \"analyst\"\nsha256 = \"{}\"\nrole = \"responder\"\n\n[[token]]\nname = \"both\"\nsha256 = \"{}\"\nclusters = [\"*\"]\nrole = \"admin\"\n\n[[token]]\nname = \"collector\"\nsha256 = \"{}\"\nclusters = [\"a\"]\n",
            hex(b"t-analyst"),
            hex(b"t-both"),
            hex(b"t-collector")
        );
        let tokens = Tokens::parse("tokens.toml", &text).unwrap();
        let analyst = tokens.authenticate(Some("Bearer t-analyst")).unwrap();
        assert_eq!(analyst.role, Some(unseen_api::Role::Responder));
        assert_eq!(
            tokens.authenticate_receiver(Some("Bearer t-analyst")),
            Err(Refusal::NotReceiver)
        );
        let both = tokens.authenticate_receiver(Some("Bearer t-both")).unwrap();
        assert_eq!(both.role, Some(unseen_api::Role::Admin));
        let collector = tokens
            .authenticate_receiver(Some("Bearer t-collector"))
            .unwrap();
        assert_eq!(collector.role, None);
        assert_eq!(
            tokens.by_name("analyst").map(|t| t.role),
            Some(Some(unseen_api::Role::Responder))
        );
    }
}
