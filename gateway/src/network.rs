//! The port to the network: everything the HTTP layer needs from OLC, as one small trait.
//!
//! The gateway does not know how jobs are signed, matched or streamed; the network side (the
//! client SDK, a coordinator connection) implements [`Network`], and the tests implement it
//! with a scripted double. Keeping the port this narrow is what lets the HTTP layer be tested
//! without a network, and lets the network side change without touching the API.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// What the gateway asks of the network.
///
/// Futures are boxed ([`BoxFuture`]) rather than `async fn` so the trait stays object safe:
/// the gateway holds an `Arc<dyn Network>`.
pub trait Network: Send + Sync + 'static {
    /// The catalog: base models and adapters by name. Called on every request that names a
    /// model, so an implementation should answer from a cache.
    fn models(&self) -> BoxFuture<'_, Result<Vec<CatalogModel>, NetworkError>>;

    /// Starts a generation and returns once the job is accepted (signed, submitted and
    /// given an id), with the stream of its text.
    ///
    /// Errors found before the job runs (an unknown model, a prompt longer than the
    /// model's context, no worker, no balance) are this call's `Err`; errors after it
    /// arrive as [`StreamEvent::Failed`].
    ///
    /// **Cancelling:** the gateway drops the [`Generation::events`] receiver when it no
    /// longer wants text: the HTTP client disconnected, or the gateway found a stop string
    /// itself. An implementation must treat a closed channel (`Sender::send` failing, or
    /// `Sender::closed` resolving) as the signal to cancel the job.
    fn generate(&self, request: GenerateRequest)
    -> BoxFuture<'_, Result<Generation, NetworkError>>;
}

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogModel {
    /// The name requests use: a base model's, or an adapter's (requested as `BASE:ADAPTER`).
    pub name: String,
    /// A base model, or an adapter and the base it applies to.
    pub kind: ModelKind,
    /// When it was published, in unix seconds (OpenAI's `created`).
    pub created: u64,
    /// The publisher's public key, hex (OpenAI's `owned_by`).
    pub owner: String,
    /// The Jinja `chat_template` of the model's tokenizer_config.json. An adapter without
    /// one uses its base model's. A model with none serves completions only.
    pub chat_template: Option<String>,
    /// The tokenizer's BOS token, as templates see it (`bos_token`).
    pub bos_token: Option<String>,
    /// The tokenizer's EOS token, as templates see it (`eos_token`).
    pub eos_token: Option<String>,
    /// The model's context in tokens: prompt and completion together.
    pub context_length: u32,
}

/// Whether a catalog entry is a model of its own or an adapter over one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// A base model.
    Base,
    /// A LoRA adapter over the base model named `base`.
    Adapter {
        /// The catalog name of the base model.
        base: String,
    },
}

/// A generation, as the gateway hands it to the network.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The catalog name of the base model.
    pub model: String,
    /// The catalog name of the adapter, when the request named `BASE:ADAPTER`.
    pub adapter: Option<String>,
    /// The prompt, already rendered (chat messages through the model's template): the
    /// network tokenizes it as it is, adding no special tokens of its own.
    pub prompt: String,
    /// The most tokens to generate (at least 1).
    pub max_tokens: u32,
    /// Sampling temperature in 0..=2; 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: f32,
    /// The sampler's seed, when the caller wants a reproducible sample.
    pub seed: Option<u64>,
    /// Stop strings (at most 4, none empty). The network may stop at them itself; the
    /// gateway also trims at them, so one that the network misses still ends the answer.
    pub stop: Vec<String>,
}

/// An accepted generation: what is known when the job is submitted, and its text to come.
///
/// `job_id` and `prompt_tokens` are here rather than only in [`StreamEvent::Done`] because
/// a stop string the gateway finds itself ends the stream before `Done` arrives, and the
/// answer must still name its job and count its prompt.
#[derive(Debug)]
pub struct Generation {
    /// The job's id (hash of the signed spec), hex: the handle for its receipt.
    pub job_id: String,
    /// The prompt's length in tokens (the network tokenized it to check the context).
    pub prompt_tokens: u32,
    /// The text as it is generated, then how it ended. Dropping it cancels the job.
    pub events: mpsc::Receiver<StreamEvent>,
}

/// One step of a generation's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The text of the next generated token, in order: the gateway counts one completion
    /// token per `Text` when it ends a stream itself. It may be empty (a token that
    /// completes no character yet).
    Text(String),
    /// The generation ended; nothing follows.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Tokens generated.
        completion_tokens: u32,
        /// The public keys (hex) of the workers whose commitments were accepted.
        workers: Vec<String>,
        /// The accepted output commitment, hex.
        commitment: String,
    },
    /// The generation failed after it started; nothing follows.
    Failed(NetworkError),
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer (an EOS token) or hit a stop string.
    Stop,
    /// It reached `max_tokens` or the end of the context.
    Length,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What went wrong on the network side. Each variant maps to one HTTP status (see
/// `error.rs`), so the network side chooses what the HTTP client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// No such model or adapter (404).
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    /// The request cannot run as asked, e.g. a prompt longer than the context (400).
    #[error("{message}")]
    BadRequest {
        /// What is wrong, for the caller.
        message: String,
        /// The request field at fault, when one is. A prompt is `prompt` whichever the
        /// endpoint: the chat endpoint reports it as `messages`, which it was rendered from.
        param: Option<String>,
    },
    /// No worker can take the job now; the matcher's reason (503).
    #[error("no worker can run this job: {0}")]
    NoWorker(String),
    /// The gateway's account cannot cover the job's maximum fee (402).
    #[error("insufficient balance: {0}")]
    InsufficientBalance(String),
    /// The coordinator cannot be reached or did not answer (502).
    #[error("the network is unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error("internal error: {0}")]
    Internal(String),
}
