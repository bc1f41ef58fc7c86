//! The mapping service: the one place specs are validated and saved. The
//! REST API, the console's forms and its server functions all go through it,
//! so they accept and refuse exactly the same things.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sluice_app::api::backend::Backend;
use sluice_app::model::{MappingState, MappingStatus, MappingView};
use sluice_app::spec::{FieldError, MappingSpec};
use uuid::Uuid;

use crate::metrics::{Metrics, MetricsSettings, LIVE_WINDOW};
use crate::reset;
use crate::shared::{LiveRegistry, Node, Shared};
use crate::store::Store;
use sluice_app::metrics::{
    advise, bucket, judge, total, AdvisorInput, Baseline, History, Insight, Overview, PartitionBaseline, Range,
    HEALTH_WINDOW_MS,
};
use sluice_app::reset::{ResetAudit, ResetOutcome, ResetRequest, ResetState, Strategy};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no mapping with UUID {0}")]
    NotFound(Uuid),
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldError>),
    /// A field names what another mapping holds (its consumer group): AWS's
    /// ResourceConflictException, shown on the field like `Invalid`.
    #[error("{}", describe(.0))]
    Taken(Vec<FieldError>),
    /// Another change is in progress (a second reset of the same mapping).
    #[error("{0}")]
    Conflict(String),
    /// Kafka could not be reached or refused (a reset's look-ups or commit).
    #[error("{0}")]
    Kafka(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe(errs: &[FieldError]) -> String {
    errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}

/// Fields of a `MappingView` that a client may send back unchanged (say,
/// from a `GET`): read-only, so they are ignored rather than refused.
const READ_ONLY: [&str; 8] = [
    "UUID",
    "State",
    "StateTransitionReason",
    "LastProcessingResult",
    "LastModified",
    "EventSourceMappingArn",
    "FunctionArn",
    "Tags",
];

/// Reads a spec from JSON, naming the field of the first problem.
pub fn spec_from_json(mut v: Value) -> Result<MappingSpec, ServiceError> {
    let Value::Object(map) = &mut v else {
        return Err(ServiceError::Invalid(vec![FieldError::new("", "the body must be a JSON object")]));
    };
    for k in READ_ONLY {
        map.remove(k);
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent: name the field itself.
        let (field, message) = match inner.strip_prefix("missing field `").and_then(|r| r.split_once('`')) {
            Some((name, _)) if path == "." => (name.to_string(), "is required".to_string()),
            Some((name, _)) => (format!("{path}.{name}"), "is required".to_string()),
            None if inner.starts_with("unknown field") => {
                let name = inner.split('`').nth(1).unwrap_or("");
                let field = if path == "." { name.to_string() } else { path.clone() };
                (field, format!("is not a mapping field ({inner})"))
            }
            None => (if path == "." { String::new() } else { path }, inner),
        };
        ServiceError::Invalid(vec![FieldError::new(field, message)])
    })
}

/// RFC 7386 merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// AWS's limits on a resource's tags.
pub const MAX_TAGS: usize = 50;

