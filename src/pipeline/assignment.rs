//! Assignment: the partitions this worker owns, their tasks, and the warm-up that rebuilds a
//! partition's share of the state from its history.
//!
//! - [`Rebalancer`] answers librdkafka's rebalance callback. On assignment it records a new
//!   generation per partition and asks the poll loop for a fresh task. On revocation it stops
//!   the partitions' tasks (queued messages dropped, in-flight sends awaited and their offsets
//!   stored), waits for them up to `shutdown.drain_timeout_ms`, fences them (no offset stored
//!   after this point), commits what they stored, and only then lets librdkafka hand the
//!   partitions over. A partition that comes back gets a new task, never the old one.
//! - [`Router`] lives in the poll loop: it hands each message to its partition's task, and pauses
//!   a partition whose task is busy (warming up, or its queue full) or when the messages held by
//!   the worker reach `input.max_buffered_bytes`, instead of blocking the loop; it resumes the
//!   partition once the task takes messages again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::merchants::{MerchantSync, TaskClock};
use super::partition::{PartitionTask, Queued, TaskHandle, PARTITION_QUEUE};
use super::txn::{Request, RewindGuard};
use super::{PipelineError, Shared};
use crate::decode::decode;
use crate::http::Health;
use crate::source::{RebalanceListener, WorkerContext};
use crate::state::lock;

type Key = (String, i32);

/// Asks the poll loop to act on a rebalance.
#[derive(Debug)]
pub(super) enum Event {
    /// Start a task for generation `epoch` of a partition.
    Assigned(Key, u64),
    /// The partition is gone: forget its queue.
    Revoked(Key),
    /// Exactly-once: the transaction was aborted; rewind every partition to its committed
    /// offset (see [`super::txn`]), then open the gate by dropping the guard.
    Rewind(RewindGuard),
}

/// The rebalance callback's side of the assignment.
pub(super) struct Rebalancer {
    health: Health,
    pub(super) running: Mutex<HashMap<Key, TaskHandle>>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    next_epoch: AtomicU64,
    revoke_wait: Duration,
    merchants: Option<Arc<MerchantSync>>,
    /// Exactly-once: the commit cycle, which commits revoked partitions' offsets, and how long
    /// a revocation waits for it.
    txn: Option<(mpsc::UnboundedSender<Request>, Duration)>,
}

impl Rebalancer {
    pub(super) fn new(
        health: Health,
        revoke_wait: Duration,
        merchants: Option<Arc<MerchantSync>>,
        txn: Option<(mpsc::UnboundedSender<Request>, Duration)>,
    ) -> (Arc<Rebalancer>, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Rebalancer {
                health,
                running: Mutex::default(),
                events,
                next_epoch: AtomicU64::new(0),
                revoke_wait,
                merchants,
                txn,
            }),
            rx,
        )
    }
}

impl Rebalancer {
    /// Exactly-once: the commit cycle's request channel.
    pub(super) fn txn_sender(&self) -> Option<mpsc::UnboundedSender<Request>> {
        self.txn.as_ref().map(|(tx, _)| tx.clone())
    }
}

/// Waits until every token is cancelled or `wait` passed; true if all were.
fn wait_done(done: &[CancellationToken], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let all = || done.iter().all(CancellationToken::is_cancelled);
    if all() {
        return true;
    }
    let spin = || {
        while !all() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        all()
    };
    block_if_runtime(spin)
}

