//! Metrics: every second, the collector turns each running mapping's
//! cumulative counters into a point (what happened in that second, plus lag
//! per partition), keeps 15 minutes of them in memory, pushes them to open
//! pages, and stores them: 1-minute points kept two days, 15-minute rollups
//! kept for the retention. History reads the finest source covering each
//! part of a range.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_app::metrics::{bucket, Counter, Durations, History, MetricPoint, PartitionPoint, Range};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::shared::status::{LiveStatus, PartSnapshot, Snapshot};
use crate::shared::{LiveRegistry, Node};
use crate::store::Store;

/// The PostgreSQL channel per-second points reach the other nodes on:
/// payload is the node, then `uuid point` lines.
pub const POINTS: &str = "sluice_points";
/// NOTIFY payloads must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7_900;

pub const MINUTE: i64 = 60_000;
pub const QUARTER: i64 = 15 * 60_000;
/// Minute points kept while the database refuses them: a day of 70 mappings.
const MAX_UNSAVED: usize = 100_000;
/// How much of the 1-second points stays in memory.
pub const LIVE_WINDOW: i64 = 15 * 60_000;

#[derive(Clone, Debug)]
pub struct MetricsSettings {
    pub interval: Duration,
    /// How long 1-minute points are kept.
    pub fine_retention: Duration,
    /// How long 15-minute points are kept.
    pub retention: Duration,
    /// How long the failure ledger keeps a record (and redrives their results).
    pub failures_retention: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            interval: Duration::from_secs(1),
            fine_retention: Duration::from_secs(2 * 86_400),
            retention: Duration::from_secs(30 * 86_400),
            failures_retention: Duration::from_secs(14 * 86_400),
        }
    }
}

/// One collection: every running mapping's newest point, summed over the
/// nodes (what pages show), and this node's own part (what it stores and
/// publishes, so nothing is counted twice).
pub struct Tick {
    pub time: i64,
    pub points: Vec<(Uuid, MetricPoint)>,
    pub local: Vec<(Uuid, MetricPoint)>,
}

struct Track {
    /// The poller the last snapshot came from: a new poller restarts its counters.
    source: Arc<LiveStatus>,
    last: Snapshot,
    last_time: i64,
    ring: VecDeque<MetricPoint>,
    minute: Option<(i64, MetricPoint)>,
}

pub struct Metrics {
    store: Store,
    live: LiveRegistry,
    settings: MetricsSettings,
    tracks: Mutex<HashMap<Uuid, Track>>,
    /// Other nodes' points not yet merged into one of ours.
    remote: Mutex<HashMap<Uuid, Vec<(Instant, MetricPoint)>>>,
    node: Arc<Node>,
    tx: broadcast::Sender<Arc<Tick>>,
    closing: CancellationToken,
    /// Time the collector spent working, for the console cost benchmark.
    pub busy_ns: AtomicU64,
}

impl Metrics {
    pub fn new(store: Store, live: LiveRegistry, node: Arc<Node>, settings: MetricsSettings) -> Arc<Metrics> {
        let (tx, _) = broadcast::channel(64);
        Arc::new(Metrics {
            store,
            live,
            settings,
            tracks: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            node,
            tx,
            closing: CancellationToken::new(),
            busy_ns: AtomicU64::new(0),
        })
    }

    /// Starts the collector; it runs until `close`.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    /// Ends the collector and every open stream (a server shutting down
    /// must not wait on pages that stay open).
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tick>> {
        self.tx.subscribe()
    }

