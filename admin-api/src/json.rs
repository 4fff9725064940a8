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

/// The body as JSON, after checking it was sent as JSON.
async fn read_json<S: Send + Sync>(request: Request, state: &S) -> Result<Value, ApiError> {
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
    let mut value = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The body is not JSON: {e}"),
        )
    })?;
    whole_numbers_as_integers(&mut value);
    Ok(value)
}

/// JSON does not tell `3` from `3.0`, and JSON Schema counts both as
/// integers; serde does, so whole floats become integers before typing.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
            {
                // In range of i64 or u64, converted exactly; else left a float.
                if (-9.007_199_254_740_992e15..=9.007_199_254_740_992e15).contains(&float) {
                    *number = serde_json::Number::from(float as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

fn not_an_object() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        "The body must be a JSON object.",
    )
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonObject, ApiError> {
        match read_json(request, state).await? {
            Value::Object(map) => Ok(JsonObject(map)),
            _ => Err(not_an_object()),
        }
    }
}

/// An optional body: none at all (no `Content-Type`, empty) or `null` is `None`.
impl<S: Send + Sync> OptionalFromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<JsonObject>, ApiError> {
        let headers = request.headers();
        let empty = headers.get("content-length").is_none_or(|v| v.as_bytes() == b"0")
            && headers.get("transfer-encoding").is_none();
        if empty && headers.get("content-type").is_none() {
            return Ok(None);
        }
        match read_json(request, state).await? {
            Value::Object(map) => Ok(Some(JsonObject(map))),
            Value::Null => Ok(None),
            _ => Err(not_an_object()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_floats_become_integers_and_others_stay() {
        let mut value = json!({"a": 27154.0, "b": [1.5, -3.0, 1e300], "c": {"d": 0.0}, "e": "7.0"});
        whole_numbers_as_integers(&mut value);
        assert_eq!(
            value,
            json!({"a": 27154, "b": [1.5, -3, 1e300], "c": {"d": 0}, "e": "7.0"})
        );
        assert!(value["a"].is_u64() && value["b"][1].is_i64());
    }
}
