//! Wires the stages of `run`: source → per-partition tasks (decode → state → features → model →
//! decision → sink → offset store) and the labels task, with the HTTP endpoints beside them.
//!
//! - `partition`: the task of one partition, and the one place an offset is stored;
//! - `assignment`: the partitions owned, their tasks, and the state warm-up;
//! - `changelog`: the accounts changed, written to the state changelog and restored from it;
//! - `labels`: the labels topic applied to state;
//! - `merchants`: the merchant windows fed from every partition (`state.merchant_scope`);
//! - `reload`: the model file watch and SIGHUP;
//! - `txn`: exactly-once delivery, the commit cycle of the Kafka transactions.

mod assignment;
mod changelog;
mod labels;
mod merchants;
mod partition;
mod reload;
mod snapshot;
mod txn;

pub use partition::{MAX_IN_FLIGHT, PARTITION_QUEUE};

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Delivery};
use crate::engine::Engine;
use crate::http::Health;
use crate::metrics::{self, Metrics};
use crate::model::Model;
use crate::sink::{Sink, SinkError};
use crate::source::{self, WorkerContext};
use assignment::{Event, Rebalancer, Router, TaskEnd};

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
    /// Exactly-once: a transactional call failed for good (fenced, or fatal).
    #[error("transactions: {0}")]
    Transaction(String),
    /// A task panicked or could not be joined.
    #[error("task failed: {0}")]
    Join(String),
}

/// What every partition task shares.
pub(super) struct Shared {
    pub(super) token: CancellationToken,
    pub(super) engine: Arc<Engine>,
    pub(super) sink: Sink,
    pub(super) consumer: Arc<StreamConsumer<WorkerContext>>,
    pub(super) metrics: Metrics,
    pub(super) health: Health,
    pub(super) cfg: Arc<Config>,
    /// The merchant table's synchronisation (`state.merchant_scope = "global"`).
    pub(super) merchants: Option<Arc<merchants::MerchantSync>>,
    /// Exactly-once: the gate of the commit cycle; `None` in at-least-once mode.
    pub(super) txn: Option<Arc<txn::Gate>>,
    /// The state changelog (`state.changelog`), per partition.
    pub(super) changelogs: Option<Arc<changelog::Changelogs>>,
    /// Label-lookup back-fills running ([`assignment::lookup_backfill_blocking`]); the labels
    /// task waits for none.
    pub(super) backfills: Arc<std::sync::atomic::AtomicUsize>,
    /// Counts the rewinds (exactly-once aborts): the labels task applies the labels again.
    pub(super) resets: tokio::sync::watch::Sender<u64>,
}

/// How often the poll loop turns without messages: the `/healthz` heartbeat, and the retry of
/// paused partitions.
const TICK: Duration = Duration::from_millis(20);

