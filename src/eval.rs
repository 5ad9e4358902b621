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
//! * transaction-level metrics: ROC AUC (ties get average ranks), average
//!   precision (scikit-learn definition, tied scores form one threshold), and
//!   precision/recall of the `alert` column;
//! * card precision@k: for each UTC day, accounts are ranked by their maximum
//!   score of the day and the share of compromised accounts (at least one
//!   fraudulent transaction that day) among the top k is taken; the result is
//!   the mean over the days that have transactions.
//!
//! Inputs are a scores CSV (header `tx_id,score,alert,ts,account_id`, in any
//! column order, RFC 4180 quoting) and a JSON-lines labels file
//! (`{"tx_id":"t9","account_id":"c42","fraud":true,"reported_at":...}`).
//! A scored transaction without a fraud label is genuine; `fraud:false` lines
//! are accepted and mean genuine. If one transaction has several labels and any
//! of them says fraud, it is fraud (the earliest `reported_at` counts).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat};

const DAY_MS: i64 = 86_400_000;
const HIST_BINS: usize = 50;
const REQUIRED_COLUMNS: [&str; 5] = ["tx_id", "score", "alert", "ts", "account_id"];
const MAX_FIELDS: usize = 1024;

/// Options of an evaluation run (`--from`, `--to`, `--label-delay`, `--k`).
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
}

impl Default for EvalOptions {
    /// No window, a 7-day label delay and k = 100, as in the handbook.
    fn default() -> Self {
        Self {
            from_ms: None,
            to_ms: None,
            label_delay_ms: 7 * DAY_MS,
            k: 100,
        }
    }
}

/// Result of an evaluation. Undefined metrics (e.g. AUC without positives) are
/// `NaN` and serialise as JSON `null`.
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
    /// Nothing left to evaluate (empty file, empty window, all removed).
    #[error("nothing to evaluate: {0}")]
    Empty(String),
}

/// Evaluates `scores` (CSV) against `labels` (JSON lines) under `opts`.
///
/// With `report_dir`, the directory is created and `report.html` (a
/// self-contained page with inline SVG charts) and `metrics.json` (the
/// serialised [`EvalReport`]) are written into it.
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
    let mut frauds = read_labels(labels)?;
    let Scored {
        mut rows,
        accounts,
        total_rows,
    } = read_scores(scores, &mut frauds, opts)?;
    if total_rows == 0 {
        return Err(EvalError::Empty(format!(
            "{} has no data rows",
            scores.display()
        )));
    }
    if rows.is_empty() {
        return Err(EvalError::Empty(format!(
            "none of the {total_rows} scored transactions is in the window {}",
            describe_window(opts)
        )));
    }

    let removed = known_compromised(&frauds, &accounts, opts);
    drop(frauds);
    drop(accounts);
    let removed_accounts = removed.iter().filter(|&&r| r).count() as u64;
    let in_window = rows.len();
    rows.retain(|r| !removed[r.account as usize]);
    let removed_transactions = (in_window - rows.len()) as u64;
    if rows.is_empty() {
        return Err(EvalError::Empty(format!(
            "all {in_window} transactions in the window belong to the \
             {removed_accounts} accounts already known to be compromised"
        )));
    }

    let analysis = analyse(&mut rows, opts.k, removed_accounts, removed_transactions);
    if let Some(dir) = report_dir {
        write_report(dir, &analysis, scores, labels, opts)?;
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
        let _ = writeln!(s, "alerts                   {}", self.alerts);
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

// ---------------------------------------------------------------------------
// Input

/// A fraud label, keyed by tx_id.
struct FraudLabel {
    /// Account of the label, or of the scored transaction if the label has none.
    account: Option<String>,
    /// Earliest `reported_at` among the fraud labels of this transaction.
    reported_ms: Option<i64>,
    /// Timestamp of the labelled transaction in the scores file, if present.
    tx_ts_ms: Option<i64>,
}

type FraudLabels = HashMap<String, FraudLabel>;

#[derive(serde::Deserialize)]
struct LabelLine {
    tx_id: String,
    #[serde(default)]
    account_id: Option<String>,
    fraud: bool,
    #[serde(default)]
    reported_at: Option<serde_json::Value>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_labels(path: &Path) -> Result<FraudLabels, EvalError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut out = FraudLabels::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_error(path))? == 0 {
            break;
        }
        line += 1;
        let parse_error = |detail: String| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        };
        let text = std::str::from_utf8(&buf)
            .map_err(|_| parse_error("line is not valid UTF-8".to_owned()))?
            .trim_start_matches('\u{feff}')
            .trim();
        if text.is_empty() {
            continue;
        }
        let label: LabelLine =
            serde_json::from_str(text).map_err(|e| parse_error(format!("invalid label: {e}")))?;
        let reported = match &label.reported_at {
            None => None,
            Some(v) => reported_ms(v).map_err(parse_error)?,
        };
        if !label.fraud {
            continue;
        }
        let entry = out.entry(label.tx_id).or_insert(FraudLabel {
            account: None,
            reported_ms: None,
            tx_ts_ms: None,
        });
        if entry.account.is_none() {
            entry.account = label.account_id;
        }
        entry.reported_ms = match (entry.reported_ms, reported) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(out)
}

fn reported_ms(v: &serde_json::Value) -> Result<Option<i64>, String> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| format!("reported_at {n} is not usable as epoch milliseconds")),
        Value::String(s) => parse_ts(s).map(Some),
        _ => Err("reported_at must be an RFC 3339 string or epoch milliseconds".to_owned()),
    }
}

fn parse_ts(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("invalid RFC 3339 timestamp {:?}: {e}", clip(s)))
}

/// Shortens a value quoted in an error message.
fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// One evaluated transaction.
#[derive(Debug, Clone, Copy)]
struct Row {
    ts_ms: i64,
    score: f64,
    account: u32,
    alert: bool,
    fraud: bool,
}

impl Row {
    fn day(&self) -> i64 {
        self.ts_ms.div_euclid(DAY_MS)
    }
}

struct Scored {
    /// Rows inside the window.
    rows: Vec<Row>,
    /// Account id → index, for accounts with rows inside the window.
    accounts: HashMap<String, u32>,
    /// Data rows in the file, inside the window or not.
    total_rows: u64,
}

struct Columns {
    tx_id: usize,
    score: usize,
    alert: usize,
    ts: usize,
    account_id: usize,
    count: usize,
}

struct ParsedRow<'a> {
    tx_id: &'a str,
    account: &'a str,
    score: f64,
    alert: bool,
    ts_ms: i64,
}

