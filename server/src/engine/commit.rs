//! Commit: finished offsets back to the consumer group. Pipelines report
//! through `Committer` (Kafka, or a test's memory); the Kafka side keeps the
//! offsets in `GroupCommits` until the poll loop commits them (one commit in
//! flight, every partition's offsets merged into it) or a revocation does.
//! An offset is committed only once everything before it was invoked
//! successfully, sent to the failure destination, or dropped by a rule the
//! user set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long after a failed commit the next is tried.
const COMMIT_RETRY: Duration = Duration::from_secs(1);

/// Where finished offsets go: the consumer group in Kafka, or a test's memory.
pub trait Committer: Send + Sync {
    /// Records before `next_offset` are done.
    fn commit(&self, topic: &str, partition: i32, next_offset: i64);
}

/// Whether the group lets this consumer start new batches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupState {
    Settled,
    /// A commit came back "rebalance in progress": the group is about to
    /// take partitions away, so no new batch starts until it has
    /// (everything invoked now would be invoked again by the next owner).
    Rebalancing {
        since: Instant,
    },
}

/// One consumer's view of its group, changed by the poll loop, the
/// rebalance callback and the commit thread under one lock: a refused
/// commit's offsets must be back in `pending` before a revocation commits it.
struct Group {
    /// Finished offsets not yet committed.
    pending: HashMap<(String, i32), i64>,
    /// Partitions this consumer owns (a refused commit is kept only for these).
    owned: HashSet<i32>,
    /// Counts assignments and revocations: a commit answered after one of
    /// them speaks of a rebalance that is already over.
    generation: u64,
    state: GroupState,
    /// After a failed commit, the next waits until then (and only the
    /// first failure of a streak is logged as a warning).
    retry_at: Option<Instant>,
}

pub struct GroupCommits(Mutex<Group>);

impl Default for GroupCommits {
    fn default() -> Self {
        GroupCommits(Mutex::new(Group {
            pending: HashMap::new(),
            owned: HashSet::new(),
            generation: 0,
            state: GroupState::Settled,
            retry_at: None,
        }))
    }
}

impl Committer for GroupCommits {
    fn commit(&self, topic: &str, partition: i32, next_offset: i64) {
        self.lock().pending.insert((topic.to_string(), partition), next_offset);
    }
}

impl GroupCommits {
    fn lock(&self) -> MutexGuard<'_, Group> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> GroupState {
        self.lock().state
    }

    /// The group gave this consumer `parts`: it has settled.
    pub fn assigned(&self, parts: &[i32]) {
        let mut g = self.lock();
        g.owned.extend(parts.iter().copied());
        g.generation += 1;
        g.state = GroupState::Settled;
    }

    /// The group took `parts` away (their offsets are flushed first).
    pub fn revoked(&self, parts: &[i32]) {
        let mut g = self.lock();
        g.owned.retain(|p| !parts.contains(p));
        g.generation += 1;
    }

    /// Forgets what finished on `parts` after their revocation's commit: it
    /// could move the next owner's offset back.
    pub fn forget(&self, parts: &[i32]) {
        self.lock().pending.retain(|(_, p), _| !parts.contains(p));
    }

    /// Stops waiting for a revocation that did not come within `limit`.
    pub fn give_up_waiting(&self, now: Instant, limit: Duration) {
        let mut g = self.lock();
        if let GroupState::Rebalancing { since } = g.state {
            if now - since > limit {
                g.state = GroupState::Settled;
            }
        }
    }

    /// Clears the pending offsets of `only` partitions (all: None) and returns them.
    pub fn take(&self, only: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        self.lock().pending.retain(|(t, p), o| {
            if only.is_some_and(|ps| !ps.contains(p)) {
                return true;
            }
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            false
        });
        tpl
    }

    /// A commit of `tpl` started at `generation` failed: keep the offsets
    /// of partitions still owned for the next commit or the revocation (a
    /// broker away loses no finished offset, so fewer records come again
    /// after it returns). If the group is rebalancing, start no new batch
    /// until it settles.
    fn refused(&self, generation: u64, tpl: &TopicPartitionList, rebalancing: bool) {
        let mut g = self.lock();
        if g.generation != generation {
            return;
        }
        if rebalancing && g.state == GroupState::Settled {
            g.state = GroupState::Rebalancing { since: Instant::now() };
        }
        for el in tpl.elements() {
            if let (true, Offset::Offset(o)) = (g.owned.contains(&el.partition()), el.offset()) {
                let at = g.pending.entry((el.topic().to_string(), el.partition())).or_insert(o);
                *at = (*at).max(o);
            }
        }
    }

    /// Commits (synchronously: the caller waits for it) and clears the
    /// pending offsets of `only` partitions (all: None).
    pub fn flush<C: ConsumerContext>(&self, c: &impl Consumer<C>, only: Option<&[i32]>) {
        let tpl = self.take(only);
        if tpl.count() > 0 {
            if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
                tracing::warn!("commit of {:?} failed: {e}", tpl.to_topic_map());
            }
        }
    }

    /// Commits what is pending off the runtime (a synchronous commit is the
    /// one that reports why it failed); None when nothing is.
    pub fn commit_in_background<C, K>(self: &Arc<Self>, consumer: &Arc<K>) -> Option<JoinHandle<()>>
    where
        C: ConsumerContext + 'static,
        K: Consumer<C> + Send + Sync + 'static,
    {
        if self.lock().retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let tpl = self.take(None);
        if tpl.count() == 0 {
            return None;
        }
        let (c, me) = (consumer.clone(), self.clone());
        let span = tracing::Span::current();
        Some(tokio::task::spawn_blocking(move || {
            let _mapping = span.enter();
            let generation = me.lock().generation;
            let Err(e) = c.commit(&tpl, CommitMode::Sync) else {
                me.lock().retry_at = None;
                return;
            };
            use rdkafka::types::RDKafkaErrorCode as E;
            let rebalancing =
                matches!(e.rdkafka_error_code(), Some(E::RebalanceInProgress) | Some(E::IllegalGeneration));
            me.refused(generation, &tpl, rebalancing);
            let first = me.lock().retry_at.replace(Instant::now() + COMMIT_RETRY).is_none();
            if rebalancing || !first {
                tracing::debug!("commit deferred: {e}");
            } else {
                tracing::warn!("commit of {:?} failed, kept to retry every second: {e}", tpl.to_topic_map());
            }
        }))
    }
}
