//! The event a function receives: exactly AWS's Kafka event JSON (reference
//! §2), so existing Lambda handlers parse it unchanged. Written by hand into
//! one buffer: it is on the hot path, and its size must be known while the
//! batch is built (the 6 MB limit).

use base64::engine::general_purpose::STANDARD as B64;
use std::fmt::Write as _;

use base64::Engine as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::Timestamp;

/// AWS's invoke payload limit.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The fixed part of an event: everything but the records.
#[derive(Clone, Debug)]
pub struct EventSource {
    /// `SelfManagedKafka`, or `aws:kafka` for MSK.
    pub event_source: String,
    pub event_source_arn: Option<String>,
    pub bootstrap_servers: String,
}

impl EventSource {
    pub fn self_managed(bootstrap_servers: &[String]) -> Self {
        EventSource {
            event_source: "SelfManagedKafka".into(),
            event_source_arn: None,
            bootstrap_servers: bootstrap_servers.join(","),
        }
    }

    /// The source a mapping's events name: MSK when it has a cluster ARN.
    pub fn of(spec: &sluice_app::spec::MappingSpec) -> Self {
        match &spec.event_source_arn {
            Some(arn) => EventSource {
                event_source: "aws:kafka".into(),
                event_source_arn: Some(arn.clone()),
                bootstrap_servers: spec.bootstrap_servers().join(","),
            },
            None => EventSource::self_managed(spec.bootstrap_servers()),
        }
    }

    fn header(&self, out: &mut String) {
        out.push_str("{\"eventSource\":");
        push_json_str(out, &self.event_source);
        if let Some(arn) = &self.event_source_arn {
            out.push_str(",\"eventSourceArn\":");
            push_json_str(out, arn);
        }
        out.push_str(",\"bootstrapServers\":");
        push_json_str(out, &self.bootstrap_servers);
        out.push_str(",\"records\":{");
    }
}

/// One record, already rendered as its JSON object.
#[derive(Clone, Debug)]
pub struct EncodedRecord {
    pub offset: i64,
    /// Kept for the on-failure destination (the original key).
    pub key: Option<Vec<u8>>,
    /// Milliseconds since the epoch (-1 when the broker gave none).
    pub timestamp_ms: i64,
    pub json: String,
}

pub fn encode_record(m: &OwnedMessage) -> EncodedRecord {
    encode_decoded(m, None)
}

/// The record's event JSON; with `decoded` (a schema registry), its key and
/// value as the mapping's EventRecordFormat gives them (JSON text, or the
/// bytes without the registry's framing) and `keySchemaMetadata` /
/// `valueSchemaMetadata` (`dataFormat`: JSON when delivered as JSON).
pub fn encode_decoded(m: &OwnedMessage, decoded: Option<(&crate::schema::Decoded, bool)>) -> EncodedRecord {
    let part = |which: fn(&crate::schema::Decoded) -> &Option<crate::schema::Part>| {
        decoded.and_then(|(d, json)| which(d).as_ref().map(|p| (p, json)))
    };
    let (key_part, value_part) = (part(|d| &d.key), part(|d| &d.value));
    fn bytes_of((p, json): (&crate::schema::Part, bool)) -> &[u8] {
        if json {
            &p.json
        } else {
            &p.source
        }
    }
    let mut out = String::with_capacity(m.payload().map_or(0, |p| p.len()) * 4 / 3 + 160);
    let (ts, ts_type) = match m.timestamp() {
        Timestamp::CreateTime(t) => (t, "CREATE_TIME"),
        Timestamp::LogAppendTime(t) => (t, "LOG_APPEND_TIME"),
        Timestamp::NotAvailable => (-1, "CREATE_TIME"),
    };
    out.push_str("{\"topic\":");
    push_json_str(&mut out, m.topic());
    // write! into the buffer: no temporary strings on the hot path.
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":{},\"timestampType\":\"{}\"",
        m.partition(),
        m.offset(),
        ts,
        ts_type
    );
    // AWS leaves `key` out when the record has none.
    if let Some(k) = key_part.map(bytes_of).or(m.key()) {
        out.push_str(",\"key\":\"");
        B64.encode_string(k, &mut out);
        out.push('"');
    }
    // A tombstone (no value at all) leaves `value` out, as AWS sends it; an
    // empty value is `""`.
    if let Some(v) = value_part.map(bytes_of).or(m.payload()) {
        out.push_str(",\"value\":\"");
        B64.encode_string(v, &mut out);
        out.push('"');
    }
    out.push_str(",\"headers\":[");
    if let Some(hs) = m.headers() {
        for (i, h) in hs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            push_json_str(&mut out, h.key);
            out.push_str(":[");
            // Java's byte[]: signed bytes.
            for (j, b) in h.value.unwrap_or_default().iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", *b as i8);
            }
            out.push_str("]}");
        }
    }
    out.push(']');
    for (name, p) in [("keySchemaMetadata", key_part), ("valueSchemaMetadata", value_part)] {
        if let Some((p, json)) = p {
            let format = if json { "JSON" } else { p.format };
            let _ = write!(out, ",\"{name}\":{{\"dataFormat\":\"{format}\",\"schemaId\":");
            push_json_str(&mut out, &p.schema_id);
            out.push('}');
        }
    }
    out.push('}');
    EncodedRecord { offset: m.offset(), key: m.key().map(<[u8]>::to_vec), timestamp_ms: ts, json: out }
}

