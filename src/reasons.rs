//! Why an alert fired, in an analyst's words: the inputs that pushed the score up, each with its
//! value, the typical value it is compared with, and a sentence.
//!
//! Rules (README "Reading an alert"):
//! - only inputs on the suspicious side of typical are listed: the supervised models' `explain`
//!   already returns positive contributions only; for the unsupervised kinds (`iforest`,
//!   `kmeans`), which flag anything unusual, an input is dropped when its value is on the
//!   unsuspicious side of typical (an amount far *below* the usual, a flag at 0, a long gap
//!   since the previous transaction, an old account);
//! - "typical" is the account's (or merchant's) own value when the feature is relative to it:
//!   its 30-day mean amount, its usual number of transactions per hour or day, its usual gap
//!   between transactions. Without that history, it is the training population's
//!   (the model's scaler mean) and the text says "typical for all accounts" (or merchants);
//! - amounts carry the transaction's currency, seconds are humanised, flags are words, and the
//!   amount's deviation is a ratio to the account's mean, not a z-score.

use serde::Serialize;

use crate::decode::Transaction;
use crate::features::{FeatureVector, FEATURES, NO_PREVIOUS_S, N_FEATURES};
use crate::model::{Model, Predict};

/// One reason, as the alert's `reason_details` carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// Feature name (as in the model file), or `attr.<name>` for an attribute.
    pub feature: String,
    /// The transaction's value of the feature, in the feature's unit.
    pub value: f32,
    /// The value it is compared with, in the same unit (null when none applies, e.g. hour).
    pub typical: Option<f32>,
    /// Whose typical value: `account`, `merchant` (its own history) or `population` (the
    /// training data's mean); null with `typical`.
    pub typical_of: Option<&'static str>,
    /// The feature's share of the model's explanation (0..1; the shares of all inputs sum
    /// to 1 for the unsupervised kinds).
    pub contribution: f32,
    /// The sentence, as in `reasons`.
    pub text: String,
}

/// On which side of typical a feature is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Above typical (amounts, counts, ratios, flags at 1, fraud rates).
    High,
    /// Below typical (time since the previous transaction, days known).
    Low,
    /// Neither (hour of day, attributes).
    Any,
}

fn side(i: usize) -> Side {
    match FEATURES.get(i).map(|d| d.name) {
        Some("acct_secs_since_prev" | "acct_days_known" | "merch_days_known") => Side::Low,
        Some("tx_hour") | None => Side::Any,
        Some(_) => Side::High,
    }
}

/// Humanised duration: `45 s`, `3 min`, `2 h 5 min`, `4 days`.
pub fn humanise_secs(s: f32) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => {
            let (h, m) = (s / 3_600, (s % 3_600) / 60);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
        _ => {
            let d = (s as f64 / 86_400.0).round() as u64;
            if d == 1 {
                "1 day".into()
            } else {
                format!("{d} days")
            }
        }
    }
}

/// An amount with its currency: `142.00 EUR`.
fn money(v: f32, cur: &str) -> String {
    if cur.is_empty() {
        format!("{v:.2}")
    } else {
        format!("{v:.2} {cur}")
    }
}

fn count(v: f32) -> String {
    // Usual counts are averages (0.4 a day): one decimal below 10, whole numbers above.
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn plural(v: f32, one: &str, many: &str) -> String {
    if (v - 1.0).abs() < f32::EPSILON {
        format!("1 {one}")
    } else {
        format!("{} {many}", count(v))
    }
}

/// The facts about the account and the merchant the sentences need.
struct Ctx<'a> {
    fv: &'a FeatureVector,
    cur: &'a str,
}

impl Ctx<'_> {
    /// Days of account history the usual rates are over (0 without history).
    fn acct_days(&self) -> f32 {
        if self.fv[13] <= 0.0 {
            0.0
        } else {
            self.fv[48].clamp(1.0, 30.0)
        }
    }
    fn merch_days(&self) -> f32 {
        if self.fv[37] <= 0.0 {
            0.0
        } else {
            self.fv[49].clamp(1.0, 30.0)
        }
    }
    fn new_account(&self) -> bool {
        self.fv[20] >= NO_PREVIOUS_S && self.fv[13] <= 0.0
    }
}

/// Window length in days of the window features at `at + 4 * w` (1 h, 1 d, 7 d, 30 d).
const WINDOW_DAYS: [f32; 4] = [1.0 / 24.0, 1.0, 7.0, 30.0];
const WINDOW_WORDS: [&str; 4] = [
    "in the previous hour",
    "in the previous day",
    "in the previous 7 days",
    "in the previous 30 days",
];

