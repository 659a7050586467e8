//! Verification benchmark: what checking answers costs and what it catches.
//!
//! - Overhead = compute spent ÷ useful compute: every execution (worker replicas and the
//!   coordinator's referee re-runs) divided by the jobs delivered. Jobs here are
//!   deterministic and equal in size, so executions are the unit of compute; the count is
//!   exact, not sampled.
//! - Catch rate: the share of cheating executions that were slashed, against theory
//!   (1 for `replicate:K` whenever an honest replica is present; P for `sample:P`).
//! - Wall time per job of the whole simulation: the coordinator's bookkeeping (matching,
//!   judging, settling, signing the receipt, checking the ledger's invariant after every
//!   operation) plus the simulated workers' own signing. An upper bound on the part of
//!   the overhead that is not re-execution.
//!
//! It drives the coordinator's real job book, verifier, fee rules and ledger with
//! simulated workers (see `olc_testkit::sim`). Run: `cargo bench -p olc-coordinator --bench
//! verification`.

use std::time::Instant;

use olc_coordinator::rules::Policy;
use olc_protocol::{JobState, VerificationPolicy};
use olc_testkit::sim::{Behaviour, Sim};

const JOBS: usize = 2000;

struct Outcome {
    overhead: f64,
    cheating: u64,
    caught: u64,
    done: usize,
    us_per_job: f64,
}

fn run(policy: VerificationPolicy, cheaters: usize, workers: usize) -> Outcome {
    let behaviours: Vec<Behaviour> = (0..workers)
        .map(|i| {
            if i < cheaters {
                Behaviour::Wrong
            } else {
                Behaviour::Honest
            }
        })
        .collect();
    // Cheaters stay matched (no jail, a small slash) so the rate is measured on every job.
    let rules = Policy {
        jail_ms: 0,
        slash_bps: 10,
        ..Policy::default()
    };
    let mut sim = Sim::new(&behaviours, rules, 1 << 38);
    let mut cheating = 0;
    let mut caught = 0;
    let mut done = 0;
    let started = Instant::now();
    for _ in 0..JOBS {
        let id = sim.submit(policy);
        let job = sim.run(id);
        if job.state == JobState::Done {
            done += 1;
        }
        for r in &job.replicas {
            if sim.who(&r.worker).1 != Behaviour::Honest {
                cheating += 1;
                if job.slashes.iter().any(|s| s.worker == r.worker) {
                    caught += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    Outcome {
        overhead: (sim.executions + sim.referee_runs) as f64 / done.max(1) as f64,
        cheating,
        caught,
        done,
        us_per_job: elapsed.as_secs_f64() * 1e6 / JOBS as f64,
    }
}

fn main() {
    println!("verification: {JOBS} jobs per case, 10 workers");
    println!(
        "{:<14} {:>9} {:>9} {:>10} {:>16} {:>8} {:>12}",
        "policy", "cheaters", "overhead", "delivered", "caught/cheating", "rate", "µs/job"
    );
    let cases = [
        (VerificationPolicy::Single, 0),
        (VerificationPolicy::Replicate { replicas: 2 }, 0),
        (VerificationPolicy::Replicate { replicas: 2 }, 1),
        (
            VerificationPolicy::Sample {
                probability_ppm: 100_000,
            },
            0,
        ),
        (
            VerificationPolicy::Sample {
                probability_ppm: 100_000,
            },
            1,
        ),
    ];
    for (policy, cheaters) in cases {
        let o = run(policy, cheaters, 10);
        let rate = if o.cheating == 0 {
            "-".to_string()
        } else {
            format!("{:.3}", o.caught as f64 / o.cheating as f64)
        };
        println!(
            "{:<14} {:>9} {:>9.3} {:>10} {:>16} {:>8} {:>12.1}",
            policy.to_string(),
            cheaters,
            o.overhead,
            o.done,
            format!("{}/{}", o.caught, o.cheating),
            rate,
            o.us_per_job
        );
    }
    println!(
        "theory: replicate:2 costs 2 executions per job plus a referee run per dispute, and \
         catches every cheater paired with an honest worker; sample:P costs 1 + P and \
         catches a cheater with probability P (binomial sd sqrt(P(1-P)/n))."
    );
}
