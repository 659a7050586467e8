//! Which instruction set runs the kernels. All paths give the same bits; the choice only
//! affects speed, so forcing `Portable` is how tests check the SIMD paths against the spec.

use super::ComputeError;

/// An instruction-set path for the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust following the spec line by line; runs everywhere.
    Portable,
    /// x86-64 with AVX2 and FMA: the 16 lanes are two ymm registers.
    Avx2,
    /// x86-64 with AVX-512F: the 16 lanes are one zmm register.
    Avx512,
}

impl Isa {
    /// The fastest path this CPU supports.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU can run the path; running an unsupported one would be undefined
    /// behaviour, which is why every kernel checks this first.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// Every path this CPU can run, for tests and benchmarks that compare them.
    pub fn supported() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    pub(crate) fn checked(self) -> Result<Checked, ComputeError> {
        if self.is_supported() {
            Ok(Checked(self))
        } else {
            Err(ComputeError::UnsupportedIsa(self))
        }
    }
}

/// An [`Isa`] proven to be supported by this CPU: only [`Isa::checked`] builds one, so
/// holding a `Checked` is what makes calling its `#[target_feature]` functions sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked(Isa);

impl Checked {
    pub(crate) fn isa(self) -> Isa {
        self.0
    }
}
