//! The partition task: decode → state → features → model → decision → sink → offset store, for
//! one assigned partition, in order. Decisions are sent without waiting one by one; the task keeps
//! its in-flight sends in order and stores a message's offset only once its send (alert or dead
//! letter) and every earlier one were acknowledged, so a crash re-delivers rather than loses
//! (at-least-once). The produce-and-store step is [`PartitionTask::settle`].
//!
//! In exactly-once mode ([`super::txn`]) the task sends only through the gate of the commit
//! cycle, and a settled offset goes into the open transaction instead of the offset store.
//!
//! A task lives for one assignment of its partition. It first warms the state up from the
//! partition's history (up to the committed offset), then decides. On revocation
//! ([`TaskHandle::stop`]) it drops its queued messages, awaits its in-flight sends, stores
//! their offsets and ends; once [`TaskHandle::fence`] is set it stores nothing more.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Either, Ready};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::merchants::TaskClock;
use super::{PipelineError, Shared};
use crate::alert::{alert_json, SourcePos, REASONS_PER_ALERT};
use crate::decode::decode;
use crate::metrics::{self, Metrics};
use crate::sink::{DeadLetter, DeadLettered, Sink, SinkError};

/// Sends in flight per partition before the task waits for acknowledgements.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Messages queued per partition task.
pub const PARTITION_QUEUE: usize = 1024;

/// A message handed to a partition task, with its share of `input.max_buffered_bytes`, held
/// until its decision is settled.
pub(super) struct Queued {
    pub(super) msg: OwnedMessage,
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

type Settled = (
    i64,
    Result<(), SinkError>,
    Instant,
    Option<OwnedSemaphorePermit>,
);
type SettleFuture = Either<Ready<Settled>, BoxFuture<'static, Settled>>;

/// How the assignment controls one task.
#[derive(Clone)]
pub(super) struct TaskHandle {
    /// Assignment generation.
    pub(super) epoch: u64,
    /// Cancelled on revocation: stop deciding, drop the queue, settle what is in flight.
    pub(super) stop: CancellationToken,
    /// Cancelled when the task has ended (a drop guard: also on panic).
    pub(super) done: CancellationToken,
    /// Set once the partition is gone: no offset is stored any more.
    pub(super) fence: Arc<AtomicBool>,
    /// The next offset stored (the last decided + 1), -1 before the first.
    pub(super) stored: Arc<AtomicI64>,
}

impl TaskHandle {
    pub(super) fn new(epoch: u64) -> TaskHandle {
        TaskHandle {
            epoch,
            stop: CancellationToken::new(),
            done: CancellationToken::new(),
            fence: Arc::default(),
            stored: Arc::new(AtomicI64::new(-1)),
        }
    }
}

/// The task of one assignment of one partition.
pub(super) struct PartitionTask {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) handle: TaskHandle,
    /// The next offset of this partition not yet in the state, in this process (kept across
    /// assignments, so a partition coming back is warmed up only over what it missed).
    pub(super) applied: Arc<AtomicI64>,
    /// Where this task stands, for the merchant table (global merchant scope).
    pub(super) clock: Option<Arc<TaskClock>>,
    /// The partition's side of the state changelog (`state.changelog`).
    pub(super) changelog: Option<Arc<super::changelog::Changelog>>,
    /// What the warm-up restored from the changelog (the accounts that already hold events
    /// this task may decide again, at-least-once).
    pub(super) restored: Option<std::sync::OnceLock<super::changelog::Restored>>,
}

