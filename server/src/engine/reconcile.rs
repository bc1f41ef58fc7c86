//! Reconcile: the stored specs become running pollers. A pass starts what
//! is enabled and not running, stops what was deleted, disabled, changed
//! or held (in the background: one slow function's grace period never
//! delays another mapping), settles each mapping's state, and follows the
//! autoscaler's share for this node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_app::model::{MappingState, MappingStatus};
use sluice_app::spec::MappingSpec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{destination, lag, poll, scaler, target, EngineSettings, StartError};
use crate::problem::{Problem, Processing};
use crate::shared::node::alive;
use crate::shared::status::LiveStatus;
use crate::shared::{Changes, Holds, LiveRegistry, Node, Shared};
use crate::store::Store;
use sluice_app::metrics::Counter;

struct Running {
    version: i64,
    /// Stops every poller of the mapping and its lag reader.
    stop: CancellationToken,
    /// The pollers, oldest first; each a consumer in the mapping's group.
    pollers: Vec<(CancellationToken, JoinHandle<()>)>,
    /// Pollers told to stop that may still be finishing their batches.
    draining: Vec<JoinHandle<()>>,
    status: Arc<LiveStatus>,
    /// What a new poller is started with.
    template: poll::PollerConfig,
    scaler: scaler::Scaler,
    started: u32,
}

impl Running {
    fn add_poller(&mut self) {
        let stop = self.stop.child_token();
        let mut cfg = self.template.clone();
        cfg.index = self.started;
        self.started += 1;
        let span = crate::mapping_span!(cfg.id);
        self.pollers.push((stop.clone(), tokio::spawn(poll::run(cfg, stop).instrument(span))));
        self.status.pollers.store(self.pollers.len() as u64, Ordering::Relaxed);
    }

    fn remove_poller(&mut self) {
        if let Some((stop, task)) = self.pollers.pop() {
            stop.cancel();
            self.draining.push(task);
        }
        self.draining.retain(|t| !t.is_finished());
        self.status.pollers.store(self.pollers.len() as u64, Ordering::Relaxed);
    }

    /// Stops everything; returns once every poller has finished.
    async fn shutdown(self) {
        self.stop.cancel();
        let tasks = self.pollers.into_iter().map(|(_, t)| t).chain(self.draining);
        futures::future::join_all(tasks).await;
    }

    /// One step of the autoscaler over the cluster's `total` pollers of the
    /// mapping: the new total if it should change.
    fn scale(&mut self, id: Uuid, total: u32) -> Option<u32> {
        let lag = self.status.lag();
        let sum = (!lag.is_empty()).then(|| lag.iter().map(|l| l.offset_lag).sum::<i64>());
        let now = std::time::Instant::now();
        self.scaler.observe(now, sum, self.status.total(Counter::Throttles));
        let p = self.template.spec.provisioned_poller_config.as_ref();
        let limits =
            scaler::Limits::new(p.and_then(|p| p.minimum_pollers), p.and_then(|p| p.maximum_pollers), lag.len());
        match self.scaler.decide(now, total as usize, limits) {
            scaler::Decision::Hold => None,
            scaler::Decision::Up(why) => {
                tracing::info!(mapping = %id, pollers = total + 1, "poller added: {why}");
                Some(total + 1)
            }
            scaler::Decision::Down(why) => {
                tracing::info!(mapping = %id, pollers = total - 1, "poller removed: {why}");
                Some(total - 1)
            }
        }
    }

    /// Starts or stops pollers until this node runs `n`.
    fn resize(&mut self, n: usize) {
        while self.pollers.len() < n {
            self.add_poller();
        }
        while self.pollers.len() > n {
            self.remove_poller();
        }
    }
}

