//! Every decoder gets at least 10,000 random and 10,000 mutated byte strings: none may
//! panic, and whatever decodes must re-encode to the same bytes (canonical form).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use olc_protocol::codec::{self, Message};
use olc_protocol::*;
use proptest::prelude::*;

const CASES: u32 = 10_000;

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
    },
    Truncate {
        len: usize,
    },
    /// Overwrite a run with 0xff: turns length prefixes into huge claims.
    Saturate {
        at: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), 1usize..10).prop_map(|(at, len)| Mutation::Saturate { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        _ if n == 0 => bytes.push(0),
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Set { at, byte } => bytes[at % n] = byte,
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Mutation::Remove { at } => {
            bytes.remove(at % n);
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Saturate { at, len } => {
            for b in bytes.iter_mut().skip(at % n).take(len) {
                *b = 0xff;
            }
        }
    }
}

/// Random bytes, half of them behind a valid version header so the body decoder is
/// reached and not just the version check.
fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(header, body)| {
            if header {
                let mut v = PROTOCOL_VERSION.to_le_bytes().to_vec();
                v.extend(body);
                v
            } else {
                body
            }
        })
}

/// Decodes as a plain message and as a signed envelope (verifying it), which between
/// them reach every decoder of the type.
fn exercise<T: Message>(bytes: &[u8]) {
    if let Ok(value) = codec::decode::<T>(bytes) {
        assert_eq!(
            codec::encode(&value).unwrap(),
            bytes,
            "{}: not canonical",
            T::NAME
        );
    }
    if let Ok(env) = Signed::<T>::from_bytes(bytes) {
        assert_eq!(
            env.to_bytes().unwrap(),
            bytes,
            "{} envelope: not canonical",
            T::NAME
        );
        let _ = env.verify();
    }
}

macro_rules! fuzz_type {
    ($name:ident, $t:ty, $sample:expr, $signer:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]

                #[test]
                fn random_bytes_never_panic(bytes in random_frame()) {
                    exercise::<$t>(&bytes);
                }

                #[test]
                fn mutated_messages_never_panic(
                    mutations in proptest::collection::vec(mutation(), 1..4),
                    signed in any::<bool>(),
                ) {
                    let sample: $t = $sample;
                    let mut bytes = if signed {
                        Signed::sign(&$signer, &sample).unwrap().to_bytes().unwrap()
                    } else {
                        codec::encode(&sample).unwrap()
                    };
                    for m in &mutations {
                        apply(&mut bytes, m);
                    }
                    exercise::<$t>(&bytes);
                }
            }

            #[test]
            fn oversized_is_refused_before_decoding() {
                let sample: $t = $sample;
                let mut bytes = codec::encode(&sample).unwrap();
                bytes.resize(<$t as Message>::MAX_SIZE + 1, 0);
                assert!(matches!(
                    codec::decode::<$t>(&bytes),
                    Err(CodecError::TooLarge { .. })
                ));
                let mut env = Signed::sign(&$signer, &sample).unwrap().to_bytes().unwrap();
                env.resize(<Signed<$t> as Message>::MAX_SIZE + 1, 0);
                assert!(matches!(
                    Signed::<$t>::from_bytes(&env),
                    Err(CodecError::TooLarge { .. })
                ));
            }
        }
    };
}

fuzz_type!(hardware_advert, HardwareAdvert, advert(), worker());
fuzz_type!(job_spec, JobSpec, inference_job(), submitter());
fuzz_type!(finetune_spec, JobSpec, finetune_job(), submitter());
fuzz_type!(assignment_msg, Assignment, assignment(), coordinator());
fuzz_type!(commitment_msg, Commitment, commitment(), worker());
fuzz_type!(
    execution_receipt_msg,
    ExecutionReceipt,
    execution_receipt(),
    worker()
);
fuzz_type!(
    settlement_receipt_msg,
    SettlementReceipt,
    settlement_receipt(),
    coordinator()
);
fuzz_type!(rpc_request_msg, RpcRequest, rpc_request(), worker());
fuzz_type!(rpc_response_msg, RpcResponse, rpc_response(), coordinator());
fuzz_type!(blob_request_msg, BlobRequest, blob_request(), worker());
fuzz_type!(blob_response_msg, BlobResponse, blob_response(), worker());
fuzz_type!(rpc_submit_msg, RpcRequest, rpc_submit(), worker());
fuzz_type!(rpc_job_view_msg, RpcResponse, rpc_job_view(), coordinator());
fuzz_type!(manifest_msg, olc_protocol::Manifest, manifest(), worker());

#[test]
fn a_length_prefix_claiming_gigabytes_is_refused_without_allocating() {
    // A signed envelope whose payload length claims 4 GiB.
    let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
    bytes.push(252); // varint marker: u32 follows
    bytes.extend(u32::MAX.to_le_bytes());
    bytes.extend([0u8; 96]);
    let err = Signed::<JobSpec>::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::TooLarge { .. } | CodecError::Malformed { .. }
        ),
        "{err}"
    );
}
