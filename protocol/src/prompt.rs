//! What a prompt can cost, read from the request body in the same pass
//! as its other facts ([`crate::body`]): the bytes of its text, its token
//! ids (exact), its images, audio and videos, and its messages. The
//! [`PromptTally::bound`] built from them is never below what a byte-level
//! tokenizer counts: a token covers at least one byte of text, a token id is
//! one token, the chat template adds at most
//! [`PromptCosts::message_tokens`] a message and
//! [`PromptCosts::template_tokens`] once, and a media item costs at most
//! its configured bound.
//! Tools and functions are rendered into the prompt as JSON, so their
//! rendered length counts.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The most tokens a model's template and media add to a prompt: the
/// counting part of a model's settings in the catalog (`ModelSettings`
/// in maas-store, whose defaults these are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptCosts {
    /// Most tokens one image costs.
    pub image_tokens: u64,
    /// Most tokens one audio input costs.
    pub audio_tokens: u64,
    /// Most tokens one video or file costs.
    pub video_tokens: u64,
    /// Most tokens the chat template adds per message.
    pub message_tokens: u64,
    /// Most tokens the template adds once a request.
    pub template_tokens: u64,
}

impl Default for PromptCosts {
    fn default() -> Self {
        PromptCosts {
            image_tokens: 4096,
            audio_tokens: 4096,
            video_tokens: 32768,
            message_tokens: 8,
            // Llama 3.1's default system prompt with its dates takes about 30.
            template_tokens: 64,
        }
    }
}

/// How the text of a prompt is counted: in bytes (the bound), or in the
/// tokens of the model's tokenizer (exact).
pub trait TextCount {
    fn count(&self, text: &str) -> u64;
}

/// A byte per token: no byte-level tokenizer makes more tokens of a text.
pub struct Bytes;

impl TextCount for Bytes {
    fn count(&self, text: &str) -> u64 {
        text.len() as u64
    }
}

/// What a prompt holds, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptTally {
    /// Text: its UTF-8 bytes once unescaped ([`Bytes`]), or its tokens
    /// when counted with the model's tokenizer.
    pub text: u64,
    /// Token ids given as numbers: counted exactly.
    pub token_ids: u64,
    pub images: u64,
    pub audio: u64,
    /// Videos and files.
    pub videos: u64,
    /// Messages (chat) or input items (the Responses API).
    pub messages: u64,
}

impl PromptTally {
    pub(crate) fn add(&mut self, other: PromptTally) {
        self.text = self.text.saturating_add(other.text);
        self.token_ids = self.token_ids.saturating_add(other.token_ids);
        self.images = self.images.saturating_add(other.images);
        self.audio = self.audio.saturating_add(other.audio);
        self.videos = self.videos.saturating_add(other.videos);
        self.messages = self.messages.saturating_add(other.messages);
    }

    /// The most tokens the prompt can cost a model counted as `settings` say.
    pub fn bound(&self, settings: &PromptCosts) -> u64 {
        [
            self.text,
            self.token_ids,
            self.images.saturating_mul(settings.image_tokens),
            self.audio.saturating_mul(settings.audio_tokens),
            self.videos.saturating_mul(settings.video_tokens),
            self.messages.saturating_mul(settings.message_tokens),
            settings.template_tokens,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }

    /// The prompt's tokens as billed when the model server reports none
    /// and its text was counted by the model's tokenizer: the count, media
    /// at their bound, the template's tokens per message (not its
    /// once-a-request allowance, a bound kept for holds).
    pub fn billable(&self, settings: &PromptCosts) -> u64 {
        self.bound(settings).saturating_sub(settings.template_tokens)
    }
}

/// The kind of media a content part with this `type` carries.
fn media_kind(kind: &str) -> Option<fn(&mut PromptTally)> {
    match kind {
        "image_url" | "input_image" | "image" => Some(|t| t.images += 1),
        "input_audio" | "audio_url" | "audio" => Some(|t| t.audio += 1),
        "video_url" | "video" | "file" | "input_file" => Some(|t| t.videos += 1),
        _ => None,
    }
}

/// The members that make a part without `type` a media part.
const MEDIA_KEYS: [&str; 4] = ["image_url", "input_audio", "audio_url", "video_url"];

/// How a value is counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// As prompt content: text, token ids and media parts.
    Content,
    /// As JSON rendered into the prompt (tools): its whole rendered length,
    /// spaced as templates print it.
    Rendered,
}