fn read_scores(
    path: &Path,
    frauds: &mut FraudLabels,
    opts: &EvalOptions,
) -> Result<Scored, EvalError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut rec = CsvRecords::new(path, BufReader::with_capacity(1 << 16, file));
    let Some(header_line) = rec.next_record()? else {
        return Err(EvalError::Empty(format!("{} is empty", path.display())));
    };
    let cols = header_columns(&rec).map_err(|detail| EvalError::Parse {
        path: path.to_path_buf(),
        line: header_line,
        detail,
    })?;

    let mut rows = Vec::new();
    let mut accounts: HashMap<String, u32> = HashMap::new();
    let mut total_rows = 0u64;
    while let Some(line) = rec.next_record()? {
        let row = parse_row(&rec, &cols).map_err(|detail| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        })?;
        total_rows += 1;
        let fraud = match frauds.get_mut(row.tx_id) {
            Some(label) => {
                label.tx_ts_ms = Some(label.tx_ts_ms.map_or(row.ts_ms, |t| t.min(row.ts_ms)));
                if label.account.is_none() {
                    label.account = Some(row.account.to_owned());
                }
                true
            }
            None => false,
        };
        let in_window =
            opts.from_ms.is_none_or(|f| row.ts_ms >= f) && opts.to_ms.is_none_or(|t| row.ts_ms < t);
        if !in_window {
            continue;
        }
        let account = match accounts.get(row.account) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(accounts.len()).map_err(|_| EvalError::Parse {
                    path: path.to_path_buf(),
                    line,
                    detail: "too many distinct accounts".to_owned(),
                })?;
                accounts.insert(row.account.to_owned(), id);
                id
            }
        };
        rows.push(Row {
            ts_ms: row.ts_ms,
            score: row.score,
            account,
            alert: row.alert,
            fraud,
        });
    }
    Ok(Scored {
        rows,
        accounts,
        total_rows,
    })
}

fn header_columns<R: BufRead>(rec: &CsvRecords<'_, R>) -> Result<Columns, String> {
    let mut found = [None; REQUIRED_COLUMNS.len()];
    for i in 0..rec.len() {
        let name = std::str::from_utf8(rec.field(i))
            .map_err(|_| "header is not valid UTF-8".to_owned())?
            .trim_start_matches('\u{feff}')
            .trim();
        if let Some(pos) = REQUIRED_COLUMNS.iter().position(|c| *c == name) {
            if found[pos].is_some() {
                return Err(format!("header has column {name:?} twice"));
            }
            found[pos] = Some(i);
        }
    }
    let col = |pos: usize| {
        found[pos].ok_or_else(|| {
            format!(
                "header lacks column {:?} (expected {})",
                REQUIRED_COLUMNS[pos],
                REQUIRED_COLUMNS.join(",")
            )
        })
    };
    Ok(Columns {
        tx_id: col(0)?,
        score: col(1)?,
        alert: col(2)?,
        ts: col(3)?,
        account_id: col(4)?,
        count: rec.len(),
    })
}

fn parse_row<'a, R: BufRead>(
    rec: &'a CsvRecords<'_, R>,
    cols: &Columns,
) -> Result<ParsedRow<'a>, String> {
    if rec.len() != cols.count {
        return Err(format!(
            "expected {} fields, found {}",
            cols.count,
            rec.len()
        ));
    }
    let text = |i: usize, name: &str| {
        std::str::from_utf8(rec.field(i)).map_err(|_| format!("{name} is not valid UTF-8"))
    };
    let tx_id = text(cols.tx_id, "tx_id")?;
    if tx_id.is_empty() {
        return Err("empty tx_id".to_owned());
    }
    let account = text(cols.account_id, "account_id")?;
    if account.is_empty() {
        return Err("empty account_id".to_owned());
    }
    let raw = text(cols.score, "score")?;
    let score: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("score {:?} is not a number", clip(raw)))?;
    if !(0.0..=1.0).contains(&score) {
        return Err(format!("score {:?} is outside [0, 1]", clip(raw)));
    }
    // `+ 0.0` turns -0.0 into 0.0 so that both sort as one tie group.
    let score = score + 0.0;
    let raw = text(cols.alert, "alert")?;
    let alert = match raw.trim() {
        "0" | "false" => false,
        "1" | "true" => true,
        _ => return Err(format!("alert must be 0 or 1, found {:?}", clip(raw))),
    };
    let ts_ms = parse_ts(text(cols.ts, "ts")?).map_err(|e| format!("ts: {e}"))?;
    Ok(ParsedRow {
        tx_id,
        account,
        score,
        alert,
        ts_ms,
    })
}

/// Minimal RFC 4180 record reader that reuses its buffers between records.
struct CsvRecords<'p, R> {
    path: &'p Path,
    reader: R,
    buf: Vec<u8>,
    fields: Vec<Vec<u8>>,
    len: usize,
    line: u64,
}

