//! A cheap, unseeded hash for picking slots of direct-mapped caches (the batch scan's
//! recent keys and parts, [`crate::image::CanonicalMemo`]): a collision there only costs
//! a miss, because every hit is confirmed by comparing the text.

/// A cheap hash of every byte, eight at a time, for picking cache slots: not for hash
/// tables (it is neither seeded nor strong), since a collision here only costs a miss.
#[inline]
pub fn quick_hash(bytes: &[u8]) -> u64 {
    quick_hash_from(0, bytes)
}

/// [`quick_hash`] continued from `h`, to hash several strings as one.
#[inline]
pub fn quick_hash_from(h: u64, bytes: &[u8]) -> u64 {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let n = bytes.len();
    // Words folded in with a rotation each (cheap, and enough to tell names apart), then
    // mixed once at the end.
    let mut h = h ^ n as u64;
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            h = h.rotate_left(19) ^ word(at);
            at += 8;
        }
        // The last eight bytes, overlapping the word before when `n` is not a multiple.
        h = h.rotate_left(19) ^ word(n - 8);
    } else {
        h = h.rotate_left(19) ^ bytes.iter().fold(0, |w, &b| w << 8 | u64::from(b));
    }
    let h = (h ^ h >> 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ h >> 29
}

pub use unseen_model::same_bytes;
