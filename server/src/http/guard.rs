//! The access guard in front of every route: who is asking (session cookie
//! or `Authorization: Bearer` token), whether their role allows the request,
//! the CSRF token on every state-changing request made with a cookie, and
//! an audit log entry for every change. Also sign-in, sign-out and the admin
//! API for users and tokens.

use std::net::SocketAddr;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_app::model::{AuditEntry, Role, Session};

use super::AppState;
use crate::auth::{
    check_password, check_username, SignInError, DEVICE_COOKIE, DEVICE_TTL, SESSION_COOKIE, SESSION_TTL,
};

/// What a request needs.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Need {
    /// Anyone: health, sign-in, static assets, the demo's own function.
    Public,
    Role(Role),
}

/// The policy, in one place (the access test walks every route through it).
pub fn need(method: &Method, path: &str) -> Need {
    if matches!(path, "/healthz" | "/readyz" | "/login" | "/demo/function") || path.starts_with("/pkg/") {
        return Need::Public;
    }
    if path.starts_with("/api/v1/users")
        || path.starts_with("/api/v1/tokens")
        || path == "/tokens"
        || path.starts_with("/tokens/")
    {
        return Need::Role(Role::Admin);
    }
    if path == "/logout" {
        return Need::Role(Role::Viewer);
    }
    // Records' contents (the filter tester's samples, a failed record) are for operators.
    if path == "/api/v1/audit"
        || path == "/api/v1/filters/test"
        || path == "/api/sample_records"
        || path == "/api/failed_record"
        || (path.starts_with("/api/v1/mappings/") && path.ends_with("/failures/record"))
    {
        return Need::Role(Role::Operator);
    }
    if reads(method, path) {
        Need::Role(Role::Viewer)
    } else {
        Need::Role(Role::Operator)
    }
}

/// Requests that change nothing: GETs, and the console's server functions
/// (POSTs by Leptos's convention, every one of them a read).
fn reads(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (path.starts_with("/api/") && !path.starts_with("/api/v1/"))
}

/// Requests that change state: they need the CSRF token (with a cookie)
/// and are written to the audit log. Testing filters computes only.
pub fn changes(method: &Method, path: &str) -> bool {
    !reads(method, path) && path != "/api/v1/filters/test" && path != "/login"
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

use crate::secrets::constant_time_eq as equal;

fn api_like(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics" || aws_path(path)
}

/// AWS Lambda's own REST paths (the AWS CLI, SDKs and Terraform).
pub fn aws_path(path: &str) -> bool {
    path.starts_with("/2015-03-31/") || path.starts_with("/2017-03-31/")
}

fn signed(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes().starts_with(b"AWS4-HMAC-SHA256 "))
}

/// Who signed a SigV4 request (a token's key pair), and the request with
/// its body put back (the signature covers the body, so it is read first).
/// Refused: AWS's error, and who it was when the key was known.
async fn sigv4_session(s: &AppState, req: Request) -> Result<(Session, Request), (Response, Option<String>)> {
    use crate::sigv4::{self, SigV4Error};
    let path = req.uri().path().to_string();
    let deny = |kind: &str, m: String| refuse(StatusCode::FORBIDDEN, &path, kind, m);
    let (parts, body) = req.into_parts();
    // Mapping definitions are a few kB (certificates included).
    let Ok(bytes) = to_bytes(body, 4 << 20).await else {
        return Err((
            refuse(StatusCode::PAYLOAD_TOO_LARGE, &path, "RequestTooLargeException", "the body is over 4 MB".into()),
            None,
        ));
    };
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the URI's authority.
        if let Some(a) = parts.uri.authority() {
            headers.push(("host".into(), a.to_string()));
        }
    }
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = sigv4::access_key_id(authorization).unwrap_or("");
    let found = match s.mappings.auth().key_pair(key).await {
        Ok(f) => f,
        Err(e) => {
            return Err((refuse(StatusCode::SERVICE_UNAVAILABLE, &path, "ServiceException", format!("{e:#}")), None))
        }
    };
    let (secret, who, handle) = match found {
        Some((secret, who, handle)) => (Some(secret), Some(who), handle),
        None => (None, None, String::new()),
    };
    let checked = sigv4::verify(
        &sigv4::Request {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body: &bytes,
        },
        crate::clock::now_ms(),
        |_| secret,
    );
    let actor = who.as_ref().map(|w| w.user.clone());
    let signer = match checked {
        Ok(signer) => signer,
        Err(e) => {
            let kind = match e {
                SigV4Error::NotSigned | SigV4Error::Malformed(_) => "IncompleteSignatureException",
                SigV4Error::UnknownKey => "UnrecognizedClientException",
                SigV4Error::Skewed | SigV4Error::Mismatch => "InvalidSignatureException",
            };
            return Err((deny(kind, e.to_string()), actor));
        }
    };
    if signer.service != "lambda" {
        let m = format!("Credential should be scoped to correct service: 'lambda', not '{}'", signer.service);
        return Err((deny("InvalidSignatureException", m), actor));
    }
    let who = who.expect("a verified signature has a known key");
    s.mappings.auth().touch(&handle).await;
    Ok((who, Request::from_parts(parts, Body::from(bytes))))
}

