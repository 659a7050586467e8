#![allow(clippy::unwrap_used)]

use olc_protocol::{
    Commitment, ExecutionReceipt, InferenceJob, Metrics, Prompt, Requirements, Sampling,
    VerificationPolicy, inference_commitment,
};

use super::*;
use olc_protocol::messages::jobs_api::FailureKind;
use olc_protocol::{
    AccountAction, AccountRequest, JobFailure, JobOutput, ReceiptError, Reveal, SettlementReceipt,
    Slash,
};

use crate::core::economy::AccountError;

const NOW: u64 = 1_800_000_000_000;

fn coordinator() -> Identity {
    Identity::from_seed(&[9; 32])
}
fn submitter() -> Identity {
    Identity::from_seed(&[1; 32])
}
fn worker(i: u8) -> Identity {
    Identity::from_seed(&[100 + i; 32])
}

fn job(nonce: u64, verification: VerificationPolicy) -> Signed<JobSpec> {
    let spec = JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model: ContentId::of(b"model"),
            adapter: None,
            prompt: Prompt::Tokens(vec![1, 2, 3]),
            sampling: Sampling::Greedy,
            max_tokens: 4,
            seed: 0,
        }),
        requirements: Requirements::default(),
        max_fee: Amount(1000),
        verification,
        deadline_ms: NOW + 60_000,
        nonce,
    };
    Signed::sign(&submitter(), &spec).unwrap()
}

/// A book whose submitter can pay for many jobs.
fn book() -> JobBook {
    book_with(JobsConfig::default())
}

fn book_with(config: JobsConfig) -> JobBook {
    let mut book = JobBook::new(config, Policy::default(), LedgerConfig::default());
    let deposit = olc_protocol::AccountRequest {
        action: olc_protocol::AccountAction::Deposit {
            amount: Amount(1_000_000_000),
        },
        nonce: 1,
    };
    book.account_request(&Signed::sign(&submitter(), &deposit).unwrap(), true, NOW)
        .unwrap();
    book
}

/// A matcher over workers 0..n, skipping the excluded ones.
fn pool(n: u8) -> impl FnMut(&PickRequest<'_>) -> Picked {
    priced_pool(n, 10)
}

/// As [`pool`], every worker asking `price` per 1000 tokens; one whose price for the
/// declared size exceeds the fee per replica does not fit.
fn priced_pool(n: u8, price: u64) -> impl FnMut(&PickRequest<'_>) -> Picked {
    move |req| {
        let fits = req
            .fee
            .is_none_or(|f| f.price_at(Amount(price)) <= f.fee_per_replica);
        let free: Vec<(PublicKey, u64)> = (0..n)
            .map(|i| (worker(i).public_key(), price))
            .filter(|(w, _)| fits && !req.exclude.contains(w))
            .collect();
        if free.len() < req.replicas {
            Err(NoPick {
                reason: format!("only {} workers fit", free.len()),
                untried: free.len(),
            })
        } else {
            Ok(free.into_iter().take(req.replicas).collect())
        }
    }
}

/// A matcher that finds nobody, for `reason`, with nobody left to try.
fn nobody(reason: &str) -> impl FnMut(&PickRequest<'_>) -> Picked + '_ {
    move |_| {
        Err(NoPick {
            reason: reason.into(),
            untried: 0,
        })
    }
}

fn assigned(actions: &[Action]) -> Vec<(PublicKey, Signed<Assignment>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { worker, assignment } => Some((*worker, assignment.clone())),
            _ => None,
        })
        .collect()
}

fn who(key: &PublicKey) -> Identity {
    (0..10)
        .map(worker)
        .find(|w| w.public_key() == *key)
        .unwrap()
}

/// The worker's commitment and reveal for tokens `out`.
fn answer(a: &Signed<Assignment>, out: &[u32]) -> (Signed<Commitment>, Reveal) {
    let w = who(&a.verify().unwrap().worker);
    let asg = a.verify().unwrap();
    let output = inference_commitment(out);
    let c = Commitment {
        job_id: asg.job_id,
        assignment: a.id(),
        output,
    };
    let receipt = ExecutionReceipt {
        job_id: asg.job_id,
        assignment: a.id(),
        output,
        model: ContentId::of(b"model"),
        adapter: None,
        metrics: Metrics::default(),
        provenance: None,
        finished_ms: NOW,
    };
    (
        Signed::sign(&w, &c).unwrap(),
        Reveal {
            output: JobOutput::Inference {
                tokens: out.to_vec(),
                text: String::new(),
            },
            receipt: Signed::sign(&w, &receipt).unwrap(),
        },
    )
}

#[test]
fn a_single_replica_job_goes_from_queued_to_done_with_a_verifiable_receipt() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    assert_eq!(book.get(&id).unwrap().state, JobState::Queued);
    assert_eq!(
        book.take_dirty(),
        Dirty {
            jobs: vec![id],
            economy: true
        },
        "persisted, with its escrow, before the submitter is answered"
    );

    let actions = book.tick(&coordinator(), NOW, &mut pool(3));
    let a = assigned(&actions);
    assert_eq!(a.len(), 1);
    assert_eq!(book.get(&id).unwrap().state, JobState::Assigned);
    book.on_assign_answer(&id, &a[0].1.id(), Ok(()), NOW);
    assert_eq!(book.get(&id).unwrap().state, JobState::Running);

    let (c, reveal) = answer(&a[0].1, &[5, 6]);
    book.on_commit(c, NOW).unwrap();
    let actions = book.tick(&coordinator(), NOW, &mut pool(3));
    assert_eq!(book.get(&id).unwrap().state, JobState::Committed);
    assert!(matches!(actions[0], Action::Reveal { .. }));
    book.on_reveal(&coordinator(), &id, &a[0].1.id(), reveal, NOW)
        .unwrap();
    let done = book.get(&id).unwrap();
    assert_eq!(done.state, JobState::Done);
    let receipt = done.receipt.as_ref().unwrap();
    assert_eq!(receipt.signer(), coordinator().public_key());
    let r = receipt.verify().unwrap();
    assert_eq!(r.job.id(), id);
    assert_eq!(r.output, inference_commitment(&[5, 6]));
    assert_eq!(r.executions.len(), 1);
    let checked = olc_protocol::verify_receipt(receipt).unwrap();
    assert_eq!(checked.workers, vec![a[0].0]);
    assert_eq!(checked.submitter, submitter().public_key());
    // Every single-bit flip of the receipt's bytes is caught (or no longer decodes).
    let bytes = receipt.to_bytes().unwrap();
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        if let Ok(s) = Signed::<SettlementReceipt>::from_bytes(&b) {
            assert!(
                olc_protocol::verify_receipt(&s).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }
}

