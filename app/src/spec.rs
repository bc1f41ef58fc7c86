//! The mapping spec: what a user saves, in the AWS `CreateEventSourceMapping`
//! shape, and its validation. Compiled into the server and the browser alike,
//! so the form shows exactly the errors the API would return.

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use schemars::JsonSchema;

pub const DEFAULT_BATCH_SIZE: i64 = 100;
pub const MAX_BATCH_SIZE: i64 = 10_000;
pub const MAX_BATCHING_WINDOW_S: i64 = 300;
/// AWS allows 5 a mapping by default and up to 10 with a quota increase;
/// Sluice has no quota to raise, so its limit is AWS's highest.
pub const MAX_FILTERS: usize = 10;
pub const MAX_PATTERN_CHARS: usize = 4096;
pub const MAX_BOOTSTRAP_SERVERS: usize = 10;
pub const MAX_PARALLELIZATION_FACTOR: i64 = 100;

/// One problem with one field. `field` is the AWS path of the field
/// (`BatchSize`, `FilterCriteria.Filters[2].Pattern`), shared by the API's
/// error body and the form, which shows it under the matching input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// Whether this error belongs under the form input named `name`.
    pub fn is_for(&self, name: &str) -> bool {
        self.field == name
            || self.field.strip_prefix(name).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

impl StartingPosition {
    pub const ALL: [StartingPosition; 3] =
        [StartingPosition::TrimHorizon, StartingPosition::Latest, StartingPosition::AtTimestamp];

    pub fn as_str(self) -> &'static str {
        match self {
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
            StartingPosition::Latest => "LATEST",
            StartingPosition::AtTimestamp => "AT_TIMESTAMP",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
pub enum FunctionResponseType {
    ReportBatchItemFailures,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    #[serde(rename = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SelfManagedEventSource {
    pub endpoints: Endpoints,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SelfManagedKafkaEventSourceConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group_id: Option<String>,
    /// Sluice's own: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Unset: as
    /// AWS does, SASL_SSL with a SASL type, SSL with a certificate type,
    /// PLAINTEXT with none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<String>,
    /// AWS's `KafkaSchemaRegistryConfig`: records are decoded and validated
    /// with this registry's schemas before filters and the function see them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_config: Option<SchemaRegistryConfig>,
}

/// AWS's `KafkaSchemaRegistryConfig`. Strings rather than enums, so a bad
/// value is an error on its field, not a parse failure of the whole body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// A Confluent-compatible registry's URL, or an AWS Glue Schema Registry ARN.
    #[serde(rename = "SchemaRegistryURI", default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_uri: Option<String>,
    /// JSON (the decoded record as JSON text) or SOURCE (the original bytes,
    /// the registry's framing removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_record_format: Option<String>,
    /// Which of the record's attributes are decoded: KEY and/or VALUE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_validation_configs: Vec<SchemaValidationConfig>,
    /// How Sluice authenticates to a Confluent registry: BASIC_AUTH,
    /// CLIENT_CERTIFICATE_TLS_AUTH, SERVER_ROOT_CA_CERTIFICATE, each a
    /// Secrets Manager ARN (`URI`) or inline as in SourceAccessConfigurations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_configs: Vec<SourceAccessConfiguration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SchemaValidationConfig {
    /// KEY or VALUE.
    pub attribute: String,
}

impl SchemaRegistryConfig {
    /// An AWS Glue Schema Registry (by ARN) rather than a Confluent one.
    pub fn is_glue(&self) -> bool {
        self.schema_registry_uri.as_deref().is_some_and(|u| u.starts_with("arn:"))
    }

    /// The records are delivered as JSON (not SOURCE).
    pub fn as_json(&self) -> bool {
        self.event_record_format.as_deref() != Some("SOURCE")
    }

    pub fn validates(&self, attribute: &str) -> bool {
        self.schema_validation_configs.iter().any(|c| c.attribute == attribute)
    }

    fn validate(&self, block: &str, err: &mut impl FnMut(&str, String)) {
        let f = |name: &str| format!("{block}.SchemaRegistryConfig.{name}");
        match self.schema_registry_uri.as_deref().map(str::trim) {
            None | Some("") => err(
                &f("SchemaRegistryURI"),
                "is required: a registry URL (https://...) or an AWS Glue registry ARN".into(),
            ),
            Some(u) if u.starts_with("arn:") => {
                let parts: Vec<&str> = u.splitn(6, ':').collect();
                let ok = matches!(parts.as_slice(), ["arn", p, "glue", r, a, res] if p.starts_with("aws") && !r.is_empty() && a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && res.strip_prefix("registry/").is_some_and(|n| !n.is_empty() && !n.contains('/')));
                if !ok {
                    err(
                        &f("SchemaRegistryURI"),
                        format!("`{u}` is not a Glue registry ARN (arn:aws:glue:REGION:ACCOUNT:registry/NAME)"),
                    );
                }
                if !self.access_configs.is_empty() {
                    err(
                        &f("AccessConfigs"),
                        "a Glue registry is reached with the mapping's AWS credentials: no access configurations"
                            .into(),
                    );
                }
            }
            Some(u) => {
                let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
                if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace)) {
                    err(&f("SchemaRegistryURI"), format!("`{u}` is neither an http(s):// URL nor a Glue registry ARN"));
                }
            }
        }
        match self.event_record_format.as_deref() {
            Some("JSON" | "SOURCE") => {}
            None | Some("") => err(&f("EventRecordFormat"), "is required: JSON or SOURCE".into()),
            Some(o) => err(&f("EventRecordFormat"), format!("must be JSON or SOURCE, not `{o}`")),
        }
        if self.schema_validation_configs.is_empty() {
            err(&f("SchemaValidationConfigs"), "name at least one attribute to validate: KEY or VALUE".into());
        }
        for (i, c) in self.schema_validation_configs.iter().enumerate() {
            if c.attribute != "KEY" && c.attribute != "VALUE" {
                err(
                    &f(&format!("SchemaValidationConfigs[{i}].Attribute")),
                    format!("must be KEY or VALUE, not `{}`", c.attribute),
                );
            } else if self.schema_validation_configs[..i].iter().any(|o| o.attribute == c.attribute) {
                err(&f(&format!("SchemaValidationConfigs[{i}].Attribute")), format!("{} is named twice", c.attribute));
            }
        }
        if self.access_configs.len() > 2 {
            err(&f("AccessConfigs"), "at most 2 (one way to sign in and a CA certificate)".into());
        }
        for (i, c) in self.access_configs.iter().enumerate() {
            let f = |name: &str| f(&format!("AccessConfigs[{i}].{name}"));
            let pem = |v: &Option<String>| v.as_deref().is_some_and(|p| p.trim_start().starts_with("-----BEGIN "));
            if !matches!(
                c.kind,
                AccessKind::BasicAuth | AccessKind::ClientCertificateTls | AccessKind::ServerRootCaCertificate
            ) {
                err(
                    &f("Type"),
                    format!(
                        "must be BASIC_AUTH, CLIENT_CERTIFICATE_TLS_AUTH or SERVER_ROOT_CA_CERTIFICATE, not `{}`",
                        c.kind
                    ),
                );
                continue;
            }
            if self.access_configs[..i].iter().any(|o| o.kind == c.kind) {
                err(&f("Type"), format!("{} is given twice", c.kind));
            }
            if let Some(uri) = &c.uri {
                if !is_secret_arn(uri) {
                    err(&f("URI"), format!("`{uri}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"));
                }
                if c.password.is_some() || c.private_key.is_some() || c.username.is_some() {
                    err(&f("URI"), "give the secret either by URI or inline, not both".into());
                }
                continue;
            }
            match c.kind {
                AccessKind::BasicAuth => {
                    if c.username.as_deref().unwrap_or("").is_empty() {
                        err(&f("Username"), "required for BASIC_AUTH".into());
                    }
                    if c.password.as_deref().unwrap_or("").is_empty() && !c.secret_stored {
                        err(&f("Password"), "required for BASIC_AUTH".into());
                    }
                }
                AccessKind::ClientCertificateTls => {
                    if !pem(&c.certificate) {
                        err(&f("Certificate"), "a PEM certificate (-----BEGIN CERTIFICATE-----) is required".into());
                    }
                    if !pem(&c.private_key) && (!c.secret_stored || c.private_key.is_some()) {
                        err(&f("PrivateKey"), "a PEM private key (-----BEGIN ... PRIVATE KEY-----) is required".into());
                    }
                }
                _ => {
                    if !pem(&c.certificate) {
                        err(
                            &f("Certificate"),
                            "the CA's PEM certificate (-----BEGIN CERTIFICATE-----) is required".into(),
                        );
                    }
                }
            }
        }
    }
}

/// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`.
pub fn is_secret_arn(uri: &str) -> bool {
    let parts: Vec<&str> = uri.splitn(7, ':').collect();
    matches!(parts.as_slice(), ["arn", p, "secretsmanager", r, a, "secret", name] if p.starts_with("aws") && !r.is_empty() && a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Filter {
    /// An EventBridge event pattern, as a JSON string.
    pub pattern: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FilterCriteria {
    #[serde(default)]
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OnFailure {
    /// `kafka://<topic>`, or the ARN of an SQS queue, SNS topic or S3 bucket.
    pub destination: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DestinationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProvisionedPollerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_pollers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_pollers: Option<i64>,
    /// AWS's name for pollers shared by several mappings; kept and shown
    /// (Sluice's pollers are per mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poller_group_name: Option<String>,
}

fn default_batch_size() -> i64 {
    DEFAULT_BATCH_SIZE
}
fn minus_one() -> i64 {
    -1
}
fn yes() -> bool {
    true
}

/// What the user saved. Field names and defaults follow the AWS API
/// (reference §1) so an ESM definition can be carried over as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MappingSpec {
    /// Sluice's own: a label for people reading the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A Lambda function name or ARN, or an `http(s)://` URL.
    pub function_name: String,
    pub topics: Vec<String>,
    /// Absent for an MSK mapping given only its EventSourceArn.
    #[serde(default)]
    pub self_managed_event_source: SelfManagedEventSource,
    #[serde(default)]
    pub self_managed_kafka_event_source_config: SelfManagedKafkaEventSourceConfig,
    #[serde(default = "default_batch_size")]
    pub batch_size: i64,
    /// Whole seconds; absent means AWS's Kafka default of 0.5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_batching_window_in_seconds: Option<i64>,
    pub starting_position: StartingPosition,
    /// Unix seconds; only with AT_TIMESTAMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_position_timestamp: Option<i64>,
    #[serde(default)]
    pub filter_criteria: FilterCriteria,
    #[serde(default)]
    pub destination_config: DestinationConfig,
    #[serde(default = "minus_one")]
    pub maximum_retry_attempts: i64,
    #[serde(default = "minus_one")]
    pub maximum_record_age_in_seconds: i64,
    #[serde(default)]
    pub bisect_batch_on_function_error: bool,
    #[serde(default)]
    pub function_response_types: Vec<FunctionResponseType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_poller_config: Option<ProvisionedPollerConfig>,
    /// Batches in flight per partition, 1 to 100 (absent: 1, one batch at
    /// a time). Above 1, a partition's records go to that many lanes by a
    /// hash of their key: one key's records stay in order, different keys
    /// run concurrently. AWS offers this for Kinesis and DynamoDB streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelization_factor: Option<i64>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sluice's own, opt-in: filters also see the record's `key`, `headers`,
    /// `topic`, `partition` and `timestamp` (AWS matches only `value`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub filter_on_record_metadata: bool,
    /// An MSK cluster's ARN, as in AWS's MSK mappings: events then say
    /// `aws:kafka` and carry it. Sluice reaches the brokers at the
    /// SelfManagedEventSource endpoints (it does not look them up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_arn: Option<String>,
    /// AWS's MSK form of the consumer group setting, accepted as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amazon_managed_kafka_event_source_config: Option<SelfManagedKafkaEventSourceConfig>,
    /// Sluice's own: an IAM role assumed (STS AssumeRole) for this mapping's
    /// AWS calls (invoking the function, writing to its destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_role_arn: Option<String>,
    /// How Sluice authenticates to the brokers (AWS's types). Secrets are
    /// never serialized: not in answers, pages, or the stored spec (the
    /// store keeps them apart, encrypted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_access_configurations: Vec<SourceAccessConfiguration>,
    /// AWS's key for encrypting the filter criteria: kept and answered so
    /// definitions carry over; Sluice's database holds them as it holds
    /// the rest of the spec.
    #[serde(rename = "KMSKeyArn", default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// AWS's opt-in metric groups; Sluice publishes all of them always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_config: Option<MetricsConfig>,
    /// The least severe of this mapping's log lines that are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_config: Option<LoggingConfig>,
}

/// AWS's `MetricsConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MetricsConfig {
    /// EventCount, ErrorCount, KafkaMetrics.
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// AWS's `LoggingConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoggingConfig {
    /// DEBUG, INFO or WARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_log_level: Option<String>,
}

/// One way of reaching the brokers. AWS's shape is `{"Type", "URI"}` with
/// the URI a Secrets Manager ARN; Sluice also takes the secret inline.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SourceAccessConfiguration {
    /// BASIC_AUTH (SASL/PLAIN), SASL_SCRAM_256_AUTH, SASL_SCRAM_512_AUTH,
    /// CLIENT_CERTIFICATE_TLS_AUTH (mutual TLS), SERVER_ROOT_CA_CERTIFICATE.
    #[serde(rename = "Type")]
    #[cfg_attr(feature = "ssr", schemars(with = "String"))]
    pub kind: AccessKind,
    /// A Secrets Manager secret ARN (AWS's way).
    #[serde(rename = "URI", default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// SASL user name (inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SASL password (inline). Write-only.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// PEM client certificate (mutual TLS) or CA certificate (SERVER_ROOT_CA_CERTIFICATE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// PEM private key of the client certificate. Write-only.
    #[serde(default, skip_serializing)]
    pub private_key: Option<String>,
    /// The password of an encrypted private key (`-----BEGIN ENCRYPTED
    /// PRIVATE KEY-----`), as AWS's secret's `privateKeyPassword`. Write-only.
    #[serde(default, skip_serializing)]
    pub private_key_password: Option<String>,
    /// Sluice's own, in answers: a password or key is stored (ignored when sent).
    #[serde(default)]
    pub secret_stored: bool,
}

/// A `SourceAccessConfigurations[].Type`, by AWS's names. Read from any
/// string, so a type Sluice does not know is `Unknown` and `validate` names
/// it (an error on the field, not a parse failure of the whole body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AccessKind {
    /// SASL/PLAIN.
    BasicAuth,
    SaslScram256,
    SaslScram512,
    /// Mutual TLS.
    ClientCertificateTls,
    ServerRootCaCertificate,
    /// AWS's VPC placement (`subnet:ID`, `security_group:ID`): accepted so
    /// AWS definitions carry over, and shown as not applicable (Sluice
    /// reaches brokers from its own network).
    VpcSubnet,
    VpcSecurityGroup,
    /// Anything else, as given (empty: not given).
    Unknown(String),
    #[default]
    None,
}

