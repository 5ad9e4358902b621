//! Exactly-once delivery (`kafka.delivery = "exactly_once"`), as Kafka Streams' EOS v2 (KIP-447):
//! one transactional producer per worker; the alerts, the dead letters and the consumed offsets
//! of every partition the worker owns go into one Kafka transaction, committed every
//! `kafka.commit_interval_ms` with `send_offsets_to_transaction(offsets, group metadata)`, so
//! that the group coordinator fences a worker that lost its partitions (a zombie) by the group
//! generation. A `read_committed` reader of the alerts sees an alert once its transaction
//! committed, and never one of an aborted transaction.
//!
//! The commit cycle is owned by one task, the [`Committer`]. Partition tasks send only through
//! the [`Gate`]: a task holds a read guard while it has sends in flight; the commit cycle asks
//! them to stop taking messages ([`Gate::requested`]), takes the write guard (every send of the
//! transaction acknowledged, every offset settled), commits, begins the next transaction and
//! lets them go on. Errors, as librdkafka classifies them:
//!
//! - retriable: the same call again, within `kafka.transaction_timeout_ms`;
//! - `txn_requires_abort` (a send failed, the group generation moved on, a timeout): abort,
//!   then **rewind**: every partition task is dropped, the state is cleared with the warm-up
//!   markers, the consumer seeks every partition to its committed offset and fresh tasks warm
//!   the state up again from the history up to that offset, as on a fresh assignment (the
//!   labels are applied again on top). The state so never counts an event twice: it holds what
//!   a fault-free run held at the committed offsets. The gate stays closed until then.
//! - fatal (a producer fenced by another with the same `transactional.id`, or by the broker):
//!   the worker stops (exit 1) without committing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::assignment::{Event, Rebalancer};
use super::PipelineError;
use crate::http::Health;
use crate::metrics::{self, Metrics};
use crate::source::WorkerContext;
use crate::state::lock;

type Key = (String, i32);

/// Where the partition tasks and the commit cycle meet.
#[derive(Default)]
pub(crate) struct Gate {
    requested: AtomicBool,
    rw: Arc<RwLock<()>>,
    failed: AtomicBool,
    /// An abort's rewind is on its way to the poll loop, holding the write side.
    rewinding: AtomicBool,
    /// Woken when a commit asks for the write side.
    asked: tokio::sync::Notify,
}

impl Gate {
    /// True while a commit waits: a task holding a guard takes no new message.
    pub(super) fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Resolves once a commit asks for the write side after this call (check
    /// [`Gate::requested`] after enabling it, for one asked before).
    pub(super) fn commit_asked(&self) -> tokio::sync::futures::Notified<'_> {
        self.asked.notified()
    }

    /// The right to send into the open transaction; waits while a commit or a rewind runs.
    pub(super) async fn enter(&self) -> OwnedRwLockReadGuard<()> {
        self.rw.clone().read_owned().await
    }

    /// A send of the open transaction failed: the next cycle aborts it.
    pub(super) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The poll loop has rewound (it drops the guard next).
    pub(super) fn rewound(&self) {
        self.rewinding.store(false, Ordering::Release);
    }
}

/// What the commit cycle is asked outside its interval.
pub(super) enum Request {
    /// Partitions are being revoked: commit now, their tasks' offsets included (or abort, when
    /// `abort`: their tasks did not stop in time). Replies true when committed.
    Revoke {
        offsets: Vec<(Key, i64)>,
        abort: bool,
        reply: std::sync::mpsc::Sender<bool>,
        /// Set by the revocation when it stopped waiting: abort instead (the partitions moved).
        expired: Arc<AtomicBool>,
    },
    /// The worker stops: the last commit (or abort), then the cycle ends.
    Final(oneshot::Sender<()>),
}

/// What went wrong in a transactional call.
#[derive(Debug)]
enum Failure {
    /// Abort the transaction and rewind.
    Abort(String),
    /// Stop the worker.
    Fatal(String),
}

fn classify(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Failure::Fatal(e.to_string()),
        _ => Failure::Abort(e.to_string()),
    }
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable() && !t.is_fatal() && !t.txn_requires_abort())
}

/// Calls `f` again while it fails with a retriable error, up to `within`.
fn retry<T>(
    within: Duration,
    mut f: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Err(e) if retriable(&e) && Instant::now() < deadline => {
                tracing::warn!(error = %e, "Retriable transaction error; retrying.");
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Registers the transactional producer (aborting what a dead predecessor with the same
/// `transactional.id` left open, fencing a live one) and begins the first transaction.
pub(super) async fn init(
    producer: &FutureProducer,
    timeout: Duration,
) -> Result<(), PipelineError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        retry(timeout * 3, || p.init_transactions(timeout))?;
        p.begin_transaction()
    })
    .await
    .map_err(|e| PipelineError::Join(e.to_string()))?
    .map_err(|e| PipelineError::Transaction(format!("cannot start transactions: {e}")))
}

