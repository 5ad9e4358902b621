//! The measuring client of `scripts/bench_e2e.sh` (issue 10): loads a topic, reads it with a
//! bare rdkafka `StreamConsumer`, waits for a worker's group to commit the end of a topic, and
//! measures produce → alert latency at a fixed send rate. Not a public command: run it through
//! the script, which starts the broker and the worker.
//!
//! ```text
//! e2e_bench load    --file F --lines N --topic T --partitions P
//! e2e_bench bare    --topic T
//! e2e_bench wait    --topic T --group G --metrics http://127.0.0.1:PORT [--timeout-s S]
//! e2e_bench latency --file F --topic T --alerts A --rate R --seconds S [--skip K]
//! e2e_bench alert-cost [--iterations N]
//! ```
//!
//! Every command prints one `key=value ...` result line on stdout (the script parses it) and its
//! progress on stderr.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(name = "e2e_bench")]
struct Cli {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates `topic` with `partitions` and produces the first `lines` lines of `file`, keyed
    /// by account_id.
    Load {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        lines: usize,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Reads `topic` from the beginning to its end with a bare StreamConsumer: events/s.
    Bare {
        #[arg(long)]
        topic: String,
    },
    /// Waits until `group`'s committed offsets reach the end of `topic`: the worker's events/s.
    Wait {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        /// The worker's HTTP address, for `fraud_messages_received_total` (start of the clock).
        #[arg(long)]
        metrics: String,
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
    /// Sends `rate` transactions/s for `seconds` to `topic` (each with its send time) and
    /// reads `alerts` (read_committed), matching alerts to sends by tx_id.
    Latency {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long, default_value_t = 0)]
        skip: usize,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        alerts: String,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
        /// Seconds to wait for the last alerts after the last send.
        #[arg(long, default_value_t = 30)]
        drain_s: u64,
        /// Seconds sent at the same rate before the measured `seconds`, not counted: the
        /// producer's first connection and producer id, the reader's first fetch and the
        /// worker's first events (a steady-state figure, like criterion's warm-up).
        #[arg(long, default_value_t = 3)]
        warmup_s: u64,
        /// `linger.ms` of the sending producer (0: each transaction sent at once; a payment
        /// service's producer typically batches for a few milliseconds).
        #[arg(long, default_value_t = 0)]
        linger_ms: u64,
    },
    /// Times one alert's JSON: the `Alert` struct through serde_json vs `write_alert` into a
    /// reused buffer (no broker).
    AlertCost {
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
    },
}

#[derive(serde::Deserialize)]
struct Ids<'a> {
    #[serde(borrow)]
    tx_id: &'a str,
    #[serde(borrow, default)]
    account_id: Option<&'a str>,
    /// An alert's decision time (the worker's clock).
    #[serde(borrow, default)]
    detected_at: Option<&'a str>,
}

fn read_lines(file: &std::path::Path, skip: usize, n: usize) -> Result<Vec<String>> {
    let f = std::fs::File::open(file).with_context(|| format!("--file {}", file.display()))?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    for line in std::io::BufReader::with_capacity(1 << 20, f)
        .lines()
        .skip(skip)
    {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(line);
        if out.len() == n {
            break;
        }
    }
    if out.len() < n {
        bail!(
            "--file {} has only {} lines after --skip {skip}",
            file.display(),
            out.len()
        );
    }
    Ok(out)
}

/// Creates the topics that are missing (the crate's own admin code; it blocks).
async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<()> {
    let mut cfg = fraudstream::config::load(None)?;
    cfg.kafka.bootstrap_servers = brokers.to_string();
    cfg.topics.partitions = partitions;
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let wanted: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", t.as_str())).collect();
        fraudstream::source::ensure_these_topics(&cfg, &wanted).map(|_| ())
    })
    .await??;
    Ok(())
}

