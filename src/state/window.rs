//! Event-time windows as rings of fixed-width buckets.
//!
//! A ring of `N` buckets of `RES` seconds keeps aggregates (count, sum, largest amount, and with
//! `SQ = N` the sum of squares) for the buckets `head - N + 1 ..= head`, where `head` is the
//! bucket of the newest event applied. A window of `n` buckets ending at time `t` is the bucket
//! holding `t` plus the `n - 1` before it: the "1 hour" window with 5-minute buckets covers
//! between 55 and 60 minutes. That bucket alignment makes a window's value independent of
//! arrival order: an event that arrives out of order, but within the ring's span (up to `N - 1`
//! buckets behind `head`), lands exactly where it would have in order. An older one can no
//! longer reach any window the ring serves and is refused.
//!
//! Buckets are stored as columns (counts, sums, maxima), so an account's rings with 16-bit
//! counts cost 10 bytes a bucket (14 with the sum of squares) instead of a padded 16-byte row.

/// A bucket count: 16 bits for accounts (saturating at 65,535 events a bucket), 32 for
/// merchants.
pub trait Count: Copy + Default + std::fmt::Debug + PartialEq {
    /// Adds `n`, saturating.
    fn add(&mut self, n: u32);
    /// The count.
    fn get(self) -> u32;
}

impl Count for u16 {
    #[inline]
    fn add(&mut self, n: u32) {
        *self = u32::from(*self).saturating_add(n).min(u32::from(u16::MAX)) as u16;
    }
    #[inline]
    fn get(self) -> u32 {
        u32::from(self)
    }
}

impl Count for u32 {
    #[inline]
    fn add(&mut self, n: u32) {
        *self = self.saturating_add(n);
    }
    #[inline]
    fn get(self) -> u32 {
        self
    }
}

/// Aggregates over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agg {
    /// Events.
    pub count: u32,
    /// Sum of amounts.
    pub sum: f64,
    /// Sum of squared amounts (0 for a ring without them).
    pub sumsq: f64,
    /// Largest amount (0 when empty).
    pub max: f64,
}

impl Agg {
    /// Mean amount, 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Population standard deviation, 0 when fewer than two events.
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let m = self.sum / n;
        (self.sumsq / n - m * m).max(0.0).sqrt()
    }
}

/// No bucket yet.
const EMPTY: i64 = i64::MIN;

/// A ring of `N` buckets of `RES` seconds with counts of type `C`, and sums of squares when
/// `SQ == N` (`SQ == 0`: none); see the module docs.
#[derive(Debug, Clone)]
pub struct Ring<C: Count, const N: usize, const RES: i64, const SQ: usize> {
    head: i64,
    count: [C; N],
    sum: [f32; N],
    max: [f32; N],
    sumsq: [f32; SQ],
}

impl<C: Count, const N: usize, const RES: i64, const SQ: usize> Default for Ring<C, N, RES, SQ> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Count, const N: usize, const RES: i64, const SQ: usize> Ring<C, N, RES, SQ> {
    /// An empty ring.
    pub fn new() -> Self {
        const { assert!(N > 0 && RES > 0 && (SQ == 0 || SQ == N)) };
        Ring {
            head: EMPTY,
            count: [C::default(); N],
            sum: [0.0; N],
            max: [0.0; N],
            sumsq: [0.0; SQ],
        }
    }

    /// Bucket index of a time in seconds.
    #[inline]
    pub fn index(ts_s: i64) -> i64 {
        ts_s.div_euclid(RES)
    }

    /// Buckets held.
    pub const fn len(&self) -> usize {
        N
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.head == EMPTY
    }

    /// Bucket of the newest event (`None` before any).
    pub fn head(&self) -> Option<i64> {
        (self.head != EMPTY).then_some(self.head)
    }

    #[inline]
    fn slot(idx: i64) -> usize {
        idx.rem_euclid(N as i64) as usize
    }

    #[inline]
    fn clear(&mut self, s: usize) {
        self.count[s] = C::default();
        self.sum[s] = 0.0;
        self.max[s] = 0.0;
        if SQ > 0 {
            self.sumsq[s] = 0.0;
        }
    }

    /// Appends the ring to `out` (the changelog's format, [`crate::state::codec`]): `head`, then
    /// the counts as u32, the sums, the maxima and the sums of squares, little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head.to_le_bytes());
        for c in &self.count {
            out.extend_from_slice(&c.get().to_le_bytes());
        }
        for v in self.sum.iter().chain(&self.max).chain(&self.sumsq) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Reads a ring [`Ring::encode`] wrote from the front of `b`, advancing it; `None` when `b`
    /// is too short.
    pub fn decode(b: &mut &[u8]) -> Option<Self> {
        let mut r = Self::new();
        r.head = super::codec::take_i64(b)?;
        for c in r.count.iter_mut() {
            c.add(super::codec::take_u32(b)?);
        }
        for v in r
            .sum
            .iter_mut()
            .chain(r.max.iter_mut())
            .chain(r.sumsq.iter_mut())
        {
            *v = f32::from_bits(super::codec::take_u32(b)?);
        }
        Some(r)
    }

