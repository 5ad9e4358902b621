//! `fraudstream produce`: replays a file into Kafka, keyed by account_id, with a progress bar.
//! Lines are sent as they are (bad ones too: the worker dead-letters them).
//!
//! The input files are checked (readable, lines counted for the bar's total) before anything
//! touches the cluster, and only the topics written are created: transactions, and labels with
//! `--labels`.
//!
//! Labels are replayed in event time, interleaved with the transactions: a label is sent once
//! the replay's event time (the newest `ts` among the transactions produced so far) reaches its
//! `reported_at`, or its transaction's `ts` plus `--label-delay` when it has none, and never
//! before its own transaction. What the transactions never reach is sent after the last
//! transaction, so no label is lost (and counted apart, `labels_after_end`): labels due after
//! the file's end, in due order, then those whose transaction is not in the file (by
//! reported_at), then label lines that do not decode.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;
use crate::decode::decode_label;
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
    /// Of those, labels sent after the last transaction because the transactions never
    /// reached their time (or their transaction is not in the file, or the line is bad).
    pub labels_after_end: u64,
}

/// What `produce` reads of a transaction line: the key, and the id and time that schedule
/// labels. All None for a line that does not parse (sent without key).
#[derive(Debug, Default, serde::Deserialize)]
struct TxHead {
    account_id: Option<String>,
    tx_id: Option<String>,
    #[serde(default, deserialize_with = "crate::decode::de_opt_ts")]
    ts: Option<i64>,
}

fn head_of_line(line: &[u8]) -> TxHead {
    serde_json::from_slice(line).unwrap_or_default()
}

/// A label line and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelLine {
    /// The line as read.
    pub line: Vec<u8>,
    /// Its account_id (the key), if it decodes.
    pub key: Option<String>,
}

/// When each label is due, in the replay's event time (rules in the module's doc).
#[derive(Debug)]
pub struct LabelSchedule {
    lines: Vec<LabelLine>,
    /// Label indices by tx_id with their reported_at, waiting for their transaction.
    waiting: HashMap<String, Vec<(usize, Option<i64>)>>,
    /// Labels whose transaction was sent, by due time.
    due: BinaryHeap<Reverse<(i64, usize)>>,
    /// Lines that do not decode.
    bad: Vec<usize>,
    delay_ms: i64,
}

impl LabelSchedule {
    /// Reads the labels file `path` (every line: genuine labels are sent too).
    pub fn read(path: &Path, delay_ms: i64) -> std::io::Result<LabelSchedule> {
        let mut r = open_lines(path).map_err(|e| match e {
            crate::replay::ReplayError::Io { source, .. } => source,
            other => std::io::Error::other(other),
        })?;
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            let line = buf.trim_ascii();
            if !line.is_empty() {
                lines.push(line.to_vec());
            }
        }
        Ok(LabelSchedule::new(lines, delay_ms))
    }

    /// Schedules label `lines`.
    pub fn new(lines: Vec<Vec<u8>>, delay_ms: i64) -> LabelSchedule {
        let mut s = LabelSchedule {
            lines: Vec::with_capacity(lines.len()),
            waiting: HashMap::new(),
            due: BinaryHeap::new(),
            bad: Vec::new(),
            delay_ms,
        };
        for (i, line) in lines.into_iter().enumerate() {
            let key = match decode_label(&line) {
                Ok(l) => {
                    s.waiting
                        .entry(l.tx_id)
                        .or_default()
                        .push((i, l.reported_at));
                    Some(l.account_id)
                }
                Err(_) => {
                    s.bad.push(i);
                    None
                }
            };
            s.lines.push(LabelLine { line, key });
        }
        s
    }

    /// Number of label lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True without labels.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The transaction `tx_id` at `ts_ms` was sent: its labels become due at their
    /// reported_at (or `ts_ms` + the delay), never before `ts_ms`.
    pub fn sent(&mut self, tx_id: &str, ts_ms: i64) {
        if let Some(v) = self.waiting.remove(tx_id) {
            for (i, reported) in v {
                let at = reported
                    .unwrap_or(ts_ms.saturating_add(self.delay_ms))
                    .max(ts_ms);
                self.due.push(Reverse((at, i)));
            }
        }
    }

    /// Labels due at event time `now_ms`, in due order; each is returned once.
    pub fn due(&mut self, now_ms: i64) -> Vec<&LabelLine> {
        let mut out = Vec::new();
        while let Some(Reverse((at, i))) = self.due.peek().copied() {
            if at > now_ms {
                break;
            }
            self.due.pop();
            out.push(i);
        }
        out.into_iter().map(|i| &self.lines[i]).collect()
    }

    /// Everything not sent yet, for after the last transaction: the scheduled ones in due
    /// order, then those whose transaction never came (by reported_at, then unknown), then the
    /// lines that do not decode.
    pub fn rest(&mut self) -> Vec<&LabelLine> {
        let mut out: Vec<usize> = Vec::new();
        while let Some(Reverse((_, i))) = self.due.pop() {
            out.push(i);
        }
        let mut orphans: Vec<(Option<i64>, usize)> = self
            .waiting
            .drain()
            .flat_map(|(_, v)| v.into_iter().map(|(i, r)| (r, i)))
            .collect();
        orphans.sort_by_key(|(r, i)| (r.is_none(), r.unwrap_or(0), *i));
        out.extend(orphans.into_iter().map(|(_, i)| i));
        out.append(&mut self.bad);
        out.into_iter().map(|i| &self.lines[i]).collect()
    }
}

