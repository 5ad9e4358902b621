//! `fraudstream produce`: replays a file into Kafka, keyed by account_id, with a progress bar.
//! Lines are sent as they are (bad ones too: the worker dead-letters them).

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;
use crate::kafka_client;
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
    bar: &ProgressBar,
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

/// Sends the transactions (and labels) files.
pub async fn produce(
    cfg: &Config,
    transactions: &Path,
    labels: Option<&Path>,
    rate: u64,
) -> anyhow::Result<ProduceSummary> {
    let c2 = cfg.clone();
    tokio::task::spawn_blocking(move || crate::source::ensure_topics(&c2)).await??;
    let mut c = kafka_client::common(cfg, kafka_client::Role::Producer);
    c.set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true");
    let producer: FutureProducer = c.create()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} messages ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("-> {}", cfg.topics.transactions));
    bar.enable_steady_tick(Duration::from_millis(200));
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
        bar.set_message(format!("-> {}", cfg.topics.labels));
        s.labels = send_file(&producer, &cfg.topics.labels, l, 0, &bar).await?;
    }
    producer.flush(Timeout::After(Duration::from_secs(60)))?;
    bar.finish_and_clear();
    Ok(s)
}
