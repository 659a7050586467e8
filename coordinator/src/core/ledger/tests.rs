#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use olc_protocol::codec;

const UNBONDING_MS: u64 = 1_000;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn job(n: u8) -> ContentId {
    ContentId::from_bytes([n; 32])
}

fn ledger() -> Ledger {
    Ledger::new(LedgerConfig {
        unbonding_ms: UNBONDING_MS,
    })
}

/// Runs one operation and checks what must hold after any operation: the invariant, and
/// for a failed one, an unchanged ledger.
fn step<T>(
    ledger: &mut Ledger,
    op: impl FnOnce(&mut Ledger) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let before = ledger.clone();
    let out = op(ledger);
    ledger.check_invariant().unwrap();
    if out.is_err() {
        assert_eq!(*ledger, before, "a failed operation changed the ledger");
    }
    out
}

/// A ledger where key(1) has 1000 credits and key(2) has 500 bonded.
fn funded() -> Ledger {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(1), 1_000)).unwrap();
    step(&mut l, |l| l.deposit(key(2), 500)).unwrap();
    step(&mut l, |l| l.stake(key(2), 500)).unwrap();
    l
}

#[test]
fn empty_ledger_holds_the_invariant() {
    let l = Ledger::default();
    l.check_invariant().unwrap();
    assert_eq!(l.total().unwrap(), 0);
    assert_eq!(l.config().unbonding_ms, LedgerConfig::DEFAULT_UNBONDING_MS);
    assert!(l.accounts().is_empty());
}

#[test]
fn deposit_mints() {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(1), 10)).unwrap();
    step(&mut l, |l| l.deposit(key(1), 5)).unwrap();
    step(&mut l, |l| l.deposit(key(2), 7)).unwrap();
    assert_eq!(l.balance(key(1)), 15);
    assert_eq!(l.balance(key(2)), 7);
    assert_eq!(l.minted(), 22);
    assert_eq!(
        step(&mut l, |l| l.deposit(key(1), 0)),
        Err(LedgerError::ZeroAmount)
    );
}

#[test]
fn deposits_that_would_overflow_are_refused() {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(1), u64::MAX - 1)).unwrap();
    step(&mut l, |l| l.deposit(key(2), 1)).unwrap();
    assert_eq!(l.minted(), u64::MAX);
    // The total minted would overflow even though key(3)'s own balance would not.
    assert_eq!(
        step(&mut l, |l| l.deposit(key(3), 1)),
        Err(LedgerError::Overflow)
    );
    assert_eq!(
        step(&mut l, |l| l.deposit(key(1), u64::MAX)),
        Err(LedgerError::Overflow)
    );
    // Everything still moves at the top of the range.
    step(&mut l, |l| l.stake(key(1), u64::MAX - 1)).unwrap();
    step(&mut l, |l| l.unstake(key(1), u64::MAX - 1, 0)).unwrap();
    assert_eq!(
        step(&mut l, |l| l.release_unbonded(u64::MAX)),
        Ok(u64::MAX - 1)
    );
    assert_eq!(l.total().unwrap(), u64::MAX);
}

#[test]
fn stake_bonds_part_of_a_balance() {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(1), 100)).unwrap();
    step(&mut l, |l| l.stake(key(1), 60)).unwrap();
    step(&mut l, |l| l.stake(key(1), 40)).unwrap();
    assert_eq!(l.balance(key(1)), 0);
    assert_eq!(l.bonded(key(1)), 100);
    assert_eq!(
        step(&mut l, |l| l.stake(key(1), 1)),
        Err(LedgerError::Insufficient {
            who: key(1),
            need: 1,
            have: 0
        })
    );
    assert_eq!(
        step(&mut l, |l| l.stake(key(9), 1)),
        Err(LedgerError::Insufficient {
            who: key(9),
            need: 1,
            have: 0
        })
    );
    assert_eq!(
        step(&mut l, |l| l.stake(key(1), 0)),
        Err(LedgerError::ZeroAmount)
    );
}

