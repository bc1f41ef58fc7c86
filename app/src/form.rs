//! The mapping form: the flat strings an HTML form posts, converted to and
//! from a `MappingSpec`. Input names are the AWS field paths, so an error's
//! `field` tells which input it belongs under.

use serde::{Deserialize, Serialize};

use crate::spec::*;

pub const F_NAME: &str = "Name";
pub const F_DESCRIPTION: &str = "Description";
pub const F_FUNCTION: &str = "FunctionName";
pub const F_TOPIC: &str = "Topics";
pub const F_SERVERS: &str = "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS";
pub const F_GROUP: &str = "SelfManagedKafkaEventSourceConfig.ConsumerGroupId";
pub const F_BATCH: &str = "BatchSize";
pub const F_WINDOW: &str = "MaximumBatchingWindowInSeconds";
pub const F_POSITION: &str = "StartingPosition";
pub const F_TIMESTAMP: &str = "StartingPositionTimestamp";
pub const F_FILTERS: &str = "FilterCriteria";
pub const F_DESTINATION: &str = "DestinationConfig.OnFailure.Destination";
pub const F_RETRIES: &str = "MaximumRetryAttempts";
pub const F_AGE: &str = "MaximumRecordAgeInSeconds";
pub const F_BISECT: &str = "BisectBatchOnFunctionError";
pub const F_PARTIAL: &str = "FunctionResponseTypes";
pub const F_MIN_POLLERS: &str = "ProvisionedPollerConfig.MinimumPollers";
pub const F_MAX_POLLERS: &str = "ProvisionedPollerConfig.MaximumPollers";
pub const F_PARALLEL: &str = "ParallelizationFactor";
pub const F_ENABLED: &str = "Enabled";
pub const F_FILTER_META: &str = "FilterOnRecordMetadata";
pub const F_MSK: &str = "EventSourceArn";
pub const F_ROLE: &str = "InvocationRoleArn";
/// Kafka authentication: the SASL type (errors of every entry show here).
pub const F_AUTH: &str = "SourceAccessConfigurations";
pub const F_AUTH_USER: &str = "SourceAccessConfigurations.Username";
pub const F_AUTH_PASSWORD: &str = "SourceAccessConfigurations.Password";
pub const F_AUTH_URI: &str = "SourceAccessConfigurations.URI";
pub const F_AUTH_STORED: &str = "SourceAccessConfigurations.SecretStored";
pub const F_CA: &str = "SourceAccessConfigurations.ServerRootCaCertificate";
/// Mutual TLS: the client certificate, its key and the key's password.
pub const F_CLIENT_CERT: &str = "SourceAccessConfigurations.ClientCertificate";
pub const F_CLIENT_KEY: &str = "SourceAccessConfigurations.PrivateKey";
pub const F_CLIENT_KEY_PASSWORD: &str = "SourceAccessConfigurations.PrivateKeyPassword";
pub const F_CLIENT_STORED: &str = "SourceAccessConfigurations.ClientKeyStored";
pub const F_PROTOCOL: &str = "SelfManagedKafkaEventSourceConfig.SecurityProtocol";
/// The schema registry (AWS's SchemaRegistryConfig).
pub const F_SR: &str = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig";
pub const F_SR_URI: &str = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.SchemaRegistryURI";
pub const F_SR_FORMAT: &str = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.EventRecordFormat";
/// Errors of both validation checkboxes show here.
pub const F_SR_VALIDATE: &str = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.SchemaValidationConfigs";
pub const F_SR_KEY: &str = "SchemaRegistryValidateKey";
pub const F_SR_VALUE: &str = "SchemaRegistryValidateValue";
/// Errors of every access configuration show here.
pub const F_SR_ACCESS: &str = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.AccessConfigs";
pub const F_SR_USER: &str = "SchemaRegistryUsername";
pub const F_SR_PASSWORD: &str = "SchemaRegistryPassword";
pub const F_SR_SECRET: &str = "SchemaRegistrySecretURI";
pub const F_SR_STORED: &str = "SchemaRegistrySecretStored";
pub const F_SR_CA: &str = "SchemaRegistryCaCertificate";