/// End of a line's content, without its `\n` or `\r\n`.
fn content_end(buf: &[u8]) -> usize {
    let mut end = buf.len();
    if end > 0 && buf[end - 1] == b'\n' {
        end -= 1;
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

impl<'p, R: BufRead> CsvRecords<'p, R> {
    fn new(path: &'p Path, reader: R) -> Self {
        Self {
            path,
            reader,
            buf: Vec::with_capacity(256),
            fields: Vec::new(),
            len: 0,
            line: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn field(&self, i: usize) -> &[u8] {
        &self.fields[i]
    }

    /// Appends the next physical line to `buf`; returns its byte count.
    fn read_line(&mut self) -> Result<usize, EvalError> {
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(io_error(self.path))?;
        if n > 0 {
            self.line += 1;
        }
        Ok(n)
    }

    fn parse_error(&self, line: u64, detail: &str) -> EvalError {
        EvalError::Parse {
            path: self.path.to_path_buf(),
            line,
            detail: detail.to_owned(),
        }
    }

    fn new_field(&mut self, start: u64) -> Result<usize, EvalError> {
        if self.len >= MAX_FIELDS {
            return Err(self.parse_error(start, "too many fields"));
        }
        if self.len == self.fields.len() {
            self.fields.push(Vec::new());
        }
        let idx = self.len;
        self.fields[idx].clear();
        self.len += 1;
        Ok(idx)
    }

    /// Reads the next non-blank record into the field buffers and returns the
    /// line number it starts on, or `None` at end of input.
    fn next_record(&mut self) -> Result<Option<u64>, EvalError> {
        loop {
            self.buf.clear();
            if self.read_line()? == 0 {
                return Ok(None);
            }
            let start = self.line;
            let mut end = content_end(&self.buf);
            if self.buf[..end].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.len = 0;
            let mut pos = 0;
            loop {
                let idx = self.new_field(start)?;
                if pos < end && self.buf[pos] == b'"' {
                    pos += 1;
                    loop {
                        match self.buf[pos..].iter().position(|&b| b == b'"') {
                            Some(off) => {
                                let q = pos + off;
                                self.fields[idx].extend_from_slice(&self.buf[pos..q]);
                                if self.buf.get(q + 1) == Some(&b'"') {
                                    self.fields[idx].push(b'"');
                                    pos = q + 2;
                                } else {
                                    pos = q + 1;
                                    break;
                                }
                            }
                            None => {
                                // The quoted field goes on on the next line.
                                self.fields[idx].extend_from_slice(&self.buf[pos..]);
                                self.buf.clear();
                                pos = 0;
                                if self.read_line()? == 0 {
                                    return Err(
                                        self.parse_error(start, "unterminated quoted field")
                                    );
                                }
                            }
                        }
                    }
                    end = content_end(&self.buf);
                    if pos >= end {
                        break;
                    }
                    if self.buf[pos] != b',' {
                        return Err(self.parse_error(
                            start,
                            "unexpected character after closing quote (quotes inside a \
                             quoted field must be doubled)",
                        ));
                    }
                    pos += 1;
                } else {
                    let stop = self.buf[pos..end]
                        .iter()
                        .position(|&b| b == b',')
                        .map_or(end, |off| pos + off);
                    self.fields[idx].extend_from_slice(&self.buf[pos..stop]);
                    if stop >= end {
                        break;
                    }
                    pos = stop + 1;
                }
            }
            return Ok(Some(start));
        }
    }
}

/// Marks the window's accounts (by index) whose compromise was known before `from`.
fn known_compromised(
    frauds: &FraudLabels,
    accounts: &HashMap<String, u32>,
    opts: &EvalOptions,
) -> Vec<bool> {
    let mut removed = vec![false; accounts.len()];
    let Some(from) = opts.from_ms else {
        return removed;
    };
    for label in frauds.values() {
        let visible = match (label.reported_ms, label.tx_ts_ms) {
            (Some(reported), _) => reported,
            (None, Some(ts)) => ts.saturating_add(opts.label_delay_ms),
            (None, None) => continue,
        };
        if visible >= from {
            continue;
        }
        if let Some(&id) = label.account.as_deref().and_then(|a| accounts.get(a)) {
            removed[id as usize] = true;
        }
    }
    removed
}

// ---------------------------------------------------------------------------
// Metrics

/// Everything needed for the report, beyond the headline numbers.
struct Analysis {
    report: EvalReport,
    /// (recall, precision) per distinct threshold, thinned for drawing.
    pr_curve: Vec<(f64, f64)>,
    fraud_hist: [u64; HIST_BINS],
    genuine_hist: [u64; HIST_BINS],
    days: Vec<DayStat>,
}

struct DayStat {
    day: i64,
    transactions: u64,
    frauds: u64,
    alerts: u64,
    caught: u64,
    card_precision: f64,
}

struct RankMetrics {
    roc_auc: f64,
    average_precision: f64,
    curve: Vec<(f64, f64)>,
}

/// ROC AUC, average precision and the PR curve from `(score, fraud)` pairs
/// sorted by descending score.
fn rank_metrics(ranked: &[(f64, bool)]) -> RankMetrics {
    const MIN_STEP: f64 = 1e-3;
    let positives = ranked.iter().filter(|r| r.1).count() as u64;
    let negatives = ranked.len() as u64 - positives;
    let (mut tp, mut fp) = (0u64, 0u64);
    // Twice the number of (positive, negative) pairs ranked correctly,
    // ties counting one half on each side.
    let mut auc2: u128 = 0;
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut curve = Vec::new();
    let mut last_kept = (f64::NAN, f64::NAN);
    let mut i = 0;
    while i < ranked.len() {
        let score = ranked[i].0;
        let (mut gp, mut gn) = (0u64, 0u64);
        while i < ranked.len() && ranked[i].0 == score {
            if ranked[i].1 {
                gp += 1;
            } else {
                gn += 1;
            }
            i += 1;
        }
        auc2 += u128::from(gn) * u128::from(2 * tp + gp);
        tp += gp;
        fp += gn;
        if positives > 0 {
            let precision = tp as f64 / (tp + fp) as f64;
            let recall = tp as f64 / positives as f64;
            ap += (recall - prev_recall) * precision;
            prev_recall = recall;
            let far = !((recall - last_kept.0).abs() < MIN_STEP
                && (precision - last_kept.1).abs() < MIN_STEP);
            if far || i == ranked.len() {
                curve.push((recall, precision));
                last_kept = (recall, precision);
            }
        }
    }
    let roc_auc = if positives > 0 && negatives > 0 {
        auc2 as f64 / (2.0 * positives as f64 * negatives as f64)
    } else {
        f64::NAN
    };
    let average_precision = if positives > 0 { ap } else { f64::NAN };
    RankMetrics {
        roc_auc,
        average_precision,
        curve,
    }
}

/// Precision among the top `k` of `accounts` (max score, compromised), ranked
/// by score; see [`evaluate`] for the handling of small days and ties.
fn card_precision(accounts: &mut [(f64, bool)], k: usize) -> f64 {
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

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

fn analyse(
    rows: &mut [Row],
    k: usize,
    removed_accounts: u64,
    removed_transactions: u64,
) -> Analysis {
    let mut ranked: Vec<(f64, bool)> = rows.iter().map(|r| (r.score, r.fraud)).collect();
    ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let rank = rank_metrics(&ranked);
    drop(ranked);

    let mut positives = 0u64;
    let mut alerts = 0u64;
    let mut caught = 0u64;
    let mut fraud_hist = [0u64; HIST_BINS];
    let mut genuine_hist = [0u64; HIST_BINS];
    for r in rows.iter() {
        positives += u64::from(r.fraud);
        alerts += u64::from(r.alert);
        caught += u64::from(r.alert && r.fraud);
        let bin = ((r.score * HIST_BINS as f64) as usize).min(HIST_BINS - 1);
        if r.fraud {
            fraud_hist[bin] += 1;
        } else {
            genuine_hist[bin] += 1;
        }
    }

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
        stat.card_precision = card_precision(&mut day_accounts, k);
        days.push(stat);
    }
    let card_precision_at_k = if days.is_empty() {
        f64::NAN
    } else {
        days.iter().map(|d| d.card_precision).sum::<f64>() / days.len() as f64
    };

    let report = EvalReport {
        transactions: rows.len() as u64,
        positives,
        removed_accounts,
        removed_transactions,
        roc_auc: rank.roc_auc,
        average_precision: rank.average_precision,
        alerts,
        precision_at_threshold: ratio(caught, alerts),
        recall_at_threshold: ratio(caught, positives),
        card_precision_at_k,
        k,
        days: days.len() as u64,
    };
    Analysis {
        report,
        pr_curve: rank.curve,
        fraud_hist,
        genuine_hist,
        days,
    }
}

// ---------------------------------------------------------------------------
// Report

fn fmt_metric(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".to_owned()
    }
}

fn fmt_pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}%")
    } else {
        "n/a".to_owned()
    }
}

