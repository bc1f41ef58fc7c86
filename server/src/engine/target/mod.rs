//! Invoking a function: one small trait, one file per kind of target.
//! The engine only sees `Outcome`.

pub mod http;
pub mod lambda;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_app::spec::{target_kind, MappingSpec, TargetKind};

use crate::reach::Reach;

/// What came of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function ran and returned; `body` may hold a partial batch response.
    Success { body: Vec<u8> },
    /// The function failed, could not be reached, or timed out. `message` is
    /// written for a person (it ends up in LastProcessingResult).
    /// `version`: the function version that ran, when the target says (Lambda).
    FunctionError { message: String, status: Option<u16>, version: Option<String> },
    /// The target asked us to slow down. Not a failed attempt.
    Throttled { message: String, retry_after: Option<Duration> },
}

#[async_trait]
pub trait Target: Send + Sync {
    async fn invoke(&self, payload: String) -> Outcome;
}

/// The target a mapping's `FunctionName` names: an HTTP(S) URL, or a
/// Lambda function (name or ARN) through `aws`. A new kind of target is one
/// file and one arm here.
pub fn build(
    spec: &MappingSpec,
    aws: Option<&aws_config::SdkConfig>,
    timeout: Duration,
    reach: &Reach,
) -> Result<Arc<dyn Target>, super::StartError> {
    use super::StartError::Refused;
    Ok(match (target_kind(&spec.function_name), aws) {
        (TargetKind::Http, _) => {
            Arc::new(http::HttpTarget::new(&spec.function_name, timeout, reach).map_err(|e| Refused(e.to_string()))?)
        }
        (TargetKind::Lambda, Some(aws)) => {
            let sdk = crate::aws::in_region(aws, &spec.function_name, ", or give the function's full ARN")?;
            Arc::new(lambda::LambdaTarget::new(&sdk, &spec.function_name, timeout))
        }
        (TargetKind::Lambda, None) => return Err(super::StartError::NoAws),
    })
}

/// Whether the target is called through AWS.
pub fn needs_aws(spec: &MappingSpec) -> bool {
    target_kind(&spec.function_name) == TargetKind::Lambda
}

/// The first `max` characters of a body, for error messages.
pub fn excerpt(body: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
