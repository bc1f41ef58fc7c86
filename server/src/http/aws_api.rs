//! AWS Lambda's event-source-mapping API (`/2015-03-31/event-source-mappings`)
//! and its tags (`/2017-03-31/tags/{ARN}`), as the AWS CLI, the SDKs and
//! Terraform call them, over the same mapping service as `/api/v1`: AWS's
//! paths, status codes, update semantics, paging, answers and errors
//! (botocore's `lambda/2015-03-31/service-2.json` is the model followed).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sluice_app::model::MappingView;
use sluice_app::spec::FieldError;
use uuid::Uuid;

use super::AppState;
use crate::aws::ArnScope;
use crate::service::{spec_from_json, take_tags, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/2015-03-31/event-source-mappings", get(list).post(create))
        .route("/2015-03-31/event-source-mappings/", get(list).post(create))
        .route("/2015-03-31/event-source-mappings/{uuid}", get(read).put(update).delete(delete))
        .route("/2017-03-31/tags/{arn}", get(list_tags).post(tag).delete(untag))
}

/// AWS's page size limit for ListEventSourceMappings.
const PAGE: usize = 100;

/// An error as Lambda sends it: the class in `x-amzn-ErrorType` (what the
/// SDKs read first), `{"Type": "User" | "Service", "message"}` in the body.
pub fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let side = if status.is_server_error() { "Service" } else { "User" };
    let mut r = (status, Json(json!({"Type": side, "message": message}))).into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// A refusal on these paths (boxed: a response is large to pass around).
pub struct AwsError(Box<Response>);

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        *self.0
    }
}

fn refuse(status: StatusCode, kind: &str, message: String) -> AwsError {
    AwsError(Box::new(error(status, kind, message)))
}

impl From<ServiceError> for AwsError {
    fn from(e: ServiceError) -> Self {
        let (status, kind) = match &e {
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidParameterValueException"),
            ServiceError::Conflict(_) | ServiceError::Taken(_) => (StatusCode::CONFLICT, "ResourceConflictException"),
            ServiceError::Kafka(_) => (StatusCode::BAD_GATEWAY, "ServiceException"),
            ServiceError::Internal(err) => {
                tracing::error!("AWS API request failed: {err:#}");
                (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException")
            }
        };
        let message = match &e {
            ServiceError::NotFound(id) => format!("The resource you requested does not exist. (no mapping {id})"),
            ServiceError::Internal(err) => format!("{err:#}"),
            other => other.to_string(),
        };
        refuse(status, kind, message)
    }
}

fn invalid(field: &str, message: impl Into<String>) -> AwsError {
    ServiceError::Invalid(vec![FieldError::new(field, message)]).into()
}

type AwsResult = Result<Response, AwsError>;

fn body_object(body: &Bytes) -> Result<Map<String, Value>, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {e}"),
        )),
    }
}

fn uuid(id: &str) -> Result<Uuid, AwsError> {
    Uuid::parse_str(id).map_err(|_| {
        refuse(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("The resource you requested does not exist. (`{id}` is not a mapping UUID)"),
        )
    })
}

/// Fields of AWS's request that belong to other event sources.
const NOT_KAFKA: [(&str, &str); 4] = [
    ("Queues", "Amazon MQ"),
    ("DocumentDBEventSourceConfig", "DocumentDB"),
    ("ScalingConfig", "SQS"),
    ("TumblingWindowInSeconds", "Kinesis and DynamoDB streams"),
];

/// AWS's request (create, or the stored spec with an update's fields laid
/// over it) as a Sluice spec's JSON: defaults AWS applies, empty blocks
/// that clear a setting, timestamps in seconds, and a refusal naming each
/// field Sluice cannot honour.
fn from_aws(mut m: Map<String, Value>, creating: bool) -> Result<Value, AwsError> {
    let mut errs = Vec::new();
    for (field, source) in NOT_KAFKA {
        if m.get(field).is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::new(field, format!("applies to {source} event sources, not Kafka")));
        }
        m.remove(field);
    }
    if let Some(Value::Object(d)) = m.get_mut("DestinationConfig") {
        let set = |v: Option<&Value>| {
            v.and_then(|o| o.get("Destination")).and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        };
        if set(d.get("OnSuccess")) {
            errs.push(FieldError::new(
                "DestinationConfig.OnSuccess",
                "Kafka mappings send only failed records to a destination (OnFailure)",
            ));
        }
        d.remove("OnSuccess");
        // `{}`, `{"OnFailure": {}}` or an empty Destination clears it, as in AWS.
        if !set(d.get("OnFailure")) {
            d.remove("OnFailure");
        }
    }
    if let Some(Value::Object(f)) = m.get_mut("FilterCriteria") {
        if f.get("Filters").is_none_or(Value::is_null) {
            f.insert("Filters".into(), json!([]));
        }
    }
    if let Some(t) = m.get("StartingPositionTimestamp").and_then(Value::as_f64) {
        // The SDKs send epoch seconds, with a fraction; Sluice keeps seconds.
        m.insert("StartingPositionTimestamp".into(), json!(t.floor() as i64));
    }
    if creating && m.get("StartingPosition").is_none_or(Value::is_null) {
        m.insert("StartingPosition".into(), json!("TRIM_HORIZON"));
    }
    if !errs.is_empty() {
        return Err(ServiceError::Invalid(errs).into());
    }
    Ok(Value::Object(m))
}

