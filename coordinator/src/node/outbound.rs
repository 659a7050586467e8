//! What the node asks of others and what comes back: the book's actions carried out as
//! requests to workers (assignments, reveal requests) or runs on the referee, and the
//! answers routed back into the book.

use olc_net::libp2p::request_response::OutboundRequestId;
use olc_net::unix_ms;
use olc_protocol::{ContentId, Cut, RpcRequest, RpcResponse};

use super::{Node, Pending, lock};
use crate::core::action::Action;
use crate::core::book::CutAnswer;

/// How long a worker that said it was busy is left alone.
const BUSY_BACKOFF_MS: u64 = 300;

impl Node {
    pub(super) fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (worker, request, pending) = match action {
                Action::Assign { worker, assignment } => {
                    let body = assignment.verify().ok();
                    let Some(body) = body else { continue };
                    let p = Pending::Assign {
                        job: body.job_id,
                        assignment: assignment.id(),
                        worker,
                    };
                    (worker, RpcRequest::Assign(assignment), p)
                }
                Action::Referee { job_id } => {
                    self.start_referee(job_id);
                    continue;
                }
                Action::Cut {
                    worker,
                    job_id,
                    assignment_id,
                    keep,
                } => (
                    worker,
                    RpcRequest::Cut(Cut {
                        assignment: assignment_id,
                        keep,
                    }),
                    Pending::Cut {
                        job: job_id,
                        assignment: assignment_id,
                    },
                ),
                Action::Reveal {
                    worker,
                    job_id,
                    assignment_id,
                } => (
                    worker,
                    RpcRequest::Reveal(assignment_id),
                    Pending::Reveal {
                        job: job_id,
                        assignment: assignment_id,
                    },
                ),
            };
            let Ok(peer) = worker.to_peer_id() else {
                continue;
            };
            if let Some(w) = lock(&self.registry).get(&worker) {
                for addr in w.advert.listen_addrs.iter().filter_map(|a| a.parse().ok()) {
                    self.swarm.add_peer_address(peer, addr);
                }
            }
            let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
            self.pending.insert(id, pending);
        }
    }

    /// Re-runs a job on the referee, off the event loop; the answer comes back through
    /// `referee_rx`.
    fn start_referee(&mut self, job_id: ContentId) {
        if !self.refereeing.insert(job_id) {
            return;
        }
        let spec = lock(&self.book).referee_spec(&job_id);
        let tx = self.referee_tx.clone();
        let Some(spec) = spec else {
            let _ = tx.send((job_id, Err("the job no longer verifies".into())));
            return;
        };
        let Some(referee) = self.referee.clone() else {
            let _ = tx.send((job_id, Err("this coordinator runs no referee".into())));
            return;
        };
        tracing::info!(job = %job_id, "referee re-running the job");
        tokio::spawn(async move {
            let result = referee.run(spec).await;
            let _ = tx.send((job_id, result));
        });
    }

    pub(super) fn on_response(
        &mut self,
        id: OutboundRequestId,
        response: Result<RpcResponse, String>,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let now = unix_ms();
        match pending {
            Pending::Assign {
                job,
                assignment,
                worker,
            } => {
                let (answer, transient) = match response {
                    Ok(RpcResponse::Accepted) => (Ok(()), false),
                    Ok(RpcResponse::Busy(why)) => (Err(why), true),
                    Err(e) => (Err(format!("unreachable: {e}")), true),
                    Ok(RpcResponse::Declined(why)) | Ok(RpcResponse::Refused(why)) => {
                        (Err(why), false)
                    }
                    Ok(other) => (Err(format!("unexpected answer {other:?}")), false),
                };
                match answer {
                    Ok(()) => {
                        lock(&self.book).on_assign_answer(&job, &assignment, Ok(()), now);
                        // A job cut before this worker took it is cut for it too.
                        let cuts = lock(&self.book).pending_cuts();
                        let cuts = cuts.into_iter().filter(|a| matches!(a, Action::Cut { assignment_id, .. } if *assignment_id == assignment));
                        self.carry_out(cuts.collect());
                    }
                    Err(why) if transient => {
                        tracing::debug!(%job, reason = %why, "assignment not taken for now");
                        self.busy_until.insert(worker, now + BUSY_BACKOFF_MS);
                        lock(&self.book).on_assign_busy(&job, &assignment, why, now);
                    }
                    Err(why) => {
                        tracing::info!(%job, reason = %why, "assignment declined");
                        lock(&self.book).on_assign_answer(&job, &assignment, Err(why), now);
                    }
                }
            }
            Pending::Reveal { job, assignment } => match response {
                Ok(RpcResponse::Revealed(reveal)) => {
                    let result =
                        lock(&self.book).on_reveal(&self.identity, &job, &assignment, *reveal, now);
                    match result {
                        Ok(actions) => self.carry_out(actions),
                        Err(e) => tracing::warn!(%job, reason = %e, "bad reveal"),
                    }
                    self.log_if_final(&job);
                }
                Ok(other) => tracing::debug!(%job, ?other, "reveal not given yet"),
                Err(e) => tracing::debug!(%job, error = %e, "reveal request failed"),
            },
            Pending::Cut { job, assignment } => {
                let answer = match response {
                    Ok(RpcResponse::Recommitted(c)) => CutAnswer::Recommitted(c),
                    Ok(RpcResponse::Ok) => CutAnswer::Applied,
                    Ok(other) => {
                        tracing::debug!(%job, ?other, "cut not applied: nothing of it to cut");
                        CutAnswer::Applied
                    }
                    Err(e) => {
                        tracing::debug!(%job, error = %e, "cut request failed");
                        CutAnswer::Unreachable
                    }
                };
                if let Err(e) = lock(&self.book).on_cut_answer(&job, &assignment, answer, now) {
                    tracing::warn!(%job, reason = %e, "bad answer to a cut");
                }
            }
        }
        self.persist();
        self.advance_if_due();
    }
}