/// A coordinator cannot pin a slash on a worker without that worker's own signed words:
/// a receipt whose slash evidence is forged, agrees with the output, or is missing is
/// refused by the offline check, however well the coordinator signs it.
#[test]
fn a_receipt_with_unfounded_slash_evidence_does_not_verify() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(3)));
    book.on_assign_answer(&id, &a[0].1.id(), Ok(()), NOW);
    let (c, reveal) = answer(&a[0].1, &[5, 6]);
    book.on_commit(c, NOW).unwrap();
    book.tick(&coordinator(), NOW, &mut pool(3));
    book.on_reveal(&coordinator(), &id, &a[0].1.id(), reveal, NOW)
        .unwrap();
    let body = book
        .get(&id)
        .unwrap()
        .receipt
        .clone()
        .unwrap()
        .verify()
        .unwrap();
    let victim = worker(7);
    let commitment = |who: &Identity, out: &[u32]| {
        Signed::sign(
            who,
            &Commitment {
                job_id: id,
                assignment: a[0].1.id(),
                output: inference_commitment(out),
            },
        )
        .unwrap()
    };
    let with = |reason, evidence: Vec<Signed<Commitment>>| {
        let mut r = body.clone();
        r.slashes = vec![Slash {
            worker: victim.public_key(),
            amount: Amount(1),
            reason,
            evidence,
        }];
        olc_protocol::verify_receipt(&Signed::sign(&coordinator(), &r).unwrap())
    };
    // Founded: the victim's own commitment to something other than the output.
    with(SlashReason::WrongOutput, vec![commitment(&victim, &[9])]).unwrap();
    with(SlashReason::MissedDeadline, vec![]).unwrap();
    with(
        SlashReason::Equivocation,
        vec![commitment(&victim, &[9]), commitment(&victim, &[8])],
    )
    .unwrap();
    // Unfounded.
    for (reason, evidence) in [
        (SlashReason::WrongOutput, vec![]),
        (SlashReason::WrongOutput, vec![commitment(&worker(8), &[9])]),
        (SlashReason::WrongOutput, vec![commitment(&victim, &[5, 6])]),
        (SlashReason::Equivocation, vec![commitment(&victim, &[9])]),
        (
            SlashReason::Equivocation,
            vec![commitment(&victim, &[9]), commitment(&victim, &[9])],
        ),
    ] {
        assert!(
            matches!(with(reason, evidence), Err(ReceiptError::Slash { .. })),
            "{reason:?}"
        );
    }
}

#[test]
fn replicas_go_to_distinct_workers_and_outputs_are_asked_only_after_all_commit() {
    let mut book = book();
    let id = book
        .submit(
            job(1, VerificationPolicy::Replicate { replicas: 3 }),
            vec![],
            NOW,
        )
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(5)));
    assert_eq!(a.len(), 3);
    let mut workers: Vec<PublicKey> = a.iter().map(|x| x.0).collect();
    workers.dedup();
    assert_eq!(workers.len(), 3);
    let answers: Vec<_> = a.iter().map(|(_, s)| answer(s, &[7])).collect();
    for (c, _) in &answers[..2] {
        book.on_commit(c.clone(), NOW).unwrap();
    }
    let actions = book.tick(&coordinator(), NOW, &mut pool(5));
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Reveal { .. })),
        "no reveal before the last commitment"
    );
    book.on_commit(answers[2].0.clone(), NOW).unwrap();
    let reveals = book.tick(&coordinator(), NOW, &mut pool(5));
    assert_eq!(reveals.len(), 3);
    for ((_, s), (_, r)) in a.iter().zip(answers) {
        book.on_reveal(&coordinator(), &id, &s.id(), r, NOW)
            .unwrap();
    }
    assert_eq!(book.get(&id).unwrap().state, JobState::Done);
}

#[test]
fn a_declined_or_lost_or_late_replica_is_reassigned_to_another_worker() {
    let mut book = book_with(JobsConfig {
        assignment_timeout_ms: 1_000,
        ..JobsConfig::default()
    });
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let first = assigned(&book.tick(&coordinator(), NOW, &mut pool(4)));
    book.on_assign_answer(&id, &first[0].1.id(), Err("busy".into()), NOW);
    let second = assigned(&book.tick(&coordinator(), NOW, &mut pool(4)));
    assert_ne!(second[0].0, first[0].0);

    book.on_assign_answer(&id, &second[0].1.id(), Ok(()), NOW);
    book.worker_gone(&second[0].0, NOW + 1);
    let third = assigned(&book.tick(&coordinator(), NOW + 2, &mut pool(4)));
    assert!(![first[0].0, second[0].0].contains(&third[0].0));

    // Accepted, then silent past the assignment timeout.
    book.on_assign_answer(&id, &third[0].1.id(), Ok(()), NOW + 2);
    let fourth = assigned(&book.tick(&coordinator(), NOW + 2_000, &mut pool(4)));
    assert_eq!(fourth.len(), 1);
    assert!(![first[0].0, second[0].0, third[0].0].contains(&fourth[0].0));
    let view = book.get(&id).unwrap().view();
    assert!(view.replicas[0].state.contains("declined: busy"));
    assert!(view.replicas[1].state.contains("left the network"));
    assert!(view.replicas[2].state.contains("deadline"));

    // A late commitment from a dropped replica no longer counts.
    let (late, _) = answer(&third[0].1, &[1]);
    assert!(book.on_commit(late, NOW + 2_001).is_err());
}

