//! A product's page for developers: what it is, its plans, copy-paste
//! examples filled with its endpoint and model (curl, Python and Node
//! `openai`, LangChain, Continue.dev, k6), and its API reference: the
//! product's own OpenAPI document, or an OpenAI-compatible one generated
//! for it, in Swagger UI (assets compiled in) with "Try it out" against
//! the gateway using the visitor's key.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maas_store::model::{HttpMethod, Product};
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
        None => openai_compatible(&offer.product, &endpoint),
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

/// A description of what `product` serves: every mapping rule's method
/// and path (the OpenAI-compatible set when it declares none), the
/// OpenAI inference endpoints with their request and answer shapes and
/// the product's models as `model` values, any other path with a free
/// JSON body. Paths under `/v1` are relative to the endpoint (which ends
/// in `/v1`); others name their own server.
pub fn openai_compatible(product: &Product, endpoint: &str) -> Value {
    let title = if product.name.is_empty() {
        product.system_name.clone()
    } else {
        product.name.clone()
    };
    let methods = product.effective_methods();
    let mut paths = serde_json::Map::new();
    for rule in product.effective_mapping_rules() {
        let pattern = rule.pattern.trim_end_matches('$');
        let (path, own_server) = match pattern.strip_prefix("/v1") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => (rest.to_owned(), false),
            _ => (pattern.to_owned(), true),
        };
        let path = if path.is_empty() { "/".to_owned() } else { path };
        let verb = verb_of(rule.http_method);
        let item = paths.entry(path.clone()).or_insert_with(|| json!({}));
        if item.get(verb).is_some() {
            continue; // another rule on the same operation (a method and `hits`)
        }
        let friendly = methods
            .iter()
            .find(|m| m.system_name == rule.metric)
            .map(|m| (m.friendly_name.clone(), m.description.clone()));
        let mut operation =
            openai_operation(verb, &path, product).unwrap_or_else(|| other_operation(verb, &path, friendly));
        if let Some(parameters) = path_parameters(&path) {
            operation["parameters"] = parameters;
        }
        item[verb] = operation;
        if own_server {
            let base = endpoint.strip_suffix("/v1").unwrap_or(endpoint);
            item["servers"] = json!([{"url": base, "description": "The gateway"}]);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": format!("{title} (OpenAI-compatible)"), "version": "v1", "description": product.description},
        "security": [{"api_key": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"api_key": {"type": "http", "scheme": "bearer", "description": "Your application's API key"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]}}}}}}
        }
    })
}

/// The OpenAPI operation key of a rule's method; a rule for any method
/// is shown as the `post` it nearly always is.
fn verb_of(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Put => "put",
        HttpMethod::Patch => "patch",
        HttpMethod::Delete => "delete",
        HttpMethod::Head => "head",
        HttpMethod::Options => "options",
        HttpMethod::Post | HttpMethod::Any => "post",
    }
}

