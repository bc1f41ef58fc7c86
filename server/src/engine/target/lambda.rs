//! An AWS Lambda function as the target, through aws-sdk-lambda: a
//! synchronous (RequestResponse) Invoke. `FunctionName` goes to the API as
//! the user wrote it: a name, a full or partial ARN, with or without a
//! `:version` or `:alias` qualifier (Invoke takes all of them).
//!
//! An invocation may run as long as the function's own timeout (up to 900
//! s): Lambda ends it there and answers, so Sluice waits that long plus
//! the HTTP timeout as a margin for the network, instead of cutting a long
//! function at the HTTP timeout and invoking it again while it still runs.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use super::{excerpt, Outcome, Target};

/// Lambda's longest function timeout.
pub const LAMBDA_MAX_TIMEOUT: Duration = Duration::from_secs(900);

pub struct LambdaTarget {
    client: aws_sdk_lambda::Client,
    function: String,
    /// The HTTP timeout: for calls other than Invoke, and the margin over
    /// the function's timeout.
    margin: Duration,
    /// How long an Invoke may take: the function's timeout (read once with
    /// GetFunctionConfiguration; Lambda's maximum when it cannot be read)
    /// plus the margin.
    limit: tokio::sync::OnceCell<Duration>,
}

fn timeouts(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(attempt).build()
}

impl LambdaTarget {
    pub fn new(sdk: &aws_config::SdkConfig, function: &str, timeout: Duration) -> Self {
        let conf = aws_sdk_lambda::config::Builder::from(sdk)
            .timeout_config(timeouts(timeout))
            // Sluice retries with its own backoff (and counts attempts).
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        LambdaTarget {
            client: aws_sdk_lambda::Client::from_conf(conf),
            function: function.to_string(),
            margin: timeout,
            limit: tokio::sync::OnceCell::new(),
        }
    }

    async fn limit(&self) -> Duration {
        *self
            .limit
            .get_or_init(|| async {
                let own = match self.client.get_function_configuration().function_name(&self.function).send().await {
                    Ok(c) => c.timeout().map(|s| Duration::from_secs(s.max(1) as u64)),
                    Err(e) => {
                        tracing::debug!(function = %self.function, "no function timeout read ({e}); waiting up to Lambda's maximum");
                        None
                    }
                };
                own.unwrap_or(LAMBDA_MAX_TIMEOUT).min(LAMBDA_MAX_TIMEOUT) + self.margin
            })
            .await
    }
}

#[async_trait]
impl Target for LambdaTarget {
    async fn invoke(&self, payload: String) -> Outcome {
        let limit = self.limit().await;
        let sent = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .customize()
            .config_override(aws_sdk_lambda::config::Builder::default().timeout_config(timeouts(limit)))
            .send()
            .await;
        match sent {
            Ok(out) => {
                let body = out.payload().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                match out.function_error() {
                    // A function error still answers 200: the error is in the payload.
                    Some(kind) => Outcome::FunctionError {
                        message: format!(
                            "{} ({kind}, version {}): {}",
                            self.function,
                            out.executed_version().unwrap_or("$LATEST"),
                            excerpt(&body, 300)
                        ),
                        status: Some(out.status_code() as u16),
                        version: out.executed_version().map(String::from),
                    },
                    None => Outcome::Success { body },
                }
            }
            Err(e) => describe(&self.function, e, limit),
        }
    }
}

fn describe(function: &str, e: SdkError<InvokeError>, limit: Duration) -> Outcome {
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            let code = err.code().unwrap_or("UnknownError");
            let message = format!("{code}: {}", err.message().unwrap_or("no message"));
            if matches!(err, InvokeError::TooManyRequestsException(_)) || status == 429 {
                return Outcome::Throttled { message: format!("{function}: {message}"), retry_after: None };
            }
            Outcome::FunctionError {
                message: format!("Lambda refused the invocation of {function}: {message}"),
                status: Some(status),
                version: None,
            }
        }
        SdkError::TimeoutError(_) => Outcome::FunctionError {
            message: format!("{function}: the invocation timed out after {} s", limit.as_secs()),
            status: None,
            version: None,
        },
        SdkError::DispatchFailure(_) => Outcome::FunctionError {
            message: format!(
                "cannot reach AWS Lambda for {function}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
            status: None,
            version: None,
        },
        other => Outcome::FunctionError {
            message: format!(
                "cannot invoke {function}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(other)
            ),
            status: None,
            version: None,
        },
    }
}
