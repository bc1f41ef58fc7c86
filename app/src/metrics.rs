//! Metric points: what a mapping did over an interval, per mapping and per
//! partition. The server records them (1 s live, 1 min and 15 min stored);
//! the console charts them, judges health and gives advice from them, in
//! the browser and on the server alike (so both render the same).

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use schemars::JsonSchema;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Every count a running mapping keeps, defined once: the engine bumps
/// them, and the collector, the Prometheus exposition, CloudWatch and
/// `MetricPoint::merge` loop over `Counter::ALL`. Adding one is a variant,
/// its row in `info`, and its `MetricPoint` field. (Polled records and
/// bytes are counted per partition, beside these.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Invocations,
    Errors,
    Throttles,
    Retries,
    InvokedEvents,
    FailedInvokeEvents,
    FilteredOutEvents,
    DroppedEvents,
    DestinationDeliveredEvents,
    CommittedEvents,
    BatchRecords,
    BatchBytes,
}

/// How a counter is named and explained where it leaves the process.
pub struct CounterInfo {
    /// The Prometheus metric.
    pub prometheus: &'static str,
    /// AWS's CloudWatch metric, where AWS has one.
    pub cloudwatch: Option<&'static str>,
    pub bytes: bool,
    pub help: &'static str,
}

impl Counter {
    pub const COUNT: usize = 12;
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::Invocations,
        Counter::Errors,
        Counter::Throttles,
        Counter::Retries,
        Counter::InvokedEvents,
        Counter::FailedInvokeEvents,
        Counter::FilteredOutEvents,
        Counter::DroppedEvents,
        Counter::DestinationDeliveredEvents,
        Counter::CommittedEvents,
        Counter::BatchRecords,
        Counter::BatchBytes,
    ];

    /// Its place in `ALL` (and in arrays indexed by counter).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn info(self) -> CounterInfo {
        let (prometheus, cloudwatch, bytes, help) = match self {
            Counter::Invocations => {
                ("sluice_invocations_total", Some("Invocations"), false, "Function invocations (Invocations)")
            }
            Counter::Errors => ("sluice_errors_total", Some("Errors"), false, "Invocations that failed (Errors)"),
            Counter::Throttles => {
                ("sluice_throttles_total", Some("Throttles"), false, "Invocations throttled (Throttles)")
            }
            Counter::Retries => ("sluice_retries_total", None, false, "Invocations that repeated a failed one"),
            Counter::InvokedEvents => (
                "sluice_invoked_events_total",
                Some("InvokedEventCount"),
                false,
                "Records invoked successfully (InvokedEventCount)",
            ),
            Counter::FailedInvokeEvents => (
                "sluice_failed_invoke_events_total",
                Some("FailedInvokeEventCount"),
                false,
                "Records in failed invocations (FailedInvokeEventCount)",
            ),
            Counter::FilteredOutEvents => (
                "sluice_filtered_out_events_total",
                Some("FilteredOutEventCount"),
                false,
                "Records filtered out (FilteredOutEventCount)",
            ),
            Counter::DroppedEvents => (
                "sluice_dropped_events_total",
                Some("DroppedEventCount"),
                false,
                "Records dropped by the failure rules (DroppedEventCount)",
            ),
            Counter::DestinationDeliveredEvents => (
                "sluice_on_failure_destination_delivered_events_total",
                Some("OnFailureDestinationDeliveredEventCount"),
                false,
                "Records sent to the on-failure destination",
            ),
            Counter::CommittedEvents => (
                "sluice_committed_events_total",
                Some("CommittedEventCount"),
                false,
                "Records whose offsets were committed (CommittedEventCount)",
            ),
            Counter::BatchRecords => {
                ("sluice_batch_records_total", None, false, "Records sent to the function, retries included")
            }
            Counter::BatchBytes => ("sluice_batch_bytes_total", None, true, "Event bytes sent to the function"),
        };
        CounterInfo { prometheus, cloudwatch, bytes, help }
    }

    /// The counter's field in a point (the stored JSON keeps these names).
    pub fn of(self, p: &MetricPoint) -> u64 {
        fields!(self, p)
    }

    pub fn field(self, p: &mut MetricPoint) -> &mut u64 {
        fields!(self, &mut p)
    }
}

