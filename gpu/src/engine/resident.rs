//! The model's matrices as the backend holds them: handed over once at load, then only
//! ever passed back to the backend's ops.

use crate::compute::{Backend, ComputeError, HostWeights};
use crate::model::{LinearModule, LlamaWeights, Matrix};

/// Every matmul weight of a model (each layer's seven projections, then the LM head, then
/// untied input embeddings) in the backend's format.
#[derive(Debug)]
pub(super) struct Resident<B: Backend> {
    /// Per layer, indexed by `LinearModule as usize`.
    layers: Vec<[B::Weights; 7]>,
    /// `[vocab, hidden]`; with tied embeddings also the input embedding table.
    head: B::Weights,
    /// Untied input embeddings `[vocab, hidden]`.
    embed: Option<B::Weights>,
}

impl<B: Backend> Resident<B> {
    /// Moves the matrices' data out of `weights` (leaving them empty, shapes intact) into
    /// the backend in one call, which lets it lay them out together and free each host copy
    /// as soon as it has its own.
    pub(super) fn take(backend: &B, weights: &mut LlamaWeights) -> Result<Self, ComputeError> {
        fn host(m: &mut Matrix) -> HostWeights {
            match m.blocks.take() {
                Some(b) => HostWeights::quantized(b.ty, m.rows, m.cols, b.bytes),
                None => HostWeights::f32(m.rows, m.cols, std::mem::take(&mut m.data)),
            }
        }
        let n_layers = weights.layers.len();
        let mut matrices = Vec::with_capacity(7 * n_layers + 2);
        for l in &mut weights.layers {
            for m in [
                &mut l.q_proj,
                &mut l.k_proj,
                &mut l.v_proj,
                &mut l.o_proj,
                &mut l.gate_proj,
                &mut l.up_proj,
                &mut l.down_proj,
            ] {
                matrices.push(host(m));
            }
        }
        let untied = weights.lm_head.is_some();
        match weights.lm_head.as_mut() {
            Some(head) => matrices.push(host(head)),
            None => matrices.push(host(&mut weights.embed_tokens)),
        }
        if untied {
            matrices.push(host(&mut weights.embed_tokens));
        }
        let expected = matrices.len();
        let mut loaded = backend.load_weights(matrices)?.into_iter();
        if loaded.len() != expected {
            return Err(ComputeError::Invalid {
                op: "load weights",
                reason: "the backend returned a different number of matrices",
            });
        }
        let mut next = || {
            loaded.next().ok_or(ComputeError::Invalid {
                op: "load weights",
                reason: "the backend returned too few matrices",
            })
        };
        let mut layers = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            layers.push([
                next()?,
                next()?,
                next()?,
                next()?,
                next()?,
                next()?,
                next()?,
            ]);
        }
        let head = next()?;
        let embed = if untied { Some(next()?) } else { None };
        Ok(Self {
            layers,
            head,
            embed,
        })
    }

    pub(super) fn linear(&self, layer: usize, m: LinearModule) -> Option<&B::Weights> {
        self.layers.get(layer).map(|l| &l[m as usize])
    }

    pub(super) fn head(&self) -> &B::Weights {
        &self.head
    }

    pub(super) fn embeddings(&self) -> &B::Weights {
        self.embed.as_ref().unwrap_or(&self.head)
    }
}
