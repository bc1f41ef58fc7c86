//! A mapping's "Failed records" tab: the ledger of every record it gave up
//! on (condition, error, where its failure record went), each record's
//! contents read from the topic on demand, and redrive of a selection or of
//! everything matching, with the job's progress live. Without JavaScript
//! the filters are a GET form and redrive a POST form (the server answers
//! with the job's page).

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{get_failures, get_mapping, get_redrive_job};
use crate::components::{Csrf, ForOperators, NoSuchMapping, PageTitle, ServerError};
use crate::failures::{FailedRecord, FailureFilter, RedriveJob, RedriveResult, CONDITIONS};
use crate::filter::Sample;
use crate::model::MappingView;

/// The tabs of a mapping's pages.
#[component]
pub fn MappingTabs(id: String, current: &'static str) -> impl IntoView {
    let tabs = [
        ("overview", "Overview", format!("/mappings/{id}")),
        ("failures", "Failed records", format!("/mappings/{id}/failures")),
    ];
    view! {
        <nav class="tabs" aria-label="Mapping">
            {tabs.into_iter().map(|(key, label, href)| view! {
                <a href=href data-tab=key aria-current=(key == current).then_some("page")>{label}</a>
            }).collect_view()}
        </nav>
    }
}

/// The list's filters, from the page's query.
fn filter_of(q: &leptos_router::params::ParamsMap) -> FailureFilter {
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty());
    FailureFilter {
        partition: text("partition").and_then(|p| p.parse().ok()),
        condition: text("condition"),
        since: None,
        until: None,
        redrive: text("redrive"),
    }
}

