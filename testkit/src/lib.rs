//! Fixtures shared by OLC's integration tests and benches, so that each crate's tests do
//! not carry (or `#[path]`-include) their own copy.
//!
//! - [`models`]: tiny random checkpoints on disk, with the content id a job names them by,
//!   and random adapters.
//! - [`jobs`]: a job's laid-out inputs.
//! - [`sim`] (feature `sim`): the coordinator's real job book driven by simulated workers
//!   of every behaviour on a simulated clock.
//!
//! A dev-only crate: only `[dev-dependencies]` may name it (`tests/arrows.rs` fails
//! otherwise). It links the crates it builds fixtures for, so it serves integration tests
//! and benches, not a crate's own unit tests.
// Fixtures for tests: a failed set-up is a failed test, so unwrapping is what we want.
#![allow(clippy::unwrap_used)]

pub mod jobs;
pub mod models;
#[cfg(feature = "sim")]
pub mod sim;
