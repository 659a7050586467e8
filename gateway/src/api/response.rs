//! Response bodies, in OpenAI's shapes, plus the `olc` object: the job behind the answer,
//! so a caller can fetch and verify its receipt.

use serde::Serialize;

use crate::network::{CatalogModel, ModelKind};

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelEntry>,
}

/// One model of the list.
#[derive(Debug, Serialize)]
pub struct ModelEntry {
    /// What requests name: the base's name, or `BASE:ADAPTER`.
    pub id: String,
    /// Always `"model"`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The publisher's public key, hex.
    pub owned_by: String,
    /// For an adapter, its base model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The context in tokens (prompt and completion).
    pub context_length: u32,
    /// Whether chat completions are served (the model has a chat template).
    pub chat: bool,
}

impl ModelEntry {
    /// The entry for one catalog model; `base_template` is whether the adapter's base has a
    /// chat template (an adapter without its own uses its base's).
    pub fn new(model: &CatalogModel, base_template: bool) -> Self {
        let (id, parent) = match &model.kind {
            ModelKind::Base => (model.name.clone(), None),
            ModelKind::Adapter { base } => (format!("{base}:{}", model.name), Some(base.clone())),
        };
        ModelEntry {
            id,
            object: "model",
            created: model.created,
            owned_by: model.owner.clone(),
            parent,
            context_length: model.context_length,
            chat: model.chat_template.is_some() || base_template,
        }
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// The prompt's tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Counts, with the total.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// The job behind an answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OlcInfo {
    /// The job's id, hex.
    pub job_id: String,
    /// The workers whose commitments were accepted (empty when the gateway ended the job at
    /// a stop string before the network reported them).
    pub workers: Vec<String>,
    /// The accepted output commitment, hex (empty as `workers` is).
    pub commitment: String,
}

/// A whole answer of either endpoint.
#[derive(Debug, Serialize)]
pub struct Completion {
    /// `cmpl-JOB` or `chatcmpl-JOB`.
    pub id: String,
    /// `text_completion` or `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model as requested.
    pub model: String,
    /// The one choice.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
    /// The job.
    pub olc: OlcInfo,
}

/// A choice of a whole answer: `text` for completions, `message` for chat.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// Always 0 (`n` is 1).
    pub index: u32,
    /// Completions: the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Chat: the assistant's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Not served: always `null`.
    pub logprobs: Option<()>,
}

/// The assistant's message.
#[derive(Debug, Serialize)]
pub struct Message {
    /// Always `"assistant"`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// One Server-Sent Event of a streamed answer.
#[derive(Debug, Serialize)]
pub struct Chunk {
    /// As [`Completion::id`], the same in every chunk.
    pub id: String,
    /// `text_completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds, the same in every chunk.
    pub created: u64,
    /// The model as requested.
    pub model: String,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Only in the chunk with the finish reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub olc: Option<OlcInfo>,
}

/// A choice of a chunk: `text` for completions, `delta` for chat.
#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// Completions: the next text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Chat: the next part of the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// `null` until the last chunk.
    pub finish_reason: Option<&'static str>,
    /// Not served: always `null`.
    pub logprobs: Option<()>,
}

/// The next part of a streamed chat message.
#[derive(Debug, Default, Serialize)]
pub struct Delta {
    /// `"assistant"`, in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The next text (absent in the last chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}