#[test]
fn when_no_worker_fits_the_submitter_is_told_why_and_the_deadline_fails_the_job() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let mut none = nobody("no worker has 24.0 GiB free: largest is 16.0 GiB");
    assert!(book.tick(&coordinator(), NOW, &mut none).is_empty());
    let view = book.get(&id).unwrap().view();
    assert_eq!(view.state, JobState::Queued);
    assert_eq!(
        view.waiting.as_deref(),
        Some("no worker has 24.0 GiB free: largest is 16.0 GiB")
    );
    book.tick(&coordinator(), NOW + 61_000, &mut none);
    match &book.get(&id).unwrap().state {
        JobState::Failed(why) => assert!(why.contains("24.0 GiB"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tampered_replayed_and_duplicate_jobs_are_refused() {
    let mut book = book();
    let signed = job(7, VerificationPolicy::Single);
    let mut bytes = signed.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = Signed::<JobSpec>::from_bytes(&bytes).unwrap();
    assert!(matches!(
        book.submit(tampered, vec![], NOW),
        Err(Refusal::Signature(_))
    ));
    book.submit(signed.clone(), vec![], NOW).unwrap();
    assert!(matches!(
        book.submit(signed, vec![], NOW),
        Err(Refusal::Duplicate(_))
    ));
    // Same submitter and nonce, different job: a replay.
    let mut spec = job(7, VerificationPolicy::Single).verify().unwrap();
    spec.max_fee = Amount(1);
    let replay = Signed::sign(&submitter(), &spec).unwrap();
    assert_eq!(
        book.submit(replay, vec![], NOW),
        Err(Refusal::Replayed { nonce: 7 })
    );
    let mut old = job(8, VerificationPolicy::Single).verify().unwrap();
    old.deadline_ms = NOW - 1;
    let old = Signed::sign(&submitter(), &old).unwrap();
    assert!(matches!(
        book.submit(old, vec![], NOW),
        Err(Refusal::Invalid(_))
    ));
}

#[test]
fn commitments_from_the_wrong_worker_equivocation_and_bad_reveals_are_refused() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(3)));
    let asg = a[0].1.verify().unwrap();
    let intruder = (0..3)
        .map(worker)
        .find(|w| w.public_key() != asg.worker)
        .unwrap();
    let forged = Signed::sign(
        &intruder,
        &Commitment {
            job_id: id,
            assignment: a[0].1.id(),
            output: ContentId::of(b"x"),
        },
    )
    .unwrap();
    assert!(book.on_commit(forged, NOW).is_err());
    let (c, reveal) = answer(&a[0].1, &[3, 3]);
    book.on_commit(c.clone(), NOW).unwrap();
    book.on_commit(c, NOW).unwrap(); // the same commitment again is harmless
    book.tick(&coordinator(), NOW, &mut pool(3));
    let mut wrong = reveal.clone();
    wrong.output = JobOutput::Inference {
        tokens: vec![9],
        text: String::new(),
    };
    assert!(
        book.on_reveal(&coordinator(), &id, &a[0].1.id(), wrong, NOW)
            .is_err()
    );
    let job = book.get(&id).unwrap();
    assert_ne!(job.state, JobState::Done);
    assert!(matches!(
        job.replicas[0].state,
        ReplicaState::Unbacked { .. }
    ));
    // Its commitment still stands and is judged; a second, different one is equivocation.
    let (other, _) = answer(&a[0].1, &[4]);
    assert!(
        book.on_commit(other, NOW).is_err(),
        "a second, different commitment"
    );
    let job = book.get(&id).unwrap();
    assert_eq!(job.slashes.len(), 1);
    assert_eq!(job.slashes[0].reason, SlashReason::Equivocation);
    assert_eq!(job.slashes[0].evidence.len(), 2);
    assert!(job.excluded.contains(&asg.worker));
}

