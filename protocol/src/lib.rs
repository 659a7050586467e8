//! olc-protocol: what two OLC peers must agree on. Identities, content ids, manifests, the
//! wire codec, signed envelopes and the message types. Pure: no async, no network (that
//! is olc-net) and no file I/O (key files, the blob store and directories of files are
//! olc-content's).

pub mod amount;
pub mod blob;
pub mod codec;
pub mod content_id;
pub mod identity;
pub mod manifest;
pub mod messages;
pub mod provenance;
pub mod signed;

pub use amount::Amount;
pub use codec::{CodecError, MAX_MESSAGE_BYTES, Message, PROTOCOL_VERSION};
pub use content_id::{ContentHasher, ContentId, ContentIdError};
pub use identity::{Identity, IdentityError, PublicKey, Signature};
pub use libp2p_identity::PeerId;
pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use messages::account::{
    AccountAction, AccountRequest, AccountView, LedgerView, UnbondingRelease,
};
pub use messages::advert::{
    AdvertRejection, Backend, CpuInfo, GpuInfo, Hardware, HardwareAdvert, check_advert,
};
pub use messages::catalog::{CatalogEntry, CatalogKind, Publish, check_name};
pub use messages::execution::{Assignment, Commitment, ExecutionReceipt, Metrics};
pub use messages::job::{
    FinetuneJob, InferenceJob, InvalidJob, JobKind, JobSpec, MAX_GENERATED_TOKENS, Prompt,
    Requirements, Sampling, TargetModule, TrainingLength, TrainingParams, VerificationPolicy,
    check_generation,
};
pub use messages::jobs_api::{
    BlobUpload, JobFailure, JobOutput, JobProgress, JobState, JobView, ReplicaView, Reveal,
    inference_commitment,
};
pub use messages::rpc::{
    BlobPart, BlobRequest, BlobResponse, RegisteredWorker, RpcRequest, RpcResponse, WorkerStanding,
    WorkerStandings,
};
pub use messages::settlement::{
    Payout, PayoutRole, ReceiptError, SettlementReceipt, Slash, SlashReason, VerifiedReceipt,
    verify_receipt,
};
pub use messages::stream::{CancelJob, Cut, Follow, FollowUpdate, TokenChunk};
pub use provenance::{
    ContributorShare, HyperRecord, PROVENANCE_FILE, PROVENANCE_FORMAT, Provenance, ProvenanceError,
    RecordProvenance,
};
pub use signed::{Signed, SignedError};
