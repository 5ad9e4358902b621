//! The alerts topic and the dead-letter topic: one producer, one place where a decision is sent.
//! Every send returns a future that resolves once Kafka acknowledged it; the partition task stores
//! the offset only after that (at-least-once).

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

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

/// A send that failed for good (after librdkafka's own retries).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Kafka refused or timed out.
    #[error("cannot produce to {topic}: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// The cause.
        source: rdkafka::error::KafkaError,
    },
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

/// The producer for alerts and dead letters.
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    alerts: String,
    dead_letter: String,
}

impl Sink {
    /// Creates the producer: idempotent, acks=all, lz4.
    pub fn new(cfg: &Config) -> Result<Sink, rdkafka::error::KafkaError> {
        Ok(Sink {
            producer: crate::kafka_client::producer(cfg).create()?,
            alerts: cfg.topics.alerts.clone(),
            dead_letter: cfg.topics.dead_letter.clone(),
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

    /// Sends the original bytes to the dead-letter topic with headers naming the error.
    pub fn send_dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        dl: &DeadLetter<'_>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send + 'static {
        let partition = dl.partition.to_string();
        let offset = dl.offset.to_string();
        let failed_at = format_ts(chrono::Utc::now().timestamp_millis());
        let mut headers = OwnedHeaders::new_with_capacity(7)
            .insert(Header {
                key: H_ERROR_CODE,
                value: Some(dl.code),
            })
            .insert(Header {
                key: H_ERROR_MESSAGE,
                value: Some(&dl.message),
            })
            .insert(Header {
                key: H_SOURCE_TOPIC,
                value: Some(dl.topic),
            })
            .insert(Header {
                key: H_SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: H_SOURCE_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: H_FAILED_AT,
                value: Some(&failed_at),
            });
        if let Some(ts) = dl.timestamp_ms {
            headers = headers.insert(Header {
                key: H_SOURCE_TIMESTAMP,
                value: Some(&ts.to_string()),
            });
        }
        let producer = self.producer.clone();
        let topic = self.dead_letter.clone();
        let key = key.map(<[u8]>::to_vec);
        let payload = payload.map(<[u8]>::to_vec);
        async move {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
            if let Some(k) = &key {
                rec = rec.key(&k[..]);
            }
            if let Some(p) = &payload {
                rec = rec.payload(&p[..]);
            }
            deliver(&producer, rec, &topic).await
        }
    }

    /// Waits for every queued message.
    pub fn flush(&self, timeout: Duration) -> Result<(), rdkafka::error::KafkaError> {
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
