//! When workers' reports that a job's inputs cannot work fail the job: enough distinct
//! workers agreeing on the same problem, so that no single worker's word does.

use std::collections::BTreeSet;

use olc_protocol::PublicKey;
use olc_protocol::messages::jobs_api::FailureKind;

use crate::core::record::{JobRecord, ReplicaState};

/// Distinct workers whose reports of the same input problem fail a job while other
/// workers could still try it. One worker's word never fails a job that others could run
/// (it may be lazy, or lying to make the submitter go away); three that agree, each
/// running the same deterministic engine on the same inputs, are not all wrong. With
/// fewer workers able to run the job, every one of them must have tried it and reported
/// the problem: two when there are two, the one when it is alone.
pub const INPUT_QUORUM: usize = 3;

/// The input problem the most distinct workers blamed for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InputVerdict {
    pub(super) kind: FailureKind,
    /// The first report of it, in the worker's words.
    pub(super) reason: String,
    /// Distinct workers that reported it.
    pub(super) workers: usize,
}

impl InputVerdict {
    pub(super) fn describe(&self) -> String {
        let workers = if self.workers == 1 {
            "1 worker".to_string()
        } else {
            format!("{} workers", self.workers)
        };
        format!(
            "{} cannot be used: {} (reported by {workers})",
            self.kind.subject(),
            self.reason
        )
    }
}

/// Groups the job's input failures by kind and returns the kind most distinct workers
/// reported (the earliest reported on a tie), if any did.
pub(super) fn input_verdict(job: &JobRecord) -> Option<InputVerdict> {
    let mut by_kind: Vec<(FailureKind, &str, BTreeSet<PublicKey>)> = Vec::new();
    for r in &job.replicas {
        let ReplicaState::Failed { kind, reason } = &r.state else {
            continue;
        };
        if !kind.is_input() {
            continue;
        }
        match by_kind.iter_mut().find(|(k, _, _)| k == kind) {
            Some((_, _, workers)) => {
                workers.insert(r.worker);
            }
            None => by_kind.push((*kind, reason, BTreeSet::from([r.worker]))),
        }
    }
    let mut best: Option<&(FailureKind, &str, BTreeSet<PublicKey>)> = None;
    for entry in &by_kind {
        if best.is_none_or(|b| entry.2.len() > b.2.len()) {
            best = Some(entry);
        }
    }
    best.map(|(kind, reason, workers)| InputVerdict {
        kind: *kind,
        reason: (*reason).to_string(),
        workers: workers.len(),
    })
}