/// The counter → field table once, for reading and for writing.
macro_rules! fields {
    ($c:expr, $($p:tt)+) => {
        match $c {
            Counter::Invocations => $($p)+.invocations,
            Counter::Errors => $($p)+.errors,
            Counter::Throttles => $($p)+.throttles,
            Counter::Retries => $($p)+.retries,
            Counter::InvokedEvents => $($p)+.invoked_event_count,
            Counter::FailedInvokeEvents => $($p)+.failed_invoke_event_count,
            Counter::FilteredOutEvents => $($p)+.filtered_out_event_count,
            Counter::DroppedEvents => $($p)+.dropped_event_count,
            Counter::DestinationDeliveredEvents => $($p)+.on_failure_destination_delivered_event_count,
            Counter::CommittedEvents => $($p)+.committed_event_count,
            Counter::BatchRecords => $($p)+.batch_records,
            Counter::BatchBytes => $($p)+.batch_bytes,
        }
    };
}
use fields;

/// One interval's counts (AWS metric names) and, at its end, the gauges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricPoint {
    /// End of the interval, Unix milliseconds.
    pub time: i64,
    /// Length of the interval, milliseconds.
    pub period_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub invocations: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub errors: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttles: u64,
    /// Invocations that repeated a failed one.
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub polled_event_count: u64,
    /// Key and value bytes of the polled records.
    #[serde(skip_serializing_if = "is_zero")]
    pub polled_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub filtered_out_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub invoked_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_invoke_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub on_failure_destination_delivered_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub committed_event_count: u64,
    /// Records sent to the function, retries included (batch size = this / invocations).
    #[serde(skip_serializing_if = "is_zero")]
    pub batch_records: u64,
    /// Bytes of the events sent to the function.
    #[serde(skip_serializing_if = "is_zero")]
    pub batch_bytes: u64,
    pub duration: Durations,
    /// Most invocations in flight at once.
    pub concurrent_executions: u32,
    pub pollers: u32,
    /// Per partition, as last read in the interval (empty: not read yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionPoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", default)]
pub struct PartitionPoint {
    pub partition: i32,
    pub offset_lag: i64,
    /// None: the group has committed nothing on this partition yet.
    pub committed_offset: Option<i64>,
    pub end_offset: i64,
    /// Age of the oldest record not yet done, seconds (0 when caught up).
    pub time_lag_s: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub polled_event_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub polled_bytes: u64,
    /// Most of the partition's batches at the function at once in the
    /// interval (above 1 only with ParallelizationFactor).
    #[serde(skip_serializing_if = "is_zero")]
    pub concurrent_executions: u64,
    /// Its lanes (ParallelizationFactor; 0: not reported, read as 1).
    #[serde(skip_serializing_if = "is_zero")]
    pub lanes: u64,
}

/// Invocation durations: count, sum, max and a log-bucket histogram (buckets
/// grow by 20%, so a percentile is within 20% of the truth and merges exactly).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", default)]
pub struct Durations {
    pub count: u64,
    pub sum_ms: f64,
    pub max_ms: f64,
    /// `[bucket, count]` pairs, buckets ascending; see `bucket_of`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<[u32; 2]>,
}

pub const BUCKETS: usize = 96;
const GROWTH: f64 = 1.2;

