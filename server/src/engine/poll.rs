//! Poll: one Kafka consumer in the mapping's group (a poller). It owns the
//! poll loop and hands each partition's records to that partition's
//! pipeline (`pipeline.rs`), pausing a partition whose pipeline is full so
//! the poll loop never stops (and the consumer never leaves the group).

use std::collections::{HashMap, VecDeque};
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

use super::commit::{GroupCommits, GroupState};
use super::pipeline::{self, Pipeline};
use crate::kafka_auth::KafkaAuth;
use crate::problem::{Problem, Processing};
use crate::shared::status::LiveStatus;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub auth: KafkaAuth,
    /// The schema registry's decoder (one per mapping start: its pollers
    /// share the schemas read).
    pub decoder: Option<Arc<crate::schema::Decoder>>,
}

enum GroupEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
    /// The assigned partitions' starting positions could not be looked up
    /// (the brokers did not answer in time): none were taken.
    Unresolved,
}

/// How long after an unresolved assignment the poller rejoins the group to
/// try again.
const REJOIN_AFTER: Duration = Duration::from_secs(2);

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
    commits: Arc<GroupCommits>,
    /// To keep secrets out of the status a user sees.
    auth: KafkaAuth,
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
        let problem = describe_kafka_error(&error, reason, &self.servers, &self.topic);
        report(&self.status, problem.map_text(|t| self.auth.redact(t)), false);
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
                        // Taking them now would start partitions without a
                        // commit at `auto.offset.reset`, not where the
                        // mapping says: take none and rejoin to try again.
                        tracing::warn!(?parts, "cannot look up the starting positions, rejoining: {e}");
                        self.status.problem(Problem::CommittedOffsets(e.to_string()));
                        let _ = c.assign(&TopicPartitionList::new());
                        self.commits.assigned(&[]);
                        let _ = self.events.send(GroupEvent::Unresolved);
                        return;
                    }
                };
                if let Err(e) = c.assign(tpl) {
                    self.status.problem(Problem::Assign(e.to_string()));
                }
                // A partition this consumer paused before a rebalance stays
                // paused in librdkafka; its new pipeline starts unpaused.
                let _ = c.resume(tpl);
                self.commits.assigned(&parts);
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
                self.commits.revoked(&parts);
                self.commits.flush(c, Some(&parts));
                let _ = self.events.send(GroupEvent::Revoked(parts));
                let _ = c.unassign();
            }
            other => {
                self.status.problem(Problem::Rebalance(format!("{other:?}")));
                let _ = c.unassign();
            }
        }
    }

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

/// Sets the status, unless `problem` says less than a refusal already
/// reported (the error callback's words name the cause, "invalid proof"; the
/// poll's own error for the same failure, `consuming`, says less).
fn report(status: &LiveStatus, problem: Problem, consuming: bool) {
    let generic = consuming || matches!(problem, Problem::Unreachable { .. });
    if generic && status.current().refusal().is_some() {
        return;
    }
    status.problem(problem);
}

/// Words a user can act on, for LastProcessingResult.
fn describe_kafka_error(error: &KafkaError, reason: &str, servers: &str, topic: &str) -> Problem {
    use rdkafka::types::RDKafkaErrorCode as C;
    let (servers, reason) = (servers.to_string(), reason.to_string());
    // TLS refusals (an untrusted CA, a missing client certificate) arrive
    // as transport failures; OpenSSL's words say which.
    if reason.contains("SSL routines") || reason.contains("SSL handshake failed") {
        return Problem::TlsHandshake { servers, reason };
    }
    match error.rdkafka_error_code() {
        Some(C::BrokerTransportFailure) | Some(C::AllBrokersDown) | Some(C::Resolve) => {
            Problem::Unreachable { servers, reason }
        }
        Some(C::Authentication) | Some(C::SaslAuthenticationFailed) => Problem::SaslFailed { servers, reason },
        Some(C::SSL) => Problem::TlsHandshake { servers, reason },
        Some(C::TopicAuthorizationFailed) | Some(C::GroupAuthorizationFailed) | Some(C::ClusterAuthorizationFailed) => {
            Problem::NotAuthorized { servers, reason }
        }
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => {
            Problem::NoTopic { topic: topic.to_string(), servers }
        }
        _ => Problem::Kafka { error: error.to_string(), reason },
    }
}

/// Per partition, the most record bytes held outside librdkafka before the
/// partition is paused.
const MAX_WAITING_BYTES: usize = 4 << 20;

fn size_of(m: &OwnedMessage) -> usize {
    m.payload().map_or(0, |p| p.len()) + m.key().map_or(0, |k| k.len()) + 64
}

