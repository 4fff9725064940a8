//! The one normal form of a request path, computed at the edge before
//! routing: every later stage (routing, mapping rules, the endpoint's
//! classification, what is forwarded) sees only this form, so a path
//! cannot mean one thing to the gateway and another to the model server.
//!
//! The normal form ([RFC 3986 §6.2.2](https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2),
//! plus what servers behind a gateway are known to disagree on):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other encodings are kept with upper-case hex;
//! - `.` and `..` segments are resolved (after that decoding, so `%2e%2e`
//!   is `..`); a `..` above the root is refused;
//! - empty segments (`//`, a trailing `/`) are dropped;
//! - `;` parameters of a segment (`completions;x=1`) are dropped, as
//!   servlet containers do before routing;
//! - refused: an encoded `/` or `\` (some servers decode them into
//!   separators, others do not), an encoded `?` or `#` (decoded, they end
//!   the path), a raw `\`, control characters, bytes that are not ASCII,
//!   and malformed `%` escapes.

use std::borrow::Cow;

/// Why a path has no safe normal form (a 400 for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRefused(pub &'static str);

/// The normal form of `raw` (a path without its query), or why it has none.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathRefused> {
    if !raw.starts_with('/') {
        return Err(PathRefused("the request target must be a path starting with `/`"));
    }
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in raw[1..].split('/') {
        let segment = segment.split_once(';').map_or(segment, |(name, _)| name);
        let decoded = decode_segment(segment)?;
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRefused("the path climbs above the root with `..`"));
                }
            }
            _ => segments.push(decoded),
        }
    }
    let mut normal = String::with_capacity(raw.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// The common case, checked without allocating: only unreserved
/// characters and `/`, no empty, `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path[1..].split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| is_unreserved(b) || is_plain_sub_delim(b))
    })
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed raw in a segment that need no decision: RFC 3986
/// sub-delimiters and `:`/`@`, except `;` (parameters), which is handled.
fn is_plain_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

