//! API tokens (admins): make one (its token and SigV4 key pair are shown
//! this once), see who made each and when it was last used, revoke.

use leptos::prelude::*;

use crate::api::get_tokens;
use crate::components::{Csrf, PageTitle, ServerError};
use crate::model::{MadeToken, Role};
use crate::spec::{format_unix, FieldError};

/// What the token form's post left for the page: the token made, or why not.
#[derive(Clone, Debug, Default)]
pub struct PostedToken {
    pub made: Option<MadeToken>,
    pub errors: Vec<FieldError>,
    pub name: String,
    pub role: String,
}

#[component]
pub fn Tokens() -> impl IntoView {
    let posted = use_context::<PostedToken>().unwrap_or_default();
    let tokens = Resource::new(|| (), |_| get_tokens());
    let made = posted.made.clone().map(|m| {
        view! {
            <section class="made-token" data-made-token=m.name.clone()>
                <h2>"Token " <code>{m.name.clone()}</code> " made (" {m.role.as_str()} ")"</h2>
                <p class="warning">"Copy these now: they are shown this once and cannot be read again."</p>
                <dl class="settings">
                    <dt>"Token (Authorization: Bearer)"</dt><dd class="mono" data-field="Token">{m.token.clone()}</dd>
                    <dt>"AccessKeyId (SigV4)"</dt><dd class="mono" data-field="AccessKeyId">{m.access_key_id.clone()}</dd>
                    <dt>"SecretAccessKey (SigV4)"</dt><dd class="mono" data-field="SecretAccessKey">{m.secret_access_key.clone()}</dd>
                </dl>
                <p class="hint">"With the AWS CLI: " <code>"AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… aws lambda list-event-source-mappings --endpoint-url <this site>"</code></p>
            </section>
        }
    });
    let errors = posted.errors.clone();
    let chosen = posted.role.clone();
    view! {
        <PageTitle text="API tokens · Sluice"/>
        <div class="page-head"><h1>"API tokens"</h1></div>
        <p class="hint">"A token lets a script or tool act with its role (at most its maker's): as "
            <code>"Authorization: Bearer"</code>
            ", or through its key pair, which signs AWS SigV4 requests to Lambda's event-source-mapping API (the AWS CLI, the SDKs, Terraform)."</p>
        {made}
        {(!errors.is_empty()).then(|| view! {
            <div class="error-banner" role="alert">
                "The token was not made: "
                {errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")}
            </div>
        })}
        <form class="token-form" method="post" action="/tokens">
            <Csrf/>
            <label>"Name " <input name="name" required maxlength="64" value=posted.name.clone()/></label>
            <label>"Role "
                <select name="role">
                    {Role::ALL.into_iter().map(|r| {
                        let selected = chosen == r.as_str() || (chosen.is_empty() && r == Role::Operator);
                        view! { <option value=r.as_str() selected=selected>{r.as_str()}</option> }
                    }).collect_view()}
                </select>
            </label>
            <button type="submit" class="button">"Make token"</button>
        </form>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match tokens.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No tokens yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table data-table="tokens">
                            <thead><tr><th>"Name"</th><th>"Role"</th><th>"Made by"</th><th>"Made"</th><th>"Last used"</th><th>"AccessKeyId"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| view! {
                                    <tr data-token=t.name.clone()>
                                        <td>{t.name.clone()}</td>
                                        <td>{t.role.as_str()}</td>
                                        <td>{t.created_by.clone()}</td>
                                        <td>{format_unix(t.created / 1000)}</td>
                                        <td>{t.last_used.map(|u| format_unix(u / 1000)).unwrap_or_else(|| "never".into())}</td>
                                        <td class="mono">{t.access_key_id.clone().unwrap_or_else(|| if t.created_by == "SLUICE_BOOTSTRAP_TOKEN" {
                                            "none (the bootstrap token: make one here for a key pair)".into()
                                        } else {
                                            "none (made before key pairs)".into()
                                        })}</td>
                                        <td>
                                            <form method="post" action=format!("/tokens/{}/delete", t.name)>
                                                <Csrf/>
                                                <button type="submit" class="button danger">"Revoke"</button>
                                            </form>
                                        </td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
