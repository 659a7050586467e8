//! The registry of live workers, built from gossiped adverts. Pure state: the node feeds
//! it adverts and the clock, so every rule here is tested without a network.

use std::collections::BTreeMap;

use olc_protocol::{
    AdvertRejection, Amount, HardwareAdvert, PeerId, PublicKey, RegisteredWorker, check_advert,
};

/// A worker is expired after missing this many of its own advert intervals.
pub const MISSED_INTERVALS_BEFORE_EXPIRY: u64 = 3;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How far an advert's timestamp may be from the coordinator's clock.
    pub max_clock_skew_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_clock_skew_ms: 30_000,
        }
    }
}

/// What an accepted advert did to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A worker not in the registry (new, or back after expiry).
    Joined,
    Refreshed,
}

#[derive(Debug, Default)]
pub struct Registry {
    config: RegistryConfig,
    live: BTreeMap<PublicKey, RegisteredWorker>,
    /// Highest sequence number seen per worker, kept after expiry so that an old advert
    /// replayed later cannot bring a worker's stale state back.
    last_seq: BTreeMap<PublicKey, u64>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            config,
            live: BTreeMap::new(),
            last_seq: BTreeMap::new(),
        }
    }

    /// Checks a gossiped advert (`data`, published by `publisher`) and admits it.
    pub fn observe(
        &mut self,
        data: &[u8],
        publisher: Option<&PeerId>,
        now_ms: u64,
    ) -> Result<(PublicKey, Admission), AdvertRejection> {
        let (signed, advert) =
            check_advert(data, publisher, now_ms, self.config.max_clock_skew_ms)?;
        let key = signed.signer();
        Ok((key, self.admit(key, advert, now_ms)?))
    }

    fn admit(
        &mut self,
        key: PublicKey,
        advert: HardwareAdvert,
        now_ms: u64,
    ) -> Result<Admission, AdvertRejection> {
        if let Some(&last) = self.last_seq.get(&key)
            && advert.seq <= last
        {
            return Err(AdvertRejection::Stale {
                seq: advert.seq,
                last,
            });
        }
        self.last_seq.insert(key, advert.seq);
        match self.live.get_mut(&key) {
            Some(entry) => {
                entry.advert = advert;
                entry.last_seen_ms = now_ms;
                Ok(Admission::Refreshed)
            }
            None => {
                self.live.insert(
                    key,
                    RegisteredWorker {
                        public_key: key,
                        advert,
                        last_seen_ms: now_ms,
                        first_seen_ms: now_ms,
                    },
                );
                Ok(Admission::Joined)
            }
        }
    }

    /// Removes every worker that has missed three of its advert intervals; returns them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<PublicKey> {
        let expired: Vec<PublicKey> = self
            .live
            .values()
            .filter(|w| {
                let deadline = w.last_seen_ms.saturating_add(
                    w.advert
                        .interval_ms
                        .saturating_mul(MISSED_INTERVALS_BEFORE_EXPIRY),
                );
                now_ms > deadline
            })
            .map(|w| w.public_key)
            .collect();
        for key in &expired {
            self.live.remove(key);
        }
        expired
    }

    /// Live workers, ordered by public key (stable output for tables and tests).
    pub fn workers(&self) -> Vec<RegisteredWorker> {
        self.live.values().cloned().collect()
    }

    /// The lowest price per 1000 tokens any live worker asks, `None` when none is live.
    pub fn cheapest_price(&self) -> Option<Amount> {
        self.live.values().map(|w| w.advert.price_per_ktoken).min()
    }

    pub fn get(&self, key: &PublicKey) -> Option<&RegisteredWorker> {
        self.live.get(key)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The soonest time at which some worker could expire: when to look again.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.live
            .values()
            .map(|w| {
                w.last_seen_ms.saturating_add(
                    w.advert
                        .interval_ms
                        .saturating_mul(MISSED_INTERVALS_BEFORE_EXPIRY),
                )
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use olc_protocol::{Amount, Backend, CpuInfo, Hardware, Identity, Signed};

    const NOW: u64 = 1_800_000_000_000;

    fn advert(seq: u64, timestamp_ms: u64) -> HardwareAdvert {
        HardwareAdvert {
            seq,
            timestamp_ms,
            interval_ms: 1_000,
            hardware: Hardware {
                gpus: vec![],
                cpu: CpuInfo {
                    model: "test".into(),
                    logical_cores: 2,
                    features: vec![],
                },
                ram_total_bytes: 1 << 30,
                ram_available_bytes: 1 << 29,
                disk_free_bytes: 1 << 32,
            },
            backends: vec![Backend::Cpu],
            price_per_ktoken: Amount(5),
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

    fn signed(id: &Identity, a: &HardwareAdvert) -> Vec<u8> {
        Signed::sign(id, a).unwrap().to_bytes().unwrap()
    }

    #[test]
    fn a_valid_advert_joins_then_refreshes() {
        let mut reg = Registry::default();
        let w = Identity::from_seed(&[1; 32]);
        let (key, adm) = reg
            .observe(&signed(&w, &advert(1, NOW)), Some(&w.peer_id()), NOW)
            .unwrap();
        assert_eq!((key, adm), (w.public_key(), Admission::Joined));
        let (_, adm) = reg
            .observe(
                &signed(&w, &advert(2, NOW + 10)),
                Some(&w.peer_id()),
                NOW + 10,
            )
            .unwrap();
        assert_eq!(adm, Admission::Refreshed);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(&key).unwrap().advert.seq, 2);
        assert_eq!(reg.get(&key).unwrap().first_seen_ms, NOW);
        assert_eq!(reg.get(&key).unwrap().last_seen_ms, NOW + 10);
    }

    #[test]
    fn stale_skewed_forged_and_misattributed_adverts_are_refused() {
        let mut reg = Registry::new(RegistryConfig {
            max_clock_skew_ms: 5_000,
        });
        let w = Identity::from_seed(&[1; 32]);
        let other = Identity::from_seed(&[2; 32]);
        reg.observe(&signed(&w, &advert(10, NOW)), Some(&w.peer_id()), NOW)
            .unwrap();

        let stale = reg.observe(&signed(&w, &advert(10, NOW)), Some(&w.peer_id()), NOW);
        assert!(
            matches!(stale, Err(AdvertRejection::Stale { seq: 10, last: 10 })),
            "{stale:?}"
        );
        let older = reg.observe(&signed(&w, &advert(9, NOW)), Some(&w.peer_id()), NOW);
        assert!(matches!(older, Err(AdvertRejection::Stale { .. })));

        let future = reg.observe(
            &signed(&w, &advert(11, NOW + 6_000)),
            Some(&w.peer_id()),
            NOW,
        );
        assert!(matches!(future, Err(AdvertRejection::ClockSkew { .. })));
        let past = reg.observe(
            &signed(&w, &advert(11, NOW - 6_000)),
            Some(&w.peer_id()),
            NOW,
        );
        assert!(matches!(past, Err(AdvertRejection::ClockSkew { .. })));

        // Signed by `other` but published by `w`: someone relaying another's advert as theirs.
        let stolen = reg.observe(&signed(&other, &advert(1, NOW)), Some(&w.peer_id()), NOW);
        assert!(matches!(
            stolen,
            Err(AdvertRejection::WrongPublisher { .. })
        ));
        assert!(matches!(
            reg.observe(&signed(&w, &advert(12, NOW)), None, NOW),
            Err(AdvertRejection::NoPublisher)
        ));

        let mut forged = signed(&w, &advert(12, NOW));
        let n = forged.len();
        forged[n - 10] ^= 1;
        assert!(reg.observe(&forged, Some(&w.peer_id()), NOW).is_err());

        let mut bad_interval = advert(13, NOW);
        bad_interval.interval_ms = 0;
        assert!(matches!(
            reg.observe(&signed(&w, &bad_interval), Some(&w.peer_id()), NOW),
            Err(AdvertRejection::BadInterval(0))
        ));
        assert!(reg.observe(b"garbage", Some(&w.peer_id()), NOW).is_err());
        // Nothing refused changed the entry.
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(&w.public_key()).unwrap().advert.seq, 10);
    }

    #[test]
    fn workers_expire_after_three_missed_intervals() {
        let mut reg = Registry::default();
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        reg.observe(&signed(&a, &advert(1, NOW)), Some(&a.peer_id()), NOW)
            .unwrap();
        reg.observe(&signed(&b, &advert(1, NOW)), Some(&b.peer_id()), NOW)
            .unwrap();
        assert_eq!(reg.next_expiry_ms(), Some(NOW + 3_000));
        // b keeps advertising, a goes silent.
        reg.observe(
            &signed(&b, &advert(2, NOW + 2_500)),
            Some(&b.peer_id()),
            NOW + 2_500,
        )
        .unwrap();
        assert!(
            reg.expire(NOW + 3_000).is_empty(),
            "exactly three intervals is not yet missed"
        );
        assert_eq!(reg.expire(NOW + 3_001), vec![a.public_key()]);
        assert_eq!(reg.workers().len(), 1);
        // An old advert of a cannot resurrect it, a new one can.
        assert!(
            reg.observe(
                &signed(&a, &advert(1, NOW + 3_100)),
                Some(&a.peer_id()),
                NOW + 3_100
            )
            .is_err()
        );
        let (_, adm) = reg
            .observe(
                &signed(&a, &advert(2, NOW + 3_100)),
                Some(&a.peer_id()),
                NOW + 3_100,
            )
            .unwrap();
        assert_eq!(adm, Admission::Joined);
    }
}
