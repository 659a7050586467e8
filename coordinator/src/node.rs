//! The coordinator's network side: feeds gossip into the registry and jobs into the job
//! book, answers queries, stores and serves blobs, and carries out the book's actions
//! (assignments, reveal requests). All decisions are made by the registry, the matcher
//! and the book; this only moves events and persists what changed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use olc_content::{BlobStore, Uploads};
use olc_net::libp2p::gossipsub::{self, MessageAcceptance};
use olc_net::libp2p::request_response::{self, Message, OutboundRequestId};
use olc_net::libp2p::swarm::SwarmEvent;
use olc_net::libp2p::{Multiaddr, Swarm};
use olc_net::{
    AdvertObserver, AdvertSeen, Behaviour, BehaviourEvent, NodeConfig, NodeError, NodeTask,
    handle_shared, reply_rpc, start_swarm, unix_ms, unix_us,
};
use olc_protocol::messages::rpc::WorkerStandings;
use olc_protocol::{
    Amount, ContentId, Identity, JobKind, JobSpec, LedgerView, Manifest, PROVENANCE_FILE, PeerId,
    Provenance, PublicKey, RegisteredWorker, RpcRequest, RpcResponse, Signed,
};
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditReport, audit_with_blobs};
use crate::core::action::Action;
use crate::core::book::{JobBook, JobsConfig, PickRequest, Quote};
use crate::core::candidates::Candidates;
use crate::core::ledger::LedgerConfig;
use crate::core::notice::Notice;
use crate::core::registry::{Admission, Registry, RegistryConfig};
use crate::core::rules::Policy;
use crate::core::verified::Verified;
use crate::referee::Referee;
use crate::store::JobStore;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: Vec<Multiaddr>,
    pub registry: RegistryConfig,
    pub node: NodeConfig,
    /// Told of every advert admitted to the registry.
    pub observer: Option<AdvertObserver>,
    /// Where jobs (sled) and blobs live. `None`: a temporary directory, removed on stop —
    /// for tests and the devnet; a real coordinator keeps its state across restarts.
    pub data_dir: Option<PathBuf>,
    pub jobs: JobsConfig,
    /// Largest blob a submitter or worker may upload.
    pub max_upload_bytes: u64,
    /// Fees, slashes, stake and jail: the network's economics.
    pub policy: Policy,
    pub ledger: LedgerConfig,
    /// Mint credits for anyone who asks (`olc account deposit`): devnets only.
    pub faucet: bool,
    /// Threads the referee re-runs disputed and audited jobs with. `None`: no referee, so
    /// a disagreement fails the job with a full refund and slashes no one.
    pub referee_threads: Option<usize>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            registry: RegistryConfig::default(),
            node: NodeConfig::default(),
            observer: None,
            data_dir: None,
            jobs: JobsConfig::default(),
            max_upload_bytes: 64 << 30,
            policy: Policy::default(),
            ledger: LedgerConfig::default(),
            faucet: false,
            referee_threads: Some(1),
        }
    }
}