/// Runs blocking `f` from the rebalance callback. The callback runs on a runtime worker (the
/// poll loop's task): hand its other tasks to another thread while we wait, so the partition
/// tasks (and the commit cycle) can finish.
fn block_if_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl RebalanceListener for Rebalancer {
    fn assigned(&self, partitions: &[(String, i32)]) {
        for key in partitions {
            let epoch = self.next_epoch.fetch_add(1, Ordering::AcqRel) + 1;
            self.health.partition_assigned(&key.0, key.1, epoch);
            if let Some(m) = &self.merchants {
                // Before the feed hears of the assignment: it must not run ahead of this task.
                m.assigned(key.1);
            }
            let _ = self.events.send(Event::Assigned(key.clone(), epoch));
        }
        if let Some(m) = &self.merchants {
            m.joined();
        }
    }

    fn revoking(&self, consumer: &BaseConsumer<WorkerContext>, partitions: &[(String, i32)]) {
        let mut handles = Vec::new();
        {
            let mut running = lock(&self.running);
            for key in partitions {
                self.health.partition_revoked(&key.0, key.1);
                // Exactly-once: the handles stay where the commit cycle finds them until the
                // revoked partitions' offsets are in a transaction.
                let h = if self.txn.is_some() {
                    running.get(key).cloned()
                } else {
                    running.remove(key)
                };
                if let Some(h) = h {
                    h.stop.cancel();
                    handles.push((key.clone(), h));
                }
            }
        }
        let done: Vec<CancellationToken> = handles.iter().map(|(_, h)| h.done.clone()).collect();
        let started = Instant::now();
        let all = wait_done(&done, self.revoke_wait);
        let mut tpl = TopicPartitionList::new();
        for (key, h) in &handles {
            h.fence.store(true, std::sync::atomic::Ordering::Release);
            let stored = h.stored.load(Ordering::Acquire);
            if stored >= 0 {
                let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(stored));
            }
        }
        if all {
            tracing::info!(
                tasks = handles.len(),
                ms = started.elapsed().as_millis() as u64,
                "Revoked partitions' tasks stopped and settled."
            );
        } else {
            tracing::warn!(
                wait_ms = self.revoke_wait.as_millis() as u64,
                "Revoked partitions' tasks did not stop in time: fenced; their undelivered decisions will be made again by the new owner."
            );
        }
        if let Some((txn, commit_wait)) = &self.txn {
            // Exactly-once: their offsets go into a transaction that commits before the
            // partitions move (or it aborts, when a task did not stop: its sends may be in it).
            // The commit cycle always answers (it waits on nothing but the broker); a reply
            // that comes too late is made an abort, so that no transaction commits offsets
            // of partitions already handed over.
            let offsets = handles
                .iter()
                .map(|(key, h)| (key.clone(), h.stored.load(Ordering::Acquire)))
                .collect();
            let (reply, answer) = std::sync::mpsc::channel();
            let expired = Arc::new(AtomicBool::new(false));
            let asked = txn.send(Request::Revoke {
                offsets,
                abort: !all,
                reply,
                expired: expired.clone(),
            });
            let wait = *commit_wait;
            let committed = asked.is_ok()
                && block_if_runtime(move || match answer.recv_timeout(wait) {
                    Ok(ok) => ok,
                    Err(_) => {
                        expired.store(true, Ordering::Release);
                        false
                    }
                });
            {
                let mut running = lock(&self.running);
                for (key, h) in &handles {
                    if running.get(key).is_some_and(|r| r.epoch == h.epoch) {
                        running.remove(key);
                    }
                }
            }
            if !committed {
                tracing::warn!("Revoked partitions' transaction not committed; the new owner re-reads from the last commit.");
            }
        } else if tpl.count() > 0 {
            // What the tasks stored goes to the group before the partitions move.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "Commit of revoked partitions failed; the new owner re-reads from the last commit.");
            }
        }
        for key in partitions {
            if let Some(m) = &self.merchants {
                m.revoked(key.1);
            }
            let _ = self.events.send(Event::Revoked(key.clone()));
        }
    }
}

/// How a partition task ended.
pub(super) struct TaskEnd {
    pub(super) key: Key,
    pub(super) result: Result<(), PipelineError>,
}

struct Slot {
    epoch: u64,
    tx: mpsc::Sender<Queued>,
    /// Messages received while the task could not take them, in order.
    pending: VecDeque<OwnedMessage>,
    paused: bool,
    /// The next offset expected (a message before it is a redelivery after a pause).
    next: i64,
    /// The task's clock for the merchant table (global merchant scope).
    clock: Option<Arc<TaskClock>>,
}

