//! Where a request carries its API key: `Authorization: Bearer`, HTTP Basic
//! (key as user or as password, as 3scale's walkthrough configures), a
//! custom header, or a query parameter. Which ones a product accepts is its
//! `credentials` setting.

use base64::Engine;
use maas_store::model::{CredentialLocation, CredentialSettings};

use crate::error::ApiError;

/// The parts of a request that may hold a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCredentials<'a> {
    pub authorization: Option<&'a [u8]>,
    /// The value of the product's custom header (`api-key` by default).
    pub custom_header: Option<&'a [u8]>,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// The first key found in the product's accepted locations, in the order
/// they are listed. `Ok(None)` when none holds one.
pub fn extract_key(
    request: &RequestCredentials<'_>,
    settings: &CredentialSettings,
) -> Result<Option<String>, ApiError> {
    for location in &settings.locations {
        let found = match location {
            CredentialLocation::Bearer => request.authorization.and_then(bearer).map(str::to_owned),
            CredentialLocation::Basic => match request.authorization {
                Some(value) if has_scheme(value, b"basic") => Some(basic(value)?),
                _ => None,
            },
            CredentialLocation::Header => request
                .custom_header
                .map(|value| std::str::from_utf8(value).map(|s| s.trim().to_owned()))
                .transpose()
                .map_err(|_| ApiError::malformed_credentials("the API key header is not UTF-8"))?,
            CredentialLocation::Query => request
                .query
                .and_then(|query| query_param(query, &settings.query_param)),
        };
        if let Some(key) = found.filter(|key| !key.is_empty()) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// How to send a key, for the "missing key" message.
pub fn describe_locations(settings: &CredentialSettings) -> String {
    let parts: Vec<String> = settings
        .locations
        .iter()
        .map(|location| match location {
            CredentialLocation::Bearer => "`Authorization: Bearer <key>`".to_owned(),
            CredentialLocation::Basic => "HTTP Basic auth (the key as user or password)".to_owned(),
            CredentialLocation::Header => format!("a `{}` header", settings.header_name),
            CredentialLocation::Query => format!("the `{}` query parameter", settings.query_param),
        })
        .collect();
    parts.join(" or ")
}

fn has_scheme(value: &[u8], scheme: &[u8]) -> bool {
    value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme) && value[scheme.len()] == b' '
}

/// The credential of an `Authorization: Bearer` header.
pub fn bearer(value: &[u8]) -> Option<&str> {
    if !has_scheme(value, b"bearer") {
        return None;
    }
    std::str::from_utf8(&value[7..]).ok().map(str::trim)
}

fn basic(value: &[u8]) -> Result<String, ApiError> {
    let encoded = value[6..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ApiError::malformed_credentials("the Basic credentials are not base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| ApiError::malformed_credentials("the Basic credentials are not UTF-8"))?;
    let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    // The walkthrough puts the key in the user name; some clients use the password.
    let key = if user.is_empty() { password } else { user };
    Ok(key.to_owned())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        is_query_param(key, name).then(|| percent_decode(value))
    })
}

/// Whether a raw query parameter name is `name` once decoded, as every
/// server behind the gateway decodes it (`user%5Fkey` is `user_key`).
pub fn is_query_param(raw: &str, name: &str) -> bool {
    if !raw.contains(['%', '+']) {
        return raw == name;
    }
    percent_decode(raw) == name
}

fn percent_decode(value: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(value, true)).into_owned()
}

/// `%XX` escapes decoded (a truncated or malformed one stays as it is);
/// `+` is a space in a query (`plus_as_space`), itself in a path.
pub(crate) fn percent_decode_bytes(value: &str, plus_as_space: bool) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// The query string without the parameter that carried the key, however
/// its name was spelled (`user%5Fkey` is `user_key`).
pub(crate) fn strip_query_param(query: &str, param: Option<&str>) -> String {
    let Some(param) = param else { return query.to_owned() };
    query
        .split('&')
        .filter(|pair| !is_query_param(pair.split_once('=').map_or(*pair, |(k, _)| k), param))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_locations() -> CredentialSettings {
        CredentialSettings {
            locations: vec![
                CredentialLocation::Bearer,
                CredentialLocation::Basic,
                CredentialLocation::Header,
                CredentialLocation::Query,
            ],
            ..CredentialSettings::default()
        }
    }

    fn basic_header(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn finds_the_key_in_every_location() {
        let settings = all_locations();
        let bearer = RequestCredentials {
            authorization: Some(b"Bearer sk-maas-abc"),
            ..Default::default()
        };
        assert_eq!(extract_key(&bearer, &settings).unwrap().as_deref(), Some("sk-maas-abc"));
        let lower = RequestCredentials {
            authorization: Some(b"bearer  sk-maas-abc "),
            ..Default::default()
        };
        assert_eq!(extract_key(&lower, &settings).unwrap().as_deref(), Some("sk-maas-abc"));
        for user_pass in ["sk-maas-abc:", "sk-maas-abc:ignored", ":sk-maas-abc", "sk-maas-abc"] {
            let header = basic_header(user_pass);
            let basic = RequestCredentials {
                authorization: Some(&header),
                ..Default::default()
            };
            assert_eq!(
                extract_key(&basic, &settings).unwrap().as_deref(),
                Some("sk-maas-abc"),
                "{user_pass}"
            );
        }
        let header = RequestCredentials {
            custom_header: Some(b"sk-maas-abc"),
            ..Default::default()
        };
        assert_eq!(extract_key(&header, &settings).unwrap().as_deref(), Some("sk-maas-abc"));
        let query = RequestCredentials {
            query: Some("a=1&user_key=sk-maas-a%62c&b"),
            ..Default::default()
        };
        assert_eq!(extract_key(&query, &settings).unwrap().as_deref(), Some("sk-maas-abc"));
    }

    #[test]
    fn ignores_locations_the_product_does_not_accept() {
        let settings = CredentialSettings {
            locations: vec![CredentialLocation::Header],
            ..CredentialSettings::default()
        };
        let bearer = RequestCredentials {
            authorization: Some(b"Bearer sk-maas-abc"),
            query: Some("user_key=sk-maas-abc"),
            ..Default::default()
        };
        assert_eq!(extract_key(&bearer, &settings).unwrap(), None);
        assert!(describe_locations(&settings).contains("`api-key` header"));
    }

    #[test]
    fn malformed_basic_is_an_error_not_a_panic() {
        let settings = all_locations();
        for bad in [&b"Basic !!!"[..], b"Basic \xff\xfe", b"Basic "] {
            let request = RequestCredentials {
                authorization: Some(bad),
                ..Default::default()
            };
            let _ = extract_key(&request, &settings);
        }
        let request = RequestCredentials {
            authorization: Some(b"Basic !!!"),
            ..Default::default()
        };
        assert_eq!(extract_key(&request, &settings).unwrap_err().status, 401);
    }

    #[test]
    fn percent_decoding_survives_truncated_escapes() {
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("a%zz+b"), "a%zz b");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
    }

    #[test]
    fn strips_only_the_key_parameter_however_spelled() {
        assert_eq!(strip_query_param("user_key=sk&a=1&b", Some("user_key")), "a=1&b");
        assert_eq!(strip_query_param("a=1", None), "a=1");
        assert_eq!(strip_query_param("user_key=sk", Some("user_key")), "");
        assert_eq!(
            strip_query_param(
                "user%5Fkey=sk&%75ser_key=sk2&user_key=sk3&user_keys=1",
                Some("user_key")
            ),
            "user_keys=1"
        );
        assert_eq!(strip_query_param("user+key=1", Some("user key")), "");
    }
}
