//! Chaos tests of delivery (issue 8) against the real broker: the worker killed with -9 in a
//! loop, a rebalance 1→2→1, the broker killed for ~20 s, a fuzz run with ~1 MB and malformed
//! messages, labels across a restart. Every event alerts (threshold 0), so the expected alerts
//! are the input's transaction ids; alerts are read with `read_committed` and counted by
//! transaction id: lost, duplicate, dead letters.
//!
//! The short versions run in CI. `scripts/chaos.sh` runs the long ones (`FRAUD_CHAOS_EVENTS`,
//! `FRAUD_CHAOS_KILLS`, `FRAUD_CHAOS_RATE`, and the `#[ignore]`d broker-kill test) through the
//! same code, with `FRAUD_CHAOS_DELIVERY` choosing the mode of the kill loop.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraudstream::config::{Config, Delivery};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::util::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(id: &str, i: usize) -> Vec<u8> {
    format!(
        r#"{{"tx_id":"{id}","ts":{},"account_id":"c{}","merchant_id":"m{}","amount":{}.5,"currency":"EUR"}}"#,
        1_522_540_800_000i64 + i as i64 * 1000,
        i % 211,
        i % 13,
        i % 90
    )
    .into_bytes()
}

/// What a read of the alerts found against the expected transaction ids.
#[derive(Debug, Default)]
pub struct Count {
    pub alerts: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub unexpected: usize,
    pub dead_letters: usize,
}

impl Count {
    fn of(ids: &[String], expected: &HashSet<String>, dead_letters: usize) -> Count {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        Count {
            alerts: ids.len(),
            lost: expected
                .iter()
                .filter(|e| !seen.contains_key(e.as_str()))
                .count(),
            duplicates: seen.values().map(|n| n - 1).sum(),
            unexpected: seen.keys().filter(|k| !expected.contains(**k)).count(),
            dead_letters,
        }
    }

    fn print(&self, scenario: &str) {
        eprintln!(
            "CHAOS {scenario}: alerts={} lost={} duplicates={} unexpected={} dead_letters={}",
            self.alerts, self.lost, self.duplicates, self.unexpected, self.dead_letters
        );
    }
}

/// Every message of `topic` a `read_committed` reader sees, up to the end (the last stable
/// offset) of every partition: (payload, headers present).
fn read_committed_all(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("chaos-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut parts = HashSet::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                .expect("tpl");
            parts.insert(p.id());
        }
    }
    c.assign(&tpl).expect("assign");
    let mut at_end = HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < parts.len() {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(m.payload().unwrap_or_default().to_vec());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

fn tx_ids(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("alert is JSON");
            v["tx_id"].as_str().expect("tx_id").to_string()
        })
        .collect()
}

fn count_alerts(cfg: &Config, expected: &HashSet<String>) -> Count {
    let alerts = read_committed_all(&cfg.kafka.bootstrap_servers, &cfg.topics.alerts);
    let dl = read_committed_all(&cfg.kafka.bootstrap_servers, &cfg.topics.dead_letter);
    Count::of(&tx_ids(&alerts), expected, dl.len())
}

