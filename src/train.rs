//! `fraudstream train`: replay the file through the worker's code, split it in time, fit, and
//! report training, validation and test average precision side by side.
//!
//! # Validation that predicts deployment
//! A deployed model is trained on labelled data that ends a label delay `D` before it scores.
//! Supervised training reproduces that: with a training range `[from, to)` of length `L`,
//! validation period length `V = min(L, 7 days)`, the candidates (hyperparameters, number of
//! trees) are fitted on `[from − D − V, to − D − V)` and validated on `[to − V, to)`, a gap of
//! `D` later, and the threshold is chosen on those validation scores; the chosen configuration
//! is then refitted on `[from, to)`. When the file has too little history before `from`, the
//! split falls inside the range instead: fit on `[from, to − D − V')`, validate on
//! `[to − V', to)` with `V' = L / 4`. Rows are never interleaved between fitting and validation.

use std::path::PathBuf;

use crate::config::{InputConfig, StateConfig};
use crate::decode::format_ts;
use crate::features::FeatureVector;
use crate::model::supervised::{self, average_precision, Kind, Split, ThresholdTarget};
use crate::model::training::TrainMeta;
use crate::model::{iforest, kmeans, FitError, Model, ModelBody, ModelError, Predict};
use crate::replay::{self, ReplayError, ReplaySummary};
use crate::state::feedback::MAX_DELAY_DAYS;

const DAY_MS: i64 = 86_400_000;

/// Model kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Isolation forest (unsupervised default).
    Iforest,
    /// k-means (unsupervised).
    Kmeans,
    /// A supervised kind.
    Supervised(Kind),
    /// The recommended supervised model: gradient-boosted trees and logistic regression are
    /// both fitted and validated; the one with the higher validation AP is kept.
    Auto,
}

