//! A tiny seeded PRNG for checkpoint creation. Written here rather than taken from a crate so
//! that the same seed gives the same bytes forever, whatever a dependency's next release does.

/// SplitMix64 (Steele, Lea & Flood): one 64-bit state, passes BigCrush, trivially portable.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An approximately standard normal value (Irwin–Hall: the sum of twelve uniforms minus
    /// six, mean 0, variance 1, tails cut at ±6, which is harmless for initialisation).
    /// Chosen over Box–Muller because it needs no `ln`/`sin`/`cos`: integer sums and one
    /// exact scaling give the same bits on every platform and libm, so the same preset and
    /// seed give the same checkpoint (and content id) on every worker.
    pub(crate) fn standard_normal(&mut self) -> f64 {
        let mut sum: u64 = 0;
        for _ in 0..3 {
            let x = self.next_u64();
            sum += (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48);
        }
        // Twelve 16-bit uniforms, each centred at 32767.5: the sum is exact in f64.
        (sum as f64 - 12.0 * 32_767.5) / 65_536.0
    }
}

/// Seeds one independent stream per tensor, so a tensor's values depend only on the seed and
/// its name, not on how many tensors came before it.
pub(crate) fn stream_for(seed: u64, name: &str) -> SplitMix64 {
    // FNV-1a over the name, mixed with the seed through one SplitMix64 step.
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut mix = SplitMix64::new(seed ^ h);
    SplitMix64::new(mix.next_u64())
}
