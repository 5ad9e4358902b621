//! Synthetic card-transaction stream with labelled fraud.
//!
//! [`generate`] writes `transactions.jsonl` (one card transaction per line,
//! ordered by timestamp) and `labels.jsonl` (one chargeback label per
//! fraudulent transaction, ordered by the transaction's timestamp) into an
//! output directory. The simulation is deterministic for a seed and streams
//! day by day, so memory stays proportional to accounts + merchants + one day
//! of transactions. The behavioural model is described in
//! `docs/generator.md`.
//!
//! Layout: `world` (parameters, categories, countries, merchants), `patterns` (accounts, genuine
//! behaviour, the fraud patterns and the day-by-day simulation), `sampling` (distributions),
//! `output` (the JSON lines, with serde and chrono).

mod output;
mod patterns;
mod sampling;
mod world;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};

use crate::progress::Progress;
use output::{write_label, write_tx, Out};
use patterns::{Sim, Stats};
use world::{MAX_ACCOUNTS, MAX_DAYS, MAX_MERCHANTS};

/// Options for [`generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of card holders; account `c<n>` holds card `k<n>` (1-based).
    pub accounts: usize,
    /// Number of merchants `m<n>` (1-based).
    pub merchants: usize,
    /// Number of simulated days, starting at `start`.
    pub days: u32,
    /// Seed of the ChaCha8 random generator; equal seeds give equal files.
    pub seed: u64,
    /// Start of the first simulated day.
    pub start: DateTime<Utc>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            accounts: 5_000,
            merchants: 500,
            days: 30,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2018, 4, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }
}

/// Counts of what [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Lines written to `transactions.jsonl`.
    pub transactions: u64,
    /// Transactions that are fraudulent.
    pub frauds: u64,
    /// Lines written to `labels.jsonl` (equal to `frauds`).
    pub labels: u64,
}

/// Errors of [`generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Creating the output directory or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The directory or file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An option is out of its accepted range.
    #[error("invalid option {name}={value}: {reason}")]
    InvalidOption {
        /// Name of the option (`accounts`, `merchants`, `days`).
        name: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// Generates a synthetic transaction stream with fraud labels.
///
/// Creates `out_dir` if needed and writes `out_dir/transactions.jsonl` and
/// `out_dir/labels.jsonl`, replacing existing files. Returns how many
/// transactions, frauds and labels were written.
///
/// Shows its progress on stderr by simulated day (see [`crate::progress`]): a bar with total and
/// ETA on a terminal, a quiet line every few seconds otherwise.
pub fn generate(opts: &GenerateOptions, out_dir: &Path) -> Result<GenerateSummary, GenerateError> {
    let progress = Progress::new("generate", Some(u64::from(opts.days)), "days");
    let summary = generate_with(opts, out_dir, &progress);
    progress.finish();
    summary
}

/// [`generate`], reporting each simulated day to `progress`.
pub fn generate_with(
    opts: &GenerateOptions,
    out_dir: &Path,
    progress: &Progress,
) -> Result<GenerateSummary, GenerateError> {
    let stats = run(opts, out_dir, progress)?;
    let frauds = stats.frauds.iter().sum();
    Ok(GenerateSummary {
        transactions: stats.transactions,
        frauds,
        labels: frauds,
    })
}

fn check(
    name: &'static str,
    value: impl ToString,
    ok: bool,
    reason: &'static str,
) -> Result<(), GenerateError> {
    if ok {
        Ok(())
    } else {
        Err(GenerateError::InvalidOption {
            name,
            value: value.to_string(),
            reason,
        })
    }
}

fn validate(opts: &GenerateOptions) -> Result<(), GenerateError> {
    check(
        "accounts",
        opts.accounts,
        opts.accounts > 0,
        "must be at least 1",
    )?;
    check(
        "accounts",
        opts.accounts,
        opts.accounts <= MAX_ACCOUNTS,
        "must be at most 50000000",
    )?;
    check(
        "merchants",
        opts.merchants,
        opts.merchants > 0,
        "must be at least 1",
    )?;
    check(
        "merchants",
        opts.merchants,
        opts.merchants <= MAX_MERCHANTS,
        "must be at most 10000000",
    )?;
    check("days", opts.days, opts.days > 0, "must be at least 1")?;
    check(
        "days",
        opts.days,
        opts.days <= MAX_DAYS,
        "must be at most 3650",
    )
}

fn run(
    opts: &GenerateOptions,
    out_dir: &Path,
    progress: &Progress,
) -> Result<Stats, GenerateError> {
    validate(opts)?;
    fs::create_dir_all(out_dir).map_err(|source| GenerateError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut txs = Out::create(out_dir.join("transactions.jsonl"))?;
    let mut labels = Out::create(out_dir.join("labels.jsonl"))?;

    let mut sim = Sim::new(opts);
    let start = opts.start.timestamp();
    let mut stats = Stats::default();
    for day in 0..opts.days {
        sim.day(day, start);
        for e in &sim.ctx.today {
            stats.transactions += 1;
            let id = stats.transactions;
            write_tx(&mut txs.w, id, e, &sim.world).map_err(|err| txs.err(err))?;
            if let Some(f) = &e.fraud {
                stats.frauds[f.pattern as usize] += 1;
                write_label(&mut labels.w, id, e, f.delay).map_err(|err| labels.err(err))?;
            }
        }
        progress.set_message(&format!(
            "({} transactions)",
            crate::progress::fmt_count(stats.transactions)
        ));
        progress.inc(1);
    }
    // Episodes spilling past the last day are cut off, never written.
    stats.episodes = sim.ctx.episodes;
    txs.finish()?;
    labels.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests;
