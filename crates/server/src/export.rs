//! One export, whatever the transport: decode, commit, answer. The receivers only
//! translate bytes in and the [`Answer`] out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use unseen_ingest::BodyEncoding;

use crate::committer::{now_secs, Committer, SubmitError};
use crate::decode::{decode, DecodeOptions, Decoded, Malformed};
use crate::metrics as m;
use crate::status::{Answer, RETRY_AFTER};

/// Bodies at least this large are decoded on the blocking pool, so that one huge
/// request does not stall the small ones sharing its runtime thread.
const DECODE_INLINE_MAX: usize = 256 << 10;

/// Rejected points and refused bodies are logged at most this often (each is counted in
/// the metrics all the same): a broken pipeline is obvious in the first minute of the
/// log without flooding it.
pub const REJECTION_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Pipeline {
    pub opts: DecodeOptions,
    pub max_keys: u64,
    pub committer: Committer,
    /// When a rejection was last logged.
    pub rejection_logged: Arc<Mutex<Option<Instant>>>,
    /// The bearer tokens in force; `None`: no authentication.
    pub tokens: Option<tokio::sync::watch::Receiver<Arc<crate::auth::Tokens>>>,
}

impl Pipeline {
    /// Whether a rejection may be logged now (at most once per [`REJECTION_LOG_EVERY`]).
    fn log_rejection_now(&self) -> bool {
        let Ok(mut last) = self.rejection_logged.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < REJECTION_LOG_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The token of a request's `Authorization` header (`None` without a tokens file),
    /// or the answer refusing it.
    pub fn authenticate(
        &self,
        receiver: &'static str,
        authorization: Option<&str>,
    ) -> Result<Option<Arc<crate::auth::Token>>, Answer> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let result = tokens.borrow().authenticate(authorization);
        match result {
            Ok(token) => Ok(Some(token)),
            Err(refusal) => {
                let answer = Answer::Unauthenticated(refusal.message().to_string());
                m::request(receiver, answer.outcome(), 0, 0, 0, &[]);
                if self.log_rejection_now() {
                    tracing::warn!(
                        receiver,
                        "a request was refused: {} (logged at most once a minute)",
                        refusal.message()
                    );
                }
                Err(answer)
            }
        }
    }

    pub async fn export(
        &self,
        receiver: &'static str,
        body: Bytes,
        encoding: BodyEncoding,
        token: Option<Arc<crate::auth::Token>>,
    ) -> Answer {
        let now = now_secs();
        let decoded = if body.len() < DECODE_INLINE_MAX {
            decode(body, encoding, &self.opts, now)
        } else {
            let opts = self.opts.clone();
            tokio::task::spawn_blocking(move || decode(body, encoding, &opts, now))
                .await
                .unwrap_or_else(|e| Err(Malformed(format!("decoder failed: {e}"))))
        };
        let Decoded {
            mut sightings,
            ready_points,
            other_points,
            mut rejected,
        } = match decoded {
            Ok(decoded) => decoded,
            Err(Malformed(message)) => {
                if self.log_rejection_now() {
                    tracing::warn!(
                        receiver,
                        "a request was refused: {message} (logged at most once a minute; unseen_requests_total{{outcome=\"malformed\"}} counts them all)"
                    );
                }
                let answer = Answer::Malformed(message);
                m::request(receiver, answer.outcome(), 0, 0, 0, &[]);
                return answer;
            }
        };
        if let Some(token) = &token {
            // A token reports its own clusters only: the others' points are rejected.
            sightings.retain(|s| {
                let allowed = token.allows(&s.key.cluster);
                if !allowed {
                    rejected.cluster_not_allowed += 1;
                    if rejected.first_not_allowed.is_none() {
                        rejected.first_not_allowed =
                            Some((token.name.clone(), s.key.cluster.clone()));
                    }
                }
                allowed
            });
        }
        let usable = sightings.len() as u64;
        let answer = match self.committer.submit(sightings).await {
            Ok(committed) => {
                rejected.key_cap = committed.key_cap;
                Answer::Accepted {
                    rejected: rejected.total(),
                    message: rejected.message(&self.opts, self.max_keys),
                }
            }
            Err(SubmitError::Overloaded) => Answer::Unavailable {
                message: format!(
                    "unseen is overloaded: its commit queue is full; retry after {} s",
                    RETRY_AFTER.as_secs()
                ),
                retry_after: RETRY_AFTER,
            },
            Err(SubmitError::ShuttingDown) => Answer::Unavailable {
                message:
                    "unseen is shutting down; retry against another replica or after its restart"
                        .to_string(),
                retry_after: RETRY_AFTER,
            },
            Err(SubmitError::Store(message)) => Answer::Failed(format!(
                "the state store failed, nothing of this request was kept; retry ({message})"
            )),
        };
        if let Answer::Accepted {
            rejected: n,
            message,
        } = &answer
        {
            if *n > 0 && self.log_rejection_now() {
                tracing::warn!(
                    receiver,
                    rejected = n,
                    "{message} (logged at most once a minute; unseen_points_rejected_total counts them all)"
                );
            }
        }
        let accepted = match &answer {
            Answer::Accepted { .. } => usable - rejected.key_cap,
            _ => 0,
        };
        m::request(
            receiver,
            answer.outcome(),
            ready_points,
            accepted,
            other_points,
            &rejected.by_reason(),
        );
        answer
    }
}
