//! The worker daemon's network side: dials its coordinators (QUIC, falling back to TCP),
//! publishes signed adverts, relays other workers' adverts after checking them, serves
//! blobs from its cache, and takes assignments (run by [`crate::jobs`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use olc_content::BlobStore;
use olc_exec::{EnginePool, InProcess};
use olc_gpu::probe::{self, HardwareReport};
use olc_net::addr::{peer_id_of, tcp_fallback};
use olc_net::libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use olc_net::libp2p::request_response::{self, Message};
use olc_net::libp2p::swarm::dial_opts::DialOpts;
use olc_net::libp2p::swarm::{ConnectionId, SwarmEvent};
use olc_net::libp2p::{Multiaddr, Swarm};
use olc_net::{
    AdvertObserver, AdvertSeen, Behaviour, BehaviourEvent, NodeConfig, NodeError, NodeTask,
    Outbound, Pending, adverts_topic, handle_shared, reply_rpc, start_swarm, unix_ms, unix_us,
};
use olc_protocol::{
    HardwareAdvert, Identity, PeerId, RpcRequest, RpcResponse, Signed, check_advert,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::advert::{self, Offer, Sequencer};
use crate::jobs::{Conduct, Decline, JobRunner};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinators to dial at start (and again whenever the connection is lost).
    pub coordinators: Vec<Multiaddr>,
    pub listen: Vec<Multiaddr>,
    /// Where the worker keeps its cache; the probe reports this disk's free space.
    pub data_dir: PathBuf,
    pub offer: Offer,
    pub node: NodeConfig,
    /// Relayed adverts further than this from our clock are refused.
    pub max_clock_skew_ms: u64,
    /// Told of every advert this worker accepts from others.
    pub observer: Option<AdvertObserver>,
    /// Other workers to stay connected to, found through their adverts. Without them
    /// every advert would go through the coordinator, whose gossip mesh reaches only a
    /// dozen peers directly; with them the workers form a mesh of their own.
    pub worker_peers: usize,
    /// Compute threads per job [default: all cores].
    pub threads: usize,
    /// Bytes of models, adapters and datasets kept in the cache.
    pub cache_bytes: u64,
    /// Honest unless a test or the devnet wants a cheater.
    pub conduct: Conduct,
    /// Bytes of models kept loaded between inference jobs (0 loads one for every job).
    pub model_cache_bytes: u64,
}

