//! The consumer group on the transactions topic (cooperative rebalancing handed to the
//! pipeline's [`RebalanceListener`], offsets stored only after delivery), the labels consumer,
//! and topic checks at start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::TopicPartitionList;

use crate::config::Config;
use crate::http::Health;
use crate::kafka_client;
use crate::metrics::{self, Metrics};
use crate::state::lock;

/// A start-up failure of the source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Broker unreachable or refused.
    #[error("kafka at {bootstrap}: {source}")]
    Kafka {
        /// Where.
        bootstrap: String,
        /// The cause.
        source: rdkafka::error::KafkaError,
    },
    /// A topic is missing and `topics.create` is false.
    #[error("topic {topic:?} ({key}) does not exist and topics.create is false; create it or set topics.create = true")]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The config key naming it.
        key: &'static str,
    },
    /// Creating a topic failed.
    #[error("cannot create topic {topic:?}: {detail}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's words.
        detail: String,
    },
    /// The state changelog has fewer partitions than the transactions topic.
    #[error("topic {topic:?} (topics.changelog) has {has} partitions, the transactions topic {needs}: give it {needs} (kafka-topics.sh --alter --partitions), or name another with topics.changelog")]
    ChangelogPartitions {
        /// The changelog topic.
        topic: String,
        /// Its partitions.
        has: usize,
        /// The transactions topic's.
        needs: usize,
    },
    /// The brokers refused our credentials.
    #[error("authentication failed at {bootstrap} for user {user:?} with SASL mechanism {mechanism}: {detail}; check kafka.librdkafka \"sasl.username\" and \"sasl.password\" (and the user's SCRAM/PLAIN credentials on the brokers)")]
    Authentication {
        /// Where.
        bootstrap: String,
        /// `sasl.username` (empty when unset).
        user: String,
        /// `sasl.mechanisms` (librdkafka's default GSSAPI when unset).
        mechanism: String,
        /// librdkafka's words.
        detail: String,
    },
}

/// True for librdkafka's authentication failures (SASL handshake or credentials refused).
pub fn is_auth_error(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication)
}

/// The user and mechanism of the configuration, for messages: (`sasl.username`,
/// `sasl.mechanisms` or `sasl.mechanism`, default GSSAPI as librdkafka's).
pub fn sasl_identity(cfg: &Config) -> (String, String) {
    let get = |k: &str| cfg.kafka.librdkafka.get(k).map(|v| v.expose().to_string());
    let user = get("sasl.username").unwrap_or_default();
    let mechanism = get("sasl.mechanisms")
        .or_else(|| get("sasl.mechanism"))
        .unwrap_or_else(|| "GSSAPI".to_string());
    (user, mechanism)
}

/// An authentication failure of `cfg`'s credentials, with librdkafka's `detail`.
pub fn authentication_error(cfg: &Config, detail: &str) -> SourceError {
    let (user, mechanism) = sasl_identity(cfg);
    SourceError::Authentication {
        bootstrap: cfg.kafka.bootstrap_servers.clone(),
        user,
        mechanism,
        detail: detail.to_string(),
    }
}

/// Client callbacks of the short-lived clients (topic checks): remembers an authentication
/// failure reported by librdkafka's error callback, which otherwise only shows as a metadata
/// timeout ("BrokerTransportFailure").
#[derive(Default)]
pub struct AuthWatch {
    failure: Mutex<Option<String>>,
}

impl AuthWatch {
    /// librdkafka's words for the authentication failure, if one was reported.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }
}

/// The probe never produces: nothing is delivered.
impl rdkafka::producer::ProducerContext for AuthWatch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// True for a librdkafka log line reporting refused credentials or a failed SASL handshake.
pub fn is_auth_log(message: &str) -> bool {
    message.contains("SASL authentication error")
        || message.contains("Authentication failed")
        || message.contains("SASL handshake failed")
}

