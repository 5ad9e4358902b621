//! Ranking measures of scores against a binary truth (fraud or genuine), the one definition
//! shared by training (model selection on held-out scores, [`crate::model::supervised`]) and
//! `eval` ([`crate::eval`]).
//!
//! Everything derives from one [`RankCurve`]: the transactions sorted by descending score, with
//! tied scores forming **one** threshold (so results do not depend on input order), and for each
//! distinct score `s` the counts of frauds (`tp`) and genuine transactions (`fp`) scored `>= s`.
//! From it:
//!
//! * ROC AUC: the probability that a random fraud outranks a random genuine transaction, ties
//!   counting one half (the Mann–Whitney statistic; scikit-learn's `roc_auc_score`);
//! * average precision: `Σ (Rₙ − Rₙ₋₁) Pₙ` over the thresholds (scikit-learn's
//!   `average_precision_score`, no interpolation);
//! * precision and recall at a threshold (alert when `score >= threshold`, as the worker does);
//! * the precision–recall and ROC curves, thinned for drawing.
//!
//! Undefined measures (AUC without frauds or without genuine transactions, precision without
//! alerts) are `NaN`.

/// Cumulative counts at one distinct score: the transactions scored `>= threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankPoint {
    /// The distinct score.
    pub threshold: f64,
    /// Frauds scored at or above it.
    pub tp: u64,
    /// Genuine transactions scored at or above it.
    pub fp: u64,
}

/// Confusion counts at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Confusion {
    /// Frauds alerted.
    pub tp: u64,
    /// Genuine transactions alerted.
    pub fp: u64,
    /// Frauds not alerted.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Genuine transactions not alerted.
    pub tn: u64,
}

impl Confusion {
    /// Share of alerts that are fraud (`NaN` without alerts).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Share of frauds alerted (`NaN` without frauds).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Alerts.
    pub fn alerts(&self) -> u64 {
        self.tp + self.fp
    }
}

/// `num / den`, `NaN` when `den` is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Transactions ranked by descending score; see the module header.
#[derive(Debug, Clone)]
pub struct RankCurve {
    points: Vec<RankPoint>,
    positives: u64,
    negatives: u64,
}

impl RankCurve {
    /// Ranks `scores` (any float type) against `truth` (true = fraud). Extra elements of the
    /// longer slice are ignored. NaN scores rank below every number.
    pub fn new<S: Copy + Into<f64>>(scores: &[S], truth: &[bool]) -> RankCurve {
        let pairs: Vec<(f64, bool)> = scores
            .iter()
            .zip(truth)
            .map(|(&s, &t)| (s.into(), t))
            .collect();
        RankCurve::from_pairs(pairs)
    }

