//! Invoke: one batch until it is handled. Retries with backoff, throttles
//! (not failed attempts), BisectBatchOnFunctionError, partial batch
//! responses (ReportBatchItemFailures) and MaximumRecordAgeInSeconds; what
//! the user's limits give up on goes to `failure`.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;

use super::event::{build_event, EncodedRecord};
use super::failure::{self, Tried};
use super::pipeline::Part;
use super::target::Outcome;
use crate::problem::{FailureCondition, Problem};
use sluice_app::metrics::Counter;

/// Handles one batch: invoked successfully, or its records handed to the
/// user's failure rules. With BisectBatchOnFunctionError a failing batch is
/// split in halves, handled one after the other (offset order holds).
/// False if stopped first (nothing more is committed).
pub async fn process(part: &Part<'_>, records: Vec<EncodedRecord>, end: i64) -> bool {
    // Segments still to do, in offset order, each with the offset that is
    // done once it is.
    let mut todo = VecDeque::from([(records, end)]);
    while let Some((recs, end)) = todo.pop_front() {
        match attempt(part, recs, end).await {
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

async fn attempt(part: &Part<'_>, mut records: Vec<EncodedRecord>, end: i64) -> Step {
    let p = part.p;
    let mut tried = Tried::default();
    let mut throttles: u32 = 0;
    loop {
        if let Some(age) = p.max_age {
            let oldest_ok = crate::clock::now_ms() - age.as_millis() as i64;
            let (expired, fresh): (Vec<_>, Vec<_>) =
                records.into_iter().partition(|r| r.timestamp_ms >= 0 && r.timestamp_ms < oldest_ok);
            records = fresh;
            let why = format!("older than MaximumRecordAgeInSeconds ({} s)", age.as_secs());
            if !failure::fail(part, expired, &why, FailureCondition::RecordAgeExceeded, tried.clone()).await {
                return Step::Stopped;
            }
        }
        if records.is_empty() {
            part.commit(end);
            return Step::Done;
        }
        let payload = build_event(&p.source, part.topic, part.partition, &records);
        if tried.attempts > 0 {
            p.status.count(Counter::Retries, 1);
        }
        let outcome = {
            let _in_flight = p.status.begin_invoke(records.len(), payload.len());
            let _partition_in_flight = part.counters.begin();
            let started = std::time::Instant::now();
            let outcome = p.target.invoke(payload).await;
            p.status.record_duration(started.elapsed());
            outcome
        };
        let problem = match outcome {
            Outcome::Success { body } => {
                match failed_from(p.report_item_failures, part.topic, part.partition, &body, &records) {
                    Ok(None) => {
                        p.status.count(Counter::InvokedEvents, records.len() as u64);
                        p.status.count(Counter::CommittedEvents, records.len() as u64);
                        part.commit(end);
                        p.status.ok();
                        return Step::Done;
                    }
                    Ok(Some(first_failed)) => {
                        // Everything before the lowest failed offset is done.
                        let done = records.iter().filter(|r| r.offset < first_failed).count();
                        p.status.count(Counter::CommittedEvents, done as u64);
                        part.commit(first_failed);
                        records.retain(|r| r.offset >= first_failed);
                        tried.status_code = Some(200);
                        format!("the function reported {} failed records from offset {first_failed}", records.len())
                    }
                    Err(why) => why,
                }
            }
            Outcome::FunctionError { message, status, version } => {
                tried.status_code = status;
                tried.executed_version = version;
                message
            }
            Outcome::Throttled { message, retry_after } => {
                p.status.count(Counter::Throttles, 1);
                throttles += 1;
                p.status.problem(Problem::Throttled(message));
                let wait = retry_after
                    .unwrap_or_else(|| backoff(throttles, Duration::from_millis(500), Duration::from_secs(60)));
                if !pause(wait, part).await {
                    return Step::Stopped;
                }
                continue;
            }
        };
        p.status.count(Counter::Errors, 1);
        p.status.count(Counter::FailedInvokeEvents, records.len() as u64);
        tried.attempts += 1;
        if p.bisect && records.len() > 1 {
            p.status.problem(Problem::Bisecting { problem, records: records.len() });
            let second = records.split_off(records.len() / 2);
            let first_end = second[0].offset;
            return Step::Split { first: records, first_end, second, second_end: end };
        }
        if p.max_retries.is_some_and(|max| tried.attempts > max) {
            let why = format!("{problem} (after {} attempts)", tried.attempts);
            if !failure::fail(part, records, &why, FailureCondition::RetryAttemptsExhausted, tried).await {
                return Step::Stopped;
            }
            part.commit(end);
            return Step::Done;
        }
        p.status.problem(Problem::FunctionFailed(problem));
        if !pause(backoff(tried.attempts, Duration::from_millis(100), Duration::from_secs(30)), part).await {
            return Step::Stopped;
        }
    }
}

/// The lowest offset a partial batch response names (`report`: the mapping
/// asked for ReportBatchItemFailures), or why the response fails the whole
/// batch.
pub(super) fn failed_from(
    report: bool,
    topic: &str,
    partition: i32,
    body: &[u8],
    records: &[EncodedRecord],
) -> Result<Option<i64>, String> {
    if !report || body.is_empty() {
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
pub(super) fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(cap);
    let ms = rand::rng().random_range(exp.as_millis() as u64 / 2..=exp.as_millis() as u64);
    Duration::from_millis(ms)
}

/// Waits `d`; false if the poller stopped first.
pub(super) async fn pause(d: Duration, part: &Part<'_>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = part.stop.cancelled() => false,
    }
}
