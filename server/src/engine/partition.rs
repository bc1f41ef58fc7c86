//! One partition's pipeline: batch → invoke → commit, strictly in offset
//! order with at most one batch in flight. Records come from a channel (the
//! poller's, or an in-memory source in benchmarks); offsets leave through a
//! `Committer`. An offset is committed only once its record was invoked
//! successfully, or dropped by a rule the user set.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;
use sluice_app::filter::{record_document, value_document, Pattern, RecordMeta, ValueFilters};
use sluice_app::spec::{FunctionResponseType, MappingSpec};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::destination::{Destination, Failed};
use super::event::{build_event, encode_record, envelope_len, EncodedRecord, EventSource, MAX_PAYLOAD_BYTES};
use super::status::LiveStatus;
use super::target::{Outcome, Target};

/// Where finished offsets go: the consumer group in Kafka, or a test's memory.
pub trait Committer: Send + Sync {
    /// Records before `next_offset` are done.
    fn commit(&self, topic: &str, partition: i32, next_offset: i64);
}

/// The settings of one mapping that a pipeline runs with.
pub struct Pipeline {
    pub target: Arc<dyn Target>,
    pub committer: Arc<dyn Committer>,
    pub status: Arc<LiveStatus>,
    pub source: EventSource,
    pub batch_size: usize,
    pub window: Duration,
    pub max_retries: Option<u32>,
    pub max_age: Option<Duration>,
    pub report_item_failures: bool,
    /// Payload limit (AWS's 6 MB; smaller in tests).
    pub max_payload: usize,
    /// A record is invoked if any matches; none: every record.
    pub filters: Vec<Pattern>,
    /// `filters`, ready to match records' value bytes directly (None: parse
    /// each value into a document first).
    pub value_filters: Option<ValueFilters>,
    pub bisect: bool,
    pub destination: Option<Arc<dyn Destination>>,
    /// Filters also see key, headers, topic, partition, timestamp.
    pub filter_on_metadata: bool,
}

impl Pipeline {
    /// A pipeline with AWS's defaults but no window (tests and benchmarks
    /// set what they need; mappings use `from_spec`).
    pub fn new(target: Arc<dyn Target>, committer: Arc<dyn Committer>, source: EventSource) -> Pipeline {
        Pipeline {
            target,
            committer,
            status: Arc::new(LiveStatus::default()),
            source,
            batch_size: 100,
            window: Duration::ZERO,
            max_retries: None,
            max_age: None,
            report_item_failures: false,
            max_payload: MAX_PAYLOAD_BYTES,
            filters: vec![],
            value_filters: None,
            bisect: false,
            destination: None,
            filter_on_metadata: false,
        }
    }

    pub fn from_spec(
        spec: &MappingSpec,
        target: Arc<dyn Target>,
        committer: Arc<dyn Committer>,
        status: Arc<LiveStatus>,
    ) -> Pipeline {
        let has_destination = spec.destination_config.on_failure.is_some();
        // Saved specs passed validation, so every pattern compiles.
        let filters: Vec<Pattern> =
            spec.filter_criteria.filters.iter().filter_map(|f| Pattern::compile(&f.pattern).ok()).collect();
        Pipeline {
            status,
            batch_size: spec.batch_size.clamp(1, 10_000) as usize,
            window: match spec.maximum_batching_window_in_seconds {
                None => Duration::from_millis(500),
                Some(s) => Duration::from_secs(s.max(0) as u64),
            },
            // AWS: infinite retries with an on-failure destination mean 10.
            max_retries: match spec.maximum_retry_attempts {
                n if n >= 0 => Some(n as u32),
                _ if has_destination => Some(10),
                _ => None,
            },
            max_age: (spec.maximum_record_age_in_seconds >= 0)
                .then(|| Duration::from_secs(spec.maximum_record_age_in_seconds as u64)),
            report_item_failures: spec.function_response_types.contains(&FunctionResponseType::ReportBatchItemFailures),
            value_filters: Some(ValueFilters::new(&filters)),
            filters,
            bisect: spec.bisect_batch_on_function_error,
            filter_on_metadata: spec.filter_on_record_metadata,
            ..Pipeline::new(target, committer, EventSource::of(spec))
        }
    }

