//! Schema registries (AWS's `SchemaRegistryConfig`): a record's key and/or
//! value, framed by a Confluent-compatible registry or AWS Glue, decoded and
//! validated with the schema its header names (Avro, Protobuf, JSON Schema)
//! before filters and the function see it. Schemas are fetched once and
//! kept by id, so a registry outage stops only records naming a schema not
//! seen yet (they wait; nothing is dropped for it).
//!
//! `wire`: the framing. `formats`: compiling a schema and decoding a body
//! into JSON text. `registry`: fetching a schema by id.

pub mod avro;
pub mod formats;
pub mod registry;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_app::spec::MappingSpec;

use formats::Compiled;
use registry::{FetchError, Registry};
use wire::SchemaRef;

/// Schemas kept per mapping; past it the oldest answers are forgotten
/// (fetched again when named), so memory stays bounded however many
/// schema versions a topic carries.
const MAX_SCHEMAS: usize = 1024;
/// How long "no such schema" is believed before the registry is asked again.
const NOT_FOUND_FOR: Duration = Duration::from_secs(30);

/// Why a record could not be decoded. The first two are AWS's reason codes
/// (the record goes to the on-failure destination or is dropped); the last
/// makes the partition wait and retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    SchemaNotFound(String),
    Deserialization(String),
    Unavailable(String),
}

/// One attribute (key or value), decoded.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// The record as JSON text (empty when not asked for).
    pub json: Vec<u8>,
    /// The bytes without the registry's framing (SOURCE).
    pub source: Vec<u8>,
    /// AVRO, PROTOBUF or JSON.
    pub format: &'static str,
    /// Kept with the schema: not formatted again for every record.
    pub schema_id: Arc<str>,
}

#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub key: Option<Part>,
    pub value: Option<Part>,
}

/// A compiled schema and its id as text.
pub type Schema = (Arc<Compiled>, Arc<str>);

enum Cached {
    Ready(Schema),
    /// Not in the registry (until the instant), or not compilable (for good).
    Bad(Failure, Option<Instant>),
}

pub struct Decoder {
    registry: Registry,
    key: bool,
    value: bool,
    /// EventRecordFormat JSON (else SOURCE).
    pub json: bool,
    cache: Mutex<HashMap<SchemaRef, (u64, Cached)>>,
    /// Insertion counter: the eviction order.
    next: std::sync::atomic::AtomicU64,
}

/// Whether preparing `spec`'s decoder needs AWS (a Glue registry, or a
/// registry secret in Secrets Manager).
pub fn needs_aws(spec: &MappingSpec) -> bool {
    spec.schema_registry().is_some_and(|r| r.is_glue() || r.access_configs.iter().any(|c| c.uri.is_some()))
}

impl Decoder {
    /// The decoder of `spec`'s registry (None without one). Reads the
    /// registry's Secrets Manager secrets through `sdk`.
    pub async fn prepare(
        spec: &MappingSpec,
        sdk: Option<&aws_config::SdkConfig>,
        reach: &crate::reach::Reach,
    ) -> Result<Option<Decoder>, String> {
        let Some(config) = spec.schema_registry() else { return Ok(None) };
        let mut config = config.clone();
        if config.access_configs.iter().any(|c| c.uri.is_some()) {
            let sdk = sdk.ok_or("reading the registry's secrets needs AWS, and this node has no AWS configuration")?;
            crate::kafka_auth::resolve_configs(sdk, config.access_configs.iter_mut())
                .await
                .map_err(|e| e.to_string())?;
        }
        let registry = Registry::new(&config, sdk.cloned(), reach)?;
        Ok(Some(Decoder::new(registry, config.validates("KEY"), config.validates("VALUE"), config.as_json())))
    }

