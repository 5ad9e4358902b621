//! `fraudstream produce`: replays a file into Kafka, keyed by account_id, with a progress bar.
//! Lines are sent as they are (bad ones too: the worker dead-letters them).
//!
//! The input files are checked (readable, lines counted for the bar's total) before anything
//! touches the cluster, and only the topics written are created: transactions, and labels with
//! `--labels`.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;
use crate::kafka_client;
use crate::progress::{count_lines, Progress};
use crate::replay::open_lines;

/// Counts of one produce run.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProduceSummary {
    /// Transactions sent.
    pub transactions: u64,
    /// Labels sent.
    pub labels: u64,
}

/// The account_id of a line, for the key; None for lines that don't parse (sent without key).
fn key_of_line(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct K {
        account_id: Option<String>,
    }
    serde_json::from_slice::<K>(line).ok()?.account_id
}

async fn send_file(
    producer: &FutureProducer,
    topic: &str,
    path: &Path,
    rate: u64,
    bar: &Progress,
) -> anyhow::Result<u64> {
    let mut r = open_lines(path)?;
    let mut buf = Vec::new();
    let mut n = 0u64;
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            bar.inc(1);
            continue;
        }
        let key = key_of_line(line);
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(line);
        if let Some(k) = &key {
            rec = rec.key(k.as_str());
        }
        loop {
            match producer.send_result(rec) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    rec = back;
                    match pending.next().await {
                        Some(r) => check(r, topic)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => anyhow::bail!("produce to {topic} failed: {e}"),
            }
        }
        n += 1;
        bar.inc(1);
        while pending.len() >= 10_000 {
            if let Some(r) = pending.next().await {
                check(r, topic)?;
            }
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(n as f64 / rate as f64);
            let el = start.elapsed();
            if due > el {
                tokio::time::sleep(due - el).await;
            }
        }
    }
    while let Some(r) = pending.next().await {
        check(r, topic)?;
    }
    Ok(n)
}

fn check(
    r: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
    topic: &str,
) -> anyhow::Result<()> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => anyhow::bail!("produce to {topic} failed: {e}"),
        Err(_) => anyhow::bail!("produce to {topic} cancelled"),
    }
}

/// An input file that cannot be read: an argument error (exit 2), found before the cluster is
/// touched.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {source}")]
pub struct InputError {
    /// The flag naming the file.
    pub flag: &'static str,
    /// The file.
    pub path: std::path::PathBuf,
    /// Why it cannot be read.
    pub source: std::io::Error,
}

/// Reads `path` through (gzip included) and counts its lines.
pub fn check_input(flag: &'static str, path: &Path) -> Result<u64, InputError> {
    count_lines(path).map_err(|source| InputError {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Sends the transactions (and labels) files. Both files are read through first (a missing
/// or unreadable file fails with [`InputError`] before any connection); then only the topics
/// written are checked or created.
pub async fn produce(
    cfg: &Config,
    transactions: &Path,
    labels: Option<&Path>,
    rate: u64,
) -> anyhow::Result<ProduceSummary> {
    let tx_lines = check_input("--transactions", transactions)?;
    let label_lines = labels
        .map(|l| check_input("--labels", l))
        .transpose()?
        .unwrap_or(0);
    let c2 = cfg.clone();
    let with_labels = labels.is_some();
    tokio::task::spawn_blocking(move || {
        let mut wanted = vec![("topics.transactions", c2.topics.transactions.as_str())];
        if with_labels {
            wanted.push(("topics.labels", c2.topics.labels.as_str()));
        }
        crate::source::ensure_these_topics(&c2, &wanted)
    })
    .await??;
    let mut c = kafka_client::common(cfg, kafka_client::Role::Producer);
    c.set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true");
    let producer: FutureProducer = c.create()?;
    let bar = Progress::new("produce", Some(tx_lines + label_lines), "lines");
    bar.set_message(&format!("-> {}", cfg.topics.transactions));
    let mut s = ProduceSummary {
        transactions: send_file(
            &producer,
            &cfg.topics.transactions,
            transactions,
            rate,
            &bar,
        )
        .await?,
        labels: 0,
    };
    if let Some(l) = labels {
        bar.set_message(&format!("-> {}", cfg.topics.labels));
        s.labels = send_file(&producer, &cfg.topics.labels, l, 0, &bar).await?;
    }
    producer.flush(Timeout::After(Duration::from_secs(60)))?;
    bar.finish();
    Ok(s)
}
