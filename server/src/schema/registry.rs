//! Fetching a schema by the id a record names: from a Confluent-compatible
//! registry (`GET /schemas/ids/{id}`, references by subject and version),
//! or from AWS Glue (`GetSchemaVersion`, signed with SigV4).

use std::time::Duration;

use sluice_app::spec::{AccessKind, SchemaRegistryConfig};

use super::formats::Fetched;
use super::wire::SchemaRef;

/// Why a schema could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The registry answered that it has no such schema (SCHEMA_NOT_FOUND).
    NotFound(String),
    /// The registry did not answer usefully (down, refused our credentials,
    /// 5xx): records wait for it.
    Unavailable(String),
}

const TIMEOUT: Duration = Duration::from_secs(5);
/// References deeper than this are refused (a cycle would never end).
const MAX_REFERENCES: usize = 64;

pub enum Registry {
    Confluent { base: String, client: reqwest::Client, basic: Option<(String, String)> },
    Glue { region: String, account: String, registry: String, endpoint: String, sdk: Box<aws_config::SdkConfig> },
}

impl Registry {
    /// The client for `config`, its access configurations' secrets already
    /// read (inline or from Secrets Manager). `sdk`: for a Glue registry.
    pub fn new(
        config: &SchemaRegistryConfig,
        sdk: Option<aws_config::SdkConfig>,
        reach: &crate::reach::Reach,
    ) -> Result<Registry, String> {
        let uri = config.schema_registry_uri.clone().unwrap_or_default();
        if config.is_glue() {
            // arn:aws:glue:REGION:ACCOUNT:registry/NAME
            let parts: Vec<&str> = uri.splitn(6, ':').collect();
            let (region, account, name) = match parts.as_slice() {
                [_, _, _, r, a, res] => (r.to_string(), a.to_string(), res.trim_start_matches("registry/").to_string()),
                _ => return Err(format!("`{uri}` is not a Glue registry ARN")),
            };
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            let endpoint = var("AWS_ENDPOINT_URL_GLUE")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"));
            let sdk = sdk.ok_or("a Glue registry needs AWS credentials, and this node has no AWS configuration")?;
            return Ok(Registry::Glue { region, account, registry: name, endpoint, sdk: Box::new(sdk) });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if reach.is_limited() {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::reach::Resolver(reach.clone())));
        }
        let mut basic = None;
        for c in &config.access_configs {
            match c.kind {
                AccessKind::BasicAuth => {
                    basic = Some((c.username.clone().unwrap_or_default(), c.password.clone().unwrap_or_default()))
                }
                AccessKind::ServerRootCaCertificate => {
                    let pem = c.certificate.clone().unwrap_or_default();
                    let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                        .map_err(|e| format!("the registry's CA certificate: {e}"))?;
                    builder = builder.add_root_certificate(cert);
                }
                AccessKind::ClientCertificateTls => {
                    let pem = format!(
                        "{}\n{}",
                        c.certificate.as_deref().unwrap_or_default(),
                        c.private_key.as_deref().unwrap_or_default()
                    );
                    let id = reqwest::Identity::from_pem(pem.as_bytes())
                        .map_err(|e| format!("the registry's client certificate: {e}"))?;
                    builder = builder.identity(id);
                }
                _ => {}
            }
        }
        let client = builder.build().map_err(|e| format!("the registry's HTTP client: {}", describe_reqwest(&e)))?;
        Ok(Registry::Confluent { base: uri.trim_end_matches('/').to_string(), client, basic })
    }

    pub fn is_glue(&self) -> bool {
        matches!(self, Registry::Glue { .. })
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Registry::Confluent { base, .. } => base.clone(),
            Registry::Glue { region, account, registry, .. } => {
                format!("arn:aws:glue:{region}:{account}:registry/{registry}")
            }
        }
    }

    pub async fn fetch(&self, id: SchemaRef) -> Result<Fetched, FetchError> {
        match (self, id) {
            (Registry::Confluent { .. }, SchemaRef::Confluent(n)) => self.confluent(n).await,
            (Registry::Glue { .. }, SchemaRef::Glue(u)) => self.glue(u).await,
            _ => Err(FetchError::NotFound(format!("schema {id} is not one of this registry's ids"))),
        }
    }

    async fn get(&self, path: &str) -> Result<Option<serde_json::Value>, FetchError> {
        let Registry::Confluent { base, client, basic } = self else { unreachable!() };
        let mut req = client.get(format!("{base}{path}")).header("accept", "application/vnd.schemaregistry.v1+json");
        if let Some((u, p)) = basic {
            req = req.basic_auth(u, Some(p));
        }
        let res = req.send().await.map_err(|e| FetchError::Unavailable(format!("{base}: {}", describe_reqwest(&e))))?;
        let status = res.status();
        let body: serde_json::Value =
            serde_json::from_slice(&res.bytes().await.unwrap_or_default()).unwrap_or_default();
        let message = body.get("message").and_then(|m| m.as_str()).unwrap_or("").to_string();
        match status.as_u16() {
            200 => Ok(Some(body)),
            404 => Ok(None),
            401 | 403 => {
                Err(FetchError::Unavailable(format!("{base} refused Sluice's credentials ({status}) {message}")))
            }
            _ => Err(FetchError::Unavailable(format!("{base}{path} answered {status} {message}"))),
        }
    }

    async fn confluent(&self, id: u32) -> Result<Fetched, FetchError> {
        let Some(body) = self.get(&format!("/schemas/ids/{id}")).await? else {
            return Err(FetchError::NotFound(format!("the registry has no schema with id {id}")));
        };
        let mut references = Vec::new();
        self.confluent_references(&body, &mut references).await?;
        Ok(Fetched { format: schema_type(&body), text: text(&body), references })
    }

    /// `body`'s references, each one's own first (depth first), once each.
    async fn confluent_references(
        &self,
        body: &serde_json::Value,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), FetchError> {
        let refs = body.get("references").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        for r in refs {
            let name = r.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if out.len() >= MAX_REFERENCES {
                return Err(FetchError::NotFound(format!("more than {MAX_REFERENCES} schema references")));
            }
            let subject = r.get("subject").and_then(|s| s.as_str()).unwrap_or_default();
            let version = r.get("version").map(|v| v.to_string()).unwrap_or_else(|| "latest".into());
            let path = format!("/subjects/{}/versions/{}", sluice_app::uri_encode(subject), version.trim_matches('"'));
            let Some(referenced) = self.get(&path).await? else {
                return Err(FetchError::NotFound(format!(
                    "the reference `{name}` (subject {subject} version {version}) is not in the registry"
                )));
            };
            // Reserve the name before descending: a cycle stops here.
            out.push((name.clone(), String::new()));
            let at = out.len() - 1;
            Box::pin(self.confluent_references(&referenced, out)).await?;
            let entry = out.remove(at);
            out.push((entry.0, text(&referenced)));
        }
        Ok(())
    }

    /// One call of Glue's JSON API (`AWSGlue.{action}`), signed.
    async fn glue_call(&self, action: &str, body: serde_json::Value) -> Result<serde_json::Value, FetchError> {
        let Registry::Glue { region, endpoint, sdk, .. } = self else { unreachable!() };
        let unavailable = |why: String| FetchError::Unavailable(format!("AWS Glue ({endpoint}): {why}"));
        let creds = {
            use aws_credential_types::provider::ProvideCredentials as _;
            let provider = sdk.credentials_provider().ok_or_else(|| unavailable("no AWS credentials".into()))?;
            provider.provide_credentials().await.map_err(|e| unavailable(format!("AWS credentials: {e}")))?
        };
        let url = format!("{}/", endpoint.trim_end_matches('/'));
        let target = format!("AWSGlue.{action}");
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
        let body = body.to_string().into_bytes();
        let req = crate::aws::signed_request(creds, region, "glue", reqwest::Method::POST, &url, &headers, body)
            .map_err(unavailable)?
            .timeout(TIMEOUT);
        let res = req.send().await.map_err(|e| unavailable(describe_reqwest(&e)))?;
        let status = res.status();
        let answer: serde_json::Value =
            serde_json::from_slice(&res.bytes().await.unwrap_or_default()).unwrap_or_default();
        if status.is_success() {
            return Ok(answer);
        }
        let kind = answer.get("__type").and_then(|t| t.as_str()).unwrap_or("").rsplit('#').next().unwrap_or("");
        let message = answer.get("message").or_else(|| answer.get("Message")).and_then(|m| m.as_str()).unwrap_or("");
        if kind == "EntityNotFoundException" {
            return Err(FetchError::NotFound(format!("{kind}: {message}")));
        }
        Err(unavailable(format!("{status} {kind} {message}")))
    }

    async fn glue(&self, version: uuid::Uuid) -> Result<Fetched, FetchError> {
        let Registry::Glue { registry, .. } = self else { unreachable!() };
        let answer = self
            .glue_call("GetSchemaVersion", serde_json::json!({"SchemaVersionId": version.to_string()}))
            .await
            .map_err(|e| match e {
                FetchError::NotFound(m) => FetchError::NotFound(format!("Glue has no schema version {version} ({m})")),
                u => u,
            })?;
        glue_fetched(&answer, registry, &version.to_string())
    }

    /// "Test connection": reaches the registry and reads one schema (`id`
    /// if given, else the newest of the first subject or schema it lists),
    /// compiled as records would need it. Says what it read.
    pub async fn probe(&self, id: Option<&str>) -> Result<String, String> {
        let describe = |e: FetchError| match e {
            FetchError::NotFound(m) | FetchError::Unavailable(m) => m,
        };
        let (label, fetched) = match (self, id.map(str::trim).filter(|i| !i.is_empty())) {
            (Registry::Confluent { .. }, Some(id)) => {
                let n: u32 = id.parse().map_err(|_| format!("`{id}` is not a schema id (a number)"))?;
                (format!("schema {n}"), self.confluent(n).await.map_err(describe)?)
            }
            (Registry::Glue { .. }, Some(id)) => {
                let u = uuid::Uuid::parse_str(id)
                    .map_err(|_| format!("`{id}` is not a Glue schema version id (a UUID)"))?;
                (format!("schema version {u}"), self.glue(u).await.map_err(describe)?)
            }
            (Registry::Confluent { .. }, None) => {
                let subjects = self.get("/subjects").await.map_err(describe)?.unwrap_or_default();
                let Some(first) = subjects.as_array().and_then(|a| a.first()).and_then(|s| s.as_str()) else {
                    return Ok(format!("Reached {}: it holds no subjects yet.", self.describe()));
                };
                let path = format!("/subjects/{}/versions/latest", sluice_app::uri_encode(first));
                let body = self.get(&path).await.map_err(describe)?.ok_or(format!("{path}: not found"))?;
                let mut references = Vec::new();
                self.confluent_references(&body, &mut references).await.map_err(describe)?;
                let version = body.get("version").map(|v| v.to_string()).unwrap_or_default();
                let fetched = Fetched { format: schema_type(&body), text: text(&body), references };
                (format!("subject {first} version {version}"), fetched)
            }
            (Registry::Glue { registry, .. }, None) => {
                let list = self
                    .glue_call(
                        "ListSchemas",
                        serde_json::json!({"RegistryId": {"RegistryName": registry}, "MaxResults": 1}),
                    )
                    .await
                    .map_err(|e| format!("{}; or give a schema version id to read", describe(e)))?;
                let Some(arn) =
                    list["Schemas"].as_array().and_then(|a| a.first()).and_then(|s| s["SchemaArn"].as_str())
                else {
                    return Ok(format!("Reached {}: it holds no schemas yet.", self.describe()));
                };
                let answer = self
                    .glue_call(
                        "GetSchemaVersion",
                        serde_json::json!({"SchemaId": {"SchemaArn": arn}, "SchemaVersionNumber": {"LatestVersion": true}}),
                    )
                    .await
                    .map_err(describe)?;
                (format!("the newest version of {arn}"), glue_fetched(&answer, registry, "latest").map_err(describe)?)
            }
        };
        super::formats::Compiled::compile(&fetched)
            .map_err(|e| format!("read {label} ({}), but it does not compile: {e}", fetched.format))?;
        Ok(format!("Reached {}: read {label} ({}) and compiled it.", self.describe(), fetched.format))
    }
}

