//! Offline evaluation of model scores against fraud labels (`fraudstream eval`).
//!
//! The protocol follows Le Borgne et al., *Reproducible Machine Learning for
//! Credit Card Fraud Detection – Practical Handbook*:
//!
//! * only scored transactions with `from <= ts < to` are evaluated;
//! * accounts whose compromise was already **known** before `from` are removed
//!   from the test set, because in production their transactions would be
//!   blocked anyway. A fraud label becomes known at its `reported_at`, or, when
//!   that is absent, at the labelled transaction's `ts + label_delay`. A label
//!   with neither (no `reported_at`, transaction not in the scores file) is
//!   ignored for this purpose. Without `from` nothing is removed;
//! * transaction-level measures ([`crate::ranking`]): ROC AUC (ties get average
//!   ranks), average precision (scikit-learn definition, tied scores form one
//!   threshold), and confusion counts, precision and recall of the `alert` column;
//! * card precision@k: for each UTC day, accounts are ranked by their maximum
//!   score of the day and the share of compromised accounts (at least one
//!   fraudulent transaction that day) among the top k is taken; the result is
//!   the mean over the days that have transactions.
//!
//! Inputs (`input`): a scores CSV (header `tx_id,score,alert,ts,account_id`,
//! optionally `amount`, in any column order, RFC 4180 quoting, read with the `csv`
//! crate) and a labels file read by the worker's own decoder (`.jsonl` or
//! `.jsonl.gz`, [`crate::decode::Label`]). A scored transaction without a fraud
//! label is genuine; `fraud:false` lines mean genuine. If one transaction has
//! several fraud labels, the earliest `reported_at` counts. The optional model
//! file (`--model`) gives the threshold, the version and the training range.
//!
//! Measures are in `measures`, the `--report` files in `report` (page) and `charts` (SVG).

mod charts;
mod input;
mod measures;
mod report;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat};

pub use input::ModelInfo;
use measures::AnalyseInput;

pub use crate::ranking::Confusion;

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Options of an evaluation run (`--from`, `--to`, `--label-delay`, `--k`, `--model`).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Inclusive start of the evaluation window (epoch milliseconds, UTC).
    /// Also the "test time" before which known-compromised accounts are removed.
    pub from_ms: Option<i64>,
    /// Exclusive end of the evaluation window (epoch milliseconds, UTC).
    pub to_ms: Option<i64>,
    /// Delay after a fraudulent transaction at which its label becomes known,
    /// used when the label has no `reported_at`.
    pub label_delay_ms: i64,
    /// The k of card precision@k.
    pub k: usize,
    /// The model that wrote the scores: threshold, version, training range.
    pub model: Option<ModelInfo>,
}

impl Default for EvalOptions {
    /// No window, a 7-day label delay and k = 100, as in the handbook.
    fn default() -> Self {
        Self {
            from_ms: None,
            to_ms: None,
            label_delay_ms: 7 * DAY_MS,
            k: 100,
            model: None,
        }
    }
}

/// The evaluation window (RFC 3339): the bounds asked for and the first and last evaluated
/// transactions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// `--from` (inclusive), if given.
    pub from: Option<String>,
    /// `--to` (exclusive), if given.
    pub to: Option<String>,
    /// Time of the first evaluated transaction.
    pub first: Option<String>,
    /// Time of the last evaluated transaction.
    pub last: Option<String>,
}

/// Amounts of the frauds evaluated (needs the scores CSV's `amount` column).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Amounts {
    /// All frauds.
    pub fraud: f64,
    /// Frauds alerted.
    pub caught: f64,
    /// Frauds not alerted.
    pub missed: f64,
}

