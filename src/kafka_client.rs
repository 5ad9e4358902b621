//! Kafka client settings: the one place where every client fraudstream creates gets its
//! configuration (bootstrap servers, our fixed settings, and the `kafka.librdkafka` pass-through
//! table). Source, sink, warm-up, labels and `produce` all build their clients here.

use rdkafka::config::ClientConfig;

use crate::config::Config;

/// Bootstrap servers and the pass-through table: what every client gets.
pub fn common(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in &cfg.kafka.librdkafka {
        c.set(k, v.expose());
    }
    c
}

/// The group consumer of the transactions topic: cooperative-sticky, offsets stored by the
/// partition tasks after delivery and auto-committed.
pub fn group_consumer(cfg: &Config) -> ClientConfig {
    let mut c = common(cfg);
    c.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            cfg.kafka.statistics_interval_ms.to_string(),
        )
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset);
    c
}

/// The labels consumer: assigned (no group membership), from the beginning, never commits.
pub fn labels_consumer(cfg: &Config) -> ClientConfig {
    let mut c = common(cfg);
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
    let mut c = common(cfg);
    c.set("group.id", format!("{}.warmup", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// The producer of alerts and dead letters: idempotent, acks=all, lz4. The pass-through table
/// comes last, so an operator can change the batching defaults.
pub fn producer(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000");
    for (k, v) in &cfg.kafka.librdkafka {
        c.set(k, v.expose());
    }
    c
}

/// The admin client that checks and creates topics.
pub fn admin(cfg: &Config) -> ClientConfig {
    common(cfg)
}
