//! Reading a request body, the same way for both receivers: within the body limit,
//! within the budget of bytes in flight, within the body timeout; then inflating it
//! (gzip) on the blocking pool, within the same limit and budget.
//!
//! Why on the blocking pool: inflating 64 MiB takes a runtime thread for a quarter of a
//! second or more, and every connection sharing that thread would wait behind it.

use std::io::Read;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::budget::Reservation;
use crate::status::{Answer, RETRY_AFTER};

/// What to say when the limit refuses `what`.
pub fn too_large(what: &str, limit: usize) -> Answer {
    Answer::TooLarge(format!(
        "{what} is over the limit of {limit} bytes (limits.max_body_bytes); send smaller batches (the Collector's batch processor: send_batch_max_size)"
    ))
}

/// The budget of bytes in flight is spent: retry.
pub fn busy(budget_bytes: usize) -> Answer {
    Answer::Busy {
        message: format!(
            "unseen is busy: requests in flight hold its budget of {budget_bytes} bytes (limits.max_inflight_bytes); retry after {} s",
            RETRY_AFTER.as_secs()
        ),
        retry_after: RETRY_AFTER,
    }
}

fn timed_out(timeout: Duration) -> Answer {
    crate::metrics::timeout("body");
    Answer::TimedOut(format!(
        "the request body did not arrive within {} s (limits.body_timeout); check the sender's network, or send smaller batches",
        timeout.as_secs()
    ))
}

/// How a body is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Bytes at most (after which: [`Answer::TooLarge`] naming `what`).
    pub limit: usize,
    /// The whole body arrives within this, or [`Answer::TimedOut`].
    pub timeout: Duration,
    /// The size of the budget, for the message when it is spent.
    pub budget_bytes: usize,
}

/// How a body announces its length, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// Not at all (HTTP chunked).
    No,
    /// HTTP `Content-Length`; held already by the caller (see [`hold_announced`]).
    Held(usize),
    /// In a gRPC frame header, the first 5 bytes: held when they arrive.
    GrpcFrame,
}

/// Holds an announced length from the budget, all or nothing, before the body is read.
///
/// Why all at once rather than as bytes arrive: requests that each hold part of what
/// they need, and fail when the budget is spent, can starve one another for ever (each
/// large request refused halfway, retried, refused again). Held whole, a request either
/// has all it needs or is refused before it is read. A peer that announces a large body
/// and sends it slowly holds its share until the body timeout; with tokens, only a
/// sender with a valid token gets this far.
pub fn hold_announced(
    length: usize,
    limits: BodyLimits,
    reservation: &mut Reservation,
) -> Result<(), Answer> {
    if reservation.grow(length) {
        Ok(())
    } else {
        Err(busy(limits.budget_bytes))
    }
}