/// Runs the worker until `token` is cancelled or a fatal error.
pub async fn run(
    cfg: Config,
    token: CancellationToken,
    registry: prometheus::Registry,
) -> Result<(), PipelineError> {
    // First, before anything observable: a signal sent as soon as the worker answers must meet
    // our handlers, not the default action (which terminates the process).
    let hup = crate::shutdown::install(token.clone()).map_err(PipelineError::Signals)?;
    // Whatever way `run` returns (a start-up error included), the threads it started (the
    // merchant table's reader) see the token cancelled and end.
    let _stop_all = token.clone().drop_guard();
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new(registry)?;
    let health = Health::new(cfg.stall_timeout_ms);
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
    let engine = Arc::new(Engine::new(model, cfg.model.threshold, &cfg.state));
    reload::publish_model(&metrics, &engine);
    health.set_model_loaded();

    let c2 = cfg.clone();
    tokio::task::spawn_blocking(move || source::ensure_topics(&c2))
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))??;

    let c2 = cfg.clone();
    let dead_letter_max = tokio::task::spawn_blocking(move || {
        source::topic_max_message_bytes(&c2, &c2.topics.dead_letter)
    })
    .await
    .map_err(|e| PipelineError::Join(e.to_string()))?;

    let exactly_once = cfg.kafka.delivery == Delivery::ExactlyOnce;
    let sink = Sink::new(&cfg, dead_letter_max)?;
    let merchant_sync = match cfg.state.merchant_scope {
        crate::config::MerchantScope::Global => Some(Arc::new(merchants::MerchantSync::new(
            engine.clone(),
            Duration::from_millis(cfg.state.merchant_sync_max_wait_ms),
            Duration::from_millis(cfg.state.merchant_partition_idle_ms),
            Duration::from_millis(cfg.state.merchant_live_grace_ms),
            crate::metrics::MerchantTableMetrics::new(&metrics.registry)?,
        ))),
        crate::config::MerchantScope::Partition => None,
    };
    // The merchant table from its last snapshot, before anything decides or applies labels.
    let snapshot = match &merchant_sync {
        Some(sync) if cfg.merchant_snapshots() => {
            let (c, e, t) = (cfg.clone(), engine.clone(), token.clone());
            match tokio::task::spawn_blocking(move || snapshot::restore_blocking(&c, &e.state, &t))
                .await
            {
                Ok(Ok(r)) => {
                    if r.is_some() {
                        sync.snapshot_restored();
                    }
                    r
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Merchant table: snapshot unreadable; replaying the topic instead.");
                    None
                }
                Err(e) => return Err(PipelineError::Join(e.to_string())),
            }
        }
        _ => None,
    };
    let restored_generation = snapshot.as_ref().map_or(0, |r| r.generation);
    // Exactly-once, the commit cycle writes the snapshots, inside its transactions.
    let snapshot_sink = if merchant_sync.is_some() && cfg.merchant_snapshots() && !exactly_once {
        Some(Sink::non_transactional(&cfg, None)?)
    } else {
        None
    };
    let feed = merchant_sync.clone().map(|sync| {
        let (cfg, token) = (cfg.clone(), token.clone());
        let health = health.clone();
        tokio::task::spawn_blocking(move || {
            let r = merchants::feed(sync, cfg, token.clone(), snapshot, snapshot_sink);
            if let Err(e) = &r {
                tracing::error!(error = %e, "Merchant table stopped.");
                health.set_problem(
                    "merchant table",
                    Some(format!("the merchant table stopped: {e}")),
                );
                token.cancel();
            }
            r
        })
    });
    let txn_timeout = Duration::from_millis(cfg.kafka.transaction_timeout_ms);
    if exactly_once {
        let started = std::time::Instant::now();
        txn::init(sink.producer(), txn_timeout).await?;
        tracing::info!(transactional_id = %cfg.kafka.transactional_id, ms = started.elapsed().as_millis() as u64, "Transactions initialised (a predecessor's open transaction is aborted).");
    }
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (rebalancer, events) = Rebalancer::new(
        health.clone(),
        Duration::from_millis(cfg.drain_timeout_ms),
        merchant_sync.clone(),
        // A revocation waits for the commit cycle, which waits on the broker only: up to a
        // transaction timeout (its sends' bound) and its commit's retries.
        exactly_once.then_some((requests_tx, txn_timeout * 4)),
    );
    let ctx = WorkerContext::new(metrics.clone(), health.clone(), rebalancer.clone());
    let consumer = Arc::new(source::transactions_consumer(&cfg, ctx)?);
    consumer.subscribe(&[&cfg.topics.transactions])?;
    tracing::info!(topic = %cfg.topics.transactions, group = %cfg.kafka.group_id, brokers = %cfg.kafka.bootstrap_servers, librdkafka = ?cfg.kafka.librdkafka, "Consuming.");

    let (resets, resets_rx) = tokio::sync::watch::channel(0u64);
    let labels_sink = if exactly_once {
        Sink::non_transactional(&cfg, dead_letter_max)?
    } else {
        sink.clone()
    };
    let backfills = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let labels = tokio::spawn(labels::labels_task(
        cfg.clone(),
        engine.clone(),
        labels_sink,
        resets_rx,
        metrics.clone(),
        health.clone(),
        token.clone(),
        backfills.clone(),
    ));
    let gauge = tokio::spawn(state_gauge(engine.clone(), metrics.clone(), token.clone()));
    let watcher = tokio::spawn(reload::model_watcher(
        cfg.clone(),
        hup,
        engine.clone(),
        metrics.clone(),
        token.clone(),
    ));

    let gate = exactly_once.then(|| Arc::new(txn::Gate::default()));
    let changelogs = cfg
        .state
        .changelog
        .then(|| Arc::new(changelog::Changelogs::default()));
    let shared = Arc::new(Shared {
        token: token.clone(),
        engine: engine.clone(),
        sink: sink.clone(),
        consumer: consumer.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        cfg: cfg.clone(),
        merchants: merchant_sync,
        txn: gate.clone(),
        changelogs: changelogs.clone(),
        backfills,
        resets,
    });
    let committer = gate.map(|gate| {
        let c = txn::Committer {
            gate,
            producer: sink.producer().clone(),
            consumer: consumer.clone(),
            rebalancer: rebalancer.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            interval: Duration::from_millis(cfg.kafka.commit_interval_ms),
            timeout: txn_timeout,
            committed: Default::default(),
            changelogs,
            engine,
            sink: sink.clone(),
            snapshots: match (&shared.merchants, cfg.merchant_snapshots()) {
                (Some(sync), true) => Some(txn::TxnSnapshots {
                    sync: sync.clone(),
                    topic: cfg.merchant_snapshot_topic(),
                    every: Duration::from_secs(cfg.state.merchant_snapshot_secs.max(1)),
                    last: std::time::Instant::now(),
                    written: restored_generation,
                    pending: false,
                }),
                _ => None,
            },
        };
        let t = token.clone();
        tokio::spawn(async move {
            let r = c.run(requests).await;
            if r.is_err() {
                t.cancel();
            }
            r
        })
    });
    let final_commit = rebalancer.txn_sender();
    // The poll loop runs as a task of its own: the rebalance callback, called inside its
    // `recv`, may block (`block_in_place`) while revoked partitions settle, which needs a
    // runtime worker thread.
    let router = Router::new(shared, rebalancer);
    let mut failure = tokio::spawn(poll_loop(
        router,
        events,
        consumer.clone(),
        metrics.clone(),
        health.clone(),
        token.clone(),
        cfg.clone(),
    ))
    .await
    .unwrap_or_else(|e| Some(PipelineError::Join(e.to_string())));

    token.cancel();
    if let Some(committer) = committer {
        // The tasks are drained: the last transaction commits (or aborts), so that no open
        // transaction holds read_committed readers back after the exit.
        if let Some(tx) = final_commit {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(txn::Request::Final(done)).is_ok() {
                let _ = wait.await;
            }
        }
        match committer.await {
            Ok(Ok(())) => tracing::info!("Last transaction ended."),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(PipelineError::Join(e.to_string()));
            }
        }
    } else {
        final_store_commit(
            &sink,
            &consumer,
            Duration::from_millis(cfg.drain_timeout_ms),
        )
        .await;
    }
    consumer.unsubscribe();
    if let Err(e) = labels.await {
        failure.get_or_insert(PipelineError::Join(e.to_string()));
    }
    if let Some(feed) = feed {
        match feed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(PipelineError::Kafka(e));
            }
            Err(e) => {
                failure.get_or_insert(PipelineError::Join(e.to_string()));
            }
        }
    }
    let _ = gauge.await;
    let _ = watcher.await;
    let _ = http.await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// At-least-once: flushes the producer and commits the offsets stored since the last
