//! Seeded inputs that reach the corners of f32: signed zeros, subnormals, tiny and huge
//! magnitudes, and (where an op's rule defines the result) infinities and NaN.

use crate::compute::HostWeights;

/// SplitMix64: tiny, seeded, and the same on every platform, so a failure reproduces.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [-1, 1).
    pub(super) fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Mostly ordinary values, with exact and negative zeros, subnormals, values whose
    /// products are subnormal, and large magnitudes mixed in, so that rounding, signed
    /// zeros and gradual underflow are all exercised.
    pub(super) fn value(&mut self) -> f32 {
        match self.next_u64() % 32 {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits((self.next_u64() % 0x7f_ffff + 1) as u32), // subnormal
            3 => -f32::from_bits((self.next_u64() % 0x7f_ffff + 1) as u32),
            4 => self.unit() * 1e-20, // products of two of these are subnormal
            5 => self.unit() * 1e4,
            6 => self.unit() * 1e-3,
            _ => self.unit() * 4.0,
        }
    }

    /// [`Rng::value`] plus, now and then, an infinity or a NaN.
    pub(super) fn special(&mut self) -> f32 {
        match self.next_u64() % 24 {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => f32::NAN,
            3 => f32::MAX,
            4 => -f32::MAX,
            _ => self.value(),
        }
    }

    pub(super) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }

    pub(super) fn specials(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.special()).collect()
    }

    /// Plain values in `[-scale, scale)`, for ops whose inputs are activations of a sane
    /// model (norm weights, attention operands).
    pub(super) fn plain(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }

    pub(super) fn matrix(&mut self, rows: usize, cols: usize) -> HostWeights {
        HostWeights::f32(rows, cols, self.vec(rows * cols))
    }
}

/// Lengths around every boundary a SIMD path has: empty, below one 8- or 16-lane vector,
/// exactly one, one past, several with tails.
pub(super) const LENGTHS: &[usize] = &[
    0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 63, 64, 65, 100, 129, 257,
];
