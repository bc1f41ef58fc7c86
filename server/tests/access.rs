//! Access control, walked over every route: the routes are read from the
//! router's source (`.route(...)` calls, the console's pages) and the
//! server functions from Leptos's registry, so a route added later is
//! covered without touching this file. Without a session or token nothing
//! changes state, a viewer changes nothing, a cookie without the CSRF token
//! is refused, and secrets (passwords, tokens) appear in no answer and no
//! log line.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::http::Method;
use leptos::prelude::LeptosOptions;
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use sluice_server::http::guard::{changes, need, Need};
use sluice_server::http::{router, AppState};
use sluice_server::service::MappingService;
use sluice_server::store::Store;

const ADMIN_PASSWORD: &str = "first-admin-password-1";
const BOOTSTRAP: &str = "bootstrap-token-for-tests-0123456789";

struct Server {
    url: String,
    mappings: std::sync::Arc<MappingService>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = common::database_url(dir.path()).await;
    let mappings = MappingService::new(Store::open(&db).await.unwrap());
    mappings.auth().bootstrap(Some(ADMIN_PASSWORD), Some(BOOTSTRAP)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = LeptosOptions::builder().output_name("sluice").site_root(dir.path().display().to_string()).site_pkg_dir("pkg").site_addr(addr).build();
    let app = router(AppState::new(options, mappings.clone()), sluice_server::demo::routes());
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap() });
    Server { url: format!("http://{addr}"), mappings, _dir: dir }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Every (method, path) the server answers: `.route("path", get(..).post(..))`