/// Sends lines, at most `rate` a second (0: as fast as possible), keeping at most 10,000 in
/// flight.
struct Sender<'a> {
    producer: &'a FutureProducer,
    rate: u64,
    n: u64,
    start: Instant,
    pending: futures::stream::FuturesUnordered<rdkafka::producer::future_producer::DeliveryFuture>,
}

impl Sender<'_> {
    async fn send(&mut self, topic: &str, key: Option<&str>, line: &[u8]) -> anyhow::Result<()> {
        use futures::StreamExt;
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(line);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        loop {
            match self.producer.send_result(rec) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    rec = back;
                    match self.pending.next().await {
                        Some(r) => check(r, topic)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => anyhow::bail!("produce to {topic} failed: {e}"),
            }
        }
        self.n += 1;
        while self.pending.len() >= 10_000 {
            if let Some(r) = self.pending.next().await {
                check(r, topic)?;
            }
        }
        if self.rate > 0 {
            let due = Duration::from_secs_f64(self.n as f64 / self.rate as f64);
            let el = self.start.elapsed();
            if due > el {
                tokio::time::sleep(due - el).await;
            }
        }
        Ok(())
    }

    async fn drain(&mut self, topic: &str) -> anyhow::Result<()> {
        use futures::StreamExt;
        while let Some(r) = self.pending.next().await {
            check(r, topic)?;
        }
        Ok(())
    }
}

