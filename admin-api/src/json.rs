//! Request bodies and query strings: errors in JSON that name what broke.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON object body, before it is read as a type.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonObject, ApiError> {
        let json_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with `Content-Type: application/json`.",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", e.to_string()))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The body must be a JSON object.",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("The body is not JSON: {e}"),
            )),
        }
    }
}

/// An optional body: none at all (no `Content-Type`, empty) is `None`.
impl<S: Send + Sync> OptionalFromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<JsonObject>, ApiError> {
        let headers = request.headers();
        let empty = headers.get("content-length").is_none_or(|v| v.as_bytes() == b"0")
            && headers.get("transfer-encoding").is_none();
        if empty && headers.get("content-type").is_none() {
            return Ok(None);
        }
        <JsonObject as FromRequest<S>>::from_request(request, state)
            .await
            .map(Some)
    }
}

impl JsonObject {
    /// Sets `field` from the path, refusing a body that names another value.
    pub fn set_from_path(&mut self, field: &str, value: &str) -> Result<(), ApiError> {
        match self.0.get(field) {
            Some(Value::String(given)) if given != value => Err(ApiError::invalid_field(
                field,
                format!("is `{value}` in the URL but `{given}` in the body"),
            )),
            Some(given) if !given.is_string() => Err(ApiError::invalid_field(field, "must be a string")),
            _ => {
                self.0.insert(field.to_owned(), Value::String(value.to_owned()));
                Ok(())
            }
        }
    }

    /// Reads the object as `T`; a mismatch names the field (`limits[0].period`).
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_path_to_error::deserialize(Value::Object(self.0)).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            ApiError::invalid_field(if path == "." { "(body)".into() } else { path }, message)
        })
    }
}

/// A query string read as `T`; a mistake is a 400 in the API's JSON shape.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryParams<T>, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
    }
}
