//! Wires the stages of `run`: source → per-partition tasks (decode → state → features → model →
//! decision → sink → offset store) and the labels task, with the HTTP endpoints beside them.
//!
//! Each assigned partition has its own sequential task. Decisions are sent without waiting one
//! by one; a task keeps its in-flight sends in order and stores a message's offset only once its
//! send (alert or dead letter) and every earlier one were acknowledged, so a crash re-delivers
//! rather than loses (at-least-once). The produce-and-store step is `PartitionTask::settle`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Either, Ready};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decide::{alert_json, SourcePos, REASONS_PER_ALERT};
use crate::decode::{decode, decode_label};
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::model::Model;
use crate::sink::{DeadLetter, Sink, SinkError};
use crate::source::{self, WorkerContext};
use crate::state::LabelOutcome;

/// Sends in flight per partition before the task waits for acknowledgements.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Messages queued per partition task.
pub const PARTITION_QUEUE: usize = 1024;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Start-up failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Kafka client creation or subscription failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A decision could not be delivered: fatal, its offset was not stored.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The HTTP listener could not start.
    #[error("cannot listen on metrics.listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A task panicked or could not be joined.
    #[error("task failed: {0}")]
    Join(String),
}

type Settled = (i64, Result<(), SinkError>, Instant);
type SettleFuture = Either<Ready<Settled>, BoxFuture<'static, Settled>>;

/// What every partition task shares.
struct Shared {
    token: CancellationToken,
    engine: Arc<Engine>,
    sink: Sink,
    consumer: Arc<StreamConsumer<WorkerContext>>,
    metrics: Metrics,
    cfg: Arc<Config>,
}

struct PartitionTask {
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
}

impl PartitionTask {
    async fn run(self, mut rx: mpsc::Receiver<OwnedMessage>) -> Result<(), PipelineError> {
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
        let r = tokio::task::spawn_blocking(move || warm_up_blocking(&s, &topic, partition, until))
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

fn warm_up_blocking(
    s: &Shared,
    topic: &str,
    partition: i32,
    until: i64,
) -> Result<u64, rdkafka::error::KafkaError> {
    use rdkafka::consumer::BaseConsumer;
    let mut c = crate::sink::base_client_config(&s.cfg);
    c.set("group.id", format!("{}.warmup", s.cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = c.create()?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let since_ms = now_ms - s.cfg.state.warmup_secs.saturating_mul(1000) as i64;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(since_ms))?;
    let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
    let start = match found.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => return Ok(0),
    };
    if start >= until {
        return Ok(0);
    }
    let mut from = TopicPartitionList::new();
    from.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&from)?;
    let spec = s.engine.current().spec().clone();
    let mut n = 0u64;
    let mut idle = 0;
    while !s.token.is_cancelled() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                if m.offset() >= until {
                    break;
                }
                if let Ok(tx) = decode(m.payload().unwrap_or_default(), &s.cfg.input, now_ms) {
                    crate::engine::observe(&s.engine.state, &tx, &spec);
                    n += 1;
                }
                if m.offset() + 1 >= until {
                    break;
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                // The history ends before `until` (deleted by retention or compaction).
                idle += 1;
                if idle >= 20 {
                    break;
                }
            }
        }
    }
    Ok(n)
}

/// Health flags behind `/readyz`.
#[derive(Clone, Default)]
pub struct Health {
    /// The model is loaded.
    pub model_loaded: Arc<AtomicBool>,
    /// Partitions are assigned.
    pub assigned: Arc<std::sync::Mutex<std::collections::HashSet<(String, i32)>>>,
}

impl Health {
    /// Ready once partitions are assigned and the model is loaded.
    pub fn ready(&self) -> bool {
        self.model_loaded.load(Ordering::Acquire) && !crate::state::lock(&self.assigned).is_empty()
    }
}