/// The poll loop's side: partition → task.
pub(super) struct Router {
    shared: Arc<Shared>,
    rebalancer: Arc<Rebalancer>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    slots: HashMap<Key, Slot>,
    /// The key of the message being routed, kept to look slots up without an allocation per
    /// message.
    scratch: Key,
    applied: HashMap<Key, Arc<AtomicI64>>,
    /// Every task, to collect how it ended.
    pub(super) tasks: JoinSet<TaskEnd>,
}

impl Router {
    pub(super) fn new(shared: Arc<Shared>, rebalancer: Arc<Rebalancer>) -> Router {
        let budget_bytes = shared.cfg.input.max_buffered_bytes.max(1);
        Router {
            budget: Arc::new(Semaphore::new(budget_bytes.min(Semaphore::MAX_PERMITS))),
            budget_bytes: budget_bytes.min(Semaphore::MAX_PERMITS),
            shared,
            rebalancer,
            slots: HashMap::new(),
            scratch: (String::new(), 0),
            applied: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// True while some partition is paused (the loop then retries often).
    pub(super) fn has_paused(&self) -> bool {
        self.slots.values().any(|s| s.paused)
    }

    /// Acts on a rebalance event (or a rewind); `Some` when the worker must stop.
    pub(super) async fn on_event(&mut self, ev: Event) -> Option<PipelineError> {
        match ev {
            Event::Rewind(gate) => return self.rewind(gate).await,
            Event::Assigned(key, epoch) => {
                if self.shared.health.epoch(&key.0, key.1) != Some(epoch) {
                    return None; // revoked again before we got here
                }
                self.spawn(key, epoch);
            }
            Event::Revoked(key) => {
                let current = self.shared.health.epoch(&key.0, key.1);
                if self
                    .slots
                    .get(&key)
                    .is_some_and(|s| Some(s.epoch) != current)
                {
                    self.slots.remove(&key);
                }
            }
        }
        None
    }

    /// Exactly-once, after an abort: drops every task (their queues and what they decided since
    /// the last commit), clears the state and the warm-up markers, seeks every partition held to
    /// its committed offset and starts fresh tasks, which warm the state up again from the
    /// history up to that offset, as on a fresh assignment. Then opens the gate. A seek that
    /// fails stops the worker (a restart rebuilds the same way).
    async fn rewind(&mut self, gate: RewindGuard) -> Option<PipelineError> {
        let started = Instant::now();
        let keys: Vec<Key> = self
            .slots
            .keys()
            .filter(|k| self.shared.health.epoch(&k.0, k.1).is_some())
            .cloned()
            .collect();
        let handles: Vec<TaskHandle> = {
            let mut running = lock(&self.rebalancer.running);
            self.slots
                .keys()
                .filter_map(|k| running.remove(k))
                .collect()
        };
        for h in &handles {
            h.fence.store(true, Ordering::Release);
            h.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.rebalancer.revoke_wait;
        for h in &handles {
            let _ = tokio::time::timeout_at(deadline, h.done.cancelled()).await;
        }
        self.slots.clear();
        self.applied.clear();
        if let Some(c) = &self.shared.changelogs {
            c.clear();
        }
        match &self.shared.merchants {
            // The merchant table holds the merchants, fed from the whole topic.
            Some(_) => self.shared.engine.state.clear_accounts(),
            None => self.shared.engine.state.clear(),
        }
        let consumer = self.shared.consumer.clone();
        let reset = self.shared.cfg.kafka.auto_offset_reset.clone();
        let ks = keys.clone();
        let token = self.shared.token.clone();
        let patience = Duration::from_millis(self.shared.cfg.kafka.session_timeout_ms);
        let sought = tokio::task::spawn_blocking(move || {
            seek_committed(&consumer, &ks, &reset, &token, patience)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let keys = match sought {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(error = %e, "Rewind failed: cannot seek to the committed offsets; stopping.");
                self.shared
                    .health
                    .set_problem("rewind", Some(format!("rewind failed: {e}")));
                return Some(PipelineError::Transaction(format!("rewind failed: {e}")));
            }
        };
        for key in &keys {
            let epoch = self.rebalancer.next_epoch.fetch_add(1, Ordering::AcqRel) + 1;
            self.shared.health.partition_assigned(&key.0, key.1, epoch);
            self.spawn(key.clone(), epoch);
        }
        self.shared.resets.send_modify(|n| *n += 1);
        tracing::info!(
            partitions = keys.len(),
            ms = started.elapsed().as_millis() as u64,
            "Rewound to the committed offsets: state cleared, partitions warming up again."
        );
        if let Some(g) = &self.shared.txn {
            g.rewound();
        }
        drop(gate);
        None
    }

    /// A fresh task for generation `epoch` of a partition.
    fn spawn(&mut self, key: Key, epoch: u64) {
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE);
        let handle = TaskHandle::new(epoch);
        let applied = self
            .applied
            .entry(key.clone())
            .or_insert_with(|| Arc::new(AtomicI64::new(-1)))
            .clone();
        let clock = self.shared.merchants.as_ref().and_then(|m| m.clock(key.1));
        let task = PartitionTask {
            shared: self.shared.clone(),
            topic: key.0.clone(),
            partition: key.1,
            handle: handle.clone(),
            applied,
            clock: clock.clone(),
            changelog: self.shared.changelogs.as_ref().map(|c| c.of(key.1)),
            restored: self
                .shared
                .changelogs
                .as_ref()
                .map(|_| std::sync::OnceLock::new()),
        };
        lock(&self.rebalancer.running).insert(key.clone(), handle);
        let k = key.clone();
        self.tasks.spawn(async move {
            let result = task.run(rx).await;
            TaskEnd { key: k, result }
        });
        // A partition assigned again may still carry our earlier pause.
        self.set_paused(&key, false);
        self.slots.insert(
            key,
            Slot {
                epoch,
                tx,
                pending: VecDeque::new(),
                paused: false,
                next: -1,
                clock,
            },
        );
    }

    /// Hands a message to its partition's task, or holds it and pauses the partition.
    pub(super) fn route(&mut self, m: BorrowedMessage<'_>) {
        let mut key = std::mem::take(&mut self.scratch);
        key.0.clear();
        key.0.push_str(m.topic());
        key.1 = m.partition();
        self.route_keyed(&key, m);
        self.scratch = key;
    }

    fn route_keyed(&mut self, key: &Key, m: BorrowedMessage<'_>) {
        let Some(slot) = self.slots.get_mut(key) else {
            tracing::debug!(
                partition = key.1,
                offset = m.offset(),
                "Message of a partition not assigned: dropped."
            );
            return;
        };
        if m.offset() < slot.next {
            return; // delivered again after a pause/resume: already held
        }
        slot.next = m.offset() + 1;
        if let Some(c) = &slot.clock {
            c.routed();
        }
        let m = m.detach();
        if !slot.pending.is_empty() {
            slot.pending.push_back(m);
            return;
        }
        if let Err(m) = enqueue(slot, m, &self.budget, self.budget_bytes) {
            slot.pending.push_back(m);
            slot.paused = true;
            self.set_paused(key, true);
        }
    }

    /// The group consumer read `partition` to its end (global merchant scope).
    pub(super) fn reached_end(&mut self, partition: i32) {
        if let Some(m) = &self.shared.merchants {
            m.reached_end(partition);
        }
    }

    /// Moves held messages to tasks that take them again, and resumes those partitions.
    pub(super) fn retry(&mut self) {
        let mut resume = Vec::new();
        for (key, slot) in self.slots.iter_mut().filter(|(_, s)| s.paused) {
            while let Some(m) = slot.pending.pop_front() {
                if let Err(m) = enqueue(slot, m, &self.budget, self.budget_bytes) {
                    slot.pending.push_front(m);
                    break;
                }
            }
            if slot.pending.is_empty() {
                slot.paused = false;
                resume.push(key.clone());
            }
        }
        for key in resume {
            self.set_paused(&key, false);
        }
    }

    fn set_paused(&self, key: &Key, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        let r = if pause {
            self.shared.consumer.pause(&tpl)
        } else {
            self.shared.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::debug!(partition = key.1, pause, error = %e, "Pause/resume failed.");
        } else if pause {
            tracing::debug!(partition = key.1, "Partition paused: its task is busy.");
        }
    }

    /// Stops routing: every task sees its queue close, finishes its in-flight decisions, ends.
    pub(super) fn close(&mut self) {
        self.slots.clear();
    }
}

/// Seeks `keys` to their committed offsets (or the `auto_offset_reset` end without one), asking
/// again while the broker does not answer, up to `patience`. Returns the partitions sought; one
/// that is no longer assigned (revoked meanwhile) is left out. Blocking.
fn seek_committed(
    consumer: &rdkafka::consumer::StreamConsumer<WorkerContext>,
    keys: &[Key],
    reset: &str,
    token: &CancellationToken,
    patience: Duration,
) -> Result<Vec<Key>, rdkafka::error::KafkaError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + patience;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in keys {
        tpl.add_partition(t, *p);
    }
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline && !token.is_cancelled() => {
                tracing::warn!(error = %e, "Committed offsets unknown; asking again.");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    };
    let assigned = consumer.assignment()?;
    let mut to = TopicPartitionList::new();
    let mut sought = Vec::new();
    for (t, p) in keys {
        if assigned.find_partition(t, *p).is_none() {
            tracing::info!(partition = p, "Partition no longer assigned: not rewound.");
            continue;
        }
        let o = match committed.find_partition(t, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Offset::Offset(o),
            _ if reset == "latest" => Offset::End,
            _ => Offset::Beginning,
        };
        to.add_partition_offset(t, *p, o)?;
        sought.push((t.clone(), *p));
    }
    if sought.is_empty() {
        return Ok(sought);
    }
    let r = consumer.seek_partitions(to, Duration::from_secs(10))?;
    for e in r.elements() {
        e.error()?;
    }
    Ok(sought)
}

/// Queues `m` for its task with its share of the byte budget; gives it back if either is full.
/// A closed queue (the task stopped on revocation) drops the message.
fn enqueue(
    slot: &Slot,
    m: OwnedMessage,
    budget: &Arc<Semaphore>,
    budget_bytes: usize,
) -> Result<(), OwnedMessage> {
    let bytes = m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len) + 64;
    let want = bytes.min(budget_bytes).min(u32::MAX as usize) as u32;
    let permit = match budget.clone().try_acquire_many_owned(want) {
        Ok(p) => p,
        Err(_) => return Err(m),
    };
    match slot.tx.try_send(Queued {
        msg: m,
        permit: Some(permit),
    }) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(q)) => Err(q.msg),
        Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
    }
}

