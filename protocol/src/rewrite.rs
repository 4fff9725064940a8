//! The forwarded request body: for streams, ask the model server for usage
//! (`stream_options.include_usage`, vLLM's `continuous_usage_stats`, as the
//! product's [`StreamUsage`] says) so every token can be metered,
//! remembering what the client itself asked for; cap `max_tokens` at the
//! plan's limit. Bodies that need no change are forwarded byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json_member::JsonObject;

/// What a streamed request asks the model server for (the client sees only
/// the usage it asked for itself either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StreamUsage {
    /// `include_usage` and vLLM's `continuous_usage_stats`: usage on every
    /// chunk, so a stream cut short is metered to its last token.
    #[default]
    Continuous,
    /// `include_usage` only (OpenAI, Ollama, TGI, servers that refuse
    /// unknown `stream_options`): the final usage chunk; a stream cut short
    /// is estimated from the chunks that passed.
    Final,
    /// The request is forwarded as sent; streams without usage are
    /// estimated (one token per content chunk) and marked estimated.
    Off,
}

/// The OpenAI-style endpoint a path names (by its suffix, so product
/// prefixes and backend base paths do not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// vLLM's SageMaker-style `/invocations`: a chat, completions or
    /// embeddings request told apart by its members
    /// ([`crate::body::RequestFacts::invoked`]).
    Invocations,
    Other,
}

impl Endpoint {
    /// `gen_ai.operation.name` of a request to this endpoint (OpenTelemetry's
    /// GenAI conventions); empty for what is not a model call.
    pub fn operation_name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses => "chat",
            Endpoint::Completions => "text_completion",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Invocations | Endpoint::Other => "",
        }
    }

    /// `path` is normalised ([`crate::request_path`]); the suffix is
    /// compared without case, as some servers route.
    pub fn of_path(path: &str) -> Endpoint {
        let path = path.trim_end_matches('/').as_bytes();
        let ends_with = |suffix: &[u8]| {
            path.len() >= suffix.len() && path[path.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        if ends_with(b"/chat/completions") {
            Endpoint::ChatCompletions
        } else if ends_with(b"/completions") {
            Endpoint::Completions
        } else if ends_with(b"/embeddings") {
            Endpoint::Embeddings
        } else if ends_with(b"/responses") {
            Endpoint::Responses
        } else if ends_with(b"/invocations") {
            Endpoint::Invocations
        } else {
            Endpoint::Other
        }
    }

    /// Endpoints whose body the model server reads as an OpenAI request.
    pub fn is_inference(self) -> bool {
        self != Endpoint::Other
    }

    /// Endpoints that generate tokens (and take a `max_tokens`).
    pub fn generates(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses
        )
    }

    /// Endpoints that stream OpenAI chunks with `stream_options`.
    fn takes_stream_options(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    /// The most tokens a generation asks for, given the values of its
    /// bound fields (`None` for `null`), as servers read them: vLLM and
    /// SGLang take `max_completion_tokens or max_tokens`, so a `0` or
    /// `null` falls through to the next field and, when every field is
    /// falsy, means "to the end of the context" (`None` here). Completions
    /// alone honour a `0` (a prompt scored with `echo`); the gateway
    /// forwards it as 1, the one value every reading bounds.
    pub fn bound_asked(self, values: &[Option<u64>]) -> Option<u64> {
        let zero_is_one = self == Endpoint::Completions;
        values
            .iter()
            .flatten()
            .map(|&v| if v == 0 && zero_is_one { 1 } else { v })
            .filter(|&v| v > 0)
            .max()
    }

    /// The fields that bound generated tokens, the one set when none is
    /// given first. Chat has two: vLLM honours `max_completion_tokens`,
    /// else `max_tokens`, so both are capped.
    fn max_tokens_fields(self) -> &'static [&'static str] {
        match self {
            Endpoint::ChatCompletions => &["max_tokens", "max_completion_tokens"],
            Endpoint::Completions => &["max_tokens"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Embeddings | Endpoint::Invocations | Endpoint::Other => &[],
        }
    }
}

/// What the client asked to see of usage in a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientUsage {
    /// `stream_options.include_usage`: the final usage-only chunk.
    pub final_chunk: bool,
    /// `stream_options.continuous_usage_stats`: usage on every chunk.
    pub every_chunk: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    /// The body to forward, when it differs from the client's.
    pub body: Option<Vec<u8>>,
    pub stream: bool,
    pub client_usage: ClientUsage,
    /// `max_tokens` as forwarded, if any.
    pub max_tokens: Option<u64>,
}

