//! olc-coordinator: the registry of live workers (built from gossip), the matcher, the job
//! book that takes jobs from submission to a signed receipt, the verifier and its
//! referee, the ledger and settlement, their durable store, the node that serves them,
//! and the submitter's client.

pub mod audit;
pub mod economy;
pub mod jobs;
pub mod ledger;
pub mod matcher;
pub mod node;
pub mod referee;
pub mod registry;
pub mod rules;
pub mod store;
mod verify;

pub use economy::Economy;
pub use jobs::{
    Action, Dirty, JobBook, JobRecord, JobsConfig, NoPick, Pick, PickRequest, Picked, Quote,
    Refusal,
};
pub use node::{Coordinator, CoordinatorConfig};
pub use registry::{Registry, RegistryConfig};
pub use rules::Policy;
pub use store::JobStore;
