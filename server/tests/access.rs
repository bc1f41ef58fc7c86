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
    // A timeout turns a hang into a failure that says where.
    reqwest::Client::builder().redirect(Policy::none()).timeout(std::time::Duration::from_secs(60)).build().unwrap()
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

/// The sign-in form's post as a browser makes it: the page first (its CSRF
/// cookie), then the form with that token. `cookies`: more to send.
async fn post_sign_in(s: &Server, user: &str, password: &str, next: &str, cookies: &str) -> reqwest::Response {
    let page = client().get(format!("{}/login", s.url)).send().await.unwrap();
    let set = page.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|c| c.starts_with("sluice_login_csrf=")).expect("a CSRF cookie");
    let token = set.split(';').next().unwrap().trim_start_matches("sluice_login_csrf=").to_string();
    let mut cookie = format!("sluice_login_csrf={token}");
    if !cookies.is_empty() {
        cookie += &format!("; {cookies}");
    }
    client()
        .post(format!("{}/login", s.url))
        .header("cookie", cookie)
        .form(&[("username", user), ("password", password), ("next", next), ("csrf", &token)])
        .send()
        .await
        .unwrap()
}

/// The value of the cookie `name` a response sets.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next()?.strip_prefix(&format!("{name}=")).map(String::from))
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str, Option<&'a str>),
}

/// Signs in through the form; returns the cookie's secret and the CSRF token.
async fn sign_in(s: &Server, user: &str, password: &str) -> (String, String) {
    let r = post_sign_in(s, user, password, "/", "").await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with("sluice_session=")).expect("a session cookie").to_string();
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
    // Refused attempts changed nothing, and each is in the audit log as refused.
    assert!(entries.iter().filter(|e| e["Actor"] == "token:ro" || (e["Actor"] == "vic" && e["Action"] != "POST /login")).all(|e| e["Status"] == 403), "{entries:?}");
    assert!(entries.iter().any(|e| e["Actor"] == "token:ro" && e["Status"] == 403 && e["Detail"].as_str().unwrap().starts_with("refused")), "{entries:?}");
}

#[tokio::test]
async fn sign_in_slows_a_guesser_without_locking_out_the_user_and_audits_it() {
    let s = start().await;
    let c = client();
    // The admin signs in once: the browser gets a device cookie.
    let r = post_sign_in(&s, "admin", ADMIN_PASSWORD, "/", "").await;
    assert_eq!(r.status(), 303);
    let device = set_cookie(&r, "sluice_device").expect("a device cookie");
    // A guesser without it: wrong passwords until the waits begin.
    let mut first_wait = None;
    for i in 0..12 {
        let r = post_sign_in(&s, "admin", "wrong-password-123", "/", "").await;
        assert_eq!(r.status(), 303);
        assert!(set_cookie(&r, "sluice_session").is_none(), "signed in with a wrong password");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        if loc.contains("error=limited") {
            assert!(r.headers().get("retry-after").is_some() && loc.contains("retry="), "{loc}");
            first_wait = Some(i);
            break;
        }
        assert!(loc.contains("error=invalid"), "{loc}");
    }
    // This address signed in as admin before, so its failures count on their
    // own key: 5 free, then growing waits (1 s, 2 s, ...; a loaded machine
    // may take longer than the first between two attempts).
    let first_wait = first_wait.expect("never slowed down");
    assert!((6..=8).contains(&first_wait), "{first_wait}");
    let r = post_sign_in(&s, "admin", ADMIN_PASSWORD, "/", "").await;
    assert!(set_cookie(&r, "sluice_session").is_none(), "the right password during a wait, from the guesser's client");
    // The real user, with the device cookie: straight in.
    let r = post_sign_in(&s, "admin", ADMIN_PASSWORD, "/", &format!("sluice_device={device}")).await;
    assert!(set_cookie(&r, "sluice_session").is_some(), "the admin was locked out: {:?}", r.headers().get("location"));

    // Every failure is audited and logged, and so is the wait it started.
    let (_, body) = call(&c, &s.url, "GET", "/api/v1/audit", Auth::Bearer(BOOTSTRAP), None, None).await;
    let entries: Vec<Value> = serde_json::from_str::<Value>(&body).unwrap()["Entries"].as_array().unwrap().clone();
    let failed: Vec<&Value> = entries.iter().filter(|e| e["Action"] == "POST /login" && e["Status"] == 401 && e["Actor"] == "admin").collect();
    assert_eq!(failed.len(), first_wait, "{entries:?}");
    assert!(failed.iter().all(|e| e["Detail"].as_str().unwrap().contains("from 127.0.0.1")));
    assert!(failed.iter().any(|e| e["Detail"].as_str().unwrap().contains("now wait")), "the wait is audited: {failed:?}");
    assert_eq!(entries.iter().filter(|e| e["Action"] == "POST /login" && e["Status"] == 303).count(), 2);

    // No CSRF token: refused, no session, audited.
    let r = c.post(format!("{}/login", s.url)).form(&[("username", "admin"), ("password", ADMIN_PASSWORD)]).send().await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().contains("error=csrf"));
    assert!(set_cookie(&r, "sluice_session").is_none(), "login CSRF");
}

