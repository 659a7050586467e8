//! The node's select loop and its timers: the sweep that runs the book's clock and
//! matches jobs to workers, the retry of requests that got no answer, the referee's
//! answers, and the swarm's events handed to [`swarm`](super::swarm).

use std::time::Duration;

use futures::StreamExt;
use olc_net::unix_ms;
use olc_protocol::ContentId;
use tokio::sync::oneshot;

use super::{Node, Pending, lock};
use crate::core::action::Action;
use crate::core::book::PickRequest;
use crate::core::candidates::Candidates;

/// How often the registry is swept for expired workers and the job book advanced.
const EXPIRY_SWEEP: Duration = Duration::from_millis(100);
/// How often reveal requests, assignments and referee runs that got no answer are
/// started again.
const REVEAL_RETRY: Duration = Duration::from_secs(2);

impl Node {
    pub(super) async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
        let mut reveal_retry = tokio::time::interval(REVEAL_RETRY);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sweep.tick() => {
                    let gone = lock(&self.registry).expire(unix_ms());
                    for key in gone {
                        tracing::info!(worker = %key, "worker expired: missed 3 advert intervals");
                        lock(&self.book).worker_gone(&key, unix_ms());
                    }
                    // The sweep is the timer: deadlines, adverts and back-offs move with
                    // the clock, not with any event the book sees.
                    self.advance();
                    // Follows held long enough are answered before their transport gives up.
                    self.answer_followers(&[]);
                }
                Some((job, result)) = self.referee_rx.recv() => {
                    self.refereeing.remove(&job);
                    if let Err(why) = &result {
                        tracing::warn!(%job, reason = %why, "the referee could not re-run the job");
                    }
                    let actions = lock(&self.book).on_referee(&self.identity, &job, result, unix_ms());
                    self.log_if_final(&job);
                    self.persist();
                    self.carry_out(actions);
                }
                _ = reveal_retry.tick() => {
                    let mut owed = lock(&self.book).pending_reveals();
                    owed.extend(lock(&self.book).pending_referees());
                    owed.extend(lock(&self.book).pending_assignments());
                    owed.extend(lock(&self.book).pending_cuts());
                    let asked: std::collections::HashSet<ContentId> = self.pending.values().map(|p| match p {
                        Pending::Reveal { assignment, .. } | Pending::Assign { assignment, .. } | Pending::Cut { assignment, .. } => *assignment,
                    }).collect();
                    let fresh: Vec<Action> = owed.into_iter().filter(|a| match a {
                        Action::Reveal { assignment_id, .. } | Action::Cut { assignment_id, .. } => !asked.contains(assignment_id),
                        Action::Assign { assignment, .. } => !asked.contains(&assignment.id()),
                        Action::Referee { job_id } => !self.refereeing.contains(job_id),
                    }).collect();
                    self.carry_out(fresh);
                }
                event = self.swarm.select_next_some() => self.handle(event),
            }
        }
        self.persist();
        tracing::info!("coordinator stopped");
    }

    /// A full matching pass, if the book changed since the last one: most requests only
    /// read it.
    pub(super) fn advance_if_due(&mut self) {
        if lock(&self.book).take_match_due() {
            self.advance();
        }
    }

    /// Runs the book's clock and carries out what it decided: a full matching pass.
    fn advance(&mut self) {
        let wanted = lock(&self.book).wants_workers();
        let workers = if wanted {
            lock(&self.registry).workers()
        } else {
            Vec::new()
        };
        let now = unix_ms();
        let actions = {
            let mut book = lock(&self.book);
            self.busy_until.retain(|_, until| *until > now);
            let busy = &self.busy_until;
            let mut candidates = Candidates::gather(workers, &book, |k| busy.contains_key(k), now);
            let mut pick = |request: &PickRequest<'_>| candidates.pick(request);
            let blobs = &self.blobs;
            book.tick_sized(&self.identity, now, &mut pick, &|id| blobs.len_of(id))
        };
        self.persist();
        // This pass saw every change so far, its own included: nothing new to match until
        // the next event (the sweep repeats the pass anyway).
        lock(&self.book).take_match_due();
        self.carry_out(actions);
    }
}
