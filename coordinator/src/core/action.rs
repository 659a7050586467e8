//! What the node must do on the core's behalf: the book and the verifier decide, the
//! node sends.

use olc_protocol::{Assignment, ContentId, PublicKey, Signed};

/// What the node must do on the book's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Assign {
        worker: PublicKey,
        assignment: Signed<Assignment>,
    },
    Reveal {
        worker: PublicKey,
        job_id: ContentId,
        assignment_id: ContentId,
    },
    /// Tell a worker to stop its replica at `keep` tokens (the submitter cancelled).
    Cut {
        worker: PublicKey,
        job_id: ContentId,
        assignment_id: ContentId,
        keep: u32,
    },
    /// Re-execute the job on the coordinator's own engine and report the output's
    /// commitment through [`crate::core::book::JobBook::on_referee`].
    Referee { job_id: ContentId },
}
