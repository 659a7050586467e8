//! olc-coordinator: the registry of live workers (built from gossip), the matcher, the job
//! book that takes jobs from submission to a signed receipt, its durable store, the node
//! that serves them, and the submitter's client. The referee, ledger and settlement
//! arrive with the verification issue.

pub mod client;
pub mod jobs;
pub mod ledger;
pub mod matcher;
pub mod node;
pub mod registry;
pub mod rules;
pub mod store;

pub use client::{SubmitError, Submitter};
pub use jobs::{Action, JobBook, JobRecord, JobsConfig, Refusal};
pub use node::{Coordinator, CoordinatorConfig};
pub use registry::{Registry, RegistryConfig};
pub use store::JobStore;
