//! Styles, the copy-button script and the brand, all served by the binary.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::PortalState;
use crate::render::PortalError;

const STYLES: &str = include_str!("../assets/portal.css");
const SCRIPT: &str = include_str!("../assets/portal.js");

pub async fn serve(State(state): State<PortalState>, Path(file): Path<String>) -> Result<Response, PortalError> {
    let (body, content_type): (Vec<u8>, &'static str) = match file.as_str() {
        "portal.css" => (STYLES.as_bytes().to_vec(), "text/css; charset=utf-8"),
        "portal.js" => (SCRIPT.as_bytes().to_vec(), "text/javascript; charset=utf-8"),
        // The brand colour, as a stylesheet: pages carry no inline style.
        "brand.css" => (
            format!(":root {{ --brand: {}; }}\n", state.options().brand.primary_color).into_bytes(),
            "text/css; charset=utf-8",
        ),
        "logo" => match &state.options().brand.logo {
            Some((bytes, content_type)) => (bytes.clone(), *content_type),
            None => return Err(PortalError::not_found("No logo is configured.")),
        },
        _ => return Err(PortalError::not_found("No such asset.")),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}
