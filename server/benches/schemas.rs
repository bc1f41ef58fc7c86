//! Schema registry decoding speed (`cargo bench -p sluice-server --bench
//! schemas`): records per second on one thread (so per core) through the
//! batcher's per-record work, decode + filter + the event's JSON, for ~400
//! bytes of Avro and of Protobuf framed as Confluent's registry frames them,
//! against Sluice's JSON path on the same orders as JSON (filter + event), in
//! one run. Then memory with many schemas: 20,000 schema ids named, RSS
//! before and after, and how many the decoder keeps. Prints figures; asserts
//! only that every path admits the same records.

use std::time::Instant;

use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use serde_json::json;
use sluice_server::engine::event::{encode_decoded, encode_record};
use sluice_server::engine::filter::Filter;
use sluice_server::schema::formats::Fetched;
use sluice_server::schema::registry::Registry;
use sluice_server::schema::wire::SchemaRef;
use sluice_server::schema::Decoder;

const AVRO: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
 {"name":"orderId","type":"long"},{"name":"type","type":{"type":"enum","name":"Kind","symbols":["order","refund"]}},
 {"name":"customer","type":"string"},{"name":"amount","type":"double"},{"name":"currency","type":"string"},
 {"name":"createdAt","type":"long"},{"name":"channel","type":"string"},{"name":"coupon","type":["null","string"]},
 {"name":"shipping","type":{"type":"record","name":"Shipping","fields":[{"name":"country","type":"string"},
   {"name":"city","type":"string"},{"name":"zip","type":"string"},{"name":"express","type":"boolean"}]}},
 {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[{"name":"sku","type":"string"},
   {"name":"qty","type":"int"},{"name":"price","type":"double"}]}}},
 {"name":"note","type":"string"},{"name":"address","type":"string"}]}"#;

const PROTO: &str = r#"syntax = "proto3"; package shop;
message Order { int64 orderId = 1; string type = 2; string customer = 3; double amount = 4; string currency = 5;
  int64 createdAt = 6; string channel = 7; string coupon = 8; Shipping shipping = 9; repeated Item items = 10;
  string note = 11; string address = 12; }
message Shipping { string country = 1; string city = 2; string zip = 3; bool express = 4; }
message Item { string sku = 1; int32 qty = 2; double price = 3; }"#;

const PATTERNS: [&str; 3] = [
    r#"{"value": {"type": ["refund"]}}"#,
    r#"{"value": {"amount": [{"numeric": [">", 400]}]}}"#,
    r#"{"value": {"shipping": {"country": ["DE", "FR"]}}}"#,
];

fn order(i: usize) -> serde_json::Value {
    let countries = ["NL", "BE", "DE", "FR", "IT", "ES"];
    let currencies = ["EUR", "USD", "GBP"];
    json!({
        "orderId": i, "type": if i % 4 == 3 { "refund" } else { "order" }, "customer": format!("c-{}", (i * 7919) % 1000),
        "amount": ((i * 37) % 900) as f64 + 0.5, "currency": currencies[i % 3],
        "createdAt": 1_795_600_000_000u64 + i as u64, "channel": "web", "coupon": null,
        "shipping": {"country": countries[i % 6], "city": "Somewhere", "zip": "12345", "express": i.is_multiple_of(3)},
        "items": [{"sku": format!("sku-{}", i % 97), "qty": 1 + i % 3, "price": 19.99}, {"sku": "sku-gift", "qty": 1, "price": 0.0},
            {"sku": format!("sku-{}", i % 13), "qty": 2, "price": 4.5}, {"sku": "sku-wrapping-paper-gold", "qty": 1, "price": 2.25}],
        "note": format!("leave at the door, ring twice, then wait for a minute or two please; order {i} of customer c-{} placed through the web shop with express shipping if available", (i * 7919) % 1000),
        "address": "Long Street 123, Flat 4b, Somewhere Else, Some Region, Country of Examples",
    })
}

fn message(value: Vec<u8>, offset: i64) -> OwnedMessage {
    OwnedMessage::new(Some(value), Some(b"k".to_vec()), "orders".into(), Timestamp::CreateTime(1), 0, offset, None)
}

fn avro_bytes(schema: &apache_avro::Schema, v: &serde_json::Value) -> Vec<u8> {
    let value = apache_avro::types::Value::from(v.clone()).resolve(schema).unwrap();
    let mut out = vec![0, 0, 0, 0, 1];
    out.extend(apache_avro::to_avro_datum(schema, value).unwrap());
    out
}

fn proto_bytes(desc: &prost_reflect::MessageDescriptor, v: &serde_json::Value) -> Vec<u8> {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("coupon");
    let m = prost_reflect::DynamicMessage::deserialize(desc.clone(), v).unwrap();
    let mut out = vec![0, 0, 0, 0, 2, 0];
    out.extend(prost::Message::encode_to_vec(&m));
    out
}

fn decoder() -> Decoder {
    let config = sluice_app::spec::SchemaRegistryConfig {
        schema_registry_uri: Some("http://127.0.0.1:9/".into()),
        event_record_format: Some("JSON".into()),
        ..Default::default()
    };
    let registry = Registry::new(&config, None, &Default::default()).unwrap();
    let d = Decoder::new(registry, false, true, true);
    let fetched = |format: &str, text: &str| Fetched { format: format.into(), text: text.into(), references: vec![] };
    d.preload(SchemaRef::Confluent(1), &fetched("AVRO", AVRO)).unwrap();
    d.preload(SchemaRef::Confluent(2), &fetched("PROTOBUF", PROTO)).unwrap();
    d
}

