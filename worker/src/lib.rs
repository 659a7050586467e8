//! olc-worker: the daemon GPU owners run. It probes the hardware, advertises it over
//! gossip and serves blobs; job intake and the sandboxed executor arrive with the jobs
//! issue.

pub mod advert;
pub mod node;

pub use advert::Offer;
pub use node::{Worker, WorkerConfig};
