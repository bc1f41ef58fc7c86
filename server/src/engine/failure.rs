//! Failure: records past the user's limits (retries exhausted, too old, too
//! large) go to the on-failure destination, and the partition waits,
//! retrying, until it acknowledges them; without a destination they are
//! dropped, counted and reported. Either way their offsets may then move.

use std::time::Duration;

use super::destination::Failed;
use super::event::EncodedRecord;
use super::invoke::{backoff, pause};
use super::pipeline::Part;
use crate::problem::{FailureCondition, Problem};
use sluice_app::failures::{FailedRecord, DROPPED};
use sluice_app::metrics::Counter;

/// The most of a key the ledger keeps.
const KEY_KEPT: usize = 1024;

/// A record's key as the ledger keeps it: base64 (as in the event) of its
/// first `KEY_KEPT` bytes.
pub(super) fn ledger_key(k: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(&k[..k.len().min(KEY_KEPT)])
}

/// What invoking the records came to before they failed.
#[derive(Clone, Debug, Default)]
pub struct Tried {
    pub attempts: u32,
    /// The function's last answer, when there was one.
    pub status_code: Option<u16>,
    /// The function version that ran (Lambda says).
    pub executed_version: Option<String>,
}

/// Hands `records` to the user's failure rules. False if stopped before
/// they were handled (then nothing is committed).
pub async fn fail(
    part: &Part<'_>,
    records: Vec<EncodedRecord>,
    why: &str,
    condition: FailureCondition,
    tried: Tried,
) -> bool {
    let (p, topic, partition) = (part.p, part.topic, part.partition);
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return true };
    let span = format!("{} records of {topic}-{partition} (offsets {}..={})", records.len(), first.offset, last.offset);
    let Some(dest) = &p.destination else {
        p.status.gave_up(ledger_entries(&records, partition, condition, &tried, why, DROPPED, &[]));
        p.status.count(Counter::DroppedEvents, records.len() as u64);
        tracing::warn!(topic, partition, first = first.offset, last = last.offset, %condition, "records dropped: {why}");
        p.status.problem(Problem::Dropped { condition, span, why: why.to_string() });
        return true;
    };
    let failed = Failed {
        topic,
        partition,
        records: &records,
        condition,
        attempts: tried.attempts,
        status_code: tried.status_code,
        executed_version: tried.executed_version.as_deref(),
    };
    let mut tries = 0;
    loop {
        match dest.deliver(&failed).await {
            Ok(receipt) => {
                p.status.count(Counter::DestinationDeliveredEvents, records.len() as u64);
                let destination = dest.describe();
                p.status.gave_up(ledger_entries(&records, partition, condition, &tried, why, &destination, &receipt));
                p.status.problem(Problem::Diverted { condition, span, destination, why: why.to_string() });
                return true;
            }
            Err(error) => {
                tries += 1;
                let destination = dest.describe();
                p.status.problem(Problem::DestinationDown { span: span.clone(), destination, error });
                if !pause(backoff(tries, Duration::from_millis(500), Duration::from_secs(30)), part).await {
                    return false;
                }
            }
        }
    }
}

/// The ledger's entries for records given up on: coordinates and error,
/// never the payload. `receipt`: the destination's ids, one per record or
/// one for them all.
fn ledger_entries(
    records: &[EncodedRecord],
    partition: i32,
    condition: FailureCondition,
    tried: &Tried,
    why: &str,
    destination: &str,
    receipt: &[String],
) -> Vec<FailedRecord> {
    let now = crate::clock::now_ms();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| FailedRecord {
            partition,
            offset: r.offset,
            key: r.key.as_deref().map(ledger_key),
            timestamp: r.timestamp_ms,
            condition: condition.as_str().to_string(),
            attempts: tried.attempts,
            error: why.to_string(),
            destination: destination.to_string(),
            destination_message: receipt.get(i).or(receipt.first().filter(|_| receipt.len() == 1)).cloned(),
            failed_at: now,
            redrive: None,
        })
        .collect()
}