impl ClientContext for AuthWatch {
    // librdkafka logs from its own threads: this sees the failure even when nobody polls the
    // client's queue (the error callback needs a poll).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if is_auth_log(message) {
            lock(&self.failure).get_or_insert_with(|| message.to_string());
        } else if (level as i32) <= (rdkafka::config::RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(facility = fac, message, "librdkafka.");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_auth_error(&error) {
            lock(&self.failure).get_or_insert_with(|| reason.to_string());
        } else if !kafka_client::is_partition_eof(&error) {
            tracing::warn!(error = %error, reason, "Kafka client error.");
        }
    }
}

/// What the pipeline does when the group hands partitions over: called from librdkafka's
/// rebalance callback, on the thread polling the consumer.
pub trait RebalanceListener: Send + Sync {
    /// Partitions were added to this worker's assignment.
    fn assigned(&self, partitions: &[(String, i32)]);
    /// Partitions are being taken away: returns once their tasks have stopped (or the wait
    /// timed out and they are fenced), before librdkafka completes the revocation.
    fn revoking(&self, consumer: &BaseConsumer<WorkerContext>, partitions: &[(String, i32)]);
}

/// Consumer callbacks: rebalances (handed to the [`RebalanceListener`]), statistics (consumer
/// lag, broker and group state for `/readyz`) and errors (all brokers down).
pub struct WorkerContext {
    metrics: Metrics,
    health: Health,
    listener: Arc<dyn RebalanceListener>,
    /// `sasl.username` and mechanism, for the authentication failure message.
    identity: (String, String),
}

impl WorkerContext {
    /// A context reporting into `metrics` and `health`, telling `listener` about rebalances.
    pub fn new(
        metrics: Metrics,
        health: Health,
        listener: Arc<dyn RebalanceListener>,
    ) -> WorkerContext {
        WorkerContext {
            metrics,
            health,
            listener,
            identity: (String::new(), "GSSAPI".to_string()),
        }
    }

