//! The failure ledger and redrives, as the API and the console use them. A
//! redrive runs on the node that was asked, as a task of its own; its
//! progress and each record's result are in the database, so any node
//! answers for it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_app::failures::{
    FailedRecord, FailureFilter, FailurePage, RecordRef, RedriveJob, RedriveOutcome, RedriveRequest, RedriveResult,
    REDRIVE_LIMIT,
};
use sluice_app::spec::{FieldError, FunctionResponseType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MappingService, ServiceError};
use crate::engine::redrive::{self, Redrive};
use crate::ledger::Ledger;

fn invalid((field, message): (String, String)) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::new(field, message)])
}

impl MappingService {
    fn ledger(&self) -> Ledger {
        Ledger::new(&self.shared.store)
    }

    /// The timeout of a redrive's HTTP invocations (the engine's).
    pub fn set_http_timeout(&self, d: Duration) {
        self.http_timeout.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// A page of the mapping's failed records, newest first.
    pub async fn failures(
        &self,
        id: Uuid,
        filter: &FailureFilter,
        marker: Option<&str>,
        max: usize,
    ) -> Result<FailurePage, ServiceError> {
        self.get(id).await?;
        filter.validate().map_err(invalid)?;
        Ok(self.ledger().list(id, filter, marker, max.clamp(1, 1000)).await?)
    }

    /// Failed records per mapping not redriven successfully (the overview's
    /// count, Prometheus).
    pub async fn open_failure_counts(&self) -> HashMap<Uuid, u64> {
        self.ledger().open_counts().await.unwrap_or_default()
    }

    /// Starts a redrive of the records `req` selects; answers the job.
    pub async fn redrive(&self, id: Uuid, req: &RedriveRequest, actor: &str) -> Result<RedriveJob, ServiceError> {
        let m = self.get(id).await?;
        req.validate().map_err(invalid)?;
        let ledger = self.ledger();
        let records: Vec<FailedRecord> = match &req.records {
            Some(refs) => {
                let found = ledger.get(id, refs).await?;
                let have: std::collections::HashSet<(i32, i64)> =
                    found.iter().map(|f| (f.partition, f.offset)).collect();
                if let Some(missing) = refs.iter().find(|r| !have.contains(&(r.partition, r.offset))) {
                    return Err(invalid((
                        "Records".into(),
                        format!(
                            "partition {} offset {} is not a failed record of this mapping",
                            missing.partition, missing.offset
                        ),
                    )));
                }
                found
            }
            None => {
                let found = ledger.select(id, &req.filter, REDRIVE_LIMIT + 1).await?;
                if found.len() > REDRIVE_LIMIT {
                    return Err(invalid((
                        "All".into(),
                        format!("more than {REDRIVE_LIMIT} records match; narrow the selection with filters"),
                    )));
                }
                found
            }
        };
        if records.is_empty() {
            return Err(invalid(("All".into(), "no failed record matches".into())));
        }
        // A record in a running redrive is not sent twice at once.
        let running: std::collections::HashSet<String> = {
            let mut r = self.redrives.lock().unwrap_or_else(|e| e.into_inner());
            r.retain(|_, (_, stop)| !stop.is_cancelled());
            r.keys().cloned().collect()
        };
        let busy = |r: &FailedRecord| {
            r.redrive.as_ref().is_some_and(|d| d.result == RedriveResult::Pending && running.contains(&d.job))
        };
        if records.iter().any(busy) {
            return Err(ServiceError::Conflict(
                "some of these records are being redriven now; wait for that redrive to end".into(),
            ));
        }
        let run = self.redriver(id, &m.spec).await?;
        let job = RedriveJob {
            job_id: Uuid::new_v4().to_string(),
            uuid: id,
            state: "Running".into(),
            by: actor.to_string(),
            started_at: crate::clock::now_ms(),
            finished_at: None,
            total: records.len() as u64,
            succeeded: 0,
            failed: 0,
            gone: 0,
            error: None,
            results: Vec::new(),
        };
        let refs: Vec<RecordRef> =
            records.iter().map(|r| RecordRef { partition: r.partition, offset: r.offset }).collect();
        ledger.start_job(&job, &self.shared.node.id, &refs).await?;
        let stop = CancellationToken::new();
        self.redrives.lock().unwrap_or_else(|e| e.into_inner()).insert(job.job_id.clone(), (id, stop.clone()));
        tracing::info!(mapping = %id, job = %job.job_id, records = records.len(), %actor, "redrive started");
        tokio::spawn(drive(ledger, id, job.job_id.clone(), Arc::new(run), records, stop));
        Ok(job)
    }

    /// How a redrive of `spec`'s records reads and invokes: its Kafka
    /// sign-in and schema registry, and a client of its function of its own.
    async fn redriver(&self, id: Uuid, spec: &sluice_app::spec::MappingSpec) -> Result<Redrive, ServiceError> {
        let (servers, auth) = self.kafka_auth(id, spec).await.map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let decoder = self.decoder(id, spec).await.map_err(ServiceError::Kafka)?.map(Arc::new);
        let aws = match crate::engine::target::needs_aws(spec) {
            true => Some(self.shared.aws.for_mapping(id, spec).await),
            false => None,
        };
        let reach = self.reach.read().unwrap_or_else(|e| e.into_inner()).clone();
        let timeout = Duration::from_millis(self.http_timeout.load(Ordering::Relaxed));
        let target = crate::engine::target::build(spec, aws.as_ref(), timeout, &reach)
            .map_err(|e| ServiceError::Conflict(format!("cannot call the function: {e}")))?;
        Ok(Redrive {
            servers,
            topic: spec.topic().to_string(),
            auth,
            decoder,
            target,
            source: crate::engine::event::EventSource::of(spec),
            batch_size: spec.batch_size.clamp(1, 10_000) as usize,
            max_payload: crate::engine::event::MAX_PAYLOAD_BYTES,
            // A redrive is asked for: it tries a few times, never forever.
            max_retries: if spec.maximum_retry_attempts >= 0 {
                (spec.maximum_retry_attempts as u32).min(10)
            } else {
                3
            },
            report_item_failures: spec.function_response_types.contains(&FunctionResponseType::ReportBatchItemFailures),
            partitions_at_once: 4,
        })
    }

    /// A redrive job with each record's result.
    pub async fn redrive_job(&self, id: Uuid, job: &str) -> Result<Option<RedriveJob>, ServiceError> {
        self.get(id).await?;
        Ok(self.ledger().job(id, job, true).await?)
    }

    /// The mapping's redrives, newest first.
    pub async fn redrive_jobs(&self, id: Uuid) -> Result<Vec<RedriveJob>, ServiceError> {
        self.get(id).await?;
        Ok(self.ledger().jobs(id, 20).await?)
    }

    /// One record of the topic, as the filter tester shows it (decoded with
    /// the mapping's schema registry). None: the topic no longer holds it.
    pub async fn failed_record(
        &self,
        id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Option<sluice_app::filter::Sample>, ServiceError> {
        let m = self.get(id).await?;
        let (servers, auth) = self.kafka_auth(id, &m.spec).await.map_err(|e| ServiceError::Kafka(e.to_string()))?;
        let topic = m.spec.topic().to_string();
        let found = tokio::task::spawn_blocking(move || redrive::read_one(&servers, &topic, &auth, partition, offset))
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?
            .map_err(ServiceError::Kafka)?;
        let Some(mut sample) = found.map(|m| crate::sample::sample_of(&m)) else { return Ok(None) };
        if let Some(decoder) = self.decoder(id, &m.spec).await.map_err(ServiceError::Kafka)? {
            crate::sample::decode(&decoder, std::slice::from_mut(&mut sample)).await;
        }
        Ok(Some(sample))
    }

    /// Ends redrives a stopped node left running (at start-up: on SQLite
    /// all of them; on PostgreSQL those of nodes no longer alive).
    pub async fn end_abandoned_redrives(&self) {
        let now = crate::clock::now_ms();
        let alive: Vec<String> = match self.shared.store.is_postgres() {
            true => match self.shared.store.nodes().await {
                Ok(rows) => rows.iter().filter(|n| crate::shared::node::alive(n, now)).map(|n| n.id.clone()).collect(),
                Err(e) => return tracing::warn!("cannot end abandoned redrives: {e:#}"),
            },
            false => vec![],
        };
        if let Err(e) = self.ledger().abandon_jobs(&alive).await {
            tracing::warn!("cannot end abandoned redrives: {e:#}");
        }
    }

    /// A mapping deleted: its redrives stop, its ledger goes.
    pub(super) async fn forget_failures(&self, id: Uuid) {
        for (_, (mapping, stop)) in self.redrives.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *mapping == id {
                stop.cancel();
            }
        }
        if let Err(e) = self.ledger().forget(id).await {
            tracing::warn!(mapping = %id, "cannot delete the failure ledger: {e:#}");
        }
    }

    /// Stops this node's redrives (shutdown): they end as failed, saying so.
    pub fn stop_redrives(&self) {
        for (_, (_, stop)) in self.redrives.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            stop.cancel();
        }
    }
}

