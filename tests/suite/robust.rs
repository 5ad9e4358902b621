//! Faults against the real broker: poison pills, rebalances, restarts with labels, a broker that
//! dies. Regression tests of issue 8, named after its incidents.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fraudstream::config::Config;
use sha2::{Digest, Sha256};

use super::util::*;

fn zero_threshold(mut cfg: Config) -> Config {
    // Every event alerts, so the alerts topic shows which events were processed.
    cfg.model.threshold = Some(0.0);
    cfg
}

fn tx(id: &str, i: usize) -> Vec<u8> {
    format!(
        r#"{{"tx_id":"{id}","ts":{},"account_id":"c{}","merchant_id":"m{}","amount":{}.5,"currency":"EUR"}}"#,
        1_522_540_800_000i64 + i as i64 * 1000,
        i % 37,
        i % 7,
        i % 90
    )
    .into_bytes()
}

fn numbered(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| tx(&format!("{prefix}{i}"), i)).collect()
}

fn alert_ids(msgs: &[Got]) -> Vec<String> {
    msgs.iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("alert is JSON");
            v["tx_id"].as_str().expect("tx_id").to_string()
        })
        .collect()
}

async fn wait_metric(w: &Worker, prefix: &str, at_least: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = w.metric(prefix).await;
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} is {v}, never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read(topic: &str, want: usize, timeout: Duration) -> Vec<Got> {
    let t = topic.to_string();
    tokio::task::spawn_blocking(move || read_topic(&t, want, timeout))
        .await
        .expect("join")
}

/// Incident: one 999,900-byte message (valid for the broker) made a dead letter larger than the
/// producer's limit; the worker exited, restarted on the same offset and exited again. Now the
/// dead letter goes out truncated with the original's size and digest, and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_message_is_dead_lettered_truncated_and_the_partition_moves_on() {
    let cfg = zero_threshold(test_config("big", 1));
    create_topic_with(
        &bootstrap(),
        &cfg.topics.transactions,
        1,
        &[("max.message.bytes", "2000000")],
    )
    .await;
    create_topics(&cfg).await;
    let mut big = br#"{"tx_id":"big","pad":""#.to_vec();
    big.resize(999_900 - 2, b'x');
    big.extend_from_slice(br#""}"#);
    assert_eq!(big.len(), 999_900);
    produce_raw(
        &cfg.topics.transactions,
        &[tx("g1", 1), big.clone(), tx("g2", 2)],
        2_000_000,
    )
    .await;
    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    let alerts = read(&cfg.topics.alerts, 2, Duration::from_secs(30)).await;
    let ids: HashSet<String> = alert_ids(&alerts).into_iter().collect();
    assert!(
        ids.contains("g1") && ids.contains("g2"),
        "the partition moved on past the big message: {ids:?}"
    );
    let dl = read(&cfg.topics.dead_letter, 1, Duration::from_secs(30)).await;
    assert_eq!(dl.len(), 1, "one dead letter");
    let d = &dl[0];
    assert_eq!(d.headers["fraud.error.code"], "oversized");
    assert_eq!(d.headers["fraud.source.offset"], "1");
    assert_eq!(d.headers["fraud.truncated"], "true");
    assert_eq!(d.headers["fraud.original.bytes"], "999900");
    assert_eq!(
        d.headers["fraud.original.sha256"],
        hex::encode(Sha256::digest(&big))
    );
    assert!(d.payload.len() < big.len() && !d.payload.is_empty());
    assert_eq!(
        &big[..d.payload.len()],
        &d.payload[..],
        "a prefix of the original"
    );
    assert_eq!(
        w.metric("fraud_errors_total{error_code=\"dead_letter_truncated\"")
            .await,
        1.0
    );
    w.stop().await;
    let c = committed(&cfg.kafka.group_id, &cfg.topics.transactions, 1);
    assert_eq!(c[&0], 3, "the committed offset is past the big message");
}

/// A dead letter the dead-letter topic refuses even truncated is skipped and counted: the
/// partition moves on, its offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_topic_refuses_is_skipped_and_counted() {
    let cfg = zero_threshold(test_config("refuse", 1));
    create_topic_with(
        &bootstrap(),
        &cfg.topics.dead_letter,
        1,
        &[("max.message.bytes", "300")],
    )
    .await;
    create_topics(&cfg).await;
    let bad = vec![b'#'; 5000];
    produce_raw(
        &cfg.topics.transactions,
        &[tx("g1", 1), bad, tx("g2", 2)],
        1_000_000,
    )
    .await;
    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    let alerts = read(&cfg.topics.alerts, 2, Duration::from_secs(30)).await;
    let ids: HashSet<String> = alert_ids(&alerts).into_iter().collect();
    assert!(ids.contains("g1") && ids.contains("g2"), "{ids:?}");
    wait_metric(
        &w,
        "fraud_errors_total{error_code=\"dead_letter_refused\"",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        w.metric("fraud_errors_total{error_code=\"kafka_produce\"")
            .await,
        0.0
    );
    w.stop().await;
    let c = committed(&cfg.kafka.group_id, &cfg.topics.transactions, 1);
    assert_eq!(c[&0], 3, "the committed offset is past the refused message");
}

