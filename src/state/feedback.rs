//! Feedback from labels, counted the way a fraud team counts it: per day of the *transaction*,
//! how many transactions an entity had and how many of them were later reported as fraud.
//!
//! A fraud rate for a window of `w` days with a label delay of `D` days reads only the days
//! `[today − D − w, today − D)`: transactions old enough that their labels are known ("matured").
//! Dividing the frauds known so far by *all* transactions of a trailing window instead makes the
//! short windows zero by construction (no label of the last `D` days can be known) and dilutes
//! the long ones with transactions whose labels cannot have arrived.
//!
//! 64 daily buckets of two `u32` (512 bytes) hold a 30-day window behind a delay of up to
//! [`MAX_DELAY_DAYS`] days, with room for late labels.

use super::RES_DAY_S;

/// Days held.
pub const FEEDBACK_DAYS: usize = 64;
/// Longest label delay a model may use, in days.
pub const MAX_DELAY_DAYS: i64 = 30;

/// Daily transaction and fraud counts of one entity.
#[derive(Debug, Clone)]
pub struct Feedback {
    /// Newest day index held (`i64::MIN` before any).
    head: i64,
    txs: [u32; FEEDBACK_DAYS],
    frauds: [u32; FEEDBACK_DAYS],
}

impl Default for Feedback {
    fn default() -> Self {
        Feedback {
            head: i64::MIN,
            txs: [0; FEEDBACK_DAYS],
            frauds: [0; FEEDBACK_DAYS],
        }
    }
}

/// Day index of a time in seconds.
#[inline]
pub fn day_of(ts_s: i64) -> i64 {
    ts_s.div_euclid(RES_DAY_S)
}

#[inline]
fn slot(day: i64) -> usize {
    day.rem_euclid(FEEDBACK_DAYS as i64) as usize
}

impl Feedback {
    /// Appends the daily transaction counts (not the frauds: labels are applied again from the
    /// labels topic after a restore) to `out`: head (i64), then the counts (u32), little-endian.
    pub fn encode_txs(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head.to_le_bytes());
        for t in &self.txs {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }

    /// Reads what [`Feedback::encode_txs`] wrote (no frauds) from the front of `b`.
    pub fn decode_txs(b: &mut &[u8]) -> Option<Feedback> {
        let mut f = Feedback {
            head: super::codec::take_i64(b)?,
            ..Feedback::default()
        };
        for t in f.txs.iter_mut() {
            *t = super::codec::take_u32(b)?;
        }
        Some(f)
    }

    /// Moves the head to `day` if newer, clearing the days it passes; false if `day` is too old.
    fn advance_to(&mut self, day: i64) -> bool {
        if self.head == i64::MIN {
            self.head = day;
            return true;
        }
        if day > self.head {
            if day - self.head >= FEEDBACK_DAYS as i64 {
                self.txs = [0; FEEDBACK_DAYS];
                self.frauds = [0; FEEDBACK_DAYS];
            } else {
                for d in (self.head + 1)..=day {
                    self.txs[slot(d)] = 0;
                    self.frauds[slot(d)] = 0;
                }
            }
            self.head = day;
            true
        } else {
            day > self.head - FEEDBACK_DAYS as i64
        }
    }

    /// Counts a transaction at `ts_s`.
    #[inline]
    pub fn add_tx(&mut self, ts_s: i64) {
        let d = day_of(ts_s);
        if self.advance_to(d) {
            let s = slot(d);
            self.txs[s] = self.txs[s].saturating_add(1);
        }
    }

    /// Counts a fraud label of a transaction at `ts_s`. Never moves the head forward by more
    /// than a day (a label's transaction is in the past of the entity's stream); returns false
    /// when the day is not held.
    pub fn add_fraud(&mut self, ts_s: i64) -> bool {
        let d = day_of(ts_s);
        if self.head != i64::MIN && d > self.head + 1 {
            return false;
        }
        if !self.advance_to(d) {
            return false;
        }
        let s = slot(d);
        self.frauds[s] = self.frauds[s].saturating_add(1);
        true
    }

    /// (transactions, frauds) over the `w` days `[day(now) − delay − w, day(now) − delay)`.
    #[inline]
    pub fn matured(&self, now_s: i64, delay_days: i64, w: usize) -> (u32, u32) {
        if self.head == i64::MIN {
            return (0, 0);
        }
        let end = day_of(now_s) - delay_days; // exclusive
        let start = (end - w as i64).max(self.head - FEEDBACK_DAYS as i64 + 1);
        let last = (end - 1).min(self.head);
        let (mut t, mut f) = (0u32, 0u32);
        let mut d = start;
        while d <= last {
            let s = slot(d);
            t = t.saturating_add(self.txs[s]);
            f = f.saturating_add(self.frauds[s]);
            d += 1;
        }
        (t, f)
    }

    /// Heap bytes (none: inline arrays).
    pub const fn heap_bytes(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn matured_reads_only_days_older_than_the_delay() {
        let mut f = Feedback::default();
        let d0 = 20_000 * DAY;
        // 10 transactions a day for 40 days, a fraud on every 5th day.
        for day in 0..40 {
            for i in 0..10 {
                f.add_tx(d0 + day * DAY + i * 60);
            }
        }
        for day in (0..40).step_by(5) {
            assert!(f.add_fraud(d0 + day * DAY + 30));
        }
        let now = d0 + 40 * DAY + 3600; // day 40
                                        // delay 7, w 1: day 32 only (10 tx, day 32 is no multiple of 5 → 0 frauds).
        assert_eq!(f.matured(now, 7, 1), (10, 0));
        // delay 7, w 7: days 26..=32: 70 tx, frauds on day 30 → 1.
        assert_eq!(f.matured(now, 7, 7), (70, 1));
        // delay 7, w 30: days 3..=32: 300 tx, frauds on days 5,10,..,30 → 6.
        assert_eq!(f.matured(now, 7, 30), (300, 6));
        // delay 0, w 1: day 40 is not yet reached: yesterday, day 39 → 10 tx.
        assert_eq!(f.matured(now, 0, 1), (10, 0));
    }

    #[test]
    fn labels_in_the_future_or_too_old_are_refused() {
        let mut f = Feedback::default();
        let d0 = 20_000 * DAY;
        f.add_tx(d0);
        assert!(!f.add_fraud(d0 + 5 * DAY), "far ahead of the stream");
        f.add_tx(d0 + 70 * DAY);
        assert!(!f.add_fraud(d0), "left the ring");
        assert_eq!(f.matured(d0 + 71 * DAY, 0, 30), (1, 0));
    }
}