/// Every input of the form as typed. Checkboxes are `Some` when ticked (an
/// unticked box is not posted at all).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MappingForm {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Description", default)]
    pub description: String,
    #[serde(rename = "FunctionName", default)]
    pub function_name: String,
    #[serde(rename = "Topics", default)]
    pub topic: String,
    /// Comma- or whitespace-separated host:port list.
    #[serde(rename = "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS", default)]
    pub bootstrap_servers: String,
    #[serde(rename = "SelfManagedKafkaEventSourceConfig.ConsumerGroupId", default)]
    pub consumer_group_id: String,
    #[serde(rename = "EventSourceArn", default)]
    pub event_source_arn: String,
    #[serde(rename = "InvocationRoleArn", default)]
    pub invocation_role_arn: String,
    #[serde(rename = "BatchSize", default)]
    pub batch_size: String,
    #[serde(rename = "MaximumBatchingWindowInSeconds", default)]
    pub window: String,
    #[serde(rename = "StartingPosition", default)]
    pub starting_position: String,
    #[serde(rename = "StartingPositionTimestamp", default)]
    pub starting_position_timestamp: String,
    /// One pattern per non-empty line.
    #[serde(rename = "FilterCriteria", default)]
    pub filters: String,
    #[serde(rename = "DestinationConfig.OnFailure.Destination", default)]
    pub on_failure: String,
    #[serde(rename = "MaximumRetryAttempts", default)]
    pub retries: String,
    #[serde(rename = "MaximumRecordAgeInSeconds", default)]
    pub record_age: String,
    #[serde(rename = "BisectBatchOnFunctionError", default)]
    pub bisect: Option<String>,
    #[serde(rename = "FunctionResponseTypes", default)]
    pub report_batch_item_failures: Option<String>,
    #[serde(rename = "ProvisionedPollerConfig.MinimumPollers", default)]
    pub min_pollers: String,
    #[serde(rename = "ProvisionedPollerConfig.MaximumPollers", default)]
    pub max_pollers: String,
    #[serde(rename = "ParallelizationFactor", default)]
    pub parallel: String,
    #[serde(rename = "Enabled", default)]
    pub enabled: Option<String>,
    #[serde(rename = "FilterOnRecordMetadata", default)]
    pub filter_on_metadata: Option<String>,
    /// "", BASIC_AUTH or a SCRAM type.
    #[serde(rename = "SourceAccessConfigurations", default)]
    pub auth_kind: String,
    #[serde(rename = "SourceAccessConfigurations.Username", default)]
    pub auth_username: String,
    /// Never filled from a stored mapping; empty keeps the stored one. Not
    /// serialized: a form shown again with its errors does not carry it.
    #[serde(rename = "SourceAccessConfigurations.Password", default, skip_serializing)]
    pub auth_password: String,
    #[serde(rename = "SourceAccessConfigurations.URI", default)]
    pub auth_uri: String,
    /// Set when the stored mapping has a password (so an empty one is fine).
    #[serde(rename = "SourceAccessConfigurations.SecretStored", default)]
    pub auth_stored: Option<String>,
    #[serde(rename = "SourceAccessConfigurations.ServerRootCaCertificate", default)]
    pub ca_certificate: String,
    #[serde(rename = "SourceAccessConfigurations.ClientCertificate", default)]
    pub client_certificate: String,
    /// Never filled from a stored mapping; empty keeps the stored key.
    #[serde(rename = "SourceAccessConfigurations.PrivateKey", default, skip_serializing)]
    pub client_key: String,
    #[serde(rename = "SourceAccessConfigurations.PrivateKeyPassword", default, skip_serializing)]
    pub client_key_password: String,
    /// Set when the stored mapping has a client key (so an empty one is fine).
    #[serde(rename = "SourceAccessConfigurations.ClientKeyStored", default)]
    pub client_stored: Option<String>,
    #[serde(rename = "SelfManagedKafkaEventSourceConfig.SecurityProtocol", default)]
    pub security_protocol: String,
    #[serde(rename = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.SchemaRegistryURI", default)]
    pub sr_uri: String,
    #[serde(rename = "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.EventRecordFormat", default)]
    pub sr_format: String,
    #[serde(rename = "SchemaRegistryValidateKey", default)]
    pub sr_key: Option<String>,
    #[serde(rename = "SchemaRegistryValidateValue", default)]
    pub sr_value: Option<String>,
    /// BASIC_AUTH's user name (inline).
    #[serde(rename = "SchemaRegistryUsername", default)]
    pub sr_username: String,
    /// Never filled from a stored mapping; empty keeps the stored one.
    #[serde(rename = "SchemaRegistryPassword", default, skip_serializing)]
    pub sr_password: String,
    /// BASIC_AUTH from Secrets Manager instead.
    #[serde(rename = "SchemaRegistrySecretURI", default)]
    pub sr_secret_uri: String,
    #[serde(rename = "SchemaRegistrySecretStored", default)]
    pub sr_stored: Option<String>,
    #[serde(rename = "SchemaRegistryCaCertificate", default)]
    pub sr_ca: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn int(field: &str, s: &str, errs: &mut Vec<FieldError>) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(FieldError::new(field, format!("`{s}` is not a whole number")));
            None
        }
    }
}