impl AccessKind {
    pub const KNOWN: [AccessKind; 7] = [
        AccessKind::BasicAuth,
        AccessKind::SaslScram256,
        AccessKind::SaslScram512,
        AccessKind::ClientCertificateTls,
        AccessKind::ServerRootCaCertificate,
        AccessKind::VpcSubnet,
        AccessKind::VpcSecurityGroup,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            AccessKind::BasicAuth => "BASIC_AUTH",
            AccessKind::SaslScram256 => "SASL_SCRAM_256_AUTH",
            AccessKind::SaslScram512 => "SASL_SCRAM_512_AUTH",
            AccessKind::ClientCertificateTls => "CLIENT_CERTIFICATE_TLS_AUTH",
            AccessKind::ServerRootCaCertificate => "SERVER_ROOT_CA_CERTIFICATE",
            AccessKind::VpcSubnet => "VPC_SUBNET",
            AccessKind::VpcSecurityGroup => "VPC_SECURITY_GROUP",
            AccessKind::Unknown(s) => s,
            AccessKind::None => "",
        }
    }

    pub fn is_sasl(&self) -> bool {
        matches!(self, AccessKind::BasicAuth | AccessKind::SaslScram256 | AccessKind::SaslScram512)
    }

    /// AWS's VPC placement: no secret, nothing for the Kafka clients.
    pub fn is_network(&self) -> bool {
        matches!(self, AccessKind::VpcSubnet | AccessKind::VpcSecurityGroup)
    }

    /// Carries a certificate (so needs TLS).
    pub fn is_certificate(&self) -> bool {
        matches!(self, AccessKind::ClientCertificateTls | AccessKind::ServerRootCaCertificate)
    }
}

