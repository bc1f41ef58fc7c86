//! `sluice demo`'s parts: a six-partition topic on the embedded cluster with
//! traffic on every partition, and a demo mapping that points at both.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use sluice_server::demo::{self, Demo};
use sluice_server::service::MappingService;
use sluice_server::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_produces_on_six_partitions_and_saves_its_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::database_url(dir.path()).await;
    let mappings = MappingService::new(Store::open(&url).await.unwrap());
    let console: SocketAddr = "127.0.0.1:3999".parse().unwrap();
    let _demo = Demo::start(200, 0.0, console, &mappings).await.unwrap();

    let m = mappings.get(demo::MAPPING_ID).await.unwrap();
    assert_eq!(m.spec.topics, vec![demo::TOPIC.to_string()]);
    assert_eq!(m.spec.function_name, "http://127.0.0.1:3999/demo/function");
    assert!(m.spec.enabled);
    let bootstrap = m.spec.bootstrap_servers()[0].clone();

    let records = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "demo-test")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some(demo::TOPIC), Duration::from_secs(5)).unwrap();
        assert_eq!(md.topics()[0].partitions().len(), demo::PARTITIONS as usize);
        consumer.subscribe(&[demo::TOPIC]).unwrap();
        let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
        let mut sample = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && per_partition.len() < demo::PARTITIONS as usize {
            if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
                *per_partition.entry(msg.partition()).or_default() += 1;
                sample.get_or_insert_with(|| msg.payload().map(|p| p.to_vec()).unwrap_or_default());
            }
        }
        (per_partition, sample)
    })
    .await
    .unwrap();

    let partitions: BTreeSet<i32> = records.0.keys().copied().collect();
    assert_eq!(partitions, (0..demo::PARTITIONS).collect(), "traffic reaches every partition: {:?}", records.0);
    let order: serde_json::Value = serde_json::from_slice(&records.1.unwrap()).unwrap();
    assert!(order["orderId"].is_u64() && order["customer"].is_string(), "{order}");

    // A restart keeps one demo mapping and moves it to the new cluster.
    drop(_demo);
    let _again = Demo::start(10, 0.0, console, &mappings).await.unwrap();
    let all = mappings.list().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_ne!(all[0].spec.bootstrap_servers()[0], m.spec.bootstrap_servers()[0]);
}
