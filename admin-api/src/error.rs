//! Errors as JSON: `{"error": {"code", "message", "fields"}}` with the HTTP
//! status that says who must act (400s the caller, 503 the operator).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maas_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// One field that failed validation, by its dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// 422 naming one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let (field, message) = (field.into(), message.into());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: format!("{field}: {message}"),
            fields: vec![FieldError { field, message }],
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send an admin token (`Authorization: Bearer <token>`) or sign in to the portal as an admin.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for `kind` `id`, worded as the store words it.
    pub fn not_found(kind: &'static str, id: &str) -> ApiError {
        StoreError::NotFound {
            kind,
            id: id.to_owned(),
        }
        .into()
    }

    pub fn not_found_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such admin API route.")
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let message = error.to_string();
        match error {
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            StoreError::AlreadyExists { field, .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "already_exists",
                fields: vec![FieldError {
                    field: field.to_owned(),
                    message: message.clone(),
                }],
                message,
            },
            StoreError::Invalid(errors) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid",
                message,
                fields: errors
                    .0
                    .into_iter()
                    .map(|e| FieldError {
                        field: e.path,
                        message: e.message,
                    })
                    .collect(),
            },
            StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            StoreError::PreconditionFailed { .. } => ApiError::new(StatusCode::CONFLICT, "stale_version", message),
            StoreError::Unavailable(_) | StoreError::Uncertain(_) => {
                tracing::error!(%message, "admin API: store unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
            }
            StoreError::Corrupt(_) => {
                tracing::error!(%message, "admin API: corrupt data");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

/// Every error answer: `{"error": {"code", "message", "fields"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid`, `not_found`, `stale_version`,
    /// `already_exists`, `conflict`, `unauthorized`, `forbidden`, …
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// Each field that failed validation; empty for other errors.
    pub fields: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
