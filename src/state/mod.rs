//! Per-account and per-merchant event-time state, in sharded tables owned by the process.
//!
//! Each entity keeps three rings of buckets ([`window::Ring`]): twelve 5-minute buckets for the
//! 10-minute velocity and the 1-hour window, twenty-four 1-hour buckets for the 1-day window,
//! thirty 1-day buckets for the 7-day and 30-day windows. A ring holds exactly its longest
//! window, so an event out of order is applied to every ring whose span still covers it (its
//! windows come out as if it had arrived in order); an event older than the 30-day span of its
//! entity, or more than `state.max_future_secs` ahead of the newest event time applied and of
//! the wall clock, is counted as late, scored, and not applied (it never moves time forward).
//!
//! # Memory per entity
//! An account's rings count in 16 bits and store columns: 12 × 10 + 24 × 10 + 30 × 14 = 780
//! bytes (the 30-day ring keeps sums of squares for the z-score). It adds fingerprints of its
//! 16 most recent merchants (64 bytes, for the new-merchant flag), 4 recent countries, counters
//! and times: [`AccountState::heap_bytes`], asserted in a test. Held in a table slot with its
//! key, plus the index entry (16 bytes at a load factor between 0.44 and 0.87): see the README
//! for the RSS measured at 1,000,000 accounts. A merchant has 32-bit counts and no sums of
//! squares, plus a 64-day feedback ring (512 bytes). `state.max_accounts` and
//! `state.max_merchants` bound the tables.
//!
//! Entities are keyed by a 64-bit hash of their id, so a lookup allocates nothing. Two ids
//! sharing a hash (odds about n²/2⁶⁵: 3·10⁻⁶ for ten million ids) would share state.
//!
//! # Tables
//! A table is 64 shards, each a `Mutex` over an index (key → slot) and a slab of entries: one
//! uncontended lock and one probe per entity per event, no allocation on the hot path, no
//! reference counting. When the table holds its bound, a new entity first makes room in its
//! shard: the entries idle for `state.idle_ttl_secs` of event time, or if none, the shard's least
//! recently active eighth (by newest event time).

pub mod codec;
pub mod feedback;
pub mod lookup;
pub mod window;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::config::StateConfig;
use crate::decode::Label;
use feedback::Feedback;
use lookup::TxLookup;
use window::{Count, Ring};

/// Width of the fine ring's buckets, seconds.
pub const RES_FINE_S: i64 = 300;
/// Width of the hourly ring's buckets, seconds.
pub const RES_HOUR_S: i64 = 3_600;
/// Width of the daily ring's buckets, seconds.
pub const RES_DAY_S: i64 = 86_400;
/// Buckets of the fine ring (1 hour).
pub const FINE_BUCKETS: usize = 12;
/// Buckets of the hourly ring (1 day).
pub const HOUR_BUCKETS: usize = 24;
/// Buckets of the daily ring (30 days): the longest window, the span beyond which an event is
/// too old for its entity.
pub const DAY_BUCKETS: usize = 30;

/// Recent merchants kept per account.
pub const RECENT_TX: usize = 16;
/// Recent distinct countries kept per account.
pub const RECENT_COUNTRIES: usize = 4;

