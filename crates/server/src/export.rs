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

/// The delay a sender is told to wait when new keys were refused at the key cap: keys
/// are forgotten once a minute at most, so sooner is pointless.
pub const KEY_CAP_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What decoded sightings take in memory: the vector, and each one's strings with the
/// allocator's bookkeeping (about 16 bytes per allocation).
fn sightings_bytes(sightings: &[unseen_store::Sighting]) -> usize {
    const PER_ALLOCATION: usize = 16;
    let heap: usize = sightings
        .iter()
        .map(|s| {
            let k = &s.key;
            k.host.len()
                + k.cluster.len()
                + k.node.len()
                + k.image.len()
                + s.host_name.as_ref().map_or(0, |h| h.len() + PER_ALLOCATION)
                + s.image_raw.as_ref().map_or(0, |i| i.len() + PER_ALLOCATION)
                + s.context.heap_bytes()
                + 5 * PER_ALLOCATION
        })
        .sum();
    heap + std::mem::size_of_val(sightings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate held before a body is decoded covers what its points take, for
    /// bodies shaped like a Collector's (one resource per container).
    #[test]
    fn decoded_points_take_less_than_the_estimate_of_their_body() {
        let opts = DecodeOptions {
            mode: Default::default(),
            max_dimension_bytes: 4096,
            max_body_bytes: 64 << 20,
            max_clock_skew: 300,
        };
        use unseen_generate::{Churn, Encoder, Format, Generator, Params};
        let params = Params {
            clusters: 1,
            nodes_per_cluster: 40,
            pods_per_node: 50,
            images: 500,
            duration_secs: 60,
            interval_secs: 60,
            seed: 3,
            start_unix_secs: 1_700_000_000,
            max_batch_points: 2_000,
            return_gap_secs: None,
            churn: Churn::default(),
        };
        let mut generator = Generator::new(params).expect("valid params");
        let mut encoder = Encoder::new(Format::OtlpProto, Default::default());
        // The first batch of container readiness points.
        let body = std::iter::from_fn(|| {
            generator.next_batch().map(|b| {
                let mut ready = 0;
                b.for_each_ready(|_| ready += 1);
                (ready, encoder.encode(&b)[4..].to_vec())
            })
        })
        .find(|(ready, _)| *ready >= 200)
        .expect("a batch of readiness points")
        .1;
        let decoded = decode(
            body.clone().into(),
            BodyEncoding::Protobuf,
            &opts,
            i64::MAX / 2,
        )
        .expect("a valid body");
        assert!(
            decoded.sightings.len() >= 200,
            "{} points, {} other, body {} bytes: {:?}",
            decoded.ready_points,
            decoded.other_points,
            body.len(),
            decoded.rejected
        );
        let estimate = body.len() + body.len() / 2;
        assert!(
            sightings_bytes(&decoded.sightings) <= estimate,
            "{} bytes of points from a body of {}",
            sightings_bytes(&decoded.sightings),
            body.len()
        );
    }
}

#[derive(Clone)]
pub struct Pipeline {
    pub opts: DecodeOptions,
    pub max_keys: u64,
    pub committer: Committer,
    /// When a rejection was last logged.
    pub rejection_logged: Arc<Mutex<Option<Instant>>>,
    /// The bearer tokens in force; `None`: no authentication.
    pub tokens: Option<tokio::sync::watch::Receiver<Arc<crate::auth::Tokens>>>,
    /// Request bytes in flight, across both receivers.
    pub budget: crate::budget::Budget,
    /// The whole body arrives within this.
    pub body_timeout: Duration,
}

impl Pipeline {
    /// How the receivers read a body.
    pub fn body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            limit: self.opts.max_body_bytes,
            timeout: self.body_timeout,
            budget_bytes: self.budget.bytes(),
        }
    }

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
        let result = tokens.borrow().authenticate_receiver(authorization);
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
        // What the request holds of the budget of bytes in flight: given back when it is
        // answered, its points committed or refused.
        mut held: crate::budget::Reservation,
    ) -> Answer {
        let now = now_secs();
        // The points this body decodes to are held from the budget before they exist (they
        // and the body are alive together while it is decoded): an estimate first, made
        // good once they are counted.
        let estimate = body.len() + body.len() / 2;
        if !held.grow(estimate) {
            let answer = crate::body::busy(self.budget.bytes());
            m::request(receiver, answer.outcome(), 0, 0, 0, &[]);
            return answer;
        }
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
        // The estimate made good: the body is gone (decoding consumed it), its points stay
        // until the answer.
        let points_bytes = sightings_bytes(&sightings);
        if points_bytes <= held.bytes() {
            held.shrink_to(points_bytes);
        } else if !held.grow(points_bytes - held.bytes()) {
            let answer = crate::body::busy(self.budget.bytes());
            m::request(
                receiver,
                answer.outcome(),
                ready_points,
                0,
                other_points,
                &[],
            );
            return answer;
        }
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
        let sender = token.as_ref().map(|t| Arc::<str>::from(t.name.as_str()));
        let answer = match self.committer.submit(sightings, sender).await {
            Ok(committed) => {
                rejected.key_cap = committed.key_cap;
                rejected.rate_limited = committed.rate_limited;
                rejected.rate_limited_sender = committed.rate_limited_sender;
                let message = rejected.message(&self.opts, self.max_keys);
                if committed.key_cap > 0 || committed.rate_limited > 0 {
                    // New keys were refused for want of room or of rate, which passes:
                    // the sender is told to retry (the rest of the request is kept, and a
                    // retry repeats it harmlessly) rather than told its points were taken.
                    let retry_after = if committed.key_cap > 0 {
                        KEY_CAP_RETRY_AFTER
                    } else {
                        committed.retry_after
                    };
                    Answer::Busy {
                        message: format!(
                            "{message}. The request's other points were kept; retry after {} s",
                            retry_after.as_secs()
                        ),
                        retry_after,
                    }
                } else {
                    Answer::Accepted {
                        rejected: rejected.total(),
                        message,
                    }
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
        let logged = match &answer {
            Answer::Accepted {
                rejected: n,
                message,
            } => Some((*n, message)),
            Answer::Busy { message, .. } => Some((rejected.total(), message)),
            _ => None,
        };
        if let Some((n, message)) = logged {
            if n > 0 && self.log_rejection_now() {
                tracing::warn!(
                    receiver,
                    rejected = n,
                    "{message} (logged at most once a minute; unseen_points_rejected_total counts them all)"
                );
            }
        }
        let accepted = match &answer {
            Answer::Accepted { .. } => usable - rejected.key_cap - rejected.rate_limited,
            Answer::Busy { .. } if rejected.key_cap + rejected.rate_limited > 0 => {
                usable - rejected.key_cap - rejected.rate_limited
            }
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
