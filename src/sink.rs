//! The alerts topic and the dead-letter topic: one producer, one place where a decision is sent.
//! Every send returns a future that resolves once Kafka acknowledged it; the partition task stores
//! the offset only after that (at-least-once).
//!
//! No poison pill: a dead letter that Kafka would refuse as a message (too large for the
//! producer's `message.max.bytes` once the headers are added, or for the dead-letter topic's
//! `max.message.bytes`, asked at start) is sent with its payload truncated at once, and one that
//! Kafka refuses anyway is sent again truncated, first to what fits the smaller limit, then to
//! [`TRUNCATED_MIN_BYTES`], with headers giving the original size and its SHA-256
//! ([`H_ORIGINAL_BYTES`], [`H_ORIGINAL_SHA256`], [`H_TRUNCATED`]). If even that is refused, the
//! send reports [`DeadLettered::Refused`]: the caller counts it and moves on. A send that fails
//! for any other reason (broker unreachable beyond `message.timeout.ms`) is a [`SinkError`].

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::decode::format_ts;

/// Dead-letter header: reason code (see [`crate::decode::DecodeError::reason`]).
pub const H_ERROR_CODE: &str = "fraud.error.code";
/// Dead-letter header: the error in words, naming field and value.
pub const H_ERROR_MESSAGE: &str = "fraud.error.message";
/// Dead-letter header: source topic.
pub const H_SOURCE_TOPIC: &str = "fraud.source.topic";
/// Dead-letter header: source partition.
pub const H_SOURCE_PARTITION: &str = "fraud.source.partition";
/// Dead-letter header: source offset.
pub const H_SOURCE_OFFSET: &str = "fraud.source.offset";
/// Dead-letter header: source message timestamp (epoch ms), when it had one.
pub const H_SOURCE_TIMESTAMP: &str = "fraud.source.timestamp";
/// Dead-letter header: when the worker dead-lettered it, RFC 3339.
pub const H_FAILED_AT: &str = "fraud.failed_at";
/// Dead-letter header of a truncated dead letter: `true`.
pub const H_TRUNCATED: &str = "fraud.truncated";
/// Dead-letter header of a truncated dead letter: the original payload's size in bytes.
pub const H_ORIGINAL_BYTES: &str = "fraud.original.bytes";
/// Dead-letter header of a truncated dead letter: the original payload's SHA-256, hex.
pub const H_ORIGINAL_SHA256: &str = "fraud.original.sha256";

/// The payload a dead letter keeps when the one cut to the producer's limit is refused too.
pub const TRUNCATED_MIN_BYTES: usize = 1024;

/// librdkafka's default `message.max.bytes` for a producer.
pub const DEFAULT_PRODUCER_MAX_BYTES: usize = 1_000_000;

/// Room left for librdkafka's per-message overhead when a payload is cut to the limit.
const FRAMING_BYTES: usize = 512;

/// A send that failed for good (after librdkafka's own retries).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Kafka refused or timed out.
    #[error("cannot produce to {topic}: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// The cause.
        source: KafkaError,
    },
}

impl SinkError {
    /// True when Kafka refused this very message (size, record checks, topic policy): sending it
    /// again unchanged fails again, while a smaller one may pass.
    pub fn is_refusal(&self) -> bool {
        let SinkError::Produce { source, .. } = self;
        is_refusal(source)
    }
}

/// Errors that refuse one message rather than the connection.
fn is_refusal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}

/// Where a dead letter came from and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Reason code.
    pub code: &'a str,
    /// Message, naming field and value.
    pub message: String,
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Source timestamp, epoch ms.
    pub timestamp_ms: Option<i64>,
}

/// How a dead letter went out.
#[derive(Debug)]
pub enum DeadLettered {
    /// The original bytes, unchanged.
    Whole,
    /// Truncated to `kept` of `original` bytes.
    Truncated {
        /// Payload bytes sent.
        kept: usize,
        /// Payload bytes of the original.
        original: usize,
    },
    /// Refused even truncated: not on the dead-letter topic.
    Refused(KafkaError),
}

/// Records to send in order: key, and value (`None`: a tombstone).
pub type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The producer for alerts and dead letters.
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    alerts: String,
    dead_letter: String,
    changelog: String,
    /// What a dead letter may take, uncompressed: the producer's limit, or less when the
    /// dead-letter topic's `max.message.bytes` is lower (see [`Sink::with`]).
    dead_letter_max_bytes: usize,
}

