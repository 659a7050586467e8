//! A generation's events turned into the answer's pieces: text trimmed at stop strings,
//! then one end. Both the JSON answer and the SSE stream are built from these pieces, so
//! they cannot disagree about where an answer stops.

use crate::api::response::OlcInfo;
use crate::error::ApiError;
use crate::network::{FinishReason, Generation, NetworkError, StreamEvent};
use crate::stop::{Step, StopMatcher};

/// One piece of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text of the answer (never empty).
    Text(String),
    /// The answer ended; nothing follows.
    End {
        /// Why.
        finish_reason: FinishReason,
        /// Generated tokens.
        completion_tokens: u32,
        /// The job.
        olc: OlcInfo,
    },
    /// The generation failed; nothing follows.
    Failed(ApiError),
}

/// Reads a generation as [`Piece`]s.
#[derive(Debug)]
pub struct Answer {
    job_id: String,
    /// The prompt's tokens, for the usage counts.
    pub prompt_tokens: u32,
    /// `None` once the answer ended: dropping the receiver is what cancels the job.
    events: Option<tokio::sync::mpsc::Receiver<StreamEvent>>,
    matcher: StopMatcher,
    /// `Text` events read: the completion tokens, when the gateway ends the job itself.
    deltas: u32,
    /// The end, when text released with it must go out first.
    pending: Option<Piece>,
}

impl Answer {
    /// Reads `generation`, ending it at the first of `stop`.
    pub fn new(generation: Generation, stop: Vec<String>) -> Self {
        Answer {
            job_id: generation.job_id,
            prompt_tokens: generation.prompt_tokens,
            events: Some(generation.events),
            matcher: StopMatcher::new(stop),
            deltas: 0,
            pending: None,
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The next piece; `None` after the end.
    pub async fn next(&mut self) -> Option<Piece> {
        loop {
            if let Some(piece) = self.pending.take() {
                return Some(piece);
            }
            let events = self.events.as_mut()?;
            let event = events.recv().await;
            match event {
                Some(StreamEvent::Text(delta)) => {
                    self.deltas = self.deltas.saturating_add(1);
                    match self.matcher.push(&delta) {
                        Step::Text(text) if text.is_empty() => continue,
                        Step::Text(text) => return Some(Piece::Text(text)),
                        Step::Stopped(text) => {
                            // Dropping the receiver cancels the rest of the generation.
                            self.events = None;
                            tracing::debug!(job = %self.job_id, "stop string found; cancelling");
                            let end = Piece::End {
                                finish_reason: FinishReason::Stop,
                                completion_tokens: self.deltas,
                                olc: OlcInfo {
                                    job_id: self.job_id.clone(),
                                    workers: Vec::new(),
                                    commitment: String::new(),
                                },
                            };
                            return Some(self.with_text_first(text, end));
                        }
                    }
                }
                Some(StreamEvent::Done {
                    finish_reason,
                    completion_tokens,
                    workers,
                    commitment,
                }) => {
                    self.events = None;
                    let rest = self.matcher.finish();
                    let end = Piece::End {
                        finish_reason,
                        completion_tokens,
                        olc: OlcInfo {
                            job_id: self.job_id.clone(),
                            workers,
                            commitment,
                        },
                    };
                    return Some(self.with_text_first(rest, end));
                }
                Some(StreamEvent::Failed(err)) => {
                    self.events = None;
                    return Some(Piece::Failed(err.into()));
                }
                None => {
                    self.events = None;
                    let err = NetworkError::Unavailable(format!(
                        "the generation of job {} ended without a result",
                        self.job_id
                    ));
                    return Some(Piece::Failed(err.into()));
                }
            }
        }
    }

    /// `end`, after `text` when there is text.
    fn with_text_first(&mut self, text: String, end: Piece) -> Piece {
        if text.is_empty() {
            end
        } else {
            self.pending = Some(end);
            Piece::Text(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(
        events: Vec<StreamEvent>,
    ) -> (Generation, tokio::sync::mpsc::Sender<StreamEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(events.len() + 1);
        for event in events {
            tx.try_send(event).unwrap();
        }
        let generation = Generation {
            job_id: "j".into(),
            prompt_tokens: 3,
            events: rx,
        };
        (generation, tx)
    }

    async fn pieces(answer: &mut Answer) -> Vec<Piece> {
        let mut out = Vec::new();
        while let Some(piece) = answer.next().await {
            out.push(piece);
        }
        out
    }

    #[tokio::test]
    async fn a_stop_string_ends_the_answer_and_drops_the_receiver() {
        let events = ["Hel", "lo<", "/s>", "never"].map(|t| StreamEvent::Text(t.into()));
        let (generation, tx) = generation(events.to_vec());
        let mut answer = Answer::new(generation, vec!["</s>".into()]);
        let got = pieces(&mut answer).await;
        assert_eq!(got[0], Piece::Text("Hel".into()));
        assert_eq!(got[1], Piece::Text("lo".into()));
        assert!(matches!(
            got[2],
            Piece::End {
                finish_reason: FinishReason::Stop,
                completion_tokens: 3,
                ..
            }
        ));
        assert_eq!(got.len(), 3);
        assert!(
            tx.is_closed(),
            "the receiver was dropped: the job is cancelled"
        );
    }

    #[tokio::test]
    async fn held_text_is_released_at_the_end() {
        let (generation, _tx) = generation(vec![
            StreamEvent::Text("ab<".into()),
            StreamEvent::Done {
                finish_reason: FinishReason::Length,
                completion_tokens: 1,
                workers: vec!["w".into()],
                commitment: "c".into(),
            },
        ]);
        let mut answer = Answer::new(generation, vec!["</s>".into()]);
        let got = pieces(&mut answer).await;
        assert_eq!(got[0], Piece::Text("ab".into()));
        assert_eq!(got[1], Piece::Text("<".into()));
        assert!(matches!(&got[2], Piece::End { olc, .. } if olc.workers == ["w"]));
    }

    #[tokio::test]
    async fn a_stream_that_just_ends_is_a_failure() {
        let (generation, tx) = generation(vec![StreamEvent::Text("a".into())]);
        drop(tx);
        let mut answer = Answer::new(generation, Vec::new());
        let got = pieces(&mut answer).await;
        assert!(
            matches!(&got[1], Piece::Failed(err) if err.status == 502),
            "{got:?}"
        );
    }
}
