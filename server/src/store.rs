//! Mapping storage: specs and statuses, apart. Runs on `sqlx::Any`, so the
//! callers stay the same whichever database URL the user gives (SQLite for
//! one node, PostgreSQL for one or several; see `crate::cluster`).

use anyhow::{Context, Result};
use sluice_app::metrics::MetricPoint;
use sluice_app::model::{MappingState, MappingStatus, MappingView};
use sluice_app::reset::ResetAudit;
use sluice_app::spec::MappingSpec;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    url: String,
    sealer: std::sync::Arc<crate::secrets::Sealer>,
}

/// The spec as stored: secrets are left out by serialization; which
/// configurations have one is recorded, for the console and the API.
fn stored(spec: &MappingSpec) -> MappingSpec {
    let mut s = spec.clone();
    for c in s.access_configs_mut() {
        c.secret_stored = c.secrets().iter().any(Option::is_some);
    }
    s
}

use crate::clock::now_ms;
use crate::problem::Processing;

const SELECT: &str = "SELECT m.uuid, m.spec, m.updated_ms, s.state, s.state_transition_reason, \
     s.last_processing_result, x.sealed FROM mappings m LEFT JOIN mapping_status s ON s.uuid = m.uuid \
     LEFT JOIN mapping_secrets x ON x.uuid = m.uuid";

