//! How every Kafka client of a mapping (its pollers, the lag reader, the
//! reset and the filter tester's sampler) authenticates to the brokers:
//! librdkafka settings derived from the spec's SourceAccessConfigurations.

use rdkafka::ClientConfig;
use sluice_app::spec::MappingSpec;

/// Fills the secrets of every configuration given by Secrets Manager `URI`,
/// in the JSON AWS documents for it: `username`/`password` for SASL,
/// `certificate`/`privateKey` for mutual TLS, `certificate` for a CA.
pub async fn resolve(sdk: &aws_config::SdkConfig, spec: &mut MappingSpec) -> Result<(), String> {
    for c in spec.source_access_configurations.iter_mut() {
        let Some(uri) = c.uri.clone() else { continue };
        let sdk = crate::engine::in_region(sdk, &uri, "")?;
        let out = aws_sdk_secretsmanager::Client::new(&sdk)
            .get_secret_value()
            .secret_id(&uri)
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
                // AWS's code and message when it answered; the whole chain when it could not be reached.
                let why = match (e.code(), e.message()) {
                    (Some(code), Some(m)) => format!("{code}: {m}"),
                    _ => aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                };
                format!("cannot read the secret {uri} from Secrets Manager: {why}")
            })?;
        let text = out.secret_string().ok_or_else(|| format!("the secret {uri} has no text value"))?;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| format!("the secret {uri} is not a JSON object"))?;
        let field = |k: &str| -> Result<String, String> {
            v.get(k).and_then(|x| x.as_str()).map(String::from).ok_or_else(|| format!("the secret {uri} has no `{k}`"))
        };
        match c.kind.as_str() {
            "CLIENT_CERTIFICATE_TLS_AUTH" => {
                if v.get("privateKeyPassword").is_some_and(|p| p.as_str().is_some_and(|p| !p.is_empty())) {
                    return Err(format!("the secret {uri} has an encrypted private key (privateKeyPassword): Sluice takes unencrypted PEM keys"));
                }
                c.certificate = Some(field("certificate")?);
                c.private_key = Some(field("privateKey")?);
            }
            "SERVER_ROOT_CA_CERTIFICATE" => c.certificate = Some(field("certificate")?),
            _ => {
                c.username = Some(field("username")?);
                c.password = Some(field("password")?);
            }
        }
    }
    Ok(())
}

