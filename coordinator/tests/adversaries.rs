//! Adversarial workers against the coordinator's job book, verifier and ledger, with real
//! signatures and no network: each kind of cheat in its own test, then hundreds of mixed
//! jobs. After every single operation the ledger's invariant is checked.
//!
//! What a cheater can send is what the protocol lets any peer send: signed commitments,
//! reveals, silence (see `olc_testkit::sim`).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use olc_coordinator::rules::Policy;
use olc_coordinator::{Action, JobRecord};
use olc_protocol::*;
use olc_testkit::sim::{Behaviour, HONEST_STAKE, Sim, signed};

/// A finished job: done, with the right output, a receipt that verifies, and its escrow
/// released exactly once.
fn assert_settled_right(sim: &Sim, job: &JobRecord) {
    assert_eq!(job.state, JobState::Done, "{job:#?}");
    let right = &sim.truth[&job.job_id];
    match &job.output {
        Some(JobOutput::Inference { tokens, .. }) => assert_eq!(tokens, right),
        other => panic!("{other:?}"),
    }
    let checked = verify_receipt(job.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(checked.receipt.slashes, job.slashes);
    assert!(sim.book.economy().ledger().is_settled(job.job_id));
    assert_eq!(sim.book.economy().ledger().escrowed(job.job_id), None);
    let paid: u64 = checked.receipt.payouts.iter().map(|p| p.amount.0).sum();
    assert_eq!(paid + checked.receipt.refund.0, 100_000);
    assert_eq!(job.refund, Some(checked.receipt.refund.0));
}

fn replicate(k: u8) -> VerificationPolicy {
    VerificationPolicy::Replicate { replicas: k }
}

fn one_cheater(b: Behaviour) -> (Sim, JobRecord) {
    // Two honest workers besides the cheater: a slot a cheater loses can be refilled.
    let mut sim = Sim::new(
        &[b, Behaviour::Honest, Behaviour::Honest],
        Policy::default(),
        HONEST_STAKE,
    );
    let id = sim.submit(replicate(2));
    let job = sim.run(id);
    (sim, job)
}

fn assert_only_cheater_slashed(sim: &Sim, job: &JobRecord, reason: SlashReason) {
    let cheater = sim.key(0);
    let honest = sim.key(1);
    assert_eq!(sim.slashed(job), vec![(cheater, reason)], "{job:#?}");
    assert_settled_right(sim, job);
    let e = sim.book.economy();
    assert!(e.ledger().bonded(cheater) < HONEST_STAKE);
    assert_eq!(e.ledger().bonded(honest), HONEST_STAKE);
    assert!(e.standing(&cheater).reputation < 0.5);
    let receipt = job.receipt.as_ref().unwrap().verify().unwrap();
    assert!(receipt.payouts.iter().any(|p| p.to == honest));
    assert!(receipt.payouts.iter().all(|p| p.to != cheater));
}

#[test]
fn a_wrong_output_is_slashed_with_its_commitment_as_evidence() {
    let (sim, job) = one_cheater(Behaviour::Wrong);
    assert_only_cheater_slashed(&sim, &job, SlashReason::WrongOutput);
    assert_eq!(sim.referee_runs, 1, "a disagreement calls the referee once");
    let slash = &job.slashes[0];
    assert_eq!(slash.amount, Amount(HONEST_STAKE / 2));
    let evidence = slash.evidence[0].verify().unwrap();
    assert_ne!(
        evidence.output,
        inference_commitment(&sim.truth[&job.job_id])
    );
    // Jailed: not matched again until the jail ends.
    assert!(sim.book.ineligible(&sim.key(0), sim.now).is_some());
    assert!(sim.book.ineligible(&sim.key(1), sim.now).is_none());
    // Half of the slash goes to the honest worker, the rest to the treasury.
    let honest_gain = sim.book.economy().ledger().balance(sim.key(1));
    let receipt = job.receipt.as_ref().unwrap().verify().unwrap();
    let compute: u64 = receipt
        .payouts
        .iter()
        .filter(|p| p.to == sim.key(1))
        .map(|p| p.amount.0)
        .sum();
    assert_eq!(honest_gain, compute + HONEST_STAKE / 4);
}

#[test]
fn a_lazy_worker_is_slashed() {
    let (sim, job) = one_cheater(Behaviour::Lazy);
    assert_only_cheater_slashed(&sim, &job, SlashReason::WrongOutput);
}

#[test]
fn a_copycat_cannot_reveal_another_workers_output() {
    let (sim, job) = one_cheater(Behaviour::Copycat);
    // Its reveal did not back its commitment; its commitment differs from the referee's.
    assert_only_cheater_slashed(&sim, &job, SlashReason::WrongOutput);
    assert!(sim.referee_runs >= 1);
}

#[test]
fn equivocation_is_slashed_with_both_commitments() {
    let (sim, job) = one_cheater(Behaviour::Equivocate);
    assert_only_cheater_slashed(&sim, &job, SlashReason::Equivocation);
    let evidence = &job.slashes[0].evidence;
    assert_eq!(evidence.len(), 2);
    let (a, b) = (evidence[0].verify().unwrap(), evidence[1].verify().unwrap());
    assert_eq!(a.assignment, b.assignment);
    assert_ne!(a.output, b.output);
}

#[test]
fn a_worker_that_accepts_and_misses_its_deadline_loses_a_smaller_amount() {
    let mut sim = Sim::new(
        &[Behaviour::Silent, Behaviour::Honest, Behaviour::Honest],
        Policy::default(),
        HONEST_STAKE,
    );
    let id = sim.submit(replicate(2));
    let job = sim.run(id);
    assert_only_cheater_slashed(&sim, &job, SlashReason::MissedDeadline);
    let policy = Policy::default();
    assert_eq!(
        job.slashes[0].amount,
        Amount(HONEST_STAKE * u64::from(policy.deadline_slash_bps) / 10_000)
    );
    assert!(job.slashes[0].amount.0 < HONEST_STAKE * u64::from(policy.slash_bps) / 10_000);
    assert!(job.slashes[0].evidence.is_empty());
    // Late, not lying: not jailed.
    assert!(sim.book.ineligible(&sim.key(0), sim.now).is_none());
}

#[test]
fn a_forged_signature_cannot_commit_or_frame_a_worker() {
    let mut sim = Sim::new(
        &[Behaviour::Honest, Behaviour::Honest],
        Policy::default(),
        HONEST_STAKE,
    );
    let id = sim.submit(replicate(2));
    let actions = sim.tick();
    let Action::Assign { worker, assignment } = actions[0].clone() else {
        panic!("{actions:?}")
    };
    let a = assignment.verify().unwrap();
    let victim = sim.who(&worker).0;
    let lie = Commitment {
        job_id: id,
        assignment: assignment.id(),
        output: ContentId::of(b"framed"),
    };
    // 1. The victim's name on a commitment whose signature is not the victim's.
    let mut bytes = signed(&victim, &lie).to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let forged = Signed::<Commitment>::from_bytes(&bytes).unwrap();
    assert_eq!(forged.signer(), victim.public_key());
    assert!(sim.book.on_commit(forged, sim.now).is_err());
    sim.check();
    // 2. A real signature, by someone else.
    let intruder = Identity::generate().unwrap();
    assert!(
        sim.book
            .on_commit(signed(&intruder, &lie), sim.now)
            .is_err()
    );
    sim.check();
    assert_eq!(a.worker, victim.public_key());
    // The job goes on as if nothing was sent, and nobody is slashed.
    for action in actions {
        if let Action::Assign { worker, assignment } = action {
            sim.work(worker, assignment);
        }
    }
    let job = sim.run(id);
    assert!(job.slashes.is_empty(), "{job:#?}");
    assert_settled_right(&sim, &job);
}

#[test]
fn a_replayed_commitment_from_an_earlier_job_counts_for_nothing() {
    // One honest worker finishes job 1; on job 2 it replays job 1's commitment instead of
    // working. The replay names job 1's assignment, so it cannot answer job 2.
    let mut sim = Sim::new(
        &[Behaviour::Honest, Behaviour::Honest],
        Policy::default(),
        HONEST_STAKE,
    );
    let first = sim.submit(replicate(2));
    let done = sim.run(first);
    assert_settled_right(&sim, &done);
    let settled_once = sim.book.economy().ledger().settled_count();

    let second = sim.submit(VerificationPolicy::Single);
    let actions = sim.tick();
    let Action::Assign { worker, assignment } = actions[0].clone() else {
        panic!("{actions:?}")
    };
    let replay = sim
        .sent
        .iter()
        .find(|c| c.signer() == worker)
        .cloned()
        .unwrap();
    sim.book
        .on_assign_answer(&second, &assignment.id(), Ok(()), sim.now);
    // Harmless to job 1 (already revealed), no effect on job 2.
    let _ = sim.book.on_commit(replay, sim.now);
    sim.check();
    let job2 = sim.book.get(&second).unwrap();
    assert!(
        job2.replicas
            .iter()
            .all(|r| !matches!(r.state, olc_coordinator::jobs::ReplicaState::Committed(_))),
        "{job2:#?}"
    );
    assert_eq!(sim.book.economy().ledger().settled_count(), settled_once);
    // The replayer never commits for job 2: it misses its deadline and another worker
    // finishes the job.
    sim.now += 11_000;
    let job2 = sim.run(second);
    assert_eq!(
        sim.slashed(&job2),
        vec![(worker, SlashReason::MissedDeadline)]
    );
    assert_settled_right(&sim, &job2);
}

/// Cheaters of every kind among honest workers, over hundreds of replicated jobs: every
/// cheater whose answer reached the verifier is slashed on that job, and no honest worker
/// ever is. Cheaters stay unjailed and heavily staked so they keep getting matched.
#[test]
fn five_hundred_mixed_jobs_slash_every_cheater_and_no_honest_worker() {
    use Behaviour::*;
    let behaviours = [
        Honest, Wrong, Honest, Lazy, Honest, Copycat, Honest, Equivocate, Honest, Silent, Honest,
        Wrong,
    ];
    let policy = Policy {
        jail_ms: 0,
        ..Policy::default()
    };
    let mut sim = Sim::new(&behaviours, policy, 1 << 38);
    let mut caught = 0;
    for i in 0..500 {
        let id = sim.submit(replicate(2 + (i % 2) as u8));
        let job = sim.run(id);
        assert_settled_right(&sim, &job);
        for r in &job.replicas {
            let (_, b) = sim.who(&r.worker);
            let slashed = job.slashes.iter().any(|s| s.worker == r.worker);
            if b == Honest {
                assert!(!slashed, "honest worker slashed on job {i}: {job:#?}");
            } else {
                assert!(slashed, "{b:?} got away on job {i}: {job:#?}");
                caught += 1;
            }
        }
    }
    assert!(caught > 300, "only {caught} cheating replicas in 500 jobs");
    for (i, (_, b)) in sim.workers.iter().enumerate() {
        if *b == Honest {
            assert_eq!(sim.book.economy().standing(&sim.key(i)).slashes, 0);
        }
    }
    let ledger = sim.book.economy().ledger();
    assert_eq!(ledger.settled_count(), 500);
    assert_eq!(ledger.open_escrows(), 0);
}

/// `sample:P`: one worker, always lying; the referee re-runs a job with probability P,
/// decided by a keyed hash. The share caught must match P: within 4.5 standard deviations
/// of the binomial (a false failure about once in 150,000 runs).
#[test]
fn sample_audits_catch_a_liar_at_the_advertised_rate() {
    for (ppm, jobs) in [(100_000u32, 2000u64), (300_000, 1000)] {
        // A small slash, so hundreds of catches leave the liar staked and matched.
        let policy = Policy {
            jail_ms: 0,
            slash_bps: 10,
            ..Policy::default()
        };
        let mut sim = Sim::new(&[Behaviour::Wrong], policy, 1 << 38);
        let mut caught = 0u64;
        for _ in 0..jobs {
            let id = sim.submit(VerificationPolicy::Sample {
                probability_ppm: ppm,
            });
            let job = sim.run(id);
            if !job.slashes.is_empty() {
                caught += 1;
                // Caught: nobody delivered the right answer, so the job is retried with
                // the liar excluded and, with no one else, fails with a full refund.
                assert!(matches!(job.state, JobState::Failed(_)), "{job:#?}");
                assert_eq!(job.refund, Some(100_000));
            } else {
                assert_eq!(job.state, JobState::Done);
            }
        }
        let p = f64::from(ppm) / 1e6;
        let n = jobs as f64;
        let sigma = (n * p * (1.0 - p)).sqrt();
        let expected = n * p;
        assert!(
            (caught as f64 - expected).abs() < 4.5 * sigma,
            "P={p}: caught {caught} of {jobs}, expected {expected:.0} ± {:.0}",
            4.5 * sigma
        );
        assert_eq!(sim.referee_runs, caught, "every audit found the liar");
    }
}

#[test]
fn a_slash_for_a_wrong_output_is_told_to_the_operator() {
    let (mut sim, job) = one_cheater(Behaviour::Wrong);
    let notices = sim.book.take_notices();
    assert_eq!(
        notices,
        vec![
            olc_coordinator::core::notice::Notice::SlashedForWrongOutput {
                job: job.job_id,
                worker: sim.key(0),
                amount: HONEST_STAKE / 2,
            }
        ]
    );
    assert!(sim.book.take_notices().is_empty(), "drained once");
}
