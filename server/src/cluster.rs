//! Several nodes on one PostgreSQL database. Sluice does not run a cluster
//! protocol of its own: the work is shared by Kafka's consumer groups (every
//! node runs at least one consumer of every enabled mapping), and the rest
//! goes through the database:
//! - a heartbeat row per node (address, version, pollers it runs), every
//!   2 s and at once when its pollers change;
//! - `LISTEN`/`NOTIFY`: a saved change wakes every node's reconciler, and
//!   each node's per-second points reach the others' live charts;
//! - a session advisory lock elects the node that runs the once-per-cluster
//!   duties (autoscaler, metric rollups and purges, forgetting dead nodes);
//!   it moves when that node's connection dies.
//!
//! On SQLite the node is alone: always the leader, nothing to listen to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_app::model::NodeView;
use sqlx::Connection as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::service::MappingService;
use crate::store::{NodeRow, Store};

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node not heard from for this long is counted out: its share of
/// pollers goes to the others and its holds stop counting.
pub const DEAD_AFTER_MS: i64 = 10_000;
/// Dead nodes stay listed (as not alive) this long, then are forgotten.
const FORGET_AFTER_MS: i64 = 10 * 60_000;
/// Saved changes: payload is the mapping's UUID (or empty).
pub const CHANGES: &str = "sluice_changes";
/// Per-second metric points: payload is the node, then `uuid point` lines.
pub const POINTS: &str = "sluice_points";
/// NOTIFY payloads must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7_900;
/// The advisory lock whose holder is the leader ("sluice" in ASCII).
const LEADER_LOCK: i64 = 0x736c_7569_6365;

/// This process as a member of the cluster.
pub struct Node {
    pub id: String,
    pub started_ms: i64,
    leader: AtomicBool,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// Alive nodes' ids, sorted, as of the last heartbeat.
    members: Mutex<Vec<String>>,
    /// Wakes the heartbeat early (this node's pollers changed).
    poke: Notify,
}