impl From<String> for AccessKind {
    fn from(s: String) -> Self {
        AccessKind::KNOWN.into_iter().find(|k| k.as_str() == s).unwrap_or(if s.is_empty() {
            AccessKind::None
        } else {
            AccessKind::Unknown(s)
        })
    }
}

impl From<&str> for AccessKind {
    fn from(s: &str) -> Self {
        AccessKind::from(s.to_string())
    }
}

impl From<AccessKind> for String {
    fn from(k: AccessKind) -> String {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for AccessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Debug output (logs, panics) shows that a secret is set, never the secret.
impl std::fmt::Debug for SourceAccessConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "****");
        f.debug_struct("SourceAccessConfiguration")
            .field("kind", &self.kind)
            .field("uri", &self.uri)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("certificate", &self.certificate.as_ref().map(|c| c.len()))
            .field("private_key", &hidden(&self.private_key))
            .field("private_key_password", &hidden(&self.private_key_password))
            .finish()
    }
}

impl SourceAccessConfiguration {
    /// The secret parts (kept apart from the spec when stored).
    pub fn secrets(&self) -> [Option<&String>; 3] {
        [self.password.as_ref(), self.private_key.as_ref(), self.private_key_password.as_ref()]
    }

    /// An edit sent back without the secrets it was shown without keeps
    /// the stored ones (same type and user name).
    pub fn keep_secrets_from(&mut self, old: &SourceAccessConfiguration) {
        if self.kind == old.kind && self.username == old.username && self.uri == old.uri {
            if self.password.is_none() {
                self.password = old.password.clone();
            }
            if self.private_key.is_none() && self.certificate == old.certificate {
                self.private_key = old.private_key.clone();
                self.private_key_password = old.private_key_password.clone();
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The kind of thing `FunctionName` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Http,
    Lambda,
}

pub fn target_kind(function_name: &str) -> TargetKind {
    if function_name.starts_with("http://") || function_name.starts_with("https://") {
        TargetKind::Http
    } else {
        TargetKind::Lambda
    }
}

impl MappingSpec {
    /// The security protocol the Kafka clients use (see
    /// `SelfManagedKafkaEventSourceConfig::security_protocol`).
    pub fn security_protocol(&self) -> String {
        let given = self.self_managed_kafka_event_source_config.security_protocol.clone().or_else(|| {
            self.amazon_managed_kafka_event_source_config.as_ref().and_then(|c| c.security_protocol.clone())
        });
        given.map(|p| p.to_ascii_uppercase()).unwrap_or_else(|| {
            let kinds: Vec<&AccessKind> =
                self.source_access_configurations.iter().map(|c| &c.kind).filter(|k| !k.is_network()).collect();
            if kinds.iter().any(|k| k.is_sasl()) {
                "SASL_SSL".into()
            } else if kinds.is_empty() {
                "PLAINTEXT".into()
            } else {
                "SSL".into()
            }
        })
    }

    fn validate_access(&self, err: &mut impl FnMut(&str, String)) {
        let protocol = self.security_protocol();
        if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&protocol.as_str()) {
            err(
                "SelfManagedKafkaEventSourceConfig.SecurityProtocol",
                format!("must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not `{protocol}`"),
            );
        }
        let mut sasl = 0;
        for (i, c) in self.source_access_configurations.iter().enumerate() {
            let f = |name: &str| format!("SourceAccessConfigurations[{i}].{name}");
            let pem = |v: &Option<String>| v.as_deref().is_some_and(|p| p.trim_start().starts_with("-----BEGIN "));
            if matches!(c.kind, AccessKind::Unknown(_) | AccessKind::None) {
                let known: Vec<&str> = AccessKind::KNOWN.iter().map(|k| k.as_str()).collect();
                err(&f("Type"), format!("must be one of {}, not `{}`", known.join(", "), c.kind));
                continue;
            }
            if c.kind.is_network() {
                let prefix = if c.kind == AccessKind::VpcSubnet { "subnet:" } else { "security_group:" };
                if !c.uri.as_deref().is_some_and(|u| u.starts_with(prefix) && u.len() > prefix.len()) {
                    err(&f("URI"), format!("{} takes a URI of the form {prefix}ID", c.kind));
                }
                continue;
            }
            if c.kind.is_sasl() {
                sasl += 1;
            }
            if let Some(uri) = &c.uri {
                if !is_secret_arn(uri) {
                    err(&f("URI"), format!("`{uri}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"));
                }
                if c.password.is_some()
                    || c.private_key.is_some()
                    || c.private_key_password.is_some()
                    || c.username.is_some()
                {
                    err(&f("URI"), "give the secret either by URI or inline, not both".into());
                }
                continue;
            }
            match &c.kind {
                k if k.is_sasl() => {
                    if c.username.as_deref().unwrap_or("").is_empty() {
                        err(&f("Username"), "required for SASL".into());
                    }
                    // `secret_stored`: an edit in the console, the stored password kept.
                    if c.password.as_deref().unwrap_or("").is_empty() && !c.secret_stored {
                        err(&f("Password"), "required for SASL".into());
                    }
                    if !protocol.starts_with("SASL_") {
                        err(
                            &f("Type"),
                            format!("SASL needs the security protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}"),
                        );
                    }
                }
                AccessKind::ClientCertificateTls => {
                    if !pem(&c.certificate) {
                        err(&f("Certificate"), "a PEM certificate (-----BEGIN CERTIFICATE-----) is required".into());
                    }
                    // `secret_stored` with no key: an edit in the console, the stored key kept.
                    if !pem(&c.private_key) && (!c.secret_stored || c.private_key.is_some()) {
                        err(&f("PrivateKey"), "a PEM private key (-----BEGIN ... PRIVATE KEY-----) is required".into());
                    }
                    let encrypted =
                        c.private_key.as_deref().is_some_and(|k| k.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
                    if encrypted && c.private_key_password.as_deref().unwrap_or("").is_empty() {
                        err(&f("PrivateKeyPassword"), "the private key is encrypted: give its password".into());
                    }
                }
                _ => {
                    if !pem(&c.certificate) {
                        err(
                            &f("Certificate"),
                            "the CA's PEM certificate (-----BEGIN CERTIFICATE-----) is required".into(),
                        );
                    }
                }
            }
            if c.private_key_password.is_some() && c.kind != AccessKind::ClientCertificateTls {
                err(&f("PrivateKeyPassword"), "only for CLIENT_CERTIFICATE_TLS_AUTH (an encrypted client key)".into());
            }
            if c.kind.is_certificate() && !protocol.ends_with("SSL") {
                err(&f("Type"), format!("certificates need the security protocol SSL or SASL_SSL, not {protocol}"));
            }
        }
        if sasl > 1 {
            err("SourceAccessConfigurations", "at most one SASL type".into());
        }
        if protocol.starts_with("SASL_") && sasl == 0 && self.event_source_arn.is_none() {
            err(
                "SelfManagedKafkaEventSourceConfig.SecurityProtocol",
                format!("{protocol} needs a SASL entry in SourceAccessConfigurations (or, for an MSK cluster's IAM access, its EventSourceArn)"),
            );
        }
    }

    /// MSK's IAM access: an MSK mapping (EventSourceArn) on SASL with no
    /// SASL credentials given (AWS signs in with the role's credentials then).
    pub fn msk_iam(&self) -> bool {
        self.event_source_arn.is_some()
            && self.security_protocol().starts_with("SASL_")
            && !self.source_access_configurations.iter().any(|c| c.kind.is_sasl())
    }

    /// The region of the MSK cluster's ARN (`arn:aws:kafka:REGION:...`).
    pub fn msk_region(&self) -> Option<&str> {
        self.event_source_arn.as_deref()?.split(':').nth(3).filter(|r| !r.is_empty())
    }

    /// Batches in flight per partition (`ParallelizationFactor`, 1 when unset).
    pub fn lanes(&self) -> usize {
        self.parallelization_factor.unwrap_or(1).clamp(1, MAX_PARALLELIZATION_FACTOR) as usize
    }

    /// Settings the console's form does not show, kept from `old` when the
    /// form saves (AWS's KMS key, metric groups, log level, poller group,
    /// MSK group block and VPC placement), so an edit in the console does
    /// not drop what the AWS API set.
    pub fn keep_api_only(&mut self, old: &MappingSpec) {
        self.kms_key_arn.clone_from(&old.kms_key_arn);
        self.metrics_config.clone_from(&old.metrics_config);
        self.logging_config.clone_from(&old.logging_config);
        if self.amazon_managed_kafka_event_source_config.is_none() {
            self.amazon_managed_kafka_event_source_config.clone_from(&old.amazon_managed_kafka_event_source_config);
            // The form shows the registry from either block and saves it in
            // the self-managed one: the MSK block's copy goes.
            if let Some(c) = self.amazon_managed_kafka_event_source_config.as_mut() {
                c.schema_registry_config = None;
            }
        }
        // A registry's client certificate is set through the API only: kept
        // while the form keeps the same registry.
        let old_mtls = old
            .schema_registry()
            .filter(|o| self.schema_registry().is_some_and(|n| n.schema_registry_uri == o.schema_registry_uri));
        let kept: Vec<SourceAccessConfiguration> = old_mtls
            .map(|o| o.access_configs.iter().filter(|c| c.kind == AccessKind::ClientCertificateTls).cloned().collect())
            .unwrap_or_default();
        if let Some(r) = self.schema_registry_mut() {
            if !r.access_configs.iter().any(|c| c.kind == AccessKind::ClientCertificateTls) {
                r.access_configs.extend(kept);
            }
        }
        let group = old.provisioned_poller_config.as_ref().and_then(|p| p.poller_group_name.clone());
        if let (Some(p), Some(g)) = (self.provisioned_poller_config.as_mut(), group) {
            p.poller_group_name.get_or_insert(g);
        }
        if !self.source_access_configurations.iter().any(|c| c.kind.is_network()) {
            let network = old.source_access_configurations.iter().filter(|c| c.kind.is_network()).cloned();
            self.source_access_configurations.extend(network);
        }
    }

    /// The schema registry records are decoded with (AWS takes it in either
    /// Kafka config block).
    pub fn schema_registry(&self) -> Option<&SchemaRegistryConfig> {
        self.self_managed_kafka_event_source_config.schema_registry_config.as_ref().or_else(|| {
            self.amazon_managed_kafka_event_source_config.as_ref().and_then(|c| c.schema_registry_config.as_ref())
        })
    }

    pub fn schema_registry_mut(&mut self) -> Option<&mut SchemaRegistryConfig> {
        if self.self_managed_kafka_event_source_config.schema_registry_config.is_some() {
            return self.self_managed_kafka_event_source_config.schema_registry_config.as_mut();
        }
        self.amazon_managed_kafka_event_source_config.as_mut().and_then(|c| c.schema_registry_config.as_mut())
    }

    pub fn access_configs(&self) -> impl Iterator<Item = &SourceAccessConfiguration> {
        let registry = self.schema_registry().map(|r| r.access_configs.iter());
        self.source_access_configurations.iter().chain(registry.into_iter().flatten())
    }

    /// Every access configuration that may hold a secret: the brokers'
    /// first, then the schema registry's (the order secrets are sealed in).
    pub fn access_configs_mut(&mut self) -> impl Iterator<Item = &mut SourceAccessConfiguration> {
        let (brokers, registry) = (&mut self.source_access_configurations, {
            let own = self.self_managed_kafka_event_source_config.schema_registry_config.as_mut();
            let msk =
                self.amazon_managed_kafka_event_source_config.as_mut().and_then(|c| c.schema_registry_config.as_mut());
            own.or(msk)
        });
        brokers.iter_mut().chain(registry.into_iter().flat_map(|r| r.access_configs.iter_mut()))
    }

    pub fn topic(&self) -> &str {
        self.topics.first().map(String::as_str).unwrap_or("")
    }

    pub fn bootstrap_servers(&self) -> &[String] {
        &self.self_managed_event_source.endpoints.kafka_bootstrap_servers
    }

    /// Where the stored Kafka secrets go: the brokers, the protocol they
    /// travel over and the cluster. An edit that changes any of these must
    /// give the secrets again (the stored ones do not follow, as with
    /// password managers), so nobody can send a password they cannot read
    /// to a broker of their choosing, or in clear.
    pub fn secret_destination(&self) -> (Vec<String>, String, Option<String>) {
        let mut servers: Vec<String> = self.bootstrap_servers().iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        servers.sort();
        servers.dedup();
        (servers, self.security_protocol(), self.event_source_arn.clone())
    }

    pub fn consumer_group_id(&self) -> Option<&str> {
        self.self_managed_kafka_event_source_config.consumer_group_id.as_deref().or_else(|| {
            self.amazon_managed_kafka_event_source_config.as_ref().and_then(|c| c.consumer_group_id.as_deref())
        })
    }

    /// The group mapping `id` reads with: its ConsumerGroupId, or (as in AWS)
    /// the mapping's UUID.
    pub fn group_for(&self, id: uuid::Uuid) -> String {
        self.consumer_group_id().map(str::to_string).unwrap_or_else(|| id.to_string())
    }

    /// Every problem with this spec, in field order. `now_s` is the current
    /// Unix time (a timestamp in the future is an error).
    pub fn validate(&self, now_s: i64) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut err = |f: &str, m: String| errs.push(FieldError::new(f, m));

        if let Some(name) = &self.name {
            if name.chars().count() > 128 {
                err("Name", "must be at most 128 characters".into());
            }
        }
        if let Some(d) = &self.description {
            if d.chars().count() > 1024 {
                err("Description", "must be at most 1024 characters".into());
            }
        }
        if let Err(m) = check_function_name(&self.function_name) {
            err("FunctionName", m);
        }
        if let Some(role) = &self.invocation_role_arn {
            let parts: Vec<&str> = role.splitn(6, ':').collect();
            let ok = matches!(parts.as_slice(), ["arn", p, "iam", "", a, res] if p.starts_with("aws") && a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && res.starts_with("role/") && res.len() > 5);
            if !ok {
                err("InvocationRoleArn", format!("`{role}` is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"));
            }
        }
        self.validate_access(&mut err);
        let managed =
            self.amazon_managed_kafka_event_source_config.as_ref().and_then(|c| c.schema_registry_config.as_ref());
        match (&self.self_managed_kafka_event_source_config.schema_registry_config, managed) {
            (Some(_), Some(_)) => err(
                "AmazonManagedKafkaEventSourceConfig.SchemaRegistryConfig",
                "one schema registry per mapping: set it in SelfManagedKafkaEventSourceConfig or here, not both".into(),
            ),
            (Some(r), None) => r.validate("SelfManagedKafkaEventSourceConfig", &mut err),
            (None, Some(r)) => r.validate("AmazonManagedKafkaEventSourceConfig", &mut err),
            (None, None) => {}
        }
        if let Some(arn) = &self.event_source_arn {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            let ok = matches!(parts.as_slice(), ["arn", p, "kafka", r, a, res] if p.starts_with("aws") && !r.is_empty() && a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && res.starts_with("cluster/"));
            if !ok {
                err(
                    "EventSourceArn",
                    format!("`{arn}` is not an MSK cluster ARN (arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/ID)"),
                );
            }
        }
        match self.topics.as_slice() {
            [] => err("Topics", "is required: name exactly one topic".into()),
            [t] => {
                if let Err(m) = check_topic(t) {
                    err("Topics[0]", m);
                }
            }
            _ => err("Topics", "must hold exactly one topic".into()),
        }
        let servers = self.bootstrap_servers();
        // An MSK mapping may give only its ARN: MSK names the brokers.
        if servers.is_empty() && self.event_source_arn.is_none() {
            err(
                "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS",
                "is required: give at least one host:port (or, for an MSK cluster, its EventSourceArn)".into(),
            );
        } else if servers.len() > MAX_BOOTSTRAP_SERVERS {
            err(
                "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS",
                format!("must hold at most {MAX_BOOTSTRAP_SERVERS} servers"),
            );
        }
        for (i, s) in servers.iter().enumerate() {
            if let Err(m) = check_host_port(s) {
                err(&format!("SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[{i}]"), m);
            }
        }
        if let Some(g) = self.consumer_group_id() {
            if let Err(m) = check_group(g) {
                err("SelfManagedKafkaEventSourceConfig.ConsumerGroupId", m);
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            err("BatchSize", format!("must be between 1 and {MAX_BATCH_SIZE}, not {}", self.batch_size));
        }
        if let Some(w) = self.maximum_batching_window_in_seconds {
            if !(0..=MAX_BATCHING_WINDOW_S).contains(&w) {
                err(
                    "MaximumBatchingWindowInSeconds",
                    format!("must be between 0 and {MAX_BATCHING_WINDOW_S} seconds, not {w}"),
                );
            }
        }
        match (self.starting_position, self.starting_position_timestamp) {
            (StartingPosition::AtTimestamp, None) => {
                err("StartingPositionTimestamp", "is required when StartingPosition is AT_TIMESTAMP".into())
            }
            (StartingPosition::AtTimestamp, Some(t)) if t > now_s => err(
                "StartingPositionTimestamp",
                format!("must not be in the future ({} is after now, {})", format_unix(t), format_unix(now_s)),
            ),
            (StartingPosition::AtTimestamp, Some(t)) if t < 0 => {
                err("StartingPositionTimestamp", "must not be before 1970".into())
            }
            (p, Some(_)) if p != StartingPosition::AtTimestamp => {
                err("StartingPositionTimestamp", format!("only applies to AT_TIMESTAMP, not {}", p.as_str()))
            }
            _ => {}
        }
        let filters = &self.filter_criteria.filters;
        if filters.len() > MAX_FILTERS {
            err("FilterCriteria.Filters", format!("at most {MAX_FILTERS} filters, not {}", filters.len()));
        }
        for (i, f) in filters.iter().enumerate() {
            if let Err(m) = check_pattern(&f.pattern) {
                err(&format!("FilterCriteria.Filters[{i}].Pattern"), m);
            }
        }
        if let Some(of) = &self.destination_config.on_failure {
            if let Err(m) = check_destination(&of.destination, self.topic()) {
                err("DestinationConfig.OnFailure.Destination", m);
            }
        }
        if !(-1..=10_000).contains(&self.maximum_retry_attempts) {
            err(
                "MaximumRetryAttempts",
                format!(
                    "must be -1 (retry until the record expires) or 0 to 10000, not {}",
                    self.maximum_retry_attempts
                ),
            );
        }
        let age = self.maximum_record_age_in_seconds;
        if age != -1 && !(60..=604_800).contains(&age) {
            err("MaximumRecordAgeInSeconds", format!("must be -1 (no limit) or 60 to 604800 seconds, not {age}"));
        }
        if let Some(p) = &self.provisioned_poller_config {
            if let Some(min) = p.minimum_pollers {
                if !(1..=200).contains(&min) {
                    err("ProvisionedPollerConfig.MinimumPollers", format!("must be between 1 and 200, not {min}"));
                }
            }
            if let Some(max) = p.maximum_pollers {
                if !(1..=2000).contains(&max) {
                    err("ProvisionedPollerConfig.MaximumPollers", format!("must be between 1 and 2000, not {max}"));
                }
            }
            if let Some(g) = &p.poller_group_name {
                if g.len() > 128 || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    err("ProvisionedPollerConfig.PollerGroupName", "at most 128 letters, digits, - or _".into());
                }
            }
            if let (Some(min), Some(max)) = (p.minimum_pollers, p.maximum_pollers) {
                if min > max {
                    err("ProvisionedPollerConfig.MaximumPollers", format!("must not be below MinimumPollers ({min})"));
                }
            }
        }
        if let Some(n) = self.parallelization_factor {
            if !(1..=MAX_PARALLELIZATION_FACTOR).contains(&n) {
                err("ParallelizationFactor", format!("must be between 1 and {MAX_PARALLELIZATION_FACTOR}, not {n}"));
            }
        }
        if let Some(k) = &self.kms_key_arn {
            let parts: Vec<&str> = k.splitn(6, ':').collect();
            if !k.is_empty() && !matches!(parts.as_slice(), ["arn", p, "kms", _, _, _] if p.starts_with("aws")) {
                err("KMSKeyArn", format!("`{k}` is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"));
            }
        }
        if let Some(m) = &self.metrics_config {
            for (i, name) in m.metrics.iter().enumerate() {
                if !["EventCount", "ErrorCount", "KafkaMetrics"].contains(&name.as_str()) {
                    err(
                        &format!("MetricsConfig.Metrics[{i}]"),
                        format!("must be EventCount, ErrorCount or KafkaMetrics, not `{name}`"),
                    );
                }
            }
        }
        if let Some(level) = self.logging_config.as_ref().and_then(|l| l.system_log_level.as_deref()) {
            if !["DEBUG", "INFO", "WARN"].contains(&level) {
                err("LoggingConfig.SystemLogLevel", format!("must be DEBUG, INFO or WARN, not `{level}`"));
            }
        }
        errs
    }
}

fn check_function_name(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("is required: a Lambda function name or ARN, or an http(s):// URL".into());
    }
    if target_kind(f) == TargetKind::Http {
        let rest = f.split_once("://").map(|x| x.1).unwrap_or("");
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return Err(format!("`{f}` is not a valid URL: it has no host"));
        }
        if f.len() > 2048 {
            return Err("a URL must be at most 2048 characters".into());
        }
        return Ok(());
    }
    if f.len() > 256 {
        return Err("must be at most 256 characters".into());
    }
    // Name, partial ARN (123456789012:function:name) or full ARN, with an
    // optional version or alias qualifier.
    let name_part = if let Some(arn) = f.strip_prefix("arn:") {
        let parts: Vec<&str> = arn.split(':').collect();
        // partition:lambda:region:account:function:name[:qualifier]
        if parts.len() < 6 || parts[1] != "lambda" || parts[4] != "function" {
            return Err(format!("`{f}` is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"));
        }
        parts[5..].join(":")
    } else if let Some((acct, rest)) = f.split_once(":function:") {
        if acct.len() != 12 || !acct.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{acct}` is not a 12-digit AWS account id"));
        }
        rest.to_string()
    } else {
        f.to_string()
    };
    let (name, qualifier) = match name_part.split_once(':') {
        Some((n, q)) => (n.to_string(), Some(q.to_string())),
        None => (name_part, None),
    };
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // AWS's pattern allows dots in the name.
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!(
            "`{name}` is not a valid function name: use 1-64 letters, digits, -, _ or . (or give an http(s):// URL)"
        ));
    }
    if let Some(q) = qualifier {
        if q != "$LATEST" && q != "$LATEST.PUBLISHED" && !ok(&q) {
            return Err(format!("`{q}` is not a valid version or alias"));
        }
    }
    Ok(())
}

pub fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("is required".into());
    }
    if t.len() > 249 {
        return Err("must be at most 249 characters".into());
    }
    if t == "." || t == ".." {
        return Err("`.` and `..` are not valid topic names".into());
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("`{t}` is not a valid topic name: {:?} is not allowed (use letters, digits, . _ -)", c));
    }
    Ok(())
}

fn check_host_port(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{s}` is not host:port: {why}"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return bad("write an IPv6 address as [addr]:port"),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return bad("the port is missing"),
        }
    };
    if host.is_empty() {
        return bad("the host is missing");
    }
    let host_ok = if s.starts_with('[') {
        host.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return bad("the host has characters a host name cannot have");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("the port must be a number from 1 to 65535"),
    }
}

