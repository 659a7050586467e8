#![allow(clippy::unwrap_used)]

use super::*;

/// A small seeded generator (splitmix64), so the randomized tests are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Mostly small values, sometimes huge ones, so both ordinary and overflow-prone
    /// inputs are covered.
    fn amount(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX - self.below(1000),
            2 => self.next(),
            3 => self.below(10),
            _ => self.below(1_000_000),
        }
    }
}

fn key(i: u8) -> PublicKey {
    PublicKey::from_bytes([i; 32])
}

fn work(worker: u8, tokens: u64, price: u64, cap: u64) -> Work {
    Work {
        worker: key(worker),
        tokens,
        price_per_ktoken: price,
        fee_cap: cap,
    }
}

fn total(split: &Split) -> u128 {
    split
        .payouts
        .iter()
        .map(|(_, a, _)| u128::from(*a))
        .sum::<u128>()
        + u128::from(split.refund)
}

fn role_sum(split: &Split, role: PayoutRole) -> u64 {
    split
        .payouts
        .iter()
        .filter(|(_, _, r)| *r == role)
        .map(|(_, a, _)| a)
        .sum()
}

#[test]
fn defaults_are_the_published_policy() {
    let p = Policy::default();
    assert_eq!(p.treasury_bps, 500);
    assert_eq!(p.royalty_bps, 1000);
    assert_eq!(p.data_bps, 1000);
    assert_eq!(p.slash_bps, 5000);
    assert_eq!(p.deadline_slash_bps, 500);
    assert_eq!(p.slash_to_honest_bps, 5000);
    assert_eq!(p.jail_ms, 600_000);
    assert_eq!(p.min_stake, 100);
    assert!(p.validate().is_ok());
}

#[test]
fn policy_rejects_slashing_more_than_the_whole() {
    let p = Policy {
        slash_to_honest_bps: 10_001,
        ..Policy::default()
    };
    assert_eq!(
        p.validate(),
        Err(RuleError::BpsOutOfRange {
            field: "slash_to_honest_bps",
            bps: 10_001
        })
    );
}

#[test]
fn full_split_with_adapter_and_provenance() {
    let contributors = [(key(20), 3), (key(21), 1)];
    let w = [work(1, 100_000, 50, u64::MAX)];
    let split = split_fee(
        &Policy::default(),
        &FeeInputs {
            escrow: 10_000,
            work: &w,
            adapter_owner: Some(key(10)),
            contributors: &contributors,
        },
    )
    .unwrap();
    assert_eq!(
        split.payouts,
        vec![
            (Payee::Account(key(1)), 5000, PayoutRole::Compute),
            (Payee::Account(key(10)), 500, PayoutRole::AdapterRoyalty),
            (Payee::Account(key(20)), 375, PayoutRole::DataContributor),
            (Payee::Account(key(21)), 125, PayoutRole::DataContributor),
            (Payee::Treasury, 250, PayoutRole::Treasury),
        ]
    );
    assert_eq!(split.refund, 3750);
    assert_eq!(split.paid_out() + split.refund, 10_000);
}

#[test]
fn metering_floors_and_caps() {
    // 1999 tokens at 1 per 1000: 1 credit, not 2.
    let w = [work(1, 1999, 1, 100), work(2, 1_000_000, 1000, 700)];
    let split = split_fee(
        &Policy {
            treasury_bps: 0,
            ..Policy::default()
        },
        &FeeInputs {
            escrow: 1_000_000,
            work: &w,
            adapter_owner: None,
            contributors: &[],
        },
    )
    .unwrap();
    assert_eq!(
        split.payouts,
        vec![
            (Payee::Account(key(1)), 1, PayoutRole::Compute),
            (Payee::Account(key(2)), 700, PayoutRole::Compute),
        ]
    );
    assert_eq!(split.refund, 1_000_000 - 701);
}

#[test]
fn no_owner_no_royalty_and_no_provenance_no_data_share() {
    let w = [work(1, 10_000, 100, u64::MAX)]; // 1000
    for contributors in [&[][..], &[(key(20), 0), (key(21), 0)][..]] {
        let split = split_fee(
            &Policy::default(),
            &FeeInputs {
                escrow: 5000,
                work: &w,
                adapter_owner: None,
                contributors,
            },
        )
        .unwrap();
        assert_eq!(
            split.payouts,
            vec![
                (Payee::Account(key(1)), 1000, PayoutRole::Compute),
                (Payee::Treasury, 50, PayoutRole::Treasury),
            ]
        );
        assert_eq!(split.refund, 3950);
    }
}

