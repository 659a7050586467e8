#![allow(clippy::unwrap_used)]

use olc_protocol::{
    AccountAction, AccountRequest, Amount, Backend, CpuInfo, Hardware, HardwareAdvert, Identity,
    InferenceJob, Prompt, Requirements, Sampling, Signed, VerificationPolicy,
};

use super::*;
use crate::core::book::JobsConfig;
use crate::core::ledger::LedgerConfig;
use crate::core::rules::Policy;

const NOW: u64 = 1_800_000_000_000;

fn identity(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

/// A CPU worker with one job slot, asking `price` per 1000 tokens.
fn worker(n: u8, price: u64) -> RegisteredWorker {
    RegisteredWorker {
        public_key: identity(n).public_key(),
        advert: HardwareAdvert {
            seq: 1,
            timestamp_ms: NOW,
            interval_ms: 1_000,
            hardware: Hardware {
                gpus: vec![],
                cpu: CpuInfo {
                    model: "test".into(),
                    logical_cores: 2,
                    features: vec![],
                },
                ram_total_bytes: 1 << 30,
                ram_available_bytes: 1 << 29,
                disk_free_bytes: 1 << 32,
            },
            backends: vec![Backend::Cpu],
            price_per_ktoken: Amount(price),
            listen_addrs: vec![],
            cached: vec![],
            max_concurrent_jobs: 1,
            active_jobs: 0,
            resident: Vec::new(),
            resident_adapters: 0,
            max_streams: 1,
            active_streams: 0,
        },
        last_seen_ms: NOW,
        first_seen_ms: NOW,
    }
}

fn spec(min_memory_bytes: u64) -> JobSpec {
    JobSpec {
        kind: JobKind::Inference(InferenceJob {
            model: ContentId::of(b"model"),
            adapter: Some(ContentId::of(b"adapter")),
            prompt: Prompt::Tokens(vec![1]),
            sampling: Sampling::Greedy,
            max_tokens: 1,
            seed: 0,
        }),
        requirements: Requirements {
            min_memory_bytes,
            ..Requirements::default()
        },
        max_fee: Amount(1000),
        verification: VerificationPolicy::Single,
        deadline_ms: NOW + 60_000,
        nonce: 1,
    }
}

fn request<'a>(spec: &'a JobSpec, exclude: &'a [PublicKey]) -> PickRequest<'a> {
    PickRequest {
        spec,
        exclude,
        replicas: 1,
        fee: None,
    }
}

/// A book where every worker is eligible (no minimum stake).
fn open_book() -> JobBook {
    let policy = Policy {
        min_stake: 0,
        ..Policy::default()
    };
    JobBook::new(JobsConfig::default(), policy, LedgerConfig::default())
}

/// A book with the default minimum stake, which worker `staked` has bonded.
fn staking_book(staked: u8) -> JobBook {
    let mut book = JobBook::new(
        JobsConfig::default(),
        Policy::default(),
        LedgerConfig::default(),
    );
    let min_stake = Policy::default().min_stake;
    for (nonce, action) in [
        AccountAction::Deposit {
            amount: Amount(min_stake),
        },
        AccountAction::Stake {
            amount: Amount(min_stake),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let r = AccountRequest {
            action,
            nonce: nonce as u64 + 1,
        };
        book.account_request(&Signed::sign(&identity(staked), &r).unwrap(), true, NOW)
            .unwrap();
    }
    book
}

#[test]
fn nobody_online_is_said_so() {
    let mut c = Candidates::gather(vec![], &open_book(), |_| false, NOW);
    let s = spec(0);
    let no = c.pick(&request(&s, &[])).unwrap_err();
    assert_eq!(no.reason, "no worker is online");
    assert_eq!(no.untried, 0);
}

#[test]
fn workers_below_the_minimum_stake_are_not_candidates() {
    let book = staking_book(2);
    let mut c = Candidates::gather(vec![worker(1, 5)], &book, |_| false, NOW);
    let s = spec(0);
    let no = c.pick(&request(&s, &[])).unwrap_err();
    assert_eq!(
        no.reason,
        "none of the 1 online workers can be matched now: each is below the minimum stake \
         of 100, jailed, or busy"
    );
    assert_eq!(no.untried, 0, "an unstaked worker is nobody left to ask");
    // The staked one is picked at its own price.
    let mut c = Candidates::gather(vec![worker(1, 5), worker(2, 7)], &book, |_| false, NOW);
    assert_eq!(
        c.pick(&request(&s, &[])).unwrap(),
        vec![(identity(2).public_key(), 7)]
    );
}

#[test]
fn busy_workers_are_not_offered_but_still_count_as_untried() {
    let busy = identity(1).public_key();
    let mut c = Candidates::gather(vec![worker(1, 5)], &open_book(), |k| *k == busy, NOW);
    let s = spec(0);
    let no = c.pick(&request(&s, &[])).unwrap_err();
    assert!(no.reason.contains("or busy"), "{}", no.reason);
    assert_eq!(no.untried, 1, "it may take the job once free");
    // Excluded from the job, it is no longer someone to ask.
    let no = c.pick(&request(&s, &[busy])).unwrap_err();
    assert_eq!(no.untried, 0);
}

#[test]
fn untried_counts_only_workers_whose_hardware_fits() {
    let mut c = Candidates::gather(vec![worker(1, 5)], &open_book(), |_| false, NOW);
    let s = spec(1 << 40);
    let no = c.pick(&request(&s, &[])).unwrap_err();
    assert_eq!(no.untried, 0);
}

#[test]
fn later_jobs_in_a_pass_see_the_slots_earlier_ones_took() {
    let mut c = Candidates::gather(vec![worker(1, 5)], &open_book(), |_| false, NOW);
    let s = spec(0);
    assert_eq!(
        c.pick(&request(&s, &[])).unwrap(),
        vec![(identity(1).public_key(), 5)]
    );
    // Its one slot is now taken; a new pass would see the job in the book instead.
    let no = c.pick(&request(&s, &[])).unwrap_err();
    assert_eq!(no.untried, 1);
}

#[test]
fn a_job_reads_its_model_and_adapter() {
    assert_eq!(
        job_content(&spec(0)),
        vec![ContentId::of(b"model"), ContentId::of(b"adapter")]
    );
}
