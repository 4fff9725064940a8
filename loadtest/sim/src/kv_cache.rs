//! The KV cache of a simulated GPU server, in blocks, as vLLM keeps it:
//! a prompt's full blocks are shared by every running sequence whose
//! prompt starts the same way (reference-counted, counted once), and a
//! block nobody uses any more stays cached for later prompts until its
//! room is needed, least recently used first. What a sequence generates,
//! and its prompt's last partial block, are its own.
//!
//! Without sharing, ten concurrent requests over one 2k-token system
//! prompt would hold ten copies of it and a saturated replica would keep
//! almost no prefix cache; with it, they hold one, as on a real replica.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Copy)]
struct SharedBlock {
    /// Running sequences that hold it; 0 means cached, evictable.
    refs: u32,
    /// When its last holder let go (the cache's clock).
    released_at: u64,
}

/// Blocks in use and cached, by hash (see [`crate::engine::block_hashes`]).
#[derive(Debug)]
pub struct KvCache {
    total_blocks: u64,
    /// Blocks held by running sequences: shared ones once, plus private.
    in_use: u64,
    shared: HashMap<u64, SharedBlock>,
    /// Cached blocks nobody holds, oldest first: (released_at, hash).
    evictable: BTreeSet<(u64, u64)>,
    clock: u64,
}

impl KvCache {
    pub fn new(total_blocks: u64) -> KvCache {
        KvCache {
            total_blocks,
            in_use: 0,
            shared: HashMap::new(),
            evictable: BTreeSet::new(),
            clock: 0,
        }
    }

    /// Blocks held by running sequences.
    pub fn used_blocks(&self) -> u64 {
        self.in_use
    }

    /// Blocks cached but held by nobody.
    pub fn cached_blocks(&self) -> u64 {
        self.evictable.len() as u64
    }

    /// Takes room for a sequence whose prompt has the full `blocks` and
    /// which needs `private_blocks` of its own. Returns how many of
    /// `blocks`, from the first, were already there (its prefix hits), or
    /// `None`, changing nothing, when the blocks nobody holds are too few.
    pub fn admit(&mut self, blocks: &[u64], private_blocks: u64) -> Option<usize> {
        // A cached block taken back, or a new one, comes out of the room
        // nobody holds; one already held by another sequence costs nothing.
        let mut needed = private_blocks;
        let mut counted = std::collections::HashSet::new();
        for block in blocks {
            let held = self.shared.get(block).is_some_and(|b| b.refs > 0);
            if !held && counted.insert(*block) {
                needed += 1;
            }
        }
        if self.in_use + needed > self.total_blocks {
            return None;
        }
        let hits = blocks.iter().take_while(|b| self.shared.contains_key(b)).count();
        for block in blocks {
            let entry = self.shared.entry(*block).or_insert(SharedBlock {
                refs: 0,
                released_at: 0,
            });
            if entry.refs == 0 {
                self.evictable.remove(&(entry.released_at, *block));
            }
            entry.refs += 1;
        }
        self.in_use += needed;
        self.evict_to_fit();
        Some(hits)
    }

    /// Gives back what [`KvCache::admit`] took for the same arguments. The
    /// prompt's blocks stay cached; its last blocks are forgotten first.
    pub fn release(&mut self, blocks: &[u64], private_blocks: u64) {
        self.in_use = self.in_use.saturating_sub(private_blocks);
        for block in blocks.iter().rev() {
            let Some(entry) = self.shared.get_mut(block) else {
                continue;
            };
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                self.clock += 1;
                entry.released_at = self.clock;
                self.evictable.insert((self.clock, *block));
                self.in_use = self.in_use.saturating_sub(1);
            }
        }
    }

    /// Forgets the least recently released blocks until held and cached
    /// blocks fit in the cache.
    fn evict_to_fit(&mut self) {
        while self.in_use + self.evictable.len() as u64 > self.total_blocks {
            let Some(oldest) = self.evictable.pop_first() else {
                return;
            };
            self.shared.remove(&oldest.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_sequences_share_a_prompt_and_count_it_once() {
        let mut cache = KvCache::new(10);
        assert_eq!(cache.admit(&[1, 2, 3], 1), Some(0));
        assert_eq!(cache.used_blocks(), 4);
        // Same system prompt, another question: only its own blocks cost.
        assert_eq!(cache.admit(&[1, 2, 4], 1), Some(2));
        assert_eq!(cache.used_blocks(), 6);
        assert_eq!(cache.admit(&[1, 2, 3], 1), Some(3));
        assert_eq!(cache.used_blocks(), 7);
        // Four more blocks of room are not there.
        assert_eq!(cache.admit(&[9, 8], 2), None);
        assert_eq!(cache.used_blocks(), 7, "a refusal takes nothing");
        cache.release(&[1, 2, 3], 1);
        cache.release(&[1, 2, 4], 1);
        assert_eq!(cache.used_blocks(), 4, "the blocks the third holds stay in use");
        cache.release(&[1, 2, 3], 1);
        assert_eq!((cache.used_blocks(), cache.cached_blocks()), (0, 4));
    }

    #[test]
    fn blocks_nobody_holds_stay_cached_until_their_room_is_needed() {
        let mut cache = KvCache::new(6);
        cache.admit(&[1, 2, 3], 0);
        cache.release(&[1, 2, 3], 0);
        cache.admit(&[7, 8], 0);
        cache.release(&[7, 8], 0);
        assert_eq!(cache.cached_blocks(), 5);
        // Three new blocks: the oldest released go, a prompt's last blocks
        // before its first.
        assert_eq!(cache.admit(&[4, 5, 6], 0), Some(0));
        assert_eq!(cache.cached_blocks(), 3);
        assert_eq!(
            cache.admit(&[1, 2], 0),
            Some(1),
            "the oldest prompt kept its first block only"
        );
        assert_eq!(cache.admit(&[7], 0), Some(1), "the newer prompt is still cached");
    }

    #[test]
    fn a_held_block_is_never_evicted() {
        let mut cache = KvCache::new(4);
        cache.admit(&[1, 2], 0);
        // Every other block is needed: [1, 2] are held, so they stay.
        assert_eq!(cache.admit(&[3, 4], 0), Some(0));
        assert_eq!(cache.admit(&[5], 0), None);
        assert_eq!(cache.admit(&[1, 2], 0), Some(2));
        cache.release(&[3, 4], 0);
        assert_eq!(cache.admit(&[5, 6], 0), Some(0), "the released blocks make room");
        cache.release(&[5, 6], 0);
        assert_eq!(cache.admit(&[3], 0), Some(0), "and are gone");
    }

    #[test]
    fn a_cached_block_taken_back_needs_room() {
        let mut cache = KvCache::new(3);
        cache.admit(&[1, 2], 0);
        cache.release(&[1, 2], 0);
        cache.admit(&[9], 1);
        // Block 1 is cached, but in room nobody holds: taking it back, a
        // new block 2 and a private one need three, and one is left.
        assert_eq!(cache.admit(&[1, 2], 1), None);
        cache.release(&[9], 1);
        assert_eq!(cache.admit(&[1, 2], 1), Some(1));
        assert_eq!(cache.used_blocks(), 3);
    }
}
