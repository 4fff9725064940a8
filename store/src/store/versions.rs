//! Optimistic concurrency for catalog objects, as HTTP's `ETag` and
//! `If-Match`: a reader gets a version tag with an object, and a write
//! naming that tag succeeds only if the object is still that version. The
//! check runs inside the catalog edit, which commits only if the catalog
//! revision it read is still current, so check and write are one atomic
//! step.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Store;
use super::catalog::{CatalogDiff, plan_id};
use crate::error::{StoreError, StoreResult};
use crate::ids::hex;
use crate::model::{Backend, Plan, Product};

/// The version tag of a value: 16 hex digits of the SHA-256 of its JSON.
pub fn etag<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex(&Sha256::digest(&json)[..8])
}

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// Whatever is there (no `If-Match`).
    Any,
    /// The object at this version (`If-Match: "<etag>"`).
    Matches(&'a str),
    /// No such object yet (`If-None-Match: *`): create, never replace.
    Absent,
}

/// Whether `current` is at the version `precondition` names.
pub fn check<T: Serialize>(
    kind: &'static str,
    id: &str,
    current: Option<&T>,
    precondition: Precondition<'_>,
) -> StoreResult<()> {
    let holds = match (precondition, current) {
        (Precondition::Any, _) => true,
        (Precondition::Matches(tag), Some(current)) => etag(current) == tag,
        (Precondition::Matches(_), None) => return Err(StoreError::not_found(kind, id)),
        (Precondition::Absent, current) => current.is_none(),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed {
            kind,
            id: id.to_owned(),
        })
    }
}

impl Store {
    /// [`put_backend`](Store::put_backend) if `precondition` holds.
    pub async fn put_backend_if(&self, backend: Backend, precondition: Precondition<'_>) -> StoreResult<CatalogDiff> {
        self.edit_catalog(|c| {
            let name = &backend.system_name;
            check("backend", name, c.backends.get(name), precondition)?;
            c.backends.insert(name.clone(), backend.clone());
            Ok(())
        })
        .await
    }

    /// [`delete_backend`](Store::delete_backend) if `precondition` holds.
    pub async fn delete_backend_if(&self, name: &str, precondition: Precondition<'_>) -> StoreResult<CatalogDiff> {
        self.edit_catalog(|c| {
            check("backend", name, c.backends.get(name), precondition)?;
            c.backends
                .remove(name)
                .map(drop)
                .ok_or_else(|| StoreError::not_found("backend", name))
        })
        .await
    }

    /// [`put_product`](Store::put_product) if `precondition` holds.
    pub async fn put_product_if(&self, product: Product, precondition: Precondition<'_>) -> StoreResult<CatalogDiff> {
        self.edit_catalog(|c| {
            let name = &product.system_name;
            check("product", name, c.products.get(name), precondition)?;
            c.products.insert(name.clone(), product.clone());
            Ok(())
        })
        .await
    }

    /// [`delete_product`](Store::delete_product) if `precondition` holds.
    pub async fn delete_product_if(&self, name: &str, precondition: Precondition<'_>) -> StoreResult<CatalogDiff> {
        self.edit_catalog(|c| {
            check("product", name, c.products.get(name), precondition)?;
            c.products
                .remove(name)
                .ok_or_else(|| StoreError::not_found("product", name))?;
            c.plans.retain(|_, plan| plan.product != name);
            Ok(())
        })
        .await
    }

    /// [`put_plan`](Store::put_plan) if `precondition` holds.
    pub async fn put_plan_if(&self, plan: Plan, precondition: Precondition<'_>) -> StoreResult<CatalogDiff> {
        let id = plan_id(&plan.product, &plan.system_name);
        self.edit_catalog(|c| {
            check("plan", &id, c.plans.get(&id), precondition)?;
            c.plans.insert(id.clone(), plan.clone());
            Ok(())
        })
        .await
    }

    /// [`delete_plan`](Store::delete_plan) if `precondition` holds.
    pub async fn delete_plan_if(
        &self,
        product: &str,
        name: &str,
        precondition: Precondition<'_>,
    ) -> StoreResult<CatalogDiff> {
        let id = plan_id(product, name);
        self.edit_catalog(|c| {
            check("plan", &id, c.plans.get(&id), precondition)?;
            c.plans
                .remove(&id)
                .map(drop)
                .ok_or_else(|| StoreError::not_found("plan", &id))
        })
        .await
    }
}
