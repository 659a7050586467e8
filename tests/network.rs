//! The network in one process: a coordinator and five workers on loopback, plus hostile
//! peers that send forged adverts, garbage requests and tampered blobs.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io;
use std::time::{Duration, Instant};

use futures::prelude::*;
use olc_coordinator::{Coordinator, CoordinatorConfig};
use olc_net::libp2p::request_response::{self, ProtocolSupport};
use olc_net::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use olc_net::libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, gossipsub, noise, tcp, yamux,
};
use olc_net::{
    BLOB_PROTOCOL, BehaviourEvent, Client, ClientError, NodeConfig, RPC_PROTOCOL, adverts_topic,
    build_swarm, unix_ms,
};
use olc_protocol::blob::{self, BlobError, BlobOutline, BlobSource};
use olc_protocol::*;
use olc_worker::{Worker, WorkerConfig};

const INTERVAL_MS: u64 = 200;
/// Generous bound for "within a bound" checks: loaded 2-core CI machines are slow.
const BOUND: Duration = Duration::from_secs(20);

fn loopback_quic() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]
}

async fn coordinator() -> Coordinator {
    let cfg = CoordinatorConfig {
        listen: loopback_quic(),
        ..CoordinatorConfig::default()
    };
    Coordinator::start(&Identity::generate().unwrap(), cfg)
        .await
        .unwrap()
}

/// A test worker's settings: loopback QUIC, a short advert interval, one coordinator.
fn worker_config(coordinator: Multiaddr, dir: &std::path::Path) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(vec![coordinator], dir.to_path_buf());
    cfg.listen = loopback_quic();
    cfg.offer.interval_ms = INTERVAL_MS;
    cfg
}

async fn worker(coordinator: &Coordinator, dir: &std::path::Path) -> (Identity, Worker) {
    let identity = Identity::generate().unwrap();
    let cfg = worker_config(coordinator.listen_addrs()[0].clone(), dir);
    let w = Worker::start(&identity, cfg).await.unwrap();
    (identity, w)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < BOUND, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn registered(c: &Coordinator, key: &PublicKey) -> bool {
    c.workers().iter().any(|w| &w.public_key == key)
}

async fn connect(addr: &Multiaddr) -> Client {
    Client::connect(&NodeConfig::default(), addr, BOUND)
        .await
        .unwrap()
}

async fn list_workers(addr: &Multiaddr) -> Vec<RegisteredWorker> {
    let client = connect(addr).await;
    match client.rpc(RpcRequest::ListWorkers).await.unwrap() {
        RpcResponse::Workers(w) => w,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_register_and_a_stopped_one_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator().await;
    // The first worker reports the adverts it relays: workers must hear each other too.
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let first = Identity::generate().unwrap();
    let mut cfg = worker_config(c.listen_addrs()[0].clone(), dir.path());
    cfg.observer = Some(tx);
    let mut workers = vec![(first.clone(), Worker::start(&first, cfg).await.unwrap())];
    for _ in 0..4 {
        workers.push(worker(&c, dir.path()).await);
    }
    wait_until("all five workers are registered", || c.workers().len() == 5).await;
    for (id, _) in &workers {
        assert!(registered(&c, &id.public_key()));
    }
    // The registry over the wire agrees, with what each worker advertised.
    let listed = list_workers(&c.listen_addrs()[0]).await;
    assert_eq!(listed.len(), 5);
    for w in &listed {
        assert_eq!(w.advert.interval_ms, INTERVAL_MS);
        assert_eq!(w.advert.backends, vec![Backend::Cpu]);
        assert!(w.advert.hardware.cpu.logical_cores >= 1);
        assert!(w.last_seen_ms <= unix_ms());
    }

    let mut others: std::collections::BTreeSet<PublicKey> =
        workers[1..].iter().map(|(id, _)| id.public_key()).collect();
    let start = Instant::now();
    while !others.is_empty() {
        let seen = tokio::time::timeout(BOUND, heard.recv())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            seen.signer,
            first.public_key(),
            "a worker's own advert came back to it"
        );
        others.remove(&seen.signer);
        assert!(start.elapsed() < BOUND, "worker never heard {others:?}");
    }

    let (gone, stopped) = workers.pop().unwrap();
    stopped.stop().await;
    let stopped_at = Instant::now();
    wait_until("the stopped worker expires", || {
        !registered(&c, &gone.public_key())
    })
    .await;
    // Expiry is after three missed intervals, not before.
    assert!(stopped_at.elapsed() >= Duration::from_millis(2 * INTERVAL_MS));
    // The others keep advertising and stay.
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    assert_eq!(c.workers().len(), 4);
    for (_, w) in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// A coordinator that already holds a connection under a worker's peer id when the worker
/// connects (once a command run with the worker's key left one behind) sends its gossip
/// subscriptions down that old connection only: the worker must notice it is not heard
/// and reconnect by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_peer_id_the_coordinator_already_holds_still_registers() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator().await;
    let identity = Identity::generate().unwrap();
    let mut squatter = build_swarm(&identity, &NodeConfig::default()).unwrap();
    squatter.dial(c.listen_addrs()[0].clone()).unwrap();
    let coordinator_peer = loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = squatter.select_next_some().await
        {
            break peer_id;
        }
    };
    let (leave, mut left) = tokio::sync::oneshot::channel::<()>();
    let squat = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut left => break,
                _ = squatter.select_next_some() => {}
            }
        }
        // Leave cleanly, so the coordinator is left with only the worker's connection.
        squatter.disconnect_peer_id(coordinator_peer).unwrap();
        while let Some(event) = squatter.next().await {
            if let SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } = event
            {
                break;
            }
        }
    });
    let w = Worker::start(
        &identity,
        worker_config(c.listen_addrs()[0].clone(), dir.path()),
    )
    .await
    .unwrap();
    // The worker connects beside the old connection, which then goes away.
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    leave.send(()).unwrap();
    squat.await.unwrap();
    wait_until("the worker is registered", || {
        registered(&c, &identity.public_key())
    })
    .await;
    w.stop().await;
    c.stop().await;
}

