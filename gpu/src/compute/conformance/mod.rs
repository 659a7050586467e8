//! The backend conformance suite: every op of a [`Backend`] on seeded inputs, compared
//! bit for bit with another backend (the portable, single-threaded CPU one by default).
//!
//! A new backend (CUDA) is correct when `conformance(&backend)` returns: the contract says
//! redundant workers must produce the same bytes, and this is the op-level form of that
//! promise. Inputs cover lengths around every SIMD boundary (n < 16, n not a multiple of
//! 16, k = 1), signed zeros, subnormals and values whose products underflow, huge
//! magnitudes, and infinities and NaN where the spec defines the result. Outputs are
//! compared as f32 bit patterns; where an input NaN or an `inf - inf` makes a NaN, only
//! NaN-ness is compared, because the spec leaves that NaN's payload open (only exp pins its
//! NaN, and exp is compared on bits). Refusals must agree too: a shape one backend rejects,
//! the other must reject.
//!
//! Compiled for this crate's tests and, with the `conformance` feature, for other crates'
//! (a CUDA backend's tests call it against [`CpuBackend`](super::CpuBackend)). The suite
//! calls ops outside [`Backend::run`] as well as inside, so a backend must work both ways.

mod forward;
mod inputs;
mod quant;
mod training;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::{Backend, ComputeError, CpuBackend, Isa};

/// How many cases of each op agreed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub cases: BTreeMap<&'static str, usize>,
}

impl Report {
    pub fn total(&self) -> usize {
        self.cases.values().sum()
    }
}

/// Checks `candidate` against the reference CPU backend (portable path, one thread);
/// panics, naming the op, the case and the first differing element, at the first mismatch.
pub fn conformance<B: Backend>(candidate: &B) -> Report {
    match CpuBackend::new(Isa::Portable, 1) {
        Ok(reference) => check(candidate, &reference),
        Err(e) => panic!("the portable CPU backend must always build: {e}"),
    }
}

/// Checks `candidate` against `reference` op by op (see the module docs).
pub fn check<C: Backend, R: Backend>(candidate: &C, reference: &R) -> Report {
    let mut cmp = Compare::default();
    forward::all(candidate, reference, &mut cmp);
    quant::all(candidate, reference, &mut cmp);
    training::all(candidate, reference, &mut cmp);
    run_inside(candidate, reference, &mut cmp);
    cmp.report
}

/// A few ops called inside [`Backend::run`], which must return the closure's value and
/// change nothing about the results.
fn run_inside<C: Backend, R: Backend>(c: &C, r: &R, cmp: &mut Compare) {
    let mut rng = inputs::Rng::new(0x5eed_0009);
    let (x, w) = (rng.vec(37 * 3), rng.matrix(19, 37));
    let cand = c.run(|| forward::matmul_once(c, &x, 3, &w, None));
    let refr = r.run(|| forward::matmul_once(r, &x, 3, &w, None));
    cmp.same(
        "run",
        || "matmul [3, 37] x [19, 37] inside run".into(),
        Nan::Payload,
        &flatten(cand),
        &flatten(refr),
    );
}

fn flatten(
    r: Result<Result<Vec<f32>, ComputeError>, ComputeError>,
) -> Result<Vec<f32>, ComputeError> {
    r.and_then(|inner| inner)
}

/// Whether a NaN output must match bit for bit or only be NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nan {
    /// The op's rule pins its NaN (exp's canonical quiet NaN).
    Bits,
    /// The NaN's payload is not part of the contract (NaN section of the spec).
    Payload,
}

#[derive(Debug, Default)]
pub(super) struct Compare {
    report: Report,
}

impl Compare {
    /// Panics unless both results are refusals, or both are outputs with the same bits.
    pub(super) fn same(
        &mut self,
        op: &'static str,
        case: impl Fn() -> String,
        nan: Nan,
        candidate: &Result<Vec<f32>, ComputeError>,
        reference: &Result<Vec<f32>, ComputeError>,
    ) {
        match (candidate, reference) {
            (Ok(c), Ok(r)) => {
                if c.len() != r.len() {
                    panic!(
                        "{op} ({}): candidate gave {} values, reference {}",
                        case(),
                        c.len(),
                        r.len()
                    );
                }
                if let Some(i) = (0..c.len()).find(|&i| !same_f32(c[i], r[i], nan)) {
                    panic!(
                        "{op} ({}): element {i} is {:e} (bits {:#010x}), reference {:e} (bits {:#010x})",
                        case(),
                        c[i],
                        c[i].to_bits(),
                        r[i],
                        r[i].to_bits()
                    );
                }
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!(
                "{op} ({}): reference refused ({e}), candidate did not",
                case()
            ),
            (Err(e), Ok(_)) => panic!(
                "{op} ({}): candidate refused ({e}), reference did not",
                case()
            ),
        }
        *self.report.cases.entry(op).or_default() += 1;
    }
}

fn same_f32(a: f32, b: f32, nan: Nan) -> bool {
    a.to_bits() == b.to_bits() || (nan == Nan::Payload && a.is_nan() && b.is_nan())
}