/// Replays `topic`/`partition` into the state, from `state.warmup_secs` ago or from `applied`
/// (what this process already holds), whichever is later, up to `until`; advances `applied`.
/// Stops early on `stop` or shutdown. Returns the events applied. Blocking: call from
/// `spawn_blocking`.
///
/// With the changelog (`changelog` given) and nothing of the partition held yet, first
/// restores the partition's accounts from it ([`super::changelog`]) and replays only from its
/// last marker, skipping the events the restored accounts hold; the restore is returned for the
/// live path (at-least-once may decide again events the changelog already holds).
#[allow(clippy::too_many_arguments)]
pub(super) fn warm_up_blocking(
    s: &Shared,
    topic: &str,
    partition: i32,
    until: i64,
    stop: &CancellationToken,
    applied: &AtomicI64,
    clock: Option<&TaskClock>,
    changelog: Option<&super::changelog::Changelog>,
) -> Result<(u64, Option<super::changelog::Restored>), rdkafka::error::KafkaError> {
    let floor = applied.load(Ordering::Acquire);
    let restored = match changelog {
        Some(_) if floor < 0 => match super::changelog::restore_blocking(
            &s.cfg,
            &s.engine.state,
            &s.metrics,
            partition,
            stop,
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(partition, error = %e, "State changelog unreadable; replaying the partition's history instead.");
                None
            }
        },
        _ => None,
    };
    let n = replay_blocking(
        s,
        topic,
        partition,
        until,
        stop,
        applied,
        clock,
        changelog,
        restored.as_ref(),
    )?;
    Ok((n, restored))
}