pub struct Engine {
    store: Store,
    changes: Changes,
    settings: EngineSettings,
    running: HashMap<Uuid, Running>,
    /// Mappings whose pollers are stopping in the background (their batches
    /// finish within the grace period): not started or settled again until
    /// they have stopped, and still in the live registry meanwhile (a reset
    /// waits for them to leave it before committing offsets).
    stopping: HashMap<Uuid, (Arc<LiveStatus>, JoinHandle<()>)>,
    /// Statuses of pollers that ended, until their last ledger entries are
    /// written.
    ended: Vec<(Uuid, Arc<LiveStatus>)>,
    /// Ledger entries written per mapping since its ledger was last trimmed.
    written: HashMap<Uuid, usize>,
    holds: Holds,
    node: Arc<Node>,
    /// Pollers the autoscaler wants per mapping, over the whole cluster.
    wanted_pollers: HashMap<Uuid, u32>,
    aws: crate::aws::NodeAws,
}

/// Handle to stop the engine.
pub struct EngineHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl EngineHandle {
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Why a mapping cannot run now: the state it settles in, and the problem.
struct NotRunning(MappingState, Problem);

/// How a start's clients read: the Kafka sign-in and the schema registry.
struct Clients {
    auth: crate::kafka_auth::KafkaAuth,
    decoder: Option<Arc<crate::schema::Decoder>>,
}

impl Engine {
    /// Starts the reconciler. `shared.changes` wakes it on every change
    /// saved here or (through LISTEN) on another node; a periodic pass every
    /// 5 s catches anything else.
    pub fn start(shared: &Shared, settings: EngineSettings) -> EngineHandle {
        let stop = CancellationToken::new();
        let mut engine = Engine {
            store: shared.store.clone(),
            changes: shared.changes.clone(),
            settings,
            running: HashMap::new(),
            stopping: HashMap::new(),
            ended: Vec::new(),
            written: HashMap::new(),
            holds: shared.holds.clone(),
            node: shared.node.clone(),
            wanted_pollers: HashMap::new(),
            aws: shared.aws.clone(),
        };
        let task = {
            let (stop, live) = (stop.clone(), shared.live.clone());
            tokio::spawn(async move { engine.run(stop, live).await })
        };
        EngineHandle { stop, task }
    }

    async fn run(&mut self, stop: CancellationToken, live: LiveRegistry) {
        let mut full = true;
        let mut last_full = std::time::Instant::now();
        let mut shape = Vec::new();
        loop {
            if full {
                last_full = std::time::Instant::now();
                if let Err(e) = self.reconcile().await {
                    tracing::error!("reconcile failed: {e:#}");
                }
            } else {
                self.scale_all().await;
            }
            self.flush_statuses().await;
            // Other nodes wait on this one's report (a reset): send it now.
            let now_shape = self.publish(&live);
            if now_shape != shape {
                shape = now_shape;
                self.node.poke();
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.changes.notified() => full = true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => full = last_full.elapsed() >= Duration::from_secs(5),
            }
        }
        // What the pollers give up on while they drain still reaches the ledger.
        let statuses = self.statuses();
        let running = std::mem::take(&mut self.running).into_values().map(Running::shutdown);
        let stopping = std::mem::take(&mut self.stopping).into_values().map(|(_, t)| async move {
            let _ = t.await;
        });
        futures::future::join_all(running).await;
        futures::future::join_all(stopping).await;
        self.ended.extend(statuses);
        self.flush_statuses().await;
    }

    /// Puts what runs or is still stopping in the live registry; returns
    /// its shape (mappings and their pollers), which the heartbeat reports.
    fn publish(&mut self, live: &LiveRegistry) -> Vec<(Uuid, u64)> {
        let ended = &mut self.ended;
        self.stopping.retain(|id, (s, t)| {
            let done = t.is_finished();
            if done {
                ended.push((*id, s.clone()));
            }
            !done
        });
        let statuses = self.statuses();
        let mut map = live.lock().unwrap_or_else(|e| e.into_inner());
        *map = statuses.into_iter().collect();
        let mut shape: Vec<(Uuid, u64)> = map.iter().map(|(k, s)| (*k, s.pollers.load(Ordering::Relaxed))).collect();
        shape.sort();
        shape
    }

