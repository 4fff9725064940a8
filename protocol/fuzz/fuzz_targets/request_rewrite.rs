//! Any request body: the rewriter and prefix affinity's key never panic; what it forwards is JSON
//! that asks for usage on streams as the policy says, respects the cap
//! (never as 0, which servers read as no limit), and leaves every member it
//! does not own as the client sent it, and carries the policy's queue
//! priority whatever the client asked; both walks of the prompt agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_protocol::body::inspect_json;
use maas_protocol::json_member::remove_member;
use maas_protocol::prompt::{Bytes, prompt_tally};
use maas_protocol::rewrite::{Endpoint, ForwardPolicy, StreamUsage, rewrite_request};

fuzz_target!(|input: (&[u8], u8, Option<u16>)| {
    let (body, selector, cap) = input;
    // Prefix affinity reads every body, JSON or not, and never panics.
    let _ = maas_protocol::prompt_prefix::prefix_key(body);
    let endpoint = selector;
    let stream_usage = match selector / 5 % 3 {
        0 => StreamUsage::Continuous,
        1 => StreamUsage::Final,
        _ => StreamUsage::Off,
    };
    let endpoint = match endpoint % 5 {
        0 => Endpoint::ChatCompletions,
        1 => Endpoint::Completions,
        2 => Endpoint::Embeddings,
        3 => Endpoint::Responses,
        _ => Endpoint::Other,
    };
    let cap = cap.map(u64::from);
    // The proxy rewrites only bodies inspect_json accepted.
    let Ok(facts) = inspect_json(body) else {
        return;
    };
    // The prompt's second walk (with a tokenizer) reads the same members.
    assert_eq!(prompt_tally(body, &Bytes), Some(facts.prompt));
    let policy = ForwardPolicy {
        stream_usage,
        max_tokens_cap: cap,
        default_model: (selector & 0x80 != 0).then_some("fuzz-model"),
        queue_priority: (selector & 0x40 != 0).then_some(-1),
    };
    if let Ok(rewrite) = rewrite_request(body, endpoint, &policy) {
        let original: serde_json::Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            // serde_json's tree refuses some JSON its skipping parser takes
            // (lone surrogate escapes): nothing to compare against.
            Err(_) => return,
        };
        if let Some(forwarded) = &rewrite.body {
            let value: serde_json::Value = serde_json::from_slice(forwarded).expect("forwarded bodies are JSON");
            if rewrite.stream
                && stream_usage != StreamUsage::Off
                && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
            {
                assert_eq!(value["stream_options"]["include_usage"], true);
            }
            let owned = [
                "stream_options",
                "max_tokens",
                "max_completion_tokens",
                "max_output_tokens",
                "model",
                "priority",
            ];
            for (name, member) in original.as_object().expect("accepted bodies are objects") {
                if !owned.contains(&name.as_str()) {
                    assert_eq!(&value[name], member, "{name} changed");
                }
            }
        }
        // The model server's queue priority is the policy's, never the client's.
        let wanted = match (policy.queue_priority, endpoint) {
            (Some(priority), _) => Some(priority),
            (None, Endpoint::Other) => None,
            (None, _) => Some(0),
        };
        if let Some(wanted) = wanted {
            let forwarded = rewrite.body.as_deref().unwrap_or(body);
            let value: serde_json::Value = serde_json::from_slice(forwarded).expect("forwarded bodies are JSON");
            assert!(value.get("priority").is_none_or(|p| p.as_i64() == Some(wanted)), "priority {value}");
        }
        // A cap of 0 is forwarded as 1: servers read 0 as no limit.
        if let (Some(cap), Some(max)) = (cap, rewrite.max_tokens) {
            assert!(max <= cap.max(1));
        }
        // Every field the upstream may honour ends at most at the cap.
        if let (Some(cap), Some(forwarded)) = (cap, &rewrite.body) {
            let value: serde_json::Value = serde_json::from_slice(forwarded).expect("forwarded bodies are JSON");
            for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
                // Whole decimals (`2e2`) are counts too: compare them as numbers.
                if let Some(asked) = value.get(field).and_then(|v| v.as_f64()) {
                    let honoured = match endpoint {
                        Endpoint::ChatCompletions => field != "max_output_tokens",
                        Endpoint::Completions => field == "max_tokens",
                        Endpoint::Responses => field == "max_output_tokens",
                        _ => false,
                    };
                    assert!(!honoured || (1.0..=cap.max(1) as f64).contains(&asked), "{field} {asked} past {cap}");
                }
            }
        }
    }
    if let Some(stripped) = remove_member(body, "usage") {
        assert!(stripped.len() < body.len());
    }
});