fn fmt_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn fmt_day(day: i64) -> String {
    DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day {day}"))
}

fn fmt_duration(ms: i64) -> String {
    if ms != 0 && ms % DAY_MS == 0 {
        format!("{}d", ms / DAY_MS)
    } else if ms != 0 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{ms}ms")
    }
}

fn describe_window(opts: &EvalOptions) -> String {
    let from = opts.from_ms.map_or("-∞".to_owned(), fmt_time);
    let to = opts.to_ms.map_or("+∞".to_owned(), fmt_time);
    format!("[{from}, {to})")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn write_report(
    dir: &Path,
    analysis: &Analysis,
    scores: &Path,
    labels: &Path,
    opts: &EvalOptions,
) -> Result<(), EvalError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let json_path = dir.join("metrics.json");
    let mut json = serde_json::to_string_pretty(&analysis.report).map_err(|e| EvalError::Io {
        path: json_path.clone(),
        source: e.into(),
    })?;
    json.push('\n');
    std::fs::write(&json_path, json).map_err(io_error(&json_path))?;
    let html_path = dir.join("report.html");
    let html = render_html(analysis, scores, labels, opts);
    std::fs::write(&html_path, html).map_err(io_error(&html_path))?;
    Ok(())
}

/// Plot area of an SVG chart; maps unit coordinates to pixels.
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    const STANDARD: Frame = Frame {
        width: 640.0,
        height: 360.0,
        left: 64.0,
        right: 20.0,
        top: 30.0,
        bottom: 56.0,
    };

    fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }

    fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }

    /// x pixel of `u` in [0, 1].
    fn x(&self, u: f64) -> f64 {
        self.left + u * self.plot_width()
    }

    /// y pixel of `v` in [0, 1] (0 at the bottom).
    fn y(&self, v: f64) -> f64 {
        self.top + (1.0 - v) * self.plot_height()
    }

    fn open(&self, out: &mut String, title: &str, x_label: &str, y_label: &str) {
        let _ = write!(
            out,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title><rect width="{w}" height="{h}" fill="#fff"/><text x="{cx:.1}" y="18" text-anchor="middle" class="t">{t}</text><text x="{cx:.1}" y="{xl:.1}" text-anchor="middle">{xlab}</text><text transform="translate(16,{cy:.1}) rotate(-90)" text-anchor="middle">{ylab}</text><rect x="{l}" y="{tp}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##,
            w = self.width,
            h = self.height,
            t = escape(title),
            cx = self.left + self.plot_width() / 2.0,
            cy = self.top + self.plot_height() / 2.0,
            xl = self.height - 10.0,
            xlab = escape(x_label),
            ylab = escape(y_label),
            l = self.left,
            tp = self.top,
            pw = self.plot_width(),
            ph = self.plot_height(),
        );
    }

    fn x_tick(&self, out: &mut String, u: f64, label: &str) {
        let x = self.x(u);
        let y0 = self.y(0.0);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#999"/><text x="{x:.1}" y="{yt:.1}" text-anchor="middle">{label}</text>"##,
            y1 = y0 + 5.0,
            yt = y0 + 18.0,
            label = escape(label),
        );
    }

    fn y_tick(&self, out: &mut String, v: f64, label: &str) {
        let y = self.y(v);
        let _ = write!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#eee"/><text x="{xt:.1}" y="{yt:.1}" text-anchor="end">{label}</text>"##,
            x0 = self.left,
            x1 = self.left + self.plot_width(),
            xt = self.left - 6.0,
            yt = y + 4.0,
            label = escape(label),
        );
    }

    fn legend(&self, out: &mut String, entries: &[(&str, &str)]) {
        let mut y = self.top + 14.0;
        let x = self.left + self.plot_width() - 170.0;
        let _ = write!(
            out,
            r##"<rect x="{bx:.1}" y="{by:.1}" width="160" height="{bh:.1}" fill="#fff" fill-opacity="0.85" stroke="#ccc"/>"##,
            bx = x - 6.0,
            by = self.top + 6.0,
            bh = 18.0 * entries.len() as f64 + 6.0,
        );
        for (color, label) in entries {
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{ry:.1}" width="12" height="12" fill="{color}"/><text x="{tx:.1}" y="{y:.1}">{label}</text>"##,
                ry = y - 10.0,
                tx = x + 18.0,
                label = escape(label),
            );
            y += 18.0;
        }
    }
}

fn unit_ticks(frame: &Frame, out: &mut String) {
    for i in 0..=5 {
        let u = f64::from(i) / 5.0;
        let label = format!("{u:.1}");
        frame.x_tick(out, u, &label);
        frame.y_tick(out, u, &label);
    }
}

fn pr_curve_svg(a: &Analysis) -> String {
    let f = Frame::STANDARD;
    let r = &a.report;
    let mut out = String::new();
    f.open(
        &mut out,
        &format!(
            "Precision-recall curve (AP {})",
            fmt_metric(r.average_precision)
        ),
        "recall",
        "precision",
    );
    unit_ticks(&f, &mut out);
    if r.positives > 0 {
        // Precision of a random ranking.
        let base = r.positives as f64 / r.transactions as f64;
        let _ = write!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#aaa" stroke-dasharray="4 4"><title>fraud rate {base:.5}</title></line>"##,
            x0 = f.x(0.0),
            x1 = f.x(1.0),
            y = f.y(base),
        );
    }
    if let Some(&(_, p0)) = a.pr_curve.first() {
        let _ = write!(out, r#"<path d="M{:.1},{:.1}"#, f.x(0.0), f.y(p0));
        for &(rec, prec) in &a.pr_curve {
            let _ = write!(out, " L{:.1},{:.1}", f.x(rec), f.y(prec));
        }
        out.push_str(r##"" fill="none" stroke="#1f5fa8" stroke-width="2"/>"##);
    } else {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">no frauds: curve undefined</text>"##,
            f.x(0.5),
            f.y(0.5)
        );
    }
    let (rec, prec) = (r.recall_at_threshold, r.precision_at_threshold);
    if rec.is_finite() && prec.is_finite() {
        let _ = write!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="#d62728" stroke="#fff" stroke-width="1.5"><title>alert threshold: precision {p}, recall {rc}</title></circle><text x="{tx:.1}" y="{ty:.1}" class="s">alert threshold</text>"##,
            x = f.x(rec),
            y = f.y(prec),
            p = fmt_metric(prec),
            rc = fmt_metric(rec),
            tx = (f.x(rec) + 9.0).min(f.x(1.0) - 80.0),
            ty = f.y(prec) - 9.0,
        );
    }
    out.push_str("</svg>");
    out
}

