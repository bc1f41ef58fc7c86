//! Redrive: records a mapping gave up on, read again from the source topic
//! by offset and handed to the function once more, apart from the mapping's
//! pollers (its own reader that never joins the group, its own client of
//! the function), so live processing goes on. Per partition in offset
//! order, batched as the pipeline batches, decoded with the mapping's schema
//! registry, throttles waited out and failures retried; nothing is
//! committed and nothing goes to the on-failure destination again (the
//! ledger keeps the new error).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_app::failures::{FailedRecord, RedriveOutcome, RedriveResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::event::{build_event, encode_decoded, encode_record, envelope_len, EncodedRecord, EventSource};
use super::invoke::{backoff, failed_from};
use super::target::{Outcome, Target};
use crate::kafka_auth::{AuthContext, KafkaAuth};
use crate::schema::{Decoder, Failure};

/// How a redrive reads and invokes: the mapping's settings.
pub struct Redrive {
    pub servers: String,
    pub topic: String,
    pub auth: KafkaAuth,
    pub decoder: Option<Arc<Decoder>>,
    pub target: Arc<dyn Target>,
    pub source: EventSource,
    pub batch_size: usize,
    pub max_payload: usize,
    /// Retries after a failed invocation before a record is Failed.
    pub max_retries: u32,
    pub report_item_failures: bool,
    /// Partitions redriven at once (each one batch at a time).
    pub partitions_at_once: usize,
}

/// How long the reader waits for a record the topic should hold.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// A gap in the wanted offsets larger than this is skipped by seeking.
const SEEK_GAP: i64 = 500;

/// What the reader found at a wanted offset.
enum Read {
    Found(OwnedMessage),
    Gone(i64),
    Unreadable(i64, String),
}

/// Redrives `records` (in the ledger's offset order per partition) and
/// sends each record's result as it is known. Stops early on `stop`
/// (records not done stay pending for the caller to end).
pub async fn run(
    r: Arc<Redrive>,
    records: Vec<FailedRecord>,
    stop: CancellationToken,
    out: mpsc::UnboundedSender<Vec<RedriveOutcome>>,
) {
    let mut by_partition: BTreeMap<i32, Vec<FailedRecord>> = BTreeMap::new();
    for f in records {
        by_partition.entry(f.partition).or_default().push(f);
    }
    let n = r.partitions_at_once.max(1);
    futures::stream::iter(by_partition)
        .for_each_concurrent(n, |(partition, mut recs)| {
            recs.sort_by_key(|f| f.offset);
            recs.dedup_by_key(|f| f.offset);
            partition_run(r.clone(), partition, recs, stop.clone(), out.clone())
        })
        .await;
}

fn outcome(partition: i32, offset: i64, result: RedriveResult, error: Option<String>) -> RedriveOutcome {
    RedriveOutcome { partition, offset, result, error, at: crate::clock::now_ms() }
}