    /// Names `cfg`'s SASL user and mechanism in authentication failure logs.
    pub fn with_identity(mut self, cfg: &Config) -> WorkerContext {
        self.identity = sasl_identity(cfg);
        self
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Statistics list every partition the client knows of; only those held have a
                // meaningful lag (a revoked one's gauge was removed and stays removed).
                let held = self.health.epoch(topic, *partition).is_some();
                if *partition >= 0 && p.consumer_lag >= 0 && held {
                    self.metrics
                        .set_consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
        // Brokers learned from metadata (node id >= 0): down when none of them is up.
        let mut known = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .peekable();
        if known.peek().is_some() {
            let up = known.any(|b| b.state == "UP");
            self.health.set_broker_down(!up);
        }
        if let Some(g) = &statistics.cgrp {
            if g.state == "up" && g.join_state == "steady" {
                self.health.set_joined();
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_broker_down(true);
        }
        if is_auth_error(&error) {
            let (user, mechanism) = &self.identity;
            tracing::error!(user = %user, mechanism = %mechanism, reason, "Kafka authentication failed.");
        } else if !kafka_client::is_partition_eof(&error) {
            tracing::warn!(error = %error, reason, "Kafka client error.");
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            tracing::info!(partitions = ?revoked.iter().map(|p| p.1).collect::<Vec<_>>(), "Partitions being revoked: stopping their tasks.");
            self.listener.revoking(c, &revoked);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.health.set_joined();
        match rebalance {
            Rebalance::Assign(tpl) => {
                let added = partitions(tpl);
                self.listener.assigned(&added);
                self.metrics
                    .rebalanced(metrics::REBALANCE_ASSIGN, self.health.assigned());
                tracing::info!(partitions = ?added.iter().map(|p| p.1).collect::<Vec<_>>(), assigned = self.health.assigned(), "Partitions assigned.");
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    self.metrics.remove_consumer_lag(e.topic(), e.partition());
                }
                self.metrics
                    .rebalanced(metrics::REBALANCE_REVOKE, self.health.assigned());
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), assigned = self.health.assigned(), "Partitions revoked.");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Rebalance failed."),
        }
    }
}

/// The group consumer of the transactions topic.
pub fn transactions_consumer(
    cfg: &Config,
    ctx: WorkerContext,
) -> Result<StreamConsumer<WorkerContext>, SourceError> {
    kafka_client::group_consumer(cfg)
        .create_with_context(ctx.with_identity(cfg))
        .map_err(|source| SourceError::Kafka {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            source,
        })
}

/// Callbacks of the labels consumer: its lag (labels not yet applied) from librdkafka
/// statistics into `fraud_labels_consumer_lag`, and authentication failures named.
pub struct LabelsContext {
    metrics: Metrics,
    identity: (String, String),
}

impl ClientContext for LabelsContext {
    fn stats(&self, statistics: Statistics) {
        for t in statistics.topics.values() {
            for (partition, p) in &t.partitions {
                // The labels consumer never commits: lag is the end of the partition minus the
                // next offset the task reads.
                if *partition >= 0 && p.app_offset >= 0 && p.ls_offset >= 0 {
                    self.metrics
                        .set_labels_lag(*partition, (p.ls_offset - p.app_offset).max(0));
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_auth_error(&error) {
            let (user, mechanism) = &self.identity;
            tracing::error!(user = %user, mechanism = %mechanism, reason, "Kafka authentication failed.");
        } else if !kafka_client::is_partition_eof(&error) {
            tracing::warn!(error = %error, reason, "Kafka client error.");
        }
    }
}

impl ConsumerContext for LabelsContext {}

/// The labels consumer: every worker reads every label (assign, no group membership), from the
/// beginning, so each worker's state sees the frauds of its accounts whatever its partitions.
pub fn labels_consumer(
    cfg: &Config,
    metrics: Metrics,
) -> Result<StreamConsumer<LabelsContext>, SourceError> {
    let ctx = LabelsContext {
        metrics,
        identity: sasl_identity(cfg),
    };
    let mut c = kafka_client::labels_consumer(cfg);
    c.set(
        "statistics.interval.ms",
        cfg.kafka.statistics_interval_ms.to_string(),
    );
    c.create_with_context(ctx)
        .map_err(|source| SourceError::Kafka {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            source,
        })
}

/// `min.insync.replicas` for created topics: min(2, replication factor) when replicated, so an
/// acks=all write survives the loss of one broker; none (the broker's default) otherwise.
pub fn min_insync_replicas(replication_factor: i32) -> Option<i32> {
    (replication_factor > 1).then(|| replication_factor.min(2))
}

/// Cluster metadata within 15 s, asked in 1 s steps by a probe whose librdkafka events (logs
/// and errors) are polled in between, so that an authentication failure stops the wait with
/// [`SourceError::Authentication`] instead of ending in a metadata timeout.
fn fetch_metadata_watching(cfg: &Config) -> Result<rdkafka::metadata::Metadata, SourceError> {
    use rdkafka::producer::{BaseProducer, Producer};
    let kafka = |source| SourceError::Kafka {
        bootstrap: cfg.kafka.bootstrap_servers.clone(),
        source,
    };
    let probe: BaseProducer<AuthWatch> = kafka_client::common(cfg, kafka_client::Role::Admin)
        .create_with_context(AuthWatch::default())
        .map_err(kafka)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = probe
            .client()
            .fetch_metadata(None, Timeout::After(Duration::from_secs(1)));
        probe.poll(Duration::ZERO);
        if let Some(detail) = probe.context().failure() {
            return Err(authentication_error(cfg, &detail));
        }
        match r {
            Ok(md) => return Ok(md),
            Err(e) if std::time::Instant::now() >= deadline || !is_timeout(&e) => {
                return Err(kafka(e))
            }
            Err(_) => {}
        }
    }
}

fn is_timeout(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

/// Checks the four topics exist; creates the missing ones when `topics.create`.
/// Blocking: call from `spawn_blocking`.
pub fn ensure_topics(cfg: &Config) -> Result<Vec<String>, SourceError> {
    let wanted = [
        ("topics.transactions", cfg.topics.transactions.as_str()),
        ("topics.alerts", cfg.topics.alerts.as_str()),
        ("topics.dead_letter", cfg.topics.dead_letter.as_str()),
        ("topics.labels", cfg.topics.labels.as_str()),
    ];
    let created = ensure_these_topics(cfg, &wanted)?;
    if cfg.state.changelog {
        ensure_compacted(cfg, cfg.changelog_topic(), "topics.changelog", None)?;
    }
    if cfg.merchant_snapshots() {
        ensure_compacted(
            cfg,
            cfg.merchant_snapshot_topic(),
            "topics.merchant_snapshot",
            Some(1),
        )?;
    }
    Ok(created)
}

/// Checks a compacted state topic exists: the changelog with a partition for each partition of
/// the transactions topic (`partitions` `None`), or one of `partitions`; creates it when
/// missing and `topics.create` (compacted, 64 MB or 1-hour segments so compaction keeps
/// restores short).
fn ensure_compacted(
    cfg: &Config,
    topic: String,
    key: &'static str,
    partitions: Option<usize>,
) -> Result<(), SourceError> {
    let md = fetch_metadata_watching(cfg)?;
    let partitions_of = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    let needs = partitions.unwrap_or_else(|| {
        partitions_of(&cfg.topics.transactions).unwrap_or(cfg.topics.partitions as usize)
    });
    match partitions_of(&topic) {
        Some(has) if has >= needs => return Ok(()),
        Some(has) => {
            return Err(SourceError::ChangelogPartitions { topic, has, needs });
        }
        None if !cfg.topics.create => {
            return Err(SourceError::MissingTopic { topic, key });
        }
        None => {}
    }
    let admin: AdminClient<AuthWatch> = kafka_client::admin(cfg)
        .create_with_context(AuthWatch::default())
        .map_err(|source| SourceError::Kafka {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            source,
        })?;
    let min_isr = min_insync_replicas(cfg.topics.replication_factor).map(|n| n.to_string());
    let mut new = NewTopic::new(
        &topic,
        needs as i32,
        TopicReplication::Fixed(cfg.topics.replication_factor),
    )
    .set("cleanup.policy", "compact")
    .set("segment.bytes", "67108864")
    .set("segment.ms", "3600000")
    .set("min.cleanable.dirty.ratio", "0.1");
    if let Some(n) = &min_isr {
        new = new.set("min.insync.replicas", n);
    }
    let failed = |detail: String| SourceError::CreateTopic {
        topic: topic.clone(),
        detail,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let results = rt
        .block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .map_err(|e| failed(e.to_string()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(failed(code.to_string())),
        }
    }
    tracing::info!(topic = %topic, partitions = needs, "Created a state topic (compacted).");
    Ok(())
}

/// Checks the `wanted` topics (config key, name) exist; creates the missing ones when
/// `topics.create`; returns those created. Blocking: call from `spawn_blocking`.
pub fn ensure_these_topics(
    cfg: &Config,
    wanted: &[(&'static str, &str)],
) -> Result<Vec<String>, SourceError> {
    let kafka = |source| SourceError::Kafka {
        bootstrap: cfg.kafka.bootstrap_servers.clone(),
        source,
    };
    let md = fetch_metadata_watching(cfg)?;
    let existing: HashSet<&str> = md.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<(&'static str, &str)> = wanted
        .iter()
        .copied()
        .filter(|(_, t)| !existing.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !cfg.topics.create {
        let (key, topic) = missing[0];
        return Err(SourceError::MissingTopic {
            topic: topic.to_string(),
            key,
        });
    }
    let admin: AdminClient<AuthWatch> = kafka_client::admin(cfg)
        .create_with_context(AuthWatch::default())
        .map_err(kafka)?;
    let min_isr = min_insync_replicas(cfg.topics.replication_factor).map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(_, t)| {
            let topic = NewTopic::new(
                t,
                cfg.topics.partitions,
                TopicReplication::Fixed(cfg.topics.replication_factor),
            );
            match &min_isr {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::CreateTopic {
            topic: String::new(),
            detail: e.to_string(),
        })?;
    let results = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .map_err(kafka)?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(t) => created.push(t),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic = %t, "Topic created concurrently by another worker.");
            }
            Err((t, code)) => {
                let detail = match code {
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed => format!(
                        "{code}: user {:?} needs the Create ACL on the topic (or the cluster); or create the topics beforehand and set topics.create = false",
                        sasl_identity(cfg).0
                    ),
                    _ => code.to_string(),
                };
                return Err(SourceError::CreateTopic { topic: t, detail });
            }
        }
    }
    for t in &created {
        tracing::info!(
            topic = %t,
            partitions = cfg.topics.partitions,
            replication_factor = cfg.topics.replication_factor,
            min_insync_replicas = ?min_isr,
            "Created topic."
        );
    }
    Ok(created)
}

/// The `max.message.bytes` of `topic` (the largest record batch its brokers accept), asked of
/// the cluster with DescribeConfigs; `None` when it cannot be told (no DescribeConfigs ACL, an
/// old broker), logged. Blocking: call from `spawn_blocking`.
pub fn topic_max_message_bytes(cfg: &Config, topic: &str) -> Option<usize> {
    let admin: AdminClient<AuthWatch> =
        match kafka_client::admin(cfg).create_with_context(AuthWatch::default()) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(topic, error = %e, "Cannot ask the topic's max.message.bytes.");
                return None;
            }
        };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let asked = rt.block_on(admin.describe_configs(
        &[ResourceSpecifier::Topic(topic)],
        &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
    ));
    let found = match asked {
        Ok(results) => results.into_iter().find_map(|r| {
            r.ok()?
                .get("max.message.bytes")?
                .value
                .as_deref()?
                .parse::<usize>()
                .ok()
        }),
        Err(e) => {
            tracing::warn!(topic, error = %e, "Cannot ask the topic's max.message.bytes.");
            None
        }
    };
    if found.is_none() {
        tracing::warn!(
            topic,
            "The topic's max.message.bytes is unknown: dead letters are cut to the producer's limit only."
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_insync_replicas_follows_the_replication_factor() {
        assert_eq!(min_insync_replicas(1), None);
        assert_eq!(min_insync_replicas(2), Some(2));
        assert_eq!(min_insync_replicas(3), Some(2));
        assert_eq!(min_insync_replicas(5), Some(2));
    }

    /// librdkafka's authentication error becomes a message naming user and mechanism.
    #[test]
    fn authentication_failure_names_user_and_mechanism() {
        let mut cfg = crate::config::defaults();
        for (k, v) in [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "fraud"),
        ] {
            cfg.kafka
                .librdkafka
                .insert(k.into(), crate::config::PassThrough::Plain(v.into()));
        }
        let watch = AuthWatch::default();
        watch.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed: Invalid username or password",
        );
        watch.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "disconnected",
        );
        let detail = watch.failure().expect("recorded");
        assert!(is_auth_log("sasl_plaintext://127.0.0.1:19192/bootstrap: SASL authentication error: Authentication failed: Invalid username or password (after 303ms in state AUTH_REQ)"));
        assert!(!is_auth_log(
            "Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
        ));
        let msg = authentication_error(&cfg, &detail).to_string();
        assert!(msg.starts_with("authentication failed at 127.0.0.1:9092 for user \"fraud\" with SASL mechanism PLAIN: SASL authentication error"), "{msg}");
        assert!(msg.contains("sasl.password"), "{msg}");
        assert!(!is_auth_error(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
