//! Reading the inputs of `eval`: the scores CSV (the `csv` crate), the labels (the worker's own
//! label decoder, [`crate::replay::read_labels`], which also reads `.gz`), and the model file's
//! version, threshold and training range.

use std::collections::HashMap;
use std::path::Path;

use super::{EvalError, EvalOptions};
use crate::decode::parse_ts;
use crate::model::{Model, ModelError};
use crate::replay::{self, ReplayError};

/// Columns every scores CSV has (in any order; other columns are ignored).
pub const REQUIRED_COLUMNS: [&str; 5] = ["tx_id", "score", "alert", "ts", "account_id"];
/// Optional column (added to `score`'s output later): the transaction's amount.
pub const AMOUNT_COLUMN: &str = "amount";

/// What `eval` needs from the model file (`--model`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The model's version.
    pub version: String,
    /// Its kind (kmeans, logistic, forest, trees).
    pub kind: String,
    /// Its stored threshold.
    pub threshold: f64,
    /// Start of its training range (inclusive), epoch milliseconds.
    pub trained_from_ms: i64,
    /// End of its training range (exclusive), epoch milliseconds.
    pub trained_to_ms: i64,
}

impl ModelInfo {
    /// Loads a model file (checksum and features checked as the worker does).
    pub fn load(path: &Path) -> Result<ModelInfo, ModelError> {
        let model = Model::load(path)?;
        let body = model.body();
        let ts = |field: &str, v: &str| {
            parse_ts(v).map_err(|e| ModelError::Format {
                path: path.to_path_buf(),
                detail: format!("trained.{field}: {e}"),
            })
        };
        Ok(ModelInfo {
            version: body.version.clone(),
            kind: body.params.kind().to_owned(),
            // The f32's shortest decimal (0.994005, not 0.994005024433136).
            threshold: body.threshold.to_string().parse().unwrap_or(f64::NAN),
            trained_from_ms: ts("from", &body.trained.from)?,
            trained_to_ms: ts("to", &body.trained.to)?,
        })
    }
}

/// A fraud label, keyed by tx_id.
pub(super) struct FraudLabel {
    /// Account of the label.
    pub account: String,
    /// Earliest `reported_at` among the fraud labels of this transaction.
    pub reported_ms: Option<i64>,
    /// Timestamp of the labelled transaction in the scores file, if present.
    pub tx_ts_ms: Option<i64>,
}

pub(super) type FraudLabels = HashMap<String, FraudLabel>;

/// Reads the fraud labels (`fraud:false` lines are valid and mean genuine). Several fraud
/// labels of one transaction count once, with the earliest `reported_at`.
pub(super) fn read_labels(path: &Path) -> Result<FraudLabels, EvalError> {
    let labels = replay::read_labels(path).map_err(|e| match e {
        ReplayError::Io { path, source } => EvalError::Io { path, source },
        ReplayError::BadLabel { path, line, detail } => EvalError::Parse { path, line, detail },
    })?;
    let mut out = FraudLabels::with_capacity(labels.len());
    for l in labels {
        let entry = out.entry(l.tx_id).or_insert(FraudLabel {
            account: l.account_id,
            reported_ms: None,
            tx_ts_ms: None,
        });
        entry.reported_ms = match (entry.reported_ms, l.reported_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(out)
}

/// One evaluated transaction.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub ts_ms: i64,
    pub score: f64,
    /// The amount, NaN when the CSV has no amount column.
    pub amount: f64,
    /// Index into [`Scored::account_names`].
    pub account: u32,
    /// Index into [`Scored::fraud_ids`] for a fraud, `u32::MAX` otherwise.
    pub fraud_id: u32,
    pub alert: bool,
    pub fraud: bool,
}

pub(super) const NO_ID: u32 = u32::MAX;

/// The scored transactions inside the window.
pub(super) struct Scored {
    pub rows: Vec<Row>,
    /// Account id by index, for accounts with rows inside the window.
    pub account_names: Vec<String>,
    /// Account id → index.
    pub accounts: HashMap<String, u32>,
    /// tx_id of the fraud rows, by [`Row::fraud_id`].
    pub fraud_ids: Vec<String>,
    /// Data rows in the file, inside the window or not.
    pub total_rows: u64,
    /// Whether the file has an `amount` column.
    pub has_amount: bool,
}

struct Columns {
    tx_id: usize,
    score: usize,
    alert: usize,
    ts: usize,
    account_id: usize,
    amount: Option<usize>,
}

fn header_columns(header: &csv::StringRecord) -> Result<Columns, String> {
    let mut found = [None; REQUIRED_COLUMNS.len()];
    let mut amount = None;
    for (i, name) in header.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}').trim();
        let slot = match REQUIRED_COLUMNS.iter().position(|c| *c == name) {
            Some(pos) => &mut found[pos],
            None if name == AMOUNT_COLUMN => &mut amount,
            None => continue,
        };
        if slot.is_some() {
            return Err(format!("header has column {name:?} twice"));
        }
        *slot = Some(i);
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
        amount,
    })
}