/// auto-commit.
async fn final_store_commit(
    sink: &Sink,
    consumer: &Arc<StreamConsumer<WorkerContext>>,
    drain: Duration,
) {
    if let Err(e) = sink.flush(drain.min(Duration::from_secs(5))) {
        tracing::warn!(error = %e, "Producer flush incomplete.");
    }
    let c = consumer.clone();
    let commit =
        tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
    match commit {
        Ok(Ok(())) => tracing::info!("Committed stored offsets."),
        // Every stored offset was already auto-committed: nothing left, not a failure.
        Ok(Err(e))
            if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) =>
        {
            tracing::info!("Nothing left to commit: stored offsets were already committed.")
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Final commit failed (nothing new to commit, or not a member).")
        }
        Err(e) => tracing::warn!(error = %e, "Final commit task failed."),
    }
}

/// Polls the group consumer and routes messages to partition tasks until shutdown or a fatal
/// error, then drains the tasks within `shutdown.drain_timeout_ms`. Never waits on a task: a
/// busy partition is paused (see [`assignment::Router`]), so the consumer keeps polling.
async fn poll_loop(
    mut router: Router,
    mut events: mpsc::UnboundedReceiver<Event>,
    consumer: Arc<StreamConsumer<WorkerContext>>,
    metrics: Metrics,
    health: Health,
    token: CancellationToken,
    cfg: Arc<Config>,
) -> Option<PipelineError> {
    let mut failure: Option<PipelineError> = None;
    let mut consume_errors: u32 = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.polled();
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(ev) = events.recv() => {
                if let Some(e) = router.on_event(ev).await {
                    failure = Some(e);
                    token.cancel();
                    break;
                }
            }
            Some(end) = router.tasks.join_next(), if !router.tasks.is_empty() => {
                if let Some(e) = task_ended(end, &health) {
                    failure = Some(e);
                    token.cancel();
                    break;
                }
            }
            _ = tick.tick() => {
                health.polled();
                if router.has_paused() {
                    router.retry();
                }
            }
            r = consumer.recv() => {
                health.polled();
                match r {
                    Err(rdkafka::error::KafkaError::PartitionEOF(p)) => router.reached_end(p),
                    Ok(m) => {
                        if consume_errors > 0 {
                            health.set_broker_down(false);
                        }
                        consume_errors = 0;
                        router.route(m);
                    }
                    Err(e) => {
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
                            health.set_broker_down(true);
                        }
                        // Transient (broker down, rebalance): back off 0.2 s doubling to 5 s, and
                        // log the 1st, 2nd, 4th, 8th... consecutive error, not every one.
                        metrics.error(metrics::STAGE_RECEIVING, "kafka_consume");
                        consume_errors += 1;
                        if consume_errors.is_power_of_two() {
                            tracing::warn!(error = %e, consecutive = consume_errors, "Consume error; retrying.");
                        }
                        let backoff = 200u64.saturating_mul(1 << consume_errors.min(5)).min(5_000);
                        let until = tokio::time::Instant::now() + Duration::from_millis(backoff);
                        // Keep the heartbeat and the rebalance events going while backing off.
                        loop {
                            tokio::select! {
                                biased;
                                _ = token.cancelled() => break,
                                Some(ev) = events.recv() => {
                                    if let Some(e) = router.on_event(ev).await {
                                        failure = Some(e);
                                        token.cancel();
                                    }
                                }
                                _ = tokio::time::sleep_until(until) => break,
                                _ = tick.tick() => health.polled(),
                            }
                        }
                    }
                }
            }
        }
    }
    tracing::info!("Draining: no new messages; finishing in-flight decisions.");
    router.close();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.drain_timeout_ms);
    loop {
        match tokio::time::timeout_at(deadline, router.tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(end)) => {
                if let Some(e) = task_ended(end, &health) {
                    failure.get_or_insert(e);
                }
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
    failure
}

/// A partition task ended: `Some` when it failed (fatal for the worker, and `/readyz` says so).
fn task_ended(
    end: Result<TaskEnd, tokio::task::JoinError>,
    health: &Health,
) -> Option<PipelineError> {
    match end {
        Ok(TaskEnd { result: Ok(()), .. }) => None,
        Ok(TaskEnd {
            key,
            result: Err(e),
        }) => {
            health.set_problem(
                &format!("partition {}", key.1),
                Some(format!("partition {} task failed: {e}", key.1)),
            );
            Some(e)
        }
        Err(e) => {
            health.set_problem("partition", Some(format!("a partition task died: {e}")));
            Some(PipelineError::Join(e.to_string()))
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