#[test]
fn a_short_escrow_cuts_treasury_then_attribution_then_compute() {
    let contributors = [(key(20), 1), (key(21), 1)];
    let w = [
        work(1, 10_000, 100, u64::MAX),
        work(2, 20_000, 100, u64::MAX),
    ]; // 1000 + 2000
    let run = |escrow| {
        split_fee(
            &Policy::default(),
            &FeeInputs {
                escrow,
                work: &w,
                adapter_owner: Some(key(10)),
                contributors: &contributors,
            },
        )
        .unwrap()
    };
    // Wanted: compute 3000, royalty 300, data 300 (150 + 150), treasury 150 = 3750.
    let full = run(3750);
    assert_eq!(full.refund, 0);
    assert_eq!(role_sum(&full, PayoutRole::Treasury), 150);

    // Treasury yields first.
    let s = run(3700);
    assert_eq!(role_sum(&s, PayoutRole::Compute), 3000);
    assert_eq!(role_sum(&s, PayoutRole::AdapterRoyalty), 300);
    assert_eq!(role_sum(&s, PayoutRole::DataContributor), 300);
    assert_eq!(role_sum(&s, PayoutRole::Treasury), 100);
    assert_eq!(s.refund, 0);

    // Then attribution, keeping its 1:1 ratio between owner and contributors.
    let s = run(3301);
    assert_eq!(role_sum(&s, PayoutRole::Compute), 3000);
    assert_eq!(role_sum(&s, PayoutRole::AdapterRoyalty), 151); // the tie goes to the royalty
    assert_eq!(role_sum(&s, PayoutRole::DataContributor), 150);
    assert_eq!(role_sum(&s, PayoutRole::Treasury), 0);
    assert!(!s.payouts.iter().any(|(p, _, _)| *p == Payee::Treasury));

    // Compute last, in proportion to each worker's fee.
    let s = run(1501);
    assert_eq!(
        s.payouts,
        vec![
            (Payee::Account(key(1)), 500, PayoutRole::Compute),
            (Payee::Account(key(2)), 1001, PayoutRole::Compute),
        ]
    );
    assert_eq!(s.refund, 0);

    let s = run(0);
    assert!(s.payouts.is_empty());
    assert_eq!(s.refund, 0);
}

/// What `split_fee` should want, computed independently, in u128.
struct Wanted {
    fees: Vec<u128>,
    compute: u128,
    attribution: u128,
    treasury: u128,
}

fn wanted(policy: &Policy, inputs: &FeeInputs<'_>) -> Wanted {
    let fees: Vec<u128> = inputs
        .work
        .iter()
        .map(|w| {
            let metered = u128::from(w.tokens) * u128::from(w.price_per_ktoken) / 1000;
            metered.min(u128::from(w.fee_cap))
        })
        .collect();
    let compute: u128 = fees.iter().sum();
    let bps = |b: u32| compute * u128::from(b) / 10_000;
    let royalty = if inputs.adapter_owner.is_some() {
        bps(policy.royalty_bps)
    } else {
        0
    };
    let data = if inputs.contributors.iter().any(|(_, t)| *t > 0) {
        bps(policy.data_bps)
    } else {
        0
    };
    Wanted {
        fees,
        compute,
        attribution: royalty + data,
        treasury: bps(policy.treasury_bps),
    }
}