    /// True when an event at `ts_s` would be held (its bucket has not left the ring).
    #[inline]
    pub fn holds(&self, ts_s: i64) -> bool {
        self.head == EMPTY || Self::index(ts_s) > self.head - N as i64
    }

    /// Adds one amount at `ts_s`. Returns false, changing nothing, when the bucket has already
    /// left the ring.
    #[inline]
    pub fn add(&mut self, ts_s: i64, amount: f32) -> bool {
        let idx = Self::index(ts_s);
        if !self.advance_to(idx) {
            return false;
        }
        let s = Self::slot(idx);
        self.count[s].add(1);
        self.sum[s] += amount;
        if SQ > 0 {
            self.sumsq[s] += amount * amount;
        }
        if amount > self.max[s] {
            self.max[s] = amount;
        }
        true
    }

    /// Adds `n` to the count of the bucket at `ts_s` only. Returns false when the bucket has
    /// left the ring.
    pub fn add_count(&mut self, ts_s: i64, n: u32) -> bool {
        let idx = Self::index(ts_s);
        if !self.advance_to(idx) {
            return false;
        }
        self.count[Self::slot(idx)].add(n);
        true
    }

    /// Moves `head` forward to `idx` if newer, clearing the buckets it passes. False if `idx` is
    /// too old to be held.
    #[inline]
    fn advance_to(&mut self, idx: i64) -> bool {
        if self.head == EMPTY {
            self.head = idx;
            return true;
        }
        if idx > self.head {
            if idx - self.head >= N as i64 {
                for s in 0..N {
                    self.clear(s);
                }
            } else {
                for i in (self.head + 1)..=idx {
                    self.clear(Self::slot(i));
                }
            }
            self.head = idx;
            true
        } else {
            idx > self.head - N as i64
        }
    }

    /// Aggregates over the `n` buckets ending with the one holding `end_ts_s`, counting only
    /// buckets still held.
    #[inline]
    pub fn window(&self, end_ts_s: i64, n: usize) -> Agg {
        self.windows2(end_ts_s, n, n).1
    }