fn histogram_svg(a: &Analysis) -> String {
    let f = Frame::STANDARD;
    let bin_width = 1.0 / HIST_BINS as f64;
    let density = |hist: &[u64; HIST_BINS]| -> Vec<f64> {
        let total: u64 = hist.iter().sum();
        hist.iter()
            .map(|&c| {
                if total == 0 {
                    0.0
                } else {
                    c as f64 / (total as f64 * bin_width)
                }
            })
            .collect()
    };
    let fraud = density(&a.fraud_hist);
    let genuine = density(&a.genuine_hist);
    let positive = fraud.iter().chain(&genuine).copied().filter(|&d| d > 0.0);
    let (min, max) = positive.fold((f64::INFINITY, 0.0_f64), |(lo, hi), d| {
        (lo.min(d), hi.max(d))
    });
    let mut out = String::new();
    f.open(
        &mut out,
        "Score distribution (density, log scale)",
        "score",
        "density",
    );
    for i in 0..=5 {
        let u = f64::from(i) / 5.0;
        f.x_tick(&mut out, u, &format!("{u:.1}"));
    }
    if max > 0.0 {
        let lo = min.log10().floor() as i32;
        let mut hi = max.log10().ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        let span = f64::from(hi - lo);
        let v = |d: f64| (d.log10() - f64::from(lo)) / span;
        let step = ((hi - lo) as usize).div_ceil(8).max(1);
        for e in (lo..=hi).step_by(step) {
            let label = if (-3..=4).contains(&e) {
                format!("1e{e}")
                    .parse::<f64>()
                    .map_or(String::new(), |x| x.to_string())
            } else {
                format!("1e{e}")
            };
            f.y_tick(&mut out, f64::from(e - lo) / span, &label);
        }
        for (dens, color, name) in [
            (&genuine, "#1f77b4", "genuine"),
            (&fraud, "#d62728", "fraud"),
        ] {
            for (b, &d) in dens.iter().enumerate() {
                if d <= 0.0 {
                    continue;
                }
                let x0 = f.x(b as f64 * bin_width);
                let x1 = f.x((b + 1) as f64 * bin_width);
                let y = f.y(v(d));
                let _ = write!(
                    out,
                    r##"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{color}" fill-opacity="0.5"><title>{name} {s0:.2}–{s1:.2}: density {d:.4}</title></rect>"##,
                    w = x1 - x0,
                    h = f.y(0.0) - y,
                    s0 = b as f64 * bin_width,
                    s1 = (b + 1) as f64 * bin_width,
                );
            }
        }
    }
    let fraud_label = if a.report.positives == 0 {
        "fraud (none)"
    } else {
        "fraud"
    };
    f.legend(
        &mut out,
        &[("#1f77b4", "genuine"), ("#d62728", fraud_label)],
    );
    out.push_str("</svg>");
    out
}

/// A round step for about `target` ticks up to `max`.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = (max / target).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn alerts_svg(a: &Analysis) -> String {
    let f = Frame::STANDARD;
    let mut out = String::new();
    f.open(
        &mut out,
        "Alerts and frauds caught per day (UTC)",
        "day",
        "transactions",
    );
    let max = a.days.iter().map(|d| d.alerts).max().unwrap_or(0).max(1) as f64;
    let step = nice_step(max, 5.0);
    let top = (max / step).ceil() * step;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        f.y_tick(&mut out, tick / top, &format!("{tick}"));
        tick += step;
    }
    let n = a.days.len().max(1);
    let slot = 1.0 / n as f64;
    let label_every = n.div_ceil(6).max(1);
    for (i, d) in a.days.iter().enumerate() {
        let x0 = f.x(i as f64 * slot);
        let w = (f.x((i + 1) as f64 * slot) - x0) * 0.8;
        let tip = format!(
            "{}: {} alerts, {} frauds caught of {}, {} transactions",
            fmt_day(d.day),
            d.alerts,
            d.caught,
            d.frauds,
            d.transactions
        );
        for (count, color) in [(d.alerts, "#1f77b4"), (d.caught, "#d62728")] {
            if count == 0 {
                continue;
            }
            let y = f.y(count as f64 / top);
            let _ = write!(
                out,
                r##"<rect x="{x0:.2}" y="{y:.1}" width="{w:.2}" height="{h:.1}" fill="{color}"><title>{tip}</title></rect>"##,
                h = f.y(0.0) - y,
                tip = escape(&tip),
            );
        }
        if i % label_every == 0 {
            f.x_tick(&mut out, (i as f64 + 0.4) * slot, &fmt_day(d.day));
        }
    }
    f.legend(
        &mut out,
        &[("#1f77b4", "alerts"), ("#d62728", "frauds caught")],
    );
    out.push_str("</svg>");
    out
}