    /// Ranks `(score, fraud)` pairs.
    pub fn from_pairs(mut pairs: Vec<(f64, bool)>) -> RankCurve {
        // `+ 0.0` turns -0.0 into 0.0 so that both form one tie group; NaN sorts last.
        for p in &mut pairs {
            p.0 = if p.0.is_nan() {
                f64::NEG_INFINITY
            } else {
                p.0 + 0.0
            };
        }
        pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut points = Vec::new();
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut i = 0;
        while i < pairs.len() {
            let score = pairs[i].0;
            while i < pairs.len() && pairs[i].0 == score {
                if pairs[i].1 {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            points.push(RankPoint {
                threshold: score,
                tp,
                fp,
            });
        }
        RankCurve {
            points,
            positives: tp,
            negatives: fp,
        }
    }

    /// One point per distinct score, highest first; the last one counts everything.
    pub fn points(&self) -> &[RankPoint] {
        &self.points
    }

    /// Frauds.
    pub fn positives(&self) -> u64 {
        self.positives
    }

    /// Genuine transactions.
    pub fn negatives(&self) -> u64 {
        self.negatives
    }

    /// Area under the ROC curve, ties counting one half.
    pub fn roc_auc(&self) -> f64 {
        if self.positives == 0 || self.negatives == 0 {
            return f64::NAN;
        }
        // Twice the number of (fraud, genuine) pairs ranked correctly, ties counting one half.
        let mut auc2: u128 = 0;
        let (mut tp, mut fp) = (0u64, 0u64);
        for p in &self.points {
            let (gp, gn) = (p.tp - tp, p.fp - fp);
            auc2 += u128::from(gn) * u128::from(2 * tp + gp);
            tp = p.tp;
            fp = p.fp;
        }
        auc2 as f64 / (2.0 * self.positives as f64 * self.negatives as f64)
    }

    /// Average precision (scikit-learn's definition).
    pub fn average_precision(&self) -> f64 {
        if self.positives == 0 {
            return f64::NAN;
        }
        let mut ap = 0.0;
        let mut prev_recall = 0.0;
        for p in &self.points {
            let recall = p.tp as f64 / self.positives as f64;
            ap += (recall - prev_recall) * p.tp as f64 / (p.tp + p.fp) as f64;
            prev_recall = recall;
        }
        ap
    }

    /// Confusion counts when alerting on `score >= threshold`.
    pub fn at_threshold(&self, threshold: f64) -> Confusion {
        // Points are sorted by descending threshold: count those at or above it.
        let n = self.points.partition_point(|p| p.threshold >= threshold);
        let (tp, fp) = match n {
            0 => (0, 0),
            n => (self.points[n - 1].tp, self.points[n - 1].fp),
        };
        Confusion {
            tp,
            fp,
            fn_: self.positives - tp,
            tn: self.negatives - fp,
        }
    }

    /// The highest threshold that alerts on at least `alerts` transactions (the lowest score
    /// when there are fewer), with its confusion counts; `None` on an empty curve.
    pub fn for_alerts(&self, alerts: u64) -> Option<(f64, Confusion)> {
        let i = self.points.partition_point(|p| p.tp + p.fp < alerts);
        let p = self.points.get(i).or(self.points.last())?;
        Some((
            p.threshold,
            Confusion {
                tp: p.tp,
                fp: p.fp,
                fn_: self.positives - p.tp,
                tn: self.negatives - p.fp,
            },
        ))
    }

    /// `(recall, precision)` per threshold, highest threshold first, leaving out points closer
    /// than `min_step` on both axes to the previous one kept (the last point is always kept).
    /// Empty without frauds.
    pub fn pr_curve(&self, min_step: f64) -> Vec<(f64, f64)> {
        if self.positives == 0 {
            return Vec::new();
        }
        thin(
            self.points.iter().map(|p| {
                (
                    p.tp as f64 / self.positives as f64,
                    p.tp as f64 / (p.tp + p.fp) as f64,
                )
            }),
            min_step,
        )
    }

    /// `(false positive rate, true positive rate)` per threshold from (0, 0), thinned as
    /// [`RankCurve::pr_curve`]. Empty without frauds or without genuine transactions.
    pub fn roc_curve(&self, min_step: f64) -> Vec<(f64, f64)> {
        if self.positives == 0 || self.negatives == 0 {
            return Vec::new();
        }
        thin(
            std::iter::once((0.0, 0.0)).chain(self.points.iter().map(|p| {
                (
                    p.fp as f64 / self.negatives as f64,
                    p.tp as f64 / self.positives as f64,
                )
            })),
            min_step,
        )
    }
}

fn thin(points: impl Iterator<Item = (f64, f64)>, min_step: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut pending = None;
    for p in points {
        let near = out.last().is_some_and(|&(x, y): &(f64, f64)| {
            (p.0 - x).abs() < min_step && (p.1 - y).abs() < min_step
        });
        if near {
            pending = Some(p);
        } else {
            out.push(p);
            pending = None;
        }
    }
    out.extend(pending);
    out
}

/// Average precision of `scores` against `truth` (see [`RankCurve::average_precision`]).
pub fn average_precision<S: Copy + Into<f64>>(scores: &[S], truth: &[bool]) -> f64 {
    RankCurve::new(scores, truth).average_precision()
}

/// ROC AUC of `scores` against `truth` (see [`RankCurve::roc_auc`]).
pub fn roc_auc<S: Copy + Into<f64>>(scores: &[S], truth: &[bool]) -> f64 {
    RankCurve::new(scores, truth).roc_auc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn curve(scores: &[f64], labels: &[u8]) -> RankCurve {
        let truth: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        RankCurve::new(scores, &truth)
    }

    #[test]
    fn auc_and_ap_match_sklearn() {
        // sklearn: roc_auc_score([0,0,1,1],[.1,.4,.35,.8]) = 0.75, average_precision 0.8333
        let c = curve(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]);
        assert_relative_eq!(c.roc_auc(), 0.75);
        assert_relative_eq!(
            c.average_precision(),
            0.833_333_333_333_333_4,
            epsilon = 1e-12
        );
        let c = curve(&[0.9, 0.8, 0.2, 0.1], &[1, 1, 0, 0]);
        assert_relative_eq!(c.roc_auc(), 1.0);
        assert_relative_eq!(c.average_precision(), 1.0);
        let c = curve(&[0.1, 0.2, 0.8, 0.9], &[1, 1, 0, 0]);
        assert_relative_eq!(c.roc_auc(), 0.0);
        // sklearn: average_precision_score([1,1,0,0],[.1,.2,.8,.9]) = 0.5*1/3 + 0.5*0.5
        assert_relative_eq!(c.average_precision(), 5.0 / 12.0, epsilon = 1e-12);
    }

    #[test]
    fn ties_form_one_threshold() {
        // sklearn: roc_auc 0.875, average_precision 0.8333...
        let c = curve(&[0.9, 0.5, 0.5, 0.1], &[1, 1, 0, 0]);
        assert_relative_eq!(c.roc_auc(), 0.875);
        assert_relative_eq!(
            c.average_precision(),
            1.0 / 2.0 + 0.5 * 2.0 / 3.0,
            epsilon = 1e-12
        );
        let c = curve(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]);
        assert_relative_eq!(c.roc_auc(), 0.5);
        assert_relative_eq!(c.average_precision(), 0.5);
        // -0.0 and 0.0 are one tie group.
        let c = curve(&[0.0, -0.0], &[0, 1]);
        assert_relative_eq!(c.roc_auc(), 0.5);
        assert_eq!(c.points().len(), 1);
    }

