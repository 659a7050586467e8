//! The accepted range of every daemon and command setting that a flag or a config file
//! can give, in one place, so a flag and its TOML key are refused alike and the error
//! names the range. Job parameters that travel to workers are limited by the protocol
//! (`JobSpec::validate`), not here.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{Result, bail};

/// Compute threads of a job or a local run: more than any machine has cores.
pub const THREADS: RangeInclusive<usize> = 1..=1024;
/// Referee threads; 0 runs no referee.
pub const REFEREE_THREADS: RangeInclusive<usize> = 0..=1024;
/// Fine-tunes a worker runs at once.
pub const MAX_JOBS: RangeInclusive<u32> = 1..=1024;
/// Inference jobs a worker generates at once: each holds a KV cache in memory.
pub const MAX_STREAMS: RangeInclusive<u32> = 1..=1024;
/// Size of a worker's cache, in GiB (up to 1 PiB).
pub const CACHE_GIB: RangeInclusive<u64> = 1..=1 << 20;
/// Memory for a worker's resident models, in GiB; 0 keeps none.
pub const MODEL_CACHE_GIB: RangeInclusive<u64> = 0..=1 << 20;
/// A worker's price per 1000 tokens.
pub const PRICE: RangeInclusive<u64> = 0..=1_000_000_000;
/// The stake a coordinator requires: a trillion credits is beyond any ledger we run, and
/// keeps stake arithmetic far from overflow.
pub const MIN_STAKE: RangeInclusive<u64> = 0..=1_000_000_000_000;
/// Clock skew a coordinator tolerates in adverts: below a second honest clocks fail; above
/// an hour a replayed advert is as good as new.
pub const MAX_CLOCK_SKEW: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
/// A job's deadline from submission: past a month, a job is more likely forgotten than
/// still wanted, and its escrow would sit locked all that time.
pub const DEADLINE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600);
/// How long a command waits for a coordinator.
pub const TIMEOUT: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

/// `value`, or an error that names the flag and the accepted range.
pub fn check<T: PartialOrd + Display>(
    flag: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<T> {
    if !range.contains(&value) {
        bail!(
            "{flag} must be between {} and {}, got {value}",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

/// As [`check`], for durations, written as a user writes them ("10s", "30days").
pub fn check_duration(
    flag: &str,
    value: Duration,
    range: &RangeInclusive<Duration>,
) -> Result<Duration> {
    if !range.contains(&value) {
        bail!(
            "{flag} must be between {} and {}, got {}",
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end()),
            humantime::format_duration(value)
        );
    }
    Ok(value)
}

/// clap's parser for `--timeout`.
pub fn parse_timeout(text: &str) -> Result<Duration> {
    check_duration("--timeout", humantime::parse_duration(text)?, &TIMEOUT)
}

/// clap's parser for `--deadline`.
pub fn parse_deadline(text: &str) -> Result<Duration> {
    check_duration("--deadline", humantime::parse_duration(text)?, &DEADLINE)
}

/// clap's parser for `--threads` of local runs.
pub fn parse_threads(text: &str) -> Result<usize> {
    check("--threads", text.parse::<usize>()?, &THREADS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_values_are_refused_with_the_range() {
        let err = check("--threads", 100_000, &THREADS)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--threads must be between 1 and 1024, got 100000");
        assert!(check("--max-jobs", 0, &MAX_JOBS).is_err());
        assert!(check("--min-stake", u64::MAX, &MIN_STAKE).is_err());
        let err = parse_deadline("100000d").unwrap_err().to_string();
        assert!(err.contains("between 1s and 30days"), "{err}");
        assert!(check_duration("--max-clock-skew", Duration::ZERO, &MAX_CLOCK_SKEW).is_err());
        assert!(parse_timeout("0s").is_err());
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("many").is_err());
    }

    #[test]
    fn sensible_values_pass_unchanged() {
        assert_eq!(check("--threads", 8, &THREADS).unwrap(), 8);
        assert_eq!(check("--referee-threads", 0, &REFEREE_THREADS).unwrap(), 0);
        assert_eq!(parse_deadline("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
    }
}