fn decode_segment(segment: &str) -> Result<String, PathRefused> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let (Some(high), Some(low)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            ) else {
                return Err(PathRefused("the path has a malformed `%` escape"));
            };
            let decoded = high << 4 | low;
            match decoded {
                b'/' | b'\\' => return Err(PathRefused("the path has an encoded `/` or `\\`")),
                // Decoded by the server, they would end the path there.
                b'?' | b'#' => return Err(PathRefused("the path has an encoded `?` or `#`")),
                _ if decoded.is_ascii_control() => {
                    return Err(PathRefused("the path has an encoded control character"));
                }
                _ if is_unreserved(decoded) => out.push(decoded as char),
                _ => {
                    out.push('%');
                    out.push(HEX[usize::from(high)] as char);
                    out.push(HEX[usize::from(low)] as char);
                }
            }
            i += 3;
            continue;
        }
        match byte {
            b'\\' => return Err(PathRefused("the path has a `\\`")),
            _ if byte.is_ascii_control() || byte == b' ' => {
                return Err(PathRefused("the path has a control character or a space"));
            }
            _ if !byte.is_ascii() => return Err(PathRefused("the path has characters that are not ASCII")),
            b'#' | b'?' => return Err(PathRefused("the path has a `?` or `#`")),
            b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^' | b'[' | b']' => {
                // Not allowed raw in a path; keep them encoded so every
                // server reads them as data.
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
            _ => out.push(byte as char),
        }
        i += 1;
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn normal(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}")).into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/echo/v1/models/granite-3.1~x",
            "/a:b@c/d+e",
        ] {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(_))), "{path}");
        }
    }

    #[test]
    fn dot_segments_empty_segments_and_parameters_go() {
        for (raw, expected) in [
            ("/echo/v1/chat/completions/../../../admin", "/echo/admin"),
            ("/v1/chat/completions/.", "/v1/chat/completions"),
            ("/v1/chat/completions;x=1", "/v1/chat/completions"),
            ("/v1;a/chat;b=c/completions;", "/v1/chat/completions"),
            ("//v1///chat/completions/", "/v1/chat/completions"),
            ("/v1/./chat/x/../completions", "/v1/chat/completions"),
            ("/v1/chat/completions/..", "/v1/chat"),
            ("/v1/%63hat/%43ompletions", "/v1/chat/Completions"),
            ("/v1/chat/completions/%2e%2E/%2E", "/v1/chat"),
            ("/v1/models/a%3ab%7e", "/v1/models/a%3Ab~"),
            ("/v1/models/a%25", "/v1/models/a%25"),
            ("/v1/models/x%252e%252e", "/v1/models/x%252e%252e"),
            ("/v1/models/{x}", "/v1/models/%7Bx%7D"),
            ("/v1/models/a%20b", "/v1/models/a%20b"),
            ("/a/..;/v1", "/v1"),
            ("/.", "/"),
            ("//", "/"),
        ] {
            assert_eq!(normal(raw), expected, "{raw}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_safely_is_refused() {
        for raw in [
            "/../v1/chat/completions",
            "/v1/../../etc",
            "/v1/chat%2fcompletions",
            "/v1/chat%2Fcompletions",
            "/v1/chat%5Ccompletions",
            "/v1\\chat\\completions",
            "/v1/chat/completions%00",
            "/v1/chat/completions%0a",
            "/v1/chat/completions%",
            "/v1/chat/completions%4",
            "/v1/chat/completions%zz",
            "/v1/ü",
            "v1/chat/completions",
            "*",
            "",
            "/v1/%2e%2e/%2e%2e",
            "/..;/v1",
            "/v1/chat/completions%3Fx",
            "/v1/chat/completions%23",
        ] {
            assert!(normalize(raw).is_err(), "{raw:?} should be refused");
        }
    }

    /// A segment as the client may spell it: characters, some of them
    /// percent-encoded (unreserved or not), maybe with `;` parameters.
    fn spelled_segment() -> impl Strategy<Value = (String, String)> {
        let chars = proptest::collection::vec(
            (
                prop_oneof![
                    proptest::char::range('a', 'z'),
                    proptest::char::range('0', '9'),
                    Just('-'),
                    Just('~'),
                    Just('_'),
                    Just('.'),
                    Just(':'),
                    Just('%'),
                ],
                any::<bool>(),
                any::<bool>(),
            ),
            1..8,
        );
        (chars, proptest::option::of("[a-z=]{0,4}")).prop_map(|(chars, params)| {
            let mut normal = String::new();
            let mut spelled = String::new();
            for (c, encode, lower_hex) in chars {
                let byte = c as u8;
                if c == '%' || c == ':' {
                    // Reserved: stays encoded in the normal form, in upper case.
                    let hex = format!("%{byte:02X}");
                    normal.push_str(&hex);
                    spelled.push_str(&if lower_hex { hex.to_lowercase() } else { hex });
                } else if encode {
                    normal.push(c);
                    let hex = format!("%{byte:02X}");
                    spelled.push_str(&if lower_hex { hex.to_lowercase() } else { hex });
                } else {
                    normal.push(c);
                    spelled.push(c);
                }
            }
            if normal == "." || normal == ".." {
                normal.push('x');
                spelled.push('x');
            }
            if let Some(params) = params {
                spelled.push(';');
                spelled.push_str(&params);
            }
            (spelled, normal)
        })
    }

    /// Noise that means nothing: `./`, `x/../`, an empty segment.
    fn noise() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("./"),
            Just("%2e/"),
            Just("zz/../"),
            Just("zz/%2E%2e/"),
            Just("/"),
            Just("q;p/../")
        ]
    }

    proptest! {
        /// Any spelling of a path normalises to the same form, and the
        /// normal form is a fixed point.
        #[test]
        fn every_spelling_has_one_normal_form(
            parts in proptest::collection::vec((spelled_segment(), proptest::option::of(noise())), 1..6),
            trailing in proptest::option::of(noise()),
        ) {
            let mut spelled = String::new();
            let mut expected = String::new();
            for ((segment, normal), noise) in &parts {
                spelled.push('/');
                if let Some(noise) = noise {
                    spelled.push_str(noise);
                }
                spelled.push_str(segment);
                expected.push('/');
                expected.push_str(normal);
            }
            if let Some(noise) = trailing {
                spelled.push('/');
                spelled.push_str(noise.trim_end_matches('/'));
            }
            let normal = normalize(&spelled).map_err(|e| TestCaseError::fail(format!("{spelled}: {e:?}")))?;
            prop_assert_eq!(normal.as_ref(), expected.as_str(), "{}", spelled);
            let again = normalize(&normal).unwrap();
            prop_assert_eq!(again.as_ref(), normal.as_ref());
        }

        /// Whatever the bytes, the result is refused or normal: no dot or
        /// empty segment, no `;`, no `\`, no encoded unreserved character,
        /// and normalising again changes nothing.
        #[test]
        fn any_path_is_refused_or_normal(raw in "/[a-zA-Z0-9./;%\\\\~_:-]{0,40}") {
            if let Ok(normal) = normalize(&raw) {
                prop_assert!(normal.starts_with('/'));
                prop_assert!(!normal.contains(';') && !normal.contains('\\'), "{}", normal);
                if normal.as_ref() != "/" {
                    for segment in normal[1..].split('/') {
                        prop_assert!(!segment.is_empty() && segment != "." && segment != "..", "{} from {}", normal, raw);
                    }
                }
                for escape in normal.match_indices('%') {
                    let hex = &normal[escape.0 + 1..escape.0 + 3];
                    let byte = u8::from_str_radix(hex, 16).unwrap();
                    prop_assert!(!is_unreserved(byte) && hex == hex.to_uppercase(), "{} from {}", normal, raw);
                }
                let again = normalize(&normal).unwrap();
            prop_assert_eq!(again.as_ref(), normal.as_ref());
            }
        }
    }
}
