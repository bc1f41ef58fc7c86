//! The handles every long-lived part of a node shares, built once in `main`
//! and passed down: the database, this node's identity, what running
//! mappings report, the mappings held stopped, the change signal and the
//! node's AWS configuration. Nothing here starts work of its own.

pub mod node;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

pub use node::Node;
use status::LiveStatus;

use crate::aws::NodeAws;
use crate::store::Store;

/// What each running mapping reports, by mapping: written by the engine,
/// read by metrics, the cluster heartbeat and the HTTP side.
pub type LiveRegistry = Arc<Mutex<HashMap<Uuid, Arc<LiveStatus>>>>;

/// Mappings whose pollers must stay stopped for now (an offset reset is
/// being committed), whatever their spec says.
pub type Holds = Arc<Mutex<HashSet<Uuid>>>;

/// The PostgreSQL channel saved changes are announced on: payload is the
/// mapping's UUID (or empty).
pub const CHANGES: &str = "sluice_changes";

/// Wakes this node's reconciler and, through the database, every other
/// node's.
#[derive(Clone)]
pub struct Changes {
    wake: Arc<Notify>,
    store: Store,
}

impl Changes {
    pub fn new(store: Store) -> Changes {
        Changes { wake: Arc::new(Notify::new()), store }
    }

    /// Wakes this node's reconciler only.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes this node's reconciler and every other node's (NOTIFY). A
    /// failed NOTIFY is logged: the others' periodic pass picks it up.
    pub async fn publish(&self, id: Option<Uuid>) {
        self.wake();
        let payload = id.map(|i| i.to_string()).unwrap_or_default();
        if let Err(e) = self.store.notify(CHANGES, &payload).await {
            tracing::warn!("cannot tell the other nodes about a change: {e:#}");
        }
    }

    /// Returns at the next wake.
    pub async fn notified(&self) {
        self.wake.notified().await
    }
}

#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub node: Arc<Node>,
    pub live: LiveRegistry,
    pub holds: Holds,
    pub changes: Changes,
    pub aws: NodeAws,
}

impl Shared {
    pub fn new(store: Store) -> Shared {
        Shared {
            changes: Changes::new(store.clone()),
            store,
            node: Arc::new(Node::new()),
            live: Default::default(),
            holds: Default::default(),
            aws: Default::default(),
        }
    }
}
