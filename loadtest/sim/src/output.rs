//! What a chat answer is made of, decided from the request: plain text,
//! a JSON document (`response_format` `json_object` or `json_schema`, of
//! that schema), or a call of one of the request's `tools`, as a model
//! server with tool calling and guided decoding answers. The simulator
//! models their shapes and token counts, not their meaning.
//!
//! Whatever the shape, the output is a list of tokens: words of the
//! vocabulary for text, pieces of the serialized JSON otherwise, so that
//! `max_tokens` cuts it (a truncated document, `finish_reason: length`)
//! and the usage counts it as it does text.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::tokens::{Rng, token_text};

/// The form of one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Text,
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A document valid against this JSON schema.
    JsonSchema(Value),
    /// A call of the function `name`, its arguments valid against `parameters`.
    ToolCall {
        name: String,
        parameters: Value,
    },
}

/// The shape a chat request asks for: a tool call when it offers tools and
/// lets or makes the model call one (not right after a tool's result,
/// which is answered in words), else what `response_format` says.
pub fn shape_of(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    response_format: Option<&Value>,
    last_role: Option<&str>,
) -> Result<Shape, String> {
    let functions: Vec<&Value> = tools
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|t| t.get("function")).collect())
        .unwrap_or_default();
    let chosen = match tool_choice {
        None | Some(Value::Null) => (!functions.is_empty() && last_role != Some("tool")).then(|| functions[0]),
        Some(Value::String(choice)) => match choice.as_str() {
            "none" => None,
            "auto" => (!functions.is_empty() && last_role != Some("tool")).then(|| functions[0]),
            "required" => Some(
                *functions
                    .first()
                    .ok_or("tool_choice `required` needs at least one tool")?,
            ),
            other => return Err(format!("unknown tool_choice `{other}`")),
        },
        Some(choice) => {
            let name = choice["function"]["name"].as_str().ok_or(
                "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
            )?;
            Some(
                *functions
                    .iter()
                    .find(|f| f["name"] == name)
                    .ok_or_else(|| format!("tool_choice names `{name}`, which is not among the tools"))?,
            )
        }
    };
    if let Some(function) = chosen {
        let name = function["name"]
            .as_str()
            .ok_or("every tool's function needs a name")?
            .to_owned();
        let parameters = function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        return Ok(Shape::ToolCall { name, parameters });
    }
    match response_format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        None | Some("text") => Ok(Shape::Text),
        Some("json_object") => Ok(Shape::JsonObject),
        Some("json_schema") => {
            let schema = response_format
                .and_then(|f| f["json_schema"].get("schema"))
                .cloned()
                .ok_or("response_format json_schema needs json_schema.schema")?;
            Ok(Shape::JsonSchema(schema))
        }
        Some(other) => Err(format!("unknown response_format type `{other}`")),
    }
}

/// The tokens of an answer of `shape` with `count` tokens at most (text
/// takes exactly `count`; a document takes what it needs, cut at `cap`).
pub fn tokens(shape: &Shape, count: u32, cap: Option<u32>, rng: &mut Rng) -> Vec<Cow<'static, str>> {
    let document = match shape {
        Shape::Text => return (0..count).map(|_| Cow::Borrowed(token_text(rng))).collect(),
        Shape::JsonObject => {
            let words: String = (0..count.clamp(1, 12)).map(|_| token_text(rng)).collect();
            json!({"answer": words.trim()})
        }
        Shape::JsonSchema(schema) | Shape::ToolCall { parameters: schema, .. } => sample(schema, schema, rng, 0),
    };
    let mut pieces = split(&document.to_string());
    if let Some(cap) = cap {
        pieces.truncate(cap as usize);
    }
    pieces
}

/// `text` in pieces of up to four characters, as a tokenizer splits JSON.
fn split(text: &str) -> Vec<Cow<'static, str>> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(4)
        .map(|piece| Cow::Owned(piece.iter().collect()))
        .collect()
}

/// A value valid against `schema` (`root` resolves `$ref`s): every
/// property of an object, the first of `enum`, `anyOf` and `oneOf`.
fn sample(schema: &Value, root: &Value, rng: &mut Rng, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|path| path.split('/').fold(root, |node, part| &node[part]));
        return match target {
            Some(target) if !target.is_null() => sample(target, root, rng, depth + 1),
            _ => Value::Null,
        };
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return sample(first, root, rng, depth + 1);
        }
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        // `["string", "null"]`: the first type.
        Value::Array(kinds) => kinds.first().and_then(Value::as_str).unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), sample(property, root, rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let items = schema.get("items").cloned().unwrap_or(json!({"type": "string"}));
            let least = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).max(1);
            Value::Array((0..least).map(|_| sample(&items, root, rng, depth + 1)).collect())
        }
        "integer" => json!(rng.between(1, 100)),
        "number" => json!(f64::from(rng.between(1, 1000)) / 10.0),
        "boolean" => json!(rng.next_u64().is_multiple_of(2)),
        "null" => Value::Null,
        _ => json!(token_text(rng).trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "required": ["city"],
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}
        }}}])
    }

    #[test]
    fn tools_are_called_unless_declined_or_just_answered() {
        let tools = weather();
        let call = shape_of(Some(&tools), None, None, Some("user")).unwrap();
        assert!(matches!(&call, Shape::ToolCall { name, .. } if name == "get_weather"));
        assert_eq!(shape_of(Some(&tools), None, None, Some("tool")).unwrap(), Shape::Text);
        assert_eq!(
            shape_of(Some(&tools), Some(&json!("none")), None, Some("user")).unwrap(),
            Shape::Text
        );
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert!(matches!(
            shape_of(Some(&tools), Some(&named), None, Some("tool")).unwrap(),
            Shape::ToolCall { .. }
        ));
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert!(shape_of(Some(&tools), Some(&unknown), None, None).is_err());
        assert!(shape_of(None, Some(&json!("required")), None, None).is_err());
        assert_eq!(shape_of(None, None, None, None).unwrap(), Shape::Text);
    }

    #[test]
    fn documents_follow_their_schema_and_are_cut_by_max_tokens() {
        let schema = json!({
            "type": "object", "required": ["name", "age", "tags", "pet"],
            "properties": {
                "name": {"type": "string"}, "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "pet": {"$ref": "#/$defs/Pet"}, "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            },
            "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}}}
        });
        let shape = Shape::JsonSchema(schema);
        let mut rng = Rng::new(7);
        let text: String = tokens(&shape, 5, None, &mut rng).concat();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["name"].is_string() && value["age"].is_u64() && value["tags"][0].is_string());
        assert_eq!(value["pet"]["kind"], "cat");
        assert!(value["nickname"].is_string());
        let cut = tokens(&shape, 5, Some(3), &mut rng);
        assert_eq!(cut.len(), 3);
        assert!(
            serde_json::from_str::<Value>(&cut.concat()).is_err(),
            "a truncated document"
        );

        let object: String = tokens(&Shape::JsonObject, 4, None, &mut rng).concat();
        assert!(serde_json::from_str::<Value>(&object).unwrap().is_object());
        assert_eq!(tokens(&Shape::Text, 6, None, &mut rng).len(), 6);
    }

    #[test]
    fn response_formats() {
        let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
        assert!(matches!(
            shape_of(None, None, Some(&schema), None).unwrap(),
            Shape::JsonSchema(_)
        ));
        let object = json!({"type": "json_object"});
        assert_eq!(shape_of(None, None, Some(&object), None).unwrap(), Shape::JsonObject);
        assert!(shape_of(None, None, Some(&json!({"type": "xml"})), None).is_err());
    }
}
