//! The audit's checks of a coordinator's state against itself that need nothing but the
//! state: the ledger's invariant (nothing created or lost), and that every job's money
//! matches its state (an open job holds its escrow, an ended one has released it exactly
//! once, and a done job's receipt verifies and pays out no more and no less than the
//! escrow). Checking the blobs the jobs refer to reads the disk and lives with the node.

use olc_protocol::{JobState, verify_receipt};
use serde::Serialize;

use crate::core::economy::Economy;
use crate::core::record::JobRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub minted: u64,
    /// Balances + stakes + escrows + treasury.
    pub total: u64,
    pub jobs: usize,
    pub open_jobs: usize,
    pub done_jobs: usize,
    pub failed_jobs: usize,
    pub settled_jobs: usize,
    /// Distinct blobs the stored jobs refer to, and how many of them were not in the blob
    /// store or did not hash to their id (0 when the blobs were not checked).
    pub blobs_checked: usize,
    pub blobs_missing: usize,
    pub blobs_corrupt: usize,
    /// Everything found wrong; empty when the state is sound.
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn audit(records: &[JobRecord], economy: &Economy) -> AuditReport {
    let ledger = economy.ledger();
    let mut problems = Vec::new();
    let total = match ledger.total() {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("the ledger's total cannot be computed: {e}"));
            u64::MAX
        }
    };
    if let Err(e) = ledger.check_invariant() {
        problems.push(e.to_string());
    }
    let mut report = AuditReport {
        minted: ledger.minted(),
        total,
        jobs: records.len(),
        open_jobs: 0,
        done_jobs: 0,
        failed_jobs: 0,
        settled_jobs: ledger.settled_count(),
        blobs_checked: 0,
        blobs_missing: 0,
        blobs_corrupt: 0,
        problems: Vec::new(),
    };
    for job in records {
        let id = job.job_id;
        let settled = ledger.is_settled(id);
        let escrowed = ledger.escrowed(id);
        match &job.state {
            JobState::Done => report.done_jobs += 1,
            JobState::Failed(_) => report.failed_jobs += 1,
            _ => report.open_jobs += 1,
        }
        if !job.state.is_final() {
            if escrowed.is_none() {
                problems.push(format!("open job {id} holds no escrow"));
            }
            if settled {
                problems.push(format!("open job {id} was already paid out"));
            }
            continue;
        }
        if !settled || escrowed.is_some() {
            problems.push(format!(
                "job {id} ended ({}) but its escrow was not released",
                job.state.name()
            ));
        }
        if job.state != JobState::Done {
            continue;
        }
        let Some(signed) = &job.receipt else {
            problems.push(format!("done job {id} has no receipt"));
            continue;
        };
        let checked = match verify_receipt(signed) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("job {id}'s receipt does not verify: {e}"));
                continue;
            }
        };
        let paid: u128 = checked
            .receipt
            .payouts
            .iter()
            .map(|p| u128::from(p.amount.0))
            .sum();
        let escrow = u128::from(checked.job.max_fee.0);
        if paid + u128::from(checked.receipt.refund.0) != escrow {
            problems.push(format!(
                "job {id}: payouts {paid} + refund {} differ from the escrow {escrow}",
                checked.receipt.refund.0
            ));
        }
        if job.refund != Some(checked.receipt.refund.0) {
            problems.push(format!(
                "job {id}: the ledger refunded {:?} but the receipt says {}",
                job.refund, checked.receipt.refund.0
            ));
        }
    }
    let known: std::collections::BTreeSet<_> = records.iter().map(|r| r.job_id).collect();
    let unknown = ledger.settled_jobs().filter(|j| !known.contains(j)).count();
    if unknown > 0 {
        problems.push(format!("{unknown} settled jobs have no record"));
    }
    report.problems = problems;
    report
}
