//! Choosing the next token. Sampling is part of the determinism contract: two honest
//! workers given the same seed must pick the same token, so every step below has one
//! specified order, and randomness comes from a ChaCha20 stream keyed by the job's seed
//! and selected by the token's position (DESIGN.md: "Sampling uses a seeded ChaCha RNG
//! derived from (job seed, position); ties break by token id").
//!
//! The procedure for one step, given logits `x` and the absolute position `pos` of the
//! token being chosen:
//! 0. If `temperature < GREEDY_TEMPERATURE_THRESHOLD`, the token is [`argmax`]`(x)`, exactly
//!    as with [`Sampling::Greedy`], and nothing below happens.
//! 1. `s_i = x_i / temperature` (IEEE division).
//! 2. Order tokens by `s` descending, ties by token id ascending (NaN ranks last).
//!    If `s_0` is `+inf` (a logit so large that dividing it overflowed, or an infinite
//!    logit), the token is [`argmax`]`(x)`, and nothing below happens.
//! 3. Keep the first `top_k` (0 keeps all).
//! 4. `e_i = exp(s_i - s_0)` with the canonical exp; `total` = canonical 16-lane sum of `e`
//!    over the kept tokens in that order; `p_i = e_i / total`.
//! 5. Top-p: keep the shortest prefix whose running sum of `p` (plain f32 adds, in order)
//!    reaches `top_p`; `mass` is that running sum at its end (1.0 keeps all).
//! 6. `u` = the first u32 of ChaCha20 with key = seed as 8 little-endian bytes followed by
//!    24 zero bytes, stream = `pos`; `u = (word >> 8) · 2⁻²⁴` (exact, in [0, 1)).
//! 7. Pick the first kept token whose running sum of `p` exceeds `u · mass`; the last kept
//!    token if rounding leaves none.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::compute::{self, Isa};

/// Sampling at a temperature below this is greedy: the token is exactly [`argmax`] of the
/// logits, as with [`Sampling::Greedy`].
///
/// Why 1e-3 (as the nearest f32): dividing by the temperature scales the logits by `1/T`.
/// From `T = 1e-3` up that is at most 1000×, so `x / T` stays finite for every logit
/// `|x| < f32::MAX / 1000 ≈ 3.4e35`, where real models' logits are in the tens (a larger
/// one that still overflows is handled by the guard of step 2 in the module docs). Below
/// it there is no such margin (a subnormal `T` overflows `1 / T` itself), so scaled logits
/// turn infinite and the softmax NaN. Nothing worth keeping is lost: at `T < 1e-3` a token
/// whose logit trails the top one by more than 0.017 gets a probability under 2⁻²⁴, the
/// resolution of the uniform draw, so only near-exact ties could still be drawn, and
/// greedy (ties to the lowest token id) is the limit the user is asking for.
pub const GREEDY_TEMPERATURE_THRESHOLD: f32 = 1e-3;

/// How to choose tokens. Validated by [`Sampling::check`] before use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The highest logit; ties to the lowest token id.
    Greedy,
    Sample {
        /// Below [`GREEDY_TEMPERATURE_THRESHOLD`] this is greedy.
        temperature: f32,
        top_k: u32,
        top_p: f32,
        seed: u64,
    },
}

impl Sampling {
    /// Refuses settings that have no meaning (so no NaN ever reaches the arithmetic).
    pub fn check(&self) -> Result<(), String> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = *self
        {
            if !(temperature.is_finite() && temperature > 0.0 && temperature <= 100.0) {
                return Err(format!(
                    "temperature must be in (0, 100], got {temperature}"
                ));
            }
            if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
                return Err(format!("top-p must be in (0, 1], got {top_p}"));
            }
        }
        Ok(())
    }

    /// The token chosen from `logits` for absolute position `pos`.
    pub fn choose(&self, logits: &[f32], pos: u64) -> u32 {
        match *self {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => {
                if temperature < GREEDY_TEMPERATURE_THRESHOLD {
                    argmax(logits)
                } else {
                    sample(logits, temperature, top_k, top_p, uniform(seed, pos))
                }
            }
        }
    }
}

