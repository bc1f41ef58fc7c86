//! The console's HTML form posts. They work without JavaScript: a good form
//! redirects (303) to the mapping's page; a bad one gets the same page back,
//! rendered with what was typed and each field's error.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use leptos::prelude::provide_context;
use sluice_app::api::PostedForm;
use sluice_app::form::MappingForm;
use sluice_app::model::{MadeToken, Role, Session};
use sluice_app::pages::PostedToken;
use sluice_app::reset::{PostedReset, ResetForm};
use sluice_app::spec::FieldError;
use uuid::Uuid;

use super::guard::{AuditDetail, AuditTarget};
use super::AppState;
use crate::service::ServiceError;

const MAX_FORM_BYTES: usize = 1 << 20;

pub async fn create(State(s): State<AppState>, req: Request<Body>) -> Response {
    let (parts, form) = match read_form(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let saved = match form.to_spec(sluice_app::api::now_s()) {
        Ok(spec) => s.mappings.create(spec).await,
        Err(errs) => Err(ServiceError::Invalid(errs)),
    };
    match saved {
        Ok(view) => Redirect::to(&format!("/mappings/{}", view.uuid)).into_response(),
        Err(e) => answer_error(&s, parts, form, e).await,
    }
}

pub async fn update(State(s): State<AppState>, Path(id): Path<String>, req: Request<Body>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let (parts, form) = match read_form(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let current = s.mappings.get(id).await.ok();
    let before = current.as_ref().map(|m| (m.spec.starting_position, m.spec.starting_position_timestamp));
    let saved = match form.to_spec(sluice_app::api::now_s()) {
        Ok(mut spec) => {
            if let Some(c) = &current {
                spec.keep_api_only(&c.spec);
            }
            s.mappings.replace(id, spec).await
        }
        Err(errs) => Err(ServiceError::Invalid(errs)),
    };
    match saved {
        Ok(view) => {
            // A new starting position moves nothing already committed: the
            // mapping's page offers the reset that does, prefilled.
            let now = (view.spec.starting_position, view.spec.starting_position_timestamp);
            if before.is_some_and(|b| b != now) {
                let mut q = vec![("position_changed", view.spec.starting_position.as_str().to_string())];
                if let Some(t) = now.1 {
                    q.push(("at", sluice_app::spec::format_rfc3339(t)));
                }
                let q = serde_urlencoded::to_string(&q).unwrap_or_default();
                return Redirect::to(&format!("/mappings/{}?{q}", view.uuid)).into_response();
            }
            Redirect::to(&format!("/mappings/{}", view.uuid)).into_response()
        }
        Err(e) => answer_error(&s, parts, form, e).await,
    }
}

/// The reset wizard's post: a preview, or an apply; either way the wizard
/// page comes back with the result (or the errors by field).
pub async fn reset(State(s): State<AppState>, Path(id): Path<String>, req: Request<Body>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let (parts, pairs) = match form_pairs(req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut form = ResetForm::default();
    let mut chosen = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "Strategy" => form.strategy = v,
            "Timestamp" => form.timestamp = v,
            "TimeZone" => form.time_zone = v,
            "Offsets" => form.offsets = v,
            "ShiftBy" => form.shift_by = v,
            "Scope" => form.scope = v,
            "Action" => form.action = v,
            // Ticked boxes come one by one; the preview's hidden field as a list.
            "Partitions" => chosen.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from)),
            _ => {}
        }
    }
    form.partitions = chosen.join(",");
    let actor = super::api::actor("console", parts.extensions.get());
    let (errors, outcome) = match form.to_request() {
        Err(e) => (e, None),
        Ok(r) => match s.mappings.reset(id, r, &actor).await {
            Ok(o) => (vec![], Some(o)),
            Err(ServiceError::Invalid(e) | ServiceError::Taken(e)) => (e, None),
            Err(ServiceError::NotFound(_)) => return not_found(),
            Err(other) => (vec![FieldError::new("", other.to_string())], None),
        },
    };
    render_with(&s, parts, PostedReset { values: form, errors, outcome }).await
}

/// The "Failed records" tab without JavaScript: redrives the ticked records
/// (`what=selected`) or everything matching the list's filters, then shows
/// the job's page.
pub async fn redrive(State(s): State<AppState>, Path(id): Path<String>, req: Request<Body>) -> Response {
    use sluice_app::failures::{RecordRef, RedriveRequest};
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let (parts, pairs) = match form_pairs(req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut req = RedriveRequest::default();
    let (mut selected, mut records) = (false, Vec::new());
    for (k, v) in pairs {
        match k.as_str() {
            "what" => selected = v == "selected",
            "record" => {
                if let Some((p, o)) = v.split_once(':').and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?))) {
                    records.push(RecordRef { partition: p, offset: o });
                }
            }
            "partition" => req.filter.partition = v.parse().ok(),
            "condition" if !v.is_empty() => req.filter.condition = Some(v),
            "redrive" if !v.is_empty() => req.filter.redrive = Some(v),
            _ => {}
        }
    }
    if selected {
        req.filter = Default::default();
        req.records = Some(records);
    } else if req.filter == Default::default() {
        req.all = true;
    }
    let actor = super::api::actor("console", parts.extensions.get());
    match s.mappings.redrive(id, &req, &actor).await {
        Ok(job) => {
            let detail = format!("redrive {} of {} failed records", job.job_id, job.total);
            let mut r = Redirect::to(&format!("/mappings/{id}/failures?job={}", job.job_id)).into_response();
            r.extensions_mut().insert(AuditDetail(detail));
            r
        }
        Err(ServiceError::NotFound(_)) => not_found(),
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Conflict(_))) => (
            StatusCode::BAD_REQUEST,
            Html(format!(
                "<h1>Not redriven</h1><p>{}</p><p><a href=\"/mappings/{id}/failures\">Back to the failed records</a></p>",
                html_escape(&e.to_string())
            )),
        )
            .into_response(),
        Err(e) => plain_error(e),
    }
}