/// in the HTTP modules, the console's pages, and the server functions.
fn every_route() -> BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeSet::new();
    let mut sources = vec![root.join("src/demo.rs")];
    for e in std::fs::read_dir(root.join("src/http")).unwrap() {
        sources.push(e.unwrap().path());
    }
    for f in sources {
        let text = std::fs::read_to_string(&f).unwrap();
        for chunk in text.split(".route(\"").skip(1) {
            let (path, rest) = chunk.split_once('"').unwrap();
            // The handler expression runs to the end of the call: up to the
            // next `.route(` or the end of the statement.
            let call = rest.split(".route(").next().unwrap().split(";\n").next().unwrap().split("\n}").next().unwrap();
            for m in ["get", "post", "put", "patch", "delete"] {
                if call.contains(&format!(" {m}(")) || call.contains(&format!(".{m}(")) || call.contains(&format!("({m}(")) {
                    out.insert((m.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    let lib = std::fs::read_to_string(root.join("../app/src/lib.rs")).unwrap();
    for chunk in lib.split("path!(\"").skip(1) {
        out.insert(("GET".into(), chunk.split_once('"').unwrap().0.replace(":id", "{id}")));
    }
    for (path, method) in leptos::server_fn::axum::server_fn_paths() {
        out.insert((method.as_str().to_string(), path.to_string()));
    }
    out
}

async fn call(c: &reqwest::Client, base: &str, method: &str, path: &str, auth: Auth<'_>, body: Option<Value>, form: Option<&[(&str, &str)]>) -> (u16, String) {
    let mut r = c.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"));
    match auth {
        Auth::None => {}
        Auth::Bearer(t) => r = r.bearer_auth(t),
        Auth::Cookie(c, csrf) => {
            r = r.header("cookie", format!("sluice_session={c}"));
            if let Some(t) = csrf {
                r = r.header("x-csrf-token", t);
            }
        }
    }
    if let Some(f) = form {
        r = r.form(f);
    } else if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    } else if method != "GET" {
        r = r.header("content-type", "application/json").body("{}");
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str, Option<&'a str>),
}

/// Signs in through the form; returns the cookie's secret and the CSRF token.
async fn sign_in(s: &Server, user: &str, password: &str) -> (String, String) {
    let r = client().post(format!("{}/login", s.url)).form(&[("username", user), ("password", password), ("next", "/")]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    let secret = cookie.split(';').next().unwrap().trim_start_matches("sluice_session=").to_string();
    let who = s.mappings.auth().session(&secret).await.unwrap().expect("the session exists");
    (secret, who.csrf)
}

fn mapping() -> Value {
    json!({
        "FunctionName": "http://127.0.0.1:9/fn",
        "Topics": ["orders"],
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:9"]}},
        "StartingPosition": "TRIM_HORIZON",
        "Enabled": false,
    })
}

#[tokio::test]
async fn no_route_changes_state_without_the_right_role_and_csrf_token() {
    let s = start().await;
    let c = client();
    let admin = Auth::Bearer(BOOTSTRAP);
    let (st, body) = call(&c, &s.url, "POST", "/api/v1/mappings", admin, Some(mapping()), None).await;
    assert_eq!(st, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["UUID"].as_str().unwrap().to_string();
    let (st, body) = call(&c, &s.url, "POST", "/api/v1/tokens", admin, Some(json!({"Name": "ro", "Role": "viewer"})), None).await;
    assert_eq!(st, 201, "{body}");
    let viewer_token = serde_json::from_str::<Value>(&body).unwrap()["Token"].as_str().unwrap().to_string();
    let (st, _) = call(&c, &s.url, "POST", "/api/v1/users", admin, Some(json!({"Username": "olga", "Password": "operator-password-1", "Role": "operator"})), None).await;
    assert_eq!(st, 201);
    let (st, _) = call(&c, &s.url, "POST", "/api/v1/users", admin, Some(json!({"Username": "vic", "Password": "viewer-password-12", "Role": "viewer"})), None).await;
    assert_eq!(st, 201);
    let (op_cookie, op_csrf) = sign_in(&s, "olga", "operator-password-1").await;
    let (viewer_cookie, viewer_csrf) = sign_in(&s, "vic", "viewer-password-12").await;

    let routes = every_route();
    // Spot checks that the walk found what it must (so it cannot pass empty).
    for r in [("PATCH", "/api/v1/mappings/{id}"), ("POST", "/mappings/{id}/reset"), ("POST", "/api/get_mapping"), ("GET", "/mappings/{id}/edit"), ("DELETE", "/api/v1/users/{name}")] {
        assert!(routes.contains(&(r.0.to_string(), r.1.to_string())), "{r:?} not found among {routes:?}");
    }
    let public: BTreeSet<String> = routes.iter().filter(|(m, p)| need(&Method::from_bytes(m.as_bytes()).unwrap(), p) == Need::Public).map(|(m, p)| format!("{m} {p}")).collect();
    assert_eq!(
        public,
        ["GET /healthz", "GET /login", "GET /readyz", "POST /demo/function", "POST /login"].into_iter().map(String::from).collect(),
        "the routes anyone may call"
    );

    let concrete = |p: &str| p.replace("{id}", &id).replace("{name}", "vic");
    let mut changing = 0;
    for (m, p) in &routes {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        if need(&method, p) == Need::Public {
            continue;
        }
        let path = concrete(p);
        // Nobody: never an answer, only 401 (or, for a page, the sign-in page).
        let (st, body) = call(&c, &s.url, m, &path, Auth::None, None, None).await;
        assert!(st == 401 || (m == "GET" && st == 303), "{m} {p} answered {st} without credentials: {body}");
        // A wrong token is no token.
        let (st, _) = call(&c, &s.url, m, &path, Auth::Bearer("slc_not-a-token"), None, None).await;
        assert_eq!(st, 401, "{m} {p} with a wrong token");
        // Signing out is every role's (and ends the session the walk uses).
        if !changes(&method, p) || p == "/logout" {
            continue;
        }
        changing += 1;
        // A viewer, by token or by session with its CSRF token: refused.
        let (st, body) = call(&c, &s.url, m, &path, Auth::Bearer(&viewer_token), None, None).await;
        assert_eq!(st, 403, "{m} {p} let a viewer token through: {body}");
        let (st, _) = call(&c, &s.url, m, &path, Auth::Cookie(&viewer_cookie, Some(&viewer_csrf)), None, None).await;
        assert_eq!(st, 403, "{m} {p} let a viewer session through");
        // An operator's cookie without the CSRF token (header or form field),
        // or with another session's: refused (admin routes refuse the role first).
        for csrf in [None, Some(viewer_csrf.as_str())] {
            let (st, body) = call(&c, &s.url, m, &path, Auth::Cookie(&op_cookie, csrf), None, None).await;
            assert_eq!(st, 403, "{m} {p} without its CSRF token: {body}");
        }
        let (st, _) = call(&c, &s.url, m, &path, Auth::Cookie(&op_cookie, None), None, Some(&[("csrf", "wrong"), ("Enabled", "on")])).await;
        assert_eq!(st, 403, "{m} {p} with a wrong form CSRF field");
    }
    println!("{} routes walked, {changing} of them change state", routes.len());
    assert!(changing >= 15, "only {changing} state-changing routes found");

    // Nothing changed: the mapping is there as created, users and tokens as made.
    let (_, body) = call(&c, &s.url, "GET", &format!("/api/v1/mappings/{id}"), admin, None, None).await;
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["State"], "Disabled", "{m}");
    let (_, body) = call(&c, &s.url, "GET", "/api/v1/users", admin, None, None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["Users"].as_array().unwrap().len(), 3);
    let resets = s.mappings.resets(uuid::Uuid::parse_str(&id).unwrap()).await.unwrap();
    assert!(resets.is_empty());

    // With the token, the operator's changes go through and are audited by name.
    let (st, body) = call(&c, &s.url, "POST", &format!("/mappings/{id}/enable"), Auth::Cookie(&op_cookie, None), None, Some(&[("csrf", &op_csrf)])).await;
    assert_eq!(st, 303, "{body}");
    let (st, _) = call(&c, &s.url, "PATCH", &format!("/api/v1/mappings/{id}"), Auth::Cookie(&op_cookie, Some(&op_csrf)), Some(json!({"BatchSize": 7})), None).await;
    assert_eq!(st, 200);
    let (st, body) = call(&c, &s.url, "GET", "/api/v1/audit", Auth::Bearer(&viewer_token), None, None).await;
    assert_eq!(st, 403, "viewers do not read the audit log: {body}");
    let (_, body) = call(&c, &s.url, "GET", "/api/v1/audit", admin, None, None).await;
    let log: Value = serde_json::from_str(&body).unwrap();
    let entries = log["Entries"].as_array().unwrap();
    let by_olga: Vec<&str> = entries.iter().filter(|e| e["Actor"] == "olga").map(|e| e["Action"].as_str().unwrap()).collect();
    assert!(by_olga.contains(&format!("POST /mappings/{id}/enable").as_str()), "{by_olga:?}");
    assert!(by_olga.contains(&format!("PATCH /api/v1/mappings/{id}").as_str()), "{by_olga:?}");
    let patch = entries.iter().find(|e| e["Actor"] == "olga" && e["Action"].as_str().unwrap().starts_with("PATCH")).unwrap();
    assert!(patch["Detail"].as_str().unwrap().contains("BatchSize"), "the audit says what changed: {patch}");
    // Refused attempts are not changes: none audited for the viewer.
    assert!(!entries.iter().any(|e| e["Actor"] == "token:ro" || (e["Actor"] == "vic" && e["Action"] != "POST /login")), "{entries:?}");
}

#[tokio::test]
async fn sign_in_is_rate_limited_and_secrets_never_come_back() {
    let s = start().await;
    let c = client();
    // Five wrong passwords, then even the right one is refused for a while.
    for _ in 0..5 {
        let r = c.post(format!("{}/login", s.url)).form(&[("username", "admin"), ("password", "wrong-password-123")]).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert!(r.headers().get("set-cookie").is_none());
        assert!(r.headers()["location"].to_str().unwrap().contains("Wrong"));
    }
    let r = c.post(format!("{}/login", s.url)).form(&[("username", "admin"), ("password", ADMIN_PASSWORD)]).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none(), "signed in while rate-limited");
    assert!(r.headers()["location"].to_str().unwrap().contains("Too%20many"), "{:?}", r.headers()["location"]);
    assert!(r.headers().get("retry-after").is_some());

    // A password and a token secret appear in no answer.
    let token = {
        let (st, body) = call(&c, &s.url, "POST", "/api/v1/tokens", Auth::Bearer(BOOTSTRAP), Some(json!({"Name": "ci", "Role": "operator"})), None).await;
        assert_eq!(st, 201);
        serde_json::from_str::<Value>(&body).unwrap()["Token"].as_str().unwrap().to_string()
    };
    let pw = "a-password-nobody-sees-9";
    let (st, _) = call(&c, &s.url, "POST", "/api/v1/users", Auth::Bearer(BOOTSTRAP), Some(json!({"Username": "sam", "Password": pw, "Role": "viewer"})), None).await;
    assert_eq!(st, 201);
    let (cookie, _) = sign_in(&s, "sam", pw).await;
    let mut seen = String::new();
    for path in ["/api/v1/users", "/api/v1/tokens", "/api/v1/audit", "/", "/audit", "/nodes", "/api/v1/whoami"] {
        for auth in [Auth::Bearer(BOOTSTRAP), Auth::Bearer(&token), Auth::Cookie(&cookie, None)] {
            seen += &call(&c, &s.url, "GET", path, auth, None, None).await.1;
        }
    }
    assert!(seen.contains("\"ci\"") && seen.contains("sam"), "the listings were read");
    for secret in [pw, token.as_str(), ADMIN_PASSWORD, BOOTSTRAP, cookie.as_str()] {
        assert!(!seen.contains(secret), "an answer contains a secret");
    }
    // The database holds digests only.
    let pool = s.mappings.store().pool();
    for (table, cols) in [
        ("users", "username || password || role"),
        ("sessions", "token_hash || username || csrf"),
        ("api_tokens", "token_hash || name || role || created_by"),
        ("audit_log", "actor || action || target || detail"),
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {cols} FROM {table}")).fetch_all(pool).await.unwrap();
        assert!(!rows.is_empty(), "{table} has rows");
        for secret in [pw, token.as_str(), ADMIN_PASSWORD, BOOTSTRAP, cookie.as_str()] {
            assert!(!rows.iter().any(|r| r.contains(secret)), "{table} stores a secret");
        }
    }
}

#[tokio::test]
async fn markup_in_names_is_escaped_and_sql_is_text() {
    let s = start().await;
    let c = client();
    let script = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    let sql = "x'); DROP TABLE mappings; --";
    let mut m = mapping();
    m["Name"] = json!("orders-'; DROP TABLE users; --");
    m["Description"] = json!(format!("{script} {sql}"));
    let (st, body) = call(&c, &s.url, "POST", "/api/v1/mappings", Auth::Bearer(BOOTSTRAP), Some(m), None).await;
    assert_eq!(st, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["UUID"].as_str().unwrap().to_string();
    let (_, body) = call(&c, &s.url, "GET", &format!("/api/v1/mappings/{id}"), Auth::Bearer(BOOTSTRAP), None, None).await;
    let back: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(back["Description"], format!("{script} {sql}"), "stored as given");
    assert_eq!(back["Name"], "orders-'; DROP TABLE users; --");
    for page in [format!("/mappings/{id}"), "/".to_string(), format!("/mappings/{id}/edit")] {
        let (st, html) = call(&c, &s.url, "GET", &page, Auth::Bearer(BOOTSTRAP), None, None).await;
        assert_eq!(st, 200, "{page}");
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{page} carries the markup unescaped");
    }
    let (_, html) = call(&c, &s.url, "GET", &format!("/mappings/{id}"), Auth::Bearer(BOOTSTRAP), None, None).await;
    assert!(html.contains("&lt;script&gt;alert"), "the description is shown, escaped");
    // The tables are all there.
    let (st, _) = call(&c, &s.url, "GET", "/api/v1/users", Auth::Bearer(BOOTSTRAP), None, None).await;
    assert_eq!(st, 200);
}
