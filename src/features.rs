//! (Transaction, state before it) → [`FeatureVector`].
//!
//! Every feature describes the history *before* the event plus the event itself; none looks
//! ahead. Labels count only once visible (applied to state). Names, units and meanings are in
//! [`FEATURES`]; the model file stores the names and refuses to load against a different list.

use crate::decode::Transaction;
use crate::state::window::Agg;
use crate::state::window::Count;
use crate::state::{country_code, AccountState, MerchantState, Windows};

/// Number of windowed features.
pub const N_FEATURES: usize = 52;

/// Label delay used when a model does not say (days): the matured fraud rates read the days
/// before `today − delay`.
pub const DEFAULT_FEEDBACK_DELAY_DAYS: i64 = 7;

/// What a model's inputs depend on besides the state: its attributes and its label delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Attributes read after the windowed features, in the model's order.
    pub attributes: Vec<String>,
    /// Label delay of the matured fraud rates, in days (0..=30).
    pub feedback_delay_days: i64,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            attributes: Vec::new(),
            feedback_delay_days: DEFAULT_FEEDBACK_DELAY_DAYS,
        }
    }
}

/// Most named attributes (the input's optional `attributes` object) a model can use.
pub const MAX_ATTRIBUTES: usize = 32;

/// Largest model input: the windowed features, then the model's attributes.
pub const MAX_DIM: usize = N_FEATURES + MAX_ATTRIBUTES;

/// A feature vector: [`FEATURES`] in order, then the attributes the model names (in the
/// model's order; NaN when a transaction lacks one). Lives on the stack.
pub type FeatureVector = [f32; MAX_DIM];

/// Writes the attributes `names` of `tx` after the windowed features (NaN when absent).
#[inline]
pub fn attribute_features(tx: &Transaction<'_>, names: &[String], out: &mut FeatureVector) {
    for (j, name) in names.iter().take(MAX_ATTRIBUTES).enumerate() {
        out[N_FEATURES + j] = tx
            .attributes
            .as_ref()
            .and_then(|a| a.iter().find(|(k, _)| k == name))
            .map_or(f32::NAN, |(_, v)| *v as f32);
    }
}

/// How a model should pre-process a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// ln(1 + x), for amounts, counts and durations.
    Log1p,
    /// As is, for flags, ratios in 0..1 and z-scores.
    Identity,
}

/// A feature's definition.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    /// Stable name (model files refer to it).
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Pre-processing.
    pub transform: Transform,
    /// An analyst's words, with `{}` for the value.
    pub words: &'static str,
}

const fn f(
    name: &'static str,
    unit: &'static str,
    transform: Transform,
    words: &'static str,
) -> FeatureDef {
    FeatureDef {
        name,
        unit,
        transform,
        words,
    }
}

use Transform::{Identity as I, Log1p as L};