/// Sends the transactions file, and the labels of `labels` as their event time comes.
async fn send_all(
    cfg: &Config,
    tx: &mut Sender<'_>,
    path: &Path,
    mut labels: Option<&mut LabelSchedule>,
    bar: &Progress,
    summary: &mut ProduceSummary,
) -> anyhow::Result<()> {
    let (tx_topic, label_topic) = (cfg.topics.transactions.as_str(), cfg.topics.labels.as_str());
    let mut r = open_lines(path)?;
    let mut buf = Vec::new();
    let mut now = i64::MIN;
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
        let head = head_of_line(line);
        tx.send(tx_topic, head.account_id.as_deref(), line).await?;
        summary.transactions += 1;
        bar.inc(1);
        let (Some(l), Some(ts)) = (labels.as_deref_mut(), head.ts) else {
            continue;
        };
        now = now.max(ts);
        if let Some(id) = &head.tx_id {
            l.sent(id, ts);
        }
        for d in l.due(now) {
            tx.send(label_topic, d.key.as_deref(), &d.line).await?;
            summary.labels += 1;
            bar.inc(1);
        }
    }
    if let Some(l) = labels {
        for d in l.rest() {
            tx.send(label_topic, d.key.as_deref(), &d.line).await?;
            summary.labels += 1;
            summary.labels_after_end += 1;
            bar.inc(1);
        }
    }
    tx.drain(tx_topic).await
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
/// written are checked or created. Labels are interleaved with the transactions in event time
/// ([`LabelSchedule`]; `label_delay_ms` for labels without `reported_at`).
pub async fn produce(
    cfg: &Config,
    transactions: &Path,
    labels: Option<&Path>,
    label_delay_ms: i64,
    rate: u64,
) -> anyhow::Result<ProduceSummary> {
    let tx_lines = check_input("--transactions", transactions)?;
    let mut schedule = labels
        .map(|l| {
            LabelSchedule::read(l, label_delay_ms).map_err(|source| InputError {
                flag: "--labels",
                path: l.to_path_buf(),
                source,
            })
        })
        .transpose()?;
    let label_lines = schedule.as_ref().map_or(0, |s| s.len() as u64);
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
    bar.set_message(&if with_labels {
        format!("-> {} + {}", cfg.topics.transactions, cfg.topics.labels)
    } else {
        format!("-> {}", cfg.topics.transactions)
    });
    let mut s = ProduceSummary::default();
    let mut sender = Sender {
        producer: &producer,
        rate,
        n: 0,
        start: Instant::now(),
        pending: futures::stream::FuturesUnordered::new(),
    };
    send_all(
        cfg,
        &mut sender,
        transactions,
        schedule.as_mut(),
        &bar,
        &mut s,
    )
    .await?;
    producer.flush(Timeout::After(Duration::from_secs(60)))?;
    bar.finish();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(tx: &str, reported: Option<&str>) -> Vec<u8> {
        match reported {
            Some(r) => {
                format!(r#"{{"tx_id":"{tx}","account_id":"c1","fraud":true,"reported_at":"{r}"}}"#)
            }
            None => format!(r#"{{"tx_id":"{tx}","account_id":"c1","fraud":true}}"#),
        }
        .into_bytes()
    }

    fn ms(s: &str) -> i64 {
        crate::decode::parse_ts(s).expect("time")
    }

    fn ids(v: Vec<&LabelLine>) -> Vec<String> {
        v.iter()
            .map(|l| {
                let l = decode_label(&l.line).expect("label");
                l.tx_id
            })
            .collect()
    }

    /// A label is due at its reported_at (or its transaction's time + the delay), never before
    /// its transaction was sent, once.
    #[test]
    fn labels_are_due_in_event_time() {
        let day = 86_400_000;
        let mut s = LabelSchedule::new(
            vec![
                label("a", Some("2018-04-03T00:00:00Z")),
                label("b", None),
                label("early", Some("2018-03-01T00:00:00Z")),
                label("orphan", Some("2018-04-02T00:00:00Z")),
                b"not json".to_vec(),
            ],
            7 * day,
        );
        assert_eq!(s.len(), 5);
        let t0 = ms("2018-04-01T00:00:00Z");
        assert!(
            s.due(t0 + 30 * day).is_empty(),
            "nothing before its transaction"
        );
        s.sent("a", t0);
        s.sent("b", t0 + 1000);
        assert!(s.due(t0 + day).is_empty());
        assert_eq!(ids(s.due(t0 + 2 * day)), ["a"]);
        assert!(s.due(t0 + 2 * day).is_empty(), "sent once");
        // Reported before its transaction (bad data): due with the transaction.
        s.sent("early", t0 + 3 * day);
        assert_eq!(ids(s.due(t0 + 3 * day)), ["early"]);
        assert!(
            s.due(t0 + 7 * day).is_empty(),
            "b is due 7 days after its transaction"
        );
        assert_eq!(ids(s.due(t0 + 7 * day + 1000)), ["b"]);
        let rest = s.rest();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1].line, b"not json");
        assert_eq!(rest[1].key, None);
        assert_eq!(rest[0].key.as_deref(), Some("c1"));
    }
}