#[test]
fn unstake_moves_bonded_to_unbonding() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 200, 10)).unwrap();
    assert_eq!(l.bonded(key(2)), 300);
    assert_eq!(l.unbonding(key(2)), 200);
    assert_eq!(l.balance(key(2)), 0);
    assert_eq!(
        step(&mut l, |l| l.unstake(key(2), 301, 10)),
        Err(LedgerError::InsufficientStake {
            who: key(2),
            need: 301,
            have: 300
        })
    );
    assert_eq!(
        step(&mut l, |l| l.unstake(key(1), 1, 10)),
        Err(LedgerError::InsufficientStake {
            who: key(1),
            need: 1,
            have: 0
        })
    );
    assert_eq!(
        step(&mut l, |l| l.unstake(key(2), 0, 10)),
        Err(LedgerError::ZeroAmount)
    );
    // A release time past the end of time is an overflow, not a wrap to the past.
    assert_eq!(
        step(&mut l, |l| l.unstake(key(2), 1, u64::MAX)),
        Err(LedgerError::Overflow)
    );
}

#[test]
fn unbonding_releases_exactly_at_its_time() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 100, 1_000)).unwrap();
    step(&mut l, |l| l.unstake(key(2), 50, 1_000)).unwrap(); // merges with the first
    step(&mut l, |l| l.unstake(key(2), 30, 1_400)).unwrap();
    assert_eq!(l.unbonding(key(2)), 180);

    assert_eq!(step(&mut l, |l| l.release_unbonded(1_999)), Ok(0));
    assert_eq!(l.balance(key(2)), 0);
    assert_eq!(step(&mut l, |l| l.release_unbonded(2_000)), Ok(150));
    assert_eq!(l.balance(key(2)), 150);
    assert_eq!(l.unbonding(key(2)), 30);
    assert_eq!(step(&mut l, |l| l.release_unbonded(2_000)), Ok(0));
    assert_eq!(step(&mut l, |l| l.release_unbonded(10_000)), Ok(30));
    assert_eq!(l.balance(key(2)), 180);
    assert_eq!(l.bonded(key(2)), 320);
    assert_eq!(l.unbonding(key(2)), 0);

    // Fully unstaked and released: the stake entry is gone.
    step(&mut l, |l| l.unstake(key(2), 320, 20_000)).unwrap();
    assert_eq!(step(&mut l, |l| l.release_unbonded(21_000)), Ok(320));
    assert!(l.stakes.is_empty());
    assert_eq!(l.balance(key(2)), 500);
}

#[test]
fn unbonding_uses_the_time_of_the_unstake_not_the_current_config() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 100, 0)).unwrap();
    l.set_config(LedgerConfig { unbonding_ms: 10 });
    step(&mut l, |l| l.unstake(key(2), 100, 0)).unwrap();
    assert_eq!(step(&mut l, |l| l.release_unbonded(10)), Ok(100));
    assert_eq!(
        step(&mut l, |l| l.release_unbonded(UNBONDING_MS - 1)),
        Ok(0)
    );
    assert_eq!(step(&mut l, |l| l.release_unbonded(UNBONDING_MS)), Ok(100));
}

#[test]
fn escrow_holds_the_fee() {
    let mut l = funded();
    step(&mut l, |l| l.escrow(job(1), key(1), 400)).unwrap();
    assert_eq!(l.escrowed(job(1)), Some(400));
    assert_eq!(l.balance(key(1)), 600);
    assert_eq!(
        step(&mut l, |l| l.escrow(job(1), key(1), 1)),
        Err(LedgerError::EscrowExists(job(1)))
    );
    assert_eq!(
        step(&mut l, |l| l.escrow(job(2), key(1), 601)),
        Err(LedgerError::Insufficient {
            who: key(1),
            need: 601,
            have: 600
        })
    );
    // Stake is not spendable.
    assert!(matches!(
        step(&mut l, |l| l.escrow(job(2), key(2), 1)),
        Err(LedgerError::Insufficient { .. })
    ));
    assert_eq!(l.escrowed(job(2)), None);
}

#[test]
fn a_zero_escrow_is_accepted_and_settles_once() {
    let mut l = ledger();
    step(&mut l, |l| l.escrow(job(1), key(1), 0)).unwrap();
    assert_eq!(l.escrowed(job(1)), Some(0));
    assert_eq!(
        step(&mut l, |l| l.settle(job(1), &[])),
        Ok(Settled::Done { refund: 0 })
    );
    assert_eq!(
        step(&mut l, |l| l.settle(job(1), &[])),
        Ok(Settled::Already)
    );
    assert_eq!(l.total().unwrap(), 0);
}

