//! Listeners: a QUIC-only listen list also gets TCP on the same port (the port a peer
//! whose UDP is blocked falls back to), and every failure to listen says why.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::time::Duration;

use olc_net::libp2p::futures::StreamExt;
use olc_net::libp2p::multiaddr::Protocol;
use olc_net::libp2p::swarm::SwarmEvent;
use olc_net::libp2p::{Multiaddr, Swarm};
use olc_net::{Behaviour, NodeConfig, NodeError, build_swarm, start_swarm};
use olc_protocol::Identity;

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn port_of(addr: &Multiaddr, tcp: bool) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) if tcp => Some(port),
        Protocol::Udp(port) if !tcp => Some(port),
        _ => None,
    })
}

fn tcp_addrs(bound: &[Multiaddr]) -> Vec<&Multiaddr> {
    bound
        .iter()
        .filter(|a| port_of(a, true).is_some())
        .collect()
}

/// Dials `target` and drives both swarms until the dialer is connected, returning the
/// address the connection was made on.
async fn connect(server: &mut Swarm<Behaviour>, target: Multiaddr) -> Multiaddr {
    let client_id = Identity::generate().unwrap();
    let mut client = build_swarm(&client_id, &NodeConfig::default()).unwrap();
    client.dial(target).unwrap();
    let connected = async {
        loop {
            tokio::select! {
                event = client.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                        return endpoint.get_remote_address().clone();
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("dial failed: {error}");
                    }
                    _ => {}
                },
                _ = server.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), connected)
        .await
        .expect("connected within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_listen_also_listens_on_tcp_at_the_port_quic_got() {
    let id = Identity::generate().unwrap();
    let quic = addr("/ip4/127.0.0.1/udp/0/quic-v1");
    let (mut swarm, bound) = start_swarm(&id, &NodeConfig::default(), &[quic])
        .await
        .unwrap();
    let quic_bound: Vec<_> = bound
        .iter()
        .filter(|a| a.iter().any(|p| p == Protocol::QuicV1))
        .collect();
    assert_eq!(quic_bound.len(), 1, "{bound:?}");
    let udp_port = port_of(quic_bound[0], false).unwrap();
    assert_ne!(udp_port, 0);
    let tcp = tcp_addrs(&bound);
    assert_eq!(tcp.len(), 1, "{bound:?}");
    assert_eq!(port_of(tcp[0], true), Some(udp_port), "{bound:?}");
    assert!(tcp[0].to_string().starts_with("/ip4/127.0.0.1/tcp/"));
    assert!(
        tcp[0]
            .to_string()
            .ends_with(&format!("/p2p/{}", id.peer_id()))
    );

    // What a worker does when QUIC fails: the same host and port over TCP, nothing else.
    let fallback = olc_net::addr::tcp_fallback(quic_bound[0]).unwrap();
    assert_eq!(&fallback, tcp[0]);
    let used = connect(&mut swarm, fallback.clone()).await;
    assert_eq!(port_of(&used, true), Some(udp_port), "{used}");
    assert!(used.iter().all(|p| p != Protocol::QuicV1), "{used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_quic_port_gets_tcp_on_the_same_port() {
    // A UDP port that was free a moment ago; another test taking it in between is unlikely.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quic = addr(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    let id = Identity::generate().unwrap();
    match start_swarm(&id, &NodeConfig::default(), &[quic]).await {
        Ok((_swarm, bound)) => {
            let tcp = tcp_addrs(&bound);
            assert_eq!(tcp.len(), 1, "{bound:?}");
            assert_eq!(port_of(tcp[0], true), Some(port));
        }
        // The TCP side of that port happened to be busy: the error must say so.
        Err(e) => assert!(e.to_string().contains("in use"), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_tcp_address_means_no_tcp_is_added() {
    let id = Identity::generate().unwrap();
    let addrs = [
        addr("/ip4/127.0.0.1/udp/0/quic-v1"),
        addr("/ip4/127.0.0.1/tcp/0"),
    ];
    let (_swarm, bound) = start_swarm(&id, &NodeConfig::default(), &addrs)
        .await
        .unwrap();
    assert_eq!(tcp_addrs(&bound).len(), 1, "{bound:?}");

    // TCP alone: nothing else is added either.
    let (_swarm, bound) = start_swarm(&id, &NodeConfig::default(), &[addr("/ip4/127.0.0.1/tcp/0")])
        .await
        .unwrap();
    assert_eq!(bound.len(), 1, "{bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_tcp_twin_port_is_reported_with_the_reason() {
    // Hold a TCP port, then ask for QUIC on the same port number: QUIC binds (UDP is a
    // separate port space), TCP cannot.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) else {
        println!("note: UDP port {port} is busy too; nothing to test this time");
        return;
    };
    drop(udp);
    let quic = addr(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    let id = Identity::generate().unwrap();
    let err = start_swarm(&id, &NodeConfig::default(), &[quic])
        .await
        .err()
        .expect("the TCP port is taken");
    let NodeError::Listen { addr, reason } = &err else {
        panic!("expected a listen error, got {err:?}");
    };
    assert_eq!(addr.to_string(), format!("/ip4/127.0.0.1/tcp/{port}"));
    assert!(reason.contains("in use"), "{reason}");
    assert!(reason.contains(&format!("TCP port {port}")), "{reason}");
    assert!(reason.contains("quic-v1"), "{reason}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_never_an_empty_reason() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let id = Identity::generate().unwrap();
    let tcp = addr(&format!("/ip4/127.0.0.1/tcp/{port}"));
    let err = start_swarm(&id, &NodeConfig::default(), &[tcp])
        .await
        .err()
        .expect("the port is taken");
    let NodeError::Listen { reason, .. } = &err else {
        panic!("expected a listen error, got {err:?}");
    };
    // libp2p's transport error displays as nothing; the cause is further down its chain.
    assert!(reason.contains("in use"), "{err}");
    assert!(!err.to_string().ends_with(": "), "{err}");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let quic = addr(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    let err = start_swarm(&id, &NodeConfig::default(), &[quic])
        .await
        .err()
        .expect("the UDP port is taken");
    assert!(err.to_string().contains("in use"), "{err}");

    let unsupported = addr("/ip4/127.0.0.1/udp/0");
    let err = start_swarm(&id, &NodeConfig::default(), &[unsupported])
        .await
        .err()
        .expect("a bare UDP address is not a transport");
    let NodeError::Listen { reason, .. } = &err else {
        panic!("expected a listen error, got {err:?}");
    };
    assert!(!reason.trim().is_empty(), "{err}");
}
