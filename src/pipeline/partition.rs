//! The partition task: decode → state → features → model → decision → sink → offset store, for
//! one assigned partition, in order. Decisions are sent without waiting one by one; the task keeps
//! its in-flight sends in order and stores a message's offset only once its send (alert or dead
//! letter) and every earlier one were acknowledged, so a crash re-delivers rather than loses
//! (at-least-once). The produce-and-store step is [`PartitionTask::settle`].

use std::time::Instant;

use futures::future::{BoxFuture, Either, Ready};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use std::sync::Arc;
use tokio::sync::mpsc;

use super::{PipelineError, Shared};
use crate::decide::{alert_json, SourcePos, REASONS_PER_ALERT};
use crate::decode::decode;
use crate::metrics;
use crate::sink::{DeadLetter, SinkError};

/// Sends in flight per partition before the task waits for acknowledgements.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Messages queued per partition task.
pub const PARTITION_QUEUE: usize = 1024;

type Settled = (i64, Result<(), SinkError>, Instant);
type SettleFuture = Either<Ready<Settled>, BoxFuture<'static, Settled>>;

/// The task of one assigned partition.
pub(super) struct PartitionTask {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: String,
    pub(super) partition: i32,
}

impl PartitionTask {
    pub(super) async fn run(
        self,
        mut rx: mpsc::Receiver<OwnedMessage>,
    ) -> Result<(), PipelineError> {
        let mut inflight: FuturesOrdered<SettleFuture> = FuturesOrdered::new();
        let received = self
            .shared
            .metrics
            .received_counter(&self.topic, self.partition);
        let (alerts, passes) = self.shared.metrics.decision_counters();
        let mut warmed = self.shared.cfg.state.warmup_secs == 0;
        loop {
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => self.settle(done)?,
                msg = rx.recv(), if inflight.len() < MAX_IN_FLIGHT => match msg {
                    Some(m) => {
                        if !warmed {
                            warmed = true;
                            self.warm_up(m.offset()).await;
                        }
                        received.inc();
                        inflight.push_back(self.process(&m, &alerts, &passes));
                    }
                    None => break,
                },
            }
        }
        while let Some(done) = inflight.next().await {
            self.settle(done)?;
        }
        Ok(())
    }

    /// Rebuilds this partition's share of the state before its first decision: reads the
    /// partition from `state.warmup_secs` ago up to `until` (the first offset this task will
    /// decide, i.e. the committed one) and applies every valid transaction to the state, with
    /// no score and no output. A restarted worker, or one taking over a partition, so keeps
    /// its accounts' windows. Best effort: a failure is logged and processing goes on.
    async fn warm_up(&self, until: i64) {
        if until <= 0 {
            return;
        }
        let s = self.shared.clone();
        let topic = self.topic.clone();
        let partition = self.partition;
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            super::assignment::warm_up_blocking(&s, &topic, partition, until)
        })
        .await;
        match r {
            Ok(Ok(n)) => {
                self.shared.metrics.warmed_up(n);
                tracing::info!(
                    partition = self.partition,
                    events = n,
                    until_offset = until,
                    seconds = started.elapsed().as_secs_f64(),
                    "State warmed up from the partition's history."
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(partition = self.partition, error = %e, "State warm-up failed; continuing with the state as it is.")
            }
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "State warm-up task failed.")
            }
        }
    }

    /// Decides one message and returns the future of its delivery.
    fn process(
        &self,
        m: &OwnedMessage,
        alerts: &prometheus::IntCounter,
        passes: &prometheus::IntCounter,
    ) -> SettleFuture {
        let started = Instant::now();
        let offset = m.offset();
        let s = &self.shared;
        let payload = m.payload().unwrap_or_default();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let tx = match decode(payload, &s.cfg.input, now_ms) {
            Ok(tx) => tx,
            Err(e) => {
                s.metrics.discarded(e.reason());
                tracing::warn!(topic = %self.topic, partition = self.partition, offset, reason = e.reason(), error = %e, "Message sent to the dead-letter topic.");
                return self.dead_letter(m, e.reason(), e.to_string(), started);
            }
        };
        let t0 = Instant::now();
        let model = s.engine.current();
        let d = s.engine.process_with(&model, &tx);
        s.metrics.inference.observe(t0.elapsed().as_secs_f64());
        s.metrics
            .scored(d.score, (now_ms - tx.ts) as f64 / 1000.0, d.late);
        if !d.alert {
            passes.inc();
            return Either::Left(futures::future::ready((offset, Ok(()), started)));
        }
        alerts.inc();
        let reasons = s.engine.reasons(&model, &d, REASONS_PER_ALERT);
        let src = SourcePos {
            topic: &self.topic,
            partition: self.partition,
            offset,
        };
        // The payload decoded, so it is UTF-8 JSON.
        let raw = std::str::from_utf8(payload).unwrap_or("{}");
        match alert_json(
            &tx,
            raw,
            &d,
            s.engine.threshold_for(&model),
            model.version(),
            reasons,
            src,
            now_ms,
        ) {
            Ok(body) => {
                let fut = s.sink.send_alert(&tx.account_id, body);
                Either::Right(Box::pin(async move { (offset, fut.await, started) }))
            }
            Err(e) => {
                s.metrics.error(metrics::STAGE_SENDING, "serialize");
                tracing::error!(offset, error = %e, "Cannot serialise an alert.");
                self.dead_letter(m, "serialize", e.to_string(), started)
            }
        }
    }

    /// Sends `m` unchanged to the dead-letter topic with headers naming `code` and `message`.
    fn dead_letter(
        &self,
        m: &OwnedMessage,
        code: &str,
        message: String,
        started: Instant,
    ) -> SettleFuture {
        let offset = m.offset();
        let dl = DeadLetter {
            code,
            message,
            topic: &self.topic,
            partition: self.partition,
            offset,
            timestamp_ms: m.timestamp().to_millis(),
        };
        let fut = self.shared.sink.send_dead_letter(m.key(), m.payload(), &dl);
        Either::Right(Box::pin(async move { (offset, fut.await, started) }))
    }

    /// The one place where a delivered decision becomes a stored offset.
    fn settle(&self, (offset, result, started): Settled) -> Result<(), PipelineError> {
        let s = &self.shared;
        if let Err(e) = result {
            s.metrics.error(metrics::STAGE_SENDING, "kafka_produce");
            tracing::error!(topic = %self.topic, partition = self.partition, offset, error = %e, "Decision not delivered; stopping without storing its offset.");
            return Err(e.into());
        }
        if let Err(e) = s.consumer.store_offset(&self.topic, self.partition, offset) {
            // Typically the partition was revoked meanwhile: its new owner re-reads from the
            // last commit (at-least-once).
            s.metrics.error(metrics::STAGE_SENDING, "offset_store");
            tracing::debug!(partition = self.partition, offset, error = %e, "Offset not stored.");
        }
        s.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}
