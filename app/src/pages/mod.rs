//! One file per page.

mod audit;
mod detail;
mod edit;
mod failures;
mod filters;
mod list;
mod login;
mod nodes;
mod reset;
mod tokens;

pub use audit::Audit;
pub use detail::MappingDetail;
pub use edit::{EditMapping, NewMapping};
pub use failures::{FailedRecords, MappingTabs};
pub use filters::FilterTester;
pub use list::MappingList;
pub use login::Login;
pub use nodes::Nodes;
pub use reset::{AuditLog, ResetMapping};
pub use tokens::{PostedToken, Tokens};

use leptos::prelude::*;

#[component]
pub fn NotFound() -> impl IntoView {
    crate::api::set_status(404);
    view! {
        <h1>"Not found"</h1>
        <p>"There is no page here. " <a href="/">"Back to the mappings"</a></p>
    }
}
