//! Snapshots of the merchant table (`state.merchant_snapshot_secs`), so that a worker starting
//! restores the merchant windows in seconds and reads the transactions topic only from where
//! the snapshot stands, instead of `state.warmup_secs` of every partition.
//!
//! Every worker's merchant table holds the same merchants (each reads the whole topic), so one
//! worker writes: the one deciding partition 0. A snapshot is taken under the merge's lock
//! ([`super::merchants::MerchantSync`]): every merchant, and for each partition the offset of
//! its next transaction not yet applied and the event time of its last applied. It goes to a
//! compacted topic of one partition, in one of two slots that alternate, marker last:
//!
//! | key | value |
//! |---|---|
//! | `M`, slot (u8), merchant key (u64, big-endian) | version `1` (u8), generation (u64), the merchant ([`crate::state::codec::encode_merchant`], no frauds) |
//! | `S`, slot (u8) | version `1`, generation (u64), merchants (u64), partitions (u32), then per partition: id (i32), next offset (i64), last event time (i64) |
//!
//! At-least-once, the feed's thread writes them (in the background). Exactly-once, the commit
//! cycle writes them into its transaction with the gate closed: the table then holds the
//! merchant side of exactly the decisions that transaction commits (a snapshot of an aborted
//! transaction is never read, restores read with `read_committed`).
//!
//! A restore takes the slot whose marker is newest and whose merchants of that generation are
//! all there (a writer that died half-way left the other slot complete). Labels are not in it:
//! the labels topic is applied again after a restore, as for the accounts.

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::state::codec::{self, take_i64};
use crate::state::State;

const VERSION: u8 = 1;

/// Where the merchant table stands in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The offset of the next transaction not applied.
    pub(crate) next: i64,
    /// Event time of the last transaction applied (`i64::MIN`: none).
    pub(crate) last_ts: i64,
}

/// A snapshot restored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restored {
    /// Its generation (the next snapshot writes `generation + 1`).
    pub(crate) generation: u64,
    /// Where it stands, by partition.
    pub(crate) positions: HashMap<i32, Position>,
    /// Merchants installed.
    pub(crate) merchants: u64,
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    take_i64(b).map(|v| v as u64)
}

/// The records of snapshot `generation` of `state`'s merchants standing at `positions`,
/// marker last.
pub(crate) fn records(
    generation: u64,
    positions: &HashMap<i32, Position>,
    state: &State,
) -> crate::sink::Records {
    let slot = (generation % 2) as u8;
    let mut out = Vec::new();
    state.for_each_merchant(|key, m| {
        let mut k = Vec::with_capacity(10);
        k.push(b'M');
        k.push(slot);
        k.extend_from_slice(&key.to_be_bytes());
        let mut v = Vec::with_capacity(1_200);
        v.push(VERSION);
        v.extend_from_slice(&generation.to_le_bytes());
        codec::encode_merchant(m, &mut v);
        out.push((k, Some(v)));
    });
    let mut v = Vec::with_capacity(24 + positions.len() * 20);
    v.push(VERSION);
    v.extend_from_slice(&generation.to_le_bytes());
    v.extend_from_slice(&(out.len() as u64).to_le_bytes());
    v.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    let mut ps: Vec<_> = positions.iter().collect();
    ps.sort_by_key(|(p, _)| **p);
    for (p, pos) in ps {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&pos.next.to_le_bytes());
        v.extend_from_slice(&pos.last_ts.to_le_bytes());
    }
    out.push((vec![b'S', slot], Some(v)));
    out
}

struct Marker {
    generation: u64,
    merchants: u64,
    positions: HashMap<i32, Position>,
}

fn decode_marker(v: &[u8]) -> Option<Marker> {
    let (&VERSION, mut b) = v.split_first()? else {
        return None;
    };
    let generation = take_u64(&mut b)?;
    let merchants = take_u64(&mut b)?;
    let n = codec::take_u32(&mut b)?;
    let mut positions = HashMap::new();
    for _ in 0..n {
        let p = codec::take_u32(&mut b)? as i32;
        let next = take_i64(&mut b)?;
        let last_ts = take_i64(&mut b)?;
        positions.insert(p, Position { next, last_ts });
    }
    Some(Marker {
        generation,
        merchants,
        positions,
    })
}

/// What a read of the snapshot topic found, by slot.
#[derive(Default)]
struct Slots {
    markers: [Option<Marker>; 2],
    merchants: [HashMap<u64, (u64, Vec<u8>)>; 2],
    invalid: u64,
}

