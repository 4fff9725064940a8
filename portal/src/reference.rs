//! A product's page for developers: what it is, its plans, copy-paste
//! examples filled with its endpoint and model (curl, Python and Node
//! `openai`, LangChain, Continue.dev, k6), and its API reference: the
//! product's own OpenAPI document, or an OpenAI-compatible one generated
//! for it, in Swagger UI (assets compiled in) with "Try it out" against
//! the gateway using the visitor's key.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::Product;
use serde_json::{Value, json};

use crate::PortalState;
use crate::developer::{offer_context, served_offer};
use crate::render::PortalError;
use crate::session::Visitor;

/// Where the viewer's assets are mounted.
pub const VIEWER_ASSETS: &str = "/assets/api-viewer";

pub async fn product(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, PortalError> {
    let offer = served_offer(&state, &name).await?;
    let context = json!({"page": "models", "product": offer_context(&state, &offer)});
    state.page(&visitor, "product.html", context)
}

/// The product's OpenAPI document, with the endpoint as its server.
pub async fn openapi(State(state): State<PortalState>, Path(name): Path<String>) -> Result<Response, PortalError> {
    let offer = served_offer(&state, &name).await?;
    let endpoint = crate::developer::endpoint(&state, &offer.product);
    let mut document = match &offer.product.openapi {
        Some(document) => document.clone(),
        None => openai_compatible(&offer.product),
    };
    if let Value::Object(map) = &mut document {
        map.insert(
            "servers".into(),
            json!([{"url": endpoint, "description": "The gateway"}]),
        );
    }
    let mut response = axum::Json(document).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    Ok(response)
}

/// Swagger UI needs inline styles, and "Try it out" calls the gateway.
fn viewer_policy(gateway_origin: Option<&str>) -> HeaderValue {
    let connect = gateway_origin.map_or_else(|| "'self'".to_owned(), |o| format!("'self' {o}"));
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         connect-src {connect}; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

pub async fn viewer(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, PortalError> {
    let offer = served_offer(&state, &name).await?;
    let context = json!({"page": "models", "product": offer_context(&state, &offer),
        "spec_url": format!("/models/{}/openapi.json", offer.product.system_name), "assets": VIEWER_ASSETS});
    let mut response = state.page(&visitor, "api_reference.html", context)?;
    let origin = crate::security::origin(&state.options().gateway_url);
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, viewer_policy(origin.as_deref()));
    Ok(response)
}

/// Starts Swagger UI on the page's `#swagger-ui`, reading the document's
/// URL from its `data-spec` (the page carries no inline script).
pub async fn viewer_script() -> Response {
    const SCRIPT: &str = "const root = document.getElementById('swagger-ui');\n\
window.ui = SwaggerUIBundle({ url: root.dataset.spec, dom_id: '#swagger-ui', deepLinking: true, tryItOutEnabled: true });\n";
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// An OpenAI-compatible description of `product`: the endpoints the
/// gateway serves, the product's models as the `model` values.
pub fn openai_compatible(product: &Product) -> Value {
    let models = if product.models.is_empty() {
        json!({"type": "string"})
    } else {
        json!({"type": "string", "enum": product.models})
    };
    let title = if product.name.is_empty() {
        product.system_name.clone()
    } else {
        product.name.clone()
    };
    let usage = json!({"type": "object", "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}});
    let error = json!({"description": "An OpenAI-shaped error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let errors = json!({
        "401": error, "403": error, "404": error, "429": {
            "description": "A plan limit was reached; `Retry-After` says when to try again",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    });
    let operation = |summary: &str, request: Value, response: Value, example: Value| {
        let mut responses =
            json!({"200": {"description": "OK", "content": {"application/json": {"schema": response}}}});
        if let (Value::Object(all), Value::Object(more)) = (&mut responses, errors.clone()) {
            all.extend(more);
        }
        json!({"summary": summary, "requestBody": {"required": true, "content": {"application/json": {
            "schema": request, "example": example}}}, "responses": responses})
    };
    let first = product.models.first().cloned().unwrap_or_else(|| "MODEL".into());
    json!({
        "openapi": "3.1.0",
        "info": {"title": format!("{title} (OpenAI-compatible)"), "version": "v1", "description": product.description},
        "security": [{"api_key": []}],
        "paths": {
            "/chat/completions": {"post": operation("Create a chat completion", json!({
                "type": "object", "required": ["model", "messages"], "properties": {
                    "model": models, "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"],
                        "properties": {"role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]}, "content": {"type": "string"}}}},
                    "max_tokens": {"type": "integer", "minimum": 1}, "temperature": {"type": "number"},
                    "stream": {"type": "boolean"}, "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}}}),
                json!({"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
                json!({"model": first, "messages": [{"role": "user", "content": "Hello!"}]}))},
            "/completions": {"post": operation("Create a completion", json!({
                "type": "object", "required": ["model", "prompt"], "properties": {"model": models, "prompt": {"type": "string"},
                    "max_tokens": {"type": "integer", "minimum": 1}, "stream": {"type": "boolean"}}}),
                json!({"type": "object", "properties": {"choices": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
                json!({"model": first, "prompt": "Once upon a time"}))},
            "/embeddings": {"post": operation("Create embeddings", json!({
                "type": "object", "required": ["model", "input"], "properties": {"model": models,
                    "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}),
                json!({"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
                json!({"model": first, "input": "The food was delicious"}))},
            "/models": {"get": {"summary": "List the models your key may use", "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object",
                    "properties": {"data": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}}}}}}}},
                "401": error}}}
        },
        "components": {
            "securitySchemes": {"api_key": {"type": "http", "scheme": "bearer", "description": "Your application's API key"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]}}}}}}
        }
    })
}