/// Reads the whole body, holding from the budget what its buffer takes. A body that
/// announced its length gets a buffer of that size (held whole); one that did not, a
/// buffer that doubles as bytes arrive, each step held before it is allocated.
pub async fn read<B>(
    body: B,
    announced: Announced,
    limits: BodyLimits,
    what: &str,
    reservation: &mut Reservation,
) -> Result<Bytes, Answer>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    /// The first allocation without an announced length; then the buffer doubles.
    const FIRST: usize = 64 << 10;
    const GRPC_HEADER: usize = 5;
    let read = async {
        let mut body = std::pin::pin!(body);
        let (mut held, mut expected) = match announced {
            Announced::Held(length) => (length, Some(length)),
            _ => (0, None),
        };
        let mut buf = BytesMut::with_capacity(expected.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| Answer::Malformed(format!("cannot read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = buf.len() + data.len();
            if total > limits.limit {
                return Err(too_large(what, limits.limit));
            }
            if announced == Announced::GrpcFrame && expected.is_none() && total >= GRPC_HEADER {
                let mut header = [0u8; GRPC_HEADER];
                let have = buf.len().min(GRPC_HEADER);
                header[..have].copy_from_slice(&buf[..have]);
                header[have..].copy_from_slice(&data[..GRPC_HEADER - have]);
                let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                let framed = GRPC_HEADER.saturating_add(length as usize);
                if framed > limits.limit {
                    return Err(too_large(what, limits.limit));
                }
                if framed > held {
                    hold_announced(framed - held, limits, reservation)?;
                    held = framed;
                }
                expected = Some(framed);
                buf.reserve(framed.saturating_sub(buf.len()));
            }
            if total > buf.capacity() {
                // Held before it is allocated, so the budget is never overdrawn.
                let doubled = buf.capacity().saturating_mul(2).max(FIRST);
                let capacity = doubled.min(limits.limit).max(total);
                if capacity > held {
                    if !reservation.grow(capacity - held) {
                        return Err(busy(limits.budget_bytes));
                    }
                    held = capacity;
                }
                buf.reserve(capacity - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(limits.timeout)),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum GunzipError {
    TooLarge,
    /// The budget of bytes in flight could not take more.
    Busy,
    Corrupt(String),
}

/// Inflates at most `limit` bytes (one byte more and it stops), holding what it
/// inflates from the budget as it goes.
pub fn gunzip(
    compressed: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, GunzipError> {
    /// Held from the budget this much at a time.
    const STEP: usize = 1 << 20;
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    let mut out = Vec::new();
    loop {
        if !reservation.grow(STEP) {
            return Err(GunzipError::Busy);
        }
        out.reserve_exact(STEP);
        let n = (&mut decoder)
            .take(STEP as u64)
            .read_to_end(&mut out)
            .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
        if out.len() > limit {
            return Err(GunzipError::TooLarge);
        }
        if n < STEP {
            break;
        }
    }
    Ok(out.into())
}

/// [`gunzip`] on the blocking pool; `what` names the body in the answers.
pub async fn inflate(
    compressed: Bytes,
    limit: usize,
    budget_bytes: usize,
    mut reservation: Reservation,
    what: &'static str,
) -> (Result<Bytes, Answer>, Reservation) {
    let joined = tokio::task::spawn_blocking(move || {
        let result = gunzip(&compressed, limit, &mut reservation);
        (result, reservation)
    })
    .await;
    let (result, reservation) = match joined {
        Ok(done) => done,
        Err(e) => {
            // The closure panicked (it does not): its reservation went with it.
            return (
                Err(Answer::Failed(format!("inflating the body failed: {e}"))),
                crate::budget::Budget::new(0).empty(),
            );
        }
    };
    let result = result.map_err(|e| match e {
        GunzipError::TooLarge => too_large(&format!("decompressed {what}"), limit),
        GunzipError::Busy => busy(budget_bytes),
        GunzipError::Corrupt(message) => {
            Answer::Malformed(format!("{what} is not valid gzip: {message}"))
        }
    });
    (result, reservation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn plenty() -> Reservation {
        Budget::new(1 << 30).empty()
    }

    #[test]
    fn gunzip_stops_one_byte_past_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20 << 10, "a real bomb: {} bytes", bomb.len());
        assert_eq!(
            gunzip(&bomb, 1 << 20, &mut plenty()),
            Err(GunzipError::TooLarge)
        );
        assert_eq!(
            gunzip(&bomb, 10 << 20, &mut plenty()).unwrap().len(),
            10 << 20
        );
    }

    #[test]
    fn gunzip_holds_what_it_inflates_from_the_budget() {
        let data = gzip(&vec![7u8; 5 << 20]);
        let budget = Budget::new(3 << 20);
        let mut reservation = budget.empty();
        assert_eq!(
            gunzip(&data, 64 << 20, &mut reservation),
            Err(GunzipError::Busy)
        );
        assert!(reservation.bytes() <= 3 << 20);
        drop(reservation);
        assert_eq!(budget.in_use(), 0);

        let budget = Budget::new(8 << 20);
        let mut reservation = budget.empty();
        assert_eq!(
            gunzip(&data, 64 << 20, &mut reservation).unwrap().len(),
            5 << 20
        );
        assert!(reservation.bytes() >= 5 << 20 && reservation.bytes() <= 6 << 20);
    }

    #[test]
    fn gunzip_reports_corrupt_input() {
        let mut data = gzip(b"hello world, hello world");
        let n = data.len();
        data.truncate(n - 6);
        match gunzip(&data, 1 << 20, &mut plenty()) {
            Err(GunzipError::Corrupt(m)) => assert!(!m.is_empty()),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }
}