#[allow(clippy::too_many_arguments)]
fn replay_blocking(
    s: &Shared,
    topic: &str,
    partition: i32,
    until: i64,
    stop: &CancellationToken,
    applied: &AtomicI64,
    clock: Option<&TaskClock>,
    changelog: Option<&super::changelog::Changelog>,
    restored: Option<&super::changelog::Restored>,
) -> Result<u64, rdkafka::error::KafkaError> {
    let floor = applied.load(Ordering::Acquire);
    if until <= 0 || until <= floor {
        return Ok(0);
    }
    let consumer =
        crate::kafka_client::helper_consumer(&crate::kafka_client::warmup_consumer(&s.cfg))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    // No message since `state.warmup_secs` ago: nothing to replay.
    let by_time =
        offset_since_warmup(&consumer, &s.cfg, topic, partition, now_ms)?.unwrap_or(until);
    // The changelog holds everything before its last marker.
    let by_time = match restored.and_then(|r| r.marker) {
        Some(m) => m,
        None => by_time,
    };
    let start = by_time.max(floor);
    if start >= until {
        applied.fetch_max(until, Ordering::AcqRel);
        return Ok(0);
    }
    let spec = s.engine.current().spec().clone();
    let mut n = 0u64;
    let cancelled = read_until(
        &consumer,
        topic,
        partition,
        start,
        until,
        &[stop, &s.token],
        |m| {
            if let Ok(tx) = decode(m.payload().unwrap_or_default(), &s.cfg.input, now_ms) {
                let key = crate::state::key_of(&tx.account_id);
                let held = restored.is_some_and(|r| r.holds(key, m.offset()));
                // Under the changelog's lock: a flush sees the account with its offset.
                let mut dirty = changelog.map(|c| c.lock());
                match &s.merchants {
                    // The merchant table applies the merchant side.
                    Some(sync) => {
                        if !held {
                            crate::engine::observe_account_only(&s.engine.state, &tx);
                        }
                        if let Some(c) = clock {
                            sync.warmed(c, m.offset(), tx.ts);
                        }
                    }
                    None => {
                        crate::engine::observe_full(
                            &s.engine.state,
                            &tx,
                            &spec,
                            crate::engine::Merchants::Apply,
                            !held,
                        );
                    }
                }
                if let Some(d) = dirty.as_mut() {
                    d.touch(key, m.offset());
                }
                n += 1;
            }
            applied.fetch_max(m.offset() + 1, Ordering::AcqRel);
        },
    )?;
    if cancelled {
        return Ok(n);
    }
    applied.fetch_max(until, Ordering::AcqRel);
    Ok(n)
}