/// The settings, secrets included: never printed (Debug shows the keys).
#[derive(Clone, Default)]
pub struct KafkaAuth(Vec<(&'static str, String)>);

impl std::fmt::Debug for KafkaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl KafkaAuth {
    pub fn of(spec: &MappingSpec) -> KafkaAuth {
        let mut out = vec![("security.protocol", spec.security_protocol().to_ascii_lowercase())];
        for c in &spec.source_access_configurations {
            let mechanism = match c.kind.as_str() {
                "BASIC_AUTH" => Some("PLAIN"),
                "SASL_SCRAM_256_AUTH" => Some("SCRAM-SHA-256"),
                "SASL_SCRAM_512_AUTH" => Some("SCRAM-SHA-512"),
                _ => None,
            };
            if let Some(m) = mechanism {
                out.push(("sasl.mechanism", m.into()));
                out.push(("sasl.username", c.username.clone().unwrap_or_default()));
                out.push(("sasl.password", c.password.clone().unwrap_or_default()));
            }
            match c.kind.as_str() {
                "SERVER_ROOT_CA_CERTIFICATE" => out.extend(c.certificate.clone().map(|p| ("ssl.ca.pem", p))),
                "CLIENT_CERTIFICATE_TLS_AUTH" => {
                    out.extend(c.certificate.clone().map(|p| ("ssl.certificate.pem", p)));
                    out.extend(c.private_key.clone().map(|p| ("ssl.key.pem", p)));
                }
                _ => {}
            }
        }
        KafkaAuth(out)
    }

    pub fn apply<'a>(&self, cfg: &'a mut ClientConfig) -> &'a mut ClientConfig {
        for (k, v) in &self.0 {
            cfg.set(*k, v);
        }
        cfg
    }

    /// A message (from librdkafka, a broker) with every secret replaced by `****`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.0 {
            if matches!(*k, "sasl.password" | "ssl.key.pem") && v.len() >= 4 {
                out = out.replace(v.as_str(), "****");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_app::spec::SourceAccessConfiguration;

    fn spec(configs: Vec<SourceAccessConfiguration>, protocol: Option<&str>) -> MappingSpec {
        let mut s: MappingSpec = serde_json::from_value(serde_json::json!({
            "FunctionName": "http://f/", "Topics": ["t"], "StartingPosition": "LATEST",
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b:9092"]}}
        }))
        .unwrap();
        s.source_access_configurations = configs;
        s.self_managed_kafka_event_source_config.security_protocol = protocol.map(String::from);
        s
    }

    fn get(a: &KafkaAuth, k: &str) -> Option<String> {
        a.0.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn settings_follow_the_access_configurations() {
        let none = KafkaAuth::of(&spec(vec![], None));
        assert_eq!(get(&none, "security.protocol").as_deref(), Some("plaintext"));
        let scram = KafkaAuth::of(&spec(
            vec![SourceAccessConfiguration { kind: "SASL_SCRAM_256_AUTH".into(), username: Some("u".into()), password: Some("pw-1234".into()), ..Default::default() }],
            None,
        ));
        assert_eq!(get(&scram, "security.protocol").as_deref(), Some("sasl_ssl"), "SASL defaults to TLS, as in AWS");
        assert_eq!(get(&scram, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-256"));
        assert_eq!(get(&scram, "sasl.password").as_deref(), Some("pw-1234"));
        assert_eq!(scram.redact("bad pw-1234 here"), "bad **** here");
        assert!(!format!("{scram:?}").contains("pw-1234"));
        let mtls = KafkaAuth::of(&spec(
            vec![
                SourceAccessConfiguration { kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(), certificate: Some("-----BEGIN CERTIFICATE-----c".into()), private_key: Some("-----BEGIN PRIVATE KEY-----k".into()), ..Default::default() },
                SourceAccessConfiguration { kind: "SERVER_ROOT_CA_CERTIFICATE".into(), certificate: Some("-----BEGIN CERTIFICATE-----ca".into()), ..Default::default() },
            ],
            None,
        ));
        assert_eq!(get(&mtls, "security.protocol").as_deref(), Some("ssl"));
        assert_eq!(get(&mtls, "ssl.certificate.pem").as_deref(), Some("-----BEGIN CERTIFICATE-----c"));
        assert_eq!(get(&mtls, "ssl.key.pem").as_deref(), Some("-----BEGIN PRIVATE KEY-----k"));
        assert_eq!(get(&mtls, "ssl.ca.pem").as_deref(), Some("-----BEGIN CERTIFICATE-----ca"));
        // librdkafka takes every one of them (a client is created with them).
        let mut cfg = ClientConfig::new();
        mtls.apply(&mut cfg).set("bootstrap.servers", "127.0.0.1:9");
        assert_eq!(cfg.get("security.protocol"), Some("ssl"));
    }

    #[test]
    fn invalid_access_configurations_are_refused_by_field() {
        let fields = |s: &MappingSpec| s.validate(0).into_iter().map(|e| e.field).collect::<Vec<_>>();
        let sasl = |kind: &str, pw: Option<&str>| SourceAccessConfiguration { kind: kind.into(), username: Some("u".into()), password: pw.map(String::from), ..Default::default() };
        assert_eq!(fields(&spec(vec![sasl("SASL_SCRAM_512_AUTH", Some("p"))], None)), Vec::<String>::new());
        assert_eq!(fields(&spec(vec![sasl("SASL_SCRAM_512_AUTH", None)], None)), ["SourceAccessConfigurations[0].Password"]);
        assert_eq!(fields(&spec(vec![sasl("KERBEROS", Some("p"))], None)), ["SourceAccessConfigurations[0].Type"]);
        assert_eq!(fields(&spec(vec![sasl("BASIC_AUTH", Some("p"))], Some("SSL"))), ["SourceAccessConfigurations[0].Type"]);
        assert_eq!(fields(&spec(vec![], Some("SASL_SSL"))), ["SelfManagedKafkaEventSourceConfig.SecurityProtocol"]);
        assert_eq!(fields(&spec(vec![], Some("TLS"))), ["SelfManagedKafkaEventSourceConfig.SecurityProtocol"]);
        let uri = |u: &str| SourceAccessConfiguration { kind: "BASIC_AUTH".into(), uri: Some(u.into()), ..Default::default() };
        assert_eq!(fields(&spec(vec![uri("arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-AbCdEf")], None)), Vec::<String>::new());
        assert_eq!(fields(&spec(vec![uri("arn:aws:s3:::bucket")], None)), ["SourceAccessConfigurations[0].URI"]);
        let both = SourceAccessConfiguration { password: Some("p".into()), ..uri("arn:aws:secretsmanager:us-east-1:123456789012:secret:k") };
        assert_eq!(fields(&spec(vec![both], None)), ["SourceAccessConfigurations[0].URI"]);
        let cert = SourceAccessConfiguration { kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(), certificate: Some("nope".into()), ..Default::default() };
        assert_eq!(fields(&spec(vec![cert], None)), ["SourceAccessConfigurations[0].Certificate", "SourceAccessConfigurations[0].PrivateKey"]);
    }
}
