//! On-failure destinations: where records go that the user's rules gave up
//! on (retries exhausted, too old, too large). One trait, one file per kind.
//! A delivery that fails is retried; the partition waits, because a record
//! that was neither processed nor delivered must not be committed.

pub mod aws;
pub mod kafka;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_app::spec::MappingSpec;
use uuid::Uuid;

use super::event::{build_event, EncodedRecord, EventSource};
use crate::problem::FailureCondition;

/// Records that failed, and why.
pub struct Failed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub records: &'a [EncodedRecord],
    pub condition: FailureCondition,
    pub attempts: u32,
    /// The function's last answer, when there was one.
    pub status_code: Option<u16>,
    /// The function version that ran (Lambda says), for `executedVersion`.
    pub executed_version: Option<&'a str>,
}

#[async_trait]
pub trait Destination: Send + Sync {
    /// Delivered means acknowledged by the destination. Answers the
    /// destination's ids of what it stored (message id, object key, topic
    /// position): one per record, or one for the batch.
    async fn deliver(&self, failed: &Failed<'_>) -> Result<Vec<String>, String>;
    fn describe(&self) -> String;
}

/// The mapping's on-failure destination, if it has one: a `kafka://topic`
/// on the mapping's own cluster, or an SQS, SNS or S3 ARN through `aws`. A
/// new kind of destination is one file and one arm here.
pub fn build(
    id: Uuid,
    spec: &MappingSpec,
    aws: Option<&aws_config::SdkConfig>,
    auth: &crate::kafka_auth::KafkaAuth,
) -> Result<Option<Arc<dyn Destination>>, super::StartError> {
    let Some(d) = &spec.destination_config.on_failure else { return Ok(None) };
    let source = EventSource::of(spec);
    // Failure records name the function by its full ARN, as AWS's do.
    let function = crate::aws::ArnScope::node().function_arn(&spec.function_name);
    Ok(Some(match d.destination.strip_prefix("kafka://") {
        Some(topic) => Arc::new(
            kafka::KafkaDestination::new(&spec.bootstrap_servers().join(","), topic, source, &function, auth)
                .map_err(super::StartError::Refused)?,
        ),
        None => {
            let aws = aws.ok_or(super::StartError::NoAws)?;
            let sdk = crate::aws::in_region(aws, &d.destination, "")?;
            Arc::new(
                aws::AwsDestination::new(&sdk, &d.destination, source, &function, id)
                    .map_err(super::StartError::Refused)?,
            )
        }
    }))
}

/// Whether the destination is reached through AWS.
pub fn needs_aws(spec: &MappingSpec) -> bool {
    spec.destination_config.on_failure.as_ref().is_some_and(|d| d.destination.starts_with("arn:"))
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// What every failure record starts with: the request, the function's
/// last answer (none for a record too large to send), version and time.
fn envelope(f: &Failed<'_>, function: &str, request_id: &str) -> Value {
    // No answer to report: the function was never called with the record.
    let response = match f.condition {
        FailureCondition::MaximumPayloadSizeExceeded
        | FailureCondition::SchemaNotFound
        | FailureCondition::DeserializationError => Value::Null,
        _ => {
            json!({"statusCode": f.status_code.unwrap_or(200), "executedVersion": f.executed_version, "functionError": "Unhandled"})
        }
    };
    json!({
        "requestContext": {
            "requestId": request_id,
            "functionArn": function,
            "condition": f.condition,
            "approximateInvokeCount": f.attempts,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso(crate::clock::now_ms()),
    })
}

/// AWS's failure record for one record (the Kafka-topic form: `batchSize`
/// 1, `recordInfo`, the single-record event as the object `payload`). A record too
/// large to invoke carries no payload: it would not fit a destination
/// either, and it stays readable in the source topic at its offset.
pub fn failure_record(f: &Failed<'_>, r: &EncodedRecord, source: &EventSource, function: &str) -> Value {
    let payload = (f.condition != FailureCondition::MaximumPayloadSizeExceeded)
        .then(|| build_event(source, f.topic, f.partition, std::slice::from_ref(r)));
    let mut v = envelope(f, function, &uuid::Uuid::new_v4().to_string());
    v["KafkaBatchInfo"] = json!({
        "batchSize": 1,
        "eventSourceArn": source.event_source_arn,
        "bootstrapServers": source.bootstrap_servers,
        "payloadSize": payload.as_ref().map_or(r.json.len(), String::len),
        "recordInfo": {"offset": r.offset.to_string(), "timestamp": iso(r.timestamp_ms)},
    });
    // An object, as AWS documents the Kafka-topic form (S3's is a string).
    if let Some(p) = payload {
        v["payload"] = serde_json::from_str(&p).unwrap_or(Value::String(p));
    }
    v
}

/// AWS's failure record for a failed batch (the SQS, SNS and S3 form):
/// `recordsInfo` names the first and last offsets and timestamps; S3's adds
/// the whole event as `payload`. Returns the record and its request id.
pub fn batch_failure_record(
    f: &Failed<'_>,
    source: &EventSource,
    function: &str,
    with_payload: bool,
) -> (Value, String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let event = build_event(source, f.topic, f.partition, f.records);
    let (first, last) = (f.records.first(), f.records.last());
    let mut v = envelope(f, function, &request_id);
    v["KafkaBatchInfo"] = json!({
        "batchSize": f.records.len(),
        "eventSourceArn": source.event_source_arn,
        "bootstrapServers": source.bootstrap_servers,
        "payloadSize": event.len(),
        "recordsInfo": {
            format!("{}-{}", f.topic, f.partition): {
                "firstRecordOffset": first.map(|r| r.offset.to_string()),
                "lastRecordOffset": last.map(|r| r.offset.to_string()),
                "firstRecordTimestamp": first.map(|r| iso(r.timestamp_ms)),
                "lastRecordTimestamp": last.map(|r| iso(r.timestamp_ms)),
            }
        },
    });
    if with_payload {
        v["payload"] = Value::String(event);
    }
    (v, request_id)
}
