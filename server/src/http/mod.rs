//! The HTTP side: the console (Leptos pages and their form posts), the REST
//! API, health, and static files, on one axum router.

pub mod api;
pub mod aws_api;
pub mod forms;
pub mod guard;
pub mod headers;
pub mod openapi;
pub mod stream;

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::{generate_route_list, LeptosRoutes};
use sluice_app::api::backend::BackendHandle;
use sluice_app::{shell, App};

use crate::service::MappingService;

#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub mappings: Arc<MappingService>,
    pub backend: BackendHandle,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}

impl AppState {
    pub fn new(leptos_options: LeptosOptions, mappings: Arc<MappingService>) -> Self {
        let backend = BackendHandle(mappings.clone());
        AppState { leptos_options, mappings, backend }
    }
}

/// The whole application. `extra` adds routes (the demo's function).
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let pages = generate_route_list(App);
    let backend = state.backend.clone();
    let options = state.leptos_options.clone();
    Router::new()
        .merge(api::routes())
        .merge(aws_api::routes())
        .merge(guard::routes())
        .merge(extra)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(stream::prometheus))
        .route("/mappings/new", post(forms::create))
        .route("/mappings/{id}/edit", post(forms::update))
        .route("/mappings/{id}/enable", post(forms::enable))
        .route("/mappings/{id}/disable", post(forms::disable))
        .route("/mappings/{id}/delete", post(forms::delete))
        .route("/mappings/{id}/reset", post(forms::reset))
        .route("/mappings/{id}/failures/redrive", post(forms::redrive))
        .route("/tokens", post(forms::create_token))
        .route("/tokens/{name}/delete", post(forms::delete_token))
        .leptos_routes_with_context(
            &state,
            pages,
            move || provide_context(backend.clone()),
            move || shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        // Every route and file behind the access guard (it lets the public ones through).
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        // Outside the guard, so its refusals carry them too.
        .layer(axum::middleware::from_fn(headers::aws_error_headers))
        // Pages, JSON and the wasm go out gzipped (live streams are left
        // alone by the default predicate).
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(axum::middleware::from_fn(headers::security_headers))
        .with_state(state)
}

/// 200 once the database answers: the node can take traffic.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.mappings.store().ping().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e:#}\n")),
    }
}

/// Whether a load balancer should send this node traffic: the database
/// answers and took the last heartbeat's write, on PostgreSQL the node
/// listens for the others' changes, and it is not shutting down (503 from
/// the first moment of a shutdown).
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let node = s.mappings.node();
    let db = s.mappings.store().ping().await;
    let ready = db.is_ok() && node.is_ready();
    let database = match (&db, node.db_error()) {
        (Err(e), _) => format!("{e:#}"),
        (Ok(()), Some((e, secs))) => format!("writes failing for {secs} s: {e}"),
        (Ok(()), None) => "ok".to_string(),
    };
    let body = serde_json::json!({
        "Ready": ready,
        "Node": node.id,
        "Leader": node.is_leader(),
        "Database": database,
        "Members": node.members().len(),
    });
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body))
}
