//! On-failure destinations on AWS, by ARN: an SQS queue, an SNS topic or an
//! S3 bucket. One message (object) per failed batch, in AWS's record format:
//! batch information without the records for SQS and SNS, the whole event
//! as `payload` for S3. Delivered means the service accepted it.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::OnceCell;

use super::{batch_failure_record, Destination, Failed};
use crate::engine::event::EventSource;

/// SNS refuses messages over 256 KB; SQS took the same limit for years.
pub const MESSAGE_LIMIT: usize = 256 * 1024;

enum Kind {
    Sqs { client: aws_sdk_sqs::Client, name: String, account: String, url: OnceCell<String> },
    Sns { client: aws_sdk_sns::Client },
    S3 { client: aws_sdk_s3::Client, bucket: String },
}

pub struct AwsDestination {
    kind: Kind,
    arn: String,
    source: EventSource,
    function: String,
    mapping: uuid::Uuid,
}

impl AwsDestination {
    /// `sdk` already carries the region (from the ARN where it names one).
    pub fn new(
        sdk: &aws_config::SdkConfig,
        arn: &str,
        source: EventSource,
        function: &str,
        mapping: uuid::Uuid,
    ) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let (service, account, resource) = match parts.as_slice() {
            ["arn", _, service, _, account, resource] => (*service, *account, *resource),
            _ => return Err(format!("`{arn}` is not an ARN")),
        };
        let kind = match service {
            "sqs" => Kind::Sqs {
                client: aws_sdk_sqs::Client::new(sdk),
                name: resource.to_string(),
                account: account.to_string(),
                url: OnceCell::new(),
            },
            "sns" => Kind::Sns { client: aws_sdk_sns::Client::new(sdk) },
            "s3" => Kind::S3 {
                // Emulators and S3-compatible stores answer on paths, not bucket hostnames.
                client: aws_sdk_s3::Client::from_conf(
                    aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build(),
                ),
                bucket: resource.to_string(),
            },
            other => return Err(format!("`{arn}`: {other} is not an on-failure destination (SQS, SNS or S3)")),
        };
        Ok(AwsDestination { kind, arn: arn.to_string(), source, function: function.to_string(), mapping })
    }
}

#[async_trait]
impl Destination for AwsDestination {
    async fn deliver(&self, f: &Failed<'_>) -> Result<Vec<String>, String> {
        let with_payload = matches!(self.kind, Kind::S3 { .. });
        let (record, request_id) = batch_failure_record(f, &self.source, &self.function, with_payload);
        let body = record.to_string();
        let err = |e: &dyn std::error::Error| format!("{}: {}", self.arn, DisplayErrorContext(e));
        match &self.kind {
            Kind::Sqs { client, name, account, url } => {
                if body.len() > MESSAGE_LIMIT {
                    return Err(format!(
                        "{}: the failure record is {} bytes, over SQS's {MESSAGE_LIMIT}",
                        self.arn,
                        body.len()
                    ));
                }
                let url = url
                    .get_or_try_init(|| async {
                        let out =
                            client.get_queue_url().queue_name(name).queue_owner_aws_account_id(account).send().await;
                        out.map_err(|e| err(&e))?
                            .queue_url()
                            .map(String::from)
                            .ok_or_else(|| format!("{}: no queue URL", self.arn))
                    })
                    .await?;
                let out = client.send_message().queue_url(url).message_body(body).send().await.map_err(|e| err(&e))?;
                Ok(vec![format!("message {}", out.message_id().unwrap_or_default())])
            }
            Kind::Sns { client } => {
                if body.len() > MESSAGE_LIMIT {
                    return Err(format!(
                        "{}: the failure record is {} bytes, over SNS's {MESSAGE_LIMIT}",
                        self.arn,
                        body.len()
                    ));
                }
                let out = client.publish().topic_arn(&self.arn).message(body).send().await.map_err(|e| err(&e))?;
                Ok(vec![format!("message {}", out.message_id().unwrap_or_default())])
            }
            Kind::S3 { client, bucket } => {
                let key = s3_key(self.mapping, f.topic, f.partition, time::OffsetDateTime::now_utc(), &request_id);
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(ByteStream::from(body.into_bytes()))
                    .send()
                    .await
                    .map_err(|e| err(&e))?;
                Ok(vec![format!("object {key}")])
            }
        }
    }

    fn describe(&self) -> String {
        self.arn.clone()
    }
}

/// AWS's object key for a failure record:
/// `aws/lambda/<ESM-UUID>/<topic>-<partition>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<request id>`
/// (the partition stands where streams put the shard id).
fn s3_key(mapping: uuid::Uuid, topic: &str, partition: i32, at: time::OffsetDateTime, request_id: &str) -> String {
    let (y, m, d) = (at.year(), u8::from(at.month()), at.day());
    format!(
        "aws/lambda/{mapping}/{topic}-{partition}/{y:04}/{m:02}/{d:02}/{y:04}-{m:02}-{d:02}T{:02}.{:02}.{:02}-{request_id}",
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn s3_keys_follow_aws_pattern() {
        let at = time::OffsetDateTime::from_unix_timestamp(1772600767).unwrap(); // 2026-03-04 05:06:07 UTC
        let id = uuid::Uuid::nil();
        assert_eq!(
            super::s3_key(id, "orders", 3, at, "req-1"),
            "aws/lambda/00000000-0000-0000-0000-000000000000/orders-3/2026/03/04/2026-03-04T05.06.07-req-1"
        );
    }
}
