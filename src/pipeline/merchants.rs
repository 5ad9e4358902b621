//! The merchant table: merchant windows that see every transaction of the topic, in event-time
//! order, whatever the partition count, the worker count and the speed of each partition
//! (`state.merchant_scope = "global"`, the default).
//!
//! The transactions topic is keyed by account, so a partition holds all of an account's
//! transactions but only some of a merchant's. Each worker therefore reads *every* partition a
//! second time, with an assigned consumer of its own (the feed, a Kafka Streams GlobalKTable of
//! sorts), and applies each transaction to its merchant's windows, merging the partitions by event
//! time. The partition tasks apply their transactions to the accounts only and read the
//! merchant windows.
//!
//! Two rules make a decision see what `fraudstream score` sees over the time-ordered file,
//! like Kafka Streams' timestamp synchronisation (`max.task.idle.ms`):
//! - a task decides a transaction at event time `t` only once the feed has read that
//!   transaction itself and has applied every earlier transaction of every partition (the
//!   feed's *low watermark* ≥ `t`), or after `state.merchant_sync_max_wait_ms` (counted in
//!   `fraud_merchant_sync_timeouts_total`);
//! - the feed applies a transaction at `t` only once every task of this worker is at `t` or
//!   later (or idle at the end of its partition), and a transaction of a partition this worker
//!   decides only after it has been decided (a decision never sees its own transaction).
//!
//! No thread hands events to another: the feed's thread only reads Kafka into per-partition
//! buffers; whoever moves (a task that decided a transaction, a task about to wait, the feed's
//! thread after a read) applies what has become allowed, under one lock, and wakes exactly the
//! tasks whose wait is over.
//!
//! Cost: each worker reads and decodes the whole topic once more (the merchant windows do not
//! scale out with the workers; the account state and the scoring do), and a decision waits for
//! the slowest partition's transactions up to its time (in a live stream, the skew between
//! partitions: milliseconds; `fraud_merchant_sync_wait_seconds`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decode::decode;
use crate::engine::Engine;
use crate::metrics::MerchantTableMetrics;
use crate::state::{key_of, lock};

/// Transactions buffered per partition by the feed before it pauses that partition.
const FEED_BUFFER: usize = 16_384;

/// Where one partition task of this worker stands, for the feed.
#[derive(Debug)]
pub(super) struct TaskClock {
    partition: i32,
    /// Event time of the transaction the task decides next (`i64::MIN`: not known yet).
    next_ts: AtomicI64,
    /// Offset of the transaction it decides next: the earlier ones are decided or warmed up.
    next_offset: AtomicI64,
    /// Messages routed to the task and not decided yet.
    pending: AtomicI64,
    /// The group consumer has read the partition to its end.
    at_end: AtomicBool,
    /// The event time the task waits for the merchant windows to reach (`i64::MAX`: none).
    waiting_for: AtomicI64,
    /// Offset after the last message of the partition the feed has read (`-1`: the feed has
    /// not started; `i64::MAX`: it does not read the partition), see [`feed_read_of`].
    feed_read: AtomicI64,
    /// Woken when `waiting_for` is reached.
    wake: Notify,
}

impl TaskClock {
    fn new(partition: i32, at_end: bool) -> TaskClock {
        TaskClock {
            partition,
            next_ts: AtomicI64::new(i64::MIN),
            next_offset: AtomicI64::new(-1),
            pending: AtomicI64::new(0),
            at_end: AtomicBool::new(at_end),
            waiting_for: AtomicI64::new(i64::MAX),
            feed_read: AtomicI64::new(-1),
            wake: Notify::new(),
        }
    }

    /// A message of the partition was routed to the task.
    pub(super) fn routed(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.at_end.store(false, Ordering::Release);
    }

    /// Whether the feed may apply a transaction of `partition` at `offset`, `ts`.
    fn allows(&self, partition: i32, offset: i64, ts: i64) -> bool {
        if self.partition == partition {
            return self.next_offset.load(Ordering::Acquire) > offset;
        }
        let idle = self.at_end.load(Ordering::Acquire) && self.pending.load(Ordering::Acquire) <= 0;
        idle || self.next_ts.load(Ordering::Acquire) >= ts
    }
}

/// One buffered transaction: what its merchant's windows need.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    ts: i64,
    merchant: u64,
    amount: f32,
}

