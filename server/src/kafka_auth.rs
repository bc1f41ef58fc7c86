//! How every Kafka client of a mapping (its pollers, the lag reader, the
//! reset and the filter tester's sampler) authenticates to the brokers:
//! librdkafka settings derived from the spec's SourceAccessConfigurations.

use std::sync::Arc;

use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext};
use sluice_app::spec::{AccessKind, MappingSpec};

/// Why a mapping's credentials cannot be made ready; shown as the mapping's
/// status (EVENT_SOURCE_AUTHN_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    NoRegion(#[from] crate::aws::NoRegion),
    /// AWS's code and message when it answered; the whole chain when it
    /// could not be reached.
    #[error("cannot read the secret {uri} from Secrets Manager: {why}")]
    SecretUnreadable { uri: String, why: String },
    #[error("the secret {uri} has no text value")]
    SecretNotText { uri: String },
    #[error("the secret {uri} is not a JSON object")]
    SecretNotJson { uri: String },
    #[error("the secret {uri} has no `{field}`")]
    SecretField { uri: String, field: &'static str },
    #[error("MSK IAM: no AWS credentials are configured to sign in with")]
    NoAwsCredentials,
    #[error("MSK IAM: cannot get AWS credentials: {0}")]
    AwsCredentials(String),
    #[error("cannot look up the brokers of MSK cluster {arn} (GetBootstrapBrokers): {why}")]
    Brokers { arn: String, why: String },
}

/// Fills the secrets of every configuration given by Secrets Manager `URI`,
/// in the JSON AWS documents for it: `username`/`password` for SASL,
/// `certificate`/`privateKey` for mutual TLS, `certificate` for a CA.
pub async fn resolve(sdk: &aws_config::SdkConfig, spec: &mut MappingSpec) -> Result<(), CredentialsError> {
    resolve_configs(sdk, spec.source_access_configurations.iter_mut()).await
}

/// Reads each configuration's Secrets Manager secret (`URI`) into its
/// inline fields (the brokers' or the schema registry's).
pub async fn resolve_configs(
    sdk: &aws_config::SdkConfig,
    configs: impl Iterator<Item = &mut sluice_app::spec::SourceAccessConfiguration>,
) -> Result<(), CredentialsError> {
    for c in configs {
        let Some(uri) = c.uri.clone().filter(|_| !c.kind.is_network()) else { continue };
        let sdk = crate::aws::in_region(sdk, &uri, "")?;
        let out =
            aws_sdk_secretsmanager::Client::new(&sdk).get_secret_value().secret_id(&uri).send().await.map_err(|e| {
                use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
                let why = match (e.code(), e.message()) {
                    (Some(code), Some(m)) => format!("{code}: {m}"),
                    _ => aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                };
                CredentialsError::SecretUnreadable { uri: uri.clone(), why }
            })?;
        let text = out.secret_string().ok_or_else(|| CredentialsError::SecretNotText { uri: uri.clone() })?;
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|_| CredentialsError::SecretNotJson { uri: uri.clone() })?;
        let field = |k: &'static str| -> Result<String, CredentialsError> {
            let missing = || CredentialsError::SecretField { uri: uri.clone(), field: k };
            v.get(k).and_then(|x| x.as_str()).map(String::from).ok_or_else(missing)
        };
        match c.kind {
            AccessKind::ClientCertificateTls => {
                c.certificate = Some(field("certificate")?);
                c.private_key = Some(field("privateKey")?);
                c.private_key_password =
                    v.get("privateKeyPassword").and_then(|p| p.as_str()).filter(|p| !p.is_empty()).map(String::from);
            }
            AccessKind::ServerRootCaCertificate => c.certificate = Some(field("certificate")?),
            _ => {
                c.username = Some(field("username")?);
                c.password = Some(field("password")?);
            }
        }
    }
    Ok(())
}

