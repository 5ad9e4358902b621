//! Per-account and per-merchant event-time state, held in bounded moka caches.
//!
//! Each entity keeps three rings of buckets ([`window::Ring`]): 5-minute buckets for the 10-minute
//! velocity and the 1-hour window, 1-hour buckets for the 1-day window, 1-day buckets for the
//! 7-day and 30-day windows. Ring lengths are the window plus the allowed lateness, so a late
//! event within `state.allowed_lateness_secs` lands in its own bucket.
//!
//! # Memory per entity
//! With the default lateness of 3600 s the rings hold 24 + 25 + 31 = 80 buckets of 16 bytes
//! (1280 bytes). An account adds its 16 most recent transactions (24 bytes each, 384 bytes) for
//! new-merchant flags and label attribution, 4 recent countries and counters: 1784 bytes of
//! state per account ([`AccountState::heap_bytes`], asserted in a test), about 1.9 KB with the
//! `Arc<Mutex<..>>` and moka's entry (about 100 bytes). A merchant adds a 31-bucket fraud ring:
//! 1912 bytes, about 2.0 KB in the cache. 1,000,000 accounts cost about 1.9 GB;
//! `state.max_accounts` bounds it.
//!
//! Entities are keyed by a 64-bit hash of their id, so a lookup allocates nothing. Two ids
//! sharing a hash (odds about n²/2⁶⁵: 3·10⁻⁶ for ten million ids) would share state.

pub mod feedback;
pub mod lookup;
pub mod window;

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moka::sync::Cache;

use crate::config::StateConfig;
use crate::decode::Label;
use feedback::Feedback;
use lookup::TxLookup;
use window::Ring;

/// Width of the fine ring's buckets, seconds.
pub const RES_FINE_S: i64 = 300;
/// Width of the hourly ring's buckets, seconds.
pub const RES_HOUR_S: i64 = 3_600;
/// Width of the daily ring's buckets, seconds.
pub const RES_DAY_S: i64 = 86_400;

/// Recent transactions kept per account.
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

/// The three rings shared by accounts and merchants.
#[derive(Debug, Clone)]
pub struct Windows {
    /// 5-minute buckets.
    pub fine: Ring,
    /// 1-hour buckets.
    pub hour: Ring,
    /// 1-day buckets.
    pub day: Ring,
    /// Newest event time applied, epoch ms (i64::MIN before any).
    pub max_ts_ms: i64,
    /// Oldest event time applied, epoch ms (i64::MAX before any).
    pub min_ts_ms: i64,
}

/// Ring lengths for an allowed lateness.
#[derive(Debug, Clone, Copy)]
pub struct RingLens {
    fine: usize,
    hour: usize,
    day: usize,
}

impl RingLens {
    /// Lengths holding the longest window of each ring plus `lateness_s`.
    pub fn for_lateness(lateness_s: i64) -> RingLens {
        let extra = |res: i64| (lateness_s.max(0) + res - 1) / res;
        RingLens {
            fine: 12 + extra(RES_FINE_S).max(1) as usize,
            hour: 24 + extra(RES_HOUR_S).max(1) as usize,
            day: 30 + extra(RES_DAY_S).max(1) as usize,
        }
    }
}

impl Windows {
    fn new(l: RingLens) -> Windows {
        Windows {
            fine: Ring::new(RES_FINE_S, l.fine),
            hour: Ring::new(RES_HOUR_S, l.hour),
            day: Ring::new(RES_DAY_S, l.day),
            max_ts_ms: i64::MIN,
            min_ts_ms: i64::MAX,
        }
    }

    /// Applies one amount at `ts_ms`.
    pub fn add(&mut self, ts_ms: i64, amount: f32) {
        let s = ts_ms.div_euclid(1000);
        self.fine.add(s, amount);
        self.hour.add(s, amount);
        self.day.add(s, amount);
        self.max_ts_ms = self.max_ts_ms.max(ts_ms);
        self.min_ts_ms = self.min_ts_ms.min(ts_ms);
    }

    /// Heap bytes of the rings.
    pub fn heap_bytes(&self) -> usize {
        self.fine.heap_bytes() + self.hour.heap_bytes() + self.day.heap_bytes()
    }
}

/// One recent transaction of an account.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentTx {
    /// [`key_of`] the tx_id.
    pub tx_key: u64,
    /// [`key_of`] the merchant_id.
    pub merchant_key: u64,
    /// Event time, epoch seconds.
    pub ts_s: i64,
}

/// State of one account.
#[derive(Debug, Clone)]
pub struct AccountState {
    /// Amount windows.
    pub w: Windows,
    /// Ring of the most recent transactions.
    pub recent: [RecentTx; RECENT_TX],
    /// Next slot of `recent`.
    pub recent_next: u8,
    /// Recent distinct countries ([`country_code`]), 0 = empty.
    pub countries: [u16; RECENT_COUNTRIES],
    /// Confirmed frauds visible so far.
    pub frauds_visible: u32,
}

impl AccountState {
    fn new(l: RingLens) -> AccountState {
        AccountState {
            w: Windows::new(l),
            recent: [RecentTx::default(); RECENT_TX],
            recent_next: 0,
            countries: [0; RECENT_COUNTRIES],
            frauds_visible: 0,
        }
    }

    /// True when the merchant is among the recent transactions.
    pub fn knows_merchant(&self, merchant_key: u64) -> bool {
        self.recent
            .iter()
            .any(|r| r.merchant_key == merchant_key && r.tx_key != 0)
    }

