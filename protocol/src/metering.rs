//! What a response cost: the `usage` object of OpenAI-style JSON bodies
//! (chat, completions, embeddings, and the Responses API's
//! `input_tokens`/`output_tokens`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
}

impl TokenUsage {
    /// The same usage with at most `most` completion tokens.
    pub fn with_completion_at_most(self, most: u64) -> TokenUsage {
        let completion = self.completion_tokens.min(most);
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens.saturating_add(completion),
        }
    }
}

/// A `usage` object as servers write it: chat/completions/embeddings names,
/// or the Responses API's `input_tokens`/`output_tokens`.
#[derive(Deserialize)]
pub(crate) struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl RawUsage {
    pub(crate) fn tokens(&self) -> TokenUsage {
        let prompt = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self.total_tokens.unwrap_or(prompt.saturating_add(completion)),
        }
    }
}

/// The usage of a complete JSON response body; `None` when it has none
/// or is not JSON.
pub fn usage_of_json(body: &[u8]) -> Option<TokenUsage> {
    let parsed: WithUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.as_ref().map(RawUsage::tokens)
}

/// Finds the top-level `usage` member of a JSON object as the body passes,
/// holding only that member's bytes: an answer of any size is metered
/// (OpenAI-style servers write `usage` last, after `data` or `choices`
/// that may run to many megabytes). Strings are skipped with `memchr`, so
/// the cost is a pass over the bytes, not a parse.
#[derive(Debug, Default)]
pub struct UsageScanner {
    /// Nesting depth: 1 is inside the top-level object.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, the next string is a member name.
    expect_name: bool,
    /// The current top-level member name, raw (escapes kept).
    name: Vec<u8>,
    /// Inside the value of a top-level `usage` member.
    capturing: bool,
    value: Vec<u8>,
    /// The last `usage` read; a later one replaces it.
    found: Option<TokenUsage>,
    /// A `usage` member whose value could not be read.
    unreadable: bool,
    /// The body is not a JSON object (or its structure broke).
    broken: bool,
    seen_start: bool,
}

/// The bytes that open or close a string, an object or an array, or
/// separate members and values.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    let bytes = b"\"{}[],:";
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
};

/// A `usage` object is a few hundred bytes; a longer one is not read.
const USAGE_VALUE_CAP: usize = 64 * 1024;
/// Longer member names cannot be `usage`, however escaped.
const NAME_CAP: usize = 64;

impl UsageScanner {
    pub fn push(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() && !self.broken {
            rest = if self.in_string {
                self.in_string_bytes(rest)
            } else {
                self.structural_byte(rest)
            };
        }
    }