impl Slots {
    fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        match (key, value) {
            ([b'S', slot @ (0 | 1)], Some(v)) => match decode_marker(v) {
                Some(m) => self.markers[*slot as usize] = Some(m),
                None => self.invalid += 1,
            },
            ([b'M', slot @ (0 | 1), k @ ..], Some(v)) if k.len() == 8 => {
                let key = u64::from_be_bytes(k.try_into().unwrap_or_default());
                match v.split_first() {
                    Some((&VERSION, mut rest)) => match take_u64(&mut rest) {
                        Some(g) => {
                            self.merchants[*slot as usize].insert(key, (g, rest.to_vec()));
                        }
                        None => self.invalid += 1,
                    },
                    _ => self.invalid += 1,
                }
            }
            _ => self.invalid += 1,
        }
    }

    /// The newest complete slot: its marker and its merchants of the marker's generation.
    fn best(&self) -> Option<usize> {
        (0..2)
            .filter_map(|s| {
                let m = self.markers[s].as_ref()?;
                let have = self.merchants[s]
                    .values()
                    .filter(|(g, _)| *g == m.generation)
                    .count() as u64;
                (have == m.merchants).then_some((m.generation, s))
            })
            .max()
            .map(|(_, s)| s)
    }

    /// Installs the newest complete snapshot into `state`.
    fn install(self, state: &State) -> Option<Restored> {
        let s = self.best()?;
        let marker = self.markers[s].as_ref()?;
        let mut n = 0;
        for (key, (g, v)) in &self.merchants[s] {
            if *g != marker.generation {
                continue;
            }
            let mut b = &v[..];
            if let Some(m) = codec::decode_merchant(&mut b) {
                state.install_merchant(*key, m);
                n += 1;
            }
        }
        Some(Restored {
            generation: marker.generation,
            positions: marker.positions.clone(),
            merchants: n,
        })
    }
}

/// Reads the snapshot topic and installs its newest complete snapshot into `state`; `None`
/// when there is none. Blocking: call from a blocking thread.
pub(crate) fn restore_blocking(
    cfg: &Config,
    state: &State,
    token: &CancellationToken,
) -> Result<Option<Restored>, KafkaError> {
    let started = Instant::now();
    let topic = cfg.merchant_snapshot_topic();
    let mut slots = Slots::default();
    let mut records = 0u64;
    let complete = crate::kafka_client::read_to_end(cfg, &topic, 0, token, |m| {
        records += 1;
        slots.add(m.key().unwrap_or_default(), m.payload());
    })?;
    if !complete {
        return Ok(None);
    }
    let invalid = slots.invalid;
    let restored = slots.install(state);
    tracing::info!(
        topic = %topic,
        records,
        invalid,
        merchants = restored.as_ref().map(|r| r.merchants),
        generation = restored.as_ref().map(|r| r.generation),
        seconds = started.elapsed().as_secs_f64(),
        "Merchant table: snapshot read."
    );
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key_of;

    fn state_with(merchants: usize, t0: i64) -> State {
        let s = State::new(&crate::config::StateConfig::default());
        for i in 0..merchants {
            s.with_merchant(key_of(&format!("m{i}")), |m| {
                m.w.add(t0 + i as i64 * 1000, 2.0);
                m.feedback.add_tx((t0 + i as i64 * 1000) / 1000);
            });
        }
        s
    }

    fn positions(next: i64) -> HashMap<i32, Position> {
        (0..3)
            .map(|p| {
                (
                    p,
                    Position {
                        next: next + p as i64,
                        last_ts: 7,
                    },
                )
            })
            .collect()
    }

    /// The newest complete snapshot wins; one cut short (its writer died) leaves the other
    /// slot's in force.
    #[test]
    fn the_newest_complete_slot_is_restored() {
        let t0 = 1_700_000_000_000;
        let mut slots = Slots::default();
        for (k, v) in records(4, &positions(100), &state_with(5, t0)) {
            slots.add(&k, v.as_deref());
        }
        // Generation 5 (the other slot) complete, with more merchants.
        for (k, v) in records(5, &positions(200), &state_with(8, t0)) {
            slots.add(&k, v.as_deref());
        }
        // Generation 6 reuses slot 0 and dies before its marker: 3 of 9 merchants written.
        for (k, v) in records(6, &positions(300), &state_with(9, t0))
            .into_iter()
            .take(3)
        {
            slots.add(&k, v.as_deref());
        }
        let state = State::new(&crate::config::StateConfig::default());
        let r = slots.install(&state).expect("a complete snapshot");
        assert_eq!(r.generation, 5);
        assert_eq!(r.merchants, 8);
        assert_eq!(r.positions, positions(200));
        let m = state.merchant(key_of("m7"));
        assert_eq!(m.w.max_ts_ms, t0 + 7000);
    }

    #[test]
    fn no_marker_no_snapshot_and_garbage_is_counted() {
        let mut slots = Slots::default();
        slots.add(b"M\x00short", Some(b"x"));
        slots.add(b"S\x01", Some(b"\x01"));
        slots.add(b"zz", None);
        assert_eq!(slots.invalid, 3);
        assert!(slots.best().is_none());
        let state = State::new(&crate::config::StateConfig::default());
        assert!(slots.install(&state).is_none());
    }
}