#[test]
fn a_restored_book_keeps_jobs_and_nonces() {
    let mut book = book();
    let id = book
        .submit(job(3, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    book.tick(&coordinator(), NOW, &mut pool(1));
    let records: Vec<JobRecord> = book.jobs().cloned().collect();
    let bytes: Vec<Vec<u8>> = records
        .iter()
        .map(|r| olc_protocol::codec::encode(r).unwrap())
        .collect();
    let decoded = bytes
        .iter()
        .map(|b| olc_protocol::codec::decode::<JobRecord>(b).unwrap())
        .collect();
    let economy = book.economy().clone();
    let mut again = JobBook::restore(
        JobsConfig::default(),
        Policy::default(),
        LedgerConfig::default(),
        Some(economy),
        decoded,
    );
    assert_eq!(again.get(&id).unwrap().state, JobState::Assigned);
    assert!(matches!(
        again.submit(job(3, VerificationPolicy::Single), vec![], NOW),
        Err(Refusal::Duplicate(_))
    ));
}

fn failure(a: &Signed<Assignment>, reason: &str) -> Signed<JobFailure> {
    failure_of(a, reason, FailureKind::Worker)
}

fn failure_of(a: &Signed<Assignment>, reason: &str, kind: FailureKind) -> Signed<JobFailure> {
    let body = a.verify().unwrap();
    Signed::sign(
        &who(&body.worker),
        &JobFailure {
            job_id: body.job_id,
            assignment: a.id(),
            reason: reason.into(),
            kind,
        },
    )
    .unwrap()
}

#[test]
fn a_reported_failure_reassigns_at_once_and_enough_of_them_fail_the_job() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let mut seen = Vec::new();
    for round in 0..3 {
        let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(5)));
        assert_eq!(a.len(), 1, "round {round}: reassigned at once");
        assert!(
            !seen.contains(&a[0].0),
            "a failed worker is not asked again"
        );
        seen.push(a[0].0);
        // Only the assigned worker can give up its replica.
        let other = (0..5)
            .map(worker)
            .find(|w| w.public_key() != a[0].0)
            .unwrap();
        let forged = Signed::sign(
            &other,
            &JobFailure {
                job_id: id,
                assignment: a[0].1.id(),
                reason: "x".into(),
                kind: FailureKind::Worker,
            },
        )
        .unwrap();
        assert!(book.on_failure(&forged, NOW).is_err());
        book.on_failure(
            &failure(&a[0].1, "every record is longer than the context"),
            NOW,
        )
        .unwrap();
    }
    match &book.get(&id).unwrap().state {
        JobState::Failed(why) => {
            assert!(
                why.contains("3 workers could not run it") && why.contains("longer"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn committed_outputs_that_are_never_revealed_fail_the_job_after_a_grace_period() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(2)));
    let (c, _) = answer(&a[0].1, &[1]);
    book.on_commit(c, NOW).unwrap();
    book.tick(&coordinator(), NOW, &mut pool(2));
    assert_eq!(book.get(&id).unwrap().state, JobState::Committed);
    // Past the deadline but within the grace period: still waiting for the reveal.
    book.tick(&coordinator(), NOW + 61_000, &mut pool(2));
    assert_eq!(book.get(&id).unwrap().state, JobState::Committed);
    book.tick(&coordinator(), NOW + 60_000 + 61_000, &mut pool(2));
    match &book.get(&id).unwrap().state {
        JobState::Failed(why) => assert!(why.contains("not revealed"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn account(book: &mut JobBook, who: &Identity, action: AccountAction, nonce: u64, faucet: bool) {
    let r = AccountRequest { action, nonce };
    book.account_request(&Signed::sign(who, &r).unwrap(), faucet, NOW)
        .unwrap();
}

#[test]
fn a_job_is_refused_whole_when_its_max_fee_cannot_be_escrowed() {
    let mut book = JobBook::new(
        JobsConfig::default(),
        Policy::default(),
        LedgerConfig::default(),
    );
    let poor = job(1, VerificationPolicy::Single);
    assert!(matches!(
        book.submit(poor.clone(), vec![], NOW),
        Err(Refusal::Funds(_))
    ));
    assert!(book.get(&poor.id()).is_none());
    // Nothing was consumed: once funded, the very same signed job is accepted.
    account(
        &mut book,
        &submitter(),
        AccountAction::Deposit {
            amount: Amount(1000),
        },
        1,
        true,
    );
    let id = book.submit(poor, vec![], NOW).unwrap();
    assert_eq!(book.economy().ledger().escrowed(id), Some(1000));
    assert_eq!(book.economy().ledger().balance(submitter().public_key()), 0);
}

#[test]
fn a_failed_job_refunds_its_whole_escrow_once() {
    let mut book = book();
    let before = book.economy().ledger().balance(submitter().public_key());
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let mut none = nobody("nobody");
    book.tick(&coordinator(), NOW + 61_000, &mut none);
    let job = book.get(&id).unwrap();
    assert!(matches!(job.state, JobState::Failed(_)));
    assert_eq!(job.refund, Some(1000));
    assert!(book.economy().ledger().is_settled(id));
    assert_eq!(
        book.economy().ledger().balance(submitter().public_key()),
        before
    );
    book.tick(&coordinator(), NOW + 62_000, &mut none);
    assert_eq!(
        book.economy().ledger().balance(submitter().public_key()),
        before,
        "refunded once"
    );
    book.economy().ledger().check_invariant().unwrap();
}

#[test]
fn account_requests_need_the_faucet_for_deposits_and_fresh_nonces() {
    let mut book = book();
    let w = worker(0);
    let r = |nonce, action| Signed::sign(&w, &AccountRequest { action, nonce }).unwrap();
    let deposit = AccountAction::Deposit {
        amount: Amount(500),
    };
    assert!(matches!(
        book.account_request(&r(1, deposit), false, NOW),
        Err(AccountError::NoFaucet)
    ));
    book.account_request(&r(2, deposit), true, NOW).unwrap();
    assert!(matches!(
        book.account_request(&r(2, deposit), true, NOW),
        Err(AccountError::Nonce { got: 2, last: 2 })
    ));
    // Unstaked: not matched.
    assert!(book.ineligible(&w.public_key(), NOW).is_some());
    let stake = AccountAction::Stake {
        amount: Amount(600),
    };
    assert!(matches!(
        book.account_request(&r(3, stake), true, NOW),
        Err(AccountError::Ledger(_))
    ));
    let stake = AccountAction::Stake {
        amount: Amount(Policy::default().min_stake),
    };
    let view = book.account_request(&r(4, stake), true, NOW).unwrap();
    assert_eq!(view.bonded, Amount(100));
    assert_eq!(book.ineligible(&w.public_key(), NOW), None);
    let unstake = AccountAction::Unstake { amount: Amount(1) };
    let view = book.account_request(&r(5, unstake), true, NOW).unwrap();
    assert_eq!(view.unbonding, Amount(1));
    assert!(
        book.ineligible(&w.public_key(), NOW).is_some(),
        "below the minimum once unbonding"
    );
    book.economy().ledger().check_invariant().unwrap();
}

/// A coordinator that restarts between sending an assignment and hearing the answer sends
/// it again; a busy worker is not excluded, only skipped until it is free.
#[test]
fn unanswered_assignments_are_resent_and_busy_workers_stay_candidates() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(1)));
    let owed = book.pending_assignments();
    assert_eq!(owed.len(), 1);
    assert!(
        matches!(&owed[0], Action::Assign { assignment, .. } if assignment.id() == a[0].1.id())
    );

    book.on_assign_busy(&id, &a[0].1.id(), "busy: 1 of 1".into(), NOW);
    assert!(book.pending_assignments().is_empty());
    assert!(book.get(&id).unwrap().excluded.is_empty());
    // The only worker is offered the job again.
    let again = assigned(&book.tick(&coordinator(), NOW + 1, &mut pool(1)));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, a[0].0);
    // A real decline excludes it for this job.
    book.on_assign_answer(&id, &again[0].1.id(), Err("no".into()), NOW + 1);
    assert!(assigned(&book.tick(&coordinator(), NOW + 2, &mut pool(1))).is_empty());
}

/// Fails the job's current replica (one assigned by the next tick) as `kind`; returns the
/// worker that had it.
fn fail_next(
    book: &mut JobBook,
    pick: &mut Pick<'_>,
    kind: FailureKind,
    reason: &str,
) -> Option<PublicKey> {
    let a = assigned(&book.tick(&coordinator(), NOW, pick));
    let (worker, assignment) = a.first()?;
    book.on_failure(&failure_of(assignment, reason, kind), NOW)
        .unwrap();
    Some(*worker)
}

const BAD_DATA: &str = "training failed: line 1: expected a JSON object, found a number";

#[test]
fn three_workers_blaming_the_same_input_fail_the_job_at_once_with_a_full_refund() {
    let mut book = book();
    let before = book.economy().ledger().balance(submitter().public_key());
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let mut pick = pool(6);
    for round in 0..2 {
        fail_next(&mut book, &mut pick, FailureKind::Dataset, BAD_DATA).unwrap();
        let job = book.get(&id).unwrap();
        assert!(!job.state.is_final(), "round {round}: {:?}", job.state);
    }
    fail_next(&mut book, &mut pick, FailureKind::Dataset, BAD_DATA).unwrap();
    let job = book.get(&id).unwrap();
    match &job.state {
        JobState::Failed(why) => assert_eq!(
            why,
            &format!("the dataset cannot be used: {BAD_DATA} (reported by 3 workers)")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(job.refund, Some(1000), "the whole escrow");
    assert!(book.economy().ledger().is_settled(id));
    assert_eq!(book.economy().ledger().escrowed(id), None);
    assert_eq!(
        book.economy().ledger().balance(submitter().public_key()),
        before
    );
    assert!(
        assigned(&book.tick(&coordinator(), NOW, &mut pick)).is_empty(),
        "three workers were asked, no more"
    );
    book.economy().ledger().check_invariant().unwrap();
}

/// With fewer able workers than the quorum, the job fails once every one of them has
/// tried it and blamed the input: two of two, one of one.
#[test]
fn when_every_worker_able_to_run_it_blames_the_input_the_job_fails() {
    for n in [1u8, 2] {
        let mut book = book();
        let id = book
            .submit(job(1, VerificationPolicy::Single), vec![], NOW)
            .unwrap();
        let mut pick = pool(n);
        let mut tried = Vec::new();
        while let Some(w) = fail_next(&mut book, &mut pick, FailureKind::Model, "truncated") {
            tried.push(w);
            if book.get(&id).unwrap().state.is_final() {
                break;
            }
        }
        // The tick after the last report finds nobody left to ask.
        book.tick(&coordinator(), NOW, &mut pick);
        let job = book.get(&id).unwrap();
        let plural = if n == 1 { "1 worker" } else { "2 workers" };
        assert_eq!(
            job.state,
            JobState::Failed(format!(
                "the model cannot be used: truncated (reported by {plural})"
            )),
            "{n} workers"
        );
        assert_eq!(tried.len(), usize::from(n), "each able worker tried once");
        assert_eq!(job.refund, Some(1000));
    }
}

/// One worker's word, or workers that disagree about what is wrong, or that could not run
/// the job themselves, do not fail a job that other workers could still try.
#[test]
fn input_blame_needs_agreeing_workers_while_others_could_try() {
    let mut book = book();
    let id = book
        .submit(
            job(1, VerificationPolicy::Replicate { replicas: 3 }),
            vec![],
            NOW,
        )
        .unwrap();
    let mut pick = pool(10);
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pick));
    assert_eq!(a.len(), 3);
    let kinds = [
        FailureKind::Dataset,
        FailureKind::Model,
        FailureKind::Worker,
    ];
    for ((_, s), kind) in a.iter().zip(kinds) {
        book.on_failure(&failure_of(s, "bad", kind), NOW).unwrap();
    }
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pick));
    assert_eq!(a.len(), 3, "the slots are refilled");
    book.on_failure(&failure_of(&a[0].1, "bad", FailureKind::Dataset), NOW)
        .unwrap();
    assert!(!book.get(&id).unwrap().state.is_final(), "2 blame the data");
    book.on_failure(&failure_of(&a[1].1, "bad", FailureKind::Dataset), NOW)
        .unwrap();
    match &book.get(&id).unwrap().state {
        JobState::Failed(why) => {
            assert!(why.starts_with("the dataset cannot be used"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // The failures read as before in the job's view.
    let view = book.get(&id).unwrap().view();
    assert_eq!(view.replicas[0].state, "dropped: failed: bad");
}

/// A worker still running the job may yet finish it: nobody left to ask is not enough to
/// fail the job while a replica is live.
#[test]
fn a_job_a_worker_is_still_running_is_not_failed_for_the_others_input_blame() {
    let mut book = book();
    let id = book
        .submit(
            job(1, VerificationPolicy::Replicate { replicas: 2 }),
            vec![],
            NOW,
        )
        .unwrap();
    let mut pick = pool(2);
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pick));
    book.on_assign_answer(&id, &a[1].1.id(), Ok(()), NOW);
    book.on_failure(&failure_of(&a[0].1, "bad", FailureKind::Dataset), NOW)
        .unwrap();
    book.tick(&coordinator(), NOW, &mut pick);
    assert_eq!(book.get(&id).unwrap().state, JobState::Running);
    book.on_failure(&failure_of(&a[1].1, "bad", FailureKind::Dataset), NOW)
        .unwrap();
    book.tick(&coordinator(), NOW, &mut pick);
    assert!(matches!(book.get(&id).unwrap().state, JobState::Failed(_)));
}

fn finetune(
    nonce: u64,
    length: olc_protocol::TrainingLength,
    verification: VerificationPolicy,
    max_fee: u64,
) -> Signed<JobSpec> {
    let spec = JobSpec {
        kind: JobKind::Finetune(olc_protocol::FinetuneJob {
            publish_as: None,
            model: ContentId::of(b"model"),
            dataset: ContentId::of(b"dataset"),
            params: olc_protocol::TrainingParams {
                rank: 8,
                alpha: 16.0,
                targets: vec![olc_protocol::TargetModule::QProj],
                learning_rate: 0.01,
                weight_decay: 0.0,
                max_len: None,
                batch_size: 4,
                grad_accum: 1,
                length,
                warmup_steps: 0,
                seed: 0,
                init_adapter: None,
            },
        }),
        requirements: Requirements::default(),
        max_fee: Amount(max_fee),
        verification,
        deadline_ms: NOW + 60_000,
        nonce,
    };
    Signed::sign(&submitter(), &spec).unwrap()
}

#[test]
fn a_max_fee_the_cheapest_worker_would_not_take_is_refused_with_the_sum_needed() {
    use olc_protocol::TrainingLength::{Epochs, Steps};
    let mut book = book();
    let before = book.economy().ledger().balance(submitter().public_key());
    let at_10 = Quote {
        cheapest_price: Some(Amount(10)),
        dataset_bytes: None,
    };
    // 60 steps × batch 4 × 2048 tokens = 491520 tokens, at 10 per 1000: 4915.2 → 4916.
    let err = book
        .submit_quoted(
            finetune(1, Steps(60), VerificationPolicy::Single, 100),
            vec![],
            at_10,
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "max fee 100 is below the 4916 credits this job needs at the cheapest worker's price \
         (10 per 1000 tokens, 491520 tokens declared)"
    );
    let two = VerificationPolicy::Replicate { replicas: 2 };
    let err = book
        .submit_quoted(finetune(2, Steps(60), two, 9831), vec![], at_10, NOW)
        .unwrap_err();
    assert!(
        err.to_string().contains("below the 9832 credits")
            && err.to_string().ends_with("declared, for 2 replicas)"),
        "{err}"
    );
    // Nothing was escrowed for the refused jobs.
    assert_eq!(
        book.economy().ledger().balance(submitter().public_key()),
        before
    );
    assert_eq!(book.economy().ledger().open_escrows(), 0);
    // Exactly enough is accepted; so is any fee when no worker is online to quote.
    book.submit_quoted(finetune(3, Steps(60), two, 9832), vec![], at_10, NOW)
        .unwrap();
    book.submit_quoted(
        finetune(4, Steps(60), VerificationPolicy::Single, 100),
        vec![],
        Quote::default(),
        NOW,
    )
    .unwrap();
    // By epochs the dataset's size bounds the records: 1200 bytes hold at most 100.
    let sized = Quote {
        dataset_bytes: Some(1199),
        ..at_10
    };
    let err = book
        .submit_quoted(
            finetune(5, Epochs(2), VerificationPolicy::Single, 100),
            vec![],
            sized,
            NOW,
        )
        .unwrap_err();
    assert!(err.to_string().contains("409600 tokens declared"), "{err}");
    // A max fee of 0 is refused whoever is online.
    let err = book
        .submit_quoted(
            finetune(6, Steps(1), VerificationPolicy::Single, 0),
            vec![],
            Quote::default(),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(err, Refusal::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("max fee must be at least 1 credit"),
        "{err}"
    );
}

/// The matcher is told the declared size and the fee per replica, and each worker's fee
/// cap is its price for that size: a receipt that meters more tokens than the job could
/// use is paid no more than the declared size.
#[test]
fn each_replica_is_paid_at_most_its_price_for_the_declared_size() {
    let mut book = book();
    let id = book
        .submit(
            job(1, VerificationPolicy::Replicate { replicas: 2 }),
            vec![],
            NOW,
        )
        .unwrap();
    let mut seen = None;
    let mut inner = priced_pool(3, 1000);
    let mut pick = |req: &PickRequest<'_>| {
        seen = req.fee;
        inner(req)
    };
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pick));
    assert_eq!(
        seen,
        Some(FeeLimit {
            declared_tokens: 7,
            fee_per_replica: Amount(500),
        }),
        "3 prompt tokens and 4 to generate; 1000 over 2 replicas"
    );
    for (_, s) in &a {
        assert_eq!(
            s.verify().unwrap().fee_cap,
            Amount(7),
            "7 tokens at 1 a token"
        );
    }
    for (_, s) in &a {
        let (c, mut reveal) = answer(s, &[5]);
        let mut receipt = reveal.receipt.verify().unwrap();
        receipt.metrics.tokens = 1_000_000;
        reveal.receipt = Signed::sign(&who(&s.verify().unwrap().worker), &receipt).unwrap();
        book.on_commit(c, NOW).unwrap();
        book.tick(&coordinator(), NOW, &mut pool(3));
        book.on_reveal(&coordinator(), &id, &s.id(), reveal, NOW)
            .unwrap_or_default();
    }
    let done = book.get(&id).unwrap();
    assert_eq!(done.state, JobState::Done, "{:?}", done.state);
    let receipt = done.receipt.as_ref().unwrap().verify().unwrap();
    let compute: Vec<u64> = receipt
        .payouts
        .iter()
        .filter(|p| p.role == olc_protocol::PayoutRole::Compute)
        .map(|p| p.amount.0)
        .collect();
    assert_eq!(compute, [7, 7]);
    // A worker too dear for the declared size is not offered the job at all.
    let id = book
        .submit(job(2, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut priced_pool(3, 1_000_000)));
    assert!(a.is_empty());
    assert!(book.get(&id).unwrap().waiting.is_some());
}