/// Stable 64-bit key of an id.
#[inline]
pub fn key_of(id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// Packs an ISO country code into 16 bits (0 = unknown).
#[inline]
pub fn country_code(c: Option<&str>) -> u16 {
    match c.map(str::as_bytes) {
        Some([a, b, ..]) => u16::from_be_bytes([*a, *b]).max(1),
        _ => 0,
    }
}

/// A 32-bit fingerprint of a merchant key, never 0 (0 marks an empty slot).
#[inline]
fn fingerprint(merchant_key: u64) -> u32 {
    ((merchant_key >> 32) as u32 ^ merchant_key as u32).max(1)
}

/// The three rings of an entity, with counts of type `C` and, when `SQ` is 30, sums of squares
/// in the daily ring.
#[derive(Debug, Clone)]
pub struct Windows<C: Count, const SQ: usize> {
    /// 5-minute buckets.
    pub fine: Ring<C, FINE_BUCKETS, RES_FINE_S, 0>,
    /// 1-hour buckets.
    pub hour: Ring<C, HOUR_BUCKETS, RES_HOUR_S, 0>,
    /// 1-day buckets.
    pub day: Ring<C, DAY_BUCKETS, RES_DAY_S, SQ>,
    /// Newest event time applied, epoch ms (i64::MIN before any).
    pub max_ts_ms: i64,
    /// Oldest event time applied, epoch ms (i64::MAX before any).
    pub min_ts_ms: i64,
}

/// An account's windows: 16-bit counts, sums of squares for the 30-day z-score.
pub type AccountWindows = Windows<u16, DAY_BUCKETS>;
/// A merchant's windows: 32-bit counts, no sums of squares.
pub type MerchantWindows = Windows<u32, 0>;

impl<C: Count, const SQ: usize> Default for Windows<C, SQ> {
    fn default() -> Self {
        Windows {
            fine: Ring::new(),
            hour: Ring::new(),
            day: Ring::new(),
            max_ts_ms: i64::MIN,
            min_ts_ms: i64::MAX,
        }
    }
}

impl<C: Count, const SQ: usize> Windows<C, SQ> {
    /// Applies one amount at `ts_ms` to every ring whose span covers it. False, changing
    /// nothing, when it is older than the 30-day span (too old for any window).
    #[inline]
    pub fn add(&mut self, ts_ms: i64, amount: f32) -> bool {
        let s = ts_ms.div_euclid(1000);
        if !self.day.add(s, amount) {
            return false;
        }
        self.hour.add(s, amount);
        self.fine.add(s, amount);
        self.max_ts_ms = self.max_ts_ms.max(ts_ms);
        self.min_ts_ms = self.min_ts_ms.min(ts_ms);
        true
    }

    /// True when an event at `ts_ms` is within the 30-day span (it would be applied).
    #[inline]
    pub fn holds(&self, ts_ms: i64) -> bool {
        self.day.holds(ts_ms.div_euclid(1000))
    }

    /// Bytes of the rings.
    pub const fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// State of one account.
#[derive(Debug, Clone)]
pub struct AccountState {
    /// Amount windows.
    pub w: AccountWindows,
    /// Fingerprints of the most recent merchants (0 = empty).
    pub merchants: [u32; RECENT_TX],
    /// Recent distinct countries ([`country_code`]), 0 = empty.
    pub countries: [u16; RECENT_COUNTRIES],
    /// Confirmed frauds visible so far.
    pub frauds_visible: u32,
    /// Next slot of `merchants`.
    pub recent_next: u8,
}

impl Default for AccountState {
    fn default() -> Self {
        AccountState {
            w: Windows::default(),
            merchants: [0; RECENT_TX],
            countries: [0; RECENT_COUNTRIES],
            frauds_visible: 0,
            recent_next: 0,
        }
    }
}

impl AccountState {
    /// True when the merchant is among the recent transactions.
    #[inline]
    pub fn knows_merchant(&self, merchant_key: u64) -> bool {
        self.merchants.contains(&fingerprint(merchant_key))
    }

    /// True when the country is among the recent ones.
    #[inline]
    pub fn knows_country(&self, code: u16) -> bool {
        self.countries.contains(&code)
    }

    /// True before the first transaction.
    #[inline]
    pub fn is_new(&self) -> bool {
        self.w.max_ts_ms == i64::MIN
    }

    /// Records the merchant and country of a transaction applied to the windows.
    #[inline]
    pub fn remember(&mut self, merchant_key: u64, country: u16) {
        let i = self.recent_next as usize % RECENT_TX;
        self.merchants[i] = fingerprint(merchant_key);
        self.recent_next = ((i + 1) % RECENT_TX) as u8;
        if country != 0 && !self.knows_country(country) {
            self.countries.rotate_right(1);
            self.countries[0] = country;
        }
    }

    /// Bytes this account costs, before its table slot and index entry.
    pub const fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// State of one merchant.
#[derive(Debug, Clone, Default)]
pub struct MerchantState {
    /// Amount windows.
    pub w: MerchantWindows,
    /// Transactions and reported frauds by the day of the transaction.
    pub feedback: Feedback,
}

impl MerchantState {
    /// Bytes this merchant costs, before its table slot and index entry.
    pub const fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// What applying a label did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    /// Counted on the account and on the merchant of its transaction, on the transaction's day.
    Applied,
    /// Counted on the account; its merchant is unknown (the label has no `merchant_id`/`ts` and
    /// the transaction is not in the lookup, or its day left the merchant's feedback ring).
    AccountOnly,
    /// Not a fraud: nothing to count.
    Genuine,
}

/// Locks, recovering from a poisoned lock (state stays usable; no panic path on content).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hasher of keys that are already 64-bit hashes: one multiplication spreads the bits the
/// shard choice (the top six) leaves constant.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    #[inline]
    fn write_u64(&mut self, k: u64) {
        self.0 = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Shards of a table.
const SHARDS: usize = 64;

/// What a table needs of its entries: the event time that ages them.
trait Entity: Default {
    fn newest_ms(&self) -> i64;
}

impl Entity for AccountState {
    fn newest_ms(&self) -> i64 {
        self.w.max_ts_ms
    }
}

impl Entity for MerchantState {
    fn newest_ms(&self) -> i64 {
        self.w.max_ts_ms
    }
}

struct Shard<T> {
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    slab: Vec<(u64, T)>,
}

impl<T: Entity> Shard<T> {
    /// Removes the entries `drop` selects, keeping the index in step.
    fn remove_where(&mut self, mut drop: impl FnMut(&T) -> bool) {
        let mut i = 0;
        while i < self.slab.len() {
            if drop(&self.slab[i].1) {
                let (k, _) = self.slab.swap_remove(i);
                self.index.remove(&k);
                if let Some((moved, _)) = self.slab.get(i) {
                    if let Some(at) = self.index.get_mut(moved) {
                        *at = i as u32;
                    }
                }
            } else {
                i += 1;
            }
        }
    }

    /// Makes room in this shard: its idle entries, or if none, its least recently active
    /// eighth (by newest event time). Returns the entries removed.
    fn evict(&mut self, idle_before_ms: i64) -> usize {
        let before = self.slab.len();
        self.remove_where(|e| e.newest_ms() < idle_before_ms);
        if self.slab.len() < before || self.slab.is_empty() {
            return before - self.slab.len();
        }
        let mut times: Vec<i64> = self.slab.iter().map(|(_, e)| e.newest_ms()).collect();
        let k = (times.len() / 8).max(1) - 1;
        let (_, cut, _) = times.select_nth_unstable(k);
        let cut = *cut;
        // Entries older than the cut, then as many at the cut as make an eighth.
        self.remove_where(|e| e.newest_ms() < cut);
        let mut left = (k + 1).saturating_sub(before - self.slab.len());
        self.remove_where(|e| {
            let take = left > 0 && e.newest_ms() == cut;
            if take {
                left -= 1;
            }
            take
        });
        before - self.slab.len()
    }
}

/// Entities of one kind, by key; see the module docs.
struct Table<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    /// Entries held, all shards together.
    len: AtomicUsize,
    max: usize,
}

impl<T: Entity> Table<T> {
    fn new(max_entries: u64) -> Table<T> {
        Table {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        index: HashMap::default(),
                        slab: Vec::new(),
                    })
                })
                .collect(),
            len: AtomicUsize::new(0),
            max: (max_entries as usize).max(1),
        }
    }

    /// Runs `f` on the entry of `key`, created empty if absent (when the table is full, the
    /// key's shard makes room first).
    #[inline]
    fn with<R>(&self, key: u64, idle_before_ms: i64, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = lock(&self.shards[(key >> 58) as usize % SHARDS]);
        let sh = &mut *g;
        let i = match sh.index.get(&key) {
            Some(&i) => i as usize,
            None => {
                if self.len.load(Ordering::Relaxed) >= self.max {
                    let removed = sh.evict(idle_before_ms);
                    self.len.fetch_sub(removed, Ordering::Relaxed);
                }
                let i = sh.slab.len();
                sh.index.insert(key, i as u32);
                sh.slab.push((key, T::default()));
                self.len.fetch_add(1, Ordering::Relaxed);
                i
            }
        };
        f(&mut sh.slab[i].1)
    }

    /// Runs `f` on the entry of `key` if it is held (nothing is created).
    fn get<R>(&self, key: u64, f: impl FnOnce(&T) -> R) -> Option<R> {
        let g = lock(&self.shards[(key >> 58) as usize % SHARDS]);
        g.index.get(&key).map(|&i| f(&g.slab[i as usize].1))
    }

    /// Runs `f` on every entry, shard by shard (each shard locked while it is walked).
    fn for_each(&self, mut f: impl FnMut(u64, &T)) {
        for sh in self.shards.iter() {
            let sh = lock(sh);
            for (k, e) in &sh.slab {
                f(*k, e);
            }
        }
    }

    /// Removes the entry of `key` if held.
    fn remove(&self, key: u64) {
        let mut g = lock(&self.shards[(key >> 58) as usize % SHARDS]);
        let sh = &mut *g;
        if let Some(i) = sh.index.remove(&key) {
            sh.slab.swap_remove(i as usize);
            if let Some((moved, _)) = sh.slab.get(i as usize) {
                sh.index.insert(*moved, i);
            }
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes every entry (exactly-once rewind).
    fn clear(&self) {
        for sh in self.shards.iter() {
            let mut sh = lock(sh);
            let n = sh.slab.len();
            sh.slab.clear();
            sh.index.clear();
            self.len.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Evicts the entries idle since before `idle_before_ms`; returns the entries left.
    fn sweep(&self, idle_before_ms: i64) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                let mut s = lock(s);
                let before = s.slab.len();
                s.remove_where(|e| e.newest_ms() != i64::MIN && e.newest_ms() < idle_before_ms);
                self.len.fetch_sub(before - s.slab.len(), Ordering::Relaxed);
                s.slab.len() as u64
            })
            .sum()
    }
}

