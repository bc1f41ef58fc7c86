//! AWS definitions carried over as they are: an MSK mapping given only its
//! cluster's ARN finds its brokers through MSK's GetBootstrapBrokers and
//! reads with the ConsumerGroupId it names (not its UUID), and a Lambda
//! function slower than the HTTP timeout is invoked once and succeeds.
//! One endpoint stands in for AWS (moto implements neither
//! GetBootstrapBrokers nor slow functions); the SDKs and Sluice find it
//! through `AWS_ENDPOINT_URL`. This file is its own process, so setting
//! the environment here is safe.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use common::*;
use serde_json::json;
use sluice_server::engine::{Engine, EngineSettings};
use sluice_server::service::{spec_from_json, MappingService};
use sluice_server::store::Store;

/// When an Invoke started, and when it answered.
type Invocation = (Instant, Option<Instant>);

#[derive(Clone, Default)]
struct FakeAws {
    bootstrap: String,
    /// The Authorization headers of GetBootstrapBrokers calls.
    broker_calls: Arc<Mutex<Vec<String>>>,
    /// (started, finished) of each Invoke.
    invocations: Arc<Mutex<Vec<Invocation>>>,
    slow: Duration,
}

async fn brokers(State(f): State<FakeAws>, Path(arn): Path<String>, h: HeaderMap) -> Json<serde_json::Value> {
    assert_eq!(arn, CLUSTER, "the cluster's ARN, decoded");
    let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    f.broker_calls.lock().unwrap().push(auth);
    Json(json!({"BootstrapBrokerString": f.bootstrap, "BootstrapBrokerStringTls": "tls-only.invalid:9094"}))
}

async fn configuration(Path(name): Path<String>) -> Json<serde_json::Value> {
    Json(json!({"FunctionName": name, "Timeout": 120}))
}

async fn invoke(State(f): State<FakeAws>) -> Json<serde_json::Value> {
    let i = {
        let mut calls = f.invocations.lock().unwrap();
        calls.push((Instant::now(), None));
        calls.len() - 1
    };
    tokio::time::sleep(f.slow).await;
    f.invocations.lock().unwrap()[i].1 = Some(Instant::now());
    Json(json!({"batchItemFailures": []}))
}

const CLUSTER: &str = "arn:aws:kafka:us-east-1:123456789012:cluster/orders/0a1b2c3d-1111-2222-3333-444455556666-2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msk_definition_finds_its_brokers_and_keeps_its_group_and_a_slow_function_runs_once() {
    let b = Broker::mock();
    b.create_topic("orders", 1).await;
    b.produce("orders", 1, 10, None).await;
    let fake = FakeAws { bootstrap: b.bootstrap().to_string(), slow: Duration::from_secs(33), ..Default::default() };
    let app = axum::Router::new()
        .route("/v1/clusters/{arn}/bootstrap-brokers", get(brokers))
        .route("/2015-03-31/functions/{name}/configuration", get(configuration))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(fake.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let dir = tempfile::tempdir().unwrap();
    let mappings = MappingService::new(Store::open(&database_url(dir.path()).await).await.unwrap());
    // The HTTP timeout as shipped (30 s): the function takes longer.
    let engine = Engine::start(mappings.shared(), EngineSettings::default());

    // As an MSK mapping is defined for AWS: no broker list at all.
    let definition = json!({
        "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:slow-orders",
        "EventSourceArn": CLUSTER,
        "Topics": ["orders"],
        "AmazonManagedKafkaEventSourceConfig": {"ConsumerGroupId": "legacy-orders-group"},
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": 100,
    });
    let view = mappings.create(spec_from_json(definition).unwrap()).await.unwrap();
    assert_eq!(view.consumer_group(), "legacy-orders-group", "the MSK block's group, not the UUID");

    let deadline = Instant::now() + Duration::from_secs(90);
    while b.committed("legacy-orders-group", "orders", 1).get(&0) != Some(&10) {
        assert!(Instant::now() < deadline, "not committed: {:?}", mappings.get(view.uuid).await.unwrap().status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = fake.broker_calls.lock().unwrap().clone();
    assert!(!calls.is_empty(), "GetBootstrapBrokers was asked");
    assert!(
        calls.iter().all(|a| a.starts_with("AWS4-HMAC-SHA256 ") && a.contains("/us-east-1/kafka/aws4_request")),
        "signed for MSK in the cluster's region: {calls:?}"
    );
    let invocations = fake.invocations.lock().unwrap().clone();
    assert_eq!(invocations.len(), 1, "invoked once, not again while it still ran");
    let (start, end) = invocations[0];
    assert!(end.unwrap() - start >= Duration::from_secs(30), "it ran past the 30 s HTTP timeout");
    assert!(
        b.committed(&view.uuid.to_string(), "orders", 1).get(&0) == Some(&-1),
        "nothing was committed under the UUID's group"
    );
    engine.shutdown().await;
}