impl Store {
    /// Connects and applies the migrations in `migrations/`; secrets are
    /// sealed with a key that lasts as long as the process.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, crate::secrets::Sealer::ephemeral()).await
    }

    /// As `open`, sealing secrets with `sealer` (the node's key).
    pub async fn open_with(url: &str, sealer: crate::secrets::Sealer) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .with_context(|| format!("cannot open the database at {url}"))?;
        if url.starts_with("sqlite:") {
            // WAL lets the console read while the engine writes.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        sqlx::migrate!("../migrations").run(&pool).await.context("cannot apply the database migrations")?;
        Ok(Store { pool, url: url.to_string(), sealer: std::sync::Arc::new(sealer) })
    }

    /// PostgreSQL: the database several nodes can share (LISTEN/NOTIFY,
    /// advisory locks). SQLite is one node's.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres:") || self.url.starts_with("postgresql:")
    }

    /// The node's key, for MACs outside the mappings (`crate::auth`).
    pub fn sealer(&self) -> &crate::secrets::Sealer {
        &self.sealer
    }

    /// For modules that keep their own tables (`crate::auth`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Tells every node listening on `channel` (PostgreSQL; a no-op on
    /// SQLite, where this node is the only one).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if self.is_postgres() {
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&self.pool).await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<MappingView>> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY m.created_ms, m.uuid")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.row_to_view(r)).collect()
    }

    /// Without tags (see `tags`): the engine and the exporters read
    /// mappings often and never need them.
    pub async fn get(&self, id: Uuid) -> Result<Option<MappingView>> {
        let row =
            sqlx::query(&format!("{SELECT} WHERE m.uuid = $1")).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| self.row_to_view(r)).transpose()
    }

    /// Mappings' tags by UUID: one mapping's, or (None) every mapping's.
    pub async fn tags(
        &self,
        id: Option<Uuid>,
    ) -> Result<std::collections::HashMap<Uuid, std::collections::BTreeMap<String, String>>> {
        let rows = match id {
            Some(id) => {
                sqlx::query("SELECT uuid, tag_key, tag_value FROM mapping_tags WHERE uuid = $1")
                    .bind(id.to_string())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query("SELECT uuid, tag_key, tag_value FROM mapping_tags").fetch_all(&self.pool).await?,
        };
        let mut out = std::collections::HashMap::<Uuid, std::collections::BTreeMap<String, String>>::new();
        for r in rows {
            let uuid: String = r.try_get("uuid")?;
            let id = Uuid::parse_str(&uuid).context("a stored tag has a malformed UUID")?;
            out.entry(id).or_default().insert(r.try_get("tag_key")?, r.try_get("tag_value")?);
        }
        Ok(out)
    }

    /// Adds or overwrites `tags` and removes `remove`, in one transaction.
    pub async fn change_tags(
        &self,
        id: Uuid,
        tags: &std::collections::BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for k in remove.iter().chain(tags.keys()) {
            sqlx::query("DELETE FROM mapping_tags WHERE uuid = $1 AND tag_key = $2")
                .bind(id.to_string())
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        for (k, v) in tags {
            sqlx::query("INSERT INTO mapping_tags (uuid, tag_key, tag_value) VALUES ($1, $2, $3)")
                .bind(id.to_string())
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The row as a view, its secrets put back (they never serialize).
    fn row_to_view(&self, r: &AnyRow) -> Result<MappingView> {
        let mut v = row_to_view(r)?;
        let uuid = v.uuid.to_string();
        self.unseal(&uuid, r.try_get("sealed")?, &mut v.spec);
        Ok(v)
    }

    /// A mapping whose secrets cannot be read runs without them (its
    /// brokers then say why in its status) instead of failing every read.
    fn unseal(&self, uuid: &str, sealed: Option<String>, spec: &mut MappingSpec) {
        if let Some(s) = sealed {
            if let Err(e) = self.sealer.unseal_into(&s, spec) {
                tracing::error!(mapping = uuid, "{e:#}");
            }
        }
    }

    async fn put_secrets(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: Uuid, spec: &MappingSpec) -> Result<()> {
        sqlx::query("DELETE FROM mapping_secrets WHERE uuid = $1").bind(id.to_string()).execute(&mut **tx).await?;
        if let Some(sealed) = self.sealer.seal_spec(spec)? {
            sqlx::query("INSERT INTO mapping_secrets (uuid, sealed) VALUES ($1, $2)")
                .bind(id.to_string())
                .bind(sealed)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Stores a new mapping with its first status, in one transaction.
    pub async fn insert(&self, id: Uuid, spec: &MappingSpec, status: &MappingStatus) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO mappings (uuid, spec, version, created_ms, updated_ms) VALUES ($1, $2, 1, $3, $3)")
            .bind(id.to_string())
            .bind(serde_json::to_string(&stored(spec))?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.put_secrets(&mut tx, id, spec).await?;
        upsert_status(&mut tx, id, status).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a spec (and the status the change implies). False if the
    /// mapping does not exist.
    pub async fn update(&self, id: Uuid, spec: &MappingSpec, status: &MappingStatus) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE mappings SET spec = $1, version = version + 1, updated_ms = $2 WHERE uuid = $3")
            .bind(serde_json::to_string(&stored(spec))?)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        self.put_secrets(&mut tx, id, spec).await?;
        upsert_status(&mut tx, id, status).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every spec with its version, for the reconciler.
    pub async fn list_specs(&self) -> Result<Vec<(Uuid, MappingSpec, i64)>> {
        let rows = sqlx::query(
            "SELECT m.uuid, m.spec, m.version, x.sealed FROM mappings m LEFT JOIN mapping_secrets x ON x.uuid = m.uuid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let uuid: String = r.try_get("uuid")?;
                let spec: String = r.try_get("spec")?;
                let mut spec: MappingSpec =
                    serde_json::from_str(&spec).with_context(|| format!("mapping {uuid} has an unreadable spec"))?;
                self.unseal(&uuid, r.try_get("sealed")?, &mut spec);
                Ok((Uuid::parse_str(&uuid)?, spec, r.try_get::<i64, _>("version")?))
            })
            .collect()
    }

    /// The engine's report. A no-op if the mapping was deleted meanwhile.
    pub async fn set_status(&self, id: Uuid, s: &MappingStatus) -> Result<()> {
        sqlx::query(
            "UPDATE mapping_status SET state = $1, state_transition_reason = $2, last_processing_result = $3, \
             updated_ms = $4 WHERE uuid = $5",
        )
        .bind(s.state.as_str())
        .bind(&s.state_transition_reason)
        .bind(&s.last_processing_result)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets what the engine last saw; authentication and authorization
    /// problems also become the StateTransitionReason (AWS's codes), and
    /// leave it once they are over.
    pub async fn set_result(&self, id: Uuid, result: &Processing) -> Result<()> {
        let reason = result.refusal().unwrap_or("");
        let result = result.to_string();
        sqlx::query(
            "UPDATE mapping_status SET last_processing_result = $1, updated_ms = $2, state_transition_reason = CASE \
             WHEN $4 <> '' THEN $4 \
             WHEN state_transition_reason IN ('EVENT_SOURCE_AUTHN_ERROR', 'EVENT_SOURCE_AUTHZ_ERROR') THEN 'USER_INITIATED' \
             ELSE state_transition_reason END WHERE uuid = $3",
        )
            .bind(&result)
            .bind(now_ms())
            .bind(id.to_string())
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM mapping_status WHERE uuid = $1").bind(id.to_string()).execute(&mut *tx).await?;
        for table in ["metric_points", "mapping_holds", "mapping_pollers", "mapping_secrets", "mapping_tags"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE uuid = $1")).bind(id.to_string()).execute(&mut *tx).await?;
        }
        let n = sqlx::query("DELETE FROM mappings WHERE uuid = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}

/// The audit log of offset resets.
impl Store {
    pub async fn put_reset(&self, a: &ResetAudit) -> Result<()> {
        sqlx::query(
            "INSERT INTO offset_resets (id, uuid, time_ms, actor, request, partitions) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.id)
        .bind(a.uuid.to_string())
        .bind(a.time)
        .bind(&a.actor)
        .bind(serde_json::to_string(&a.request)?)
        .bind(serde_json::to_string(&a.partitions)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A mapping's resets, newest first.
    pub async fn resets(&self, id: Uuid) -> Result<Vec<ResetAudit>> {
        let rows = sqlx::query(
            "SELECT id, time_ms, actor, request, partitions FROM offset_resets WHERE uuid = $1 ORDER BY time_ms DESC, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ResetAudit {
                    id: r.try_get("id")?,
                    uuid: id,
                    time: r.try_get("time_ms")?,
                    actor: r.try_get("actor")?,
                    request: serde_json::from_str(&r.try_get::<String, _>("request")?)?,
                    partitions: serde_json::from_str(&r.try_get::<String, _>("partitions")?)?,
                })
            })
            .collect()
    }
}

/// A stored point: gzipped JSON in base64 (a point with 12 partitions
/// shrinks about fivefold; TEXT keeps the column the same on both databases).
pub fn pack(p: &MetricPoint) -> Result<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&serde_json::to_vec(p)?)?;
    Ok(format!("gz:{}", base64::engine::general_purpose::STANDARD.encode(z.finish()?)))
}

pub fn unpack(s: &str) -> Result<MetricPoint> {
    use base64::Engine as _;
    let Some(b64) = s.strip_prefix("gz:") else { return Ok(serde_json::from_str(s)?) };
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(serde_json::from_reader(flate2::read::GzDecoder::new(&bytes[..]))?)
}

/// Metric history (see `crate::metrics`).
impl Store {
    /// Stores points of one resolution measured by `node` ("" for a
    /// cluster-wide rollup); a point already stored is replaced.
    pub async fn put_points(&self, resolution_ms: i64, node: &str, points: &[(Uuid, MetricPoint)]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, p) in points {
            sqlx::query(
                "INSERT INTO metric_points (uuid, resolution_ms, time_ms, node, point) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (uuid, resolution_ms, time_ms, node) DO UPDATE SET point = excluded.point",
            )
            .bind(id.to_string())
            .bind(resolution_ms)
            .bind(p.time)
            .bind(node)
            .bind(pack(p)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points of one mapping with `after < time <= until`, oldest first,
    /// every node's (merging them in time order sums the nodes).
    pub async fn points(&self, id: Uuid, resolution_ms: i64, after: i64, until: i64) -> Result<Vec<MetricPoint>> {
        let rows = sqlx::query(
            "SELECT point FROM metric_points WHERE uuid = $1 AND resolution_ms = $2 AND time_ms > $3 AND time_ms <= $4 \
             ORDER BY time_ms, node",
        )
        .bind(id.to_string())
        .bind(resolution_ms)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| unpack(&r.try_get::<String, _>("point")?)).collect()
    }

    /// Per mapping, the end of its latest point of a resolution.
    pub async fn latest_points(&self, resolution_ms: i64) -> Result<Vec<(Uuid, i64)>> {
        let rows =
            sqlx::query("SELECT uuid, MAX(time_ms) AS t FROM metric_points WHERE resolution_ms = $1 GROUP BY uuid")
                .bind(resolution_ms)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((Uuid::parse_str(&r.try_get::<String, _>("uuid")?)?, r.try_get::<i64, _>("t")?)))
            .collect()
    }

    /// Drops points of a resolution that ended before `before`.
    pub async fn purge_points(&self, resolution_ms: i64, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM metric_points WHERE resolution_ms = $1 AND time_ms < $2")
            .bind(resolution_ms)
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// A node's heartbeat row (see `crate::cluster`).
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub leader: bool,
    /// Pollers per mapping on this node.
    pub running: std::collections::BTreeMap<String, u32>,
}

/// The cluster's shared state: nodes, holds and the autoscaler's choices.
impl Store {
    pub async fn heartbeat(&self, n: &NodeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, address, version, started_ms, heartbeat_ms, leader, running) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
             version = excluded.version, heartbeat_ms = excluded.heartbeat_ms, leader = excluded.leader, \
             running = excluded.running",
        )
        .bind(&n.id)
        .bind(&n.address)
        .bind(&n.version)
        .bind(n.started_ms)
        .bind(n.heartbeat_ms)
        .bind(n.leader as i64)
        .bind(serde_json::to_string(&n.running)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT id, address, version, started_ms, heartbeat_ms, leader, running FROM nodes ORDER BY started_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    version: r.try_get("version")?,
                    started_ms: r.try_get("started_ms")?,
                    heartbeat_ms: r.try_get("heartbeat_ms")?,
                    leader: r.try_get::<i64, _>("leader")? != 0,
                    running: serde_json::from_str(&r.try_get::<String, _>("running")?).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Forgets nodes not heard from since `before` (and a node leaving).
    pub async fn remove_nodes(&self, before: i64, id: Option<&str>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM nodes WHERE heartbeat_ms < $1 OR id = $2")
            .bind(before)
            .bind(id.unwrap_or(""))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Puts a hold on a mapping; false if another node holds it already.
    pub async fn hold(&self, id: Uuid, node: &str) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO mapping_holds (uuid, node, since_ms) VALUES ($1, $2, $3) ON CONFLICT (uuid) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(node)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn unhold(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM mapping_holds WHERE uuid = $1").bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// Held mappings with the node holding each.
    pub async fn holds(&self) -> Result<Vec<(Uuid, String)>> {
        let rows = sqlx::query("SELECT uuid, node FROM mapping_holds").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((Uuid::parse_str(&r.try_get::<String, _>("uuid")?)?, r.try_get("node")?))).collect()
    }

    pub async fn set_pollers(&self, id: Uuid, pollers: u32) -> Result<()> {
        sqlx::query(
            "INSERT INTO mapping_pollers (uuid, pollers, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (uuid) DO UPDATE SET pollers = excluded.pollers, updated_ms = excluded.updated_ms",
        )
        .bind(id.to_string())
        .bind(pollers as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pollers the autoscaler wants, per mapping (absent: not decided).
    pub async fn pollers(&self) -> Result<std::collections::HashMap<Uuid, u32>> {
        let rows = sqlx::query("SELECT uuid, pollers FROM mapping_pollers").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok((Uuid::parse_str(&r.try_get::<String, _>("uuid")?)?, r.try_get::<i64, _>("pollers")?.max(0) as u32))
            })
            .collect()
    }
}

async fn upsert_status(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: Uuid, s: &MappingStatus) -> Result<()> {
    sqlx::query(
        "INSERT INTO mapping_status (uuid, state, state_transition_reason, last_processing_result, updated_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uuid) DO UPDATE SET state = excluded.state, \
         state_transition_reason = excluded.state_transition_reason, \
         last_processing_result = excluded.last_processing_result, updated_ms = excluded.updated_ms",
    )
    .bind(id.to_string())
    .bind(s.state.as_str())
    .bind(&s.state_transition_reason)
    .bind(&s.last_processing_result)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn row_to_view(row: &AnyRow) -> Result<MappingView> {
    let uuid: String = row.try_get("uuid")?;
    let spec: String = row.try_get("spec")?;
    let updated_ms: i64 = row.try_get("updated_ms")?;
    let state: Option<String> = row.try_get("state")?;
    Ok(MappingView {
        uuid: Uuid::parse_str(&uuid).context("a stored mapping has a malformed UUID")?,
        spec: serde_json::from_str(&spec).with_context(|| format!("mapping {uuid} has an unreadable spec"))?,
        status: MappingStatus {
            state: state.as_deref().and_then(MappingState::parse).unwrap_or(MappingState::Creating),
            state_transition_reason: row.try_get::<Option<String>, _>("state_transition_reason")?.unwrap_or_default(),
            last_processing_result: row.try_get::<Option<String>, _>("last_processing_result")?.unwrap_or_default(),
        },
        last_modified: updated_ms as f64 / 1000.0,
        tags: Default::default(),
    })
}