impl WorkerConfig {
    pub fn new(coordinators: Vec<Multiaddr>, data_dir: PathBuf) -> Self {
        Self {
            coordinators,
            listen: ["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            data_dir,
            offer: Offer {
                price_per_ktoken: olc_protocol::Amount(10),
                interval_ms: 10_000,
                max_concurrent_jobs: 1,
                max_streams: DEFAULT_MAX_STREAMS,
            },
            node: NodeConfig::default(),
            max_clock_skew_ms: 30_000,
            observer: None,
            worker_peers: 6,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache_bytes: 50 << 30,
            conduct: Conduct::Honest,
            model_cache_bytes: olc_exec::DEFAULT_MODEL_CACHE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("the cache in {path}: {source}")]
    Cache {
        path: PathBuf,
        source: olc_content::BlobStoreError,
    },
}

/// Hardware changes slowly (free memory, disk): probing more often than this is waste.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// A coordinator tells a new peer its gossip subscriptions within a round trip of the
/// connection. One that has not after this long never will on this connection (gossipsub
/// sends them only on a peer's first connection, so a stale connection the coordinator
/// still holds under our peer id swallows them): the worker reconnects.
const SUBSCRIPTION_GRACE: Duration = Duration::from_secs(3);

/// Inference jobs a worker generates at once unless told otherwise: the batch the
/// scheduler fills by default, so a second request never waits for a slot on an idle
/// batch.
pub const DEFAULT_MAX_STREAMS: u32 = olc_exec::serve::schedule::DEFAULT_MAX_BATCH as u32;

/// Requests from running jobs waiting for the event loop; a job whose request finds the
/// queue full waits its turn.
const OUTBOUND_QUEUE: usize = 256;

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    runner: Arc<JobRunner>,
    hardware: watch::Receiver<HardwareReport>,
    task: NodeTask,
}

impl Worker {
    /// Probes the hardware, binds the listeners, and starts dialing and advertising.
    pub async fn start(identity: &Identity, config: WorkerConfig) -> Result<Self, WorkerError> {
        let report = probe_blocking(config.data_dir.clone()).await;
        let (hw_tx, hw_rx) = watch::channel(report);
        let cache = config.data_dir.join("cache");
        let store =
            BlobStore::open(&cache.join("blobs"), Some(config.cache_bytes)).map_err(|source| {
                WorkerError::Cache {
                    path: cache.clone(),
                    source,
                }
            })?;
        let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let runner = Arc::new(JobRunner::new(
            identity.clone(),
            Arc::new(store),
            cache.join("dirs"),
            config.data_dir.join("work"),
            config.threads,
            outbound_tx,
            config.offer.max_concurrent_jobs,
            config.offer.max_streams,
            config.conduct,
            Arc::new(InProcess::new(EnginePool::new(config.model_cache_bytes))),
        ));
        // The coordinator's matcher already leaves out workers this price does not fit;
        // the runner declines such an assignment all the same, whoever sent it.
        runner.set_price_per_ktoken(config.offer.price_per_ktoken);
        let (swarm, listen_addrs) = start_swarm(identity, &config.node, &config.listen).await?;
        let interval = Duration::from_millis(config.offer.interval_ms);
        let refresher = tokio::spawn(refresh_hardware(
            config.data_dir.clone(),
            interval.max(MIN_PROBE_INTERVAL),
            hw_tx,
        ));
        let state = State {
            swarm,
            identity: identity.clone(),
            bootstrap: config.coordinators.iter().map(Bootstrap::new).collect(),
            dialing: HashMap::new(),
            offer: config.offer,
            seq: Sequencer::default(),
            hardware: hw_rx.clone(),
            publish_pending: true,
            runner: runner.clone(),
            max_clock_skew_ms: config.max_clock_skew_ms,
            observer: config.observer,
            worker_peers: config.worker_peers,
            peer_dials: HashSet::new(),
            outbound,
            pending: Pending::default(),
        };
        let task = NodeTask::spawn(move |rx| async move {
            state.run(interval, rx).await;
            refresher.abort();
        });
        Ok(Self {
            peer_id: identity.peer_id(),
            listen_addrs,
            runner,
            hardware: hw_rx,
            task,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Bound addresses, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The worker's cache, which it also serves over the blob protocol.
    pub fn blobs(&self) -> &BlobStore {
        &self.runner.store
    }

    pub fn active_jobs(&self) -> u32 {
        self.runner.active_jobs()
    }

    /// Inference jobs generating now.
    pub fn active_streams(&self) -> u32 {
        self.runner.active_streams()
    }

    /// Models loaded from disk so far: a resident model serving another job is not
    /// loaded again.
    pub fn model_loads(&self) -> u64 {
        self.runner.model_loads()
    }

    pub fn hardware(&self) -> HardwareReport {
        self.hardware.borrow().clone()
    }

    /// Stops the node and closes its connections; running jobs are cancelled and its
    /// coordinators see it expire.
    pub async fn stop(self) {
        self.runner.cancel_all();
        self.task.stop().await;
    }
}

async fn probe_blocking(data_dir: PathBuf) -> HardwareReport {
    let dir = data_dir.clone();
    match tokio::task::spawn_blocking(move || probe::probe(&dir)).await {
        Ok(report) => report,
        // The probe itself never panics; this is a runtime shutting down mid-probe.
        Err(_) => probe::probe(&data_dir),
    }
}

async fn refresh_hardware(data_dir: PathBuf, every: Duration, tx: watch::Sender<HardwareReport>) {
    loop {
        tokio::time::sleep(every).await;
        if tx.send(probe_blocking(data_dir.clone()).await).is_err() {
            return;
        }
    }
}

/// One coordinator address to keep a connection to.
#[derive(Debug)]
struct Bootstrap {
    addr: Multiaddr,
    fallback: Option<Multiaddr>,
    /// Known from `/p2p/<id>` in the address, or learned on first connection.
    peer: Option<PeerId>,
    /// The last QUIC dial failed: use TCP next.
    use_fallback: bool,
    /// Since when it has been connected but not seen subscribed to adverts.
    unsubscribed_since: Option<Instant>,
    /// We dropped the connection to start afresh: dial again as soon as it is closed.
    redial: bool,
}

impl Bootstrap {
    fn new(addr: &Multiaddr) -> Self {
        Self {
            addr: addr.clone(),
            fallback: tcp_fallback(addr),
            peer: peer_id_of(addr),
            use_fallback: false,
            unsubscribed_since: None,
            redial: false,
        }
    }

    fn target(&self) -> &Multiaddr {
        match (&self.fallback, self.use_fallback) {
            (Some(tcp), true) => tcp,
            _ => &self.addr,
        }
    }
}

struct State {
    swarm: Swarm<Behaviour>,
    identity: Identity,
    bootstrap: Vec<Bootstrap>,
    /// Outstanding bootstrap dials: which entry each connection attempt is for.
    dialing: HashMap<ConnectionId, usize>,
    offer: Offer,
    seq: Sequencer,
    hardware: watch::Receiver<HardwareReport>,
    /// The last advert reached nobody (no subscribed peer yet): send one as soon as a
    /// peer subscribes, rather than waiting a whole interval.
    publish_pending: bool,
    runner: Arc<JobRunner>,
    max_clock_skew_ms: u64,
    observer: Option<AdvertObserver>,
    worker_peers: usize,
    /// Workers being dialed because of their adverts.
    peer_dials: HashSet<PeerId>,
    /// What running jobs send their coordinator (commitments, progress, failures, blob
    /// fetches and uploads), on this node's own connection.
    outbound: mpsc::Receiver<Outbound>,
    pending: Pending,
}

impl State {
    async fn run(mut self, interval: Duration, mut shutdown: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(interval);
        // Subscriptions are checked more often than adverts go out, so a long advert
        // interval does not stretch the time a worker stays invisible.
        let mut watchdog = tokio::time::interval(SUBSCRIPTION_GRACE);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    self.dial_disconnected(|_| true);
                    self.publish();
                }
                _ = watchdog.tick() => {
                    // Those we dropped on purpose are dialed again at once, not at the
                    // next advert.
                    self.dial_disconnected(|b| std::mem::take(&mut b.redial));
                    self.reconnect_unsubscribed(Instant::now());
                }
                Some(request) = self.outbound.recv() => self.pending.send(&mut self.swarm, request),
                event = self.swarm.select_next_some() => self.handle(event),
            }
        }
        tracing::info!("worker stopped");
    }

