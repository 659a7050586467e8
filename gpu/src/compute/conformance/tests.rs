//! The suite run today: every CPU path and thread count against the portable one, and the
//! suite itself against backends that are wrong in exactly one op.

use super::*;
use crate::compute::{
    AttentionGrads, AttentionShape, AttentionTape, CpuWeights, HostWeights, KvView, LoraProduct,
    QueryRow, RopeTable, WeightShape,
};

#[test]
fn every_cpu_path_and_thread_count_conforms() {
    let mut first = None;
    for isa in Isa::supported() {
        for threads in [1, 2, 3, 4] {
            let backend = CpuBackend::new(isa, threads).unwrap();
            let report = conformance(&backend);
            eprintln!("{}: {} cases agree", backend.name(), report.total());
            match &first {
                None => first = Some(report),
                // Every run makes the same cases: none was skipped on some path.
                Some(f) => assert_eq!(&report, f, "{isa:?} x{threads}"),
            }
        }
    }
    let report = first.unwrap();
    for op in [
        "dot",
        "sum",
        "exp",
        "softmax",
        "rmsnorm",
        "silu",
        "swiglu",
        "matmul",
        "matmul_slices",
        "load_weights",
        "embed",
        "transposed",
        "lora",
        "rope",
        "attention",
        "run",
        "outer_fma",
        "rmsnorm_backward",
        "swiglu_backward",
        "rope_backward",
        "attention_backward",
        "quantized matmul",
        "quantized embed",
        "quantized transposed",
        "quantized load_weights",
    ] {
        assert!(
            report.cases.get(op).copied().unwrap_or(0) > 0,
            "no case of {op}"
        );
    }
}

#[test]
fn the_fastest_path_is_also_a_reference() {
    // `check` works with any pair: the suite does not assume which side is portable.
    let fast = CpuBackend::new(Isa::detect(), 4).unwrap();
    let slow = CpuBackend::new(Isa::Portable, 1).unwrap();
    assert!(check(&slow, &fast).total() > 0);
}

/// The op a [`Faulty`] backend gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    LoadWeights,
    Transposed,
    Embed,
    Dot,
    Sum,
    Matmul,
    MatmulSlices,
    Lora,
    Exp,
    Softmax,
    Rmsnorm,
    Silu,
    Swiglu,
    Rope,
    Attention,
    OuterFma,
    RmsnormBackward,
    SwigluBackward,
    RopeBackward,
    AttentionBackward,
}

const FAULTS: [Fault; 20] = [
    Fault::LoadWeights,
    Fault::Transposed,
    Fault::Embed,
    Fault::Dot,
    Fault::Sum,
    Fault::Matmul,
    Fault::MatmulSlices,
    Fault::Lora,
    Fault::Exp,
    Fault::Softmax,
    Fault::Rmsnorm,
    Fault::Silu,
    Fault::Swiglu,
    Fault::Rope,
    Fault::Attention,
    Fault::OuterFma,
    Fault::RmsnormBackward,
    Fault::SwigluBackward,
    Fault::RopeBackward,
    Fault::AttentionBackward,
];

/// The CPU backend with one op off by one ulp in one element: the smallest error a
/// backend can make, and one the suite must catch.
#[derive(Debug)]
struct Faulty {
    inner: CpuBackend,
    fault: Fault,
}

/// Flips the last bit of the last finite, non-zero element.
fn nudge(v: &mut [f32]) {
    if let Some(x) = v.iter_mut().rev().find(|x| x.is_finite() && **x != 0.0) {
        *x = f32::from_bits(x.to_bits() ^ 1);
    }
}

fn nudged(x: f32) -> f32 {
    let mut v = [x];
    nudge(&mut v);
    v[0]
}

impl Faulty {
    fn on(&self, f: Fault) -> bool {
        self.fault == f
    }
}

impl Backend for Faulty {
    type Weights = CpuWeights;

    fn name(&self) -> String {
        format!("faulty {:?}", self.fault)
    }

    fn load_weights(&self, mut m: Vec<HostWeights>) -> Result<Vec<CpuWeights>, ComputeError> {
        if self.on(Fault::LoadWeights) {
            for w in &mut m {
                if let HostWeights::F32 { data, .. } = w {
                    nudge(data);
                }
            }
        }
        self.inner.load_weights(m)
    }

    fn transposed(&self, w: &CpuWeights) -> Result<CpuWeights, ComputeError> {
        if !self.on(Fault::Transposed) {
            return self.inner.transposed(w);
        }
        let t = self.inner.transposed(w)?;
        let mut data = t.values().to_vec();
        nudge(&mut data);
        let host = HostWeights::f32(t.rows(), t.cols(), data);
        self.inner
            .load_weights(vec![host])?
            .pop()
            .ok_or(ComputeError::Overflow { op: "test" })
    }