    /// True when the country is among the recent ones.
    pub fn knows_country(&self, code: u16) -> bool {
        self.countries.contains(&code)
    }

    /// True before the first transaction.
    pub fn is_new(&self) -> bool {
        self.w.max_ts_ms == i64::MIN
    }

    /// Records a transaction applied to the windows.
    pub fn remember(&mut self, tx_key: u64, merchant_key: u64, ts_s: i64, country: u16) {
        let i = self.recent_next as usize % RECENT_TX;
        self.recent[i] = RecentTx {
            tx_key: tx_key.max(1),
            merchant_key,
            ts_s,
        };
        self.recent_next = ((i + 1) % RECENT_TX) as u8;
        if country != 0 && !self.knows_country(country) {
            self.countries.rotate_right(1);
            self.countries[0] = country;
        }
    }

    /// Bytes this account costs: the struct plus its rings.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.w.heap_bytes()
    }
}

/// State of one merchant.
#[derive(Debug, Clone)]
pub struct MerchantState {
    /// Amount windows.
    pub w: Windows,
    /// Transactions and reported frauds by the day of the transaction.
    pub feedback: Feedback,
}

impl MerchantState {
    fn new(l: RingLens) -> MerchantState {
        MerchantState {
            w: Windows::new(l),
            feedback: Feedback::default(),
        }
    }

    /// Bytes this merchant costs: the struct plus its rings.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.w.heap_bytes() + self.feedback.heap_bytes()
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

/// Shared handle to an entity's state.
pub type Shared<T> = Arc<Mutex<T>>;

/// Locks, recovering from a poisoned lock (state stays usable; no panic path on content).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// All accounts and merchants.
pub struct State {
    accounts: Cache<u64, Shared<AccountState>>,
    merchants: Cache<u64, Shared<MerchantState>>,
    lookup: TxLookup,
    lens: RingLens,
    /// Allowed lateness in ms.
    pub lateness_ms: i64,
}

impl State {
    /// Empty state bounded by `cfg`.
    pub fn new(cfg: &StateConfig) -> State {
        let ttl = Duration::from_secs(cfg.idle_ttl_secs.max(1));
        State {
            accounts: Cache::builder()
                .max_capacity(cfg.max_accounts)
                .time_to_idle(ttl)
                .build(),
            merchants: Cache::builder()
                .max_capacity(cfg.max_merchants)
                .time_to_idle(ttl)
                .build(),
            lookup: TxLookup::new(cfg.label_lookup_entries),
            lens: RingLens::for_lateness(cfg.allowed_lateness_secs),
            lateness_ms: cfg.allowed_lateness_secs.saturating_mul(1000),
        }
    }

    /// The account's state, created empty if absent.
    pub fn account(&self, key: u64) -> Shared<AccountState> {
        let lens = self.lens;
        self.accounts
            .get_with(key, || Arc::new(Mutex::new(AccountState::new(lens))))
    }

    /// The merchant's state, created empty if absent.
    pub fn merchant(&self, key: u64) -> Shared<MerchantState> {
        let lens = self.lens;
        self.merchants
            .get_with(key, || Arc::new(Mutex::new(MerchantState::new(lens))))
    }

    /// Accounts plus merchants held. Runs moka's pending maintenance first (it counts lazily),
    /// so call it from a periodic task, not per event.
    pub fn entries(&self) -> u64 {
        self.accounts.run_pending_tasks();
        self.merchants.run_pending_tasks();
        self.accounts.entry_count() + self.merchants.entry_count()
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
        {
            let acc = self.account(key_of(&label.account_id));
            let mut a = lock(&acc);
            a.frauds_visible = a.frauds_visible.saturating_add(1);
        }
        let target = match (&label.merchant_id, label.ts) {
            (Some(m), Some(ts)) => Some((key_of(m), ts.div_euclid(1000))),
            _ => self.lookup.get(key_of(&label.tx_id).max(1)),
        };
        match target {
            Some((merchant_key, ts_s)) => {
                let m = self.merchant(merchant_key);
                if lock(&m).feedback.add_fraud(ts_s) {
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
    fn ring_lengths_follow_lateness() {
        let l = RingLens::for_lateness(3600);
        assert_eq!((l.fine, l.hour, l.day), (24, 25, 31));
        let l = RingLens::for_lateness(0);
        assert_eq!((l.fine, l.hour, l.day), (13, 25, 31));
    }

    #[test]
    fn memory_per_entity_is_as_documented() {
        let l = RingLens::for_lateness(3600);
        let a = AccountState::new(l);
        let m = MerchantState::new(l);
        // Documented in the module header and the README.
        assert_eq!(a.heap_bytes(), 1792);
        assert_eq!(m.heap_bytes(), 1912);
    }

    #[test]
    fn stage_types_are_send_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<State>();
    }

    #[test]
    fn recent_ring_and_countries() {
        let mut a = AccountState::new(RingLens::for_lateness(0));
        for i in 0..20u64 {
            a.remember(100 + i, i, i as i64, country_code(Some("FR")));
        }
        assert!(!a.knows_merchant(3), "evicted from the 16 recent");
        assert!(a.knows_merchant(19));
        assert!(a.knows_country(country_code(Some("FR"))));
        assert!(!a.knows_country(country_code(Some("DE"))));
    }
}
