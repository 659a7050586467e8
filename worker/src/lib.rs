//! olc-worker: the daemon GPU owners run. It probes the hardware, advertises it over
//! gossip, keeps a content cache that it also serves, and takes assignments: fetch the
//! inputs, run the job in the executor, commit, reveal.

pub mod advert;
pub mod jobs;
pub mod node;

pub use advert::Offer;
pub use jobs::{Conduct, Decline, JobRunner};
pub use node::{DEFAULT_MAX_STREAMS, Worker, WorkerConfig, WorkerError};
