//! The create and edit pages. Both post a plain HTML form (so they work
//! without JavaScript); the server answers a bad form with this page again,
//! carrying what was typed and the errors.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{get_mapping, set_status, PostedForm};
use crate::components::{MappingFormView, PageTitle, ServerError};
use crate::form::MappingForm;

/// The form the server was handed back, if this render answers a bad POST.
fn posted_form() -> Option<PostedForm> {
    SharedValue::new(use_context::<PostedForm>).into_inner()
}

#[component]
pub fn NewMapping() -> impl IntoView {
    let (values, errors) = match posted_form() {
        Some(p) => (p.values, p.errors),
        None => (MappingForm::new_mapping(), vec![]),
    };
    if !errors.is_empty() {
        set_status(422);
    }
    view! {
        <PageTitle text="Create mapping · Sluice"/>
        <h1>"Create mapping"</h1>
        <MappingFormView action="/mappings/new".to_string() values errors submit="Create mapping" cancel="/".to_string()/>
    }
}

#[component]
pub fn EditMapping() -> impl IntoView {
    let posted = posted_form();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let mapping = Resource::new(id, get_mapping);
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                let posted = posted.clone();
                Suspend::new(async move {
                    match mapping.await {
                        Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                        Ok(None) => {
                            set_status(404);
                            view! { <h1>"No such mapping"</h1><p><a href="/">"Back to the mappings"</a></p> }.into_any()
                        }
                        Ok(Some(m)) => {
                            let base = format!("/mappings/{}", m.uuid);
                            let (values, errors) = match posted {
                                Some(p) => (p.values, p.errors),
                                None => (MappingForm::from_spec(&m.spec), vec![]),
                            };
                            if !errors.is_empty() {
                                set_status(422);
                            }
                            view! {
                                <PageTitle text=format!("Edit {} · Sluice", m.label())/>
                                <h1>"Edit " {m.label()}</h1>
                                <p class="hint">"Every setting can change. The starting position applies to partitions the group has not committed an offset for; after saving a new one, the mapping's page offers to move the group there too. A new topic or consumer group starts at the starting position; the old group's committed offsets stay in Kafka untouched, so switching back continues where it stopped."</p>
                                <MappingFormView action=format!("{base}/edit") values errors submit="Save changes" cancel=base mapping_id=m.uuid.to_string()/>
                            }.into_any()
                        }
                    }
                })
            }}
        </Suspense>
    }
}