async fn partition_run(
    r: Arc<Redrive>,
    partition: i32,
    recs: Vec<FailedRecord>,
    stop: CancellationToken,
    out: mpsc::UnboundedSender<Vec<RedriveOutcome>>,
) {
    let offsets: Vec<i64> = recs.iter().map(|f| f.offset).collect();
    let entries: BTreeMap<i64, FailedRecord> = recs.into_iter().map(|f| (f.offset, f)).collect();
    let (tx, mut rx) = mpsc::channel::<Read>(r.batch_size.clamp(16, 1024));
    let reader = {
        let (servers, topic, auth, stop) = (r.servers.clone(), r.topic.clone(), r.auth.clone(), stop.clone());
        tokio::task::spawn_blocking(move || read(&servers, &topic, &auth, partition, &offsets, &tx, &stop))
    };
    // Sized as the pipeline's batcher sizes batches.
    let envelope = envelope_len(&r.source, &r.topic, partition);
    let mut batch: Vec<EncodedRecord> = Vec::new();
    let mut size = envelope;
    let mut closed = false;
    while !closed || !batch.is_empty() {
        // Fill a batch with what the reader has; a short wait lets it catch up.
        let mut done = Vec::new();
        while !closed && batch.len() < r.batch_size {
            let next = if batch.is_empty() {
                tokio::select! { m = rx.recv() => m, _ = stop.cancelled() => None }
            } else {
                match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            let Some(read) = next else {
                closed = true;
                break;
            };
            match read {
                Read::Gone(o) => {
                    if let Some(f) = entries.get(&o) {
                        let why = format!("the topic no longer holds offset {o}: {}", f.copy_at());
                        done.push(outcome(partition, o, RedriveResult::Gone, Some(why)));
                    }
                }
                Read::Unreadable(o, why) => done.push(outcome(partition, o, RedriveResult::Failed, Some(why))),
                Read::Found(m) => {
                    let o = m.offset();
                    let Some(f) = entries.get(&o) else { continue };
                    if let Some(why) = not_the_same(&m, f) {
                        done.push(outcome(partition, o, RedriveResult::Gone, Some(format!("{why}: {}", f.copy_at()))));
                        continue;
                    }
                    match prepare(&r, &m).await {
                        Err(why) => done.push(outcome(partition, o, RedriveResult::Failed, Some(why))),
                        Ok(e) if envelope + e.json.len() > r.max_payload => {
                            let why = format!(
                                "a record of {} bytes (encoded) exceeds the {} byte payload limit",
                                e.json.len(),
                                r.max_payload
                            );
                            done.push(outcome(partition, o, RedriveResult::Failed, Some(why)));
                        }
                        Ok(e) => {
                            if !batch.is_empty() && size + e.json.len() + 1 > r.max_payload {
                                // Full by size: this record opens the next batch.
                                let _ = out.send(std::mem::take(&mut done));
                                let _ = out.send(invoke(&r, partition, std::mem::take(&mut batch), &stop).await);
                                size = envelope;
                            }
                            size += e.json.len() + 1;
                            batch.push(e);
                        }
                    }
                }
            }
        }
        if !done.is_empty() {
            let _ = out.send(done);
        }
        if stop.is_cancelled() {
            break;
        }
        if !batch.is_empty() {
            let _ = out.send(invoke(&r, partition, std::mem::take(&mut batch), &stop).await);
            size = envelope;
        }
    }
    drop(rx);
    let _ = reader.await;
}

/// Why the record at the failed record's offset is another one (the topic
/// was deleted and made again, or the mapping reads another topic now): its
/// timestamp or key differ from the ledger's.
fn not_the_same(m: &OwnedMessage, f: &FailedRecord) -> Option<String> {
    let ts = m.timestamp().to_millis().unwrap_or(-1);
    let key = m.key().map(super::failure::ledger_key);
    (ts != f.timestamp || key != f.key).then(|| {
        format!(
            "the record now at offset {} is not the one that failed (the topic was recreated or replaced)",
            f.offset
        )
    })
}

/// The record as the pipeline would send it (decoded with a registry).
async fn prepare(r: &Redrive, m: &OwnedMessage) -> Result<EncodedRecord, String> {
    let Some(decoder) = &r.decoder else { return Ok(encode_record(m)) };
    let mut tries = 0;
    loop {
        match decoder.decode(m.key(), m.payload(), false).await {
            Ok(d) => return Ok(encode_decoded(m, Some((&d, decoder.json)))),
            Err(Failure::SchemaNotFound(why)) => return Err(format!("SCHEMA_NOT_FOUND: {why}")),
            Err(Failure::Deserialization(why)) => return Err(format!("DESERIALIZATION_ERROR: {why}")),
            Err(Failure::Unavailable(why)) if tries >= 3 => return Err(why),
            Err(Failure::Unavailable(_)) => {
                tries += 1;
                tokio::time::sleep(backoff(tries, Duration::from_millis(500), Duration::from_secs(5))).await;
            }
        }
    }
}

/// One batch until the function took it or the retries ran out; each
/// record's result.
async fn invoke(
    r: &Redrive,
    partition: i32,
    mut records: Vec<EncodedRecord>,
    stop: &CancellationToken,
) -> Vec<RedriveOutcome> {
    let mut results = Vec::with_capacity(records.len());
    let each = |records: &[EncodedRecord], result, error: Option<String>| {
        records.iter().map(move |e| outcome(partition, e.offset, result, error.clone())).collect::<Vec<_>>()
    };
    let (mut attempts, mut throttles) = (0u32, 0u32);
    loop {
        let payload = build_event(&r.source, &r.topic, partition, &records);
        let error = match r.target.invoke(payload).await {
            Outcome::Success { body } => {
                match failed_from(r.report_item_failures, &r.topic, partition, &body, &records) {
                    Ok(None) => {
                        results.extend(each(&records, RedriveResult::Succeeded, None));
                        return results;
                    }
                    Ok(Some(first_failed)) => {
                        // As the pipeline does: everything before the lowest failed offset is done.
                        let done = records.iter().take_while(|e| e.offset < first_failed).count();
                        results.extend(each(&records[..done], RedriveResult::Succeeded, None));
                        records.drain(..done);
                        format!("the function reported {} failed records from offset {first_failed}", records.len())
                    }
                    Err(why) => why,
                }
            }
            Outcome::FunctionError { message, .. } => message,
            Outcome::Throttled { retry_after, .. } => {
                throttles += 1;
                let wait = retry_after
                    .unwrap_or_else(|| backoff(throttles, Duration::from_millis(500), Duration::from_secs(60)));
                tokio::select! { _ = tokio::time::sleep(wait) => continue, _ = stop.cancelled() => return results }
            }
        };
        attempts += 1;
        if attempts > r.max_retries {
            results.extend(each(&records, RedriveResult::Failed, Some(format!("{error} (after {attempts} attempts)"))));
            return results;
        }
        let wait = backoff(attempts, Duration::from_millis(100), Duration::from_secs(30));
        tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = stop.cancelled() => return results }
    }
}