/// A bare gossip peer that publishes whatever bytes it is told to, with a transmit limit
/// far above ours so that oversized messages really leave it.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "olc_net::libp2p::swarm::derive_prelude")]
struct GossipOnly {
    gossipsub: gossipsub::Behaviour,
}

async fn hostile_gossip_peer(identity: &Identity, target: &Multiaddr) -> Swarm<GossipOnly> {
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(4 * 1024 * 1024)
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let behaviour = GossipOnly {
        gossipsub: gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(identity.to_libp2p_keypair()),
            config,
        )
        .unwrap(),
    };
    let mut swarm = SwarmBuilder::with_existing_identity(identity.to_libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&adverts_topic())
        .unwrap();
    swarm.dial(target.clone()).unwrap();
    // Wait until the coordinator has subscribed us, so publishing reaches it.
    let start = Instant::now();
    loop {
        let event = tokio::time::timeout(BOUND, swarm.select_next_some())
            .await
            .unwrap();
        if let SwarmEvent::Behaviour(GossipOnlyEvent::Gossipsub(gossipsub::Event::Subscribed {
            ..
        })) = event
        {
            break;
        }
        assert!(start.elapsed() < BOUND);
    }
    swarm
}

/// Publishes `data` and keeps the swarm running for a while so it is delivered.
async fn publish(swarm: &mut Swarm<GossipOnly>, data: Vec<u8>) {
    swarm
        .behaviour_mut()
        .gossipsub
        .publish(adverts_topic(), data)
        .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(600);
    while let Ok(_event) = tokio::time::timeout_at(until, swarm.select_next_some()).await {}
}