/// Committed offsets of every partition, sampled until `stop`; fails on one going backwards.
fn watch_commits(
    group: String,
    topic: String,
    partitions: i32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut last: HashMap<i32, i64> = HashMap::new();
        let mut backwards = Vec::new();
        while !stop.load(Ordering::Acquire) {
            for (p, o) in committed(&group, &topic, partitions) {
                let prev = last.entry(p).or_insert(-1);
                if o >= 0 && o < *prev {
                    backwards.push(format!("partition {p}: {prev} -> {o}"));
                }
                if o >= 0 {
                    *prev = o;
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        backwards
    })
}

/// Incident: worker 1 → worker 2 joins → worker 2 leaves: a revoked partition's task kept
/// deciding its queue, and a partition coming back reused the old task (no warm-up, events
/// counted twice, stored offsets going backwards). Now: nothing lost, committed offsets never go
/// backwards, and a partition coming back gets a fresh task that warms up over exactly what the
/// other worker decided meanwhile (never over what this worker's state already holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_1_2_1_loses_nothing_and_committed_offsets_never_go_backwards() {
    let cfg1 = zero_threshold(test_config("rebal", 4));
    let mut cfg2 = cfg1.clone();
    cfg2.metrics_listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    create_topics(&cfg1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_commits(
        cfg1.kafka.group_id.clone(),
        cfg1.topics.transactions.clone(),
        4,
        stop.clone(),
    );
    let topic = cfg1.topics.transactions.clone();
    let produce_batches = |from: usize, to: usize| {
        let topic = topic.clone();
        tokio::spawn(async move {
            for b in from..to {
                produce_lines(&topic, &numbered(&format!("r{b}-"), 10)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Worker 1 alone.
    let w1 = Worker::start(&cfg1);
    w1.owns_partitions(Duration::from_secs(60)).await;
    produce_batches(0, 40).await.expect("produce");
    wait_metric(&w1, "fraud_decisions_total", 400.0, Duration::from_secs(60)).await;
    // Worker 2 joins while events flow: partitions move with decisions queued and in flight.
    let flowing = produce_batches(40, 100);
    let w2 = Worker::start(&cfg2);
    w2.owns_partitions(Duration::from_secs(60)).await;
    flowing.await.expect("produce");
    let deadline = Instant::now() + Duration::from_secs(60);
    while w1.metric("fraud_decisions_total").await + w2.metric("fraud_decisions_total").await
        < 1000.0
    {
        assert!(Instant::now() < deadline, "events of phase 2 not decided");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r2 = w2.metric("fraud_messages_received_total").await;
    assert!(r2 > 0.0, "worker 2 decided some");
    // Worker 2 leaves: worker 1 gets its partitions back, with fresh tasks.
    w2.stop().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w1.readyz().await != (200, "ready: 4 partitions assigned\n".to_string()) {
        assert!(
            Instant::now() < deadline,
            "worker 1 never got every partition back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warmed = w1.metric("fraud_state_warmup_events_total").await;
    produce_batches(100, 140).await.expect("produce");
    let total = 1400;
    let got = read(&cfg1.topics.alerts, total + 1, Duration::from_secs(60)).await;
    let ids = alert_ids(&got);
    let unique: HashSet<&String> = ids.iter().collect();
    let missing: Vec<String> = (0..140)
        .flat_map(|b| (0..10).map(move |i| format!("r{b}-{i}")))
        .filter(|id| !unique.contains(id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "lost events: {missing:?}");
    let duplicates = ids.len() - unique.len();
    eprintln!(
        "rebalance 1→2→1: {total} events, {} alerts, {duplicates} duplicates; worker 2 decided {r2}, worker 1 warmed up {warmed}",
        ids.len()
    );
    // The returning partitions' warm-up replays what worker 2 decided (less the events both
    // decided, which worker 1 holds already), nothing of worker 1's own history.
    assert!(
        warmed <= r2 && warmed >= r2 - duplicates as f64,
        "worker 1 warmed up {warmed}, worker 2 decided {r2}, {duplicates} duplicates"
    );
    assert_eq!(
        w1.metric("fraud_state_warmup_events_total").await,
        warmed,
        "one warm-up per returning partition"
    );
    w1.stop().await;
    stop.store(true, Ordering::Release);
    let backwards = watcher.join().expect("watcher");
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );
    let c = committed(&cfg1.kafka.group_id, &cfg1.topics.transactions, 4);
    assert_eq!(c.values().sum::<i64>(), total as i64, "{c:?}");
}

/// Incident: labels applied by a running worker, then the worker restarted: 301/301 applied,
/// then 0/301 (the labels topic was replayed before the warm-up had recreated the accounts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_survive_a_restart() {
    let cfg = test_config("relabel", 1);
    create_topics(&cfg).await;
    produce_lines(&cfg.topics.transactions, &numbered("l", 60)).await;
    let labels: Vec<Vec<u8>> = [3usize, 8, 21]
        .iter()
        .map(|i| format!(r#"{{"tx_id":"l{i}","account_id":"c{i}","fraud":true}}"#).into_bytes())
        .collect();
    produce_lines(&cfg.topics.labels, &labels).await;
    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    wait_metric(&w, "fraud_decisions_total", 60.0, Duration::from_secs(60)).await;
    let before = wait_metric(&w, "fraud_labels_total", 3.0, Duration::from_secs(30)).await;
    assert_eq!(before, 3.0);
    w.stop().await;

    let w = Worker::start(&cfg);
    w.ready(Duration::from_secs(60)).await;
    // The accounts come back from the state changelog (nothing left to replay: its marker is
    // the committed offset); the label lookup is filled again from the history before labels.
    assert_eq!(w.metric("fraud_state_warmup_events_total").await, 0.0);
    assert!(
        w.metric("fraud_changelog_records_total{op=\"restored\"}")
            .await
            >= 2.0,
        "accounts and a marker restored from the changelog"
    );
    wait_metric(&w, "fraud_labels_total", 3.0, Duration::from_secs(30)).await;
    assert_eq!(
        w.metric("fraud_labels_total{outcome=\"applied\"}").await,
        3.0,
        "every label applied to its account and merchant, rebuilt by the warm-up"
    );
    assert_eq!(
        w.metric("fraud_labels_total{outcome=\"account_only\"}")
            .await,
        0.0,
        "every label found its transaction's merchant in the rebuilt state"
    );
    w.stop().await;
}

/// With more workers than partitions, the one without partitions is a ready standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_partitions_is_a_ready_standby() {
    let cfg1 = test_config("standby", 1);
    let mut cfg2 = cfg1.clone();
    cfg2.metrics_listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    create_topics(&cfg1).await;
    let w1 = Worker::start(&cfg1);
    w1.owns_partitions(Duration::from_secs(60)).await;
    let w2 = Worker::start(&cfg2);
    w2.ready(Duration::from_secs(60)).await;
    assert_eq!(
        w2.readyz().await,
        (200, "ready: standby, no partitions assigned\n".to_string())
    );
    assert_eq!(
        w1.readyz().await,
        (200, "ready: 1 partition assigned\n".to_string())
    );
    w2.stop().await;
    w1.stop().await;
}

/// Incident: the broker killed -9 for 22 s, `/readyz` answered 200 throughout. Now it is not
/// ready while the broker is unreachable, and ready again (and deciding) once it is back. Runs
/// its own broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_broker_is_down_and_recovers() {
    let mut broker = tokio::task::spawn_blocking(|| OwnBroker::start("down"))
        .await
        .expect("join");
    let mut cfg = test_config("down", 1);
    cfg.kafka.bootstrap_servers = broker.bootstrap();
    // The group recovers from a coordinator restart within a session timeout.
    cfg.kafka.session_timeout_ms = 10_000;
    cfg.drain_timeout_ms = 5_000;
    cfg.stall_timeout_ms = 8_000;
    create_topics(&cfg).await;
    let w = Worker::start(&cfg);
    w.owns_partitions(Duration::from_secs(60)).await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.kill9();
        broker
    })
    .await
    .expect("join");
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let not_ready_after = loop {
        let (status, body) = w.readyz().await;
        if status == 503 {
            assert_eq!(body, "not ready: broker unreachable\n");
            break killed.elapsed();
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        http_get(&format!("{}/healthz", w.metrics_url))
            .await
            .map(|r| r.0),
        Some(200),
        "alive: the process still makes progress"
    );
    let mut broker = broker;
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .expect("join");
    let restarted = Instant::now();
    w.owns_partitions(Duration::from_secs(90)).await;
    eprintln!(
        "broker killed: not ready after {:.1} s; restarted: ready again after {:.1} s",
        not_ready_after.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
    produce_lines_to(
        &broker.bootstrap(),
        &cfg.topics.transactions,
        &numbered("d", 5),
    )
    .await;
    wait_metric(&w, "fraud_decisions_total", 5.0, Duration::from_secs(60)).await;
    w.stop().await;
    drop(broker);
}