    /// Aggregates over the `short` and the `long` (>= short) buckets ending with the one holding
    /// `end_ts_s`, in one pass from the newest bucket back.
    #[inline]
    pub fn windows2(&self, end_ts_s: i64, short: usize, long: usize) -> (Agg, Agg) {
        let mut agg = Agg::default();
        let mut short_agg = Agg::default();
        if self.head == EMPTY {
            return (short_agg, agg);
        }
        let end = Self::index(end_ts_s);
        let oldest_held = self.head - N as i64 + 1;
        // Slots after `head` hold stale buckets of an earlier lap: never read them.
        let last = end.min(self.head);
        let short_start = end - short as i64 + 1;
        let start = (end - long as i64 + 1).max(oldest_held);
        if last < start {
            return (short_agg, agg);
        }
        // Walk from `last` back to `start`, stepping the slot without a division per bucket.
        let mut slot = Self::slot(last);
        let mut i = last;
        let mut taken = false;
        loop {
            if !taken && i < short_start {
                short_agg = agg;
                taken = true;
            }
            let c = self.count[slot].get();
            if c > 0 {
                agg.count += c;
                agg.sum += f64::from(self.sum[slot]);
                if SQ > 0 {
                    agg.sumsq += f64::from(self.sumsq[slot]);
                }
                let m = f64::from(self.max[slot]);
                if m > agg.max {
                    agg.max = m;
                }
            }
            if i == start {
                break;
            }
            i -= 1;
            slot = if slot == 0 { N - 1 } else { slot - 1 };
        }
        if !taken {
            short_agg = agg;
        }
        (short_agg, agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_sums_hand_computed() {
        let mut r = Ring::<u32, 24, 300, 0>::new();
        let t0 = 1_000_000 * 300; // bucket-aligned
        assert!(r.add(t0, 10.0));
        assert!(r.add(t0 + 299, 20.0));
        assert!(r.add(t0 + 300, 5.0));
        let w = r.window(t0 + 300, 12);
        assert_eq!(w.count, 3);
        assert_eq!(w.sum, 35.0);
        assert_eq!(w.max, 20.0);
        assert!((w.mean() - 35.0 / 3.0).abs() < 1e-9);
        // A window ending in the first bucket excludes the later one.
        assert_eq!(r.window(t0, 12).count, 2);
        // One hour later (12 buckets on) the first bucket has left the 12-bucket window.
        assert_eq!(r.window(t0 + 12 * 300, 12).count, 1);
        assert_eq!(r.window(t0 + 13 * 300, 12).count, 0);
    }

    #[test]
    fn too_old_is_refused_and_changes_nothing() {
        let mut r = Ring::<u32, 4, 60, 4>::new();
        assert!(r.add(600, 1.0));
        assert!(r.add(600 - 180, 1.0)); // 3 buckets back: held
        assert!(!r.add(600 - 240, 1.0)); // 4 back: gone
        assert_eq!(r.window(600, 10).count, 2);
    }

    #[test]
    fn std_of_window() {
        let mut r = Ring::<u32, 4, 60, 4>::new();
        for a in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            r.add(0, a);
        }
        assert!((r.window(0, 1).std() - 2.0).abs() < 1e-6);
    }

    proptest! {
        /// Any arrival order within the ring's lateness gives the same windows as time order.
        #[test]
        fn order_does_not_matter(mut events in proptest::collection::vec((0i64..3_000, 1u32..1000), 1..60), probe in 0i64..4000) {
            // ring of 60 s buckets, 60 buckets: everything within 3000 s fits.
            let mut sorted = events.clone();
            sorted.sort();
            let mut a = Ring::<u32, 60, 60, 0>::new();
            let mut b = Ring::<u16, 60, 60, 0>::new();
            for (t, amt) in &sorted { prop_assert!(a.add(*t, *amt as f32)); }
            // reverse order: newest first, all within the ring span
            events.sort_by(|x, y| y.cmp(x));
            for (t, amt) in &events { prop_assert!(b.add(*t, *amt as f32)); }
            for n in [1usize, 5, 20, 60] {
                let wa = a.window(probe, n);
                let wb = b.window(probe, n);
                prop_assert_eq!(wa.count, wb.count);
                prop_assert!((wa.sum - wb.sum).abs() < 1e-3);
                prop_assert_eq!(wa.max, wb.max);
            }
        }

        /// One pass for two windows gives what two separate windows give.
        #[test]
        fn windows2_matches_window(events in proptest::collection::vec((0i64..5_000, 1u32..100), 1..80), end in 0i64..6_000, a in 1usize..40, b in 1usize..40) {
            let mut sorted = events.clone();
            sorted.sort();
            let mut r = Ring::<u16, 45, 60, 0>::new();
            for (t, amt) in &sorted { r.add(*t, *amt as f32); }
            let (short, long) = (a.min(b), a.max(b));
            let (s2, l2) = r.windows2(end, short, long);
            // Naive reference over the event list.
            let head = sorted.last().map_or(0, |e| e.0.div_euclid(60));
            let end_idx = end.div_euclid(60);
            let naive = |n: usize| {
                let inside: Vec<u32> = sorted.iter().filter(|(t, _)| {
                    let i = t.div_euclid(60);
                    i <= end_idx && i > end_idx - n as i64 && i > head - 45
                }).map(|e| e.1).collect();
                (inside.len() as u32, inside.iter().map(|v| *v as f64).sum::<f64>(), inside.iter().copied().max().unwrap_or(0) as f64)
            };
            let (sc, ss, sm) = naive(short);
            let (lc, ls, lm) = naive(long);
            prop_assert_eq!((s2.count, s2.max), (sc, sm));
            prop_assert!((s2.sum - ss).abs() < 1e-3);
            prop_assert_eq!((l2.count, l2.max), (lc, lm));
            prop_assert!((l2.sum - ls).abs() < 1e-3);
        }

        /// Window count never exceeds the events added and never counts events after its end.
        #[test]
        fn window_counts_bounded(events in proptest::collection::vec(0i64..100_000, 1..100), end in 0i64..100_000, n in 1usize..30) {
            let mut sorted = events.clone();
            sorted.sort();
            let mut r = Ring::<u32, 30, 100, 0>::new();
            let mut applied = Vec::new();
            for t in &sorted { if r.add(*t, 1.0) { applied.push(*t); } }
            let w = r.window(end, n);
            let head = sorted.last().copied().unwrap_or(0).div_euclid(100);
            let end_idx = end.div_euclid(100);
            let expected = applied.iter().filter(|t| {
                let i = t.div_euclid(100);
                i <= end_idx && i > end_idx - n as i64 && i > head - 30
            }).count() as u32;
            prop_assert_eq!(w.count, expected);
        }
    }
}
