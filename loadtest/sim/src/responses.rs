//! The Responses API (`POST /v1/responses`) as vLLM serves it: a request
//! with `input` (text or messages) and `instructions`, answered as a
//! `response` object, or streamed as typed events ending with
//! `response.completed`, which carries the usage (`input_tokens`,
//! `output_tokens`). There is no `[DONE]` and no per-event usage.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::openai::{MessageContent, ResponseMeta};
use crate::tokens::TextCounter;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: ResponsesInput,
    pub instructions: Option<String>,
    #[serde(default, deserialize_with = "crate::openai::lenient::count")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, deserialize_with = "crate::openai::lenient::flag")]
    pub stream: bool,
    /// vLLM's queue priority ([`crate::openai::GenerationOptions::priority`]).
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<InputItem>),
}

#[derive(Debug, Deserialize)]
pub struct InputItem {
    #[serde(default)]
    pub content: Option<MessageContent>,
}

impl ResponsesRequest {
    /// As a chat: the instructions are a system message, each input item
    /// a message.
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens_by(&TextCounter::Words)
    }

    /// Prompt tokens as `counter` counts text.
    pub fn prompt_tokens_by(&self, counter: &TextCounter) -> u32 {
        counter.chat(self.prompt_texts().iter().map(String::as_str))
    }

    /// The instructions, then every input message's text.
    pub fn prompt_texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = self.instructions.iter().cloned().collect();
        match &self.input {
            ResponsesInput::Text(text) => texts.push(text.clone()),
            ResponsesInput::Items(items) => texts.extend(
                items
                    .iter()
                    .map(|item| item.content.as_ref().map(MessageContent::text).unwrap_or_default()),
            ),
        }
        texts
    }
}

fn usage(prompt: u32, completion: u32) -> Value {
    json!({
        "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    })
}

fn message_id(meta: &ResponseMeta) -> String {
    format!("msg_{}", meta.id.trim_start_matches("resp_"))
}

fn message(meta: &ResponseMeta, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": message_id(meta), "status": status, "role": "assistant", "content": content})
}

/// The `response` object; `usage` and `output` once it is done.
pub fn response_object(meta: &ResponseMeta, done: Option<(&str, &str, u32, u32)>) -> Value {
    let mut response = json!({
        "id": meta.id, "object": "response", "created_at": meta.created, "model": meta.model,
        "status": "in_progress", "output": [], "incomplete_details": null,
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "error": null, "instructions": null, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        "access_programs": null,
    });
    if let Some((text, finish_reason, prompt, completion)) = done {
        let cut = finish_reason == "length";
        response["status"] = json!(if cut { "incomplete" } else { "completed" });
        if cut {
            response["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        response["output"] = json!([message(meta, text, "completed")]);
        response["usage"] = usage(prompt, completion);
    }
    response
}

/// Numbers the events of one streamed response.
#[derive(Debug, Default)]
pub struct EventWriter {
    sequence: u64,
    out: String,
}

impl EventWriter {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// Everything before the first token.
    pub fn opening(&mut self, meta: &ResponseMeta) -> String {
        let response = response_object(meta, None);
        self.push("response.created", json!({"response": response}));
        self.push("response.in_progress", json!({"response": response}));
        self.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": message(meta, "", "in_progress")}),
        );
        self.push(
            "response.content_part.added",
            json!({"item_id": message_id(meta), "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        self.take()
    }

    pub fn delta(&mut self, meta: &ResponseMeta, token: &str) -> String {
        self.push(
            "response.output_text.delta",
            json!({"item_id": message_id(meta), "output_index": 0, "content_index": 0, "delta": token, "logprobs": []}),
        );
        self.take()
    }

    /// Everything after the last token, ending with `response.completed`
    /// (or `response.incomplete` when cut at `max_output_tokens`).
    pub fn closing(
        &mut self,
        meta: &ResponseMeta,
        text: &str,
        finish_reason: &str,
        prompt: u32,
        completion: u32,
    ) -> String {
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        self.push(
            "response.output_text.done",
            json!({"item_id": message_id(meta), "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.push(
            "response.content_part.done",
            json!({"item_id": message_id(meta), "output_index": 0, "content_index": 0, "part": part}),
        );
        self.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": message(meta, text, "completed")}),
        );
        let response = response_object(meta, Some((text, finish_reason, prompt, completion)));
        let kind = if finish_reason == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.push(kind, json!({"response": response}));
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Kind;

    fn meta() -> ResponseMeta {
        ResponseMeta {
            kind: Kind::Response,
            id: "resp_1".into(),
            created: 1,
            model: "m".into(),
        }
    }

    #[test]
    fn prompts_count_like_chats() {
        let request: ResponsesRequest =
            serde_json::from_str(r#"{"model":"m","input":"two words","instructions":"be brief"}"#).unwrap();
        assert_eq!(request.prompt_tokens(), (2 + 3) + (2 + 3) + 3);
        let request: ResponsesRequest = serde_json::from_str(
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a b c"}]}]}"#,
        )
        .unwrap();
        assert_eq!(request.prompt_tokens(), (3 + 3) + 3);
    }

    #[test]
    fn streams_end_with_the_usage() {
        let mut events = EventWriter::default();
        let text = format!(
            "{}{}{}",
            events.opening(&meta()),
            events.delta(&meta(), " hi"),
            events.closing(&meta(), " hi", "stop", 5, 1)
        );
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: response.completed\n"), "{last}");
        let data: Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["response"]["usage"]["input_tokens"], 5);
        assert_eq!(data["response"]["usage"]["total_tokens"], 6);
        assert_eq!(data["response"]["output"][0]["content"][0]["text"], " hi");
        assert_eq!(
            data["sequence_number"], 8,
            "4 opening events, 1 delta, then the closing 4"
        );
        let cut = response_object(&meta(), Some(("x", "length", 1, 1)));
        assert_eq!(cut["status"], "incomplete");
    }
}
