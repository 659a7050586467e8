//! A whole coordinator's job book with simulated workers of every behaviour, shared by
//! the coordinator's adversary tests (`coordinator/tests/adversaries.rs`) and its
//! verification benchmark (`coordinator/benches/verification.rs`), so both measure the
//! same thing. Workers answer with real signed messages; the referee is played by the
//! simulation, which knows each job's right answer exactly as the coordinator's
//! deterministic engine would. Time is a simulated clock ([`Sim::now`], starting at
//! [`T0`]) that [`Sim::run`] advances past deadlines when nothing else moves, so timeouts
//! are tested without waiting. After every operation the ledger's invariant is checked.

use std::collections::BTreeMap;

use olc_coordinator::rules::Policy;
use olc_coordinator::{
    Action, JobBook, JobRecord, JobsConfig, NoPick, PickRequest, Picked, ledger::LedgerConfig,
};
use olc_protocol::*;

/// The simulated clock's start (ms since the epoch): a fixed time, so runs repeat.
pub const T0: u64 = 1_800_000_000_000;
/// What each honest worker deposits and stakes (cheaters stake what [`Sim::new`] is given).
pub const HONEST_STAKE: u64 = 1_000;

/// How one worker behaves when it gets an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Computes, commits to and reveals the right output.
    Honest,
    /// Computes, then commits to (and reveals) its own wrong output.
    Wrong,
    /// Skips the work: commits to a cheap constant output with no metered work.
    Lazy,
    /// Commits before it knows anything, then tries to reveal the honest output.
    Copycat,
    /// Commits to one output, then to another for the same assignment.
    Equivocate,
    /// Accepts the assignment and never commits.
    Silent,
}

/// The job book under test, the parties around it, and what happened so far. Fields are
/// public so tests can look at (and tamper with) any of it.
#[derive(Debug)]
pub struct Sim {
    /// The coordinator's real job book (verifier, fee rules and ledger inside).
    pub book: JobBook,
    /// The coordinator's key: it signs assignments and receipts.
    pub coordinator: Identity,
    /// The one submitter, funded for every job.
    pub submitter: Identity,
    /// Each worker's key and behaviour, in the order given to [`Sim::new`].
    pub workers: Vec<(Identity, Behaviour)>,
    /// The simulated clock (ms).
    pub now: u64,
    /// The last nonce used, shared by every signed request.
    pub nonce: u64,
    /// Each job's right answer, as the referee computes it.
    pub truth: BTreeMap<ContentId, Vec<u32>>,
    /// Signed commitments each worker sent, for replays.
    pub sent: Vec<Signed<Commitment>>,
    /// How often the referee re-ran a job.
    pub referee_runs: u64,
    /// How often a worker ran a job (silent workers do not).
    pub executions: u64,
    /// Rotates which eligible workers the matcher offers first.
    pub turn: usize,
}

/// `body` signed by `who`.
pub fn signed<T: Message>(who: &Identity, body: &T) -> Signed<T> {
    Signed::sign(who, body).unwrap()
}

impl Sim {
    /// A book with one worker per behaviour, each funded and staked: honest ones
    /// [`HONEST_STAKE`], the others `cheater_stake`.
    pub fn new(behaviours: &[Behaviour], policy: Policy, cheater_stake: u64) -> Self {
        let coordinator = Identity::generate().unwrap();
        let mut sim = Self {
            book: JobBook::new(
                JobsConfig {
                    assignment_timeout_ms: 10_000,
                    ..JobsConfig::default()
                },
                policy,
                LedgerConfig::default(),
            ),
            coordinator,
            submitter: Identity::generate().unwrap(),
            workers: behaviours
                .iter()
                .map(|b| (Identity::generate().unwrap(), *b))
                .collect(),
            now: T0,
            nonce: 0,
            truth: BTreeMap::new(),
            sent: Vec::new(),
            referee_runs: 0,
            executions: 0,
            turn: 0,
        };
        let submitter = sim.submitter.clone();
        sim.account(
            &submitter,
            AccountAction::Deposit {
                amount: Amount(1_000_000_000_000),
            },
        );
        for (id, b) in sim.workers.clone() {
            let stake = if b == Behaviour::Honest {
                HONEST_STAKE
            } else {
                cheater_stake
            };
            sim.account(
                &id,
                AccountAction::Deposit {
                    amount: Amount(stake),
                },
            );
            sim.account(
                &id,
                AccountAction::Stake {
                    amount: Amount(stake),
                },
            );
        }
        sim
    }