/// A fine-tune by epochs is sized by its dataset, which the book looks up when it prices
/// the job for the matcher.
#[test]
fn a_fine_tune_by_epochs_is_priced_by_its_datasets_size() {
    let mut book = book();
    book.submit(
        finetune(
            1,
            olc_protocol::TrainingLength::Epochs(1),
            VerificationPolicy::Single,
            1000,
        ),
        vec![],
        NOW,
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut pick = |req: &PickRequest<'_>| {
        seen.push(req.fee);
        Err(NoPick {
            reason: "later".into(),
            untried: 1,
        })
    };
    book.tick(&coordinator(), NOW, &mut pick);
    let dataset = ContentId::of(b"dataset");
    book.tick_sized(&coordinator(), NOW, &mut pick, &|id| {
        (*id == dataset).then_some(119)
    });
    assert_eq!(
        seen,
        [
            None,
            Some(FeeLimit {
                declared_tokens: 10 * 2048,
                fee_per_replica: Amount(1000),
            })
        ]
    );
}

#[test]
fn an_account_says_when_its_unbonding_credits_unlock_and_a_worker_whether_it_is_matched() {
    let mut book = book();
    let w = worker(0);
    let r = |nonce, action| Signed::sign(&w, &AccountRequest { action, nonce }).unwrap();
    book.account_request(
        &r(
            1,
            AccountAction::Deposit {
                amount: Amount(500),
            },
        ),
        true,
        NOW,
    )
    .unwrap();
    book.account_request(
        &r(
            2,
            AccountAction::Stake {
                amount: Amount(300),
            },
        ),
        true,
        NOW,
    )
    .unwrap();
    book.account_request(
        &r(3, AccountAction::Unstake { amount: Amount(20) }),
        true,
        NOW,
    )
    .unwrap();
    let view = book
        .account_request(
            &r(4, AccountAction::Unstake { amount: Amount(30) }),
            true,
            NOW + 5,
        )
        .unwrap();
    let week = LedgerConfig::DEFAULT_UNBONDING_MS;
    assert_eq!(
        view.unbonding_releases,
        vec![
            olc_protocol::messages::account::UnbondingRelease {
                amount: Amount(20),
                unlocks_ms: NOW + week,
            },
            olc_protocol::messages::account::UnbondingRelease {
                amount: Amount(30),
                unlocks_ms: NOW + 5 + week,
            },
        ]
    );
    assert_eq!(view.unbonding, Amount(50));

    let registered = |key: PublicKey| olc_protocol::RegisteredWorker {
        public_key: key,
        advert: olc_protocol::HardwareAdvert {
            seq: 1,
            timestamp_ms: NOW,
            interval_ms: 1000,
            hardware: olc_protocol::Hardware {
                gpus: vec![],
                cpu: olc_protocol::CpuInfo {
                    model: "cpu".into(),
                    logical_cores: 1,
                    features: vec![],
                },
                ram_total_bytes: 1,
                ram_available_bytes: 1,
                disk_free_bytes: 1,
            },
            backends: vec![olc_protocol::Backend::Cpu],
            price_per_ktoken: Amount(10),
            listen_addrs: vec![],
            cached: vec![],
            max_concurrent_jobs: 1,
            active_jobs: 0,
            resident: Vec::new(),
            resident_adapters: 0,
            max_streams: 8,
            active_streams: 0,
        },
        last_seen_ms: NOW,
        first_seen_ms: NOW,
    };
    let staked = book
        .economy()
        .worker_standing(book.policy(), registered(w.public_key()), NOW);
    assert_eq!((staked.bonded, staked.ineligible), (Amount(250), None));
    assert_eq!(staked.jailed_until_ms, None);
    let unstaked =
        book.economy()
            .worker_standing(book.policy(), registered(worker(1).public_key()), NOW);
    assert_eq!(unstaked.bonded, Amount(0));
    assert_eq!(
        unstaked.ineligible.as_deref(),
        Some("stake 0 is below the minimum of 100")
    );
}

