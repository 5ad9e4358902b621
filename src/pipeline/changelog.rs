//! The state changelog (`state.changelog`): the accounts a partition changed, written to
//! `topics.changelog` after their events, and read back when a worker takes the partition.
//!
//! Each partition keeps the keys of the accounts its events changed since its last flush. A
//! flush writes each of them ([`crate::state::codec`]: the account through the partition's
//! position) and then a marker: every event of the partition below the marker's offset is in
//! the changelog. At-least-once, the partition task flushes every `state.changelog_flush_ms`
//! and when it ends. Exactly-once, the commit cycle flushes every partition inside the
//! transaction, with the gate closed, just before it sends the offsets: the changelog and the
//! committed offsets move together, and an aborted transaction's records are never read.
//!
//! A restore reads the changelog partition from its beginning (compaction keeps it to about
//! one record per account) with `read_committed`, installs every account, and the warm-up then
//! replays only the transactions from the last marker on, skipping for each restored account
//! the events its record already holds. Exactly-once, the marker is the committed offset: no
//! replay at all. At-least-once, a worker killed between a flush and its next offset commit
//! decides the events between the two again (as at-least-once does); its restored accounts
//! already hold them, and they are not applied a second time ([`Restored::holds`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};
use crate::state::codec::{self, Record};
use crate::state::{lock, State};

/// What a partition changed since its last flush.
#[derive(Default)]
pub(crate) struct Dirty {
    keys: HashSet<u64>,
    /// The partition's position: the offset after the last event applied or skipped.
    through: i64,
    /// `through` at the last flush (-1 before any).
    flushed: i64,
}

impl Dirty {
    /// The event at `offset` changed account `key`.
    #[inline]
    pub(super) fn touch(&mut self, key: u64, offset: i64) {
        self.keys.insert(key);
        self.advance(offset);
    }

    /// The event at `offset` changed no account (dead-lettered).
    #[inline]
    pub(super) fn advance(&mut self, offset: i64) {
        self.through = self.through.max(offset + 1);
    }
}

/// The changelog side of one partition.
pub(crate) struct Changelog {
    partition: i32,
    dirty: Mutex<Dirty>,
}

impl Changelog {
    /// The partition's changed accounts, to update with the state under one lock (a warm-up
    /// beside a commit cycle's flush).
    #[inline]
    pub(super) fn lock(&self) -> MutexGuard<'_, Dirty> {
        lock(&self.dirty)
    }

    /// Forgets what changed (exactly-once rewind: the state is rebuilt from the changelog).
    fn clear(&self) {
        let mut d = self.lock();
        d.keys.clear();
        d.through = 0;
        d.flushed = -1;
    }

    /// The records of a flush, marker last; `None` when nothing moved since the last one.
    fn take(&self, state: &State) -> Option<crate::sink::Records> {
        let mut d = self.lock();
        if d.keys.is_empty() && d.through == d.flushed {
            return None;
        }
        let through = d.through;
        let mut records = Vec::with_capacity(d.keys.len() + 1);
        for key in d.keys.drain() {
            let value = state.account_if(key, |a| {
                let mut v = Vec::new();
                codec::encode_account(a, through, &mut v);
                v
            });
            records.push((codec::account_key(key).to_vec(), value));
        }
        records.push((
            codec::MARKER_KEY.to_vec(),
            Some(codec::encode_marker(through).to_vec()),
        ));
        d.flushed = through;
        Some(records)
    }

    /// Writes what changed; resolves with the records written once acknowledged.
    pub(super) fn flush(
        &self,
        state: &State,
        sink: &Sink,
    ) -> Option<impl std::future::Future<Output = Result<usize, SinkError>> + Send + 'static> {
        self.take(state)
            .map(|records| sink.send_changelog(self.partition, records))
    }
}

/// Every partition's changelog side in this process (kept across assignments, like the state).
#[derive(Default)]
pub(crate) struct Changelogs {
    by_partition: Mutex<HashMap<i32, Arc<Changelog>>>,
}

impl Changelogs {
    /// The changelog side of `partition`.
    pub(super) fn of(&self, partition: i32) -> Arc<Changelog> {
        lock(&self.by_partition)
            .entry(partition)
            .or_insert_with(|| {
                Arc::new(Changelog {
                    partition,
                    dirty: Mutex::new(Dirty {
                        flushed: -1,
                        ..Dirty::default()
                    }),
                })
            })
            .clone()
    }

    /// Forgets what every partition changed (exactly-once rewind).
    pub(super) fn clear(&self) {
        for c in lock(&self.by_partition).values() {
            c.clear();
        }
    }

    /// Flushes every partition and waits for the acknowledgements (exactly-once: inside the
    /// transaction, with the gate closed). Returns the records written.
    pub(super) async fn flush_all(
        &self,
        state: &State,
        sink: &Sink,
        metrics: &Metrics,
    ) -> Result<usize, SinkError> {
        let all: Vec<Arc<Changelog>> = lock(&self.by_partition).values().cloned().collect();
        let futs: Vec<_> = all.iter().filter_map(|c| c.flush(state, sink)).collect();
        let mut n = 0;
        for r in futures::future::join_all(futs).await {
            n += r?;
        }
        metrics.changelog_written(n);
        Ok(n)
    }
}

