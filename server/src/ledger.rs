//! The failure ledger's storage: every record a mapping gave up on (by its
//! coordinates and error, never its payload) and redrive jobs with each
//! record's result. Each node writes what its own pollers gave up on; any
//! node reads them all (one database).

use std::collections::HashMap;

use anyhow::Result;
use sluice_app::failures::{
    FailedRecord, FailureFilter, FailurePage, RecordRef, Redrive, RedriveJob, RedriveOutcome, RedriveResult,
};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::store::Store;

/// Most entries a mapping's ledger keeps: a function failing every record
/// would otherwise grow it as fast as records arrive.
pub const MAX_PER_MAPPING: usize = 1_000_000;

#[derive(Clone)]
pub struct Ledger {
    store: Store,
}

/// A value bound to a query built at run time.
enum Bind {
    Int(i64),
    Text(String),
}

const COLUMNS: &str = "part, record_offset, record_key, record_ts, condition, attempts, error, destination, \
     destination_message, failed_ms, redrive_ms, redrive_by, redrive_result, redrive_job";

fn row_to_record(r: &AnyRow) -> Result<FailedRecord> {
    let redrive_ms: Option<i64> = r.try_get("redrive_ms")?;
    let result: Option<String> = r.try_get("redrive_result")?;
    let redrive = match (redrive_ms, result.as_deref().and_then(RedriveResult::parse)) {
        (Some(at), Some(result)) => Some(Redrive {
            at,
            by: r.try_get::<Option<String>, _>("redrive_by")?.unwrap_or_default(),
            result,
            job: r.try_get::<Option<String>, _>("redrive_job")?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(FailedRecord {
        partition: r.try_get::<i32, _>("part")?,
        offset: r.try_get("record_offset")?,
        key: r.try_get("record_key")?,
        timestamp: r.try_get("record_ts")?,
        condition: r.try_get("condition")?,
        attempts: r.try_get::<i32, _>("attempts")? as u32,
        error: r.try_get("error")?,
        destination: r.try_get("destination")?,
        destination_message: r.try_get("destination_message")?,
        failed_at: r.try_get("failed_ms")?,
        redrive,
    })
}

/// `WHERE` clauses for a filter (after `uuid = $1`), appending the binds.
fn filter_sql(f: &FailureFilter, binds: &mut Vec<Bind>) -> String {
    fn add(sql: &mut String, clause: &str, b: Bind, binds: &mut Vec<Bind>) {
        binds.push(b);
        // `$1` is the mapping.
        sql.push_str(&clause.replace('?', &format!("${}", binds.len() + 1)));
    }
    let mut sql = String::new();
    if let Some(p) = f.partition {
        add(&mut sql, " AND part = ?", Bind::Int(p as i64), binds);
    }
    if let Some(c) = &f.condition {
        add(&mut sql, " AND condition = ?", Bind::Text(c.clone()), binds);
    }
    if let Some(t) = f.since {
        add(&mut sql, " AND failed_ms >= ?", Bind::Int(t), binds);
    }
    if let Some(t) = f.until {
        add(&mut sql, " AND failed_ms < ?", Bind::Int(t), binds);
    }
    match f.redrive.as_deref() {
        None => {}
        Some("None") => sql.push_str(" AND redrive_result IS NULL"),
        Some(r) => add(&mut sql, " AND redrive_result = ?", Bind::Text(r.to_string()), binds),
    }
    sql
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

/// A page marker: the last row's failure time and coordinates.
fn marker(r: &FailedRecord) -> String {
    format!("{}.{}.{}", r.failed_at, r.partition, r.offset)
}

fn parse_marker(m: &str) -> Option<(i64, i64, i64)> {
    let mut it = m.split('.').map(|s| s.parse::<i64>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

impl Ledger {
    pub fn new(store: &Store) -> Ledger {
        Ledger { store: store.clone() }
    }

    /// Records give-ups of `node`'s pollers. A record given up on again (after
    /// a reset) replaces its earlier entry and its redrive.
    pub async fn record(&self, id: Uuid, node: &str, records: &[FailedRecord]) -> Result<()> {
        let mut tx = self.store.pool().begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO failed_records (uuid, part, record_offset, record_key, record_ts, condition, attempts, \
                 error, destination, destination_message, failed_ms, node) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (uuid, part, record_offset) DO UPDATE SET record_key = excluded.record_key, \
                 record_ts = excluded.record_ts, condition = excluded.condition, attempts = excluded.attempts, \
                 error = excluded.error, destination = excluded.destination, \
                 destination_message = excluded.destination_message, failed_ms = excluded.failed_ms, \
                 node = excluded.node, redrive_ms = NULL, redrive_by = NULL, redrive_result = NULL, redrive_job = NULL",
            )
            .bind(id.to_string())
            .bind(r.partition)
            .bind(r.offset)
            .bind(r.key.as_deref())
            .bind(r.timestamp)
            .bind(&r.condition)
            .bind(r.attempts as i32)
            .bind(&r.error)
            .bind(&r.destination)
            .bind(r.destination_message.as_deref())
            .bind(r.failed_at)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of a mapping's failed records, newest first.
    pub async fn list(&self, id: Uuid, f: &FailureFilter, after: Option<&str>, max: usize) -> Result<FailurePage> {
        let mut binds = Vec::new();
        let filters = filter_sql(f, &mut binds);
        let count_sql = format!("SELECT COUNT(*) AS n FROM failed_records WHERE uuid = $1{filters}");
        let total: i64 = bind_all(sqlx::query(&count_sql).bind(id.to_string()), &binds)
            .fetch_one(self.store.pool())
            .await?
            .try_get("n")?;
        let mut page_binds = binds;
        let mut sql = format!("SELECT {COLUMNS} FROM failed_records WHERE uuid = $1{filters}");
        if let Some((t, p, o)) = after.and_then(parse_marker) {
            let n = page_binds.len() + 2;
            sql.push_str(&format!(
                " AND (failed_ms < ${n} OR (failed_ms = ${n} AND (part < ${} OR (part = ${} AND record_offset < ${}))))",
                n + 1,
                n + 1,
                n + 2
            ));
            page_binds.extend([Bind::Int(t), Bind::Int(p), Bind::Int(o)]);
        }
        sql.push_str(&format!(" ORDER BY failed_ms DESC, part DESC, record_offset DESC LIMIT {}", max + 1));
        let rows = bind_all(sqlx::query(&sql).bind(id.to_string()), &page_binds).fetch_all(self.store.pool()).await?;
        let mut failures = rows.iter().map(row_to_record).collect::<Result<Vec<_>>>()?;
        let next_marker = (failures.len() > max).then(|| {
            failures.truncate(max);
            marker(failures.last().expect("max > 0"))
        });
        Ok(FailurePage { failures, next_marker, total: total as u64 })
    }

    /// Every failed record matching `f`, in offset order per partition, at
    /// most `limit`.
    pub async fn select(&self, id: Uuid, f: &FailureFilter, limit: usize) -> Result<Vec<FailedRecord>> {
        let mut binds = Vec::new();
        let filters = filter_sql(f, &mut binds);
        let sql = format!(
            "SELECT {COLUMNS} FROM failed_records WHERE uuid = $1{filters} ORDER BY part, record_offset LIMIT {limit}"
        );
        let rows = bind_all(sqlx::query(&sql).bind(id.to_string()), &binds).fetch_all(self.store.pool()).await?;
        rows.iter().map(row_to_record).collect()
    }

    /// The entries of the records named (those in the ledger), in offset order.
    pub async fn get(&self, id: Uuid, refs: &[RecordRef]) -> Result<Vec<FailedRecord>> {
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(200) {
            let mut sql = format!("SELECT {COLUMNS} FROM failed_records WHERE uuid = $1 AND (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!("(part = ${} AND record_offset = ${})", 2 * i + 2, 2 * i + 3));
            }
            sql.push(')');
            let mut q = sqlx::query(&sql).bind(id.to_string());
            for r in chunk {
                q = q.bind(r.partition).bind(r.offset);
            }
            for row in q.fetch_all(self.store.pool()).await? {
                out.push(row_to_record(&row)?);
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        Ok(out)
    }

    /// Failed records per mapping not redriven successfully (the overview,
    /// Prometheus).
    pub async fn open_counts(&self) -> Result<HashMap<Uuid, u64>> {
        let rows = sqlx::query(
            "SELECT uuid, COUNT(*) AS n FROM failed_records \
             WHERE redrive_result IS NULL OR redrive_result <> 'Succeeded' GROUP BY uuid",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut out = HashMap::new();
        for r in rows {
            if let Ok(id) = Uuid::parse_str(&r.try_get::<String, _>("uuid")?) {
                out.insert(id, r.try_get::<i64, _>("n")? as u64);
            }
        }
        Ok(out)
    }

    /// Forgets failures (and finished redrives) from before `before`.
    pub async fn purge(&self, before: i64) -> Result<u64> {
        let pool = self.store.pool();
        let n = sqlx::query("DELETE FROM failed_records WHERE failed_ms < $1").bind(before).execute(pool).await?;
        sqlx::query(
            "DELETE FROM redrive_results WHERE job IN \
             (SELECT id FROM redrive_jobs WHERE finished_ms IS NOT NULL AND finished_ms < $1)",
        )
        .bind(before)
        .execute(pool)
        .await?;
        sqlx::query("DELETE FROM redrive_jobs WHERE finished_ms IS NOT NULL AND finished_ms < $1")
            .bind(before)
            .execute(pool)
            .await?;
        Ok(n.rows_affected())
    }

    /// Keeps a mapping's newest `keep` entries (about: ties at the cut stay),
    /// letting older ones go; answers how many went.
    pub async fn trim(&self, id: Uuid, keep: usize) -> Result<u64> {
        let cut = sqlx::query(&format!(
            "SELECT failed_ms FROM failed_records WHERE uuid = $1 ORDER BY failed_ms DESC LIMIT 1 OFFSET {keep}"
        ))
        .bind(id.to_string())
        .fetch_optional(self.store.pool())
        .await?;
        let Some(cut) = cut else { return Ok(0) };
        let cut: i64 = cut.try_get("failed_ms")?;
        let n = sqlx::query("DELETE FROM failed_records WHERE uuid = $1 AND failed_ms <= $2")
            .bind(id.to_string())
            .bind(cut)
            .execute(self.store.pool())
            .await?;
        Ok(n.rows_affected())
    }

    /// A mapping deleted: its ledger and redrives go with it.
    pub async fn forget(&self, id: Uuid) -> Result<()> {
        let pool = self.store.pool();
        let id = id.to_string();
        sqlx::query("DELETE FROM redrive_results WHERE job IN (SELECT id FROM redrive_jobs WHERE uuid = $1)")
            .bind(&id)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM redrive_jobs WHERE uuid = $1").bind(&id).execute(pool).await?;
        sqlx::query("DELETE FROM failed_records WHERE uuid = $1").bind(&id).execute(pool).await?;
        Ok(())
    }

    /// A new redrive of `records`, all pending.
    pub async fn start_job(&self, job: &RedriveJob, node: &str, records: &[RecordRef]) -> Result<()> {
        let mut tx = self.store.pool().begin().await?;
        sqlx::query(
            "INSERT INTO redrive_jobs (id, uuid, actor, started_ms, total, succeeded, failed, gone, node) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6)",
        )
        .bind(&job.job_id)
        .bind(job.uuid.to_string())
        .bind(&job.by)
        .bind(job.started_at)
        .bind(records.len() as i64)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        for r in records {
            sqlx::query(
                "INSERT INTO redrive_results (job, part, record_offset, result, at_ms) VALUES ($1, $2, $3, 'Pending', 0)",
            )
            .bind(&job.job_id)
            .bind(r.partition)
            .bind(r.offset)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE failed_records SET redrive_ms = $1, redrive_by = $2, redrive_result = 'Pending', redrive_job = $3 \
                 WHERE uuid = $4 AND part = $5 AND record_offset = $6",
            )
            .bind(job.started_at)
            .bind(&job.by)
            .bind(&job.job_id)
            .bind(job.uuid.to_string())
            .bind(r.partition)
            .bind(r.offset)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records results of a redrive: the job's counts, each record's result,
    /// and the ledger's entry (a record that failed again keeps the new error).
    pub async fn put_results(&self, id: Uuid, job: &str, outcomes: &[RedriveOutcome]) -> Result<()> {
        let mut tx = self.store.pool().begin().await?;
        let count = |r: RedriveResult| outcomes.iter().filter(|o| o.result == r).count() as i64;
        sqlx::query(
            "UPDATE redrive_jobs SET succeeded = succeeded + $1, failed = failed + $2, gone = gone + $3 WHERE id = $4",
        )
        .bind(count(RedriveResult::Succeeded))
        .bind(count(RedriveResult::Failed))
        .bind(count(RedriveResult::Gone))
        .bind(job)
        .execute(&mut *tx)
        .await?;
        for o in outcomes {
            sqlx::query(
                "UPDATE redrive_results SET result = $1, error = $2, at_ms = $3 WHERE job = $4 AND part = $5 AND record_offset = $6",
            )
            .bind(o.result.as_str())
            .bind(o.error.as_deref())
            .bind(o.at)
            .bind(job)
            .bind(o.partition)
            .bind(o.offset)
            .execute(&mut *tx)
            .await?;
            // A later failure of the record (a new entry) is not this job's to change.
            let mut sql = String::from("UPDATE failed_records SET redrive_result = $1, redrive_ms = $2");
            if o.result == RedriveResult::Failed {
                sql.push_str(", error = $7");
            }
            sql.push_str(" WHERE uuid = $3 AND part = $4 AND record_offset = $5 AND redrive_job = $6");
            let mut q = sqlx::query(&sql)
                .bind(o.result.as_str())
                .bind(o.at)
                .bind(id.to_string())
                .bind(o.partition)
                .bind(o.offset)
                .bind(job);
            if o.result == RedriveResult::Failed {
                q = q.bind(o.error.as_deref().unwrap_or_default());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The job ended (`error`: why it stopped early; its pending records
    /// are left pending no more: they count as failed).
    pub async fn finish_job(&self, id: Uuid, job: &str, error: Option<&str>) -> Result<()> {
        let now = crate::clock::now_ms();
        if let Some(e) = error {
            let pending =
                sqlx::query("SELECT part, record_offset FROM redrive_results WHERE job = $1 AND result = 'Pending'")
                    .bind(job)
                    .fetch_all(self.store.pool())
                    .await?;
            let outcomes = pending
                .iter()
                .map(|r| {
                    Ok(RedriveOutcome {
                        partition: r.try_get::<i32, _>("part")?,
                        offset: r.try_get("record_offset")?,
                        result: RedriveResult::Failed,
                        error: Some(e.to_string()),
                        at: now,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.put_results(id, job, &outcomes).await?;
        }
        sqlx::query("UPDATE redrive_jobs SET finished_ms = $1, error = $2 WHERE id = $3")
            .bind(now)
            .bind(error)
            .bind(job)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// A redrive job, with each record's result when `results`.
    pub async fn job(&self, id: Uuid, job: &str, results: bool) -> Result<Option<RedriveJob>> {
        let row = sqlx::query(
            "SELECT id, actor, started_ms, finished_ms, total, succeeded, failed, gone, error FROM redrive_jobs \
             WHERE id = $1 AND uuid = $2",
        )
        .bind(job)
        .bind(id.to_string())
        .fetch_optional(self.store.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let mut j = job_from_row(id, &r)?;
        if results {
            let rows = sqlx::query(
                "SELECT part, record_offset, result, error, at_ms FROM redrive_results WHERE job = $1 \
                 ORDER BY part, record_offset",
            )
            .bind(job)
            .fetch_all(self.store.pool())
            .await?;
            j.results = rows
                .iter()
                .map(|r| {
                    Ok(RedriveOutcome {
                        partition: r.try_get::<i32, _>("part")?,
                        offset: r.try_get("record_offset")?,
                        result: RedriveResult::parse(&r.try_get::<String, _>("result")?)
                            .unwrap_or(RedriveResult::Pending),
                        error: r.try_get("error")?,
                        at: r.try_get("at_ms")?,
                    })
                })
                .collect::<Result<_>>()?;
        }
        Ok(Some(j))
    }

    /// A mapping's redrives, newest first (without per-record results).
    pub async fn jobs(&self, id: Uuid, max: usize) -> Result<Vec<RedriveJob>> {
        let rows = sqlx::query(&format!(
            "SELECT id, actor, started_ms, finished_ms, total, succeeded, failed, gone, error FROM redrive_jobs \
             WHERE uuid = $1 ORDER BY started_ms DESC, id LIMIT {max}"
        ))
        .bind(id.to_string())
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(|r| job_from_row(id, r)).collect()
    }

    /// Jobs left running by nodes not `alive` (stopped or died mid-way):
    /// ended, so nobody waits on them.
    pub async fn abandon_jobs(&self, alive: &[String]) -> Result<()> {
        let rows = sqlx::query("SELECT id, uuid, node FROM redrive_jobs WHERE finished_ms IS NULL")
            .fetch_all(self.store.pool())
            .await?;
        for r in rows {
            if alive.contains(&r.try_get::<String, _>("node")?) {
                continue;
            }
            let (job, id): (String, String) = (r.try_get("id")?, r.try_get("uuid")?);
            if let Ok(id) = Uuid::parse_str(&id) {
                self.finish_job(id, &job, Some("the node running the redrive stopped before it ended")).await?;
            }
        }
        Ok(())
    }
}

fn job_from_row(id: Uuid, r: &AnyRow) -> Result<RedriveJob> {
    let finished_at: Option<i64> = r.try_get("finished_ms")?;
    Ok(RedriveJob {
        job_id: r.try_get("id")?,
        uuid: id,
        state: if finished_at.is_some() { "Done" } else { "Running" }.into(),
        by: r.try_get("actor")?,
        started_at: r.try_get("started_ms")?,
        finished_at,
        total: r.try_get::<i64, _>("total")? as u64,
        succeeded: r.try_get::<i64, _>("succeeded")? as u64,
        failed: r.try_get::<i64, _>("failed")? as u64,
        gone: r.try_get::<i64, _>("gone")? as u64,
        error: r.try_get("error")?,
        results: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn markers_round_trip() {
        assert_eq!(super::parse_marker("1700000000000.3.42"), Some((1700000000000, 3, 42)));
        assert_eq!(super::parse_marker("1.2"), None);
        assert_eq!(super::parse_marker("a.b.c"), None);
    }
}
