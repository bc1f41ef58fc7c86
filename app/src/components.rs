//! Small pieces shared by the pages, and the mapping form.

use std::collections::HashSet;

use leptos::prelude::*;

use crate::form::*;
use crate::model::{MappingState, Role, Session};
use crate::spec::{FieldError, StartingPosition};

/// Text for inside `<textarea>` and `<title>`. Leptos writes those two raw
/// when rendering on the server (raw-text elements to it, an upstream
/// decision), so user text there could close the element and open a
/// script: the server escapes it here. In the browser the text is set as
/// text, which needs no escaping (and would show the entities).
pub fn rcdata(text: impl Into<String>) -> String {
    let text = text.into();
    #[cfg(feature = "ssr")]
    {
        escape_html(&text)
    }
    #[cfg(not(feature = "ssr"))]
    {
        text
    }
}

/// `&`, `<`, `>` and both quotes as character references.
#[cfg(feature = "ssr")]
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's title; every page sets it through here (see `rcdata`).
#[component]
pub fn PageTitle(#[prop(into)] text: String) -> impl IntoView {
    view! { <leptos_meta::Title text=rcdata(text)/> }
}

#[component]
pub fn StateBadge(state: MappingState) -> impl IntoView {
    let class = format!("badge state-{}", state.as_str().to_lowercase());
    view! { <span class=class data-state=state.as_str()>{state.as_str()}</span> }
}

/// The signed-in user, loaded once by the shell for every page.
#[derive(Clone, Copy)]
pub struct CurrentSession(pub Resource<Result<Option<Session>, ServerFnError>>);

/// Shown only to operators and admins: the server refuses viewers these
/// actions, so the console does not offer them.
#[component]
pub fn ForOperators(children: ChildrenFn) -> impl IntoView {
    ForRole(ForRoleProps { role: Role::Operator, children })
}

/// Shown only to admins (users and tokens).
#[component]
pub fn ForAdmins(children: ChildrenFn) -> impl IntoView {
    ForRole(ForRoleProps { role: Role::Admin, children })
}

/// Shown only to a signed-in caller with at least `role`.
#[component]
pub fn ForRole(role: Role, children: ChildrenFn) -> impl IntoView {
    let session = use_context::<CurrentSession>();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                let children = children.clone();
                Suspend::new(async move {
                    let have = match session {
                        Some(s) => s.0.await.ok().flatten().map(|s| s.role),
                        None => None,
                    };
                    (have >= Some(role)).then(|| children())
                })
            }}
        </Suspense>
    }
}