    #[test]
    fn f32_and_f64_scores_agree() {
        let s32 = [0.1f32, 0.4, 0.35, 0.8, 0.35];
        let s64: Vec<f64> = s32.iter().map(|&s| f64::from(s)).collect();
        let y = [false, false, true, true, false];
        assert_eq!(average_precision(&s32, &y), average_precision(&s64, &y));
        assert_eq!(roc_auc(&s32, &y), roc_auc(&s64, &y));
    }

    #[test]
    fn undefined_measures_are_nan() {
        let c = curve(&[0.1, 0.2], &[0, 0]);
        assert!(c.roc_auc().is_nan() && c.average_precision().is_nan());
        assert!(c.pr_curve(0.0).is_empty() && c.roc_curve(0.0).is_empty());
        let c = curve(&[0.1, 0.2], &[1, 1]);
        assert!(c.roc_auc().is_nan());
        assert_relative_eq!(c.average_precision(), 1.0);
        let c = curve(&[], &[]);
        assert!(c.for_alerts(1).is_none());
        assert_eq!(c.at_threshold(0.5), Confusion::default());
    }

    #[test]
    fn counts_at_a_threshold_alert_on_score_at_or_above_it() {
        let c = curve(&[0.9, 0.7, 0.7, 0.3, 0.1], &[1, 0, 1, 1, 0]);
        let at = |t| c.at_threshold(t);
        assert_eq!(
            at(0.7),
            Confusion {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
        assert_eq!(at(0.71).alerts(), 1);
        assert_eq!(at(0.0).alerts(), 5);
        assert_eq!(at(0.95).alerts(), 0);
        assert!(at(0.95).precision().is_nan());
        assert_relative_eq!(at(0.7).precision(), 2.0 / 3.0);
        assert_relative_eq!(at(0.7).recall(), 2.0 / 3.0);
        // Two alerts wanted: the tie at 0.7 makes three.
        let (t, counts) = c.for_alerts(2).expect("point");
        assert_eq!((t, counts.alerts()), (0.7, 3));
        let (t, counts) = c.for_alerts(99).expect("point");
        assert_eq!((t, counts.alerts()), (0.1, 5));
    }

    #[test]
    fn curves_run_from_the_highest_threshold() {
        let c = curve(&[0.9, 0.7, 0.3, 0.1], &[1, 0, 1, 0]);
        assert_eq!(
            c.pr_curve(0.0),
            vec![(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0), (1.0, 0.5)]
        );
        assert_eq!(
            c.roc_curve(0.0),
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // Thinning keeps the first and last points.
        let thinned = c.roc_curve(2.0);
        assert_eq!(thinned, vec![(0.0, 0.0), (1.0, 1.0)]);
    }

    proptest::proptest! {
        /// The AUC from the curve equals the pairwise definition.
        #[test]
        fn auc_is_the_share_of_correctly_ranked_pairs(
            rows in proptest::collection::vec((0u8..6, proptest::bool::ANY), 1..40)
        ) {
            let scores: Vec<f64> = rows.iter().map(|r| f64::from(r.0) / 5.0).collect();
            let truth: Vec<bool> = rows.iter().map(|r| r.1).collect();
            let (mut pairs, mut won) = (0.0, 0.0);
            for (i, &p) in scores.iter().enumerate() {
                for (j, &n) in scores.iter().enumerate() {
                    if truth[i] && !truth[j] {
                        pairs += 1.0;
                        won += if p > n { 1.0 } else if p == n { 0.5 } else { 0.0 };
                    }
                }
            }
            let auc = roc_auc(&scores, &truth);
            if pairs == 0.0 {
                proptest::prop_assert!(auc.is_nan());
            } else {
                proptest::prop_assert!((auc - won / pairs).abs() < 1e-12);
            }
        }
    }
}