fn refuse(status: StatusCode, path: &str, kind: &str, message: String) -> Response {
    if aws_path(path) {
        return super::aws_api::error(status, kind, message);
    }
    let mut r = if api_like(path) {
        (status, Json(json!({"Type": kind, "Message": message}))).into_response()
    } else {
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    }
    r
}

/// The path as the router will read it: percent-decoded (Leptos's router
/// decodes), so the policy judges what is served. None: a path with `.` or
/// `..` segments, backslashes or control characters, refused outright.
pub fn canonical(path: &str) -> Option<String> {
    let d = percent_encoding::percent_decode_str(path).decode_utf8().ok()?;
    if d.chars().any(|c| c.is_control() || c == '\\') || d.split('/').any(|seg| seg == "." || seg == "..") {
        return None;
    }
    Some(d.into_owned())
}

/// At most this many refused anonymous requests a minute reach the audit
/// log (the rest are logged only): they cost an attacker nothing. A signed-in
/// caller's refusals are always audited.
const REFUSALS_AUDITED_PER_MINUTE: u64 = 120;
static REFUSALS: std::sync::Mutex<(i64, u64)> = std::sync::Mutex::new((0, 0));

fn refusal_budget() -> bool {
    let minute = crate::clock::now_ms() / 60_000;
    let mut r = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    if r.0 != minute {
        *r = (minute, 0);
    }
    r.1 += 1;
    r.1 <= REFUSALS_AUDITED_PER_MINUTE
}

/// An audit log entry stamped now.
fn audit_entry(actor: &str, action: String, target: String, status: u16, detail: String) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::new_v4().to_string(),
        time: crate::clock::now_ms(),
        actor: actor.to_string(),
        action,
        target,
        status,
        detail,
    }
}

/// Logs a refused request and audits it (a change, or anything a signed-in
/// caller was refused): who it was, what, why.
async fn refused(s: &AppState, actor: Option<&str>, method: &Method, path: &str, res: Response) -> Response {
    let anonymous = actor.is_none();
    let actor = actor.unwrap_or("(not signed in or an invalid token)");
    let why = match res.status() {
        StatusCode::UNAUTHORIZED => "not signed in or the token is not valid",
        StatusCode::FORBIDDEN => "the role or the CSRF token does not allow it",
        _ => "refused",
    };
    tracing::warn!(actor, %method, path, status = res.status().as_u16(), "request refused: {why}");
    if anonymous && !changes(method, path) {
        return res;
    }
    if !anonymous || refusal_budget() {
        let entry = audit_entry(
            actor,
            format!("{method} {path}"),
            target_of(path),
            res.status().as_u16(),
            format!("refused: {why}"),
        );
        if let Err(e) = s.mappings.auth().audit(&entry).await {
            tracing::error!("cannot write the audit log: {e:#}");
        }
    }
    res
}

pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let Some(path) = canonical(req.uri().path()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            req.uri().path(),
            "InvalidRequestException",
            "the path is not valid".into(),
        );
    };
    let Need::Role(role) = need(&method, &path) else {
        if path == "/login" && method == Method::GET {
            return sign_in_page(req, next).await;
        }
        return next.run(req).await;
    };
    let auth = s.mappings.auth();
    let mut req = req;
    let who = if signed(req.headers()) {
        match sigv4_session(&s, req).await {
            Ok((w, r)) => {
                req = r;
                Some(w)
            }
            Err((r, actor)) => return refused(&s, actor.as_deref(), &method, &path, r).await,
        }
    } else if let Some(t) = bearer(req.headers()) {
        match auth.token(t).await {
            Ok(Some(w)) => Some(w),
            Ok(None) => {
                let r = refuse(
                    StatusCode::UNAUTHORIZED,
                    &path,
                    "UnauthorizedException",
                    "the API token is not valid".into(),
                );
                return refused(&s, None, &method, &path, r).await;
            }
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &path, "ServiceException", format!("{e:#}")),
        }
    } else if let Some(c) = cookie(req.headers(), SESSION_COOKIE) {
        auth.session(&c).await.ok().flatten()
    } else {
        None
    };
    let Some(who) = who else {
        if method == Method::GET && !api_like(&path) {
            let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            return Redirect::to(&format!("/login?next={}", urlencode(next))).into_response();
        }
        let r = if aws_path(&path) {
            refuse(
                StatusCode::FORBIDDEN,
                &path,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token: sign the request with a Sluice API token's key pair (SigV4)".into(),
            )
        } else {
            refuse(
                StatusCode::UNAUTHORIZED,
                &path,
                "UnauthorizedException",
                "sign in, or send Authorization: Bearer <API token>".into(),
            )
        };
        if changes(&method, &path) {
            return refused(&s, None, &method, &path, r).await;
        }
        return r;
    };
    if who.role < role {
        let r = refuse(
            StatusCode::FORBIDDEN,
            &path,
            "AccessDeniedException",
            format!("{} has the {} role; this needs {}", who.user, who.role.as_str(), role.as_str()),
        );
        return refused(&s, Some(&who.user), &method, &path, r).await;
    }
    let changing = changes(&method, &path);
    if changing && !who.csrf.is_empty() {
        let (ok, r) = csrf_ok(req, &who.csrf).await;
        req = r;
        if !ok {
            let r = refuse(
                StatusCode::FORBIDDEN,
                &path,
                "CsrfException",
                "the request has no valid CSRF token: reload the page and try again".into(),
            );
            return refused(&s, Some(&who.user), &method, &path, r).await;
        }
    }
    req.extensions_mut().insert(who.clone());
    let target = target_of(&path);
    // A mapping's settings before the change, to say what it changed.
    let mapping = uuid::Uuid::parse_str(&target).ok().filter(|_| changing);
    let before = match mapping {
        Some(id) => s.mappings.get(id).await.ok().and_then(|m| serde_json::to_value(&m.spec).ok()),
        None => None,
    };
    let res = next.run(req).await;
    if changing {
        let mut detail = res.extensions().get::<AuditDetail>().map(|d| d.0.clone()).unwrap_or_default();
        let mut target = target;
        let mut mapping = mapping;
        if let Some(t) = res.extensions().get::<AuditTarget>() {
            target = t.0.clone();
        } else if target.is_empty() && res.status().as_u16() < 400 {
            // A creation names what it made in its Location.
            if let Some(made) = res
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(target_of)
                .filter(|t| !t.is_empty())
            {
                mapping = uuid::Uuid::parse_str(&made).ok();
                target = made;
            }
        }
        if let (Some(id), true) = (mapping, detail.is_empty() && res.status().as_u16() < 400) {
            let after = s.mappings.get(id).await.ok().and_then(|m| serde_json::to_value(&m.spec).ok());
            detail = spec_diff(before.as_ref(), after.as_ref());
        }
        let entry = audit_entry(&who.user, format!("{method} {path}"), target, res.status().as_u16(), detail);
        if let Err(e) = auth.audit(&entry).await {
            tracing::error!("cannot write the audit log: {e:#}");
        }
    }
    res
}