/// The entity's own typical value of window feature `i` (None without history or for the
/// 30-day window itself, which has no longer history to compare with).
fn own_window_typical(c: &Ctx<'_>, i: usize, base: usize, days: f32) -> Option<f32> {
    let (w, stat) = ((i - base) / 4, (i - base) % 4);
    if days <= 0.0 || w == 3 {
        return None;
    }
    let (count30, sum30, mean30) = (c.fv[base + 12], c.fv[base + 13], c.fv[base + 14]);
    let per_window = WINDOW_DAYS[w] / days;
    Some(match stat {
        0 => count30 * per_window,
        1 => sum30 * per_window,
        _ => mean30,
    })
}

/// A sentence and the typical value for feature `i` (a windowed feature) of this transaction.
/// `pop` is the training population's typical value.
fn window_feature(
    c: &Ctx<'_>,
    i: usize,
    v: f32,
    pop: f32,
) -> (String, Option<f32>, Option<&'static str>) {
    let d = &FEATURES[i];
    let fv = c.fv;
    let cur = c.cur;
    let pick = |own: Option<f32>, who: &'static str| own.map_or((pop, "population"), |t| (t, who));
    let with_typical = |text: String, t: f32, who: &'static str, fmt: &dyn Fn(f32) -> String| {
        let s = match who {
            "account" => format!("{text} (usually {} for this account)", fmt(t)),
            "merchant" => format!("{text} (usually {} for this merchant)", fmt(t)),
            _ if d.name.starts_with("merch") => {
                format!("{text} (typical for all merchants: {})", fmt(t))
            }
            _ => format!("{text} (typical for all accounts: {})", fmt(t)),
        };
        (s, Some(t), Some(who))
    };
    let m = |x: f32| money(x, cur);
    match d.name {
        "amount" => {
            if c.new_account() {
                with_typical(
                    format!("amount {} on a new account (no earlier transaction)", m(v)),
                    pop,
                    "population",
                    &m,
                )
            } else if fv[13] > 0.0 {
                let mean = fv[15];
                (
                    format!(
                        "amount {} is {:.1}x the account's 30-day mean of {}",
                        m(v),
                        v / mean.max(0.01),
                        m(mean)
                    ),
                    Some(mean),
                    Some("account"),
                )
            } else {
                with_typical(format!("amount {}", m(v)), pop, "population", &m)
            }
        }
        "acct_amount_ratio_7d" | "acct_amount_ratio_30d" | "merch_amount_ratio_30d" => {
            let (who, mean, count) = match d.name {
                "acct_amount_ratio_7d" => ("account's 7-day", fv[11], fv[9]),
                "acct_amount_ratio_30d" => ("account's 30-day", fv[15], fv[13]),
                _ => ("merchant's 30-day", fv[39], fv[37]),
            };
            if count <= 0.0 {
                let whose = if d.name.starts_with("merch") {
                    "merchant"
                } else {
                    "account"
                };
                (
                    format!(
                        "amount {} with no earlier {whose} transaction to compare with",
                        m(fv[0])
                    ),
                    Some(1.0),
                    Some(if whose == "merchant" {
                        "merchant"
                    } else {
                        "account"
                    }),
                )
            } else {
                (
                    format!(
                        "amount {} is {v:.1}x the {who} mean of {}",
                        m(fv[0]),
                        m(mean)
                    ),
                    Some(1.0),
                    Some(if d.name.starts_with("merch") {
                        "merchant"
                    } else {
                        "account"
                    }),
                )
            }
        }
        // A ratio reads better than a z-score (whose deviation is floored at 1 currency unit).
        "acct_amount_zscore_30d" => (
            if fv[13] > 0.0 {
                format!(
                    "amount {} is {:.1}x the account's 30-day mean of {} ({v:+.1} standard deviations)",
                    m(fv[0]),
                    fv[0] / fv[15].max(0.01),
                    m(fv[15])
                )
            } else {
                format!(
                    "amount {} with no earlier account transaction to compare with",
                    m(fv[0])
                )
            },
            Some(0.0),
            Some("account"),
        ),
        "acct_secs_since_prev" => {
            if v >= NO_PREVIOUS_S {
                (
                    "no earlier transaction of the account in 30 days".into(),
                    None,
                    None,
                )
            } else {
                let own = (c.acct_days() > 0.0 && fv[13] > 0.0)
                    .then(|| c.acct_days() * 86_400.0 / fv[13]);
                let (t, who) = pick(own, "account");
                with_typical(
                    format!(
                        "{} since the account's previous transaction",
                        humanise_secs(v)
                    ),
                    t,
                    who,
                    &humanise_secs,
                )
            }
        }
        "acct_velocity_10m" => {
            let own = (c.acct_days() > 0.0).then(|| fv[13] / (c.acct_days() * 144.0));
            let (t, who) = pick(own, "account");
            with_typical(
                format!(
                    "{} of the account in the previous 10 minutes",
                    plural(v, "transaction", "transactions")
                ),
                t,
                who,
                &count,
            )
        }
        "acct_new_merchant" => (
            if v >= 0.5 {
                "merchant new to the account".into()
            } else {
                "merchant already known to the account".into()
            },
            Some(pop),
            Some("population"),
        ),
        "acct_new_country" => (
            if v >= 0.5 {
                "country new to the account".into()
            } else {
                "country already known to the account".into()
            },
            Some(pop),
            Some("population"),
        ),
        "tx_weekend" => (
            if v >= 0.5 {
                "on a weekend".into()
            } else {
                "on a weekday".into()
            },
            Some(pop),
            Some("population"),
        ),
        "acct_frauds_visible" => (
            if v < 0.5 {
                "no confirmed fraud on the account".into()
            } else {
                format!(
                    "{} on the account",
                    plural(v, "confirmed fraud", "confirmed frauds")
                )
            },
            Some(0.0),
            Some("account"),
        ),
        "acct_days_known" | "merch_days_known" => {
            let who = if d.name.starts_with("acct") {
                "account"
            } else {
                "merchant"
            };
            let text = if v < 1.0 {
                format!("new {who}: first seen less than a day ago")
            } else {
                format!("{who} first seen {} ago", humanise_secs(v * 86_400.0))
            };
            with_typical(text, pop, "population", &|x| humanise_secs(x * 86_400.0))
        }
        "tx_hour" => (
            format!("at {:02}:{:02} UTC", v as u32, ((v.fract()) * 60.0) as u32),
            None,
            None,
        ),
        n if n.starts_with("merch_fraud_rate") => {
            let text = d.words.replacen("{}", &format!("{:.1}%", v * 100.0), 1);
            with_typical(text, pop, "population", &|x| format!("{:.1}%", x * 100.0))
        }
        n if n.starts_with("merch_matured_count") => {
            let text = d.words.replacen("{}", &count(v), 1);
            with_typical(text, pop, "population", &count)
        }
        _ if (1..25).contains(&i) || (25..41).contains(&i) => {
            let (base, days, whose, who) = if i < 25 {
                (1, c.acct_days(), "account", "account")
            } else {
                (25, c.merch_days(), "merchant", "merchant")
            };
            let (w, stat) = ((i - base) / 4, (i - base) % 4);
            let own = own_window_typical(c, i, base, days);
            let (t, who) = pick(own, who);
            let when = WINDOW_WORDS[w];
            match stat {
                0 => with_typical(
                    format!(
                        "{} of the {whose} {when}",
                        plural(v, "transaction", "transactions")
                    ),
                    t,
                    who,
                    &count,
                ),
                1 => with_typical(
                    format!(
                        "{} {} {when}",
                        if whose == "account" {
                            "account spent"
                        } else {
                            "merchant took"
                        },
                        m(v)
                    ),
                    t,
                    who,
                    &m,
                ),
                2 => with_typical(format!("{whose}'s mean amount {} {when}", m(v)), t, who, &m),
                _ => with_typical(
                    format!("{whose}'s largest amount {} {when}", m(v)),
                    t,
                    who,
                    &m,
                ),
            }
        }
        _ => (
            d.words.replacen("{}", &format!("{v:.2}"), 1),
            Some(pop),
            Some("population"),
        ),
    }
}