    async fn run(&self) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_quarter = 0;
        let mut last_purge = 0;
        let mut unsaved: Vec<(Uuid, MetricPoint)> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.closing.cancelled() => break,
            }
            let started = Instant::now();
            let now = now_ms();
            let (tick, minutes) = self.collect(now);
            let tick = Arc::new(tick);
            let _ = self.tx.send(tick.clone());
            if self.store.is_postgres() {
                for payload in point_payloads(&self.node.id, &tick.local) {
                    if let Err(e) = self.store.notify(POINTS, &payload).await {
                        tracing::debug!("cannot send metric points to the other nodes: {e:#}");
                    }
                }
            }
            // Minutes the database refused are kept and sent again with
            // the next (a dropped connection, a full disk lose no minute).
            let failing = !unsaved.is_empty();
            unsaved.extend(minutes);
            if !unsaved.is_empty() {
                match self.store.put_points(MINUTE, &self.node.id, &unsaved).await {
                    Ok(()) => unsaved.clear(),
                    Err(e) => {
                        if !failing {
                            tracing::warn!("cannot store metric points (kept to retry): {e:#}");
                        }
                        let over = unsaved.len().saturating_sub(MAX_UNSAVED);
                        unsaved.drain(..over);
                    }
                }
            }
            // Rollups and purges are the cluster's, done once by the leader.
            if !self.node.is_leader() {
                last_quarter = 0;
            } else if now / QUARTER != last_quarter {
                last_quarter = now / QUARTER;
                if let Err(e) = self.rollup(now).await {
                    tracing::warn!("cannot roll up metric points: {e:#}");
                }
            }
            if self.node.is_leader() && now - last_purge > 3_600_000 {
                last_purge = now;
                self.purge(now).await;
            }
            self.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // What the current minute gathered is kept across a restart.
        {
            let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
            unsaved.extend(
                tracks.iter_mut().filter_map(|(id, t)| t.minute.take().map(|(k, p)| (*id, align(p, k, MINUTE)))),
            );
        }
        let _ = self.store.put_points(MINUTE, &self.node.id, &unsaved).await;
    }

    /// Another node's point for a mapping: merged into this node's next
    /// point of it, so pages here show the whole cluster.
    /// Takes a POINTS payload from another node (this node's own are skipped).
    pub fn take_remote(&self, me: &str, payload: &str) {
        let mut lines = payload.lines();
        if lines.next() == Some(me) {
            return;
        }
        for line in lines {
            let Some((id, packed)) = line.split_once(' ') else { continue };
            if let (Ok(id), Ok(p)) = (Uuid::parse_str(id), crate::store::unpack(packed)) {
                self.add_remote(id, p);
            }
        }
    }

    pub fn add_remote(&self, id: Uuid, p: MetricPoint) {
        self.remote.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().push((Instant::now(), p));
    }

    /// Sums the other nodes' pending points into ours (lag is the group's,
    /// the same from every node, so the newest reading stands).
    fn with_remote(
        &self,
        id: Uuid,
        local: &MetricPoint,
        remote: &mut HashMap<Uuid, Vec<(Instant, MetricPoint)>>,
    ) -> MetricPoint {
        let mut out = local.clone();
        if let Some(pending) = remote.remove(&id) {
            for (_, p) in pending {
                let (time, period, pollers, conc) = (out.time, out.period_ms, out.pollers, out.concurrent_executions);
                let parts = std::mem::take(&mut out.partitions);
                out.merge(&p);
                // Same second: keep our interval; pollers and concurrency add.
                out.time = time;
                out.period_ms = period;
                out.pollers = pollers + p.pollers;
                out.concurrent_executions = conc + p.concurrent_executions;
                if !parts.is_empty() {
                    let mut merged = parts;
                    for m in &mut merged {
                        if let Some(r) = p.partitions.iter().find(|r| r.partition == m.partition) {
                            m.polled_event_count += r.polled_event_count;
                            m.polled_bytes += r.polled_bytes;
                        }
                    }
                    out.partitions = merged;
                }
            }
        }
        out
    }

    /// Takes a point from every running mapping; returns them and the
    /// minutes that closed.
    pub fn collect(&self, now: i64) -> (Tick, Vec<(Uuid, MetricPoint)>) {
        let live: Vec<(Uuid, Arc<LiveStatus>)> =
            self.live.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        let mut points = Vec::with_capacity(live.len());
        let mut local = Vec::with_capacity(live.len());
        let mut closed = Vec::new();
        for (id, status) in live {
            let snap = status.snapshot();
            let track = tracks.entry(id).or_insert_with(|| Track {
                source: status.clone(),
                last: Snapshot::default(),
                last_time: now - self.settings.interval.as_millis() as i64,
                ring: VecDeque::new(),
                minute: None,
            });
            if !Arc::ptr_eq(&track.source, &status) {
                track.source = status.clone();
                track.last = Snapshot::default();
            }
            let point = diff(&track.last, &snap, track.last_time, now);
            track.last = snap;
            track.last_time = now;
            let key = (now - 1).div_euclid(MINUTE);
            match &mut track.minute {
                Some((k, acc)) if *k == key => acc.merge(&point),
                slot => {
                    if let Some((k, acc)) = slot.replace((key, point.clone())) {
                        closed.push((id, align(acc, k, MINUTE)));
                    }
                }
            }
            let summed = self.with_remote(id, &point, &mut remote);
            track.ring.push_back(summed.clone());
            while track.ring.front().is_some_and(|p| p.time <= now - LIVE_WINDOW) {
                track.ring.pop_front();
            }
            points.push((id, summed));
            local.push((id, point));
        }
        // Points for mappings this node does not run (yet) are not kept long.
        remote.retain(|_, v| {
            v.retain(|(t, _)| t.elapsed() < Duration::from_secs(5));
            !v.is_empty()
        });
        drop(remote);
        // Mappings that stopped: their minute is stored, their memory freed
        // once their last point has aged out.
        let running: std::collections::HashSet<Uuid> = points.iter().map(|(id, _)| *id).collect();
        for (id, t) in tracks.iter_mut() {
            if !running.contains(id) {
                if let Some((k, acc)) = t.minute.take() {
                    closed.push((*id, align(acc, k, MINUTE)));
                }
            }
        }
        tracks.retain(|id, t| running.contains(id) || t.ring.back().is_some_and(|p| p.time > now - LIVE_WINDOW));
        (Tick { time: now, points, local }, closed)
    }

    /// The live points of a mapping after `after` (oldest first).
    pub fn recent(&self, id: Uuid, after: i64) -> Vec<MetricPoint> {
        let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        tracks.get(&id).map(|t| t.ring.iter().filter(|p| p.time > after).cloned().collect()).unwrap_or_default()
    }

    /// A mapping's points over a range: stored points where memory does not
    /// reach, then the live ones, in chart-sized buckets.
    pub async fn history(&self, id: Uuid, range: Range) -> anyhow::Result<History> {
        let now = now_ms();
        let from = now - range.millis();
        let live = self.recent(id, from);
        let live_start = live.first().map(|p| p.start()).unwrap_or(now);
        let mut points = if range.millis() <= 86_400_000 {
            self.store.points(id, MINUTE, from, live_start).await?
        } else {
            let mut coarse = self.store.points(id, QUARTER, from, live_start).await?;
            let after = coarse.last().map(|p| p.time).unwrap_or(from);
            coarse.extend(self.store.points(id, MINUTE, after, live_start).await?);
            coarse
        };
        points.extend(live);
        Ok(History { range, end: now, step_ms: range.step_ms(), points: bucket(&points, range.step_ms()) })
    }

    /// Rolls closed quarters of 1-minute points up into 15-minute points.
    async fn rollup(&self, now: i64) -> anyhow::Result<()> {
        let done: HashMap<Uuid, i64> = self.store.latest_points(QUARTER).await?.into_iter().collect();
        let until = now.div_euclid(QUARTER) * QUARTER;
        let oldest = now - self.settings.fine_retention.as_millis() as i64;
        for (id, _) in self.store.latest_points(MINUTE).await? {
            let after = done.get(&id).copied().unwrap_or(oldest).max(oldest);
            if after >= until {
                continue;
            }
            let minutes = self.store.points(id, MINUTE, after, until).await?;
            let quarters: Vec<(Uuid, MetricPoint)> = bucket(&minutes, QUARTER)
                .into_iter()
                .map(|q| {
                    let key = (q.time - 1).div_euclid(QUARTER);
                    (id, align(q, key, QUARTER))
                })
                .collect();
            self.store.put_points(QUARTER, "", &quarters).await?;
        }
        Ok(())
    }

    async fn purge(&self, now: i64) {
        let fine = now - self.settings.fine_retention.as_millis() as i64;
        let coarse = now - self.settings.retention.as_millis() as i64;
        for (res, before) in [(MINUTE, fine), (QUARTER, coarse)] {
            match self.store.purge_points(res, before).await {
                Ok(n) if n > 0 => tracing::info!(resolution_ms = res, removed = n, "old metric points removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot remove old metric points: {e:#}"),
            }
        }
        let before = now - self.settings.failures_retention.as_millis() as i64;
        match crate::ledger::Ledger::new(&self.store).purge(before).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "failed records past their retention forgotten"),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot remove old failed records: {e:#}"),
        }
    }
}