/// The settings a change altered, as `Field: old → new`.
pub fn spec_diff(before: Option<&serde_json::Value>, after: Option<&serde_json::Value>) -> String {
    let empty = serde_json::Map::new();
    let (b, a) =
        (before.and_then(|v| v.as_object()).unwrap_or(&empty), after.and_then(|v| v.as_object()).unwrap_or(&empty));
    if before.is_some() && after.is_none() {
        return "deleted".into();
    }
    let show = |v: Option<&serde_json::Value>| {
        let t = v.map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
        if t.chars().count() > 120 {
            format!("{}…", t.chars().take(120).collect::<String>())
        } else {
            t
        }
    };
    if before.is_none() && after.is_some() {
        let set: Vec<String> =
            a.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}: {}", show(Some(v)))).collect();
        return format!("created; {}", set.join("; "));
    }
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| format!("{k}: {} → {}", show(b.get(k)), show(a.get(k))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a handler says changed, for the audit log (never secrets).
#[derive(Clone)]
pub struct AuditDetail(pub String);

/// What a handler's change was made to, when the path does not say (a creation).
#[derive(Clone)]
pub struct AuditTarget(pub String);

/// The mapping, user or token a path names.
fn target_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["mappings", id, ..] | ["api", "v1", "mappings", id, ..] if *id != "new" => id.to_string(),
        ["api", "v1", "users", name, ..] => format!("user:{name}"),
        ["api", "v1", "tokens", name, ..] | ["tokens", name, ..] => format!("token:{name}"),
        ["2015-03-31", "event-source-mappings", id] => id.to_string(),
        ["2017-03-31", "tags", arn] => crate::aws::ArnScope::mapping_of(arn).map(|u| u.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The CSRF token from `X-CSRF-Token`, or from a form's `csrf` field (the
/// body is read and put back).
async fn csrf_ok(req: Request, want: &str) -> (bool, Request) {
    if let Some(h) = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return (equal(h, want), req);
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return (false, req);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, 4 << 20).await else {
        return (false, Request::from_parts(parts, Body::empty()));
    };
    let ok = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .map(|kv| kv.iter().any(|(k, v)| k == "csrf" && equal(v, want)))
        .unwrap_or(false);
    (ok, Request::from_parts(parts, Body::from(bytes)))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to send the browser after sign-in: `next` if it is a path on this
/// site, else `/`. Parsed as a browser would (WHATWG URL, against a stand-in
/// origin), so `/%09/evil`, `/\\evil` or `//evil` cannot name another host;
/// control characters and backslashes are refused outright.
pub fn local(next: &str) -> String {
    const BASE: &str = "http://sluice.invalid/";
    // Decoding keeps raw characters, so this sees raw and encoded ones alike.
    let decoded = percent_encoding::percent_decode_str(next).decode_utf8_lossy();
    if !next.starts_with('/') || decoded.starts_with("//") || decoded.chars().any(|c| c.is_control() || c == '\\') {
        return "/".into();
    }
    let Ok(base) = url::Url::parse(BASE) else { return "/".into() };
    match base.join(next) {
        Ok(u) if u.origin() == base.origin() && !u.path().starts_with("//") => {
            let mut out = u.path().to_string();
            if let Some(q) = u.query() {
                out += &format!("?{q}");
            }
            out
        }
        _ => "/".into(),
    }
}

#[derive(Deserialize, Default)]
struct SignIn {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

/// The sign-in form's CSRF cookie (double submit: the form carries the same
/// value), so another site cannot sign a browser in as its own user.
pub const LOGIN_CSRF_COOKIE: &str = "sluice_login_csrf";

/// A user name as the audit log and the log show an attempt's: as typed
/// when it could be one, else a placeholder (it is attacker's text).
fn attempted(name: &str) -> String {
    if check_username(name).is_ok() {
        name.to_string()
    } else {
        "(not a valid user name)".into()
    }
}

/// The sign-in form's post: a session cookie and back to `next`, or the
/// form again with the reason (as a code). Every failure is logged and
/// audited; so is a wait a failure starts (the refused attempts during a
/// wait are logged only, so a flood cannot fill the audit log).
async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), 64 << 10).await.unwrap_or_default();
    let f: SignIn = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let client = connect.map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let next = local(&f.next);
    let user = f.username.trim().to_string();
    let shown = attempted(&user);
    let back = |code: &str, extra: &str| {
        Redirect::to(&format!("/login?error={code}{extra}&next={}&username={}", urlencode(&next), urlencode(&user)))
            .into_response()
    };
    let auth = s.mappings.auth();
    let audit = |status: u16, detail: String| {
        let entry = audit_entry(&shown, "POST /login".into(), format!("user:{shown}"), status, detail);
        async move {
            if let Err(e) = auth.audit(&entry).await {
                tracing::error!("cannot write the audit log: {e:#}");
            }
        }
    };
    let token = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if token.is_empty() || !equal(&token, &f.csrf) {
        tracing::warn!(user = %shown, client = %client, "sign-in refused: no valid CSRF token");
        audit(403, format!("refused from {client}: the sign-in form's CSRF token was missing or wrong")).await;
        return back("csrf", "");
    }
    let device = cookie(&headers, DEVICE_COOKIE);
    match auth.sign_in(&user, &f.password, &client, device.as_deref()).await {
        Ok(signed) => {
            audit(303, format!("signed in from {client}")).await;
            tracing::info!(user = %signed.session.user, client = %client, "signed in");
            let mut r = Redirect::to(&next).into_response();
            let h = r.headers_mut();
            h.append(header::SET_COOKIE, session_cookie(&signed.secret, SESSION_TTL.as_secs()).parse().unwrap());
            h.append(header::SET_COOKIE, device_cookie(&signed.device_cookie).parse().unwrap());
            h.append(header::SET_COOKIE, login_csrf_cookie("", "; Max-Age=0").parse().unwrap());
            r
        }
        Err(SignInError::Limited(l)) => {
            let secs = l.wait.as_secs().max(1);
            tracing::warn!(user = %shown, client = %client, scope = l.scope, wait_s = secs, "sign-in refused: throttled");
            let mut r = back("limited", &format!("&retry={secs}"));
            r.headers_mut().insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            r
        }
        Err(SignInError::Invalid(started)) => {
            let mut detail = format!("wrong user name or password from {client}");
            if let Some(l) = &started {
                detail += &format!("; sign-ins of {} now wait {} s", l.scope, l.wait.as_secs().max(1));
            }
            tracing::warn!(user = %shown, client = %client, "sign-in failed: {detail}");
            audit(401, detail).await;
            back("invalid", "")
        }
        Err(e @ SignInError::Internal(_)) => {
            tracing::error!("sign-in failed: {e}");
            back("unavailable", "")
        }
    }
}