#[test]
fn settle_pays_refunds_and_closes() {
    let mut l = funded();
    step(&mut l, |l| l.escrow(job(1), key(1), 400)).unwrap();
    let payouts = [
        (Payee::Account(key(3)), 100),
        (Payee::Account(key(4)), 50),
        (Payee::Account(key(3)), 25),
        (Payee::Treasury, 5),
    ];
    assert_eq!(
        step(&mut l, |l| l.settle(job(1), &payouts)),
        Ok(Settled::Done { refund: 220 })
    );
    assert_eq!(l.balance(key(3)), 125);
    assert_eq!(l.balance(key(4)), 50);
    assert_eq!(l.treasury(), 5);
    assert_eq!(l.balance(key(1)), 600 + 220);
    assert_eq!(l.escrowed(job(1)), None);
    assert!(l.is_settled(job(1)));
}

#[test]
fn settle_is_idempotent() {
    let mut l = funded();
    step(&mut l, |l| l.escrow(job(1), key(1), 400)).unwrap();
    let payouts = [(Payee::Account(key(3)), 300)];
    assert_eq!(
        step(&mut l, |l| l.settle(job(1), &payouts)),
        Ok(Settled::Done { refund: 100 })
    );
    let after = l.clone();
    // A retry, even one computing different payouts, pays nothing.
    for retry in [&payouts[..], &[(Payee::Account(key(4)), 400)], &[]] {
        assert_eq!(
            step(&mut l, |l| l.settle(job(1), retry)),
            Ok(Settled::Already)
        );
        assert_eq!(l, after);
    }
    // And the job cannot be escrowed again to be paid a second time.
    assert_eq!(
        step(&mut l, |l| l.escrow(job(1), key(1), 10)),
        Err(LedgerError::AlreadySettled(job(1)))
    );
}

#[test]
fn settle_refuses_bad_payouts_whole() {
    let mut l = funded();
    step(&mut l, |l| l.escrow(job(1), key(1), 400)).unwrap();
    assert_eq!(
        step(&mut l, |l| l.settle(
            job(1),
            &[(Payee::Account(key(3)), 300), (Payee::Treasury, 101)]
        )),
        Err(LedgerError::PayoutsExceedEscrow {
            job: job(1),
            payouts: 401,
            escrow: 400
        })
    );
    assert_eq!(
        step(&mut l, |l| l.settle(
            job(1),
            &[(Payee::Account(key(3)), u64::MAX), (Payee::Treasury, 1)]
        )),
        Err(LedgerError::Overflow)
    );
    assert_eq!(
        step(&mut l, |l| l.settle(job(2), &[])),
        Err(LedgerError::NoEscrow(job(2)))
    );
    assert!(!l.is_settled(job(1)));
    // The whole escrow may be paid out, leaving no refund.
    assert_eq!(
        step(&mut l, |l| l
            .settle(job(1), &[(Payee::Account(key(3)), 400)])),
        Ok(Settled::Done { refund: 0 })
    );
    assert_eq!(l.balance(key(1)), 600);
}

#[test]
fn slash_shares_exactly_with_the_remainder_to_the_treasury() {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(9), 100)).unwrap();
    step(&mut l, |l| l.stake(key(9), 100)).unwrap();
    let to = [
        (Payee::Account(key(1)), 1),
        (Payee::Account(key(2)), 1),
        (Payee::Account(key(3)), 1),
    ];
    assert_eq!(step(&mut l, |l| l.slash(key(9), 100, &to)), Ok(100));
    assert_eq!(l.balance(key(1)), 33);
    assert_eq!(l.balance(key(2)), 33);
    assert_eq!(l.balance(key(3)), 33);
    assert_eq!(l.treasury(), 1);
    assert_eq!(l.bonded(key(9)), 0);
    assert!(l.stakes.is_empty());
}

