//! Serving inference from resident models: many requests share one forward pass per step
//! (continuous batching), each with its own adapter, each getting exactly the tokens it
//! would get alone.

pub mod batcher;
pub mod schedule;