/// All accounts and merchants.
pub struct State {
    accounts: Table<AccountState>,
    merchants: Table<MerchantState>,
    lookup: TxLookup,
    /// Newest event time applied to any entity, epoch ms (i64::MIN before any).
    newest_ms: AtomicI64,
    idle_ms: i64,
    /// `state.max_future_secs` in ms.
    pub max_future_ms: i64,
}

impl State {
    /// Empty state bounded by `cfg`.
    pub fn new(cfg: &StateConfig) -> State {
        State {
            accounts: Table::new(cfg.max_accounts),
            merchants: Table::new(cfg.max_merchants),
            lookup: TxLookup::new(cfg.label_lookup_entries),
            newest_ms: AtomicI64::new(i64::MIN),
            idle_ms: (cfg.idle_ttl_secs.max(1) as i64).saturating_mul(1000),
            max_future_ms: cfg.max_future_secs.saturating_mul(1000),
        }
    }

    #[inline]
    fn idle_before_ms(&self) -> i64 {
        let n = self.newest_ms.load(Ordering::Relaxed);
        if n == i64::MIN {
            i64::MIN
        } else {
            n.saturating_sub(self.idle_ms)
        }
    }

    /// Runs `f` on the account's state, created empty if absent.
    #[inline]
    pub fn with_account<R>(&self, key: u64, f: impl FnOnce(&mut AccountState) -> R) -> R {
        self.accounts.with(key, self.idle_before_ms(), f)
    }