impl MappingForm {
    /// A blank form for a new mapping, with the AWS defaults filled in.
    pub fn new_mapping() -> Self {
        MappingForm {
            batch_size: DEFAULT_BATCH_SIZE.to_string(),
            starting_position: StartingPosition::TrimHorizon.as_str().into(),
            retries: "-1".into(),
            record_age: "-1".into(),
            enabled: Some("on".into()),
            ..Default::default()
        }
    }

    pub fn from_spec(s: &MappingSpec) -> Self {
        let poll = s.provisioned_poller_config.as_ref();
        let mtls = s.source_access_configurations.iter().find(|c| c.kind == AccessKind::ClientCertificateTls);
        let sasl = s.source_access_configurations.iter().find(|c| c.kind.is_sasl());
        MappingForm {
            name: s.name.clone().unwrap_or_default(),
            description: s.description.clone().unwrap_or_default(),
            function_name: s.function_name.clone(),
            topic: s.topics.join(","),
            bootstrap_servers: s.bootstrap_servers().join(","),
            consumer_group_id: s.consumer_group_id().unwrap_or_default().to_string(),
            event_source_arn: s.event_source_arn.clone().unwrap_or_default(),
            invocation_role_arn: s.invocation_role_arn.clone().unwrap_or_default(),
            batch_size: s.batch_size.to_string(),
            window: s.maximum_batching_window_in_seconds.map(|w| w.to_string()).unwrap_or_default(),
            starting_position: s.starting_position.as_str().into(),
            starting_position_timestamp: s.starting_position_timestamp.map(format_rfc3339).unwrap_or_default(),
            filters: s.filter_criteria.filters.iter().map(|f| f.pattern.as_str()).collect::<Vec<_>>().join("\n"),
            on_failure: s.destination_config.on_failure.as_ref().map(|o| o.destination.clone()).unwrap_or_default(),
            retries: s.maximum_retry_attempts.to_string(),
            record_age: s.maximum_record_age_in_seconds.to_string(),
            bisect: s.bisect_batch_on_function_error.then(|| "on".into()),
            report_batch_item_failures: s
                .function_response_types
                .contains(&FunctionResponseType::ReportBatchItemFailures)
                .then(|| "on".into()),
            min_pollers: poll.and_then(|p| p.minimum_pollers).map(|n| n.to_string()).unwrap_or_default(),
            parallel: s.parallelization_factor.map(|n| n.to_string()).unwrap_or_default(),
            max_pollers: poll.and_then(|p| p.maximum_pollers).map(|n| n.to_string()).unwrap_or_default(),
            enabled: s.enabled.then(|| "on".into()),
            filter_on_metadata: s.filter_on_record_metadata.then(|| "on".into()),
            auth_kind: sasl.map(|c| c.kind.to_string()).unwrap_or_default(),
            auth_username: sasl.and_then(|c| c.username.clone()).unwrap_or_default(),
            auth_password: String::new(),
            auth_uri: sasl.and_then(|c| c.uri.clone()).unwrap_or_default(),
            auth_stored: sasl.filter(|c| c.secret_stored).map(|_| "on".into()),
            ca_certificate: s
                .source_access_configurations
                .iter()
                .find(|c| c.kind == AccessKind::ServerRootCaCertificate)
                .and_then(|c| c.certificate.clone())
                .unwrap_or_default(),
            client_certificate: mtls.and_then(|c| c.certificate.clone()).unwrap_or_default(),
            client_key: String::new(),
            client_key_password: String::new(),
            client_stored: mtls.filter(|c| c.secret_stored).map(|_| "on".into()),
            security_protocol: s.self_managed_kafka_event_source_config.security_protocol.clone().unwrap_or_default(),
            ..MappingForm::registry_of(s)
        }
    }