#[test]
fn every_split_is_exact_over_random_inputs() {
    let mut rng = Rng(0x0_1c5e_771e);
    for case in 0..20_000 {
        let policy = Policy {
            treasury_bps: rng.below(20_001) as u32,
            royalty_bps: rng.below(20_001) as u32,
            data_bps: rng.below(20_001) as u32,
            ..Policy::default()
        };
        let work: Vec<Work> = (0..rng.below(6))
            .map(|i| Work {
                worker: key(i as u8),
                tokens: rng.amount(),
                price_per_ktoken: rng.amount(),
                fee_cap: rng.amount(),
            })
            .collect();
        let contributors: Vec<(PublicKey, u64)> = (0..rng.below(7))
            .map(|i| (key(20 + i as u8), rng.amount()))
            .collect();
        let adapter_owner = (rng.below(2) == 0).then(|| key(10));
        let escrow = rng.amount();
        let inputs = FeeInputs {
            escrow,
            work: &work,
            adapter_owner,
            contributors: &contributors,
        };
        let split = split_fee(&policy, &inputs).unwrap();
        let want = wanted(&policy, &inputs);

        assert_eq!(total(&split), u128::from(escrow), "case {case}");
        assert!(split.payouts.iter().all(|(_, a, _)| *a > 0), "case {case}");

        let compute = u128::from(role_sum(&split, PayoutRole::Compute));
        let attribution = u128::from(role_sum(&split, PayoutRole::AdapterRoyalty))
            + u128::from(role_sum(&split, PayoutRole::DataContributor));
        let treasury = u128::from(role_sum(&split, PayoutRole::Treasury));
        // Priority: compute, then attribution, then treasury, then refund.
        assert_eq!(compute, want.compute.min(u128::from(escrow)), "case {case}");
        let left = u128::from(escrow) - compute;
        assert_eq!(attribution, want.attribution.min(left), "case {case}");
        let left = left - attribution;
        assert_eq!(treasury, want.treasury.min(left), "case {case}");
        assert_eq!(u128::from(split.refund), left - treasury, "case {case}");

        // Keys are distinct within a case, so each entry's payout can be looked up.
        let paid_to = |k: PublicKey, role: PayoutRole| -> u128 {
            split
                .payouts
                .iter()
                .filter(|(p, _, r)| *p == Payee::Account(k) && *r == role)
                .map(|(_, a, _)| u128::from(*a))
                .sum()
        };
        // Each worker: at most its metered, capped fee, and within one unit of its exact
        // proportional share of what compute was paid.
        for (w, fee) in work.iter().zip(&want.fees) {
            let paid = paid_to(w.worker, PayoutRole::Compute);
            assert!(paid <= *fee, "case {case}");
            if let Some(floor) = (fee * compute).checked_div(want.compute) {
                assert!(paid == floor || paid == floor + 1, "case {case}");
            }
        }
        // Data contributors: each within one unit of its exact share of the data pool.
        let data_paid = u128::from(role_sum(&split, PayoutRole::DataContributor));
        let tokens: u128 = contributors.iter().map(|(_, t)| u128::from(*t)).sum();
        for (k, t) in &contributors {
            let paid = paid_to(*k, PayoutRole::DataContributor);
            match (data_paid * u128::from(*t)).checked_div(tokens) {
                Some(floor) => assert!(paid == floor || paid == floor + 1, "case {case}"),
                None => assert_eq!(paid, 0, "case {case}"),
            }
        }
    }
}

#[test]
fn huge_fees_and_absurd_bps_do_not_overflow() {
    // A u64::MAX compute fee times u32::MAX bps still fits in u128: no error, and the
    // escrow (all taken by compute) still caps everything.
    let w = [work(1, u64::MAX, u64::MAX, u64::MAX)];
    let split = split_fee(
        &Policy {
            treasury_bps: u32::MAX,
            royalty_bps: u32::MAX,
            data_bps: u32::MAX,
            ..Policy::default()
        },
        &FeeInputs {
            escrow: u64::MAX,
            work: &w,
            adapter_owner: Some(key(2)),
            contributors: &[(key(3), u64::MAX)],
        },
    )
    .unwrap();
    assert_eq!(total(&split), u128::from(u64::MAX));
    assert_eq!(split.payouts.len(), 1);
}

#[test]
fn apportion_is_exact_and_breaks_ties_by_key_then_position() {
    assert_eq!(
        apportion(10, &[(1u8, 1), (2, 1), (3, 1)]).unwrap(),
        vec![4, 3, 3]
    );
    // Key order, not position, decides the tie.
    assert_eq!(
        apportion(1, &[(3u8, 1), (1, 1), (2, 1)]).unwrap(),
        vec![0, 1, 0]
    );
    // Same key: position decides.
    assert_eq!(apportion(1, &[(1u8, 1), (1, 1)]).unwrap(), vec![1, 0]);
    // Largest remainder wins over key order: 7 * 0.45/0.55 → 3.15 / 3.85.
    assert_eq!(apportion(7, &[(1u8, 45), (2, 55)]).unwrap(), vec![3, 4]);
    // Zero weight gets zero.
    assert_eq!(apportion(5, &[(1u8, 0), (2, 3)]).unwrap(), vec![0, 5]);
    assert_eq!(apportion(0, &[(1u8, 0)]).unwrap(), vec![0]);
    assert!(apportion(1, &[(1u8, 0)]).is_err());
    assert!(apportion::<u8>(1, &[]).is_err());

    let mut rng = Rng(7);
    for _ in 0..5000 {
        let n = 1 + rng.below(12) as usize;
        let weights: Vec<(u8, u128)> = (0..n)
            .map(|_| (rng.below(5) as u8, u128::from(rng.amount())))
            .collect();
        let sum: u128 = weights.iter().map(|(_, w)| w).sum();
        let t = u128::from(rng.amount());
        let Ok(parts) = apportion(t, &weights) else {
            assert_eq!(sum, 0);
            continue;
        };
        assert_eq!(parts.iter().sum::<u128>(), t);
        for ((_, w), p) in weights.iter().zip(&parts) {
            // A zero sum is only accepted with nothing to divide.
            let floor = (t * w).checked_div(sum).unwrap_or(0);
            assert!(*p == floor || *p == floor + 1);
            if *w == 0 {
                assert_eq!(*p, 0);
            }
        }
    }
}

