//! Sign-in: the one page anyone may open. The form posts to `/login`, which
//! sets the session cookie or sends the browser back here with the reason.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn Login() -> impl IntoView {
    let q = use_query_map();
    let get = move |k: &str| q.with_untracked(|q| q.get(k).unwrap_or_default());
    let (error, next, username) = (get("error"), get("next"), get("username"));
    if !error.is_empty() {
        crate::api::set_status(401);
    }
    view! {
        <Title text="Sign in · Sluice"/>
        <div class="page-head"><h1>"Sign in"</h1></div>
        {(!error.is_empty()).then(|| view! { <p class="error-banner" role="alert">{error.clone()}</p> })}
        <form class="mapping-form login-form" method="post" action="/login">
            <input type="hidden" name="next" value=next/>
            <label for="username">"User name"</label>
            <input id="username" name="username" autocomplete="username" value=username required/>
            <label for="password">"Password"</label>
            <input id="password" name="password" type="password" autocomplete="current-password" required/>
            <div class="actions"><button type="submit" class="button primary">"Sign in"</button></div>
        </form>
        <p class="hint">"At first start Sluice creates the user admin, with the password in SLUICE_ADMIN_PASSWORD or one it prints once."</p>
    }
}