/// The histogram bucket of a duration: bucket i holds (1.2^(i-1), 1.2^i] ms.
pub fn bucket_of(ms: f64) -> usize {
    if ms <= 1.0 {
        return 0;
    }
    ((ms.ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper(i: usize) -> f64 {
    GROWTH.powi(i as i32)
}

impl Durations {
    pub fn from_dense(count: u64, sum_ms: f64, max_ms: f64, dense: &[u64]) -> Durations {
        let histogram = dense.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| [i as u32, *n as u32]).collect();
        Durations { count, sum_ms, max_ms, histogram }
    }

    pub fn average_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms / self.count as f64)
    }

    /// The q-th quantile (0..=1), never above the maximum seen.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.histogram.iter().map(|[_, n]| *n as u64).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for [i, n] in &self.histogram {
            seen += *n as u64;
            if seen >= rank {
                return Some(bucket_upper(*i as usize).min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }

    fn merge(&mut self, o: &Durations) {
        self.count += o.count;
        self.sum_ms += o.sum_ms;
        self.max_ms = self.max_ms.max(o.max_ms);
        let mut dense = [0u64; BUCKETS];
        for [i, n] in self.histogram.iter().chain(&o.histogram) {
            dense[(*i as usize).min(BUCKETS - 1)] += *n as u64;
        }
        self.histogram = Durations::from_dense(0, 0.0, 0.0, &dense).histogram;
    }
}

impl MetricPoint {
    pub fn start(&self) -> i64 {
        self.time - self.period_ms
    }

    /// Folds a later point in: counts add up, peaks take the larger, gauges
    /// (lag, offsets, pollers) take the later value.
    pub fn merge(&mut self, o: &MetricPoint) {
        let start = if self.period_ms == 0 && self.time == 0 { o.start() } else { self.start().min(o.start()) };
        self.time = self.time.max(o.time);
        self.period_ms = self.time - start;
        for c in Counter::ALL {
            *c.field(self) += c.of(o);
        }
        self.polled_event_count += o.polled_event_count;
        self.polled_bytes += o.polled_bytes;
        self.duration.merge(&o.duration);
        self.concurrent_executions = self.concurrent_executions.max(o.concurrent_executions);
        self.pollers = o.pollers;
        if !o.partitions.is_empty() {
            let mut parts = o.partitions.clone();
            for p in &mut parts {
                if let Some(old) = self.partitions.iter().find(|x| x.partition == p.partition) {
                    p.polled_event_count += old.polled_event_count;
                    p.polled_bytes += old.polled_bytes;
                    p.concurrent_executions = p.concurrent_executions.max(old.concurrent_executions);
                }
            }
            self.partitions = parts;
        }
    }

    pub fn seconds(&self) -> f64 {
        (self.period_ms as f64 / 1000.0).max(0.001)
    }

    pub fn rate(&self, n: u64) -> f64 {
        n as f64 / self.seconds()
    }

    /// Records behind, over all partitions (None: lag not read yet).
    pub fn total_lag(&self) -> Option<i64> {
        (!self.partitions.is_empty()).then(|| self.partitions.iter().map(|p| p.offset_lag).sum())
    }

    pub fn max_time_lag_s(&self) -> Option<f64> {
        (!self.partitions.is_empty()).then(|| self.partitions.iter().map(|p| p.time_lag_s).fold(0.0, f64::max))
    }
}

/// Merges points into buckets `width_ms` wide (aligned to the epoch), in
/// time order. Points coarser than the width stay as they are.
pub fn bucket(points: &[MetricPoint], width_ms: i64) -> Vec<MetricPoint> {
    let width = width_ms.max(1);
    let mut out: Vec<(i64, MetricPoint)> = Vec::new();
    for p in points {
        let key = (p.time - 1).div_euclid(width);
        match out.last_mut() {
            Some((k, acc)) if *k == key => acc.merge(p),
            _ => {
                let mut acc = MetricPoint::default();
                acc.merge(p);
                out.push((key, acc));
            }
        }
    }
    out.into_iter().map(|(_, p)| p).collect()
}

/// All points merged into one (totals over a window).
pub fn total(points: &[MetricPoint]) -> MetricPoint {
    let mut acc = MetricPoint::default();
    for p in points {
        acc.merge(p);
    }
    acc
}

/// The time ranges the console offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
pub enum Range {
    #[default]
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::M15, Range::H1, Range::H24, Range::D7];

    pub fn as_str(self) -> &'static str {
        match self {
            Range::M15 => "15m",
            Range::H1 => "1h",
            Range::H24 => "24h",
            Range::D7 => "7d",
        }
    }

    pub fn parse(s: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Range::M15 => "15 minutes",
            Range::H1 => "1 hour",
            Range::H24 => "24 hours",
            Range::D7 => "7 days",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Range::M15 => 15 * 60_000,
            Range::H1 => 3_600_000,
            Range::H24 => 86_400_000,
            Range::D7 => 7 * 86_400_000,
        }
    }

    /// Width of one chart point: about 200 to 700 points per chart.
    pub fn step_ms(self) -> i64 {
        match self {
            Range::M15 => 2_000,
            Range::H1 => 10_000,
            Range::H24 => 180_000,
            Range::D7 => 900_000,
        }
    }
}

