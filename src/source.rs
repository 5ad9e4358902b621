//! The consumer group on the transactions topic (cooperative rebalancing handed to the
//! pipeline's [`RebalanceListener`], offsets stored only after delivery), the labels consumer,
//! and topic checks at start.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::TopicPartitionList;

use crate::config::Config;
use crate::http::Health;
use crate::kafka_client;
use crate::metrics::Metrics;

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
        }
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
                if *partition >= 0 && p.consumer_lag >= 0 {
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
        tracing::warn!(error = %error, reason, "Kafka client error.");
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
                tracing::info!(partitions = ?added.iter().map(|p| p.1).collect::<Vec<_>>(), assigned = self.health.assigned(), "Partitions assigned.");
            }
            Rebalance::Revoke(tpl) => {
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
        .create_with_context(ctx)
        .map_err(|source| SourceError::Kafka {
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            source,
        })
}

/// The labels consumer: every worker reads every label (assign, no group membership), from the
/// beginning, so each worker's state sees the frauds of its accounts whatever its partitions.
pub fn labels_consumer(cfg: &Config) -> Result<StreamConsumer, SourceError> {
    kafka_client::labels_consumer(cfg)
        .create()
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

/// Checks the four topics exist; creates the missing ones when `topics.create`.
/// Blocking: call from `spawn_blocking`.
pub fn ensure_topics(cfg: &Config) -> Result<Vec<String>, SourceError> {
    let kafka = |source| SourceError::Kafka {
        bootstrap: cfg.kafka.bootstrap_servers.clone(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> =
        kafka_client::admin(cfg).create().map_err(kafka)?;
    let md = admin
        .inner()
        .fetch_metadata(None, Timeout::After(Duration::from_secs(15)))
        .map_err(kafka)?;
    let existing: HashSet<&str> = md.topics().iter().map(|t| t.name()).collect();
    let wanted = [
        ("topics.transactions", &cfg.topics.transactions),
        ("topics.alerts", &cfg.topics.alerts),
        ("topics.dead_letter", &cfg.topics.dead_letter),
        ("topics.labels", &cfg.topics.labels),
    ];
    let missing: Vec<(&'static str, &String)> = wanted
        .into_iter()
        .filter(|(_, t)| !existing.contains(t.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !cfg.topics.create {
        let (key, topic) = missing[0];
        return Err(SourceError::MissingTopic {
            topic: topic.clone(),
            key,
        });
    }
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
                return Err(SourceError::CreateTopic {
                    topic: t,
                    detail: code.to_string(),
                })
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
}