/// GetSchemaVersion's answer, checked to belong to `registry`.
fn glue_fetched(answer: &serde_json::Value, registry: &str, version: &str) -> Result<Fetched, FetchError> {
    // arn:aws:glue:REGION:ACCOUNT:schema/REGISTRY/SCHEMA
    let schema_arn = answer.get("SchemaArn").and_then(|a| a.as_str()).unwrap_or("");
    let owner = schema_arn.split(":schema/").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
    if owner != registry {
        return Err(FetchError::NotFound(format!(
            "schema version {version} belongs to registry `{owner}`, not this mapping's `{registry}`"
        )));
    }
    let format = answer.get("DataFormat").and_then(|f| f.as_str()).unwrap_or("AVRO").to_string();
    let text = answer.get("SchemaDefinition").and_then(|d| d.as_str()).unwrap_or("").to_string();
    Ok(Fetched { format, text, references: vec![] })
}

/// Confluent's `schemaType` (absent means Avro).
fn schema_type(body: &serde_json::Value) -> String {
    body.get("schemaType").and_then(|t| t.as_str()).unwrap_or("AVRO").to_ascii_uppercase()
}

fn text(body: &serde_json::Value) -> String {
    body.get("schema").and_then(|s| s.as_str()).unwrap_or("").to_string()
}

/// reqwest's error with its causes (the useful part is usually the last).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() { "no answer within 5 s".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