    /// Whether the record passes the mapping's filters.
    pub fn admits(&self, m: &OwnedMessage) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        if !self.filter_on_metadata {
            if let Some(f) = &self.value_filters {
                return f.admits(m.payload());
            }
        }
        let doc = if self.filter_on_metadata {
            use rdkafka::message::Headers;
            let headers = m.headers().map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
            let meta = RecordMeta {
                key: m.key(),
                headers,
                topic: m.topic(),
                partition: m.partition(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
            };
            record_document(m.payload(), &meta)
        } else {
            value_document(m.payload())
        };
        self.filters.iter().any(|f| f.matches(&doc))
    }
}

/// Runs one partition until `stop` (or the channel closes). A batch being
/// invoked when `stop` fires is allowed to finish its current attempt;
/// whatever is not finished is not committed.
pub async fn run(
    p: Arc<Pipeline>,
    topic: String,
    partition: i32,
    mut rx: mpsc::Receiver<OwnedMessage>,
    stop: CancellationToken,
) {
    let envelope = envelope_len(&p.source, &topic, partition);
    let counters = p.status.partition(partition);
    let polled = |m: &OwnedMessage| {
        LiveStatus::add(&counters.polled, 1);
        LiveStatus::add(&counters.bytes, (m.payload().map_or(0, |v| v.len()) + m.key().map_or(0, |k| k.len())) as u64);
    };
    let mut held: Option<EncodedRecord> = None;
    // The offset after the last record taken from the channel: filtered-out
    // records up to it are done once the records around them are.
    let mut seen_to: Option<i64> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => loop {
                if rx.is_empty() {
                    // Idle with only filtered-out records behind us: commit them.
                    if let Some(end) = seen_to.take() {
                        p.committer.commit(&topic, partition, end);
                    }
                    counters.oldest_pending_ms.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                let m = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => return },
                    _ = stop.cancelled() => return,
                };
                seen_to = Some(m.offset() + 1);
                polled(&m);
                if p.admits(&m) {
                    break encode_record(&m);
                }
                LiveStatus::add(&p.status.filtered_records, 1);
            },
        };
        // Until this batch is done, its first record is the oldest not done.
        counters.oldest_pending_ms.store(first.timestamp_ms.max(1), std::sync::atomic::Ordering::Relaxed);
        if envelope + first.json.len() > p.max_payload {
            // Too large to invoke on its own: the user's failure rules decide.
            let end = first.offset + 1;
            let n = first.json.len();
            let why = format!("a record of {n} bytes (encoded) exceeds the {} byte payload limit", p.max_payload);
            if !fail(&p, &topic, partition, vec![first], &why, "MaximumPayloadSizeExceeded", 0, (None, None), &stop)
                .await
            {
                return;
            }
            p.committer.commit(&topic, partition, end);
            seen_to = None;
            continue;
        }
        let mut size = envelope + first.json.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + p.window;
        while batch.len() < p.batch_size {
            let next = if p.window.is_zero() {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => return,
                }
            };
            seen_to = Some(next.offset() + 1);
            polled(&next);
            if !p.admits(&next) {
                LiveStatus::add(&p.status.filtered_records, 1);
                continue;
            }
            let r = encode_record(&next);
            if size + r.json.len() + 1 > p.max_payload {
                held = Some(r);
                break;
            }
            size += r.json.len() + 1;
            batch.push(r);
        }
        // Done once the batch is: everything before the held record, or
        // everything taken so far.
        let end = match &held {
            Some(h) => h.offset,
            None => seen_to.take().unwrap_or(0),
        };
        if !process(&p, &topic, partition, batch, end, &stop).await {
            return;
        }
    }
}