#[test]
fn slash_weights_are_proportions() {
    let mut l = ledger();
    step(&mut l, |l| l.deposit(key(9), 1_000)).unwrap();
    step(&mut l, |l| l.stake(key(9), 1_000)).unwrap();
    // 7 * 3/10 = 2.1 -> 2, 7 * 5/10 = 3.5 -> 3, 7 * 2/10 = 1.4 -> 1 (treasury share),
    // and the 1 left by rounding also goes to the treasury.
    let to = [
        (Payee::Account(key(1)), 3),
        (Payee::Account(key(2)), 5),
        (Payee::Treasury, 2),
    ];
    assert_eq!(step(&mut l, |l| l.slash(key(9), 7, &to)), Ok(7));
    assert_eq!(l.balance(key(1)), 2);
    assert_eq!(l.balance(key(2)), 3);
    assert_eq!(l.treasury(), 2);
    assert_eq!(l.bonded(key(9)), 993);

    // Weights near u64::MAX neither overflow nor lose precision.
    let to = [
        (Payee::Account(key(1)), u64::MAX),
        (Payee::Account(key(2)), u64::MAX),
    ];
    assert_eq!(step(&mut l, |l| l.slash(key(9), 993, &to)), Ok(993));
    assert_eq!(l.balance(key(1)), 2 + 496);
    assert_eq!(l.balance(key(2)), 3 + 496);
    assert_eq!(l.treasury(), 3);
}

#[test]
fn slash_without_weights_goes_to_the_treasury() {
    let mut l = funded();
    assert_eq!(step(&mut l, |l| l.slash(key(2), 10, &[])), Ok(10));
    assert_eq!(
        step(&mut l, |l| l.slash(
            key(2),
            10,
            &[(Payee::Account(key(1)), 0)]
        )),
        Ok(10)
    );
    assert_eq!(l.treasury(), 20);
    assert_eq!(l.balance(key(1)), 1_000);
}

#[test]
fn slash_takes_bonded_then_the_latest_unbonding() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 200, 0)).unwrap(); // releases at 1_000
    step(&mut l, |l| l.unstake(key(2), 200, 500)).unwrap(); // releases at 1_500
    assert_eq!(l.bonded(key(2)), 100);
    assert_eq!(step(&mut l, |l| l.slash(key(2), 250, &[])), Ok(250));
    assert_eq!(l.bonded(key(2)), 0);
    assert_eq!(l.unbonding(key(2)), 250);
    assert_eq!(step(&mut l, |l| l.release_unbonded(1_000)), Ok(200));
    assert_eq!(step(&mut l, |l| l.release_unbonded(1_500)), Ok(50));
}

#[test]
fn slashing_more_than_the_stake_takes_all_of_it() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 100, 0)).unwrap();
    assert_eq!(
        step(&mut l, |l| l.slash(
            key(2),
            u64::MAX,
            &[(Payee::Account(key(1)), 1)]
        )),
        Ok(500)
    );
    assert_eq!(l.bonded(key(2)), 0);
    assert_eq!(l.unbonding(key(2)), 0);
    assert_eq!(l.balance(key(1)), 1_500);
    assert!(l.stakes.is_empty());
    // Nothing left to take: a no-op, not an error.
    assert_eq!(step(&mut l, |l| l.slash(key(2), 1, &[])), Ok(0));
    assert_eq!(step(&mut l, |l| l.slash(key(1), 1, &[])), Ok(0));
    let before = l.clone();
    assert_eq!(step(&mut l, |l| l.slash(key(2), 0, &[])), Ok(0));
    assert_eq!(l, before);
}

#[test]
fn accounts_lists_balances_and_stakes() {
    let mut l = funded();
    step(&mut l, |l| l.unstake(key(2), 100, 0)).unwrap();
    step(&mut l, |l| l.escrow(job(1), key(1), 1_000)).unwrap();
    assert_eq!(
        l.accounts(),
        vec![AccountView {
            key: key(2),
            balance: 0,
            bonded: 400,
            unbonding: 100
        }]
    );
    step(&mut l, |l| {
        l.settle(job(1), &[(Payee::Account(key(3)), 10)])
    })
    .unwrap();
    let keys: Vec<_> = l.accounts().iter().map(|a| a.key).collect();
    assert_eq!(keys, vec![key(1), key(2), key(3)]);
}

#[test]
fn the_invariant_catches_created_or_lost_credits() {
    let mut l = funded();
    l.treasury += 1;
    assert_eq!(
        l.check_invariant(),
        Err(LedgerError::Invariant {
            total: 1_501,
            minted: 1_500
        })
    );
    l.treasury = u64::MAX;
    assert_eq!(l.check_invariant(), Err(LedgerError::Overflow));
}