fn advert(seq: u64, timestamp_ms: u64, price: u64) -> HardwareAdvert {
    HardwareAdvert {
        seq,
        timestamp_ms,
        interval_ms: 10_000,
        hardware: Hardware {
            gpus: vec![],
            cpu: CpuInfo {
                model: "hostile".into(),
                logical_cores: 64,
                features: vec![],
            },
            ram_total_bytes: 1 << 40,
            ram_available_bytes: 1 << 40,
            disk_free_bytes: 1 << 40,
        },
        backends: vec![Backend::Cpu],
        price_per_ktoken: Amount(price),
        listen_addrs: vec![],
        cached: vec![],
        max_concurrent_jobs: 1,
        active_jobs: 0,
        resident: Vec::new(),
        resident_adapters: 0,
        max_streams: 8,
        active_streams: 0,
    }
}

fn signed(by: &Identity, a: &HardwareAdvert) -> Vec<u8> {
    Signed::sign(by, a).unwrap().to_bytes().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_skewed_oversized_and_random_adverts_are_not_registered() {
    let c = coordinator().await;
    let addr = c.listen_addrs()[0].clone();

    // Control: an honest advert from a bare peer is registered, so the refusals below are
    // the checks at work and not a broken set-up.
    let honest = Identity::generate().unwrap();
    let mut peer = hostile_gossip_peer(&honest, &addr).await;
    publish(&mut peer, signed(&honest, &advert(100, unix_ms(), 5))).await;
    wait_until("the honest bare peer is registered", || {
        registered(&c, &honest.public_key())
    })
    .await;

    // Stale: an older sequence number trying to change the price.
    publish(&mut peer, signed(&honest, &advert(50, unix_ms(), 999))).await;
    let entry = c
        .workers()
        .into_iter()
        .find(|w| w.public_key == honest.public_key())
        .unwrap();
    assert_eq!(entry.advert.seq, 100);
    assert_eq!(entry.advert.price_per_ktoken, Amount(5));

    // Forged: signed by someone else than the gossip author.
    let forger = Identity::generate().unwrap();
    let victim = Identity::generate().unwrap();
    let mut p = hostile_gossip_peer(&forger, &addr).await;
    publish(&mut p, signed(&victim, &advert(1, unix_ms(), 1))).await;

    // A flipped byte in the signature.
    let tamperer = Identity::generate().unwrap();
    let mut p2 = hostile_gossip_peer(&tamperer, &addr).await;
    let mut bytes = signed(&tamperer, &advert(1, unix_ms(), 1));
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    publish(&mut p2, bytes).await;

    // Timestamp an hour ahead.
    let skewed = Identity::generate().unwrap();
    let mut p3 = hostile_gossip_peer(&skewed, &addr).await;
    publish(
        &mut p3,
        signed(&skewed, &advert(1, unix_ms() + 3_600_000, 1)),
    )
    .await;

    // Oversized: a valid signature over an advert far above the size limit.
    let bloated = Identity::generate().unwrap();
    let mut p4 = hostile_gossip_peer(&bloated, &addr).await;
    let mut big = advert(1, unix_ms(), 1);
    big.listen_addrs = vec!["x".repeat(1 << 20)];
    let payload = olc_protocol::codec::encode(&big);
    assert!(payload.is_err(), "our own encoder refuses it");
    // Build the oversized envelope by hand, as a hostile peer would.
    let mut raw = PROTOCOL_VERSION.to_le_bytes().to_vec();
    raw.extend(vec![0xAB; 2 * 1024 * 1024]);
    publish(&mut p4, raw).await;

    // Random bytes.
    let noisy = Identity::generate().unwrap();
    let mut p5 = hostile_gossip_peer(&noisy, &addr).await;
    let mut rng = SplitMix(7);
    for len in [0, 1, 2, 3, 100, 5000] {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = p5.behaviour_mut().gossipsub.publish(adverts_topic(), data);
    }
    publish(&mut p5, vec![1, 0, 255, 255, 255]).await;

    for (who, id) in [
        ("forger", &forger),
        ("victim", &victim),
        ("tamperer", &tamperer),
        ("skewed", &skewed),
        ("bloated", &bloated),
        ("noisy", &noisy),
    ] {
        assert!(!registered(&c, &id.public_key()), "{who} was registered");
    }
    // The coordinator is alive and still answers.
    let listed = list_workers(&addr).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].public_key, honest.public_key());
    c.stop().await;
}