/// A mapping as AWS answers it (`EventSourceMappingConfiguration`): its
/// ARNs, the function as `FunctionArn`, blocks the user never set left
/// out (Terraform would see a difference on every plan), and an MSK
/// mapping in MSK's shape.
pub fn to_aws(view: &MappingView) -> Value {
    let scope = ArnScope::node();
    let Ok(Value::Object(mut o)) = serde_json::to_value(view) else { return json!({}) };
    o.remove("FunctionName");
    o.remove("Tags");
    o.insert("FunctionArn".into(), json!(scope.function_arn(&view.spec.function_name)));
    o.insert("EventSourceMappingArn".into(), json!(scope.mapping_arn(view.uuid)));
    let spec = &view.spec;
    if spec.filter_criteria.filters.is_empty() {
        o.remove("FilterCriteria");
    }
    if spec.destination_config.on_failure.is_none() {
        o.remove("DestinationConfig");
    }
    if spec.function_response_types.is_empty() {
        o.remove("FunctionResponseTypes");
    }
    let group = json!(view.consumer_group());
    if spec.event_source_arn.is_some() {
        o.remove("SelfManagedEventSource");
        o.remove("SelfManagedKafkaEventSourceConfig");
        let mut msk = json!({"ConsumerGroupId": group});
        if let Some(r) = spec.schema_registry() {
            msk["SchemaRegistryConfig"] = json!(r);
        }
        o.insert("AmazonManagedKafkaEventSourceConfig".into(), msk);
    } else {
        o.remove("AmazonManagedKafkaEventSourceConfig");
        if let Some(Value::Object(c)) = o.get_mut("SelfManagedKafkaEventSourceConfig") {
            c.insert("ConsumerGroupId".into(), group);
        }
    }
    Value::Object(o)
}

fn answer(status: StatusCode, view: &MappingView) -> Response {
    (status, Json(to_aws(view))).into_response()
}