/// Runs the worker until `token` is cancelled or a fatal error.
pub async fn run(
    cfg: Config,
    token: CancellationToken,
    registry: prometheus::Registry,
) -> Result<(), PipelineError> {
    // First, before anything observable: a signal sent as soon as the worker answers must meet
    // our handlers, not the default action (which terminates the process).
    let hup = crate::shutdown::install(token.clone()).map_err(PipelineError::Signals)?;
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new(registry)?;
    let ctx = WorkerContext::new(metrics.clone());
    let health = Health {
        model_loaded: Arc::default(),
        assigned: ctx.assigned(),
    };
    let listener = tokio::net::TcpListener::bind(cfg.metrics_listen)
        .await
        .map_err(|source| PipelineError::Listen {
            addr: cfg.metrics_listen,
            source,
        })?;
    let http = tokio::spawn(crate::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        token.clone(),
    ));
    tracing::info!(listen = %cfg.metrics_listen, "Serving /metrics, /healthz and /readyz.");

    let model_path = cfg.model.path.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&model_path))
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))??;
    tracing::info!(path = %cfg.model.path.display(), version = model.version(), threshold = model.threshold(), "Model loaded.");
    metrics.set_build_info(model.version());
    let engine = Arc::new(Engine::new(model, cfg.model.threshold, &cfg.state));
    health.model_loaded.store(true, Ordering::Release);

    let c2 = cfg.clone();
    tokio::task::spawn_blocking(move || source::ensure_topics(&c2))
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))??;

    let sink = Sink::new(&cfg)?;
    let consumer = Arc::new(source::transactions_consumer(&cfg, ctx)?);
    consumer.subscribe(&[&cfg.topics.transactions])?;
    tracing::info!(topic = %cfg.topics.transactions, group = %cfg.kafka.group_id, brokers = %cfg.kafka.bootstrap_servers, librdkafka = ?cfg.kafka.librdkafka, "Consuming.");

    let labels = tokio::spawn(labels_task(
        cfg.clone(),
        engine.clone(),
        sink.clone(),
        metrics.clone(),
        token.clone(),
    ));
    let gauge = tokio::spawn(state_gauge(engine.clone(), metrics.clone(), token.clone()));
    let watcher = tokio::spawn(model_watcher(
        cfg.clone(),
        hup,
        engine.clone(),
        metrics.clone(),
        token.clone(),
    ));

    let shared = Arc::new(Shared {
        token: token.clone(),
        engine,
        sink: sink.clone(),
        consumer: consumer.clone(),
        metrics: metrics.clone(),
        cfg: cfg.clone(),
    });
    let mut senders: HashMap<i32, mpsc::Sender<OwnedMessage>> = HashMap::new();
    let mut tasks: Vec<JoinHandle<Result<(), PipelineError>>> = Vec::new();
    let mut failure: Option<PipelineError> = None;
    let mut consume_errors: u32 = 0;
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = consumer.recv() => match r {
                Ok(m) => {
                    consume_errors = 0;
                    let p = m.partition();
                    let tx = senders.entry(p).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(PARTITION_QUEUE);
                        let task = PartitionTask { shared: shared.clone(), topic: m.topic().to_string(), partition: p };
                        tasks.push(tokio::spawn(task.run(rx)));
                        tx
                    });
                    if tx.send(m.detach()).await.is_err() {
                        // The task stopped on a fatal error: its result is collected below.
                        token.cancel();
                        break;
                    }
                }
                Err(e) => {
                    // Transient (broker down, rebalance): back off 0.2 s doubling to 5 s, and log
                    // the 1st, 2nd, 4th, 8th... consecutive error, not every one.
                    metrics.error(metrics::STAGE_RECEIVING, "kafka_consume");
                    consume_errors += 1;
                    if consume_errors.is_power_of_two() {
                        tracing::warn!(error = %e, consecutive = consume_errors, "Consume error; retrying.");
                    }
                    let backoff = 200u64.saturating_mul(1 << consume_errors.min(5)).min(5_000);
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
                    }
                }
            }
        }
    }
    tracing::info!("Draining: no new messages; finishing in-flight decisions.");
    drop(senders);
    let drain = Duration::from_millis(cfg.drain_timeout_ms);
    let deadline = tokio::time::Instant::now() + drain;
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                failure.get_or_insert(e);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(PipelineError::Join(e.to_string()));
            }
            Err(_) => {
                tracing::warn!(
                    drain_timeout_ms = cfg.drain_timeout_ms,
                    "Drain timeout: exiting with decisions in flight (their offsets stay uncommitted)."
                );
                break;
            }
        }
    }
    token.cancel();
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if let Err(e) = sink.flush(remaining.max(Duration::from_millis(100))) {
        tracing::warn!(error = %e, "Producer flush incomplete.");
    }
    let c = consumer.clone();
    let commit =
        tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
    match commit {
        Ok(Ok(())) => tracing::info!("Committed stored offsets."),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Final commit failed (nothing new to commit, or not a member).")
        }
        Err(e) => tracing::warn!(error = %e, "Final commit task failed."),
    }
    consumer.unsubscribe();
    let _ = labels.await;
    let _ = gauge.await;
    let _ = watcher.await;
    let _ = http.await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reloads the model when its file changes (checked every `model.watch_interval_ms`) or on
/// SIGHUP. A file that does not load (partly written, bad checksum, other features) is logged
/// and counted, and the current model stays.
async fn model_watcher(
    cfg: Arc<Config>,
    mut hup: crate::shutdown::Hangup,
    engine: Arc<Engine>,
    metrics: Metrics,
    token: CancellationToken,
) {
    let path = cfg.model.path.clone();
    let mut stamp = file_stamp(&path);
    let every = Duration::from_millis(cfg.model.watch_interval_ms.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(()) = hup.recv() => true,
            _ = tick.tick(), if cfg.model.watch_interval_ms > 0 => false,
        };
        let now = file_stamp(&path);
        if !forced && now == stamp {
            continue;
        }
        stamp = now;
        let p = path.clone();
        match tokio::task::spawn_blocking(move || Model::load(&p)).await {
            Ok(Ok(m)) => {
                let new_version = m.version().to_string();
                let old = engine.swap(m);
                metrics.set_build_info(&new_version);
                tracing::info!(from = old.version(), to = %new_version, threshold = engine.threshold(), "Model swapped.");
            }
            Ok(Err(e)) => {
                metrics.error(metrics::STAGE_PROCESSING, "model_reload");
                tracing::error!(error = %e, "Model not reloaded; keeping the current one.");
            }
            Err(e) => {
                metrics.error(metrics::STAGE_PROCESSING, "model_reload");
                tracing::error!(error = %e, "Model reload task failed.");
            }
        }
    }
}

async fn state_gauge(engine: Arc<Engine>, metrics: Metrics, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = tick.tick() => metrics.set_window_entries(engine.state.entries()),
        }
    }
}

/// Reads every partition of the labels topic from the beginning and applies frauds to state.
async fn labels_task(
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