/// Every feature, in vector order.
pub const FEATURES: [FeatureDef; N_FEATURES] = [
    f("amount", "currency", L, "amount {}"),
    f(
        "acct_count_1h",
        "transactions",
        L,
        "{} account transactions in the previous hour",
    ),
    f(
        "acct_sum_1h",
        "currency",
        L,
        "account spent {} in the previous hour",
    ),
    f(
        "acct_mean_1h",
        "currency",
        L,
        "account mean amount {} in the previous hour",
    ),
    f(
        "acct_max_1h",
        "currency",
        L,
        "account max amount {} in the previous hour",
    ),
    f(
        "acct_count_1d",
        "transactions",
        L,
        "{} account transactions in the previous day",
    ),
    f(
        "acct_sum_1d",
        "currency",
        L,
        "account spent {} in the previous day",
    ),
    f(
        "acct_mean_1d",
        "currency",
        L,
        "account mean amount {} in the previous day",
    ),
    f(
        "acct_max_1d",
        "currency",
        L,
        "account max amount {} in the previous day",
    ),
    f(
        "acct_count_7d",
        "transactions",
        L,
        "{} account transactions in the previous 7 days",
    ),
    f(
        "acct_sum_7d",
        "currency",
        L,
        "account spent {} in the previous 7 days",
    ),
    f(
        "acct_mean_7d",
        "currency",
        L,
        "account mean amount {} over 7 days",
    ),
    f(
        "acct_max_7d",
        "currency",
        L,
        "account max amount {} over 7 days",
    ),
    f(
        "acct_count_30d",
        "transactions",
        L,
        "{} account transactions in the previous 30 days",
    ),
    f(
        "acct_sum_30d",
        "currency",
        L,
        "account spent {} in the previous 30 days",
    ),
    f(
        "acct_mean_30d",
        "currency",
        L,
        "account mean amount {} over 30 days",
    ),
    f(
        "acct_max_30d",
        "currency",
        L,
        "account max amount {} over 30 days",
    ),
    f(
        "acct_amount_ratio_7d",
        "ratio",
        L,
        "amount {}x the 7-day mean",
    ),
    f(
        "acct_amount_ratio_30d",
        "ratio",
        L,
        "amount {}x the 30-day mean",
    ),
    f(
        "acct_amount_zscore_30d",
        "std devs",
        I,
        "amount {} standard deviations from the 30-day mean",
    ),
    f(
        "acct_secs_since_prev",
        "seconds",
        L,
        "{} s since the account's previous transaction",
    ),
    f(
        "acct_velocity_10m",
        "transactions",
        L,
        "{} account transactions in the previous 10 minutes",
    ),
    f(
        "acct_new_merchant",
        "flag",
        I,
        "merchant new to the account",
    ),
    f("acct_new_country", "flag", I, "country new to the account"),
    f(
        "acct_frauds_visible",
        "frauds",
        L,
        "{} confirmed frauds on the account",
    ),
    f(
        "merch_count_1h",
        "transactions",
        L,
        "{} merchant transactions in the previous hour",
    ),
    f(
        "merch_sum_1h",
        "currency",
        L,
        "merchant took {} in the previous hour",
    ),
    f(
        "merch_mean_1h",
        "currency",
        L,
        "merchant mean amount {} in the previous hour",
    ),
    f(
        "merch_max_1h",
        "currency",
        L,
        "merchant max amount {} in the previous hour",
    ),
    f(
        "merch_count_1d",
        "transactions",
        L,
        "{} merchant transactions in the previous day",
    ),
    f(
        "merch_sum_1d",
        "currency",
        L,
        "merchant took {} in the previous day",
    ),
    f(
        "merch_mean_1d",
        "currency",
        L,
        "merchant mean amount {} in the previous day",
    ),
    f(
        "merch_max_1d",
        "currency",
        L,
        "merchant max amount {} in the previous day",
    ),
    f(
        "merch_count_7d",
        "transactions",
        L,
        "{} merchant transactions in the previous 7 days",
    ),
    f(
        "merch_sum_7d",
        "currency",
        L,
        "merchant took {} in the previous 7 days",
    ),
    f(
        "merch_mean_7d",
        "currency",
        L,
        "merchant mean amount {} over 7 days",
    ),
    f(
        "merch_max_7d",
        "currency",
        L,
        "merchant max amount {} over 7 days",
    ),
    f(
        "merch_count_30d",
        "transactions",
        L,
        "{} merchant transactions in the previous 30 days",
    ),
    f(
        "merch_sum_30d",
        "currency",
        L,
        "merchant took {} in the previous 30 days",
    ),
    f(
        "merch_mean_30d",
        "currency",
        L,
        "merchant mean amount {} over 30 days",
    ),
    f(
        "merch_max_30d",
        "currency",
        L,
        "merchant max amount {} over 30 days",
    ),
    f(
        "merch_fraud_rate_1d",
        "ratio",
        I,
        "{} of the merchant's transactions of the matured day (label delay ago) reported fraud",
    ),
    f(
        "merch_fraud_rate_7d",
        "ratio",
        I,
        "{} of the merchant's transactions of the 7 matured days reported fraud",
    ),
    f(
        "merch_fraud_rate_30d",
        "ratio",
        I,
        "{} of the merchant's transactions of the 30 matured days reported fraud",
    ),
    f(
        "merch_matured_count_1d",
        "transactions",
        L,
        "{} merchant transactions on the matured day",
    ),
    f(
        "merch_matured_count_7d",
        "transactions",
        L,
        "{} merchant transactions in the 7 matured days",
    ),
    f(
        "merch_matured_count_30d",
        "transactions",
        L,
        "{} merchant transactions in the 30 matured days",
    ),
    f(
        "merch_amount_ratio_30d",
        "ratio",
        L,
        "amount {}x the merchant's 30-day mean",
    ),
    f(
        "acct_days_known",
        "days",
        L,
        "account first seen {} days ago",
    ),
    f(
        "merch_days_known",
        "days",
        L,
        "merchant first seen {} days ago",
    ),
    f("tx_hour", "hour", I, "at {} h (UTC)"),
    f("tx_weekend", "flag", I, "on a weekend"),
];

