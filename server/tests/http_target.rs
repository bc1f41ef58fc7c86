//! The HTTP target as a security boundary: an error's body (which may
//! repeat the endpoint's secrets) stays out of the message viewers see, and
//! a redirect to another host is not followed.

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
        serve(Router::new().route("/steal", post(move || async move { hits.fetch_add(1, Ordering::SeqCst); "{}" }))).await
    };
    let to_other = format!("{other}/steal");
    let base = serve(
        Router::new()
            .route("/fail", post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "Authorization: Bearer sk-live-secret-4242 was rejected") }))
            .route("/away", post(move || async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to_other.clone())]).into_response() }))
            .route("/here", post(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/ok")]).into_response() }))
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
    assert_eq!(t("/here").invoke("{}".into()).await, Outcome::Success { body: b"{}".to_vec() }, "same-host redirects are followed");

    // With an allow-list, a name resolving outside it is not connected to.
    let only_ten = Reach::parse("10.0.0.0/8").unwrap();
    let port = base.rsplit(':').next().unwrap();
    let local = HttpTarget::new(&format!("http://localhost:{port}/ok"), Duration::from_secs(5), &only_ten).unwrap();
    match local.invoke("{}".into()).await {
        Outcome::FunctionError { message, .. } => assert!(message.contains("SLUICE_ALLOWED_HOSTS") || message.contains("connect"), "{message}"),
        o => panic!("reached a host the allow-list forbids: {o:?}"),
    }
}