/// Whether signing in for `spec` needs AWS: a Secrets Manager URI, MSK
/// IAM, or an MSK cluster's brokers to look up.
pub fn needs_aws(spec: &MappingSpec) -> bool {
    spec.msk_iam()
        || needs_brokers(spec)
        || spec.source_access_configurations.iter().any(|c| c.uri.is_some() && !c.kind.is_network())
}

/// An MSK mapping given only its cluster's ARN (as AWS definitions are):
/// its brokers come from MSK's GetBootstrapBrokers. A broker list given
/// with the ARN wins.
pub fn needs_brokers(spec: &MappingSpec) -> bool {
    spec.event_source_arn.is_some() && spec.bootstrap_servers().is_empty()
}

/// Which of GetBootstrapBrokers' strings a mapping connects with, chosen
/// by its authentication as AWS's event source mappings choose it.
fn broker_string(spec: &MappingSpec) -> &'static str {
    if spec.msk_iam() {
        "BootstrapBrokerStringSaslIam"
    } else if spec.source_access_configurations.iter().any(|c| c.kind.is_sasl()) {
        "BootstrapBrokerStringSaslScram"
    } else if spec.security_protocol().ends_with("SSL") {
        "BootstrapBrokerStringTls"
    } else {
        "BootstrapBrokerString"
    }
}

/// Fills the brokers of an MSK mapping given only its ARN (`needs_brokers`)
/// from MSK's GetBootstrapBrokers, signed with the mapping's AWS
/// credentials. MSK's endpoint: `AWS_ENDPOINT_URL_KAFKA`, else
/// `AWS_ENDPOINT_URL`, else AWS's own for the cluster's region.
async fn look_up_brokers(sdk: &aws_config::SdkConfig, spec: &mut MappingSpec) -> Result<(), CredentialsError> {
    if !needs_brokers(spec) {
        return Ok(());
    }
    let arn = spec.event_source_arn.clone().unwrap_or_default();
    let fail = |why: String| CredentialsError::Brokers { arn: arn.clone(), why };
    let region = spec.msk_region().unwrap_or_default().to_string();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let endpoint = var("AWS_ENDPOINT_URL_KAFKA")
        .or_else(|| var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://kafka.{region}.amazonaws.com"));
    let url =
        format!("{}/v1/clusters/{}/bootstrap-brokers", endpoint.trim_end_matches('/'), sluice_app::uri_encode(&arn));
    let req =
        crate::aws::signed_request(credentials(sdk).await?, &region, "kafka", reqwest::Method::GET, &url, &[], vec![])
            .map_err(fail)?
            .timeout(std::time::Duration::from_secs(10));
    let res = req.send().await.map_err(|e| fail(e.to_string()))?;
    let status = res.status();
    let bytes = res.bytes().await.map_err(|e| fail(e.to_string()))?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let message = body.get("message").or_else(|| body.get("Message")).and_then(|m| m.as_str()).unwrap_or("");
        return Err(fail(format!("MSK answered {status} {message}")));
    }
    let which = broker_string(spec);
    let brokers: Vec<String> = body
        .get(which)
        .and_then(|b| b.as_str())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect();
    if brokers.is_empty() {
        return Err(fail(format!("the cluster has no {which} (the brokers for this mapping's authentication)")));
    }
    spec.self_managed_event_source.endpoints.kafka_bootstrap_servers = brokers;
    Ok(())
}