/// Tallies any JSON value, text counted by its counter.
#[derive(Clone, Copy)]
struct Tally<'c>(Reading, &'c dyn TextCount);

impl<'de> DeserializeSeed<'de> for Tally<'_> {
    type Value = PromptTally;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PromptTally, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn text(bytes: usize) -> PromptTally {
    PromptTally {
        text: bytes as u64,
        ..PromptTally::default()
    }
}

/// Rendered JSON puts quotes, `: ` and `, ` around what the value holds.
const RENDERED_MEMBER: usize = 6;
/// The longest rendering of a number.
const RENDERED_NUMBER: usize = 24;

impl<'de> Visitor<'de> for Tally<'_> {
    type Value = PromptTally;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<PromptTally, E> {
        let quotes = if self.0 == Reading::Rendered { 2 } else { 0 };
        Ok(text(self.1.count(value) as usize + quotes))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<PromptTally, E> {
        Ok(text(if self.0 == Reading::Rendered { 5 } else { 0 }))
    }
    fn visit_unit<E: de::Error>(self) -> Result<PromptTally, E> {
        Ok(text(if self.0 == Reading::Rendered { 4 } else { 0 }))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<PromptTally, E> {
        Ok(self.number())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<PromptTally, E> {
        Ok(self.number())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<PromptTally, E> {
        Ok(self.number())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptTally, A::Error> {
        let mut tally = text(if self.0 == Reading::Rendered { 2 } else { 0 });
        while let Some(item) = seq.next_element_seed(self)? {
            tally.add(item);
            if self.0 == Reading::Rendered {
                tally.add(text(2));
            }
        }
        Ok(tally)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PromptTally, A::Error> {
        let mut tally = text(if self.0 == Reading::Rendered { 2 } else { 0 });
        let (mut media, mut typed) = (None, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if self.0 == Reading::Rendered {
                tally.add(text(self.1.count(&key) as usize + RENDERED_MEMBER));
            }
            if key == "type" && self.0 == Reading::Content {
                let kind = map.next_value_seed(TypeName)?;
                typed = true;
                media = kind.as_deref().and_then(media_kind);
                tally.add(text(kind.map_or(0, |k| self.1.count(&k) as usize)));
            } else {
                // vLLM takes a part without `type` by its media key.
                if !typed && self.0 == Reading::Content && MEDIA_KEYS.contains(&key.as_ref()) {
                    media = media_kind(&key);
                }
                tally.add(map.next_value_seed(self)?);
            }
        }
        // A media part costs its bound, whatever its URL or data weighs.
        Ok(match media {
            Some(count) => {
                let mut item = PromptTally::default();
                count(&mut item);
                item
            }
            None => tally,
        })
    }
}

impl Tally<'_> {
    fn number(self) -> PromptTally {
        match self.0 {
            Reading::Content => PromptTally {
                token_ids: 1,
                ..PromptTally::default()
            },
            Reading::Rendered => text(RENDERED_NUMBER),
        }
    }
}

/// A `type` member: its name when it is a string.
struct TypeName;

impl<'de> DeserializeSeed<'de> for TypeName {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypeName {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a type name")
    }
    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(value)))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(value.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Tallies the body member `name` if it is part of the prompt, its text
/// counted by `counter`.
pub(crate) fn tally_member<'de, A: MapAccess<'de>>(
    name: &str,
    map: &mut A,
    counter: &dyn TextCount,
) -> Result<Option<PromptTally>, A::Error> {
    Ok(Some(match name {
        // Each entry is a message (an input item); text is text.
        "messages" | "input" => map.next_value_seed(Messages(counter))?,
        // vLLM renders documents and template arguments into the prompt,
        // and reads each row of `prompt_embeds` as a token.
        "instructions" | "suffix" | "system" | "documents" | "chat_template_kwargs" | "prompt_embeds" => {
            map.next_value_seed(Tally(Reading::Content, counter))?
        }
        "tools" | "functions" => map.next_value_seed(Tally(Reading::Rendered, counter))?,
        _ => return Ok(None),
    }))
}

/// A list of messages (or input items), or a single text.
struct Messages<'c>(&'c dyn TextCount);

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = PromptTally;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PromptTally, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = PromptTally;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptTally, A::Error> {
        let mut tally = PromptTally::default();
        while let Some(item) = seq.next_element_seed(Tally(Reading::Content, self.0))? {
            tally.add(item);
            tally.messages += 1;
        }
        Ok(tally)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<PromptTally, E> {
        Tally(Reading::Content, self.0).visit_str(value)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<PromptTally, E> {
        Ok(PromptTally::default())
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<PromptTally, E> {
        Tally(Reading::Content, self.0).visit_u64(value)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<PromptTally, E> {
        Tally(Reading::Content, self.0).visit_i64(value)
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<PromptTally, E> {
        Tally(Reading::Content, self.0).visit_f64(value)
    }
    fn visit_unit<E: de::Error>(self) -> Result<PromptTally, E> {
        Ok(PromptTally::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PromptTally, A::Error> {
        Tally(Reading::Content, self.0).visit_map(map)
    }
}

/// A completions `prompt`: how many prompts it holds (a text, a list of
/// token ids: one; a list of texts or of token lists: one per entry), and
/// its tally.
pub(crate) struct PromptMember<'c>(pub &'c dyn TextCount);

impl<'de> DeserializeSeed<'de> for PromptMember<'_> {
    type Value = (u64, PromptTally);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptMember<'_> {
    type Value = (u64, PromptTally);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`prompt` as a string, a list of strings, or a list of token lists")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok((1, text(self.0.count(value) as usize)))
    }
    // Any other shape is one prompt at most; the model server judges it.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((1, PromptTally::default()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok((1, PromptTally::default()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok((1, Tally(Reading::Content, self.0).number()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok((1, Tally(Reading::Content, self.0).number()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok((1, Tally(Reading::Content, self.0).number()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok((1, Tally(Reading::Content, self.0).visit_map(map)?))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut entries, mut numbers) = (0u64, 0u64);
        let mut tally = PromptTally::default();
        while let Some((is_number, item)) = seq.next_element_seed(PromptEntry(self.0))? {
            entries += 1;
            numbers += u64::from(is_number);
            tally.add(item);
        }
        // A list of token ids is one prompt; anything else, one per entry.
        Ok((if numbers == entries { 1 } else { entries }, tally))
    }
}

/// The tally of a body's prompt members, their text counted by `counter`;
/// `None` when the body is not a JSON object.
pub fn prompt_tally(body: &[u8], counter: &dyn TextCount) -> Option<PromptTally> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    de::Deserializer::deserialize_map(&mut deserializer, BodyPrompt(counter)).ok()
}

struct BodyPrompt<'c>(&'c dyn TextCount);

impl<'de> Visitor<'de> for BodyPrompt<'_> {
    type Value = PromptTally;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PromptTally, A::Error> {
        let mut tally = PromptTally::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "prompt" {
                tally.add(map.next_value_seed(PromptMember(self.0))?.1);
                continue;
            }
            match tally_member(&key, &mut map, self.0)? {
                Some(member) => tally.add(member),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(tally)
    }
}

/// An entry of a `prompt` list: whether it is a number (a token id), and its tally.
struct PromptEntry<'c>(&'c dyn TextCount);

impl<'de> DeserializeSeed<'de> for PromptEntry<'_> {
    type Value = (bool, PromptTally);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptEntry<'_> {
    type Value = (bool, PromptTally);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prompt or a token id")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok((true, Tally(Reading::Content, self.0).number()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok((true, Tally(Reading::Content, self.0).number()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok((true, Tally(Reading::Content, self.0).number()))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok((false, text(self.0.count(value) as usize)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok((false, PromptTally::default()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((false, PromptTally::default()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok((false, Tally(Reading::Content, self.0).visit_seq(seq)?))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok((false, Tally(Reading::Content, self.0).visit_map(map)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tally of a whole body's prompt members.
    fn tally(body: &str) -> PromptTally {
        crate::body::inspect_json(body.as_bytes()).unwrap().prompt
    }

    #[test]
    fn text_is_counted_in_bytes_once_unescaped() {
        let t = tally(
            r#"{"messages":[{"role":"user","content":"héllo\n"},{"role":"assistant","content":[{"type":"text","text":"ok"}]}]}"#,
        );
        assert_eq!(t.messages, 2);
        // "user" + "héllo\n" (7 bytes) + "assistant" + "text" + "ok"
        assert_eq!(t.text, 4 + 7 + 9 + 4 + 2);
        assert_eq!(t.bound(&PromptCosts::default()), 26 + 2 * 8 + 64);
    }

    #[test]
    fn token_ids_are_counted_exactly() {
        let t = tally(r#"{"prompt":[1,2,3,40000]}"#);
        assert_eq!((t.token_ids, t.text), (4, 0));
        let t = tally(r#"{"prompt":[[1,2],[3]],"suffix":"ab"}"#);
        assert_eq!((t.token_ids, t.text), (3, 2));
        let t = tally(r#"{"input":[[5,6,7]]}"#);
        assert_eq!((t.token_ids, t.messages), (3, 1));
        let facts = crate::body::inspect_json(br#"{"prompt":[[1,2],[3]]}"#).unwrap();
        assert_eq!(facts.prompts, 2);
    }

    #[test]
    fn media_cost_their_bound_whatever_they_weigh() {
        let data = "A".repeat(100_000);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"what is it"}},{{"image_url":{{"url":"data:image/png;base64,{data}"}},"type":"image_url"}},{{"type":"input_audio","input_audio":{{"data":"{data}","format":"wav"}}}}]}}]}}"#
        );
        let t = tally(&body);
        assert_eq!((t.images, t.audio, t.videos), (1, 1, 0));
        assert!(t.text < 100, "{t:?}");
        let settings = PromptCosts {
            image_tokens: 1000,
            audio_tokens: 500,
            ..PromptCosts::default()
        };
        assert!(t.bound(&settings) >= 1500);
        let responses = tally(
            r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"},{"type":"input_file","file_id":"f"}]}]}"#,
        );
        assert_eq!((responses.images, responses.videos), (1, 1));
        // vLLM infers the kind of a part without `type` from its key.
        let untyped = tally(
            r#"{"messages":[{"role":"user","content":[{"image_url":{"url":"x"}},{"input_audio":{"data":"x"}},{"video_url":{"url":"x"}}]}]}"#,
        );
        assert_eq!((untyped.images, untyped.audio, untyped.videos), (1, 1, 1));
        let text_part = tally(r#"{"messages":[{"content":[{"type":"text","text":"a","image_url":"x"}]}]}"#);
        assert_eq!(text_part.images, 0, "a typed part is what its type says");
    }

    #[test]
    fn every_member_rendered_into_the_prompt_counts() {
        let t = tally(
            r#"{"messages":[],"documents":[{"title":"ab","text":"cd"}],"chat_template_kwargs":{"x":"ef"},"prompt_embeds":"gh"}"#,
        );
        assert_eq!(t.text, 8);
    }

    #[test]
    fn tools_count_as_rendered_json() {
        let tools = r#"[{"type":"function","function":{"name":"get","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]"#;
        let t = tally(&format!(r#"{{"messages":[],"tools":{tools}}}"#));
        assert!(t.text >= tools.len() as u64, "{} < {}", t.text, tools.len());
    }

    /// Counts a token per character: not bytes.
    struct Chars;

    impl TextCount for Chars {
        fn count(&self, text: &str) -> u64 {
            text.chars().count() as u64
        }
    }

    #[test]
    fn another_counter_counts_the_same_members() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"héé"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}],"prompt":[1,2],"instructions":"ok"}"#;
        let bytes = tally(body);
        let chars = prompt_tally(body.as_bytes(), &Chars).unwrap();
        assert_eq!(
            bytes.text,
            chars.text + 2,
            "é is two bytes, one char: {bytes:?} {chars:?}"
        );
        assert_eq!((chars.images, chars.token_ids, chars.messages), (1, 2, 2));
        assert_eq!(prompt_tally(b"[1]", &Chars), None);
    }

    #[test]
    fn odd_shapes_never_fail_the_body() {
        for body in [
            r#"{"messages":[{"type":5,"content":{"type":["image_url"]}}]}"#,
            r#"{"messages":"just text"}"#,
            r#"{"messages":null,"input":{"type":"image"},"tools":null}"#,
            r#"{"prompt":{"a":1},"instructions":7}"#,
        ] {
            crate::body::inspect_json(body.as_bytes()).unwrap();
        }
        assert_eq!(tally(r#"{"input":{"type":"image"}}"#).images, 1);
    }
}