/// One batch until it is handled: invoked successfully, or its records
/// handed to the user's failure rules. With BisectBatchOnFunctionError a
/// failing batch is split in halves, handled one after the other (offset
/// order holds). False if stopped first (nothing more is committed).
async fn process(
    p: &Pipeline,
    topic: &str,
    partition: i32,
    records: Vec<EncodedRecord>,
    end: i64,
    stop: &CancellationToken,
) -> bool {
    // Segments still to do, in offset order, each with the offset that is
    // done once it is.
    let mut todo = VecDeque::from([(records, end)]);
    while let Some((recs, end)) = todo.pop_front() {
        match attempt(p, topic, partition, recs, end, stop).await {
            Step::Done => {}
            Step::Stopped => return false,
            Step::Split { first, first_end, second, second_end } => {
                todo.push_front((second, second_end));
                todo.push_front((first, first_end));
            }
        }
    }
    true
}

enum Step {
    Done,
    Stopped,
    Split { first: Vec<EncodedRecord>, first_end: i64, second: Vec<EncodedRecord>, second_end: i64 },
}

async fn attempt(
    p: &Pipeline,
    topic: &str,
    partition: i32,
    mut records: Vec<EncodedRecord>,
    end: i64,
    stop: &CancellationToken,
) -> Step {
    let mut attempts: u32 = 0;
    let mut throttles: u32 = 0;
    let mut status_code = None;
    let mut executed_version: Option<String> = None;
    loop {
        if let Some(age) = p.max_age {
            let oldest_ok = crate::clock::now_ms() - age.as_millis() as i64;
            let (expired, fresh): (Vec<_>, Vec<_>) =
                records.into_iter().partition(|r| r.timestamp_ms >= 0 && r.timestamp_ms < oldest_ok);
            records = fresh;
            let why = format!("older than MaximumRecordAgeInSeconds ({} s)", age.as_secs());
            if !fail(
                p,
                topic,
                partition,
                expired,
                &why,
                "RecordAgeExceeded",
                attempts,
                (status_code, executed_version.as_deref()),
                stop,
            )
            .await
            {
                return Step::Stopped;
            }
        }
        if records.is_empty() {
            p.committer.commit(topic, partition, end);
            return Step::Done;
        }
        let payload = build_event(&p.source, topic, partition, &records);
        if attempts > 0 {
            LiveStatus::add(&p.status.retries, 1);
        }
        let outcome = {
            let _in_flight = p.status.begin_invoke(records.len(), payload.len());
            let started = std::time::Instant::now();
            let outcome = p.target.invoke(payload).await;
            p.status.record_duration(started.elapsed());
            outcome
        };
        let problem = match outcome {
            Outcome::Success { body } => match failed_from(p, &body, topic, partition, &records) {
                Ok(None) => {
                    LiveStatus::add(&p.status.invoked_records, records.len() as u64);
                    LiveStatus::add(&p.status.committed_records, records.len() as u64);
                    p.committer.commit(topic, partition, end);
                    p.status.ok();
                    return Step::Done;
                }
                Ok(Some(first_failed)) => {
                    // Everything before the lowest failed offset is done.
                    let done = records.iter().filter(|r| r.offset < first_failed).count();
                    LiveStatus::add(&p.status.committed_records, done as u64);
                    p.committer.commit(topic, partition, first_failed);
                    records.retain(|r| r.offset >= first_failed);
                    status_code = Some(200);
                    format!("the function reported {} failed records from offset {first_failed}", records.len())
                }
                Err(why) => why,
            },
            Outcome::FunctionError { message, status, version } => {
                status_code = status;
                executed_version = version;
                message
            }
            Outcome::Throttled { message, retry_after } => {
                LiveStatus::add(&p.status.throttles, 1);
                throttles += 1;
                p.status.set(format!("PROBLEM: Function throttled: {message}"));
                let wait = retry_after
                    .unwrap_or_else(|| backoff(throttles, Duration::from_millis(500), Duration::from_secs(60)));
                if !pause(wait, stop).await {
                    return Step::Stopped;
                }
                continue;
            }
        };
        LiveStatus::add(&p.status.errors, 1);
        LiveStatus::add(&p.status.failed_invoke_records, records.len() as u64);
        attempts += 1;
        if p.bisect && records.len() > 1 {
            p.status.set(format!("PROBLEM: Function call failed: {problem}; bisecting the batch of {}", records.len()));
            let second = records.split_off(records.len() / 2);
            let first_end = second[0].offset;
            return Step::Split { first: records, first_end, second, second_end: end };
        }
        if p.max_retries.is_some_and(|max| attempts > max) {
            let why = format!("{problem} (after {attempts} attempts)");
            if !fail(
                p,
                topic,
                partition,
                records,
                &why,
                "RetryAttemptsExhausted",
                attempts,
                (status_code, executed_version.as_deref()),
                stop,
            )
            .await
            {
                return Step::Stopped;
            }
            p.committer.commit(topic, partition, end);
            return Step::Done;
        }
        p.status.set(format!("PROBLEM: Function call failed: {problem}"));
        if !pause(backoff(attempts, Duration::from_millis(100), Duration::from_secs(30)), stop).await {
            return Step::Stopped;
        }
    }
}

