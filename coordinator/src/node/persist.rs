//! Writing out what the book changed: its dirty records and economy to the store, the
//! notices it raised to the log, and a line when a job finishes.

use olc_protocol::ContentId;

use super::{Node, lock};
use crate::core::notice::Notice;

impl Node {
    pub(super) fn log_if_final(&self, job: &ContentId) {
        if let Some(state) = lock(&self.book).get(job).map(|j| j.state.clone())
            && state.is_final()
        {
            tracing::info!(%job, state = state.name(), "job finished");
        }
    }

    /// Writes every record the book changed and, if it changed, the economy, in one
    /// transaction, then flushes: what a client was told is on disk, and a job's state
    /// never reaches the disk without its money.
    /// Then the jobs' followers hear of the change.
    pub(super) fn persist(&mut self) {
        let changed = {
            let mut book = lock(&self.book);
            book.take_notices().into_iter().for_each(log_notice);
            let dirty = book.take_dirty();
            if dirty.jobs.is_empty() && !dirty.economy {
                return;
            }
            let records: Vec<_> = dirty.jobs.iter().filter_map(|id| book.get(id)).collect();
            let economy = dirty.economy.then(|| book.economy());
            if let Err(error) = self.store.commit(&records, economy) {
                tracing::error!(%error, "cannot store the coordinator's state");
            }
            dirty.jobs
        };
        self.publish_settled(&changed);
        self.answer_followers(&changed);
    }
}

/// Writes out what the core asked an operator to read.
fn log_notice(notice: Notice) {
    match notice {
        Notice::SlashNotApplied { worker, error } => {
            tracing::error!(%worker, %error, "slash could not be applied");
        }
        Notice::UnbondedNotReleased { error } => {
            tracing::error!(%error, "cannot release unbonded stake");
        }
        Notice::NotSettled { job, error } => {
            tracing::error!(%job, %error, "cannot settle the job");
        }
        Notice::SlashedForWrongOutput {
            job,
            worker,
            amount,
        } => {
            tracing::warn!(%job, %worker, amount,
                "worker slashed: its output differs from the referee's");
        }
    }
}
