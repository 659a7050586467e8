//! Attribution: who supplied the data that trained the adapter a job uses, read from the
//! adapter's `provenance.json` in the blob store, so the book can pay them their share.

use olc_protocol::{JobKind, JobSpec, Manifest, PROVENANCE_FILE, Provenance, PublicKey};

use super::Node;

impl Node {
    /// The data contributors of the adapter a job uses, with the tokens their records
    /// trained, from the adapter's `provenance.json`. An adapter without provenance, or
    /// with one this build cannot read, has none (its data share goes unpaid, not to the
    /// wrong keys).
    pub(super) fn attribution(&self, spec: &JobSpec) -> Vec<(PublicKey, u64)> {
        let adapter = match &spec.kind {
            JobKind::Inference(j) => j.adapter,
            JobKind::Finetune(j) => j.params.init_adapter,
        };
        let Some(adapter) = adapter else {
            return Vec::new();
        };
        let read = || -> Option<Vec<(PublicKey, u64)>> {
            let manifest = Manifest::from_bytes(&self.blobs.get(&adapter).ok()??).ok()?;
            let entry = manifest
                .entries()
                .iter()
                .find(|e| e.path == PROVENANCE_FILE)?;
            let bytes = self.blobs.get(&entry.id).ok()??;
            match Provenance::from_json(&bytes) {
                Ok(provenance) => Some(provenance.contributor_tokens()),
                Err(error) => {
                    tracing::warn!(%adapter, %error, "the adapter's provenance is unreadable; its data contributors go unpaid");
                    None
                }
            }
        };
        read().unwrap_or_default()
    }
}
