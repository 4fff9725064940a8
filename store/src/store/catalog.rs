//! Catalog operations: backends, products (draft and released versions per
//! environment) and plans.
//!
//! Every catalog write reads the whole catalog, applies the edit, validates
//! the result as one catalog and commits only the objects that changed,
//! conditioned on the catalog revision it read: references cannot dangle
//! whatever order edits arrive in, and concurrent writers never overwrite
//! each other silently.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::versions::Precondition;
use super::{Store, encode};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::model::{Backend, Plan, Product};
use crate::validate::{ByName, validate_catalog};

const REVISION_KEY: &str = "catalog:revision";
const MAX_ATTEMPTS: usize = 8;

/// Where a released product version is served. The draft (the editable
/// product) is served nowhere until promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staging" => Ok(Environment::Staging),
            "production" => Ok(Environment::Production),
            _ => Err(format!("unknown environment `{s}` (staging, production)")),
        }
    }
}

/// A numbered, immutable snapshot of a product's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductRelease {
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub config: Product,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EnvironmentPointer {
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
}

/// The catalog at one revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CatalogSnapshot {
    /// Bumped by every catalog write; 0 for an empty store.
    pub revision: u64,
    pub backends: Vec<Backend>,
    pub products: Vec<Product>,
    pub plans: Vec<Plan>,
}

impl CatalogSnapshot {
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.system_name == name)
    }
    pub fn product(&self, name: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.system_name == name)
    }
    pub fn plan(&self, product: &str, name: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.product == product && p.system_name == name)
    }
}

/// The editable catalog a write works on.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CatalogState {
    pub revision: u64,
    pub backends: BTreeMap<String, Backend>,
    pub products: BTreeMap<String, Product>,
    /// Keyed by `product/plan`.
    pub plans: BTreeMap<String, Plan>,
}

pub(crate) fn plan_id(product: &str, plan: &str) -> String {
    format!("{product}/{plan}")
}

pub(crate) fn plan_key(plan: &Plan) -> String {
    plan_id(&plan.product, &plan.system_name)
}

fn release_member(version: u64) -> String {
    format!("{version:012}")
}

/// Objects a catalog write created, updated and deleted (`kind name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogDiff {
    pub revision: u64,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

impl CatalogDiff {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

impl Store {
    async fn catalog_revision(&self) -> StoreResult<u64> {
        Ok(self.get_json::<u64>(REVISION_KEY).await?.unwrap_or(0))
    }

    pub(crate) async fn load_catalog(&self) -> StoreResult<CatalogState> {
        for _ in 0..MAX_ATTEMPTS {
            let revision = self.catalog_revision().await?;
            let mut state = CatalogState {
                revision,
                ..CatalogState::default()
            };
            let names = self.all_members("backends").await?;
            let keys: Vec<String> = names.iter().map(|n| format!("backend:{n}")).collect();
            for backend in self.get_many_json::<Backend>(&keys).await?.into_iter().flatten() {
                state.backends.insert(backend.system_name.clone(), backend);
            }
            let names = self.all_members("products").await?;
            let keys: Vec<String> = names.iter().map(|n| format!("product:{n}")).collect();
            for product in self.get_many_json::<Product>(&keys).await?.into_iter().flatten() {
                state.products.insert(product.system_name.clone(), product);
            }
            let names = self.all_members("plans").await?;
            let keys: Vec<String> = names.iter().map(|n| format!("plan:{n}")).collect();
            for plan in self.get_many_json::<Plan>(&keys).await?.into_iter().flatten() {
                state.plans.insert(plan_id(&plan.product, &plan.system_name), plan);
            }
            // A write landing between the reads above would tear the snapshot.
            if self.catalog_revision().await? == revision {
                return Ok(state);
            }
        }
        Err(StoreError::Conflict(
            "the catalog kept changing while being read".into(),
        ))
    }

