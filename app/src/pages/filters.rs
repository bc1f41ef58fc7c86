//! The filter tester: a mapping's patterns (editable here, saved nowhere)
//! against values you type and the newest records of its topic, each with
//! whether it would be invoked and which filter, or which field, decided.
//! The matching is the engine's own code: in the browser as you type, on
//! the server when the form is sent without JavaScript.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{get_mapping, sample_records};
use crate::components::{NoSuchMapping, PageTitle, ServerError};
use crate::filter::{judge, value_document, Pattern, Sample, Verdict};
use crate::model::MappingView;

#[component]
pub fn FilterTester() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let mapping = Resource::new(id, get_mapping);
    let load = move || query.read().get("load").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let samples = Resource::new(
        move || (id(), load()),
        |(id, n)| async move {
            if n == 0 {
                Ok(vec![])
            } else {
                sample_records(id, n).await
            }
        },
    );
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (m, samples) = (mapping.await, samples.await);
                match m {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(None) => view! { <NoSuchMapping/> }.into_any(),
                    Ok(Some(m)) => {
                        let q = query.get_untracked();
                        let patterns = q.get("patterns").unwrap_or_else(|| {
                            m.spec.filter_criteria.filters.iter().map(|f| f.pattern.clone()).collect::<Vec<_>>().join("\n")
                        });
                        let values = q.get("values").unwrap_or_default();
                        let meta = match q.get("sent") {
                            Some(_) => q.get("meta").is_some(),
                            None => m.spec.filter_on_record_metadata,
                        };
                        let samples = samples.map_err(|e| e.to_string());
                        view! { <Tester m patterns values meta samples loaded=load()/> }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// Each non-empty line compiled; the error names the line.
fn compile(text: &str) -> Result<Vec<(String, Pattern)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            Pattern::compile(l)
                .map(|p| (l.to_string(), p))
                .map_err(|e| format!("Filter {} (line {}): {e}", i + 1, i + 1))
        })
        .collect()
}

fn verdict_view(v: &Verdict, patterns: &[(String, Pattern)]) -> AnyView {
    match (v.matched, v.filter) {
        (true, None) => view! { <td data-verdict="invoked">"invoked"</td><td class="hint">"no filters: every record is invoked"</td> }.into_any(),
        (true, Some(i)) => view! {
            <td data-verdict="invoked">"invoked"</td>
            <td>"filter " {i + 1} ": " <code>{patterns.get(i).map(|p| p.0.clone()).unwrap_or_default()}</code></td>
        }
        .into_any(),
        (false, _) => view! {
            <td data-verdict="filtered">"filtered out"</td>
            <td>"no filter matched; the first fails at " <code data-field=v.field.clone().unwrap_or_default()>{v.field.clone().unwrap_or_else(|| "the whole record".into())}</code></td>
        }
        .into_any(),
    }
}

fn excerpt(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(none)".into(),
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            if s.chars().count() > 120 {
                format!("{}…", s.chars().take(120).collect::<String>())
            } else {
                s.into_owned()
            }
        }
    }
}

