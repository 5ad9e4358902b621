//! Thin binary: parse the CLI, init tracing, dispatch, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad configuration or arguments).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fraudstream::cli::{self, Cli, CliError, Command, InputsArg, KindArg, LogFormat, TrainArgs};
use fraudstream::config::{self, Config, ConfigError};
use fraudstream::decode::parse_ts;
use fraudstream::engine::Engine;
use fraudstream::model::{supervised, Model};
use fraudstream::train::{self, ModelKind};
use fraudstream::{eval, generate, pipeline, produce, replay};
use tokio_util::sync::CancellationToken;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// The configuration, or the error that exits 2 (every problem listed).
fn config_of(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(config::load(path).map_err(CliError::from)?)
}

/// An input file named by `flag` must open (checked before any work starts: exit 2).
fn readable(flag: &'static str, path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path).map_err(|source| fraudstream::produce::InputError {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e: ConfigError| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The error and its causes, "a: b: c", leaving out a cause whose words the message before it
/// already holds (our errors name their cause in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if !out.contains(&m) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&m);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

/// `train`'s flags, checked (an error here exits 2).
fn train_options(a: &TrainArgs) -> Result<train::TrainOptions, CliError> {
    let ts =
        |flag: &str, v: &str| parse_ts(v).map_err(|e| CliError::usage(format!("--{flag}: {e}")));
    let kind = match a.kind {
        Some(KindArg::Iforest) => ModelKind::Iforest,
        Some(KindArg::Kmeans) => ModelKind::Kmeans,
        Some(KindArg::Logistic) => ModelKind::Supervised(supervised::Kind::Logistic),
        Some(KindArg::Forest) => ModelKind::Supervised(supervised::Kind::Forest),
        Some(KindArg::Trees) => ModelKind::Supervised(supervised::Kind::Trees),
        Some(KindArg::Auto) => ModelKind::Auto,
        None if a.labels.is_some() => ModelKind::Auto,
        None => ModelKind::Iforest,
    };
    let test = match (&a.test_from, &a.test_to) {
        (Some(f), Some(t)) => Some((ts("test-from", f)?, ts("test-to", t)?)),
        _ => None,
    };
    Ok(train::TrainOptions {
        transactions: a.transactions.clone(),
        labels: a.labels.clone(),
        label_delay_ms: a.label_delay,
        from_ms: ts("from", &a.from)?,
        to_ms: ts("to", &a.to)?,
        test,
        kind,
        target: match a.precision {
            Some(p) => supervised::ThresholdTarget::Precision(p),
            None => supervised::ThresholdTarget::AlertRate(a.alert_rate.unwrap_or(0.005)),
        },
        attributes_only: a.inputs == InputsArg::Attributes,
        clusters: a.clusters,
        anomaly_inputs: a.anomaly_inputs.clone(),
        seed: a.seed,
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig(c) => {
            let cfg = config_of(c.config.as_deref())?;
            let model = config::check_model(&cfg).map_err(CliError::from)?;
            println!(
                "# configuration is valid; model {} (version {}, threshold {})\n{}",
                cfg.model.path.display(),
                model.version(),
                cfg.model
                    .threshold
                    .map_or_else(|| model.threshold().to_string(), |t| t.to_string()),
                cfg.to_toml()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(c) => {
            let cfg = config_of(c.config.as_deref())?;
            // A missing or invalid model file is a configuration error (exit 2), named by its
            // setting; the pipeline loads it again.
            config::check_model(&cfg).map_err(CliError::from)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                // `run` installs the signal handlers first thing.
                pipeline::run(cfg, CancellationToken::new(), prometheus::Registry::new()).await
            })?;
            tracing::info!("Stopped.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            out,
            accounts,
            merchants,
            days,
            seed,
            start,
        } => {
            let start_ms =
                parse_ts(&start).map_err(|e| CliError::usage(format!("--start: {e}")))?;
            let start = chrono::DateTime::from_timestamp_millis(start_ms)
                .context("--start out of range")?;
            let opts = generate::GenerateOptions {
                accounts,
                merchants,
                days,
                seed,
                start,
            };
            let t = std::time::Instant::now();
            let s = generate::generate(&opts, &out)?;
            println!(
                "wrote {} transactions ({} frauds, {} labels) to {} in {:.1}s",
                s.transactions,
                s.frauds,
                s.labels,
                out.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce {
            transactions,
            labels,
            label_delay,
            rate,
            config,
        } => {
            let cfg = config_of(config.config.as_deref())?;
            let rt = tokio::runtime::Runtime::new()?;
            let s = rt.block_on(produce::produce(
                &cfg,
                &transactions,
                labels.as_deref(),
                label_delay,
                rate,
            ))?;
            println!(
                "produced {} transactions to {} and {} labels to {} ({} of them after the last transaction: due later than it, or without their transaction)",
                s.transactions, cfg.topics.transactions, s.labels, cfg.topics.labels, s.labels_after_end
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Score {
            transactions,
            labels,
            label_delay,
            model,
            threshold,
            out,
            config,
        } => {
            let cfg = config_of(config.config.as_deref())?;
            readable("--transactions", &transactions)?;
            if let Some(l) = &labels {
                readable("--labels", l)?;
            }
            let m = Model::load(&model).map_err(|e| CliError::usage(format!("--model: {e}")))?;
            let version = m.version().to_string();
            let engine = Engine::new(m, threshold.or(cfg.model.threshold), &cfg.state);
            let t = std::time::Instant::now();
            let s = replay::score_file(
                &engine,
                &transactions,
                labels.as_deref(),
                label_delay,
                &cfg.input,
                &out,
            )?;
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "scored {} transactions with model {version} (threshold {}): {} alerts, {} bad lines, {} late, {} labels applied; {:.1}s ({:.0} tx/s) -> {}",
                s.transactions,
                engine.threshold(),
                s.alerts,
                s.bad_lines,
                s.late,
                s.labels_applied,
                secs,
                s.transactions as f64 / secs.max(1e-9),
                out.display()
            );
            if s.transactions == 0 {
                anyhow::bail!(
                    "no valid transaction in {} ({} lines, {} bad): nothing scored",
                    transactions.display(),
                    s.lines,
                    s.bad_lines
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => {
            let from_ms = a
                .from
                .as_deref()
                .map(parse_ts)
                .transpose()
                .map_err(|e| CliError::usage(format!("--from: {e}")))?;
            let to_ms =
                a.to.as_deref()
                    .map(parse_ts)
                    .transpose()
                    .map_err(|e| CliError::usage(format!("--to: {e}")))?;
            if let (Some(f), Some(t)) = (from_ms, to_ms) {
                if f >= t {
                    return Err(CliError::usage(format!(
                        "--from {} must be before --to {}",
                        a.from.as_deref().unwrap_or_default(),
                        a.to.as_deref().unwrap_or_default()
                    ))
                    .into());
                }
            }
            let model = a
                .model
                .as_deref()
                .map(eval::ModelInfo::load)
                .transpose()
                .map_err(|e| CliError::usage(format!("--model: {e}")))?;
            let opts = eval::EvalOptions {
                from_ms,
                to_ms,
                label_delay_ms: a.label_delay,
                k: a.k,
                model,
            };
            let r = eval::evaluate(&a.scores, &a.labels, &opts, a.report.as_deref())?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", r.to_text());
            if let Some(d) = &a.report {
                println!("report: {}", d.join("report.html").display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(a) => {
            let cfg = match load_config(a.config.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let opts = train_options(&a)?;
            let t = std::time::Instant::now();
            let r = match train::train(&opts, &cfg.state, &cfg.input) {
                Ok(r) => r,
                Err(train::TrainError::Invalid(e)) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            Model::save(&r.body, &a.out)?;
            eprintln!(
                "trained {} on {} transactions ({} frauds) in [{}, {}) ({} read, {} bad lines{}) in {:.1}s; threshold {} -> {}",
                r.body.version,
                r.rows,
                r.frauds,
                r.body.trained.from,
                r.body.trained.to,
                r.summary.transactions,
                r.summary.bad_lines,
                if r.attributes == 0 { String::new() } else { format!(", {} attributes", r.attributes) },
                t.elapsed().as_secs_f64(),
                r.body.threshold,
                a.out.display()
            );
            if let Some(s) = &r.scheme {
                eprintln!("validation: {s}");
            }
            if let Some((n, f, _)) = r.test {
                eprintln!("test: {n} transactions, {f} frauds");
            }
            if r.train_ap.is_some() {
                eprintln!("{}", r.quality_table());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
