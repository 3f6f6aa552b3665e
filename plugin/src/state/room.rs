//! Hash tables give back the room of their largest size. A map never shrinks by itself: a
//! burst of short-lived entries (a few thousand pipes while a node starts its pods) would hold
//! its memory for good.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash},
};

/// Tables smaller than this many slots are left alone.
const SMALL: usize = 64;

pub trait GiveBackRoom {
    /// Once the table holds under a quarter of its room, shrinks it to twice what it holds: at
    /// most once per halving, so the reallocations cost O(1) per removal.
    fn give_back_room(&mut self);
}

fn sparse(len: usize, capacity: usize) -> bool {
    capacity > SMALL && len < capacity / 4
}

impl<K: Eq + Hash, V, S: BuildHasher> GiveBackRoom for HashMap<K, V, S> {
    fn give_back_room(&mut self) {
        if sparse(self.len(), self.capacity()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

impl<K: Eq + Hash, S: BuildHasher> GiveBackRoom for HashSet<K, S> {
    fn give_back_room(&mut self) {
        if sparse(self.len(), self.capacity()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_emptied_after_a_burst_shrinks_and_a_full_one_keeps_its_room() {
        let mut burst: HashSet<u32> = (0..10_000).collect();
        burst.give_back_room();
        assert!(burst.capacity() >= 10_000, "full: kept");
        burst.retain(|n| *n < 100);
        burst.give_back_room();
        assert!(
            burst.capacity() >= 200 && burst.capacity() < 500,
            "{}",
            burst.capacity()
        );
        let mut small: HashMap<u32, u32> = (0..50).map(|n| (n, n)).collect();
        small.clear();
        let room = small.capacity();
        small.give_back_room();
        assert_eq!(small.capacity(), room, "small tables are left alone");
    }
}
