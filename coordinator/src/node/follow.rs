//! Streaming to followers: workers' token chunks into [`Streams`], followers' held
//! requests answered when there is news, and submitters' signed cancels (sent, or kept
//! from a follow whose connection has closed) carried out by the book.

use olc_net::libp2p::PeerId;
use olc_net::libp2p::request_response::ResponseChannel;
use olc_net::{reply_rpc, unix_ms};
use olc_protocol::{CancelJob, ContentId, Follow, FollowUpdate, RpcResponse, Signed, TokenChunk};

use super::{Node, lock};
use crate::core::book::Cancelled;
use crate::core::stream::Waiter;

/// Where a held follow's answer goes.
pub(super) type Reply = (PeerId, ResponseChannel<RpcResponse>);

impl Node {
    /// A worker's chunk: taken if it is signed by the worker of a replica that still
    /// counts, and is the next of the job's lead.
    pub(super) fn on_tokens(&mut self, signed: Signed<TokenChunk>) -> RpcResponse {
        let chunk = match signed.verify() {
            Ok(c) => c,
            Err(e) => return RpcResponse::Refused(format!("token chunk signature: {e}")),
        };
        let ok = lock(&self.book).get(&chunk.job_id).is_some_and(|job| {
            !job.state.is_final()
                && job
                    .active()
                    .any(|r| r.assignment_id == chunk.assignment && r.worker == signed.signer())
        });
        if !ok {
            return RpcResponse::Refused("no running replica of that job is this worker's".into());
        }
        let job = chunk.job_id;
        match self.streams.push(chunk) {
            Ok(()) => {
                self.answer_followers(&[job]);
                RpcResponse::Ok
            }
            Err(e) => RpcResponse::Refused(e.to_string()),
        }
    }

    /// A follow: answered now if there is news, else held until there is.
    pub(super) fn on_follow(
        &mut self,
        peer: PeerId,
        follow: Follow,
        channel: ResponseChannel<RpcResponse>,
    ) {
        if lock(&self.book).get(&follow.job_id).is_none() {
            let refusal = RpcResponse::Refused(format!("no job {} here", follow.job_id));
            reply_rpc(&mut self.swarm, peer, channel, refusal);
            return;
        }
        if let Some(cancel) = &follow.cancel_if_gone {
            // Kept only if it is the submitter's own cancel of this very job.
            let checked = lock(&self.book).check_cancel(cancel);
            match checked {
                Ok(job) if job == follow.job_id => {
                    self.following
                        .entry(peer)
                        .or_default()
                        .insert(job, cancel.clone());
                }
                Ok(_) => {
                    let refusal =
                        RpcResponse::Refused("the cancel to keep is for another job".into());
                    reply_rpc(&mut self.swarm, peer, channel, refusal);
                    return;
                }
                Err(e) => {
                    let refusal = RpcResponse::Refused(format!("the cancel to keep: {e}"));
                    reply_rpc(&mut self.swarm, peer, channel, refusal);
                    return;
                }
            }
        }
        let job = follow.job_id;
        let waiter = Waiter {
            follow,
            since_ms: unix_ms(),
            reply: (peer, channel),
        };
        let ready = if self.job_is_final(&job) {
            Some(waiter)
        } else {
            self.streams.hold(waiter)
        };
        if let Some(w) = ready {
            self.reply_follow(w);
        }
    }

    fn job_is_final(&self, job: &ContentId) -> bool {
        lock(&self.book).get(job).is_none_or(|j| j.state.is_final())
    }

    fn reply_follow(&mut self, waiter: Waiter<Reply>) {
        let Waiter { follow, reply, .. } = waiter;
        let job = follow.job_id;
        let view = lock(&self.book).get(&job).map(|j| j.view());
        let response = match view {
            Some(view) => {
                let slice = self.streams.slice(&job, follow.from);
                let revision = if view.state.is_final() {
                    self.streams.last_revision(&job)
                } else {
                    self.streams.revision(&job)
                };
                RpcResponse::Follow(Box::new(FollowUpdate {
                    revision,
                    offset: follow.from,
                    next: slice.next,
                    tokens: slice.tokens,
                    text: slice.text,
                    job: view,
                }))
            }
            None => RpcResponse::Refused(format!("no job {job} here")),
        };
        reply_rpc(&mut self.swarm, reply.0, reply.1, response);
    }

    /// These jobs changed: their followers with news are answered, and a job that has
    /// ended is forgotten once its followers are.
    pub(super) fn answer_followers(&mut self, changed: &[ContentId]) {
        for job in changed {
            self.streams.bump(*job);
        }
        let now = unix_ms();
        for waiter in self.streams.due(now) {
            self.reply_follow(waiter);
        }
        for job in changed {
            if self.job_is_final(job) {
                for waiter in self.streams.take_waiting(job) {
                    self.reply_follow(waiter);
                }
                self.streams.forget(job);
                for jobs in self.following.values_mut() {
                    jobs.remove(job);
                }
            }
        }
        self.following.retain(|_, jobs| !jobs.is_empty());
    }

    /// The submitter's signed cancel, sent now or kept from a follow (checked by the book).
    pub(super) fn on_cancel(&mut self, signed: &Signed<CancelJob>) -> RpcResponse {
        let job = match signed.verify() {
            Ok(c) => c.job_id,
            Err(e) => return RpcResponse::Refused(format!("cancel signature: {e}")),
        };
        let streamed = self.streams.streamed(&job);
        let result = lock(&self.book).cancel(signed, streamed, unix_ms());
        self.persist();
        match result {
            Ok(Cancelled::Refunded { actions }) => {
                tracing::info!(%job, "job cancelled by its submitter before any token; refunded");
                self.carry_out(actions);
                RpcResponse::Ok
            }
            Ok(Cancelled::Cut { keep, actions }) => {
                tracing::info!(%job, keep, "generation cancelled by its submitter");
                self.carry_out(actions);
                RpcResponse::Ok
            }
            Ok(Cancelled::TooLate(why)) => RpcResponse::Refused(why),
            Err(e) => RpcResponse::Refused(e.to_string()),
        }
    }

    /// A peer's last connection closed: the jobs it followed with their submitter's cancel
    /// to keep are cancelled.
    pub(super) fn peer_gone(&mut self, peer: PeerId) {
        let Some(kept) = self.following.remove(&peer) else {
            return;
        };
        for (job, cancel) in kept {
            if !self.job_is_final(&job) {
                tracing::info!(%job, "the following submitter left: cancelling");
                let _ = self.on_cancel(&cancel);
            }
        }
    }
}