/// A partition's pipeline as the poll loop sees it.
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

impl Worker {
    fn wait(&mut self, m: OwnedMessage) {
        self.waiting_bytes += size_of(&m);
        self.waiting.push_back(m);
    }
}

/// The consumer and everything its loop owns.
struct Poller {
    cfg: PollerConfig,
    consumer: Arc<StreamConsumer<Context>>,
    topic: String,
    servers: String,
    commits: Arc<GroupCommits>,
    pipeline: Arc<Pipeline>,
    /// Records a pipeline's channel holds before the loop keeps them itself.
    capacity: usize,
    workers: HashMap<i32, Worker>,
    /// The one commit in flight; what finishes meanwhile merges into the next.
    committing: Option<JoinHandle<()>>,
    /// When to rejoin the group after an unresolved assignment.
    rejoin_at: Option<tokio::time::Instant>,
}

/// Runs the poller until `stop`. Returns once every pipeline has finished or
/// been abandoned, and the consumer has left the group.
pub async fn run(cfg: PollerConfig, stop: CancellationToken) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let Some(mut poller) = Poller::start(cfg, events_tx) else {
        // Why not is the mapping's status until it is stopped (an edit).
        stop.cancelled().await;
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(ev) = events.recv() => poller.on_group_event(ev),
            _ = tick.tick() => poller.on_tick(),
            m = poller.consumer.recv() => match m {
                Ok(m) => poller.on_record(m.detach()),
                Err(e) => {
                    poller.on_poll_error(e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
    poller.shutdown().await;
}

impl Poller {
    /// Creates the consumer and subscribes; None (and the status says why)
    /// if either fails.
    fn start(cfg: PollerConfig, events: mpsc::UnboundedSender<GroupEvent>) -> Option<Poller> {
        let spec = &cfg.spec;
        let topic = spec.topic().to_string();
        let servers = spec.bootstrap_servers().join(",");
        let commits = Arc::new(GroupCommits::default());
        let context = Context {
            commits: commits.clone(),
            status: cfg.status.clone(),
            events,
            position: spec.starting_position,
            timestamp_ms: spec.starting_position_timestamp.map(|s| s * 1000),
            servers: servers.clone(),
            topic: topic.clone(),
            auth: cfg.auth.clone(),
        };
        let created: KafkaResult<StreamConsumer<Context>> =
            consumer_config(&cfg, &servers).create_with_context(context);
        let consumer = match created {
            Ok(c) => Arc::new(c),
            Err(e) => {
                // A client key librdkafka cannot open (a wrong key password, a
                // key that is not the certificate's) is the user's to fix.
                let text = e.to_string();
                let problem = if text.contains("ssl.key") || text.contains("ssl.certificate") {
                    Problem::ClientCertificate(text)
                } else {
                    Problem::CreateConsumer(text)
                };
                cfg.status.problem(problem.map_text(|t| cfg.auth.redact(t)));
                return None;
            }
        };
        if let Err(e) = consumer.subscribe(&[&topic]) {
            cfg.status.problem(Problem::Subscribe { topic: topic.clone(), error: e.to_string() });
            return None;
        }
        let mut pipeline = Pipeline::from_spec(spec, cfg.target.clone(), commits.clone(), cfg.status.clone());
        pipeline.destination = cfg.destination.clone();
        pipeline.decoder = cfg.decoder.clone();
        let capacity = pipeline.batch_size.max(64);
        Some(Poller {
            cfg,
            consumer,
            topic,
            servers,
            commits,
            pipeline: Arc::new(pipeline),
            capacity,
            workers: HashMap::new(),
            committing: None,
            rejoin_at: None,
        })
    }

    fn on_group_event(&mut self, ev: GroupEvent) {
        match ev {
            GroupEvent::Assigned(parts) => {
                tracing::info!(mapping = %self.cfg.id, ?parts, "partitions assigned");
                if matches!(self.cfg.status.current(), Processing::Problem(p) if p.about_the_brokers()) {
                    self.cfg.status.ok();
                }
            }
            GroupEvent::Unresolved => self.rejoin_at = Some(tokio::time::Instant::now() + REJOIN_AFTER),
            GroupEvent::Revoked(parts) => {
                tracing::info!(mapping = %self.cfg.id, ?parts, "partitions revoked");
                // The new owner re-reads from the committed offset.
                for p in &parts {
                    if let Some(w) = self.workers.remove(p) {
                        w.stop.cancel();
                        w.task.abort();
                    }
                }
                self.commits.forget(&parts);
            }
        }
    }

    /// Every 10 ms: unless the group is rebalancing, move waiting records
    /// on and commit what finished.
    fn on_tick(&mut self) {
        let now = tokio::time::Instant::now();
        if self.rejoin_at.is_some_and(|t| now >= t) {
            self.rejoin_at = None;
            // Leaving and joining again makes the group assign anew (and
            // the rebalance callback look the positions up again).
            let (c, topic) = (&self.consumer, &self.topic);
            off_the_runtime(|| {
                c.unsubscribe();
                if let Err(e) = c.subscribe(&[topic]) {
                    self.cfg.status.problem(Problem::Subscribe { topic: topic.clone(), error: e.to_string() });
                }
            });
        }
        if let GroupState::Rebalancing { .. } = self.commits.state() {
            self.commits.give_up_waiting(now, SESSION_TIMEOUT);
            return;
        }
        self.refill();
        if self.committing.as_ref().is_none_or(|t| t.is_finished()) {
            if let Some(t) = self.commits.commit_in_background(&self.consumer) {
                self.committing = Some(t);
            }
        }
    }

    fn on_record(&mut self, m: OwnedMessage) {
        let p = m.partition();
        let (pipeline, topic, capacity) = (&self.pipeline, &self.topic, self.capacity);
        let w = self.workers.entry(p).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(capacity);
            let stop = CancellationToken::new();
            let run = pipeline::run(pipeline.clone(), topic.clone(), p, rx, stop.clone());
            let task = tokio::spawn(tracing::Instrument::in_current_span(run));
            Worker { tx, waiting: VecDeque::new(), waiting_bytes: 0, paused: false, stop, task }
        });
        // The group's state is read only when the record could go straight in.
        if w.waiting.is_empty() && self.commits.state() == GroupState::Settled {
            if let Err(mpsc::error::TrySendError::Full(m)) = w.tx.try_send(m) {
                w.wait(m);
            }
        } else {
            w.wait(m);
            // Pausing makes librdkafka drop what it prefetched and fetch it
            // again on resume (costly: it cut throughput to a third in the
            // benchmark), so only past a bound.
            if !w.paused && (w.waiting.len() >= capacity * 10 || w.waiting_bytes >= MAX_WAITING_BYTES) {
                set_paused(&self.consumer, topic, p, true);
                w.paused = true;
            }
        }
    }

    fn on_poll_error(&self, e: KafkaError) {
        let problem = describe_kafka_error(&e, &e.to_string(), &self.servers, &self.topic);
        let consuming = matches!(e, KafkaError::MessageConsumption(_));
        report(&self.cfg.status, problem.map_text(|t| self.cfg.auth.redact(t)), consuming);
    }

    /// Moves waiting records into their pipelines as room appears, and
    /// resumes partitions that caught up.
    fn refill(&mut self) {
        for (p, w) in self.workers.iter_mut() {
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
                set_paused(&self.consumer, &self.topic, *p, false);
                w.paused = false;
            }
        }
    }

    /// Stops taking records; lets in-flight invocations finish (and commit)
    /// within the grace period, abandons the rest uncommitted, commits what
    /// finished and leaves the group.
    async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + self.cfg.grace;
        for w in self.workers.values() {
            w.stop.cancel();
        }
        for (_, w) in self.workers.drain() {
            let mut task = w.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        // Only finished offsets are committed (never the consumer's position).
        // Closing the consumer (leaving the group) blocks: not on the runtime.
        drop(self.pipeline);
        if let Some(t) = self.committing {
            let _ = t.await;
        }
        let (consumer, commits) = (self.consumer, self.commits);
        let _ = tokio::task::spawn_blocking(move || {
            commits.flush(&*consumer, None);
            drop(consumer);
        })
        .await;
    }
}

fn consumer_config(cfg: &PollerConfig, servers: &str) -> ClientConfig {
    let spec = &cfg.spec;
    let mut config = ClientConfig::new();
    // librdkafka's own debug contexts (e.g. `broker,cgrp,protocol`), for
    // connection trouble; they are logged at debug level (SLUICE_LOG).
    if let Ok(contexts) = std::env::var("SLUICE_KAFKA_DEBUG") {
        config.set("debug", contexts);
    }
    cfg.auth
        .apply(&mut config)
        .set("bootstrap.servers", servers)
        .set("group.id", spec.group_for(cfg.id))
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
        .set("partition.assignment.strategy", "range,roundrobin");
    config
}

fn set_paused(consumer: &StreamConsumer<Context>, topic: &str, partition: i32, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let r = if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    if let Err(e) = r {
        tracing::warn!(topic, partition, paused, "pause/resume failed: {e}");
    }
}
