//! `sluice demo`: an embedded Kafka cluster (librdkafka's mock cluster), a
//! topic with six partitions, a bursty order generator, a demo HTTP function
//! served by Sluice itself, and a mapping between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use rand::Rng;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice_app::spec::*;
use uuid::Uuid;

use crate::http::AppState;
use crate::service::{MappingService, ServiceError};

pub const TOPIC: &str = "demo-orders";
pub const PARTITIONS: i32 = 6;
/// The demo mapping keeps one UUID, so restarts update it instead of adding more.
/// (Grouped to read "5lice demo".)
#[allow(clippy::unusual_byte_groupings)]
pub const MAPPING_ID: Uuid = Uuid::from_u128(0x5_1ce_de70_0000_4000_8000_0000_0000_0001);

pub struct Demo {
    stop_cluster: std::sync::mpsc::Sender<()>,
    generator: tokio::task::JoinHandle<()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.generator.abort();
        let _ = self.stop_cluster.send(());
    }
}

impl Demo {
    pub async fn start(rate: u32, hot_share: f64, console: SocketAddr, mappings: &Arc<MappingService>) -> Result<Demo> {
        let (bootstrap, stop_cluster) = start_cluster()?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .create()
            .context("cannot create the demo producer")?;
        let generator = tokio::spawn(generate(producer, rate, hot_share));
        let host =
            if console.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], console.port())) } else { console };
        upsert_mapping(mappings, &bootstrap, &format!("http://{host}/demo/function")).await?;
        println!("Demo: Kafka (mock cluster) at {bootstrap}, topic {TOPIC} ({PARTITIONS} partitions), ~{rate} records/s with bursts");
        Ok(Demo { stop_cluster, generator })
    }
}

/// The mock cluster is not `Send`: it lives on a thread of its own until the
/// demo is dropped.
fn start_cluster() -> Result<(String, std::sync::mpsc::Sender<()>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("demo-kafka".into()).spawn(move || {
        let cluster = match MockCluster::new(1) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        if let Err(e) = cluster.create_topic(TOPIC, PARTITIONS, 1) {
            let _ = ready_tx.send(Err(e.to_string()));
            return;
        }
        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
        let _ = stop_rx.recv();
        drop(cluster);
    })?;
    let bootstrap = ready_rx
        .recv()
        .context("the demo cluster thread died")?
        .map_err(|e| anyhow::anyhow!("cannot start the demo Kafka cluster: {e}"))?;
    Ok((bootstrap, stop_tx))
}