    /// Consumes string bytes up to and including the closing quote.
    fn in_string_bytes<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.escaped {
            self.escaped = false;
            self.keep(&bytes[..1]);
            return &bytes[1..];
        }
        match memchr::memchr2(b'"', b'\\', bytes) {
            None => {
                self.keep(bytes);
                &[]
            }
            Some(at) => {
                self.keep(&bytes[..=at]);
                if bytes[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                }
                &bytes[at + 1..]
            }
        }
    }

    /// Keeps string bytes that belong to a member name or a `usage` value.
    fn keep(&mut self, bytes: &[u8]) {
        if self.capturing {
            self.capture(bytes);
        } else if self.depth == 1 && self.expect_name && self.name.len() <= NAME_CAP {
            let room = NAME_CAP + 1 - self.name.len();
            self.name.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        if self.value.len() + bytes.len() > USAGE_VALUE_CAP {
            self.capturing = false;
            self.unreadable = true;
            self.value = Vec::new();
        } else {
            self.value.extend_from_slice(bytes);
        }
    }

    fn structural_byte<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.seen_start && !self.capturing {
            // Numbers, literals and whitespace change nothing: skip their run.
            let run = bytes
                .iter()
                .position(|b| STRUCTURAL[usize::from(*b)])
                .unwrap_or(bytes.len());
            if run > 0 {
                return &bytes[run..];
            }
        }
        let byte = bytes[0];
        if !self.seen_start {
            if byte.is_ascii_whitespace() {
                return &bytes[1..];
            }
            self.seen_start = true;
            if byte != b'{' {
                self.broken = true;
                return &[];
            }
        }
        let ends_value = self.depth == 1 && (byte == b',' || byte == b'}');
        if self.capturing && ends_value {
            self.capturing = false;
            self.read_value();
        }
        match byte {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_name {
                    self.name.clear();
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_name = true;
                }
            }
            b'}' | b']' => match self.depth.checked_sub(1) {
                Some(depth) => self.depth = depth,
                None => self.broken = true,
            },
            b':' if self.depth == 1 && self.expect_name => {
                self.expect_name = false;
                if self.name_is_usage() {
                    self.capturing = true;
                    self.value.clear();
                    return &bytes[1..];
                }
            }
            b',' if self.depth == 1 => self.expect_name = true,
            _ => {}
        }
        if self.capturing {
            self.capture(&bytes[..1]);
        }
        &bytes[1..]
    }

    /// Whether the member name just read (with its closing quote) is `usage`.
    fn name_is_usage(&self) -> bool {
        let Some(raw) = self.name.strip_suffix(b"\"") else {
            return false;
        };
        if !raw.contains(&b'\\') {
            return raw == b"usage";
        }
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|name| name == "usage")
    }

    /// The last `usage` member wins, as in a complete parse. A member given
    /// twice inside it is read as a parse into a tree reads it (the last
    /// wins); the derived struct refuses that, so only then is the tree built.
    fn read_value(&mut self) {
        let read = serde_json::from_slice::<Option<RawUsage>>(&self.value).or_else(|_| {
            serde_json::from_slice::<serde_json::Value>(&self.value)
                .and_then(<Option<RawUsage> as serde::Deserialize>::deserialize)
        });
        (self.found, self.unreadable) = match read {
            Ok(usage) => (usage.as_ref().map(RawUsage::tokens), false),
            Err(_) => (None, true),
        };
        self.value = Vec::new();
    }

    /// The usage the body reported, once it has all passed; `None` when it
    /// named none, or its `usage` could not be read.
    pub fn usage(&self) -> Option<TokenUsage> {
        if self.broken || self.unreadable || self.depth != 0 || self.in_string {
            return None;
        }
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_given_twice_in_usage_reads_as_the_last() {
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":7}}"#;
        let mut scanner = UsageScanner::default();
        scanner.push(body);
        assert_eq!(
            scanner.usage(),
            Some(TokenUsage {
                prompt_tokens: 7,
                completion_tokens: 2,
                total_tokens: 9
            })
        );
        let mut broken = UsageScanner::default();
        broken.push(br#"{"usage":{"prompt_tokens":1.5}}"#);
        assert_eq!(broken.usage(), None);
    }

    #[test]
    fn reads_every_usage_shape() {
        let chat = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            usage_of_json(chat),
            Some(TokenUsage {
                prompt_tokens: 12,
                completion_tokens: 30,
                total_tokens: 42
            })
        );
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(usage_of_json(embeddings).unwrap().total_tokens, 8);
        assert_eq!(usage_of_json(embeddings).unwrap().completion_tokens, 0);
        let responses = br#"{"output":[],"usage":{"input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(usage_of_json(responses).unwrap().total_tokens, 12);
        assert_eq!(usage_of_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_of_json(b"not json"), None);
        assert_eq!(usage_of_json(br#"{"usage":null}"#), None);
    }

    fn scan(body: &[u8], piece: usize) -> Option<TokenUsage> {
        let mut scanner = UsageScanner::default();
        for chunk in body.chunks(piece.max(1)) {
            scanner.push(chunk);
        }
        scanner.usage()
    }

    #[test]
    fn the_scanner_reads_usage_wherever_it_is_and_however_cut() {
        let bodies: [&[u8]; 6] = [
            br#"{"id":"x","choices":[{"text":"a \"usage\": {} }"}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#,
            br#"{"usage":{"prompt_tokens":12,"completion_tokens":30},"data":[[1,2],{"usage":{"prompt_tokens":1}}]}"#,
            br#" { "usage" : { "input_tokens" : 12 , "output_tokens" : 30 } , "output" : [] } "#,
            br#"{"us\u0061ge":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#,
            br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":12,"completion_tokens":30}}"#,
            br#"{"a":"\\","b":{"usage":{"prompt_tokens":9}},"usage":{"prompt_tokens":12,"completion_tokens":30}}"#,
        ];
        for body in bodies {
            for piece in [1, 2, 3, 7, 64, body.len()] {
                let usage = scan(body, piece);
                assert_eq!(
                    usage.map(|u| u.total_tokens),
                    Some(42),
                    "{} in {piece}",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(usage.map(|u| u.prompt_tokens), Some(12));
            }
        }
    }

    #[test]
    fn the_scanner_finds_no_usage_where_there_is_none() {
        let bodies: [&[u8]; 9] = [
            br#"{"choices":[]}"#,
            br#"{"usage":null}"#,
            br#"{"usage":"lots"}"#,
            br#"[{"usage":{"prompt_tokens":1}}]"#,
            br#"{"x":{"usage":{"prompt_tokens":1}}}"#,
            br#"{"usage":{"prompt_tokens":1}"#,
            br#"not json"#,
            br#"{"usage":{"prompt_tokens":1}}}"#,
            br#"{"usage":{"prompt_tokens":1},"usage":null}"#,
        ];
        for body in bodies {
            assert_eq!(scan(body, 3), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_scanner_holds_only_the_usage_member() {
        let mut body = br#"{"data":[{"embedding":""#.to_vec();
        body.extend(std::iter::repeat_n(b'A', 20 * 1024 * 1024));
        body.extend_from_slice(br#""}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#);
        let mut scanner = UsageScanner::default();
        for chunk in body.chunks(64 * 1024) {
            scanner.push(chunk);
            assert!(scanner.value.capacity() <= USAGE_VALUE_CAP);
        }
        assert_eq!(scanner.usage().map(|u| u.total_tokens), Some(7));
        let mut huge_usage = br#"{"usage":{"prompt_tokens":7,"pad":""#.to_vec();
        huge_usage.extend(std::iter::repeat_n(b'A', USAGE_VALUE_CAP));
        huge_usage.extend_from_slice(br#""}}"#);
        assert_eq!(scan(&huge_usage, 4096), None);
    }
}
