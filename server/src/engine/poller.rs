//! A poller: one Kafka consumer in the mapping's group. It owns the poll
//! loop and hands each partition's records to that partition's pipeline
//! (`partition.rs`), pausing a partition whose pipeline is full so the poll
//! loop never stops (and the consumer never leaves the group).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use sluice_app::spec::{MappingSpec, StartingPosition};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::partition::{self, Committer, Pipeline};
use super::status::LiveStatus;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

enum GroupEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer's callbacks: errors become the mapping's status; on
/// assignment, partitions without a committed offset start where the spec
/// says and that position is committed at once, so a restart (an edit, a
/// crash) continues from it instead of applying LATEST again.
struct Context {
    status: Arc<LiveStatus>,
    events: mpsc::UnboundedSender<GroupEvent>,
    position: StartingPosition,
    timestamp_ms: Option<i64>,
    servers: String,
    topic: String,
    pending: Pending,
    /// To keep secrets out of the status a user sees.
    auth: crate::kafka_auth::KafkaAuth,
    /// Partitions this consumer owns (a failed commit is retried only for these).
    owned: std::sync::Mutex<HashSet<i32>>,
    /// Set when a commit came back "rebalance in progress": the group is
    /// about to take partitions away, so no new batch starts until it has
    /// (everything invoked now would be invoked again by the next owner).
    rebalancing: Arc<AtomicBool>,
    /// Counts assignments and revocations: a commit answered after one of
    /// them speaks of a rebalance that is already over.
    generation: std::sync::atomic::AtomicU64,
}

impl ClientContext for Context {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.auth.oauth_token()
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let said = self.auth.redact(&format!("{error}: {reason}"));
        tracing::warn!("kafka: {said}");
        report(&self.status, self.auth.redact(&describe_kafka_error(&error, reason, &self.servers, &self.topic)));
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        // librdkafka calls this from the poll, on a tokio worker, and it
        // blocks (offset look-ups, the revocation's commit: seconds on a
        // slow coordinator). Tasks queued on that worker must not wait
        // for it: they may be what the coordinator's answer depends on.
        off_the_runtime(|| self.on_rebalance(c, err, tpl));
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!("commit of {:?} failed: {e}", offsets.to_topic_map());
        }
    }
}

/// Runs blocking work from a librdkafka callback; on a multi-thread runtime
/// the worker's queued tasks move to another thread meanwhile.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Context {
    fn on_rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let pinned = match self.resolve_starts(c, tpl) {
                    Ok(p) => p,
                    Err(e) => {
                        self.status.set(format!("PROBLEM: cannot read the group's committed offsets: {e}"));
                        TopicPartitionList::new()
                    }
                };
                if let Err(e) = c.assign(tpl) {
                    self.status.set(format!("PROBLEM: cannot take the assigned partitions: {e}"));
                }
                // A partition this consumer paused before a rebalance stays
                // paused in librdkafka; its new pipeline starts unpaused.
                let _ = c.resume(tpl);
                self.owned.lock().unwrap_or_else(|e| e.into_inner()).extend(parts.iter().copied());
                self.generation.fetch_add(1, Ordering::Relaxed);
                self.rebalancing.store(false, Ordering::Relaxed);
                if pinned.count() > 0 {
                    if let Err(e) = c.commit(&pinned, CommitMode::Async) {
                        tracing::warn!("cannot commit the starting positions: {e}");
                    }
                }
                let _ = self.events.send(GroupEvent::Assigned(parts));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // What finished on these partitions is committed before the
                // next owner reads them.
                self.owned.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| !parts.contains(p));
                self.generation.fetch_add(1, Ordering::Relaxed);
                flush(c, &self.pending, Some(&parts));
                let _ = self.events.send(GroupEvent::Revoked(parts));
                let _ = c.unassign();
            }
            other => {
                self.status.set(format!("PROBLEM: consumer group rebalance failed: {other:?}"));
                let _ = c.unassign();
            }
        }
    }
}