#[component]
pub fn FailedRecords() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let mapping = Resource::new(id, get_mapping);
    let filter = move || query.with(filter_of);
    let marker = move || query.read().get("marker");
    let failures = Resource::new(
        move || (id(), filter(), marker()),
        |(id, f, m)| get_failures(id, f.partition, f.condition, f.redrive, m),
    );
    // The redrive being followed: from the page's query (a form posted
    // without JavaScript) or from the button (with it).
    let job = RwSignal::new(query.with_untracked(|q| q.get("job")));
    let progress = Resource::new(
        move || (id(), job.get()),
        |(id, job)| async move {
            match job {
                Some(j) => get_redrive_job(id, j).await,
                None => Ok(None),
            }
        },
    );
    // A running redrive is looked at twice a second; once it has ended,
    // the list shows each record's new state (once per job).
    let refreshed_for = StoredValue::new(None::<String>);
    Effect::new(move |_| match progress.get() {
        Some(Ok(Some(j))) if j.state == "Running" => {
            set_timeout(move || progress.refetch(), std::time::Duration::from_millis(500));
        }
        Some(Ok(Some(j))) if refreshed_for.get_value().as_deref() != Some(j.job_id.as_str()) => {
            refreshed_for.set_value(Some(j.job_id.clone()));
            failures.refetch();
        }
        _ => {}
    });
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match mapping.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(None) => view! { <NoSuchMapping/> }.into_any(),
                    Ok(Some(m)) => view! { <Head m/> }.into_any(),
                }
            })}
        </Suspense>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match progress.await {
                    Ok(Some(j)) => view! { <Progress j/> }.into_any(),
                    Ok(None) => ().into_any(),
                    Err(e) => view! { <p class="error-banner">{format!("Cannot read the redrive: {e}")}</p> }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| view! { <p>"Loading the failed records…"</p> }>
            {move || Suspend::new(async move {
                let page = failures.await;
                let f = filter();
                match page {
                    Err(e) => view! { <p class="error-banner">{format!("Cannot read the failed records: {e}")}</p> }.into_any(),
                    Ok(page) => view! { <List id=id() page f job/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn Head(m: MappingView) -> impl IntoView {
    let id = m.uuid.to_string();
    let destination = m.spec.destination_config.on_failure.as_ref().map(|d| d.destination.clone());
    view! {
        <PageTitle text=format!("Failed records of {} · Sluice", m.label())/>
        <div class="page-head">
            <h1><a href=format!("/mappings/{id}")>{m.label()}</a></h1>
        </div>
        <MappingTabs id=id.clone() current="failures"/>
        <p class="hint">
            "Every record this mapping gave up on (retries exhausted, too old, too large, not decodable), with why and where its failure record went ("
            {destination.unwrap_or_else(|| "no on-failure destination: dropped".into())}
            "). Only coordinates and errors are kept here; the record itself is read from the topic when you ask. Redrive reads the records again from "
            {m.spec.topic().to_string()}
            " and invokes the function with them, in offset order per partition, beside the live traffic."
        </p>
    }
}

#[component]
fn Progress(j: RedriveJob) -> impl IntoView {
    let done = j.done();
    let failed: Vec<_> =
        j.results.iter().filter(|r| matches!(r.result, RedriveResult::Failed | RedriveResult::Gone)).cloned().collect();
    view! {
        <section class="redrive" data-job=j.job_id.clone() data-state=j.state.clone()>
            <h2>{if j.state == "Running" { "Redrive running" } else { "Redrive done" }}</h2>
            <p>
                <progress max=j.total value=done></progress>
                " " <span data-progress="">{format!("{done} of {} records", j.total)}</span> ": "
                <span data-result="Succeeded">{format!("{} succeeded", j.succeeded)}</span> ", "
                <span data-result="Failed">{format!("{} failed", j.failed)}</span> ", "
                <span data-result="Gone">{format!("{} gone from the topic", j.gone)}</span>
                {format!(" · started by {} at {}", j.by, crate::spec::format_unix(j.started_at / 1000))}
            </p>
            {j.error.clone().map(|e| view! { <p class="error">{e}</p> })}
            {(!failed.is_empty()).then(|| view! {
                <ul class="redrive-failures">
                    {failed.into_iter().take(50).map(|r| view! {
                        <li data-record=format!("{}-{}", r.partition, r.offset)>
                            {format!("{}-{}: {}: {}", r.partition, r.offset, r.result.as_str(), r.error.unwrap_or_default())}
                        </li>
                    }).collect_view()}
                </ul>
            })}
        </section>
    }
}

/// Base64 (the ledger keeps keys as the event does) to text for reading.
fn key_text(b64: &Option<String>) -> String {
    let Some(s) = b64 else { return "(none)".into() };
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    match String::from_utf8(out) {
        Ok(t) if !t.chars().any(char::is_control) => t,
        _ => format!("base64 {s}"),
    }
}

fn redrive_cell(f: &FailedRecord) -> String {
    match &f.redrive {
        None => "—".into(),
        Some(r) => format!("{} ({}, by {})", r.result.as_str(), crate::spec::format_unix(r.at / 1000), r.by),
    }
}

#[component]
fn List(
    id: String,
    page: crate::failures::FailurePage,
    f: FailureFilter,
    job: RwSignal<Option<String>>,
) -> impl IntoView {
    let base = format!("/mappings/{id}/failures");
    let filtered = f != FailureFilter::default();
    let total = page.total;
    let error = RwSignal::new(None::<String>);
    let shown = RwSignal::new(std::collections::BTreeMap::<(i32, i64), Result<Option<Sample>, String>>::new());
    let on_submit = {
        #[cfg(feature = "hydrate")]
        {
            let id = id.clone();
            move |ev: web_sys::SubmitEvent| {
                ev.prevent_default();
                let body = redrive_body(&ev);
                let url = format!("/api/v1/mappings/{id}/failures/redrive");
                match body {
                    Err(e) => error.set(Some(e)),
                    Ok(body) => {
                        error.set(None);
                        leptos::task::spawn_local(async move {
                            match post_json(&url, &body).await {
                                Ok((202, text)) => {
                                    let j: Option<RedriveJob> = serde_json::from_str(&text).ok();
                                    job.set(j.map(|j| j.job_id));
                                }
                                Ok((_, text)) => error.set(Some(api_message(&text))),
                                Err(e) => error.set(Some(e)),
                            }
                        });
                    }
                }
            }
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = job;
            move |_: leptos::ev::SubmitEvent| {}
        }
    };
    let rows = page.failures.clone();
    let next = page.next_marker.clone().map(|m| {
        let mut q = vec![format!("marker={}", crate::uri_encode(&m))];
        if let Some(p) = f.partition {
            q.push(format!("partition={p}"));
        }
        if let Some(c) = &f.condition {
            q.push(format!("condition={}", crate::uri_encode(c)));
        }
        if let Some(r) = &f.redrive {
            q.push(format!("redrive={}", crate::uri_encode(r)));
        }
        format!("{base}?{}", q.join("&"))
    });
    let cond = f.condition.clone().unwrap_or_default();
    let redrive = f.redrive.clone().unwrap_or_default();
    view! {
        <form method="get" class="failure-filters" action=base.clone()>
            <label>"Partition " <input type="number" name="partition" min="0" value=f.partition.map(|p| p.to_string())/></label>
            <label>"Condition "
                <select name="condition">
                    <option value="" selected=cond.is_empty()>"any"</option>
                    {CONDITIONS.into_iter().map(|c| view! { <option value=c selected=cond == c>{c}</option> }).collect_view()}
                </select>
            </label>
            <label>"Redrive "
                <select name="redrive">
                    {[("", "any"), ("None", "never redriven"), ("Pending", "pending"), ("Succeeded", "succeeded"), ("Failed", "failed again"), ("Gone", "gone from the topic")]
                        .into_iter().map(|(v, l)| view! { <option value=v selected=redrive == v>{l}</option> }).collect_view()}
                </select>
            </label>
            <button type="submit" class="button">"Filter"</button>
            {filtered.then(|| view! { <a href=base.clone()>"Clear"</a> })}
        </form>
        <p data-failures-total=total>{format!("{total} failed records{}", if filtered { " match" } else { "" })}</p>
        {move || error.get().map(|e| view! { <p class="error-banner" role="alert" data-error="redrive">{e}</p> })}
        {if rows.is_empty() {
            view! { <p class="empty">"No failed records: nothing was given up on."</p> }.into_any()
        } else {
            let id2 = id.clone();
            view! {
                <form method="post" action=format!("{base}/redrive") class="redrive-form" on:submit=on_submit>
                    <Csrf/>
                    {f.partition.map(|p| view! { <input type="hidden" name="partition" value=p/> })}
                    {f.condition.clone().map(|c| view! { <input type="hidden" name="condition" value=c/> })}
                    {f.redrive.clone().map(|r| view! { <input type="hidden" name="redrive" value=r/> })}
                    <ForOperators>
                        <div class="form-actions">
                            <button type="submit" class="button primary" name="what" value="selected" data-action="redrive-selected">"Redrive selected"</button>
                            <button type="submit" class="button" name="what" value="matching" data-action="redrive-matching">
                                {format!("Redrive all {total}{}", if filtered { " matching" } else { "" })}
                            </button>
                        </div>
                    </ForOperators>
                    <table class="lag failures">
                        <thead><tr>
                            <th></th><th>"Partition"</th><th>"Offset"</th><th>"Key"</th><th>"Record time"</th><th>"Condition"</th>
                            <th>"Attempts"</th><th>"Error"</th><th>"Failure record"</th><th>"Failed at"</th><th>"Redrive"</th><th></th>
                        </tr></thead>
                        <tbody>
                            {rows.into_iter().map(|r| {
                                let key = (r.partition, r.offset);
                                let record_url = format!("/api/v1/mappings/{id2}/failures/record?Partition={}&Offset={}", r.partition, r.offset);
                                let show = {
                                    let id = id2.clone();
                                    move |ev: leptos::ev::MouseEvent| {
                                        ev.prevent_default();
                                        let id = id.clone();
                                        leptos::task::spawn_local(async move {
                                            let got = crate::api::failed_record(id, key.0, key.1).await.map_err(|e| e.to_string());
                                            shown.update(|s| { s.insert(key, got); });
                                        });
                                    }
                                };
                                let destination = match &r.destination_message {
                                    Some(m) => format!("{}: {m}", r.destination),
                                    None => r.destination.clone(),
                                };
                                view! {
                                    <tr data-record=format!("{}-{}", r.partition, r.offset) data-condition=r.condition.clone()
                                        data-redrive=r.redrive.as_ref().map(|d| d.result.as_str()).unwrap_or("None")>
                                        <td><input type="checkbox" name="record" value=format!("{}:{}", r.partition, r.offset)
                                            aria-label=format!("partition {} offset {}", r.partition, r.offset)/></td>
                                        <td>{r.partition}</td>
                                        <td>{r.offset}</td>
                                        <td class="mono">{key_text(&r.key)}</td>
                                        <td>{if r.timestamp >= 0 { crate::spec::format_unix(r.timestamp / 1000) } else { "—".into() }}</td>
                                        <td>{r.condition.clone()}</td>
                                        <td>{r.attempts}</td>
                                        <td class="error-text">{r.error.clone()}</td>
                                        <td class="mono">{destination}</td>
                                        <td>{crate::spec::format_unix(r.failed_at / 1000)}</td>
                                        <td data-field="Redrive">{redrive_cell(&r)}</td>
                                        <td><ForOperators><a href=record_url.clone() data-action="show-record" on:click=show.clone()>"Show record"</a></ForOperators></td>
                                    </tr>
                                    {move || shown.with(|s| s.get(&key).cloned()).map(|got| view! {
                                        <tr class="record" data-shown=format!("{}-{}", key.0, key.1)><td colspan="12">{record_view(got)}</td></tr>
                                    })}
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </form>
            }.into_any()
        }}
        {next.map(|href| view! { <p><a href=href data-page="next">"Older failed records →"</a></p> })}
    }
}

fn record_view(got: Result<Option<Sample>, String>) -> AnyView {
    let text = |b: &Option<Vec<u8>>| {
        b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_else(|| "(none)".into())
    };
    match got {
        Err(e) => view! { <p class="error">{format!("Cannot read the record: {e}")}</p> }.into_any(),
        Ok(None) => view! { <p class="hint">"The topic no longer holds this record."</p> }.into_any(),
        Ok(Some(s)) => view! {
            <dl class="record-view">
                <dt>"Key"</dt><dd class="mono">{text(&s.key)}</dd>
                <dt>"Value"</dt><dd><pre class="mono" data-field="value">{text(&s.value)}</pre></dd>
                {(!s.headers.is_empty()).then(|| view! {
                    <dt>"Headers"</dt>
                    <dd class="mono">{s.headers.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(", ")}</dd>
                })}
                {s.schema.clone().map(|sc| view! { <dt>"Schema"</dt><dd>{sc}</dd> })}
            </dl>
        }.into_any(),
    }
}

/// The API's message from an error answer.
#[cfg(feature = "hydrate")]
fn api_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["Message"].as_str().map(String::from))
        .unwrap_or_else(|| text.to_string())
}

/// The redrive the form asks for, as the API takes it: the ticked records,
/// or everything matching the filters.
#[cfg(feature = "hydrate")]
fn redrive_body(ev: &web_sys::SubmitEvent) -> Result<String, String> {
    use wasm_bindgen::JsCast;
    let form: web_sys::HtmlFormElement = ev.target().and_then(|t| t.dyn_into().ok()).ok_or("the form is not there")?;
    let data = web_sys::FormData::new_with_form(&form).map_err(|_| "cannot read the form")?;
    let what = ev.submitter().and_then(|b| b.get_attribute("value")).unwrap_or_default();
    let get = |k: &str| data.get(k).as_string().filter(|s| !s.is_empty());
    if what == "selected" {
        let records: Vec<serde_json::Value> = data
            .get_all("record")
            .iter()
            .filter_map(|v| v.as_string())
            .filter_map(|v| {
                let (p, o) = v.split_once(':')?;
                Some(serde_json::json!({"Partition": p.parse::<i32>().ok()?, "Offset": o.parse::<i64>().ok()?}))
            })
            .collect();
        if records.is_empty() {
            return Err("Tick the records to redrive first.".into());
        }
        return Ok(serde_json::json!({ "Records": records }).to_string());
    }
    let mut body = serde_json::Map::new();
    if let Some(p) = get("partition").and_then(|p| p.parse::<i32>().ok()) {
        body.insert("Partition".into(), p.into());
    }
    for (field, name) in [("Condition", "condition"), ("Redrive", "redrive")] {
        if let Some(v) = get(name) {
            body.insert(field.into(), v.into());
        }
    }
    if body.is_empty() {
        body.insert("All".into(), true.into());
    }
    Ok(serde_json::Value::Object(body).to_string())
}

/// POSTs JSON to the API with the session's cookie and CSRF token.
#[cfg(feature = "hydrate")]
async fn post_json(url: &str, body: &str) -> Result<(u16, String), String> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let fail = |_| "the server could not be reached".to_string();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&wasm_bindgen::JsValue::from_str(body));
    init.set_credentials(web_sys::RequestCredentials::SameOrigin);
    let headers = web_sys::Headers::new().map_err(fail)?;
    headers.set("content-type", "application/json").map_err(fail)?;
    headers.set("x-csrf-token", &crate::api::csrf_token()).map_err(fail)?;
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(fail)?;
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_request(&req)).await.map_err(fail)?.dyn_into().map_err(fail)?;
    let text = JsFuture::from(resp.text().map_err(fail)?).await.map_err(fail)?.as_string().unwrap_or_default();
    Ok((resp.status(), text))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_read_as_text_when_they_are() {
        assert_eq!(super::key_text(&Some("b3JkZXItNDI=".into())), "order-42");
        assert_eq!(super::key_text(&None), "(none)");
        assert_eq!(super::key_text(&Some("AAE=".into())), "base64 AAE=");
    }
}