/// What a restore read from a changelog partition.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// The last marker: every event below it is in the state restored.
    pub(super) marker: Option<i64>,
    /// Each restored account's `through`: its events below it are in its state.
    through: HashMap<u64, i64>,
    /// The largest `through`: no event from it on is in any restored account.
    pub(super) max_through: i64,
    /// Records read.
    pub(super) records: u64,
    /// Records that could not be read (skipped).
    pub(super) invalid: u64,
}

impl Restored {
    /// True when the restored state of account `key` already holds its event at `offset`.
    #[inline]
    pub(super) fn holds(&self, key: u64, offset: i64) -> bool {
        offset < self.max_through && self.through.get(&key).is_some_and(|t| offset < *t)
    }
}

/// Reads changelog partition `partition` from its beginning into `state`. Blocking: call from
/// `spawn_blocking`. Stops early (Ok, incomplete: its caller is stopping too) on `stop`.
pub(super) fn restore_blocking(
    cfg: &crate::config::Config,
    state: &State,
    metrics: &Metrics,
    partition: i32,
    stop: &CancellationToken,
) -> Result<Restored, KafkaError> {
    let started = Instant::now();
    let topic = cfg.changelog_topic();
    let mut r = Restored::default();
    let complete = crate::kafka_client::read_to_end(cfg, &topic, partition, stop, |m| {
        r.records += 1;
        match codec::decode(m.key().unwrap_or_default(), m.payload()) {
            Ok(Record::Marker { through }) => r.marker = Some(through),
            Ok(Record::Account {
                key,
                through,
                state: Some(a),
            }) => {
                state.install_account(key, &a);
                r.through.insert(key, through);
                r.max_through = r.max_through.max(through);
            }
            Ok(Record::Account { key, .. }) => {
                state.remove_account(key);
                r.through.remove(&key);
            }
            Err(e) => {
                r.invalid += 1;
                tracing::warn!(topic = %topic, partition, offset = m.offset(), error = %e, "Changelog record skipped.");
            }
        }
    })?;
    if !complete {
        return Ok(r);
    }
    metrics.changelog_restored(r.records, r.invalid, started.elapsed().as_secs_f64());
    tracing::info!(
        topic = %topic,
        partition,
        records = r.records,
        accounts = r.through.len(),
        marker = ?r.marker,
        seconds = started.elapsed().as_secs_f64(),
        "State restored from the changelog."
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key_of;

    /// A flush writes each changed account once through the partition's position, then the
    /// marker; nothing moved, nothing written; a dead letter moves the marker alone.
    #[test]
    fn a_flush_writes_each_changed_account_once_then_the_marker() {
        let state = State::new(&crate::config::StateConfig::default());
        let regs = Changelogs::default();
        let c = regs.of(3);
        let t0 = 1_700_000_000_000i64;
        for (offset, id) in [(10, "a"), (11, "b"), (12, "a")] {
            state.with_account(key_of(id), |a| a.w.add(t0 + offset * 1000, 5.0));
            c.lock().touch(key_of(id), offset);
        }
        c.lock().touch(key_of("gone"), 13);
        let records = c.take(&state).expect("a flush");
        assert_eq!(records.len(), 4, "a, b, a tombstone for gone, the marker");
        let (mk, mv) = records.last().expect("marker");
        assert!(matches!(
            codec::decode(mk, mv.as_deref()),
            Ok(Record::Marker { through: 14 })
        ));
        for (k, v) in &records[..3] {
            match codec::decode(k, v.as_deref()).expect("decodes") {
                Record::Account {
                    key,
                    state: Some(a),
                    through,
                } => {
                    assert_eq!(through, 14);
                    let want = if key == key_of("a") { 2 } else { 1 };
                    assert_eq!(a.w.fine.window((t0 + 20_000) / 1000, 12).count, want);
                }
                Record::Account {
                    key, state: None, ..
                } => assert_eq!(key, key_of("gone")),
                Record::Marker { .. } => panic!("the marker comes last"),
            }
        }
        assert!(c.take(&state).is_none(), "nothing moved");
        c.lock().advance(20);
        assert_eq!(c.take(&state).expect("marker").len(), 1);
        regs.clear();
        assert!(
            c.take(&state).is_some(),
            "after a rewind the marker is written again"
        );
    }

    #[test]
    fn restored_holds_only_what_each_record_includes() {
        let mut r = Restored::default();
        r.through.insert(1, 100);
        r.through.insert(2, 50);
        r.max_through = 100;
        assert!(r.holds(1, 99));
        assert!(!r.holds(1, 100));
        assert!(r.holds(2, 49));
        assert!(!r.holds(2, 60));
        assert!(!r.holds(3, 10), "an account the changelog did not have");
    }
}
