//! Backends, products (drafts: promote them to serve them) and plans.
//!
//! | route | methods |
//! | --- | --- |
//! | `/backends`, `/products`, `/products/{product}/plans` | `GET` (list) |
//! | `/backends/{name}`, `/products/{name}`, `/products/{product}/plans/{plan}` | `GET`, `PUT` (create or replace), `DELETE` |
//!
//! Every read carries an `ETag`; a write with `If-Match: "<etag>"` applies
//! only to that version (409 `stale_version` otherwise), one with
//! `If-None-Match: *` only creates. The name in the URL is the object's
//! `system_name` (a body naming another is refused).

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maas_store::CatalogDiff;
use maas_store::model::{Backend, Plan, Product};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::conditional::{WritePreconditions, precondition, tagged};
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{ListPage, ListQuery, page};

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_backends))
        .routes(routes!(get_backend, put_backend, delete_backend))
        .routes(routes!(list_products))
        .routes(routes!(get_product, put_product, delete_product))
        .routes(routes!(list_plans))
        .routes(routes!(get_plan, put_plan, delete_plan))
}

fn written<T: Serialize>(diff: &CatalogDiff, value: &T) -> Response {
    let status = if diff.created.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    tagged(status, value)
}

fn found<T: Serialize>(kind: &'static str, id: &str, value: Option<T>) -> Result<Response, ApiError> {
    let value = value.ok_or_else(|| ApiError::not_found(kind, id))?;
    Ok(tagged(StatusCode::OK, &value))
}

/// List backends
#[utoipa::path(get, path = "/backends", tag = "catalog", params(ListQuery),
    responses((status = OK, description = "One page of backends, by name", body = ListPage<Backend>)))]
async fn list_backends(admin: Admin, QueryParams(query): QueryParams<ListQuery>) -> Result<Response, ApiError> {
    let backends = admin.store.list_backends().await?;
    Ok(Json(page(backends, |b| b.system_name.clone(), &query)?).into_response())
}

/// Read a backend
#[utoipa::path(get, path = "/backends/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The backend's `system_name`")),
    responses((status = OK, body = Backend, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_backend(admin: Admin, Path(name): Path<String>) -> Result<Response, ApiError> {
    found("backend", &name, admin.store.get_backend(&name).await?)
}

/// Create or replace a backend
#[utoipa::path(put, path = "/backends/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The backend's `system_name`"), WritePreconditions),
    request_body = Backend,
    responses(
        (status = OK, description = "Replaced", body = Backend, headers(("ETag" = String, description = "The version, for `If-Match`"))),
        (status = CREATED, description = "Created", body = Backend, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn put_backend(
    admin: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    body.set_from_path("system_name", &name)?;
    let backend: Backend = body.parse()?;
    let diff = admin
        .store
        .put_backend_if(backend.clone(), precondition(&headers)?)
        .await?;
    Ok(written(&diff, &backend))
}

/// Delete a backend
#[utoipa::path(delete, path = "/backends/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The backend's `system_name`"), WritePreconditions),
    responses((status = NO_CONTENT, description = "Deleted")))]
async fn delete_backend(admin: Admin, Path(name): Path<String>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    admin.store.delete_backend_if(&name, precondition(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List products (drafts)
#[utoipa::path(get, path = "/products", tag = "catalog", params(ListQuery),
    responses((status = OK, description = "One page of products, by name", body = ListPage<Product>)))]
async fn list_products(admin: Admin, QueryParams(query): QueryParams<ListQuery>) -> Result<Response, ApiError> {
    let products = admin.store.list_products().await?;
    Ok(Json(page(products, |p| p.system_name.clone(), &query)?).into_response())
}

/// Read a product's draft
#[utoipa::path(get, path = "/products/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The product's `system_name`")),
    responses((status = OK, body = Product, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_product(admin: Admin, Path(name): Path<String>) -> Result<Response, ApiError> {
    found("product", &name, admin.store.get_product(&name).await?)
}

/// Create or replace a product's draft
#[utoipa::path(put, path = "/products/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The product's `system_name`"), WritePreconditions),
    request_body = Product,
    responses(
        (status = OK, description = "Replaced", body = Product, headers(("ETag" = String, description = "The version, for `If-Match`"))),
        (status = CREATED, description = "Created", body = Product, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn put_product(
    admin: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    body.set_from_path("system_name", &name)?;
    let product: Product = body.parse()?;
    let diff = admin
        .store
        .put_product_if(product.clone(), precondition(&headers)?)
        .await?;
    Ok(written(&diff, &product))
}

/// Delete a product
#[utoipa::path(delete, path = "/products/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The product's `system_name`"), WritePreconditions),
    responses((status = NO_CONTENT, description = "Deleted")))]
async fn delete_product(admin: Admin, Path(name): Path<String>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    admin.store.delete_product_if(&name, precondition(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a product's plans
#[utoipa::path(get, path = "/products/{product}/plans", tag = "catalog", params(("product" = String, Path, description = "The product's `system_name`"), ListQuery),
    responses((status = OK, description = "One page of the product's plans, by name", body = ListPage<Plan>)))]
async fn list_plans(
    admin: Admin,
    Path(product): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    if admin.store.get_product(&product).await?.is_none() {
        return Err(ApiError::not_found("product", &product));
    }
    let plans = admin.store.list_plans(Some(&product)).await?;
    Ok(Json(page(plans, |p| p.system_name.clone(), &query)?).into_response())
}

/// Read a plan
#[utoipa::path(get, path = "/products/{product}/plans/{plan}", tag = "catalog", params(("product" = String, Path, description = "The product's `system_name`"), ("plan" = String, Path, description = "The plan's `system_name`")),
    responses((status = OK, body = Plan, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn get_plan(admin: Admin, Path((product, plan)): Path<(String, String)>) -> Result<Response, ApiError> {
    found(
        "plan",
        &format!("{product}/{plan}"),
        admin.store.get_plan(&product, &plan).await?,
    )
}

/// Create or replace a plan
#[utoipa::path(put, path = "/products/{product}/plans/{plan}", tag = "catalog",
    params(("product" = String, Path, description = "The product's `system_name`"), ("plan" = String, Path, description = "The plan's `system_name`"), WritePreconditions),
    request_body = Plan,
    responses(
        (status = OK, description = "Replaced", body = Plan, headers(("ETag" = String, description = "The version, for `If-Match`"))),
        (status = CREATED, description = "Created", body = Plan, headers(("ETag" = String, description = "The version, for `If-Match`")))))]
async fn put_plan(
    admin: Admin,
    Path((product, plan)): Path<(String, String)>,
    headers: HeaderMap,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    body.set_from_path("product", &product)?;
    body.set_from_path("system_name", &plan)?;
    let plan: Plan = body.parse()?;
    let diff = admin.store.put_plan_if(plan.clone(), precondition(&headers)?).await?;
    Ok(written(&diff, &plan))
}

/// Delete a plan
#[utoipa::path(delete, path = "/products/{product}/plans/{plan}", tag = "catalog",
    params(("product" = String, Path, description = "The product's `system_name`"), ("plan" = String, Path, description = "The plan's `system_name`"), WritePreconditions),
    responses((status = NO_CONTENT, description = "Deleted")))]
async fn delete_plan(
    admin: Admin,
    Path((product, plan)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin
        .store
        .delete_plan_if(&product, &plan, precondition(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