struct ParsedRow<'a> {
    tx_id: &'a str,
    account: &'a str,
    score: f64,
    alert: bool,
    ts_ms: i64,
    amount: f64,
}

/// Shortens a value quoted in an error message.
pub(super) fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

fn parse_row<'a>(rec: &'a csv::StringRecord, cols: &Columns) -> Result<ParsedRow<'a>, String> {
    let field = |i: usize| rec.get(i).unwrap_or("");
    let tx_id = field(cols.tx_id);
    if tx_id.is_empty() {
        return Err("empty tx_id".to_owned());
    }
    let account = field(cols.account_id);
    if account.is_empty() {
        return Err("empty account_id".to_owned());
    }
    let raw = field(cols.score);
    let score: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("score {:?} is not a number", clip(raw)))?;
    if !(0.0..=1.0).contains(&score) {
        return Err(format!("score {:?} is outside [0, 1]", clip(raw)));
    }
    let raw = field(cols.alert);
    let alert = match raw.trim() {
        "0" | "false" => false,
        "1" | "true" => true,
        _ => return Err(format!("alert must be 0 or 1, found {:?}", clip(raw))),
    };
    let ts_ms = parse_ts(field(cols.ts).trim()).map_err(|e| format!("ts: {e}"))?;
    let amount = match cols.amount {
        None => f64::NAN,
        Some(i) => {
            let raw = field(i);
            match raw.trim().parse::<f64>() {
                Ok(a) if a.is_finite() && a >= 0.0 => a,
                _ => {
                    return Err(format!(
                        "amount {:?} is not a finite number >= 0",
                        clip(raw)
                    ))
                }
            }
        }
    };
    Ok(ParsedRow {
        tx_id,
        account,
        // `+ 0.0` turns -0.0 into 0.0 so that both sort as one tie group.
        score: score + 0.0,
        alert,
        ts_ms,
        amount,
    })
}

fn csv_error(path: &Path, e: csv::Error) -> EvalError {
    let line = e.position().map_or(0, csv::Position::line);
    let detail = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("field {} is not valid UTF-8", err.field() + 1)
        }
        csv::ErrorKind::Io(_) => {
            return match e.into_kind() {
                csv::ErrorKind::Io(source) => EvalError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                _ => unreachable!("matched as Io above"),
            }
        }
        _ => e.to_string(),
    };
    EvalError::Parse {
        path: path.to_path_buf(),
        line,
        detail,
    }
}

/// Reads the scores CSV (RFC 4180; blank lines skipped); records the labelled transactions'
/// times in `frauds` and keeps the rows inside the window.
pub(super) fn read_scores(
    path: &Path,
    frauds: &mut FraudLabels,
    opts: &EvalOptions,
) -> Result<Scored, EvalError> {
    let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    if header.is_empty() || header.iter().all(|h| h.trim().is_empty()) {
        return Err(EvalError::Empty(format!("{} is empty", path.display())));
    }
    let cols = header_columns(&header).map_err(|detail| EvalError::Parse {
        path: path.to_path_buf(),
        line: 1,
        detail,
    })?;

    let mut out = Scored {
        rows: Vec::new(),
        account_names: Vec::new(),
        accounts: HashMap::new(),
        fraud_ids: Vec::new(),
        total_rows: 0,
        has_amount: cols.amount.is_some(),
    };
    let mut rec = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, e)),
        }
        let line = rec.position().map_or(0, csv::Position::line);
        let parse_error = |detail: String| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        };
        let row = parse_row(&rec, &cols).map_err(parse_error)?;
        out.total_rows += 1;
        let fraud = match frauds.get_mut(row.tx_id) {
            Some(label) => {
                label.tx_ts_ms = Some(label.tx_ts_ms.map_or(row.ts_ms, |t| t.min(row.ts_ms)));
                true
            }
            None => false,
        };
        let in_window =
            opts.from_ms.is_none_or(|f| row.ts_ms >= f) && opts.to_ms.is_none_or(|t| row.ts_ms < t);
        if !in_window {
            continue;
        }
        let account = match out.accounts.get(row.account) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(out.account_names.len())
                    .ok()
                    .filter(|&id| id != NO_ID)
                    .ok_or_else(|| parse_error("too many distinct accounts".to_owned()))?;
                out.accounts.insert(row.account.to_owned(), id);
                out.account_names.push(row.account.to_owned());
                id
            }
        };
        let fraud_id = if fraud {
            let id = u32::try_from(out.fraud_ids.len())
                .ok()
                .filter(|&id| id != NO_ID)
                .ok_or_else(|| parse_error("too many frauds".to_owned()))?;
            out.fraud_ids.push(row.tx_id.to_owned());
            id
        } else {
            NO_ID
        };
        out.rows.push(Row {
            ts_ms: row.ts_ms,
            score: row.score,
            amount: row.amount,
            account,
            fraud_id,
            alert: row.alert,
            fraud,
        });
    }
    Ok(out)
}

/// Marks the window's accounts (by index) whose compromise was known before `from`.
pub(super) fn known_compromised(
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
        if let Some(&id) = accounts.get(&label.account) {
            removed[id as usize] = true;
        }
    }
    removed
}
