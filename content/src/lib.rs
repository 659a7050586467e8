//! olc-content: what OLC keeps on disk and moves as content. The blob store (a
//! content-addressed cache with a byte budget, and uploads assembled piece by piece),
//! directories of files as manifests and back, a job's inputs fetched and laid out for the
//! executor, and key files. Fetching goes through the [`Fetch`] trait, so this crate needs
//! no network: the daemons plug in their connection.

pub mod dir;
pub mod fetch;
pub mod keyfile;
pub mod store;

pub use dir::manifest_of_files;
pub use fetch::{
    ContentError, Fetch, JobInputs, MAX_DATASET_BYTES, MAX_MANIFEST_BYTES, ensure_blob, lay_out,
    load_manifest, materialize, publish_dir,
};
pub use store::{BlobStore, BlobStoreError, UploadState, Uploads};