    /// The statuses of what runs or is still stopping.
    fn statuses(&self) -> Vec<(Uuid, Arc<LiveStatus>)> {
        let running = self.running.iter().map(|(id, r)| (*id, r.status.clone()));
        running.chain(self.stopping.iter().map(|(id, (s, _))| (*id, s.clone()))).collect()
    }

    /// The cluster's total pollers for a mapping: the autoscaler's, or the
    /// spec's minimum until it decides.
    fn cluster_total(&self, id: Uuid, spec: &MappingSpec) -> u32 {
        let min = spec.provisioned_poller_config.as_ref().and_then(|p| p.minimum_pollers).unwrap_or(1).max(1) as u32;
        self.wanted_pollers.get(&id).copied().unwrap_or(min)
    }

    /// Pollers this node should run for a mapping: its share of the total.
    fn local_target(&self, id: Uuid, spec: &MappingSpec) -> usize {
        self.node.share(self.cluster_total(id, spec)) as usize
    }

    /// The autoscaler (on the leader only, for the whole cluster) and
    /// every node following its share.
    async fn scale_all(&mut self) {
        let leader = self.node.is_leader();
        let ids: Vec<Uuid> = self.running.keys().copied().collect();
        for id in ids {
            let spec = self.running[&id].template.spec.clone();
            let total = self.cluster_total(id, &spec);
            let Some(r) = self.running.get_mut(&id) else { continue };
            if let Some(next) = r.scale(id, total).filter(|_| leader) {
                match self.store.set_pollers(id, next).await {
                    Ok(()) => {
                        self.wanted_pollers.insert(id, next);
                        self.changes.publish(Some(id)).await;
                    }
                    Err(e) => tracing::warn!(mapping = %id, "cannot store the pollers wanted: {e:#}"),
                }
            }
            let target = self.local_target(id, &spec);
            if let Some(r) = self.running.get_mut(&id) {
                r.resize(target);
            }
        }
    }

    /// Mappings held by an alive node (a reset in progress), this one's
    /// included; the leader drops holds whose node died.
    async fn held(&self) -> anyhow::Result<HashSet<Uuid>> {
        let mut held = self.holds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stored = self.store.holds().await?;
        if stored.is_empty() {
            return Ok(held);
        }
        let now = crate::clock::now_ms();
        let alive: HashSet<String> =
            self.store.nodes().await?.into_iter().filter(|n| alive(n, now)).map(|n| n.id).collect();
        for (id, node) in stored {
            if alive.contains(&node) || node == self.node.id {
                held.insert(id);
            } else if self.node.is_leader() {
                tracing::warn!(mapping = %id, node, "dropping the hold of a node that stopped answering");
                let _ = self.store.unhold(id).await;
            }
        }
        Ok(held)
    }

    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let specs = self.store.list_specs().await?;
        let wanted: HashMap<Uuid, (MappingSpec, i64)> =
            specs.into_iter().map(|(id, spec, v)| (id, (spec, v))).collect();
        let held = self.held().await?;
        self.wanted_pollers = self.store.pollers().await?;

        // Deleted, disabled, changed or held: stop first.
        let to_stop: Vec<Uuid> = self
            .running
            .iter()
            .filter(|(id, r)| match wanted.get(id) {
                None => true,
                Some((spec, v)) => !spec.enabled || *v != r.version || held.contains(id),
            })
            .map(|(id, _)| *id)
            .collect();
        for id in to_stop {
            self.stop_in_background(id);
        }
        self.stopping.retain(|_, (_, t)| !t.is_finished());