/// Orders at `rate` per second, with a ten-second burst at ten times the
/// rate every minute, most of it on one hot customer's partition; with
/// `hot_share`, that customer's share of every record at all times.
async fn generate(producer: FutureProducer, rate: u32, hot_share: f64) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    let start = std::time::Instant::now();
    loop {
        tick.tick().await;
        let burst = start.elapsed().as_secs() % 60 >= 50;
        let per_tick = (rate as f64 / 10.0 * if burst { 10.0 } else { 1.0 }).max(1.0) as u64;
        for _ in 0..per_tick {
            n += 1;
            let (key, value) = {
                let mut rng = rand::rng();
                let hot = if burst { 0.6f64.max(hot_share) } else { hot_share };
                let customer = if rng.random_bool(hot.clamp(0.0, 1.0)) { 7 } else { rng.random_range(1..=500) };
                let kind = if rng.random_bool(0.9) { "order" } else { "refund" };
                let amount = rng.random_range(100..50_000) as f64 / 100.0;
                let value = serde_json::json!({
                    "orderId": n, "customer": format!("c-{customer}"), "type": kind, "amount": amount,
                    "currency": "EUR", "createdAt": crate::clock::now_ms(),
                });
                (format!("c-{customer}"), value.to_string())
            };
            let record = FutureRecord::to(TOPIC).key(&key).payload(&value);
            if let Err((e, _)) = producer.send_result(record) {
                tracing::warn!("demo producer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn upsert_mapping(mappings: &MappingService, bootstrap: &str, function: &str) -> Result<()> {
    let servers = vec![bootstrap.to_string()];
    match mappings.get(MAPPING_ID).await {
        Ok(mut existing) => {
            // Keep what the user changed; the cluster and function move every start.
            existing.spec.function_name = function.to_string();
            existing.spec.self_managed_event_source.endpoints.kafka_bootstrap_servers = servers;
            mappings.replace(MAPPING_ID, existing.spec).await?;
        }
        Err(ServiceError::NotFound(_)) => {
            let spec = MappingSpec {
                name: Some("demo-orders".into()),
                description: Some("Demo: orders from the built-in generator to the built-in demo function.".into()),
                function_name: function.to_string(),
                topics: vec![TOPIC.into()],
                self_managed_event_source: SelfManagedEventSource {
                    endpoints: Endpoints { kafka_bootstrap_servers: servers },
                },
                self_managed_kafka_event_source_config: SelfManagedKafkaEventSourceConfig {
                    consumer_group_id: Some("sluice-demo".into()),
                    ..Default::default()
                },
                batch_size: 100,
                maximum_batching_window_in_seconds: Some(1),
                starting_position: StartingPosition::TrimHorizon,
                starting_position_timestamp: None,
                filter_criteria: FilterCriteria::default(),
                destination_config: DestinationConfig::default(),
                maximum_retry_attempts: 3,
                maximum_record_age_in_seconds: -1,
                bisect_batch_on_function_error: true,
                function_response_types: vec![FunctionResponseType::ReportBatchItemFailures],
                parallelization_factor: None,
                provisioned_poller_config: None,
                enabled: true,
                filter_on_record_metadata: false,
                event_source_arn: None,
                amazon_managed_kafka_event_source_config: None,
                invocation_role_arn: None,
                source_access_configurations: vec![],
                kms_key_arn: None,
                metrics_config: None,
                logging_config: None,
            };
            mappings.create_with_id(MAPPING_ID, spec).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/demo/function", post(demo_function)).route("/demo/outage", post(outage).get(outage_state))
}

/// While set, the demo function answers every batch with an error: lets a
/// user (and the tests) watch a failing function's lag grow and its health
/// change, then recover.
static OUTAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(serde::Deserialize)]
struct OutageQuery {
    on: bool,
}

/// `POST /demo/outage?on=true|false`.
async fn outage(axum::extract::Query(q): axum::extract::Query<OutageQuery>) -> impl IntoResponse {
    OUTAGE.store(q.on, std::sync::atomic::Ordering::Relaxed);
    outage_state().await
}

async fn outage_state() -> impl IntoResponse {
    axum::Json(serde_json::json!({"Outage": OUTAGE.load(std::sync::atomic::Ordering::Relaxed)}))
}

/// The demo function: a few milliseconds of work per batch, and now and then
/// an error (500) or a throttle (429), so the console has something to show.
async fn demo_function(body: Bytes) -> impl IntoResponse {
    let records = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("records")
                .and_then(|r| r.as_object())
                .map(|r| r.values().filter_map(|p| p.as_array()).map(Vec::len).sum::<usize>())
        })
        .unwrap_or(0);
    let (work_ms, roll) = {
        let mut rng = rand::rng();
        (rng.random_range(2..8u64), rng.random_range(0..100u32))
    };
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    if OUTAGE.load(std::sync::atomic::Ordering::Relaxed) {
        let msg = serde_json::json!({"errorType": "DemoOutage", "errorMessage": "the demo function is down (POST /demo/outage?on=false brings it back)"});
        return (StatusCode::SERVICE_UNAVAILABLE, msg.to_string());
    }
    match roll {
        0 | 1 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"errorType": "DemoError", "errorMessage": format!("the demo function failed on purpose ({records} records)")}).to_string(),
        ),
        2 => (StatusCode::TOO_MANY_REQUESTS, serde_json::json!({"message": "Rate exceeded"}).to_string()),
        _ => (StatusCode::OK, serde_json::json!({"batchItemFailures": []}).to_string()),
    }
}