/// Runs one commit off the runtime (a synchronous commit is the one that
/// reports why it failed). "Rebalance in progress" keeps the offsets, to be
/// committed when the revocation comes, and holds new batches back until the
/// group has settled: what starts now would be invoked again by the next owner.
fn commit_in_background(consumer: &Arc<StreamConsumer<Context>>, tpl: TopicPartitionList) -> JoinHandle<()> {
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || {
        let generation = c.context().generation.load(Ordering::Relaxed);
        let Err(e) = c.commit(&tpl, CommitMode::Sync) else { return };
        use rdkafka::types::RDKafkaErrorCode as C;
        if !matches!(e.rdkafka_error_code(), Some(C::RebalanceInProgress) | Some(C::IllegalGeneration)) {
            tracing::warn!("commit of {:?} failed: {e}", tpl.to_topic_map());
            return;
        }
        let cx = c.context();
        if cx.generation.load(Ordering::Relaxed) != generation {
            return;
        }
        cx.rebalancing.store(true, Ordering::Relaxed);
        let owned = cx.owned.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = cx.pending.lock().unwrap_or_else(|e| e.into_inner());
        for el in tpl.elements() {
            if let (true, Offset::Offset(o)) = (owned.contains(&el.partition()), el.offset()) {
                let at = pending.entry((el.topic().to_string(), el.partition())).or_insert(o);
                *at = (*at).max(o);
            }
        }
        tracing::debug!("commit deferred, the group is rebalancing: {e}");
    })
}

impl Context {
    /// Sets the start of every assigned partition that has no committed
    /// offset; returns those positions to commit.
    fn resolve_starts(&self, c: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> KafkaResult<TopicPartitionList> {
        let committed = c.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT)?;
        let mut pinned = TopicPartitionList::new();
        let fresh: Vec<(String, i32)> = committed
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let by_time = match (self.position, self.timestamp_ms) {
            (StartingPosition::AtTimestamp, Some(ts)) if !fresh.is_empty() => {
                let mut q = TopicPartitionList::new();
                for (t, p) in &fresh {
                    q.add_partition_offset(t, *p, Offset::Offset(ts))?;
                }
                Some(c.offsets_for_times(q, LOOKUP_TIMEOUT)?)
            }
            _ => None,
        };
        for (topic, p) in fresh {
            let (low, high) = c.fetch_watermarks(&topic, p, LOOKUP_TIMEOUT)?;
            let start = match self.position {
                StartingPosition::TrimHorizon => low,
                StartingPosition::Latest => high,
                StartingPosition::AtTimestamp => {
                    // No record at or after the time: start at the end.
                    match by_time.as_ref().and_then(|r| r.find_partition(&topic, p)).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 => o.clamp(low, high),
                        _ => high,
                    }
                }
            };
            tpl.set_partition_offset(&topic, p, Offset::Offset(start))?;
            pinned.add_partition_offset(&topic, p, Offset::Offset(start))?;
        }
        Ok(pinned)
    }
}

/// A refusal by the brokers (credentials, certificates, ACLs): the reason
/// a user must act on, which the disconnects that follow it must not hide.
fn access_problem(result: &str) -> bool {
    crate::kafka_auth::refusal_reason(result).is_some()
}

fn report(status: &LiveStatus, result: String) {
    // The error callback's words name the cause ("invalid proof"); the
    // poll's own error for the same failure says less.
    let generic = result.starts_with("PROBLEM: Connection error") || result.contains("Message consumption error");
    if generic && access_problem(&status.get()) {
        return;
    }
    status.set(result);
}