/// What `spec`'s Kafka clients connect with, given `sdk` (when
/// `needs_aws`): the spec with an MSK cluster's brokers looked up (its
/// secrets stay out of it), and the settings, its Secrets Manager secrets
/// read and its MSK IAM credentials loaded.
pub async fn prepare(
    spec: &MappingSpec,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<(MappingSpec, KafkaAuth), CredentialsError> {
    let mut spec = spec.clone();
    let Some(sdk) = sdk.filter(|_| needs_aws(&spec)) else {
        let auth = KafkaAuth::of(&spec);
        return Ok((spec, auth));
    };
    look_up_brokers(sdk, &mut spec).await?;
    let mut with_secrets = spec.clone();
    resolve(sdk, &mut with_secrets).await?;
    let auth = KafkaAuth::of(&with_secrets);
    auth.load_credentials(sdk).await?;
    Ok((spec, auth))
}

/// The AWS credentials `sdk` provides now.
async fn credentials(sdk: &aws_config::SdkConfig) -> Result<aws_credential_types::Credentials, CredentialsError> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let provider = sdk.credentials_provider().ok_or(CredentialsError::NoAwsCredentials)?;
    provider.provide_credentials().await.map_err(|e| {
        CredentialsError::AwsCredentials(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
    })
}

/// The settings, secrets included: never printed (Debug shows the keys).
/// With MSK IAM, also what signs the OAUTHBEARER tokens.
#[derive(Clone, Default)]
pub struct KafkaAuth {
    settings: Vec<(&'static str, String)>,
    iam: Option<Arc<MskIam>>,
}

impl std::fmt::Debug for KafkaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.settings.iter().map(|(k, _)| k)).finish()
    }
}

impl KafkaAuth {
    pub fn of(spec: &MappingSpec) -> KafkaAuth {
        let mut out = vec![("security.protocol", spec.security_protocol().to_ascii_lowercase())];
        for c in &spec.source_access_configurations {
            let mechanism = match c.kind {
                AccessKind::BasicAuth => Some("PLAIN"),
                AccessKind::SaslScram256 => Some("SCRAM-SHA-256"),
                AccessKind::SaslScram512 => Some("SCRAM-SHA-512"),
                _ => None,
            };
            if let Some(m) = mechanism {
                out.push(("sasl.mechanism", m.into()));
                out.push(("sasl.username", c.username.clone().unwrap_or_default()));
                out.push(("sasl.password", c.password.clone().unwrap_or_default()));
            }
            match c.kind {
                AccessKind::ServerRootCaCertificate => out.extend(c.certificate.clone().map(|p| ("ssl.ca.pem", p))),
                AccessKind::ClientCertificateTls => {
                    out.extend(c.certificate.clone().map(|p| ("ssl.certificate.pem", p)));
                    out.extend(c.private_key.clone().map(|p| ("ssl.key.pem", p)));
                    out.extend(c.private_key_password.clone().map(|p| ("ssl.key.password", p)));
                }
                _ => {}
            }
        }
        let iam = spec.msk_iam().then(|| {
            out.push(("sasl.mechanism", "OAUTHBEARER".into()));
            Arc::new(MskIam {
                region: spec.msk_region().unwrap_or_default().to_string(),
                credentials: Default::default(),
            })
        });
        KafkaAuth { settings: out, iam }
    }

    /// With MSK IAM: reads the credentials tokens are signed with (from
    /// `sdk`: the mapping's role, or the node's). Nothing to do otherwise.
    pub async fn load_credentials(&self, sdk: &aws_config::SdkConfig) -> Result<(), CredentialsError> {
        match &self.iam {
            Some(iam) => iam.load(sdk).await,
            None => Ok(()),
        }
    }