    /// Drops the connection to a coordinator that has not subscribed to our adverts in
    /// time, so the next tick dials it afresh (see [`SUBSCRIPTION_GRACE`]).
    fn reconnect_unsubscribed(&mut self, now: Instant) {
        let topic = adverts_topic().hash();
        let subscribed: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .map(|(peer, _)| *peer)
            .collect();
        for entry in &mut self.bootstrap {
            let Some(peer) = entry.peer else { continue };
            if subscribed.contains(&peer) || !self.swarm.is_connected(&peer) {
                entry.unsubscribed_since = None;
                continue;
            }
            let since = *entry.unsubscribed_since.get_or_insert(now);
            if now.duration_since(since) >= SUBSCRIPTION_GRACE {
                tracing::info!(coordinator = %peer, "the coordinator never subscribed to our adverts: reconnecting");
                entry.unsubscribed_since = None;
                entry.redial = self.swarm.disconnect_peer_id(peer).is_ok();
            }
        }
    }

    /// Dials every coordinator that `wanted` picks and that is neither connected nor being
    /// dialed.
    fn dial_disconnected(&mut self, mut wanted: impl FnMut(&mut Bootstrap) -> bool) {
        for index in 0..self.bootstrap.len() {
            let connected = self.bootstrap[index]
                .peer
                .is_some_and(|p| self.swarm.is_connected(&p));
            let in_flight = self.dialing.values().any(|&i| i == index);
            if !connected && !in_flight && wanted(&mut self.bootstrap[index]) {
                self.dial(index);
            }
        }
    }

    fn dial(&mut self, index: usize) {
        let target = self.bootstrap[index].target().clone();
        let opts = DialOpts::unknown_peer_id().address(target.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                tracing::debug!(%target, "dialing coordinator");
                self.dialing.insert(id, index);
            }
            Err(error) => tracing::warn!(%target, %error, "cannot dial coordinator"),
        }
    }

    /// Dials the worker behind an advert if we have fewer worker peers than wanted.
    fn maybe_peer_with(&mut self, signed: &Signed<HardwareAdvert>, advert: &HardwareAdvert) {
        let Ok(peer) = signed.signer().to_peer_id() else {
            return;
        };
        let coordinators = self.bootstrap.iter().filter(|b| b.peer.is_some()).count();
        let peers = self
            .swarm
            .connected_peers()
            .count()
            .saturating_sub(coordinators);
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.peer_dials.contains(&peer)
            || peers + self.peer_dials.len() >= self.worker_peers
        {
            return;
        }
        let addrs: Vec<Multiaddr> = advert
            .listen_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if addrs.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if self.swarm.dial(opts).is_ok() {
            tracing::debug!(%peer, "peering with worker");
            self.peer_dials.insert(peer);
        }
    }

