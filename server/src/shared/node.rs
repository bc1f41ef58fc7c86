//! This process as a member of the cluster: its identity, whether it leads
//! and is ready, and its share of a mapping's pollers. `cluster` keeps it
//! up to date; everything else reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::store::NodeRow;

/// A node not heard from for this long is counted out: its share of
/// pollers goes to the others and its holds stop counting.
pub const DEAD_AFTER_MS: i64 = 10_000;

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
    /// Why the database refuses this node's writes, and since when (ms);
    /// set and cleared by the heartbeat, which writes every 2 s.
    db_error: Mutex<Option<(String, i64)>>,
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
            db_error: Mutex::new(None),
        }
    }

    /// Records whether the last write reached the database: None, it did.
    /// Logged once when writes start failing and once when they recover.
    pub fn set_db_error(&self, error: Option<String>) {
        let mut cur = self.db_error.lock().unwrap_or_else(|e| e.into_inner());
        match (cur.as_ref(), error) {
            (None, Some(e)) => {
                tracing::error!(node = %self.id, "the database refuses writes: {e}");
                *cur = Some((e, now_ms()));
            }
            (Some((_, since)), Some(e)) => *cur = Some((e, *since)),
            (Some((_, since)), None) => {
                tracing::warn!(node = %self.id, "the database takes writes again after {} s", (now_ms() - since) / 1000);
                *cur = None;
            }
            (None, None) => {}
        }
    }

    /// Why the database refuses writes, and for how many seconds it has.
    pub fn db_error(&self) -> Option<(String, i64)> {
        let cur = self.db_error.lock().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().map(|(e, since)| (e.clone(), (now_ms() - since) / 1000))
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Can take traffic: the database took the last heartbeat's write and,
    /// on PostgreSQL, this node listens for changes. False while stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.db_error.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// Shutting down: not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Wakes the heartbeat early (this node's pollers changed).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Returns when `poke` was called.
    pub async fn poked(&self) {
        self.poke.notified().await
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
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

    /// Sets the alive nodes; true if they changed.
    pub fn set_members(&self, mut ids: Vec<String>) -> bool {
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
}
