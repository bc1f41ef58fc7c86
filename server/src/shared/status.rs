//! What a running mapping reports: its last processing result (flushed to
//! the store by the reconciler when it changed) and cumulative counters the
//! metrics collector turns into per-second points. Counters are atomics: the
//! pipelines bump them per batch without locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_app::failures::FailedRecord;
use sluice_app::metrics::{bucket_of, Counter, BUCKETS};
use sluice_app::model::{MappingCounters, PartitionLag};

use crate::problem::{Problem, Processing};

#[derive(Default)]
pub struct LiveStatus {
    result: Mutex<Processing>,
    changed: AtomicBool,
    is_ok: AtomicBool,
    /// Every `Counter`, by its index.
    counts: [AtomicU64; Counter::COUNT],
    /// Pollers running for the mapping (set by the engine).
    pub pollers: AtomicU64,
    in_flight: AtomicU64,
    peak: AtomicU64,
    durations: DurationCounters,
    parts: Mutex<HashMap<i32, Arc<PartitionCounters>>>,
    lag: Mutex<Vec<PartitionLag>>,
    /// Records given up on, until the reconciler writes them to the ledger.
    failed: Mutex<Vec<FailedRecord>>,
}

/// Most ledger entries kept while the database refuses them; past it the
/// oldest are let go (and said so), never the pipeline slowed.
const FAILED_KEPT: usize = 100_000;

/// Per partition: what was polled, and the age of the oldest record the
/// pipeline holds that is not done yet (its time lag).
#[derive(Default)]
pub struct PartitionCounters {
    pub polled: AtomicU64,
    pub bytes: AtomicU64,
    /// Timestamp (ms) of the oldest record not done; 0 when caught up.
    pub oldest_pending_ms: AtomicI64,
    /// Batches this partition may have in flight (its lanes; 0 read as 1).
    pub lanes: AtomicU64,
    /// Batches of this partition at the function now, and the most since
    /// the last snapshot.
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
}

impl PartitionCounters {
    /// Counts one of the partition's batches at the function until dropped.
    pub fn begin(&self) -> PartInFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        PartInFlight(self)
    }
}

pub struct PartInFlight<'a>(&'a PartitionCounters);

impl Drop for PartInFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct DurationCounters {
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for DurationCounters {
    fn default() -> Self {
        DurationCounters {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Cumulative figures at one instant; two of them make a metric point.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every `Counter`, by its index.
    pub counts: [u64; Counter::COUNT],
    pub pollers: u64,
    pub duration_count: u64,
    pub duration_sum_us: u64,
    pub buckets: Vec<u64>,
    /// Peak invocations in flight since the last snapshot (resets it).
    pub peak: u64,
    pub max_us: u64,
    pub parts: Vec<PartSnapshot>,
    pub lag: Vec<PartitionLag>,
}

/// One partition's counters at one instant.
#[derive(Clone, Debug, Default)]
pub struct PartSnapshot {
    pub partition: i32,
    pub polled: u64,
    pub bytes: u64,
    pub oldest_pending_ms: i64,
    pub lanes: u64,
    pub in_flight: u64,
    /// Most batches in flight since the last snapshot.
    pub peak_in_flight: u64,
}

impl Snapshot {
    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c.index()]
    }
}

/// Counts an invocation in flight until dropped.
pub struct InFlight<'a>(&'a LiveStatus);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LiveStatus {
    pub fn set(&self, result: Processing) {
        let mut cur = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != result {
            self.is_ok.store(result == Processing::Ok, Ordering::Release);
            *cur = result;
            self.changed.store(true, Ordering::Release);
        }
    }

    /// Reports the current result again at the next `take_change` (a new
    /// poller's "No records processed" replaces what was stored before).
    pub fn mark_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    pub fn problem(&self, problem: Problem) {
        self.set(Processing::Problem(problem));
    }

    /// Sets `OK`; without a lock when it already says so (the hot path).
    pub fn ok(&self) {
        if !self.is_ok.load(Ordering::Acquire) {
            self.set(Processing::Ok);
        }
    }

    /// The brokers stopped answering: said unless they refused the mapping
    /// (a refusal names the cause; this would hide it).
    pub fn brokers_silent(&self, problem: Problem) {
        if self.current().refusal().is_none() {
            self.problem(problem);
        }
    }

    /// The brokers answer again: a connection error is over (the next batch
    /// says how processing goes).
    pub fn brokers_answer(&self) {
        if !self.is_ok.load(Ordering::Acquire)
            && matches!(self.current(), Processing::Problem(Problem::Unreachable { .. }))
        {
            self.set(Processing::Ok);
        }
    }