#[derive(Debug)]
struct Part {
    buf: VecDeque<Entry>,
    at_end: bool,
    paused: bool,
    /// Event time of the last transaction applied (`i64::MIN` before any).
    last_ts: i64,
    /// Offset of the next transaction not applied (where a snapshot stands).
    next: i64,
    /// Offset after the last message the feed has read (transaction or not).
    read_next: i64,
    /// Newest event time the feed has read (`i64::MIN` before any).
    read_ts: i64,
    /// Since when the partition has had nothing buffered without being at its end.
    empty_since: Option<Instant>,
}

impl Part {
    /// The partition's watermark: the event time before which it brings nothing more in order
    /// (never going back: a transaction older than one already applied, out of order within
    /// its partition, does not hold the others back; it is applied when it comes).
    fn low(&self) -> i64 {
        match self.buf.front() {
            Some(e) => e.ts.max(self.last_ts),
            None if self.at_end => i64::MAX,
            None => self.last_ts,
        }
    }
}

/// What the feed and the partition tasks of one worker share.
pub(crate) struct MerchantSync {
    clocks: Mutex<HashMap<i32, Arc<TaskClock>>>,
    /// The partitions read for the merchant windows, with what is buffered of each.
    parts: Mutex<HashMap<i32, Part>>,
    /// Every transaction of every partition before this event time is applied (`i64::MAX`:
    /// every partition read to its end).
    low: AtomicI64,
    /// The oldest of the partitions' newest event times read by the feed
    /// (`state.merchant_live_grace_ms`).
    read_low: AtomicI64,
    /// The group's first assignment has been received (before it, nothing is applied: where
    /// the tasks will start is not known yet).
    joined: AtomicBool,
    engine: Arc<Engine>,
    max_wait: Duration,
    /// How long the merge waits for a partition that is neither at its end nor buffered (its
    /// next transaction may be earlier than the others') before it merges without it
    /// (`state.merchant_partition_idle_ms`).
    partition_idle: Duration,
    /// How long a decision waits for every partition to show a transaction at or after its
    /// time before it trusts a partition's end (`state.merchant_live_grace_ms`).
    grace: Duration,
    metrics: MerchantTableMetrics,
}

impl MerchantSync {
    pub(super) fn new(
        engine: Arc<Engine>,
        max_wait: Duration,
        partition_idle: Duration,
        grace: Duration,
        metrics: MerchantTableMetrics,
    ) -> MerchantSync {
        MerchantSync {
            clocks: Mutex::default(),
            parts: Mutex::default(),
            low: AtomicI64::new(i64::MIN),
            read_low: AtomicI64::new(i64::MIN),
            joined: AtomicBool::new(false),
            engine,
            max_wait,
            partition_idle,
            grace,
            metrics,
        }
    }

    /// A partition was assigned: its task's clock holds the merchant windows back from now on.
    pub(super) fn assigned(&self, partition: i32) {
        let parts = lock(&self.parts);
        let mut clocks = lock(&self.clocks);
        let at_end = clocks
            .get(&partition)
            .is_some_and(|c| c.at_end.load(Ordering::Acquire));
        let clock = TaskClock::new(partition, at_end);
        clock
            .feed_read
            .store(feed_read_of(&parts, partition), Ordering::Release);
        clocks.insert(partition, Arc::new(clock));
    }

    /// The group's assignment is known (possibly empty).
    pub(super) fn joined(&self) {
        self.joined.store(true, Ordering::Release);
        self.advance();
    }

    /// A partition was revoked: it no longer holds the merchant windows back.
    pub(super) fn revoked(&self, partition: i32) {
        if let Some(c) = lock(&self.clocks).remove(&partition) {
            c.wake.notify_one();
        }
        self.advance();
    }

    /// The group consumer reached the end of `partition`.
    pub(super) fn reached_end(&self, partition: i32) {
        if let Some(c) = lock(&self.clocks).get(&partition) {
            c.at_end.store(true, Ordering::Release);
        }
        self.advance();
    }

    /// A snapshot was restored at start.
    pub(super) fn snapshot_restored(&self) {
        self.metrics
            .snapshots
            .with_label_values(&["restored"])
            .inc();
    }

