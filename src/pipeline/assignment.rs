//! Assignment: the partitions this worker owns, their tasks, and the warm-up that rebuilds a
//! partition's share of the state from its history before the task's first decision.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Shared;
use crate::decode::decode;

/// Replays `topic`/`partition` from `state.warmup_secs` ago up to `until` into the state.
/// Blocking: call from `spawn_blocking`.
pub(super) fn warm_up_blocking(
    s: &Shared,
    topic: &str,
    partition: i32,
    until: i64,
) -> Result<u64, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = crate::kafka_client::warmup_consumer(&s.cfg).create()?;
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