/// Reads `offsets` (ascending) of one partition with a client that never
/// joins a group, sending what it finds in order. Blocking.
fn read(
    servers: &str,
    topic: &str,
    auth: &KafkaAuth,
    partition: i32,
    offsets: &[i64],
    tx: &mpsc::Sender<Read>,
    stop: &CancellationToken,
) {
    let fail_all = |from: usize, why: String| {
        for o in &offsets[from..] {
            if tx.blocking_send(Read::Unreadable(*o, why.clone())).is_err() {
                return;
            }
        }
    };
    let consumer = auth.consumer(
        ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "sluice-redrive")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true"),
    );
    let c: BaseConsumer<AuthContext> = match consumer {
        Ok(c) => c,
        Err(e) => return fail_all(0, format!("cannot read the topic: {}", auth.redact(&e.to_string()))),
    };
    let (low, high) = match c.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(e) => {
            let why = format!("cannot read {topic}-{partition}'s offsets: {}", auth.redact(&e.to_string()));
            return fail_all(0, why);
        }
    };
    // Where the consumer is assigned to read next (None: not assigned).
    let mut at: Option<i64> = None;
    let mut i = 0;
    let mut last_progress = Instant::now();
    while i < offsets.len() {
        if stop.is_cancelled() {
            return;
        }
        let want = offsets[i];
        if want < low || want >= high {
            if tx.blocking_send(Read::Gone(want)).is_err() {
                return;
            }
            i += 1;
            continue;
        }
        if at.is_none_or(|a| a > want || want - a > SEEK_GAP) {
            let mut tpl = TopicPartitionList::new();
            if tpl.add_partition_offset(topic, partition, Offset::Offset(want)).is_err() || c.assign(&tpl).is_err() {
                return fail_all(i, format!("cannot read {topic}-{partition} from offset {want}"));
            }
            at = Some(want);
            last_progress = Instant::now();
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                at = Some(m.offset() + 1);
                // Offsets the topic skipped (compaction, transactions) are gone.
                while i < offsets.len() && offsets[i] < m.offset() {
                    if tx.blocking_send(Read::Gone(offsets[i])).is_err() {
                        return;
                    }
                    i += 1;
                }
                if i < offsets.len() && offsets[i] == m.offset() {
                    if tx.blocking_send(Read::Found(m.detach())).is_err() {
                        return;
                    }
                    i += 1;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                // The end came before the offset: it is not there any more.
                while i < offsets.len() && at.is_some_and(|a| offsets[i] >= a) && offsets[i] < high {
                    if tx.blocking_send(Read::Gone(offsets[i])).is_err() {
                        return;
                    }
                    i += 1;
                }
                // Anything still wanted lies before `at`: read again from there.
                at = None;
            }
            Some(Err(e)) => {
                let why = auth.redact(&e.to_string());
                if last_progress.elapsed() > READ_TIMEOUT {
                    return fail_all(i, format!("cannot read {topic}-{partition}: {why}"));
                }
            }
            None => {
                if last_progress.elapsed() > READ_TIMEOUT {
                    let why = format!("no record came from {topic}-{partition} at offset {want} in {READ_TIMEOUT:?}");
                    return fail_all(i, why);
                }
            }
        }
    }
}

/// One record of a partition (the console's "show record"); None when the
/// topic no longer holds it. Blocking.
pub fn read_one(
    servers: &str,
    topic: &str,
    auth: &KafkaAuth,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>, String> {
    let (tx, mut rx) = mpsc::channel(1);
    read(servers, topic, auth, partition, &[offset], &tx, &CancellationToken::new());
    drop(tx);
    match rx.blocking_recv() {
        Some(Read::Found(m)) => Ok(Some(m)),
        Some(Read::Gone(_)) => Ok(None),
        Some(Read::Unreadable(_, why)) => Err(why),
        None => Err(format!("cannot read {topic}-{partition} at offset {offset}")),
    }
}