/// Fills the label lookup (transaction → merchant and time, for labels without `merchant_id`
/// and `ts`) with `topic`/`partition`'s transactions from `state.warmup_secs` ago up to
/// `until`, applying nothing else: after a changelog restore the accounts come from the
/// changelog, but the lookup is not in it. Returns the transactions remembered. Blocking.
pub(super) fn lookup_backfill_blocking(
    s: &Shared,
    topic: &str,
    partition: i32,
    until: i64,
    stop: &CancellationToken,
) -> Result<u64, rdkafka::error::KafkaError> {
    let consumer =
        crate::kafka_client::helper_consumer(&crate::kafka_client::warmup_consumer(&s.cfg))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let Some(start) = offset_since_warmup(&consumer, &s.cfg, topic, partition, now_ms)? else {
        return Ok(0);
    };
    if start >= until {
        return Ok(0);
    }
    let mut n = 0u64;
    read_until(
        &consumer,
        topic,
        partition,
        start,
        until,
        &[stop, &s.token],
        |m| {
            if let Ok(tx) = decode(m.payload().unwrap_or_default(), &s.cfg.input, now_ms) {
                if !s.engine.state.too_far_ahead(tx.ts) {
                    s.engine.state.remember_tx(
                        crate::state::key_of(&tx.tx_id).max(1),
                        crate::state::key_of(&tx.merchant_id),
                        tx.ts.div_euclid(1000),
                    );
                    n += 1;
                }
            }
        },
    )?;
    Ok(n)
}