/// Keeps an aggregated point inside its bucket `[k*width, (k+1)*width]`.
/// Its end stays the last second it saw: a minute cut short by a restart
/// ends before the new process's first point, so history joins them.
fn align(mut p: MetricPoint, key: i64, width: i64) -> MetricPoint {
    let start = p.start().max(key * width);
    p.time = p.time.min((key + 1) * width);
    p.period_ms = (p.time - start).max(1);
    p
}

/// What happened between two snapshots of one poller.
fn diff(a: &Snapshot, b: &Snapshot, from: i64, now: i64) -> MetricPoint {
    let buckets: Vec<u64> =
        b.buckets.iter().enumerate().map(|(i, n)| n.saturating_sub(a.buckets.get(i).copied().unwrap_or(0))).collect();
    let count = b.duration_count.saturating_sub(a.duration_count);
    let sum_ms = b.duration_sum_us.saturating_sub(a.duration_sum_us) as f64 / 1000.0;
    let partitions = b
        .lag
        .iter()
        .map(|l| {
            let cur = b.parts.iter().find(|p| p.partition == l.partition).cloned().unwrap_or_default();
            let prev = a.parts.iter().find(|p| p.partition == l.partition).cloned().unwrap_or_default();
            let oldest = cur.oldest_pending_ms;
            PartitionPoint {
                partition: l.partition,
                offset_lag: l.offset_lag,
                committed_offset: l.committed_offset,
                end_offset: l.end_offset,
                time_lag_s: if l.offset_lag > 0 && oldest > 0 {
                    ((now - oldest) as f64 / 1000.0).max(0.0)
                } else {
                    0.0
                },
                polled_event_count: cur.polled.saturating_sub(prev.polled),
                polled_bytes: cur.bytes.saturating_sub(prev.bytes),
                concurrent_executions: cur.peak_in_flight,
                lanes: cur.lanes,
            }
        })
        .collect::<Vec<_>>();
    let sum = |s: &Snapshot, f: fn(&PartSnapshot) -> u64| s.parts.iter().map(f).sum::<u64>();
    let mut point = MetricPoint {
        time: now,
        period_ms: (now - from).max(1),
        polled_event_count: sum(b, |p| p.polled).saturating_sub(sum(a, |p| p.polled)),
        polled_bytes: sum(b, |p| p.bytes).saturating_sub(sum(a, |p| p.bytes)),
        duration: Durations::from_dense(count, sum_ms, b.max_us as f64 / 1000.0, &buckets),
        concurrent_executions: b.peak as u32,
        pollers: b.pollers as u32,
        partitions,
        ..Default::default()
    };
    for c in Counter::ALL {
        *c.field(&mut point) = b.get(c).saturating_sub(a.get(c));
    }
    point
}