impl ModelKind {
    /// True for the kinds that need labels.
    pub fn is_supervised(self) -> bool {
        matches!(self, ModelKind::Supervised(_) | ModelKind::Auto)
    }
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Transactions file.
    pub transactions: PathBuf,
    /// Labels file.
    pub labels: Option<PathBuf>,
    /// Label delay, ms.
    pub label_delay_ms: i64,
    /// Training range start, epoch ms.
    pub from_ms: i64,
    /// Training range end (exclusive).
    pub to_ms: i64,
    /// Test range, measured after training.
    pub test: Option<(i64, i64)>,
    /// Kind.
    pub kind: ModelKind,
    /// Threshold target.
    pub target: ThresholdTarget,
    /// Amount and attributes only.
    pub attributes_only: bool,
    /// k-means clusters.
    pub clusters: usize,
    /// Windowed features an isolation forest reads (default `iforest::ANOMALY_INPUTS`).
    pub anomaly_inputs: Option<Vec<String>>,
    /// Seed.
    pub seed: u64,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Arguments that do not fit together (exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// Reading the files.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Fitting.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What training did.
#[derive(Debug)]
pub struct TrainReport {
    /// The model.
    pub body: ModelBody,
    /// Training rows and their frauds.
    pub rows: usize,
    /// Frauds among them.
    pub frauds: usize,
    /// Replay counts.
    pub summary: ReplaySummary,
    /// Attributes used.
    pub attributes: usize,
    /// AP of the final model on its training rows (with labels).
    pub train_ap: Option<f64>,
    /// AP on the validation period (supervised).
    pub validation_ap: Option<f64>,
    /// How the split was made (supervised).
    pub scheme: Option<String>,
    /// (rows, frauds, AP) on the test range.
    pub test: Option<(usize, usize, f64)>,
}

impl TrainReport {
    /// The side-by-side table `train` prints.
    pub fn quality_table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
        let mut s = String::from("average precision:  train  validation  test\n");
        s.push_str(&format!(
            "                    {:>5}  {:>10}  {:>4}",
            f(self.train_ap),
            f(self.validation_ap),
            f(self.test.map(|t| t.2))
        ));
        if let (Some(t), Some(v)) = (self.train_ap, self.validation_ap) {
            if t > 0.99 && v < 0.8 * t {
                s.push_str("\nwarning: training AP near 1 with validation far below: the model fits its training rows much better than new data");
            }
        }
        s
    }
}

fn check(o: &TrainOptions) -> Result<i64, TrainError> {
    let bad = |m: String| Err(TrainError::Invalid(m));
    if o.from_ms >= o.to_ms {
        return bad(format!(
            "--from {} must be before --to {}",
            format_ts(o.from_ms),
            format_ts(o.to_ms)
        ));
    }
    if o.kind.is_supervised() && o.labels.is_none() {
        return bad("a supervised --kind needs --labels".into());
    }
    match o.target {
        ThresholdTarget::AlertRate(r) if !(r > 0.0 && r < 1.0) => {
            return bad(format!("--alert-rate {r} must be in (0, 1)"))
        }
        ThresholdTarget::Precision(p) if !(p > 0.0 && p <= 1.0) => {
            return bad(format!("--precision {p} must be in (0, 1]"))
        }
        ThresholdTarget::Precision(_) if !o.kind.is_supervised() => {
            return bad("--precision needs a supervised --kind (and --labels)".into())
        }
        _ => {}
    }
    if o.label_delay_ms < 0 || o.label_delay_ms > MAX_DELAY_DAYS * DAY_MS {
        return bad(format!(
            "--label-delay must be in 0d..={MAX_DELAY_DAYS}d, got {} ms",
            o.label_delay_ms
        ));
    }
    if let Some((a, b)) = o.test {
        if a >= b {
            return bad(format!(
                "--test-from {} must be before --test-to {}",
                format_ts(a),
                format_ts(b)
            ));
        }
        if a < o.to_ms {
            return bad(format!(
                "--test-from {} must not be before --to {}",
                format_ts(a),
                format_ts(o.to_ms)
            ));
        }
    }
    if o.clusters == 0 {
        return bad("--clusters must be at least 1".into());
    }
    // Checked here, before the files are read (iforest::inputs_for checks again).
    let unknown = o.anomaly_inputs.iter().flatten().find(|n| {
        !crate::features::FEATURES
            .iter()
            .any(|d| d.name == n.as_str())
    });
    if let Some(name) = unknown {
        return bad(FitError::UnknownInput { name: name.clone() }.to_string());
    }
    // Whole days, rounded up: the fraud rates read whole days.
    Ok((o.label_delay_ms + DAY_MS - 1) / DAY_MS)
}

fn split_for(
    tr: &replay::TrainingRows,
    o: &TrainOptions,
    delay_ms: i64,
) -> Result<Split, TrainError> {
    let len = o.to_ms - o.from_ms;
    let frauds = |r: &std::ops::Range<usize>| tr.fraud[r.clone()].iter().filter(|f| **f).count();
    let v = len.min(7 * DAY_MS);
    let shift = delay_ms + v;
    let shifted = Split {
        fit: tr.range(o.from_ms - shift, o.to_ms - shift),
        val: tr.range(o.to_ms - v, o.to_ms),
        train: tr.range(o.from_ms, o.to_ms),
        describe: format!(
            "fit [{}, {}), gap {} d, validate [{}, {})",
            format_ts(o.from_ms - shift),
            format_ts(o.to_ms - shift),
            delay_ms / DAY_MS,
            format_ts(o.to_ms - v),
            format_ts(o.to_ms)
        ),
    };
    // Enough history before `from` for the shifted range (90% of its length)?
    let first = tr.ts.first().copied().unwrap_or(i64::MAX);
    if first <= o.from_ms - shift + len / 10 && frauds(&shifted.fit) >= 5 {
        return Ok(shifted);
    }
    let v = len / 4;
    let fit_end = o.to_ms - v - delay_ms;
    if fit_end <= o.from_ms {
        // No room inside the range either: the shifted split stands, and training says how
        // few frauds it holds.
        return Ok(shifted);
    }
    Ok(Split {
        fit: tr.range(o.from_ms, fit_end),
        val: tr.range(o.to_ms - v, o.to_ms),
        train: tr.range(o.from_ms, o.to_ms),
        describe: format!(
            "fit [{}, {}), gap {} d, validate [{}, {}) (inside the range: too little history before it)",
            format_ts(o.from_ms),
            format_ts(fit_end),
            delay_ms / DAY_MS,
            format_ts(o.to_ms - v),
            format_ts(o.to_ms)
        ),
    })
}

/// Trains as `o` says.
pub fn train(
    o: &TrainOptions,
    state: &StateConfig,
    input: &InputConfig,
) -> Result<TrainReport, TrainError> {
    let delay_days = check(o)?;
    let delay_ms = delay_days * DAY_MS;
    let collect_from = if o.kind.is_supervised() {
        o.from_ms - delay_ms - (o.to_ms - o.from_ms).min(7 * DAY_MS)
    } else {
        o.from_ms
    };
    let stop = o.test.map_or(o.to_ms, |(_, b)| b.max(o.to_ms));
    let tr = replay::training_rows(
        &o.transactions,
        o.labels.as_deref(),
        o.label_delay_ms,
        state,
        input,
        delay_days,
        collect_from,
        stop,
    )?;
    let from_s = format_ts(o.from_ms);
    let to_s = format_ts(o.to_ms);
    let meta = TrainMeta {
        attributes: &tr.attributes,
        from: &from_s,
        to: &to_s,
        alert_rate: match o.target {
            ThresholdTarget::AlertRate(r) => r,
            ThresholdTarget::Precision(_) => 0.005,
        },
        seed: o.seed,
        attributes_only: o.attributes_only,
        feedback_delay_days: delay_days,
    };
    let train_range = tr.range(o.from_ms, o.to_ms);
    let train_rows: &[FeatureVector] = &tr.rows[train_range.clone()];
    let (body, train_ap, validation_ap, scheme) = match o.kind {
        ModelKind::Iforest => (
            iforest::train(train_rows, &meta, o.anomaly_inputs.as_deref())?,
            None,
            None,
            None,
        ),
        ModelKind::Kmeans => (
            kmeans::train(train_rows, o.clusters, &meta)?,
            None,
            None,
            None,
        ),
        ModelKind::Supervised(kind) => {
            let split = split_for(&tr, o, delay_ms)?;
            let scheme = split.describe.clone();
            let (body, q) = supervised::train(kind, &tr.rows, &tr.fraud, &split, &meta, o.target)?;
            (body, Some(q.train_ap), Some(q.validation_ap), Some(scheme))
        }
        ModelKind::Auto => {
            let split = split_for(&tr, o, delay_ms)?;
            let scheme = split.describe.clone();
            let mut best: Option<(ModelBody, supervised::Quality)> = None;
            for kind in [Kind::Trees, Kind::Logistic] {
                let (body, q) =
                    supervised::train(kind, &tr.rows, &tr.fraud, &split, &meta, o.target)?;
                tracing::info!(
                    model = kind.name(),
                    validation_ap = q.validation_ap,
                    "Recommended model candidate."
                );
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| q.validation_ap > b.validation_ap)
                {
                    best = Some((body, q));
                }
            }
            let (body, q) = best.ok_or_else(|| TrainError::Invalid("no candidate".into()))?;
            let kept = body.params.kind();
            (
                body,
                Some(q.train_ap),
                Some(q.validation_ap),
                Some(format!(
                    "{scheme}; kept {} (higher validation AP than the other of trees and logistic)",
                    kept
                )),
            )
        }
    };
    let model = Model::from_body(body.clone(), o.transactions.as_path())?;
    let has_labels = o.labels.is_some();
    let ap_of = |r: std::ops::Range<usize>| -> f64 {
        let s: Vec<f32> = tr.rows[r.clone()].iter().map(|x| model.score(x)).collect();
        average_precision(&s, &tr.fraud[r])
    };
    let train_ap = train_ap.or_else(|| has_labels.then(|| ap_of(train_range.clone())));
    let test = match (o.test, has_labels) {
        (Some((a, b)), true) => {
            let r = tr.range(a, b);
            let n = r.len();
            let f = tr.fraud[r.clone()].iter().filter(|v| **v).count();
            Some((n, f, ap_of(r)))
        }
        _ => None,
    };
    Ok(TrainReport {
        rows: train_range.len(),
        frauds: tr.fraud[train_range].iter().filter(|f| **f).count(),
        attributes: tr.attributes.len(),
        summary: tr.summary,
        body,
        train_ap,
        validation_ap,
        scheme,
        test,
    })
}
