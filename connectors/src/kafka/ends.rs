//! Where the assigned partitions end: their high watermarks and committed offsets, asked on
//! a client of their own, off the poll loop.
//!
//! "Caught up" (`--until-caught-up`, and the end of a replay) means every assigned
//! partition has been read to its high watermark. Asking the broker for it on the main
//! consumer's connection is unreliable: a consumer at the end of its data keeps a fetch
//! request parked at the broker for `fetch.wait.max.ms` (500 ms by librdkafka's default),
//! and the query waits behind it — so with default fetch settings the queries timed out
//! and a bounded run never stopped. The probe has its own connection and its own thread;
//! the poll loop only reads what it found, and only answers fetched after the stream fell
//! silent count (a high watermark only grows, so an older answer could end a run early).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use super::commit::PartitionId;
use super::{KafkaOptions, Role, client_config, lock};
use crate::error::{ConnectorError, Result};

/// The end of one partition, as last asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    /// Low and high watermark: offsets of the first message and one past the last.
    pub low: i64,
    pub high: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// When the query was sent.
    pub asked: Instant,
}

#[derive(Default)]
struct Shared {
    wanted: Mutex<Vec<PartitionId>>,
    ends: Mutex<HashMap<PartitionId, End>>,
    stop: AtomicBool,
}

/// Asks for the ends of the partitions it is told about, every 100 ms, on its own thread.
pub(super) struct EndProbe {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

/// How often the probe asks.
const EVERY: Duration = Duration::from_millis(100);
/// How long one query may take: independent of the main consumer's fetch settings.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl EndProbe {
    pub fn start(kafka: &KafkaOptions) -> Result<EndProbe> {
        let client: BaseConsumer = client_config(kafka, Role::Consumer, &[("group.id", &kafka.group_id)])
            .create()
            .map_err(|source| ConnectorError::KafkaClient { what: "creating the end-of-partition probe", source })?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("gridwatch-kafka-ends".into())
            .spawn(move || probe(&client, &s))
            .map_err(|_| ConnectorError::Internal("cannot start the end-of-partition probe thread"))?;
        Ok(EndProbe { shared, handle: Some(handle) })
    }

    /// The partitions to keep asking about (the current assignment).
    pub fn want(&self, partitions: Vec<PartitionId>) {
        let mut wanted = lock(&self.shared.wanted);
        if *wanted != partitions {
            *wanted = partitions;
        }
    }

    /// The end of `pid` as found by a query sent after `since`, if there is one yet.
    pub fn end(&self, pid: &PartitionId, since: Instant) -> Option<End> {
        lock(&self.shared.ends).get(pid).copied().filter(|e| e.asked >= since)
    }
}

impl Drop for EndProbe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn probe(client: &BaseConsumer, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(EVERY);
        let wanted = lock(&shared.wanted).clone();
        if wanted.is_empty() {
            continue;
        }
        let asked = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for pid in &wanted {
            tpl.add_partition(&pid.topic, pid.partition);
        }
        let committed: HashMap<(String, i32), Option<i64>> = match client.committed_offsets(tpl, QUERY_TIMEOUT) {
            Ok(list) => list
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_string(), e.partition()), offset)
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "end-of-partition probe: committed offsets not available yet");
                continue;
            }
        };
        for pid in wanted {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            match client.fetch_watermarks(&pid.topic, pid.partition, Timeout::After(QUERY_TIMEOUT)) {
                Ok((low, high)) => {
                    let committed = committed.get(&(pid.topic.to_string(), pid.partition)).copied().flatten();
                    lock(&shared.ends).insert(pid, End { low, high, committed, asked });
                }
                Err(e) => {
                    tracing::debug!(error = %e, topic = %pid.topic, partition = pid.partition, "end-of-partition probe")
                }
            }
        }
    }
}
