//! A product's draft and its plans, edited together (the console's
//! editor): read with one version, saved in one catalog write only if
//! nothing changed since, never promoted (the existing promotion does
//! that), plans left out deleted unless applications are on them.

use super::catalog::CatalogState;
use super::versions::etag;
use super::{CatalogDiff, Store};
use crate::error::{StoreError, StoreResult};
use crate::model::{Plan, Product};

/// A product's draft and every plan of it, with the version both were
/// read at.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductDraft {
    pub product: Product,
    pub plans: Vec<Plan>,
    pub version: String,
}

/// The version of `name`'s draft and plans in `catalog`.
fn draft_version(catalog: &CatalogState, name: &str) -> String {
    let product = catalog.products.get(name);
    let plans: Vec<&Plan> = catalog.plans.values().filter(|p| p.product == name).collect();
    etag(&(product, plans))
}

impl Store {
    /// Product `name`'s draft and plans, `None` when there is no such product.
    pub async fn product_draft(&self, name: &str) -> StoreResult<Option<ProductDraft>> {
        let catalog = self.load_catalog().await?;
        let Some(product) = catalog.products.get(name).cloned() else {
            return Ok(None);
        };
        let plans = catalog.plans.values().filter(|p| p.product == name).cloned().collect();
        Ok(Some(ProductDraft {
            product,
            plans,
            version: draft_version(&catalog, name),
        }))
    }

    /// Replaces product `product.system_name`'s draft and its plans with
    /// these, if they are still at version `seen` (else
    /// `PreconditionFailed`): plans not listed are deleted, which fails
    /// while applications are on them. The whole catalog is validated as
    /// on every write; nothing is promoted.
    pub async fn save_product_draft(&self, product: Product, plans: Vec<Plan>, seen: &str) -> StoreResult<CatalogDiff> {
        let name = product.system_name.clone();
        for (i, plan) in plans.iter().enumerate() {
            if plan.product != name {
                return Err(StoreError::invalid(
                    format!("plans[{i}].product"),
                    format!("must be `{name}`: this editor saves one product's plans"),
                ));
            }
        }
        self.edit_catalog(|catalog| {
            if !catalog.products.contains_key(&name) {
                return Err(StoreError::not_found("product", name.clone()));
            }
            if draft_version(catalog, &name) != seen {
                return Err(StoreError::PreconditionFailed {
                    kind: "product",
                    id: name.clone(),
                });
            }
            catalog.products.insert(name.clone(), product.clone());
            catalog.plans.retain(|_, plan| plan.product != name);
            for plan in &plans {
                catalog.plans.insert(super::catalog::plan_key(plan), plan.clone());
            }
            Ok(())
        })
        .await
    }
}
