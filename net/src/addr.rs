//! Multiaddr helpers for bootstrapping by explicit addresses.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use olc_protocol::PeerId;

/// The peer id at the end of `/…/p2p/<id>`, if the address names one.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// The TCP address for the same host and port as a QUIC address: the fallback dialled
/// when QUIC (UDP) is blocked. `None` for an address that is not QUIC.
pub fn tcp_fallback(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut was_quic = false;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Udp(p) => port = Some(p),
            Protocol::QuicV1 => {
                out.push(Protocol::Tcp(port?));
                was_quic = true;
            }
            other => out.push(other),
        }
    }
    was_quic.then_some(out)
}

/// Whether a listen address is only good for this host (so peers elsewhere can't use it).
pub fn is_loopback_or_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_address_falls_back_to_tcp_on_the_same_port() {
        let id = olc_protocol::Identity::from_seed(&[1; 32]).peer_id();
        let quic: Multiaddr = format!("/ip4/10.1.2.3/udp/7000/quic-v1/p2p/{id}")
            .parse()
            .unwrap();
        let tcp = tcp_fallback(&quic).unwrap();
        assert_eq!(tcp.to_string(), format!("/ip4/10.1.2.3/tcp/7000/p2p/{id}"));
        assert_eq!(peer_id_of(&quic), Some(id));
        let plain_tcp: Multiaddr = "/ip4/127.0.0.1/tcp/7000".parse().unwrap();
        assert_eq!(tcp_fallback(&plain_tcp), None);
        assert_eq!(peer_id_of(&plain_tcp), None);
    }
}
