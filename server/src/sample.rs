//! The latest records of a topic, for the console's filter tester: read
//! with a client that never joins a group and commits nothing.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_app::filter::Sample;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Up to `n` of the newest records, spread over the partitions, newest
/// last per partition. Blocking: run it off the async runtime.
pub fn latest(
    servers: &str,
    topic: &str,
    auth: &crate::kafka_auth::KafkaAuth,
    n: usize,
) -> Result<Vec<Sample>, String> {
    let c = auth
        .consumer(
            ClientConfig::new()
                .set("bootstrap.servers", servers)
                .set("group.id", "sluice-filter-tester")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false"),
        )
        .map_err(|e| e.to_string())?;
    let md =
        c.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| format!("cannot read topic {topic} on {servers}: {e}"))?;
    let parts: Vec<i32> =
        md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if parts.is_empty() {
        return Err(format!("topic `{topic}` does not exist on {servers}"));
    }
    let per = n.div_ceil(parts.len()).max(1) as i64;
    let mut tpl = TopicPartitionList::new();
    let mut want = 0usize;
    let mut ends = std::collections::HashMap::new();
    for p in &parts {
        let (low, high) = c.fetch_watermarks(topic, *p, TIMEOUT).map_err(|e| e.to_string())?;
        let from = (high - per).max(low);
        if from < high {
            tpl.add_partition_offset(topic, *p, Offset::Offset(from)).map_err(|e| e.to_string())?;
            want += (high - from) as usize;
            ends.insert(*p, high);
        }
    }
    if want == 0 {
        return Ok(vec![]);
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < want && Instant::now() < deadline {
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else { continue };
        if ends.get(&m.partition()).is_some_and(|end| m.offset() >= *end) {
            continue;
        }
        out.push(sample_of(&m));
    }
    out.sort_by_key(|s| (s.partition, s.offset));
    out.truncate(n.max(1) * 2);
    Ok(out)
}

/// A record as the filter tester shows it.
pub fn sample_of(m: &impl Message) -> Sample {
    Sample {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default(),
        schema: None,
    }
}

/// With a schema registry, each sample's key and value as the mapping's
/// filters see them (the decoded JSON text), and a note of the schema, or
/// of the reason code the record would fail with.
pub async fn decode(decoder: &crate::schema::Decoder, samples: &mut [Sample]) {
    use crate::schema::Failure;
    for s in samples {
        match decoder.decode(s.key.as_deref(), s.value.as_deref(), true).await {
            Ok(d) => {
                let mut notes = Vec::new();
                for (name, part, slot) in [("key", d.key, &mut s.key), ("value", d.value, &mut s.value)] {
                    if let Some(p) = part {
                        notes.push(format!("{name}: {} schema {}", p.format, p.schema_id));
                        *slot = Some(p.json);
                    }
                }
                s.schema = Some(notes.join(", "));
            }
            Err(Failure::SchemaNotFound(why)) => s.schema = Some(format!("SCHEMA_NOT_FOUND: {why}")),
            Err(Failure::Deserialization(why)) => s.schema = Some(format!("DESERIALIZATION_ERROR: {why}")),
            Err(Failure::Unavailable(why)) => s.schema = Some(format!("not decoded: {why}")),
        }
    }
}
