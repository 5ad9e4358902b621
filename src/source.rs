//! The consumer group on the transactions topic (cooperative rebalancing, offsets stored only
//! after delivery), the labels consumer, and topic checks at start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;

use crate::config::Config;
use crate::kafka_client;
use crate::metrics::Metrics;
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
}

/// Consumer callbacks: assignment tracking (for `/readyz`) and statistics (consumer lag).
pub struct WorkerContext {
    metrics: Metrics,
    assigned: Arc<Mutex<HashSet<(String, i32)>>>,
}

impl WorkerContext {
    /// A context reporting into `metrics`.
    pub fn new(metrics: Metrics) -> WorkerContext {
        WorkerContext {
            metrics,
            assigned: Arc::default(),
        }
    }

    /// The partitions currently assigned.
    pub fn assigned(&self) -> Arc<Mutex<HashSet<(String, i32)>>> {
        self.assigned.clone()
    }
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
    }
}

impl ConsumerContext for WorkerContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut set = lock(&self.assigned);
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    set.insert((e.topic().to_string(), e.partition()));
                }
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), assigned = set.len(), "Partitions assigned.");
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    set.remove(&(e.topic().to_string(), e.partition()));
                }
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), assigned = set.len(), "Partitions revoked.");
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
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(_, t)| {
            NewTopic::new(
                t,
                cfg.topics.partitions,
                TopicReplication::Fixed(cfg.topics.replication_factor),
            )
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
            "Created topic."
        );
    }
    Ok(created)
}