#[test]
fn a_matching_pass_is_due_after_a_change_not_after_a_read() {
    let mut book = book();
    assert!(
        book.take_match_due(),
        "the faucet deposit changed the economy"
    );
    let _ = book.take_dirty();
    assert!(book.take_match_due(), "persisted, but not matched yet");
    assert!(!book.take_match_due(), "cleared once taken");
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    // Persisting the submission first does not hide it from the pass.
    let _ = book.take_dirty();
    assert!(book.take_match_due());
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(3)));
    assert_eq!(a.len(), 1);
    let _ = book.take_dirty();
    assert!(book.take_match_due(), "the pass assigned a replica");
    // A pass that moves nothing leaves nothing due.
    assert!(book.tick(&coordinator(), NOW, &mut pool(3)).is_empty());
    let _ = book.take_dirty();
    assert!(!book.take_match_due());
    // Status requests only read the book.
    let _ = book.get(&id).map(JobRecord::view);
    let _ = book.jobs().count();
    assert!(!book.take_match_due());
    // A worker's answer is a change.
    book.on_assign_answer(&id, &a[0].1.id(), Err("no".into()), NOW);
    assert!(book.take_match_due());
}

#[test]
fn a_restored_book_is_due_for_a_pass() {
    let mut book = JobBook::restore(
        JobsConfig::default(),
        Policy::default(),
        LedgerConfig::default(),
        None,
        Vec::new(),
    );
    assert!(book.take_match_due());
}