/// A mapping page for a UUID that names no mapping (404).
#[component]
pub fn NoSuchMapping() -> impl IntoView {
    crate::api::set_status(404);
    view! { <h1>"No such mapping"</h1><p><a href="/">"Back to the mappings"</a></p> }
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
const FIELDS: [&str; 30] = [
    F_NAME,
    F_DESCRIPTION,
    F_FUNCTION,
    F_TOPIC,
    F_SERVERS,
    F_GROUP,
    F_BATCH,
    F_WINDOW,
    F_POSITION,
    F_TIMESTAMP,
    F_FILTERS,
    F_DESTINATION,
    F_RETRIES,
    F_AGE,
    F_MIN_POLLERS,
    F_MAX_POLLERS,
    F_PARALLEL,
    F_BISECT,
    F_PARTIAL,
    F_ENABLED,
    F_FILTER_META,
    F_SR_URI,
    F_SR_FORMAT,
    F_SR_KEY,
    F_SR_VALUE,
    F_SR_USER,
    F_SR_PASSWORD,
    F_SR_SECRET,
    F_SR_STORED,
    F_SR_CA,
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
    /// The mapping being edited (its stored registry secrets count in
    /// "Test connection").
    #[prop(optional)]
    mapping_id: Option<String>,
) -> impl IntoView {
    let touched: RwSignal<HashSet<String>> = RwSignal::new(errors.iter().map(|e| e.field.clone()).collect());
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

    // "Test connection": the registry as the form describes it now.
    let registry_test = RwSignal::new(None::<Result<String, String>>);
    // Which press of the button the answer shown belongs to.
    let attempt = RwSignal::new(0u32);
    let schema_id = RwSignal::new(String::new());
    let test_registry = move |_ev: leptos::ev::MouseEvent| {
        #[cfg(feature = "hydrate")]
        if let Some(form) = form_ref.get_untracked() {
            let current = read_form(&form);
            let Some(registry) = current.schema_registry() else {
                registry_test.set(Some(Err("Enter the registry's URI first.".into())));
                return;
            };
            let (id, which) = (mapping_id.clone(), Some(schema_id.get_untracked()).filter(|s| !s.trim().is_empty()));
            let password = Some(current.sr_password.clone());
            registry_test.set(Some(Ok("Connecting…".into())));
            attempt.update(|n| *n += 1);
            leptos::task::spawn_local(async move {
                let answer = crate::api::test_schema_registry(id, registry, password, which)
                    .await
                    .map_err(|e| e.to_string().trim_start_matches("error running server function: ").to_string());
                registry_test.set(Some(answer));
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &mapping_id;
    };

    let f = FormState { errors, touched, show_all };
    provide_context(f);
    let v = values;
    let position = v.starting_position.clone();
    view! {
        <form class="mapping-form" method="post" action=action node_ref=form_ref
            on:input=on_input on:change=on_change on:focusout=on_leave on:submit=on_submit novalidate>
            <Csrf/>
            {move || (show_all.get() && !errors.get().is_empty()).then(|| view! {
                <p class="error-banner" role="alert">"The mapping was not saved: fix the fields marked below."</p>
            })}
            <fieldset>
                <legend>"Mapping"</legend>
                <Field name=F_NAME label="Name" value=v.name placeholder="orders-to-billing"/>
                <Field name=F_DESCRIPTION label="Description" value=v.description/>
                <Check name=F_ENABLED on=v.enabled.is_some() label=" Enabled: poll and invoke as soon as it is saved"/>
            </fieldset>
            <fieldset>
                <legend>"Source"</legend>
                <Field name=F_SERVERS label="Bootstrap servers" value=v.bootstrap_servers placeholder="broker-1:9092, broker-2:9092"
                    help="1 to 10 host:port, separated by commas."/>
                <Field name=F_TOPIC label="Topic" value=v.topic placeholder="orders"/>
                <Field name=F_GROUP label="Consumer group ID" value=v.consumer_group_id placeholder="empty: the mapping's UUID"/>
                <Field name=F_MSK label="MSK cluster ARN (optional)" value=v.event_source_arn placeholder="arn:aws:kafka:us-east-1:123456789012:cluster/orders/…"
                    help="For an Amazon MSK cluster: events then say aws:kafka and carry this ARN, as AWS's do. Sluice reaches the brokers at the bootstrap servers above."/>
                <label for=F_POSITION>"Starting position"</label>
                <select id=F_POSITION name=F_POSITION aria-invalid=f.invalid(F_POSITION)>
                    {StartingPosition::ALL.into_iter().map(|p| {
                        let selected = p.as_str() == position;
                        view! { <option value=p.as_str() selected=selected>{p.as_str()}</option> }
                    }).collect_view()}
                </select>
                <p class="help">"Used only when the consumer group has no committed offset yet."</p>
                {f.errors_for(F_POSITION)}
                <Field name=F_TIMESTAMP label="Starting position timestamp" value=v.starting_position_timestamp placeholder="2026-11-25T12:00:00Z"
                    help="With AT_TIMESTAMP: RFC 3339 with a zone (Z or +01:00), or Unix seconds. A time without a zone is read as UTC."/>
            </fieldset>
            <fieldset>
                <legend>"Kafka authentication"</legend>
                {(v.auth_stored.is_some() || v.client_stored.is_some()).then(|| view! {
                    <p class="notice" data-notice="secrets-follow-brokers">"A password or private key is stored. Changing the bootstrap servers, the security protocol or the MSK cluster ARN clears it unless you enter it again below: a stored secret is only ever sent where it was given for."</p>
                })}
                <label for=F_PROTOCOL>"Security protocol"</label>
                <select id=F_PROTOCOL name=F_PROTOCOL aria-invalid=f.invalid(F_PROTOCOL)>
                    {options(&[("", "Default: SASL_SSL with SASL, SSL with a CA certificate, else PLAINTEXT"), ("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT"), ("SASL_SSL", "SASL_SSL")], &v.security_protocol)}
                </select>
                {f.errors_for(F_PROTOCOL)}
                <label for=F_AUTH>"SASL"</label>
                <select id=F_AUTH name=F_AUTH aria-invalid=f.invalid(F_AUTH)>
                    {options(&[("", "None"), ("BASIC_AUTH", "BASIC_AUTH (SASL/PLAIN)"), ("SASL_SCRAM_256_AUTH", "SASL_SCRAM_256_AUTH"), ("SASL_SCRAM_512_AUTH", "SASL_SCRAM_512_AUTH")], &v.auth_kind)}
                </select>
                <p class="help">"For an MSK cluster's IAM access: the MSK cluster ARN above, SASL_SSL, and no SASL type (Sluice signs in with the mapping's AWS credentials)."</p>
                {f.errors_for(F_AUTH)}
                <Field name=F_AUTH_USER label="SASL user name" value=v.auth_username.clone()/>
                <label for=F_AUTH_PASSWORD>"SASL password"</label>
                <input id=F_AUTH_PASSWORD name=F_AUTH_PASSWORD type="password" autocomplete="new-password"
                    placeholder=v.auth_stored.is_some().then_some("stored (never shown): leave empty to keep it")/>
                {v.auth_stored.is_some().then(|| view! { <input type="hidden" name=F_AUTH_STORED value="on"/> })}
                <Field name=F_AUTH_URI label="Or the user name and password from Secrets Manager" value=v.auth_uri.clone()
                    placeholder="arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-…"
                    help="A JSON secret with username and password, read when the mapping starts (never stored)."/>
                <label for=F_CA>"CA certificate (optional)"</label>
                <textarea id=F_CA name=F_CA rows="3" placeholder="-----BEGIN CERTIFICATE-----">{rcdata(v.ca_certificate.clone())}</textarea>
                <p class="help">"PEM of the CA that signed the brokers' certificates, when it is not a public one."</p>
                <label for=F_CLIENT_CERT>"Client certificate (mutual TLS, optional)"</label>
                <textarea id=F_CLIENT_CERT name=F_CLIENT_CERT rows="3" placeholder="-----BEGIN CERTIFICATE-----">{rcdata(v.client_certificate.clone())}</textarea>
                <label for=F_CLIENT_KEY>"Client private key"</label>
                <textarea id=F_CLIENT_KEY name=F_CLIENT_KEY rows="3" autocomplete="off"
                    placeholder=if v.client_stored.is_some() { "stored (never shown): leave empty to keep it" } else { "-----BEGIN PRIVATE KEY-----" }></textarea>
                <label for=F_CLIENT_KEY_PASSWORD>"Private key password (if the key is encrypted)"</label>
                <input id=F_CLIENT_KEY_PASSWORD name=F_CLIENT_KEY_PASSWORD type="password" autocomplete="new-password"/>
                {v.client_stored.is_some().then(|| view! { <input type="hidden" name=F_CLIENT_STORED value="on"/> })}
                <p class="help">"PEM. The key and its password are never shown again; left empty while the certificate stays the same, the stored ones are kept."</p>
            </fieldset>
            <fieldset>
                <legend>"Schema registry (optional)"</legend>
                <p class="help">"Records framed by a schema registry (Avro, Protobuf or JSON Schema) are decoded and validated before filters and the function see them. A record whose schema the registry does not have goes to the on-failure destination as SCHEMA_NOT_FOUND, one that does not decode as DESERIALIZATION_ERROR (dropped without a destination)."</p>
                <Field name=F_SR_URI label="Registry" value=v.sr_uri.clone() placeholder="https://registry:8081 or arn:aws:glue:us-east-1:123456789012:registry/orders"
                    help="A Confluent-compatible registry's URL, or an AWS Glue Schema Registry ARN (read with the mapping's AWS credentials)."/>
                <label for=F_SR_FORMAT>"What the function receives"</label>
                <select id=F_SR_FORMAT name=F_SR_FORMAT aria-invalid=f.invalid(F_SR_FORMAT)>
                    {options(&[("", "Choose…"), ("JSON", "JSON: the decoded record as JSON"), ("SOURCE", "SOURCE: the original bytes, without the registry's header")], &v.sr_format)}
                </select>
                {f.errors_for(F_SR_FORMAT)}
                <Check name=F_SR_KEY on=v.sr_key.is_some() label=" Decode and validate the key"/>
                <Check name=F_SR_VALUE on=v.sr_value.is_some() label=" Decode and validate the value"/>
                {f.errors_for(F_SR_VALIDATE)}
                {v.sr_stored.is_some().then(|| view! {
                    <p class="notice" data-notice="registry-secret">"A registry password is stored. Changing the registry's URI clears it unless you enter it again."</p>
                })}
                <Field name=F_SR_USER label="Basic auth user name" value=v.sr_username.clone()/>
                <label for=F_SR_PASSWORD>"Basic auth password"</label>
                <input id=F_SR_PASSWORD name=F_SR_PASSWORD type="password" autocomplete="new-password"
                    placeholder=v.sr_stored.is_some().then_some("stored (never shown): leave empty to keep it")/>
                {v.sr_stored.is_some().then(|| view! { <input type="hidden" name=F_SR_STORED value="on"/> })}
                <Field name=F_SR_SECRET label="Or the user name and password from Secrets Manager" value=v.sr_secret_uri.clone()
                    placeholder="arn:aws:secretsmanager:us-east-1:123456789012:secret:registry-…"/>
                <label for=F_SR_CA>"Registry CA certificate (optional)"</label>
                <textarea id=F_SR_CA name=F_SR_CA rows="3" placeholder="-----BEGIN CERTIFICATE-----">{rcdata(v.sr_ca.clone())}</textarea>
                {f.errors_for(F_SR_ACCESS)}
                <div class="registry-test">
                    <label for="schema-id">"Schema id to read (optional)"</label>
                    <input id="schema-id" type="text" placeholder="a Confluent id or a Glue version UUID; empty: the first the registry lists"
                        prop:value=move || schema_id.get() on:input:target=move |ev| schema_id.set(ev.target().value())/>
                    <button type="button" class="button" data-action="test-registry" on:click=test_registry>"Test connection"</button>
                    {move || registry_test.get().map(|r| match r {
                        Ok(text) => view! { <p class="notice" data-registry-test="ok" data-attempt=attempt.get() role="status">{text}</p> }.into_any(),
                        Err(text) => view! { <p class="error" data-registry-test="error" data-attempt=attempt.get() role="alert">{text}</p> }.into_any(),
                    })}
                </div>
            </fieldset>
            <fieldset>
                <legend>"Target"</legend>
                <Field name=F_FUNCTION label="Function" value=v.function_name placeholder="my-function, arn:aws:lambda:…, or https://…"
                    help="An AWS Lambda function name or ARN, or an http(s):// URL that receives the event as a POST."/>
                <Field name=F_ROLE label="IAM role to assume (optional)" value=v.invocation_role_arn placeholder="arn:aws:iam::123456789012:role/…"
                    help="For this mapping's AWS calls (the function, an SQS/SNS/S3 destination, Secrets Manager, MSK IAM); empty: the node's own credentials."/>
                <Field name=F_BATCH label="Batch size" value=v.batch_size numeric=true help="1 to 10000 records per invocation (and at most 6 MB)."/>
                <Field name=F_WINDOW label="Batching window (seconds)" value=v.window numeric=true placeholder="empty: 0.5 s"
                    help="0 to 300. 0 invokes as soon as records arrive."/>
                <label for=F_FILTERS>"Filters"</label>
                <textarea id=F_FILTERS name=F_FILTERS rows="4" placeholder=r#"{"value": {"type": ["order"]}}"# aria-invalid=f.invalid(F_FILTERS)>{rcdata(v.filters)}</textarea>
                <p class="help">"Up to 10 EventBridge patterns, one per line. A record is invoked if any matches; empty: every record."</p>
                {f.errors_for(F_FILTERS)}
                <Check name=F_FILTER_META on=v.filter_on_metadata.is_some()
                    label=" Beyond AWS: let filters also match the record's key, headers, topic, partition and timestamp"/>
            </fieldset>
            <fieldset>
                <legend>"Failures"</legend>
                <Field name=F_RETRIES label="Maximum retry attempts" value=v.retries numeric=true help="-1: retry until the record expires; or 0 to 10000."/>
                <Field name=F_AGE label="Maximum record age (seconds)" value=v.record_age numeric=true help="-1: no limit; or 60 to 604800."/>
                <Field name=F_DESTINATION label="On-failure destination" value=v.on_failure placeholder="kafka://orders-dlq or an SQS/SNS/S3 ARN"/>
                <Check name=F_BISECT on=v.bisect.is_some() label=" Split a failing batch in two and retry each half"/>
                <Check name=F_PARTIAL on=v.report_batch_item_failures.is_some() value="ReportBatchItemFailures"
                    label=" Report batch item failures (partial batch response)"/>
            </fieldset>
            <fieldset>
                <legend>"Pollers"</legend>
                <Field name=F_MIN_POLLERS label="Minimum pollers" value=v.min_pollers numeric=true placeholder="empty: on demand"/>
                <Field name=F_MAX_POLLERS label="Maximum pollers" value=v.max_pollers numeric=true placeholder="empty: up to one per partition"/>
                <Field name=F_PARALLEL label="Batches in flight per partition (ParallelizationFactor)" value=v.parallel numeric=true placeholder="empty: 1"
                    help="1 to 100. Above 1, records are spread over that many lanes by key: one key stays in order, different keys run concurrently."/>
            </fieldset>
            <div class="form-actions">
                <button type="submit" class="button primary">{submit}</button>
                <a class="button subtle" href=cancel>"Cancel"</a>
            </div>
        </form>
    }
}

/// The form's validation state, shared by its fields through context.
#[derive(Clone, Copy)]
struct FormState {
    errors: RwSignal<Vec<FieldError>>,
    touched: RwSignal<HashSet<String>>,
    show_all: RwSignal<bool>,
}

impl FormState {
    /// The errors shown under input `name`: once it was left, or after a submit.
    fn errors_for(self, name: &'static str) -> impl Fn() -> AnyView + Send + Sync + 'static {
        move || {
            let touched = self.touched.get();
            let all = self.show_all.get();
            self.errors
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
                .into_any()
        }
    }

    fn invalid(self, name: &'static str) -> impl Fn() -> Option<&'static str> + Send + Sync + 'static {
        move || {
            let shown = self.show_all.get() || self.touched.get().iter().any(|t| t.starts_with(name));
            (shown && self.errors.get().iter().any(|e| e.is_for(name))).then_some("true")
        }
    }
}

/// A labelled text input with its help and its errors.
#[component]
fn Field(
    name: &'static str,
    label: &'static str,
    value: String,
    #[prop(optional)] placeholder: &'static str,
    #[prop(optional)] help: &'static str,
    #[prop(optional)] numeric: bool,
) -> impl IntoView {
    let f = expect_context::<FormState>();
    view! {
        <label for=name>{label}</label>
        <input id=name name=name value=value placeholder=(!placeholder.is_empty()).then_some(placeholder)
            inputmode=numeric.then_some("numeric") aria-invalid=f.invalid(name)/>
        {(!help.is_empty()).then(|| view! { <p class="help">{help}</p> })}
        {f.errors_for(name)}
    }
}

#[component]
fn Check(
    name: &'static str,
    label: &'static str,
    on: bool,
    #[prop(optional)] value: Option<&'static str>,
) -> impl IntoView {
    view! {
        <label for=name class="check"><input type="checkbox" id=name name=name value=value checked=on/>{label}</label>
    }
}

/// `[2].Pattern` → `filter 3`. Other paths need no prefix: their messages
/// quote the offending value.
fn describe_path(rest: &str) -> Option<String> {
    let index = rest.split(['[', ']']).find_map(|p| p.parse::<usize>().ok())?;
    if rest.contains("Filters") {
        return Some(format!("filter {}", index + 1));
    }
    // `[0].Password` → `Password` (Kafka authentication has one entry per kind).
    rest.rsplit_once("].").map(|(_, field)| field.to_string())
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

/// A select's `(value, label)` options, `current` selected.
fn options(items: &[(&'static str, &'static str)], current: &str) -> impl IntoView {
    items
        .iter()
        .map(|&(value, label)| view! { <option value=value selected=value == current>{label}</option> })
        .collect_view()
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

/// The hidden field every state-changing form carries: the server refuses
/// a post without the session's CSRF token. Read synchronously (the server's
/// request, or the page's `<meta name="csrf-token">` in the browser) so a
/// form renders the same on the server, in hydration and after client-side
/// navigation.
#[component]
pub fn Csrf() -> impl IntoView {
    view! { <input type="hidden" name="csrf" value=crate::api::csrf_token()/> }
}
