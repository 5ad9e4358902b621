//! `score` and `train` over files, through the same decode → state → features → model code as
//! the worker. Labels become visible at their `reported_at`, or `label_delay` after their
//! transaction when they have none; never earlier, and never before their transaction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::config::{InputConfig, StateConfig};
use crate::decode::{decode, decode_label, Label, Transaction};
use crate::engine::{observe, Engine};
use crate::features::FeatureVector;
use crate::progress::Progress;
use crate::state::State;

/// A replay that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// File unreadable or unwritable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A bad line in the labels file.
    #[error("{path}:{line}: {detail}")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        detail: String,
    },
}

/// Counts of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Lines read.
    pub lines: u64,
    /// Valid transactions processed.
    pub transactions: u64,
    /// Bad lines (reported on stderr).
    pub bad_lines: u64,
    /// Alerts (score only).
    pub alerts: u64,
    /// Late events.
    pub late: u64,
    /// Labels applied to state.
    pub labels_applied: u64,
    /// Labels whose transaction never appeared.
    pub labels_unmatched: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens a `.jsonl` or `.jsonl.gz` file.
pub fn open_lines(path: &Path) -> Result<Box<dyn BufRead>, ReplayError> {
    let f = File::open(path).map_err(io_err(path))?;
    let r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, r)))
}

/// Reads a labels file (frauds only are kept).
pub fn read_labels(path: &Path) -> Result<Vec<Label>, ReplayError> {
    let mut out = Vec::new();
    let mut r = open_lines(path)?;
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if r.read_line(&mut buf).map_err(io_err(path))? == 0 {
            break;
        }
        line += 1;
        if buf.trim().is_empty() {
            continue;
        }
        let l = decode_label(buf.trim().as_bytes()).map_err(|e| ReplayError::BadLabel {
            path: path.to_path_buf(),
            line,
            detail: e.to_string(),
        })?;
        if l.fraud {
            out.push(l);
        }
    }
    Ok(out)
}

/// Releases labels into the state at their visibility time.
pub struct LabelFeed {
    by_tx: HashMap<String, Label>,
    due: BinaryHeap<Reverse<(i64, u64)>>,
    scheduled: Vec<Label>,
    delay_ms: i64,
}

impl LabelFeed {
    /// Labels waiting for their transactions.
    pub fn new(labels: Vec<Label>, delay_ms: i64) -> LabelFeed {
        LabelFeed {
            by_tx: labels.into_iter().map(|l| (l.tx_id.clone(), l)).collect(),
            due: BinaryHeap::new(),
            scheduled: Vec::new(),
            delay_ms,
        }
    }

    /// Applies every label visible at or before `now_ms`.
    pub fn release(&mut self, state: &State, now_ms: i64, summary: &mut ReplaySummary) {
        while let Some(Reverse((at, i))) = self.due.peek().copied() {
            if at > now_ms {
                break;
            }
            self.due.pop();
            state.apply_label(&self.scheduled[i as usize]);
            summary.labels_applied += 1;
        }
    }

    /// Called after a transaction was observed: schedules its label, if any.
    pub fn seen(&mut self, tx: &Transaction<'_>) {
        if self.by_tx.is_empty() {
            return;
        }
        if let Some(l) = self.by_tx.remove(tx.tx_id.as_ref()) {
            let at = l
                .reported_at
                .unwrap_or(tx.ts.saturating_add(self.delay_ms))
                .max(tx.ts);
            self.due.push(Reverse((at, self.scheduled.len() as u64)));
            self.scheduled.push(l);
        }
    }

    /// Labels whose transaction never appeared.
    pub fn unmatched(&self) -> u64 {
        self.by_tx.len() as u64
    }
}

/// Bad lines reported one by one on stderr; the rest are only counted.
pub const MAX_PRINTED_BAD_LINES: u64 = 20;

