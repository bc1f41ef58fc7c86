//! The list of mappings: the console's home page.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::list_mappings;
use crate::components::{ServerError, StateBadge};
use crate::spec::format_unix;

#[component]
pub fn MappingList() -> impl IntoView {
    let mappings = Resource::new(|| (), |_| list_mappings());
    view! {
        <Title text="Mappings · Sluice"/>
        <div class="page-head">
            <h1>"Mappings"</h1>
            <a class="button primary" href="/mappings/new">"Create mapping"</a>
        </div>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match mappings.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">
                            "No mappings yet. A mapping reads a Kafka topic and invokes a function with its records. "
                            <a href="/mappings/new">"Create the first one"</a>"."
                        </p>
                    }.into_any(),
                    Ok(list) => view! {
                        <table class="mappings">
                            <thead>
                                <tr>
                                    <th>"Mapping"</th><th>"State"</th><th>"Topic"</th>
                                    <th>"Function"</th><th>"Batch"</th><th>"Last processing result"</th><th>"Modified"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|m| {
                                    let href = format!("/mappings/{}", m.uuid);
                                    view! {
                                        <tr data-uuid=m.uuid.to_string()>
                                            <td><a href=href>{m.label()}</a></td>
                                            <td><StateBadge state=m.status.state/></td>
                                            <td>{m.spec.topic().to_string()}</td>
                                            <td class="mono">{m.spec.function_name.clone()}</td>
                                            <td>{m.spec.batch_size}</td>
                                            <td>{m.status.last_processing_result.clone()}</td>
                                            <td>{format_unix(m.last_modified as i64)}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