    /// The invariant, after every operation.
    pub fn check(&self) {
        self.book.economy().ledger().check_invariant().unwrap();
    }

    /// Sends an account request signed by `who`, with the next nonce.
    pub fn account(&mut self, who: &Identity, action: AccountAction) {
        self.nonce += 1;
        let r = AccountRequest {
            action,
            nonce: self.nonce,
        };
        self.book
            .account_request(&signed(who, &r), true, self.now)
            .unwrap();
        self.check();
    }

    /// Worker `i`'s public key.
    pub fn key(&self, i: usize) -> PublicKey {
        self.workers[i].0.public_key()
    }

    /// The worker with `key`, and its behaviour.
    pub fn who(&self, key: &PublicKey) -> (Identity, Behaviour) {
        self.workers
            .iter()
            .find(|(id, _)| id.public_key() == *key)
            .cloned()
            .unwrap()
    }

    /// Submits a small inference job with `verification`, and records its right answer.
    pub fn submit(&mut self, verification: VerificationPolicy) -> ContentId {
        self.nonce += 1;
        let spec = JobSpec {
            kind: JobKind::Inference(InferenceJob {
                model: ContentId::of(b"model"),
                adapter: None,
                prompt: Prompt::Tokens(vec![1, 2, 3]),
                sampling: Sampling::Greedy,
                max_tokens: 4,
                seed: self.nonce,
            }),
            requirements: Requirements::default(),
            max_fee: Amount(100_000),
            verification,
            deadline_ms: self.now + 600_000,
            nonce: self.nonce,
        };
        let id = self
            .book
            .submit(signed(&self.submitter, &spec), Vec::new(), self.now)
            .unwrap();
        self.check();
        let seed = self.nonce as u32;
        self.truth.insert(id, vec![seed % 97 + 3, seed % 89 + 5, 7]);
        id
    }

