//! A request's prompt prefix, the part of its prompt a model server's
//! prefix cache can share with other requests (a shared system prompt, the
//! earliest turns of a conversation), reduced to a key without parsing the
//! body: the gateway's prefix affinity sends requests with the same key to
//! the same replica.

/// How many bytes of the prompt's JSON are its prefix: about 256 tokens,
/// 16 of vLLM's blocks.
pub const PREFIX_BYTES: usize = 1024;

/// The members whose value is the prompt, tried in this order (chat,
/// completions, Responses).
const PROMPT_MEMBERS: [&[u8]; 3] = [b"\"messages\"", b"\"prompt\"", b"\"input\""];

/// The key of a request body's prompt prefix: a hash of the first
/// [`PREFIX_BYTES`] of the value of its `messages`, `prompt` or `input`
/// member, as the client wrote them. `None` without one. A member name
/// inside a string (escaped) is skipped; anything this misreads costs
/// only a worse-placed request, never a wrong answer.
pub fn prefix_key(body: &[u8]) -> Option<u64> {
    PROMPT_MEMBERS.iter().find_map(|member| {
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&body[from..], member).map(|i| i + from) {
            from = at + member.len();
            if at > 0 && body[at - 1] == b'\\' {
                continue;
            }
            let rest = &body[from..];
            let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
            if rest[colon] != b':' {
                continue;
            }
            let value = &rest[colon + 1..];
            let start = value
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(value.len());
            let value = &value[start..];
            return Some(fnv1a(&value[..value.len().min(PREFIX_BYTES)]));
        }
        None
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_prompt_start_is_the_same_key() {
        let system = "You are a careful assistant. ".repeat(50);
        let body = |question: &str, order: bool| {
            let messages =
                format!(r#"[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{question}"}}]"#);
            if order {
                format!(r#"{{"model":"m","messages": {messages},"stream":true}}"#)
            } else {
                format!(r#"{{"stream":false,"messages":{messages},"model":"m"}}"#)
            }
        };
        let a = prefix_key(body("first?", true).as_bytes());
        assert!(a.is_some());
        assert_eq!(a, prefix_key(body("second?", false).as_bytes()), "members in any order");
        let other = format!(r#"{{"model":"m","messages":[{{"role":"system","content":"Other. {system}"}}]}}"#);
        assert_ne!(a, prefix_key(other.as_bytes()));
        // A member name inside a string is not the member.
        let tricky = r#"{"model":"m","note":"\"messages\": no","prompt":"hello"}"#;
        assert_eq!(prefix_key(tricky.as_bytes()), prefix_key(br#"{"prompt":"hello"}"#));
        assert_eq!(prefix_key(br#"{"model":"m"}"#), None);
        assert_eq!(prefix_key(b"\"messages\""), None, "cut short");
    }
}
