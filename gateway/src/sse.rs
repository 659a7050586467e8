//! `stream: true`: an answer as Server-Sent Events, in OpenAI's order: a chunk per piece of
//! text (the first chat chunk naming the role), a chunk with the finish reason, a usage
//! chunk when asked for, then `data: [DONE]`.
//!
//! The stream owns the [`Answer`], so when the HTTP client goes away axum drops the
//! stream, the answer and its receiver: the network sees the channel close and cancels.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures::stream::{self, Stream, StreamExt};

use crate::answer::{Answer, Piece};
use crate::api::Endpoint;
use crate::api::response::{Chunk, ChunkChoice, Delta, OlcInfo, Usage};

/// What every chunk of one answer repeats.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The answer's id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as requested.
    pub model: String,
    /// Whether to send the usage chunk.
    pub include_usage: bool,
}

/// The SSE response for `answer`.
pub fn respond(
    meta: ChunkMeta,
    answer: Answer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    let state = Some((meta, answer, true));
    let events = stream::unfold(state, |state| async move {
        let (meta, mut answer, first) = state?;
        match answer.next().await {
            Some(Piece::Text(text)) => {
                let event = data(&meta.chunk(first, Some(text), None, None));
                Some((vec![event], Some((meta, answer, false))))
            }
            Some(Piece::End {
                finish_reason,
                completion_tokens,
                olc,
            }) => {
                let reason = Some(finish_reason.as_str());
                let mut events = vec![data(&meta.chunk(first, None, reason, Some(olc)))];
                if meta.include_usage {
                    let usage = Usage::new(answer.prompt_tokens, completion_tokens);
                    events.push(data(&meta.usage_chunk(usage)));
                }
                events.push(Event::default().data("[DONE]"));
                Some((events, None))
            }
            Some(Piece::Failed(err)) => {
                // Headers went out with 200 already: the error is the stream's last event,
                // as OpenAI sends it, and OpenAI clients raise it.
                tracing::warn!(job = %answer.job_id(), error = %err.message, "stream failed");
                let event = Event::default().data(err.body().to_string());
                Some((vec![event], None))
            }
            None => None,
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Sse::new(events)
}

/// A chunk as an event.
fn data(chunk: &Chunk) -> Event {
    let json = serde_json::to_string(chunk).unwrap_or_else(|err| {
        // Our own types always serialize; should one not, the client sees why.
        serde_json::json!({ "error": { "message": err.to_string(), "type": "server_error" } })
            .to_string()
    });
    Event::default().data(json)
}

impl ChunkMeta {
    /// A chunk with one choice: text, or the finish reason.
    fn chunk(
        &self,
        first: bool,
        text: Option<String>,
        finish_reason: Option<&'static str>,
        olc: Option<OlcInfo>,
    ) -> Chunk {
        let choice = match self.endpoint {
            Endpoint::Completions => ChunkChoice {
                index: 0,
                text: Some(text.unwrap_or_default()),
                delta: None,
                finish_reason,
                logprobs: None,
            },
            Endpoint::Chat => ChunkChoice {
                index: 0,
                text: None,
                delta: Some(Delta {
                    role: first.then_some("assistant"),
                    content: text,
                }),
                finish_reason,
                logprobs: None,
            },
        };
        Chunk {
            id: self.id.clone(),
            object: self.endpoint.chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![choice],
            usage: None,
            olc,
        }
    }

    /// The usage chunk: no choices.
    fn usage_chunk(&self, usage: Usage) -> Chunk {
        Chunk {
            id: self.id.clone(),
            object: self.endpoint.chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
            olc: None,
        }
    }
}
