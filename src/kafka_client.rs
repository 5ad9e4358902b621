//! Kafka client settings: the one place where every client fraudstream creates gets its
//! configuration (bootstrap servers, our fixed settings, and the `kafka.librdkafka` pass-through
//! table). Source, sink, warm-up, labels and `produce` all build their clients here.
//!
//! A pass-through setting goes only to the clients it is meant for, after librdkafka's own
//! table (CONFIGURATION.md, column C/P): a consumer setting (e.g. `max.poll.interval.ms`,
//! `fetch.max.bytes`, `isolation.level`) to the three consumers (the group consumer, the labels
//! consumer and the warm-up consumers), a producer setting (e.g. `linger.ms`,
//! `compression.type`) to the producers, any other setting (security, `client.id`,
//! `message.max.bytes`...) to every client, the admin client included. Every consumer gets
//! `session.timeout.ms`, so a `max.poll.interval.ms` valid for one is valid for all.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{Config, Delivery};

/// Which clients a librdkafka setting applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every client.
    Any,
    /// Consumers only.
    Consumer,
    /// Producers only.
    Producer,
}

/// The kind of client being configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A consumer (group, labels, warm-up).
    Consumer,
    /// A producer (alerts and dead letters, `produce`).
    Producer,
    /// The admin client (topic checks).
    Admin,
}

/// librdkafka's consumer-only settings (global and topic level, "C" in CONFIGURATION.md).
pub const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "isolation.level",
    "consume_cb",
    "rebalance_cb",
    "offset_commit_cb",
    "enable.partition.eof",
    "check.crcs",
    "auto.commit.enable",
    "auto.offset.reset",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "consume.callback.max.messages",
];

/// librdkafka's producer-only settings (global and topic level, "P" in CONFIGURATION.md).
pub const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "dr_cb",
    "dr_msg_cb",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
    "partitioner_cb",
    "msg_order_cmp",
];

/// Which clients `name` applies to.
pub fn scope(name: &str) -> Scope {
    if CONSUMER_ONLY.contains(&name) {
        Scope::Consumer
    } else if PRODUCER_ONLY.contains(&name) {
        Scope::Producer
    } else {
        Scope::Any
    }
}

fn applies(scope: Scope, role: Role) -> bool {
    matches!(
        (scope, role),
        (Scope::Any, _) | (Scope::Consumer, Role::Consumer) | (Scope::Producer, Role::Producer)
    )
}

/// Bootstrap servers and the pass-through settings meant for `role`.
pub fn common(cfg: &Config, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    pass_through(&mut c, cfg, role);
    c
}

fn pass_through(c: &mut ClientConfig, cfg: &Config, role: Role) {
    for (k, v) in &cfg.kafka.librdkafka {
        if applies(scope(k), role) {
            c.set(k, v.expose());
        }
    }
}

/// What every consumer gets: the session timeout (so `max.poll.interval.ms` is checked
/// against the same value everywhere), then the pass-through settings.
fn consumer(cfg: &Config) -> ClientConfig {
    consumer_with(cfg, &[])
}

/// [`consumer`] with fraudstream's defaults `defaults` before the pass-through settings (which
/// may override them).
fn consumer_with(cfg: &Config, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        );
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    pass_through(&mut c, cfg, Role::Consumer);
    c
}

/// The defaults of a consumer that pauses partitions for backpressure (the group consumer, the
/// merchant feed). librdkafka keeps one fetch request per broker in flight, and a resumed
/// partition joins only the next one: with the broker's long poll at librdkafka's default 500 ms
/// (the other partitions read to their end), every pause cost up to half a second. Measured on
/// 300,000 held-out transactions, one worker, 4 partitions: 17,000 -> 32,800 events/s
/// (`merchant_scope = "global"`), 21,800 -> 58,400 (`"partition"`). An idle consumer sends 20
/// empty fetches a second per broker instead of 2.
const PAUSING_CONSUMER: &[(&str, &str)] = &[("fetch.wait.max.ms", "50")];

/// The group consumer of the transactions topic: cooperative-sticky. At-least-once: offsets
/// stored by the partition tasks after delivery and auto-committed. Exactly-once: no offset
/// store, no auto-commit (offsets are committed only inside the producer's transactions), and
/// `isolation.level=read_committed` whatever the pass-through table says.
pub fn group_consumer(cfg: &Config) -> ClientConfig {
    let mut c = consumer_with(cfg, PAUSING_CONSUMER);
    c.set("group.id", &cfg.kafka.group_id);
    match cfg.kafka.delivery {
        Delivery::AtLeastOnce => c
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000"),
        Delivery::ExactlyOnce => c
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed"),
    };
    c.set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "statistics.interval.ms",
            cfg.kafka.statistics_interval_ms.to_string(),
        )
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset);
    if cfg.state.merchant_scope == crate::config::MerchantScope::Global {
        // A partition read to its end no longer holds the merchant windows back.
        c.set("enable.partition.eof", "true");
    }
    c
}