        for (id, (spec, version)) in wanted {
            // Settled (and maybe started again) once its pollers have stopped.
            if self.running.contains_key(&id) || self.stopping.contains_key(&id) {
                continue;
            }
            if !spec.enabled {
                self.settle(id, MappingState::Disabled, "USER_INITIATED", None).await;
                continue;
            }
            if held.contains(&id) {
                self.settle(id, MappingState::Updating, "USER_INITIATED", Some(Processing::Held)).await;
                continue;
            }
            match self.start_mapping(id, &spec, version).await {
                Ok(r) => {
                    self.running.insert(id, r);
                    self.settle(id, MappingState::Enabled, "USER_INITIATED", None).await;
                }
                Err(NotRunning(state, problem)) => {
                    self.settle(id, state, problem.start_refusal(), Some(problem.into())).await;
                }
            }
        }
        // Membership or the wanted total may have changed this node's share.
        self.scale_all().await;
        Ok(())
    }

    /// Stops a mapping's pollers without waiting; the pass that follows
    /// their end settles it.
    fn stop_in_background(&mut self, id: Uuid) {
        let Some(r) = self.running.remove(&id) else { return };
        let (status, changes) = (r.status.clone(), self.changes.clone());
        let task = tokio::spawn(async move {
            r.shutdown().await;
            tracing::info!(mapping = %id, "pollers stopped");
            changes.wake();
        });
        self.stopping.insert(id, (status, task));
    }

    /// Checks and prepares what a mapping runs with, then starts its pollers.
    async fn start_mapping(&self, id: Uuid, spec: &MappingSpec, version: i64) -> Result<Running, NotRunning> {
        // The mapping's own log level (AWS's LoggingConfig), from this start on.
        let level = spec.logging_config.as_ref().and_then(|l| l.system_log_level.as_deref());
        crate::logs::set_level(id, level.and_then(crate::logs::parse_level));
        // Checked at every start too: the allow-list may have changed
        // since the mapping was saved, and names may resolve elsewhere now.
        if let Some(e) = self.settings.reach.check(spec).await.into_iter().next() {
            let problem = Problem::Config { field: e.field, message: e.message };
            return Err(NotRunning(MappingState::Disabled, problem));
        }
        // One AWS configuration per start (the role assumed once), for
        // the function, the destination, Secrets Manager and MSK IAM.
        let needs_aws = target::needs_aws(spec)
            || destination::needs_aws(spec)
            || crate::kafka_auth::needs_aws(spec)
            || crate::schema::needs_aws(spec);
        let aws = if needs_aws { Some(self.aws.for_mapping(id, spec).await) } else { None };
        // Secrets named by a Secrets Manager URI are read at every start (a
        // rotated secret takes effect with the next start), and an MSK
        // mapping given only its ARN runs with the brokers MSK names now.
        let decoder = crate::schema::Decoder::prepare(spec, aws.as_ref(), &self.settings.reach)
            .await
            .map_err(|why| NotRunning(MappingState::Enabled, Problem::Credentials(format!("schema registry: {why}"))))?
            .map(Arc::new);
        let (spec, auth) = crate::kafka_auth::prepare(spec, aws.as_ref())
            .await
            .map_err(|reason| NotRunning(MappingState::Enabled, Problem::Credentials(reason.to_string())))?;
        let spec = &spec;
        let n = self.local_target(id, spec);
        let running = self
            .start_pollers(id, spec, version, aws.as_ref(), n, Clients { auth: auth.clone(), decoder })
            .map_err(|e| NotRunning(MappingState::Disabled, Problem::Start(e.to_string())))?;
        if let Some(sdk) = aws {
            auth.keep_credentials_fresh(sdk, running.stop.clone());
        }
        Ok(running)
    }