    /// A snapshot was written (`ok`) or failed to.
    pub(super) fn snapshot_written(&self, ok: bool) {
        let op = if ok { "written" } else { "failed" };
        self.metrics.snapshots.with_label_values(&[op]).inc();
    }

    /// True when this worker decides `partition` (partition 0's owner writes the snapshots).
    pub(super) fn owns(&self, partition: i32) -> bool {
        lock(&self.clocks).contains_key(&partition)
    }

    /// The records of snapshot `generation` ([`super::snapshot`]), taken under the merge's lock:
    /// the merchants and where each partition stands are of the same moment.
    pub(super) fn snapshot(&self, generation: u64) -> crate::sink::Records {
        let parts = lock(&self.parts);
        let positions = parts
            .iter()
            .map(|(&p, part)| {
                (
                    p,
                    super::snapshot::Position {
                        next: part.next,
                        last_ts: part.last_ts,
                    },
                )
            })
            .collect();
        super::snapshot::records(generation, &positions, &self.engine.state)
    }

    /// The clock of an assigned partition.
    pub(super) fn clock(&self, partition: i32) -> Option<Arc<TaskClock>> {
        lock(&self.clocks).get(&partition).cloned()
    }

    /// A warm-up applied the partition's transaction at `offset`, `ts` to the accounts.
    pub(super) fn warmed(&self, clock: &TaskClock, offset: i64, ts: i64) {
        clock.next_ts.fetch_max(ts, Ordering::AcqRel);
        clock.next_offset.fetch_max(offset + 1, Ordering::AcqRel);
        if offset % 256 == 0 {
            self.advance();
        }
    }

    /// Whether the task may decide its transaction at `offset`, `ts` now: the feed has read
    /// that transaction itself, and the merchant windows hold every transaction before `ts`.
    ///
    /// The first half is what makes a live decision see another partition's earlier
    /// transaction: the group consumer may get this one before the feed has fetched the other
    /// (which then looks read to its end, holding nothing back). The broker answers a fetch
    /// with every partition it leads as it stands then, so once the feed holds this
    /// transaction it holds every transaction written to another partition before it, and the
    /// low watermark waits for those. Measured without it: 130 of 200,000 live decisions
    /// differed from `score`'s over the same stream.
    ///
    /// With `state.merchant_live_grace_ms`, also: every partition has shown the feed a
    /// transaction at `ts` or later (one read to its end may still get an earlier one: a
    /// produce request's partitions are appended one after another).
    pub(super) fn ready(&self, clock: &TaskClock, offset: i64, ts: i64) -> bool {
        self.ready_with(clock, offset, ts, self.grace.is_zero())
    }

    /// [`MerchantSync::ready`]; `graced`: the grace is over (partitions' ends are trusted).
    fn ready_with(&self, clock: &TaskClock, offset: i64, ts: i64, graced: bool) -> bool {
        clock.feed_read.load(Ordering::Acquire) > offset
            && self.low.load(Ordering::Acquire) >= ts
            && (graced || self.read_low.load(Ordering::Acquire) >= ts)
    }