async fn create(State(s): State<AppState>, body: Bytes) -> AwsResult {
    let mut m = body_object(&body)?;
    let tags = take_tags(&mut m)?;
    let spec = spec_from_json(from_aws(m, true)?)?;
    let view = s.mappings.create_tagged(spec, tags).await?;
    let mut r = answer(StatusCode::ACCEPTED, &view);
    if let Ok(v) = HeaderValue::from_str(&format!("/2015-03-31/event-source-mappings/{}", view.uuid)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn read(State(s): State<AppState>, Path(id): Path<String>) -> AwsResult {
    Ok(answer(StatusCode::OK, &s.mappings.get(uuid(&id)?).await?))
}

/// UpdateEventSourceMapping: each field sent replaces the stored one
/// whole (AWS's semantics, not a deep merge); the rest stays.
async fn update(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> AwsResult {
    let id = uuid(&id)?;
    let changes = body_object(&body)?;
    let current = s.mappings.get(id).await?;
    let Ok(Value::Object(mut m)) = serde_json::to_value(&current.spec) else {
        return Err(ServiceError::Internal(anyhow::anyhow!("mapping {id} does not serialize")).into());
    };
    for (k, v) in changes {
        if k == "UUID" || v.is_null() {
            continue;
        }
        if k == "AmazonManagedKafkaEventSourceConfig" || k == "SelfManagedKafkaEventSourceConfig" {
            // Only the group is AWS's in these blocks; Sluice's own settings in them stay.
            if let (Some(Value::Object(old)), Value::Object(new)) = (m.get_mut(&k), &v) {
                for (kk, vv) in new {
                    old.insert(kk.clone(), vv.clone());
                }
                continue;
            }
        }
        m.insert(k, v);
    }
    let spec = spec_from_json(from_aws(m, false)?)?;
    Ok(answer(StatusCode::ACCEPTED, &s.mappings.replace(id, spec).await?))
}

async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> AwsResult {
    Ok(answer(StatusCode::ACCEPTED, &s.mappings.delete(uuid(&id)?).await?))
}

fn query_pairs(q: &Option<String>) -> Result<Vec<(String, String)>, AwsError> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or("")).map_err(|e| {
        refuse(StatusCode::BAD_REQUEST, "ValidationException", format!("the query string is not valid: {e}"))
    })
}

fn marker(index: usize, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{index}:{id}"))
}

/// Where a page starts: at the mapping the marker names (so deletions in
/// between skip nothing), else at its position.
fn start_of(marker: &str, all: &[MappingView]) -> Option<usize> {
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(marker).ok()?;
    let (index, id) = std::str::from_utf8(&text).ok()?.split_once(':')?;
    let id = Uuid::parse_str(id).ok()?;
    Some(all.iter().position(|m| m.uuid == id).unwrap_or(index.parse::<usize>().ok()?.min(all.len())))
}

/// ListEventSourceMappings: filtered by `FunctionName` (any form of the
/// name: compared as full ARNs) and `EventSourceArn`, paged by
/// `Marker`/`MaxItems` (at most 100 a page), oldest first.
async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> AwsResult {
    let scope = ArnScope::node();
    let (mut function, mut source, mut from, mut max) = (None, None, None, PAGE);
    for (k, v) in query_pairs(&q)? {
        match k.as_str() {
            "FunctionName" => function = Some(scope.function_arn(&v)),
            "EventSourceArn" => source = Some(v),
            "Marker" => from = Some(v),
            "MaxItems" => match v.parse::<usize>() {
                Ok(n @ 1..=10_000) => max = n.min(PAGE),
                _ => return Err(invalid("MaxItems", format!("must be between 1 and 10000, not `{v}`"))),
            },
            _ => {}
        }
    }
    let all: Vec<MappingView> = s
        .mappings
        .list()
        .await?
        .into_iter()
        .filter(|m| function.as_ref().is_none_or(|f| *f == scope.function_arn(&m.spec.function_name)))
        .filter(|m| source.is_none() || m.spec.event_source_arn == source)
        .collect();
    let start = match &from {
        Some(mk) => start_of(mk, &all).ok_or_else(|| invalid("Marker", "is not a marker this API gave"))?,
        None => 0,
    };
    let page: Vec<Value> = all.iter().skip(start).take(max).map(to_aws).collect();
    let mut body = json!({ "EventSourceMappings": page });
    if let Some(next) = all.get(start + max) {
        body["NextMarker"] = json!(marker(start + max, next.uuid));
    }
    Ok(Json(body).into_response())
}

/// The mapping a tags path names (an event source mapping's ARN).
fn tagged(arn: &str) -> Result<Uuid, AwsError> {
    ArnScope::mapping_of(arn).ok_or_else(|| {
        invalid(
            "Resource",
            format!(
                "`{arn}` is not an event source mapping ARN (arn:aws:lambda:REGION:ACCOUNT:event-source-mapping:UUID)"
            ),
        )
    })
}

async fn list_tags(State(s): State<AppState>, Path(arn): Path<String>) -> AwsResult {
    let view = s.mappings.get(tagged(&arn)?).await?;
    Ok(Json(json!({ "Tags": view.tags })).into_response())
}

async fn tag(State(s): State<AppState>, Path(arn): Path<String>, body: Bytes) -> AwsResult {
    let id = tagged(&arn)?;
    let mut m = body_object(&body)?;
    let tags = take_tags(&mut m)?.ok_or_else(|| invalid("Tags", "is required"))?;
    s.mappings.tag(id, &tags).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn untag(State(s): State<AppState>, Path(arn): Path<String>, RawQuery(q): RawQuery) -> AwsResult {
    let id = tagged(&arn)?;
    let keys: Vec<String> = query_pairs(&q)?.into_iter().filter(|(k, _)| k == "tagKeys").map(|(_, v)| v).collect();
    if keys.is_empty() {
        return Err(invalid("TagKeys", "is required: give ?tagKeys=KEY for each tag to remove"));
    }
    s.mappings.untag(id, &keys).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
