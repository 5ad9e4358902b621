//! The measures of `eval`: ranking measures ([`crate::ranking`]), confusion counts at the
//! threshold, card precision@k per day, the threshold sweep, score histograms, the amounts of
//! fraud caught and missed, and the top missed frauds.

use super::input::{ModelInfo, Row, Scored, NO_ID};
use super::{Amounts, EvalReport, Window, DAY_MS};
use crate::ranking::{ratio, Confusion, RankCurve};

/// Points of the sweep chart.
const SWEEP_POINTS: usize = 200;
/// Share of transactions alerted at the low end of the sweep (unless the threshold is lower).
const SWEEP_MAX_ALERT_RATE: f64 = 0.05;
/// Alert rates of the sweep table.
pub(super) const SWEEP_TABLE_RATES: [f64; 7] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05];
/// Bins of the full-range histogram.
pub(super) const HIST_BINS: usize = 50;
/// Bins of the histogram around the threshold.
const ZOOM_BINS: usize = 60;
/// Missed frauds listed.
pub(super) const TOP_MISSED: usize = 20;
/// Curve thinning for drawing (in unit coordinates).
const CURVE_STEP: f64 = 1e-3;
/// Scores are written to 6 decimals: an alert column agrees with a threshold within this.
const SCORE_ROUNDING: f64 = 5e-7;

/// Everything needed for the report, beyond the headline numbers.
pub(super) struct Analysis {
    pub report: EvalReport,
    /// (recall, precision), highest threshold first.
    pub pr_curve: Vec<(f64, f64)>,
    /// (false positive rate, true positive rate), from (0, 0).
    pub roc_curve: Vec<(f64, f64)>,
    pub sweep: Vec<SweepPoint>,
    /// One row per [`SWEEP_TABLE_RATES`] entry (when there are enough transactions).
    pub sweep_table: Vec<(f64, SweepPoint)>,
    pub histograms: Vec<Histogram>,
    pub days: Vec<DayStat>,
    pub missed: Vec<MissedFraud>,
}

/// Measures when alerting on `score >= threshold`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(super) struct SweepPoint {
    pub threshold: f64,
    pub alerts: u64,
    pub alerts_per_day: f64,
    pub precision: f64,
    pub recall: f64,
    pub tp: u64,
    pub fp: u64,
}

/// Counts per linear score bin over `[lo, hi]`, for frauds and genuine transactions.
pub(super) struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub fraud: Vec<u64>,
    pub genuine: Vec<u64>,
    /// Transactions below `lo` (fraud, genuine), not in the bins.
    pub below: (u64, u64),
}

impl Histogram {
    fn new(lo: f64, hi: f64, bins: usize) -> Histogram {
        Histogram {
            lo,
            hi,
            fraud: vec![0; bins],
            genuine: vec![0; bins],
            below: (0, 0),
        }
    }

    fn add(&mut self, score: f64, fraud: bool) {
        if score < self.lo {
            if fraud {
                self.below.0 += 1;
            } else {
                self.below.1 += 1;
            }
            return;
        }
        let bins = self.fraud.len();
        let u = (score - self.lo) / (self.hi - self.lo);
        let bin = ((u * bins as f64) as usize).min(bins - 1);
        if fraud {
            self.fraud[bin] += 1;
        } else {
            self.genuine[bin] += 1;
        }
    }

    pub fn bin_width(&self) -> f64 {
        (self.hi - self.lo) / self.fraud.len() as f64
    }
}

pub(super) struct DayStat {
    pub day: i64,
    pub transactions: u64,
    pub frauds: u64,
    pub alerts: u64,
    pub caught: u64,
    pub card_precision: f64,
}

/// A fraud without an alert.
pub(super) struct MissedFraud {
    pub tx_id: String,
    pub account: String,
    pub ts_ms: i64,
    pub score: f64,
    /// NaN without an amount column.
    pub amount: f64,
}

impl Row {
    fn day(&self) -> i64 {
        self.ts_ms.div_euclid(DAY_MS)
    }
}

/// Precision among the top `k` of `accounts` (max score, compromised), ranked by score; see
/// [`super::evaluate`] for the handling of small days and ties.
pub(super) fn card_precision(accounts: &mut [(f64, bool)], k: usize) -> f64 {
    if k == 0 || accounts.is_empty() {
        return f64::NAN;
    }
    accounts.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let take = k.min(accounts.len());
    let mut hits = 0.0;
    let mut taken = 0;
    let mut i = 0;
    while taken < take {
        let score = accounts[i].0;
        let start = i;
        let mut compromised = 0usize;
        while i < accounts.len() && accounts[i].0 == score {
            compromised += usize::from(accounts[i].1);
            i += 1;
        }
        let group = i - start;
        let room = take - taken;
        if group <= room {
            hits += compromised as f64;
            taken += group;
        } else {
            hits += compromised as f64 * room as f64 / group as f64;
            taken = take;
        }
    }
    hits / take as f64
}