/// Tags as AWS takes them: keys of 1 to 128 characters not starting with
/// `aws:`, values of at most 256, at most 50.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    let mut errs = Vec::new();
    if tags.len() > MAX_TAGS {
        errs.push(FieldError::new("Tags", format!("at most {MAX_TAGS} tags, not {}", tags.len())));
    }
    for (k, v) in tags {
        let n = k.chars().count();
        if n == 0 || n > 128 {
            errs.push(FieldError::new(format!("Tags.{k}"), "a tag key has 1 to 128 characters"));
        } else if k.to_ascii_lowercase().starts_with("aws:") {
            errs.push(FieldError::new(format!("Tags.{k}"), "tag keys starting with aws: are AWS's own"));
        }
        if v.chars().count() > 256 {
            errs.push(FieldError::new(format!("Tags.{k}"), "a tag value has at most 256 characters"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(errs))
    }
}

/// The `Tags` of a create request (AWS's, or `/api/v1`'s), taken out of it
/// and checked before anything is made.
pub fn take_tags(m: &mut serde_json::Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, ServiceError> {
    let Some(v) = m.remove("Tags").filter(|v| !v.is_null()) else { return Ok(None) };
    let tags: BTreeMap<String, String> = serde_json::from_value(v).map_err(|_| {
        ServiceError::Invalid(vec![FieldError::new("Tags", "must be an object of string keys and values")])
    })?;
    check_tags(&tags)?;
    Ok(Some(tags))
}

pub struct MappingService {
    /// The node's handles (database, identity, live registry, holds,
    /// change signal, AWS configuration), shared with the engine and cluster.
    shared: Shared,
    metrics: Arc<Metrics>,
    /// What the node can do, as the console's footer says it.
    system: std::sync::Mutex<sluice_app::model::SystemInfo>,
    /// Mappings with a reset being applied (one at a time per mapping).
    resetting: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    auth: Arc<crate::auth::Auth>,
    /// Where mappings may point (`SLUICE_ALLOWED_HOSTS`), checked at save.
    reach: std::sync::RwLock<crate::reach::Reach>,
    /// Timeout of one HTTP invocation (a redrive's, as the engine's).
    http_timeout: std::sync::atomic::AtomicU64,
    /// Redrives this node runs, by job id: the mapping, and their stop.
    redrives: std::sync::Mutex<std::collections::HashMap<String, (Uuid, tokio_util::sync::CancellationToken)>>,
}

mod failures;

/// The transitional state a save puts a mapping in; the engine settles it
/// (Enabled, Disabled) once its pollers follow.
fn saved_status(state: MappingState, last_result: &str) -> MappingStatus {
    MappingStatus {
        state,
        state_transition_reason: "USER_INITIATED".into(),
        last_processing_result: last_result.into(),
    }
}

impl MappingService {
    /// A service with its own node handles (tests, tools); `main` builds
    /// the handles once and uses `with_shared`.
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_shared(Shared::new(store), MetricsSettings::default())
    }

    pub fn with_shared(shared: Shared, settings: MetricsSettings) -> Arc<Self> {
        let metrics = Metrics::new(shared.store.clone(), shared.live.clone(), shared.node.clone(), settings);
        Arc::new(MappingService {
            auth: Arc::new(crate::auth::Auth::new(shared.store.clone())),
            reach: Default::default(),
            http_timeout: std::sync::atomic::AtomicU64::new(30_000),
            redrives: Default::default(),
            shared,
            metrics,
            system: std::sync::Mutex::new(sluice_app::model::SystemInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                node: String::new(),
                aws: vec!["AWS: reading the configuration…".into()],
                database_problem: None,
            }),
            resetting: Default::default(),
        })
    }

    /// The node's handles, for the engine and the cluster.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The allow-list saves are checked against.
    pub fn set_reach(&self, reach: crate::reach::Reach) {
        *self.reach.write().unwrap_or_else(|e| e.into_inner()) = reach;
    }

    pub fn set_aws_status(&self, lines: Vec<String>) {
        self.system.lock().unwrap_or_else(|e| e.into_inner()).aws = lines;
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.shared.node
    }

    pub fn auth(&self) -> &Arc<crate::auth::Auth> {
        &self.auth
    }

    /// How this node's Kafka clients reach the brokers for `spec`: the
    /// broker list (an MSK cluster's looked up) and the authentication,
    /// Secrets Manager URIs resolved.
    pub async fn kafka_auth(
        &self,
        id: Uuid,
        spec: &MappingSpec,
    ) -> Result<(String, crate::kafka_auth::KafkaAuth), crate::kafka_auth::CredentialsError> {
        // The mapping's role, as its pollers use it.
        let sdk = match crate::kafka_auth::needs_aws(spec) {
            true => Some(self.shared.aws.for_mapping(id, spec).await),
            false => None,
        };
        let (spec, auth) = crate::kafka_auth::prepare(spec, sdk.as_ref()).await?;
        Ok((spec.bootstrap_servers().join(","), auth))
    }

    /// The schema registry decoder `spec` runs with (None without one), its
    /// secrets read with the mapping's role as its pollers read them.
    pub async fn decoder(&self, id: Uuid, spec: &MappingSpec) -> Result<Option<crate::schema::Decoder>, String> {
        let sdk = match crate::schema::needs_aws(spec) {
            true => Some(self.shared.aws.for_mapping(id, spec).await),
            false => None,
        };
        let reach = self.reach.read().unwrap_or_else(|e| e.into_inner()).clone();
        crate::schema::Decoder::prepare(spec, sdk.as_ref(), &reach).await
    }

    /// The form's "Test connection": reaches `spec`'s schema registry and
    /// reads one schema (`schema_id`, or the first it lists).
    pub async fn test_registry(&self, spec: &MappingSpec, schema_id: Option<&str>) -> Result<String, String> {
        let decoder = self.decoder(Uuid::nil(), spec).await?.ok_or("no schema registry is set")?;
        decoder.registry().probe(schema_id).await
    }

    /// The cluster's nodes, this one included.
    pub async fn nodes(&self) -> Result<Vec<sluice_app::model::NodeView>, ServiceError> {
        Ok(crate::cluster::views(self.shared.store.nodes().await?, &self.shared.node.id))
    }

    /// Wakes this node's reconciler and every other node's (NOTIFY).
    async fn changed(&self, id: Uuid) {
        self.shared.changes.publish(Some(id)).await;
    }

    /// Previews (`DryRun`) or applies a reset of the mapping's consumer
    /// group. Applying stops the mapping's pollers (in-flight batches finish
    /// within the grace period or are abandoned uncommitted), plans again
    /// on the offsets they left, commits, records the reset in the audit
    /// log, and lets the pollers start again from the new offsets.
    pub async fn reset(&self, id: Uuid, req: ResetRequest, actor: &str) -> Result<ResetOutcome, ServiceError> {
        let m = self.get(id).await?;
        let errs = req.validate();
        if !errs.is_empty() {
            return Err(ServiceError::Invalid(errs));
        }
        let group = m.consumer_group();
        let topic = m.spec.topic().to_string();
        let start = m.spec.starting_position;
        let (servers, auth) = self.kafka_auth(id, &m.spec).await.map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let plan = |req: ResetRequest| {
            let (servers, group, topic, auth) = (servers.clone(), group.clone(), topic.clone(), auth.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let t = reset::Target { servers: &servers, group: &group, topic: &topic, start, auth: &auth };
                    reset::plan(&t, &req)
                })
                .await
                .map_err(|e| ServiceError::Internal(e.into()))?
                .map_err(plan_error)
            }
        };
        let outcome = |partitions, applied, audit_id| ResetOutcome {
            uuid: id,
            topic: topic.clone(),
            consumer_group: group.clone(),
            strategy: req.strategy,
            dry_run: req.dry_run,
            applied,
            partitions,
            audit_id,
        };
        if req.dry_run {
            return Ok(outcome(plan(req.clone()).await?, false, None));
        }
        // One reset per mapping at a time; a second is refused, not queued.
        if !self.resetting.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
            return Err(ServiceError::Conflict(format!(
                "a reset of mapping {} is being applied; try again when it is done",
                m.label()
            )));
        }
        let _done = Release(&self.resetting, id);
        // Check the request against the topic before stopping anything.
        plan(req.clone()).await?;
        // Held here and in the database, so every node stops its pollers.
        if !self.shared.store.hold(id, &self.shared.node.id).await? {
            return Err(ServiceError::Conflict(format!(
                "a reset of mapping {} is being applied by another node; try again when it is done",
                m.label()
            )));
        }
        self.shared.holds.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        let _held = Unhold(self, id);
        self.changed(id).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.runs_anywhere(id).await? {
            if tokio::time::Instant::now() > deadline {
                return Err(ServiceError::Conflict(
                    "the mapping's pollers did not stop within 60 s; nothing was changed".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let partitions = plan(req.clone()).await?;
        {
            let (servers, group, topic, partitions, auth) =
                (servers.clone(), group.clone(), topic.clone(), partitions.clone(), auth.clone());
            tokio::task::spawn_blocking(move || {
                reset::commit(
                    &reset::Target { servers: &servers, group: &group, topic: &topic, start, auth: &auth },
                    &partitions,
                )
            })
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?
            .map_err(plan_error)?;
        }
        let audit = ResetAudit {
            id: Uuid::new_v4().to_string(),
            uuid: id,
            time: crate::clock::now_ms(),
            actor: actor.to_string(),
            request: req.clone(),
            partitions: partitions.clone(),
        };
        self.shared.store.put_reset(&audit).await?;
        tracing::info!(mapping = %id, strategy = req.strategy.as_str(), actor, "offsets reset");
        Ok(outcome(partitions, true, Some(audit.id)))
    }

    /// Whether any alive node (this one included) still runs pollers of the
    /// mapping. Nodes report a change in their heartbeat at once.
    async fn runs_anywhere(&self, id: Uuid) -> Result<bool, ServiceError> {
        if self.shared.live.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
            return Ok(true);
        }
        let key = id.to_string();
        Ok(self.nodes().await?.iter().any(|n| n.alive && !n.this_node && n.pollers.contains_key(&key)))
    }

    pub async fn resets(&self, id: Uuid) -> Result<Vec<ResetAudit>, ServiceError> {
        self.get(id).await?;
        Ok(self.shared.store.resets(id).await?)
    }

    /// The metrics collector (started by the caller) and its history.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Health, advice and the baseline figures of one mapping: the last
    /// minute and 15 minutes from memory, the last 24 hours from the store.
    pub async fn insight(&self, id: Uuid) -> Result<Insight, ServiceError> {
        let m = self.get(id).await?;
        let now = crate::clock::now_ms();
        let recent = self.metrics.recent(id, now - LIVE_WINDOW);
        let within = |ms: i64| recent.iter().filter(|p| p.time > now - ms).cloned().collect::<Vec<_>>();
        let health_window = within(HEALTH_WINDOW_MS);
        let (health, reason) = judge(m.spec.enabled, &m.status.last_processing_result, &health_window);
        let quarter = total(&recent);
        let advice = advise(&AdvisorInput {
            batch_size: m.spec.batch_size,
            window_s: m.spec.maximum_batching_window_in_seconds,
            max_pollers: m.spec.provisioned_poller_config.as_ref().and_then(|p| p.maximum_pollers),
            lanes: m.spec.lanes(),
            window: &recent,
        });
        let day = self.metrics.history(id, Range::H24).await.map_err(ServiceError::Internal)?;
        let baseline = vec![
            Baseline::of("last minute", &total(&within(60_000))),
            Baseline::of("last 15 minutes", &quarter),
            Baseline::of("last 24 hours", &total(&day.points)),
        ];
        Ok(Insight { health, reason, advice, baseline, partitions: PartitionBaseline::of(&quarter) })
    }

    /// Every mapping's health, lag sparkline and rates, for the overview.
    pub async fn overview(&self) -> Result<Vec<Overview>, ServiceError> {
        let now = crate::clock::now_ms();
        let mut out = Vec::new();
        let failed = self.open_failure_counts().await;
        for m in self.list().await? {
            let recent = self.metrics.recent(m.uuid, now - LIVE_WINDOW);
            let mut o = overview_of(&m, &recent, now);
            o.failed_records = failed.get(&m.uuid).copied().unwrap_or(0);
            out.push(o);
        }
        Ok(out)
    }

    /// Where the engine publishes what its pollers report.
    pub fn live(&self) -> LiveRegistry {
        self.shared.live.clone()
    }

    pub fn counters(&self, id: Uuid) -> Option<sluice_app::model::MappingCounters> {
        self.shared.live.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|s| s.counters())
    }

    /// Notified on every saved change (the engine's reconciler waits on it).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Every mapping, with its tags.
    pub async fn list(&self) -> Result<Vec<MappingView>, ServiceError> {
        let mut views = self.shared.store.list().await?;
        let mut tags = self.shared.store.tags(None).await?;
        for v in &mut views {
            v.tags = tags.remove(&v.uuid).unwrap_or_default();
        }
        Ok(views)
    }

    /// One mapping, with its tags.
    pub async fn get(&self, id: Uuid) -> Result<MappingView, ServiceError> {
        let mut view = self.shared.store.get(id).await?.ok_or(ServiceError::NotFound(id))?;
        view.tags = self.shared.store.tags(Some(id)).await?.remove(&id).unwrap_or_default();
        Ok(view)
    }

    pub async fn create(&self, spec: MappingSpec) -> Result<MappingView, ServiceError> {
        self.create_with_id(Uuid::new_v4(), spec).await
    }

    pub async fn create_with_id(&self, id: Uuid, mut spec: MappingSpec) -> Result<MappingView, ServiceError> {
        // As in AWS, the group defaults to the mapping's UUID; stored, so it
        // shows and stays put when the spec is edited.
        // An MSK definition's AmazonManagedKafkaEventSourceConfig group counts too.
        if spec.consumer_group_id().is_none() {
            spec.self_managed_kafka_event_source_config.consumer_group_id = Some(id.to_string());
        }
        for c in spec.access_configs_mut() {
            c.secret_stored = false;
        }
        self.check(Some(id), &spec).await?;
        let state = if spec.enabled { MappingState::Creating } else { MappingState::Disabled };
        self.shared.store.insert(id, &spec, &saved_status(state, "No records processed")).await?;
        // The answer is the change as saved: read before the engine is told
        // (it may settle the next state before a later read).
        let view = self.get(id).await?;
        self.changed(id).await;
        Ok(view)
    }

    /// Replaces every field of the spec.
    pub async fn replace(&self, id: Uuid, mut spec: MappingSpec) -> Result<MappingView, ServiceError> {
        let before = self.get(id).await?;
        // Secrets are never shown, so an edit sends them back absent: keep
        // the stored ones for the same type (and user name), as long as
        // they would go to the same place (`secret_destination`).
        let old = &before.spec.source_access_configurations;
        let same_place = before.spec.secret_destination() == spec.secret_destination();
        let mut dropped = Vec::new();
        for (i, c) in spec.source_access_configurations.iter_mut().enumerate() {
            // What the caller says is stored counts for nothing: only what is.
            c.secret_stored = false;
            if let Some(o) = old.get(i).filter(|o| o.kind == c.kind).or_else(|| old.iter().find(|o| o.kind == c.kind)) {
                if same_place {
                    c.keep_secrets_from(o);
                    continue;
                }
                let why = "the stored secret is only sent where it was given for: the bootstrap servers, security protocol or MSK cluster changed, so give it again";
                if c.password.is_none() && o.password.is_some() {
                    dropped.push(FieldError::new(format!("SourceAccessConfigurations[{i}].Password"), why));
                }
                if c.private_key.is_none() && o.private_key.is_some() {
                    dropped.push(FieldError::new(format!("SourceAccessConfigurations[{i}].PrivateKey"), why));
                }
            }
        }
        keep_registry_secrets(&before.spec, &mut spec, &mut dropped);
        if !dropped.is_empty() {
            return Err(ServiceError::Invalid(dropped));
        }
        self.check(Some(id), &spec).await?;
        let state = match (before.spec.enabled, spec.enabled) {
            (false, true) => MappingState::Enabling,
            (true, false) => MappingState::Disabling,
            (true, true) => MappingState::Updating,
            (false, false) => MappingState::Disabled,
        };
        if !self.shared.store.update(id, &spec, &saved_status(state, &before.status.last_processing_result)).await? {
            return Err(ServiceError::NotFound(id));
        }
        let view = self.get(id).await?;
        self.changed(id).await;
        Ok(view)
    }

    /// Changes only the fields the patch names (AWS UpdateEventSourceMapping).
    pub async fn patch(&self, id: Uuid, patch: &Value) -> Result<MappingView, ServiceError> {
        let current = self.get(id).await?;
        let mut v = serde_json::to_value(&current.spec).map_err(anyhow::Error::from)?;
        merge_patch(&mut v, patch);
        self.replace(id, spec_from_json(v)?).await
    }

    /// Creates a mapping with its first tags (AWS's `Tags` on create).
    pub async fn create_tagged(
        &self,
        spec: MappingSpec,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<MappingView, ServiceError> {
        let mut view = self.create(spec).await?;
        if let Some(tags) = tags {
            self.tag(view.uuid, &tags).await?;
            view.tags = tags;
        }
        Ok(view)
    }

    /// Adds or overwrites tags (AWS TagResource), within AWS's limits.
    pub async fn tag(&self, id: Uuid, tags: &BTreeMap<String, String>) -> Result<(), ServiceError> {
        let current = self.get(id).await?.tags;
        check_tags(tags)?;
        let total = current.keys().chain(tags.keys()).collect::<std::collections::BTreeSet<_>>().len();
        if total > MAX_TAGS {
            return Err(ServiceError::Invalid(vec![FieldError::new(
                "Tags",
                format!("a mapping has at most {MAX_TAGS} tags; this would make {total}"),
            )]));
        }
        Ok(self.shared.store.change_tags(id, tags, &[]).await?)
    }

    /// Removes tags by key (AWS UntagResource); absent keys are no error.
    pub async fn untag(&self, id: Uuid, keys: &[String]) -> Result<(), ServiceError> {
        self.get(id).await?;
        Ok(self.shared.store.change_tags(id, &BTreeMap::new(), keys).await?)
    }

    pub async fn set_enabled(&self, id: Uuid, enabled: bool) -> Result<MappingView, ServiceError> {
        let mut spec = self.get(id).await?.spec;
        spec.enabled = enabled;
        self.replace(id, spec).await
    }

    pub async fn delete(&self, id: Uuid) -> Result<MappingView, ServiceError> {
        let mut view = self.get(id).await?;
        if !self.shared.store.delete(id).await? {
            return Err(ServiceError::NotFound(id));
        }
        self.forget_failures(id).await;
        self.changed(id).await;
        view.status.state = MappingState::Deleting;
        view.status.state_transition_reason = "USER_INITIATED".into();
        Ok(view)
    }

    /// Validation that needs more than the spec: the clock, and the other
    /// mappings (two mappings in one consumer group would steal each other's
    /// partitions).
    async fn check(&self, id: Option<Uuid>, spec: &MappingSpec) -> Result<(), ServiceError> {
        let mut errs = spec.validate(sluice_app::api::now_s());
        let reach = self.reach.read().unwrap_or_else(|e| e.into_inner()).clone();
        errs.extend(reach.check(spec).await);
        let mut taken = Vec::new();
        if let Some(group) = spec.consumer_group_id() {
            for other in self.shared.store.list().await? {
                if Some(other.uuid) == id || other.consumer_group() != group {
                    continue;
                }
                let shared = other.spec.bootstrap_servers().iter().any(|s| spec.bootstrap_servers().contains(s));
                if shared {
                    taken.push(FieldError::new(
                        "SelfManagedKafkaEventSourceConfig.ConsumerGroupId",
                        format!(
                            "`{group}` is already the consumer group of mapping {} on the same cluster; two mappings in one group would split the partitions between them",
                            other.label()
                        ),
                    ));
                }
            }
        }
        match (errs.is_empty(), taken.is_empty()) {
            (true, true) => Ok(()),
            (true, false) => Err(ServiceError::Taken(taken)),
            _ => Err(ServiceError::Invalid(errs.into_iter().chain(taken).collect())),
        }
    }
}

#[async_trait::async_trait]
impl Backend for MappingService {
    async fn list(&self) -> Result<Vec<MappingView>, String> {
        MappingService::list(self).await.map_err(|e| e.to_string())
    }

    async fn get(&self, id: Uuid) -> Result<Option<MappingView>, String> {
        match MappingService::get(self, id).await {
            Ok(v) => Ok(Some(v)),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn counters(&self, id: Uuid) -> Option<sluice_app::model::MappingCounters> {
        MappingService::counters(self, id)
    }

    async fn history(&self, id: Uuid, range: Range) -> Result<Option<History>, String> {
        if Backend::get(self, id).await?.is_none() {
            return Ok(None);
        }
        self.metrics.history(id, range).await.map(Some).map_err(|e| format!("{e:#}"))
    }

    async fn overview(&self) -> Result<Vec<Overview>, String> {
        MappingService::overview(self).await.map_err(|e| e.to_string())
    }

    async fn reset_state(&self, id: Uuid) -> Result<Option<ResetState>, String> {
        let audit = match self.resets(id).await {
            Ok(a) => a,
            Err(ServiceError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let look = ResetRequest {
            strategy: Strategy::TrimHorizon,
            timestamp: None,
            offsets: None,
            shift_by: None,
            partitions: None,
            dry_run: true,
        };
        let current = self.reset(id, look, "console").await.map_err(|e| e.to_string());
        Ok(Some(ResetState { current, audit }))
    }

    async fn sample(&self, id: Uuid, n: usize) -> Result<Vec<sluice_app::filter::Sample>, String> {
        let m = Backend::get(self, id).await?.ok_or_else(|| format!("no mapping with UUID {id}"))?;
        let (servers, auth) = self.kafka_auth(id, &m.spec).await.map_err(|e| e.to_string())?;
        let topic = m.spec.topic().to_string();
        let mut samples = tokio::task::spawn_blocking(move || crate::sample::latest(&servers, &topic, &auth, n))
            .await
            .map_err(|e| e.to_string())??;
        if let Some(decoder) = self.decoder(id, &m.spec).await? {
            crate::sample::decode(&decoder, &mut samples).await;
        }
        Ok(samples)
    }

    async fn test_registry(
        &self,
        id: Option<Uuid>,
        mut registry: sluice_app::spec::SchemaRegistryConfig,
        schema_id: Option<String>,
    ) -> Result<String, String> {
        // Editing: the stored secrets (never shown) count, for the same registry.
        let stored = match id {
            Some(id) => Backend::get(self, id).await?.map(|m| m.spec),
            None => None,
        };
        let blank = || -> Result<MappingSpec, String> {
            let v =
                serde_json::json!({"FunctionName": "http://localhost/", "Topics": ["t"], "StartingPosition": "LATEST"});
            serde_json::from_value(v).map_err(|e| e.to_string())
        };
        let mut spec = match stored.clone() {
            Some(s) => s,
            None => blank()?,
        };
        if let Some(old) = stored.as_ref().and_then(|s| s.schema_registry()) {
            if old.schema_registry_uri == registry.schema_registry_uri {
                for c in &mut registry.access_configs {
                    if let Some(o) = old.access_configs.iter().find(|o| o.kind == c.kind) {
                        c.keep_secrets_from(o);
                    }
                }
            }
        }
        spec.amazon_managed_kafka_event_source_config = None;
        spec.self_managed_kafka_event_source_config.schema_registry_config = Some(registry);
        MappingService::test_registry(self, &spec, schema_id.as_deref()).await
    }

    async fn audit(&self, n: usize) -> Result<Vec<sluice_app::model::AuditEntry>, String> {
        self.auth.audit_log(n).await.map_err(|e| format!("{e:#}"))
    }

    async fn tokens(&self) -> Result<Vec<sluice_app::model::TokenView>, String> {
        self.auth.tokens().await.map_err(|e| format!("{e:#}"))
    }

    async fn failures(
        &self,
        id: Uuid,
        filter: sluice_app::failures::FailureFilter,
        marker: Option<String>,
    ) -> Result<sluice_app::failures::FailurePage, String> {
        MappingService::failures(self, id, &filter, marker.as_deref(), 100).await.map_err(|e| e.to_string())
    }

    async fn redrives(&self, id: Uuid) -> Result<Vec<sluice_app::failures::RedriveJob>, String> {
        self.redrive_jobs(id).await.map_err(|e| e.to_string())
    }

    async fn redrive_job(&self, id: Uuid, job: String) -> Result<Option<sluice_app::failures::RedriveJob>, String> {
        MappingService::redrive_job(self, id, &job).await.map_err(|e| e.to_string())
    }

    async fn failed_record(
        &self,
        id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Option<sluice_app::filter::Sample>, String> {
        MappingService::failed_record(self, id, partition, offset).await.map_err(|e| e.to_string())
    }

    fn system(&self) -> sluice_app::model::SystemInfo {
        let mut info = self.system.lock().unwrap_or_else(|e| e.into_inner()).clone();
        info.node = self.shared.node.id.clone();
        info.database_problem = self.shared.node.db_error().map(|(e, secs)| {
            format!(
                "Sluice cannot write to its database (for {secs} s): {e}. Saving changes fails until it can; \
                 pollers keep processing and committing offsets to Kafka, and statuses and metrics are \
                 written once it can."
            )
        });
        info
    }

    async fn nodes(&self) -> Result<Vec<sluice_app::model::NodeView>, String> {
        MappingService::nodes(self).await.map_err(|e| e.to_string())
    }

    async fn resets(&self, id: Uuid) -> Result<Vec<ResetAudit>, String> {
        match MappingService::resets(self, id).await {
            Ok(a) => Ok(a),
            Err(ServiceError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn insight(&self, id: Uuid) -> Result<Option<Insight>, String> {
        match MappingService::insight(self, id).await {
            Ok(i) => Ok(Some(i)),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn plan_error(e: reset::PlanError) -> ServiceError {
    match e {
        reset::PlanError::Invalid(errs) => ServiceError::Invalid(errs),
        reset::PlanError::Kafka(m) => ServiceError::Kafka(format!("Kafka: {m}")),
    }
}

/// Takes a mapping out of the set of resets in progress when dropped.
struct Release<'a>(&'a std::sync::Mutex<std::collections::HashSet<Uuid>>, Uuid);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Lets the engine start the mapping's pollers again when dropped (also on
/// an error or a cancelled request).
struct Unhold<'a>(&'a MappingService, Uuid);

impl Drop for Unhold<'_> {
    fn drop(&mut self) {
        self.0.shared.holds.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
        self.0.shared.changes.wake();
        let (store, id, changes) = (self.0.shared.store.clone(), self.1, self.0.shared.changes.clone());
        tokio::spawn(async move {
            if let Err(e) = store.unhold(id).await {
                // The hold is ignored once this node is counted out; until
                // then the mapping stays stopped, so say so.
                tracing::error!(mapping = %id, "cannot release the reset's hold: {e:#}");
            }
            changes.publish(Some(id)).await;
        });
    }
}

/// One row of the overview, from the mapping's last 15 minutes of points.
fn overview_of(m: &MappingView, recent: &[sluice_app::metrics::MetricPoint], now: i64) -> Overview {
    let window: Vec<_> = recent.iter().filter(|p| p.time > now - HEALTH_WINDOW_MS).cloned().collect();
    let (health, reason) = judge(m.spec.enabled, &m.status.last_processing_result, &window);
    let last_minute = total(&recent.iter().filter(|p| p.time > now - 60_000).cloned().collect::<Vec<_>>());
    let t = total(&window);
    Overview {
        uuid: m.uuid,
        health,
        reason,
        offset_lag: recent.iter().rev().find_map(|p| p.total_lag()),
        lag_sparkline: bucket(recent, 15_000)
            .iter()
            .filter_map(|p| p.total_lag().map(|l| (p.time, l as f64)))
            .collect(),
        start: now - LIVE_WINDOW,
        end: now,
        records_per_s: if last_minute.period_ms > 0 { last_minute.rate(last_minute.polled_event_count) } else { 0.0 },
        error_rate: (t.invocations > 0).then(|| t.errors as f64 / t.invocations as f64),
        failed_records: 0,
    }
}

/// The schema registry's stored secrets (never shown, so an edit sends them
/// back absent) are kept for the same type, as long as the registry is the
/// same: a changed URI must be given its secrets again.
fn keep_registry_secrets(before: &MappingSpec, spec: &mut MappingSpec, dropped: &mut Vec<FieldError>) {
    let Some(old) = before.schema_registry() else { return };
    let block = if spec.self_managed_kafka_event_source_config.schema_registry_config.is_some() {
        "SelfManagedKafkaEventSourceConfig"
    } else {
        "AmazonManagedKafkaEventSourceConfig"
    };
    let Some(new) = spec.schema_registry_mut() else { return };
    let same_place = new.schema_registry_uri == old.schema_registry_uri;
    for (i, c) in new.access_configs.iter_mut().enumerate() {
        c.secret_stored = false;
        let Some(o) = old.access_configs.iter().find(|o| o.kind == c.kind) else { continue };
        if same_place {
            c.keep_secrets_from(o);
        } else if (c.password.is_none() && o.password.is_some()) || (c.private_key.is_none() && o.private_key.is_some())
        {
            dropped.push(FieldError::new(
                format!("{block}.SchemaRegistryConfig.AccessConfigs[{i}]"),
                "the stored secret is only sent to the registry it was given for: the SchemaRegistryURI changed, so give it again",
            ));
        }
    }
}