fn device_cookie(value: &str) -> String {
    format!(
        "{DEVICE_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={}{}",
        DEVICE_TTL.as_secs(),
        secure()
    )
}

/// The sign-in form's CSRF cookie; `extra`: more attributes.
fn login_csrf_cookie(value: &str, extra: &str) -> String {
    format!("{LOGIN_CSRF_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict{extra}{}", secure())
}

/// `; Secure` when the operator says the console is served over HTTPS.
fn secure() -> &'static str {
    if std::env::var("SLUICE_SECURE_COOKIES").is_ok_and(|v| v == "1" || v == "true") {
        "; Secure"
    } else {
        ""
    }
}

/// GET /login: the page, with a CSRF token for its form (a new one when the
/// browser has none yet).
async fn sign_in_page(req: Request, next: Next) -> Response {
    let have = cookie(req.headers(), LOGIN_CSRF_COOKIE)
        .filter(|t| t.len() >= 20 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    let token = have.clone().unwrap_or_else(|| crate::secrets::random_token(24));
    let mut req = req;
    req.extensions_mut().insert(sluice_app::api::backend::LoginCsrf(token.clone()));
    let mut r = next.run(req).await;
    if have.is_none() {
        r.headers_mut().append(header::SET_COOKIE, login_csrf_cookie(&token, "").parse().unwrap());
    }
    r
}

fn session_cookie(secret: &str, max_age: u64) -> String {
    format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}", secure())
}

async fn sign_out(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        let _ = s.mappings.auth().sign_out(&c).await;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0).parse().unwrap());
    r
}

fn bad(field: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"Type": "InvalidParameterValueException", "Message": format!("{field}: {message}"), "Errors": [{"Field": field, "Message": message}]})),
    )
        .into_response()
}

fn internal(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"Type": "ServiceException", "Message": format!("{e:#}")})))
        .into_response()
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"Type": "ResourceNotFoundException", "Message": what}))).into_response()
}

fn with_detail(mut r: Response, detail: String) -> Response {
    r.extensions_mut().insert(AuditDetail(detail));
    r
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UserChange {
    password: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

// The error is the handler's answer as it is sent: boxing it gains nothing.
#[allow(clippy::result_large_err)]
fn role(v: &str) -> Result<Role, Response> {
    Role::parse(v).ok_or_else(|| bad("Role", "one of viewer, operator, admin"))
}

#[allow(clippy::result_large_err)]
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad("", format!("the body is not a valid request: {e}")))
}

async fn list_users(State(s): State<AppState>) -> Response {
    match s.mappings.auth().users().await {
        Ok(u) => Json(json!({"Users": u})).into_response(),
        Err(e) => internal(e),
    }
}