impl Sink {
    /// Creates the producer: idempotent, acks=all, lz4; transactional in exactly-once mode
    /// (then [`crate::pipeline`]'s commit cycle calls `init_transactions` before any send).
    /// `dead_letter_topic_max` is the dead-letter topic's `max.message.bytes` when known (see
    /// `Sink::with`).
    pub fn new(cfg: &Config, dead_letter_topic_max: Option<usize>) -> Result<Sink, KafkaError> {
        Sink::with(
            cfg,
            crate::kafka_client::producer(cfg),
            dead_letter_topic_max,
        )
    }

    /// A producer that is never transactional (the labels task's dead letters, which no
    /// transaction covers), whatever `kafka.delivery`.
    pub fn non_transactional(
        cfg: &Config,
        dead_letter_topic_max: Option<usize>,
    ) -> Result<Sink, KafkaError> {
        let mut c = cfg.clone();
        c.kafka.delivery = crate::config::Delivery::AtLeastOnce;
        Sink::with(&c, crate::kafka_client::producer(&c), dead_letter_topic_max)
    }

    /// The dead-letter topic's `max.message.bytes` bounds a record *batch* after compression,
    /// and lz4 can grow incompressible data by 1/255: so a dead letter takes at most
    /// `topic_max × 254/255` less [`FRAMING_BYTES`] uncompressed, and the producer's
    /// `batch.size` is lowered to that too (librdkafka would otherwise batch several dead
    /// letters past the topic's limit). Without both, a dead letter within the producer's limit
    /// but over the topic's is refused by the broker, which in exactly-once mode aborts the
    /// transaction, and the rewind meets the same message again: a poison pill.
    fn with(
        cfg: &Config,
        mut client: rdkafka::ClientConfig,
        dead_letter_topic_max: Option<usize>,
    ) -> Result<Sink, KafkaError> {
        let max_message_bytes = cfg
            .kafka
            .librdkafka
            .get("message.max.bytes")
            .and_then(|v| v.expose().parse().ok())
            .unwrap_or(DEFAULT_PRODUCER_MAX_BYTES);
        let mut dead_letter_max_bytes = max_message_bytes;
        if let Some(t) = dead_letter_topic_max {
            let fits = (t - t / 255).saturating_sub(FRAMING_BYTES);
            if fits < dead_letter_max_bytes {
                dead_letter_max_bytes = fits.max(TRUNCATED_MIN_BYTES * 2);
                let batch = client
                    .get("batch.size")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(DEFAULT_PRODUCER_MAX_BYTES);
                if batch > dead_letter_max_bytes {
                    client.set("batch.size", dead_letter_max_bytes.to_string());
                }
            }
        }
        Ok(Sink {
            producer: client.create()?,
            alerts: cfg.topics.alerts.clone(),
            dead_letter: cfg.topics.dead_letter.clone(),
            changelog: cfg.changelog_topic(),
            dead_letter_max_bytes,
        })
    }

