//! HTTP's conditional requests over the store's versions: every read of
//! a versioned object carries an `ETag`; a write with `If-Match: "<etag>"`
//! applies only to that version (409 `stale_version` otherwise), one with
//! `If-None-Match: *` only creates.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maas_store::{Precondition, etag};
use serde::Serialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// The conditional headers of a write (documentation of [`precondition`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct WritePreconditions {
    /// `"<etag>"` from a read: apply only to that version (409
    /// `stale_version` otherwise); `*`: the object must exist. Without it
    /// the write is unconditional: it applies to the object as it is now
    /// (an approval approves the plan requested now, whatever was reviewed).
    /// Send the `ETag` of what you reviewed.
    #[param(rename = "If-Match", value_type = String, required = false, pattern = "^(\\*|(W/)?\".*\")$")]
    if_match: Option<String>,
    /// `*`: create only (409 if the object exists).
    #[param(rename = "If-None-Match", value_type = String, required = false, pattern = "^\\*$")]
    if_none_match: Option<String>,
}

/// The precondition a write's headers state.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition<'_>, ApiError> {
    // Checked whether or not `If-Match` is there too: a header the write
    // would ignore must not pass unread.
    let create_only = match headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes()) {
        Some(b"*") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "If-None-Match",
                "only `*` is supported on writes",
            ));
        }
        None => false,
    };
    if let Some(value) = headers.get(header::IF_MATCH) {
        if create_only {
            return Err(ApiError::invalid_field(
                "If-None-Match",
                "`If-None-Match: *` (create only) contradicts `If-Match`; send one of them",
            ));
        }
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
    Ok(if create_only {
        Precondition::Absent
    } else {
        Precondition::Any
    })
}

/// `value` as JSON with its `ETag`.
pub fn tagged<T: Serialize>(status: StatusCode, value: &T) -> Response {
    shown_as(status, value, value)
}

/// `shown` as JSON with the `ETag` of `stored`, the record the store
/// versions, when the answer shows less of it (a user without its
/// password hash).
pub fn shown_as<S: Serialize, T: Serialize>(status: StatusCode, stored: &S, shown: &T) -> Response {
    (status, [(header::ETAG, format!("\"{}\"", etag(stored)))], Json(shown)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn every_conditional_header_is_read() {
        assert!(matches!(precondition(&headers(&[])), Ok(Precondition::Any)));
        assert!(matches!(
            precondition(&headers(&[("if-match", "*")])),
            Ok(Precondition::Any)
        ));
        assert!(matches!(
            precondition(&headers(&[("if-match", "\"abc\"")])),
            Ok(Precondition::Matches("abc"))
        ));
        assert!(matches!(
            precondition(&headers(&[("if-none-match", "*")])),
            Ok(Precondition::Absent)
        ));
        // A bad If-None-Match is refused even beside a good If-Match.
        assert!(precondition(&headers(&[("if-match", "*"), ("if-none-match", "'x")])).is_err());
        assert!(precondition(&headers(&[("if-match", "*"), ("if-none-match", "*")])).is_err());
        assert!(precondition(&headers(&[("if-match", "abc")])).is_err());
    }
}
