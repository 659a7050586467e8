//! `olc coordinator audit`: checks the stored state against itself. The ledger's
//! invariant (nothing created or lost), and that every job's money matches its state: an
//! open job holds its escrow, an ended one has released it exactly once, and a done job's
//! receipt verifies and pays out no more and no less than the escrow.

use olc_protocol::{JobState, verify_receipt};
use serde::Serialize;

use crate::economy::Economy;
use crate::jobs::JobRecord;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{
        AccountAction, AccountRequest, Amount, ContentId, Identity, InferenceJob, JobKind, JobSpec,
        Prompt, Requirements, Sampling, Signed, VerificationPolicy,
    };

    use super::*;
    use crate::jobs::{JobBook, JobsConfig};
    use crate::ledger::LedgerConfig;
    use crate::rules::Policy;

    const NOW: u64 = 1_800_000_000_000;

    fn open_job() -> (Vec<JobRecord>, Economy) {
        let submitter = Identity::from_seed(&[1; 32]);
        let mut book = JobBook::new(
            JobsConfig::default(),
            Policy::default(),
            LedgerConfig::default(),
        );
        let deposit = AccountRequest {
            action: AccountAction::Deposit {
                amount: Amount(5000),
            },
            nonce: 1,
        };
        book.account_request(&Signed::sign(&submitter, &deposit).unwrap(), true, NOW)
            .unwrap();
        let spec = JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: ContentId::of(b"m"),
                adapter: None,
                prompt: Prompt::Tokens(vec![1]),
                sampling: Sampling::Greedy,
                max_tokens: 1,
                seed: 0,
            }),
            requirements: Requirements::default(),
            max_fee: Amount(1000),
            verification: VerificationPolicy::Single,
            deadline_ms: NOW + 1000,
            nonce: 1,
        };
        book.submit(Signed::sign(&submitter, &spec).unwrap(), vec![], NOW)
            .unwrap();
        (book.jobs().cloned().collect(), book.economy().clone())
    }

    #[test]
    fn a_sound_state_is_clean() {
        let (records, economy) = open_job();
        let report = audit(&records, &economy);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.minted, report.total), (5000, 5000));
        assert_eq!((report.jobs, report.open_jobs), (1, 1));
    }

    #[test]
    fn money_that_does_not_match_the_jobs_is_reported() {
        let (records, economy) = open_job();
        // An open job paid out behind the book's back.
        let mut paid = economy.clone();
        paid.ledger_mut().settle(records[0].job_id, &[]).unwrap();
        let report = audit(&records, &paid);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("holds no escrow")),
            "{report:?}"
        );
        assert!(report.problems.iter().any(|p| p.contains("already paid")));
        // Credits from nowhere.
        let mut forged = economy;
        forged.ledger_mut().forge_minted(7);
        let report = audit(&records, &forged);
        assert!(!report.is_clean());
        assert_eq!(report.minted, 5007);
        // A job the ledger settled but nobody recorded.
        let report = audit(&[], &paid);
        assert!(report.problems.iter().any(|p| p.contains("have no record")));
    }
}
