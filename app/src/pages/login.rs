//! Sign-in: the one page anyone may open. The form posts to `/login`, which
//! sets the session cookie or sends the browser back here with the reason.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::components::{Csrf, PageTitle};

#[component]
pub fn Login() -> impl IntoView {
    let q = use_query_map();
    let get = move |k: &str| q.with_untracked(|q| q.get(k).unwrap_or_default());
    let (code, next, username) = (get("error"), get("next"), get("username"));
    // The reason comes as a code, never as text to print: a link cannot
    // make this page say what its author wants.
    let error = match code.as_str() {
        "" => String::new(),
        "invalid" => "Wrong user name or password.".into(),
        "limited" => match get("retry").parse::<u32>() {
            Ok(s) => format!("Too many failed sign-ins from here. Try again in {s} s."),
            Err(_) => "Too many failed sign-ins from here. Try again later.".into(),
        },
        "unavailable" => "Sign-in is unavailable: the database did not answer.".into(),
        "csrf" => "The sign-in form had expired. Please sign in again.".into(),
        _ => "Sign-in failed.".into(),
    };
    if !error.is_empty() {
        crate::api::set_status(401);
    }
    view! {
        <PageTitle text="Sign in · Sluice"/>
        <div class="page-head"><h1>"Sign in"</h1></div>
        {(!error.is_empty()).then(|| view! { <p class="error-banner" role="alert">{error.clone()}</p> })}
        <form class="mapping-form login-form" method="post" action="/login">
            <input type="hidden" name="next" value=next/>
            <Csrf/>
            <label for="username">"User name"</label>
            <input id="username" name="username" autocomplete="username" value=username required/>
            <label for="password">"Password"</label>
            <input id="password" name="password" type="password" autocomplete="current-password" required/>
            <div class="actions"><button type="submit" class="button primary">"Sign in"</button></div>
        </form>
        <p class="hint">"At first start Sluice creates the user admin, with the password in SLUICE_ADMIN_PASSWORD or one it prints once."</p>
    }
}