/// What the gateway changes in a forwarded body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardPolicy<'a> {
    /// What streams ask the upstream for (the product's metering policy).
    pub stream_usage: StreamUsage,
    /// The most completion tokens one generation may ask for.
    pub max_tokens_cap: Option<u64>,
    /// The `model` to name when the body names none.
    pub default_model: Option<&'a str>,
    /// The model server's `priority` (vLLM's queue order under
    /// `--scheduling-policy priority`, lower first) for the request's plan;
    /// `None` (0) when the backend does not schedule by priority.
    pub queue_priority: Option<i64>,
}

/// Decides the forwarded body of a JSON request to `endpoint`, a body
/// [`crate::body::inspect_json`] accepted (which checks it is JSON). `Err`
/// when it is not an object. The body is edited in place ([`JsonObject`]),
/// never parsed into a tree: every byte the gateway does not change reaches
/// the upstream as the client sent it.
pub fn rewrite_request(body: &[u8], endpoint: Endpoint, policy: &ForwardPolicy<'_>) -> Result<Rewrite, String> {
    let (stream_usage, max_tokens_cap) = (policy.stream_usage, policy.max_tokens_cap);
    let object = JsonObject::scan(body).ok_or_else(|| "expected a JSON object".to_owned())?;
    let parse = |name: &str| {
        object
            .get(name)
            .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
    };
    let stream = parse("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut edits: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut client_usage = ClientUsage::default();
    if stream && endpoint.takes_stream_options() {
        let mut options = match parse("stream_options") {
            Some(Value::Object(options)) => options,
            _ => Map::new(),
        };
        let mut changed = false;
        for (field, asked, wanted) in [
            (
                "include_usage",
                &mut client_usage.final_chunk,
                stream_usage != StreamUsage::Off,
            ),
            (
                "continuous_usage_stats",
                &mut client_usage.every_chunk,
                stream_usage == StreamUsage::Continuous,
            ),
        ] {
            *asked = options.get(field).and_then(Value::as_bool).unwrap_or(false);
            if wanted && !*asked {
                options.insert(field.into(), Value::Bool(true));
                changed = true;
            }
        }
        if changed {
            edits.push((
                "stream_options",
                serde_json::to_vec(&options).map_err(|e| e.to_string())?,
            ));
        }
    }
    // Every field the server may read is set to one bound at most the
    // cap, so the value it uses is bounded whichever field it reads first
    // and however it reads a 0 ([`Endpoint::bound_asked`]).
    let fields = endpoint.max_tokens_fields();
    let given: Vec<(&str, Option<u64>)> = fields
        .iter()
        .filter(|field| object.get(field).is_some())
        .map(|&field| {
            // A whole decimal (`200.0`) is read as the server reads it.
            let value =
                parse(field).and_then(|v| v.as_u64().or_else(|| v.as_f64().and_then(crate::body::whole_number)));
            (field, value)
        })
        .collect();
    let values: Vec<Option<u64>> = given.iter().map(|(_, value)| *value).collect();
    let asked = endpoint.bound_asked(&values);
    let max_tokens = match max_tokens_cap {
        None => asked,
        Some(cap) => {
            let bound = asked.map_or(cap, |asked| asked.min(cap)).max(1);
            for (field, value) in &given {
                if !value.is_some_and(|v| v > 0 && v <= bound) {
                    edits.push((field, bound.to_string().into_bytes()));
                }
            }
            if let (true, Some(&first)) = (given.is_empty(), fields.first()) {
                edits.push((first, bound.to_string().into_bytes()));
            }
            fields.first().map(|_| bound)
        }
    };
    // A place in the model server's queue is the plan's to give, never
    // the client's: on a priority-scheduled backend every call vLLM may
    // queue (rerank, score and pooling are `Other` here) carries the
    // plan's; elsewhere a `priority` sent to an inference endpoint is
    // reset to vLLM's default, and other paths are not the gateway's to
    // read.
    let client_asked = object.get("priority").is_some();
    let queue_priority = match policy.queue_priority {
        Some(priority) => (priority != 0 || client_asked).then_some(priority),
        None => (client_asked && endpoint != Endpoint::Other).then_some(0),
    };
    if let Some(priority) = queue_priority {
        edits.push(("priority", priority.to_string().into_bytes()));
    }
    if let Some(model) = policy.default_model
        && object.get("model").is_none_or(|raw| raw == b"null")
    {
        edits.push(("model", serde_json::to_vec(model).map_err(|e| e.to_string())?));
    }
    Ok(Rewrite {
        body: (!edits.is_empty()).then(|| object.with(&edits)),
        stream,
        client_usage,
        max_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(
        body: &[u8],
        endpoint: Endpoint,
        stream_usage: StreamUsage,
        cap: Option<u64>,
    ) -> Result<Rewrite, String> {
        let policy = ForwardPolicy {
            stream_usage,
            max_tokens_cap: cap,
            default_model: None,
            queue_priority: None,
        };
        rewrite_request(body, endpoint, &policy)
    }

    /// The bound fields as forwarded.
    fn bounds(out: &Rewrite, fields: &[&str]) -> Vec<Option<u64>> {
        let forwarded = json(out.body.as_deref().unwrap());
        fields.iter().map(|f| forwarded[*f].as_u64()).collect()
    }

    /// What a server uses, read each way servers read the fields.
    fn every_reading(forwarded: &[Option<u64>]) -> Vec<Option<u64>> {
        let truthy = |v: &Option<u64>| v.filter(|&n| n > 0);
        let python_or = forwarded.iter().find_map(truthy);
        let option_or = forwarded.iter().find_map(|v| *v);
        let last_first = forwarded.iter().rev().find_map(|v| *v);
        vec![python_or, option_or, last_first]
    }

    #[test]
    fn every_field_the_upstream_may_honour_is_capped() {
        let chat = ["max_completion_tokens", "max_tokens"];
        for (body, expected) in [
            (&br#"{"max_completion_tokens":0,"max_tokens":5000}"#[..], 50),
            (br#"{"max_completion_tokens":0}"#, 50),
            (br#"{"max_tokens":0}"#, 50),
            (br#"{"max_completion_tokens":0,"max_tokens":0}"#, 50),
            (br#"{"max_tokens":null,"max_completion_tokens":null}"#, 50),
            (br#"{"max_completion_tokens":null,"max_tokens":30}"#, 30),
            (br#"{"max_completion_tokens":30,"max_tokens":0}"#, 30),
            (br#"{"max_completion_tokens":30.0,"max_tokens":5e3}"#, 50),
            (br#"{"max_completion_tokens":900}"#, 50),
        ] {
            let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Continuous, Some(50)).unwrap();
            let text = String::from_utf8_lossy(body);
            assert_eq!(out.max_tokens, Some(expected), "{text}");
            let forwarded = bounds(&out, &chat);
            for reading in every_reading(&forwarded) {
                assert!(
                    reading.is_some_and(|r| r >= 1 && r <= expected),
                    "{text}: {forwarded:?}"
                );
            }
        }
        // Whole decimals count as the server reads them: over the cap they
        // are capped, under it they pass as sent.
        let out = rewrite(
            br#"{"max_tokens":5e3}"#,
            Endpoint::Completions,
            StreamUsage::Continuous,
            Some(50),
        )
        .unwrap();
        assert_eq!(
            (bounds(&out, &["max_tokens"]), out.max_tokens),
            (vec![Some(50)], Some(50))
        );
        let out = rewrite(
            br#"{"max_tokens":20.0}"#,
            Endpoint::Completions,
            StreamUsage::Continuous,
            Some(50),
        )
        .unwrap();
        assert_eq!((out.body, out.max_tokens), (None, Some(20)));
        // A completion of no tokens (a prompt scored with `echo`) is forwarded
        // as 1: some servers would read 0 as no limit.
        let out = rewrite(
            br#"{"max_tokens":0}"#,
            Endpoint::Completions,
            StreamUsage::Continuous,
            Some(50),
        )
        .unwrap();
        assert_eq!(
            (bounds(&out, &["max_tokens"]), out.max_tokens),
            (vec![Some(1)], Some(1))
        );
        let out = rewrite(
            br#"{"max_output_tokens":0}"#,
            Endpoint::Responses,
            StreamUsage::Continuous,
            Some(50),
        )
        .unwrap();
        assert_eq!(bounds(&out, &["max_output_tokens"]), vec![Some(50)]);
        // Without a cap the body passes as sent.
        let out = rewrite(
            br#"{"max_tokens":0}"#,
            Endpoint::ChatCompletions,
            StreamUsage::Continuous,
            None,
        )
        .unwrap();
        assert_eq!((out.body, out.max_tokens), (None, None));
    }

    #[test]
    fn the_asked_bound_is_read_as_servers_read_it() {
        let chat = Endpoint::ChatCompletions;
        assert_eq!(chat.bound_asked(&[Some(0), Some(5000)]), Some(5000));
        assert_eq!(chat.bound_asked(&[Some(0)]), None);
        assert_eq!(chat.bound_asked(&[None, Some(0)]), None);
        assert_eq!(chat.bound_asked(&[Some(30), Some(20)]), Some(30));
        assert_eq!(Endpoint::Completions.bound_asked(&[Some(0)]), Some(1));
        assert_eq!(Endpoint::Responses.bound_asked(&[Some(0)]), None);
    }

    #[test]
    fn a_missing_model_is_named() {
        let policy = ForwardPolicy {
            default_model: Some("tiny-1b"),
            ..ForwardPolicy::default()
        };
        for body in [&br#"{"messages":[]}"#[..], br#"{"model":null,"messages":[]}"#] {
            let out = rewrite_request(body, Endpoint::ChatCompletions, &policy).unwrap();
            assert_eq!(json(&out.body.unwrap())["model"], "tiny-1b");
        }
        let out = rewrite_request(br#"{"model":"x"}"#, Endpoint::ChatCompletions, &policy).unwrap();
        assert_eq!(out.body, None, "a named model stays");
        assert_eq!(Endpoint::of_path("/v1/Chat/COMPLETIONS"), Endpoint::ChatCompletions);
        assert!(Endpoint::Embeddings.is_inference() && !Endpoint::Other.is_inference());
    }

    #[test]
    fn the_queue_priority_is_the_plans_never_the_clients() {
        let plan = |queue_priority| ForwardPolicy {
            queue_priority,
            ..ForwardPolicy::default()
        };
        let forwarded = |body: &str, endpoint, policy: &ForwardPolicy<'_>| {
            let out = rewrite_request(body.as_bytes(), endpoint, policy).unwrap();
            out.body.map(|b| json(&b)["priority"].clone())
        };
        let high = plan(Some(-1));
        assert_eq!(
            forwarded(r#"{"messages":[]}"#, Endpoint::ChatCompletions, &high),
            Some((-1).into())
        );
        for endpoint in [
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Responses,
            Endpoint::Invocations,
        ] {
            let asked = forwarded(r#"{"input":"x","priority":-1000}"#, endpoint, &high);
            assert_eq!(asked, Some((-1).into()), "{endpoint:?}");
        }
        // Without priority scheduling a client's own priority becomes the default.
        let none = plan(None);
        assert_eq!(
            forwarded(r#"{"messages":[]}"#, Endpoint::ChatCompletions, &none),
            None,
            "nothing added"
        );
        for body in [
            r#"{"messages":[],"priority":-5}"#,
            r#"{"messages":[],"priority":"-5"}"#,
            r#"{"messages":[],"priori\u0074y":-5}"#,
            r#"{"priority":-5,"messages":[],"priority":-7}"#,
        ] {
            let out = rewrite_request(body.as_bytes(), Endpoint::ChatCompletions, &none).unwrap();
            let sent = json(&out.body.unwrap());
            assert_eq!(sent["priority"], 0, "{body}");
        }
        assert_eq!(
            forwarded(r#"{"priority":-5}"#, Endpoint::Other, &none),
            None,
            "not the gateway's to read"
        );
        // Before any rewrite, a `priority` given twice, in any spelling, is refused.
        let twice = crate::body::inspect_json(br#"{"priority":-5,"priori\u0074y":-7}"#).unwrap_err();
        assert_eq!(twice.code, "duplicate_member");
        // A priority-scheduled backend queues its other calls (rerank, score) too.
        let rerank = r#"{"query":"q","documents":["a"],"priority":-5}"#;
        assert_eq!(forwarded(rerank, Endpoint::Other, &high), Some((-1).into()));
        let normal = plan(Some(0));
        assert_eq!(forwarded(rerank, Endpoint::Other, &normal), Some(0.into()));
        assert_eq!(
            forwarded(r#"{"query":"q"}"#, Endpoint::Other, &normal),
            None,
            "0 is the default"
        );
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn streams_ask_for_usage_and_remember_the_client_choice() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Continuous, None).unwrap();
        assert!(out.stream);
        assert_eq!(out.client_usage, ClientUsage::default());
        let forwarded = json(&out.body.unwrap());
        assert_eq!(forwarded["stream_options"]["include_usage"], true);
        assert_eq!(forwarded["stream_options"]["continuous_usage_stats"], true);

        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let out = rewrite(body, Endpoint::Completions, StreamUsage::Continuous, None).unwrap();
        assert!(out.client_usage.final_chunk && !out.client_usage.every_chunk);
        assert_eq!(
            json(&out.body.unwrap())["stream_options"]["continuous_usage_stats"],
            true
        );

        let body = br#"{"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#;
        let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Continuous, None).unwrap();
        assert_eq!(out.body, None, "nothing to change: forwarded as is");
    }

    #[test]
    fn the_product_policy_decides_what_streams_ask_for() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Final, None).unwrap();
        let forwarded = json(&out.body.unwrap());
        assert_eq!(forwarded["stream_options"], serde_json::json!({"include_usage": true}));
        let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Off, None).unwrap();
        assert_eq!(out.body, None, "forwarded as sent");
        assert!(out.stream);
        // What the client asked for itself still reaches the upstream and is remembered.
        let body = br#"{"stream":true,"stream_options":{"continuous_usage_stats":true}}"#;
        let out = rewrite(body, Endpoint::Completions, StreamUsage::Final, None).unwrap();
        assert!(out.client_usage.every_chunk && !out.client_usage.final_chunk);
        assert_eq!(
            json(&out.body.unwrap())["stream_options"],
            serde_json::json!({"continuous_usage_stats": true, "include_usage": true})
        );
    }

    #[test]
    fn non_streams_and_other_endpoints_are_left_alone() {
        for (body, endpoint) in [
            (&br#"{"model":"m","messages":[]}"#[..], Endpoint::ChatCompletions),
            (br#"{"model":"m","stream":true,"input":"x"}"#, Endpoint::Embeddings),
            (br#"{"model":"m","stream":true,"input":"x"}"#, Endpoint::Responses),
        ] {
            assert_eq!(
                rewrite(body, endpoint, StreamUsage::Continuous, None).unwrap().body,
                None
            );
        }
        assert!(rewrite(b"[1]", Endpoint::ChatCompletions, StreamUsage::Continuous, None).is_err());
        assert!(rewrite(b"{", Endpoint::ChatCompletions, StreamUsage::Continuous, None).is_err());
    }

    #[test]
    fn only_the_edited_members_change() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"caf\u00e9 1.0e3"}],"temperature":1.50,"stream":true,"max_tokens":99}"#;
        let out = rewrite(body, Endpoint::ChatCompletions, StreamUsage::Continuous, Some(10)).unwrap();
        let forwarded = String::from_utf8(out.body.unwrap()).unwrap();
        assert_eq!(
            forwarded,
            r#"{"stream_options":{"continuous_usage_stats":true,"include_usage":true},"model":"m","messages":[{"role":"user","content":"caf\u00e9 1.0e3"}],"temperature":1.50,"stream":true,"max_tokens":10}"#
        );
    }

    #[test]
    fn escaped_field_names_are_capped_too() {
        let out = rewrite(
            br#"{"max_tok\u0065ns":5000}"#,
            Endpoint::Completions,
            StreamUsage::Continuous,
            Some(64),
        )
        .unwrap();
        let forwarded = json(&out.body.unwrap());
        assert_eq!(forwarded["max_tokens"], 64, "{forwarded}");
        assert_eq!(forwarded.as_object().unwrap().len(), 1);
    }

    #[test]
    fn caps_max_tokens_in_the_field_the_client_used() {
        let out = rewrite(
            br#"{"max_tokens":5000}"#,
            Endpoint::ChatCompletions,
            StreamUsage::Continuous,
            Some(1024),
        )
        .unwrap();
        assert_eq!(json(&out.body.unwrap())["max_tokens"], 1024);
        assert_eq!(out.max_tokens, Some(1024));
        let out = rewrite(
            br#"{"max_completion_tokens":9}"#,
            Endpoint::ChatCompletions,
            StreamUsage::Continuous,
            Some(1024),
        )
        .unwrap();
        assert_eq!((out.body, out.max_tokens), (None, Some(9)));
        let out = rewrite(
            br#"{"max_completion_tokens":2000}"#,
            Endpoint::ChatCompletions,
            StreamUsage::Continuous,
            Some(100),
        )
        .unwrap();
        let forwarded = json(&out.body.unwrap());
        assert_eq!(forwarded["max_completion_tokens"], 100);
        assert!(forwarded.get("max_tokens").is_none());
        let out = rewrite(
            br#"{"input":"x"}"#,
            Endpoint::Responses,
            StreamUsage::Continuous,
            Some(64),
        )
        .unwrap();
        assert_eq!(
            json(&out.body.unwrap())["max_output_tokens"],
            64,
            "absent means uncapped: set the cap"
        );
        assert_eq!(
            Endpoint::of_path("/granite/v1/chat/completions/"),
            Endpoint::ChatCompletions
        );
        assert_eq!(Endpoint::of_path("/v1/completions"), Endpoint::Completions);
        assert_eq!(Endpoint::of_path("/v1/models"), Endpoint::Other);
    }
}