/// The Prometheus text exposition of every running mapping: counters since
/// its poller started, and lag per partition.
/// `failed`: each mapping's records in the failure ledger not redriven successfully.
pub fn prometheus(live: &LiveRegistry, names: &HashMap<Uuid, (String, String)>, failed: &HashMap<Uuid, u64>) -> String {
    use std::fmt::Write;
    let live: Vec<(Uuid, Arc<LiveStatus>)> =
        live.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect();
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let labels = |id: &Uuid| {
        let (f, t) = names.get(id).cloned().unwrap_or_default();
        format!("mapping=\"{id}\",function=\"{}\",topic=\"{}\"", esc(&f), esc(&t))
    };
    let snaps: Vec<(Uuid, Snapshot)> = live.iter().map(|(id, s)| (*id, s.snapshot_quiet())).collect();
    let mut out = String::new();
    for c in Counter::ALL {
        let (name, help) = (c.info().prometheus, c.info().help);
        let _ = writeln!(out, "# HELP {name} {help}, since the mapping's poller started.\n# TYPE {name} counter");
        for (id, s) in &snaps {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(id), s.get(c));
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_duration_milliseconds Invocation duration.\n# TYPE sluice_duration_milliseconds summary"
    );
    for (id, s) in &snaps {
        let _ =
            writeln!(out, "sluice_duration_milliseconds_sum{{{}}} {}", labels(id), s.duration_sum_us as f64 / 1000.0);
        let _ = writeln!(out, "sluice_duration_milliseconds_count{{{}}} {}", labels(id), s.duration_count);
    }
    let _ = writeln!(
        out,
        "# HELP sluice_failed_records Records the mapping gave up on, in the failure ledger and not redriven successfully (every node's).\n# TYPE sluice_failed_records gauge"
    );
    let mut ids: Vec<&Uuid> = names.keys().collect();
    ids.sort();
    for id in ids {
        let _ = writeln!(out, "sluice_failed_records{{{}}} {}", labels(id), failed.get(id).copied().unwrap_or(0));
    }
    let _ = writeln!(out, "# HELP sluice_pollers Pollers (consumers in the mapping's group) running on this node.\n# TYPE sluice_pollers gauge");
    for (id, s) in &snaps {
        let _ = writeln!(out, "sluice_pollers{{{}}} {}", labels(id), s.pollers);
    }
    let per_part: [(&str, &str, &str); 6] = [
        (
            "sluice_offset_lag",
            "gauge",
            "Records between the group's committed offset and the end of the partition (OffsetLag)",
        ),
        ("sluice_end_offset", "gauge", "The partition's end offset (high watermark)"),
        ("sluice_polled_events_total", "counter", "Records polled from the partition (PolledEventCount)"),
        ("sluice_polled_bytes_total", "counter", "Key and value bytes polled from the partition"),
        ("sluice_partition_lanes", "gauge", "Batches the partition may have in flight (ParallelizationFactor)"),
        ("sluice_partition_in_flight", "gauge", "The partition's batches at the function now"),
    ];
    for (name, kind, help) in per_part {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
        for (id, s) in &snaps {
            for l in &s.lag {
                let part = s.parts.iter().find(|p| p.partition == l.partition).cloned().unwrap_or_default();
                let v = match name {
                    "sluice_offset_lag" => l.offset_lag as u64,
                    "sluice_end_offset" => l.end_offset.max(0) as u64,
                    "sluice_polled_events_total" => part.polled,
                    "sluice_partition_lanes" => part.lanes.max(1),
                    "sluice_partition_in_flight" => part.in_flight,
                    _ => part.bytes,
                };
                let _ = writeln!(out, "{name}{{{},partition=\"{}\"}} {v}", labels(id), l.partition);
            }
        }
    }
    out
}

