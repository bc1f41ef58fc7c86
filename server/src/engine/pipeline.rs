//! One partition's pipeline: filter → batch → invoke → commit, strictly in
//! offset order with at most one batch in flight, or (ParallelizationFactor
//! above 1) one such pipeline per lane, records spread by key (`lanes`),
//! the partition committed as far as every lane is done. Records come from a
//! channel (the poller's, or an in-memory source in tests and benchmarks);
//! offsets leave through a `Committer`. Each stage is its own module:
//! `filter`, `batch`, `invoke` (retries, throttles, bisect, partial batch
//! responses, record age) and `failure` (the on-failure destination).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use sluice_app::spec::{FunctionResponseType, MappingSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batcher, Next};
use super::commit::Committer;
use super::destination::Destination;
use super::event::{EventSource, MAX_PAYLOAD_BYTES};
use super::failure::{self, Tried};
use super::filter::Filter;
use super::invoke;
use super::lanes::{lane_of, Lanes};
use super::target::Target;
use crate::problem::FailureCondition;
use crate::shared::status::{LiveStatus, PartitionCounters};

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
    pub filter: Filter,
    pub bisect: bool,
    pub destination: Option<Arc<dyn Destination>>,
    /// Batches in flight per partition (ParallelizationFactor).
    pub lanes: usize,
    /// The schema registry's decoder, when the mapping has one.
    pub decoder: Option<Arc<crate::schema::Decoder>>,
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
            filter: Filter::default(),
            bisect: false,
            destination: None,
            lanes: 1,
            decoder: None,
        }
    }

    pub fn from_spec(
        spec: &MappingSpec,
        target: Arc<dyn Target>,
        committer: Arc<dyn Committer>,
        status: Arc<LiveStatus>,
    ) -> Pipeline {
        let has_destination = spec.destination_config.on_failure.is_some();
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
            filter: Filter::from_spec(spec),
            bisect: spec.bisect_batch_on_function_error,
            lanes: spec.lanes(),
            ..Pipeline::new(target, committer, EventSource::of(spec))
        }
    }
}

/// A pipeline at work on one partition: what every stage is handed.
pub struct Part<'a> {
    pub p: &'a Pipeline,
    pub topic: &'a str,
    pub partition: i32,
    /// Fired when the poller stops: a stage waiting (backoff, throttle,
    /// destination retry) gives up, and nothing more is committed.
    pub stop: &'a CancellationToken,
    /// The partition's lanes and this one's number, when there are several.
    pub lane: Option<(&'a Lanes, usize)>,
    /// The partition's counters, taken once (not per batch).
    pub counters: Arc<PartitionCounters>,
}

impl Part<'_> {
    /// This pipeline's records before `next_offset` are done: the partition
    /// commits that far, or (lanes) as far as every lane is done.
    pub fn commit(&self, next_offset: i64) {
        let next = match self.lane {
            None => Some(next_offset),
            Some((lanes, i)) => lanes.done(i, next_offset),
        };
        if let Some(n) = next {
            self.p.committer.commit(self.topic, self.partition, n);
        }
    }

    /// The timestamp of this pipeline's oldest record not done (0: none),
    /// for the partition's time lag: with lanes, the oldest over them all.
    pub fn pending_since(&self, ms: i64) {
        let oldest = match self.lane {
            None => ms,
            Some((lanes, i)) => lanes.oldest(i, ms),
        };
        self.counters.oldest_pending_ms.store(oldest, Ordering::Relaxed);
    }
}

/// Runs one partition until `stop` (or the channel closes). A batch being
/// invoked when `stop` fires is allowed to finish its current attempt;
/// whatever is not finished is not committed.
pub async fn run(
    p: Arc<Pipeline>,
    topic: String,
    partition: i32,
    rx: mpsc::Receiver<OwnedMessage>,
    stop: CancellationToken,
) {
    if p.lanes > 1 {
        return run_lanes(p, topic, partition, rx, stop).await;
    }
    run_one(&p, &topic, partition, rx, &stop, None).await;
}

/// Hands each record to its key's lane; one pipeline per lane. A lane that
/// ends (the poller stopped, or its failure could not be handled) ends
/// them all: nothing past its records may be committed.
async fn run_lanes(
    p: Arc<Pipeline>,
    topic: String,
    partition: i32,
    mut rx: mpsc::Receiver<OwnedMessage>,
    stop: CancellationToken,
) {
    let lanes = Arc::new(Lanes::new(p.lanes));
    let counters = p.status.partition(partition);
    counters.lanes.store(p.lanes as u64, Ordering::Relaxed);
    let end = stop.child_token();
    // Each lane buffers a few batches, so a slow key does not stall the
    // other lanes at once; bounded overall (a stuck lane stalls the
    // partition once its buffer is full, and the poller pauses it).
    let capacity = (p.batch_size * 2).max(256).min((200_000 / p.lanes).max(p.batch_size));
    let mut senders = Vec::with_capacity(p.lanes);
    let mut tasks = Vec::with_capacity(p.lanes);
    for i in 0..p.lanes {
        let (tx, lane_rx) = mpsc::channel(capacity);
        senders.push(tx);
        let (p, topic, lanes, end) = (p.clone(), topic.clone(), lanes.clone(), end.clone());
        let lane = async move {
            run_one(&p, &topic, partition, lane_rx, &end, Some((&lanes, i))).await;
            end.cancel();
        };
        tasks.push(tokio::spawn(tracing::Instrument::in_current_span(lane)));
    }
    loop {
        let m = tokio::select! {
            m = rx.recv() => m,
            _ = end.cancelled() => None,
        };
        let Some(m) = m else { break };
        let i = lane_of(&m, p.lanes);
        lanes.handed(i, m.offset());
        // A full lane waits for its key's batch; the others go on.
        let sent = tokio::select! {
            r = senders[i].send(m) => r.is_ok(),
            _ = end.cancelled() => false,
        };
        if !sent {
            break;
        }
    }
    // Closing the lanes' channels lets them finish what they hold.
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    counters.lanes.store(1, Ordering::Relaxed);
}

async fn run_one(
    p: &Pipeline,
    topic: &str,
    partition: i32,
    rx: mpsc::Receiver<OwnedMessage>,
    stop: &CancellationToken,
    lane: Option<(&Lanes, usize)>,
) {
    let part = Part { p, topic, partition, stop, lane, counters: p.status.partition(partition) };
    let mut batcher = Batcher::new(&part, rx);
    loop {
        let handled = match batcher.next(&part).await {
            Next::Closed => return,
            Next::Batch { records, end } => invoke::process(&part, records, end).await,
            Next::Invalid { record, end, condition, why } => {
                // A schema the registry does not have, or a record its
                // schema cannot decode: never invoked, never blocking.
                let handled = failure::fail(&part, vec![record], &why, condition, Tried::default()).await;
                if handled {
                    part.commit(end);
                }
                handled
            }
            Next::TooLarge { record, end } => {
                // Too large to invoke on its own: the user's failure rules decide.
                let why = format!(
                    "a record of {} bytes (encoded) exceeds the {} byte payload limit",
                    record.json.len(),
                    p.max_payload
                );
                let condition = FailureCondition::MaximumPayloadSizeExceeded;
                let handled = failure::fail(&part, vec![record], &why, condition, Tried::default()).await;
                if handled {
                    part.commit(end);
                }
                handled
            }
        };
        if !handled {
            return;
        }
    }
}
