//! LoRA fine-tuning: a backward pass through the frozen base model to the adapter's A/B
//! matrices, AdamW, and PEFT output with provenance.
//!
//! Two honest workers given the same job must produce the same adapter bytes, so training
//! follows the canonical arithmetic of the compute spec (`crate::compute`) and adds the
//! rules below. As there, "dot" and "sum" mean rule 1 (16 lanes, halving tree), and every
//! `a op b` is one IEEE-rounded f32 operation unless written as fma.
//!
//! # T1. Forward
//!
//! Exactly the engine's forward, for every token of every example of a micro-batch, each
//! example a sequence starting at position 0 (its own empty KV cache): the trainer runs the
//! engine's own layer code (`engine::layers`) with a tape that keeps what the backward pass
//! reads. Logits are computed only for rows that predict a trained token, so the final norm
//! and LM head are the trainer's own (the same ops on fewer rows).
//!
//! # T2. Loss and its gradient
//!
//! For a prediction row with logits `z` and target `y`: `p = softmax(z)` (rule 4);
//! `dz_v = p_v / N` for `v != y`, `dz_y = (p_y - 1) / N`, where `N` is the number of trained
//! predictions in the whole optimizer step (transformers' mean over all label tokens of
//! the batch). The loss itself (`logsumexp(z) - z_y`, in f64) is reported, never committed.
//!
//! # T3. Linear layers `y = x·Wᵀ (+ bias) + scale·(x·Aᵀ)·Bᵀ`
//!
//! With `g = dy` and `gs_o = g_o * scale`, `low = x·Aᵀ` from the forward:
//! - `dx = matmul(g, Wᵀ)` (rule 2, a dot over `out`), then `u = matmul(gs, Bᵀ)` and
//!   `dx = dx + matmul(u, Aᵀ)` element by element.
//! - `dB[o][k] = Σ_t gs[t][o]·low[t][k]` and `dA[k][i] = Σ_t u[t][k]·x[t][i]`: sums over
//!   every row `t` of the optimizer step in ascending (example, token) order, row `t` going
//!   to lane `t mod 16` by fma, lanes combined by the halving tree at the end of the step.
//!   This is the contract's "gradients in ascending (example, token) order" and is why
//!   micro-batching and gradient accumulation never change the result.
//! - When several projections read the same input (q, k, v; gate, up), their `dx` are
//!   added in that order: `(dx_q + dx_k) + dx_v`, `dx_gate + dx_up`.
//!
//! # T4. RMSNorm backward (`y_i = (x_i·inv)·w_i`)
//!
//! `inv` recomputed as in rule 5; `gw_i = g_i * w_i`; `s = dot(gw, x)`;
//! `c = (s * ((inv * inv) * inv)) / n`; `dx_i = gw_i * inv - x_i * c`.
//!
//! # T5. SwiGLU backward (`act = silu(gate)·up`)
//!
//! `e = exp(-gate)` (our exp); `den = 1 + e`; `silu = gate / den`; `sig = 1 / den`;
//! `d_up = d_act * silu`; `d_gate = (d_act * up) * (sig * (1 + gate * (1 - sig)))`.
//!
//! # T6. Attention backward (one example, one query head, `T` positions)
//!
//! `P` is the `[T, T]` matrix of the forward's probabilities (zero above the diagonal),
//! `G` the output gradient `[T, head_dim]`:
//! - `dP = matmul(G, V)` (`dP[t][j] = dot(G_t, V_j)`), `D_t = dot(P_t, dP_t)` over all `T`;
//! - `dS[t][j] = (P[t][j] * (dP[t][j] - D_t)) * scale` for `j ≤ t`, `+0.0` above;
//! - `dQ[t] = Σ_j dS[t][j]·K_j`, `dK[j] = Σ_t dS[t][j]·Q_t`, `dV[j] = Σ_t P[t][j]·G_t`,
//!   each a rule-1 sum over all `T` terms (zeros included) in ascending order.
//! - Under grouped-query attention a kv head's `dK`/`dV` start at `+0.0` and add the query
//!   heads of its group in ascending order.
//!
//! # T7. RoPE backward
//!
//! `dq[j] = d[j]*cos[j] + d[j+h]*sin[j]`; `dq[j+h] = d[j+h]*cos[j] - d[j]*sin[j]` (`h = d/2`).
//!
//! # T8. AdamW (as PyTorch's, per element, scalars computed in f64 then rounded once)
//!
//! At optimizer step `s` (1-based), with `lr_s` from the schedule: `decay = 1 - lr_s·wd`,
//! `step = lr_s / (1 - β1^s)`, `bc2 = sqrt(1 - β2^s)`, `c1 = 1 - β1`, `c2 = 1 - β2`; then
//! `p = p * decay; m = m*β1 + g*c1; v = v*β2 + (g*g)*c2; p = p - step * (m / (sqrt(v)/bc2 + eps))`.
//!
//! The schedule is transformers' constant-with-warmup: `lr_s = lr · (s-1)/warmup` while
//! `s - 1 < warmup`, else `lr`.
//!
//! # T9. Divergence
//!
//! Training stops with [`TrainError::Diverged`] at the first step where the mean loss is
//! not finite, a row entering RMSNorm backward (T4) has a non-finite sum of squares, a
//! finished gradient element is not finite, or a parameter is not finite after its update
//! (checked tensor by tensor in canonical order, `A` before `B`). None of these can happen
//! in a run that produces a usable adapter, so finite runs are unchanged bit for bit.

pub mod adamw;
pub mod data;
pub mod error;
mod lanes;
pub mod lora;
mod loss;
pub mod output;
mod pass;
pub mod trainer;

pub use adamw::AdamW;
pub use data::{Content, DataError, Dataset, Example, Record, Tokenized, tokenize};
pub use error::{Divergence, TrainError};
pub use lora::{LoraSpec, adapter_commitment, init_adapter, write_adapter};
pub use output::{DEFAULT_MAX_LEN, finish, resolve_max_len};
pub use trainer::{Budget, Hyper, StepReport, TrainOutcome, Trainer, plan};

#[cfg(test)]
mod tests;