    fn embed(&self, t: &CpuWeights, tokens: &[u32], out: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.embed(t, tokens, out)?;
        if self.on(Fault::Embed) {
            nudge(out);
        }
        Ok(())
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, ComputeError> {
        self.inner.run(f)
    }

    fn dot(&self, a: &[f32], b: &[f32]) -> Result<f32, ComputeError> {
        let d = self.inner.dot(a, b)?;
        Ok(if self.on(Fault::Dot) { nudged(d) } else { d })
    }

    fn sum(&self, x: &[f32]) -> f32 {
        let s = self.inner.sum(x);
        if self.on(Fault::Sum) { nudged(s) } else { s }
    }

    fn matmul(
        &self,
        x: &[f32],
        rows: usize,
        w: &CpuWeights,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.matmul(x, rows, w, bias, out)?;
        if self.on(Fault::Matmul) {
            nudge(out);
        }
        Ok(())
    }

    fn matmul_slices(
        &self,
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[f32],
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.matmul_slices(x, rows, k, w, cols, out)?;
        if self.on(Fault::MatmulSlices) {
            nudge(out);
        }
        Ok(())
    }

    fn lora(&self, mut products: Vec<LoraProduct<'_>>) -> Result<(), ComputeError> {
        if self.on(Fault::Lora)
            && let Some(p) = products.last_mut()
        {
            p.scale = nudged(p.scale);
        }
        self.inner.lora(products)
    }

    fn exp(&self, x: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.exp(x)?;
        if self.on(Fault::Exp) {
            nudge(x);
        }
        Ok(())
    }

    fn softmax(&self, row: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.softmax(row)?;
        if self.on(Fault::Softmax) {
            nudge(row);
        }
        Ok(())
    }

    fn rmsnorm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.rmsnorm(x, w, eps, out)?;
        if self.on(Fault::Rmsnorm) {
            nudge(out);
        }
        Ok(())
    }

    fn silu(&self, x: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.silu(x)?;
        if self.on(Fault::Silu) {
            nudge(x);
        }
        Ok(())
    }

    fn swiglu(&self, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.swiglu(gate, up, out)?;
        if self.on(Fault::Swiglu) {
            nudge(out);
        }
        Ok(())
    }

    fn rope(
        &self,
        t: &RopeTable,
        p: usize,
        width: usize,
        x: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.rope(t, p, width, x)?;
        if self.on(Fault::Rope) {
            nudge(x);
        }
        Ok(())
    }

    fn attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        kv: &[KvView<'_>],
        rows: &[QueryRow],
        out: &mut [f32],
        probs: Option<&mut [f32]>,
    ) -> Result<(), ComputeError> {
        self.inner.attention(shape, q, kv, rows, out, probs)?;
        if self.on(Fault::Attention) {
            nudge(out);
        }
        Ok(())
    }

    fn outer_fma(&self, a: &[f32], b: &[f32], acc: &mut [f32]) -> Result<(), ComputeError> {
        self.inner.outer_fma(a, b, acc)?;
        if self.on(Fault::OuterFma) {
            nudge(acc);
        }
        Ok(())
    }

    fn rmsnorm_backward(
        &self,
        x: &[f32],
        w: &[f32],
        eps: f32,
        g: &[f32],
        dx: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.rmsnorm_backward(x, w, eps, g, dx)?;
        if self.on(Fault::RmsnormBackward) {
            nudge(dx);
        }
        Ok(())
    }

    fn swiglu_backward(
        &self,
        gate: &[f32],
        up: &[f32],
        d_act: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.swiglu_backward(gate, up, d_act, d_gate, d_up)?;
        if self.on(Fault::SwigluBackward) {
            nudge(d_up);
        }
        Ok(())
    }

    fn rope_backward(
        &self,
        t: &RopeTable,
        p: usize,
        width: usize,
        d: &mut [f32],
    ) -> Result<(), ComputeError> {
        self.inner.rope_backward(t, p, width, d)?;
        if self.on(Fault::RopeBackward) {
            nudge(d);
        }
        Ok(())
    }

    fn attention_backward(
        &self,
        shape: AttentionShape,
        tape: AttentionTape<'_>,
        g: &[f32],
        grads: AttentionGrads<'_>,
    ) -> Result<(), ComputeError> {
        let AttentionGrads { dq, dk, dv } = grads;
        let grads = AttentionGrads {
            dq: &mut *dq,
            dk: &mut *dk,
            dv: &mut *dv,
        };
        self.inner.attention_backward(shape, tape, g, grads)?;
        if self.on(Fault::AttentionBackward) {
            nudge(dk);
        }
        Ok(())
    }
}

#[test]
fn the_suite_catches_one_wrong_ulp_in_any_op() {
    let inner = CpuBackend::new(Isa::detect(), 2).unwrap();
    // Keep the expected panics' messages out of the test output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let escaped: Vec<Fault> = FAULTS
        .into_iter()
        .filter(|&fault| {
            let faulty = Faulty {
                inner: inner.clone(),
                fault,
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conformance(&faulty))).is_ok()
        })
        .collect();
    std::panic::set_hook(hook);
    assert!(escaped.is_empty(), "faults the suite missed: {escaped:?}");
}
