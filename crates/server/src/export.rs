//! One export, whatever the transport: decode, commit, answer. The receivers only
//! translate bytes in and the [`Answer`] out.

use bytes::Bytes;
use unseen_ingest::BodyEncoding;

use crate::committer::{now_secs, Committer, SubmitError};
use crate::decode::{decode, DecodeOptions, Decoded, Malformed};
use crate::metrics as m;
use crate::status::{Answer, RETRY_AFTER};

/// Bodies at least this large are decoded on the blocking pool, so that one huge
/// request does not stall the small ones sharing its runtime thread.
const DECODE_INLINE_MAX: usize = 256 << 10;

#[derive(Clone)]
pub struct Pipeline {
    pub opts: DecodeOptions,
    pub max_keys: u64,
    pub committer: Committer,
}

impl Pipeline {
    pub async fn export(
        &self,
        receiver: &'static str,
        body: Bytes,
        encoding: BodyEncoding,
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
            sightings,
            ready_points,
            other_points,
            mut rejected,
        } = match decoded {
            Ok(decoded) => decoded,
            Err(Malformed(message)) => {
                let answer = Answer::Malformed(message);
                m::request(receiver, answer.outcome(), 0, 0, 0, &[]);
                return answer;
            }
        };
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