/// Sums of amounts rounded to cents (no 5094.5199999999995 in metrics.json).
fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn sweep_point(threshold: f64, c: Confusion, days: f64) -> SweepPoint {
    SweepPoint {
        threshold,
        alerts: c.alerts(),
        alerts_per_day: c.alerts() as f64 / days,
        precision: c.precision(),
        recall: c.recall(),
        tp: c.tp,
        fp: c.fp,
    }
}

/// The threshold shown: the model's (`--model`), else the lowest alerted score.
fn threshold_of(rows: &[Row], model: Option<&ModelInfo>) -> (Option<f64>, &'static str) {
    match model {
        Some(m) => (Some(m.threshold), "model file"),
        None => (
            rows.iter()
                .filter(|r| r.alert)
                .map(|r| r.score)
                .min_by(f64::total_cmp),
            "lowest alerted score (pass --model for the model's threshold)",
        ),
    }
}

/// Inputs of [`analyse`] besides the rows.
pub(super) struct AnalyseInput<'a> {
    pub k: usize,
    pub removed_accounts: u64,
    pub removed_transactions: u64,
    pub window: Window,
    pub model: Option<&'a ModelInfo>,
}

pub(super) fn analyse(scored: &mut Scored, input: AnalyseInput<'_>) -> Analysis {
    let rows = &mut scored.rows;
    let curve = RankCurve::from_pairs(rows.iter().map(|r| (r.score, r.fraud)).collect());
    let mut warnings = Vec::new();
    let (threshold, threshold_source) = threshold_of(rows, input.model);

    // Confusion counts follow the alert column: what was alerted.
    let mut counts = Confusion::default();
    let mut disagree = 0u64;
    let mut in_training = 0u64;
    let mut amounts = Amounts::default();
    for r in rows.iter() {
        match (r.alert, r.fraud) {
            (true, true) => counts.tp += 1,
            (true, false) => counts.fp += 1,
            (false, true) => counts.fn_ += 1,
            (false, false) => counts.tn += 1,
        }
        if let Some(t) = threshold {
            let above = r.score >= t - SCORE_ROUNDING;
            let clearly_above = r.score >= t + SCORE_ROUNDING;
            disagree += u64::from((r.alert && !above) || (!r.alert && clearly_above));
        }
        if let Some(m) = input.model {
            in_training += u64::from((m.trained_from_ms..m.trained_to_ms).contains(&r.ts_ms));
        }
        if r.fraud {
            amounts.fraud += r.amount;
            if r.alert {
                amounts.caught += r.amount;
            } else {
                amounts.missed += r.amount;
            }
        }
    }
    if disagree > 0 {
        warnings.push(format!(
            "the alert column of {disagree} transactions disagrees with the threshold {} \
             ({threshold_source}): the scores were written with another threshold \
             (e.g. model.threshold in the configuration); confusion counts follow the alert column",
            threshold.map_or_else(String::new, |t| format!("{t}"))
        ));
    }
    if let Some(m) = input.model {
        if in_training > 0 {
            warnings.push(format!(
                "{in_training} of the {} evaluated transactions ({:.1}%) are in the training range \
                 of model {} [{}, {}): measures there are optimistic; evaluate from --from {}",
                rows.len(),
                100.0 * in_training as f64 / rows.len() as f64,
                m.version,
                super::fmt_time(m.trained_from_ms),
                super::fmt_time(m.trained_to_ms),
                super::fmt_time(m.trained_to_ms),
            ));
        }
    }

    // Histograms: the whole range, and around a threshold close to 1 (k-means' 0.994 would sit
    // inside the last 0.02 bin) so that the alert region spans several bins.
    let mut histograms = vec![Histogram::new(0.0, 1.0, HIST_BINS)];
    if let Some(t) = threshold.filter(|&t| t > 0.8 && t < 1.0) {
        let lo = (1.0 - 5.0 * (1.0 - t)).max(0.0);
        histograms.push(Histogram::new(lo, 1.0, ZOOM_BINS));
    }
    for r in rows.iter() {
        for h in &mut histograms {
            h.add(r.score, r.fraud);
        }
    }

    // Per day, and card precision@k.
    rows.sort_unstable_by_key(|r| (r.day(), r.account));
    let mut days = Vec::new();
    let mut day_accounts: Vec<(f64, bool)> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let day = rows[i].day();
        let mut stat = DayStat {
            day,
            transactions: 0,
            frauds: 0,
            alerts: 0,
            caught: 0,
            card_precision: f64::NAN,
        };
        day_accounts.clear();
        while i < rows.len() && rows[i].day() == day {
            let account = rows[i].account;
            let mut max = f64::NEG_INFINITY;
            let mut compromised = false;
            while i < rows.len() && rows[i].day() == day && rows[i].account == account {
                let r = rows[i];
                max = max.max(r.score);
                compromised |= r.fraud;
                stat.transactions += 1;
                stat.frauds += u64::from(r.fraud);
                stat.alerts += u64::from(r.alert);
                stat.caught += u64::from(r.alert && r.fraud);
                i += 1;
            }
            day_accounts.push((max, compromised));
        }
        stat.card_precision = card_precision(&mut day_accounts, input.k);
        days.push(stat);
    }
    let card_precision_at_k = if days.is_empty() {
        f64::NAN
    } else {
        days.iter().map(|d| d.card_precision).sum::<f64>() / days.len() as f64
    };
    let n_days = days.len().max(1) as f64;

    // The sweep: from the threshold that alerts on SWEEP_MAX_ALERT_RATE of the transactions (or
    // the current one, if lower) to the highest score.
    let n = rows.len() as u64;
    let wide = (n as f64 * SWEEP_MAX_ALERT_RATE).ceil() as u64;
    let lo = curve
        .for_alerts(wide.max(1))
        .map_or(0.0, |(t, _)| t)
        .min(threshold.unwrap_or(1.0));
    let hi = curve.points().first().map_or(1.0, |p| p.threshold).max(lo);
    let mut sweep: Vec<SweepPoint> = (0..=SWEEP_POINTS)
        .map(|i| {
            let t = lo + (hi - lo) * i as f64 / SWEEP_POINTS as f64;
            sweep_point(t, curve.at_threshold(t), n_days)
        })
        .collect();
    // The threshold in use is one of the points (where the picker starts).
    if let Some(t) = threshold.filter(|t| (lo..=hi).contains(t)) {
        if !sweep.iter().any(|p| p.threshold == t) {
            sweep.push(sweep_point(t, curve.at_threshold(t), n_days));
            sweep.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
        }
    }
    let sweep_table = SWEEP_TABLE_RATES
        .iter()
        .filter(|&&rate| (n as f64 * rate) >= 1.0)
        .filter_map(|&rate| {
            let (t, c) = curve.for_alerts((n as f64 * rate).round() as u64)?;
            Some((rate, sweep_point(t, c, n_days)))
        })
        .collect();

    // Missed frauds, largest amount first (highest score first without amounts).
    let mut missed: Vec<&Row> = rows.iter().filter(|r| r.fraud && !r.alert).collect();
    missed.sort_unstable_by(|a, b| {
        b.amount
            .total_cmp(&a.amount)
            .then(b.score.total_cmp(&a.score))
            .then(a.ts_ms.cmp(&b.ts_ms))
    });
    let missed = missed
        .into_iter()
        .take(TOP_MISSED)
        .map(|r| MissedFraud {
            tx_id: if r.fraud_id == NO_ID {
                String::new()
            } else {
                scored.fraud_ids[r.fraud_id as usize].clone()
            },
            account: scored.account_names[r.account as usize].clone(),
            ts_ms: r.ts_ms,
            score: r.score,
            amount: r.amount,
        })
        .collect();

    let report = EvalReport {
        transactions: n,
        positives: curve.positives(),
        removed_accounts: input.removed_accounts,
        removed_transactions: input.removed_transactions,
        roc_auc: curve.roc_auc(),
        average_precision: curve.average_precision(),
        alerts: counts.alerts(),
        precision_at_threshold: counts.precision(),
        recall_at_threshold: counts.recall(),
        card_precision_at_k,
        k: input.k,
        days: days.len() as u64,
        threshold,
        threshold_source: threshold_source.to_owned(),
        model_version: input.model.map(|m| m.version.clone()),
        window: input.window,
        counts,
        alerts_per_day: ratio(counts.alerts(), days.len() as u64),
        amounts: scored.has_amount.then_some(Amounts {
            fraud: cents(amounts.fraud),
            caught: cents(amounts.caught),
            missed: cents(amounts.missed),
        }),
        warnings,
    };
    Analysis {
        report,
        pr_curve: curve.pr_curve(CURVE_STEP),
        roc_curve: curve.roc_curve(CURVE_STEP),
        sweep,
        sweep_table,
        histograms,
        days,
        missed,
    }
}
