//! Streaming an inference job's tokens as they are generated: the worker's signed token
//! chunks to the coordinator, a follower's held request for what is new, and the
//! submitter's cancel. None of it replaces commit-reveal: the output that settles is
//! still the revealed one, checked as DESIGN.md says; a stream is the worker's signed word
//! about what it is producing, delivered early.

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::messages::jobs_api::JobView;
use crate::{ContentId, Message, Signed};

/// The next tokens of one replica's generation, signed by its worker so what a submitter
/// was shown is attributable. Chunks of one assignment come in order: `offset` is the
/// number of tokens sent before this one.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct TokenChunk {
    pub job_id: ContentId,
    pub assignment: ContentId,
    pub offset: u32,
    pub tokens: Vec<u32>,
    /// The text these tokens complete, decoded incrementally: the pieces of all chunks
    /// concatenate to the output's text (a token that completes no character yet adds
    /// nothing; its text comes with a later chunk).
    pub text: String,
}

impl Message for TokenChunk {
    const NAME: &'static str = "olc/token-chunk";
    const MAX_SIZE: usize = 1024 * 1024;
}

/// A follower's request: answer when the job has news past what it has seen, namely
/// chunks beyond the `from` it has or a change of the job (`seen` is the revision it
/// last got; 0 for none, which is always answered at once).
/// The coordinator holds the request until then (or until a while has passed, when it
/// answers with nothing new), so a follower never polls on a timer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Follow {
    pub job_id: ContentId,
    pub from: u32,
    pub seen: u64,
    /// The submitter's signed cancel, to be carried out if this follower's connection
    /// closes before the job ends: a submitter that went away no longer wants the tokens.
    /// Signed, because the connection's own key proves nothing (clients dial under a
    /// throwaway key).
    pub cancel_if_gone: Option<Signed<CancelJob>>,
}

/// What a follower gets back.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct FollowUpdate {
    /// The job's revision now: ask again with it as `seen`.
    pub revision: u64,
    /// The chunks of the stream the follower had (the `from` asked for).
    pub offset: u32,
    /// The chunks it has with these: its next `from`.
    pub next: u32,
    /// Streamed tokens from `offset` on, and their text.
    pub tokens: Vec<u32>,
    pub text: String,
    /// The job as it stands; once its state is final the stream is over and its output
    /// (if it has one) is the verified one.
    pub job: JobView,
}

/// The submitter's word that it no longer wants a job: a queued job fails and is refunded;
/// a generating one stops at the tokens already streamed, which then settle as its
/// output. Signed: only the job's submitter can cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct CancelJob {
    pub job_id: ContentId,
}

impl Message for CancelJob {
    const NAME: &'static str = "olc/cancel-job";
    const MAX_SIZE: usize = 256;
}

/// Coordinator to worker: keep only the first `keep` tokens of this assignment's output
/// and stop generating (the submitter cancelled after that many had been streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Cut {
    pub assignment: ContentId,
    pub keep: u32,
}