#[test]
fn a_spec_is_verified_on_entry_and_a_stored_one_that_no_longer_verifies_fails() {
    let mut book = book();
    let signed = job(4, VerificationPolicy::Single);
    let id = book.submit(signed.clone(), vec![], NOW).unwrap();
    assert_eq!(book.spec(&id), Some(&signed.verify().unwrap()));
    // A stored envelope tampered with behind the book's back is caught once, on restore,
    // not on every tick.
    let mut record = book.get(&id).unwrap().clone();
    let mut bytes = record.signed.to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    record.signed = Signed::<JobSpec>::from_bytes(&bytes).unwrap();
    let mut again = JobBook::restore(
        JobsConfig::default(),
        Policy::default(),
        LedgerConfig::default(),
        Some(book.economy().clone()),
        vec![record],
    );
    assert_eq!(again.spec(&id), None);
    assert!(again.tick(&coordinator(), NOW, &mut pool(3)).is_empty());
    assert_eq!(
        again.get(&id).unwrap().state,
        JobState::Failed("the stored job no longer verifies".into())
    );
}

/// `who`'s signed cancel of `job`.
fn cancel_by(who: &Identity, job: ContentId) -> Signed<olc_protocol::CancelJob> {
    Signed::sign(who, &olc_protocol::CancelJob { job_id: job }).unwrap()
}