/// Deterministic bytes for hostile inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Sends raw bytes on a request-response protocol, bypassing our codec.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(16 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        self.read_request(p, io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        self.write_request(p, io, res).await
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "olc_net::libp2p::swarm::derive_prelude")]
struct RawRequests {
    raw: request_response::Behaviour<RawCodec>,
}

/// Sends every payload as a request on `protocol` to `target`, bypassing our codec, and
/// waits until each one has ended (answered or failed).
async fn send_raw(target: &Multiaddr, protocol: StreamProtocol, payloads: &[Vec<u8>]) {
    let identity = Identity::generate().unwrap();
    let behaviour = RawRequests {
        raw: request_response::Behaviour::new(
            [(protocol, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        ),
    };
    let mut swarm = SwarmBuilder::with_existing_identity(identity.to_libp2p_keypair())
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .build();
    let peer = olc_net::addr::peer_id_of(target).unwrap();
    swarm.dial(target.clone()).unwrap();
    for p in payloads {
        swarm.behaviour_mut().raw.send_request(&peer, p.clone());
    }
    let mut outstanding = payloads.len();
    while outstanding > 0 {
        let event = tokio::time::timeout(BOUND, swarm.select_next_some())
            .await
            .unwrap();
        if let SwarmEvent::Behaviour(RawRequestsEvent::Raw(
            request_response::Event::Message { .. }
            | request_response::Event::OutboundFailure { .. },
        )) = event
        {
            outstanding -= 1;
        }
    }
}

fn hostile_payloads() -> Vec<Vec<u8>> {
    let mut rng = SplitMix(42);
    let mut payloads = vec![vec![], vec![1], vec![1, 0], vec![1, 0, 0], vec![2, 0, 0]];
    for len in [3, 17, 64, 200, 4096] {
        payloads.push(rng.bytes(len));
        let mut framed = PROTOCOL_VERSION.to_le_bytes().to_vec();
        framed.extend(rng.bytes(len));
        payloads.push(framed);
    }
    // A length prefix claiming gigabytes, and a message over every limit.
    payloads.push([1, 0, 0, 252, 255, 255, 255, 255].to_vec());
    payloads.push(vec![0x5A; 9 * 1024 * 1024]);
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_every_protocol_do_not_crash_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator().await;
    let (wid, w) = worker(&c, dir.path()).await;
    wait_until("the worker is registered", || {
        registered(&c, &wid.public_key())
    })
    .await;
    let blob_id = w.blobs().put(&[9; 1000]).unwrap();

    let payloads = hostile_payloads();
    for target in [&c.listen_addrs()[0], &w.listen_addrs()[0]] {
        send_raw(target, RPC_PROTOCOL, &payloads).await;
        send_raw(target, BLOB_PROTOCOL, &payloads).await;
    }

    // Both still serve honest requests.
    assert_eq!(list_workers(&c.listen_addrs()[0]).await.len(), 1);
    let client = connect(&w.listen_addrs()[0]).await;
    assert_eq!(
        client.fetch_blob(blob_id, 1 << 20).await.unwrap(),
        vec![9; 1000]
    );
    w.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_moves_intact_and_respects_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator().await;
    let (_, w) = worker(&c, dir.path()).await;
    let data = SplitMix(1).bytes(3 * (blob::CHUNK_SIZE as usize) + 12_345);
    let id = w.blobs().put(&data).unwrap();
    let client = connect(&w.listen_addrs()[0]).await;
    let fetched = client.fetch_blob(id, 16 << 20).await.unwrap();
    assert_eq!(ContentId::of(&fetched), id);
    assert_eq!(fetched, data);

    assert!(matches!(
        client.fetch_blob(id, 1 << 20).await,
        Err(ClientError::BadBlob {
            source: BlobError::TooLarge { .. },
            ..
        })
    ));
    assert!(matches!(
        client
            .fetch_blob(ContentId::of(b"nobody has this"), 1 << 20)
            .await,
        Err(ClientError::BlobNotFound { .. })
    ));
    w.stop().await;
    c.stop().await;
}

/// Serves one blob with chunk 1 tampered, or with a forged outline.
struct Tampered {
    id: ContentId,
    bytes: Vec<u8>,
    forge_outline: bool,
}

impl BlobSource for Tampered {
    fn outline(&self, id: &ContentId) -> Option<BlobOutline> {
        (*id == self.id).then(|| {
            let mut o = BlobOutline::of(&self.bytes);
            if self.forge_outline {
                o.chunks[0][0] ^= 1;
            }
            o
        })
    }

    fn chunk(&self, id: &ContentId, index: u64) -> Option<Vec<u8>> {
        let o = BlobOutline::of(&self.bytes);
        let r = o.chunk_range(index).filter(|_| *id == self.id)?;
        let mut chunk = self.bytes[r.start as usize..r.end as usize].to_vec();
        if index == 1 {
            chunk[100] ^= 1;
        }
        Some(chunk)
    }
}

/// A node that answers blob requests from `source` until dropped.
async fn serve_blobs(source: Tampered) -> Multiaddr {
    let identity = Identity::generate().unwrap();
    let mut swarm = build_swarm(&identity, &NodeConfig::default()).unwrap();
    let addrs = olc_net::listen_and_wait(&mut swarm, &loopback_quic())
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Blobs(
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) = swarm.select_next_some().await
            {
                let _ = swarm
                    .behaviour_mut()
                    .blobs
                    .send_response(channel, blob::respond(&source, &request));
            }
        }
    });
    addrs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_match_its_content_id_is_refused() {
    let bytes = SplitMix(3).bytes(2 * (blob::CHUNK_SIZE as usize) + 10);
    let id = ContentId::of(&bytes);
    let addr = serve_blobs(Tampered {
        id,
        bytes: bytes.clone(),
        forge_outline: false,
    })
    .await;
    let client = connect(&addr).await;
    let err = client.fetch_blob(id, 16 << 20).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::BadBlob {
                source: BlobError::ChunkMismatch { index: 1, .. },
                ..
            }
        ),
        "{err}"
    );

    let addr = serve_blobs(Tampered {
        id,
        bytes,
        forge_outline: true,
    })
    .await;
    let client = connect(&addr).await;
    let err = client.fetch_blob(id, 16 << 20).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::BadBlob {
                source: BlobError::OutlineMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reaches_a_coordinator_over_tcp_when_quic_fails() {
    let dir = tempfile::tempdir().unwrap();
    // The coordinator listens on TCP only; the worker is given a QUIC address on the same
    // port, which nobody answers, and must fall back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = CoordinatorConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::start(&Identity::generate().unwrap(), cfg)
        .await
        .unwrap();
    let quic: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{}", c.peer_id())
        .parse()
        .unwrap();
    let identity = Identity::generate().unwrap();
    let w = Worker::start(&identity, worker_config(quic, dir.path()))
        .await
        .unwrap();
    wait_until("the worker is registered over TCP", || {
        registered(&c, &identity.public_key())
    })
    .await;
    w.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_address_without_a_peer_id_is_enough() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator().await;
    let with_id = c.listen_addrs()[0].clone();
    let bare: Multiaddr = with_id
        .iter()
        .filter(|p| !matches!(p, olc_net::libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    assert!(olc_net::addr::peer_id_of(&bare).is_none());
    let identity = Identity::generate().unwrap();
    let w = Worker::start(&identity, worker_config(bare.clone(), dir.path()))
        .await
        .unwrap();
    wait_until("registered via a bare address", || {
        registered(&c, &identity.public_key())
    })
    .await;
    // The client learns the peer id from the connection too.
    assert_eq!(connect(&bare).await.peer(), c.peer_id());
    w.stop().await;
    c.stop().await;
}
