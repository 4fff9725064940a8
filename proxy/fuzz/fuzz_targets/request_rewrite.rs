//! Any request body: the rewriter never panics; what it forwards is JSON
//! that asks for usage on streams and respects the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_proxy::json_member::remove_member;
use maas_proxy::rewrite::{Endpoint, rewrite_request};

fuzz_target!(|input: (&[u8], u8, Option<u16>)| {
    let (body, endpoint, cap) = input;
    let endpoint = match endpoint % 5 {
        0 => Endpoint::ChatCompletions,
        1 => Endpoint::Completions,
        2 => Endpoint::Embeddings,
        3 => Endpoint::Responses,
        _ => Endpoint::Other,
    };
    let cap = cap.map(u64::from);
    if let Ok(rewrite) = rewrite_request(body, endpoint, cap) {
        if let Some(forwarded) = &rewrite.body {
            let value: serde_json::Value = serde_json::from_slice(forwarded).expect("forwarded bodies are JSON");
            if rewrite.stream && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
                assert_eq!(value["stream_options"]["include_usage"], true);
            }
        }
        if let (Some(cap), Some(max)) = (cap, rewrite.max_tokens) {
            assert!(max <= cap);
        }
    }
    if let Some(stripped) = remove_member(body, "usage") {
        assert!(stripped.len() < body.len());
    }
});