    /// Runs `f` on the merchant's state, created empty if absent.
    #[inline]
    pub fn with_merchant<R>(&self, key: u64, f: impl FnOnce(&mut MerchantState) -> R) -> R {
        self.merchants.with(key, self.idle_before_ms(), f)
    }

    /// Runs `f` on the account's state if it is held (nothing is created).
    pub fn account_if<R>(&self, key: u64, f: impl FnOnce(&AccountState) -> R) -> Option<R> {
        self.accounts.get(key, f)
    }

    /// Puts a restored account in place of what is held, keeping the confirmed frauds already
    /// counted on it (labels are applied from the labels topic, not restored).
    pub fn install_account(&self, key: u64, restored: &AccountState) {
        let newest = restored.w.max_ts_ms;
        self.with_account(key, |a| {
            let frauds = a.frauds_visible;
            *a = restored.clone();
            a.frauds_visible = frauds;
        });
        if newest != i64::MIN {
            self.applied(newest);
        }
    }

    /// Runs `f` on every merchant held (the merchant table's snapshot).
    pub fn for_each_merchant(&self, f: impl FnMut(u64, &MerchantState)) {
        self.merchants.for_each(f);
    }

    /// Puts a merchant restored from the merchant table's snapshot in place of what is held.
    pub fn install_merchant(&self, key: u64, restored: MerchantState) {
        let newest = restored.w.max_ts_ms;
        self.with_merchant(key, |m| *m = restored);
        if newest != i64::MIN {
            self.applied(newest);
        }
    }

