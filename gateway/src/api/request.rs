//! Request bodies, read field by field from the JSON object.
//!
//! Not `#[derive(Deserialize)]` on one struct: serde's error for a wrong type names a line
//! and column, and OpenAI clients expect the `param` at fault. Reading each field on its own
//! names it, ignores unknown fields (as OpenAI's API does), and treats `null` as absent.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The fields both endpoints share, typed but not yet range-checked (`validate.rs` does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    /// A base model's name, or `BASE:ADAPTER`.
    pub model: String,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<i64>,
    /// The name the caller used for the token limit, for error messages.
    pub max_tokens_param: &'static str,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// The sampler's seed.
    pub seed: Option<u64>,
    /// Stop strings, a lone string made a list of one.
    pub stop: Vec<String>,
    /// How many choices: only 1 is served.
    pub n: Option<i64>,
    /// Server-Sent Events instead of one JSON answer.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub include_usage: bool,
}

/// A `POST /v1/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionBody {
    /// The shared fields.
    pub common: Common,
    /// The prompt, as the model sees it.
    pub prompt: String,
}

/// A `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatBody {
    /// The shared fields.
    pub common: Common,
    /// The conversation, in order.
    pub messages: Vec<ChatMessage>,
}

/// One message of a conversation, its content flattened to text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text; an array of text parts is joined with newlines.
    pub content: String,
}

/// The roles a chat template may see; others are refused rather than passed to a template
/// that would render them as it pleases.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

impl CompletionBody {
    /// Reads a completion request.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let object = parse_object(body)?;
        let common = Common::read(&object)?;
        let prompt = match object.get("prompt") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid("prompt", "`prompt` is required"));
            }
            Some(Value::String(prompt)) => prompt.clone(),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::String(prompt)] => prompt.clone(),
                _ => {
                    return Err(ApiError::invalid(
                        "prompt",
                        "`prompt` must be a string, or an array of exactly one string \
                         (batches and token arrays are not served)",
                    ));
                }
            },
            Some(_) => {
                return Err(ApiError::invalid("prompt", "`prompt` must be a string"));
            }
        };
        Ok(CompletionBody { common, prompt })
    }
}

impl ChatBody {
    /// Reads a chat completion request.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let object = parse_object(body)?;
        let common = Common::read(&object)?;
        let items = match object.get("messages") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid("messages", "`messages` is required"));
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(ApiError::invalid("messages", "`messages` must be an array"));
            }
        };
        if items.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ));
        }
        let messages = items
            .iter()
            .enumerate()
            .map(|(i, item)| message(i, item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChatBody { common, messages })
    }
}

impl Common {
    fn read(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let model: String = field(object, "model")?
            .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
        let (max_tokens, max_tokens_param) = match field(object, "max_completion_tokens")? {
            Some(max) => (Some(max), "max_completion_tokens"),
            None => (field(object, "max_tokens")?, "max_tokens"),
        };
        let stop = match object.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(_)) => field::<Vec<String>>(object, "stop")?.unwrap_or_default(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` must be a string or an array of strings",
                ));
            }
        };
        let include_usage = match object.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) => field(options, "include_usage")
                .map_err(|_| {
                    ApiError::invalid(
                        "stream_options.include_usage",
                        "`stream_options.include_usage` must be a boolean",
                    )
                })?
                .unwrap_or(false),
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ));
            }
        };
        Ok(Common {
            model,
            max_tokens,
            max_tokens_param,
            temperature: field(object, "temperature")?,
            top_p: field(object, "top_p")?,
            seed: field(object, "seed")?,
            stop,
            n: field(object, "n")?,
            stream: field(object, "stream")?.unwrap_or(false),
            include_usage,
        })
    }
}

/// The body as a JSON object, or a 400 saying why not.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_body("the request body must be a JSON object")),
        Err(err) => Err(ApiError::bad_body(format!(
            "the request body is not valid JSON: {err}"
        ))),
    }
}

/// One field, typed: absent or `null` is `None`; a wrong type is a 400 naming it.
fn field<T: DeserializeOwned>(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|err| ApiError::invalid(name, format!("`{name}` has the wrong type: {err}"))),
    }
}

/// One chat message: `{"role", "content"}`, the content a string or text parts.
fn message(index: usize, item: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{index}]");
    let invalid = |what: &str| ApiError::invalid(&param, format!("`{param}`: {what}"));
    let Value::Object(object) = item else {
        return Err(invalid("a message must be an object"));
    };
    let role = match object.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.clone(),
        Some(Value::String(role)) => {
            return Err(invalid(&format!(
                "unknown role `{role}` (one of {})",
                ROLES.join(", ")
            )));
        }
        _ => return Err(invalid("`role` must be a string")),
    };
    let content = match object.get("content") {
        Some(Value::String(content)) => content.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.get("type"), part.get("text")) {
                    (Some(Value::String(kind)), Some(Value::String(text))) if kind == "text" => {
                        texts.push(text.as_str())
                    }
                    _ => {
                        return Err(invalid(
                            "content parts must be `{\"type\": \"text\", \"text\": ...}` \
                             (only text is served)",
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        _ => {
            return Err(invalid(
                "`content` must be a string or an array of text parts",
            ));
        }
    };
    Ok(ChatMessage { role, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_prompt_in_an_array_is_a_prompt() {
        let body = CompletionBody::parse(br#"{"model":"m","prompt":["hi"]}"#).unwrap();
        assert_eq!(body.prompt, "hi");
        let err = CompletionBody::parse(br#"{"model":"m","prompt":["a","b"]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("prompt"));
        let err = CompletionBody::parse(br#"{"model":"m","prompt":[1,2]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("prompt"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = CompletionBody::parse(br#"{"model":"m","prompt":"p","temperature":"hot"}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"));
        let err = CompletionBody::parse(br#"{"model":7,"prompt":"p"}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));
        let err = CompletionBody::parse(br#"{"model":"m","prompt":"p","seed":-1}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("seed"));
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let body = CompletionBody::parse(
            br#"{"model":"m","prompt":"p","frequency_penalty":0.5,"top_p":null,"stop":"\n"}"#,
        )
        .unwrap();
        assert_eq!(body.common.top_p, None);
        assert_eq!(body.common.stop, vec!["\n".to_owned()]);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let body = CompletionBody::parse(
            br#"{"model":"m","prompt":"p","max_tokens":5,"max_completion_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(body.common.max_tokens, Some(9));
        assert_eq!(body.common.max_tokens_param, "max_completion_tokens");
    }

    #[test]
    fn message_content_parts_are_joined() {
        let body = ChatBody::parse(
            br#"{"model":"m","messages":[{"role":"user","content":[
                {"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(body.messages[0].content, "a\nb");
        let err = ChatBody::parse(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0]"));
        let err = ChatBody::parse(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0]"));
    }
}
