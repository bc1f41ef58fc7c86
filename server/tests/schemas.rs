//! Schema registries against real processes: tansu (the broker), a
//! Confluent-compatible registry (no such server installs here: a stand-in
//! serving the registry's REST paths, with basic auth), AWS Glue's registry
//! in moto, and a function decoding every event with Powertools for AWS
//! Lambda's `kafka_consumer` (Python), in both EventRecordFormats.
//!
//! The database does not matter here: SQLite only.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use sluice_app::spec::{AccessKind, SchemaRegistryConfig, SchemaValidationConfig, SourceAccessConfiguration};

const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":"long"},{"name":"kind","type":{"type":"enum","name":"Kind","symbols":["order","refund"]}},
    {"name":"note","type":["null","string"],"default":null}]}"#;
const ORDER_PROTO: &str =
    "syntax = \"proto3\";\npackage shop;\nmessage Order { int64 id = 1; string kind = 2; repeated string tags = 3; }\n";

/// The stand-in Confluent registry: ids → schemas, basic auth, a switch
/// that makes it answer 503, and a count of schema look-ups per id.
#[derive(Clone, Default)]
struct Registry {
    schemas: Arc<Mutex<HashMap<u32, Value>>>,
    lookups: Arc<Mutex<HashMap<u32, usize>>>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

fn authorized(r: &Registry, h: &HeaderMap) -> Result<(), (StatusCode, String)> {
    if r.down.load(Ordering::SeqCst) {
        return Err((StatusCode::SERVICE_UNAVAILABLE, json!({"message": "down for the test"}).to_string()));
    }
    use base64::Engine as _;
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("sr-user:sr-secret"));
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return Err((StatusCode::UNAUTHORIZED, json!({"error_code": 40101, "message": "Unauthorized"}).to_string()));
    }
    Ok(())
}

async fn by_id(State(r): State<Registry>, h: HeaderMap, Path(id): Path<u32>) -> (StatusCode, String) {
    if let Err(e) = authorized(&r, &h) {
        return e;
    }
    *r.lookups.lock().unwrap().entry(id).or_default() += 1;
    match r.schemas.lock().unwrap().get(&id) {
        Some(s) => (StatusCode::OK, s.to_string()),
        None => (StatusCode::NOT_FOUND, json!({"error_code": 40403, "message": "Schema not found"}).to_string()),
    }
}

async fn subjects(State(r): State<Registry>, h: HeaderMap) -> (StatusCode, String) {
    if let Err(e) = authorized(&r, &h) {
        return e;
    }
    (StatusCode::OK, json!(["orders-value"]).to_string())
}

async fn version(
    State(r): State<Registry>,
    h: HeaderMap,
    Path((_s, _v)): Path<(String, String)>,
) -> (StatusCode, String) {
    if let Err(e) = authorized(&r, &h) {
        return e;
    }
    let mut s = r.schemas.lock().unwrap().get(&1).cloned().unwrap_or_default();
    s["subject"] = json!("orders-value");
    s["version"] = json!(1);
    s["id"] = json!(1);
    (StatusCode::OK, s.to_string())
}