/// When and what the commit cycle snapshots of the merchant table.
pub(super) struct TxnSnapshots {
    pub(super) sync: Arc<super::merchants::MerchantSync>,
    pub(super) topic: String,
    pub(super) every: Duration,
    pub(super) last: Instant,
    /// The last generation committed.
    pub(super) written: u64,
    /// The open transaction holds snapshot `written + 1`.
    pub(super) pending: bool,
}

/// The commit cycle.
pub(super) struct Committer {
    pub(super) gate: Arc<Gate>,
    pub(super) producer: FutureProducer,
    pub(super) consumer: Arc<StreamConsumer<WorkerContext>>,
    pub(super) rebalancer: Arc<Rebalancer>,
    pub(super) metrics: Metrics,
    pub(super) health: Health,
    pub(super) interval: Duration,
    /// Timeout of one transactional call.
    pub(super) timeout: Duration,
    /// The offsets committed last, per partition (a partition unchanged is not sent again).
    pub(super) committed: HashMap<Key, i64>,
    /// The state changelog, flushed into each transaction before its offsets.
    pub(super) changelogs: Option<Arc<super::changelog::Changelogs>>,
    /// Whose state the changelog holds.
    pub(super) engine: Arc<crate::engine::Engine>,
    /// The transactional producer's sink (the changelog's records).
    pub(super) sink: crate::sink::Sink,
    /// The merchant table's snapshots, written inside a transaction (exactly-once), so that a
    /// snapshot never holds the merchant side of a decision whose transaction aborts.
    pub(super) snapshots: Option<TxnSnapshots>,
}

