//! The JSON REST API under `/api/v1`, in AWS's field names.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::AppState;
use sluice_app::metrics::Range;
use sluice_app::spec::FieldError;

use crate::service::{spec_from_json, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/mappings", get(list).post(create))
        .route("/api/v1/mappings/{id}", get(read).put(replace).patch(patch).delete(delete))
        .route("/api/v1/mappings/{id}/metrics", get(metrics))
        .route("/api/v1/mappings/{id}/metrics/stream", get(super::stream::mapping))
        .route("/api/v1/metrics/stream", get(super::stream::all))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/mappings/{id}/reset", post(reset))
        .route("/api/v1/mappings/{id}/resets", get(resets))
        .route("/api/v1/mappings/{id}/failures", get(failures))
        .route("/api/v1/mappings/{id}/failures/record", get(failed_record))
        .route("/api/v1/mappings/{id}/failures/redrive", post(redrive))
        .route("/api/v1/mappings/{id}/failures/redrives", get(redrives))
        .route("/api/v1/mappings/{id}/failures/redrive/{job}", get(redrive_job))
        .route("/api/v1/mappings/{id}/enable", post(enable))
        .route("/api/v1/mappings/{id}/disable", post(disable))
        .route("/api/v1/filters/test", post(test_filters))
        .route("/api/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
}

/// An API error: a status and `{"Type", "Message", "Errors": [{"Field", "Message"}]}`.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::NotFound(_) => {
                ApiError(StatusCode::NOT_FOUND, json!({"Type": "ResourceNotFoundException", "Message": e.to_string()}))
            }
            ServiceError::Invalid(errs) => ApiError(
                StatusCode::BAD_REQUEST,
                json!({"Type": "InvalidParameterValueException", "Message": e.to_string(), "Errors": errs}),
            ),
            ServiceError::Taken(errs) => ApiError(
                StatusCode::CONFLICT,
                json!({"Type": "ResourceConflictException", "Message": e.to_string(), "Errors": errs}),
            ),
            ServiceError::Conflict(_) => {
                ApiError(StatusCode::CONFLICT, json!({"Type": "ResourceConflictException", "Message": e.to_string()}))
            }
            ServiceError::Kafka(_) => {
                ApiError(StatusCode::BAD_GATEWAY, json!({"Type": "KafkaException", "Message": e.to_string()}))
            }
            ServiceError::Internal(err) => {
                tracing::error!("API request failed: {err:#}");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"Type": "ServiceException", "Message": format!("{err:#}")}),
                )
            }
        }
    }
}

fn uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            json!({"Type": "ResourceNotFoundException", "Message": format!("`{id}` is not a mapping UUID")}),
        )
    })
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"Type": "InvalidRequestContentException", "Message": format!("the body is not valid JSON: {e}"),
                   "Errors": [{"Field": "", "Message": format!("not valid JSON: {e}")}]}),
        )
    })
}

type ApiResult = Result<Response, ApiError>;

/// The body as `T`, or a 400 naming the field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body_json(body)?).map_err(|e| {
        let path = e.path().to_string();
        ApiError::from(ServiceError::Invalid(vec![FieldError::new(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )]))
    })
}

async fn list(State(s): State<AppState>) -> ApiResult {
    let all = s.mappings.list().await?;
    Ok(Json(json!({ "EventSourceMappings": all })).into_response())
}

async fn create(State(s): State<AppState>, body: Bytes) -> ApiResult {
    let mut v = body_json(&body)?;
    // Tags on create, as AWS takes them (later changes: the tags API).
    let tags = match v.as_object_mut() {
        Some(m) => crate::service::take_tags(m)?,
        None => None,
    };
    let view = s.mappings.create_tagged(spec_from_json(v)?, tags).await?;
    let location = format!("/api/v1/mappings/{}", view.uuid);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(view)).into_response())
}

async fn read(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.get(uuid(&id)?).await?).into_response())
}

async fn replace(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let id = uuid(&id)?;
    let spec = spec_from_json(body_json(&body)?)?;
    Ok(Json(s.mappings.replace(id, spec).await?).into_response())
}

async fn patch(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let id = uuid(&id)?;
    let patch = body_json(&body)?;
    Ok(Json(s.mappings.patch(id, &patch).await?).into_response())
}

async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.delete(uuid(&id)?).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricsQuery {
    range: Option<String>,
}

/// The running poller's counts since it started (`Running: false` when none
/// runs), per-partition lag, and the history over `?Range=15m|1h|24h|7d`.
async fn metrics(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<MetricsQuery>) -> ApiResult {
    let id = uuid(&id)?;
    s.mappings.get(id).await?;
    let range = match q.range.as_deref() {
        None => Range::M15,
        Some(r) => Range::parse(r).ok_or_else(|| {
            ApiError::from(ServiceError::Invalid(vec![FieldError::new(
                "Range",
                format!("must be one of 15m, 1h, 24h, 7d, not `{r}`"),
            )]))
        })?,
    };
    let history = s.mappings.metrics().history(id, range).await.map_err(ServiceError::Internal)?;
    let c = s.mappings.counters(id);
    Ok(Json(json!({"UUID": id, "Running": c.is_some(), "Counters": c.unwrap_or_default(), "History": history}))
        .into_response())
}