impl PartitionTask {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Queued>) -> Result<(), PipelineError> {
        let _done = self.handle.done.clone().drop_guard();
        let s = self.shared.clone();
        let warm = s.cfg.state.warmup_secs > 0;
        if warm {
            if let Some(until) = self.start_offset().await {
                self.warm_up(until).await;
            }
        }
        s.health
            .partition_warmed(&self.topic, self.partition, self.handle.epoch);
        let mut first = warm;
        let mut inflight: FuturesOrdered<SettleFuture> = FuturesOrdered::new();
        // At-least-once, the task writes its changed accounts itself (exactly-once: the commit
        // cycle does, inside the transaction).
        let flush_here = self.changelog.is_some() && s.txn.is_none();
        let mut flush_tick =
            tokio::time::interval(Duration::from_millis(s.cfg.state.changelog_flush_ms.max(1)));
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let received = s.metrics.received_counter(&self.topic, self.partition);
        let (alerts, passes) = s.metrics.decision_counters();
        // Exactly-once: the right to send into the open transaction, held while sends are in
        // flight; given back once they are all settled, so the commit cycle can run.
        let gate = s.txn.clone();
        let mut entered = None;
        loop {
            let commit_waits = entered.is_some() && gate.as_ref().is_some_and(|g| g.requested());
            tokio::select! {
                biased;
                _ = self.handle.stop.cancelled() => break,
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    self.settle(done)?;
                    if inflight.is_empty() {
                        entered = None;
                    }
                }
                _ = flush_tick.tick(), if flush_here => self.flush_changelog(),
                msg = rx.recv(), if inflight.len() < MAX_IN_FLIGHT && !commit_waits => match msg {
                    Some(q) => {
                        if first {
                            first = false;
                            // The consumer started past what the warm-up covered (no committed
                            // offset, or it was out of range): replay the gap too.
                            let o = q.msg.offset();
                            if o > self.applied.load(Ordering::Acquire) {
                                self.warm_up(o).await;
                            }
                        }
                        if let (Some(g), Some(sync), Some(c)) =
                            (&gate, &s.merchants, &self.clock)
                        {
                            // Wait for the merchant table, but never hold the gate against a
                            // commit meanwhile: the feed may wait for a task that waits for the
                            // gate, which a commit closes until every holder lets go (a wait
                            // only `state.merchant_sync_max_wait_ms` ended: measured 108
                            // timeouts in 20 s at 2 k/s, the worker minutes behind). A task
                            // holding the gate for its in-flight sends keeps it while no commit
                            // asks; when one does, it settles them and lets go.
                            let now_ms = chrono::Utc::now().timestamp_millis();
                            let payload = q.msg.payload().unwrap_or_default();
                            if let Ok(tx) = decode(payload, &s.cfg.input, now_ms) {
                                let (offset, stop) = (q.msg.offset(), &self.handle.stop);
                                if entered.is_some() && !sync.ready(c, offset, tx.ts) {
                                    let asked = g.commit_asked();
                                    tokio::pin!(asked);
                                    asked.as_mut().enable();
                                    let give_back = g.requested() || tokio::select! {
                                        biased;
                                        _ = sync.wait_for(c, offset, tx.ts, stop) => false,
                                        _ = &mut asked => true,
                                    };
                                    if give_back {
                                        while let Some(done) = inflight.next().await {
                                            self.settle(done)?;
                                        }
                                        entered = None;
                                    }
                                }
                                if entered.is_none() {
                                    sync.wait_for(c, offset, tx.ts, stop).await;
                                }
                            }
                        }
                        if let (Some(g), None) = (&gate, &entered) {
                            tokio::select! {
                                biased;
                                _ = self.handle.stop.cancelled() => break,
                                guard = g.enter() => entered = Some(guard),
                            }
                        }
                        received.inc();
                        let settle = self.process(q, &alerts, &passes).await;
                        inflight.push_back(settle);
                    }
                    None => break,
                },
            }
        }
        if self.handle.stop.is_cancelled() {
            tracing::info!(
                partition = self.partition,
                queued = rx.len(),
                in_flight = inflight.len(),
                "Partition revoked: dropping its queue, settling its in-flight decisions."
            );
        }
        drop(rx);
        while let Some(done) = inflight.next().await {
            self.settle(done)?;
        }
        drop(entered);
        if flush_here {
            if let Some(f) = self
                .changelog
                .as_ref()
                .and_then(|c| c.flush(&s.engine.state, &s.sink))
            {
                match f.await {
                    Ok(n) => s.metrics.changelog_written(n),
                    Err(e) => {
                        s.metrics.error(metrics::STAGE_SENDING, "kafka_produce");
                        tracing::warn!(partition = self.partition, error = %e, "State changelog not written at the end of the assignment (its next owner replays more).");
                    }
                }
            }
        }
        Ok(())
    }

    /// The first offset this assignment will decide: the committed one; without a commit, the
    /// end of the partition when `auto_offset_reset` is `latest` (with `earliest` there is no
    /// history before the start). `None` when unknown: the first message tells.
    async fn start_offset(&self) -> Option<i64> {
        let s = self.shared.clone();
        let topic = self.topic.clone();
        let partition = self.partition;
        let r = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let c = s.consumer.committed_offsets(tpl, Duration::from_secs(10))?;
            match c.find_partition(&topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Ok(Some(o)),
                _ if s.cfg.kafka.auto_offset_reset == "latest" => s
                    .consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .map(|(_, high)| Some(high)),
                _ => Ok(None),
            }
        })
        .await;
        match r {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::warn!(partition = self.partition, error = %e, "Committed offset unknown; warming up when the first message arrives.");
                None
            }
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "Committed offset lookup failed.");
                None
            }
        }
    }

    /// Rebuilds this partition's share of the state: reads the partition from
    /// `state.warmup_secs` ago (or from what this process already applied, if later) up to
    /// `until` and applies every valid transaction to the state, with no score and no output. A
    /// restarted worker, or one taking over a partition, so keeps its accounts' windows. Runs
    /// beside the poll loop (the partition is paused while its queue is full). Best effort: a
    /// failure is logged and processing goes on.
    async fn warm_up(&self, until: i64) {
        let s = self.shared.clone();
        let topic = self.topic.clone();
        let partition = self.partition;
        let stop = self.handle.stop.clone();
        let applied = self.applied.clone();
        let clock = self.clock.clone();
        let changelog = self.changelog.clone();
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            super::assignment::warm_up_blocking(
                &s,
                &topic,
                partition,
                until,
                &stop,
                &applied,
                clock.as_deref(),
                changelog.as_deref(),
            )
        })
        .await;
        match r {
            Ok(Ok((n, restored))) => {
                if let (Some(m), true) = (
                    restored.as_ref().and_then(|r| r.marker),
                    self.shared.cfg.state.label_lookup_entries > 0,
                ) {
                    self.backfill_lookup(m);
                }
                if let (Some(r), Some(cell)) = (restored, &self.restored) {
                    let _ = cell.set(r);
                }
                self.shared
                    .metrics
                    .warmed_up(n, started.elapsed().as_secs_f64());
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

    /// Decides one message and returns the future of its delivery. With the global merchant
    /// table, first waits for the merchant windows to reach the transaction's time.
    async fn process(
        &self,
        q: Queued,
        alerts: &prometheus::IntCounter,
        passes: &prometheus::IntCounter,
    ) -> SettleFuture {
        let Queued { msg: m, permit } = q;
        let started = Instant::now();
        let offset = m.offset();
        self.applied.fetch_max(offset + 1, Ordering::AcqRel);
        let s = &self.shared;
        let payload = m.payload().unwrap_or_default();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let tx = match decode(payload, &s.cfg.input, now_ms) {
            Ok(tx) => tx,
            Err(e) => {
                if let (Some(sync), Some(c)) = (&s.merchants, &self.clock) {
                    sync.decided(c, offset);
                }
                if let Some(c) = &self.changelog {
                    c.lock().advance(offset);
                }
                s.metrics.discarded(e.reason());
                tracing::warn!(topic = %self.topic, partition = self.partition, offset, reason = e.reason(), error = %e, "Message sent to the dead-letter topic.");
                return self.dead_letter(&m, e.reason(), e.to_string(), started, permit);
            }
        };
        let merchants = match (&s.merchants, &self.clock) {
            (Some(sync), Some(c)) => {
                sync.wait_for(c, offset, tx.ts, &self.handle.stop).await;
                crate::engine::Merchants::ReadOnly
            }
            (Some(_), None) => crate::engine::Merchants::ReadOnly,
            (None, _) => crate::engine::Merchants::Apply,
        };
        let t0 = Instant::now();
        let model = s.engine.current();
        let account = crate::state::key_of(&tx.account_id);
        // At-least-once after a restore: an event decided again whose account the changelog
        // already holds is not applied twice.
        let held = self
            .restored
            .as_ref()
            .and_then(|c| c.get())
            .is_some_and(|r| r.holds(account, offset));
        let d = s.engine.process_full(&model, &tx, merchants, !held);
        if let Some(c) = &self.changelog {
            c.lock().touch(account, offset);
        }
        if let (Some(sync), Some(c)) = (&s.merchants, &self.clock) {
            sync.decided(c, offset);
        }
        s.metrics.inference.observe(t0.elapsed().as_secs_f64());
        s.metrics
            .scored(d.score, (now_ms - tx.ts) as f64 / 1000.0, d.late);
        if !d.alert {
            passes.inc();
            return Either::Left(futures::future::ready((offset, Ok(()), started, permit)));
        }
        alerts.inc();
        let reasons = s.engine.reasons(&model, &tx, &d, REASONS_PER_ALERT);
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
            &model,
            &reasons,
            src,
            now_ms,
        ) {
            Ok(body) => {
                let fut = s.sink.send_alert(&tx.account_id, body);
                let fallback = Fallback::of(self, &m);
                Either::Right(Box::pin(async move {
                    let r = match fut.await {
                        // Too large for Kafka as an alert: the transaction goes to the
                        // dead-letter topic instead, so the partition moves on.
                        Err(e) if e.is_refusal() => fallback.dead_letter(e).await,
                        r => r,
                    };
                    (offset, r, started, permit)
                }))
            }
            Err(e) => {
                s.metrics.error(metrics::STAGE_SENDING, "serialize");
                tracing::error!(offset, error = %e, "Cannot serialise an alert.");
                self.dead_letter(&m, "serialize", e.to_string(), started, permit)
            }
        }
    }

    /// Fills the label lookup with the partition's transactions before `until` (what the
    /// changelog restore did not replay), in the background; the labels task waits for it.
    fn backfill_lookup(&self, until: i64) {
        let s = self.shared.clone();
        let topic = self.topic.clone();
        let partition = self.partition;
        let stop = self.handle.stop.clone();
        s.backfills.fetch_add(1, Ordering::AcqRel);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let r =
                super::assignment::lookup_backfill_blocking(&s, &topic, partition, until, &stop);
            s.backfills.fetch_sub(1, Ordering::AcqRel);
            match r {
                Ok(n) => tracing::info!(
                    partition,
                    transactions = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "Label lookup filled from the partition's history."
                ),
                Err(e) => {
                    tracing::warn!(partition, error = %e, "Label lookup not filled (labels without merchant_id count on their account only).")
                }
            }
        });
    }

    /// Writes the accounts changed since the last flush (at-least-once), in the background.
    fn flush_changelog(&self) {
        let s = &self.shared;
        if let Some(f) = self
            .changelog
            .as_ref()
            .and_then(|c| c.flush(&s.engine.state, &s.sink))
        {
            let metrics = s.metrics.clone();
            let partition = self.partition;
            tokio::spawn(async move {
                match f.await {
                    Ok(n) => metrics.changelog_written(n),
                    Err(e) => {
                        metrics.error(metrics::STAGE_SENDING, "kafka_produce");
                        tracing::warn!(partition, error = %e, "State changelog flush failed (a restore replays more).");
                    }
                }
            });
        }
    }

    /// Sends `m` to the dead-letter topic with headers naming `code` and `message`.
    fn dead_letter(
        &self,
        m: &OwnedMessage,
        code: &str,
        message: String,
        started: Instant,
        permit: Option<OwnedSemaphorePermit>,
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
        let metrics = self.shared.metrics.clone();
        let partition = self.partition;
        Either::Right(Box::pin(async move {
            let r = count_dead_letter(&metrics, partition, offset, fut.await);
            (offset, r, started, permit)
        }))
    }

    /// The one place where a delivered decision becomes a stored offset.
    fn settle(&self, (offset, result, started, permit): Settled) -> Result<(), PipelineError> {
        drop(permit);
        let s = &self.shared;
        if let (Err(e), Some(gate)) = (&result, &s.txn) {
            // Exactly-once: the transaction cannot commit; the commit cycle aborts it and
            // rewinds. Nothing is stored from here on.
            s.metrics.error(metrics::STAGE_SENDING, "kafka_produce");
            tracing::error!(topic = %self.topic, partition = self.partition, offset, error = %e, "Decision not delivered; the transaction will be aborted.");
            gate.fail();
            self.handle.fence.store(true, Ordering::Release);
            return Ok(());
        }
        if let Err(e) = result {
            s.metrics.error(metrics::STAGE_SENDING, "kafka_produce");
            tracing::error!(topic = %self.topic, partition = self.partition, offset, error = %e, "Decision not delivered; stopping without storing its offset.");
            return Err(e.into());
        }
        if self.handle.fence.load(Ordering::Acquire) {
            // Revoked and the wait for this task timed out: the new owner decides it again.
            tracing::debug!(
                partition = self.partition,
                offset,
                "Partition revoked: offset not stored."
            );
            return Ok(());
        }
        if s.txn.is_some() {
            // Exactly-once: the commit cycle sends it with the transaction.
            self.handle.stored.fetch_max(offset + 1, Ordering::AcqRel);
            s.metrics
                .processing
                .observe(started.elapsed().as_secs_f64());
            return Ok(());
        }
        match s.consumer.store_offset(&self.topic, self.partition, offset) {
            Ok(()) => {
                self.handle.stored.fetch_max(offset + 1, Ordering::AcqRel);
            }
            Err(e) => {
                // The partition was lost meanwhile: its new owner re-reads from the last
                // commit (at-least-once).
                s.metrics.error(metrics::STAGE_SENDING, "offset_store");
                tracing::debug!(partition = self.partition, offset, error = %e, "Offset not stored.");
            }
        }
        s.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Counts and logs how a dead letter went out; a refused one is skipped (its offset is stored).
fn count_dead_letter(
    metrics: &Metrics,
    partition: i32,
    offset: i64,
    r: Result<DeadLettered, SinkError>,
) -> Result<(), SinkError> {
    match r? {
        DeadLettered::Whole => {}
        DeadLettered::Truncated { kept, original } => {
            metrics.error(metrics::STAGE_SENDING, metrics::DEAD_LETTER_TRUNCATED);
            tracing::warn!(
                partition,
                offset,
                kept_bytes = kept,
                original_bytes = original,
                "Dead letter refused whole; sent truncated with its size and SHA-256."
            );
        }
        DeadLettered::Refused(e) => {
            metrics.error(metrics::STAGE_SENDING, metrics::DEAD_LETTER_REFUSED);
            tracing::error!(partition, offset, error = %e, "Dead letter refused even truncated; skipped (the original stays in the source topic).");
        }
    }
    Ok(())
}

/// What an alert's send needs to dead-letter its transaction instead.
struct Fallback {
    sink: Sink,
    metrics: Metrics,
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl Fallback {
    fn of(t: &PartitionTask, m: &OwnedMessage) -> Fallback {
        Fallback {
            sink: t.shared.sink.clone(),
            metrics: t.shared.metrics.clone(),
            topic: t.topic.clone(),
            partition: t.partition,
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        }
    }

    async fn dead_letter(self, e: SinkError) -> Result<(), SinkError> {
        self.metrics
            .error(metrics::STAGE_SENDING, metrics::ALERT_REFUSED);
        tracing::error!(partition = self.partition, offset = self.offset, error = %e, "Alert refused by Kafka; its transaction goes to the dead-letter topic.");
        let dl = DeadLetter {
            code: metrics::ALERT_REFUSED,
            message: e.to_string(),
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
        };
        let r = self
            .sink
            .send_dead_letter(self.key.as_deref(), self.payload.as_deref(), &dl)
            .await;
        count_dead_letter(&self.metrics, self.partition, self.offset, r)
    }
}
