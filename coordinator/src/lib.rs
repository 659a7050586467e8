//! olc-coordinator. [`core`](crate::core) holds the decisions as pure state machines with the clock
//! passed in: the registry of live workers (built from gossip), the matcher, the job book
//! that takes jobs from submission to a signed receipt, the verifier, the ledger and
//! settlement, the audit's checks. Around it, the node feeds it events and carries out
//! its actions: the event loop and RPC ([`node`]), the durable store ([`store`]), the
//! referee's re-runs ([`referee`]) and the audit of the blobs on disk ([`audit`]).

pub mod audit;
pub mod core;
pub mod node;
pub mod referee;
pub mod store;

// The core's modules under the paths they had before it existed.
pub use crate::core::{economy, ledger, matcher, registry, rules};

/// The job book and the records it keeps.
pub mod jobs {
    pub use crate::core::action::Action;
    pub use crate::core::book::*;
    pub use crate::core::record::*;
}

pub use economy::Economy;
pub use jobs::{
    Action, Dirty, JobBook, JobRecord, JobsConfig, NoPick, Pick, PickRequest, Picked, Quote,
    Refusal,
};
pub use node::{Coordinator, CoordinatorConfig};
pub use registry::{Registry, RegistryConfig};
pub use rules::Policy;
pub use store::JobStore;
