//! The OpenAPI 3.1 document and the page to browse it.
//!
//! The document is generated from the handlers' `#[utoipa::path]`
//! annotations as [`crate::router`] registers them (`utoipa_axum::routes!`
//! adds a route and its documentation in one step, so no route is served
//! undocumented), plus the errors every operation can answer, added here
//! once rather than on each handler. Swagger UI's assets come compiled into
//! the binary (the `swagger-ui-dist` crate); nothing is fetched from a CDN,
//! and the page runs no inline script, so it works under a strict CSP.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /openapi.json` | the document (no token needed) |
//! | `GET /docs` | Swagger UI; "Authorize" takes an admin token for "Try it out" |

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};

use crate::BASE_PATH;
use crate::auth::SESSION_COOKIE;
use crate::error::{ErrorBody, ErrorDetail, FieldError};

/// The document's fixed parts; the paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "MaaS admin API",
        description = "Manage the catalog (backends, products, plans), tenants (accounts, users, \
applications, keys), promotion to staging and production, the audit log and usage analytics. \
Every request needs `Authorization: Bearer <admin token>` (read-scoped tokens may only `GET`) \
or the portal session of an admin (writes repeat its CSRF token in `X-CSRF-Token`). \
Writes to catalog objects take `If-Match: \"<etag>\"` (409 `stale_version` when the object \
changed) or `If-None-Match: *` (create only). Lists take `limit` and `after` and answer \
`{\"data\": [...], \"next\": <id or null>}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/admin/api/v1", description = "This server")),
    components(schemas(ErrorBody, ErrorDetail, FieldError)),
    tags(
        (name = "catalog", description = "Backends, products (drafts until promoted) and plans"),
        (name = "promotion", description = "Releases of a product to staging and production, and rollback"),
        (name = "tenants", description = "Accounts, users, applications (approval, suspension) and API keys"),
        (name = "analytics", description = "Usage series, top applications and cost, from the counters the proxies write"),
        (name = "audit", description = "Who changed what, when, from where; secrets never recorded"),
        (name = "access", description = "Admin tokens"),
    ),
    modifiers(&StandardAnswers),
)]
pub struct ApiDoc;

/// The two ways to authenticate, one required everywhere, and the error answers every
/// operation shares, each added where it can happen.
struct StandardAnswers;

/// `(status, component name, when)`.
const ERRORS: [(&str, &str, &str); 8] = [
    ("400", "BadRequest", "The body or query string could not be read."),
    ("401", "Unauthorized", "No admin token, or an unknown one."),
    ("403", "Forbidden", "The token's scope does not allow this."),
    ("404", "NotFound", "No such object."),
    (
        "409",
        "Conflict",
        "The object changed since the `If-Match` ETag, already exists, or is in the wrong state.",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body was not sent as `application/json`.",
    ),
    ("422", "Invalid", "Validation failed; `fields` names each field."),
    ("503", "StoreUnavailable", "The store cannot be reached; retry later."),
];

impl Modify for StandardAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "portal_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The portal session of a user with the admin role; writes also send its CSRF token in `X-CSRF-Token`.",
            ))),
        );
        for (_, name, description) in ERRORS {
            let answer = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            components.responses.insert(name.to_owned(), RefOr::T(answer));
        }
        openapi.security = Some(
            ["admin_token", "portal_session"]
                .into_iter()
                .map(|scheme| SecurityRequirement::new(scheme, Vec::<String>::new()))
                .collect(),
        );
    }
}

/// Adds to each operation of the router's paths the errors it can answer.
fn add_error_answers(openapi: &mut OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        let has_id = path.contains('{');
        let operations = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation.as_mut() {
                add_errors_to(operation, method, has_id);
            }
        }
    }
}

fn add_errors_to(operation: &mut Operation, method: HttpMethod, has_id: bool) {
    // OpenAPI requires a description on every answer; the reason phrase
    // stands in where a handler gave none.
    for (status, answer) in operation.responses.responses.iter_mut() {
        if let RefOr::T(answer) = answer
            && answer.description.is_empty()
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                .and_then(|code| code.canonical_reason());
            answer.description = reason.unwrap_or("Success").to_owned();
        }
    }
    let writes = method != HttpMethod::Get;
    let has_body = operation.request_body.is_some();
    let has_query = operation.parameters.as_ref().is_some_and(|params| {
        params
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query))
    });
    for (status, name, _) in ERRORS {
        let applies = match status {
            "400" | "422" => has_body || has_query || writes,
            "403" => writes,
            // A missing object in the path, or one the body refers to.
            "404" => has_id || has_body,
            "409" => writes,
            "415" => has_body,
            _ => true,
        };
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    }
}

/// The whole document for `paths` as the router collected them.
pub fn document(mut collected: OpenApi) -> OpenApi {
    add_error_answers(&mut collected);
    let mut doc = ApiDoc::openapi();
    // `ErrorBody`, which only the error answers name, is in `ApiDoc`'s components.
    doc.merge(collected);
    doc
}

/// `/openapi.json`, `/docs` and Swagger UI's assets, under [`BASE_PATH`].
pub fn routes(doc: &OpenApi) -> Router {
    let json = doc.to_pretty_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        String::from("{}")
    });
    let assets = format!("{BASE_PATH}/docs/assets");
    Router::new()
        .route(
            &format!("{BASE_PATH}/openapi.json"),
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .route(&format!("{BASE_PATH}/docs"), get(page))
        .route(&format!("{BASE_PATH}/docs/init.js"), get(init_script))
        .merge(swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
            uri_prefix: assets.as_str(),
            api_definition: swagger_ui_dist::OpenApiSource::Uri("openapi.json"),
            title: None,
        }))
}

/// Only our own scripts and styles; Swagger UI sets inline styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn page() -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MaaS admin API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{BASE_PATH}/docs/assets/swagger-ui.css">
</head>
<body>
<noscript>This page needs JavaScript; the document itself is at <a href="{BASE_PATH}/openapi.json">{BASE_PATH}/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="{BASE_PATH}/docs/assets/swagger-ui-bundle.js"></script>
<script src="{BASE_PATH}/docs/init.js"></script>
</body>
</html>
"#
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

async fn init_script() -> Response {
    let script = format!(
        "window.ui = SwaggerUIBundle({{ url: '{BASE_PATH}/openapi.json', dom_id: '#swagger-ui', \
deepLinking: true, persistAuthorization: false, tryItOutEnabled: false }});\n"
    );
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], script).into_response()
}