    /// Forgets an account (a changelog tombstone: it had left the memory of its last owner).
    pub fn remove_account(&self, key: u64) {
        self.accounts.remove(key);
    }

    /// A copy of the account's state (created empty if absent), for tests and tools.
    pub fn account(&self, key: u64) -> AccountState {
        self.with_account(key, |a| a.clone())
    }

    /// A copy of the merchant's state (created empty if absent), for tests and tools.
    pub fn merchant(&self, key: u64) -> MerchantState {
        self.with_merchant(key, |m| m.clone())
    }

    /// True when an event at `ts_ms` is more than `state.max_future_secs` ahead of both the
    /// newest event time applied and the wall clock: it is not applied to state.
    #[inline]
    pub fn too_far_ahead(&self, ts_ms: i64) -> bool {
        let newest = self.newest_ms.load(Ordering::Relaxed);
        if newest != i64::MIN && ts_ms <= newest.saturating_add(self.max_future_ms) {
            return false;
        }
        let now = chrono::Utc::now().timestamp_millis();
        ts_ms > newest.max(now).saturating_add(self.max_future_ms)
    }

    /// Records that an event at `ts_ms` was applied.
    #[inline]
    pub fn applied(&self, ts_ms: i64) {
        if ts_ms > self.newest_ms.load(Ordering::Relaxed) {
            self.newest_ms.fetch_max(ts_ms, Ordering::Relaxed);
        }
    }

    /// Forgets every account and merchant (exactly-once rewind: the state is then rebuilt from
    /// the history up to the committed offsets). The label-attribution lookup is kept: the
    /// rebuild inserts the same transactions again.
    pub fn clear(&self) {
        self.clear_accounts();
        self.merchants.clear();
    }

    /// Forgets every account (the merchants are kept: with the merchant table they are fed
    /// from the whole topic, not from this worker's committed offsets).
    pub fn clear_accounts(&self) {
        self.accounts.clear();
    }

    /// Accounts plus merchants held, after evicting those idle for `state.idle_ttl_secs` of
    /// event time. Walks every entry: call it from a periodic task, not per event.
    pub fn entries(&self) -> u64 {
        let before = self.idle_before_ms();
        self.accounts.sweep(before) + self.merchants.sweep(before)
    }

    /// Remembers a transaction for label attribution ([`lookup`]).
    #[inline]
    pub fn remember_tx(&self, tx_key: u64, merchant_key: u64, ts_s: i64) {
        self.lookup.insert(tx_key, merchant_key, ts_s);
    }