/// A job with two running replicas.
fn running_pair(book: &mut JobBook) -> (ContentId, Vec<(PublicKey, Signed<Assignment>)>) {
    let id = book
        .submit(
            job(1, VerificationPolicy::Replicate { replicas: 2 }),
            vec![],
            NOW,
        )
        .unwrap();
    let a = assigned(&book.tick(&coordinator(), NOW, &mut pool(3)));
    assert_eq!(a.len(), 2);
    for (_, asg) in &a {
        book.on_assign_answer(&id, &asg.id(), Ok(()), NOW);
    }
    (id, a)
}

#[test]
fn only_the_submitter_cancels_and_a_job_not_running_is_refunded_whole() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    assert!(matches!(
        book.cancel(&cancel_by(&worker(5), id), 0, NOW),
        Err(Refusal::BadAnswer(_))
    ));
    let before = book.economy().account_view(submitter().public_key(), NOW);
    let done = book.cancel(&cancel_by(&submitter(), id), 0, NOW).unwrap();
    assert_eq!(done, Cancelled::Refunded { actions: vec![] });
    let job = book.get(&id).unwrap();
    assert!(matches!(&job.state, JobState::Failed(why) if why.contains("cancelled")));
    let after = book.economy().account_view(submitter().public_key(), NOW);
    assert_eq!(
        after.balance.0,
        before.balance.0 + 1000,
        "the whole escrow went back"
    );
    assert!(matches!(
        book.cancel(&cancel_by(&submitter(), id), 0, NOW),
        Ok(Cancelled::TooLate(_))
    ));
}

#[test]
fn a_cut_generation_settles_at_the_streamed_tokens_once_every_replica_answered() {
    let mut book = book();
    let (id, a) = running_pair(&mut book);
    let Cancelled::Cut { keep, actions } =
        book.cancel(&cancel_by(&submitter(), id), 2, NOW).unwrap()
    else {
        panic!("a running inference is cut");
    };
    assert_eq!(keep, 2);
    assert_eq!(actions.len(), 2, "both replicas are told");
    assert!(
        actions
            .iter()
            .all(|x| matches!(x, Action::Cut { keep: 2, .. }))
    );
    assert_eq!(book.pending_cuts().len(), 2, "asked again until answered");

    // Replica 0 was still running: it commits to the cut output and says so. Replica 1
    // had finished: its commitment to the whole output is replaced by its new one.
    let (c0, r0) = answer(&a[0].1, &[5, 6]);
    book.on_cut_answer(&id, &a[0].1.id(), CutAnswer::Applied, NOW)
        .unwrap();
    book.on_commit(c0, NOW).unwrap();
    let (old, _) = answer(&a[1].1, &[5, 6, 7, 8]);
    book.on_commit(old.clone(), NOW).unwrap();
    book.tick(&coordinator(), NOW, &mut pool(3));
    assert_eq!(
        book.get(&id).unwrap().state,
        JobState::Running,
        "no reveal while a replica has not answered the cut"
    );
    let (c1, r1) = answer(&a[1].1, &[5, 6]);
    book.on_cut_answer(&id, &a[1].1.id(), CutAnswer::Recommitted(c1), NOW)
        .unwrap();
    assert!(book.pending_cuts().is_empty());
    // The older commitment arriving late is not equivocation.
    book.on_commit(old, NOW).unwrap();
    let actions = book.tick(&coordinator(), NOW, &mut pool(3));
    assert_eq!(book.get(&id).unwrap().state, JobState::Committed);
    assert_eq!(actions.len(), 2, "both reveals asked for");
    book.on_reveal(&coordinator(), &id, &a[0].1.id(), r0, NOW)
        .unwrap();
    book.on_reveal(&coordinator(), &id, &a[1].1.id(), r1, NOW)
        .unwrap();
    let job = book.get(&id).unwrap();
    assert_eq!(job.state, JobState::Done, "{job:#?}");
    assert!(job.slashes.is_empty());
    let spec = book.referee_spec(&id).unwrap();
    assert!(matches!(spec.kind, JobKind::Inference(j) if j.max_tokens == 2));
}

#[test]
fn a_cancel_after_a_commitment_is_too_late_and_nothing_streamed_is_a_refund() {
    let mut book = book();
    let (id, a) = running_pair(&mut book);
    let (c, _) = answer(&a[0].1, &[5]);
    book.on_commit(c, NOW).unwrap();
    assert!(matches!(
        book.cancel(&cancel_by(&submitter(), id), 1, NOW),
        Ok(Cancelled::TooLate(_))
    ));

    let mut book = book_with(JobsConfig::default());
    let (id, _) = running_pair(&mut book);
    let Cancelled::Refunded { actions } =
        book.cancel(&cancel_by(&submitter(), id), 0, NOW).unwrap()
    else {
        panic!("nothing was streamed: refunded");
    };
    assert!(
        actions
            .iter()
            .all(|x| matches!(x, Action::Cut { keep: 0, .. }))
            && actions.len() == 2,
        "the running workers are stopped"
    );
}

#[test]
fn a_job_waiting_says_whether_a_busy_worker_could_take_it_once_free() {
    let mut book = book();
    let id = book
        .submit(job(1, VerificationPolicy::Single), vec![], NOW)
        .unwrap();
    let mut all_busy = |_: &PickRequest<'_>| -> Picked {
        Err(NoPick {
            reason: "the one worker that fits is busy".into(),
            untried: 1,
        })
    };
    book.tick(&coordinator(), NOW, &mut all_busy);
    let view = book.get(&id).unwrap().view();
    assert!(view.waiting.is_some() && view.waiting_busy, "{view:?}");
    book.tick(&coordinator(), NOW + 1, &mut nobody("no worker has a GPU"));
    let view = book.get(&id).unwrap().view();
    assert_eq!(view.waiting.as_deref(), Some("no worker has a GPU"));
    assert!(!view.waiting_busy, "nobody could run it: not merely busy");
}
