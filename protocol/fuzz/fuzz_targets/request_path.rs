//! Any request path: normalising never panics, and what it accepts is a
//! fixed point with no dot, empty or parameter segment, no `\`, no encoded
//! separator and no encoded unreserved character, so routing, mapping
//! rules and the upstream all read the same path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::request_path::normalize;

fuzz_target!(|raw: &str| {
    let Ok(normal) = normalize(raw) else { return };
    assert!(normal.starts_with('/'), "{raw:?} → {normal:?}");
    assert!(!normal.contains(';') && !normal.contains('\\') && !normal.contains('?'), "{normal:?}");
    if normal != "/" {
        for segment in normal[1..].split('/') {
            assert!(!segment.is_empty() && segment != "." && segment != "..", "{raw:?} → {normal:?}");
        }
    }
    let bytes = normal.as_bytes();
    for (at, _) in normal.match_indices('%') {
        let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).expect("escapes are ASCII");
        let byte = u8::from_str_radix(hex, 16).expect("escapes are hex");
        assert!(
            !(byte.is_ascii_alphanumeric() || b"-._~/\\?#".contains(&byte)) && hex == hex.to_uppercase(),
            "{raw:?} → {normal:?}"
        );
    }
    assert_eq!(normalize(&normal).as_deref(), Ok(normal.as_ref()), "{raw:?}");
});
