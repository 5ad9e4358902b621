//! The labels task: every confirmed fraud on the labels topic, applied to the state.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decode::decode_label;
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::sink::{DeadLetter, Sink};
use crate::source;
use crate::state::LabelOutcome;

/// Reads every partition of the labels topic from the beginning and applies frauds to state.
pub(super) async fn labels_task(
    cfg: Arc<Config>,
    engine: Arc<Engine>,
    sink: Sink,
    metrics: Metrics,
    token: CancellationToken,
) {
    let consumer = match source::labels_consumer(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Labels consumer not started.");
            return;
        }
    };
    let topic = cfg.topics.labels.clone();
    let c = cfg.clone();
    let assigned = tokio::task::spawn_blocking(
        move || -> Result<StreamConsumer, rdkafka::error::KafkaError> {
            let md = consumer.fetch_metadata(Some(&c.topics.labels), Duration::from_secs(15))?;
            let mut tpl = TopicPartitionList::new();
            for t in md.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                }
            }
            consumer.assign(&tpl)?;
            Ok(consumer)
        },
    )
    .await;
    let consumer = match assigned {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::error!(topic = %topic, error = %e, "Cannot assign the labels topic.");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "Labels assignment task failed.");
            return;
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = consumer.recv() => match r {
                Ok(m) => match decode_label(m.payload().unwrap_or_default()) {
                    Ok(label) => {
                        let outcome = match engine.apply_label(&label) {
                            LabelOutcome::Applied => "applied",
                            LabelOutcome::AccountOnly => "account_only",
                            LabelOutcome::Genuine => "genuine",
                        };
                        metrics.label(outcome);
                    }
                    Err(e) => {
                        metrics.discarded(e.reason());
                        metrics.error(metrics::STAGE_PROCESSING, "bad_label");
                        tracing::warn!(topic = %topic, partition = m.partition(), offset = m.offset(), error = %e, "Bad label sent to the dead-letter topic.");
                        let dl = DeadLetter { code: e.reason(), message: e.to_string(), topic: &topic, partition: m.partition(), offset: m.offset(), timestamp_ms: m.timestamp().to_millis() };
                        if let Err(e) = sink.send_dead_letter(m.key(), m.payload(), &dl).await {
                            tracing::error!(error = %e, "Bad label not dead-lettered.");
                        }
                    }
                },
                Err(e) => {
                    metrics.error(metrics::STAGE_RECEIVING, "kafka_consume");
                    tracing::warn!(error = %e, "Labels consume error; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