#[tokio::test]
async fn redirects_stay_on_the_site_and_the_sign_in_page_prints_no_given_text() {
    use sluice_server::http::guard::local;
    for evil in ["/%09/evil.example", "//evil.example", "/\\evil.example", "/\tevil", "https://evil.example/", "/%5Cevil.example", "/%2F/evil.example", "javascript:alert(1)", "", "evil"] {
        assert_eq!(local(evil), "/", "{evil:?}");
    }
    assert_eq!(local("/mappings/x?range=1h"), "/mappings/x?range=1h");
    assert_eq!(local("/a/../b"), "/b");
    let s = start().await;
    let r = post_sign_in(&s, "admin", ADMIN_PASSWORD, "/%09/evil.example", "").await;
    assert_eq!(r.headers()["location"], "/");
    let r = post_sign_in(&s, "admin", ADMIN_PASSWORD, "/mappings?x=1", "").await;
    assert_eq!(r.headers()["location"], "/mappings?x=1");

    // The sign-in page says only what Sluice wrote, whatever the link says.
    let c = client();
    let r = c.get(format!("{}/login?error=Your%20account%20is%20locked.%20Call%20555-0100", s.url)).send().await.unwrap();
    let html = r.text().await.unwrap();
    assert!(!html.contains("555-0100") && html.contains("Sign-in failed."), "{html}");
}

#[tokio::test]
async fn every_answer_has_security_headers_and_odd_paths_are_refused() {
    let s = start().await;
    let c = client();
    for path in ["/login", "/healthz", "/api/v1/mappings", "/"] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        let h = r.headers();
        let csp = h.get("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP")).to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self' 'nonce-") && csp.contains("object-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        if path == "/login" {
            // The page's inline scripts carry this response's nonce, and only it.
            let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap().to_string();
            let html = r.text().await.unwrap();
            let scripts = html.matches("<script").count();
            assert!(scripts >= 1);
            assert_eq!(html.matches(&format!("nonce=\"{nonce}\"")).count(), scripts, "{html}");
        }
    }
    // A path whose decoding names another route is refused, not served.
    // Sent byte for byte (an HTTP client would normalise the dots away first).
    for path in ["/pkg/%2e%2e/mappings/new", "/pkg/..%2Fapi/v1/users", "/pkg/%2E%2E/audit", "/pkg/../audit"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), conn.read_to_string(&mut answer)).await.expect("no answer within 30 s").unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {}", answer.lines().next().unwrap_or(""));
    }
}