impl Committer {
    /// Commits every `interval` and on request until [`Request::Final`] (or the channel
    /// closes); a fatal error ends it with the error.
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
    ) -> Result<(), PipelineError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (extra, abort, reply) = tokio::select! {
                biased;
                r = requests.recv() => match r {
                    Some(Request::Revoke { offsets, abort, reply, expired }) => {
                        (offsets, abort, Some((reply, expired)))
                    }
                    Some(Request::Final(done)) => {
                        let r = self.cycle(Vec::new(), false, None, false).await;
                        let _ = done.send(());
                        return r.map(|_| ());
                    }
                    None => return Ok(()),
                },
                _ = tick.tick() => (Vec::new(), false, None),
            };
            let revoked: Vec<Key> = extra.iter().map(|(k, _)| k.clone()).collect();
            let expired = reply.as_ref().map(|(_, e)| e.clone());
            let ok = self.cycle(extra, abort, expired, true).await;
            for k in revoked {
                self.committed.remove(&k);
            }
            if let Some((r, _)) = reply {
                let _ = r.send(matches!(ok, Ok(true)));
            }
            ok?;
        }
    }

    /// One cycle: close the gate, commit (or abort and rewind), open the gate. Ok(true) when
    /// committed or nothing to commit.
    async fn cycle(
        &mut self,
        extra: Vec<(Key, i64)>,
        abort: bool,
        expired: Option<Arc<AtomicBool>>,
        rewind: bool,
    ) -> Result<bool, PipelineError> {
        if expired.is_some() && self.gate.rewinding.load(Ordering::Acquire) {
            // A revocation while the last abort's rewind waits for the poll loop, which is the
            // caller waiting for this answer (the rebalance callback runs in its poll): the
            // write side is the rewind's until then, so waiting for it would wait for ever.
            // Nothing of the aborted transaction can commit anyway: the partitions' new owner
            // reads from the last commit.
            tracing::info!(
                "Revocation during a rewind: nothing to commit for the revoked partitions."
            );
            return Ok(false);
        }
        self.gate.requested.store(true, Ordering::Release);
        self.gate.asked.notify_waiters();
        let guard = self.gate.rw.clone().write_owned().await;
        self.gate.requested.store(false, Ordering::Release);
        let expired = expired.is_some_and(|e| e.load(Ordering::Acquire));
        let failed = self.gate.failed.swap(false, Ordering::AcqRel) || abort || expired;
        let mut offsets: HashMap<Key, i64> = HashMap::new();
        for (k, h) in lock(&self.rebalancer.running).iter() {
            let o = h.stored.load(Ordering::Acquire);
            if o >= 0 {
                offsets.insert(k.clone(), o);
            }
        }
        for (k, o) in extra {
            if o >= 0 {
                let e = offsets.entry(k).or_insert(o);
                *e = (*e).max(o);
            }
        }
        offsets.retain(|k, o| self.committed.get(k) != Some(o));
        let why = if failed {
            "a send of the transaction failed, or revoked partitions did not settle in time"
                .to_string()
        } else if offsets.is_empty() {
            return Ok(true);
        } else if let Some(Err(e)) = self.flush_changelog().await {
            format!("the state changelog could not be written: {e}")
        } else if let Err(e) = self.snapshot_merchants(!rewind).await {
            format!("the merchant table's snapshot could not be written: {e}")
        } else {
            match self.commit(&offsets).await {
                Ok(()) => {
                    self.metrics.transaction(metrics::TXN_COMMITTED);
                    if let Some(s) = self.snapshots.as_mut().filter(|s| s.pending) {
                        s.pending = false;
                        s.written += 1;
                        s.sync.snapshot_written(true);
                    }
                    self.committed.extend(offsets);
                    self.begin().await?;
                    return Ok(true);
                }
                Err(Failure::Fatal(e)) => return Err(self.fatal(e)),
                Err(Failure::Abort(e)) => e,
            }
        };
        tracing::warn!(reason = %why, "Aborting the transaction; rewinding to the committed offsets.");
        self.abort().await?;
        self.metrics.transaction(metrics::TXN_ABORTED);
        self.committed.clear();
        if rewind {
            self.begin().await?;
            // The poll loop rewinds, then opens the gate by dropping the guard.
            self.gate.rewinding.store(true, Ordering::Release);
            if self.rebalancer.events.send(Event::Rewind(guard)).is_err() {
                self.gate.rewound();
            }
        }
        Ok(false)
    }

    /// Writes the merchant table's snapshot into the open transaction when one is due (or
    /// `force`, the last transaction) and this worker decides partition 0. Gate closed: the
    /// table holds the merchant side of exactly the decisions this transaction commits.
    async fn snapshot_merchants(&mut self, force: bool) -> Result<(), crate::sink::SinkError> {
        let Some(s) = self.snapshots.as_mut() else {
            return Ok(());
        };
        s.pending = false;
        if !(force || s.last.elapsed() >= s.every) || !s.sync.owns(0) {
            return Ok(());
        }
        s.last = Instant::now();
        let records = s.sync.snapshot(s.written + 1);
        let r = self.sink.send_records(s.topic.clone(), 0, records).await;
        match &r {
            Ok(_) => s.pending = true,
            Err(_) => s.sync.snapshot_written(false),
        }
        r.map(|_| ())
    }

    /// Writes every partition's changed accounts into the open transaction (gate closed: no
    /// decision is in flight, so each partition's state is the state at its offsets).
    async fn flush_changelog(&self) -> Option<Result<usize, crate::sink::SinkError>> {
        let c = self.changelogs.as_ref()?;
        Some(
            c.flush_all(&self.engine.state, &self.sink, &self.metrics)
                .await,
        )
    }

    async fn commit(&self, offsets: &HashMap<Key, i64>) -> Result<(), Failure> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), o) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*o))
                .map_err(|e| Failure::Abort(e.to_string()))?;
        }
        let cgm = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Failure::Abort("not a member of the consumer group".into()))?;
        let p = self.producer.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            retry(timeout * 3, || {
                p.send_offsets_to_transaction(&tpl, &cgm, timeout)
            })
            .map_err(|e| classify(&e))?;
            retry(timeout * 3, || p.commit_transaction(timeout)).map_err(|e| classify(&e))
        })
        .await
        .map_err(|e| Failure::Fatal(e.to_string()))?
    }

    async fn abort(&self) -> Result<(), PipelineError> {
        let p = self.producer.clone();
        let timeout = self.timeout;
        let r = tokio::task::spawn_blocking(move || {
            retry(timeout * 6, || p.abort_transaction(timeout))
        })
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))?;
        r.map_err(|e| self.fatal(format!("abort failed: {e}")))
    }

    async fn begin(&self) -> Result<(), PipelineError> {
        let p = self.producer.clone();
        let r = tokio::task::spawn_blocking(move || p.begin_transaction())
            .await
            .map_err(|e| PipelineError::Join(e.to_string()))?;
        r.map_err(|e| self.fatal(format!("begin failed: {e}")))
    }

    fn fatal(&self, e: String) -> PipelineError {
        tracing::error!(error = %e, "Fatal transaction error (fenced by another worker with the same transactional.id, or by the broker); stopping.");
        self.health
            .set_problem("transactions", Some(format!("transactions failed: {e}")));
        PipelineError::Transaction(e)
    }
}

/// The guard the poll loop holds during a rewind.
pub(super) type RewindGuard = OwnedRwLockWriteGuard<()>;