    /// The catalog as edited (product drafts).
    pub async fn catalog(&self) -> StoreResult<CatalogSnapshot> {
        let state = self.load_catalog().await?;
        Ok(CatalogSnapshot {
            revision: state.revision,
            backends: state.backends.into_values().collect(),
            products: state.products.into_values().collect(),
            plans: state.plans.into_values().collect(),
        })
    }

    /// The catalog a proxy of `environment` serves: each product as its
    /// release in that environment; products never released there are left out.
    pub async fn catalog_for(&self, environment: Environment) -> StoreResult<CatalogSnapshot> {
        let mut snapshot = self.catalog().await?;
        let mut released = Vec::with_capacity(snapshot.products.len());
        for product in &snapshot.products {
            if let Some(release) = self.release(&product.system_name, environment).await? {
                released.push(release.config);
            }
        }
        snapshot.products = released;
        Ok(snapshot)
    }

    /// Applies `edit` to the catalog, validates the result and commits what
    /// changed, retrying if another writer got in between.
    pub(crate) async fn edit_catalog(
        &self,
        edit: impl Fn(&mut CatalogState) -> StoreResult<()>,
    ) -> StoreResult<CatalogDiff> {
        for _ in 0..MAX_ATTEMPTS {
            let old = self.load_catalog().await?;
            let mut new = old.clone();
            edit(&mut new)?;
            // What this edit changed goes last, so that a clash between it
            // and what was there is reported on the changed object.
            fn unchanged_first<T: Clone + PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Vec<T> {
                let (same, changed): (Vec<_>, Vec<_>) = new.iter().partition(|(k, v)| old.get(*k) == Some(*v));
                same.into_iter().chain(changed).map(|(_, v)| v.clone()).collect()
            }
            let backends: Vec<Backend> = unchanged_first(&old.backends, &new.backends);
            let products: Vec<Product> = unchanged_first(&old.products, &new.products);
            let plans: Vec<Plan> = unchanged_first(&old.plans, &new.plans);
            validate_catalog(&backends, &products, &plans, &ByName)?;

            let revision = old.revision + 1;
            let mut diff = CatalogDiff {
                revision,
                ..CatalogDiff::default()
            };
            let mut batch = WriteBatch::default();
            let mut audit = Vec::new();
            batch.require(match old.revision {
                0 => Condition::Absent(REVISION_KEY.into()),
                n => Condition::Equals(REVISION_KEY.into(), encode(&n)?),
            });
            let mut guarded = Vec::new();

            for (name, before, after) in changed(&old.backends, &new.backends) {
                self.stage(
                    &mut batch, &mut audit, &mut diff, "backend", "backends", name, before, after,
                )?;
            }
            for (name, before, after) in changed(&old.products, &new.products) {
                if after.is_none() {
                    let apps = format!("product-apps:{name}");
                    guarded.push((
                        batch.conditions.len(),
                        format!("product `{name}` has applications; delete them first"),
                    ));
                    batch.require(Condition::Empty(apps));
                    for member in self.all_members(&format!("releases:{name}")).await? {
                        batch.delete(format!("release:{name}:{member}"));
                        batch.remove_member(format!("releases:{name}"), member);
                    }
                    for environment in [Environment::Staging, Environment::Production] {
                        batch.delete(format!("env:{name}:{environment}"));
                    }
                }
                self.stage(
                    &mut batch, &mut audit, &mut diff, "product", "products", name, before, after,
                )?;
            }
            for (id, before, after) in changed(&old.plans, &new.plans) {
                if after.is_none() {
                    guarded.push((
                        batch.conditions.len(),
                        format!("plan `{id}` has applications; move or delete them first"),
                    ));
                    batch.require(Condition::Empty(format!("plan-apps:{id}")));
                }
                self.stage(&mut batch, &mut audit, &mut diff, "plan", "plans", id, before, after)?;
            }
            if diff.is_empty() {
                diff.revision = old.revision;
                return Ok(diff);
            }
            batch.put(REVISION_KEY, encode(&revision)?);
            batch.publish(Change::Catalog { revision });
            match self.commit(batch, audit).await? {
                Ok(()) => return Ok(diff),
                Err(failed) if failed.0 == 0 => continue,
                Err(failed) => {
                    let reason = guarded
                        .into_iter()
                        .find(|(index, _)| *index == failed.0)
                        .map(|(_, reason)| reason)
                        .unwrap_or_else(|| "a concurrent change got in the way; try again".into());
                    return Err(StoreError::Conflict(reason));
                }
            }
        }
        Err(StoreError::Conflict(
            "the catalog changed concurrently too often; try again".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn stage<T: Serialize + PartialEq>(
        &self,
        batch: &mut WriteBatch,
        audit: &mut Vec<super::AuditEntry>,
        diff: &mut CatalogDiff,
        kind: &str,
        collection: &str,
        id: &str,
        before: Option<&T>,
        after: Option<&T>,
    ) -> StoreResult<()> {
        let key = format!("{kind}:{id}");
        let action = match (before, after) {
            (None, Some(value)) => {
                batch.put(key, encode(value)?).add_member(collection, id);
                diff.created.push(format!("{kind} {id}"));
                "create"
            }
            (Some(_), Some(value)) => {
                batch.put(key, encode(value)?);
                diff.updated.push(format!("{kind} {id}"));
                "update"
            }
            (Some(_), None) => {
                batch.delete(key).remove_member(collection, id);
                diff.deleted.push(format!("{kind} {id}"));
                "delete"
            }
            (None, None) => return Ok(()),
        };
        audit.push(self.audit_entry(action, kind, id, before, after));
        Ok(())
    }

    pub async fn get_backend(&self, name: &str) -> StoreResult<Option<Backend>> {
        self.get_json(&format!("backend:{name}")).await
    }

    pub async fn list_backends(&self) -> StoreResult<Vec<Backend>> {
        Ok(self.catalog().await?.backends)
    }

    /// Creates or replaces a backend.
    pub async fn put_backend(&self, backend: Backend) -> StoreResult<CatalogDiff> {
        self.put_backend_if(backend, Precondition::Any).await
    }

    /// Deletes a backend no product uses.
    pub async fn delete_backend(&self, name: &str) -> StoreResult<CatalogDiff> {
        self.delete_backend_if(name, Precondition::Any).await
    }

    /// The draft of a product.
    pub async fn get_product(&self, name: &str) -> StoreResult<Option<Product>> {
        self.get_json(&format!("product:{name}")).await
    }

    pub async fn list_products(&self) -> StoreResult<Vec<Product>> {
        Ok(self.catalog().await?.products)
    }

    /// Creates or replaces the draft of a product; promote it to serve it.
    pub async fn put_product(&self, product: Product) -> StoreResult<CatalogDiff> {
        self.put_product_if(product, Precondition::Any).await
    }

    /// Deletes a product, its plans and releases, unless applications use it.
    pub async fn delete_product(&self, name: &str) -> StoreResult<CatalogDiff> {
        self.delete_product_if(name, Precondition::Any).await
    }

    pub async fn get_plan(&self, product: &str, name: &str) -> StoreResult<Option<Plan>> {
        self.get_json(&format!("plan:{}", plan_id(product, name))).await
    }

    /// Plans of one product, or of all products.
    pub async fn list_plans(&self, product: Option<&str>) -> StoreResult<Vec<Plan>> {
        let mut plans = self.catalog().await?.plans;
        plans.retain(|p| product.is_none_or(|name| p.product == name));
        Ok(plans)
    }

    pub async fn put_plan(&self, plan: Plan) -> StoreResult<CatalogDiff> {
        self.put_plan_if(plan, Precondition::Any).await
    }

    /// Deletes a plan no application is on.
    pub async fn delete_plan(&self, product: &str, name: &str) -> StoreResult<CatalogDiff> {
        self.delete_plan_if(product, name, Precondition::Any).await
    }

    /// The release serving `product` in `environment`, if any.
    pub async fn release(&self, product: &str, environment: Environment) -> StoreResult<Option<ProductRelease>> {
        let Some(pointer) = self
            .get_json::<EnvironmentPointer>(&format!("env:{product}:{environment}"))
            .await?
        else {
            return Ok(None);
        };
        self.get_json(&format!("release:{product}:{}", release_member(pointer.version)))
            .await
    }

    /// Every release of a product, oldest first.
    pub async fn releases(&self, product: &str) -> StoreResult<Vec<ProductRelease>> {
        let members = self.all_members(&format!("releases:{product}")).await?;
        let keys: Vec<String> = members.iter().map(|m| format!("release:{product}:{m}")).collect();
        Ok(self.get_many_json(&keys).await?.into_iter().flatten().collect())
    }

    /// Staging gets the current draft (as a new version unless it equals the
    /// latest release); production gets what staging serves. Returns the
    /// version now served; promoting twice changes nothing.
    pub async fn promote(&self, product: &str, environment: Environment) -> StoreResult<u64> {
        let version = match environment {
            Environment::Staging => {
                let draft = self
                    .get_product(product)
                    .await?
                    .ok_or_else(|| StoreError::not_found("product", product))?;
                let latest = self
                    .backend
                    .members(&format!("releases:{product}"), None, 1, true)
                    .await?;
                let latest: Option<ProductRelease> = match latest.first() {
                    Some(member) => self.get_json(&format!("release:{product}:{member}")).await?,
                    None => None,
                };
                match latest {
                    Some(release) if release.config == draft => release.version,
                    latest => {
                        let release = ProductRelease {
                            version: latest.map_or(1, |r| r.version + 1),
                            created_at: self.now(),
                            config: draft,
                        };
                        let member = release_member(release.version);
                        let mut batch = WriteBatch::default();
                        batch
                            .require(Condition::Exists(format!("product:{product}")))
                            .require(Condition::Absent(format!("release:{product}:{member}")))
                            .put(format!("release:{product}:{member}"), encode(&release)?)
                            .add_member(format!("releases:{product}"), member);
                        let audit = vec![self.audit_entry("release", "product", product, None, Some(&release))];
                        self.commit(batch, audit).await?.map_err(|_| {
                            StoreError::Conflict(format!("product `{product}` changed during promotion; try again"))
                        })?;
                        release.version
                    }
                }
            }
            Environment::Production => {
                self.release(product, Environment::Staging)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Conflict(format!("product `{product}` has nothing in staging to promote"))
                    })?
                    .version
            }
        };
        self.point(product, environment, version, "promote").await?;
        Ok(version)
    }

    /// Serves an earlier (or any existing) release in `environment`.
    pub async fn rollback(&self, product: &str, environment: Environment, version: u64) -> StoreResult<()> {
        self.point(product, environment, version, "rollback").await
    }

    async fn point(&self, product: &str, environment: Environment, version: u64, action: &str) -> StoreResult<()> {
        let key = format!("env:{product}:{environment}");
        let current = self.get_json::<EnvironmentPointer>(&key).await?;
        if current.as_ref().is_some_and(|p| p.version == version) {
            return Ok(());
        }
        let release = format!("release:{product}:{}", release_member(version));
        let pointer = EnvironmentPointer {
            version,
            since: self.now(),
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(release))
            .put(key, encode(&pointer)?)
            .publish(Change::Release {
                product: product.to_owned(),
                environment,
                version,
            });
        let audit = vec![self.audit_entry(
            action,
            "environment",
            &format!("{product}/{environment}"),
            current.as_ref(),
            Some(&pointer),
        )];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("release", format!("{product} v{version}")))
    }
}

/// Entries that differ between two maps: (key, before, after).
fn changed<'a, T: PartialEq>(
    old: &'a BTreeMap<String, T>,
    new: &'a BTreeMap<String, T>,
) -> Vec<(&'a str, Option<&'a T>, Option<&'a T>)> {
    let mut out = Vec::new();
    for (key, before) in old {
        match new.get(key) {
            Some(after) if after == before => {}
            after => out.push((key.as_str(), Some(before), after)),
        }
    }
    for (key, after) in new {
        if !old.contains_key(key) {
            out.push((key.as_str(), None, Some(after)));
        }
    }
    out
}
