//! Where a mapping can reach: the HTTP target's error body (which may
//! repeat the endpoint's secrets) stays out of the message viewers see, a
//! redirect to another host is not followed, and `SLUICE_ALLOWED_HOSTS` is
//! held at save, at start and at every connection.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use sluice_server::engine::target::http::HttpTarget;
use sluice_server::engine::target::{Outcome, Target};
use sluice_server::reach::Reach;

async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn error_bodies_stay_in_the_log_and_redirects_stay_on_the_host() {
    // Another host (port): counts what reaches it.
    let hits = Arc::new(AtomicUsize::new(0));
    let other = {
        let hits = hits.clone();
        serve(Router::new().route(
            "/steal",
            post(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "{}"
            }),
        ))
        .await
    };
    let to_other = format!("{other}/steal");
    let base = serve(
        Router::new()
            .route(
                "/fail",
                post(|| async {
                    (StatusCode::INTERNAL_SERVER_ERROR, "Authorization: Bearer sk-live-secret-4242 was rejected")
                }),
            )
            .route(
                "/away",
                post(move || async move {
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to_other.clone())]).into_response()
                }),
            )
            .route(
                "/here",
                post(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/ok")]).into_response() }),
            )
            .route("/ok", post(|| async { "{}" })),
    )
    .await;
    let t = |path: &str| HttpTarget::new(&format!("{base}{path}"), Duration::from_secs(5), &Reach::default()).unwrap();

    match t("/fail").invoke("{}".into()).await {
        Outcome::FunctionError { message, status, .. } => {
            assert_eq!(status, Some(500));
            assert!(message.contains("500") && !message.contains("sk-live-secret-4242"), "{message}");
        }
        o => panic!("{o:?}"),
    }
    match t("/away").invoke("{}".into()).await {
        Outcome::FunctionError { message, status, .. } => {
            assert_eq!(status, Some(307));
            assert!(message.contains("redirect") && message.contains("/steal"), "{message}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the event was sent to another host");
    assert_eq!(
        t("/here").invoke("{}".into()).await,
        Outcome::Success { body: b"{}".to_vec() },
        "same-host redirects are followed"
    );

    // With an allow-list, a name resolving outside it is not connected to.
    let only_ten = Reach::parse("10.0.0.0/8").unwrap();
    let port = base.rsplit(':').next().unwrap();
    let local = HttpTarget::new(&format!("http://localhost:{port}/ok"), Duration::from_secs(5), &only_ten).unwrap();
    match local.invoke("{}".into()).await {
        Outcome::FunctionError { message, .. } => {
            assert!(message.contains("SLUICE_ALLOWED_HOSTS") || message.contains("connect"), "{message}")
        }
        o => panic!("reached a host the allow-list forbids: {o:?}"),
    }
}

#[tokio::test]
async fn the_allow_list_refuses_at_save_and_at_start() {
    use sluice_server::engine::{Engine, EngineSettings};
    use sluice_server::service::{MappingService, ServiceError};
    use sluice_server::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let mappings = MappingService::new(Store::open(&common::database_url(dir.path()).await).await.unwrap());
    let internal = Reach::parse("*.kafka.internal, 10.0.0.0/8").unwrap();
    mappings.set_reach(internal.clone());
    let mut spec = common::spec("127.0.0.1:9", "orders", "http://169.254.169.254/latest/meta-data", "g-reach");
    spec.self_managed_kafka_event_source_config.schema_registry_config = Some(sluice_app::spec::SchemaRegistryConfig {
        schema_registry_uri: Some("http://169.254.169.254:8081".into()),
        event_record_format: Some("JSON".into()),
        schema_validation_configs: vec![sluice_app::spec::SchemaValidationConfig { attribute: "VALUE".into() }],
        access_configs: vec![],
    });
    match mappings.create(spec.clone()).await {
        Err(ServiceError::Invalid(errs)) => {
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(
                fields,
                [
                    "FunctionName",
                    "SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig.SchemaRegistryURI",
                    "SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS[0]"
                ],
                "{errs:?}"
            );
            assert!(errs.iter().all(|e| e.message.contains("SLUICE_ALLOWED_HOSTS")), "{errs:?}");
        }
        other => panic!("saved a mapping outside the allow-list: {other:?}"),
    }
    // Saved before the list was set: the engine refuses to start it, and says why.
    mappings.set_reach(Reach::default());
    let id = mappings.create(spec).await.unwrap().uuid;
    let mut engine = Some(Engine::start(mappings.shared(), EngineSettings { reach: internal, ..Default::default() }));
    let mut status = None;
    for _ in 0..100 {
        let v = mappings.get(id).await.unwrap();
        if v.status.last_processing_result.contains("SLUICE_ALLOWED_HOSTS") {
            status = Some(v.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("the engine said nothing about the allow-list");
    assert!(status.last_processing_result.starts_with("PROBLEM: FunctionName"), "{status:?}");
    assert_eq!(status.state_transition_reason, "ESM_CONFIG_NOT_VALID");
    engine.take().unwrap().shutdown().await;
}