fn check_group(g: &str) -> Result<(), String> {
    if g.is_empty() || g.len() > 200 {
        return Err("must be 1 to 200 characters".into());
    }
    if let Some(c) = g.chars().find(|c| !(c.is_ascii_alphanumeric() || "-/*:_+=.@".contains(*c))) {
        return Err(format!("{:?} is not allowed in a consumer group id (use letters, digits, -/*:_+=.@)", c));
    }
    Ok(())
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!(
            "Event pattern is not valid. Reason: a pattern must be at most {MAX_PATTERN_CHARS} characters"
        ));
    }
    crate::filter::Pattern::compile(p).map(|_| ())
}

fn check_destination(d: &str, source_topic: &str) -> Result<(), String> {
    if let Some(topic) = d.strip_prefix("kafka://") {
        check_topic(topic).map_err(|m| format!("kafka:// topic {m}"))?;
        if topic == source_topic {
            return Err("the failure topic must not be the source topic".into());
        }
        return Ok(());
    }
    let parts: Vec<&str> = d.split(':').collect();
    if parts.len() >= 6 && parts[0] == "arn" && matches!(parts[2], "sqs" | "sns" | "s3") {
        return Ok(());
    }
    Err(format!("`{d}` is not kafka://<topic> or the ARN of an SQS queue, SNS topic or S3 bucket"))
}