/// Previews (`"DryRun": true`) or applies a reset of the mapping's
/// position; the answer lists per partition `Before`, `After` and `Delta`.
async fn reset(
    State(s): State<AppState>,
    Path(id): Path<String>,
    who: Option<axum::Extension<sluice_app::model::Session>>,
    body: Bytes,
) -> ApiResult {
    let id = uuid(&id)?;
    let req: sluice_app::reset::ResetRequest = typed(&body)?;
    Ok(Json(s.mappings.reset(id, req, &actor("api", who.as_deref())).await?).into_response())
}

/// Who made a change, for the audit logs: the signed-in user or token, and
/// the channel.
pub fn actor(channel: &str, who: Option<&sluice_app::model::Session>) -> String {
    match who {
        Some(w) => format!("{} ({channel})", w.user),
        None => channel.to_string(),
    }
}

/// The failure ledger's query: filters, and paging.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct FailureQuery {
    partition: Option<String>,
    condition: Option<String>,
    since: Option<String>,
    until: Option<String>,
    redrive: Option<String>,
    marker: Option<String>,
    max_items: Option<String>,
    offset: Option<String>,
}

fn number<T: std::str::FromStr>(field: &str, v: &Option<String>) -> Result<Option<T>, ApiError> {
    match v.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::from(ServiceError::Invalid(vec![FieldError::new(field, format!("`{s}` is not a number"))]))
        }),
    }
}

/// A time as Unix milliseconds or RFC 3339.
fn time(field: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    let Some(s) = v.as_deref().filter(|s| !s.is_empty()) else { return Ok(None) };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Some(ms));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .map_err(|_| {
            ApiError::from(ServiceError::Invalid(vec![FieldError::new(
                field,
                format!("`{s}` is neither Unix milliseconds nor an RFC 3339 time"),
            )]))
        })
}

impl FailureQuery {
    pub fn filter(&self) -> Result<sluice_app::failures::FailureFilter, ApiError> {
        Ok(sluice_app::failures::FailureFilter {
            partition: number("Partition", &self.partition)?,
            condition: self.condition.clone().filter(|s| !s.is_empty()),
            since: time("Since", &self.since)?,
            until: time("Until", &self.until)?,
            redrive: self.redrive.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// The records the mapping gave up on, newest first: `?Partition`,
/// `Condition`, `Since`, `Until` (Unix ms or RFC 3339), `Redrive` (None,
/// Pending, Succeeded, Failed, Gone), `Marker`, `MaxItems` (100; at most 1000).
async fn failures(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<FailureQuery>) -> ApiResult {
    let id = uuid(&id)?;
    let max = number::<usize>("MaxItems", &q.max_items)?.unwrap_or(100);
    let page = s.mappings.failures(id, &q.filter()?, q.marker.as_deref(), max).await?;
    Ok(Json(page).into_response())
}

/// One failed record read from the topic (`?Partition=&Offset=`), decoded
/// as the filter tester shows records; 404 when the topic no longer holds it.
async fn failed_record(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<FailureQuery>) -> ApiResult {
    let id = uuid(&id)?;
    let need = |field: &str| ApiError::from(ServiceError::Invalid(vec![FieldError::new(field, "is required")]));
    let partition = number::<i32>("Partition", &q.partition)?.ok_or_else(|| need("Partition"))?;
    let offset = number::<i64>("Offset", &q.offset)?.ok_or_else(|| need("Offset"))?;
    match s.mappings.failed_record(id, partition, offset).await? {
        Some(sample) => Ok(Json(json!({"Partition": partition, "Offset": offset, "Record": sample})).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"Type": "ResourceNotFoundException",
                   "Message": format!("the topic no longer holds partition {partition} offset {offset}")}),
        )),
    }
}

/// Starts a redrive: `{"All": true}`, `{"Records": [{"Partition", "Offset"}]}`
/// or the list's filters. 202 with the job; `GET .../redrive/{JobId}` follows it.
async fn redrive(
    State(s): State<AppState>,
    Path(id): Path<String>,
    who: Option<axum::Extension<sluice_app::model::Session>>,
    body: Bytes,
) -> ApiResult {
    let id = uuid(&id)?;
    let req: sluice_app::failures::RedriveRequest = typed(&body)?;
    let job = s.mappings.redrive(id, &req, &actor("api", who.as_deref())).await?;
    Ok(redrive_started(job))
}

/// 202 with the job, and what the audit log says of it.
pub fn redrive_started(job: sluice_app::failures::RedriveJob) -> Response {
    let detail = format!("redrive {} of {} failed records", job.job_id, job.total);
    let location = format!("/api/v1/mappings/{}/failures/redrive/{}", job.uuid, job.job_id);
    let mut r = (StatusCode::ACCEPTED, [(axum::http::header::LOCATION, location)], Json(job)).into_response();
    r.extensions_mut().insert(super::guard::AuditDetail(detail));
    r
}

/// A redrive's progress and each record's result.
async fn redrive_job(State(s): State<AppState>, Path((id, job)): Path<(String, String)>) -> ApiResult {
    let id = uuid(&id)?;
    match s.mappings.redrive_job(id, &job).await? {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"Type": "ResourceNotFoundException", "Message": format!("no redrive {job} of mapping {id}")}),
        )),
    }
}

