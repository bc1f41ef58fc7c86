//! Mapping storage: specs and statuses, apart. Runs on `sqlx::Any`, so the
//! callers stay the same whichever database URL the user gives (SQLite now;
//! PostgreSQL needs only its driver feature and a test run).

use anyhow::{Context, Result};
use sluice_app::metrics::MetricPoint;
use sluice_app::reset::ResetAudit;
use sluice_app::model::{MappingState, MappingStatus, MappingView};
use sluice_app::spec::MappingSpec;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SELECT: &str = "SELECT m.uuid, m.spec, m.updated_ms, s.state, s.state_transition_reason, \
     s.last_processing_result FROM mappings m LEFT JOIN mapping_status s ON s.uuid = m.uuid";

impl Store {
    /// Connects and applies the migrations in `migrations/`.
    pub async fn open(url: &str) -> Result<Store> {
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
        sqlx::migrate!("../migrations")
            .run(&pool)
            .await
            .context("cannot apply the database migrations")?;
        Ok(Store { pool })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<MappingView>> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY m.created_ms, m.uuid"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_view).collect()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<MappingView>> {
        let row = sqlx::query(&format!("{SELECT} WHERE m.uuid = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_view).transpose()
    }

    /// Stores a new mapping with its first status, in one transaction.
    pub async fn insert(&self, id: Uuid, spec: &MappingSpec, status: &MappingStatus) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO mappings (uuid, spec, version, created_ms, updated_ms) VALUES ($1, $2, 1, $3, $3)")
            .bind(id.to_string())
            .bind(serde_json::to_string(spec)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        upsert_status(&mut tx, id, status).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a spec (and the status the change implies). False if the
    /// mapping does not exist.
    pub async fn update(&self, id: Uuid, spec: &MappingSpec, status: &MappingStatus) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE mappings SET spec = $1, version = version + 1, updated_ms = $2 WHERE uuid = $3")
            .bind(serde_json::to_string(spec)?)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        upsert_status(&mut tx, id, status).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every spec with its version, for the reconciler.
    pub async fn list_specs(&self) -> Result<Vec<(Uuid, MappingSpec, i64)>> {
        let rows = sqlx::query("SELECT uuid, spec, version FROM mappings").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let uuid: String = r.try_get("uuid")?;
                let spec: String = r.try_get("spec")?;
                Ok((
                    Uuid::parse_str(&uuid)?,
                    serde_json::from_str(&spec).with_context(|| format!("mapping {uuid} has an unreadable spec"))?,
                    r.try_get::<i64, _>("version")?,
                ))
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

    pub async fn set_result(&self, id: Uuid, result: &str) -> Result<()> {
        sqlx::query("UPDATE mapping_status SET last_processing_result = $1, updated_ms = $2 WHERE uuid = $3")
            .bind(result)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM mapping_status WHERE uuid = $1").bind(id.to_string()).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM metric_points WHERE uuid = $1").bind(id.to_string()).execute(&mut *tx).await?;
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
        sqlx::query("INSERT INTO offset_resets (id, uuid, time_ms, actor, request, partitions) VALUES ($1, $2, $3, $4, $5, $6)")
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
fn pack(p: &MetricPoint) -> Result<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&serde_json::to_vec(p)?)?;
    Ok(format!("gz:{}", base64::engine::general_purpose::STANDARD.encode(z.finish()?)))
}

fn unpack(s: &str) -> Result<MetricPoint> {
    use base64::Engine as _;
    let Some(b64) = s.strip_prefix("gz:") else { return Ok(serde_json::from_str(s)?) };
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(serde_json::from_reader(flate2::read::GzDecoder::new(&bytes[..]))?)
}

/// Metric history (see `crate::metrics`).
impl Store {
    /// Stores points of one resolution; a point already stored is replaced.
    pub async fn put_points(&self, resolution_ms: i64, points: &[(Uuid, MetricPoint)]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, p) in points {
            sqlx::query(
                "INSERT INTO metric_points (uuid, resolution_ms, time_ms, point) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (uuid, resolution_ms, time_ms) DO UPDATE SET point = excluded.point",
            )
            .bind(id.to_string())
            .bind(resolution_ms)
            .bind(p.time)
            .bind(pack(p)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points of one mapping with `after < time <= until`, oldest first.
    pub async fn points(&self, id: Uuid, resolution_ms: i64, after: i64, until: i64) -> Result<Vec<MetricPoint>> {
        let rows = sqlx::query(
            "SELECT point FROM metric_points WHERE uuid = $1 AND resolution_ms = $2 AND time_ms > $3 AND time_ms <= $4 \
             ORDER BY time_ms",
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
        let rows = sqlx::query("SELECT uuid, MAX(time_ms) AS t FROM metric_points WHERE resolution_ms = $1 GROUP BY uuid")
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

async fn upsert_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: Uuid,
    s: &MappingStatus,
) -> Result<()> {
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
    })
}