/// The errors every operation may answer.
fn error_responses() -> Value {
    let error = json!({"description": "An OpenAI-shaped error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "400": error, "401": error, "403": error, "404": error, "429": {
            "description": "A plan limit was reached; `Retry-After` says when to try again",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn operation(summary: &str, request: Option<(Value, Value)>, response: Value) -> Value {
    let mut responses = json!({"200": {"description": "OK", "content": {"application/json": {"schema": response}}}});
    if let (Value::Object(all), Value::Object(more)) = (&mut responses, error_responses()) {
        all.extend(more);
    }
    let mut operation = json!({"summary": summary, "responses": responses});
    if let Some((schema, example)) = request {
        operation["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema, "example": example}}});
    }
    operation
}

/// The OpenAI inference endpoint `verb path` is, described, if it is one.
fn openai_operation(verb: &str, path: &str, product: &Product) -> Option<Value> {
    let models = if product.models.is_empty() {
        json!({"type": "string"})
    } else {
        json!({"type": "string", "enum": product.models})
    };
    let first = product.models.first().cloned().unwrap_or_else(|| "MODEL".into());
    let usage = json!({"type": "object", "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}});
    let described = match (verb, path) {
        ("post", "/chat/completions") => operation(
            "Create a chat completion",
            Some((
                json!({
            "type": "object", "required": ["model", "messages"], "properties": {
                "model": models, "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"],
                    "properties": {"role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]}, "content": {"type": "string"}}}},
                "max_tokens": {"type": "integer", "minimum": 1}, "temperature": {"type": "number"},
                "stream": {"type": "boolean"}, "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}}}),
                json!({"model": first, "messages": [{"role": "user", "content": "Hello!"}]}),
            )),
            json!({"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": "string"},
                "choices": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
        ),
        ("post", "/completions") => operation(
            "Create a completion",
            Some((
                json!({
            "type": "object", "required": ["model", "prompt"], "properties": {"model": models, "prompt": {"type": "string"},
                "max_tokens": {"type": "integer", "minimum": 1}, "stream": {"type": "boolean"}}}),
                json!({"model": first, "prompt": "Once upon a time"}),
            )),
            json!({"type": "object", "properties": {"choices": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
        ),
        ("post", "/embeddings") => operation(
            "Create embeddings",
            Some((
                json!({
            "type": "object", "required": ["model", "input"], "properties": {"model": models,
                "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}),
                json!({"model": first, "input": "The food was delicious"}),
            )),
            json!({"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}, "usage": usage}}),
        ),
        ("post", "/responses") => operation(
            "Create a model response",
            Some((
                json!({
            "type": "object", "required": ["model", "input"], "properties": {"model": models,
                "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                "instructions": {"type": "string"}, "max_output_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number"}, "stream": {"type": "boolean"}}}),
                json!({"model": first, "input": "Hello!"}),
            )),
            json!({"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": "string"},
                "output": {"type": "array", "items": {"type": "object"}}, "usage": {"type": "object", "properties": {
                    "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}}),
        ),
        ("get", "/models") => operation(
            "List the models your key may use",
            None,
            json!({"type": "object",
            "properties": {"data": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}}}}}),
        ),
        _ => return None,
    };
    Some(described)
}

/// An operation the gateway passes on as the product declares it: its
/// method's name when it has one, a free JSON body and answer.
fn other_operation(verb: &str, path: &str, method: Option<(String, String)>) -> Value {
    let (summary, description) = match method {
        Some((name, description)) if !name.is_empty() => (name, description),
        Some((_, description)) => (format!("{} {path}", verb.to_ascii_uppercase()), description),
        None => (format!("{} {path}", verb.to_ascii_uppercase()), String::new()),
    };
    let body = matches!(verb, "post" | "put" | "patch").then(|| (json!({"type": "object"}), json!({})));
    let mut operation = operation(&summary, body, json!({}));
    if !description.is_empty() {
        operation["description"] = json!(description);
    }
    operation
}

/// The `{name}` segments of `path` as OpenAPI path parameters.
fn path_parameters(path: &str) -> Option<Value> {
    let names: Vec<&str> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect();
    (!names.is_empty()).then(|| {
        json!(
            names
                .iter()
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect::<Vec<_>>()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_every_path_the_product_serves() {
        let product: Product = serde_json::from_value(json!({
            "system_name": "speech", "backend": "vllm", "models": ["whisper"],
            "methods": [{"system_name": "transcribe", "friendly_name": "Transcribe audio", "description": "Speech to text"},
                        {"system_name": "chat"}],
            "mapping_rules": [
                {"http_method": "POST", "pattern": "/v1/audio/transcriptions$", "metric": "transcribe"},
                {"http_method": "POST", "pattern": "/v1/audio/transcriptions$", "metric": "hits"},
                {"http_method": "POST", "pattern": "/v1/chat/completions", "metric": "chat"},
                {"http_method": "GET", "pattern": "/v1/jobs/{job}/status", "metric": "hits"},
                {"http_method": "ANY", "pattern": "/health", "metric": "hits"}
            ]
        }))
        .unwrap();
        let document = openai_compatible(&product, "http://gw/speech/v1");
        let paths = document["paths"].as_object().unwrap();
        let names: Vec<&String> = paths.keys().collect();
        assert_eq!(
            names,
            [
                "/audio/transcriptions",
                "/chat/completions",
                "/health",
                "/jobs/{job}/status"
            ]
        );
        let transcribe = &paths["/audio/transcriptions"]["post"];
        assert_eq!(
            transcribe["summary"], "Transcribe audio",
            "the method's name, once for two rules"
        );
        assert_eq!(transcribe["description"], "Speech to text");
        assert_eq!(
            transcribe["requestBody"]["content"]["application/json"]["schema"]["type"],
            "object"
        );
        let chat = &paths["/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            chat["properties"]["model"]["enum"],
            json!(["whisper"]),
            "known endpoints keep their shape"
        );
        let status = &paths["/jobs/{job}/status"]["get"];
        assert_eq!(status["parameters"][0]["name"], "job");
        assert!(status.get("requestBody").is_none(), "a GET has no body");
        assert_eq!(
            paths["/health"]["servers"][0]["url"], "http://gw/speech",
            "outside /v1: its own server"
        );
        assert!(paths["/health"].get("post").is_some());
        assert_eq!(
            paths["/chat/completions"]["post"]["responses"]["429"]["description"]
                .as_str()
                .map(|d| d.contains("Retry-After")),
            Some(true)
        );

        // What Swagger UI and client generators read must be valid OpenAPI 3.1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openapi.json");
        std::fs::write(&path, serde_json::to_vec(&document).unwrap()).unwrap();
        let output = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&path)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "openapi-spec-validator refused the document (missing? `pip install openapi-spec-validator`, .ci/run does):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