    /// Waits until the merchant windows hold every transaction before `ts` (the task is about
    /// to decide its transaction at `offset`), at most `state.merchant_sync_max_wait_ms`.
    pub(super) async fn wait_for(
        &self,
        clock: &TaskClock,
        offset: i64,
        ts: i64,
        stop: &CancellationToken,
    ) {
        clock.next_offset.store(offset, Ordering::Release);
        // Never back: an out-of-order transaction of this partition does not hold back what
        // its later ones already let through.
        clock.next_ts.fetch_max(ts, Ordering::AcqRel);
        if self.ready(clock, offset, ts) {
            return;
        }
        // This task moving may be what the merge waited for.
        self.advance();
        if self.ready(clock, offset, ts) {
            return;
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let grace_until = tokio::time::Instant::now() + self.grace;
        let mut graced = self.grace.is_zero();
        clock.waiting_for.store(ts, Ordering::Release);
        loop {
            let woken = clock.wake.notified();
            if self.ready_with(clock, offset, ts, graced) {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep_until(grace_until), if !graced => graced = true,
                _ = tokio::time::sleep_until(deadline) => {
                    self.metrics.timeouts.inc();
                    break;
                }
            }
        }
        clock.waiting_for.store(i64::MAX, Ordering::Release);
        self.metrics.wait.observe(started.elapsed().as_secs_f64());
    }

    /// The task decided its transaction at `offset`: the merchant windows may take it.
    pub(super) fn decided(&self, clock: &TaskClock, offset: i64) {
        clock.next_offset.fetch_max(offset + 1, Ordering::AcqRel);
        clock.pending.fetch_sub(1, Ordering::AcqRel);
        self.advance();
    }

    /// Applies, in event-time order, every buffered transaction that every task of this worker
    /// lets through; publishes the low watermark and wakes the tasks whose wait is over.
    fn advance(&self) {
        if !self.joined.load(Ordering::Acquire) {
            return;
        }
        let mut parts = lock(&self.parts);
        if parts.is_empty() {
            return;
        }
        let clocks = lock(&self.clocks);
        let mut applied = 0u64;
        let now = Instant::now();
        loop {
            let mut head: Option<(i32, Entry)> = None;
            // A partition with nothing buffered, not at its end, may still bring an earlier
            // transaction: wait for it a little.
            let mut unknown_after = i64::MAX;
            for (&p, part) in parts.iter_mut() {
                match part.buf.front() {
                    Some(e) => {
                        if head.is_none_or(|(_, h)| e.ts < h.ts) {
                            head = Some((p, *e));
                        }
                    }
                    None if part.at_end => {}
                    None => {
                        let since = *part.empty_since.get_or_insert(now);
                        if now.duration_since(since) < self.partition_idle {
                            unknown_after = unknown_after.min(part.last_ts);
                        }
                    }
                }
            }
            let Some((p, e)) = head else { break };
            if e.ts > unknown_after || !clocks.values().all(|c| c.allows(p, e.offset, e.ts)) {
                break;
            }
            let Some(part) = parts.get_mut(&p) else { break };
            part.buf.pop_front();
            part.last_ts = part.last_ts.max(e.ts);
            part.next = e.offset + 1;
            if part.buf.is_empty() && !part.at_end {
                part.empty_since = Some(now);
            }
            crate::engine::apply_merchant(&self.engine.state, e.merchant, e.ts, e.amount);
            applied += 1;
        }
        let low = parts.values().map(Part::low).min().unwrap_or(i64::MAX);
        let newest = parts.values().map(|p| p.last_ts).max().unwrap_or(i64::MIN);
        drop(parts);
        if applied > 0 {
            self.metrics.events.inc_by(applied);
        }
        self.low.store(low, Ordering::Release);
        for c in clocks.values() {
            // `next_offset` is the offset a waiting task is about to decide.
            if c.waiting_for.load(Ordering::Acquire) <= low
                && c.feed_read.load(Ordering::Acquire) > c.next_offset.load(Ordering::Acquire)
            {
                c.wake.notify_one();
            }
        }
        let shown = if low == i64::MAX { newest } else { low };
        if shown != i64::MIN && shown != i64::MAX {
            self.metrics.watermark.set(shown as f64 / 1000.0);
        }
    }
}

/// Where the feed has read `partition` to, for its task's clock: `-1` before the feed started,
/// `i64::MAX` for a partition it does not read (one added to the topic after it started: its
/// decisions do not wait for the feed).
fn feed_read_of(parts: &HashMap<i32, Part>, partition: i32) -> i64 {
    match parts.get(&partition) {
        Some(part) => part.read_next,
        None if parts.is_empty() => -1,
        None => i64::MAX,
    }
}

/// Assigns `consumer` to every partition of `topic` from where the restored snapshot stands,
/// or (a partition it does not know) from `state.warmup_secs` ago by message timestamp, like
/// the partition warm-ups; returns the partitions and their start offsets.
fn start(
    consumer: &crate::kafka_client::HelperConsumer,
    topic: &str,
    cfg: &Config,
    restored: Option<&super::snapshot::Restored>,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let since_ms = now_ms - cfg.state.warmup_secs.saturating_mul(1000) as i64;
    let mut by_time = TopicPartitionList::new();
    for &p in &ids {
        by_time.add_partition_offset(topic, p, Offset::Offset(since_ms))?;
    }
    let found = consumer.offsets_for_times(by_time, Duration::from_secs(10))?;
    let mut start = TopicPartitionList::new();
    let mut out = Vec::with_capacity(ids.len());
    for &p in &ids {
        let known = restored.and_then(|r| r.positions.get(&p));
        let o = match (known, found.find_partition(topic, p).map(|e| e.offset())) {
            (Some(pos), _) => pos.next,
            (None, Some(Offset::Offset(o))) => o,
            (None, _) => {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1
            }
        };
        start.add_partition_offset(topic, p, Offset::Offset(o))?;
        out.push((p, o));
    }
    consumer.assign(&start)?;
    Ok(out)
}

/// Writes the merchant table's snapshots from the feed's thread (sends in the background).
struct SnapshotWriter {
    every: Duration,
    last: Instant,
    /// The last generation written whole.
    written: Arc<std::sync::atomic::AtomicU64>,
    busy: Arc<AtomicBool>,
    sink: crate::sink::Sink,
    topic: String,
    runtime: tokio::runtime::Handle,
}

impl SnapshotWriter {
    /// Writes a snapshot when one is due, this worker decides partition 0, and the previous
    /// one is acknowledged.
    fn tick(&mut self, sync: &MerchantSync) {
        if self.last.elapsed() < self.every || self.busy.load(Ordering::Acquire) || !sync.owns(0) {
            return;
        }
        self.last = Instant::now();
        // After a failure the same generation goes again into the same slot: the other slot
        // keeps the last complete snapshot.
        let generation = self.written.load(Ordering::Acquire) + 1;
        let records = sync.snapshot(generation);
        let n = records.len();
        let fut = self.sink.send_records(self.topic.clone(), 0, records);
        let (written, busy, metrics) = (
            self.written.clone(),
            self.busy.clone(),
            sync.metrics.snapshots.clone(),
        );
        busy.store(true, Ordering::Release);
        let started = Instant::now();
        self.runtime.spawn(async move {
            match fut.await {
                Ok(_) => {
                    written.store(generation, Ordering::Release);
                    metrics.with_label_values(&["written"]).inc();
                    tracing::debug!(generation, records = n, ms = started.elapsed().as_millis() as u64, "Merchant table: snapshot written.");
                }
                Err(e) => {
                    metrics.with_label_values(&["failed"]).inc();
                    tracing::warn!(generation, error = %e, "Merchant table: snapshot not written (a restart replays more).");
                }
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// Reads every partition of the transactions topic into the merge's buffers until `token` is
/// cancelled. Blocking: run it on a thread of its own. Start-up errors (a topic just created
/// has no leader yet, the broker is down) are retried; once it runs, consume errors are logged
/// and retried.
///
/// With snapshots (`state.merchant_snapshot_secs`), `restored` is the snapshot installed at
/// start (the feed reads on from where it stands), and `snapshot_sink` the producer that
/// writes the next ones.
pub(super) fn feed(
    sync: Arc<MerchantSync>,
    cfg: Arc<Config>,
    token: CancellationToken,
    restored: Option<super::snapshot::Restored>,
    snapshot_sink: Option<crate::sink::Sink>,
) -> Result<(), KafkaError> {
    let topic = cfg.topics.transactions.clone();
    let consumer =
        crate::kafka_client::helper_consumer(&crate::kafka_client::merchant_feed_consumer(&cfg))?;
    let mut writer = snapshot_sink.map(|sink| SnapshotWriter {
        every: Duration::from_secs(cfg.state.merchant_snapshot_secs.max(1)),
        last: Instant::now(),
        written: Arc::new(std::sync::atomic::AtomicU64::new(
            restored.as_ref().map_or(0, |r| r.generation),
        )),
        busy: Arc::default(),
        sink,
        topic: cfg.merchant_snapshot_topic(),
        runtime: tokio::runtime::Handle::current(),
    });
    let mut failures = 0u32;
    let ids = loop {
        match start(&consumer, &topic, &cfg, restored.as_ref()) {
            Ok(ids) => break ids,
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(error = %e, attempts = failures, "Merchant table: cannot start yet; retrying.");
                }
                let backoff = Duration::from_millis(100u64 << failures.min(6));
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if token.is_cancelled() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    };
    tracing::info!(
        topic = %topic,
        partitions = ids.len(),
        "Merchant table: reading every partition for the merchant windows."
    );
    {
        let mut parts = lock(&sync.parts);
        for &(p, next) in &ids {
            let last_ts = restored
                .as_ref()
                .and_then(|r| r.positions.get(&p))
                .map_or(i64::MIN, |pos| pos.last_ts);
            parts.insert(
                p,
                Part {
                    buf: VecDeque::new(),
                    at_end: false,
                    paused: false,
                    last_ts,
                    next,
                    read_next: next,
                    read_ts: last_ts,
                    empty_since: Some(Instant::now()),
                },
            );
        }
    }
    let mut errors = 0u32;
    let mut batch: Vec<(i32, i64, Option<Entry>)> = Vec::with_capacity(2048);
    let mut eof: Vec<i32> = Vec::new();
    while !token.is_cancelled() {
        // Read what is there (waiting a little when nothing is), then hand it to the merge.
        let mut wait = Duration::from_millis(5);
        while batch.len() < 2048 {
            let m = match consumer.poll(wait) {
                None => break,
                Some(m) => m,
            };
            wait = Duration::ZERO;
            match m {
                Ok(m) => {
                    errors = 0;
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let entry = decode(m.payload().unwrap_or_default(), &cfg.input, now_ms)
                        .ok()
                        .map(|tx| Entry {
                            offset: m.offset(),
                            ts: tx.ts,
                            merchant: key_of(&tx.merchant_id),
                            amount: tx.amount as f32,
                        });
                    batch.push((m.partition(), m.offset(), entry));
                }
                Err(KafkaError::PartitionEOF(p)) => eof.push(p),
                Err(e) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        tracing::warn!(error = %e, consecutive = errors, "Merchant table: consume error; retrying.");
                    }
                    break;
                }
            }
        }
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        {
            let mut parts = lock(&sync.parts);
            for (p, offset, entry) in batch.drain(..) {
                if let Some(part) = parts.get_mut(&p) {
                    part.at_end = false;
                    part.empty_since = None;
                    part.read_next = part.read_next.max(offset + 1);
                    if let Some(e) = entry {
                        part.read_ts = part.read_ts.max(e.ts);
                        part.buf.push_back(e);
                    }
                }
            }
            if !sync.grace.is_zero() {
                let read_low = parts.values().map(|p| p.read_ts).min().unwrap_or(i64::MIN);
                sync.read_low.store(read_low, Ordering::Release);
            }
            for c in lock(&sync.clocks).values() {
                c.feed_read
                    .fetch_max(feed_read_of(&parts, c.partition), Ordering::AcqRel);
            }
            for p in eof.drain(..) {
                if let Some(part) = parts.get_mut(&p) {
                    part.at_end = true;
                }
            }
            for (&p, part) in parts.iter_mut() {
                if !part.paused && part.buf.len() >= FEED_BUFFER {
                    part.paused = true;
                    pause.push(p);
                } else if part.paused && part.buf.len() <= FEED_BUFFER / 2 {
                    part.paused = false;
                    resume.push(p);
                }
            }
        }
        for p in pause {
            set_paused(&consumer, &topic, p, true);
        }
        for p in resume {
            set_paused(&consumer, &topic, p, false);
        }
        sync.advance();
        if let Some(w) = writer.as_mut() {
            w.tick(&sync);
        }
    }
    if let Some(mut w) = writer {
        // A clean stop leaves a snapshot of where the table stands.
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.busy.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        w.last = Instant::now() - w.every;
        w.tick(&sync);
        while w.busy.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

fn set_paused(
    consumer: &crate::kafka_client::HelperConsumer,
    topic: &str,
    partition: i32,
    pause: bool,
) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        tracing::debug!(partition, pause, error = %e, "Merchant table: pause/resume failed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(read_next: i64) -> Part {
        Part {
            buf: VecDeque::new(),
            at_end: false,
            paused: false,
            last_ts: i64::MIN,
            next: 0,
            read_next,
            read_ts: i64::MIN,
            empty_since: None,
        }
    }

    /// A decision waits for the feed's copy of its transaction only where the feed reads the
    /// partition: before the feed starts it waits (the watermark is not known either), for a
    /// partition the feed does not read (added to the topic later) it does not.
    #[test]
    fn feed_read_of_a_partition() {
        let mut parts = HashMap::new();
        assert_eq!(feed_read_of(&parts, 0), -1);
        parts.insert(0, part(42));
        assert_eq!(feed_read_of(&parts, 0), 42);
        assert_eq!(feed_read_of(&parts, 7), i64::MAX);
    }
}
