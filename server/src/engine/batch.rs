//! Batch: records of one partition gathered for one invocation, in offset
//! order, up to `BatchSize`, the batching window and the 6 MB payload
//! limit. Records the filter turns away are counted here and committed
//! with the records around them (or alone, once the partition is idle).
//! With a schema registry, each record is decoded first: filters read the
//! decoded record, and one the registry cannot vouch for is handed on alone.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event::{encode_decoded, encode_record, envelope_len, EncodedRecord};
use super::invoke::{backoff, pause};
use super::pipeline::Part;
use crate::problem::{FailureCondition, Problem};
use crate::schema::Failure;
use crate::shared::status::{LiveStatus, PartitionCounters};
use sluice_app::metrics::Counter;

/// What the batcher hands on next.
pub enum Next {
    /// Records to invoke; `end` is the offset that is done once they are.
    Batch { records: Vec<EncodedRecord>, end: i64 },
    /// A record too large to invoke even alone.
    TooLarge { record: EncodedRecord, end: i64 },
    /// A record the schema registry cannot vouch for (no such schema, or it
    /// does not decode): handed to the failure rules, never invoked.
    Invalid { record: EncodedRecord, end: i64, condition: FailureCondition, why: String },
    /// The channel closed or the poller stopped.
    Closed,
}

/// A record taken from the channel, ready for a batch or for the failure
/// rules, or still to be decoded (the registry did not answer).
enum Held {
    Record(EncodedRecord),
    Invalid(EncodedRecord, FailureCondition, String),
    Undecoded(OwnedMessage),
}

impl Held {
    fn offset(&self) -> i64 {
        match self {
            Held::Record(r) | Held::Invalid(r, ..) => r.offset,
            Held::Undecoded(m) => m.offset(),
        }
    }
}

enum Taken {
    Held(Held),
    Filtered,
    Stopped,
}

pub struct Batcher {
    rx: mpsc::Receiver<OwnedMessage>,
    /// The event's size without records.
    envelope: usize,
    counters: Arc<PartitionCounters>,
    /// A record that did not fit the last batch (or that failed decoding
    /// after it began): it comes next.
    held: Option<Held>,
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

    /// Counts a record taken from the channel, then prepares it.
    async fn take(&mut self, part: &Part<'_>, m: OwnedMessage, wait: bool) -> Taken {
        self.seen_to = Some(m.offset() + 1);
        LiveStatus::add(&self.counters.polled, 1);
        LiveStatus::add(
            &self.counters.bytes,
            (m.payload().map_or(0, |v| v.len()) + m.key().map_or(0, |k| k.len())) as u64,
        );
        self.prepare(part, m, wait).await
    }

    /// Decodes the record (schema registry) and filters it. When the
    /// registry does not answer, waits for it (`wait`), or hands the record
    /// back undecoded, so a batch already begun goes without it.
    async fn prepare(&self, part: &Part<'_>, m: OwnedMessage, wait: bool) -> Taken {
        let m = &m;
        let p = part.p;
        let Some(decoder) = &p.decoder else {
            if p.filter.admits(m) {
                return Taken::Held(Held::Record(encode_record(m)));
            }
            p.status.count(Counter::FilteredOutEvents, 1);
            return Taken::Filtered;
        };
        let want_json = !p.filter.patterns.is_empty();
        let mut tries = 0;
        let decoded = loop {
            match decoder.decode(m.key(), m.payload(), want_json).await {
                Ok(d) => break d,
                Err(Failure::SchemaNotFound(why)) => {
                    return Taken::Held(Held::Invalid(encode_record(m), FailureCondition::SchemaNotFound, why))
                }
                Err(Failure::Deserialization(why)) => {
                    return Taken::Held(Held::Invalid(encode_record(m), FailureCondition::DeserializationError, why))
                }
                Err(Failure::Unavailable(_)) if !wait => return Taken::Held(Held::Undecoded(m.clone())),
                Err(Failure::Unavailable(error)) => {
                    // Not the record's fault: it waits for the registry, in order.
                    tries += 1;
                    let span = format!("{}-{} at offset {}", part.topic, part.partition, m.offset());
                    p.status.problem(Problem::RegistryDown { span, error });
                    if !pause(backoff(tries, Duration::from_millis(500), Duration::from_secs(30)), part).await {
                        return Taken::Stopped;
                    }
                }
            }
        };
        let key = match &decoded.key {
            Some(k) => Some(&k.json[..]),
            None => m.key(),
        };
        let value = match &decoded.value {
            Some(v) => Some(&v.json[..]),
            None => m.payload(),
        };
        if !p.filter.admits_as(m, key, value) {
            p.status.count(Counter::FilteredOutEvents, 1);
            return Taken::Filtered;
        }
        Taken::Held(Held::Record(encode_decoded(m, Some((&decoded, decoder.json)))))
    }

    /// The first record of the next batch: the held one, or the next the
    /// filter admits (committing filtered-out records whenever idle).
    async fn first(&mut self, part: &Part<'_>) -> Option<Held> {
        match self.held.take() {
            Some(Held::Undecoded(m)) => match self.prepare(part, m, true).await {
                Taken::Held(h) => return Some(h),
                Taken::Stopped => return None,
                // Filtered out once decoded: committed with what follows.
                Taken::Filtered => {}
            },
            Some(h) => return Some(h),
            None => {}
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
            match self.take(part, m, true).await {
                Taken::Held(h) => return Some(h),
                Taken::Filtered => {}
                Taken::Stopped => return None,
            }
        }
    }

    pub async fn next(&mut self, part: &Part<'_>) -> Next {
        let p = part.p;
        let first = match self.first(part).await {
            None => return Next::Closed,
            Some(Held::Record(r)) => r,
            Some(Held::Invalid(record, condition, why)) => {
                part.pending_since(record.timestamp_ms.max(1));
                self.seen_to = None;
                return Next::Invalid { end: record.offset + 1, record, condition, why };
            }
            // `first` decodes a held record, waiting as long as it takes.
            Some(Held::Undecoded(_)) => unreachable!("first() decodes held records"),
        };
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
            let r = match self.take(part, next, false).await {
                Taken::Held(Held::Record(r)) => r,
                Taken::Filtered => continue,
                Taken::Stopped => return Next::Closed,
                Taken::Held(other) => {
                    // Failed, or waiting for the registry: the batch ends
                    // before it; it is handled next.
                    self.held = Some(other);
                    break;
                }
            };
            if size + r.json.len() + 1 > p.max_payload {
                self.held = Some(Held::Record(r));
                break;
            }
            size += r.json.len() + 1;
            batch.push(r);
        }
        // Done once the batch is: everything before the held record, or
        // everything taken so far.
        let end = match &self.held {
            Some(h) => h.offset(),
            None => self.seen_to.take().unwrap_or(0),
        };
        Next::Batch { records: batch, end }
    }
}
