//! The engine: poll → filter → batch → invoke → commit. The reconciler here
//! is the only thing that starts or stops pollers: it turns the stored specs
//! into running pollers and writes back what they report.

pub mod destination;
pub mod event;
pub mod lag;
pub mod partition;
pub mod poller;
pub mod scaler;
pub mod status;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_app::model::{MappingState, MappingStatus};
use sluice_app::spec::{target_kind, MappingSpec, TargetKind};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;
use status::LiveStatus;

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Timeout of one HTTP invocation.
    pub http_timeout: Duration,
    /// How long a stopping poller lets in-flight invocations finish.
    pub grace: Duration,
    /// Where mappings may connect (`SLUICE_ALLOWED_HOSTS`).
    pub reach: crate::reach::Reach,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            http_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            reach: Default::default(),
        }
    }
}

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
    template: poller::PollerConfig,
    scaler: scaler::Scaler,
    started: u32,
}

impl Running {
    fn add_poller(&mut self) {
        let stop = self.stop.child_token();
        let mut cfg = self.template.clone();
        cfg.index = self.started;
        self.started += 1;
        self.pollers.push((stop.clone(), tokio::spawn(poller::run(cfg, stop))));
        self.status.pollers.store(self.pollers.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn remove_poller(&mut self) {
        if let Some((stop, task)) = self.pollers.pop() {
            stop.cancel();
            self.draining.push(task);
        }
        self.draining.retain(|t| !t.is_finished());
        self.status.pollers.store(self.pollers.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
        self.scaler.observe(now, sum, self.status.throttles.load(std::sync::atomic::Ordering::Relaxed));
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
    changed: Arc<Notify>,
    settings: EngineSettings,
    running: HashMap<Uuid, Running>,
    holds: Holds,
    node: Arc<crate::cluster::Node>,
    /// Pollers the autoscaler wants per mapping, over the whole cluster.
    wanted_pollers: HashMap<Uuid, u32>,
    /// The AWS configuration (standard chain), read the first time a
    /// mapping needs it.
    aws: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

/// What each running poller reports, by mapping: shared with the HTTP side.
pub type LiveRegistry = Arc<std::sync::Mutex<HashMap<Uuid, Arc<LiveStatus>>>>;

/// Mappings whose pollers must stay stopped for now (an offset reset is
/// being committed), whatever their spec says.
pub type Holds = Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>;

/// `base`, or, with the mapping's `InvocationRoleArn`, the same with
/// credentials from assuming that role (refreshed by the SDK). Every AWS
/// call made for a mapping (invocations, destinations, Secrets Manager, MSK
/// IAM), on any node and for resets too, goes through it.
pub async fn with_role(base: aws_config::SdkConfig, id: Uuid, spec: &MappingSpec) -> aws_config::SdkConfig {
    let Some(role) = &spec.invocation_role_arn else { return base };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name(format!("sluice-{}", id.simple()))
        .configure(&base)
        .build()
        .await;
    base.into_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        .build()
}

/// The AWS configuration for a resource: a full ARN names its region,
/// anything else takes the chain's; without either, why not (`hint` adds
/// what else would do).
pub(crate) fn in_region(aws: &aws_config::SdkConfig, name: &str, hint: &str) -> Result<aws_config::SdkConfig, String> {
    let mut sdk = aws.clone();
    if let Some(r) = destination::aws::arn_region(name) {
        sdk = sdk.into_builder().region(aws_config::Region::new(r.to_string())).build();
    }
    if sdk.region().is_none() {
        return Err(format!("no AWS region for {name}: set AWS_REGION (or a profile with a region){hint}"));
    }
    Ok(sdk)
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

impl Engine {
    /// Starts the reconciler. The service's `changes()` is notified on every
    /// change saved here or (through LISTEN) on another node; a periodic pass
    /// every 5 s catches anything else.
    pub fn start(mappings: &crate::service::MappingService, settings: EngineSettings) -> EngineHandle {
        let stop = CancellationToken::new();
        let live = mappings.live();
        let mut engine = Engine {
            store: mappings.store().clone(),
            changed: mappings.changes(),
            settings,
            running: HashMap::new(),
            holds: mappings.holds(),
            node: mappings.node().clone(),
            wanted_pollers: HashMap::new(),
            aws: Default::default(),
        };
        let task = {
            let stop = stop.clone();
            let live = live.clone();
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
            *live.lock().unwrap_or_else(|e| e.into_inner()) =
                self.running.iter().map(|(k, r)| (*k, r.status.clone())).collect();
            // Other nodes wait on this one's report (a reset): send it now.
            let now_shape: Vec<(Uuid, usize)> = {
                let mut v: Vec<_> = self.running.iter().map(|(k, r)| (*k, r.pollers.len())).collect();
                v.sort();
                v
            };
            if now_shape != shape {
                shape = now_shape;
                self.node.poke();
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.changed.notified() => full = true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => full = last_full.elapsed() >= Duration::from_secs(5),
            }
        }
        let ids: Vec<Uuid> = self.running.keys().copied().collect();
        let stops = ids.into_iter().filter_map(|id| self.running.remove(&id)).map(Running::shutdown);
        futures::future::join_all(stops).await;
        self.flush_statuses().await;
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
                        let _ = self.store.notify(crate::cluster::CHANGES, &id.to_string()).await;
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
    async fn held(&self) -> anyhow::Result<std::collections::HashSet<Uuid>> {
        let mut held = self.holds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stored = self.store.holds().await?;
        if stored.is_empty() {
            return Ok(held);
        }
        let now = crate::clock::now_ms();
        let alive: std::collections::HashSet<String> =
            self.store.nodes().await?.into_iter().filter(|n| crate::cluster::alive(n, now)).map(|n| n.id).collect();
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
        // All at once: one slow function's grace period must not hold up
        // every other mapping's stop, start and status.
        let stopping: Vec<(Uuid, Running)> =
            to_stop.into_iter().filter_map(|id| self.running.remove(&id).map(|r| (id, r))).collect();
        futures::future::join_all(stopping.into_iter().map(|(id, r)| async move {
            r.shutdown().await;
            tracing::info!(mapping = %id, "pollers stopped");
        }))
        .await;

        for (id, (spec, version)) in wanted {
            if !spec.enabled {
                self.settle(id, MappingState::Disabled, "USER_INITIATED", None).await;
                continue;
            }
            if self.running.contains_key(&id) {
                continue;
            }
            if held.contains(&id) {
                let why = "Paused: committing new offsets for the consumer group (offset reset)".to_string();
                self.settle(id, MappingState::Updating, "USER_INITIATED", Some(why)).await;
                continue;
            }
            // Checked at every start too: the allow-list may have changed
            // since the mapping was saved, and names may resolve elsewhere now.
            if let Some(e) = self.settings.reach.check(&spec).await.first() {
                self.settle(
                    id,
                    MappingState::Disabled,
                    "ESM_CONFIG_NOT_VALID",
                    Some(format!("PROBLEM: {}: {}", e.field, e.message)),
                )
                .await;
                continue;
            }
            // One AWS configuration per start (the role assumed once), for
            // the function, the destination, Secrets Manager and MSK IAM.
            let on_aws = target_kind(&spec.function_name) == TargetKind::Lambda
                || spec.destination_config.on_failure.as_ref().is_some_and(|d| d.destination.starts_with("arn:"));
            let aws =
                if on_aws || crate::kafka_auth::needs_aws(&spec) { Some(self.aws_for(id, &spec).await) } else { None };
            // Secrets named by a Secrets Manager URI are read at every start
            // (a rotated secret takes effect with the next start).
            let auth = match crate::kafka_auth::prepare(&spec, aws.as_ref()).await {
                Ok(auth) => auth,
                Err(reason) => {
                    self.settle(
                        id,
                        MappingState::Enabled,
                        "EVENT_SOURCE_AUTHN_ERROR",
                        Some(format!("PROBLEM: {reason}")),
                    )
                    .await;
                    continue;
                }
            };
            let n = self.local_target(id, &spec);
            match self.start_poller(id, &spec, version, aws.as_ref(), n, auth.clone()) {
                Ok(r) => {
                    if let Some(sdk) = aws {
                        auth.keep_credentials_fresh(sdk, r.stop.clone());
                    }
                    self.running.insert(id, r);
                    self.settle(id, MappingState::Enabled, "USER_INITIATED", None).await;
                }
                Err(reason) => {
                    self.settle(id, MappingState::Disabled, "ESM_CONFIG_NOT_VALID", Some(format!("PROBLEM: {reason}")))
                        .await;
                }
            }
        }
        // Membership or the wanted total may have changed this node's share.
        self.scale_all().await;
        Ok(())
    }

    async fn aws(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| async { aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await })
            .await
    }

    /// `with_role` on the node's AWS configuration.
    async fn aws_for(&self, id: Uuid, spec: &MappingSpec) -> aws_config::SdkConfig {
        with_role(self.aws().await.clone(), id, spec).await
    }

    fn start_poller(
        &self,
        id: Uuid,
        spec: &MappingSpec,
        version: i64,
        aws: Option<&aws_config::SdkConfig>,
        first: usize,
        auth: crate::kafka_auth::KafkaAuth,
    ) -> Result<Running, String> {
        let target: Arc<dyn target::Target> = match (target_kind(&spec.function_name), aws) {
            (TargetKind::Http, _) => Arc::new(
                target::http::HttpTarget::new(&spec.function_name, self.settings.http_timeout, &self.settings.reach)
                    .map_err(|e| e.to_string())?,
            ),
            (TargetKind::Lambda, Some(aws)) => {
                let sdk = in_region(aws, &spec.function_name, ", or give the function's full ARN")?;
                Arc::new(target::lambda::LambdaTarget::new(&sdk, &spec.function_name, self.settings.http_timeout))
            }
            (TargetKind::Lambda, None) => return Err("the AWS configuration is not loaded".into()),
        };
        let destination: Option<Arc<dyn destination::Destination>> = match &spec.destination_config.on_failure {
            None => None,
            Some(d) => match d.destination.strip_prefix("kafka://") {
                Some(topic) => Some(Arc::new(destination::kafka::KafkaDestination::new(
                    &spec.bootstrap_servers().join(","),
                    topic,
                    event::EventSource::of(spec),
                    &spec.function_name,
                    &auth,
                )?)),
                None => {
                    let aws = aws.ok_or("the AWS configuration is not loaded")?;
                    let sdk = in_region(aws, &d.destination, "")?;
                    Some(Arc::new(destination::aws::AwsDestination::new(
                        &sdk,
                        &d.destination,
                        event::EventSource::of(spec),
                        &spec.function_name,
                        id,
                    )?))
                }
            },
        };
        let status = Arc::new(LiveStatus::default());
        status.set("No records processed");
        let stop = CancellationToken::new();
        let template = poller::PollerConfig {
            id,
            spec: spec.clone(),
            target,
            destination,
            status: status.clone(),
            grace: self.settings.grace,
            index: 0,
            auth: auth.clone(),
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
        tokio::spawn(lag::run(
            spec.bootstrap_servers().join(","),
            spec.group_for(id),
            spec.topic().to_string(),
            auth,
            status.clone(),
            stop.clone(),
        ));
        tracing::info!(mapping = %id, version, pollers = first, "pollers started");
        Ok(running)
    }

    /// Writes the settled state if it differs from what is stored.
    async fn settle(&self, id: Uuid, state: MappingState, reason: &str, result: Option<String>) {
        let current = match self.store.get(id).await {
            Ok(Some(v)) => v.status,
            _ => return,
        };
        let result = result.unwrap_or(current.last_processing_result.clone());
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

    async fn flush_statuses(&self) {
        for (id, r) in &self.running {
            if let Some(result) = r.status.take_change() {
                if let Err(e) = self.store.set_result(*id, &result).await {
                    tracing::warn!(mapping = %id, "cannot write status: {e:#}");
                }
            }
        }
    }
}