/// The mapping's redrives, newest first (counts only).
async fn redrives(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(json!({"Redrives": s.mappings.redrive_jobs(uuid(&id)?).await?})).into_response())
}

/// The mapping's audit log of applied resets, newest first.
async fn resets(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(json!({"Resets": s.mappings.resets(uuid(&id)?).await?})).into_response())
}

/// Every mapping's health verdict, lag and rates (the console's overview).
async fn overview(State(s): State<AppState>) -> ApiResult {
    Ok(Json(json!({"Mappings": s.mappings.overview().await?})).into_response())
}

/// The cluster: every node on this database (address, version, heartbeat,
/// leader, pollers per mapping).
async fn nodes(State(s): State<AppState>) -> ApiResult {
    Ok(Json(json!({"Nodes": s.mappings.nodes().await?, "ThisNode": s.mappings.node().id})).into_response())
}

async fn enable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.set_enabled(uuid(&id)?, true).await?).into_response())
}

async fn disable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.set_enabled(uuid(&id)?, false).await?).into_response())
}

/// Matches events and records against filters, without a mapping: each of
/// `Events` is a JSON document matched whole (EventBridge's
/// TestEventPattern); each of `Records` is a record as in the Kafka event
/// (base64 `value`), matched as a mapping would match it.
async fn test_filters(body: Bytes) -> ApiResult {
    use base64::Engine as _;
    use sluice_app::filter::{judge, record_document, value_document, Pattern, RecordMeta};

    let v = body_json(&body)?;
    // The same 400 as an invalid mapping.
    let bad = |field: &str, msg: String| ApiError::from(ServiceError::Invalid(vec![FieldError::new(field, msg)]));
    let filters = v["FilterCriteria"]["Filters"].as_array().cloned().unwrap_or_default();
    let mut patterns = Vec::with_capacity(filters.len());
    for (i, f) in filters.iter().enumerate() {
        let field = format!("FilterCriteria.Filters[{i}].Pattern");
        let text =
            f["Pattern"].as_str().ok_or_else(|| bad(&field, "must be a string holding the pattern JSON".into()))?;
        patterns.push(Pattern::compile(text).map_err(|m| bad(&field, m))?);
    }
    let events: Vec<_> =
        v["Events"].as_array().map(|a| a.iter().map(|e| judge(&patterns, e)).collect()).unwrap_or_default();
    let with_meta = v["FilterOnRecordMetadata"].as_bool().unwrap_or(false);
    let b64 = |field: String, x: &Value| -> Result<Option<Vec<u8>>, ApiError> {
        match x {
            Value::Null => Ok(None),
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Some)
                .map_err(|e| bad(&field, format!("is not base64 (as in the Kafka event): {e}"))),
            _ => Err(bad(&field, "must be a base64 string, as in the Kafka event".into())),
        }
    };
    let mut records = Vec::new();
    for (i, r) in v["Records"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let value = b64(format!("Records[{i}].value"), &r["value"])?;
        if !with_meta {
            records.push(judge(&patterns, &value_document(value.as_deref())));
            continue;
        }
        let key = b64(format!("Records[{i}].key"), &r["key"])?;
        // Headers as the Kafka event writes them: [{"name": [signed bytes]}].
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for h in r["headers"].as_array().cloned().unwrap_or_default() {
            for (name, bytes) in h.as_object().cloned().unwrap_or_default() {
                let bytes = bytes
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|b| b.as_i64().unwrap_or(0) as i8 as u8)
                    .collect();
                headers.push((name, bytes));
            }
        }
        let meta = RecordMeta {
            key: key.as_deref(),
            headers: headers.iter().map(|(n, b)| (n.as_str(), Some(b.as_slice()))).collect(),
            topic: r["topic"].as_str().unwrap_or(""),
            partition: r["partition"].as_i64().unwrap_or(0) as i32,
            timestamp_ms: r["timestamp"].as_i64().unwrap_or(-1),
        };
        records.push(judge(&patterns, &record_document(value.as_deref(), &meta)));
    }
    Ok(Json(json!({ "Events": events, "Records": records })).into_response())
}