    /// The schema registry's inputs of `s`.
    fn registry_of(s: &MappingSpec) -> MappingForm {
        let Some(r) = s.schema_registry() else { return MappingForm::default() };
        let basic = r.access_configs.iter().find(|c| c.kind == AccessKind::BasicAuth);
        let ca = r.access_configs.iter().find(|c| c.kind == AccessKind::ServerRootCaCertificate);
        let on = |b: bool| b.then(|| "on".to_string());
        MappingForm {
            sr_uri: r.schema_registry_uri.clone().unwrap_or_default(),
            sr_format: r.event_record_format.clone().unwrap_or_default(),
            sr_key: on(r.validates("KEY")),
            sr_value: on(r.validates("VALUE")),
            sr_username: basic.and_then(|c| c.username.clone()).unwrap_or_default(),
            sr_secret_uri: basic.and_then(|c| c.uri.clone()).unwrap_or_default(),
            sr_stored: on(basic.is_some_and(|c| c.secret_stored)),
            sr_ca: ca.and_then(|c| c.certificate.clone()).unwrap_or_default(),
            ..MappingForm::default()
        }
    }

    /// The schema registry these inputs describe (None: no registry).
    pub fn schema_registry(&self) -> Option<SchemaRegistryConfig> {
        let uri = opt(&self.sr_uri);
        let format = opt(&self.sr_format);
        let touched = uri.is_some()
            || self.sr_key.is_some()
            || self.sr_value.is_some()
            || opt(&self.sr_username).is_some()
            || opt(&self.sr_secret_uri).is_some()
            || opt(&self.sr_ca).is_some();
        if !touched {
            return None;
        }
        let mut validations = Vec::new();
        for (on, attribute) in [(&self.sr_key, "KEY"), (&self.sr_value, "VALUE")] {
            if on.is_some() {
                validations.push(SchemaValidationConfig { attribute: attribute.into() });
            }
        }
        let mut access = Vec::new();
        if let Some(secret) = opt(&self.sr_secret_uri) {
            access.push(SourceAccessConfiguration {
                kind: AccessKind::BasicAuth,
                uri: Some(secret),
                ..Default::default()
            });
        } else if let Some(user) = opt(&self.sr_username) {
            access.push(SourceAccessConfiguration {
                kind: AccessKind::BasicAuth,
                username: Some(user),
                password: Some(self.sr_password.clone()).filter(|p| !p.is_empty()),
                secret_stored: self.sr_stored.is_some(),
                ..Default::default()
            });
        }
        if let Some(ca) = opt(&self.sr_ca) {
            access.push(SourceAccessConfiguration {
                kind: AccessKind::ServerRootCaCertificate,
                certificate: Some(ca.replace("\r\n", "\n")),
                ..Default::default()
            });
        }
        Some(SchemaRegistryConfig {
            schema_registry_uri: uri,
            event_record_format: format,
            schema_validation_configs: validations,
            access_configs: access,
        })
    }