/// The merchant table's consumer of every partition of the transactions topic: assigned, never
/// commits, tells when it reaches a partition's end.
pub fn merchant_feed_consumer(cfg: &Config) -> ClientConfig {
    let mut c = consumer_with(cfg, PAUSING_CONSUMER);
    c.set("group.id", format!("{}.merchants", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    c
}

/// The labels consumer: assigned (no group membership), from the beginning, never commits.
pub fn labels_consumer(cfg: &Config) -> ClientConfig {
    let mut c = consumer(cfg);
    c.set(
        "group.id",
        format!("{}.labels.{}", cfg.kafka.group_id, std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("auto.offset.reset", "earliest");
    c
}

/// The warm-up consumer of one partition's history: assigned, never commits.
pub fn warmup_consumer(cfg: &Config) -> ClientConfig {
    let mut c = consumer(cfg);
    c.set("group.id", format!("{}.warmup", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// The producer of alerts, dead letters, the changelog and the snapshots: idempotent and
/// acks=all (the configuration refuses overrides of both), lz4, `linger.ms` 0 (latency mode: an
/// alert leaves at once; what queues while a request is in flight, a changelog flush, is still
/// batched). The pass-through settings come last, so an operator can change the batching
/// defaults (throughput mode: `linger.ms` 5 or more, see the README).
pub fn producer(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set("linger.ms", "0")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000");
    pass_through(&mut c, cfg, Role::Producer);
    c.set("enable.idempotence", "true").set("acks", "all");
    if cfg.kafka.delivery == Delivery::ExactlyOnce {
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        let timeout = cfg.kafka.transaction_timeout_ms;
        let msg_timeout = c
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(timeout)
            .min(timeout);
        c.set("transactional.id", &cfg.kafka.transactional_id)
            .set("transaction.timeout.ms", timeout.to_string())
            .set("message.timeout.ms", msg_timeout.to_string());
    }
    c
}

/// The admin client that checks and creates topics.
pub fn admin(cfg: &Config) -> ClientConfig {
    common(cfg, Role::Admin)
}

/// True for the end-of-partition notice (`enable.partition.eof`), which librdkafka also hands
/// to the client's error callback as a "global error" (rust-rdkafka #820): not an error.
pub fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

/// The context of the assigned helper consumers (merchant feed, warm-up, changelog and snapshot
/// restore): client errors and librdkafka warnings go to the log, end-of-partition notices
/// (which these consumers ask for) do not.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(facility = fac, message, "librdkafka.");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            tracing::warn!(error = %error, reason, "Kafka client error.");
        }
    }
}

impl ConsumerContext for QuietContext {}

/// An assigned helper consumer ([`QuietContext`]).
pub type HelperConsumer = BaseConsumer<QuietContext>;

/// Creates a helper consumer from `config`.
pub fn helper_consumer(config: &ClientConfig) -> Result<HelperConsumer, KafkaError> {
    config.create_with_context(QuietContext)
}

/// Reads `topic`/`partition` from its beginning to its end (where the end stands when the read
/// gets there) with a helper consumer, handing every message to `each`. Returns `Ok(false)`
/// when `stop` was cancelled first; an error when nothing came for 30 s before the end (no
/// leader yet, the broker away). Blocking. The changelog and the snapshot restores use it.
pub fn read_to_end(
    cfg: &Config,
    topic: &str,
    partition: i32,
    stop: &tokio_util::sync::CancellationToken,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<bool, KafkaError> {
    use rdkafka::consumer::Consumer;
    let mut cc = warmup_consumer(cfg);
    cc.set("enable.partition.eof", "true");
    let consumer = helper_consumer(&cc)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut idle = std::time::Instant::now();
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = std::time::Instant::now();
                each(&m);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(true),
            Some(Err(e)) => return Err(e),
            None if idle.elapsed() > std::time::Duration::from_secs(30) => {
                return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PassThrough;

    #[test]
    fn end_of_partition_is_not_a_client_error() {
        // How librdkafka's error callback hands it over (rust-rdkafka #820), and how poll does.
        assert!(is_partition_eof(&KafkaError::Global(
            RDKafkaErrorCode::PartitionEOF
        )));
        assert!(is_partition_eof(&KafkaError::PartitionEOF(3)));
        assert!(!is_partition_eof(&KafkaError::Global(
            RDKafkaErrorCode::AllBrokersDown
        )));
    }

    fn cfg_with(settings: &[(&str, &str)]) -> Config {
        let mut c = crate::config::defaults();
        for (k, v) in settings {
            c.kafka
                .librdkafka
                .insert(k.to_string(), PassThrough::Plain(v.to_string()));
        }
        c
    }

    #[test]
    fn settings_go_to_the_clients_they_are_meant_for() {
        let c = cfg_with(&[
            ("max.poll.interval.ms", "60000"),
            ("fetch.max.bytes", "1000000"),
            ("linger.ms", "20"),
            ("security.protocol", "PLAINTEXT"),
        ]);
        for (name, client) in [
            ("group", group_consumer(&c)),
            ("labels", labels_consumer(&c)),
            ("warm-up", warmup_consumer(&c)),
        ] {
            assert_eq!(client.get("max.poll.interval.ms"), Some("60000"), "{name}");
            assert_eq!(client.get("fetch.max.bytes"), Some("1000000"), "{name}");
            assert_eq!(client.get("session.timeout.ms"), Some("45000"), "{name}");
            assert_eq!(client.get("linger.ms"), None, "{name}");
            assert_eq!(client.get("security.protocol"), Some("PLAINTEXT"), "{name}");
        }
        let p = producer(&c);
        assert_eq!(p.get("linger.ms"), Some("20"));
        assert_eq!(p.get("max.poll.interval.ms"), None);
        assert_eq!(p.get("fetch.max.bytes"), None);
        assert_eq!(p.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        let a = admin(&c);
        assert_eq!(a.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(a.get("linger.ms"), None);
        assert_eq!(a.get("max.poll.interval.ms"), None);
    }

    #[test]
    fn pausing_consumers_long_poll_briefly_unless_told_otherwise() {
        let c = cfg_with(&[]);
        assert_eq!(group_consumer(&c).get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(
            merchant_feed_consumer(&c).get("fetch.wait.max.ms"),
            Some("50")
        );
        assert_eq!(labels_consumer(&c).get("fetch.wait.max.ms"), None);
        assert_eq!(producer(&c).get("linger.ms"), Some("0"));
        let c = cfg_with(&[("fetch.wait.max.ms", "500")]);
        assert_eq!(group_consumer(&c).get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(
            merchant_feed_consumer(&c).get("fetch.wait.max.ms"),
            Some("500")
        );
    }

    #[test]
    fn the_consumer_settings_make_every_consumer_start() {
        // The incident: valid for the group consumer, refused by the labels and warm-up
        // consumers that did not get the session timeout.
        let mut c = cfg_with(&[("max.poll.interval.ms", "6000")]);
        c.kafka.session_timeout_ms = 6000;
        for client in [group_consumer(&c), labels_consumer(&c), warmup_consumer(&c)] {
            let made: Result<rdkafka::consumer::BaseConsumer, _> = client.create();
            assert!(made.is_ok(), "{:?}", made.err());
        }
    }

    #[test]
    fn exactly_once_makes_the_producer_transactional_and_the_consumer_read_committed() {
        let mut c = cfg_with(&[("isolation.level", "read_uncommitted")]);
        let g = group_consumer(&c);
        assert_eq!(g.get("enable.auto.commit"), Some("true"));
        assert_eq!(producer(&c).get("transactional.id"), None);
        c.kafka.delivery = Delivery::ExactlyOnce;
        c.kafka.transactional_id = "w1".into();
        let g = group_consumer(&c);
        assert_eq!(g.get("enable.auto.commit"), Some("false"));
        assert_eq!(g.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(g.get("isolation.level"), Some("read_committed"));
        let p = producer(&c);
        assert_eq!(p.get("transactional.id"), Some("w1"));
        assert_eq!(p.get("transaction.timeout.ms"), Some("60000"));
        assert_eq!(p.get("message.timeout.ms"), Some("60000"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("isolation.level"), Scope::Consumer);
        assert_eq!(scope("compression.type"), Scope::Producer);
        assert_eq!(scope("sasl.mechanisms"), Scope::Any);
        assert_eq!(scope("message.max.bytes"), Scope::Any);
    }
}
