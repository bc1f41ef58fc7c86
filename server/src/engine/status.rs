//! What a running mapping reports: its last processing result, updated by
//! the pipeline and flushed to the store by the reconciler (at most once a
//! second, and only when it changed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct LiveStatus {
    result: Mutex<String>,
    changed: AtomicBool,
    is_ok: AtomicBool,
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    pub throttles: AtomicU64,
    pub invoked_records: AtomicU64,
    pub filtered_records: AtomicU64,
    pub dropped_records: AtomicU64,
    pub destination_delivered: AtomicU64,
    pub committed_records: AtomicU64,
    lag: Mutex<Vec<sluice_app::model::PartitionLag>>,
}

impl LiveStatus {
    pub fn set(&self, result: impl Into<String>) {
        let result = result.into();
        let mut cur = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != result {
            self.is_ok.store(result == "OK", Ordering::Release);
            *cur = result;
            self.changed.store(true, Ordering::Release);
        }
    }

    /// Sets `OK`; without a lock when it already says so (the hot path).
    pub fn ok(&self) {
        if !self.is_ok.load(Ordering::Acquire) {
            self.set("OK");
        }
    }

    pub fn get(&self) -> String {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The result, if it changed since the last call.
    pub fn take_change(&self) -> Option<String> {
        self.changed.swap(false, Ordering::AcqRel).then(|| self.get())
    }

    pub fn counters(&self) -> sluice_app::model::MappingCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        sluice_app::model::MappingCounters {
            invocations: g(&self.invocations),
            errors: g(&self.errors),
            throttles: g(&self.throttles),
            invoked_event_count: g(&self.invoked_records),
            filtered_out_event_count: g(&self.filtered_records),
            dropped_event_count: g(&self.dropped_records),
            on_failure_destination_delivered_event_count: g(&self.destination_delivered),
            committed_event_count: g(&self.committed_records),
            partitions: self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    pub fn set_lag(&self, lag: Vec<sluice_app::model::PartitionLag>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
