//! The transactions a label may refer to: tx id → (merchant, time), for labels that carry no
//! `merchant_id` and `ts`.
//!
//! Bounded by entries, oldest first out (a ring of keys beside a hash map). Each entry costs
//! about 40 bytes (the map's 24-byte entry at its load factor plus the ring's 8-byte key), so
//! the default 4,000,000 entries hold about 160 MB: 46 days of a 1,000 transactions/s stream.
//! Sharded by key so partition tasks rarely wait on each other.

use std::collections::HashMap;
use std::sync::Mutex;

use super::lock;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    map: HashMap<u64, (u64, i64)>,
    ring: Vec<u64>,
    next: usize,
    cap: usize,
}

/// See the module docs.
pub struct TxLookup {
    shards: Vec<Mutex<Shard>>,
}

impl TxLookup {
    /// A lookup holding about `entries` transactions; 0 holds none.
    pub fn new(entries: u64) -> TxLookup {
        let cap = (entries as usize).div_ceil(SHARDS);
        TxLookup {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        cap,
                        ..Shard::default()
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn shard(&self, tx_key: u64) -> &Mutex<Shard> {
        &self.shards[(tx_key >> 60) as usize % SHARDS]
    }

    /// Remembers a transaction.
    #[inline]
    pub fn insert(&self, tx_key: u64, merchant_key: u64, ts_s: i64) {
        let mut s = lock(self.shard(tx_key));
        if s.cap == 0 {
            return;
        }
        if s.map.insert(tx_key, (merchant_key, ts_s)).is_some() {
            return; // a redelivery: already in the ring
        }
        if s.ring.len() < s.cap {
            s.ring.push(tx_key);
        } else {
            let i = s.next;
            let old = std::mem::replace(&mut s.ring[i], tx_key);
            s.next = (i + 1) % s.cap;
            s.map.remove(&old);
        }
    }

    /// The merchant key and time (s) of a remembered transaction.
    pub fn get(&self, tx_key: u64) -> Option<(u64, i64)> {
        lock(self.shard(tx_key)).map.get(&tx_key).copied()
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_out() {
        let l = TxLookup::new(32);
        for k in 0..100u64 {
            // spread over shards
            l.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k, k as i64);
        }
        assert!(l.len() <= 32, "{}", l.len());
        let last = 99u64.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert_eq!(l.get(last), Some((99, 99)));
        assert_eq!(l.get(0), None, "the oldest left");
        let none = TxLookup::new(0);
        none.insert(1, 2, 3);
        assert_eq!(none.get(1), None);
    }
}