/// Words a user can act on, for LastProcessingResult.
fn describe_kafka_error(error: &KafkaError, reason: &str, servers: &str, topic: &str) -> String {
    use rdkafka::types::RDKafkaErrorCode as C;
    // TLS refusals (an untrusted CA, a missing client certificate) arrive
    // as transport failures; OpenSSL's words say which.
    if reason.contains("SSL routines") || reason.contains("SSL handshake failed") {
        return format!("PROBLEM: TLS handshake with the brokers failed ({servers}): {reason}");
    }
    match error.rdkafka_error_code() {
        Some(C::BrokerTransportFailure) | Some(C::AllBrokersDown) | Some(C::Resolve) => {
            format!("PROBLEM: Connection error: cannot reach the Kafka brokers ({servers}): {reason}")
        }
        Some(C::Authentication) | Some(C::SaslAuthenticationFailed) => {
            format!("PROBLEM: SASL authentication failed ({servers}): {reason}")
        }
        Some(C::SSL) => format!("PROBLEM: TLS handshake with the brokers failed ({servers}): {reason}"),
        Some(C::TopicAuthorizationFailed) | Some(C::GroupAuthorizationFailed) | Some(C::ClusterAuthorizationFailed) => {
            format!("PROBLEM: Not authorized: the brokers refused access ({servers}): {reason}")
        }
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => {
            format!("PROBLEM: Topic `{topic}` does not exist on {servers}")
        }
        _ => format!("PROBLEM: Kafka error: {error}: {reason}"),
    }
}

/// Finished offsets waiting to be committed, shared by the pipelines (which
/// add to it), the poll loop (which flushes it on every tick) and the
/// rebalance callback (which commits a revoked partition's offsets before
/// letting it go). Committing on the loop's 10 ms tick (one commit in
/// flight) merges the commits of all partitions into one request while
/// adding little lag.
type Pending = Arc<std::sync::Mutex<HashMap<(String, i32), i64>>>;

struct PendingCommitter(Pending);

impl Committer for PendingCommitter {
    fn commit(&self, topic: &str, partition: i32, next_offset: i64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert((topic.to_string(), partition), next_offset);
    }
}

/// Commits (synchronously: the caller waits for it) and clears the pending
/// offsets of `only` partitions (all: None).
fn flush<C: ConsumerContext>(c: &impl Consumer<C>, pending: &Pending, only: Option<&[i32]>) {
    let tpl = take(pending, only);
    if tpl.count() > 0 {
        if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
            tracing::warn!("commit of {:?} failed: {e}", tpl.to_topic_map());
        }
    }
}

/// Clears the pending offsets of `only` partitions (all: None) and returns them.
fn take(pending: &Pending, only: Option<&[i32]>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    {
        let mut map = pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(t, p), o| {
            if only.is_some_and(|ps| !ps.contains(p)) {
                return true;
            }
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            false
        });
    }
    tpl
}

/// Per partition, the most record bytes held outside librdkafka before the
/// partition is paused.
const MAX_WAITING_BYTES: usize = 4 << 20;

fn size_of(m: &OwnedMessage) -> usize {
    m.payload().map_or(0, |p| p.len()) + m.key().map_or(0, |k| k.len()) + 64
}

struct Worker {
    tx: mpsc::Sender<OwnedMessage>,
    /// Records that did not fit the channel yet; past a bound the partition
    /// is paused until they are all in.
    waiting: VecDeque<OwnedMessage>,
    waiting_bytes: usize,
    paused: bool,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Clone)]
pub struct PollerConfig {
    pub id: uuid::Uuid,
    pub spec: MappingSpec,
    pub target: Arc<dyn super::target::Target>,
    pub destination: Option<Arc<dyn super::destination::Destination>>,
    pub status: Arc<LiveStatus>,
    /// How long a stopping poller lets in-flight invocations finish.
    pub grace: Duration,
    /// Which of the mapping's pollers this is (for its client id).
    pub index: u32,
    /// How its consumers sign in (secrets resolved, MSK IAM credentials loaded).
    pub auth: crate::kafka_auth::KafkaAuth,
}

