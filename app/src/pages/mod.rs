//! One file per page.

mod detail;
mod edit;
mod list;

pub use detail::MappingDetail;
pub use edit::{EditMapping, NewMapping};
pub use list::MappingList;

use leptos::prelude::*;

#[component]
pub fn NotFound() -> impl IntoView {
    crate::api::set_status(404);
    view! {
        <h1>"Not found"</h1>
        <p>"There is no page here. " <a href="/">"Back to the mappings"</a></p>
    }
}
