//! Security headers on every answer. The Content-Security-Policy lets only
//! this site's own files and the inline scripts carrying this response's
//! nonce run (Leptos's hydration script and its serialized resources take
//! it from the request, see `sluice_app::api::backend::provide_nonce`), so
//! markup that slipped through escaping still cannot run script.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use sluice_app::api::backend::CspNonce;

/// The policy for a response whose inline scripts carry `nonce`.
pub fn policy(nonce: &str) -> String {
    [
        "default-src 'self'",
        // 'wasm-unsafe-eval': compiling the console's WebAssembly module.
        &format!("script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'"),
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    .join("; ")
}

pub async fn security_headers(mut req: Request, next: Next) -> Response {
    let nonce = crate::secrets::random_token(18);
    req.extensions_mut().insert(CspNonce(nonce.clone()));
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy(&nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    res
}

/// AWS's error headers on every API error: `x-amzn-ErrorType` (the body's
/// `Type`), which the AWS SDKs read before the body, and `x-amzn-RequestId`.
pub async fn aws_error_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    if super::guard::aws_path(req.uri().path()) {
        // Lambda's own paths set their error type; every answer has an id.
        let mut res = next.run(req).await;
        if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            res.headers_mut().insert("x-amzn-requestid", v);
        }
        return res;
    }
    let res = next.run(req).await;
    let json = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || !json || !(res.status().is_client_error() || res.status().is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // Error bodies are a few hundred bytes; a limit only guards the buffer.
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let kind = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("Type").and_then(|t| t.as_str()).map(String::from));
    if let Some(v) = kind.and_then(|k| HeaderValue::from_str(&k).ok()) {
        parts.headers.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        parts.headers.insert("x-amzn-requestid", v);
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