    /// One tick of the book, the matcher offering the eligible workers in a rotating
    /// order.
    pub fn tick(&mut self) -> Vec<Action> {
        let now = self.now;
        let eligible: Vec<PublicKey> = (0..self.workers.len())
            .map(|i| self.key(i))
            .filter(|k| self.book.ineligible(k, now).is_none())
            .collect();
        let turn = self.turn;
        self.turn += 1;
        let mut pick = |req: &PickRequest<'_>| -> Picked {
            let n = eligible.len().max(1);
            let free: Vec<(PublicKey, u64)> = (0..eligible.len())
                .map(|i| eligible[(i + turn) % n])
                .filter(|w| !req.exclude.contains(w))
                .map(|w| (w, 1_000))
                .collect();
            if free.len() < req.replicas {
                Err(NoPick {
                    reason: format!("only {} workers fit", free.len()),
                    untried: free.len(),
                })
            } else {
                Ok(free.into_iter().take(req.replicas).collect())
            }
        };
        let actions = self.book.tick(&self.coordinator, now, &mut pick);
        self.check();
        actions
    }

    /// What a worker commits to and reveals for `job`.
    pub fn output_of(&self, job: &ContentId, worker: &Identity, b: Behaviour) -> Vec<u32> {
        let right = self.truth[job].clone();
        match b {
            Behaviour::Wrong => {
                // Each liar's own wrong answer: liars do not collude.
                let mut t = right;
                t.push(worker.public_key().as_bytes()[0] as u32);
                t
            }
            Behaviour::Lazy => vec![0],
            _ => right,
        }
    }

    /// `worker`'s signed execution receipt for assignment `aid`.
    pub fn receipt(
        &self,
        worker: &Identity,
        a: &Assignment,
        aid: ContentId,
        output: ContentId,
        tokens: u64,
    ) -> Signed<ExecutionReceipt> {
        signed(
            worker,
            &ExecutionReceipt {
                job_id: a.job_id,
                assignment: aid,
                output,
                model: ContentId::of(b"model"),
                adapter: None,
                metrics: Metrics {
                    tokens,
                    wall_ms: 1,
                    peak_memory_bytes: 0,
                },
                provenance: None,
                finished_ms: self.now,
            },
        )
    }

    /// A worker's answer to an assignment, by its behaviour.
    pub fn work(&mut self, worker: PublicKey, assignment: Signed<Assignment>) {
        let (id, b) = self.who(&worker);
        let a = assignment.verify().unwrap();
        let aid = assignment.id();
        self.book
            .on_assign_answer(&a.job_id, &aid, Ok(()), self.now);
        self.check();
        if b == Behaviour::Silent {
            return;
        }
        self.executions += 1;
        let tokens = self.output_of(&a.job_id, &id, b);
        let committed = match b {
            Behaviour::Copycat => ContentId::of(b"a guess made before any output is known"),
            _ => inference_commitment(&tokens),
        };
        let c = signed(
            &id,
            &Commitment {
                job_id: a.job_id,
                assignment: aid,
                output: committed,
            },
        );
        self.sent.push(c.clone());
        self.book.on_commit(c, self.now).unwrap();
        self.check();
        if b == Behaviour::Equivocate {
            let other = signed(
                &id,
                &Commitment {
                    job_id: a.job_id,
                    assignment: aid,
                    output: ContentId::of(b"second thoughts"),
                },
            );
            assert!(self.book.on_commit(other, self.now).is_err());
            self.check();
        }
    }

    /// A worker's reveal when the book asks for it, by its behaviour; the book's next
    /// actions.
    pub fn reveal(&mut self, worker: PublicKey, job: ContentId, aid: ContentId) -> Vec<Action> {
        let (id, b) = self.who(&worker);
        let record = self.book.get(&job).unwrap().clone();
        let replica = record
            .replicas
            .iter()
            .find(|r| r.assignment_id == aid)
            .unwrap();
        let a = replica.assignment.verify().unwrap();
        let awaited = matches!(
            replica.state,
            olc_coordinator::jobs::ReplicaState::Committed(_)
        );
        let tokens = self.output_of(&job, &id, b);
        let metered = if b == Behaviour::Lazy { 0 } else { 40 };
        let reveal = match b {
            // The copycat reveals the honest output, which does not match what it
            // committed to.
            Behaviour::Copycat => {
                let right = self.truth[&job].clone();
                let guess = ContentId::of(b"a guess made before any output is known");
                Reveal {
                    receipt: self.receipt(&id, &a, aid, guess, metered),
                    output: JobOutput::Inference {
                        tokens: right,
                        text: String::new(),
                    },
                }
            }
            _ => Reveal {
                receipt: self.receipt(&id, &a, aid, inference_commitment(&tokens), metered),
                output: JobOutput::Inference {
                    tokens,
                    text: String::new(),
                },
            },
        };
        let result = self
            .book
            .on_reveal(&self.coordinator, &job, &aid, reveal, self.now);
        self.check();
        if awaited {
            assert_eq!(
                result.is_err(),
                b == Behaviour::Copycat,
                "{b:?}: {result:?}"
            );
        }
        result.unwrap_or_default()
    }

    /// The referee's re-run of `job`: always the right answer.
    pub fn referee(&mut self, job: ContentId) -> Vec<Action> {
        self.referee_runs += 1;
        let right = inference_commitment(&self.truth[&job]);
        let actions = self
            .book
            .on_referee(&self.coordinator, &job, Ok(right), self.now);
        self.check();
        actions
    }

    /// Runs the book until `job` ends, advancing the clock past deadlines when nothing
    /// else moves.
    pub fn run(&mut self, job: ContentId) -> JobRecord {
        for _ in 0..200 {
            if self.book.get(&job).unwrap().state.is_final() {
                break;
            }
            let mut actions = self.tick();
            let mut moved = !actions.is_empty();
            while let Some(action) = actions.pop() {
                match action {
                    Action::Assign { worker, assignment } => self.work(worker, assignment),
                    Action::Reveal {
                        worker,
                        job_id,
                        assignment_id,
                    } => actions.extend(self.reveal(worker, job_id, assignment_id)),
                    Action::Referee { job_id } => actions.extend(self.referee(job_id)),
                    // Nobody cancels in the simulation.
                    Action::Cut { .. } => {}
                }
                moved = true;
            }
            if !moved {
                self.now += 11_000; // past an assignment's timeout
            }
        }
        self.tick();
        let record = self.book.get(&job).unwrap().clone();
        assert!(record.state.is_final(), "{record:#?}");
        record
    }

    /// Who was slashed in `job`, and why.
    pub fn slashed(&self, job: &JobRecord) -> Vec<(PublicKey, SlashReason)> {
        job.slashes.iter().map(|s| (s.worker, s.reason)).collect()
    }
}
