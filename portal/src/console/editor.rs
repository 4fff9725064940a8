//! The console's product editor: a product's draft and its plans (limits,
//! prices, caps, methods, mapping rules, …) as one YAML document in the
//! catalog file's format, read as `maas apply` reads a file, checked with
//! the rest of the catalog and saved
//! as a draft ([`maas_store::Store::save_product_draft`]); promotion stays
//! a separate step. Every mistake is shown on the form with its line and
//! field, and the text is kept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maas_conf::error::{ConfigError, ConfigErrors};
use maas_store::StoreError;
use maas_store::document::CatalogDocument;
use serde::Deserialize;
use serde_json::json;

use super::{AdminUser, require_admin};
use crate::PortalState;
use crate::render::PortalError;
use crate::session::{Posted, Visitor};

/// The most text the editor takes.
const MAX_YAML_BYTES: usize = 512 * 1024;
/// How the editor's text is named in its errors.
const SOURCE: &str = "draft";

async fn editor_page(
    state: &PortalState,
    visitor: &Visitor,
    name: &str,
    yaml: &str,
    version: &str,
    errors: &[ConfigError],
) -> Result<Response, PortalError> {
    let errors: Vec<_> = errors
        .iter()
        .map(|e| json!({"line": e.line, "field": e.field, "message": e.message}))
        .collect();
    let context = json!({"page": "admin", "section": "products", "product": name, "yaml": yaml,
        "version": version, "errors": errors});
    let mut response = state.page(visitor, "admin_product_edit.html", context)?;
    if !errors.is_empty() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn edit_page(
    State(state): State<PortalState>,
    AdminUser(visitor): AdminUser,
    Path(name): Path<String>,
) -> Result<Response, PortalError> {
    let draft = state
        .store()
        .product_draft(&name)
        .await?
        .ok_or_else(|| PortalError::not_found("No such product."))?;
    let document = CatalogDocument {
        products: vec![draft.product],
        plans: draft.plans,
        ..CatalogDocument::default()
    };
    let yaml = maas_conf::catalog_to_yaml(&document);
    editor_page(&state, &visitor, &name, &yaml, &draft.version, &[]).await
}

#[derive(Deserialize)]
pub struct EditorForm {
    #[serde(default)]
    yaml: String,
    #[serde(default)]
    version: String,
}

fn mistake(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        source: SOURCE.into(),
        line: None,
        field: field.into(),
        message: message.into(),
    }
}

/// What the editor's document may hold: the product `name` and its plans.
fn outside_the_product(document: &CatalogDocument, name: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if document.products.len() != 1 || document.products[0].system_name != name {
        errors.push(mistake(
            "products",
            format!(
                "exactly one product, `{name}` (create, rename or delete products with the admin API or `maas apply`)"
            ),
        ));
    }
    for (kind, count) in [
        ("backends", document.backends.len()),
        ("accounts", document.accounts.len()),
        ("users", document.users.len()),
        ("applications", document.applications.len()),
    ] {
        if count > 0 {
            errors.push(mistake(kind, "not edited here: only the product and its plans"));
        }
    }
    errors
}

/// Saves the edited draft, or shows the form again with every mistake.
pub async fn save(
    State(state): State<PortalState>,
    Path(name): Path<String>,
    Posted { visitor, form }: Posted<EditorForm>,
) -> Result<Response, PortalError> {
    require_admin(&visitor)?;
    if form.yaml.len() > MAX_YAML_BYTES {
        return Err(PortalError::bad_request("The text is over 512 KiB."));
    }
    // Types and syntax here; the store checks the whole catalog with the
    // draft in it (the text alone names no backend, so a file's own
    // cross-checks do not apply).
    let document = match maas_conf::yaml::parse::<CatalogDocument>(SOURCE, &form.yaml) {
        Ok(parsed) => parsed.value,
        Err(ConfigErrors(errors)) => {
            return editor_page(&state, &visitor, &name, &form.yaml, &form.version, &errors).await;
        }
    };
    let errors = outside_the_product(&document, &name);
    if !errors.is_empty() {
        return editor_page(&state, &visitor, &name, &form.yaml, &form.version, &errors).await;
    }
    let product = document.products[0].clone();
    let saved = visitor
        .store(&state)
        .save_product_draft(product, document.plans.clone(), &form.version)
        .await;
    match saved {
        Ok(_) => Ok(visitor.redirect("/admin/products")),
        Err(StoreError::Invalid(errors)) => {
            let errors = maas_conf::locate_apply_errors(SOURCE, &form.yaml, &document, errors).0;
            editor_page(&state, &visitor, &name, &form.yaml, &form.version, &errors).await
        }
        Err(StoreError::PreconditionFailed { .. }) => {
            let stale = mistake(
                "",
                "the draft changed since you opened it; nothing was saved. Your text is below: reload the page to \
                 start from the current draft",
            );
            editor_page(&state, &visitor, &name, &form.yaml, &form.version, &[stale]).await
        }
        Err(StoreError::Conflict(reason)) => {
            editor_page(
                &state,
                &visitor,
                &name,
                &form.yaml,
                &form.version,
                &[mistake("plans", reason)],
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}