/// Renders the event for records of one partition.
pub fn build_event(source: &EventSource, topic: &str, partition: i32, records: &[EncodedRecord]) -> String {
    let body: usize = records.iter().map(|r| r.json.len() + 1).sum();
    let mut out = String::with_capacity(body + source.bootstrap_servers.len() + 128);
    source.header(&mut out);
    push_json_str(&mut out, &format!("{topic}-{partition}"));
    out.push_str(":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.json);
    }
    out.push_str("]}}");
    out
}

/// The envelope's size without records, for the payload limit.
pub fn envelope_len(source: &EventSource, topic: &str, partition: i32) -> usize {
    build_event(source, topic, partition, &[]).len()
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};

    fn msg(key: Option<&[u8]>, value: &[u8], headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            key.map(|k| k.to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_545_084_650_987),
            0,
            15,
            headers,
        )
    }

    #[test]
    fn the_event_is_aws_json_with_signed_header_bytes() {
        let headers = OwnedHeaders::new().insert(Header { key: "traceId", value: Some(&[104u8, 101, 200, 255][..]) });
        let r = encode_record(&msg(Some(b"order-1"), br#"{"id":1}"#, Some(headers)));
        let src = EventSource::self_managed(&["b-1:9092".into(), "b-2:9092".into()]);
        let event = build_event(&src, "orders", 0, &[r]);
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "eventSource": "SelfManagedKafka",
                "bootstrapServers": "b-1:9092,b-2:9092",
                "records": {"orders-0": [{
                    "topic": "orders", "partition": 0, "offset": 15,
                    "timestamp": 1545084650987i64, "timestampType": "CREATE_TIME",
                    "key": "b3JkZXItMQ==", "value": "eyJpZCI6MX0=",
                    "headers": [{"traceId": [104, 101, -56, -1]}]
                }]}
            })
        );
    }

    #[test]
    fn a_tombstone_has_no_value_field_and_an_empty_value_is_empty() {
        let tombstone =
            OwnedMessage::new(None, Some(b"order-1".to_vec()), "orders".into(), Timestamp::CreateTime(1), 0, 16, None);
        let v: serde_json::Value = serde_json::from_str(&encode_record(&tombstone).json).unwrap();
        assert!(v.get("value").is_none(), "{v}");
        assert_eq!(v["key"], "b3JkZXItMQ==");
        let empty: serde_json::Value = serde_json::from_str(&encode_record(&msg(None, b"", None)).json).unwrap();
        assert_eq!(empty["value"], "");
    }

    #[test]
    fn a_record_without_key_has_no_key_field_and_sizes_add_up() {
        let r = encode_record(&msg(None, b"x", None));
        assert!(!r.json.contains("\"key\""));
        let src = EventSource {
            event_source: "aws:kafka".into(),
            event_source_arn: Some("arn:aws:kafka:x".into()),
            bootstrap_servers: "b:1".into(),
        };
        let records = vec![r.clone(), r.clone(), r];
        let event = build_event(&src, "orders", 3, &records);
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(v["eventSourceArn"], "arn:aws:kafka:x");
        assert_eq!(v["records"]["orders-3"].as_array().unwrap().len(), 3);
        let predicted = envelope_len(&src, "orders", 3) + records.iter().map(|r| r.json.len()).sum::<usize>() + 2;
        assert_eq!(event.len(), predicted);
    }
}