/// The offset of `topic`/`partition`'s first message since `state.warmup_secs` before
/// `now_ms` (by message timestamp); `None` when no message is that recent.
fn offset_since_warmup(
    consumer: &crate::kafka_client::HelperConsumer,
    cfg: &crate::config::Config,
    topic: &str,
    partition: i32,
    now_ms: i64,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    let since_ms = now_ms - cfg.state.warmup_secs.saturating_mul(1000) as i64;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(since_ms))?;
    let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
    Ok(
        match found.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        },
    )
}

/// Reads `topic`/`partition` from `start` up to `until` (exclusive) with `consumer`, handing
/// every message to `each`. Ends early when the history ends before `until` (deleted by
/// retention or compaction: 10 s without a message) or a token in `stop` is cancelled; returns
/// whether it was cancelled.
fn read_until(
    consumer: &crate::kafka_client::HelperConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    until: i64,
    stop: &[&CancellationToken],
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<bool, rdkafka::error::KafkaError> {
    let mut from = TopicPartitionList::new();
    from.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&from)?;
    let mut idle = 0;
    loop {
        if stop.iter().any(|t| t.is_cancelled()) {
            return Ok(true);
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                if m.offset() >= until {
                    return Ok(false);
                }
                each(&m);
                if m.offset() + 1 >= until {
                    return Ok(false);
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                idle += 1;
                if idle >= 20 {
                    return Ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn msg(offset: i64, bytes: usize) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; bytes]),
            None,
            "tx".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    #[test]
    fn the_byte_budget_bounds_what_is_held_and_frees_as_decisions_settle() {
        let (tx, mut rx) = mpsc::channel(PARTITION_QUEUE);
        let slot = Slot {
            epoch: 1,
            tx,
            pending: VecDeque::new(),
            paused: false,
            next: -1,
            clock: None,
        };
        let budget = Arc::new(Semaphore::new(1000));
        assert!(enqueue(&slot, msg(0, 500), &budget, 1000).is_ok());
        let back = enqueue(&slot, msg(1, 500), &budget, 1000).expect_err("over budget");
        assert_eq!(back.offset(), 1, "the message comes back, to be held");
        // The first decision settles: its permit goes back.
        let first = rx.try_recv().expect("queued");
        drop(first);
        assert!(enqueue(&slot, back, &budget, 1000).is_ok());
        // A message larger than the whole budget takes all of it, alone.
        drop(rx.try_recv().expect("queued"));
        assert!(enqueue(&slot, msg(2, 5000), &budget, 1000).is_ok());
        assert_eq!(budget.available_permits(), 0);
        assert!(enqueue(&slot, msg(3, 10), &budget, 1000).is_err());
    }

    #[test]
    fn a_full_queue_gives_the_message_back_and_a_closed_one_drops_it() {
        let (tx, rx) = mpsc::channel(1);
        let slot = Slot {
            epoch: 1,
            tx,
            pending: VecDeque::new(),
            paused: false,
            next: -1,
            clock: None,
        };
        let budget = Arc::new(Semaphore::new(1 << 20));
        assert!(enqueue(&slot, msg(0, 10), &budget, 1 << 20).is_ok());
        assert!(enqueue(&slot, msg(1, 10), &budget, 1 << 20).is_err());
        assert_eq!(
            budget.available_permits(),
            (1 << 20) - 74,
            "a message given back holds no budget"
        );
        drop(rx); // the task stopped (revoked)
        assert!(enqueue(&slot, msg(1, 10), &budget, 1 << 20).is_ok());
        assert_eq!(budget.available_permits(), 1 << 20);
    }
}