/// The alerts (every event alerts) whose score differs from a fault-free `score` over the
/// same `events` (`score` writes six decimals): the state the restarts rebuilt, compared
/// event by event. Printed, not asserted: a live stream gives a few differences without any
/// fault (`FRAUD_CHAOS_KILLS=0`: 83 of 200,000 at 2,000/s), where one produce request's
/// partitions reach the broker's log, and so the readers, in another order than their event
/// times (see the README's limitations).
fn scores_differing(cfg: &Config, prefix: &str, events: usize) -> (usize, usize) {
    let dir = std::env::temp_dir().join(unique("chaos-scores"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("events.jsonl");
    let mut body = Vec::new();
    for i in 0..events {
        body.extend_from_slice(&event(&format!("{prefix}{i}"), i));
        body.push(b'\n');
    }
    std::fs::write(&file, body).expect("write");
    let model = fraudstream::model::Model::load(&cfg.model.path).expect("model");
    let engine = fraudstream::engine::Engine::new(model, Some(0.0), &cfg.state);
    let csv = dir.join("scores.csv");
    fraudstream::replay::score_file(&engine, &file, None, 0, &cfg.input, &csv).expect("score");
    let want: HashMap<String, f32> = std::fs::read_to_string(&csv)
        .expect("csv")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    let alerts = read_committed_all(&cfg.kafka.bootstrap_servers, &cfg.topics.alerts);
    let mut compared = 0;
    let differ = alerts
        .iter()
        .filter(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("alert is JSON");
            let (Some(id), Some(got)) = (v["tx_id"].as_str(), v["score"].as_f64()) else {
                return true;
            };
            compared += 1;
            want.get(id).is_none_or(|w| (got as f32 - w).abs() > 1e-6)
        })
        .count();
    (differ, compared)
}

/// A worker process (the binary, as an operator runs it), configured by environment.
struct Proc {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn worker_env(cfg: &Config, port: u16) -> Vec<(String, String)> {
    let k = &cfg.kafka;
    let t = &cfg.topics;
    [
        (
            "FRAUD__KAFKA__BOOTSTRAP_SERVERS",
            k.bootstrap_servers.clone(),
        ),
        ("FRAUD__KAFKA__GROUP_ID", k.group_id.clone()),
        ("FRAUD__KAFKA__DELIVERY", k.delivery.name().to_string()),
        ("FRAUD__KAFKA__TRANSACTIONAL_ID", k.transactional_id.clone()),
        (
            "FRAUD__KAFKA__SESSION_TIMEOUT_MS",
            k.session_timeout_ms.to_string(),
        ),
        ("FRAUD__KAFKA__STATISTICS_INTERVAL_MS", "1000".into()),
        (
            "FRAUD__SHUTDOWN__DRAIN_TIMEOUT_MS",
            cfg.drain_timeout_ms.to_string(),
        ),
        (
            "FRAUD__METRICS__STALL_TIMEOUT_MS",
            cfg.stall_timeout_ms.to_string(),
        ),
        ("FRAUD__TOPICS__TRANSACTIONS", t.transactions.clone()),
        ("FRAUD__TOPICS__ALERTS", t.alerts.clone()),
        ("FRAUD__TOPICS__DEAD_LETTER", t.dead_letter.clone()),
        ("FRAUD__TOPICS__LABELS", t.labels.clone()),
        ("FRAUD__TOPICS__PARTITIONS", t.partitions.to_string()),
        ("FRAUD__MODEL__PATH", cfg.model.path.display().to_string()),
        ("FRAUD__MODEL__THRESHOLD", "0".into()),
        ("FRAUD__METRICS__LISTEN", format!("127.0.0.1:{port}")),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Proc {
    /// Starts the binary; `instance`, when given, is its static group membership id (a
    /// restarted worker takes its partitions back at once, as a restarted pod does).
    fn start(cfg: &Config, instance: Option<&str>) -> Proc {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("chaos-cfg"));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("worker.toml");
        let table = match instance {
            Some(id) => format!("[kafka.librdkafka]\n\"group.instance.id\" = \"{id}\"\n"),
            None => String::new(),
        };
        std::fs::write(&file, table).expect("config file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fraudstream"))
            .current_dir(root())
            .arg("run")
            .arg("--config")
            .arg(&file)
            .envs(worker_env(cfg, port))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                l.lock().expect("log").push(line);
            }
        });
        Proc {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http_get(&format!("{}/metrics", self.url))
            .await
            .unwrap_or((0, String::new()));
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `prefix` reaches `at_least`, or the process exits (a failure).
    async fn wait_metric(&mut self, prefix: &str, at_least: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric(prefix).await >= at_least {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("worker exited ({status}): {}", self.tail());
            }
            assert!(
                Instant::now() < deadline,
                "{prefix} never reached {at_least}: {}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn tail(&self) -> String {
        let log = self.log.lock().expect("log");
        log[log.len().saturating_sub(40)..].join("\n")
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and a clean exit (0) within 60 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "worker exit {status}: {}", self.tail());
                return;
            }
            assert!(Instant::now() < deadline, "worker did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn chaos_config(name: &str, delivery: Delivery) -> Config {
    let mut cfg = test_config(name, 4);
    cfg.kafka.delivery = delivery;
    cfg.kafka.transactional_id = unique(&format!("{name}-txn"));
    cfg.kafka.session_timeout_ms = 6_000;
    cfg.drain_timeout_ms = 3_000;
    cfg.stall_timeout_ms = 5_000;
    cfg.model.threshold = Some(0.0);
    cfg
}

/// Produces `events` at about `rate` per second in batches of 100, keyed by account; the ids.
fn stream(
    topic: &str,
    prefix: &str,
    events: usize,
    rate: usize,
) -> (tokio::task::JoinHandle<()>, HashSet<String>) {
    let ids = (0..events).map(|i| format!("{prefix}{i}")).collect();
    let topic = topic.to_string();
    let prefix = prefix.to_string();
    let h = tokio::spawn(async move {
        let started = Instant::now();
        for b in 0..events.div_ceil(100) {
            let lines: Vec<Vec<u8>> = (b * 100..((b + 1) * 100).min(events))
                .map(|i| event(&format!("{prefix}{i}"), i))
                .collect();
            produce_lines(&topic, &lines).await;
            let due = started + Duration::from_secs_f64(((b + 1) * 100) as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    });
    (h, ids)
}

/// Waits until the group's committed offsets cover `events` messages.
async fn wait_committed(cfg: &Config, events: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (g, t) = (cfg.kafka.group_id.clone(), cfg.topics.transactions.clone());
        let n = cfg.topics.partitions;
        let c = tokio::task::spawn_blocking(move || committed(&g, &t, n))
            .await
            .expect("join");
        let sum: i64 = c.values().filter(|o| **o > 0).sum();
        if sum >= events as i64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {sum} of {events}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The kill -9 loop: the worker is killed `kills` times while a 4-partition stream flows, each
/// time once it committed (or decided) again, and restarted with the same transactional.id and
/// group instance.
async fn kill9_loop(delivery: Delivery, events: usize, kills: usize, rate: usize) -> Count {
    let name = match delivery {
        Delivery::ExactlyOnce => "kill9-eos",
        Delivery::AtLeastOnce => "kill9-alo",
    };
    let cfg = chaos_config(name, delivery);
    create_topics(&cfg).await;
    // No kills: the fault-free baseline, with the worker running through the stream as it
    // does in the kill loop (live, not a catch-up after the stream), so the score differences
    // of the runs with kills can be told from those a live stream has anyway.
    let live = (kills == 0).then(|| Proc::start(&cfg, Some("chaos-0")));
    let (producing, expected) = stream(&cfg.topics.transactions, "k", events, rate);
    for k in 0..kills {
        let mut w = Proc::start(&cfg, Some("chaos-0"));
        // Killed once the group's commits pass the next share of the stream, so the kills
        // spread over all of it.
        let due = (k + 1) * events / (kills + 1);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (g, t) = (cfg.kafka.group_id.clone(), cfg.topics.transactions.clone());
            let c = tokio::task::spawn_blocking(move || committed(&g, &t, 4))
                .await
                .expect("join");
            let sum: i64 = c.values().filter(|o| **o > 0).sum();
            if sum >= due as i64 {
                break;
            }
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("worker exited ({status}): {}", w.tail());
            }
            assert!(
                Instant::now() < deadline,
                "committed {sum}, never {due}: {}",
                w.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("kill -9 #{} at {due} committed", k + 1);
        w.kill9();
    }
    producing.await.expect("producer");
    let w = live.unwrap_or_else(|| Proc::start(&cfg, Some("chaos-0")));
    wait_committed(&cfg, events, Duration::from_secs(180)).await;
    w.stop();
    let cfg2 = cfg.clone();
    let c = tokio::task::spawn_blocking(move || count_alerts(&cfg2, &expected))
        .await
        .expect("join");
    c.print(&format!(
        "kill9 {} x{kills} ({events} events)",
        delivery.name()
    ));
    let (differ, compared) =
        tokio::task::spawn_blocking(move || scores_differing(&cfg, "k", events))
            .await
            .expect("join");
    eprintln!(
        "CHAOS kill9 {} x{kills}: {differ} of {compared} alert scores differ from a fault-free score run",
        delivery.name()
    );
    c
}

/// Incident: 200 k transactions, the worker killed with -9 seven times: 0 lost, 18,101
/// duplicate alerts. Exactly-once: none lost, none duplicated (short version; the long one is
/// `scripts/chaos.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_kill9_loop_loses_and_duplicates_nothing() {
    let delivery = match std::env::var("FRAUD_CHAOS_DELIVERY").as_deref() {
        Ok("at_least_once") => Delivery::AtLeastOnce,
        _ => Delivery::ExactlyOnce,
    };
    let c = kill9_loop(
        delivery,
        env_usize("FRAUD_CHAOS_EVENTS", 6_000),
        env_usize("FRAUD_CHAOS_KILLS", 3),
        env_usize("FRAUD_CHAOS_RATE", 1_000),
    )
    .await;
    assert_eq!(c.lost, 0, "{c:?}");
    assert_eq!(c.unexpected, 0, "{c:?}");
    assert_eq!(c.dead_letters, 0, "{c:?}");
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(c.duplicates, 0, "{c:?}");
    }
}

/// Rebalance 1→2→1 while events flow, exactly-once: none lost, none duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_rebalance_1_2_1_loses_and_duplicates_nothing() {
    let events = env_usize("FRAUD_CHAOS_EVENTS", 6_000);
    let rate = env_usize("FRAUD_CHAOS_RATE", 1_000) / 2;
    let cfg1 = chaos_config("rebal-eos", Delivery::ExactlyOnce);
    let mut cfg2 = cfg1.clone();
    cfg2.metrics_listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    cfg2.kafka.transactional_id = format!("{}-2", cfg1.kafka.transactional_id);
    create_topics(&cfg1).await;
    let (producing, expected) = stream(&cfg1.topics.transactions, "b", events, rate);
    let w1 = Worker::start(&cfg1);
    w1.owns_partitions(Duration::from_secs(60)).await;
    wait_for(&w1, "fraud_decisions_total", (events / 10) as f64).await;
    let w2 = Worker::start(&cfg2);
    w2.owns_partitions(Duration::from_secs(60)).await;
    let joined_at =
        w1.metric("fraud_decisions_total").await + w2.metric("fraud_decisions_total").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w2
        .metric("fraud_transactions_total{outcome=\"committed\"}")
        .await
        < 3.0
    {
        assert!(Instant::now() < deadline, "worker 2 never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decided2 = w2.metric("fraud_decisions_total").await;
    assert!(decided2 > 0.0, "worker 2 decided some");
    w2.stop().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w1.readyz().await != (200, "ready: 4 partitions assigned\n".to_string()) {
        assert!(
            Instant::now() < deadline,
            "worker 1 never got every partition back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producing.await.expect("producer");
    wait_committed(&cfg1, events, Duration::from_secs(120)).await;
    w1.stop().await;
    let c = tokio::task::spawn_blocking(move || count_alerts(&cfg1, &expected))
        .await
        .expect("join");
    c.print(&format!(
        "rebalance 1-2-1 exactly_once ({events} events, worker 2 joined after {joined_at}, decided {decided2})"
    ));
    assert_eq!((c.lost, c.duplicates, c.unexpected), (0, 0, 0), "{c:?}");
}

async fn wait_for(w: &Worker, prefix: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while w.metric(prefix).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{prefix} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fuzzed input: valid events, broken JSON, wrong types, random bytes, invalid UTF-8, empty
/// payloads, absurd values, and ~1 MB messages, valid JSON and junk, in exactly-once mode.
fn fuzzed(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let valid = event(&format!("f{i}"), i);
            match rng.gen_range(0..12) {
                0 => {
                    let cut = rng.gen_range(0..valid.len());
                    valid[..cut].to_vec()
                }
                1 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
                2 => Vec::new(),
                3 => br#"{"tx_id":5,"ts":"yesterday","account_id":null,"amount":"1e999"}"#.to_vec(),
                4 => format!(
                    r#"{{"tx_id":"f{i}","ts":1522540800000,"account_id":"c1","amount":-{i}.0}}"#
                )
                .into_bytes(),
                5 => {
                    let mut v = valid.clone();
                    let at = rng.gen_range(0..v.len());
                    v[at] = 0xff;
                    v
                }
                6 => format!(
                    r#"{{"tx_id":"f{i}","ts":99999999999999999,"account_id":"c1","amount":1.0}}"#
                )
                .into_bytes(),
                _ => valid,
            }
        })
        .collect()
}

/// A fuzz run with ~1 MB messages, a 500 kB one that the dead-letter topic refuses (its
/// `max.message.bytes` is 200 kB) and malformed JSON, exactly-once: no crash, and every input
/// accounted for: alerts + passes + dead letters = inputs (from the metrics), and the dead-letter
/// topic holds the dead letters, the three large ones truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_input_with_megabyte_messages_is_all_accounted_for() {
    let n = env_usize("FRAUD_CHAOS_FUZZ", 3_000);
    let cfg = chaos_config("fuzz", Delivery::ExactlyOnce);
    create_topic_with(
        &bootstrap(),
        &cfg.topics.transactions,
        4,
        &[("max.message.bytes", "2000000")],
    )
    .await;
    // A dead-letter topic that refuses what the producer would send: its max.message.bytes
    // (200 kB) below the producer's message.max.bytes (1 MB).
    create_topic_with(
        &bootstrap(),
        &cfg.topics.dead_letter,
        4,
        &[("max.message.bytes", "200000")],
    )
    .await;
    create_topics(&cfg).await;
    let mut inputs = fuzzed(n, 8);
    let mut big =
        br#"{"tx_id":"big","ts":1522540800000,"account_id":"c1","amount":1.0,"pad":""#.to_vec();
    big.resize(999_000, b'x');
    big.extend_from_slice(br#""}"#);
    let junk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    // 500 kB that lz4 cannot shrink: within the producer's limit, refused by the topic.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let refused: Vec<u8> = (0..500_000).map(|_| rng.gen()).collect();
    inputs.insert(n / 3, big);
    inputs.insert(n / 2, refused);
    inputs.insert(2 * n / 3, junk);
    produce_raw(&cfg.topics.transactions, &inputs, 2_000_000).await;
    let w = Worker::start(&cfg);
    w.owns_partitions(Duration::from_secs(60)).await;
    let total = inputs.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let accounted = loop {
        let decided = w.metric("fraud_decisions_total").await;
        let discarded = w.metric("fraud_messages_discarded_total").await;
        if decided + discarded >= total {
            break (decided, discarded);
        }
        assert!(
            Instant::now() < deadline,
            "{decided} decided + {discarded} dead-lettered of {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_committed(&cfg, inputs.len(), Duration::from_secs(60)).await;
    let aborted = w
        .metric("fraud_transactions_total{outcome=\"aborted\"}")
        .await;
    let truncated = w
        .metric("fraud_errors_total{error_code=\"dead_letter_truncated\"")
        .await;
    let skipped = w
        .metric("fraud_errors_total{error_code=\"dead_letter_refused\"")
        .await;
    w.stop().await;
    assert_eq!(
        (truncated, skipped),
        (3.0, 0.0),
        "the three large messages dead-lettered truncated (the 1 MB ones over the producer's \
         limit, the 500 kB one over the topic's), none skipped"
    );
    assert_eq!(
        aborted, 0.0,
        "no transaction aborted (a rewind would count events again)"
    );
    assert_eq!(
        accounted.0 + accounted.1,
        total,
        "alerts + passes + dead letters = inputs: {accounted:?}"
    );
    let c2 = cfg.clone();
    let (alerts, dl) = tokio::task::spawn_blocking(move || {
        (
            read_committed_all(&c2.kafka.bootstrap_servers, &c2.topics.alerts).len(),
            read_committed_all(&c2.kafka.bootstrap_servers, &c2.topics.dead_letter).len(),
        )
    })
    .await
    .expect("join");
    eprintln!(
        "CHAOS fuzz exactly_once: inputs={total} decided={} dead_lettered={} alerts_read={alerts} dead_letters_read={dl} truncated={truncated} (a dead-letter topic of max.message.bytes 200000)",
        accounted.0, accounted.1
    );
    assert_eq!(
        alerts as f64, accounted.0,
        "threshold 0: every decision is an alert"
    );
    assert_eq!(
        dl as f64, accounted.1,
        "every discarded message is on the dead-letter topic"
    );
}

/// The broker killed with -9 for ~20 s under an exactly-once stream: none lost, none
/// duplicated, `/readyz` not ready during the outage. Its own broker on other ports. Long:
/// run by `scripts/chaos.sh` (`--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long (20 s outage, own broker): scripts/chaos.sh runs it"]
async fn exactly_once_broker_kill9_loses_and_duplicates_nothing() {
    let events = env_usize("FRAUD_CHAOS_EVENTS", 20_000);
    let rate = env_usize("FRAUD_CHAOS_RATE", 500);
    let outage = Duration::from_secs(env_usize("FRAUD_CHAOS_OUTAGE_SECS", 20) as u64);
    let mut broker = tokio::task::spawn_blocking(|| OwnBroker::start("chaos-down"))
        .await
        .expect("join");
    let mut cfg = chaos_config("bkill", Delivery::ExactlyOnce);
    cfg.kafka.bootstrap_servers = broker.bootstrap();
    cfg.kafka.session_timeout_ms = 10_000;
    cfg.drain_timeout_ms = 5_000;
    cfg.stall_timeout_ms = 8_000;
    create_topics(&cfg).await;
    let ids: HashSet<String> = (0..events).map(|i| format!("o{i}")).collect();
    let mut w = Proc::start(&cfg, None);
    w.wait_metric("fraud_assigned_partitions", 4.0, Duration::from_secs(60))
        .await;
    // A third before the outage, the rest after it.
    let before = events / 3;
    let lines: Vec<Vec<u8>> = (0..before).map(|i| event(&format!("o{i}"), i)).collect();
    for chunk in lines.chunks(rate.max(100)) {
        produce_lines_to(&broker.bootstrap(), &cfg.topics.transactions, chunk).await;
    }
    w.wait_metric(
        "fraud_decisions_total",
        (before / 2) as f64,
        Duration::from_secs(60),
    )
    .await;
    let broker_down = tokio::task::spawn_blocking(move || {
        broker.kill9();
        broker
    });
    let killed = Instant::now();
    let mut not_ready = false;
    while killed.elapsed() < outage {
        let status = http_get(&format!("{}/readyz", w.url)).await.map(|r| r.0);
        not_ready |= status == Some(503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut broker = broker_down.await.expect("join");
    let restarting = Instant::now();
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .expect("join");
    eprintln!(
        "broker killed for {:.1} s, back {:.1} s after its restart (not ready seen: {not_ready})",
        killed.elapsed().as_secs_f64(),
        restarting.elapsed().as_secs_f64()
    );
    let lines: Vec<Vec<u8>> = (before..events)
        .map(|i| event(&format!("o{i}"), i))
        .collect();
    for chunk in lines.chunks(rate.max(100)) {
        produce_lines_to(&broker.bootstrap(), &cfg.topics.transactions, chunk).await;
    }
    eprintln!(
        "the rest produced {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (g, t, b) = (
            cfg.kafka.group_id.clone(),
            cfg.topics.transactions.clone(),
            broker.bootstrap(),
        );
        let sum: i64 = tokio::task::spawn_blocking(move || committed_at(&b, &g, &t, 4))
            .await
            .expect("join");
        if sum >= events as i64 {
            break;
        }
        if let Ok(Some(status)) = w.child.try_wait() {
            panic!("worker exited ({status}): {}", w.tail());
        }
        assert!(
            Instant::now() < deadline,
            "committed {sum} of {events}: {}",
            w.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let aborted = w
        .metric("fraud_transactions_total{outcome=\"aborted\"}")
        .await;
    w.stop();
    let c2 = cfg.clone();
    let c = tokio::task::spawn_blocking(move || count_alerts(&c2, &ids))
        .await
        .expect("join");
    c.print(&format!(
        "broker kill -9 {}s exactly_once ({events} events, {aborted} transactions aborted, readyz not ready during outage: {not_ready})",
        outage.as_secs()
    ));
    drop(broker);
    assert!(not_ready, "/readyz answered 200 throughout the outage");
    assert_eq!((c.lost, c.duplicates, c.unexpected), (0, 0, 0), "{c:?}");
}

/// Committed offsets of `group` on `topic` at `bootstrap`, summed.
fn committed_at(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(got) => got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => 0,
        Err(_) => 0,
    }
}

/// Labels across a restart, exactly-once: applied by the running worker, then the worker
/// restarted, and every label applied again on the rebuilt state (`fraud_labels_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_labels_survive_a_restart() {
    let mut cfg = chaos_config("relabel-eos", Delivery::ExactlyOnce);
    cfg.topics.partitions = 1;
    cfg.model.threshold = None;
    create_topics(&cfg).await;
    let n = 60;
    let lines: Vec<Vec<u8>> = (0..n).map(|i| event(&format!("l{i}"), i)).collect();
    produce_lines(&cfg.topics.transactions, &lines).await;
    let labels: Vec<Vec<u8>> = [3usize, 8, 21]
        .iter()
        .map(|i| {
            format!(
                r#"{{"tx_id":"l{i}","account_id":"c{}","fraud":true}}"#,
                i % 211
            )
            .into_bytes()
        })
        .collect();
    produce_lines(&cfg.topics.labels, &labels).await;
    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    wait_for(&w, "fraud_decisions_total", n as f64).await;
    // Applied before or after the transactions were decided: any outcome.
    wait_for(&w, "fraud_labels_total", 3.0).await;
    wait_committed(&cfg, n, Duration::from_secs(30)).await;
    w.stop().await;
    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    wait_for(&w, "fraud_labels_total", 3.0).await;
    let applied = w.metric("fraud_labels_total{outcome=\"applied\"}").await;
    let warmed = w.metric("fraud_state_warmup_events_total").await;
    let restored = w
        .metric("fraud_changelog_records_total{op=\"restored\"}")
        .await;
    eprintln!("CHAOS labels across a restart exactly_once: applied after restart={applied}/3, warm-up events={warmed}, changelog records restored={restored}");
    assert_eq!(applied, 3.0);
    // The committed history rebuilt from the changelog, written in the transactions: its
    // marker is the committed offset, nothing is replayed.
    assert_eq!(warmed, 0.0, "nothing replayed after the changelog");
    assert!(restored >= 2.0, "accounts and a marker restored");
    w.stop().await;
}

/// Produce → alert read back with `read_committed`, at `rate` per second for `secs`, every event
/// alerting; (p50, p99, max) in ms after the first two seconds.
async fn latency(delivery: Delivery, rate: usize, secs: usize) -> (f64, f64, f64, usize) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cfg = chaos_config(&format!("lat-{}", delivery.name()), delivery);
    create_topics(&cfg).await;
    let mut w = Proc::start(&cfg, None);
    w.wait_metric("fraud_assigned_partitions", 4.0, Duration::from_secs(60))
        .await;
    let total = rate * secs;
    let reader = latency_reader(
        &cfg.kafka.bootstrap_servers,
        &cfg.topics.alerts,
        total,
        secs,
    );
    // The same read of the transactions topic: what the broker alone costs, at the same time.
    let floor = latency_reader(
        &cfg.kafka.bootstrap_servers,
        &cfg.topics.transactions,
        total,
        secs,
    );
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut acks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let line = event(&format!("lat-{i}-{}", now_us()), i);
        let key = format!("c{}", i % 211);
        let rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&cfg.topics.transactions)
            .key(key.as_str())
            .payload(&line[..]);
        acks.push(p.send_result(rec).map_err(|(e, _)| e).expect("queued"));
    }
    for a in acks {
        let _ = a.await.expect("delivered");
    }
    let (got, floor) = tokio::task::spawn_blocking(move || {
        (
            reader.join().expect("reader"),
            floor.join().expect("floor reader"),
        )
    })
    .await
    .expect("join");
    // Where the time went, from the worker's own histograms.
    let (_, body) = http_get(&format!("{}/metrics", w.url))
        .await
        .unwrap_or((0, String::new()));
    for h in [
        "fraud_merchant_sync_wait_seconds",
        "fraud_processing_duration_seconds",
    ] {
        eprintln!(
            "CHAOS latency {} {h}: {}",
            delivery.name(),
            histogram(&body, h)
        );
    }
    eprintln!(
        "CHAOS latency {} fraud_merchant_sync_timeouts_total={} transactions committed={}",
        delivery.name(),
        w.metric("fraud_merchant_sync_timeouts_total").await,
        w.metric("fraud_transactions_total{outcome=\"committed\"}")
            .await
    );
    w.stop();
    let skip = rate * 2;
    let sorted = |f: &dyn Fn(&(usize, f64, f64)) -> f64| {
        let mut ms: Vec<f64> = got.iter().filter(|(i, ..)| *i >= skip).map(f).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        ms
    };
    let q = |ms: &[f64], f: f64| ms[((ms.len() as f64 * f) as usize).min(ms.len() - 1)];
    let mut broker: Vec<f64> = floor
        .iter()
        .filter(|(i, ..)| *i >= skip)
        .map(|g| g.1)
        .collect();
    broker.sort_by(|a, b| a.total_cmp(b));
    if !broker.is_empty() {
        eprintln!(
            "CHAOS latency {} broker alone (produce -> transaction read): p50={:.1} ms p99={:.1} ms",
            delivery.name(),
            q(&broker, 0.5),
            q(&broker, 0.99)
        );
    }
    let to_send = sorted(&|g| g.2);
    eprintln!(
        "CHAOS latency {} produce -> the worker's alert send (ms clock): p50={:.1} ms p99={:.1} ms",
        delivery.name(),
        q(&to_send, 0.5),
        q(&to_send, 0.99)
    );
    let ms = sorted(&|g| g.1);
    (q(&ms, 0.5), q(&ms, 0.99), ms[ms.len() - 1], got.len())
}

/// Reads `topic` from the beginning on a thread of its own until `total` latency-stamped
/// messages (alerts or transactions whose `tx_id` is `lat-<i>-<send time in µs>`) came:
/// (i, produce → read ms, produce → the message's own timestamp ms).
fn latency_reader(
    bootstrap: &str,
    topic: &str,
    total: usize,
    secs: usize,
) -> std::thread::JoinHandle<Vec<(usize, f64, f64)>> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("lat-reader"))
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "5")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let mut got = Vec::with_capacity(total);
        let deadline = Instant::now() + Duration::from_secs(secs as u64 + 60);
        while got.len() < total && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let at = now_us();
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
                let id = v["tx_id"].as_str().unwrap_or_default();
                let mut parts = id.split('-');
                let (Some(_), Some(i), Some(sent)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (i, sent): (usize, i64) = (i.parse().expect("i"), sent.parse().expect("sent"));
                // An alert's timestamp is the worker's send (CreateTime): it splits the
                // latency into the worker's part and the delivery's.
                let produced = m.timestamp().to_millis().unwrap_or(at / 1000) * 1000;
                got.push((
                    i,
                    (at - sent) as f64 / 1000.0,
                    (produced - sent) as f64 / 1000.0,
                ));
            }
        }
        got
    })
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A Prometheus histogram of `body` in words: count, mean and the bucket bounds holding the
/// median and the 99th percentile.
fn histogram(body: &str, name: &str) -> String {
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let le = rest.split('"').next().unwrap_or_default();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            buckets.push((le, value(l).unwrap_or(0.0)));
        } else if l.starts_with(&format!("{name}_sum")) {
            sum = value(l).unwrap_or(0.0);
        } else if l.starts_with(&format!("{name}_count")) {
            count = value(l).unwrap_or(0.0);
        }
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * count)
            .map_or(f64::NAN, |(le, _)| *le * 1000.0)
    };
    format!(
        "count={count} mean={:.3} ms p50<={} ms p99<={} ms",
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
        at(0.5),
        at(0.99)
    )
}

/// The latency cost of each delivery mode (README, "Delivery"): run by `scripts/chaos.sh
/// latency`, in release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (20 s per mode): scripts/chaos.sh latency"]
async fn delivery_latency_at_2k_per_second() {
    let rate = env_usize("FRAUD_CHAOS_RATE", 2_000);
    let secs = env_usize("FRAUD_CHAOS_SECS", 20);
    let modes = match std::env::var("FRAUD_CHAOS_DELIVERY").as_deref() {
        Ok("at_least_once") => vec![Delivery::AtLeastOnce],
        Ok("exactly_once") => vec![Delivery::ExactlyOnce],
        _ => vec![Delivery::AtLeastOnce, Delivery::ExactlyOnce],
    };
    for d in modes {
        let (p50, p99, max, n) = latency(d, rate, secs).await;
        eprintln!(
            "CHAOS latency {} at {rate}/s for {secs} s: produce -> alert read_committed p50={p50:.1} ms p99={p99:.1} ms max={max:.1} ms ({n} of {} alerts read)",
            d.name(),
            rate * secs
        );
        assert_eq!(n, rate * secs, "every alert read back");
    }
}