/// Runs the poller until `stop`. Returns once every pipeline has finished or
/// been abandoned, and the consumer has left the group.
pub async fn run(cfg: PollerConfig, stop: CancellationToken) {
    let spec = &cfg.spec;
    let topic = spec.topic().to_string();
    let group = spec.group_for(cfg.id);
    let servers = spec.bootstrap_servers().join(",");
    let auth = cfg.auth.clone();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let pending: Pending = Default::default();
    let rebalancing = Arc::new(AtomicBool::new(false));
    // When the group last said it was rebalancing (to give up waiting for a
    // revocation that never comes).
    let mut rebalancing_since: Option<tokio::time::Instant> = None;
    let mut committing: Option<JoinHandle<()>> = None;
    let context = Context {
        pending: pending.clone(),
        status: cfg.status.clone(),
        events: events_tx,
        position: spec.starting_position,
        timestamp_ms: spec.starting_position_timestamp.map(|s| s * 1000),
        servers: servers.clone(),
        topic: topic.clone(),
        owned: Default::default(),
        auth: auth.clone(),
        rebalancing: rebalancing.clone(),
        generation: Default::default(),
    };
    let mut config = ClientConfig::new();
    // librdkafka's own debug contexts (e.g. `broker,cgrp,protocol`), for
    // connection trouble; they are logged at debug level (SLUICE_LOG).
    if let Ok(contexts) = std::env::var("SLUICE_KAFKA_DEBUG") {
        config.set("debug", contexts);
    }
    let consumer: StreamConsumer<Context> = match auth
        .apply(&mut config)
        .set("bootstrap.servers", &servers)
        .set("group.id", &group)
        .set("client.id", format!("sluice-{}-{}", cfg.id, cfg.index))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
        // Heartbeats are how a member learns of a rebalance: sooner means
        // fewer batches started that the next owner will read again.
        .set("heartbeat.interval.ms", "1000")
        // Window 0 asks for the lowest latency: brokers that do not answer a
        // fetch early when data arrives would otherwise add their wait.
        .set("fetch.wait.max.ms", if spec.maximum_batching_window_in_seconds == Some(0) { "10" } else { "100" })
        .set("socket.nagle.disable", "true")
        // Bounds what librdkafka prefetches (memory follows the batch size,
        // not the backlog).
        .set("queued.max.messages.kbytes", "16384")
        .set("partition.assignment.strategy", "range,roundrobin")
        .create_with_context(context)
    {
        Ok(c) => c,
        Err(e) => {
            // A client key librdkafka cannot open (a wrong key password, a
            // key that is not the certificate's) is the user's to fix.
            let text = e.to_string();
            let said = if text.contains("ssl.key") || text.contains("ssl.certificate") {
                format!("PROBLEM: Cannot use the client certificate or key: {text}")
            } else {
                format!("PROBLEM: cannot create the Kafka consumer: {text}")
            };
            cfg.status.set(auth.redact(&said));
            stop.cancelled().await;
            return;
        }
    };
    let consumer = Arc::new(consumer);
    if let Err(e) = consumer.subscribe(&[&topic]) {
        cfg.status.set(format!("PROBLEM: cannot subscribe to {topic}: {e}"));
        stop.cancelled().await;
        return;
    }
    let mut pipeline =
        Pipeline::from_spec(spec, cfg.target.clone(), Arc::new(PendingCommitter(pending.clone())), cfg.status.clone());
    pipeline.destination = cfg.destination.clone();
    let pipeline = Arc::new(pipeline);
    let capacity = pipeline.batch_size.max(64);
    let mut workers: HashMap<i32, Worker> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(ev) = events.recv() => match ev {
                GroupEvent::Assigned(parts) => {
                    tracing::info!(mapping = %cfg.id, ?parts, "partitions assigned");
                    let last = cfg.status.get();
                    if last.starts_with("PROBLEM: Connection") || last.starts_with("PROBLEM: Topic") || access_problem(&last) {
                        cfg.status.set("OK");
                    }
                }
                GroupEvent::Revoked(parts) => {
                    tracing::info!(mapping = %cfg.id, ?parts, "partitions revoked");
                    // The new owner re-reads from the committed offset.
                    for p in &parts {
                        if let Some(w) = workers.remove(p) {
                            w.stop.cancel();
                            w.task.abort();
                        }
                    }
                    // A batch that finished after the revocation's commit must
                    // not commit now: it could move the next owner's offset back.
                    pending.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, p), _| !parts.contains(p));
                }
            },
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let held = rebalancing.load(Ordering::Relaxed);
                rebalancing_since = held.then(|| rebalancing_since.unwrap_or(now));
                if rebalancing_since.is_some_and(|t| now - t > SESSION_TIMEOUT) {
                    rebalancing.store(false, Ordering::Relaxed);
                }
                if !held {
                    refill(&consumer, &topic, &mut workers);
                    // One commit at a time; what finishes meanwhile merges into the next.
                    if committing.as_ref().is_none_or(|t| t.is_finished()) {
                        let tpl = take(&pending, None);
                        if tpl.count() > 0 {
                            committing = Some(commit_in_background(&consumer, tpl));
                        }
                    }
                }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    let m = m.detach();
                    let p = m.partition();
                    let w = workers.entry(p).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(capacity);
                        let stop = CancellationToken::new();
                        let task = tokio::spawn(partition::run(pipeline.clone(), topic.clone(), p, rx, stop.clone()));
                        Worker { tx, waiting: VecDeque::new(), waiting_bytes: 0, paused: false, stop, task }
                    });
                    if w.waiting.is_empty() && !rebalancing.load(Ordering::Relaxed) {
                        if let Err(mpsc::error::TrySendError::Full(m)) = w.tx.try_send(m) {
                            w.wait(m);
                        }
                    } else {
                        w.wait(m);
                        // Pausing makes librdkafka drop what it prefetched and
                        // fetch it again on resume (costly: it cut throughput
                        // to a third in the benchmark), so only past a bound.
                        if !w.paused && (w.waiting.len() >= capacity * 10 || w.waiting_bytes >= MAX_WAITING_BYTES) {
                            set_paused(&consumer, &topic, p, true);
                            w.paused = true;
                        }
                    }
                }
                Err(e) => {
                    report(&cfg.status, auth.redact(&describe_kafka_error(&e, &e.to_string(), &servers, &topic)));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }

    // Stop taking records; let in-flight invocations finish (and commit)
    // within the grace period, then abandon the rest uncommitted.
    let deadline = tokio::time::Instant::now() + cfg.grace;
    for w in workers.values() {
        w.stop.cancel();
    }
    for (_, w) in workers.drain() {
        let mut task = w.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
    // Only finished offsets are committed (never the consumer's position).
    // Closing the consumer (leaving the group) blocks: not on the runtime.
    drop(pipeline);
    if let Some(t) = committing {
        let _ = t.await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        flush(&*consumer, &pending, None);
        drop(consumer);
    })
    .await;
}

impl Worker {
    fn wait(&mut self, m: OwnedMessage) {
        self.waiting_bytes += size_of(&m);
        self.waiting.push_back(m);
    }
}

/// Moves waiting records into their pipelines as room appears, and resumes
/// partitions that caught up.
fn refill(consumer: &StreamConsumer<Context>, topic: &str, workers: &mut HashMap<i32, Worker>) {
    for (p, w) in workers.iter_mut() {
        while let Some(m) = w.waiting.pop_front() {
            let size = size_of(&m);
            match w.tx.try_send(m) {
                Ok(()) => w.waiting_bytes -= size,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    w.waiting.push_front(m);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    w.waiting.clear();
                    w.waiting_bytes = 0;
                    break;
                }
            }
        }
        if w.waiting.is_empty() && w.paused {
            set_paused(consumer, topic, *p, false);
            w.paused = false;
        }
    }
}

fn set_paused(consumer: &StreamConsumer<Context>, topic: &str, partition: i32, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let r = if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    if let Err(e) = r {
        tracing::warn!(topic, partition, paused, "pause/resume failed: {e}");
    }
}