/// The highest logit; ties go to the lowest token id, so the choice is one bit pattern.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn uniform(seed: u64, pos: u64) -> f32 {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(key);
    rng.set_stream(pos);
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

fn sample(logits: &[f32], temperature: f32, top_k: u32, top_p: f32, u: f32) -> u32 {
    if logits.is_empty() {
        return 0;
    }
    let scaled: Vec<f32> = logits.iter().map(|x| x / temperature).collect();
    let mut order: Vec<u32> = (0..scaled.len() as u32).collect();
    let key = |i: &u32| {
        let v = scaled[*i as usize];
        if v.is_nan() { f32::NEG_INFINITY } else { v }
    };
    order.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    if top_k > 0 {
        order.truncate(top_k as usize);
    }
    let top = key(&order[0]);
    // `inf - inf` would make every weight NaN below and pick a token by accident of
    // rounding; the limit of a softmax dominated by an infinite logit is the argmax.
    if top == f32::INFINITY {
        return argmax(logits);
    }
    let e: Vec<f32> = order.iter().map(|i| compute::exp(key(i) - top)).collect();
    // Every ISA gives the same bits for `sum`; the portable path needs no CPU check.
    let total = compute::sum(Isa::Portable, &e).unwrap_or(f32::NAN);
    let p: Vec<f32> = e.iter().map(|v| v / total).collect();
    let mut kept = p.len();
    let mut mass = 0.0f32;
    for (n, pi) in p.iter().enumerate() {
        mass += pi;
        if top_p < 1.0 && mass >= top_p {
            kept = n + 1;
            break;
        }
    }
    let target = u * mass;
    let mut running = 0.0f32;
    for (i, pi) in p[..kept].iter().enumerate() {
        running += pi;
        if running > target {
            return order[i];
        }
    }
    order[kept - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> Sampling {
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    #[test]
    fn same_seed_and_position_same_token_and_draws_follow_the_distribution() {
        // Three tokens with probabilities about 0.665, 0.245, 0.09.
        let logits = [2.0f32, 1.0, 0.0];
        let s = sampler(1.0, 0, 1.0, 42);
        let mut counts = [0u32; 3];
        for pos in 0..20_000 {
            let t = s.choose(&logits, pos);
            assert_eq!(t, s.choose(&logits, pos), "not deterministic at {pos}");
            counts[t as usize] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 20_000.0;
        assert!((share(0) - 0.665).abs() < 0.02, "{counts:?}");
        assert!((share(1) - 0.245).abs() < 0.02, "{counts:?}");
        assert!((share(2) - 0.090).abs() < 0.02, "{counts:?}");
        // Another seed gives another sequence.
        let other = sampler(1.0, 0, 1.0, 43);
        assert!((0..64).any(|p| other.choose(&logits, p) != s.choose(&logits, p)));
    }

    #[test]
    fn top_k_top_p_and_temperature_restrict_the_choice() {
        let logits = [0.0f32, 5.0, 4.9, -3.0, 4.8];
        for pos in 0..500 {
            assert_eq!(
                sampler(1.0, 1, 1.0, 1).choose(&logits, pos),
                1,
                "top-k 1 is greedy"
            );
            let t = sampler(1.0, 2, 1.0, 1).choose(&logits, pos);
            assert!(t == 1 || t == 2, "top-k 2 chose {t}");
            let t = sampler(1.0, 0, 0.5, 1).choose(&logits, pos);
            assert!(t == 1 || t == 2, "top-p 0.5 chose {t}");
            assert_eq!(
                sampler(0.01, 0, 1.0, 1).choose(&logits, pos),
                1,
                "cold is greedy"
            );
        }
    }

    #[test]
    fn ties_break_by_token_id_and_bad_settings_are_refused() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let tied = [3.0f32, 3.0];
        assert_eq!(sampler(1.0, 1, 1.0, 9).choose(&tied, 0), 0);
        assert!(sampler(0.0, 0, 1.0, 0).check().is_err());
        assert!(sampler(f32::NAN, 0, 1.0, 0).check().is_err());
        assert!(sampler(1.0, 0, 0.0, 0).check().is_err());
        assert!(sampler(1.0, 0, 1.5, 0).check().is_err());
        assert!(sampler(0.7, 40, 0.95, 0).check().is_ok());
        // NaN logits rank last and never poison the choice.
        let with_nan = [f32::NAN, 1.0, 0.5];
        for pos in 0..100 {
            assert_ne!(sampler(1.0, 0, 1.0, 3).choose(&with_nan, pos), 0);
        }
    }

    #[test]
    fn tiny_temperatures_are_exactly_greedy() {
        // Logits where a broken softmax shows: large enough that `x / T` overflows for a
        // tiny `T`, near-ties (adjacent floats) that greedy resolves by value, an exact tie
        // that it resolves to the lower id, and negative values.
        let big = 3.0e30f32;
        let rows: [&[f32]; 5] = [
            &[0.0, 5.0, 4.9, -3.0, 4.8],
            &[1.0, 1.0f32.next_up(), 1.0, -1.0e30],
            &[-2.0, 7.5, 7.5, 7.4],
            &[big, -big, big.next_up(), 1.0],
            &[-5.0, -4.0, -4.0f32.next_down(), -1.0e-38],
        ];
        let t = GREEDY_TEMPERATURE_THRESHOLD;
        for temperature in [t / 2.0, t.next_down(), 1e-39, f32::MIN_POSITIVE, 1e-45] {
            assert!(
                sampler(temperature, 0, 1.0, 0).check().is_ok(),
                "{temperature}"
            );
            for logits in rows {
                let greedy = Sampling::Greedy.choose(logits, 0);
                for pos in 0..200 {
                    for (top_k, top_p) in [(0, 1.0), (3, 0.9), (1, 0.5)] {
                        let s = sampler(temperature, top_k, top_p, pos ^ 0x5eed);
                        assert_eq!(
                            s.choose(logits, pos),
                            greedy,
                            "T {temperature:e}, {logits:?}, pos {pos}"
                        );
                    }
                }
            }
        }
        // At the threshold itself sampling is real: near-tied logits share the draws.
        let tied = [1.0f32, 1.0 + 1e-4, 0.0];
        let s = sampler(t, 0, 1.0, 3);
        let picks: Vec<u32> = (0..200).map(|pos| s.choose(&tied, pos)).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn an_overflowing_scaled_logit_is_greedy_too() {
        // 3e38 / 0.5 overflows; without the guard `inf - inf` makes every weight NaN.
        let logits = [1.0f32, 3.0e38, 2.0e38, f32::MAX];
        for pos in 0..100 {
            assert_eq!(sampler(0.5, 0, 1.0, 1).choose(&logits, pos), 3);
        }
        let infinite = [0.0f32, f32::INFINITY, 2.0];
        assert_eq!(sampler(1.0, 0, 1.0, 1).choose(&infinite, 0), 1);
    }

    #[test]
    fn the_stream_is_pinned() {
        // Guards the specified derivation (key = seed LE, stream = position): a change to
        // it, or to rand_chacha's output, would change every sampled answer in the network.
        let draws: Vec<f32> = (0..4).map(|p| uniform(7, p)).collect();
        let again: Vec<f32> = (0..4).map(|p| uniform(7, p)).collect();
        assert_eq!(draws, again);
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert_eq!(
            draws.iter().map(|u| u.to_bits()).collect::<Vec<_>>(),
            PINNED.to_vec()
        );
    }

    // Recorded from this implementation (rand_chacha 0.10): a regression pin, not an
    // independent reference.
    const PINNED: [u32; 4] = [1060758430, 1064786818, 1033357328, 1042047680];
}
