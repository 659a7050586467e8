//! Daemon configuration files (TOML). Every setting is also a flag; a flag given on the
//! command line wins over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use olc_net::libp2p::Multiaddr;
use serde::Deserialize;

/// A config file is a few lines; refuse to read anything absurd.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkerFile {
    #[serde(default)]
    pub coordinator: Vec<Multiaddr>,
    #[serde(default)]
    pub listen: Vec<Multiaddr>,
    pub data: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub price: Option<u64>,
    #[serde(default, with = "opt_duration")]
    pub advert_interval: Option<Duration>,
    pub max_jobs: Option<u32>,
    pub max_streams: Option<u32>,
    pub mdns: Option<bool>,
    pub threads: Option<usize>,
    pub cache_gib: Option<u64>,
    pub model_cache_gib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CoordinatorFile {
    #[serde(default)]
    pub listen: Vec<Multiaddr>,
    pub data: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    pub max_clock_skew: Option<Duration>,
    pub mdns: Option<bool>,
    pub faucet: Option<bool>,
    pub min_stake: Option<u64>,
    /// e.g. "replicate:2" or "sample:0.1".
    pub default_verify: Option<String>,
    pub referee_threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewayFile {
    pub coordinator: Option<Multiaddr>,
    pub key: Option<PathBuf>,
    /// e.g. "127.0.0.1:8080".
    pub listen: Option<std::net::SocketAddr>,
    pub api_keys: Option<PathBuf>,
    pub max_fee: Option<u64>,
    /// e.g. "single" or "replicate:2".
    pub verify: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub deadline: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// Reads a config file, or the defaults when no file is given.
pub fn load<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "config file {} is {} bytes; that is not a config file",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
}

/// Durations written as in flags: "10s", "500ms", "2m".
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The flag if given, else the file's value.
pub fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// The flag's list if non-empty, else the file's.
pub fn pick_list<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() { file } else { flag }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_file_parses_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "coordinator = [\"/ip4/127.0.0.1/udp/7000/quic-v1\"]\nprice = 25\n\
             advert-interval = \"500ms\"\nmdns = true\n",
        )
        .unwrap();
        let file: WorkerFile = load(Some(&path)).unwrap();
        assert_eq!(file.coordinator.len(), 1);
        assert_eq!(file.advert_interval, Some(Duration::from_millis(500)));
        assert_eq!(pick(Some(30), file.price), Some(30));
        assert_eq!(pick(None, file.price), Some(25));
        assert_eq!(pick_list(vec![], file.coordinator.clone()).len(), 1);
    }

    #[test]
    fn the_shipped_example_configs_parse() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let worker: WorkerFile = load(Some(&deploy.join("worker.toml"))).unwrap();
        assert_eq!(worker.coordinator.len(), 1);
        assert_eq!(worker.advert_interval, Some(Duration::from_secs(10)));
        let coordinator: CoordinatorFile = load(Some(&deploy.join("coordinator.toml"))).unwrap();
        assert_eq!(coordinator.listen.len(), 2);
        assert_eq!(coordinator.max_clock_skew, Some(Duration::from_secs(30)));
    }

    #[test]
    fn gateway_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "coordinator = \"/ip4/127.0.0.1/udp/7000/quic-v1\"\nlisten = \"0.0.0.0:8080\"\n\
             max-fee = 5000\nverify = \"replicate:2\"\ndeadline = \"2m\"\n",
        )
        .unwrap();
        let file: GatewayFile = load(Some(&path)).unwrap();
        assert!(file.coordinator.is_some());
        assert_eq!(file.listen.map(|a| a.port()), Some(8080));
        assert_eq!(file.max_fee, Some(5000));
        assert_eq!(file.verify.as_deref(), Some("replicate:2"));
        assert_eq!(file.deadline, Some(Duration::from_secs(120)));
        assert_eq!(file.timeout, None);
    }

    #[test]
    fn bad_config_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("unknown.toml", "prise = 3\n", "unknown field"),
            (
                "addr.toml",
                "coordinator = [\"not an address\"]\n",
                "bad config file",
            ),
            (
                "dur.toml",
                "advert-interval = \"soon\"\n",
                "bad config file",
            ),
            ("syntax.toml", "price = \n", "bad config file"),
        ];
        for (name, text, expect) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", load::<WorkerFile>(Some(&path)).unwrap_err());
            assert!(err.contains(expect), "{name}: {err}");
        }
        let missing = load::<CoordinatorFile>(Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read config file"));
    }
}
