//! The audit log: every change, who made it and when (operators and admins).

use leptos::prelude::*;

use crate::api::get_audit;
use crate::components::{PageTitle, ServerError};
use crate::spec::format_unix;

#[component]
pub fn Audit() -> impl IntoView {
    let entries = Resource::new(|| (), |_| get_audit());
    view! {
        <PageTitle text="Audit log · Sluice"/>
        <div class="page-head"><h1>"Audit log"</h1></div>
        <p class="hint">"Every change made through the console or the API, newest first: sign-ins, mappings, resets, users and tokens."</p>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match entries.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No changes yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="audit" data-table="audit">
                            <thead><tr><th>"When"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"Status"</th><th>"What changed"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|e| view! {
                                    <tr>
                                        <td>{format_unix(e.time / 1000)}</td>
                                        <td>{e.actor}</td>
                                        <td><code>{e.action}</code></td>
                                        <td>{e.target}</td>
                                        <td>{e.status}</td>
                                        <td>{e.detail}</td>
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
