//! Templates (compiled in, overridable from a directory) and the pages and
//! error pages they render. Every value is escaped on output (minijinja's
//! HTML auto-escaping for `.html` templates).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maas_store::StoreError;
use minijinja::Environment;
use serde_json::{Value, json};

use crate::PortalState;
use crate::session::Visitor;

/// The built-in templates, by name.
const BUILT_IN: [(&str, &str); 33] = [
    ("base.html", include_str!("../templates/base.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("sign_in.html", include_str!("../templates/sign_in.html")),
    ("sign_up.html", include_str!("../templates/sign_up.html")),
    ("models.html", include_str!("../templates/models.html")),
    ("applications.html", include_str!("../templates/applications.html")),
    (
        "application_new.html",
        include_str!("../templates/application_new.html"),
    ),
    ("application.html", include_str!("../templates/application.html")),
    ("admin_alerts.html", include_str!("../templates/admin_alerts.html")),
    ("key_budgets.html", include_str!("../templates/key_budgets.html")),
    ("key_revoke.html", include_str!("../templates/key_revoke.html")),
    (
        "application_delete.html",
        include_str!("../templates/application_delete.html"),
    ),
    ("member_remove.html", include_str!("../templates/member_remove.html")),
    ("join.html", include_str!("../templates/join.html")),
    ("profile.html", include_str!("../templates/profile.html")),
    ("password_reset.html", include_str!("../templates/password_reset.html")),
    (
        "admin_reset_link.html",
        include_str!("../templates/admin_reset_link.html"),
    ),
    (
        "admin_product_edit.html",
        include_str!("../templates/admin_product_edit.html"),
    ),
    ("error.html", include_str!("../templates/error.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("statistics.html", include_str!("../templates/statistics.html")),
    ("admin_nav.html", include_str!("../templates/admin_nav.html")),
    ("product.html", include_str!("../templates/product.html")),
    ("account.html", include_str!("../templates/account.html")),
    ("examples.html", include_str!("../templates/examples.html")),
    ("api_reference.html", include_str!("../templates/api_reference.html")),
    ("admin_overview.html", include_str!("../templates/admin_overview.html")),
    (
        "admin_applications.html",
        include_str!("../templates/admin_applications.html"),
    ),
    ("admin_accounts.html", include_str!("../templates/admin_accounts.html")),
    ("admin_products.html", include_str!("../templates/admin_products.html")),
    ("admin_audit.html", include_str!("../templates/admin_audit.html")),
    ("admin_backends.html", include_str!("../templates/admin_backends.html")),
    (
        "admin_application.html",
        include_str!("../templates/admin_application.html"),
    ),
];

/// A template that does not compile: which file, which line, why.
#[derive(Debug)]
pub struct TemplateError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by a file of the same name in
    /// `overrides` if there is one; all compiled now, so a broken override
    /// stops the start with its file and line.
    pub fn load(overrides: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut sources: BTreeMap<&'static str, (String, PathBuf)> = BTreeMap::new();
        for (name, text) in BUILT_IN {
            let mut source = (text.to_owned(), PathBuf::from(format!("portal/templates/{name}")));
            if let Some(dir) = overrides {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => source = (text, path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(TemplateError {
                            file: path,
                            line: None,
                            message: format!("cannot read: {e}"),
                        });
                    }
                }
            }
            sources.insert(name, source);
        }
        let mut env = Environment::new();
        for (name, (text, path)) in &sources {
            env.add_template_owned(*name, text.clone()).map_err(|e| TemplateError {
                file: path.clone(),
                line: e.line(),
                message: e.to_string(),
            })?;
        }
        Ok(Templates { env })
    }

    fn render(&self, name: &str, context: &Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(minijinja::value::Serde(context))
    }
}

/// An error shown to a person: a page with the status, a title and what
/// to do. Rendered by [`error_pages`] with the portal's templates.
#[derive(Debug, Clone)]
pub struct PortalError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PortalError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> PortalError {
        PortalError {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> PortalError {
        PortalError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> PortalError {
        PortalError::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }

    pub fn bad_request(message: impl Into<String>) -> PortalError {
        PortalError::new(StatusCode::BAD_REQUEST, "That did not work", message)
    }
}

impl From<StoreError> for PortalError {
    fn from(error: StoreError) -> PortalError {
        let message = error.to_string();
        match error {
            StoreError::NotFound { .. } => PortalError::not_found(message),
            StoreError::AlreadyExists { .. } | StoreError::Conflict(_) | StoreError::PreconditionFailed { .. } => {
                PortalError::new(StatusCode::CONFLICT, "That did not work", message)
            }
            StoreError::Invalid(_) => {
                PortalError::new(StatusCode::UNPROCESSABLE_ENTITY, "Please check the form", message)
            }
            StoreError::Forbidden(reason) => PortalError::forbidden(capitalized(&reason)),
            StoreError::Unavailable(_) | StoreError::Uncertain(_) => {
                tracing::error!(%message, "portal: store unavailable");
                PortalError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Temporarily unavailable",
                    "The portal cannot reach its store right now. Please try again in a minute.",
                )
            }
            StoreError::Corrupt(_) => {
                tracing::error!(%message, "portal: corrupt data");
                PortalError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The portal hit an internal error; it has been logged.",
                )
            }
        }
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Body::empty()).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Renders the error page of every answer that carries a [`PortalError`].
pub async fn error_pages(State(state): State<PortalState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let Some(error) = response.extensions_mut().remove::<PortalError>() else {
        return response;
    };
    let context = json!({
        "brand": state.options().brand,
        "status": error.status.as_u16(),
        "title": error.title,
        "message": error.message,
        "page": "error",
    });
    let html = match state.inner.templates.render("error.html", &context) {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "portal: the error page does not render");
            format!("<!doctype html><title>{0}</title><p>{0}</p>", error.status)
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(html);
    response
}

impl PortalState {
    /// `template` with `context` plus what every page shows (brand, the
    /// signed-in user, the CSRF token, the gateway), setting the visitor's
    /// cookies when they are new.
    pub fn page(&self, visitor: &Visitor, template: &str, mut context: Value) -> Result<Response, PortalError> {
        if let Value::Object(map) = &mut context {
            map.insert("brand".into(), json!(self.options().brand));
            map.insert("has_logo".into(), json!(self.options().brand.logo.is_some()));
            map.insert("user".into(), visitor.user_context());
            map.insert("csrf".into(), json!(visitor.csrf_token()));
            map.insert("local_accounts".into(), json!(self.options().local_accounts));
            map.insert("gateway_url".into(), json!(self.options().gateway_url));
        }
        let html = self.inner.templates.render(template, &context).map_err(|e| {
            tracing::error!(template, error = %e, "portal: a page does not render");
            PortalError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page could not be rendered; the error has been logged.",
            )
        })?;
        let mut response = Html(html).into_response();
        visitor.write_cookies(response.headers_mut());
        Ok(response)
    }
}

/// `reason` as a sentence: its first letter capitalized, a full stop at the end.
fn capitalized(reason: &str) -> String {
    let mut chars = reason.chars();
    let mut sentence: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    sentence.push_str(chars.as_str());
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}