/// Index of the first account window feature.
const ACCT_WIN: usize = 1;
/// Index of the first merchant window feature.
const MERCH_WIN: usize = 25;

/// Seconds used for "time since previous" when there is none (30 days).
pub const NO_PREVIOUS_S: f32 = 2_592_000.0;

/// The feature names in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    FEATURES.iter().map(|d| d.name)
}

/// Aggregates of the four windows ending at `ts_ms`: 1h, 1d, 7d, 30d.
#[inline]
pub fn window_aggs<C: Count, const SQ: usize>(w: &Windows<C, SQ>, ts_ms: i64) -> [Agg; 4] {
    let s = ts_ms.div_euclid(1000);
    let (d7, d30) = w.day.windows2(s, 7, 30);
    [w.fine.window(s, 12), w.hour.window(s, 24), d7, d30]
}

#[inline]
fn put_windows(out: &mut FeatureVector, at: usize, aggs: &[Agg; 4]) {
    for (i, a) in aggs.iter().enumerate() {
        let j = at + 4 * i;
        out[j] = a.count as f32;
        out[j + 1] = a.sum as f32;
        out[j + 2] = a.mean() as f32;
        out[j + 3] = a.max as f32;
    }
}

/// Writes the account features (indices 0..25) from the account's state before `tx`
/// (`merchant_key`: [`crate::state::key_of`] its merchant).
#[inline]
pub fn account_features(
    acc: &AccountState,
    tx: &Transaction<'_>,
    merchant_key: u64,
    out: &mut FeatureVector,
) {
    let amount = tx.amount as f32;
    out[0] = amount;
    let aggs = window_aggs(&acc.w, tx.ts);
    put_windows(out, ACCT_WIN, &aggs);
    let ratio = |a: &Agg| -> f32 {
        let m = a.mean();
        if a.count == 0 || m <= 0.0 {
            1.0
        } else {
            (tx.amount / m) as f32
        }
    };
    out[17] = ratio(&aggs[2]);
    out[18] = ratio(&aggs[3]);
    let sd = aggs[3].std();
    out[19] = if aggs[3].count < 2 {
        0.0
    } else {
        ((tx.amount - aggs[3].mean()) / sd.max(1.0)) as f32
    };
    out[20] = if acc.is_new() {
        NO_PREVIOUS_S
    } else {
        ((tx.ts - acc.w.max_ts_ms).max(0) as f32 / 1000.0).min(NO_PREVIOUS_S)
    };
    out[21] = acc.w.fine.window(tx.ts.div_euclid(1000), 2).count as f32;
    out[22] = if acc.is_new() {
        0.0
    } else {
        f32::from(u8::from(!acc.knows_merchant(merchant_key)))
    };
    let c = country_code(tx.country.as_deref());
    out[23] = if acc.is_new() || c == 0 || acc.countries.iter().all(|x| *x == 0) {
        0.0
    } else {
        f32::from(u8::from(!acc.knows_country(c)))
    };
    out[24] = acc.frauds_visible as f32;
    out[48] = days_known(&acc.w, tx.ts);
}