/// Result of an evaluation. Undefined metrics (e.g. AUC without positives) are
/// `NaN` and serialise as JSON `null`. Serialised as `metrics.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    /// Transactions evaluated (in the window, after removal).
    pub transactions: u64,
    /// Fraudulent transactions among them.
    pub positives: u64,
    /// Accounts with transactions in the window that were already known to be
    /// compromised before `from`, and were therefore removed.
    pub removed_accounts: u64,
    /// Transactions in the window that belonged to removed accounts.
    pub removed_transactions: u64,
    /// Area under the ROC curve (ties count one half).
    pub roc_auc: f64,
    /// Average precision, scikit-learn definition.
    pub average_precision: f64,
    /// Transactions with `alert = 1`.
    pub alerts: u64,
    /// Share of alerts that are fraud.
    pub precision_at_threshold: f64,
    /// Share of frauds that were alerted.
    pub recall_at_threshold: f64,
    /// Mean over days of the daily card precision@k.
    pub card_precision_at_k: f64,
    /// The k used for card precision@k.
    pub k: usize,
    /// Number of UTC days with evaluated transactions.
    pub days: u64,
    /// The alert threshold: the model's (`--model`), else the lowest alerted score; `null`
    /// without either.
    pub threshold: Option<f64>,
    /// Where `threshold` comes from.
    pub threshold_source: String,
    /// The model's version (`--model`).
    pub model_version: Option<String>,
    /// The window evaluated.
    pub window: Window,
    /// Confusion counts of the alert column: tp, fp, fn, tn.
    pub counts: Confusion,
    /// Alerts per UTC day with transactions.
    pub alerts_per_day: f64,
    /// Fraud amounts caught and missed (`null` without an amount column).
    pub amounts: Option<Amounts>,
    /// Problems with the evaluation itself (e.g. the window overlaps the training range).
    pub warnings: Vec<String>,
}

/// Errors of [`evaluate`].
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A malformed line in an input file (1-based line number).
    #[error("{path}:{line}: {detail}")]
    Parse {
        /// The offending file.
        path: PathBuf,
        /// 1-based line number (first line of a multi-line CSV record).
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// Reading an input or writing a report file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Drawing a chart failed.
    #[error("chart {chart}: {detail}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// Nothing left to evaluate (empty file, empty window, all removed).
    #[error("nothing to evaluate: {0}")]
    Empty(String),
}

/// Evaluates `scores` (CSV) against `labels` (JSON lines) under `opts`.
///
/// With `report_dir`, the directory is created if needed and `report.html` (a
/// self-contained page with inline SVG charts) and `metrics.json` (the
/// serialised [`EvalReport`]) are written into it, replacing earlier ones.
///
/// Card precision@k divides by `min(k, accounts active that day)` rather than
/// by k, so that a day with few accounts is not penalised for accounts that do
/// not exist; accounts tied on score at the k-th place are counted in
/// expectation (as if ties were broken at random), which keeps the result
/// independent of input order. With `k = 0` it is `NaN`.
pub fn evaluate(
    scores: &Path,
    labels: &Path,
    opts: &EvalOptions,
    report_dir: Option<&Path>,
) -> Result<EvalReport, EvalError> {
    let mut frauds = input::read_labels(labels)?;
    let mut scored = input::read_scores(scores, &mut frauds, opts)?;
    if scored.total_rows == 0 {
        return Err(EvalError::Empty(format!(
            "{} has no data rows",
            scores.display()
        )));
    }
    if scored.rows.is_empty() {
        return Err(EvalError::Empty(format!(
            "none of the {} scored transactions is in the window {}",
            scored.total_rows,
            describe_window(opts)
        )));
    }

    let removed = input::known_compromised(&frauds, &scored.accounts, opts);
    drop(frauds);
    scored.accounts = Default::default();
    let removed_accounts = removed.iter().filter(|&&r| r).count() as u64;
    let in_window = scored.rows.len();
    scored.rows.retain(|r| !removed[r.account as usize]);
    let removed_transactions = (in_window - scored.rows.len()) as u64;
    if scored.rows.is_empty() {
        return Err(EvalError::Empty(format!(
            "all {in_window} transactions in the window belong to the \
             {removed_accounts} accounts already known to be compromised"
        )));
    }

    let first = scored.rows.iter().map(|r| r.ts_ms).min();
    let last = scored.rows.iter().map(|r| r.ts_ms).max();
    let window = Window {
        from: opts.from_ms.map(fmt_time),
        to: opts.to_ms.map(fmt_time),
        first: first.map(fmt_time),
        last: last.map(fmt_time),
    };
    let analysis = measures::analyse(
        &mut scored,
        AnalyseInput {
            k: opts.k,
            removed_accounts,
            removed_transactions,
            window,
            model: opts.model.as_ref(),
        },
    );
    if let Some(dir) = report_dir {
        report::write(dir, &analysis, scores, labels, opts)?;
    }
    Ok(analysis.report)
}

