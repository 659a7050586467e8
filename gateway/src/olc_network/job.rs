//! One submitted job followed to its end: whether a worker takes it at all (the answer
//! [`OlcNetwork::generate`](super::OlcNetwork) waits for), its streamed text as one
//! [`StreamEvent::Text`] per token, then its verified end.

use std::time::Duration;

use olc_client::{Heard, SubmitError, Submitter};
use olc_protocol::{ContentId, JobOutput, JobState, JobView, verify_receipt};
use tokio::sync::{mpsc, oneshot};

use crate::network::{FinishReason, NetworkError, StreamEvent};

/// What the follow heard, owned, so it can cross a channel.
enum News {
    Text { text: String, tokens: usize },
    Job(Box<JobView>),
}

/// A job being followed, and where its news goes.
pub(crate) struct Follower {
    pub submitter: Submitter,
    pub job: ContentId,
    /// The `max_tokens` the job asked for: an output of exactly that many ended on length.
    pub max_tokens: u32,
    /// How long a job may sit queued with no worker that fits before it is given up.
    pub no_worker_wait: Duration,
}

/// Whether the job will run: `Ok` once a worker has it (or it ended); `Err` when no worker
/// can take it (it is cancelled then) or the coordinator could not be followed.
pub(crate) type Started = oneshot::Sender<Result<(), NetworkError>>;

impl Follower {
    /// Follows the job until it ends or `events`' receiver is dropped (which cancels it).
    pub(crate) async fn run(self, started: Started, events: mpsc::Sender<StreamEvent>) {
        let (news_tx, mut news) = mpsc::unbounded_channel();
        let follow = self.submitter.follow(self.job, true, move |heard| {
            // The receiver outlives the follow: a failed send cannot happen.
            let _ = news_tx.send(match heard {
                Heard::Text { text, tokens } => News::Text {
                    text: text.to_owned(),
                    tokens: tokens.len(),
                },
                Heard::Job(view) => News::Job(Box::new(view.clone())),
            });
        });
        tokio::pin!(follow);
        let no_worker = tokio::time::sleep(self.no_worker_wait);
        tokio::pin!(no_worker);
        // A second handle on the channel, to watch for the receiver going away while the
        // other one is borrowed to send.
        let watch = events.clone();
        let mut state = Stream {
            started: Some(started),
            events,
            last: None,
            streamed: String::new(),
        };
        let end = loop {
            tokio::select! {
                biased;
                () = watch.closed() => {
                    self.cancel("the caller went away").await;
                    return;
                }
                Some(item) = news.recv() => {
                    if let Err(gone) = state.hear(item).await {
                        self.give_up(gone).await;
                        return;
                    }
                }
                result = &mut follow => {
                    // Every callback ran before the follow returned: drain what it heard.
                    while let Ok(item) = news.try_recv() {
                        if let Err(gone) = state.hear(item).await {
                            self.give_up(gone).await;
                            return;
                        }
                    }
                    break result;
                }
                () = &mut no_worker, if state.started.is_some() => {
                    // A job waiting for a busy worker to free up is queued, not refused.
                    let waiting = state
                        .last
                        .as_ref()
                        .filter(|v| v.state == JobState::Queued && !v.waiting_busy)
                        .and_then(|v| v.waiting.clone());
                    match waiting {
                        Some(reason) => {
                            if let Some(started) = state.started.take() {
                                let _ = started.send(Err(NetworkError::NoWorker(reason.clone())));
                            }
                            self.give_up(Gone::NoWorker(reason)).await;
                            return;
                        }
                        // Queued without a reason (the matcher has not looked yet, or a
                        // worker is being asked), or for a busy worker: the job goes ahead.
                        None => state.start(),
                    }
                }
            }
        };
        match end {
            Ok(view) => state.finish(&view, self.max_tokens).await,
            Err(err) => state.fail(unavailable(&err)).await,
        }
    }

    /// Stops the job at the coordinator: a queued one fails and is refunded, a generating
    /// one settles at the tokens streamed so far.
    async fn cancel(&self, why: &str) {
        tracing::debug!(job = %self.job, why, "cancelling the job");
        if let Err(err) = self.submitter.cancel(self.job).await {
            tracing::warn!(job = %self.job, %err, "could not cancel the job");
        }
    }

    async fn give_up(&self, gone: Gone) {
        match gone {
            Gone::Caller => self.cancel("the caller went away").await,
            Gone::NoWorker(reason) => self.cancel(&format!("no worker: {reason}")).await,
        }
    }
}