fn cid(b: u8) -> ContentId {
    ContentId::from_bytes([b; 32])
}

#[test]
fn judge_agreement_and_disagreement() {
    let a = cid(1);
    let b = cid(2);
    assert_eq!(
        judge(&[(key(1), a), (key(2), a), (key(3), a)], None),
        Verdict::Agreed(a)
    );
    assert_eq!(judge(&[(key(1), a)], None), Verdict::Agreed(a));
    assert_eq!(judge(&[], None), Verdict::NeedsReferee);
    assert_eq!(
        judge(&[(key(1), a), (key(2), a), (key(3), b)], None),
        Verdict::NeedsReferee
    );
}

#[test]
fn the_referee_decides_even_against_a_majority() {
    let right = cid(1);
    let lie = cid(2);
    let commitments = [(key(1), lie), (key(2), right), (key(3), lie)];
    assert_eq!(
        judge(&commitments, Some(right)),
        Verdict::Decided {
            correct: right,
            wrong: vec![key(1), key(3)],
            honest: vec![key(2)],
        }
    );
    // Everyone agreed, and everyone was wrong.
    assert_eq!(
        judge(&[(key(1), lie), (key(2), lie)], Some(right)),
        Verdict::Decided {
            correct: right,
            wrong: vec![key(1), key(2)],
            honest: vec![],
        }
    );
    // A worker with two different commitments is wrong, once.
    assert_eq!(
        judge(
            &[
                (key(1), right),
                (key(2), right),
                (key(1), lie),
                (key(2), right)
            ],
            Some(right)
        ),
        Verdict::Decided {
            correct: right,
            wrong: vec![key(1)],
            honest: vec![key(2)],
        }
    );
}

#[test]
fn slash_plan_amounts_and_recipients() {
    let p = Policy::default();
    let (amount, plan) = slash_plan(
        &p,
        SlashReason::WrongOutput,
        1000,
        &[key(3), key(1), key(2)],
    );
    assert_eq!(amount, 500);
    // 250 to the honest: 84 + 83 + 83, the extra unit to the smallest key.
    assert_eq!(
        plan,
        vec![
            (Payee::Account(key(1)), 84),
            (Payee::Account(key(2)), 83),
            (Payee::Account(key(3)), 83),
            (Payee::Treasury, 250),
        ]
    );

    let (amount, plan) = slash_plan(&p, SlashReason::MissedDeadline, 1000, &[key(1)]);
    assert_eq!(amount, 50);
    assert_eq!(
        plan,
        vec![(Payee::Account(key(1)), 25), (Payee::Treasury, 25)]
    );

    let (amount, plan) = slash_plan(&p, SlashReason::Equivocation, 999, &[]);
    assert_eq!(amount, 499);
    assert_eq!(plan, vec![(Payee::Treasury, 499)]);

    assert_eq!(
        slash_plan(&p, SlashReason::WrongOutput, 0, &[key(1)]),
        (0, vec![])
    );
    // Duplicated honest workers are paid once.
    let (_, plan) = slash_plan(&p, SlashReason::WrongOutput, 400, &[key(1), key(1)]);
    assert_eq!(
        plan,
        vec![(Payee::Account(key(1)), 100), (Payee::Treasury, 100)]
    );
}

#[test]
fn slash_plans_always_sum_to_the_amount_and_never_exceed_the_stake() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let policy = Policy {
            slash_bps: rng.below(12_000) as u32,
            deadline_slash_bps: rng.below(12_000) as u32,
            slash_to_honest_bps: rng.below(12_000) as u32,
            ..Policy::default()
        };
        let reason = match rng.below(3) {
            0 => SlashReason::WrongOutput,
            1 => SlashReason::MissedDeadline,
            _ => SlashReason::Equivocation,
        };
        let stake = rng.amount();
        let honest: Vec<PublicKey> = (0..rng.below(6)).map(|_| key(rng.below(8) as u8)).collect();
        let (amount, plan) = slash_plan(&policy, reason, stake, &honest);
        assert!(amount <= stake);
        let sum: u128 = plan.iter().map(|(_, a)| u128::from(*a)).sum();
        assert_eq!(sum, u128::from(amount));
        assert!(plan.iter().all(|(_, a)| *a > 0));
        let to_honest: u64 = plan
            .iter()
            .filter(|(p, _)| *p != Payee::Treasury)
            .map(|(_, a)| a)
            .sum();
        assert!(to_honest <= amount);
        let distinct: std::collections::BTreeSet<_> = honest.iter().collect();
        let shares: Vec<u64> = plan
            .iter()
            .filter(|(p, _)| *p != Payee::Treasury)
            .map(|(_, a)| *a)
            .collect();
        assert!(shares.len() <= distinct.len());
        if let (Some(max), Some(min)) = (shares.iter().max(), shares.iter().min()) {
            assert!(max - min <= 1);
        }
    }
}