/// A mapping's metrics over a range, as the API and the pages get them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct History {
    pub range: Range,
    /// Unix milliseconds the range ends at (the server's now).
    pub end: i64,
    pub step_ms: i64,
    pub points: Vec<MetricPoint>,
}

/// What the overview says about a mapping, judged over the last minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
pub enum Health {
    Ok,
    Lagging,
    Stalled,
    Failing,
    Disabled,
    /// Enabled, but no figures yet.
    Starting,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Lagging => "Lagging",
            Health::Stalled => "Stalled",
            Health::Failing => "Failing",
            Health::Disabled => "Disabled",
            Health::Starting => "Starting",
        }
    }
}

/// The window health is judged over.
pub const HEALTH_WINDOW_MS: i64 = 2 * 60_000;
/// The end of the window that says whether the function fails right now.
const RECENT_MS: i64 = 15_000;

/// Judges a mapping over a window of points (oldest first). Not a threshold
/// on one reading: errors are a share of the window's invocations, lag is a
/// trend (the whole second half above the whole first half), a stall is lag
/// that stayed while nothing was committed for the window.
pub fn judge(enabled: bool, last_result: &str, window: &[MetricPoint]) -> (Health, String) {
    if !enabled {
        return (Health::Disabled, "the mapping is disabled".into());
    }
    let t = total(window);
    let lags: Vec<(i64, i64)> = window.iter().filter_map(|p| p.total_lag().map(|l| (p.time, l))).collect();
    let span_s = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (b.time - a.start()) as f64 / 1000.0,
        _ => 0.0,
    };
    if window.is_empty() || span_s < 5.0 {
        return (Health::Starting, "no figures yet".into());
    }
    let span = format_span(span_s);
    if t.invocations > 0 && t.errors * 2 >= t.invocations {
        return (Health::Failing, format!("{} of {} invocations failed in the last {span}", t.errors, t.invocations));
    }
    // Every invocation of the last seconds failed and nothing moved: failing
    // now, whatever the rest of the window says.
    if let Some(last) = window.last() {
        let recent = total(&window.iter().filter(|p| p.time > last.time - RECENT_MS).cloned().collect::<Vec<_>>());
        if span_s >= RECENT_MS as f64 / 1000.0
            && recent.errors > 0
            && recent.errors >= recent.invocations
            && recent.committed_event_count == 0
        {
            return (
                Health::Failing,
                format!(
                    "all {} invocations of the last {} failed: {last_result}",
                    recent.invocations,
                    format_span(RECENT_MS as f64 / 1000.0)
                ),
            );
        }
    }
    let failing_now = crate::model::is_problem(last_result);
    // A problem that stopped everything (the brokers away): nothing invoked
    // or committed for the last seconds while records wait or the lag
    // cannot be read. Said now, not once the whole window is quiet.
    if let (true, Some(last)) = (failing_now && span_s >= RECENT_MS as f64 / 1000.0, window.last()) {
        let recent: Vec<MetricPoint> = window.iter().filter(|p| p.time > last.time - RECENT_MS).cloned().collect();
        let r = total(&recent);
        let waiting = recent.iter().any(|p| p.total_lag().is_none_or(|l| l > 0));
        if r.invocations == 0 && r.committed_event_count == 0 && waiting {
            return (
                Health::Stalled,
                format!(
                    "nothing invoked or committed in the last {}: {last_result}",
                    format_span(RECENT_MS as f64 / 1000.0)
                ),
            );
        }
    }
    let stuck = t.committed_event_count == 0 && t.invocations == t.errors;
    if failing_now && stuck && (t.errors > 0 || lags.is_empty() || lags.iter().any(|(_, l)| *l > 0)) {
        return (Health::Failing, format!("nothing processed in the last {span}: {last_result}"));
    }
    if t.dropped_event_count > 0 && t.dropped_event_count * 2 >= t.polled_event_count.max(1) {
        return (Health::Failing, format!("{} records dropped in the last {span}", t.dropped_event_count));
    }
    if lags.len() >= 2 && span_s >= 20.0 && lags.iter().all(|(_, l)| *l > 0) && t.committed_event_count == 0 {
        let last = lags.last().map(|l| l.1).unwrap_or(0);
        return (Health::Stalled, format!("{last} records behind and nothing committed for {span}"));
    }
    if lags.len() >= 4 {
        let mid = lags.len() / 2;
        let first_max = lags[..mid].iter().map(|l| l.1).max().unwrap_or(0);
        let second_min = lags[mid..].iter().map(|l| l.1).min().unwrap_or(0);
        if second_min > first_max {
            let (t0, l0) = lags[0];
            let (t1, l1) = lags[lags.len() - 1];
            let per_s = (l1 - l0) as f64 / ((t1 - t0) as f64 / 1000.0).max(1.0);
            return (Health::Lagging, format!("lag grew from {l0} to {l1} records in {span} (+{per_s:.1} records/s)"));
        }
    }
    let (rate, errs) = (t.rate(t.invoked_event_count), t.errors);
    (Health::Ok, format!("{rate:.1} records/s, {errs} errors in the last {span}"))
}

