//! Any answer body, cut anywhere: the streaming scanner (and the reading
//! of a replica's `/metrics`) never panics, and
//! on a body that is a JSON object it reads the `usage` member a complete
//! parse reads (the last one when given twice), however the body is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::metering::{UsageScanner, usage_of_json};

fuzz_target!(|input: (&[u8], u16, u16)| {
    let (body, first, second) = input;
    let mut cuts = [usize::from(first) % (body.len() + 1), usize::from(second) % (body.len() + 1)];
    cuts.sort_unstable();
    let mut scanner = UsageScanner::default();
    scanner.push(&body[..cuts[0]]);
    scanner.push(&body[cuts[0]..cuts[1]]);
    scanner.push(&body[cuts[1]..]);
    let scanned = scanner.usage();
    // A replica's /metrics answer, whatever it is: read without a panic.
    if let Some(text) = maas_protocol::model_metrics::http_body(body) {
        let _ = maas_protocol::model_metrics::parse_metrics(&text);
    }
    let _ = maas_protocol::model_metrics::parse_metrics(&String::from_utf8_lossy(body));
    let Ok(serde_json::Value::Object(members)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let expected = members
        .get("usage")
        .and_then(|usage| usage_of_json(&serde_json::to_vec(&serde_json::json!({ "usage": usage })).ok()?));
    assert_eq!(scanned, expected, "{:?}", String::from_utf8_lossy(body));
});