#[allow(clippy::too_many_arguments)]
/// Replays `transactions` in file order, calling `each` for every valid transaction with its
/// 1-based line. `stop_at_ms`: stop at the first transaction at or after it.
pub fn replay<F>(
    transactions: &Path,
    labels: Option<&Path>,
    label_delay_ms: i64,
    state: &State,
    input: &InputConfig,
    stop_at_ms: Option<i64>,
    spec: &crate::features::FeatureSpec,
    each: F,
) -> Result<ReplaySummary, ReplayError>
where
    F: FnMut(&Transaction<'_>, bool, &FeatureVector) -> Result<(), ReplayError>,
{
    replay_with_progress(
        transactions,
        labels,
        label_delay_ms,
        state,
        input,
        stop_at_ms,
        spec,
        &Progress::hidden(),
        each,
    )
}

#[allow(clippy::too_many_arguments)]
/// [`replay`], advancing `progress` by one per line read. The first
/// [`MAX_PRINTED_BAD_LINES`] bad lines are printed on stderr with their line number, then
/// only how many more there were.
pub fn replay_with_progress<F>(
    transactions: &Path,
    labels: Option<&Path>,
    label_delay_ms: i64,
    state: &State,
    input: &InputConfig,
    stop_at_ms: Option<i64>,
    spec: &crate::features::FeatureSpec,
    progress: &Progress,
    mut each: F,
) -> Result<ReplaySummary, ReplayError>
where
    F: FnMut(&Transaction<'_>, bool, &FeatureVector) -> Result<(), ReplayError>,
{
    let mut feed = match labels {
        Some(p) => Some(LabelFeed::new(read_labels(p)?, label_delay_ms)),
        None => None,
    };
    let mut s = ReplaySummary::default();
    let mut r = open_lines(transactions)?;
    let mut buf = Vec::with_capacity(1024);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let stderr = std::io::stderr();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)
            .map_err(io_err(transactions))?
            == 0
        {
            break;
        }
        s.lines += 1;
        progress.inc(1);
        let line = trim_ascii(&buf);
        if line.is_empty() {
            continue;
        }
        let tx = match decode(line, input, now_ms) {
            Ok(tx) => tx,
            Err(e) => {
                s.bad_lines += 1;
                if s.bad_lines <= MAX_PRINTED_BAD_LINES {
                    let _ = writeln!(
                        stderr.lock(),
                        "{}:{}: {} ({})",
                        transactions.display(),
                        s.lines,
                        e,
                        e.reason()
                    );
                }
                continue;
            }
        };
        if stop_at_ms.is_some_and(|t| tx.ts >= t) {
            break;
        }
        if let Some(f) = feed.as_mut() {
            f.release(state, tx.ts, &mut s);
        }
        let o = observe(state, &tx, spec);
        if let Some(f) = feed.as_mut() {
            f.seen(&tx);
        }
        s.transactions += 1;
        s.late += u64::from(o.late);
        each(&tx, o.late, &o.features)?;
    }
    if let Some(f) = &feed {
        s.labels_unmatched = f.unmatched();
    }
    progress.finish();
    if s.bad_lines > MAX_PRINTED_BAD_LINES {
        let _ = writeln!(
            stderr.lock(),
            "{}: {} more bad lines not shown ({} in all)",
            transactions.display(),
            s.bad_lines - MAX_PRINTED_BAD_LINES,
            s.bad_lines
        );
    }
    Ok(s)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// `fraudstream score`: writes `tx_id,score,alert,ts,account_id,amount` for every valid
/// transaction (ts and account_id let `eval` compute per-day, per-account measures; amount the
/// fraud amount caught and missed).
pub fn score_file(
    engine: &Engine,
    transactions: &Path,
    labels: Option<&Path>,
    label_delay_ms: i64,
    input: &InputConfig,
    out: &Path,
) -> Result<ReplaySummary, ReplayError> {
    use crate::model::Predict;
    let f = File::create(out).map_err(io_err(out))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    writeln!(w, "tx_id,score,alert,ts,account_id,amount").map_err(io_err(out))?;
    let mut alerts = 0u64;
    let model = engine.model();
    let threshold = engine.threshold_for(&model);
    let total = crate::progress::count_lines(transactions).map_err(io_err(transactions))?;
    let progress = Progress::new("score", Some(total), "lines");
    let mut s = replay_with_progress(
        transactions,
        labels,
        label_delay_ms,
        &engine.state,
        input,
        None,
        model.spec(),
        &progress,
        |tx, _late, fv| {
            let score = model.score(fv);
            let alert = score >= threshold;
            alerts += u64::from(alert);
            writeln!(
                w,
                "{},{:.6},{},{},{},{}",
                csv_field(&tx.tx_id),
                score,
                u8::from(alert),
                crate::decode::format_ts(tx.ts),
                csv_field(&tx.account_id),
                tx.amount
            )
            .map_err(io_err(out))
        },
    )?;
    w.flush().map_err(io_err(out))?;
    s.alerts = alerts;
    Ok(s)
}

/// Quotes a CSV field when needed.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Rows for training: the features of the transactions with ts in [from, to), state warmed by
/// everything before, with their times and truth (a fraud label in the labels file, whenever it
/// was reported: training happens once the label delay has passed).
pub struct TrainingRows {
    /// Features, in time order.
    pub rows: Vec<FeatureVector>,
    /// Event times, epoch ms.
    pub ts: Vec<i64>,
    /// True for a labelled fraud.
    pub fraud: Vec<bool>,
    /// Attribute names used (discovered in the data, sorted).
    pub attributes: Vec<String>,
    /// Counts.
    pub summary: ReplaySummary,
}

impl TrainingRows {
    /// The rows with ts in [from_ms, to_ms), as an index range.
    pub fn range(&self, from_ms: i64, to_ms: i64) -> std::ops::Range<usize> {
        let a = self.ts.partition_point(|t| *t < from_ms);
        let b = self.ts.partition_point(|t| *t < to_ms).max(a);
        a..b
    }
}

/// Attribute names of the first transactions that have any (up to the model's limit), sorted.
pub fn discover_attributes(
    transactions: &Path,
    input: &InputConfig,
) -> Result<Vec<String>, ReplayError> {
    let mut r = open_lines(transactions)?;
    let mut buf = Vec::new();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut names = std::collections::BTreeSet::new();
    let mut seen = 0;
    while seen < 1000 {
        buf.clear();
        if r.read_until(b'\n', &mut buf)
            .map_err(io_err(transactions))?
            == 0
        {
            break;
        }
        if let Ok(tx) = decode(trim_ascii(&buf), input, now_ms) {
            if let Some(a) = &tx.attributes {
                seen += 1;
                names.extend(a.iter().map(|(k, _)| k.to_string()));
            }
        }
    }
    Ok(names
        .into_iter()
        .take(crate::features::MAX_ATTRIBUTES)
        .collect())
}

/// See [`TrainingRows`]. The features see labels as `score` and `run` would (at their
/// reported_at, else `label_delay_ms` after the transaction), with the model's `spec`.
#[allow(clippy::too_many_arguments)]
pub fn training_rows(
    transactions: &Path,
    labels: Option<&Path>,
    label_delay_ms: i64,
    state_cfg: &StateConfig,
    input: &InputConfig,
    feedback_delay_days: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<TrainingRows, ReplayError> {
    let state = State::new(state_cfg);
    let attributes = discover_attributes(transactions, input)?;
    let spec = crate::features::FeatureSpec {
        attributes: attributes.clone(),
        feedback_delay_days,
    };
    let truth: std::collections::HashSet<String> = match labels {
        Some(p) => read_labels(p)?.into_iter().map(|l| l.tx_id).collect(),
        None => Default::default(),
    };
    let mut rows = Vec::new();
    let mut ts = Vec::new();
    let mut fraud = Vec::new();
    // Progress over the lines read (the replay stops at `to_ms`, so the bar may end early).
    let total = crate::progress::count_lines(transactions).map_err(io_err(transactions))?;
    let progress = Progress::new("train: replay", Some(total), "lines");
    let summary = replay_with_progress(
        transactions,
        labels,
        label_delay_ms,
        &state,
        input,
        Some(to_ms),
        &spec,
        &progress,
        |tx, _late, fv| {
            if tx.ts >= from_ms {
                rows.push(*fv);
                fraud.push(truth.contains(tx.tx_id.as_ref()));
                ts.push(tx.ts);
            }
            Ok(())
        },
    )?;
    Ok(TrainingRows {
        rows,
        ts,
        fraud,
        attributes,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx_line(id: &str, ts: &str, acct: &str) -> String {
        format!(
            r#"{{"tx_id":"{id}","ts":"{ts}","account_id":"{acct}","merchant_id":"m1","amount":10,"currency":"EUR"}}"#
        )
    }

    /// In a replay a label becomes visible at its reported_at, never earlier: the account's
    /// "confirmed frauds" feature (24) stays 0 before it and is 1 after.
    #[test]
    fn labels_are_visible_only_from_reported_at() {
        let dir = std::env::temp_dir().join(format!("fs-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let txs = dir.join("t.jsonl");
        let labels = dir.join("l.jsonl");
        let lines = [
            tx_line("f1", "2018-04-01T10:00:00Z", "c1"),
            tx_line("x1", "2018-04-03T09:59:59Z", "c1"),
            tx_line("x2", "2018-04-05T09:59:59Z", "c1"),
            tx_line("x3", "2018-04-05T10:00:00Z", "c1"),
            tx_line("x4", "2018-04-06T10:00:00Z", "c1"),
        ];
        std::fs::write(&txs, lines.join("\n")).expect("write");
        std::fs::write(
            &labels,
            r#"{"tx_id":"f1","account_id":"c1","fraud":true,"reported_at":"2018-04-05T10:00:00Z"}"#,
        )
        .expect("write");
        let state = State::new(&StateConfig::default());
        let mut seen = Vec::new();
        let s = replay(
            &txs,
            Some(&labels),
            0,
            &state,
            &InputConfig::default(),
            None,
            &Default::default(),
            |tx, _, fv| {
                seen.push((tx.tx_id.to_string(), fv[24]));
                Ok(())
            },
        )
        .expect("replay");
        assert_eq!(s.labels_applied, 1);
        let frauds: Vec<f32> = seen.iter().map(|(_, f)| *f).collect();
        assert_eq!(frauds, vec![0.0, 0.0, 0.0, 1.0, 1.0]);
        // Without reported_at, the label delay applies from the transaction's time.
        std::fs::write(&labels, r#"{"tx_id":"f1","account_id":"c1","fraud":true}"#).expect("write");
        let state = State::new(&StateConfig::default());
        let mut seen = Vec::new();
        replay(
            &txs,
            Some(&labels),
            2 * 86_400_000,
            &state,
            &InputConfig::default(),
            None,
            &Default::default(),
            |_, _, fv| {
                seen.push(fv[24]);
                Ok(())
            },
        )
        .expect("replay");
        assert_eq!(seen, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}