/// Days an entity has been known (0 for a new one), capped at a year.
#[inline]
fn days_known<C: Count, const SQ: usize>(w: &Windows<C, SQ>, ts_ms: i64) -> f32 {
    if w.min_ts_ms == i64::MAX {
        0.0
    } else {
        ((ts_ms - w.min_ts_ms).max(0) as f32 / 86_400_000.0).min(365.0)
    }
}

/// Writes the merchant features (indices 25..44 and 44..50) from the merchant's state before
/// `tx`; the fraud rates are over matured days only (see [`crate::state::feedback`]).
#[inline]
pub fn merchant_features(
    m: &MerchantState,
    tx: &Transaction<'_>,
    delay_days: i64,
    out: &mut FeatureVector,
) {
    let aggs = window_aggs(&m.w, tx.ts);
    put_windows(out, MERCH_WIN, &aggs);
    let s = tx.ts.div_euclid(1000);
    for (k, w) in [1usize, 7, 30].into_iter().enumerate() {
        let (t, f) = m.feedback.matured(s, delay_days, w);
        out[41 + k] = if t == 0 {
            0.0
        } else {
            (f as f32 / t as f32).min(1.0)
        };
        out[44 + k] = t as f32;
    }
    let mean30 = aggs[3].mean();
    out[47] = if aggs[3].count == 0 || mean30 <= 0.0 {
        1.0
    } else {
        (tx.amount / mean30) as f32
    };
    out[49] = days_known(&m.w, tx.ts);
}

/// Writes the features of the transaction's own time (indices 50, 51).
#[inline]
pub fn time_features(tx: &Transaction<'_>, out: &mut FeatureVector) {
    let s = tx.ts.div_euclid(1000);
    out[50] = s.rem_euclid(86_400) as f32 / 3600.0;
    // 1970-01-01 was a Thursday: day 0 → Thursday; Saturday = 2, Sunday = 3.
    let dow = s.div_euclid(86_400).rem_euclid(7);
    out[51] = f32::from(u8::from(dow == 2 || dow == 3));
}

/// Formats a feature's value for an analyst (attributes: `name` from the model).
pub fn describe(i: usize, value: f32) -> String {
    let Some(d) = FEATURES.get(i) else {
        return format!("attribute {} = {value:.3}", i - N_FEATURES);
    };
    d.words.replacen("{}", &format_value(i, value), 1)
}