    /// Applies a confirmed fraud: the account's count (the account is created if it is not in
    /// memory, so a label is never lost to the order of arrival), and the merchant of the
    /// transaction on the day of the transaction: from the label's `merchant_id` and `ts` when
    /// it has them, else from the lookup of recent transactions.
    pub fn apply_label(&self, label: &Label) -> LabelOutcome {
        if !label.fraud {
            return LabelOutcome::Genuine;
        }
        self.with_account(key_of(&label.account_id), |a| {
            a.frauds_visible = a.frauds_visible.saturating_add(1);
        });
        let target = match (&label.merchant_id, label.ts) {
            (Some(m), Some(ts)) => Some((key_of(m), ts.div_euclid(1000))),
            _ => self.lookup.get(key_of(&label.tx_id).max(1)),
        };
        match target {
            Some((merchant_key, ts_s)) => {
                if self.with_merchant(merchant_key, |m| m.feedback.add_fraud(ts_s)) {
                    LabelOutcome::Applied
                } else {
                    LabelOutcome::AccountOnly
                }
            }
            None => LabelOutcome::AccountOnly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_entity_is_as_documented() {
        let a = AccountState::default();
        let m = MerchantState::default();
        // Documented in the module header and the README.
        assert_eq!(a.w.bytes(), 824);
        assert_eq!(a.heap_bytes(), 904);
        assert_eq!(m.heap_bytes(), 1352);
    }

    #[test]
    fn stage_types_are_send_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<State>();
    }

    #[test]
    fn recent_ring_and_countries() {
        let mut a = AccountState::default();
        for i in 0..20u64 {
            a.remember(key_of(&format!("m{i}")), country_code(Some("FR")));
        }
        assert!(
            !a.knows_merchant(key_of("m3")),
            "evicted from the 16 recent"
        );
        assert!(a.knows_merchant(key_of("m19")));
        assert!(a.knows_country(country_code(Some("FR"))));
        assert!(!a.knows_country(country_code(Some("DE"))));
    }

    /// A full table evicts the least recently active entries and keeps the index in step.
    #[test]
    fn tables_are_bounded_and_evict_the_least_recent() {
        let cfg = StateConfig {
            max_accounts: 64 * 8,
            ..StateConfig::default()
        };
        let s = State::new(&cfg);
        let t0 = 1_600_000_000_000i64;
        for i in 0..5_000i64 {
            s.with_account(key_of(&format!("c{i}")), |a| {
                a.w.add(t0 + i * 1000, 1.0);
            });
        }
        let held = s.accounts.sweep(i64::MIN);
        assert!(held <= 64 * 8, "{held}");
        assert!(
            held >= 64 * 8 * 3 / 4,
            "evicts an eighth of a shard at a time: {held}"
        );
        assert_eq!(s.accounts.len.load(Ordering::Relaxed) as u64, held);
        // The newest survive with their state; each shard's index points at its own entries.
        assert_eq!(s.account(key_of("c4999")).w.max_ts_ms, t0 + 4_999_000);
        for sh in s.accounts.shards.iter() {
            let sh = lock(sh);
            assert_eq!(sh.index.len(), sh.slab.len());
            for (i, (k, _)) in sh.slab.iter().enumerate() {
                assert_eq!(sh.index.get(k), Some(&(i as u32)));
            }
        }
    }

    /// Idle entities (by event time) leave at the periodic sweep.
    #[test]
    fn idle_entities_are_swept() {
        let cfg = StateConfig {
            idle_ttl_secs: 3_600,
            ..StateConfig::default()
        };
        let s = State::new(&cfg);
        let t0 = 1_600_000_000_000i64;
        s.with_account(key_of("old"), |a| a.w.add(t0, 1.0));
        s.applied(t0);
        s.with_account(key_of("new"), |a| a.w.add(t0 + 7_200_000, 1.0));
        s.applied(t0 + 7_200_000);
        assert_eq!(s.entries(), 1);
        assert!(
            s.account(key_of("old")).is_new(),
            "evicted, then created empty"
        );
    }
}
