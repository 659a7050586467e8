//! The wire codec. Every message that crosses a process boundary goes through here, so
//! this is where the bad-input rules live: a size limit checked before any decoding, a
//! protocol version checked before the body is looked at, no trailing bytes, and one
//! canonical encoding per value (so hashes and signatures over bytes mean one thing).
//!
//! Frame: `version: u16 little-endian` followed by the bincode body (standard config:
//! little-endian, variable-length integers).

use bincode::config::{Configuration, LittleEndian, Varint};
use bincode::{Decode, Encode};

/// The protocol this build speaks. Bump it when a message's shape changes.
///
/// 2: adverts carry inference slots apart from job slots and the models held in memory;
/// job failures say whose fault they are; account views list unbonding releases.
/// 3: inference tokens stream to followers, submitters cancel, and a fine-tune may name
/// the adapter it publishes.
pub const PROTOCOL_VERSION: u16 = 3;
/// The oldest protocol this build still accepts: a version 2 fine-tune spec has another
/// shape.
pub const MIN_PROTOCOL_VERSION: u16 = 3;

/// No message of any type may be larger than this. It is also bincode's allocation
/// limit, so a length prefix claiming more than this is refused before anything is
/// allocated for it.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

const HEADER_LEN: usize = 2;

type Config = Configuration<LittleEndian, Varint, bincode::config::Limit<MAX_MESSAGE_BYTES>>;
const CONFIG: Config = bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>();

/// A type that travels on the wire.
pub trait Message: Encode + Decode<()> {
    /// Unique per type. It names the type in errors and is the domain tag of its
    /// signatures, so a signature over one type never verifies as another.
    const NAME: &'static str;
    /// Encoded size limit for this type, header included; at most [`MAX_MESSAGE_BYTES`].
    const MAX_SIZE: usize;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what} of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error(
        "{what} uses protocol version {got}, but this olc supports versions \
         {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}; {hint}"
    )]
    UnsupportedVersion {
        what: &'static str,
        got: u16,
        hint: &'static str,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("malformed {what}: {extra} unexpected bytes after the end of the message")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("malformed {what}: not in canonical encoding")]
    NonCanonical { what: &'static str },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// Encodes a message with its version header, refusing one that peers would refuse.
pub fn encode<T: Message>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = PROTOCOL_VERSION.to_le_bytes().to_vec();
    out.extend(encode_body(T::NAME, message)?);
    let limit = limit_of::<T>();
    if out.len() > limit {
        return Err(CodecError::TooLarge {
            what: T::NAME,
            len: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// Decodes a message, checking size, version, trailing bytes and canonical form.
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, CodecError> {
    let limit = limit_of::<T>();
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            what: T::NAME,
            len: bytes.len(),
            limit,
        });
    }
    let version = peek_version(T::NAME, bytes)?;
    check_version(T::NAME, version)?;
    decode_body(T::NAME, &bytes[HEADER_LEN..])
}

/// The protocol version a frame claims, read without decoding the body.
pub fn peek_version(what: &'static str, bytes: &[u8]) -> Result<u16, CodecError> {
    match bytes {
        [lo, hi, ..] => Ok(u16::from_le_bytes([*lo, *hi])),
        _ => Err(CodecError::Malformed {
            what,
            reason: format!("{} bytes is shorter than the version header", bytes.len()),
        }),
    }
}

fn check_version(what: &'static str, got: u16) -> Result<(), CodecError> {
    if got > PROTOCOL_VERSION {
        Err(CodecError::UnsupportedVersion {
            what,
            got,
            hint: "upgrade olc to talk to this peer",
        })
    } else if got < MIN_PROTOCOL_VERSION {
        Err(CodecError::UnsupportedVersion {
            what,
            got,
            hint: "the peer runs an outdated olc",
        })
    } else {
        Ok(())
    }
}

fn limit_of<T: Message>() -> usize {
    T::MAX_SIZE.min(MAX_MESSAGE_BYTES)
}

fn encode_body<T: Encode>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::encode_to_vec(value, CONFIG).map_err(|e| CodecError::Encode {
        what,
        reason: e.to_string(),
    })
}

fn decode_body<T: Encode + Decode<()>>(what: &'static str, body: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::decode_from_slice::<T, _>(body, CONFIG).map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => CodecError::TooLarge {
            what,
            len: body.len(),
            limit: MAX_MESSAGE_BYTES,
        },
        other => CodecError::Malformed {
            what,
            reason: other.to_string(),
        },
    })?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            what,
            extra: body.len() - used,
        });
    }
    // Re-encoding must give back the same bytes: otherwise two byte strings would carry
    // one value, and ids or signatures computed over bytes could be forged by re-encoding.
    if encode_body(what, &value)? != body {
        return Err(CodecError::NonCanonical { what });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Encode, Decode)]
    struct Probe {
        flag: bool,
        items: Vec<u64>,
        text: String,
    }

    impl Message for Probe {
        const NAME: &'static str = "test.probe";
        const MAX_SIZE: usize = 1024;
    }

    fn probe() -> Probe {
        Probe {
            flag: true,
            items: vec![1, 300, 70_000],
            text: "hi".into(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&probe()).unwrap();
        assert_eq!(&bytes[..2], &PROTOCOL_VERSION.to_le_bytes());
        assert_eq!(decode::<Probe>(&bytes).unwrap(), probe());
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let mut bytes = encode(&probe()).unwrap();
        bytes.resize(Probe::MAX_SIZE + 1, 0);
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(CodecError::TooLarge {
                what: "test.probe",
                len: 1025,
                limit: 1024
            })
        );
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let big = Probe {
            flag: false,
            items: vec![],
            text: "x".repeat(2000),
        };
        assert!(matches!(encode(&big), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // flag, then a varint length of u64::MAX for `items`.
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.push(1);
        bytes.push(253);
        bytes.extend(u64::MAX.to_le_bytes());
        let err = decode::<Probe>(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge { .. } | CodecError::Malformed { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn newer_and_older_versions_get_a_clear_error() {
        let mut bytes = encode(&probe()).unwrap();
        bytes[..2].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let err = decode::<Probe>(&bytes).unwrap_err();
        assert!(
            matches!(err, CodecError::UnsupportedVersion { got, .. } if got == PROTOCOL_VERSION + 1)
        );
        assert!(err.to_string().contains("upgrade olc"), "{err}");
        bytes[..2].copy_from_slice(&0u16.to_le_bytes());
        assert!(
            decode::<Probe>(&bytes)
                .unwrap_err()
                .to_string()
                .contains("outdated")
        );
    }

    #[test]
    fn trailing_and_truncated_bytes_are_refused() {
        let mut bytes = encode(&probe()).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(CodecError::TrailingBytes {
                what: "test.probe",
                extra: 1
            })
        );
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode::<Probe>(&bytes),
            Err(CodecError::Malformed { .. })
        ));
        assert!(matches!(
            decode::<Probe>(&[1]),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn non_canonical_varint_is_refused() {
        // `items` length 1 written as a 3-byte varint (251 marker + u16) instead of 1 byte.
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.push(0); // flag = false
        bytes.extend([251, 1, 0]); // items.len() = 1, non-minimal
        bytes.push(5); // items[0] = 5
        bytes.push(0); // text = ""
        let err = decode::<Probe>(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::NonCanonical { .. } | CodecError::Malformed { .. }
            ),
            "{err}"
        );
    }
}