/// The payloads that carry a node's points to the others, each under the
/// NOTIFY limit. A point too big alone (hundreds of partitions) goes
/// without its partitions; the others' lag readers have those anyway.
pub fn point_payloads(node: &str, points: &[(Uuid, sluice_app::metrics::MetricPoint)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (id, p) in points {
        let mut line = crate::store::pack(p).map(|s| format!("{id} {s}")).unwrap_or_default();
        if line.len() + node.len() + 2 > MAX_PAYLOAD {
            let mut slim = p.clone();
            slim.partitions.clear();
            line = crate::store::pack(&slim).map(|s| format!("{id} {s}")).unwrap_or_default();
        }
        if !cur.is_empty() && cur.len() + line.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push_str(node);
        }
        cur.push('\n');
        cur.push_str(&line);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_notify_limit() {
        use sluice_app::metrics::{MetricPoint, PartitionPoint};
        let mut p = MetricPoint { time: 1, period_ms: 1000, invocations: 3, ..Default::default() };
        p.partitions = (0..2000)
            .map(|i| PartitionPoint { partition: i, offset_lag: i as i64 * 7919, ..Default::default() })
            .collect();
        let id = Uuid::new_v4();
        let pts: Vec<_> = (0..40).map(|_| (id, p.clone())).collect();
        let out = point_payloads("node1", &pts);
        assert!(out.iter().all(|s| s.len() <= MAX_PAYLOAD && s.starts_with("node1\n")));
        let lines: usize = out.iter().map(|s| s.lines().count() - 1).sum();
        assert_eq!(lines, 40, "every point is sent");
    }
}