/// QUIC on UDP 7000, and TCP on the same port for peers whose UDP is blocked.
pub fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/udp/7000/quic-v1", "/ip4/0.0.0.0/tcp/7000"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// How often the registry is swept for expired workers and the job book advanced.
const EXPIRY_SWEEP: Duration = Duration::from_millis(100);
/// How often reveal requests, assignments and referee runs that got no answer are
/// started again.
const REVEAL_RETRY: Duration = Duration::from_secs(2);
/// How long a worker that said it was busy is left alone.
const BUSY_BACKOFF_MS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Blobs(#[from] olc_content::BlobStoreError),
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(std::io::Error),
    #[error("bad policy: {0}")]
    Policy(#[from] crate::core::rules::RuleError),
}

/// A running coordinator. Dropping it without [`Coordinator::stop`] leaves the task
/// running until the runtime ends.
#[derive(Debug)]
pub struct Coordinator {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    registry: Arc<Mutex<Registry>>,
    book: Arc<Mutex<JobBook>>,
    blobs: Arc<BlobStore>,
    task: NodeTask,
    _temp: Option<tempfile::TempDir>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is only mutated by whole operations; a panic elsewhere cannot leave it
    // half-updated, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    /// Builds the node, binds its listeners and starts serving. Returns once the
    /// listeners are up, with their real addresses.
    pub async fn start(identity: &Identity, config: CoordinatorConfig) -> Result<Self, StartError> {
        let (dir, temp) = match &config.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::tempdir().map_err(StartError::TempDir)?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        config.policy.validate()?;
        if config.faucet {
            tracing::warn!("faucet on: anyone can mint credits here (devnets only)");
        }
        let store = JobStore::open(&dir.join("jobs"))?;
        let records = store.load_all()?;
        let economy = store.load_economy()?;
        if !records.is_empty() {
            let open = records.iter().filter(|r| !r.state.is_final()).count();
            tracing::info!(jobs = records.len(), open, "job book restored");
        }
        let book = Arc::new(Mutex::new(JobBook::restore(
            config.jobs.clone(),
            config.policy.clone(),
            config.ledger,
            economy,
            records,
        )));
        let blobs = Arc::new(BlobStore::open(&dir.join("blobs"), None)?);
        let referee = config
            .referee_threads
            .map(|threads| Referee::new(blobs.clone(), dir.join("referee"), threads));
        let (referee_tx, referee_rx) = mpsc::unbounded_channel();
        let (swarm, listen_addrs) = start_swarm(identity, &config.node, &config.listen).await?;
        let registry = Arc::new(Mutex::new(Registry::new(config.registry.clone())));
        let node = Node {
            swarm,
            identity: identity.clone(),
            registry: registry.clone(),
            book: book.clone(),
            store,
            blobs: blobs.clone(),
            uploads: Uploads::new(config.max_upload_bytes, 64),
            observer: config.observer.clone(),
            pending: HashMap::new(),
            faucet: config.faucet,
            referee,
            refereeing: std::collections::HashSet::new(),
            referee_tx,
            referee_rx,
            busy_until: HashMap::new(),
        };
        let task = NodeTask::spawn(move |rx| node.run(rx));
        Ok(Self {
            peer_id: identity.peer_id(),
            listen_addrs,
            registry,
            book,
            blobs,
            task,
            _temp: temp,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Bound addresses, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    pub fn workers(&self) -> Vec<RegisteredWorker> {
        lock(&self.registry).workers()
    }

    /// Content this coordinator stores and serves over the blob protocol.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// What the coordinator reports about a job.
    pub fn job(&self, id: &ContentId) -> Option<olc_protocol::JobView> {
        lock(&self.book).get(id).map(|j| j.view())
    }

    pub fn ledger(&self) -> LedgerView {
        lock(&self.book).economy().ledger_view(unix_ms())
    }

    /// The same checks as `olc coordinator audit`, on the live state. The blobs are hashed
    /// outside the book's lock, so a large store does not stall the coordinator.
    pub fn audit(&self) -> AuditReport {
        let (records, economy) = {
            let book = lock(&self.book);
            let records: Vec<_> = book.jobs().cloned().collect();
            (records, book.economy().clone())
        };
        audit_with_blobs(&records, &economy, Some(&self.blobs))
    }

    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// What an outbound request was for, to route its answer.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Assign {
        job: ContentId,
        assignment: ContentId,
        worker: PublicKey,
    },
    Reveal {
        job: ContentId,
        assignment: ContentId,
    },
}

/// A referee run's answer: the job and its output's commitment, or why it could not run.
type RefereeResult = (ContentId, Result<ContentId, String>);

struct Node {
    swarm: Swarm<Behaviour>,
    identity: Identity,
    registry: Arc<Mutex<Registry>>,
    book: Arc<Mutex<JobBook>>,
    store: JobStore,
    blobs: Arc<BlobStore>,
    uploads: Uploads,
    observer: Option<AdvertObserver>,
    pending: HashMap<OutboundRequestId, Pending>,
    faucet: bool,
    referee: Option<Referee>,
    /// Jobs the referee is running now, so a retry does not start a second run.
    refereeing: std::collections::HashSet<ContentId>,
    referee_tx: mpsc::UnboundedSender<RefereeResult>,
    referee_rx: mpsc::UnboundedReceiver<RefereeResult>,
    /// Workers that just answered "busy" (or could not be reached), until when: not
    /// offered anything before then, so a full worker is not asked every sweep.
    busy_until: HashMap<PublicKey, u64>,
}

impl Node {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
        let mut reveal_retry = tokio::time::interval(REVEAL_RETRY);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sweep.tick() => {
                    let gone = lock(&self.registry).expire(unix_ms());
                    for key in gone {
                        tracing::info!(worker = %key, "worker expired: missed 3 advert intervals");
                        lock(&self.book).worker_gone(&key, unix_ms());
                    }
                    // The sweep is the timer: deadlines, adverts and back-offs move with
                    // the clock, not with any event the book sees.
                    self.advance();
                }
                Some((job, result)) = self.referee_rx.recv() => {
                    self.refereeing.remove(&job);
                    if let Err(why) = &result {
                        tracing::warn!(%job, reason = %why, "the referee could not re-run the job");
                    }
                    let actions = lock(&self.book).on_referee(&self.identity, &job, result, unix_ms());
                    self.log_if_final(&job);
                    self.persist();
                    self.carry_out(actions);
                }
                _ = reveal_retry.tick() => {
                    let mut owed = lock(&self.book).pending_reveals();
                    owed.extend(lock(&self.book).pending_referees());
                    owed.extend(lock(&self.book).pending_assignments());
                    let asked: std::collections::HashSet<ContentId> = self.pending.values().map(|p| match p {
                        Pending::Reveal { assignment, .. } | Pending::Assign { assignment, .. } => *assignment,
                    }).collect();
                    let fresh: Vec<Action> = owed.into_iter().filter(|a| match a {
                        Action::Reveal { assignment_id, .. } => !asked.contains(assignment_id),
                        Action::Assign { assignment, .. } => !asked.contains(&assignment.id()),
                        Action::Referee { job_id } => !self.refereeing.contains(job_id),
                    }).collect();
                    self.carry_out(fresh);
                }
                event = self.swarm.select_next_some() => self.handle(event),
            }
        }
        self.persist();
        tracing::info!("coordinator stopped");
    }

    /// A full matching pass, if the book changed since the last one: most requests only
    /// read it.
    fn advance_if_due(&mut self) {
        if lock(&self.book).take_match_due() {
            self.advance();
        }
    }

    /// Runs the book's clock and carries out what it decided: a full matching pass.
    fn advance(&mut self) {
        let wanted = lock(&self.book).wants_workers();
        let workers = if wanted {
            lock(&self.registry).workers()
        } else {
            Vec::new()
        };
        let now = unix_ms();
        let actions = {
            let mut book = lock(&self.book);
            self.busy_until.retain(|_, until| *until > now);
            let busy = &self.busy_until;
            let mut candidates = Candidates::gather(workers, &book, |k| busy.contains_key(k), now);
            let mut pick = |request: &PickRequest<'_>| candidates.pick(request);
            let blobs = &self.blobs;
            book.tick_sized(&self.identity, now, &mut pick, &|id| blobs.len_of(id))
        };
        self.persist();
        // This pass saw every change so far, its own included: nothing new to match until
        // the next event (the sweep repeats the pass anyway).
        lock(&self.book).take_match_due();
        self.carry_out(actions);
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (worker, request, pending) = match action {
                Action::Assign { worker, assignment } => {
                    let body = assignment.verify().ok();
                    let Some(body) = body else { continue };
                    let p = Pending::Assign {
                        job: body.job_id,
                        assignment: assignment.id(),
                        worker,
                    };
                    (worker, RpcRequest::Assign(assignment), p)
                }
                Action::Referee { job_id } => {
                    self.start_referee(job_id);
                    continue;
                }
                Action::Reveal {
                    worker,
                    job_id,
                    assignment_id,
                } => (
                    worker,
                    RpcRequest::Reveal(assignment_id),
                    Pending::Reveal {
                        job: job_id,
                        assignment: assignment_id,
                    },
                ),
            };
            let Ok(peer) = worker.to_peer_id() else {
                continue;
            };
            if let Some(w) = lock(&self.registry).get(&worker) {
                for addr in w.advert.listen_addrs.iter().filter_map(|a| a.parse().ok()) {
                    self.swarm.add_peer_address(peer, addr);
                }
            }
            let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
            self.pending.insert(id, pending);
        }
    }

    /// Re-runs a job on the referee, off the event loop; the answer comes back through
    /// `referee_rx`.
    fn start_referee(&mut self, job_id: ContentId) {
        if !self.refereeing.insert(job_id) {
            return;
        }
        let spec = lock(&self.book).spec(&job_id).cloned();
        let tx = self.referee_tx.clone();
        let Some(spec) = spec else {
            let _ = tx.send((job_id, Err("the job no longer verifies".into())));
            return;
        };
        let Some(referee) = self.referee.clone() else {
            let _ = tx.send((job_id, Err("this coordinator runs no referee".into())));
            return;
        };
        tracing::info!(job = %job_id, "referee re-running the job");
        tokio::spawn(async move {
            let result = referee.run(spec).await;
            let _ = tx.send((job_id, result));
        });
    }

    fn log_if_final(&self, job: &ContentId) {
        if let Some(state) = lock(&self.book).get(job).map(|j| j.state.clone())
            && state.is_final()
        {
            tracing::info!(%job, state = state.name(), "job finished");
        }
    }

    /// Writes every record the book changed and, if it changed, the economy, in one
    /// transaction, then flushes: what a client was told is on disk, and a job's state
    /// never reaches the disk without its money.
    fn persist(&mut self) {
        let mut book = lock(&self.book);
        book.take_notices().into_iter().for_each(log_notice);
        let dirty = book.take_dirty();
        if dirty.jobs.is_empty() && !dirty.economy {
            return;
        }
        let records: Vec<_> = dirty.jobs.iter().filter_map(|id| book.get(id)).collect();
        let economy = dirty.economy.then(|| book.economy());
        if let Err(error) = self.store.commit(&records, economy) {
            tracing::error!(%error, "cannot store the coordinator's state");
        }
    }

    /// Every blob a job reads is here: the model and adapter manifests and all their
    /// files, the dataset. Returns the missing ones.
    fn missing_inputs(&self, spec: &JobSpec) -> Vec<ContentId> {
        let mut missing = Vec::new();
        let manifest = |id: ContentId, missing: &mut Vec<ContentId>| match self
            .blobs
            .get(&id)
            .ok()
            .flatten()
        {
            None => missing.push(id),
            Some(bytes) => match Manifest::from_bytes(&bytes) {
                Ok(m) => missing.extend(
                    m.entries()
                        .iter()
                        .map(|e| e.id)
                        .filter(|f| !self.blobs.contains(f)),
                ),
                Err(_) => missing.push(id),
            },
        };
        match &spec.kind {
            JobKind::Inference(j) => {
                manifest(j.model, &mut missing);
                if let Some(a) = j.adapter {
                    manifest(a, &mut missing);
                }
            }
            JobKind::Finetune(j) => {
                manifest(j.model, &mut missing);
                if !self.blobs.contains(&j.dataset) {
                    missing.push(j.dataset);
                }
                if let Some(a) = j.params.init_adapter {
                    manifest(a, &mut missing);
                }
            }
        }
        missing
    }

    fn answer(&mut self, request: RpcRequest) -> RpcResponse {
        let now = unix_ms();
        match request {
            RpcRequest::ListWorkers => RpcResponse::Workers(lock(&self.registry).workers()),
            RpcRequest::MissingBlobs(ids) => RpcResponse::Missing(
                ids.into_iter()
                    .filter(|id| !self.blobs.contains(id))
                    .collect(),
            ),
            RpcRequest::PutBlob(up) => match self.uploads.receive(&self.blobs, up) {
                Ok(_) => RpcResponse::Ok,
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::SubmitJob(signed) => self.submit(signed, now),
            RpcRequest::JobStatus(id) => match lock(&self.book).get(&id) {
                Some(job) => RpcResponse::Job(Box::new(job.view())),
                None => RpcResponse::Refused(format!("no job {id} here")),
            },
            RpcRequest::ListJobs(who) => RpcResponse::Jobs(
                lock(&self.book)
                    .jobs()
                    .filter(|j| who.is_none_or(|w| j.signed.signer() == w))
                    .map(|j| j.view())
                    .collect(),
            ),
            RpcRequest::Progress(p) => match lock(&self.book).on_progress(&p, now) {
                Ok(()) => RpcResponse::Ok,
                Err(e) => RpcResponse::Refused(e.to_string()),
            },
            RpcRequest::Failed(f) => {
                let result = lock(&self.book).on_failure(&f, now);
                self.persist();
                match result {
                    Ok(()) => RpcResponse::Ok,
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Commit(c) => {
                let result = lock(&self.book).on_commit(c, now);
                self.persist();
                match result {
                    Ok(()) => RpcResponse::Ok,
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Account(signed) => {
                let result = lock(&self.book).account_request(&signed, self.faucet, now);
                self.persist();
                match result {
                    Ok(view) => RpcResponse::Account(Box::new(view)),
                    Err(e) => RpcResponse::Refused(e.to_string()),
                }
            }
            RpcRequest::Balance(key) => {
                RpcResponse::Account(Box::new(lock(&self.book).economy().account_view(key, now)))
            }
            RpcRequest::Ledger => {
                RpcResponse::Ledger(Box::new(lock(&self.book).economy().ledger_view(now)))
            }
            RpcRequest::WorkerStandings => {
                let workers = lock(&self.registry).workers();
                let book = lock(&self.book);
                RpcResponse::WorkerStandings(Box::new(WorkerStandings {
                    min_stake: Amount(book.policy().min_stake),
                    workers: workers
                        .into_iter()
                        .map(|w| book.economy().worker_standing(book.policy(), w, now))
                        .collect(),
                }))
            }
            RpcRequest::Assign(_) | RpcRequest::Reveal(_) => {
                RpcResponse::Refused("this peer is a coordinator, not a worker".into())
            }
        }
    }

    fn submit(&mut self, signed: Signed<JobSpec>, now: u64) -> RpcResponse {
        // The signature first: nothing about an unsigned job is worth looking at.
        let verified = match Verified::check(signed) {
            Ok(verified) => verified,
            Err(e) => return RpcResponse::Refused(format!("bad signature: {e}")),
        };
        let spec = verified.body();
        let missing = self.missing_inputs(spec);
        if !missing.is_empty() {
            let ids: Vec<String> = missing.iter().map(|m| m.to_string()).collect();
            return RpcResponse::Refused(format!(
                "upload the job's inputs first; missing: {}",
                ids.join(", ")
            ));
        }
        let attribution = self.attribution(spec);
        let quote = Quote {
            cheapest_price: lock(&self.registry).cheapest_price(),
            dataset_bytes: match &spec.kind {
                JobKind::Finetune(j) => self.blobs.len_of(&j.dataset),
                JobKind::Inference(_) => None,
            },
        };
        let result = lock(&self.book).submit_verified(verified, attribution, quote, now);
        match result {
            Ok(id) => {
                self.persist();
                tracing::info!(job = %id, "job accepted");
                RpcResponse::JobAccepted(id)
            }
            Err(e) => {
                tracing::info!(reason = %e, "job refused");
                RpcResponse::Refused(e.to_string())
            }
        }
    }

    fn on_response(&mut self, id: OutboundRequestId, response: Result<RpcResponse, String>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let now = unix_ms();
        match pending {
            Pending::Assign {
                job,
                assignment,
                worker,
            } => {
                let (answer, transient) = match response {
                    Ok(RpcResponse::Accepted) => (Ok(()), false),
                    Ok(RpcResponse::Busy(why)) => (Err(why), true),
                    Err(e) => (Err(format!("unreachable: {e}")), true),
                    Ok(RpcResponse::Declined(why)) | Ok(RpcResponse::Refused(why)) => {
                        (Err(why), false)
                    }
                    Ok(other) => (Err(format!("unexpected answer {other:?}")), false),
                };
                match answer {
                    Ok(()) => lock(&self.book).on_assign_answer(&job, &assignment, Ok(()), now),
                    Err(why) if transient => {
                        tracing::debug!(%job, reason = %why, "assignment not taken for now");
                        self.busy_until.insert(worker, now + BUSY_BACKOFF_MS);
                        lock(&self.book).on_assign_busy(&job, &assignment, why, now);
                    }
                    Err(why) => {
                        tracing::info!(%job, reason = %why, "assignment declined");
                        lock(&self.book).on_assign_answer(&job, &assignment, Err(why), now);
                    }
                }
            }
            Pending::Reveal { job, assignment } => match response {
                Ok(RpcResponse::Revealed(reveal)) => {
                    let result =
                        lock(&self.book).on_reveal(&self.identity, &job, &assignment, *reveal, now);
                    match result {
                        Ok(actions) => self.carry_out(actions),
                        Err(e) => tracing::warn!(%job, reason = %e, "bad reveal"),
                    }
                    self.log_if_final(&job);
                }
                Ok(other) => tracing::debug!(%job, ?other, "reveal not given yet"),
                Err(e) => tracing::debug!(%job, error = %e, "reveal request failed"),
            },
        }
        self.persist();
        self.advance_if_due();
    }

    fn handle(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let Some(event) = handle_shared(&mut self.swarm, &*self.blobs, event) else {
            return;
        };
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let verdict =
                    lock(&self.registry).observe(&message.data, message.source.as_ref(), unix_ms());
                if let (Ok((key, _)), Some(observer)) = (&verdict, self.observer.as_ref()) {
                    let seq = lock(&self.registry).get(key).map_or(0, |w| w.advert.seq);
                    let _ = observer.send(AdvertSeen {
                        signer: *key,
                        seq,
                        received_us: unix_us(),
                    });
                }
                let acceptance = match verdict {
                    Ok((key, Admission::Joined)) => {
                        tracing::info!(worker = %key, from = %propagation_source, "worker joined");
                        MessageAcceptance::Accept
                    }
                    Ok((key, Admission::Refreshed)) => {
                        tracing::trace!(worker = %key, "advert refreshed");
                        MessageAcceptance::Accept
                    }
                    Err(reason) => {
                        tracing::warn!(peer = %propagation_source, %reason, "advert refused");
                        MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let response = self.answer(request);
                reply_rpc(&mut self.swarm, peer, channel, response);
                self.advance_if_due();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => self.on_response(request_id, Ok(response)),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => self.on_response(request_id, Err(error.to_string())),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
            }
            _ => {}
        }
    }
}

impl Node {
    /// The data contributors of the adapter a job uses, with the tokens their records
    /// trained, from the adapter's `provenance.json`. An adapter without provenance, or
    /// with one this build cannot read, has none (its data share goes unpaid, not to the
    /// wrong keys).
    fn attribution(&self, spec: &JobSpec) -> Vec<(PublicKey, u64)> {
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

/// Writes out what the core asked an operator to read.
fn log_notice(notice: Notice) {
    match notice {
        Notice::SlashNotApplied { worker, error } => {
            tracing::error!(%worker, %error, "slash could not be applied");
        }
        Notice::UnbondedNotReleased { error } => {
            tracing::error!(%error, "cannot release unbonded stake");
        }
        Notice::NotSettled { job, error } => {
            tracing::error!(%job, %error, "cannot settle the job");
        }
        Notice::SlashedForWrongOutput {
            job,
            worker,
            amount,
        } => {
            tracing::warn!(%job, %worker, amount,
                "worker slashed: its output differs from the referee's");
        }
    }
}