    /// With MSK IAM, reloads the credentials every minute until `stop`
    /// (the SDK's provider refreshes temporary ones; tokens signed later
    /// take the new ones).
    pub fn keep_credentials_fresh(&self, sdk: aws_config::SdkConfig, stop: tokio_util::sync::CancellationToken) {
        let Some(iam) = self.iam.clone() else { return };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
                if let Err(e) = iam.load(&sdk).await {
                    tracing::warn!("MSK IAM: {e}");
                }
            }
        });
    }

    pub fn apply<'a>(&self, cfg: &'a mut ClientConfig) -> &'a mut ClientConfig {
        for (k, v) in &self.settings {
            cfg.set(*k, v);
        }
        cfg
    }

    /// A consumer with these settings that can answer librdkafka's token
    /// requests; the first one is served before it is handed out (metadata
    /// and offset calls would otherwise wait for a token nobody sets).
    pub fn consumer(&self, cfg: &mut ClientConfig) -> KafkaResult<BaseConsumer<AuthContext>> {
        let c: BaseConsumer<AuthContext> = self.apply(cfg).create_with_context(AuthContext(self.clone()))?;
        self.serve(&c);
        Ok(c)
    }

    /// Serves a pending token request of a consumer that is not polled for
    /// records (the lag reader calls it before each reading).
    pub fn serve<C: ConsumerContext>(&self, c: &BaseConsumer<C>) {
        if self.iam.is_some() {
            let _ = c.poll(std::time::Duration::from_millis(50));
        }
    }

    /// librdkafka asks for an OAUTHBEARER token (MSK IAM only).
    pub fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let iam = self.iam.as_ref().ok_or("this mapping does not use MSK IAM")?;
        Ok(iam.token(std::time::SystemTime::now())?)
    }

    /// A message (from librdkafka, a broker) with every secret replaced by `****`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.settings {
            if matches!(*k, "sasl.password" | "ssl.key.pem" | "ssl.key.password") && v.len() >= 4 {
                out = out.replace(v.as_str(), "****");
            }
        }
        out
    }
}

/// The context of a mapping's short-lived clients (lag reader, resets, the
/// filter tester's sampler): serves MSK IAM tokens.
pub struct AuthContext(pub KafkaAuth);

impl ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.0.oauth_token()
    }
}

impl ConsumerContext for AuthContext {}

/// How long a token (a presigned URL) is valid: what AWS's own signers use.
const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(900);

/// Signs MSK IAM tokens: a SigV4-presigned `GET
/// https://kafka.REGION.amazonaws.com/?Action=kafka-cluster:Connect` for
/// the service `kafka-cluster`, base64url-encoded without padding, as AWS's
/// aws-msk-iam-sasl-signer libraries make them.
struct MskIam {
    region: String,
    credentials: std::sync::RwLock<Option<aws_credential_types::Credentials>>,
}

impl MskIam {
    async fn load(&self, sdk: &aws_config::SdkConfig) -> Result<(), CredentialsError> {
        let c = credentials(sdk).await?;
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
        Ok(())
    }