    pub fn current(&self) -> Processing {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The result as the console shows it.
    pub fn get(&self) -> String {
        self.current().to_string()
    }

    /// The result, if it changed since the last call.
    pub fn take_change(&self) -> Option<Processing> {
        self.changed.swap(false, Ordering::AcqRel).then(|| self.current())
    }

    /// Records given up on, for the failure ledger.
    pub fn gave_up(&self, records: impl IntoIterator<Item = FailedRecord>) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        f.extend(records);
        if f.len() > FAILED_KEPT {
            let over = f.len() - FAILED_KEPT;
            tracing::warn!("the failure ledger cannot be written: {over} older entries let go");
            f.drain(..over);
        }
    }

    /// The records given up on since the last call.
    pub fn take_failed(&self) -> Vec<FailedRecord> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts entries the ledger refused back in front of newer ones.
    pub fn keep_failed(&self, mut older: Vec<FailedRecord>) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        older.append(&mut f);
        *f = older;
    }

    /// Adds `n` to a counter.
    pub fn count(&self, c: Counter, n: u64) {
        self.counts[c.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value since the poller started.
    pub fn total(&self, c: Counter) -> u64 {
        self.counts[c.index()].load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> MappingCounters {
        MappingCounters {
            invocations: self.total(Counter::Invocations),
            errors: self.total(Counter::Errors),
            throttles: self.total(Counter::Throttles),
            invoked_event_count: self.total(Counter::InvokedEvents),
            filtered_out_event_count: self.total(Counter::FilteredOutEvents),
            dropped_event_count: self.total(Counter::DroppedEvents),
            on_failure_destination_delivered_event_count: self.total(Counter::DestinationDeliveredEvents),
            committed_event_count: self.total(Counter::CommittedEvents),
            partitions: {
                let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
                let mut lag = self.lag();
                for l in &mut lag {
                    if let Some(c) = parts.get(&l.partition) {
                        l.in_flight = c.in_flight.load(Ordering::Relaxed);
                        l.lanes = c.lanes.load(Ordering::Relaxed).max(1);
                    }
                }
                lag
            },
        }
    }

    pub fn lag(&self) -> Vec<PartitionLag> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_lag(&self, lag: Vec<PartitionLag>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of one partition (taken once by its pipeline).
    pub fn partition(&self, p: i32) -> Arc<PartitionCounters> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner()).entry(p).or_default().clone()
    }

    pub fn begin_invoke(&self, records: usize, bytes: usize) -> InFlight<'_> {
        self.count(Counter::Invocations, 1);
        self.count(Counter::BatchRecords, records as u64);
        self.count(Counter::BatchBytes, bytes as u64);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn record_duration(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let c = &self.durations;
        c.count.fetch_add(1, Ordering::Relaxed);
        c.sum_us.fetch_add(us, Ordering::Relaxed);
        c.max_us.fetch_max(us, Ordering::Relaxed);
        c.buckets[bucket_of(us as f64 / 1000.0)].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter; resets the peaks (they are per interval, and
    /// the metrics collector owns them).
    pub fn snapshot(&self) -> Snapshot {
        self.read(true)
    }

    /// Reads every counter, leaving the peaks to the collector.
    pub fn snapshot_quiet(&self) -> Snapshot {
        self.read(false)
    }

    fn read(&self, reset: bool) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counts = Counter::ALL.map(|c| self.total(c));
        let d = &self.durations;
        let mut parts: Vec<PartSnapshot> = self
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, c)| PartSnapshot {
                partition: *p,
                polled: g(&c.polled),
                bytes: g(&c.bytes),
                oldest_pending_ms: c.oldest_pending_ms.load(Ordering::Relaxed),
                lanes: g(&c.lanes).max(1),
                in_flight: g(&c.in_flight),
                peak_in_flight: if reset {
                    c.peak_in_flight.swap(g(&c.in_flight), Ordering::Relaxed)
                } else {
                    g(&c.peak_in_flight)
                },
            })
            .collect();
        parts.sort_by_key(|p| p.partition);
        Snapshot {
            counts,
            pollers: g(&self.pollers),
            duration_count: g(&d.count),
            duration_sum_us: g(&d.sum_us),
            buckets: d.buckets.iter().map(g).collect(),
            peak: if reset { self.peak.swap(g(&self.in_flight), Ordering::Relaxed) } else { g(&self.peak) },
            max_us: if reset { d.max_us.swap(0, Ordering::Relaxed) } else { g(&d.max_us) },
            parts,
            lag: self.lag(),
        }
    }
}