    fn access_configurations(&self) -> Vec<SourceAccessConfiguration> {
        let mut out = Vec::new();
        if let Some(kind) = opt(&self.auth_kind) {
            let uri = opt(&self.auth_uri);
            out.push(SourceAccessConfiguration {
                kind: kind.into(),
                username: if uri.is_some() { None } else { opt(&self.auth_username) },
                password: if uri.is_some() { None } else { Some(self.auth_password.clone()).filter(|p| !p.is_empty()) },
                uri,
                secret_stored: self.auth_stored.is_some(),
                ..Default::default()
            });
        }
        // Browsers send a textarea's lines with CRLF: PEM as stored (and as
        // the API gives it) has LF, and a kept key needs the same certificate.
        let pem = |v: &str| opt(v).map(|p| p.replace("\r\n", "\n"));
        if let Some(ca) = pem(&self.ca_certificate) {
            out.push(SourceAccessConfiguration {
                kind: "SERVER_ROOT_CA_CERTIFICATE".into(),
                certificate: Some(ca),
                ..Default::default()
            });
        }
        if let Some(cert) = pem(&self.client_certificate) {
            out.push(SourceAccessConfiguration {
                kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
                certificate: Some(cert),
                private_key: pem(&self.client_key),
                private_key_password: Some(self.client_key_password.clone()).filter(|p| !p.is_empty()),
                secret_stored: self.client_stored.is_some(),
                ..Default::default()
            });
        }
        out
    }

