//! OpenAI's model endpoints, which the gateway answers itself from the
//! catalog (`GET /v1/models`, `GET /v1/models/{id}`), and the methods
//! OpenAI's paths take, so that a wrong one is a 405 and not a 400 about
//! a missing model.

use crate::request::credentials::percent_decode_bytes;
use crate::request::rewrite::Endpoint;

/// A request for the models a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelsRequest {
    List,
    /// The id as the client wrote it, percent-decoded: ids such as
    /// `meta-llama/Llama-3.1-8B` keep their slash.
    Retrieve(String),
}

/// `GET /v1/models` or `GET /v1/models/{id}` below a product's prefix or
/// on the shared endpoint; `api_path` is normalised.
pub fn models_request(method: &str, api_path: &str) -> Option<ModelsRequest> {
    if !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let path = api_path.trim_end_matches('/');
    if path == "/v1/models" {
        return Some(ModelsRequest::List);
    }
    let escaped = path.strip_prefix("/v1/models/")?;
    let id = String::from_utf8(percent_decode_bytes(escaped, false)).ok()?;
    (!id.is_empty()).then_some(ModelsRequest::Retrieve(id))
}

/// On the shared endpoint, the methods an OpenAI path takes when the
/// request's is not one of them (for the 405's `Allow`). Product routes
/// ask their mapping rules instead.
pub fn shared_allowed_methods(method: &str, api_path: &str) -> Option<&'static str> {
    let path = api_path.trim_end_matches('/');
    let allowed = if Endpoint::of_path(path).is_inference() {
        "POST"
    } else if path == "/v1/models" || path.starts_with("/v1/models/") {
        "GET"
    } else {
        return None;
    };
    (!method.eq_ignore_ascii_case(allowed)).then_some(allowed)
}

/// `GET /v1/models`'s answer.
pub fn model_list<'a>(models: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let data: Vec<serde_json::Value> = models.into_iter().map(|id| model_object(id)).collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default()
}

/// `GET /v1/models/{id}`'s answer.
pub fn model_json(id: &str) -> Vec<u8> {
    serde_json::to_vec(&model_object(id)).unwrap_or_default()
}

fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "maas"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths_are_recognised_with_their_ids() {
        assert_eq!(models_request("GET", "/v1/models"), Some(ModelsRequest::List));
        assert_eq!(models_request("GET", "/v1/models/"), Some(ModelsRequest::List));
        assert_eq!(
            models_request("GET", "/v1/models/granite-3.1"),
            Some(ModelsRequest::Retrieve("granite-3.1".into()))
        );
        assert_eq!(
            models_request("get", "/v1/models/meta-llama/Llama-3.1-8B"),
            Some(ModelsRequest::Retrieve("meta-llama/Llama-3.1-8B".into()))
        );
        assert_eq!(
            models_request("GET", "/v1/models/org%2Fm%20x"),
            Some(ModelsRequest::Retrieve("org/m x".into()))
        );
        assert_eq!(models_request("GET", "/v1/models/%ff"), None, "not UTF-8");
        assert_eq!(models_request("POST", "/v1/models"), None);
        assert_eq!(models_request("GET", "/v1/modelsx"), None);
    }

    #[test]
    fn wrong_methods_name_the_right_one() {
        assert_eq!(shared_allowed_methods("GET", "/v1/chat/completions"), Some("POST"));
        assert_eq!(shared_allowed_methods("DELETE", "/v1/embeddings"), Some("POST"));
        assert_eq!(shared_allowed_methods("POST", "/v1/chat/completions"), None);
        assert_eq!(shared_allowed_methods("POST", "/v1/models"), Some("GET"));
        assert_eq!(shared_allowed_methods("GET", "/v1/models/x"), None);
        assert_eq!(shared_allowed_methods("GET", "/v1/files"), None, "not ours to judge");
    }

    #[test]
    fn answers_are_openai_shaped() {
        let list: serde_json::Value = serde_json::from_slice(&model_list(&["a".into(), "b".into()])).unwrap();
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][1]["id"], "b");
        let one: serde_json::Value = serde_json::from_slice(&model_json("a/b")).unwrap();
        assert_eq!(
            (one["id"].as_str(), one["object"].as_str()),
            (Some("a/b"), Some("model"))
        );
    }
}
