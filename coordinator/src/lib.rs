//! olc-coordinator: the registry of live workers, built from gossip, and the node that
//! serves it. The matcher, verifier, ledger and settlement arrive with the jobs and
//! verification issues.

pub mod node;
pub mod registry;

pub use node::{Coordinator, CoordinatorConfig};
pub use registry::{Registry, RegistryConfig};
