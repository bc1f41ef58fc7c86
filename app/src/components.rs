//! Small pieces shared by the pages, and the mapping form.

use std::collections::HashSet;

use leptos::prelude::*;

use crate::form::*;
use crate::model::MappingState;
use crate::spec::{FieldError, StartingPosition};

#[component]
pub fn StateBadge(state: MappingState) -> impl IntoView {
    let class = format!("badge state-{}", state.as_str().to_lowercase());
    view! { <span class=class data-state=state.as_str()>{state.as_str()}</span> }
}

#[component]
pub fn ServerError(error: String) -> impl IntoView {
    set_status_500();
    view! { <p class="error-banner" role="alert">"The server could not answer: " {error}</p> }
}

fn set_status_500() {
    crate::api::set_status(500);
}

/// Every input name, in form order: the browser reads these back to
/// validate as the user types.
#[cfg(feature = "hydrate")]
const FIELDS: [&str; 19] = [
    F_NAME, F_DESCRIPTION, F_FUNCTION, F_TOPIC, F_SERVERS, F_GROUP, F_BATCH, F_WINDOW, F_POSITION,
    F_TIMESTAMP, F_FILTERS, F_DESTINATION, F_RETRIES, F_AGE, F_MIN_POLLERS, F_MAX_POLLERS, F_BISECT,
    F_PARTIAL, F_ENABLED,
];