#[component]
fn Tester(
    m: MappingView,
    patterns: String,
    values: String,
    meta: bool,
    samples: Result<Vec<Sample>, String>,
    loaded: usize,
) -> impl IntoView {
    let pattern_text = RwSignal::new(patterns.clone());
    let value_text = RwSignal::new(values.clone());
    let with_meta = RwSignal::new(meta);
    let compiled = Memo::new(move |_| {
        pattern_text.with(|t| compile(t).map(|v| v.into_iter().map(|(t, _)| t).collect::<Vec<_>>()))
    });
    let topic = m.spec.topic().to_string();
    let base = format!("/mappings/{}", m.uuid);
    let saved = m.spec.filter_criteria.filters.iter().map(|f| f.pattern.clone()).collect::<Vec<_>>().join("\n");
    let value_rows = move || {
        let Ok(ps) = pattern_text.with(|t| compile(t)) else { return ().into_any() };
        let filters: Vec<Pattern> = ps.iter().map(|p| p.1.clone()).collect();
        value_text
            .get()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v = judge(&filters, &value_document(Some(l.as_bytes())));
                view! { <tr><td class="mono">{l.to_string()}</td>{verdict_view(&v, &ps)}</tr> }
            })
            .collect_view()
            .into_any()
    };
    let has_registry = m.spec.schema_registry().is_some();
    let sample_rows = {
        let topic = topic.clone();
        let samples = samples.clone().unwrap_or_default();
        move || {
            let Ok(ps) = pattern_text.with(|t| compile(t)) else { return ().into_any() };
            let filters: Vec<Pattern> = ps.iter().map(|p| p.1.clone()).collect();
            let meta = with_meta.get();
            samples
                .iter()
                .map(|s| {
                    let v = judge(&filters, &s.document(&topic, meta));
                    view! {
                        <tr data-offset=format!("{}-{}", s.partition, s.offset)>
                            <td>{format!("{}-{}", s.partition, s.offset)}</td>
                            <td class="mono">{excerpt(s.key.as_deref())}</td>
                            <td class="mono">{excerpt(s.value.as_deref())}</td>
                            {has_registry.then(|| view! { <td data-schema="">{s.schema.clone().unwrap_or_default()}</td> })}
                            {verdict_view(&v, &ps)}
                        </tr>
                    }
                })
                .collect_view()
                .into_any()
        }
    };
    let differs = move || pattern_text.with(|t| t.trim() != saved.trim());
    view! {
        <PageTitle text=format!("Test filters of {} · Sluice", m.label())/>
        <h1>"Test the filters of " <a href=base.clone()>{m.label()}</a></h1>
        <p class="hint">
            "Patterns use EventBridge's syntax and are matched against " <code>"{\"value\": …}"</code>
            " as AWS does (JSON values as JSON, other text as a string). A record is invoked if any filter matches. Nothing here is saved: "
            <a href=format!("{base}/edit")>"edit the mapping"</a> " to keep a change."
        </p>
        <form method="get" class="mapping-form filter-tester">
            <input type="hidden" name="sent" value="1"/>
            <label for="patterns">"Filters (one pattern per line)"</label>
            <textarea id="patterns" name="patterns" rows="4" prop:value=move || pattern_text.get()
                on:input:target=move |ev| pattern_text.set(ev.target().value())>{crate::components::rcdata(patterns)}</textarea>
            {move || match compiled.get() {
                Err(e) => view! { <p class="field-error" data-error-for="patterns">{e}</p> }.into_any(),
                Ok(_) if differs() => view! { <p class="help">"Changed here, not saved."</p> }.into_any(),
                Ok(_) => ().into_any(),
            }}
            <label class="check">
                <input type="checkbox" name="meta" checked=meta on:change:target=move |ev| with_meta.set(ev.target().checked())/>
                " Filters also see key, headers, topic, partition and timestamp (FilterOnRecordMetadata)"
            </label>
            <label for="values">"Values to try (one record value per line)"</label>
            <textarea id="values" name="values" rows="4" placeholder="{\"type\": \"order\", \"amount\": 120}"
                prop:value=move || value_text.get() on:input:target=move |ev| value_text.set(ev.target().value())>{crate::components::rcdata(values)}</textarea>
            <div class="form-actions">
                <button type="submit" class="button primary">"Test"</button>
                <button type="submit" class="button" name="load" value="20">{format!("Load the latest 20 records of {topic}")}</button>
            </div>
        </form>
        <section class="tester-results">
            <h2>"Values"</h2>
            <table class="lag" data-results="values">
                <thead><tr><th>"Value"</th><th>"Verdict"</th><th>"Decided by"</th></tr></thead>
                <tbody>{value_rows}</tbody>
            </table>
            {(loaded > 0).then(|| view! {
                <h2>{format!("Latest records of {}", m.spec.topic())}</h2>
                {match &samples {
                    Err(e) => view! { <p class="error-banner">{format!("Cannot read the topic: {e}")}</p> }.into_any(),
                    Ok(s) if s.is_empty() => view! { <p class="hint">"The topic has no records."</p> }.into_any(),
                    Ok(_) => ().into_any(),
                }}
                <table class="lag" data-results="records">
                    <thead><tr><th>"Partition-offset"</th><th>"Key"</th><th>"Value"</th>
                        {has_registry.then(|| view! { <th>"Schema (decoded with the mapping's registry)"</th> })}
                        <th>"Verdict"</th><th>"Decided by"</th></tr></thead>
                    <tbody>{sample_rows.clone()}</tbody>
                </table>
            })}
        </section>
    }
}