/// Records past the user's limits go to the on-failure destination; the
/// partition waits (retrying) until it acknowledges them. Without a
/// destination they are dropped, counted and reported. False if stopped
/// before they were handled.
#[allow(clippy::too_many_arguments)]
async fn fail(
    p: &Pipeline,
    topic: &str,
    partition: i32,
    records: Vec<EncodedRecord>,
    why: &str,
    condition: &'static str,
    attempts: u32,
    (status_code, executed_version): (Option<u16>, Option<&str>),
    stop: &CancellationToken,
) -> bool {
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return true };
    let span = format!("{} records of {topic}-{partition} (offsets {}..={})", records.len(), first.offset, last.offset);
    let Some(dest) = &p.destination else {
        LiveStatus::add(&p.status.dropped_records, records.len() as u64);
        p.status.set(format!("PROBLEM: {condition}: dropped {span}: {why}"));
        tracing::warn!(topic, partition, first = first.offset, last = last.offset, condition, "records dropped: {why}");
        return true;
    };
    let failed = Failed { topic, partition, records: &records, condition, attempts, status_code, executed_version };
    let mut tries = 0;
    loop {
        match dest.deliver(&failed).await {
            Ok(()) => {
                LiveStatus::add(&p.status.destination_delivered, records.len() as u64);
                p.status.set(format!("PROBLEM: {condition}: sent {span} to {}: {why}", dest.describe()));
                return true;
            }
            Err(e) => {
                tries += 1;
                p.status.set(format!(
                    "PROBLEM: cannot deliver {span} to the on-failure destination {}: {e}; retrying, the partition waits",
                    dest.describe()
                ));
                if !pause(backoff(tries, Duration::from_millis(500), Duration::from_secs(30)), stop).await {
                    return false;
                }
            }
        }
    }
}

/// The lowest offset a partial batch response names, or why the response
/// fails the whole batch.
fn failed_from(
    p: &Pipeline,
    body: &[u8],
    topic: &str,
    partition: i32,
    records: &[EncodedRecord],
) -> Result<Option<i64>, String> {
    if !p.report_item_failures || body.is_empty() {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return Ok(None) };
    let items = match v.get("batchItemFailures") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err("the partial batch response's batchItemFailures is not a list".into()),
    };
    let key = format!("{topic}-{partition}");
    let mut lowest: Option<i64> = None;
    for item in items {
        let id = &item["itemIdentifier"];
        let offset = id["offset"].as_i64().or_else(|| id["offset"].as_str().and_then(|s| s.parse().ok()));
        let in_batch = id["partition"].as_str() == Some(key.as_str())
            && offset.is_some_and(|o| records.iter().any(|r| r.offset == o));
        match (in_batch, offset) {
            (true, Some(o)) => lowest = Some(lowest.map_or(o, |l| l.min(o))),
            _ => return Err(format!("the partial batch response names {id}, which is not in the batch")),
        }
    }
    Ok(lowest)
}

/// Exponential backoff with full jitter.
fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(cap);
    let ms = rand::rng().random_range(exp.as_millis() as u64 / 2..=exp.as_millis() as u64);
    Duration::from_millis(ms)
}

async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}