    fn token(&self, now: std::time::SystemTime) -> Result<OAuthToken, String> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
        use base64::Engine as _;
        let creds = self.credentials.read().unwrap_or_else(|e| e.into_inner()).clone();
        let creds = creds.ok_or("MSK IAM: the AWS credentials are not loaded yet")?;
        let expires = creds.expiry();
        let identity = aws_smithy_runtime_api::client::identity::Identity::from(creds);
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_LIFETIME);
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kafka-cluster")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| format!("MSK IAM: {e}"))?
            .into();
        let host = format!("kafka.{}.amazonaws.com", self.region);
        let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
        let request =
            SignableRequest::new("GET", &url, std::iter::once(("host", host.as_str())), SignableBody::Bytes(&[]))
                .map_err(|e| format!("MSK IAM: {e}"))?;
        let (instructions, _) = sign(request, &params).map_err(|e| format!("MSK IAM: {e}"))?.into_parts();
        let mut signed = url;
        for (k, v) in instructions.params() {
            signed.push_str(&format!("&{k}={}", sluice_app::uri_encode(v)));
        }
        // Added after signing, as AWS's signers do; brokers log it.
        signed.push_str(&format!(
            "&User-Agent={}",
            sluice_app::uri_encode(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        ));
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.as_bytes());
        let until = now + TOKEN_LIFETIME;
        let until = expires.map_or(until, |e| e.min(until));
        let lifetime_ms = until.duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis() as i64;
        Ok(OAuthToken { token, principal_name: "sluice".into(), lifetime_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::tests::spec;
    use sluice_app::spec::SourceAccessConfiguration;

    fn get(a: &KafkaAuth, k: &str) -> Option<String> {
        a.settings.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn an_msk_mapping_connects_with_the_broker_string_of_its_authentication() {
        let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1";
        let msk = |configs: Vec<SourceAccessConfiguration>, protocol: Option<&str>| {
            let mut s = spec(configs, protocol);
            s.event_source_arn = Some(arn.into());
            s.self_managed_event_source.endpoints.kafka_bootstrap_servers.clear();
            s
        };
        let scram = SourceAccessConfiguration {
            kind: AccessKind::SaslScram512,
            uri: Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:s".into()),
            ..Default::default()
        };
        assert_eq!(broker_string(&msk(vec![], None)), "BootstrapBrokerString");
        assert_eq!(broker_string(&msk(vec![], Some("SSL"))), "BootstrapBrokerStringTls");
        assert_eq!(broker_string(&msk(vec![], Some("SASL_SSL"))), "BootstrapBrokerStringSaslIam");
        assert_eq!(broker_string(&msk(vec![scram], None)), "BootstrapBrokerStringSaslScram");
        let given = spec(vec![], None);
        assert!(!needs_brokers(&given), "a self-managed mapping names its brokers");
        let mut both = msk(vec![], None);
        both.self_managed_event_source.endpoints.kafka_bootstrap_servers = vec!["b:9092".into()];
        assert!(!needs_brokers(&both), "an explicit broker list wins");
        assert!(needs_brokers(&msk(vec![], None)) && needs_aws(&msk(vec![], None)));
    }

    #[test]
    fn settings_follow_the_access_configurations() {
        let none = KafkaAuth::of(&spec(vec![], None));
        assert_eq!(get(&none, "security.protocol").as_deref(), Some("plaintext"));
        let scram = KafkaAuth::of(&spec(
            vec![SourceAccessConfiguration {
                kind: "SASL_SCRAM_256_AUTH".into(),
                username: Some("u".into()),
                password: Some("pw-1234".into()),
                ..Default::default()
            }],
            None,
        ));
        assert_eq!(get(&scram, "security.protocol").as_deref(), Some("sasl_ssl"), "SASL defaults to TLS, as in AWS");
        assert_eq!(get(&scram, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-256"));
        assert_eq!(get(&scram, "sasl.password").as_deref(), Some("pw-1234"));
        assert_eq!(scram.redact("bad pw-1234 here"), "bad **** here");
        assert!(!format!("{scram:?}").contains("pw-1234"));
        let mtls = KafkaAuth::of(&spec(
            vec![
                SourceAccessConfiguration {
                    kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
                    certificate: Some("-----BEGIN CERTIFICATE-----c".into()),
                    private_key: Some("-----BEGIN PRIVATE KEY-----k".into()),
                    ..Default::default()
                },
                SourceAccessConfiguration {
                    kind: "SERVER_ROOT_CA_CERTIFICATE".into(),
                    certificate: Some("-----BEGIN CERTIFICATE-----ca".into()),
                    ..Default::default()
                },
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
        let sasl = |kind: &str, pw: Option<&str>| SourceAccessConfiguration {
            kind: kind.into(),
            username: Some("u".into()),
            password: pw.map(String::from),
            ..Default::default()
        };
        assert_eq!(fields(&spec(vec![sasl("SASL_SCRAM_512_AUTH", Some("p"))], None)), Vec::<String>::new());
        assert_eq!(
            fields(&spec(vec![sasl("SASL_SCRAM_512_AUTH", None)], None)),
            ["SourceAccessConfigurations[0].Password"]
        );
        assert_eq!(fields(&spec(vec![sasl("KERBEROS", Some("p"))], None)), ["SourceAccessConfigurations[0].Type"]);
        assert_eq!(
            fields(&spec(vec![sasl("BASIC_AUTH", Some("p"))], Some("SSL"))),
            ["SourceAccessConfigurations[0].Type"]
        );
        assert_eq!(fields(&spec(vec![], Some("SASL_SSL"))), ["SelfManagedKafkaEventSourceConfig.SecurityProtocol"]);
        assert_eq!(fields(&spec(vec![], Some("TLS"))), ["SelfManagedKafkaEventSourceConfig.SecurityProtocol"]);
        let uri = |u: &str| SourceAccessConfiguration {
            kind: "BASIC_AUTH".into(),
            uri: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(
            fields(&spec(vec![uri("arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-AbCdEf")], None)),
            Vec::<String>::new()
        );
        assert_eq!(fields(&spec(vec![uri("arn:aws:s3:::bucket")], None)), ["SourceAccessConfigurations[0].URI"]);
        let both = SourceAccessConfiguration {
            password: Some("p".into()),
            ..uri("arn:aws:secretsmanager:us-east-1:123456789012:secret:k")
        };
        assert_eq!(fields(&spec(vec![both], None)), ["SourceAccessConfigurations[0].URI"]);
        let cert = SourceAccessConfiguration {
            kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
            certificate: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(&spec(vec![cert], None)),
            ["SourceAccessConfigurations[0].Certificate", "SourceAccessConfigurations[0].PrivateKey"]
        );
    }

    /// A self-signed client certificate and its key, the key encrypted
    /// with `password` (PKCS#8, AES-256-CBC), as `openssl pkcs8 -topk8` makes.
    fn encrypted_client_key(password: &str) -> (String, String) {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, symm::Cipher, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "client").unwrap();
        let name = name.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
        let pem = key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), password.as_bytes()).unwrap();
        (cert, String::from_utf8(pem).unwrap())
    }

    #[test]
    fn an_encrypted_client_key_is_opened_with_its_password() {
        let (cert, key) = encrypted_client_key("key-pass-1234");
        assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let mtls = |password: Option<&str>| SourceAccessConfiguration {
            kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
            certificate: Some(cert.clone()),
            private_key: Some(key.clone()),
            private_key_password: password.map(String::from),
            ..Default::default()
        };
        let fields = |s: &MappingSpec| s.validate(0).into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(
            fields(&spec(vec![mtls(None)], None)),
            ["SourceAccessConfigurations[0].PrivateKeyPassword"],
            "an encrypted key needs its password"
        );
        assert!(fields(&spec(vec![mtls(Some("key-pass-1234"))], None)).is_empty());
        let sasl_with_key_password = SourceAccessConfiguration {
            kind: "SASL_SCRAM_512_AUTH".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            private_key_password: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(&spec(vec![sasl_with_key_password], None)),
            ["SourceAccessConfigurations[0].PrivateKeyPassword"]
        );

        let auth = KafkaAuth::of(&spec(vec![mtls(Some("key-pass-1234"))], None));
        assert_eq!(get(&auth, "ssl.key.password").as_deref(), Some("key-pass-1234"));
        assert_eq!(auth.redact("could not open key-pass-1234"), "could not open ****");
        assert!(!format!("{:?}", mtls(Some("key-pass-1234"))).contains("key-pass-1234"));
        // librdkafka opens the key when the client is made: with the right
        // password it is made, with a wrong one it is refused, saying why.
        let client = |a: &KafkaAuth| -> Result<rdkafka::consumer::BaseConsumer, String> {
            a.apply(&mut ClientConfig::new())
                .set("bootstrap.servers", "127.0.0.1:9")
                .create()
                .map_err(|e| e.to_string())
        };
        assert!(client(&auth).is_ok(), "{:?}", client(&auth).err());
        let wrong = KafkaAuth::of(&spec(vec![mtls(Some("not-the-password"))], None));
        let Err(why) = client(&wrong) else { panic!("a wrong key password was taken") };
        println!("a wrong key password: {why}");
        assert!(why.contains("ssl.key"), "{why}");
        assert!(!why.contains("not-the-password"), "{why}");
    }
}
