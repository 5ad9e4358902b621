//! Command-line interface: `run`, `check-config`, `generate`, `produce`, `score`, `train`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// fraudstream: a fraud-detection worker beside Apache Kafka, and its offline tools.
///
/// Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or arguments.
#[derive(Debug, Parser)]
#[command(name = "fraudstream", version, about)]
pub struct Cli {
    /// Log format on stderr: text, or json (one object per line, for log shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FRAUD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, fields (message included).
    Json,
}

/// Exit code of invalid arguments or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// A command that cannot run as asked: the arguments or the configuration are wrong (exit 2),
/// as opposed to a failure while running (exit 1). Return it through `anyhow`; `main` maps it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument or combination of arguments, naming the flag and the value.
    #[error("{0}")]
    Usage(String),
    /// An invalid configuration (every problem).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl CliError {
    /// A usage error with this message.
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }
}

/// The exit code for an error of a command: [`EXIT_USAGE`] when a [`CliError`], a
/// [`crate::config::ConfigError`] or a [`crate::produce::InputError`] (an input file named by
/// a flag that cannot be read) is in its chain, else [`EXIT_FAILURE`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let usage = e.chain().any(|c| {
        c.downcast_ref::<CliError>().is_some()
            || c.downcast_ref::<crate::config::ConfigError>().is_some()
            || c.downcast_ref::<crate::produce::InputError>().is_some()
    });
    if usage {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// `--config FILE`, layered on config/default.toml and under FRAUD__SECTION__KEY variables.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Configuration file layered on the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume transactions, score them, write alerts.
    Run(ConfigArg),
    /// Validate the configuration and print it (secrets masked) without starting.
    CheckConfig(ConfigArg),
    /// Write a synthetic stream with fraud patterns: DIR/transactions.jsonl and DIR/labels.jsonl.
    Generate {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Accounts (at least 1).
        #[arg(long, default_value_t = 5000, value_parser = at_least_one)]
        accounts: usize,
        /// Merchants (at least 1).
        #[arg(long, default_value_t = 500, value_parser = at_least_one)]
        merchants: usize,
        /// Days (at least 1).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day, YYYY-MM-DD.
        #[arg(long, default_value = "2018-04-01")]
        start: String,
    },
    /// Replay a file into Kafka, keyed by account_id.
    Produce {
        /// Transactions, .jsonl or .jsonl.gz.
        #[arg(long)]
        transactions: PathBuf,
        /// Labels to send to the labels topic too, interleaved with the transactions in event
        /// time: each once the transactions sent reach its reported_at.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// For labels without reported_at: sent once the transactions reach the labelled
        /// transaction's time plus this delay (e.g. 7d, 12h).
        #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
        label_delay: i64,
        /// Messages per second, transactions and labels together (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Configuration (brokers, topics).
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Score a file through the worker's code path; writes tx_id,score,alert,ts,account_id,amount.
    Score {
        /// Transactions, .jsonl or .jsonl.gz, in time order.
        #[arg(long)]
        transactions: PathBuf,
        /// Labels file (visible at reported_at, or --label-delay after the transaction).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Delay before a label without reported_at becomes visible (e.g. 7d, 12h).
        #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
        label_delay: i64,
        /// Model file.
        #[arg(long)]
        model: PathBuf,
        /// Alert threshold in [0, 1], instead of model.threshold or the model's own.
        #[arg(long, value_parser = parse_unit_interval)]
        threshold: Option<f64>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
        /// Configuration (state bounds, input limits, threshold override).
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Measure scores against labels: ROC AUC, average precision, precision and recall at the
    /// threshold, card precision@k; optionally an HTML report.
    Eval(EvalArgs),
    /// Fit a model on the transactions with ts in [from, to), state warmed by everything before.
    Train(TrainArgs),
}

/// Model kinds `train` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// Isolation forest (unsupervised; the default without labels).
    Iforest,
    /// k-means distance (unsupervised).
    Kmeans,
    /// Logistic regression.
    Logistic,
    /// Random forest.
    Forest,
    /// Gradient-boosted trees.
    Trees,
    /// The recommended supervised model (the default with labels): trees and logistic are both
    /// fitted; the one with the higher validation AP is kept.
    Auto,
}

/// Inputs a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputsArg {
    /// The windowed features and any attributes.
    All,
    /// The amount and the attributes only (data sets without accounts or merchants).
    Attributes,
}

