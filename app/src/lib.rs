//! Sluice's console: pages, components and the types shared with the server
//! (the mapping spec and its validation). Built with `ssr` into the server
//! and with `hydrate` into the browser's wasm module.

pub mod api;
pub mod charts;
pub mod failures;
pub mod filter;
pub mod form;
pub mod metrics;
pub mod model;
pub mod reset;
pub mod spec;

mod components;
mod live;
pub mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet};
use leptos_router::{
    components::{Route, Router, Routes, A},
    path, SsrMode,
};

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    // Inline scripts run only with this response's nonce (see the server's CSP).
    #[cfg(feature = "ssr")]
    api::backend::provide_nonce();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="data:,"/>
                <meta name="csrf-token" content=api::csrf_token()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (letters, digits, `-_.~`): query values, and SigV4's canonical form.
pub fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Async SSR: every page arrives complete, so it works without JavaScript.
    let ssr = SsrMode::Async;
    let session = Resource::new(|| (), |_| api::get_session());
    provide_context(components::CurrentSession(session));
    let info = Resource::new(|| (), |_| api::get_system());
    view! {
        <Stylesheet id="sluice" href="/pkg/sluice.css"/>
        <Router>
            <header class="top">
                <A href="/" attr:class="brand">"Sluice"</A>
                <nav>
                    <A href="/">"Mappings"</A>
                    <A href="/nodes">"Nodes"</A>
                    <A href="/audit">"Audit log"</A>
                    <components::ForAdmins><A href="/tokens">"API tokens"</A></components::ForAdmins>
                    <a href="/api/v1/openapi.json" rel="external">"API"</a>
                </nav>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        session.await.ok().flatten().map(|s| view! {
                            <form class="who" method="post" action="/logout">
                                <span data-field="user">{s.user.clone()}</span>
                                " (" <span data-field="role">{s.role.as_str()}</span> ") "
                                <components::Csrf/>
                                <button type="submit" class="button subtle">"Sign out"</button>
                            </form>
                        })
                    })}
                </Suspense>
            </header>
            // Every page says so while the database refuses writes.
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    info.await.ok().and_then(|i| i.database_problem).map(|p| view! {
                        <p class="error-banner" role="alert" data-system="database">{p}</p>
                    })
                })}
            </Suspense>
            <main>
                <Routes fallback=pages::NotFound>
                    <Route path=path!("/") view=pages::MappingList ssr=ssr.clone()/>
                    <Route path=path!("/mappings") view=pages::MappingList ssr=ssr.clone()/>
                    <Route path=path!("/mappings/new") view=pages::NewMapping ssr=ssr.clone()/>
                    <Route path=path!("/mappings/:id") view=pages::MappingDetail ssr=ssr.clone()/>
                    <Route path=path!("/mappings/:id/edit") view=pages::EditMapping ssr=ssr.clone()/>
                    <Route path=path!("/mappings/:id/reset") view=pages::ResetMapping ssr=ssr.clone()/>
                    <Route path=path!("/mappings/:id/filters") view=pages::FilterTester ssr=ssr.clone()/>
                    <Route path=path!("/mappings/:id/failures") view=pages::FailedRecords ssr=ssr.clone()/>
                    <Route path=path!("/nodes") view=pages::Nodes ssr=ssr.clone()/>
                    <Route path=path!("/audit") view=pages::Audit ssr=ssr.clone()/>
                    <Route path=path!("/tokens") view=pages::Tokens ssr=ssr.clone()/>
                    <Route path=path!("/login") view=pages::Login ssr=ssr/>
                </Routes>
            </main>
            <Footer info/>
        </Router>
    }
}

/// The node's version and what it can do on AWS (or why not).
#[component]
fn Footer(info: Resource<Result<model::SystemInfo, ServerFnError>>) -> impl IntoView {
    view! {
        <footer class="system">
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    info.await.ok().map(|i| view! {
                        <p>{format!("Sluice {} · node {}", i.version, i.node)}</p>
                        <ul data-system="aws">{i.aws.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
                    })
                })}
            </Suspense>
        </footer>
    }
}

/// The browser's entry point.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // Lets tests (and CSS) tell a hydrated page from a server-rendered one.
    if let Some(body) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.body()) {
        let _ = body.dataset().set("hydrated", "true");
    }
}
