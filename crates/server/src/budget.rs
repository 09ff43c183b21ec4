//! One budget of request bytes in flight, shared by every request of both receivers.
//!
//! The body limit bounds one request; this bounds them all together. A request holds
//! a [`Reservation`] for what it received and for what it inflated, from its first
//! byte until it is answered (its decoded points, which are no larger than the
//! decompressed body they came from, live inside that span). A request that would take
//! the budget past its size is refused at once with "busy, retry" (429 /
//! RESOURCE_EXHAUSTED with a retry delay) rather than queued: a queue of waiting bodies
//! would be memory again, and the sender's retry already is the queue.
//!
//! Counted in KiB: the semaphore takes at most `u32::MAX` permits at once, and a
//! reservation is rounded up, so the budget errs on the safe side.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: usize = 1024;

#[derive(Clone, Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

/// Bytes a request holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
    units: usize,
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT).max(1)
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let total = units(bytes).min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(total)),
            bytes,
        }
    }

    /// The size of the budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes held by requests now.
    pub fn in_use(&self) -> usize {
        (units(self.bytes).min(Semaphore::MAX_PERMITS) - self.permits.available_permits()) * UNIT
    }

    /// An empty reservation, to grow as bytes arrive.
    pub fn empty(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
            units: 0,
        }
    }
}

impl Reservation {
    /// Holds `bytes` more; false (and nothing more held) when the budget has not got them.
    pub fn grow(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let want = units(bytes);
        let Ok(want32) = u32::try_from(want) else {
            return false;
        };
        match self.budget.permits.clone().try_acquire_many_owned(want32) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.units += want;
                crate::metrics::inflight_bytes(self.budget.in_use());
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back what is held beyond `bytes` (an estimate that was more than needed).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes);
        if keep >= self.units {
            return;
        }
        if let Some(permit) = &mut self.permit {
            let extra = (self.units - keep) as u32;
            if let Some(released) = permit.split(extra as usize) {
                drop(released);
                self.units = keep;
                crate::metrics::inflight_bytes(self.budget.in_use());
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.units * UNIT
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            crate::metrics::inflight_bytes(self.budget.in_use());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.empty();
        assert!(a.grow(6 * UNIT));
        let mut b = budget.empty();
        assert!(!b.grow(5 * UNIT), "6 + 5 > 10");
        assert!(b.grow(4 * UNIT));
        assert_eq!(budget.in_use(), 10 * UNIT);
        assert!(!a.grow(1));
        drop(a);
        assert_eq!(budget.in_use(), 4 * UNIT);
        assert!(b.grow(6 * UNIT));
        assert_eq!(b.bytes(), 10 * UNIT);
    }

    #[test]
    fn a_byte_is_a_whole_unit() {
        let budget = Budget::new(2 * UNIT);
        let mut a = budget.empty();
        assert!(a.grow(1));
        assert!(a.grow(1));
        assert!(!a.grow(1));
    }
}