pub fn format_span(s: f64) -> String {
    if s < 90.0 {
        format!("{:.0} s", s)
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// One mapping on the overview page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct Overview {
    #[serde(rename = "UUID")]
    pub uuid: uuid::Uuid,
    pub health: Health,
    /// Why, in words, with the figures.
    pub reason: String,
    pub offset_lag: Option<i64>,
    /// Total lag over the last 15 minutes: `[time ms, records]`.
    pub lag_sparkline: Vec<(i64, f64)>,
    pub start: i64,
    pub end: i64,
    /// Records polled per second over the last minute.
    pub records_per_s: f64,
    /// Share of invocations that failed over the health window.
    pub error_rate: Option<f64>,
    /// Records in the failure ledger (given up on, not redriven successfully
    /// since).
    #[serde(default)]
    pub failed_records: u64,
}

/// The figures operators of Kafka functions watch, over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct Baseline {
    /// The window, in words ("last minute").
    pub window: String,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    pub average_record_bytes: Option<f64>,
    pub average_batch_records: Option<f64>,
    pub average_batch_bytes: Option<f64>,
    pub ms_per_batch: Option<f64>,
    pub ms_per_record: Option<f64>,
    pub invocations: u64,
    pub errors: u64,
    pub retries: u64,
    pub throttles: u64,
}

impl Baseline {
    pub fn of(window: &str, t: &MetricPoint) -> Baseline {
        let per = |a: f64, b: u64| (b > 0).then(|| a / b as f64);
        Baseline {
            window: window.into(),
            records_per_s: if t.period_ms > 0 { t.rate(t.polled_event_count) } else { 0.0 },
            bytes_per_s: if t.period_ms > 0 { t.rate(t.polled_bytes) } else { 0.0 },
            average_record_bytes: per(t.polled_bytes as f64, t.polled_event_count),
            average_batch_records: per(t.batch_records as f64, t.invocations),
            average_batch_bytes: per(t.batch_bytes as f64, t.invocations),
            ms_per_batch: t.duration.average_ms(),
            ms_per_record: per(t.duration.sum_ms, t.batch_records),
            invocations: t.invocations,
            errors: t.errors,
            retries: t.retries,
            throttles: t.throttles,
        }
    }
}

/// Per partition over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct PartitionBaseline {
    pub partition: i32,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    pub average_record_bytes: Option<f64>,
    pub offset_lag: i64,
    pub time_lag_s: f64,
}

/// What the mapping page says about a mapping besides its charts: health,
/// advice, and the baseline figures now and over longer windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct Insight {
    pub health: Health,
    pub reason: String,
    pub advice: Vec<Advice>,
    pub baseline: Vec<Baseline>,
    pub partitions: Vec<PartitionBaseline>,
}

