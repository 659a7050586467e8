//! Streaming to followers: workers' token chunks into [`Streams`], followers' held
//! requests answered when there is news, and cancels (signed, or a following
//! submitter's connection closing) turned into the book's cut.

use std::collections::BTreeSet;

use olc_net::libp2p::PeerId;
use olc_net::libp2p::request_response::ResponseChannel;
use olc_net::{reply_rpc, unix_ms};
use olc_protocol::{
    CancelJob, ContentId, Follow, FollowUpdate, PublicKey, RpcResponse, Signed, TokenChunk,
};

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
        let submitter = lock(&self.book)
            .get(&follow.job_id)
            .map(|j| j.signed.signer());
        let Some(submitter) = submitter else {
            let refusal = RpcResponse::Refused(format!("no job {} here", follow.job_id));
            reply_rpc(&mut self.swarm, peer, channel, refusal);
            return;
        };
        if let Some(cancel) = &follow.cancel_if_gone {
            // Kept only if it is the submitter's own cancel of this very job.
            match cancel.verify() {
                Ok(c) if c.job_id == follow.job_id && cancel.signer() == submitter => {
                    self.following
                        .entry(peer)
                        .or_default()
                        .insert(follow.job_id);
                }
                _ => {
                    let refusal = RpcResponse::Refused(
                        "the cancel to keep is not this job's submitter's".into(),
                    );
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

    /// The submitter's signed cancel.
    pub(super) fn on_cancel(&mut self, signed: Signed<CancelJob>) -> RpcResponse {
        match signed.verify() {
            Ok(c) => self.cancel_job(c.job_id, signed.signer()),
            Err(e) => RpcResponse::Refused(format!("cancel signature: {e}")),
        }
    }

    fn cancel_job(&mut self, job: ContentId, by: PublicKey) -> RpcResponse {
        let streamed = self.streams.streamed(&job);
        let result = lock(&self.book).cancel(job, by, streamed, unix_ms());
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
        let Some(jobs) = self.following.remove(&peer) else {
            return;
        };
        let jobs: BTreeSet<ContentId> = jobs;
        for job in jobs {
            let submitter = lock(&self.book).get(&job).map(|j| j.signed.signer());
            if let Some(submitter) = submitter
                && !self.job_is_final(&job)
            {
                tracing::info!(%job, "the following submitter left: cancelling");
                let _ = self.cancel_job(job, submitter);
            }
        }
    }
}
