//! String interning for the key parts: every distinct string is stored once, in one
//! buffer, and named by a `u32`.
//!
//! A scan tracks millions of keys made of a few thousand distinct clusters, nodes and
//! images; storing each key as four ids instead of four `String`s is what keeps the
//! memory per key small.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use unseen_normalize::quick_hash::quick_hash;

/// Distinct strings, each stored once, named by dense ids from 0.
#[derive(Debug)]
pub struct Interner {
    /// Every string, back to back.
    text: String,
    /// Where each string starts in `text`, and after the last one the end of `text`:
    /// string `id` is `text[bounds[id]..bounds[id + 1]]`.
    bounds: Vec<usize>,
    /// Ids, by the hash of their string.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            text: String::new(),
            bounds: vec![0],
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

/// String `id` of `text` cut at `bounds`, as [`Interner`] stores them.
#[inline]
fn slice<'t>(text: &'t str, bounds: &[usize], id: u32) -> &'t str {
    let id = id as usize;
    &text[bounds[id]..bounds[id + 1]]
}

impl Interner {
    /// The string named `id`. Panics on an id this interner did not hand out.
    pub fn get(&self, id: u32) -> &str {
        slice(&self.text, &self.bounds, id)
    }

    /// The bytes of the string named `id`: [`Interner::get`] without the checks of
    /// character boundaries, for comparisons.
    #[inline]
    pub fn bytes(&self, id: u32) -> &[u8] {
        let id = id as usize;
        &self.text.as_bytes()[self.bounds[id]..self.bounds[id + 1]]
    }

    /// The id of `s`, adding it if it is new.
    pub fn intern(&mut self, s: &str) -> u32 {
        let hash = self.hash(s);
        self.intern_hashed(s, hash)
    }

    /// The hash the interner files `s` under (seeded per interner): for callers that hash
    /// keys by their parts' hashes, so that a part is hashed once for both.
    #[inline]
    pub fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// [`Interner::intern`] for a string whose [`Interner::hash`] is known.
    pub fn intern_hashed(&mut self, s: &str, hash: u64) -> u32 {
        let Interner {
            text,
            bounds,
            index,
            hasher,
        } = self;
        if let Some(&id) = index.find(hash, |&id| slice(text, bounds, id) == s) {
            return id;
        }
        let id = u32::try_from(bounds.len() - 1)
            .ok()
            .filter(|&id| id < u32::MAX)
            .expect("over 4 billion distinct key parts: more than one table can track");
        text.push_str(s);
        bounds.push(text.len());
        let (text, bounds) = (&*text, &*bounds);
        index.insert_unique(hash, id, |&id| hasher.hash_one(slice(text, bounds, id)));
        id
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct strings so far.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }
}

/// Ids of recently interned strings, to skip hashing whole strings for the parts that
/// repeat from one point to the next (a few thousand nodes and images make millions of
/// points). Direct-mapped by [`quick_hash`]: a slot that holds another string is only a
/// miss, checked by comparing the text, so the cheap hash costs nothing in correctness
/// (and collisions, even contrived ones, cost only speed).
#[derive(Debug, Clone)]
pub struct Recent {
    /// Id plus one; 0 for an empty slot. A power of two of them.
    slots: Box<[u32]>,
}

impl Recent {
    /// A cache of `slots` slots, a power of two.
    pub fn new(slots: usize) -> Self {
        assert!(slots.is_power_of_two(), "{slots} slots");
        Recent {
            slots: vec![0; slots].into_boxed_slice(),
        }
    }

    #[inline]
    pub fn intern(&mut self, interner: &mut Interner, s: &str) -> u32 {
        let mask = self.slots.len() - 1;
        let slot = &mut self.slots[quick_hash(s.as_bytes()) as usize & mask];
        if let Some(id) = slot.checked_sub(1) {
            if interner.bytes(id) == s.as_bytes() {
                return id;
            }
        }
        let id = interner.intern(s);
        // Ids stay below u32::MAX (the interner's limit): id + 1 does not wrap.
        *slot = id + 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stable() {
        let mut i = Interner::default();
        let words = ["", "a", "node-1", "a", "", "node-1", "ß", "node-2"];
        let ids: Vec<u32> = words.iter().map(|w| i.intern(w)).collect();
        assert_eq!(ids, [0, 1, 2, 1, 0, 2, 3, 4]);
        assert_eq!(i.len(), 5);
        for (w, id) in words.iter().zip(ids) {
            assert_eq!(i.get(id), *w);
        }
        let mut r = Recent::new(1);
        assert_eq!(r.intern(&mut i, "a"), 1);
        assert_eq!(r.intern(&mut i, "a"), 1);
        assert_eq!(r.intern(&mut i, "new"), 5);
        assert_eq!(r.intern(&mut i, "node-1"), 2);
    }

    #[test]
    fn recent_ids_are_the_interners() {
        // More names than slots, many sharing their ends: collisions are only misses.
        let mut i = Interner::default();
        let mut r = Recent::new(64);
        let names: Vec<String> = (0..3 * 64)
            .map(|n| match n % 3 {
                0 => format!("{n}-same-end"),
                1 => format!("x{}", "y".repeat(n % 40)),
                _ => format!("ip-10-{}-{}.ec2.internal", n / 250, n % 250),
            })
            .collect();
        for round in 0..3 {
            for name in names.iter().skip(round) {
                let id = r.intern(&mut i, name);
                assert_eq!(i.get(id), name);
                assert_eq!(i.intern(name), id);
            }
        }
        assert_eq!(quick_hash(b""), quick_hash(b""));
    }

    #[test]
    fn many_strings_survive_growth() {
        let mut i = Interner::default();
        for n in 0..10_000u32 {
            assert_eq!(i.intern(&format!("s{n}")), n);
        }
        for n in (0..10_000u32).rev() {
            assert_eq!(i.intern(&format!("s{n}")), n);
            assert_eq!(i.get(n), format!("s{n}"));
        }
    }
}