    fn start_pollers(
        &self,
        id: Uuid,
        spec: &MappingSpec,
        version: i64,
        aws: Option<&aws_config::SdkConfig>,
        first: usize,
        clients: Clients,
    ) -> Result<Running, StartError> {
        let Clients { auth, decoder } = clients;
        let target = target::build(spec, aws, self.settings.http_timeout, &self.settings.reach)?;
        let destination = destination::build(id, spec, aws, &auth)?;
        let status = Arc::new(LiveStatus::default());
        status.mark_changed();
        let stop = CancellationToken::new();
        let template = poll::PollerConfig {
            id,
            spec: spec.clone(),
            target,
            destination,
            status: status.clone(),
            grace: self.settings.grace,
            index: 0,
            auth: auth.clone(),
            decoder,
        };
        let mut running = Running {
            version,
            stop: stop.clone(),
            pollers: Vec::new(),
            draining: Vec::new(),
            status: status.clone(),
            template,
            scaler: scaler::Scaler::new(std::time::Instant::now(), spec.batch_size.max(1) as usize),
            started: 0,
        };
        running.resize(first.max(1));
        tokio::spawn(
            lag::run(
                spec.bootstrap_servers().join(","),
                spec.group_for(id),
                spec.topic().to_string(),
                auth,
                status,
                stop,
            )
            .instrument(crate::mapping_span!(id)),
        );
        tracing::info!(mapping = %id, version, pollers = first, "pollers started");
        Ok(running)
    }

    /// Writes the settled state if it differs from what is stored.
    async fn settle(&self, id: Uuid, state: MappingState, reason: &str, result: Option<Processing>) {
        let current = match self.store.get(id).await {
            Ok(Some(v)) => v.status,
            _ => return,
        };
        let result = result.map_or(current.last_processing_result.clone(), |r| r.to_string());
        if current.state == state
            && current.state_transition_reason == reason
            && current.last_processing_result == result
        {
            return;
        }
        let status = MappingStatus { state, state_transition_reason: reason.into(), last_processing_result: result };
        if let Err(e) = self.store.set_status(id, &status).await {
            tracing::warn!(mapping = %id, "cannot write status: {e:#}");
        }
    }

    async fn flush_statuses(&mut self) {
        for (id, r) in &self.running {
            if let Some(result) = r.status.take_change() {
                if let Err(e) = self.store.set_result(*id, &result).await {
                    // Said once by the heartbeat while the database refuses writes.
                    if self.node.db_error().is_none() {
                        tracing::warn!(mapping = %id, "cannot write status: {e:#}");
                    }
                    // Written on a later pass, once the database takes it.
                    r.status.mark_changed();
                }
            }
        }
        // What the pollers gave up on: running, stopping and ended ones
        // (`true`: ended, kept here until written).
        let ended = std::mem::take(&mut self.ended);
        let statuses = self.statuses().into_iter().map(|s| (s, false)).chain(ended.into_iter().map(|s| (s, true)));
        let ledger = crate::ledger::Ledger::new(&self.store);
        for ((id, status), ended) in statuses {
            let failed = status.take_failed();
            if failed.is_empty() {
                continue;
            }
            let n = failed.len();
            match ledger.record(id, &self.node.id, &failed).await {
                Ok(()) => {
                    // Bounded: checked every 10,000 entries a mapping writes.
                    let since = self.written.entry(id).or_default();
                    *since += n;
                    if *since >= 10_000 {
                        *since = 0;
                        match ledger.trim(id, crate::ledger::MAX_PER_MAPPING).await {
                            Ok(0) => {}
                            Ok(gone) => {
                                tracing::warn!(mapping = %id, gone, "the failure ledger keeps a mapping's newest {} entries: older ones let go", crate::ledger::MAX_PER_MAPPING)
                            }
                            Err(e) => tracing::warn!(mapping = %id, "cannot trim the failure ledger: {e:#}"),
                        }
                    }
                }
                Err(e) => {
                    if self.node.db_error().is_none() {
                        tracing::warn!(mapping = %id, "cannot write the failure ledger: {e:#}");
                    }
                    status.keep_failed(failed);
                    if ended {
                        self.ended.push((id, status));
                    }
                }
            }
        }
    }
}