async fn create_user(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let run = async {
        let u: NewUser = parse(&body)?;
        check_username(&u.username).map_err(|e| bad("Username", e))?;
        check_password(&u.password).map_err(|e| bad("Password", e))?;
        let r = role(&u.role)?;
        if s.mappings.auth().user(&u.username).await.map_err(internal)?.is_some() {
            return Err((
                StatusCode::CONFLICT,
                Json(json!({"Type": "ResourceConflictException", "Message": format!("user {} exists", u.username)})),
            )
                .into_response());
        }
        s.mappings.auth().create_user(&u.username, &u.password, r).await.map_err(internal)?;
        let mut res = with_detail(
            (StatusCode::CREATED, Json(json!({"Username": u.username, "Role": r}))).into_response(),
            format!("created with role {}", r.as_str()),
        );
        res.extensions_mut().insert(AuditTarget(format!("user:{}", u.username)));
        Ok(res)
    };
    run.await.unwrap_or_else(|r| r)
}

async fn update_user(State(s): State<AppState>, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    let run = async {
        let c: UserChange = parse(&body)?;
        if let Some(p) = &c.password {
            check_password(p).map_err(|e| bad("Password", e))?;
        }
        let r = c.role.as_deref().map(role).transpose()?;
        if r.is_some_and(|r| r != Role::Admin) && last_admin(&s, &name).await? {
            return Err(bad("Role", "the last admin cannot lose the admin role"));
        }
        if !s.mappings.auth().update_user(&name, c.password.as_deref(), r).await.map_err(internal)? {
            return Err(not_found(format!("no user {name}")));
        }
        let mut changed = Vec::new();
        if let Some(r) = r {
            changed.push(format!("role → {}", r.as_str()));
        }
        if c.password.is_some() {
            changed.push("password changed".into());
        }
        Ok(with_detail(Json(json!({"Username": name})).into_response(), changed.join(", ")))
    };
    run.await.unwrap_or_else(|r| r)
}

async fn last_admin(s: &AppState, name: &str) -> Result<bool, Response> {
    let auth = s.mappings.auth();
    let is_admin = auth.user(name).await.map_err(internal)?.is_some_and(|u| u.role == Role::Admin);
    Ok(is_admin && auth.admins().await.map_err(internal)? <= 1)
}

async fn delete_user(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let run = async {
        if last_admin(&s, &name).await? {
            return Err(bad("Username", "the last admin cannot be deleted"));
        }
        if !s.mappings.auth().delete_user(&name).await.map_err(internal)? {
            return Err(not_found(format!("no user {name}")));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

async fn list_tokens(State(s): State<AppState>) -> Response {
    match s.mappings.auth().tokens().await {
        Ok(t) => Json(json!({"Tokens": t})).into_response(),
        Err(e) => internal(e),
    }
}

async fn create_token(
    State(s): State<AppState>,
    Extension(who): Extension<Session>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let t: NewToken = parse(&body)?;
        check_username(&t.name).map_err(|e| bad("Name", e))?;
        let r = role(&t.role)?;
        let made = s.mappings.auth().create_token(&t.name, r, &who.user).await.map_err(|e| {
            (StatusCode::CONFLICT, Json(json!({"Type": "ResourceConflictException", "Message": format!("{e:#}")})))
                .into_response()
        })?;
        // The only time the secrets are shown.
        let body = json!({"Name": t.name, "Role": r, "Token": made.token,
            "AccessKeyId": made.access_key_id, "SecretAccessKey": made.secret_access_key});
        let mut res =
            with_detail((StatusCode::CREATED, Json(body)).into_response(), format!("created with role {}", r.as_str()));
        res.extensions_mut().insert(AuditTarget(format!("token:{}", t.name)));
        Ok(res)
    };
    run.await.unwrap_or_else(|r| r)
}

async fn delete_token(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.mappings.auth().delete_token(&name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(format!("no token {name}")),
        Err(e) => internal(e),
    }
}

async fn audit(State(s): State<AppState>) -> Response {
    match s.mappings.auth().audit_log(1000).await {
        Ok(a) => Json(json!({"Entries": a})).into_response(),
        Err(e) => internal(e),
    }
}

async fn whoami(Extension(who): Extension<Session>) -> Response {
    Json(json!({"User": who.user, "Role": who.role})).into_response()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", post(sign_in))
        .route("/logout", post(sign_out))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", delete(delete_user).patch(update_user))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", delete(delete_token))
        .route("/api/v1/audit", get(audit))
}