/// The reason for input `i` of this transaction (`pop`: the training population's typical
/// value of the input; `name`: the model's name of the input).
pub fn reason(
    tx: &Transaction<'_>,
    fv: &FeatureVector,
    i: usize,
    name: &str,
    pop: f32,
    contribution: f32,
) -> Reason {
    let v = fv[i];
    if i >= N_FEATURES {
        let a = name.strip_prefix("attr.").unwrap_or(name);
        return Reason {
            feature: name.to_string(),
            value: v,
            typical: Some(pop),
            typical_of: Some("population"),
            contribution,
            text: format!("attribute {a} = {v:.3} (typical for all accounts: {pop:.3})"),
        };
    }
    let c = Ctx {
        fv,
        cur: &tx.currency,
    };
    let (text, typical, typical_of) = window_feature(&c, i, v, pop);
    Reason {
        feature: FEATURES[i].name.to_string(),
        value: v,
        typical,
        typical_of,
        contribution,
        text,
    }
}

/// Whether `r` is on the suspicious side of its typical value (see the module's rules).
pub fn is_suspicious(i: usize, r: &Reason) -> bool {
    let v = r.value;
    if !v.is_finite() {
        return false;
    }
    let name = FEATURES.get(i).map(|d| d.name);
    // "No previous transaction in 30 days" is a history fact, not speed.
    if name == Some("acct_secs_since_prev") && v >= NO_PREVIOUS_S {
        return false;
    }
    if name == Some("acct_amount_zscore_30d") {
        return v > 0.0;
    }
    let Some(t) = r.typical else {
        return true;
    };
    match side(i) {
        Side::High => v > t,
        Side::Low => v < t,
        Side::Any => true,
    }
}