impl Node {
    /// A node that is alone until a heartbeat says otherwise (SQLite, and
    /// tests that start no heartbeat): the leader, ready.
    pub fn new() -> Node {
        let id = std::env::var("SLUICE_NODE_ID").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            let u = Uuid::new_v4().simple().to_string();
            u[..12].to_string()
        });
        Node {
            members: Mutex::new(vec![id.clone()]),
            id,
            started_ms: now_ms(),
            leader: AtomicBool::new(true),
            ready: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            poke: Notify::new(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Can take traffic: the database answered the last heartbeat and, on
    /// PostgreSQL, this node listens for changes. False while stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed)
    }

    /// Shutting down: not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }

    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// This node's part of `total` pollers: the total spread evenly over the
    /// alive nodes, and at least one each so a node's death costs the group
    /// only a rebalance.
    pub fn share(&self, total: u32) -> u32 {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let n = members.len().max(1) as u32;
        let i = members.iter().position(|m| *m == self.id).unwrap_or(0) as u32;
        (total / n + u32::from(i < total % n)).max(1)
    }

    pub fn members(&self) -> Vec<String> {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_members(&self, mut ids: Vec<String>) -> bool {
        if !ids.contains(&self.id) {
            ids.push(self.id.clone());
        }
        ids.sort();
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *m != ids;
        *m = ids;
        changed
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// Heard from recently enough to count in.
pub fn alive(row: &NodeRow, now: i64) -> bool {
    now - row.heartbeat_ms <= DEAD_AFTER_MS
}

/// The nodes as the console shows them.
pub fn views(rows: Vec<NodeRow>, me: &str) -> Vec<NodeView> {
    let now = now_ms();
    rows.into_iter()
        .map(|r| NodeView {
            alive: alive(&r, now),
            this_node: r.id == me,
            id: r.id,
            address: r.address,
            version: r.version,
            started: r.started_ms as f64 / 1000.0,
            last_heartbeat: r.heartbeat_ms as f64 / 1000.0,
            leader: r.leader,
            pollers: r.running,
        })
        .collect()
}

pub struct ClusterHandle {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterHandle {
    /// Leaves the cluster: marks the node not ready, removes its row (the
    /// others take its share at once) and releases the leader lock.
    pub async fn shutdown(self) {
        self.stop.cancel();
        futures::future::join_all(self.tasks).await;
    }
}

/// Starts the heartbeat (and, on PostgreSQL, the listener). `address` is
/// what other nodes and operators should use to reach this one.
pub fn start(mappings: Arc<MappingService>, address: String) -> ClusterHandle {
    let stop = CancellationToken::new();
    let store = mappings.store().clone();
    let node = mappings.node().clone();
    let mut tasks = Vec::new();
    if store.is_postgres() {
        // Not the leader until the lock says so; not ready until listening.
        node.leader.store(false, Ordering::Relaxed);
        node.ready.store(false, Ordering::Relaxed);
        tasks.push(tokio::spawn(listen(mappings.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(heartbeat(mappings, address, stop.clone())));
    ClusterHandle { stop, tasks }
}

async fn heartbeat(mappings: Arc<MappingService>, address: String, stop: CancellationToken) {
    let store = mappings.store().clone();
    let node = mappings.node().clone();
    let mut lock: Option<sqlx::PgConnection> = None;
    loop {
        if store.is_postgres() {
            let was = node.is_leader();
            let now = lead(&store, &mut lock).await;
            node.leader.store(now, Ordering::Relaxed);
            if now != was {
                tracing::info!(node = %node.id, "{}", if now { "elected leader" } else { "no longer the leader" });
            }
        }
        let row = NodeRow {
            id: node.id.clone(),
            address: address.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_ms: node.started_ms,
            heartbeat_ms: now_ms(),
            leader: node.is_leader(),
            running: running(&mappings),
        };
        match beat(&store, &row).await {
            Ok(alive) => {
                if node.set_members(alive) {
                    tracing::info!(node = %node.id, members = ?node.members(), "cluster membership changed");
                    mappings.changes().notify_one();
                }
                if !store.is_postgres() {
                    node.ready.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!("heartbeat failed: {e:#}");
                if !store.is_postgres() {
                    node.ready.store(false, Ordering::Relaxed);
                }
            }
        }
        if node.is_leader() {
            let _ = store.remove_nodes(now_ms() - FORGET_AFTER_MS, None).await;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = node.poke.notified() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    node.ready.store(false, Ordering::Relaxed);
    let _ = store.remove_nodes(0, Some(&node.id)).await;
    if let Some(c) = lock.take() {
        let _ = c.close().await;
    }
    let _ = store.notify(CHANGES, "").await;
}

/// Writes this node's row and returns the alive nodes' ids.
async fn beat(store: &Store, row: &NodeRow) -> anyhow::Result<Vec<String>> {
    store.heartbeat(row).await?;
    let now = now_ms();
    Ok(store.nodes().await?.into_iter().filter(|n| alive(n, now)).map(|n| n.id).collect())
}

/// Pollers per mapping on this node.
fn running(mappings: &MappingService) -> BTreeMap<String, u32> {
    let live = mappings.live();
    let live = live.lock().unwrap_or_else(|e| e.into_inner());
    live.iter().map(|(id, s)| (id.to_string(), s.pollers.load(Ordering::Relaxed) as u32)).collect()
}

/// Holds or tries to take the leader lock on its own connection; the lock
/// lives as long as that session, so a dead node's lock frees itself.
async fn lead(store: &Store, conn: &mut Option<sqlx::PgConnection>) -> bool {
    if let Some(c) = conn.as_mut() {
        if sqlx::query("SELECT 1").execute(&mut *c).await.is_ok() {
            return true;
        }
        *conn = None;
        return false;
    }
    let Ok(mut c) = sqlx::PgConnection::connect(store.url()).await else { return false };
    match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut c).await {
        Ok(true) => {
            *conn = Some(c);
            true
        }
        _ => {
            let _ = c.close().await;
            false
        }
    }
}

/// Wakes the reconciler on every change saved by any node and takes the
/// other nodes' metric points. A lost connection is re-established by
/// the listener; what was missed meanwhile is caught by a full reconcile.
async fn listen(mappings: Arc<MappingService>, stop: CancellationToken) {
    let node = mappings.node().clone();
    loop {
        let mut l = match sqlx::postgres::PgListener::connect(mappings.store().url()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot listen for changes: {e:#}");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(HEARTBEAT) => continue }
            }
        };
        if let Err(e) = l.listen_all([CHANGES, POINTS]).await {
            tracing::warn!("cannot listen for changes: {e:#}");
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(HEARTBEAT) => continue }
        }
        node.ready.store(true, Ordering::Relaxed);
        mappings.changes().notify_one();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = l.try_recv() => m,
            };
            match msg {
                Ok(Some(n)) if n.channel() == CHANGES => mappings.changes().notify_one(),
                Ok(Some(n)) => take_points(&mappings, &node.id, n.payload()),
                // The connection dropped: try_recv reconnects on the next call.
                Ok(None) => mappings.changes().notify_one(),
                Err(e) => {
                    tracing::warn!("listening for changes failed: {e:#}");
                    node.ready.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

fn take_points(mappings: &MappingService, me: &str, payload: &str) {
    let mut lines = payload.lines();
    if lines.next() == Some(me) {
        return;
    }
    for line in lines {
        let Some((id, packed)) = line.split_once(' ') else { continue };
        if let (Ok(id), Ok(p)) = (Uuid::parse_str(id), crate::store::unpack(packed)) {
            mappings.metrics().add_remote(id, p);
        }
    }
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
    fn shares_spread_the_total_and_give_each_node_one() {
        let n = Node::new();
        let ids = vec!["a".to_string(), n.id.clone(), "zzzzzzzzzzzzz".to_string()];
        n.set_members(ids);
        let all = |total| {
            let mut sum = 0;
            for who in n.members() {
                let m = Node { id: who, ..Node::new() };
                m.set_members(n.members());
                sum += m.share(total);
            }
            sum
        };
        assert_eq!(all(1), 3, "every node runs at least one consumer");
        assert_eq!(all(7), 7);
        assert_eq!(all(3), 3);
    }

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