    /// Sends an alert, key = account_id; resolves when acknowledged.
    pub fn send_alert(
        &self,
        account_id: &str,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send + 'static {
        let producer = self.producer.clone();
        let topic = self.alerts.clone();
        let key = account_id.as_bytes().to_vec();
        async move {
            let rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).key(&key[..]).payload(&payload[..]);
            deliver(&producer, rec, &topic).await
        }
    }

    /// Sends records (key, value; `None`: a tombstone) to `partition` of the state changelog,
    /// enqueued in their order (so a flush's marker lands after its accounts); resolves with the
    /// records sent once all are acknowledged.
    pub fn send_changelog(
        &self,
        partition: i32,
        records: Records,
    ) -> impl std::future::Future<Output = Result<usize, SinkError>> + Send + 'static {
        self.send_records(self.changelog.clone(), partition, records)
    }

    /// Sends records (key, value; `None`: a tombstone) to `partition` of `topic`, enqueued in
    /// their order; resolves with the records sent once all are acknowledged. Needs a Tokio
    /// runtime (it waits for room in the producer's queue).
    pub fn send_records(
        &self,
        topic: String,
        partition: i32,
        records: Records,
    ) -> impl std::future::Future<Output = Result<usize, SinkError>> + Send + 'static {
        let producer = self.producer.clone();
        async move {
            let err = |source| SinkError::Produce {
                topic: topic.clone(),
                source,
            };
            let mut pending = Vec::with_capacity(records.len());
            for (k, v) in &records {
                let mut rec: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&topic).partition(partition).key(&k[..]);
                if let Some(v) = v {
                    rec = rec.payload(&v[..]);
                }
                loop {
                    match producer.send_result(rec) {
                        Ok(f) => {
                            pending.push(f);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            // Wait for room, keeping the order.
                            rec = r;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => return Err(err(e)),
                    }
                }
            }
            for f in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(err(e)),
                    Err(_) => return Err(err(KafkaError::Canceled)),
                }
            }
            Ok(records.len())
        }
    }

    /// Sends the original bytes to the dead-letter topic with headers naming the error;
    /// truncated if Kafka refuses them whole (see the module header).
    pub fn send_dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        dl: &DeadLetter<'_>,
    ) -> impl std::future::Future<Output = Result<DeadLettered, SinkError>> + Send + 'static {
        let mut headers: Vec<(&'static str, String)> = vec![
            (H_ERROR_CODE, dl.code.to_string()),
            (H_ERROR_MESSAGE, dl.message.clone()),
            (H_SOURCE_TOPIC, dl.topic.to_string()),
            (H_SOURCE_PARTITION, dl.partition.to_string()),
            (H_SOURCE_OFFSET, dl.offset.to_string()),
            (
                H_FAILED_AT,
                format_ts(chrono::Utc::now().timestamp_millis()),
            ),
        ];
        if let Some(ts) = dl.timestamp_ms {
            headers.push((H_SOURCE_TIMESTAMP, ts.to_string()));
        }
        let producer = self.producer.clone();
        let topic = self.dead_letter.clone();
        let key = key.map(<[u8]>::to_vec);
        let payload = payload.map(<[u8]>::to_vec);
        let limit = self.dead_letter_max_bytes;
        async move {
            let body = payload.as_deref().unwrap_or_default();
            let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
            let key_bytes = key.as_ref().map_or(0, Vec::len);
            // Whole, then cut to what fits the producer's limit, then the last resort.
            let mut attempts = Vec::with_capacity(3);
            if body.len() + key_bytes + header_bytes + FRAMING_BYTES <= limit {
                attempts.push(None);
            }
            let fit = limit.saturating_sub(key_bytes + header_bytes + 300 + FRAMING_BYTES);
            if fit < body.len() && fit > TRUNCATED_MIN_BYTES {
                attempts.push(Some(fit));
            }
            if TRUNCATED_MIN_BYTES < body.len() {
                attempts.push(Some(TRUNCATED_MIN_BYTES));
            }
            if attempts.is_empty() {
                attempts.push(None);
            }
            let digest = hex::encode(Sha256::digest(body));
            let mut refused = None;
            for cut in attempts {
                let mut h = OwnedHeaders::new_with_capacity(headers.len() + 3);
                for (k, v) in &headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v.as_str()),
                    });
                }
                let original = body.len().to_string();
                if cut.is_some() {
                    h = h
                        .insert(Header {
                            key: H_TRUNCATED,
                            value: Some("true"),
                        })
                        .insert(Header {
                            key: H_ORIGINAL_BYTES,
                            value: Some(&original),
                        })
                        .insert(Header {
                            key: H_ORIGINAL_SHA256,
                            value: Some(&digest),
                        });
                }
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(h);
                if let Some(k) = &key {
                    rec = rec.key(&k[..]);
                }
                if payload.is_some() {
                    rec = rec.payload(&body[..cut.unwrap_or(body.len()).min(body.len())]);
                }
                match deliver(&producer, rec, &topic).await {
                    Ok(()) => {
                        return Ok(match cut {
                            None => DeadLettered::Whole,
                            Some(kept) => DeadLettered::Truncated {
                                kept,
                                original: body.len(),
                            },
                        })
                    }
                    Err(e) if e.is_refusal() => {
                        tracing::debug!(topic = %topic, bytes = cut.unwrap_or(body.len()), error = %e, "Dead letter refused; trying smaller.");
                        let SinkError::Produce { source, .. } = e;
                        refused = Some(source);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(DeadLettered::Refused(refused.unwrap_or(
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            )))
        }
    }

    /// The producer, for the transactional calls of exactly-once mode.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Waits for every queued message.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

/// Queues (waiting while the local queue is full) and waits for the acknowledgement.
async fn deliver(
    producer: &FutureProducer,
    rec: FutureRecord<'_, [u8], [u8]>,
    topic: &str,
) -> Result<(), SinkError> {
    producer
        .send(rec, Timeout::After(Duration::from_secs(60)))
        .await
        .map(|_| ())
        .map_err(|(source, _)| SinkError::Produce {
            topic: topic.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_from_outages() {
        let refused = SinkError::Produce {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        };
        assert!(refused.is_refusal());
        let down = SinkError::Produce {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert!(!down.is_refusal());
    }
}