impl EvalReport {
    /// A readable multi-line summary for stdout.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let share = if self.transactions > 0 {
            100.0 * self.positives as f64 / self.transactions as f64
        } else {
            f64::NAN
        };
        let _ = writeln!(
            s,
            "model                    {}",
            self.model_version
                .as_deref()
                .unwrap_or("n/a (pass --model)")
        );
        let _ = writeln!(
            s,
            "window                   [{}, {})",
            self.window
                .from
                .as_deref()
                .or(self.window.first.as_deref())
                .unwrap_or("-"),
            self.window.to.as_deref().unwrap_or("end")
        );
        let _ = writeln!(s, "transactions evaluated   {}", self.transactions);
        let _ = writeln!(
            s,
            "frauds (positives)       {} ({})",
            self.positives,
            fmt_pct(share)
        );
        let _ = writeln!(
            s,
            "removed (known compromised before --from): {} accounts, {} transactions",
            self.removed_accounts, self.removed_transactions
        );
        let _ = writeln!(s, "ROC AUC                  {}", fmt_metric(self.roc_auc));
        let _ = writeln!(
            s,
            "average precision        {}",
            fmt_metric(self.average_precision)
        );
        let _ = writeln!(
            s,
            "threshold                {} ({})",
            self.threshold.map_or("n/a".to_owned(), fmt_score),
            self.threshold_source
        );
        let c = &self.counts;
        let _ = writeln!(
            s,
            "alerts                   {} ({} per day): tp {} fp {} fn {} tn {}",
            self.alerts,
            fmt_rate(self.alerts_per_day),
            c.tp,
            c.fp,
            c.fn_,
            c.tn
        );
        let _ = writeln!(
            s,
            "precision at threshold   {}",
            fmt_metric(self.precision_at_threshold)
        );
        let _ = writeln!(
            s,
            "recall at threshold      {}",
            fmt_metric(self.recall_at_threshold)
        );
        if let Some(a) = &self.amounts {
            let _ = writeln!(
                s,
                "fraud amount caught      {} of {} ({} missed)",
                fmt_amount(a.caught),
                fmt_amount(a.fraud),
                fmt_amount(a.missed)
            );
        }
        let _ = writeln!(
            s,
            "card precision@{:<9} {} (mean over {} days)",
            self.k,
            fmt_metric(self.card_precision_at_k),
            self.days
        );
        s
    }
}

pub(crate) fn fmt_metric(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn fmt_score(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn fmt_pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}%")
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn fmt_rate(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn fmt_amount(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn fmt_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

pub(crate) fn fmt_day(day: i64) -> String {
    DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day {day}"))
}

pub(crate) fn fmt_duration(ms: i64) -> String {
    if ms != 0 && ms % DAY_MS == 0 {
        format!("{}d", ms / DAY_MS)
    } else if ms != 0 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{ms}ms")
    }
}

pub(crate) fn describe_window(opts: &EvalOptions) -> String {
    let from = opts.from_ms.map_or("-∞".to_owned(), fmt_time);
    let to = opts.to_ms.map_or("+∞".to_owned(), fmt_time);
    format!("[{from}, {to})")
}

#[cfg(test)]
mod tests;