#[cfg(test)]
mod compat {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};

    /// A mapping with an MSK cluster ARN sends MSK's event; AWS's MSK group
    /// setting is honoured.
    #[test]
    fn msk_mappings_send_msk_events() {
        let mut spec: sluice_app::spec::MappingSpec = serde_json::from_value(serde_json::json!({
            "FunctionName": "orders", "Topics": ["orders"], "StartingPosition": "LATEST",
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b-1:9098"]}},
            "EventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/orders/abc",
            "AmazonManagedKafkaEventSourceConfig": {"ConsumerGroupId": "msk-group"},
        }))
        .unwrap();
        assert_eq!(spec.group_for(uuid::Uuid::nil()), "msk-group");
        let m = OwnedMessage::new(Some(b"v".to_vec()), None, "orders".into(), Timestamp::CreateTime(6), 0, 1, None);
        let v: serde_json::Value =
            serde_json::from_str(&build_event(&EventSource::of(&spec), "orders", 0, &[encode_record(&m)])).unwrap();
        assert_eq!(v["eventSource"], "aws:kafka");
        assert_eq!(v["eventSourceArn"], "arn:aws:kafka:us-east-1:123456789012:cluster/orders/abc");
        spec.event_source_arn = None;
        let v: serde_json::Value =
            serde_json::from_str(&build_event(&EventSource::of(&spec), "orders", 0, &[encode_record(&m)])).unwrap();
        assert_eq!(v["eventSource"], "SelfManagedKafka");
        assert!(v.get("eventSourceArn").is_none());
    }

    /// Existing Rust handlers (aws_lambda_events' `KafkaEvent`) parse the
    /// event unchanged.
    #[test]
    fn aws_lambda_events_parses_it() {
        let headers = OwnedHeaders::new().insert(Header { key: "h", value: Some(&[1u8, 200][..]) });
        let with_key = OwnedMessage::new(
            Some(b"v".to_vec()),
            Some(b"k".to_vec()),
            "orders".into(),
            Timestamp::LogAppendTime(5),
            2,
            7,
            Some(headers),
        );
        let no_key =
            OwnedMessage::new(Some(b"w".to_vec()), None, "orders".into(), Timestamp::CreateTime(6), 2, 8, None);
        let src = EventSource::self_managed(&["b:1".into()]);
        let json = build_event(&src, "orders", 2, &[encode_record(&with_key), encode_record(&no_key)]);
        let e: aws_lambda_events::event::kafka::KafkaEvent = serde_json::from_str(&json).expect("KafkaEvent parses");
        assert_eq!(e.event_source.as_deref(), Some("SelfManagedKafka"));
        let recs = &e.records["orders-2"];
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, 7);
        assert_eq!(recs[0].key.as_deref(), Some("aw=="));
        assert_eq!(recs[0].timestamp_type.as_deref(), Some("LOG_APPEND_TIME"));
        assert_eq!(recs[0].headers[0]["h"], vec![1i8, -56]);
        assert_eq!(recs[1].key, None);
    }
}