/// The create/edit form. Without JavaScript it is a plain POST form and the
/// server validates. Hydrated, it validates as the user types with the same
/// code, showing an error once its field was left, and blocks a submit that
/// would fail.
#[component]
pub fn MappingFormView(
    action: String,
    values: MappingForm,
    errors: Vec<FieldError>,
    submit: &'static str,
    cancel: String,
) -> impl IntoView {
    let touched: RwSignal<HashSet<String>> =
        RwSignal::new(errors.iter().map(|e| e.field.clone()).collect());
    let show_all = RwSignal::new(!errors.is_empty());
    let errors = RwSignal::new(errors);
    let form_ref = NodeRef::<leptos::html::Form>::new();

    let revalidate = move || {
        #[cfg(feature = "hydrate")]
        if let Some(form) = form_ref.get_untracked() {
            let current = read_form(&form);
            errors.set(current.to_spec(crate::api::now_s()).err().unwrap_or_default());
        }
    };
    let on_input = move |_ev: leptos::ev::Event| revalidate();
    // A field counts as touched once it changed or was left.
    let touch = move |ev: &leptos::ev::Event| {
        if let Some(name) = target_name(ev) {
            touched.update(|t| {
                t.insert(name);
            });
        }
        revalidate();
    };
    let on_change = move |ev: leptos::ev::Event| touch(&ev);
    let on_leave = move |ev: leptos::ev::FocusEvent| touch(&ev);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        revalidate();
        show_all.set(true);
        if !errors.get_untracked().is_empty() {
            ev.prevent_default();
        }
    };

    // Errors visible under input `name`.
    let errs_for = move |name: &'static str| {
        move || {
            let touched = touched.get();
            let all = show_all.get();
            errors
                .get()
                .into_iter()
                .filter(|e| e.is_for(name) && (all || touched.iter().any(|t| e.is_for(t))))
                .map(|e| {
                    let text = match e.field.strip_prefix(name).and_then(describe_path) {
                        Some(prefix) => format!("{prefix}: {}", e.message),
                        None => e.message.clone(),
                    };
                    view! { <p class="field-error" data-error-for=name>{text}</p> }
                })
                .collect_view()
        }
    };
    let invalid = move |name: &'static str| {
        move || {
            let shown = show_all.get() || touched.get().iter().any(|t| t.starts_with(name));
            (shown && errors.get().iter().any(|e| e.is_for(name))).then_some("true")
        }
    };

    let v = values;
    let position = v.starting_position.clone();
    view! {
        <form class="mapping-form" method="post" action=action node_ref=form_ref
            on:input=on_input on:change=on_change on:focusout=on_leave on:submit=on_submit novalidate>
            {move || (show_all.get() && !errors.get().is_empty()).then(|| view! {
                <p class="error-banner" role="alert">"The mapping was not saved: fix the fields marked below."</p>
            })}
            <fieldset>
                <legend>"Mapping"</legend>
                <label for=F_NAME>"Name"</label>
                <input id=F_NAME name=F_NAME value=v.name placeholder="orders-to-billing" aria-invalid=invalid(F_NAME)/>
                {errs_for(F_NAME)}
                <label for=F_DESCRIPTION>"Description"</label>
                <input id=F_DESCRIPTION name=F_DESCRIPTION value=v.description aria-invalid=invalid(F_DESCRIPTION)/>
                {errs_for(F_DESCRIPTION)}
                <label for=F_ENABLED class="check"><input type="checkbox" id=F_ENABLED name=F_ENABLED checked=v.enabled.is_some()/>" Enabled: poll and invoke as soon as it is saved"</label>
            </fieldset>
            <fieldset>
                <legend>"Source"</legend>
                <label for=F_SERVERS>"Bootstrap servers"</label>
                <input id=F_SERVERS name=F_SERVERS value=v.bootstrap_servers placeholder="broker-1:9092, broker-2:9092" aria-invalid=invalid(F_SERVERS)/>
                <p class="help">"1 to 10 host:port, separated by commas."</p>
                {errs_for(F_SERVERS)}
                <label for=F_TOPIC>"Topic"</label>
                <input id=F_TOPIC name=F_TOPIC value=v.topic placeholder="orders" aria-invalid=invalid(F_TOPIC)/>
                {errs_for(F_TOPIC)}
                <label for=F_GROUP>"Consumer group ID"</label>
                <input id=F_GROUP name=F_GROUP value=v.consumer_group_id placeholder="empty: the mapping's UUID" aria-invalid=invalid(F_GROUP)/>
                {errs_for(F_GROUP)}
                <label for=F_POSITION>"Starting position"</label>
                <select id=F_POSITION name=F_POSITION aria-invalid=invalid(F_POSITION)>
                    {StartingPosition::ALL.into_iter().map(|p| {
                        let selected = p.as_str() == position;
                        view! { <option value=p.as_str() selected=selected>{p.as_str()}</option> }
                    }).collect_view()}
                </select>
                <p class="help">"Used only when the consumer group has no committed offset yet."</p>
                {errs_for(F_POSITION)}
                <label for=F_TIMESTAMP>"Starting position timestamp"</label>
                <input id=F_TIMESTAMP name=F_TIMESTAMP value=v.starting_position_timestamp placeholder="2026-11-25T12:00:00Z" aria-invalid=invalid(F_TIMESTAMP)/>
                <p class="help">"With AT_TIMESTAMP: RFC 3339 with a zone (Z or +01:00), or Unix seconds. A time without a zone is read as UTC."</p>
                {errs_for(F_TIMESTAMP)}
            </fieldset>
            <fieldset>
                <legend>"Target"</legend>
                <label for=F_FUNCTION>"Function"</label>
                <input id=F_FUNCTION name=F_FUNCTION value=v.function_name placeholder="my-function, arn:aws:lambda:…, or https://…" aria-invalid=invalid(F_FUNCTION)/>
                <p class="help">"An AWS Lambda function name or ARN, or an http(s):// URL that receives the event as a POST."</p>
                {errs_for(F_FUNCTION)}
                <label for=F_BATCH>"Batch size"</label>
                <input id=F_BATCH name=F_BATCH value=v.batch_size inputmode="numeric" aria-invalid=invalid(F_BATCH)/>
                <p class="help">"1 to 10000 records per invocation (and at most 6 MB)."</p>
                {errs_for(F_BATCH)}
                <label for=F_WINDOW>"Batching window (seconds)"</label>
                <input id=F_WINDOW name=F_WINDOW value=v.window inputmode="numeric" placeholder="empty: 0.5 s" aria-invalid=invalid(F_WINDOW)/>
                <p class="help">"0 to 300. 0 invokes as soon as records arrive."</p>
                {errs_for(F_WINDOW)}
                <label for=F_FILTERS>"Filters"</label>
                <textarea id=F_FILTERS name=F_FILTERS rows="4" placeholder=r#"{"value": {"type": ["order"]}}"# aria-invalid=invalid(F_FILTERS)>{v.filters}</textarea>
                <p class="help">"Up to 5 EventBridge patterns, one per line. A record is invoked if any matches; empty: every record."</p>
                {errs_for(F_FILTERS)}
            </fieldset>
            <fieldset>
                <legend>"Failures"</legend>
                <label for=F_RETRIES>"Maximum retry attempts"</label>
                <input id=F_RETRIES name=F_RETRIES value=v.retries inputmode="numeric" aria-invalid=invalid(F_RETRIES)/>
                <p class="help">"-1: retry until the record expires; or 0 to 10000."</p>
                {errs_for(F_RETRIES)}
                <label for=F_AGE>"Maximum record age (seconds)"</label>
                <input id=F_AGE name=F_AGE value=v.record_age inputmode="numeric" aria-invalid=invalid(F_AGE)/>
                <p class="help">"-1: no limit; or 60 to 604800."</p>
                {errs_for(F_AGE)}
                <label for=F_DESTINATION>"On-failure destination"</label>
                <input id=F_DESTINATION name=F_DESTINATION value=v.on_failure placeholder="kafka://orders-dlq or an SQS/SNS/S3 ARN" aria-invalid=invalid(F_DESTINATION)/>
                {errs_for(F_DESTINATION)}
                <label for=F_BISECT class="check"><input type="checkbox" id=F_BISECT name=F_BISECT checked=v.bisect.is_some()/>" Split a failing batch in two and retry each half"</label>
                <label for=F_PARTIAL class="check"><input type="checkbox" id=F_PARTIAL name=F_PARTIAL value="ReportBatchItemFailures" checked=v.report_batch_item_failures.is_some()/>" Report batch item failures (partial batch response)"</label>
            </fieldset>
            <fieldset>
                <legend>"Pollers"</legend>
                <label for=F_MIN_POLLERS>"Minimum pollers"</label>
                <input id=F_MIN_POLLERS name=F_MIN_POLLERS value=v.min_pollers inputmode="numeric" placeholder="empty: on demand" aria-invalid=invalid(F_MIN_POLLERS)/>
                {errs_for(F_MIN_POLLERS)}
                <label for=F_MAX_POLLERS>"Maximum pollers"</label>
                <input id=F_MAX_POLLERS name=F_MAX_POLLERS value=v.max_pollers inputmode="numeric" placeholder="empty: up to one per partition" aria-invalid=invalid(F_MAX_POLLERS)/>
                {errs_for(F_MAX_POLLERS)}
            </fieldset>
            <div class="form-actions">
                <button type="submit" class="button primary">{submit}</button>
                <a class="button subtle" href=cancel>"Cancel"</a>
            </div>
        </form>
    }
}

/// `[2].Pattern` → `filter 3`. Other paths need no prefix: their messages
/// quote the offending value.
fn describe_path(rest: &str) -> Option<String> {
    let index = rest.split(['[', ']']).find_map(|p| p.parse::<usize>().ok())?;
    rest.contains("Filters").then(|| format!("filter {}", index + 1))
}

fn target_name(ev: &leptos::ev::Event) -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        use leptos::wasm_bindgen::JsCast;
        let t = ev.target()?;
        let el = t.dyn_into::<web_sys::Element>().ok()?;
        el.get_attribute("name")
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ev;
        None
    }
}

/// The form's current values, read from the DOM.
#[cfg(feature = "hydrate")]
fn read_form(form: &web_sys::HtmlFormElement) -> MappingForm {
    let mut map = serde_json::Map::new();
    if let Ok(data) = web_sys::FormData::new_with_form(form) {
        for name in FIELDS {
            if let Some(v) = data.get(name).as_string() {
                map.insert(name.to_string(), serde_json::Value::String(v));
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
}