/// `2026-11-25 21:00:00 UTC` for a Unix time.
pub fn format_unix(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => t.to_string(),
    }
}

/// `2026-11-25T21:00:00Z`: the form's way of showing a Unix time.
pub fn format_rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Accepts Unix seconds, RFC 3339 (`2026-11-25T12:00:00Z`, with any offset),
/// or a browser's `datetime-local` value (`2026-11-25T12:00`, read as UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(d) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(d.unix_timestamp());
    }
    let local = if s.len() == 16 { format!("{s}:00") } else { s.to_string() };
    let local = local.replace(' ', "T");
    if let Ok(d) = time::OffsetDateTime::parse(&format!("{local}Z"), &time::format_description::well_known::Rfc3339) {
        return Ok(d.unix_timestamp());
    }
    Err(format!("`{s}` is not a time: use 2026-11-25T12:00:00Z, an offset like +01:00, or Unix seconds"))
}

#[cfg(test)]
mod tests {
    use super::check_function_name;

    #[test]
    fn function_names_take_what_aws_takes() {
        for ok in [
            "orders",
            "orders.v2",
            "orders:live",
            "orders:$LATEST",
            "orders:$LATEST.PUBLISHED",
            "123456789012:function:orders.v2:7",
            "arn:aws:lambda:eu-west-1:123456789012:function:orders.v2:live",
            "https://fn.example/handle",
        ] {
            assert!(check_function_name(ok).is_ok(), "{ok}: {:?}", check_function_name(ok));
        }
        for bad in ["", "orders fn", "orders:live.x", "12:function:x", &"a".repeat(65)] {
            assert!(check_function_name(bad).is_err(), "{bad}");
        }
    }
}