/// Records per second through `f` (admitted count returned for agreement).
fn run(name: &str, n: usize, mut f: impl FnMut(usize) -> bool) -> (f64, usize) {
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    let admitted = (0..n).filter(|i| f(*i)).count();
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("{name:<34} {rate:>12.0} records/s  ({admitted} of {n} admitted)");
    (rate, admitted)
}

/// The batcher's work for one record with a registry: decode (the schema
/// already kept), filter on the decoded JSON, the event's JSON.
fn decoded_path(d: &Decoder, filter: &Filter, m: &OwnedMessage, event: bool) -> bool {
    // With the schema kept, decoding completes at its first poll, as it
    // does in the pipeline's task: no runtime round trip per record.
    let ready = futures::FutureExt::now_or_never(async {
        let dec = d.decode(rdkafka::Message::key(m), rdkafka::Message::payload(m), true).await.unwrap();
        let value = dec.value.as_ref().map(|p| &p.json[..]);
        let ok = filter.admits_as(m, rdkafka::Message::key(m), value);
        if ok && event {
            std::hint::black_box(encode_decoded(m, Some((&dec, true))));
        }
        ok
    });
    ready.expect("a kept schema decodes without waiting")
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("SCHEMA_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let distinct = 1000;
    let orders: Vec<serde_json::Value> = (0..distinct).map(order).collect();
    let avro_schema = apache_avro::Schema::parse_str(AVRO).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o.proto"), PROTO).unwrap();
    let pool =
        prost_reflect::DescriptorPool::from_file_descriptor_set(protox::compile(["o.proto"], [dir.path()]).unwrap())
            .unwrap();
    let desc = pool.get_message_by_name("shop.Order").unwrap();

    let json_msgs: Vec<OwnedMessage> =
        orders.iter().enumerate().map(|(i, o)| message(serde_json::to_vec(o).unwrap(), i as i64)).collect();
    let avro_msgs: Vec<OwnedMessage> =
        orders.iter().enumerate().map(|(i, o)| message(avro_bytes(&avro_schema, o), i as i64)).collect();
    let proto_msgs: Vec<OwnedMessage> =
        orders.iter().enumerate().map(|(i, o)| message(proto_bytes(&desc, o), i as i64)).collect();
    let size =
        |m: &[OwnedMessage]| m.iter().map(|m| rdkafka::Message::payload(m).unwrap().len()).sum::<usize>() / m.len();
    println!(
        "record sizes: JSON {} bytes, Avro {} bytes, Protobuf {} bytes (framed); {n} records per run, one thread",
        size(&json_msgs),
        size(&avro_msgs),
        size(&proto_msgs)
    );

    let patterns = PATTERNS.iter().map(|p| sluice_app::filter::Pattern::compile(p).unwrap()).collect();
    let filter = Filter::new(patterns, false);
    let d = decoder();

    // What the issue measures: decode + filter. Then the whole per-record
    // work of the batcher, the event's JSON included.
    let mut rates = Vec::new();
    for with_event in [false, true] {
        let tail = if with_event { " + event" } else { "" };
        let (json_rate, json_admitted) = run(&format!("JSON: filter{tail}"), n, |i| {
            let m = &json_msgs[i % distinct];
            let ok = filter.admits(m);
            if ok && with_event {
                std::hint::black_box(encode_record(m));
            }
            ok
        });
        let (avro_rate, avro_admitted) = run(&format!("Avro: decode + filter{tail}"), n, |i| {
            decoded_path(&d, &filter, &avro_msgs[i % distinct], with_event)
        });
        let (proto_rate, proto_admitted) = run(&format!("Protobuf: decode + filter{tail}"), n, |i| {
            decoded_path(&d, &filter, &proto_msgs[i % distinct], with_event)
        });
        assert_eq!(
            (avro_admitted, proto_admitted),
            (json_admitted, json_admitted),
            "every path admits the same records"
        );
        println!(
            "  ratios to the JSON path: Avro {:.2}, Protobuf {:.2}",
            avro_rate / json_rate,
            proto_rate / json_rate
        );
        rates.push(avro_rate);
    }
    println!(
        "goal, Avro decode + filter at least 500,000 records/s per core: {} ({:.0})",
        if rates[0] >= 500_000.0 { "met" } else { "not met" },
        rates[0]
    );

    // Memory with many schemas: 20,000 ids, each a distinct schema text.
    let before = rss_kb();
    for id in 10..20_010u32 {
        let text = AVRO.replace("\"Order\"", &format!("\"Order{id}\""));
        let f = Fetched { format: "AVRO".into(), text, references: vec![] };
        d.preload(SchemaRef::Confluent(id), &f).unwrap();
    }
    let after = rss_kb();
    println!(
        "20,000 schema ids named: {} kept (the bound), RSS {} → {} KiB (+{} KiB, {:.1} KiB per kept schema)",
        d.cached_schemas(),
        before,
        after,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / d.cached_schemas() as f64
    );
}