    pub fn new(registry: Registry, key: bool, value: bool, json: bool) -> Decoder {
        Decoder { registry, key, value, json, cache: Mutex::default(), next: Default::default() }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Decodes the attributes the mapping validates. `want_json`: the JSON
    /// text is needed even with SOURCE (filters read it).
    pub async fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>, want_json: bool) -> Result<Decoded, Failure> {
        let mut out = Decoded::default();
        let json = want_json || self.json;
        if self.key {
            if let Some(k) = key {
                out.key = Some(self.part(k, json).await.map_err(|f| name_attribute(f, "key"))?);
            }
        }
        if self.value {
            if let Some(v) = value {
                out.value = Some(self.part(v, json).await.map_err(|f| name_attribute(f, "value"))?);
            }
        }
        Ok(out)
    }

    async fn part(&self, bytes: &[u8], json: bool) -> Result<Part, Failure> {
        let glue = self.registry.is_glue();
        let frame = if glue { wire::glue(bytes) } else { wire::confluent(bytes) }.map_err(Failure::Deserialization)?;
        let (compiled, schema_id) = self.schema(frame.schema).await?;
        let mut part = Part { format: compiled.format(), schema_id, ..Part::default() };
        if json {
            // JSON text runs about twice the binary's size: one allocation.
            part.json.reserve(frame.body.len() * 2 + 64);
        }
        compiled.decode(&frame.body, glue, json.then_some(&mut part.json)).map_err(|e| {
            Failure::Deserialization(format!("cannot decode it as {} schema {}: {e}", part.format, part.schema_id))
        })?;
        if !self.json {
            part.source = frame.body.into_owned();
        }
        Ok(part)
    }

    /// The compiled schema `id` names (and the id as text): kept, or
    /// fetched (and kept).
    pub async fn schema(&self, id: SchemaRef) -> Result<Schema, Failure> {
        if let Some(hit) = self.cached(id) {
            return hit;
        }
        let fetched = match self.registry.fetch(id).await {
            Ok(f) => f,
            Err(FetchError::Unavailable(why)) => {
                return Err(Failure::Unavailable(format!("cannot read schema {id} from the registry: {why}")))
            }
            Err(FetchError::NotFound(why)) => {
                let f = Failure::SchemaNotFound(why);
                self.keep(id, Cached::Bad(f.clone(), Some(Instant::now() + NOT_FOUND_FOR)));
                return Err(f);
            }
        };
        match Compiled::compile(&fetched) {
            Ok(c) => {
                let schema: Schema = (Arc::new(c), id.to_string().into());
                self.keep(id, Cached::Ready(schema.clone()));
                Ok(schema)
            }
            Err(e) => {
                let f = Failure::Deserialization(format!(
                    "the registry's {} schema {id} does not compile: {e}",
                    fetched.format
                ));
                self.keep(id, Cached::Bad(f.clone(), None));
                Err(f)
            }
        }
    }

    fn cached(&self, id: SchemaRef) -> Option<Result<Schema, Failure>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&id) {
            Some((_, Cached::Ready(schema))) => Some(Ok(schema.clone())),
            Some((_, Cached::Bad(f, until))) if until.is_none_or(|t| Instant::now() < t) => Some(Err(f.clone())),
            _ => None,
        }
    }

    fn keep(&self, id: SchemaRef, entry: Cached) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_SCHEMAS && !cache.contains_key(&id) {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(id, (n, entry));
    }

    /// Keeps `fetched` as schema `id` without asking the registry (the
    /// benchmarks measure decoding, not fetching).
    pub fn preload(&self, id: SchemaRef, fetched: &formats::Fetched) -> Result<(), String> {
        self.keep(id, Cached::Ready((Arc::new(Compiled::compile(fetched)?), id.to_string().into())));
        Ok(())
    }

    /// Schemas held (for the memory benchmark).
    pub fn cached_schemas(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

fn name_attribute(f: Failure, attribute: &str) -> Failure {
    match f {
        Failure::SchemaNotFound(w) => Failure::SchemaNotFound(format!("the record's {attribute}: {w}")),
        Failure::Deserialization(w) => Failure::Deserialization(format!("the record's {attribute}: {w}")),
        u => u,
    }
}