// --- randomized sequences ---------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Deposit(u8, u64),
    Stake(u8, u64),
    Unstake(u8, u64),
    Advance(u64),
    Release,
    Escrow(u8, u8, u64),
    Settle(u8, Vec<(Option<u8>, u64)>),
    Slash(u8, u64, Vec<(Option<u8>, u64)>),
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0..=200u64,
        1 => any::<u64>(),
        1 => (u64::MAX - 200)..=u64::MAX,
    ]
}

fn payees() -> impl Strategy<Value = Vec<(Option<u8>, u64)>> {
    proptest::collection::vec((proptest::option::of(0..6u8), amount()), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..6u8;
    let jobs = 0..=255u8;
    prop_oneof![
        2 => (who.clone(), amount()).prop_map(|(w, a)| Op::Deposit(w, a)),
        2 => (who.clone(), amount()).prop_map(|(w, a)| Op::Stake(w, a)),
        2 => (who.clone(), amount()).prop_map(|(w, a)| Op::Unstake(w, a)),
        1 => (0..=600u64).prop_map(Op::Advance),
        1 => Just(Op::Release),
        3 => (jobs.clone(), who.clone(), amount()).prop_map(|(j, w, a)| Op::Escrow(j, w, a)),
        3 => (jobs, payees()).prop_map(|(j, p)| Op::Settle(j, p)),
        1 => (who, amount(), payees()).prop_map(|(w, a, p)| Op::Slash(w, a, p)),
    ]
}

fn to_payees(raw: &[(Option<u8>, u64)]) -> Vec<(Payee, u64)> {
    raw.iter()
        .map(|&(who, a)| (who.map_or(Payee::Treasury, |w| Payee::Account(key(w))), a))
        .collect()
}

fn stake_of(l: &Ledger, who: PublicKey) -> u64 {
    l.bonded(who) + l.unbonding(who)
}

/// Applies one operation through [`step`] and checks its effect against what the
/// operation promises.
fn run(l: &mut Ledger, now: &mut u64, minted: &mut u64, op: &Op) {
    match op {
        Op::Deposit(w, a) => {
            if step(l, |l| l.deposit(key(*w), *a)).is_ok() {
                *minted += a;
            }
        }
        Op::Stake(w, a) => {
            let _ = step(l, |l| l.stake(key(*w), *a));
        }
        Op::Unstake(w, a) => {
            let _ = step(l, |l| l.unstake(key(*w), *a, *now));
        }
        Op::Advance(ms) => *now += ms,
        Op::Release => {
            let before = l.total().unwrap();
            step(l, |l| l.release_unbonded(*now)).unwrap();
            assert_eq!(l.total().unwrap(), before);
        }
        Op::Escrow(j, w, a) => {
            let _ = step(l, |l| l.escrow(job(*j), key(*w), *a));
        }
        Op::Settle(j, p) => {
            let before = l.clone();
            let result = step(l, |l| l.settle(job(*j), &to_payees(p)));
            if before.is_settled(job(*j)) {
                assert_eq!(result, Ok(Settled::Already));
                assert_eq!(*l, before);
            } else if result.is_ok() {
                assert!(l.is_settled(job(*j)));
                assert_eq!(l.escrowed(job(*j)), None);
            }
        }
        Op::Slash(w, a, p) => {
            let had = stake_of(l, key(*w));
            let taken = step(l, |l| l.slash(key(*w), *a, &to_payees(p))).unwrap();
            assert_eq!(taken, (*a).min(had));
            assert_eq!(stake_of(l, key(*w)), had - taken);
        }
    }
    assert_eq!(l.minted(), *minted);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariant(ops in proptest::collection::vec(op(), 10_000)) {
        let mut l = ledger();
        let mut now = 0;
        let mut minted = 0;
        for op in &ops {
            run(&mut l, &mut now, &mut minted, op);
        }
        // The final state survives the durable encoding unchanged.
        let bytes = codec::encode(&l).unwrap();
        prop_assert_eq!(codec::decode::<Ledger>(&bytes).unwrap(), l);
    }
}

// --- durable store ----------------------------------------------------------------------