fn high_watermarks(brokers: &str, topic: &str) -> Result<Vec<(i32, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    // A topic created a moment ago may not be in the metadata yet: wait until it has partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    let md = loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let ready = md
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
        if ready || Instant::now() >= deadline {
            break md;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let t = md
        .topics()
        .first()
        .with_context(|| format!("topic {topic} not found"))?;
    let mut out = Vec::new();
    for p in t.partitions() {
        let (_, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        out.push((p.id(), high));
    }
    if out.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    Ok(out)
}

async fn load(
    brokers: &str,
    file: &std::path::Path,
    n: usize,
    topic: &str,
    parts: i32,
) -> Result<()> {
    let lines = read_lines(file, 0, n)?;
    create_topics(brokers, &[topic], parts).await?;
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(lines.len());
    for l in &lines {
        let key = serde_json::from_str::<Ids<'_>>(l)
            .ok()
            .and_then(|i| i.account_id);
        let mut rec: FutureRecord<'_, str, str> = FutureRecord::to(topic).payload(l);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        loop {
            match p.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("produce to {topic}: {e}"),
            Err(_) => bail!("produce to {topic}: delivery cancelled"),
        }
    }
    p.flush(Duration::from_secs(60))?;
    let s = started.elapsed().as_secs_f64();
    println!(
        "loaded={} seconds={s:.2} per_s={:.0}",
        lines.len(),
        lines.len() as f64 / s
    );
    Ok(())
}

async fn bare(brokers: &str, topic: &str) -> Result<()> {
    let highs = high_watermarks(brokers, topic)?;
    let total: i64 = highs.iter().map(|(_, h)| h).sum();
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bare-{}-{}", std::process::id(), now_ms()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, _) in &highs {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut got: i64 = 0;
    let mut bytes: u64 = 0;
    let first = c.recv().await?;
    let started = Instant::now();
    got += 1;
    bytes += first.payload_len() as u64;
    while got < total {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .context("bare consumer: no message for 30 s")??;
        bytes += m.payload_len() as u64;
        got += 1;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "bare_events={got} seconds={s:.3} events_per_s={:.0} mb_per_s={:.1}",
        got as f64 / s,
        bytes as f64 / s / 1e6
    );
    Ok(())
}

/// Minimal HTTP GET over a TCP socket: the body.
async fn http_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The sum of a metric's series in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait(
    brokers: &str,
    topic: &str,
    group: &str,
    metrics: &str,
    timeout_s: u64,
) -> Result<()> {
    let highs = high_watermarks(brokers, topic)?;
    let total: i64 = highs.iter().map(|(_, h)| h).sum();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let url = format!("{}/metrics", metrics.trim_end_matches('/'));
    // The clock starts when the worker has received its first message.
    let (started, cpu0) = loop {
        if Instant::now() > deadline {
            bail!("the worker received nothing within {timeout_s} s");
        }
        if let Some(body) = http_get(&url).await {
            if metric_sum(&body, "fraud_messages_received_total") > 0.0 {
                break (Instant::now(), metric_sum(&body, CPU));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut decided_at = None;
    let mut last_print = Instant::now();
    loop {
        if Instant::now() > deadline {
            bail!("group {group} did not commit the end of {topic} within {timeout_s} s");
        }
        if decided_at.is_none() {
            if let Some(body) = http_get(&url).await {
                let d = metric_sum(&body, "fraud_decisions_total")
                    + metric_sum(&body, "fraud_messages_discarded_total");
                if d as i64 >= total {
                    decided_at = Some(Instant::now());
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, _) in &highs {
            tpl.add_partition(topic, *p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let done: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!("committed {done}/{total}");
            last_print = Instant::now();
        }
        if done >= total {
            let s = started.elapsed().as_secs_f64();
            let d = decided_at.map_or(s, |t| (t - started).as_secs_f64());
            let cpu = http_get(&url)
                .await
                .map_or(f64::NAN, |b| metric_sum(&b, CPU) - cpu0);
            println!(
                "worker_events={total} seconds={s:.3} events_per_s={:.0} decided_seconds={d:.3} decided_per_s={:.0} cpu_seconds={cpu:.2} events_per_cpu_s={:.0}",
                total as f64 / s,
                total as f64 / d,
                total as f64 / cpu
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The worker's CPU time (user + system, all threads).
const CPU: &str = "process_cpu_seconds_total";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[allow(clippy::too_many_arguments)]
/// How long and how fast a latency run sends.
struct LatencyRun {
    rate: u64,
    seconds: u64,
    drain_s: u64,
    warmup_s: u64,
    linger_ms: u64,
}

async fn latency(
    brokers: &str,
    file: &std::path::Path,
    skip: usize,
    topic: &str,
    alerts: &str,
    run: LatencyRun,
) -> Result<()> {
    let LatencyRun {
        rate,
        seconds,
        drain_s,
        warmup_s,
        linger_ms,
    } = run;
    // The first `warm` sends are the warm-up: read back like the others, not counted.
    let warm = (rate * warmup_s) as usize;
    let n = warm + (rate * seconds) as usize;
    let lines = read_lines(file, skip, n)?;
    let mut index: HashMap<String, usize> = HashMap::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for (i, l) in lines.iter().enumerate() {
        let ids: Ids<'_> =
            serde_json::from_str(l).with_context(|| format!("line {i}: no tx_id"))?;
        index.insert(ids.tx_id.to_string(), i);
        keys.push(ids.account_id.unwrap_or_default().to_string());
    }
    let index = Arc::new(index);
    let base = Instant::now();
    let base_wall_ms = now_ms() as f64;
    // Send time of transaction i in ns after `base` (0 = not sent yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());

    // The alerts reader: a thread polling a BaseConsumer, so the receive time is taken as the
    // message arrives.
    let ac: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("lat-{}-{}", std::process::id(), now_ms()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let parts = high_watermarks(brokers, alerts)?;
    let mut tpl = TopicPartitionList::new();
    for (p, high) in &parts {
        tpl.add_partition_offset(alerts, *p, Offset::Offset(*high))?;
    }
    ac.assign(&tpl)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // When the last alert was read, ns after `base`.
    let last_read = Arc::new(AtomicU64::new(0));
    let reader = {
        let (index, sent, stop, last_read) =
            (index.clone(), sent.clone(), stop.clone(), last_read.clone());
        std::thread::spawn(move || -> (Vec<u64>, u64, u64, u64, Vec<f64>, Vec<f64>) {
            let mut lat = Vec::with_capacity(n);
            // Split at the alert's `detected_at` (same host, same clock; millisecond precision):
            // send -> decision, decision -> read back.
            let (mut to_detect, mut after_detect) = (Vec::new(), Vec::new());
            let mut warm_max = 0u64;
            let mut seen = vec![false; n];
            let (mut dup, mut unknown) = (0u64, 0u64);
            let mut read = 0usize;
            while !stop.load(Ordering::Acquire) && read < n {
                let Some(r) = ac.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let at = base.elapsed().as_nanos() as u64;
                let Ok(m) = r else { continue };
                last_read.store(at, Ordering::Release);
                let ids = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Ids<'_>>(p).ok());
                let Some(i) = ids.as_ref().and_then(|a| index.get(a.tx_id).copied()) else {
                    unknown += 1;
                    continue;
                };
                let detected = ids
                    .and_then(|a| a.detected_at)
                    .and_then(|d| fraudstream::decode::parse_ts(d).ok());
                if std::mem::replace(&mut seen[i], true) {
                    dup += 1;
                    continue;
                }
                read += 1;
                let l = at.saturating_sub(sent[i].load(Ordering::Acquire));
                if i < warm {
                    warm_max = warm_max.max(l);
                } else {
                    lat.push(l);
                    if let Some(d) = detected {
                        let sent_ms = base_wall_ms + sent[i].load(Ordering::Acquire) as f64 / 1e6;
                        let read_ms = base_wall_ms + at as f64 / 1e6;
                        to_detect.push(d as f64 - sent_ms);
                        after_detect.push(read_ms - d as f64);
                    }
                }
            }
            (lat, dup, unknown, warm_max, to_detect, after_detect)
        })
    };

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    // Connect before the clock starts.
    p.client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let start = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(n);
    for (i, l) in lines.iter().enumerate() {
        let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        let rec: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .key(keys[i].as_str())
            .payload(l.as_str());
        sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        match p.send_result(rec) {
            Ok(f) => pending.push(f),
            Err((e, _)) => bail!("produce to {topic}: {e}"),
        }
    }
    let send_s = start.elapsed().as_secs_f64();
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("produce to {topic}: {e}"),
            Err(_) => bail!("produce to {topic}: delivery cancelled"),
        }
    }
    // Until every transaction alerted, or nothing came for 3 s (a threshold that alerts on a
    // share), or `drain_s`.
    let t_end = Instant::now() + Duration::from_secs(drain_s);
    let quiet = Duration::from_secs(3).as_nanos() as u64;
    while !reader.is_finished() && Instant::now() < t_end {
        let now = base.elapsed().as_nanos() as u64;
        let last = last_read
            .load(Ordering::Acquire)
            .max(sent[n - 1].load(Ordering::Acquire));
        if now.saturating_sub(last) > quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Release);
    let (mut lat, dup, unknown, warm_max, mut to_detect, mut after_detect) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    lat.sort_unstable();
    let q = |f: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e6
    };
    let split = |v: &mut Vec<f64>, f: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable_by(f64::total_cmp);
        v[((v.len() as f64 * f).ceil() as usize).clamp(1, v.len()) - 1]
    };
    let detect = if to_detect.is_empty() {
        String::new()
    } else {
        format!(
            " to_detect_p50_ms={:.1} to_detect_p99_ms={:.1} after_detect_p50_ms={:.1} after_detect_p99_ms={:.1}",
            split(&mut to_detect, 0.5),
            split(&mut to_detect, 0.99),
            split(&mut after_detect, 0.5),
            split(&mut after_detect, 0.99)
        )
    };
    println!(
        "rate={rate} sent={} warmup_sent={warm} warmup_max_ms={:.2} send_seconds={send_s:.2} alerts={} not_alerted={} duplicates={dup} unknown={unknown} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}{detect}",
        n - warm,
        warm_max as f64 / 1e6,
        lat.len(),
        n - warm - lat.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    Ok(())
}

fn alert_cost(iterations: u32) -> Result<()> {
    use fraudstream::alert::{self, Alert, SourcePos};
    use fraudstream::decode::format_ts;
    let model = fraudstream::model::Model::load(std::path::Path::new("models/default.json"))?;
    let raw = r#"{"tx_id":"tx123456","ts":"2018-05-01T10:11:12Z","account_id":"c4128","merchant_id":"t8737","amount":142.00,"currency":"EUR"}"#;
    let input = fraudstream::config::InputConfig::default();
    let tx = fraudstream::decode::decode(raw.as_bytes(), &input, now_ms())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let d = fraudstream::engine::Decision {
        features: [0.0; fraudstream::features::MAX_DIM],
        score: 0.998_765_4,
        alert: true,
        late: false,
    };
    let reasons: Vec<fraudstream::reasons::Reason> = (0..3)
        .map(|i| fraudstream::reasons::Reason {
            feature: format!("feature_{i}"),
            value: 142.0 + i as f32,
            typical: Some(15.2),
            typical_of: Some("account"),
            contribution: 0.4,
            text: format!("amount 142.00 EUR is 9.3x the account's 30-day mean of 15.20 EUR ({i})"),
        })
        .collect();
    let src = SourcePos {
        topic: "transactions",
        partition: 3,
        offset: 123_456_789,
    };
    let thr = model.threshold();
    let at = now_ms();
    let t = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..iterations {
        let transaction: &serde_json::value::RawValue = serde_json::from_str(raw.trim())?;
        let v = serde_json::to_vec(&Alert {
            alert_id: src.alert_id(),
            tx_id: &tx.tx_id,
            account_id: &tx.account_id,
            merchant_id: &tx.merchant_id,
            ts: format_ts(tx.ts),
            detected_at: format_ts(at),
            score: d.score,
            threshold: thr,
            model_version: model.version(),
            risk: alert::risk_band(&model, d.score),
            reasons: reasons.iter().map(|r| r.text.as_str()).collect(),
            reason_details: &reasons,
            transaction,
        })?;
        bytes += std::hint::black_box(v).len();
    }
    let serde_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
    let t = Instant::now();
    for _ in 0..iterations {
        let v = alert::alert_json(&tx, raw, &d, thr, &model, &reasons, src, at)?;
        bytes += std::hint::black_box(v).len();
    }
    let new_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..iterations {
        buf.clear();
        alert::write_alert(&mut buf, &tx, raw, &d, thr, &model, &reasons, src, at)?;
        bytes += std::hint::black_box(&buf).len();
    }
    let reuse_ns = t.elapsed().as_nanos() as f64 / iterations as f64;
    println!(
        "alert_bytes={} serde_struct_ns={serde_ns:.0} alert_json_ns={new_ns:.0} write_alert_reused_ns={reuse_ns:.0} checksum={bytes}",
        buf.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let b = cli.brokers.as_str();
    match cli.cmd {
        Cmd::Load {
            file,
            lines,
            topic,
            partitions,
        } => load(b, &file, lines, &topic, partitions).await,
        Cmd::Bare { topic } => bare(b, &topic).await,
        Cmd::Wait {
            topic,
            group,
            metrics,
            timeout_s,
        } => wait(b, &topic, &group, &metrics, timeout_s).await,
        Cmd::Latency {
            file,
            skip,
            topic,
            alerts,
            rate,
            seconds,
            drain_s,
            warmup_s,
            linger_ms,
        } => {
            let run = LatencyRun {
                rate,
                seconds,
                drain_s,
                warmup_s,
                linger_ms,
            };
            latency(b, &file, skip, &topic, &alerts, run).await
        }
        Cmd::AlertCost { iterations } => alert_cost(iterations),
    }
}
