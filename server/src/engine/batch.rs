//! Batch: records of one partition gathered for one invocation, in offset
//! order, up to `BatchSize`, the batching window and the 6 MB payload
//! limit. Records the filter turns away are counted here and committed
//! with the records around them (or alone, once the partition is idle).

use std::sync::Arc;

use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event::{encode_record, envelope_len, EncodedRecord};
use super::pipeline::Part;
use crate::shared::status::{LiveStatus, PartitionCounters};
use sluice_app::metrics::Counter;

/// What the batcher hands on next.
pub enum Next {
    /// Records to invoke; `end` is the offset that is done once they are.
    Batch { records: Vec<EncodedRecord>, end: i64 },
    /// A record too large to invoke even alone.
    TooLarge { record: EncodedRecord, end: i64 },
    /// The channel closed or the poller stopped.
    Closed,
}

pub struct Batcher {
    rx: mpsc::Receiver<OwnedMessage>,
    /// The event's size without records.
    envelope: usize,
    counters: Arc<PartitionCounters>,
    /// A record that did not fit the last batch: it starts the next.
    held: Option<EncodedRecord>,
    /// The offset after the last record taken from the channel: filtered-out
    /// records up to it are done once the records around them are.
    seen_to: Option<i64>,
}

impl Batcher {
    pub fn new(part: &Part<'_>, rx: mpsc::Receiver<OwnedMessage>) -> Batcher {
        Batcher {
            rx,
            envelope: envelope_len(&part.p.source, part.topic, part.partition),
            counters: part.counters.clone(),
            held: None,
            seen_to: None,
        }
    }

    /// Counts a record taken from the channel; true if the filter admits it.
    fn take(&mut self, part: &Part<'_>, m: &OwnedMessage) -> bool {
        self.seen_to = Some(m.offset() + 1);
        LiveStatus::add(&self.counters.polled, 1);
        LiveStatus::add(
            &self.counters.bytes,
            (m.payload().map_or(0, |v| v.len()) + m.key().map_or(0, |k| k.len())) as u64,
        );
        let admitted = part.p.filter.admits(m);
        if !admitted {
            part.p.status.count(Counter::FilteredOutEvents, 1);
        }
        admitted
    }

    /// The first record of the next batch: the held one, or the next the
    /// filter admits (committing filtered-out records whenever idle).
    async fn first(&mut self, part: &Part<'_>) -> Option<EncodedRecord> {
        if let Some(r) = self.held.take() {
            return Some(r);
        }
        loop {
            if self.rx.is_empty() {
                // Idle with only filtered-out records behind us: commit them.
                if let Some(end) = self.seen_to.take() {
                    part.commit(end);
                }
                part.pending_since(0);
            }
            let m = tokio::select! {
                m = self.rx.recv() => m?,
                _ = part.stop.cancelled() => return None,
            };
            if self.take(part, &m) {
                return Some(encode_record(&m));
            }
        }
    }

    pub async fn next(&mut self, part: &Part<'_>) -> Next {
        let p = part.p;
        let Some(first) = self.first(part).await else { return Next::Closed };
        // Until this batch is done, its first record is the oldest not done.
        part.pending_since(first.timestamp_ms.max(1));
        if self.envelope + first.json.len() > p.max_payload {
            self.seen_to = None;
            return Next::TooLarge { end: first.offset + 1, record: first };
        }
        let mut size = self.envelope + first.json.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + p.window;
        while batch.len() < p.batch_size {
            let next = if p.window.is_zero() {
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    m = self.rx.recv() => match m { Some(m) => m, None => break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = part.stop.cancelled() => return Next::Closed,
                }
            };
            if !self.take(part, &next) {
                continue;
            }
            let r = encode_record(&next);
            if size + r.json.len() + 1 > p.max_payload {
                self.held = Some(r);
                break;
            }
            size += r.json.len() + 1;
            batch.push(r);
        }
        // Done once the batch is: everything before the held record, or
        // everything taken so far.
        let end = match &self.held {
            Some(h) => h.offset,
            None => self.seen_to.take().unwrap_or(0),
        };
        Next::Batch { records: batch, end }
    }
}
