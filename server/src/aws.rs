//! The node's AWS configuration and the helpers every AWS call shares: the
//! standard credential chain loaded once per node, a mapping's role on top
//! of it, and the region an ARN names. A leaf: it names no other module.

use std::sync::Arc;

use sluice_app::spec::MappingSpec;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The node's AWS configuration (standard chain), read the first time
/// anything needs it and shared by the engine, resets, the filter tester
/// and CloudWatch.
#[derive(Clone, Default)]
pub struct NodeAws(Arc<OnceCell<aws_config::SdkConfig>>);

impl NodeAws {
    pub async fn get(&self) -> &aws_config::SdkConfig {
        self.0.get_or_init(|| async { aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await }).await
    }

    /// The node's configuration with the mapping's role (see `with_role`).
    pub async fn for_mapping(&self, id: Uuid, spec: &MappingSpec) -> aws_config::SdkConfig {
        with_role(self.get().await.clone(), id, spec).await
    }
}

/// `base`, or, with the mapping's `InvocationRoleArn`, the same with
/// credentials from assuming that role (refreshed by the SDK). Every AWS
/// call made for a mapping (invocations, destinations, Secrets Manager, MSK
/// IAM), on any node and for resets too, goes through it.
pub async fn with_role(base: aws_config::SdkConfig, id: Uuid, spec: &MappingSpec) -> aws_config::SdkConfig {
    let Some(role) = &spec.invocation_role_arn else { return base };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name(format!("sluice-{}", id.simple()))
        .configure(&base)
        .build()
        .await;
    base.into_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        .build()
}

/// No region for an AWS resource: neither its ARN nor the chain names one.
#[derive(Debug, thiserror::Error)]
#[error("no AWS region for {name}: set AWS_REGION (or a profile with a region){hint}")]
pub struct NoRegion {
    pub name: String,
    pub hint: &'static str,
}

/// The AWS configuration for a resource: a full ARN names its region,
/// anything else takes the chain's; without either, why not (`hint` adds
/// what else would do).
pub fn in_region(
    aws: &aws_config::SdkConfig,
    name: &str,
    hint: &'static str,
) -> Result<aws_config::SdkConfig, NoRegion> {
    let mut sdk = aws.clone();
    if let Some(r) = arn_region(name) {
        sdk = sdk.into_builder().region(aws_config::Region::new(r.to_string())).build();
    }
    if sdk.region().is_none() {
        return Err(NoRegion { name: name.to_string(), hint });
    }
    Ok(sdk)
}

/// The region an ARN names, if any (S3 bucket ARNs name none).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?.split(':').nth(2).filter(|r| !r.is_empty())
}

/// The account and region Sluice names in the ARNs it answers with
/// (`EventSourceMappingArn`, a function's `FunctionArn`):
/// `SLUICE_AWS_ACCOUNT_ID` (default 000000000000) and `SLUICE_AWS_REGION`
/// (else `AWS_REGION`, else us-east-1). Read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArnScope {
    pub account: String,
    pub region: String,
}

impl ArnScope {
    pub fn node() -> &'static ArnScope {
        static SCOPE: std::sync::OnceLock<ArnScope> = std::sync::OnceLock::new();
        SCOPE.get_or_init(|| {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            ArnScope {
                account: var("SLUICE_AWS_ACCOUNT_ID").unwrap_or_else(|| "000000000000".into()),
                region: var("SLUICE_AWS_REGION").or_else(|| var("AWS_REGION")).unwrap_or_else(|| "us-east-1".into()),
            }
        })
    }

    /// `arn:aws:lambda:REGION:ACCOUNT:event-source-mapping:UUID`.
    pub fn mapping_arn(&self, id: Uuid) -> String {
        format!("arn:aws:lambda:{}:{}:event-source-mapping:{id}", self.region, self.account)
    }

    /// A mapping's UUID from its ARN (any region or account: the UUID names it).
    pub fn mapping_of(arn: &str) -> Option<Uuid> {
        let rest = arn.strip_prefix("arn:")?;
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [p, "lambda", _, _, "event-source-mapping", id] if p.starts_with("aws") => Uuid::parse_str(id).ok(),
            _ => None,
        }
    }

    /// A function's full ARN as AWS answers it (qualifier kept): a full
    /// ARN as given, a partial one (`ACCOUNT:function:NAME`) or a name in
    /// this scope; an HTTP target is its URL.
    pub fn function_arn(&self, function_name: &str) -> String {
        if function_name.starts_with("arn:")
            || function_name.starts_with("http://")
            || function_name.starts_with("https://")
        {
            return function_name.to_string();
        }
        if let Some((account, rest)) = function_name.split_once(":function:") {
            return format!("arn:aws:lambda:{}:{account}:function:{rest}", self.region);
        }
        format!("arn:aws:lambda:{}:{}:function:{function_name}", self.region, self.account)
    }
}

/// A request to an AWS API Sluice calls without its SDK (MSK's
/// GetBootstrapBrokers, Glue's schema registry), signed with SigV4 for
/// `service` in `region` with `credentials`: `headers` (and `host`) are
/// signed and sent.
pub fn signed_request(
    credentials: aws_credential_types::Credentials,
    region: &str,
    service: &str,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    // The host the signature covers: with its port when the URL gives one.
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(format!("{url} has no host")),
    };
    let identity = aws_smithy_runtime_api::client::identity::Identity::from(credentials);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signed_headers = std::iter::once(("host", host.as_str())).chain(headers.iter().copied());
    let request = SignableRequest::new(method.as_str(), url, signed_headers, SignableBody::Bytes(&body))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    let mut req = reqwest::Client::new().request(method, parsed).body(body);
    for (k, v) in headers.iter().copied().chain(instructions.headers()) {
        req = req.header(k, v);
    }
    Ok(req)
}