    /// The spec this form describes, or every problem with it (parse errors
    /// first, then the spec's own validation).
    pub fn to_spec(&self, now_s: i64) -> Result<MappingSpec, Vec<FieldError>> {
        let mut errs = Vec::new();
        let split = |s: &str| -> Vec<String> {
            s.split(|c: char| c == ',' || c.is_whitespace()).filter(|x| !x.is_empty()).map(str::to_string).collect()
        };
        let starting_position = match StartingPosition::parse(self.starting_position.trim()) {
            Some(p) => p,
            None => {
                errs.push(FieldError::new(F_POSITION, "choose TRIM_HORIZON, LATEST or AT_TIMESTAMP"));
                StartingPosition::TrimHorizon
            }
        };
        let starting_position_timestamp = match opt(&self.starting_position_timestamp) {
            None => None,
            Some(t) => match parse_time(&t) {
                Ok(t) => Some(t),
                Err(m) => {
                    errs.push(FieldError::new(F_TIMESTAMP, m));
                    None
                }
            },
        };
        let batch_size = match opt(&self.batch_size) {
            None => Some(DEFAULT_BATCH_SIZE),
            Some(_) => int(F_BATCH, &self.batch_size, &mut errs),
        };
        let window = int(F_WINDOW, &self.window, &mut errs);
        let retries = int(F_RETRIES, &self.retries, &mut errs);
        let age = int(F_AGE, &self.record_age, &mut errs);
        let min_p = int(F_MIN_POLLERS, &self.min_pollers, &mut errs);
        let max_p = int(F_MAX_POLLERS, &self.max_pollers, &mut errs);
        let parallel = int(F_PARALLEL, &self.parallel, &mut errs);
        let spec = MappingSpec {
            name: opt(&self.name),
            description: opt(&self.description),
            function_name: self.function_name.trim().to_string(),
            topics: opt(&self.topic).into_iter().collect(),
            self_managed_event_source: SelfManagedEventSource {
                endpoints: Endpoints { kafka_bootstrap_servers: split(&self.bootstrap_servers) },
            },
            self_managed_kafka_event_source_config: SelfManagedKafkaEventSourceConfig {
                consumer_group_id: opt(&self.consumer_group_id),
                security_protocol: opt(&self.security_protocol),
                schema_registry_config: self.schema_registry(),
            },
            batch_size: batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            maximum_batching_window_in_seconds: window,
            starting_position,
            starting_position_timestamp,
            filter_criteria: FilterCriteria {
                filters: self
                    .filters
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Filter { pattern: l.to_string() })
                    .collect(),
            },
            destination_config: DestinationConfig {
                on_failure: opt(&self.on_failure).map(|destination| OnFailure { destination }),
            },
            maximum_retry_attempts: retries.unwrap_or(-1),
            maximum_record_age_in_seconds: age.unwrap_or(-1),
            bisect_batch_on_function_error: self.bisect.is_some(),
            function_response_types: if self.report_batch_item_failures.is_some() {
                vec![FunctionResponseType::ReportBatchItemFailures]
            } else {
                vec![]
            },
            parallelization_factor: parallel,
            provisioned_poller_config: (min_p.is_some() || max_p.is_some()).then_some(ProvisionedPollerConfig {
                minimum_pollers: min_p,
                maximum_pollers: max_p,
                poller_group_name: None,
            }),
            enabled: self.enabled.is_some(),
            filter_on_record_metadata: self.filter_on_metadata.is_some(),
            event_source_arn: opt(&self.event_source_arn),
            amazon_managed_kafka_event_source_config: None,
            invocation_role_arn: opt(&self.invocation_role_arn),
            // SASL and a CA here; client certificates (API only) are kept
            // by the update handler.
            source_access_configurations: self.access_configurations(),
            kms_key_arn: None,
            metrics_config: None,
            logging_config: None,
        };
        // A number that did not parse must not also be reported as out of
        // range with a made-up value: drop validation errors for those fields.
        let unparsed: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
        errs.extend(spec.validate(now_s).into_iter().filter(|e| !unparsed.iter().any(|f| e.is_for(f))));
        if errs.is_empty() {
            Ok(spec)
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;

    fn good() -> MappingForm {
        MappingForm {
            function_name: "http://127.0.0.1:9000/fn".into(),
            topic: "orders".into(),
            bootstrap_servers: "localhost:9092, b-2.example:9094".into(),
            filter_on_metadata: Some("on".into()),
            ..MappingForm::new_mapping()
        }
    }

    fn fields(f: &MappingForm) -> Vec<String> {
        f.to_spec(NOW).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn an_msk_cluster_arn_is_checked_and_kept() {
        let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/orders/0b5f1d2e-1111-2222-3333-444455556666-2";
        let spec = MappingForm { event_source_arn: arn.into(), ..good() }.to_spec(NOW).unwrap();
        assert_eq!(spec.event_source_arn.as_deref(), Some(arn));
        assert_eq!(MappingForm::from_spec(&spec).event_source_arn, arn);
        for bad in
            ["arn:aws:sqs:eu-west-1:123456789012:q", "arn:aws:kafka:eu-west-1:1234:cluster/x/y", "cluster/orders"]
        {
            assert_eq!(fields(&MappingForm { event_source_arn: bad.into(), ..good() }), [F_MSK], "{bad}");
        }
        let role = "arn:aws:iam::123456789012:role/sluice-invoker";
        assert_eq!(
            MappingForm { invocation_role_arn: role.into(), ..good() }
                .to_spec(NOW)
                .unwrap()
                .invocation_role_arn
                .as_deref(),
            Some(role)
        );
        for bad in ["arn:aws:iam::123456789012:user/bob", "role/x", "arn:aws:iam:us-east-1:123456789012:role/x"] {
            assert_eq!(fields(&MappingForm { invocation_role_arn: bad.into(), ..good() }), [F_ROLE], "{bad}");
        }
    }

    #[test]
    fn a_good_form_becomes_the_spec_and_back() {
        let spec = good().to_spec(NOW).expect("valid");
        assert_eq!(spec.bootstrap_servers(), ["localhost:9092", "b-2.example:9094"]);
        assert_eq!(spec.batch_size, 100);
        assert!(spec.enabled);
        let again = MappingForm::from_spec(&spec).to_spec(NOW).unwrap();
        assert_eq!(spec, again);
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let cases: Vec<(MappingForm, &str)> = vec![
            (MappingForm { batch_size: "0".into(), ..good() }, F_BATCH),
            (MappingForm { batch_size: "ten".into(), ..good() }, F_BATCH),
            (MappingForm { window: "301".into(), ..good() }, F_WINDOW),
            (
                MappingForm { bootstrap_servers: "localhost".into(), ..good() },
                "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[0]",
            ),
            (
                MappingForm { bootstrap_servers: "host:99999".into(), ..good() },
                "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[0]",
            ),
            (MappingForm { topic: "my topic".into(), ..good() }, "Topics[0]"),
            (MappingForm { filters: "{\"value\": [1]}\n".repeat(MAX_FILTERS + 1), ..good() }, "FilterCriteria.Filters"),
            (MappingForm { filters: "{\"value\": [1]}\n[1]".into(), ..good() }, "FilterCriteria.Filters[1].Pattern"),
            (MappingForm { starting_position: "AT_TIMESTAMP".into(), ..good() }, F_TIMESTAMP),
            (
                MappingForm {
                    starting_position: "AT_TIMESTAMP".into(),
                    starting_position_timestamp: (NOW + 3600).to_string(),
                    ..good()
                },
                F_TIMESTAMP,
            ),
            (MappingForm { function_name: "".into(), ..good() }, F_FUNCTION),
            (MappingForm { function_name: "my function".into(), ..good() }, F_FUNCTION),
            (MappingForm { retries: "10001".into(), ..good() }, F_RETRIES),
            (MappingForm { record_age: "59".into(), ..good() }, F_AGE),
            (MappingForm { on_failure: "kafka://orders".into(), ..good() }, F_DESTINATION),
            (MappingForm { consumer_group_id: "a group".into(), ..good() }, F_GROUP),
            (MappingForm { min_pollers: "5".into(), max_pollers: "2".into(), ..good() }, F_MAX_POLLERS),
            (MappingForm { parallel: "101".into(), ..good() }, F_PARALLEL),
        ];
        for (form, field) in cases {
            assert_eq!(fields(&form), vec![field.to_string()], "form {form:?}");
        }
    }

    #[test]
    fn times_parse_in_every_accepted_form() {
        assert_eq!(parse_time("2026-11-25T12:00:00Z"), Ok(1_795_608_000));
        assert_eq!(parse_time("2026-11-25T13:00:00+01:00"), parse_time("2026-11-25T12:00:00Z"));
        assert_eq!(parse_time("2026-11-25T12:00"), parse_time("2026-11-25T12:00:00Z"));
        assert_eq!(parse_time("1795608000"), Ok(1_795_608_000));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn error_fields_match_their_inputs_only() {
        let e = FieldError::new("StartingPositionTimestamp", "x");
        assert!(e.is_for(F_TIMESTAMP));
        assert!(!e.is_for(F_POSITION));
        assert!(FieldError::new("FilterCriteria.Filters[2].Pattern", "x").is_for(F_FILTERS));
        assert!(FieldError::new("Topics[0]", "x").is_for(F_TOPIC));
    }

    #[test]
    fn kafka_authentication_round_trips_without_ever_holding_the_password() {
        let mut f = MappingForm { auth_kind: "SASL_SCRAM_512_AUTH".into(), auth_username: "alice".into(), ..good() };
        let errs = f.to_spec(NOW).unwrap_err();
        assert!(errs.iter().any(|e| e.is_for(F_AUTH) && e.field.ends_with("Password")), "{errs:?}");
        f.auth_password = "s3cret-pw".into();
        f.ca_certificate = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----".into();
        let mut spec = f.to_spec(NOW).unwrap();
        assert_eq!(spec.security_protocol(), "SASL_SSL");
        assert_eq!(spec.source_access_configurations.len(), 2);
        // As stored: the password kept apart, the spec says one is stored.
        spec.source_access_configurations[0].password = None;
        spec.source_access_configurations[0].secret_stored = true;
        let back = MappingForm::from_spec(&spec);
        assert_eq!(
            (back.auth_kind.as_str(), back.auth_username.as_str(), back.auth_password.as_str()),
            ("SASL_SCRAM_512_AUTH", "alice", "")
        );
        assert!(back.auth_stored.is_some() && back.ca_certificate.starts_with("-----BEGIN"));
        // Sent back untouched, it validates (the server then keeps the stored password).
        let again = back.to_spec(NOW).unwrap();
        assert_eq!(again.source_access_configurations[0].password, None);
    }

    #[test]
    fn a_schema_registry_round_trips_and_each_mistake_is_named() {
        let mut f = MappingForm { sr_uri: "ftp://registry".into(), ..good() };
        let errs = f.to_spec(NOW).unwrap_err();
        let on = |field: &str| errs.iter().filter(|e| e.is_for(field)).map(|e| e.message.clone()).collect::<Vec<_>>();
        assert!(on(F_SR_URI)[0].contains("neither an http(s):// URL nor a Glue registry ARN"), "{errs:?}");
        assert!(on(F_SR_FORMAT)[0].contains("JSON or SOURCE"));
        assert!(on(F_SR_VALIDATE)[0].contains("KEY or VALUE"));

        f.sr_uri = "arn:aws:glue:eu-west-1:123456789012:registry/orders".into();
        f.sr_username = "sr".into();
        f.sr_format = "SOURCE".into();
        f.sr_value = Some("on".into());
        let errs = f.to_spec(NOW).unwrap_err();
        assert!(
            errs.iter().any(|e| e.is_for(F_SR_ACCESS) && e.message.contains("mapping's AWS credentials")),
            "{errs:?}"
        );

        f.sr_uri = "https://registry:8081".into();
        f.sr_password = "pw".into();
        f.sr_key = Some("on".into());
        let mut spec = f.to_spec(NOW).unwrap();
        let r = spec.schema_registry().unwrap();
        assert!(r.validates("KEY") && r.validates("VALUE") && !r.as_json() && !r.is_glue());
        assert_eq!(r.access_configs[0].password.as_deref(), Some("pw"));
        // As stored: the password apart; shown back, it is not in the form.
        let basic = &mut spec.schema_registry_mut().unwrap().access_configs[0];
        basic.password = None;
        basic.secret_stored = true;
        let back = MappingForm::from_spec(&spec);
        assert_eq!((back.sr_username.as_str(), back.sr_password.as_str()), ("sr", ""));
        assert!(back.sr_stored.is_some() && back.sr_key.is_some() && back.sr_value.is_some());
        assert_eq!(back.to_spec(NOW).unwrap().schema_registry(), spec.schema_registry());
        // No registry inputs: no registry.
        assert!(good().to_spec(NOW).unwrap().schema_registry().is_none());
    }

    #[test]
    fn a_client_certificate_round_trips_without_its_key() {
        let cert = "-----BEGIN CERTIFICATE-----\nc\n-----END CERTIFICATE-----";
        let mut f = MappingForm { client_certificate: cert.replace('\n', "\r\n"), ..good() };
        let errs = f.to_spec(NOW).unwrap_err();
        assert!(errs.iter().any(|e| e.field.ends_with("PrivateKey")), "a certificate needs its key: {errs:?}");
        f.client_key = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nk\n-----END ENCRYPTED PRIVATE KEY-----".into();
        let errs = f.to_spec(NOW).unwrap_err();
        assert!(
            errs.iter().any(|e| e.field.ends_with("PrivateKeyPassword")),
            "an encrypted key needs its password: {errs:?}"
        );
        f.client_key_password = "kp".into();
        let mut spec = f.to_spec(NOW).unwrap();
        assert_eq!(spec.security_protocol(), "SSL");
        let c = &spec.source_access_configurations[0];
        assert_eq!(
            (c.kind.as_str(), c.certificate.as_deref(), c.private_key_password.as_deref()),
            ("CLIENT_CERTIFICATE_TLS_AUTH", Some(cert), Some("kp"))
        );
        // As stored: the key apart; the form shows the certificate only.
        spec.source_access_configurations[0].private_key = None;
        spec.source_access_configurations[0].private_key_password = None;
        spec.source_access_configurations[0].secret_stored = true;
        let back = MappingForm::from_spec(&spec);
        assert_eq!(
            (back.client_certificate.as_str(), back.client_key.as_str(), back.client_key_password.as_str()),
            (cert, "", "")
        );
        assert!(back.client_stored.is_some());
        assert!(back.to_spec(NOW).is_ok(), "sent back untouched, it validates (the server keeps the stored key)");
    }
}
