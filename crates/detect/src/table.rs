//! The compact key table that a scan and the embedded store's key states share: entries
//! in fixed chunks ([`Chunks`]), found through open addressing over 8-byte slots
//! ([`KeyTable`]) that carry the upper half of the entry's hash, so that probing past
//! other keys reads no entry and growing the table hashes nothing again.
//!
//! Neither knows what a key is: the caller hashes its keys (seeded, so that no input can
//! choose colliding keys) and says, given a position, whether it holds the key sought.

/// Items in chunks of [`CHUNK`]: a growing `Vec` would copy every entry at each doubling
/// and, while it does, hold the old copy and the new (twice the memory at the peak: 83
/// bytes a key at 10 M keys, against 52 in chunks). A chunk's address is in a short,
/// cached list, so an index costs one shift more.
#[derive(Debug, Clone)]
pub struct Chunks<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

/// Items in a chunk of [`Chunks`] (a power of two).
pub const CHUNK: usize = 1 << 16;

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Chunks {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunks<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    #[inline]
    pub fn get(&self, at: usize) -> Option<&T> {
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
    }

    #[inline]
    pub fn get_mut(&mut self, at: usize) -> Option<&mut T> {
        self.chunks.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunks<T> {
    type Output = T;

    #[inline]
    fn index(&self, at: usize) -> &T {
        &self.chunks[at / CHUNK][at % CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunks<T> {
    #[inline]
    fn index_mut(&mut self, at: usize) -> &mut T {
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }
}

/// Asks the CPU to bring the `len` bytes at `at` (one or two cache lines) into the cache.
#[inline(always)]
pub(crate) fn prefetch(at: *const i8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing the program sees and cannot fault
    // (`wrapping_add` makes no claim about the address either).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at);
        // The same line again when the bytes do not straddle two: no second fetch.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(len - 1));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

/// Positions of entries by the hash of their key: open addressing with linear probing
/// over 8-byte slots (the position plus one, and the top 32 bits of the hash, so that
/// probing past other keys reads no entry). The slot is chosen by those same 32 bits, so
/// growing the table needs no hash again: each slot carries its own. At most three
/// quarters full: a lookup reads one or two slots, mostly in one cache line. Removal
/// shifts the slots after it back (no tombstones), so a table that forgets keys as fast
/// as it learns them does not fill up.
#[derive(Debug)]
pub struct KeyTable {
    /// `(hash >> 32) << 32 | position + 1`; 0 for an empty slot. A power of two of them,
    /// at most 2^32.
    slots: Box<[u64]>,
    len: usize,
}

impl KeyTable {
    /// A table of at least `slots` slots (rounded up to a power of two).
    pub fn with_slots(slots: usize) -> Self {
        KeyTable {
            slots: vec![0; slots.next_power_of_two().max(2)].into_boxed_slice(),
            len: 0,
        }
    }

    /// A table that holds `positions` without growing.
    pub fn for_len(positions: usize) -> Self {
        Self::with_slots(positions.saturating_mul(4).div_ceil(3).saturating_add(1))
    }

    /// Positions in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first slot to look at for a hash's top half.
    #[inline]
    fn home(&self, tag: u64) -> usize {
        tag as usize & (self.slots.len() - 1)
    }

    /// The position whose slot has `hash` and for which `is` says yes.
    #[inline]
    pub fn find(&self, hash: u64, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.find_slot(hash, is).map(|(_, at)| at)
    }

    /// [`KeyTable::find`], with the slot it was found in.
    #[inline]
    fn find_slot(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let mask = self.slots.len() - 1;
        let tag = hash >> 32;
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            // Positions are below u32::MAX: + 1 fits the low half.
            if slot >> 32 == tag && is((slot as u32) - 1) {
                return Some((i, (slot as u32) - 1));
            }
            i = (i + 1) & mask;
        }
    }

    /// Asks the CPU to bring the first slot a lookup of `hash` reads into the cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let slot = &self.slots[self.home(hash >> 32)];
        prefetch(std::ptr::from_ref(slot).cast(), size_of::<u64>());
    }

    /// Adds position `at`, which is not in the table, under `hash`.
    pub fn insert(&mut self, hash: u64, at: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            assert!(
                self.slots.len() <= 1 << 31,
                "a key table of 2^32 slots is full"
            );
            let grown = vec![0; self.slots.len() * 2].into_boxed_slice();
            let old = std::mem::replace(&mut self.slots, grown);
            for &slot in old.iter().filter(|&&s| s != 0) {
                self.put(slot);
            }
        }
        self.put((hash >> 32) << 32 | u64::from(at + 1));
        self.len += 1;
    }

    /// Removes the position under `hash` for which `is` says yes; returns it.
    pub fn remove(&mut self, hash: u64, is: impl FnMut(u32) -> bool) -> Option<u32> {
        let (mut hole, at) = self.find_slot(hash, is)?;
        let mask = self.slots.len() - 1;
        // Backward shift: every slot after the hole, up to the next empty one, moves into
        // the hole if its home is not between the hole and itself (cyclically), so that
        // no lookup meets an empty slot before the position it looks for.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let slot = self.slots[next];
            if slot == 0 {
                break;
            }
            let home = self.home(slot >> 32);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        Some(at)
    }

    /// Puts a full slot where it goes.
    fn put(&mut self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(slot >> 32);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Against a map: inserts and removals in any order, with hashes that share their
        /// upper halves (long probe runs that wrap around the end of a tiny table).
        #[test]
        fn the_table_is_a_map(ops in proptest::collection::vec((proptest::bool::weighted(0.6), 0u64..40), 0..300)) {
            let mut table = KeyTable::with_slots(2);
            let mut model: HashMap<u64, u32> = HashMap::new();
            let hash = |k: u64| (k % 5) << 61 | (k % 7) << 32 | k;
            for (add, k) in ops {
                if add {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(k) {
                        let at = k as u32 * 3;
                        table.insert(hash(k), at);
                        e.insert(at);
                    }
                } else {
                    let removed = table.remove(hash(k), |at| at == k as u32 * 3);
                    proptest::prop_assert_eq!(removed, model.remove(&k));
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                for k in 0..40u64 {
                    let found = table.find(hash(k), |at| at == k as u32 * 3);
                    proptest::prop_assert_eq!(found, model.get(&k).copied());
                }
            }
        }
    }

    #[test]
    fn chunks_index_across_chunks() {
        let mut c = Chunks::default();
        for i in 0..(CHUNK + 3) {
            c.push(i);
        }
        assert_eq!(c.len(), CHUNK + 3);
        assert_eq!(c[CHUNK + 2], CHUNK + 2);
        *c.get_mut(CHUNK).unwrap() = 7;
        assert_eq!(c.get(CHUNK), Some(&7));
        assert_eq!(c.get(CHUNK + 3), None);
        assert_eq!(c.iter().count(), CHUNK + 3);
    }
}