impl PartitionBaseline {
    pub fn of(t: &MetricPoint) -> Vec<PartitionBaseline> {
        t.partitions
            .iter()
            .map(|p| PartitionBaseline {
                partition: p.partition,
                records_per_s: if t.period_ms > 0 { t.rate(p.polled_event_count) } else { 0.0 },
                bytes_per_s: if t.period_ms > 0 { t.rate(p.polled_bytes) } else { 0.0 },
                average_record_bytes: (p.polled_event_count > 0)
                    .then(|| p.polled_bytes as f64 / p.polled_event_count as f64),
                offset_lag: p.offset_lag,
                time_lag_s: p.time_lag_s,
            })
            .collect()
    }
}

/// One piece of advice: what to change, and the figure behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct Advice {
    /// A stable name for the rule (tests and scripts match on it).
    pub rule: String,
    pub text: String,
}

/// Settings the advisor weighs the figures against.
pub struct AdvisorInput<'a> {
    pub batch_size: i64,
    pub window_s: Option<i64>,
    pub max_pollers: Option<i64>,
    /// ParallelizationFactor: batches a partition may have in flight.
    pub lanes: usize,
    pub window: &'a [MetricPoint],
}

/// Reads a window of figures and says what would raise throughput or cut
/// cost, each hint with its number.
pub fn advise(a: &AdvisorInput) -> Vec<Advice> {
    let mut out = Vec::new();
    let t = total(a.window);
    let mut add = |rule: &str, text: String| out.push(Advice { rule: rule.into(), text });
    let parts = &t.partitions;
    let n = parts.len();
    if n >= 2 {
        let polled: u64 = parts.iter().map(|p| p.polled_event_count).sum();
        if let Some(top) = parts.iter().max_by_key(|p| p.polled_event_count) {
            let share = top.polled_event_count as f64 / polled.max(1) as f64;
            if polled >= 100 && share >= 2.0 / n as f64 && share >= 0.4 {
                add("skewed-records", format!(
                    "Partition {} carries {:.0}% of the records (an even share is {:.0}%): the producer's keys are skewed, so one poller does most of the work. Spread the key (add a suffix, or hash a better field).",
                    top.partition, share * 100.0, 100.0 / n as f64));
            }
        }
        let lag: i64 = parts.iter().map(|p| p.offset_lag).sum();
        if let Some(top) = parts.iter().max_by_key(|p| p.offset_lag) {
            let share = top.offset_lag as f64 / lag.max(1) as f64;
            if lag >= 100 && share >= 2.0 / n as f64 && share >= 0.4 {
                add("skewed-lag", format!(
                    "Partition {} holds {:.0}% of the lag ({} of {} records): its records arrive faster than one poller gets through them.",
                    top.partition, share * 100.0, top.offset_lag, lag));
            }
        }
    }
    if t.throttles > 0 {
        add("throttled", format!(
            "The function was throttled {} times ({:.0}% of {} invocations): raise its reserved concurrency, or lower MaximumPollers so fewer batches run at once.",
            t.throttles, 100.0 * t.throttles as f64 / t.invocations.max(1) as f64, t.invocations));
    }
    if t.invocations >= 10 && a.window_s == Some(0) {
        let avg = t.batch_records as f64 / t.invocations as f64;
        if avg < 0.25 * a.batch_size as f64 {
            let per_part = t.rate(t.polled_event_count) / n.max(1) as f64;
            let with_window = (per_part * 1.0).clamp(1.0, a.batch_size as f64);
            let fewer = (with_window / avg.max(1.0)).max(1.0);
            add("small-batches", format!(
                "Batches average {avg:.1} records of the {} allowed, with no batching window: a 1 s window would send about {with_window:.0} records per invocation, about {fewer:.0}× fewer invocations, for at most 1 s more latency.",
                a.batch_size));
        }
    }
    let lags: Vec<i64> = a.window.iter().filter_map(|p| p.total_lag()).collect();
    if n > 0 && lags.len() >= 4 {
        let mid = lags.len() / 2;
        let growing = lags[mid..].iter().min() > lags[..mid].iter().max();
        let pollers = t.pollers.max(1) as usize;
        if growing && (pollers >= n || a.max_pollers.is_some_and(|m| m as usize >= n)) {
            let (from, to) = (lags[0], lags[lags.len() - 1]);
            let busiest = parts.iter().map(|p| p.concurrent_executions).max().unwrap_or(0) as usize;
            if a.lanes <= 1 {
                add("parallelize", format!(
                    "Lag keeps growing (from {from} to {to} records) with {pollers} poller(s) for {n} partition(s), one batch per partition at a time: set ParallelizationFactor (say 10) to run up to that many batches per partition, each key still in order, or add partitions."));
            } else if busiest < a.lanes {
                add("skewed-keys", format!(
                    "Lag keeps growing (from {from} to {to} records) though at most {busiest} of the {} lanes of a partition were busy at once: a few keys hold most records, and one key runs one batch at a time, so more lanes will not help. Spread the key.",
                    a.lanes));
            } else {
                add("add-partitions", format!(
                    "Lag keeps growing (from {from} to {to} records) with all {} lanes of every partition busy and {pollers} poller(s) for {n} partition(s): raise ParallelizationFactor, or add partitions.",
                    a.lanes));
            }
        }
    }
    let fetched = t.polled_event_count;
    if fetched >= 100 && t.filtered_out_event_count * 2 >= fetched {
        add("filtered-out", format!(
            "{:.0}% of the records fetched ({} of {}) are filtered out: they are read and decoded for nothing. Filter at the producer, or move them to a topic of their own.",
            100.0 * t.filtered_out_event_count as f64 / fetched as f64, t.filtered_out_event_count, fetched));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time: i64, invocations: u64, errors: u64, lag: &[i64]) -> MetricPoint {
        MetricPoint {
            time,
            period_ms: 1000,
            invocations,
            errors,
            committed_event_count: invocations - errors,
            invoked_event_count: invocations - errors,
            partitions: lag
                .iter()
                .enumerate()
                .map(|(i, l)| PartitionPoint { partition: i as i32, offset_lag: *l, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    /// Each counter has its own place and its own field, merges add them,
    /// and the stored JSON keeps the field names history was written with.
    #[test]
    fn counters_are_defined_once_and_keep_their_json_names() {
        let mut p = MetricPoint::default();
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            *c.field(&mut p) = i as u64 + 1;
        }
        let mut twice = p.clone();
        twice.merge(&p);
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(c.of(&p), i as u64 + 1, "{c:?} has a field of its own");
            assert_eq!(c.of(&twice), 2 * (i as u64 + 1));
        }
        let json = serde_json::to_value(&p).unwrap();
        for key in
            ["Invocations", "Errors", "CommittedEventCount", "OnFailureDestinationDeliveredEventCount", "BatchBytes"]
        {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        let names: std::collections::HashSet<_> = Counter::ALL.iter().map(|c| c.info().prometheus).collect();
        assert_eq!(names.len(), Counter::COUNT);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut dense = [0u64; BUCKETS];
        for ms in 1..=100 {
            dense[bucket_of(ms as f64)] += 1;
        }
        let d = Durations::from_dense(100, 5050.0, 100.0, &dense);
        let p50 = d.quantile_ms(0.5).unwrap();
        let p99 = d.quantile_ms(0.99).unwrap();
        assert!((50.0..=60.0).contains(&p50), "p50 {p50}");
        assert!((99.0..=100.0).contains(&p99), "p99 {p99}");
        assert_eq!(d.average_ms(), Some(50.5));
    }

    #[test]
    fn bucketing_sums_counts_and_keeps_the_last_lag() {
        let pts: Vec<_> = (1..=10).map(|i| point(i * 1000, 2, 0, &[i, 1])).collect();
        let b = bucket(&pts, 5000);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].invocations, 10);
        assert_eq!(b[0].period_ms, 5000);
        assert_eq!(b[0].total_lag(), Some(6));
        assert_eq!(b[1].total_lag(), Some(11));
        assert_eq!(b[1].rate(b[1].invocations), 2.0);
    }

    #[test]
    fn health_reads_a_window_not_a_reading() {
        let ok: Vec<_> = (1..=60).map(|i| point(i * 1000, 5, 0, &[3, 2])).collect();
        assert_eq!(judge(true, "OK", &ok).0, Health::Ok);
        // A spike in the middle is not a trend.
        let mut spike = ok.clone();
        spike[30].partitions[0].offset_lag = 5000;
        assert_eq!(judge(true, "OK", &spike).0, Health::Ok);
        let growing: Vec<_> = (1..=60).map(|i| point(i * 1000, 5, 0, &[i * 10, 0])).collect();
        let (h, why) = judge(true, "OK", &growing);
        assert_eq!(h, Health::Lagging, "{why}");
        let stalled: Vec<_> = (1..=60).map(|i| point(i * 1000, 0, 0, &[40, 2])).collect();
        assert_eq!(judge(true, "OK", &stalled).0, Health::Stalled);
        let failing: Vec<_> = (1..=60).map(|i| point(i * 1000, 2, 2, &[40, 2])).collect();
        assert_eq!(judge(true, "PROBLEM: Function call failed", &failing).0, Health::Failing);
        assert_eq!(judge(false, "OK", &ok).0, Health::Disabled);
        assert_eq!(judge(true, "OK", &[]).0, Health::Starting);
    }

    /// Brokers gone mid-window: busy before, then 15 s of nothing and no
    /// lag readable. Stalled at once, in the status's words; an idle
    /// mapping caught up with an old problem text is not.
    #[test]
    fn health_says_an_outage_at_once() {
        let mut w: Vec<_> = (1..=45).map(|i| point(i * 1000, 5, 0, &[3])).collect();
        w.extend((46..=61).map(|i| point(i * 1000, 0, 0, &[])));
        let down = "PROBLEM: Connection error: cannot reach the Kafka brokers (b:9092): no answer within 5 s";
        let (h, why) = judge(true, down, &w);
        assert_eq!(h, Health::Stalled, "{why}");
        assert!(why.contains("nothing invoked or committed in the last 15 s") && why.contains(down), "{why}");
        assert_eq!(judge(true, "OK", &w).0, Health::Ok, "no problem said: figures alone decide");
        let idle: Vec<_> = (1..=60).map(|i| point(i * 1000, u64::from(i < 30), 0, &[0])).collect();
        assert_eq!(judge(true, "PROBLEM: RetryAttemptsExhausted: dropped offset 4", &idle).0, Health::Ok);
    }

    /// A lag that grows with a poller per partition: lanes are suggested,
    /// or (lanes idle) the keys are said to be skewed, or (all busy) more.
    #[test]
    fn advisor_suggests_lanes_and_says_when_keys_are_too_skewed_for_them() {
        let growing = |busy: u64| -> Vec<MetricPoint> {
            (1..=8)
                .map(|i| {
                    let mut p = point(i * 1000, 1, 0, &[i * 100]);
                    p.pollers = 1;
                    p.partitions[0].concurrent_executions = busy;
                    p
                })
                .collect()
        };
        let rules = |lanes: usize, busy: u64| -> Vec<String> {
            let w = growing(busy);
            advise(&AdvisorInput { batch_size: 100, window_s: Some(1), max_pollers: None, lanes, window: &w })
                .into_iter()
                .map(|a| a.rule)
                .collect()
        };
        assert!(rules(1, 1).contains(&"parallelize".to_string()));
        assert!(rules(10, 1).contains(&"skewed-keys".to_string()), "one key busy of ten lanes");
        assert!(rules(10, 10).contains(&"add-partitions".to_string()), "every lane busy");
    }

    #[test]
    fn advisor_names_the_hot_partition() {
        let w: Vec<_> = (1..=30)
            .map(|i| {
                let mut p = point(i * 1000, 1, 0, &[0, 0, 0, 0]);
                for (j, part) in p.partitions.iter_mut().enumerate() {
                    part.polled_event_count = if j == 2 { 40 } else { 2 };
                }
                p.polled_event_count = 46;
                p.batch_records = 46;
                p
            })
            .collect();
        let advice =
            advise(&AdvisorInput { batch_size: 100, window_s: Some(1), max_pollers: None, lanes: 1, window: &w });
        let skew = advice.iter().find(|a| a.rule == "skewed-records").expect("skew advice");
        assert!(skew.text.starts_with("Partition 2 carries 87%"), "{}", skew.text);
    }
}
