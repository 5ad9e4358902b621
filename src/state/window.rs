//! Event-time windows as rings of fixed-width buckets.
//!
//! A ring of `len` buckets of `res_s` seconds keeps aggregates (count, sum, sum of squares, max)
//! for the buckets `head - len + 1 ..= head`, where `head` is the bucket of the newest event
//! applied. A window of `n` buckets ending at time `t` is the bucket holding `t` plus the `n - 1`
//! before it: the "1 hour" window with 5-minute buckets covers between 55 and 60 minutes. That
//! bucket alignment makes a window's value independent of arrival order, so an event that arrives
//! late (up to `len - n` buckets behind `head`) lands exactly where it would have in order.

/// Aggregates of one bucket: 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Events in the bucket.
    pub count: u32,
    /// Sum of amounts.
    pub sum: f32,
    /// Sum of squared amounts.
    pub sumsq: f32,
    /// Largest amount.
    pub max: f32,
}

/// Aggregates over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agg {
    /// Events.
    pub count: u32,
    /// Sum of amounts.
    pub sum: f64,
    /// Sum of squared amounts.
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

/// A ring of buckets; see the module docs.
#[derive(Debug, Clone)]
pub struct Ring {
    res_s: i64,
    head: i64,
    buckets: Box<[Bucket]>,
}

impl Ring {
    /// A ring of `len` buckets of `res_s` seconds.
    pub fn new(res_s: i64, len: usize) -> Ring {
        Ring {
            res_s,
            head: i64::MIN,
            buckets: vec![Bucket::default(); len.max(1)].into_boxed_slice(),
        }
    }

    /// Bucket index of a time in seconds.
    #[inline]
    pub fn index(&self, ts_s: i64) -> i64 {
        ts_s.div_euclid(self.res_s)
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.head == i64::MIN
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    #[inline]
    fn slot(&self, idx: i64) -> usize {
        idx.rem_euclid(self.buckets.len() as i64) as usize
    }

    /// Adds one amount at `ts_s`. Returns false, changing nothing, when the bucket has already
    /// left the ring.
    pub fn add(&mut self, ts_s: i64, amount: f32) -> bool {
        let idx = self.index(ts_s);
        if !self.advance_to(idx) {
            return false;
        }
        let slot = self.slot(idx);
        let b = &mut self.buckets[slot];
        b.count = b.count.saturating_add(1);
        b.sum += amount;
        b.sumsq += amount * amount;
        if amount > b.max {
            b.max = amount;
        }
        true
    }

    /// Adds `n` to the count of the bucket at `ts_s` only (used for fraud counts). Returns false
    /// when the bucket has left the ring.
    pub fn add_count(&mut self, ts_s: i64, n: u32) -> bool {
        let idx = self.index(ts_s);
        if !self.advance_to(idx) {
            return false;
        }
        let slot = self.slot(idx);
        self.buckets[slot].count = self.buckets[slot].count.saturating_add(n);
        true
    }

    /// Moves `head` forward to `idx` if newer, clearing the buckets it passes. False if `idx` is
    /// too old to be held.
    fn advance_to(&mut self, idx: i64) -> bool {
        let len = self.buckets.len() as i64;
        if self.head == i64::MIN {
            self.head = idx;
            return true;
        }
        if idx > self.head {
            let gap = idx - self.head;
            if gap >= len {
                self.buckets.fill(Bucket::default());
            } else {
                for i in (self.head + 1)..=idx {
                    let s = self.slot(i);
                    self.buckets[s] = Bucket::default();
                }
            }
            self.head = idx;
            true
        } else {
            idx > self.head - len
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
    pub fn windows2(&self, end_ts_s: i64, short: usize, long: usize) -> (Agg, Agg) {
        let mut agg = Agg::default();
        let mut short_agg = Agg::default();
        if self.head == i64::MIN {
            return (short_agg, agg);
        }
        let len = self.buckets.len() as i64;
        let end = self.index(end_ts_s);
        let oldest_held = self.head - len + 1;
        // Slots after `head` hold stale buckets of an earlier lap: never read them.
        let last = end.min(self.head);
        let short_start = end - short as i64 + 1;
        let start = (end - long as i64 + 1).max(oldest_held);
        if last < start {
            return (short_agg, agg);
        }
        // Walk from `last` back to `start`, stepping the slot without a division per bucket.
        let mut slot = self.slot(last);
        let mut i = last;
        let mut taken = false;
        loop {
            if !taken && i < short_start {
                short_agg = agg;
                taken = true;
            }
            let b = &self.buckets[slot];
            if b.count > 0 {
                agg.count += b.count;
                agg.sum += b.sum as f64;
                agg.sumsq += b.sumsq as f64;
                if b.max as f64 > agg.max {
                    agg.max = b.max as f64;
                }
            }
            if i == start {
                break;
            }
            i -= 1;
            slot = if slot == 0 {
                len as usize - 1
            } else {
                slot - 1
            };
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
        let mut r = Ring::new(300, 24);
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
        let mut r = Ring::new(60, 4);
        assert!(r.add(600, 1.0));
        assert!(r.add(600 - 180, 1.0)); // 3 buckets back: held
        assert!(!r.add(600 - 240, 1.0)); // 4 back: gone
        assert_eq!(r.window(600, 10).count, 2);
    }

    #[test]
    fn std_of_window() {
        let mut r = Ring::new(60, 4);
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
            let mut a = Ring::new(60, 60);
            let mut b = Ring::new(60, 60);
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
            let mut r = Ring::new(60, 45);
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
            let mut r = Ring::new(100, 30);
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
