//! The transactions a label may refer to: tx id → (merchant, time), for labels that carry no
//! `merchant_id` and `ts`.
//!
//! A set-associative table of about `entries` slots: a transaction's key picks a set of
//! [`WAYS`] slots; a new one takes an empty slot or the set's oldest (by event time). So the
//! table keeps about the most recent `entries` transactions, each costing 24 bytes (96 MB for
//! the default 4,000,000, touched as it fills): 46 days of a 1,000 transactions/s stream.
//! An insert or a lookup reads one set (one or two cache lines), under one of 64 locks so that
//! partition tasks rarely wait on each other.

use std::sync::Mutex;

use super::lock;

/// Slots per set.
pub const WAYS: usize = 4;
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// 0 = empty.
    tx_key: u64,
    merchant_key: u64,
    ts_s: i64,
}

/// See the module docs.
pub struct TxLookup {
    shards: Vec<Mutex<Vec<[Slot; WAYS]>>>,
    sets_per_shard: usize,
}

impl TxLookup {
    /// A lookup holding about `entries` transactions; 0 holds none.
    pub fn new(entries: u64) -> TxLookup {
        let sets = (entries as usize).div_ceil(WAYS * SHARDS);
        TxLookup {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![[Slot::default(); WAYS]; sets]))
                .collect(),
            sets_per_shard: sets,
        }
    }

    /// Shard and set of a key (keys are already hashes).
    #[inline]
    fn place(&self, tx_key: u64) -> (usize, usize) {
        let h = tx_key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (
            (tx_key >> 58) as usize % SHARDS,
            ((h >> 32) as usize) % self.sets_per_shard.max(1),
        )
    }

    /// Remembers a transaction (`tx_key` not 0).
    #[inline]
    pub fn insert(&self, tx_key: u64, merchant_key: u64, ts_s: i64) {
        if self.sets_per_shard == 0 || tx_key == 0 {
            return;
        }
        let (shard, set) = self.place(tx_key);
        let mut sets = lock(&self.shards[shard]);
        let Some(set) = sets.get_mut(set) else {
            return;
        };
        let mut at = 0;
        for (i, s) in set.iter().enumerate() {
            if s.tx_key == tx_key || s.tx_key == 0 {
                at = i;
                break;
            }
            if s.ts_s < set[at].ts_s {
                at = i;
            }
        }
        set[at] = Slot {
            tx_key,
            merchant_key,
            ts_s,
        };
    }

    /// The merchant key and time (s) of a remembered transaction.
    pub fn get(&self, tx_key: u64) -> Option<(u64, i64)> {
        if self.sets_per_shard == 0 || tx_key == 0 {
            return None;
        }
        let (shard, set) = self.place(tx_key);
        let sets = lock(&self.shards[shard]);
        sets.get(set)?
            .iter()
            .find(|s| s.tx_key == tx_key)
            .map(|s| (s.merchant_key, s.ts_s))
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                lock(s)
                    .iter()
                    .flatten()
                    .filter(|slot| slot.tx_key != 0)
                    .count()
            })
            .sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u64) -> u64 {
        crate::state::key_of(&format!("t{k}"))
    }

    #[test]
    fn bounded_most_recent_kept() {
        let l = TxLookup::new(64 * WAYS as u64 * 4);
        let cap = 64 * WAYS * 4;
        for k in 0..10_000u64 {
            l.insert(key(k), k, k as i64);
        }
        assert!(l.len() <= cap, "{}", l.len());
        assert_eq!(l.get(key(9_999)), Some((9_999, 9_999)));
        // The most recent are all there: a set drops its oldest first.
        for k in 9_990..10_000 {
            assert_eq!(l.get(key(k)), Some((k, k as i64)));
        }
        assert_eq!(l.get(key(0)), None, "the oldest left");
        // A redelivery updates its slot, no duplicate.
        let before = l.len();
        l.insert(key(9_999), 1, 1);
        assert_eq!(l.len(), before);
        assert_eq!(l.get(key(9_999)), Some((1, 1)));
        let none = TxLookup::new(0);
        none.insert(1, 2, 3);
        assert_eq!(none.get(1), None);
    }
}
