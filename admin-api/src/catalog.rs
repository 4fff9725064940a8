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

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maas_store::model::{Backend, Plan, Product};
use maas_store::{CatalogDiff, Precondition, etag};
use serde::Serialize;

use crate::AdminState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::{JsonObject, QueryParams};
use crate::paging::{ListQuery, page};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/backends", get(list_backends))
        .route(
            "/backends/{name}",
            get(get_backend).put(put_backend).delete(delete_backend),
        )
        .route("/products", get(list_products))
        .route(
            "/products/{name}",
            get(get_product).put(put_product).delete(delete_product),
        )
        .route("/products/{product}/plans", get(list_plans))
        .route(
            "/products/{product}/plans/{plan}",
            get(get_plan).put(put_plan).delete(delete_plan),
        )
}

/// The precondition a write's headers state.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition<'_>, ApiError> {
    if let Some(value) = headers.get(header::IF_MATCH) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid_field("If-Match", "is not text"))?
            .trim();
        if value == "*" {
            return Ok(Precondition::Any);
        }
        let tag = value.strip_prefix("W/").unwrap_or(value);
        return tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .map(Precondition::Matches)
            .ok_or_else(|| ApiError::invalid_field("If-Match", "must be a quoted ETag such as \"9f2c…\""));
    }
    match headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes()) {
        Some(b"*") => Ok(Precondition::Absent),
        Some(_) => Err(ApiError::invalid_field(
            "If-None-Match",
            "only `*` is supported on writes",
        )),
        None => Ok(Precondition::Any),
    }
}

/// `value` as JSON with its `ETag`.
pub fn tagged<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, [(header::ETAG, format!("\"{}\"", etag(value)))], Json(value)).into_response()
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

async fn list_backends(admin: Admin, QueryParams(query): QueryParams<ListQuery>) -> Result<Response, ApiError> {
    let backends = admin.store.list_backends().await?;
    Ok(Json(page(backends, |b| b.system_name.clone(), &query)?).into_response())
}

async fn get_backend(admin: Admin, Path(name): Path<String>) -> Result<Response, ApiError> {
    found("backend", &name, admin.store.get_backend(&name).await?)
}

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

async fn delete_backend(admin: Admin, Path(name): Path<String>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    admin.store.delete_backend_if(&name, precondition(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_products(admin: Admin, QueryParams(query): QueryParams<ListQuery>) -> Result<Response, ApiError> {
    let products = admin.store.list_products().await?;
    Ok(Json(page(products, |p| p.system_name.clone(), &query)?).into_response())
}

async fn get_product(admin: Admin, Path(name): Path<String>) -> Result<Response, ApiError> {
    found("product", &name, admin.store.get_product(&name).await?)
}

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

async fn delete_product(admin: Admin, Path(name): Path<String>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    admin.store.delete_product_if(&name, precondition(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn get_plan(admin: Admin, Path((product, plan)): Path<(String, String)>) -> Result<Response, ApiError> {
    found(
        "plan",
        &format!("{product}/{plan}"),
        admin.store.get_plan(&product, &plan).await?,
    )
}

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
