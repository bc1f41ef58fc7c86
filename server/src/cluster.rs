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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_app::model::NodeView;
use sqlx::Connection as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::metrics::{Metrics, POINTS};
use crate::shared::node::alive;
use crate::shared::{LiveRegistry, Shared, CHANGES};
use crate::store::{NodeRow, Store};

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Dead nodes stay listed (as not alive) this long, then are forgotten.
const FORGET_AFTER_MS: i64 = 10 * 60_000;
/// The advisory lock whose holder is the leader ("sluice" in ASCII).
const LEADER_LOCK: i64 = 0x736c_7569_6365;

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
pub fn start(shared: Shared, metrics: Arc<Metrics>, address: String) -> ClusterHandle {
    let stop = CancellationToken::new();
    let (store, node) = (&shared.store, &shared.node);
    let mut tasks = Vec::new();
    if store.is_postgres() {
        // Not the leader until the lock says so; not ready until listening.
        node.set_leader(false);
        node.set_ready(false);
        tasks.push(tokio::spawn(listen(shared.clone(), metrics, stop.clone())));
    }
    tasks.push(tokio::spawn(heartbeat(shared, address, stop.clone())));
    ClusterHandle { stop, tasks }
}

async fn heartbeat(shared: Shared, address: String, stop: CancellationToken) {
    let (store, node) = (&shared.store, &shared.node);
    let mut lock: Option<sqlx::PgConnection> = None;
    loop {
        if store.is_postgres() {
            let was = node.is_leader();
            let now = lead(store, &mut lock).await;
            node.set_leader(now);
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
            running: running(&shared.live),
        };
        // The heartbeat is the node's probe of database writes: a failure
        // makes it not ready and shows on every console page until one
        // succeeds (a full disk, a read-only file, a dropped connection).
        match beat(store, &row).await {
            Ok(alive) => {
                node.set_db_error(None);
                if node.set_members(alive) {
                    tracing::info!(node = %node.id, members = ?node.members(), "cluster membership changed");
                    shared.changes.wake();
                }
            }
            Err(e) => node.set_db_error(Some(format!("{e:#}"))),
        }
        if node.is_leader() {
            let _ = store.remove_nodes(now_ms() - FORGET_AFTER_MS, None).await;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = node.poked() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    node.set_ready(false);
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
fn running(live: &LiveRegistry) -> BTreeMap<String, u32> {
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
async fn listen(shared: Shared, metrics: Arc<Metrics>, stop: CancellationToken) {
    let node = &shared.node;
    loop {
        let mut l = match sqlx::postgres::PgListener::connect(shared.store.url()).await {
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
        node.set_ready(true);
        shared.changes.wake();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = l.try_recv() => m,
            };
            match msg {
                Ok(Some(n)) if n.channel() == CHANGES => shared.changes.wake(),
                Ok(Some(n)) => metrics.take_remote(&node.id, n.payload()),
                // The connection dropped: not ready until listening again
                // (changes sent meanwhile are caught by the wake's full
                // reconcile once it is back).
                Ok(None) => {
                    tracing::warn!("the connection listening for changes dropped; reconnecting");
                    node.set_ready(false);
                    break;
                }
                Err(e) => {
                    tracing::warn!("listening for changes failed: {e:#}");
                    node.set_ready(false);
                    break;
                }
            }
        }
    }
}
