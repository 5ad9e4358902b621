//! The labels task: every confirmed fraud on the labels topic, applied to the state.
//!
//! Labels go on top of the rebuilt state: the task starts reading (from the beginning of the
//! labels topic) only once the worker joined the group and the warm-up of every partition
//! assigned to it is done, so a restarted worker applies its labels to accounts that the warm-up
//! has recreated. After an exactly-once rewind (the state cleared and rebuilt) the labels are
//! read again from the beginning once the state is warm. Partitions assigned later are warmed up under labels already applied (the
//! state keeps a label for an account it does not hold yet). A labels consumer that cannot
//! start makes `/readyz` not ready and is retried every [`RETRY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decode::decode_label;
use crate::engine::Engine;
use crate::http::Health;
use crate::metrics::{self, Metrics};
use crate::sink::{DeadLetter, DeadLettered, Sink};
use crate::source;
use crate::state::LabelOutcome;

/// Wait before a labels consumer that failed is started again.
const RETRY: Duration = Duration::from_secs(5);

/// What reports the labels task's problems to `/readyz`.
const WHO: &str = "labels";

/// Applies the labels topic to the state until `token` is cancelled; from the beginning again
/// after each rewind (`resets`, exactly-once), once the state is warmed up again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn labels_task(
    cfg: Arc<Config>,
    engine: Arc<Engine>,
    sink: Sink,
    mut resets: tokio::sync::watch::Receiver<u64>,
    metrics: Metrics,
    health: Health,
    token: CancellationToken,
    backfills: Arc<std::sync::atomic::AtomicUsize>,
) {
    // Without a group (broker down at start) the labels still go in after a session timeout.
    let started = Instant::now();
    let fallback = Duration::from_millis(cfg.kafka.session_timeout_ms);
    'applying: loop {
        resets.borrow_and_update();
        // Warm, and the label lookup filled again after a changelog restore (a label without
        // merchant_id/ts finds its transaction's merchant there).
        let idle = || backfills.load(std::sync::atomic::Ordering::Acquire) == 0;
        while !((health.warm() && idle()) || (!health.joined() && started.elapsed() > fallback)) {
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        tracing::info!(
            assigned = health.assigned(),
            "State warmed up: applying the labels topic."
        );
        loop {
            let consumer = match assign(&cfg, &metrics).await {
                Ok(c) => {
                    health.set_problem(WHO, None);
                    c
                }
                Err(e) => {
                    tracing::error!(topic = %cfg.topics.labels, error = %e, "Labels consumer not started; retrying.");
                    health.set_problem(WHO, Some(format!("labels task stopped: {e}")));
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            };
            tokio::select! {
                biased;
                _ = consume(&cfg, &consumer, &engine, &sink, &metrics, &token) => return,
                r = resets.changed() => {
                    if r.is_err() {
                        return;
                    }
                    tracing::info!("State rewound: applying the labels topic again once warmed up.");
                    continue 'applying;
                }
            }
        }
    }
}

/// The labels consumer, assigned every partition of the labels topic from the beginning.
async fn assign(
    cfg: &Arc<Config>,
    metrics: &Metrics,
) -> Result<StreamConsumer<source::LabelsContext>, String> {
    let consumer = source::labels_consumer(cfg, metrics.clone()).map_err(|e| e.to_string())?;
    let c = cfg.clone();
    tokio::task::spawn_blocking(
        move || -> Result<StreamConsumer<source::LabelsContext>, rdkafka::error::KafkaError> {
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
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot assign {}: {e}", cfg.topics.labels))
}

async fn consume(
    cfg: &Config,
    consumer: &StreamConsumer<source::LabelsContext>,
    engine: &Engine,
    sink: &Sink,
    metrics: &Metrics,
    token: &CancellationToken,
) {
    let topic = &cfg.topics.labels;
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
                        let dl = DeadLetter { code: e.reason(), message: e.to_string(), topic, partition: m.partition(), offset: m.offset(), timestamp_ms: m.timestamp().to_millis() };
                        match sink.send_dead_letter(m.key(), m.payload(), &dl).await {
                            Ok(DeadLettered::Whole) => {}
                            Ok(DeadLettered::Truncated { .. }) => metrics.error(metrics::STAGE_SENDING, metrics::DEAD_LETTER_TRUNCATED),
                            Ok(DeadLettered::Refused(e)) => {
                                metrics.error(metrics::STAGE_SENDING, metrics::DEAD_LETTER_REFUSED);
                                tracing::error!(error = %e, "Bad label refused by the dead-letter topic; skipped.");
                            }
                            Err(e) => tracing::error!(error = %e, "Bad label not dead-lettered."),
                        }
                    }
                },
                Err(e) => {
                    metrics.error(metrics::STAGE_RECEIVING, "kafka_consume");
                    tracing::warn!(error = %e, "Labels consume error; retrying.");
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
}