/// Why following stopped early.
enum Gone {
    /// The receiver was dropped.
    Caller,
    /// The job is queued and no worker can take it.
    NoWorker(String),
}

/// What has been heard and passed on so far.
struct Stream {
    /// Still to say whether the job runs.
    started: Option<Started>,
    events: mpsc::Sender<StreamEvent>,
    /// The newest view of the job.
    last: Option<JobView>,
    /// The text sent on, to find what the verified output adds.
    streamed: String,
}

impl Stream {
    fn start(&mut self) {
        if let Some(started) = self.started.take() {
            // The caller not waiting any more shows as a closed `events`.
            let _ = started.send(Ok(()));
        }
    }

    async fn hear(&mut self, news: News) -> Result<(), Gone> {
        match news {
            News::Text { text, tokens } => {
                self.start();
                // One event per token, so the gateway can count them: the chunk's text with
                // the first, nothing with the rest.
                self.send(StreamEvent::Text(text.clone())).await?;
                for _ in 1..tokens {
                    self.send(StreamEvent::Text(String::new())).await?;
                }
                self.streamed.push_str(&text);
            }
            News::Job(view) => {
                if self.started.is_some() {
                    if view.state == JobState::Queued {
                        // Nothing has been tried, and nothing fits: no reason to wait.
                        if let Some(reason) = &view.waiting
                            && !view.waiting_busy
                            && view.replicas.is_empty()
                        {
                            let reason = reason.clone();
                            if let Some(started) = self.started.take() {
                                let _ = started.send(Err(NetworkError::NoWorker(reason.clone())));
                            }
                            return Err(Gone::NoWorker(reason));
                        }
                    } else {
                        self.start();
                    }
                }
                self.last = Some(*view);
            }
        }
        Ok(())
    }

    async fn send(&self, event: StreamEvent) -> Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone::Caller)
    }

    /// The job's end: the verified text beyond what was streamed, then how it ended.
    async fn finish(&mut self, view: &JobView, max_tokens: u32) {
        // It ran (or failed) after all: whatever it was, the stream tells it.
        self.start();
        let event = match &view.state {
            JobState::Done => match self.done(view, max_tokens) {
                Ok((rest, done)) => {
                    if !rest.is_empty() && self.send(StreamEvent::Text(rest)).await.is_err() {
                        return;
                    }
                    done
                }
                Err(err) => StreamEvent::Failed(err),
            },
            JobState::Failed(reason) => StreamEvent::Failed(NetworkError::Internal(reason.clone())),
            other => StreamEvent::Failed(NetworkError::Internal(format!(
                "the follow ended with the job {}",
                other.name()
            ))),
        };
        let _ = self.send(event).await;
    }

    fn done(&self, view: &JobView, max_tokens: u32) -> Result<(String, StreamEvent), NetworkError> {
        let Some(JobOutput::Inference { tokens, text }) = &view.output else {
            return Err(NetworkError::Internal(
                "the job is done but has no inference output".into(),
            ));
        };
        let Some(receipt) = &view.receipt else {
            return Err(NetworkError::Internal(
                "the job is done but has no receipt".into(),
            ));
        };
        let verified = verify_receipt(receipt)
            .map_err(|err| NetworkError::Internal(format!("the job's receipt is bad: {err}")))?;
        let Some(rest) = text.strip_prefix(self.streamed.as_str()) else {
            // The lead worker streamed text that is not the verified output's beginning.
            return Err(NetworkError::Internal(
                "the streamed text is not what the job's verified output says".into(),
            ));
        };
        let completion_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let finish_reason = if completion_tokens >= max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        Ok((
            rest.to_owned(),
            StreamEvent::Done {
                finish_reason,
                completion_tokens,
                workers: verified.workers.iter().map(|w| w.to_string()).collect(),
                commitment: verified.receipt.output.to_string(),
            },
        ))
    }

    /// The follow itself failed.
    async fn fail(&mut self, err: NetworkError) {
        match self.started.take() {
            Some(started) => {
                let _ = started.send(Err(err));
            }
            None => {
                let _ = self.send(StreamEvent::Failed(err)).await;
            }
        }
    }
}

/// A failure to reach or hear the coordinator.
pub(crate) fn unavailable(err: &SubmitError) -> NetworkError {
    NetworkError::Unavailable(err.to_string())
}