    fn publish(&mut self) {
        let now_us = unix_us();
        let listen: Vec<String> = self.swarm.listeners().map(|a| a.to_string()).collect();
        let advert = advert::advert(
            &self.hardware.borrow(),
            &self.offer,
            self.seq.next(now_us),
            unix_ms(),
            listen,
            self.runner.holding(),
        );
        let bytes = match Signed::sign(&self.identity, &advert).and_then(|s| s.to_bytes()) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "cannot encode our own advert");
                return;
            }
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(adverts_topic(), bytes)
        {
            Ok(_) => {
                self.publish_pending = false;
                tracing::debug!(seq = advert.seq, "advert published");
            }
            Err(PublishError::NoPeersSubscribedToTopic) => {
                self.publish_pending = true;
                tracing::debug!("no peer to send the advert to yet");
            }
            Err(error) => tracing::warn!(%error, "advert not published"),
        }
    }

    fn handle(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let Some(event) = self.pending.settle(event) else {
            return;
        };
        let Some(event) = handle_shared(&mut self.swarm, &*self.runner.store, event) else {
            return;
        };
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.peer_dials.remove(&peer_id);
                if let Some(index) = self.dialing.remove(&connection_id) {
                    let entry = &mut self.bootstrap[index];
                    entry.peer = Some(peer_id);
                    tracing::info!(coordinator = %peer_id, addr = %endpoint.get_remote_address(), "connected to coordinator");
                } else {
                    tracing::debug!(peer = %peer_id, "connected");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                if let Some(peer) = peer_id {
                    self.peer_dials.remove(&peer);
                }
                if let Some(index) = self.dialing.remove(&connection_id) {
                    let entry = &mut self.bootstrap[index];
                    tracing::warn!(addr = %entry.target(), %error, "cannot reach coordinator");
                    if entry.fallback.is_some() && !entry.use_fallback {
                        // QUIC failed: try TCP on the same port straight away.
                        entry.use_fallback = true;
                        self.dial(index);
                    } else {
                        entry.use_fallback = false;
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic,
                ..
            })) if topic == adverts_topic().hash() && self.publish_pending => {
                tracing::debug!(peer = %peer_id, "first subscriber: advertising now");
                self.publish();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Relay only what checks out, so a worker is no amplifier for garbage.
                let acceptance = match check_advert(
                    &message.data,
                    message.source.as_ref(),
                    unix_ms(),
                    self.max_clock_skew_ms,
                ) {
                    Ok((signed, advert)) => {
                        self.maybe_peer_with(&signed, &advert);
                        if let Some(observer) = &self.observer {
                            let _ = observer.send(AdvertSeen {
                                signer: signed.signer(),
                                seq: advert.seq,
                                received_us: unix_us(),
                            });
                        }
                        MessageAcceptance::Accept
                    }
                    Err(reason) => {
                        tracing::debug!(peer = %propagation_source, %reason, "advert refused");
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
                let response = self.answer(peer, request);
                reply_rpc(&mut self.swarm, peer, channel, response);
            }
            _ => {}
        }
    }

    /// Assignments and reveals come from coordinators; anything else is for one.
    fn answer(&mut self, peer: PeerId, request: RpcRequest) -> RpcResponse {
        match request {
            RpcRequest::Assign(signed) => {
                if !self.bootstrap.iter().any(|b| b.peer == Some(peer)) {
                    return RpcResponse::Declined("not one of this worker's coordinators".into());
                }
                match self.runner.accept(&signed, peer) {
                    Ok(Some((body, spec))) => {
                        tracing::info!(job = %body.job_id, replica = body.replica, "assignment accepted");
                        self.runner.spawn(signed, body, spec, peer);
                        RpcResponse::Accepted
                    }
                    Ok(None) => RpcResponse::Accepted,
                    Err(Decline::Busy(why)) => {
                        tracing::debug!(%peer, reason = %why, "assignment declined");
                        RpcResponse::Busy(why)
                    }
                    Err(Decline::Refused(why)) => {
                        tracing::info!(%peer, reason = %why, "assignment declined");
                        RpcResponse::Declined(why)
                    }
                }
            }
            RpcRequest::Cut(cut) => self.runner.cut(cut, peer),
            RpcRequest::Reveal(assignment) => match self.runner.reveal(&assignment, peer) {
                Some(r) => RpcResponse::Revealed(Box::new(r)),
                None => RpcResponse::Refused(format!("nothing to reveal for {assignment}")),
            },
            _ => RpcResponse::Refused("this peer is a worker; ask a coordinator".into()),
        }
    }
}