fn render_html(a: &Analysis, scores: &Path, labels: &Path, opts: &EvalOptions) -> String {
    let r = &a.report;
    let mut out = String::new();
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fraudstream evaluation</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}\
         table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}\
         svg{margin:0 1em 1em 0;font-size:11px;vertical-align:top}\
         svg .t{font-size:14px;font-weight:600} svg .s{fill:#d62728}\
         </style></head><body>\n<h1>fraudstream evaluation</h1>\n",
    );
    let row = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
            escape(name),
            escape(&value)
        );
    };
    out.push_str("<h2>Setup</h2><table>\n");
    row(&mut out, "scores", scores.display().to_string());
    row(&mut out, "labels", labels.display().to_string());
    row(&mut out, "window", describe_window(opts));
    row(&mut out, "label delay", fmt_duration(opts.label_delay_ms));
    out.push_str("</table>\n<h2>Summary</h2><table>\n");
    let share = 100.0 * r.positives as f64 / r.transactions as f64;
    row(
        &mut out,
        "transactions evaluated",
        r.transactions.to_string(),
    );
    row(
        &mut out,
        "frauds (positives)",
        format!("{} ({})", r.positives, fmt_pct(share)),
    );
    row(
        &mut out,
        "removed known-compromised accounts",
        r.removed_accounts.to_string(),
    );
    row(
        &mut out,
        "removed transactions",
        r.removed_transactions.to_string(),
    );
    row(&mut out, "ROC AUC", fmt_metric(r.roc_auc));
    row(
        &mut out,
        "average precision",
        fmt_metric(r.average_precision),
    );
    row(&mut out, "alerts", r.alerts.to_string());
    row(
        &mut out,
        "precision at threshold",
        fmt_metric(r.precision_at_threshold),
    );
    row(
        &mut out,
        "recall at threshold",
        fmt_metric(r.recall_at_threshold),
    );
    row(
        &mut out,
        &format!("card precision@{}", r.k),
        fmt_metric(r.card_precision_at_k),
    );
    row(&mut out, "days", r.days.to_string());
    out.push_str(
        "</table>\n<p>Card precision@k: per UTC day, accounts ranked by their highest score \
         of the day; share of the top min(k, accounts that day) with a fraud that day \
         (ties at the cut counted in expectation); mean over days.</p>\n<h2>Charts</h2>\n",
    );
    out.push_str(&pr_curve_svg(a));
    out.push('\n');
    out.push_str(&histogram_svg(a));
    out.push('\n');
    out.push_str(&alerts_svg(a));
    out.push_str("\n<details><summary>Per day</summary><table>\n<tr><th>day</th><th>transactions</th><th>frauds</th><th>alerts</th><th>frauds caught</th>");
    let _ = writeln!(out, "<th>card precision@{}</th></tr>", r.k);
    for d in &a.days {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            fmt_day(d.day),
            d.transactions,
            d.frauds,
            d.alerts,
            d.caught,
            fmt_metric(d.card_precision)
        );
    }
    out.push_str("</table></details>\n</body></html>\n");
    out
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "fraudstream-eval-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ms(ts: &str) -> i64 {
        parse_ts(ts).expect("test timestamp")
    }

    fn run(csv: &str, labels: &str, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
        let dir = TempDir::new("run");
        let scores = dir.write("scores.csv", csv);
        let labels = dir.write("labels.jsonl", labels);
        evaluate(&scores, &labels, opts, None)
    }

    fn ranked(scores: &[f64], labels: &[u8]) -> Vec<(f64, bool)> {
        let mut v: Vec<(f64, bool)> = scores
            .iter()
            .zip(labels)
            .map(|(&s, &l)| (s, l == 1))
            .collect();
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        v
    }

    /// Builds a scores CSV and labels from (tx, score, alert, ts, account, fraud).
    fn dataset(rows: &[(&str, f64, u8, &str, &str, bool)]) -> (String, String) {
        let mut csv = String::from("tx_id,score,alert,ts,account_id\n");
        let mut labels = String::new();
        for (tx, score, alert, ts, account, fraud) in rows {
            csv.push_str(&format!("{tx},{score},{alert},{ts},{account}\n"));
            if *fraud {
                labels.push_str(&format!(
                    "{{\"tx_id\":\"{tx}\",\"account_id\":\"{account}\",\"fraud\":true}}\n"
                ));
            }
        }
        (csv, labels)
    }

    #[test]
    fn auc_and_ap_match_sklearn() {
        let m = rank_metrics(&ranked(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]));
        assert_relative_eq!(m.roc_auc, 0.75);
        assert_relative_eq!(
            m.average_precision,
            0.833_333_333_333_333_4,
            epsilon = 1e-12
        );

        // Perfect and inverted rankings.
        let m = rank_metrics(&ranked(&[0.9, 0.8, 0.2, 0.1], &[1, 1, 0, 0]));
        assert_relative_eq!(m.roc_auc, 1.0);
        assert_relative_eq!(m.average_precision, 1.0);
        let m = rank_metrics(&ranked(&[0.1, 0.2, 0.8, 0.9], &[1, 1, 0, 0]));
        assert_relative_eq!(m.roc_auc, 0.0);
        // sklearn: average_precision_score([1,1,0,0],[.1,.2,.8,.9]) = 0.5*1/3 + 0.5*0.5
        assert_relative_eq!(m.average_precision, 5.0 / 12.0, epsilon = 1e-12);
    }

    #[test]
    fn ties_use_average_ranks_and_grouped_thresholds() {
        // sklearn: roc_auc 0.875, average_precision 0.8333...
        let m = rank_metrics(&ranked(&[0.9, 0.5, 0.5, 0.1], &[1, 1, 0, 0]));
        assert_relative_eq!(m.roc_auc, 0.875);
        assert_relative_eq!(
            m.average_precision,
            1.0 / 2.0 + 0.5 * 2.0 / 3.0,
            epsilon = 1e-12
        );

        let m = rank_metrics(&ranked(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]));
        assert_relative_eq!(m.roc_auc, 0.5);
        assert_relative_eq!(m.average_precision, 0.5);

        // -0.0 and 0.0 are one tie group (scores are normalised on parsing).
        let m = rank_metrics(&ranked(&[0.0, 0.0], &[0, 1]));
        assert_relative_eq!(m.roc_auc, 0.5);
    }

    #[test]
    fn undefined_metrics_are_nan_and_serialise_as_null() {
        let m = rank_metrics(&ranked(&[0.1, 0.2], &[0, 0]));
        assert!(m.roc_auc.is_nan() && m.average_precision.is_nan());
        let (csv, _) = dataset(&[
            ("t1", 0.3, 0, "2018-04-01T00:00:00Z", "A", false),
            ("t2", 0.7, 1, "2018-04-01T00:00:00Z", "B", false),
        ]);
        let r = run(&csv, "", &EvalOptions::default()).expect("evaluate");
        assert_eq!((r.transactions, r.positives, r.alerts), (2, 0, 1));
        let json = serde_json::to_value(&r).expect("serialise");
        assert!(json["roc_auc"].is_null());
        assert!(json["recall_at_threshold"].is_null());
        assert_eq!(json["precision_at_threshold"], 0.0);
        assert!(r.to_text().contains("ROC AUC                  n/a"));
    }

    #[test]
    fn card_precision_on_two_days() {
        // Day 1: A .9 (fraud), B .8 and .1 (the .1 one is fraud), C .3 (fraud).
        // Day 2: A .2 (genuine: A's fraud was on day 1), D .95 (fraud).
        let (csv, labels) = dataset(&[
            ("a1", 0.9, 1, "2018-04-01T01:00:00Z", "A", true),
            ("b1", 0.8, 1, "2018-04-01T02:00:00Z", "B", false),
            ("b2", 0.1, 0, "2018-04-01T03:00:00Z", "B", true),
            ("c1", 0.3, 0, "2018-04-01T23:59:59.999Z", "C", true),
            ("a2", 0.2, 0, "2018-04-02T00:00:00Z", "A", false),
            ("d1", 0.95, 1, "2018-04-02T02:00:00Z", "D", true),
        ]);
        let opts = |k| EvalOptions {
            k,
            ..EvalOptions::default()
        };
        // k=2: day 1 top {A, B} both compromised → 1; day 2 {D, A} → 1/2.
        let r = run(&csv, &labels, &opts(2)).expect("evaluate");
        assert_eq!(r.days, 2);
        assert_eq!(r.k, 2);
        assert_relative_eq!(r.card_precision_at_k, 0.75);
        // k=1: A on day 1, D on day 2.
        let r = run(&csv, &labels, &opts(1)).expect("evaluate");
        assert_relative_eq!(r.card_precision_at_k, 1.0);
        // k=100: day 1 has 3 accounts, all compromised → 1; day 2 → 1/2.
        let r = run(&csv, &labels, &opts(100)).expect("evaluate");
        assert_relative_eq!(r.card_precision_at_k, 0.75);
        assert_eq!((r.transactions, r.positives, r.alerts), (6, 4, 3));
        assert_relative_eq!(r.precision_at_threshold, 2.0 / 3.0);
        assert_relative_eq!(r.recall_at_threshold, 0.5);
        // k=0 is undefined.
        let r = run(&csv, &labels, &opts(0)).expect("evaluate");
        assert!(r.card_precision_at_k.is_nan());
    }

    #[test]
    fn card_precision_ties_at_the_cut_count_in_expectation() {
        let mut accounts = vec![(0.5, true), (0.5, false), (0.9, false)];
        assert_relative_eq!(card_precision(&mut accounts, 2), 0.25);
        let mut accounts = vec![(0.5, true), (0.5, false)];
        assert_relative_eq!(card_precision(&mut accounts, 1), 0.5);
        assert_relative_eq!(card_precision(&mut accounts, 2), 0.5);
    }

    #[test]
    fn known_compromised_accounts_are_removed() {
        let csv = "tx_id,score,alert,ts,account_id\n\
            a1,0.9,1,2018-04-01T00:00:00Z,A\n\
            a2,0.8,1,2018-04-10T05:00:00Z,A\n\
            b1,0.9,1,2018-04-05T00:00:00Z,B\n\
            b2,0.2,0,2018-04-11T00:00:00Z,B\n\
            c2,0.3,0,2018-04-11T00:00:00Z,C\n\
            c3,0.4,0,2018-04-12T00:00:00Z,C\n\
            d2,0.7,1,2018-04-11T00:00:00Z,D\n\
            e2,0.1,0,2018-04-11T00:00:00Z,E\n\
            f1,0.6,0,2018-04-05T00:00:00Z,F\n\
            f2,0.5,0,2018-04-13T00:00:00Z,F\n";
        let e_reported = ms("2018-04-09T12:00:00Z");
        let labels = [
            // A: tx before from, ts + 7d = 04-08 < from → removed.
            r#"{"tx_id":"a1","account_id":"A","fraud":true}"#.to_owned(),
            // B: ts + 7d = 04-12 ≥ from → kept.
            r#"{"tx_id":"b1","account_id":"B","fraud":true}"#.to_owned(),
            // C: tx not scored, but reported before from → removed.
            r#"{"tx_id":"cX","account_id":"C","fraud":true,"reported_at":"2018-04-09T00:00:00Z"}"#
                .to_owned(),
            // D: tx not scored, no reported_at → ignored for removal.
            r#"{"tx_id":"dX","account_id":"D","fraud":true}"#.to_owned(),
            r#"{"tx_id":"d2","account_id":"D","fraud":true}"#.to_owned(),
            // E: reported_at as epoch milliseconds → removed.
            format!(r#"{{"tx_id":"eX","account_id":"E","fraud":true,"reported_at":{e_reported}}}"#),
            // F: reported_at wins over ts + delay (04-12) → kept.
            r#"{"tx_id":"f1","account_id":"F","fraud":true,"reported_at":"2018-04-12T00:00:00Z"}"#
                .to_owned(),
            r#"{"tx_id":"b2","account_id":"B","fraud":false}"#.to_owned(),
        ]
        .join("\n");
        let opts = EvalOptions {
            from_ms: Some(ms("2018-04-10T00:00:00Z")),
            ..EvalOptions::default()
        };
        let r = run(csv, &labels, &opts).expect("evaluate");
        // Window: a2 b2 c2 c3 d2 e2 f2; A, C (reported_at) and E (epoch ms) removed.
        assert_eq!(r.removed_accounts, 3);
        assert_eq!(r.removed_transactions, 4);
        assert_eq!(r.transactions, 3);
        assert_eq!(r.positives, 1);

        // Without --from nothing is removed.
        let r = run(csv, &labels, &EvalOptions::default()).expect("evaluate");
        assert_eq!((r.removed_accounts, r.removed_transactions), (0, 0));
        assert_eq!(r.transactions, 10);
        assert_eq!(r.positives, 4);

        // A longer label delay keeps A too.
        let opts = EvalOptions {
            from_ms: Some(ms("2018-04-10T00:00:00Z")),
            label_delay_ms: 10 * DAY_MS,
            ..EvalOptions::default()
        };
        let r = run(csv, &labels, &opts).expect("evaluate");
        assert_eq!((r.removed_accounts, r.removed_transactions), (2, 3));
    }

    #[test]
    fn from_to_window_is_half_open() {
        let (csv, labels) = dataset(&[
            ("t0", 0.9, 1, "2018-03-31T23:59:59.999Z", "A", true),
            ("t1", 0.8, 1, "2018-04-01T00:00:00Z", "B", true),
            ("t2", 0.2, 0, "2018-04-01T12:00:00.500Z", "C", false),
            ("t3", 0.7, 1, "2018-04-02T00:00:00Z", "D", true),
            ("t4", 0.1, 0, "2018-04-02T00:00:00+02:00", "E", false),
        ]);
        let opts = EvalOptions {
            from_ms: Some(ms("2018-04-01T00:00:00Z")),
            to_ms: Some(ms("2018-04-02T00:00:00Z")),
            ..EvalOptions::default()
        };
        let r = run(&csv, &labels, &opts).expect("evaluate");
        // t1, t2 and t4 (22:00Z on 04-01) are inside.
        assert_eq!((r.transactions, r.positives, r.days), (3, 1, 1));
        assert_relative_eq!(r.roc_auc, 1.0);

        let opts = EvalOptions {
            from_ms: Some(ms("2019-01-01T00:00:00Z")),
            ..EvalOptions::default()
        };
        match run(&csv, &labels, &opts) {
            Err(EvalError::Empty(msg)) => assert!(msg.contains("window"), "{msg}"),
            other => panic!("expected Empty, got {other:?}"),
        }
    }

    #[test]
    fn quoted_fields_and_crlf() {
        let csv = "score,tx_id,alert,ts,account_id,extra\r\n\
            0.9,\"t,1 \"\"x\"\"\",1,2018-04-01T00:00:31Z,A,\r\n\
            0.2,\"multi\r\nline\",0,2018-04-01T00:00:32Z,\"B\",z\r\n\
            \r\n\
            0.4,t3,0, 2018-04-01T00:00:33Z ,C,\"\"\r\n";
        let labels = "{\"tx_id\":\"t,1 \\\"x\\\"\",\"account_id\":\"A\",\"fraud\":true}\n\
                      {\"tx_id\":\"multi\\r\\nline\",\"fraud\":true}\n";
        let r = run(csv, labels, &EvalOptions::default()).expect("evaluate");
        assert_eq!((r.transactions, r.positives, r.alerts), (3, 2, 1));
    }

    fn parse_error(csv: &str) -> (u64, String) {
        match run(csv, "", &EvalOptions::default()) {
            Err(EvalError::Parse { line, detail, .. }) => (line, detail),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn bad_csv_lines_are_reported_with_line_numbers() {
        let head = "tx_id,score,alert,ts,account_id\n";
        let ok = "t1,0.5,0,2018-04-01T00:00:00Z,A\n";
        let (line, detail) = parse_error(&format!("{head}{ok}t2,abc,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 3);
        assert!(detail.contains("score"), "{detail}");
        // A record spanning two lines shifts the numbering.
        let (line, detail) = parse_error(&format!(
            "{head}\"t\n1\",0.5,0,2018-04-01T00:00:00Z,A\nt2,0.5,0,2018-04-01,A\n"
        ));
        assert_eq!(line, 4);
        assert!(detail.contains("ts"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}{ok}{ok}t3,0.5,0\n"));
        assert_eq!(line, 4);
        assert!(detail.contains("expected 5 fields, found 3"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}t1,1.5,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 2);
        assert!(detail.contains("outside"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}t1,NaN,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 2);
        assert!(detail.contains("outside"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}t1,0.5,2,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 2);
        assert!(detail.contains("alert"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}{ok}\"t2,0.5,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 3);
        assert!(detail.contains("unterminated"), "{detail}");
        let (line, detail) = parse_error(&format!("{head}\"t\"2,0.5,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 2);
        assert!(detail.contains("closing quote"), "{detail}");
        let (line, detail) = parse_error("tx_id,score,ts,account_id\n");
        assert_eq!(line, 1);
        assert!(detail.contains("\"alert\""), "{detail}");
        let (line, detail) = parse_error(&format!("{head}{ok},0.5,0,2018-04-01T00:00:00Z,A\n"));
        assert_eq!(line, 3);
        assert!(detail.contains("tx_id"), "{detail}");

        let err = run(head, "", &EvalOptions::default()).expect_err("no rows");
        assert!(matches!(err, EvalError::Empty(_)), "{err}");
        let err = run("", "", &EvalOptions::default()).expect_err("empty");
        assert!(matches!(err, EvalError::Empty(_)), "{err}");
    }

    #[test]
    fn bad_label_lines_are_reported_with_line_numbers() {
        let csv = "tx_id,score,alert,ts,account_id\nt1,0.5,0,2018-04-01T00:00:00Z,A\n";
        for (labels, line, needle) in [
            (
                "{\"tx_id\":\"t1\",\"fraud\":true}\n\n{\"tx_id\":\"t2\"\n",
                3,
                "invalid label",
            ),
            ("{\"tx_id\":\"t1\",\"fraud\":\"yes\"}\n", 1, "invalid label"),
            (
                "{\"tx_id\":\"t1\",\"fraud\":true,\"reported_at\":\"yesterday\"}\n",
                1,
                "RFC 3339",
            ),
            (
                "{\"tx_id\":\"t1\",\"fraud\":true,\"reported_at\":[1]}\n",
                1,
                "reported_at",
            ),
        ] {
            match run(csv, labels, &EvalOptions::default()) {
                Err(EvalError::Parse {
                    line: l, detail, ..
                }) => {
                    assert_eq!(l, line, "{detail}");
                    assert!(detail.contains(needle), "{detail}");
                }
                other => panic!("expected a parse error, got {other:?}"),
            }
        }
        let dir = TempDir::new("missing");
        let err = evaluate(
            &dir.write("s.csv", csv),
            &dir.0.join("nope.jsonl"),
            &EvalOptions::default(),
            None,
        )
        .expect_err("missing labels");
        assert!(matches!(err, EvalError::Io { .. }), "{err}");
    }

    #[test]
    fn report_files_are_written_and_valid() {
        let dir = TempDir::new("report");
        let mut rows = Vec::new();
        let names: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
        let accounts: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let times: Vec<String> = (0..200)
            .map(|i| format!("2018-04-{:02}T{:02}:00:00Z", 1 + i % 5, i % 24))
            .collect();
        for i in 0..200 {
            let fraud = i % 10 == 0;
            let score = if fraud {
                0.6 + (i % 7) as f64 * 0.05
            } else {
                (i % 50) as f64 / 60.0
            };
            let alert = u8::from(score > 0.7);
            rows.push((
                names[i].as_str(),
                score,
                alert,
                times[i].as_str(),
                accounts[i % 40].as_str(),
                fraud,
            ));
        }
        let (csv, labels) = dataset(&rows);
        let scores = dir.write("scores <&>.csv", &csv);
        let labels = dir.write("labels.jsonl", &labels);
        let out = dir.0.join("out").join("nested");
        let opts = EvalOptions {
            k: 5,
            ..EvalOptions::default()
        };
        let r = evaluate(&scores, &labels, &opts, Some(&out)).expect("evaluate");
        assert_eq!((r.transactions, r.positives, r.days), (200, 20, 5));

        let json = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v["transactions"], 200);
        assert_eq!(v["k"], 5);
        assert_relative_eq!(v["roc_auc"].as_f64().expect("number"), r.roc_auc);

        let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(html.matches("</svg>").count(), 3);
        assert!(!html.contains("<script"));
        assert!(!html.contains("src=") && !html.contains("href="));
        assert!(html.contains("scores &lt;&amp;&gt;.csv"));
        assert!(html.contains("alert threshold"));
        assert!(!html.contains("NaN"));
        assert!(r.to_text().contains("card precision@5"));

        // Still valid without frauds (NaN metrics).
        let none = dir.write("none.jsonl", "");
        let out = dir.0.join("out2");
        let r = evaluate(&scores, &none, &opts, Some(&out)).expect("evaluate");
        assert!(r.roc_auc.is_nan());
        let json = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert!(v["average_precision"].is_null());
        let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
        assert_eq!(html.matches("</svg>").count(), 3);
        assert!(!html.contains("NaN"));
    }
}