/// A feature's value in its unit, as [`describe`] writes it.
pub fn format_value(i: usize, value: f32) -> String {
    let Some(d) = FEATURES.get(i) else {
        return format!("{value:.3}");
    };
    match d.unit {
        "flag" | "transactions" | "frauds" => format!("{value:.0}"),
        "ratio" if d.name.contains("fraud_rate") => format!("{:.1}%", value * 100.0),
        "ratio" | "std devs" | "hour" | "days" => format!("{value:.1}"),
        "seconds" => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StateConfig;
    use crate::decode::Label;
    use crate::state::State;
    use std::borrow::Cow;

    fn tx(id: &str, ts_s: i64, acct: &str, merch: &str, amount: f64) -> Transaction<'static> {
        Transaction {
            tx_id: Cow::Owned(id.into()),
            ts: ts_s * 1000,
            account_id: Cow::Owned(acct.into()),
            merchant_id: Cow::Owned(merch.into()),
            amount,
            currency: Cow::Borrowed("EUR"),
            card_id: None,
            mcc: None,
            country: Some(Cow::Borrowed("FR")),
            channel: None,
            device_id: None,
            lat: None,
            lon: None,
            attributes: None,
        }
    }

    /// Feature computation then application: the engine's own path.
    fn step(state: &State, t: &Transaction<'_>) -> FeatureVector {
        crate::engine::observe(state, t, &FeatureSpec::default()).features
    }

    #[test]
    fn names_are_unique_and_indices_match() {
        let mut n: Vec<_> = names().collect();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), N_FEATURES);
        assert_eq!(FEATURES[ACCT_WIN].name, "acct_count_1h");
        assert_eq!(FEATURES[17].name, "acct_amount_ratio_7d");
        assert_eq!(FEATURES[MERCH_WIN].name, "merch_count_1h");
        assert_eq!(FEATURES[41].name, "merch_fraud_rate_1d");
    }

    #[test]
    fn hand_computed_account_features() {
        let s = State::new(&StateConfig::default());
        let day = 86_400 * 20_000; // day-aligned
        step(&s, &tx("a", day + 100, "c1", "m1", 10.0));
        step(&s, &tx("b", day + 200, "c1", "m1", 30.0));
        let fv = step(&s, &tx("c", day + 400, "c1", "m2", 80.0));
        assert_eq!(fv[0], 80.0);
        assert_eq!(fv[1], 2.0); // count 1h
        assert_eq!(fv[2], 40.0); // sum 1h
        assert_eq!(fv[3], 20.0); // mean 1h
        assert_eq!(fv[4], 30.0); // max 1h
        assert_eq!(fv[13], 2.0); // count 30d
        assert_eq!(fv[18], 4.0); // 80 / 20
                                 // z: (80 - 20) / max(std(10, 30) = 10, 1)
        approx::assert_abs_diff_eq!(fv[19], 6.0, epsilon = 1e-4);
        assert_eq!(fv[20], 200.0); // since previous
        assert_eq!(fv[21], 2.0); // 10 minutes
        assert_eq!(fv[22], 1.0); // m2 is new
        assert_eq!(fv[23], 0.0); // FR known
        assert_eq!(fv[25], 0.0); // merchant m2 has no history
    }

    /// The 1-day and 7-day windows and the 7-day ratio, by hand: three earlier transactions,
    /// 2 days, 20 hours and 10 minutes before the scored one.
    #[test]
    fn hand_computed_day_and_week_windows() {
        let s = State::new(&StateConfig::default());
        let t = 86_400 * 20_010 + 12 * 3_600; // noon
        step(&s, &tx("a", t - 2 * 86_400, "c1", "m1", 100.0));
        step(&s, &tx("b", t - 20 * 3_600, "c1", "m1", 40.0));
        step(&s, &tx("c", t - 600, "c1", "m1", 20.0));
        let fv = step(&s, &tx("d", t, "c1", "m1", 180.0));
        // 1 day = this hour's bucket and the 23 before: b (20 h ago) and c.
        assert_eq!((fv[5], fv[6], fv[7], fv[8]), (2.0, 60.0, 30.0, 40.0));
        // 7 days = today's bucket and the 6 days before: all three.
        assert_eq!(
            (fv[9], fv[10], fv[11], fv[12]),
            (3.0, 160.0, 160.0 / 3.0, 100.0)
        );
        approx::assert_abs_diff_eq!(fv[17], 180.0 / (160.0 / 3.0), epsilon = 1e-4);
        // 1 hour: only c.
        assert_eq!((fv[1], fv[2]), (1.0, 20.0));
        assert_eq!(fv[20], 600.0);
        assert_eq!(fv[22], 0.0, "m1 is known");
    }

    #[test]
    fn merchant_windows_and_first_transaction() {
        let s = State::new(&StateConfig::default());
        let t0 = 86_400 * 20_000;
        let fv = step(&s, &tx("a", t0, "c1", "m1", 10.0));
        assert_eq!(fv[20], NO_PREVIOUS_S);
        assert_eq!(fv[22], 0.0, "first transaction is not 'new merchant'");
        assert_eq!(fv[25], 0.0);
        step(&s, &tx("b", t0 + 10, "c2", "m1", 20.0));
        let fv = step(&s, &tx("c", t0 + 20, "c3", "m1", 5.0));
        assert_eq!(fv[25], 2.0);
        assert_eq!(fv[26], 30.0);
        assert_eq!(fv[28], 20.0);
        // Two days later: gone from 1h and 1d, still in 7d and 30d.
        let fv = step(&s, &tx("d", t0 + 2 * 86_400, "c3", "m1", 5.0));
        assert_eq!(fv[25], 0.0);
        assert_eq!(fv[29], 0.0);
        assert_eq!(fv[33], 3.0);
        assert_eq!(fv[37], 3.0);
    }

    fn fraud_label(tx_id: &str, acct: &str, merchant_ts: Option<(&str, i64)>) -> Label {
        Label {
            tx_id: tx_id.into(),
            account_id: acct.into(),
            fraud: true,
            reported_at: None,
            merchant_id: merchant_ts.map(|(m, _)| m.to_string()),
            ts: merchant_ts.map(|(_, t)| t * 1000),
        }
    }

    /// A label changes features only once applied (visible), never before; and the merchant
    /// rates count it only once its day has matured (the label delay, 7 days by default).
    #[test]
    fn no_look_ahead_on_labels() {
        let s = State::new(&StateConfig::default());
        let t0 = 86_400 * 20_000;
        step(&s, &tx("f1", t0, "c1", "m1", 10.0));
        step(&s, &tx("g1", t0 + 60, "c2", "m1", 10.0));
        let before = step(&s, &tx("g2", t0 + 120, "c3", "m1", 10.0));
        assert_eq!(before[24], 0.0);
        assert_eq!(before[43], 0.0);
        let again = step(&s, &tx("g3", t0 + 180, "c1", "m1", 10.0));
        assert_eq!(again[24], 0.0, "label not yet visible");
        let label = fraud_label("f1", "c1", None);
        assert_eq!(s.apply_label(&label), crate::state::LabelOutcome::Applied);
        let after = step(&s, &tx("g4", t0 + 240, "c1", "m1", 10.0));
        assert_eq!(after[24], 1.0);
        assert_eq!(after[41], 0.0, "day 0 has not matured on day 0");
        // Day 7: nothing has matured yet (the matured day is day -1).
        let d7 = step(&s, &tx("h0", t0 + 7 * 86_400, "c9", "m1", 10.0));
        assert_eq!((d7[41], d7[42], d7[43], d7[44]), (0.0, 0.0, 0.0, 0.0));
        // Day 8: day 0 has matured: 1 fraud among its 5 transactions, in all three windows.
        let d8 = step(&s, &tx("h1", t0 + 8 * 86_400, "c9", "m1", 10.0));
        approx::assert_abs_diff_eq!(d8[41], 0.2, epsilon = 1e-6);
        assert_eq!(d8[44], 5.0);
        approx::assert_abs_diff_eq!(d8[42], 0.2, epsilon = 1e-6);
        assert_eq!(d8[45], 5.0);
        approx::assert_abs_diff_eq!(d8[43], 0.2, epsilon = 1e-6);
    }

    /// Matured fraud rates by hand: a merchant with 4 transactions a day for 40 days; frauds
    /// reported (with merchant_id and ts) on days 10, 20, 30 and 36. On day 40 with the default
    /// 7-day delay: 1 day = day 32, 7 days = days 26..=32, 30 days = days 3..=32.
    #[test]
    fn matured_fraud_rates_by_hand() {
        let s = State::new(&StateConfig::default());
        let day0 = 86_400 * 20_000;
        for d in 0..40 {
            for i in 0..4 {
                step(
                    &s,
                    &tx(
                        &format!("t{d}-{i}"),
                        day0 + d * 86_400 + i * 3_600,
                        "c1",
                        "m1",
                        10.0,
                    ),
                );
            }
        }
        for d in [10, 20, 30, 36, 32] {
            let l = fraud_label(&format!("t{d}-0"), "c1", Some(("m1", day0 + d * 86_400)));
            assert_eq!(s.apply_label(&l), crate::state::LabelOutcome::Applied);
        }
        let fv = step(&s, &tx("now", day0 + 40 * 86_400 + 60, "c2", "m1", 10.0));
        // day 32: 1 fraud / 4
        approx::assert_abs_diff_eq!(fv[41], 0.25, epsilon = 1e-6);
        assert_eq!(fv[44], 4.0);
        // days 26..=32: frauds on 30 and 32 → 2 / 28
        approx::assert_abs_diff_eq!(fv[42], 2.0 / 28.0, epsilon = 1e-6);
        assert_eq!(fv[45], 28.0);
        // days 3..=32: frauds on 10, 20, 30, 32 → 4 / 120 (day 36 is not matured)
        approx::assert_abs_diff_eq!(fv[43], 4.0 / 120.0, epsilon = 1e-6);
        assert_eq!(fv[46], 120.0);
    }

    /// A label that arrives 7 days and 50 transactions of its account later, without merchant
    /// or time, still reaches its merchant (through the transaction lookup), and shows in the
    /// merchant's matured rate for every account.
    #[test]
    fn late_label_without_merchant_reaches_it() {
        let s = State::new(&StateConfig::default());
        let t0 = 86_400 * 20_000;
        step(&s, &tx("fraud", t0, "c1", "m7", 500.0));
        step(&s, &tx("other", t0 + 10, "c2", "m7", 20.0));
        for i in 0..50 {
            step(
                &s,
                &tx(
                    &format!("later{i}"),
                    t0 + 600 + i * 12_000,
                    "c1",
                    &format!("m{}", 100 + i),
                    20.0,
                ),
            );
        }
        let l = fraud_label("fraud", "c1", None);
        assert_eq!(s.apply_label(&l), crate::state::LabelOutcome::Applied);
        let fv = step(&s, &tx("x", t0 + 8 * 86_400, "c3", "m7", 20.0));
        approx::assert_abs_diff_eq!(fv[42], 0.5, epsilon = 1e-6);
        // An account the state has never seen: the label is kept on a new account.
        let l = fraud_label("nope", "c-new", None);
        assert_eq!(s.apply_label(&l), crate::state::LabelOutcome::AccountOnly);
        let fv = step(&s, &tx("y", t0 + 8 * 86_400 + 5, "c-new", "m7", 20.0));
        assert_eq!(
            fv[24], 1.0,
            "label kept though the account was not in memory"
        );
    }

    #[test]
    fn time_and_history_features() {
        let s = State::new(&StateConfig::default());
        // 2018-04-07 is a Saturday.
        let sat = 1_523_059_200 + 13 * 3_600 + 1_800; // 13:30 UTC
        let fv = step(&s, &tx("a", sat, "c1", "m1", 10.0));
        approx::assert_abs_diff_eq!(fv[50], 13.5, epsilon = 1e-4);
        assert_eq!(fv[51], 1.0);
        assert_eq!(fv[48], 0.0);
        let fv = step(&s, &tx("b", sat + 2 * 86_400, "c1", "m1", 40.0));
        assert_eq!(fv[51], 0.0, "Monday");
        approx::assert_abs_diff_eq!(fv[48], 2.0, epsilon = 1e-4);
        approx::assert_abs_diff_eq!(fv[49], 2.0, epsilon = 1e-4);
        approx::assert_abs_diff_eq!(fv[47], 4.0, epsilon = 1e-4);
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(describe(18, 9.26), "amount 9.3x the 30-day mean");
        assert_eq!(
            describe(43, 0.125),
            "12.5% of the merchant's transactions of the 30 matured days reported fraud"
        );
    }
}