fn job_ids(n: u32) -> impl Iterator<Item = (ContentId, ContentId)> {
    (0..n).map(|i| {
        let job = ContentId::of(&i.to_le_bytes());
        let mut a = job.as_bytes().to_vec();
        a.push(b'a');
        (job, ContentId::of(&a))
    })
}

#[test]
fn audits_happen_at_the_requested_rate() {
    let key = AuditKey::from_identity(&Identity::from_seed(&[9; 32]));
    let n = 100_000u32;
    for ppm in [10_000u32, 100_000, 500_000] {
        let p = f64::from(ppm) / 1e6;
        let count = job_ids(n).filter(|(j, a)| key.audit(j, a, ppm)).count() as f64;
        let mean = f64::from(n) * p;
        let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
        assert!(
            (count - mean).abs() <= 4.0 * sd,
            "P = {p}: {count} audits of {n}, expected {mean} ± {}",
            4.0 * sd
        );
    }
    let (j, a) = (cid(1), cid(2));
    assert!(!key.audit(&j, &a, 0));
    assert!(key.audit(&j, &a, 1_000_000));
    assert!(key.audit(&j, &a, u32::MAX));
}

#[test]
fn audit_choices_are_stable_per_coordinator_and_differ_between_coordinators() {
    let one = AuditKey::from_identity(&Identity::from_seed(&[9; 32]));
    let again = AuditKey::from_identity(&Identity::from_seed(&[9; 32]));
    let other = AuditKey::from_identity(&Identity::from_seed(&[10; 32]));
    let n = 10_000u32;
    let mut same_as_again = 0;
    let mut same_as_other = 0;
    for (j, a) in job_ids(n) {
        let mine = one.audit(&j, &a, 500_000);
        same_as_again += u32::from(mine == again.audit(&j, &a, 500_000));
        same_as_other += u32::from(mine == other.audit(&j, &a, 500_000));
    }
    assert_eq!(same_as_again, n);
    // Independent coins agree about half the time: 5000 ± 4 sd (sd = 50).
    assert!(
        (4800..=5200).contains(&same_as_other),
        "{same_as_other} of {n}"
    );
    // The key never shows in logs.
    assert_eq!(format!("{one:?}"), "AuditKey(..)");
}

#[test]
fn the_assignment_matters_to_the_audit() {
    let key = AuditKey::from_identity(&Identity::from_seed(&[9; 32]));
    let job = cid(7);
    let decisions: Vec<bool> = (0..64u8)
        .map(|i| key.audit(&job, &ContentId::of(&[i]), 500_000))
        .collect();
    assert!(decisions.iter().any(|d| *d) && decisions.iter().any(|d| !*d));
}

#[test]
fn reputation_moves_by_a_tenth_and_stays_in_bounds() {
    assert!((update_reputation(UNKNOWN_REPUTATION, true) - 0.55).abs() < 1e-12);
    assert!((update_reputation(UNKNOWN_REPUTATION, false) - 0.45).abs() < 1e-12);
    assert_eq!(update_reputation(1.0, true), 1.0);
    assert_eq!(update_reputation(0.0, false), 0.0);
    assert!((update_reputation(f64::NAN, true) - 0.55).abs() < 1e-12);
    assert_eq!(update_reputation(7.0, true), 1.0);
    assert!((update_reputation(-3.0, true) - 0.1).abs() < 1e-12);
    assert!((update_reputation(f64::INFINITY, false) - 0.9).abs() < 1e-12);

    let mut r = UNKNOWN_REPUTATION;
    for _ in 0..200 {
        r = update_reputation(r, true);
    }
    assert!(r > 0.999 && r <= 1.0);

    let mut rng = Rng(3);
    let mut r = UNKNOWN_REPUTATION;
    for _ in 0..100_000 {
        r = update_reputation(r, rng.below(3) != 0);
        assert!((0.0..=1.0).contains(&r));
    }
}