/// A posted form's fields in order (a ticked box repeats its name).
async fn form_pairs(req: Request<Body>) -> Result<(axum::http::request::Parts, Vec<(String, String)>), Response> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "the form is larger than 1 MiB").into_response());
    };
    match serde_urlencoded::from_bytes(&bytes) {
        Ok(p) => Ok((parts, p)),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("the form could not be read: {e}")).into_response()),
    }
}

pub async fn enable(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    toggle(s, id, true).await
}

pub async fn disable(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    toggle(s, id, false).await
}

async fn toggle(s: AppState, id: String, on: bool) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    match s.mappings.set_enabled(id, on).await {
        Ok(_) => Redirect::to(&format!("/mappings/{id}")).into_response(),
        Err(e) => plain_error(e),
    }
}

pub async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    match s.mappings.delete(id).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => plain_error(e),
    }
}

async fn read_form(req: Request<Body>) -> Result<(axum::http::request::Parts, MappingForm), Response> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "the form is larger than 1 MiB").into_response())?;
    let form = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("the form could not be read: {e}")).into_response())?;
    Ok((parts, form))
}

async fn answer_error(s: &AppState, parts: axum::http::request::Parts, form: MappingForm, e: ServiceError) -> Response {
    let errors = match e {
        ServiceError::Invalid(errs) | ServiceError::Taken(errs) => errs,
        other => return plain_error(other),
    };
    render_with(s, parts, PostedForm { values: form, errors }).await
}

/// Renders the page the form came from, with `posted` in context.
async fn render_with<T: Clone + Send + Sync + 'static>(
    s: &AppState,
    mut parts: axum::http::request::Parts,
    posted: T,
) -> Response {
    let backend = s.backend.clone();
    let options = s.leptos_options.clone();
    let render = leptos_axum::render_app_async_with_context(
        move || {
            provide_context(backend.clone());
            provide_context(posted.clone());
        },
        move || sluice_app::shell(options.clone()),
    );
    // The page is the one the form came from: render it as if it were a GET.
    parts.method = Method::GET;
    render(Request::from_parts(parts, Body::empty())).await
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html("<h1>No such mapping</h1><p><a href=\"/\">Back to the mappings</a></p>"))
        .into_response()
}

fn plain_error(e: ServiceError) -> Response {
    match e {
        ServiceError::NotFound(_) => not_found(),
        other => {
            tracing::error!("form request failed: {other:#}");
            let msg = html_escape(&other.to_string());
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(format!("<h1>Not saved</h1><p>{msg}</p><p><a href=\"/\">Back</a></p>")),
            )
                .into_response()
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(serde::Deserialize, Default)]
struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

/// The console's "Make token" form: the tokens page again, with the new
/// token's secrets shown this once (never cached), or why it was not made.
pub async fn create_token(State(s): State<AppState>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response();
    };
    let form: TokenForm = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let who = parts.extensions.get::<Session>().map(|w| w.user.clone()).unwrap_or_default();
    let mut posted = PostedToken { name: form.name.clone(), role: form.role.clone(), ..Default::default() };
    if let Err(m) = crate::auth::check_username(&form.name) {
        posted.errors.push(FieldError::new("Name", m));
    }
    let role = Role::parse(&form.role);
    if role.is_none() {
        posted.errors.push(FieldError::new("Role", "one of viewer, operator, admin"));
    }
    if let (true, Some(role)) = (posted.errors.is_empty(), role) {
        match s.mappings.auth().create_token(&form.name, role, &who).await {
            Ok(t) => {
                posted.made = Some(MadeToken {
                    name: form.name.clone(),
                    role,
                    token: t.token,
                    access_key_id: t.access_key_id,
                    secret_access_key: t.secret_access_key,
                });
                posted.name.clear();
            }
            Err(e) => posted.errors.push(FieldError::new("Name", format!("{e:#}"))),
        }
    }
    let made = posted.made.as_ref().map(|m| m.role);
    let mut res = render_with(&s, parts, posted).await;
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    if let Some(role) = made {
        res.extensions_mut().insert(AuditTarget(format!("token:{}", form.name)));
        res.extensions_mut().insert(AuditDetail(format!("created with role {}", role.as_str())));
    } else {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    res
}

/// The console's "Revoke" button.
pub async fn delete_token(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.mappings.auth().delete_token(&name).await {
        Ok(_) => Redirect::to("/tokens").into_response(),
        Err(e) => plain_error(ServiceError::Internal(e)),
    }
}
