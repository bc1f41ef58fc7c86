//! The JSON REST API under `/api/v1`, in AWS's field names.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::AppState;
use crate::service::{spec_from_json, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/mappings", get(list).post(create))
        .route("/api/v1/mappings/{id}", get(read).put(replace).patch(patch).delete(delete))
        .route("/api/v1/mappings/{id}/enable", post(enable))
        .route("/api/v1/mappings/{id}/disable", post(disable))
        .route("/api/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
}

/// An API error: a status and `{"Type", "Message", "Errors": [{"Field", "Message"}]}`.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::NotFound(_) => ApiError(
                StatusCode::NOT_FOUND,
                json!({"Type": "ResourceNotFoundException", "Message": e.to_string()}),
            ),
            ServiceError::Invalid(errs) => ApiError(
                StatusCode::BAD_REQUEST,
                json!({"Type": "InvalidParameterValueException", "Message": e.to_string(), "Errors": errs}),
            ),
            ServiceError::Internal(err) => {
                tracing::error!("API request failed: {err:#}");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"Type": "ServiceException", "Message": format!("{err:#}")}),
                )
            }
        }
    }
}

fn uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            json!({"Type": "ResourceNotFoundException", "Message": format!("`{id}` is not a mapping UUID")}),
        )
    })
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"Type": "InvalidRequestContentException", "Message": format!("the body is not valid JSON: {e}"),
                   "Errors": [{"Field": "", "Message": format!("not valid JSON: {e}")}]}),
        )
    })
}

type ApiResult = Result<Response, ApiError>;

async fn list(State(s): State<AppState>) -> ApiResult {
    let all = s.mappings.list().await?;
    Ok(Json(json!({ "EventSourceMappings": all })).into_response())
}

async fn create(State(s): State<AppState>, body: Bytes) -> ApiResult {
    let spec = spec_from_json(body_json(&body)?)?;
    let view = s.mappings.create(spec).await?;
    let location = format!("/api/v1/mappings/{}", view.uuid);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(view)).into_response())
}

async fn read(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.get(uuid(&id)?).await?).into_response())
}

async fn replace(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let id = uuid(&id)?;
    let spec = spec_from_json(body_json(&body)?)?;
    Ok(Json(s.mappings.replace(id, spec).await?).into_response())
}

async fn patch(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let id = uuid(&id)?;
    let patch = body_json(&body)?;
    Ok(Json(s.mappings.patch(id, &patch).await?).into_response())
}

async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.delete(uuid(&id)?).await?).into_response())
}

async fn enable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.set_enabled(uuid(&id)?, true).await?).into_response())
}

async fn disable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(s.mappings.set_enabled(uuid(&id)?, false).await?).into_response())
}