/// `fraudstream train` arguments.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Transactions, .jsonl or .jsonl.gz, in time order.
    #[arg(long)]
    pub transactions: PathBuf,
    /// Labels file (features see them as `score` and `run` would).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The label delay: a label without reported_at becomes visible this long after its
    /// transaction; the merchant fraud rates read only transactions this old (stored in the
    /// model, whole days, at most 30d); supervised validation leaves a gap this long.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    pub label_delay: i64,
    /// Start of the training range: date or RFC 3339 (inclusive).
    #[arg(long)]
    pub from: String,
    /// End of the training range: date or RFC 3339 (exclusive).
    #[arg(long)]
    pub to: String,
    /// Also measure the model on [test-from, test-to) (later than --to) and print its AP beside
    /// the training and validation APs.
    #[arg(long, requires = "test_to")]
    pub test_from: Option<String>,
    /// End of the test range (exclusive).
    #[arg(long, requires = "test_from")]
    pub test_to: Option<String>,
    /// Model file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Model kind. Default: auto with --labels (the recommended supervised model), iforest
    /// without.
    #[arg(long, alias = "model", value_enum)]
    pub kind: Option<KindArg>,
    /// Share of transactions like the training ones that should alert, in (0, 1) [default:
    /// 0.005].
    #[arg(long, conflicts_with = "precision")]
    pub alert_rate: Option<f64>,
    /// Instead of --alert-rate: the lowest threshold reaching this precision on the validation
    /// period (supervised models; needs --labels).
    #[arg(long, requires = "labels")]
    pub precision: Option<f64>,
    /// Inputs the model reads.
    #[arg(long, value_enum, default_value = "all")]
    pub inputs: InputsArg,
    /// k-means clusters.
    #[arg(long, default_value_t = 16)]
    pub clusters: usize,
    /// Isolation forest: the windowed features it reads, comma-separated feature names
    /// [default: amount, the amount relative to the account's and merchant's history,
    /// velocity, new merchant/country, matured merchant fraud rates].
    #[arg(long, value_delimiter = ',')]
    pub anomaly_inputs: Option<Vec<String>>,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Configuration (state bounds, input limits).
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `fraudstream eval` arguments.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Scores CSV written by `score` (tx_id,score,alert,ts,account_id, and amount when present).
    #[arg(long)]
    pub scores: PathBuf,
    /// Labels file (the truth).
    #[arg(long)]
    pub labels: PathBuf,
    /// Evaluate transactions from this time (date or RFC 3339, inclusive); accounts with a fraud
    /// visible before it are removed.
    #[arg(long)]
    pub from: Option<String>,
    /// Evaluate transactions before this time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Delay before a label without reported_at is visible.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    pub label_delay: i64,
    /// k of card precision@k.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Folder for report.html and metrics.json (created if missing; existing files replaced).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The model file that wrote the scores: its threshold, version and training range (a window
    /// overlapping the training range gives a warning).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// A number in [0, 1].
pub fn parse_unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("must be in [0, 1], got {v}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// Parses `7d`, `12h`, `30m`, `45s`, `1500ms` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit: ms, s, m, h or d (e.g. 7d)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert!(parse_duration_ms("7").is_err());
        assert!(parse_duration_ms("7w").is_err());
    }

    #[test]
    fn unit_interval() {
        assert_eq!(parse_unit_interval("0.05"), Ok(0.05));
        assert!(parse_unit_interval("2").is_err());
        assert!(parse_unit_interval("x").is_err());
    }

    #[test]
    fn usage_errors_map_to_2() {
        let e = anyhow::Error::new(CliError::usage("--from: bad"));
        assert_eq!(exit_code(&e), EXIT_USAGE);
        let e = anyhow::Error::new(CliError::usage("x")).context("while doing y");
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("broker down")), EXIT_FAILURE);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
