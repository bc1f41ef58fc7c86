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