impl Registry {
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/schemas/ids/{id}", get(by_id))
            .route("/subjects", get(subjects))
            .route("/subjects/{s}/versions/{v}", get(version))
            .with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn lookups(&self, id: u32) -> usize {
        self.lookups.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "{what} did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the Powertools function decoded, one JSON object per record.
fn decoded(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the function's JSON line"))
        .collect()
}

fn avro_record(schema: &apache_avro::Schema, id: i64, kind: &str) -> Vec<u8> {
    use apache_avro::types::Value as V;
    let v = V::Record(vec![
        ("id".into(), V::Long(id)),
        ("kind".into(), V::Enum(if kind == "order" { 0 } else { 1 }, kind.into())),
        ("note".into(), V::Union(1, Box::new(V::String(format!("note {id}"))))),
    ]);
    apache_avro::to_avro_datum(schema, v).unwrap()
}

fn confluent(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Frames a plain key (`k0`, `k1`, ...) as the registry would.
type KeyFraming<'a> = &'a dyn Fn(&str) -> Vec<u8>;

/// Produces `values` keyed `k0`, `k1`, ... (framed by `key`, when given).
async fn produce_all(bootstrap: &str, topic: &str, values: &[Vec<u8>], key: Option<KeyFraming<'_>>) {
    let p = bulk_producer(bootstrap);
    for (i, v) in values.iter().enumerate() {
        let plain = format!("k{i}");
        let key = key.map_or(plain.clone().into_bytes(), |f| f(&plain));
        p.send(FutureRecord::to(topic).key(&key).payload(v), Duration::from_secs(10)).await.unwrap();
    }
}

fn registry_config(uri: &str, format: &str, basic: Option<(&str, &str)>) -> SchemaRegistryConfig {
    SchemaRegistryConfig {
        schema_registry_uri: Some(uri.into()),
        event_record_format: Some(format.into()),
        schema_validation_configs: vec![SchemaValidationConfig { attribute: "VALUE".into() }],
        access_configs: basic
            .map(|(u, p)| SourceAccessConfiguration {
                kind: AccessKind::BasicAuth,
                username: Some(u.into()),
                password: Some(p.into()),
                ..Default::default()
            })
            .into_iter()
            .collect(),
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_topic(bootstrap: &str, topic: &str, n: usize) -> Vec<Value> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "schema-dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let (t, mut out) = (Instant::now(), Vec::new());
    while out.len() < n {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{} of {n} records on {topic}", out.len());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_decode_validate_filter_and_divert() {
    if std::env::var_os("SLUICE_TEST_POSTGRES").is_some() {
        eprintln!("schema decoding does not depend on the database: run on SQLite only");
        return;
    }
    let require = std::env::var_os("SLUICE_REQUIRE_TANSU").is_some();
    let b = Broker::tansu().unwrap_or_else(|| {
        assert!(!require, "tansu is required but not installed");
        eprintln!("tansu not installed: on librdkafka's mock cluster");
        Broker::mock()
    });
    if !python_has("aws_lambda_powertools.utilities.kafka, avro, google.protobuf") {
        assert!(!require, "aws-lambda-powertools[kafka-consumer-avro,kafka-consumer-protobuf] is required");
        eprintln!("Powertools not installed: skipped");
        return;
    }
    let moto = if python_has("moto") && std::process::Command::new("moto_server").arg("--help").output().is_ok() {
        let port = free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "moto_server");
        Some((Child(child), format!("http://127.0.0.1:{port}")))
    } else {
        assert!(std::env::var_os("SLUICE_REQUIRE_MOTO").is_none(), "moto_server is required");
        None
    };
    if let Some((_, endpoint)) = &moto {
        std::env::set_var("AWS_ENDPOINT_URL", endpoint);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }

    // The schemas: Avro (id 1) and Protobuf (id 2) in the stand-in registry.
    let avro = apache_avro::Schema::parse_str(ORDER_AVRO).unwrap();
    let registry = Registry::default();
    registry.schemas.lock().unwrap().insert(1, json!({"schema": ORDER_AVRO}));
    registry.schemas.lock().unwrap().insert(2, json!({"schema": ORDER_PROTO, "schemaType": "PROTOBUF"}));
    registry.schemas.lock().unwrap().insert(4, json!({"schema": r#""string""#}));
    let registry_url = registry.serve().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("order.proto"), ORDER_PROTO).unwrap();
    let set = protox::compile(["order.proto"], [dir.path()]).unwrap();
    let descriptor_hex: String = prost::Message::encode_to_vec(&set).iter().map(|b| format!("{b:02x}")).collect();
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(set).unwrap();
    let order_desc = pool.get_message_by_name("shop.Order").unwrap();

    // The function: Powertools' kafka_consumer behind HTTP.
    let out = dir.path().join("decoded.jsonl");
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/functions/powertools_consumer.py");
    let _function = Child(
        std::process::Command::new("python3")
            .args([script, &port.to_string(), out.to_str().unwrap(), ORDER_AVRO, &descriptor_hex, "shop.Order"])
            .spawn()
            .unwrap(),
    );
    wait_port(port, "the Powertools function");
    let function = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let s = Sluice::start().await;
    // The dead-letter topic too: tansu does not create topics on first use.
    for t in ["orders-avro", "orders-proto", "orders-glue", "schema-dlq"] {
        b.create_topic(t, 1).await;
    }

    // 1. Confluent Avro, delivered as JSON, filtered on a decoded field; a
    // record naming an unknown schema and a corrupt one go to the DLQ.
    let mut values: Vec<Vec<u8>> =
        (0..20).map(|i| confluent(1, &avro_record(&avro, i, if i % 2 == 0 { "order" } else { "refund" }))).collect();
    values.push(confluent(999, &avro_record(&avro, 20, "order")));
    values.push(confluent(1, &[0x02]));
    // Keys too: an Avro string (schema 4), validated and delivered as JSON.
    let string_schema = apache_avro::Schema::parse_str(r#""string""#).unwrap();
    let avro_key = move |k: &str| confluent(4, &apache_avro::to_avro_datum(&string_schema, k).unwrap());
    produce_all(b.bootstrap(), "orders-avro", &values, Some(&avro_key)).await;
    let mut sp = spec(b.bootstrap(), "orders-avro", &function("/json"), "g-avro");
    sp.self_managed_kafka_event_source_config.schema_registry_config =
        Some(registry_config(&registry_url, "JSON", Some(("sr-user", "sr-secret"))));
    if let Some(r) = sp.self_managed_kafka_event_source_config.schema_registry_config.as_mut() {
        r.schema_validation_configs.push(SchemaValidationConfig { attribute: "KEY".into() });
    }
    // A batching window: a record waiting for the registry must not hold
    // back the batch begun before it (part 4).
    sp.maximum_batching_window_in_seconds = Some(1);
    sp.filter_criteria.filters = vec![sluice_app::spec::Filter { pattern: r#"{"value": {"kind": ["order"]}}"#.into() }];
    sp.destination_config.on_failure = Some(sluice_app::spec::OnFailure { destination: "kafka://schema-dlq".into() });
    let avro_id = s.mappings.create(sp).await.unwrap().uuid;

    // 2. Confluent Protobuf, delivered as SOURCE.
    let proto_values: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let mut m = prost_reflect::DynamicMessage::new(order_desc.clone());
            m.set_field_by_name("id", prost_reflect::Value::I64(i));
            m.set_field_by_name("kind", prost_reflect::Value::String(format!("kind-{i}")));
            let mut body = vec![0u8]; // message indexes: the first message
            body.extend_from_slice(&prost::Message::encode_to_vec(&m));
            confluent(2, &body)
        })
        .collect();
    produce_all(b.bootstrap(), "orders-proto", &proto_values, None).await;
    let mut sp = spec(b.bootstrap(), "orders-proto", &function("/protobuf"), "g-proto");
    sp.self_managed_kafka_event_source_config.schema_registry_config =
        Some(registry_config(&registry_url, "SOURCE", Some(("sr-user", "sr-secret"))));
    s.mappings.create(sp).await.unwrap();

    // The same Protobuf records delivered as JSON, and JSON Schema records
    // (schema 5) as SOURCE: Powertools' JSON deserializer reads both.
    let mut sp = spec(b.bootstrap(), "orders-proto", &function("/json-other"), "g-proto-json");
    sp.self_managed_kafka_event_source_config.schema_registry_config =
        Some(registry_config(&registry_url, "JSON", Some(("sr-user", "sr-secret"))));
    s.mappings.create(sp).await.unwrap();
    let json_schema = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
    registry.schemas.lock().unwrap().insert(5, json!({"schema": json_schema, "schemaType": "JSON"}));
    let mut json_values: Vec<Vec<u8>> =
        (0..5).map(|i| confluent(5, json!({"id": 300 + i}).to_string().as_bytes())).collect();
    json_values.push(confluent(5, br#"{"id":"not a number"}"#));
    b.create_topic("orders-json", 1).await;
    produce_all(b.bootstrap(), "orders-json", &json_values, None).await;
    let mut sp = spec(b.bootstrap(), "orders-json", &function("/json-other"), "g-json");
    sp.self_managed_kafka_event_source_config.schema_registry_config =
        Some(registry_config(&registry_url, "SOURCE", Some(("sr-user", "sr-secret"))));
    let json_id = s.mappings.create(sp).await.unwrap().uuid;

    // 3. AWS Glue (moto), Avro in Glue's wire format, half of it zlib-compressed, as SOURCE.
    let glue_version = moto.as_ref().map(|(_, endpoint)| {
        let setup = r#"
import boto3, json, sys
g = boto3.client("glue", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing")
g.create_registry(RegistryName="shop")
for name, kind, text in [("orders", "AVRO", sys.argv[2]), ("orders-proto", "PROTOBUF", sys.argv[3])]:
    r = g.create_schema(RegistryId={"RegistryName": "shop"}, SchemaName=name, DataFormat=kind,
                        Compatibility="NONE", SchemaDefinition=text)
    print(r["SchemaVersionId"])
"#;
        let o = std::process::Command::new("python3")
            .args(["-c", setup, endpoint, ORDER_AVRO, ORDER_PROTO])
            .output()
            .unwrap();
        assert!(o.status.success(), "Glue setup in moto: {}", String::from_utf8_lossy(&o.stderr));
        let ids: Vec<uuid::Uuid> =
            String::from_utf8_lossy(&o.stdout).lines().map(|l| uuid::Uuid::parse_str(l.trim()).unwrap()).collect();
        (ids[0], ids[1])
    });
    let glue_proto = glue_version.map(|(_, p)| p);
    let glue_version = glue_version.map(|(a, _)| a);
    if let Some(version) = glue_version {
        let glue_values: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                let body = avro_record(&avro, 100 + i, "order");
                let mut out = vec![3, if i % 2 == 0 { 5 } else { 0 }];
                out.extend_from_slice(version.as_bytes());
                if i % 2 == 0 {
                    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                    z.write_all(&body).unwrap();
                    out.extend_from_slice(&z.finish().unwrap());
                } else {
                    out.extend_from_slice(&body);
                }
                out
            })
            .collect();
        produce_all(b.bootstrap(), "orders-glue", &glue_values, None).await;
        let mut sp = spec(b.bootstrap(), "orders-glue", &function("/avro"), "g-glue");
        sp.self_managed_kafka_event_source_config.schema_registry_config =
            Some(registry_config("arn:aws:glue:us-east-1:123456789012:registry/shop", "SOURCE", None));
        s.mappings.create(sp).await.unwrap();
    }

    // Glue Protobuf, as SOURCE: Glue's header, then its one-varint message index.
    if let Some(version) = glue_proto {
        let values: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut m = prost_reflect::DynamicMessage::new(order_desc.clone());
                m.set_field_by_name("id", prost_reflect::Value::I64(200 + i));
                m.set_field_by_name("kind", prost_reflect::Value::String("glue".into()));
                let mut out = vec![3, 0];
                out.extend_from_slice(version.as_bytes());
                out.push(0); // the message index: shop.Order
                out.extend_from_slice(&prost::Message::encode_to_vec(&m));
                out
            })
            .collect();
        b.create_topic("orders-glue-proto", 1).await;
        produce_all(b.bootstrap(), "orders-glue-proto", &values, None).await;
        let mut sp = spec(b.bootstrap(), "orders-glue-proto", &function("/protobuf"), "g-glue-proto");
        sp.self_managed_kafka_event_source_config.schema_registry_config =
            Some(registry_config("arn:aws:glue:us-east-1:123456789012:registry/shop", "SOURCE", None));
        s.mappings.create(sp).await.unwrap();
    }
    let expected = 10 + 10 + 10 + 5 + if glue_version.is_some() { 15 } else { 0 };
    until("every decodable record at the function", Duration::from_secs(60), || decoded(&out).len() >= expected).await;
    wait_committed(&b, "g-avro", "orders-avro", &[(0, 22)].into(), Duration::from_secs(30)).await;
    wait_committed(&b, "g-proto", "orders-proto", &[(0, 10)].into(), Duration::from_secs(30)).await;
    let seen = decoded(&out);
    let of = |path: &str| seen.iter().filter(|r| r["path"] == path).cloned().collect::<Vec<_>>();

    // JSON: the filter kept the orders; Powertools' JSON deserializer read them.
    let json_records = of("/json");
    assert_eq!(json_records.len(), 10, "{json_records:?}");
    for (r, id) in json_records.iter().zip((0..20).step_by(2)) {
        assert_eq!(r["value"], json!({"id": id, "kind": "order", "note": format!("note {id}")}));
        assert_eq!(r["valueSchemaMetadata"], json!({"dataFormat": "JSON", "schemaId": "1"}));
        // The key's JSON text (Powertools' default deserializer gives it as a string).
        assert_eq!(r["key"], format!("\"k{id}\""));
        assert_eq!(r["keySchemaMetadata"], json!({"dataFormat": "JSON", "schemaId": "4"}));
    }
    // SOURCE Protobuf: Powertools' Protobuf deserializer with the message class
    // (Confluent's message indexes, or Glue's, which it tells apart by the id).
    let (proto_records, glue_proto_records): (Vec<Value>, Vec<Value>) =
        of("/protobuf").into_iter().partition(|r| r["valueSchemaMetadata"]["schemaId"] == "2");
    if let Some(version) = glue_proto {
        assert_eq!(glue_proto_records.len(), 5, "{glue_proto_records:?}");
        for (i, r) in glue_proto_records.iter().enumerate() {
            assert_eq!(r["value"], json!({"id": (200 + i).to_string(), "kind": "glue"}));
            assert_eq!(r["valueSchemaMetadata"], json!({"dataFormat": "PROTOBUF", "schemaId": version.to_string()}));
        }
    }
    assert_eq!(proto_records.len(), 10);
    for (i, r) in proto_records.iter().enumerate() {
        let want =
            if i == 0 { json!({"kind": "kind-0"}) } else { json!({"id": i.to_string(), "kind": format!("kind-{i}")}) };
        assert_eq!(r["value"], want, "proto3 leaves the default id out; int64 is a string in JSON");
        assert_eq!(r["valueSchemaMetadata"], json!({"dataFormat": "PROTOBUF", "schemaId": "2"}));
        assert_eq!(
            (&r["key"], &r["keySchemaMetadata"]),
            (&json!(format!("k{i}")), &Value::Null),
            "not validated: as it is"
        );
    }
    // SOURCE Glue Avro: Powertools' Avro deserializer on the bytes without Glue's header.
    if let Some(version) = glue_version {
        wait_committed(&b, "g-glue", "orders-glue", &[(0, 10)].into(), Duration::from_secs(30)).await;
        let glue_records = of("/avro");
        assert_eq!(glue_records.len(), 10);
        for (i, r) in glue_records.iter().enumerate() {
            let id = 100 + i as i64;
            assert_eq!(r["value"], json!({"id": id, "kind": "order", "note": format!("note {id}")}));
            assert_eq!(r["valueSchemaMetadata"], json!({"dataFormat": "AVRO", "schemaId": version.to_string()}));
        }
    }

    let other = of("/json-other");
    let proto_as_json: Vec<&Value> = other.iter().filter(|r| r["valueSchemaMetadata"]["schemaId"] == "2").collect();
    assert_eq!(proto_as_json.len(), 10);
    assert_eq!(proto_as_json[3]["value"], json!({"id": "3", "kind": "kind-3"}), "proto3's JSON mapping");
    assert_eq!(proto_as_json[3]["valueSchemaMetadata"]["dataFormat"], "JSON");
    let json_schema_records: Vec<&Value> =
        other.iter().filter(|r| r["valueSchemaMetadata"]["schemaId"] == "5").collect();
    let ids: Vec<i64> = json_schema_records.iter().map(|r| r["value"]["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [300, 301, 302, 303, 304], "the record failing its JSON Schema is not delivered");
    assert_eq!(json_schema_records[0]["valueSchemaMetadata"]["dataFormat"], "JSON");
    wait_committed(&b, "g-json", "orders-json", &[(0, 6)].into(), Duration::from_secs(30)).await;
    // No destination: dropped, and the status says which record and why.
    let dropped = wait_result(&s, json_id, "DESERIALIZATION_ERROR: dropped", Duration::from_secs(30)).await;
    assert!(dropped.contains("offsets 5..=5") && dropped.contains("does not match the schema"), "{dropped}");
    let counters = sluice_app::api::backend::Backend::counters(&*s.mappings, json_id).expect("running");
    println!("JSON Schema mapping: {dropped}; counters {counters:?}");

    // The unknown schema and the corrupt record, with AWS's reason codes.
    let dlq = tokio::task::spawn_blocking({
        let bootstrap = b.bootstrap().to_string();
        move || read_topic(&bootstrap, "schema-dlq", 2)
    })
    .await
    .unwrap();
    let mut dlq = dlq;
    // Read in any order the broker serves them: by the source offset.
    dlq.sort_by_key(|e| e["KafkaBatchInfo"]["recordInfo"]["offset"].as_str().unwrap_or("").to_string());
    let conditions: Vec<(&str, &str)> = dlq
        .iter()
        .map(|e| {
            (
                e["requestContext"]["condition"].as_str().unwrap(),
                e["KafkaBatchInfo"]["recordInfo"]["offset"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(conditions, vec![("SCHEMA_NOT_FOUND", "20"), ("DESERIALIZATION_ERROR", "21")]);
    assert_eq!(dlq[0]["requestContext"]["approximateInvokeCount"], 0);
    assert!(dlq[0]["responseContext"].is_null(), "never invoked: no response");
    assert_eq!(dlq[1]["payload"]["records"]["orders-avro-0"][0]["offset"], 21, "the original record travels");
    // Each schema read once per mapping however many records name it
    // (schema 2 serves two mappings).
    assert_eq!((registry.lookups(1), registry.lookups(2), registry.lookups(4), registry.lookups(999)), (1, 2, 1, 1));
    assert_eq!(registry.refused.load(Ordering::SeqCst), 0);

    // The filter tester: the topic's records decoded with the mapping's
    // registry, judged on their fields, the failing ones named.
    let samples = sluice_app::api::backend::Backend::sample(&*s.mappings, avro_id, 50).await.unwrap();
    let at = |o: i64| samples.iter().find(|x| x.offset == o).unwrap_or_else(|| panic!("no sample at {o}"));
    let first: Value = serde_json::from_slice(at(0).value.as_deref().unwrap()).unwrap();
    assert_eq!(first, json!({"id": 0, "kind": "order", "note": "note 0"}));
    assert_eq!(at(0).schema.as_deref(), Some("key: AVRO schema 4, value: AVRO schema 1"));
    assert_eq!(at(0).key.as_deref(), Some(&b"\"k0\""[..]), "the key decoded too");
    assert!(at(20).schema.as_deref().unwrap().starts_with("SCHEMA_NOT_FOUND"), "{:?}", at(20).schema);
    assert!(at(21).schema.as_deref().unwrap().starts_with("DESERIALIZATION_ERROR"), "{:?}", at(21).schema);
    let kind = sluice_app::filter::Pattern::compile(r#"{"value": {"kind": ["order"]}}"#).unwrap();
    assert!(kind.matches(&at(0).document("orders-avro", false)));
    assert!(!kind.matches(&at(1).document("orders-avro", false)));

    // 4. The registry goes down: records naming a schema already read go on;
    // one naming a new schema waits, the status says why, and goes once it is back.
    registry.down.store(true, Ordering::SeqCst);
    registry.schemas.lock().unwrap().insert(3, json!({"schema": ORDER_AVRO}));
    let more = vec![
        confluent(1, &avro_record(&avro, 30, "order")),
        confluent(3, &avro_record(&avro, 31, "order")),
        confluent(1, &avro_record(&avro, 32, "order")),
    ];
    produce_all(b.bootstrap(), "orders-avro", &more, Some(&avro_key)).await;
    let t = Instant::now();
    until("the record with a cached schema", Duration::from_secs(30), || of_len(&out, "/json") >= 11).await;
    let ahead = t.elapsed();
    let status = wait_result(&s, avro_id, "cannot read schema 3", Duration::from_secs(30)).await;
    assert!(status.contains("503"), "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(of_len(&out, "/json"), 11, "nothing past the waiting record");
    assert_eq!(b.committed("g-avro", "orders-avro", 1)[&0], 23, "the waiting record is not committed");
    registry.down.store(false, Ordering::SeqCst);
    until("the rest after the registry is back", Duration::from_secs(60), || of_len(&out, "/json") >= 13).await;
    wait_committed(&b, "g-avro", "orders-avro", &[(0, 25)].into(), Duration::from_secs(30)).await;
    let last: Vec<i64> =
        decoded(&out).iter().filter(|r| r["path"] == "/json").map(|r| r["value"]["id"].as_i64().unwrap()).collect();
    assert_eq!(&last[10..], &[30, 31, 32], "in order");
    println!(
        "schemas: the record ahead of the waiting one delivered {ahead:?} after it was produced, registry down; \
         {} records decoded by Powertools ({} Glue); registry look-ups {:?}; DLQ {conditions:?}",
        decoded(&out).len(),
        if glue_version.is_some() { 15 } else { 0 },
        registry.lookups.lock().unwrap()
    );
}

fn of_len(out: &std::path::Path, path: &str) -> usize {
    decoded(out).iter().filter(|r| r["path"] == path).count()
}