/// Runs one redrive, writing results as they come (a few times a second).
async fn drive(
    ledger: Ledger,
    id: Uuid,
    job: String,
    run: Arc<Redrive>,
    records: Vec<FailedRecord>,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<RedriveOutcome>>();
    let work = tokio::spawn(redrive::run(run, records, stop.clone(), tx));
    let mut pending: Vec<RedriveOutcome> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut open = true;
    while open || !pending.is_empty() {
        let ticked = tokio::select! {
            got = rx.recv(), if open => {
                match got {
                    Some(mut o) => pending.append(&mut o),
                    None => open = false,
                }
                false
            }
            _ = tick.tick() => true,
        };
        if pending.is_empty() || !(ticked || !open || pending.len() >= 500) {
            continue;
        }
        match ledger.put_results(id, &job, &pending).await {
            Ok(()) => pending.clear(),
            Err(e) if open => tracing::warn!(mapping = %id, %job, "cannot write redrive results: {e:#}"),
            Err(e) => {
                tracing::error!(mapping = %id, %job, "cannot write redrive results: {e:#}");
                break;
            }
        }
    }
    let _ = work.await;
    let error = stop.is_cancelled().then_some("the redrive was stopped (the mapping was deleted, or the node stopped)");
    if let Err(e) = ledger.finish_job(id, &job, error).await {
        tracing::warn!(mapping = %id, %job, "cannot end the redrive: {e:#}");
    }
    tracing::info!(mapping = %id, %job, "redrive ended");
    stop.cancel();
}