#[tokio::test]
async fn tokens_end_with_their_maker_and_a_revoked_bootstrap_token_stays_revoked() {
    let s = start().await;
    let c = client();
    let admin = Auth::Bearer(BOOTSTRAP);
    for (name, role) in [("ada", "admin"), ("bob", "admin")] {
        let (st, _) = call(&c, &s.url, "POST", "/api/v1/users", admin, Some(json!({"Username": name, "Password": "an-admin-password-1", "Role": role})), None).await;
        assert_eq!(st, 201);
    }
    let mut tokens = Vec::new();
    for name in ["ada", "bob"] {
        let (cookie, csrf) = sign_in(&s, name, "an-admin-password-1").await;
        let (st, body) = call(&c, &s.url, "POST", "/api/v1/tokens", Auth::Cookie(&cookie, Some(&csrf)), Some(json!({"Name": format!("{name}-ci"), "Role": "admin"})), None).await;
        assert_eq!(st, 201, "{body}");
        tokens.push(serde_json::from_str::<Value>(&body).unwrap()["Token"].as_str().unwrap().to_string());
    }
    let (st, _) = call(&c, &s.url, "GET", "/api/v1/users", Auth::Bearer(&tokens[0]), None, None).await;
    assert_eq!(st, 200);
    // Ada is deleted: her token goes with her.
    let (st, _) = call(&c, &s.url, "DELETE", "/api/v1/users/ada", admin, None, None).await;
    assert_eq!(st, 204);
    let (st, _) = call(&c, &s.url, "GET", "/api/v1/mappings", Auth::Bearer(&tokens[0]), None, None).await;
    assert_eq!(st, 401, "a deleted admin's token still works");
    // Bob becomes a viewer: his admin token acts as a viewer.
    let (st, _) = call(&c, &s.url, "PATCH", "/api/v1/users/bob", admin, Some(json!({"Role": "viewer"})), None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&c, &s.url, "GET", "/api/v1/mappings", Auth::Bearer(&tokens[1]), None, None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&c, &s.url, "POST", "/api/v1/mappings", Auth::Bearer(&tokens[1]), Some(mapping()), None).await;
    assert_eq!(st, 403, "a demoted admin's token kept the admin role");

    // A creation is audited with what it made; a refusal is audited too.
    let mut m = mapping();
    m["Name"] = json!("audited-one");
    let (st, body) = call(&c, &s.url, "POST", "/api/v1/mappings", admin, Some(m), None).await;
    assert_eq!(st, 201);
    let id = serde_json::from_str::<Value>(&body).unwrap()["UUID"].as_str().unwrap().to_string();
    let (_, body) = call(&c, &s.url, "GET", "/api/v1/audit", admin, None, None).await;
    let entries: Vec<Value> = serde_json::from_str::<Value>(&body).unwrap()["Entries"].as_array().unwrap().clone();
    let made = entries.iter().find(|e| e["Action"] == "POST /api/v1/mappings" && e["Status"] == 201).expect("the creation is audited");
    assert_eq!(made["Target"], id.as_str());
    assert!(made["Detail"].as_str().unwrap().contains("audited-one"), "{made}");
    assert!(entries.iter().any(|e| e["Action"] == "POST /api/v1/users" && e["Target"] == "user:ada"), "user creation names the user");
    assert!(entries.iter().any(|e| e["Actor"] == "token:bob-ci" && e["Status"] == 403), "the refusal is audited: {entries:?}");

    // The bootstrap token, revoked, does not come back at the next start.
    let (st, _) = call(&c, &s.url, "DELETE", "/api/v1/tokens/bootstrap", admin, None, None).await;
    assert_eq!(st, 204);
    s.mappings.auth().bootstrap(Some(ADMIN_PASSWORD), Some(BOOTSTRAP)).await.unwrap();
    let (st, _) = call(&c, &s.url, "GET", "/api/v1/mappings", admin, None, None).await;
    assert_eq!(st, 401, "the revoked bootstrap token came back");
}

#[tokio::test]
async fn secrets_never_come_back() {
    let s = start().await;
    let c = client();
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