/// Inputs that compare the amount with the account's own means: one reason for all.
const AMOUNT_VS_ACCOUNT: [usize; 4] = [0, 17, 18, 19];

/// The reasons of a decision: the inputs that pushed `model`'s score up most, at most `k`.
pub fn reasons(model: &Model, tx: &Transaction<'_>, fv: &FeatureVector, k: usize) -> Vec<Reason> {
    let unsupervised = matches!(model.body().params.kind(), "iforest" | "kmeans");
    // Every input is asked for, some are dropped below: the unsupervised kinds credit unusual
    // values on either side (only the suspicious side is kept), and the amount is said once.
    let mut amount_said = false;
    model
        .explain(fv, model.dim())
        .into_iter()
        .filter(|(_, c)| *c > 0.0)
        .map(|(i, c)| {
            (
                i,
                reason(tx, fv, i, model.input_name(i), model.typical(i), c),
            )
        })
        .filter(|(i, r)| !unsupervised || is_suspicious(*i, r))
        // The amount against the account's means (amount, ratios, z-score) is said once.
        .filter(|(i, _)| {
            let amount = AMOUNT_VS_ACCOUNT.contains(i);
            let keep = !(amount && amount_said);
            amount_said |= amount;
            keep
        })
        .map(|(_, r)| r)
        .take(k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::MAX_DIM;
    use std::borrow::Cow;

    fn tx(cur: &'static str) -> Transaction<'static> {
        Transaction {
            tx_id: Cow::Borrowed("t1"),
            ts: 1_525_132_800_000,
            account_id: Cow::Borrowed("c1"),
            merchant_id: Cow::Borrowed("m1"),
            amount: 142.0,
            currency: Cow::Borrowed(cur),
            card_id: None,
            mcc: None,
            country: None,
            channel: None,
            device_id: None,
            lat: None,
            lon: None,
            attributes: None,
        }
    }

    fn index(name: &str) -> usize {
        FEATURES.iter().position(|d| d.name == name).unwrap()
    }

    /// An account with 30 transactions over 30 days, mean 15.20, and this transaction.
    fn known_account(amount: f32) -> FeatureVector {
        let mut fv = [0.0f32; MAX_DIM];
        fv[0] = amount;
        fv[13] = 30.0;
        fv[14] = 456.0;
        fv[15] = 15.2;
        fv[16] = 30.0;
        fv[18] = amount / 15.2;
        fv[20] = 3_600.0;
        fv[48] = 30.0;
        fv[49] = 100.0;
        fv
    }

    #[test]
    fn humanised_seconds() {
        assert_eq!(humanise_secs(42.0), "42 s");
        assert_eq!(humanise_secs(180.0), "3 min");
        assert_eq!(humanise_secs(7_500.0), "2 h 5 min");
        assert_eq!(humanise_secs(7_200.0), "2 h");
        assert_eq!(humanise_secs(4.0 * 86_400.0), "4 days");
        assert_eq!(humanise_secs(86_400.0), "1 day");
    }

    #[test]
    fn amount_is_a_ratio_to_the_accounts_mean_with_currency() {
        let fv = known_account(142.0);
        let r = reason(&tx("EUR"), &fv, 0, "amount", 40.0, 0.5);
        assert_eq!(
            r.text,
            "amount 142.00 EUR is 9.3x the account's 30-day mean of 15.20 EUR"
        );
        assert_eq!(r.typical, Some(15.2));
        assert_eq!(r.typical_of, Some("account"));
        let r = reason(&tx("EUR"), &fv, 18, "acct_amount_ratio_30d", 1.3, 0.2);
        assert_eq!(
            r.text,
            "amount 142.00 EUR is 9.3x the account's 30-day mean of 15.20 EUR"
        );
    }

    #[test]
    fn new_account_says_so_and_uses_the_population() {
        let mut fv = [0.0f32; MAX_DIM];
        fv[0] = 900.0;
        fv[18] = 1.0;
        fv[20] = NO_PREVIOUS_S;
        let r = reason(&tx("USD"), &fv, 0, "amount", 40.0, 0.5);
        assert_eq!(
            r.text,
            "amount 900.00 USD on a new account (no earlier transaction) (typical for all accounts: 40.00 USD)"
        );
        assert_eq!(r.typical_of, Some("population"));
        let r = reason(
            &tx("USD"),
            &fv,
            index("acct_days_known"),
            "acct_days_known",
            20.0,
            0.1,
        );
        assert_eq!(
            r.text,
            "new account: first seen less than a day ago (typical for all accounts: 20 days)"
        );
        // "No earlier transaction" is not a reason of speed.
        let r = reason(&tx("USD"), &fv, 20, "acct_secs_since_prev", 3_000.0, 0.1);
        assert!(!is_suspicious(20, &r), "{r:?}");
    }

    #[test]
    fn flags_read_as_words() {
        let mut fv = known_account(20.0);
        fv[22] = 1.0;
        let r = reason(&tx("EUR"), &fv, 22, "acct_new_merchant", 0.1, 0.3);
        assert_eq!(r.text, "merchant new to the account");
        assert!(is_suspicious(22, &r));
        fv[22] = 0.0;
        let r = reason(&tx("EUR"), &fv, 22, "acct_new_merchant", 0.1, 0.3);
        assert_eq!(r.text, "merchant already known to the account");
        assert!(!is_suspicious(22, &r), "flag 0 is not a fraud reason");
        assert!(!r.text.contains("flag"));
    }

    #[test]
    fn counts_and_gaps_compare_with_the_accounts_own_usual() {
        let mut fv = known_account(20.0);
        fv[5] = 6.0; // 6 in the previous day; the account does 1 a day
        let r = reason(&tx("EUR"), &fv, 5, "acct_count_1d", 1.0, 0.3);
        assert_eq!(
            r.text,
            "6 transactions of the account in the previous day (usually 1 for this account)"
        );
        assert!(is_suspicious(5, &r));
        fv[20] = 180.0;
        let r = reason(&tx("EUR"), &fv, 20, "acct_secs_since_prev", 3_000.0, 0.3);
        assert_eq!(
            r.text,
            "3 min since the account's previous transaction (usually 1 day for this account)"
        );
        assert!(is_suspicious(20, &r));
        fv[20] = 5.0 * 86_400.0;
        let r = reason(&tx("EUR"), &fv, 20, "acct_secs_since_prev", 3_000.0, 0.3);
        assert!(!is_suspicious(20, &r), "a long gap is not a fraud reason");
    }

    #[test]
    fn an_amount_far_below_typical_is_not_a_reason() {
        let fv = known_account(0.5);
        let r = reason(&tx("EUR"), &fv, 0, "amount", 40.0, 0.9);
        assert!(!is_suspicious(0, &r), "{r:?}");
        let r = reason(&tx("EUR"), &fv, 18, "acct_amount_ratio_30d", 1.0, 0.9);
        assert!(!is_suspicious(18, &r), "{r:?}");
        let mut z = fv;
        z[19] = -19.3;
        let r = reason(&tx("EUR"), &z, 19, "acct_amount_zscore_30d", 0.0, 0.9);
        assert!(!is_suspicious(19, &r), "{r:?}");
        assert!(
            r.text.contains("0.0x the account's 30-day mean"),
            "{}",
            r.text
        );
    }

    /// Every feature has words: no placeholder left, no "(flag", and a typical value only when
    /// the words compare with one.
    #[test]
    fn every_feature_has_words() {
        for (i, d) in FEATURES.iter().enumerate() {
            for fv in [known_account(50.0), [0.0f32; MAX_DIM]] {
                let r = reason(&tx("EUR"), &fv, i, d.name, 1.0, 0.1);
                assert!(!r.text.contains("{}"), "{}: {}", d.name, r.text);
                assert!(!r.text.contains("(flag"), "{}: {}", d.name, r.text);
                assert!(
                    !r.text.contains("NaN") && !r.text.contains("inf"),
                    "{}: {}",
                    d.name,
                    r.text
                );
                assert_eq!(r.feature, d.name);
            }
        }
    }
}
