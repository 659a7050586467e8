//! Request-response messages between peers: the coordinator's query API and the blob
//! protocol. Unsigned: the transport authenticates the peer, and nothing here carries
//! authority by itself (blobs are checked against their content ids).

use bincode::{Decode, Encode};
use serde::Serialize;

use crate::blob::{BlobOutline, CHUNK_SIZE};
use crate::messages::account::{AccountRequest, AccountView, LedgerView};
use crate::messages::catalog::{CatalogEntry, Publish};
use crate::messages::jobs_api::{BlobUpload, JobFailure, JobProgress, JobView, Reveal};
use crate::messages::stream::{CancelJob, Cut, Follow, FollowUpdate, TokenChunk};
use crate::{
    Amount, Assignment, Commitment, ContentId, HardwareAdvert, JobSpec, Message, PublicKey, Signed,
};

/// What one peer may ask another. Submitters and workers ask coordinators; coordinators
/// ask workers (`Assign`, `Reveal`).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum RpcRequest {
    ListWorkers,
    /// Which of these blobs the coordinator does not have yet.
    MissingBlobs(Vec<ContentId>),
    PutBlob(BlobUpload),
    SubmitJob(Signed<JobSpec>),
    JobStatus(ContentId),
    /// Jobs of one submitter, or all.
    ListJobs(Option<PublicKey>),
    /// Worker to coordinator while a job runs.
    Progress(Signed<JobProgress>),
    Commit(Signed<Commitment>),
    Failed(Signed<JobFailure>),
    /// Coordinator to worker.
    Assign(Signed<Assignment>),
    /// Coordinator to worker, once every replica has committed: the assignment's id.
    Reveal(ContentId),
    /// Deposit (faucet), stake or unstake, signed by the account's key.
    Account(Signed<AccountRequest>),
    /// One account's balance, stake and standing.
    Balance(PublicKey),
    /// Every account, the treasury and the ledger's totals.
    Ledger,
    /// The live workers with their stake and whether they can be matched (what
    /// `ListWorkers` lists, plus what the coordinator knows of each).
    WorkerStandings,
    /// Names content in the catalog, signed by the publisher.
    Publish(Signed<Publish>),
    /// Every name in the catalog.
    Catalog,
    /// Worker to coordinator: the next tokens of a running inference.
    Tokens(Signed<TokenChunk>),
    /// Held until the job has news past what the follower has seen.
    Follow(Follow),
    /// The submitter no longer wants the job.
    Cancel(Signed<CancelJob>),
    /// Coordinator to worker: stop the assignment at this many tokens.
    Cut(Cut),
}

impl Message for RpcRequest {
    const NAME: &'static str = "olc/rpc-request";
    const MAX_SIZE: usize = 4 * 1024 * 1024;
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum RpcResponse {
    Workers(Vec<RegisteredWorker>),
    /// The request was understood but refused; the text says why.
    Refused(String),
    Missing(Vec<ContentId>),
    /// Done, nothing to report.
    Ok,
    JobAccepted(ContentId),
    Job(Box<JobView>),
    Jobs(Vec<JobView>),
    /// A worker took the assignment.
    Accepted,
    /// A worker turned the assignment down; the text says why.
    Declined(String),
    /// A worker had no free job slot: it may take the job once one frees up.
    Busy(String),
    Revealed(Box<Reveal>),
    Account(Box<AccountView>),
    Ledger(Box<LedgerView>),
    WorkerStandings(Box<WorkerStandings>),
    Catalog(Vec<CatalogEntry>),
    Follow(Box<FollowUpdate>),
    /// A worker's answer to a cut that came after its run had ended: its commitment to the
    /// cut output, which replaces the one it made before.
    Recommitted(Signed<Commitment>),
}

impl Message for RpcResponse {
    const NAME: &'static str = "olc/rpc-response";
    const MAX_SIZE: usize = crate::MAX_MESSAGE_BYTES;
}

/// One live worker as the coordinator's registry knows it.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct RegisteredWorker {
    pub public_key: PublicKey,
    pub advert: HardwareAdvert,
    /// Coordinator's clock, unix ms, when the latest advert arrived.
    pub last_seen_ms: u64,
    pub first_seen_ms: u64,
}

/// The answer to [`RpcRequest::WorkerStandings`].
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct WorkerStandings {
    /// Bonded stake below which this coordinator matches no worker.
    pub min_stake: Amount,
    pub workers: Vec<WorkerStanding>,
}

/// One live worker and its standing at the coordinator.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize)]
pub struct WorkerStanding {
    pub worker: RegisteredWorker,
    /// Stake backing new work (unbonding stake does not count).
    pub bonded: Amount,
    /// Unix ms until which it is not matched, after a slash; `None` when not jailed.
    pub jailed_until_ms: Option<u64>,
    /// 0..=1, 0.5 for a worker with no history.
    pub reputation: f64,
    /// Why the matcher skips it now ("stake 0 is below the minimum of 100", "jailed
    /// until …"); `None` when it can be matched.
    pub ineligible: Option<String>,
}

/// Ask for a blob's outline, or for one of its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlobRequest {
    pub id: ContentId,
    pub part: BlobPart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum BlobPart {
    Outline,
    Chunk(u64),
}

impl Message for BlobRequest {
    const NAME: &'static str = "olc/blob-request";
    const MAX_SIZE: usize = 128;
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum BlobResponse {
    Outline(BlobOutline),
    Chunk(Vec<u8>),
    NotFound,
}

impl Message for BlobResponse {
    const NAME: &'static str = "olc/blob-response";
    /// A chunk plus framing; an outline of up to ~32 GiB (32 bytes per MiB) also fits.
    const MAX_SIZE: usize = CHUNK_SIZE as usize + 64 * 1024;
}
