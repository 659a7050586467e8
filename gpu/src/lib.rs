//! olc-gpu: hardware probe, compute backends, the model engine and LoRA training.
//! Filled in by the network issue (probe) and the engine and fine-tuning issues.

pub mod compute;
pub mod engine;
pub mod model;
pub mod probe;
pub mod train;
