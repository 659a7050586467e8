//! Signatures: every message type round-trips, a signature never verifies as another
//! type, and no single flipped bit of an envelope survives.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use olc_protocol::codec::{self, Message};
use olc_protocol::*;

fn round_trip<T: Message + PartialEq + std::fmt::Debug>(signer: &Identity, msg: &T) {
    let signed = Signed::sign(signer, msg).unwrap();
    assert_eq!(signed.signer(), signer.public_key());
    let bytes = signed.to_bytes().unwrap();
    let back = Signed::<T>::from_bytes(&bytes).unwrap();
    assert_eq!(back, signed);
    assert_eq!(back.id(), signed.id());
    assert_eq!(&back.verify().unwrap(), msg);
    // Signing is deterministic (ed25519), so the id of a message is stable.
    assert_eq!(Signed::sign(signer, msg).unwrap().id(), signed.id());
}

#[test]
fn every_message_type_round_trips() {
    round_trip(&worker(), &advert());
    round_trip(&submitter(), &inference_job());
    round_trip(&submitter(), &finetune_job());
    round_trip(&coordinator(), &assignment());
    round_trip(&worker(), &commitment());
    round_trip(&worker(), &execution_receipt());
    round_trip(&coordinator(), &settlement_receipt());
}

#[test]
fn nested_signatures_verify_after_decoding_the_outer_message() {
    let receipt = Signed::sign(&coordinator(), &settlement_receipt()).unwrap();
    let bytes = receipt.to_bytes().unwrap();
    let outer = Signed::<SettlementReceipt>::from_bytes(&bytes)
        .unwrap()
        .verify()
        .unwrap();
    let exec = outer.executions[0].verify().unwrap();
    assert_eq!(outer.executions[0].signer(), worker().public_key());
    assert_eq!(exec, execution_receipt());
    assert_eq!(outer.slashes[0].evidence[0].verify().unwrap(), commitment());
}

#[test]
fn domain_tags_are_distinct() {
    let mut names = olc_protocol::messages::ALL_NAMES.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), olc_protocol::messages::ALL_NAMES.len());
}

/// Re-reads the envelope of one type as every other type: the signature must fail
/// (not just the decoding), which proves the domain tag is in the signed bytes.
fn assert_signature_fails_as<T: Message, U: Message>(signed: &Signed<T>) {
    let bytes = signed.to_bytes().unwrap();
    if T::NAME == U::NAME {
        // Its own type must verify, or this helper would prove nothing.
        assert!(
            Signed::<U>::from_bytes(&bytes).unwrap().verify().is_ok(),
            "{}",
            T::NAME
        );
        return;
    }
    let Ok(as_other) = Signed::<U>::from_bytes(&bytes) else {
        return; // refused even before verification: also fine
    };
    match as_other.verify() {
        Err(SignedError::Signature(IdentityError::BadSignature(_))) => {}
        Err(other) => panic!(
            "{} refused as {} for the wrong reason: {other}",
            T::NAME,
            U::NAME
        ),
        Ok(_) => panic!("{} accepted as {}", T::NAME, U::NAME),
    }
}

macro_rules! for_every_type {
    ($signed:expr, $t:ty) => {{
        let s: Signed<$t> = $signed;
        assert_signature_fails_as::<$t, HardwareAdvert>(&s);
        assert_signature_fails_as::<$t, JobSpec>(&s);
        assert_signature_fails_as::<$t, Assignment>(&s);
        assert_signature_fails_as::<$t, Commitment>(&s);
        assert_signature_fails_as::<$t, ExecutionReceipt>(&s);
        assert_signature_fails_as::<$t, SettlementReceipt>(&s);
    }};
}

#[test]
fn a_signature_moved_to_another_type_fails() {
    // Same signer for all, so only the domain tag can make the difference.
    let id = worker();
    for_every_type!(Signed::sign(&id, &advert()).unwrap(), HardwareAdvert);
    for_every_type!(Signed::sign(&id, &inference_job()).unwrap(), JobSpec);
    for_every_type!(Signed::sign(&id, &assignment()).unwrap(), Assignment);
    for_every_type!(
        Signed::sign(&id, &execution_receipt()).unwrap(),
        ExecutionReceipt
    );
    for_every_type!(
        Signed::sign(&id, &settlement_receipt()).unwrap(),
        SettlementReceipt
    );
    for_every_type!(Signed::sign(&id, &commitment()).unwrap(), Commitment);
}

#[test]
fn same_payload_bytes_under_another_domain_fail() {
    // Directly: a valid (payload, signer, signature) triple of one type, with the payload
    // also being a valid encoding for itself, must not verify under another type's name.
    let signed = Signed::sign(&worker(), &commitment()).unwrap();
    let bytes = signed.to_bytes().unwrap();
    let as_receipt = Signed::<ExecutionReceipt>::from_bytes(&bytes).unwrap();
    assert!(matches!(
        as_receipt.verify(),
        Err(SignedError::Signature(IdentityError::BadSignature(_)))
    ));
}

fn every_bit_flip_fails<T: Message>(signed: &Signed<T>) {
    let bytes = signed.to_bytes().unwrap();
    assert!(Signed::<T>::from_bytes(&bytes).unwrap().verify().is_ok());
    for i in 0..bytes.len() * 8 {
        let mut tampered = bytes.clone();
        tampered[i / 8] ^= 1 << (i % 8);
        let verdict = Signed::<T>::from_bytes(&tampered).map(|s| s.verify());
        assert!(
            !matches!(verdict, Ok(Ok(_))),
            "{}: flipping bit {i} of {} still verified",
            T::NAME,
            bytes.len() * 8
        );
    }
}

#[test]
fn one_flipped_bit_anywhere_fails() {
    every_bit_flip_fails(&Signed::sign(&worker(), &advert()).unwrap());
    every_bit_flip_fails(&Signed::sign(&submitter(), &inference_job()).unwrap());
    every_bit_flip_fails(&Signed::sign(&submitter(), &finetune_job()).unwrap());
    every_bit_flip_fails(&Signed::sign(&coordinator(), &assignment()).unwrap());
    every_bit_flip_fails(&Signed::sign(&worker(), &commitment()).unwrap());
    every_bit_flip_fails(&Signed::sign(&worker(), &execution_receipt()).unwrap());
    every_bit_flip_fails(&Signed::sign(&coordinator(), &settlement_receipt()).unwrap());
}

#[test]
fn a_job_id_changes_with_any_change_to_the_job() {
    let a = Signed::sign(&submitter(), &inference_job()).unwrap();
    let mut changed = inference_job();
    changed.nonce += 1;
    let b = Signed::sign(&submitter(), &changed).unwrap();
    let c = Signed::sign(&worker(), &inference_job()).unwrap();
    assert_ne!(a.id(), b.id());
    assert_ne!(
        a.id(),
        c.id(),
        "the same spec from another submitter is another job"
    );
}

#[test]
fn a_message_from_a_newer_protocol_is_refused_clearly() {
    let mut bytes = codec::encode(&commitment()).unwrap();
    bytes[..2].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    let err = codec::decode::<Commitment>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade olc"));

    // Also when the newer version is inside a correctly signed envelope.
    let id = worker();
    let signed = Signed::sign(&id, &commitment()).unwrap();
    let mut envelope = signed.to_bytes().unwrap();
    envelope[..2].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    assert!(matches!(
        Signed::<Commitment>::from_bytes(&envelope),
        Err(CodecError::UnsupportedVersion { .. })
    ));
}

#[test]
fn job_validation_rejects_meaningless_values() {
    let now = 1_790_000_000_000;
    assert!(inference_job().validate(now).is_ok());
    assert!(finetune_job().validate(now).is_ok());
    assert!(matches!(
        inference_job().validate(u64::MAX),
        Err(InvalidJob::DeadlinePassed { .. })
    ));

    let with_inference = |f: &dyn Fn(&mut InferenceJob)| {
        let mut spec = inference_job();
        let JobKind::Inference(job) = &mut spec.kind else {
            unreachable!()
        };
        f(job);
        spec.validate(now)
    };
    assert_eq!(
        with_inference(&|j| j.prompt = Prompt::Text(String::new())),
        Err(InvalidJob::EmptyPrompt)
    );
    assert_eq!(
        with_inference(&|j| j.prompt = Prompt::Tokens(vec![])),
        Err(InvalidJob::EmptyPrompt)
    );
    assert!(with_inference(&|j| j.max_tokens = 0).is_err());
    for t in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
        assert!(
            with_inference(&|j| j.sampling = Sampling::Sample {
                temperature: t,
                top_k: 0,
                top_p: 1.0
            })
            .is_err(),
            "temperature {t}"
        );
    }
    assert!(
        with_inference(&|j| j.sampling = Sampling::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.5
        })
        .is_err()
    );

    let with_params = |f: &dyn Fn(&mut TrainingParams)| {
        let mut spec = finetune_job();
        let JobKind::Finetune(job) = &mut spec.kind else {
            unreachable!()
        };
        f(&mut job.params);
        spec.validate(now)
    };
    assert!(with_params(&|p| p.rank = 0).is_err());
    assert!(with_params(&|p| p.learning_rate = f64::NAN).is_err());
    assert!(with_params(&|p| p.weight_decay = -1.0).is_err());
    assert!(with_params(&|p| p.batch_size = 0).is_err());
    assert!(with_params(&|p| p.length = TrainingLength::Epochs(0)).is_err());
    assert_eq!(
        with_params(&|p| p.targets.clear()),
        Err(InvalidJob::NoTargets)
    );
    assert_eq!(
        with_params(&|p| p.targets.push(TargetModule::QProj)),
        Err(InvalidJob::DuplicateTarget(TargetModule::QProj))
    );

    let mut spec = inference_job();
    spec.verification = VerificationPolicy::Replicate { replicas: 1 };
    assert!(spec.validate(now).is_err());
    spec.verification = VerificationPolicy::Sample { probability_ppm: 0 };
    assert!(spec.validate(now).is_err());
}

#[test]
fn verification_policy_text_round_trip_and_errors() {
    for text in [
        "single",
        "replicate:2",
        "replicate:16",
        "sample:0.1",
        "sample:1",
    ] {
        let policy: VerificationPolicy = text.parse().unwrap();
        assert_eq!(
            policy.to_string().parse::<VerificationPolicy>().unwrap(),
            policy,
            "{text}"
        );
    }
    assert_eq!(
        "sample:0.1".parse::<VerificationPolicy>().unwrap(),
        VerificationPolicy::Sample {
            probability_ppm: 100_000
        }
    );
    for bad in [
        "",
        "replicate",
        "replicate:1",
        "replicate:17",
        "replicate:x",
        "sample:0",
        "sample:1.5",
        "sample:nan",
        "sample:1e-9",
        "majority:3",
    ] {
        assert!(
            bad.parse::<VerificationPolicy>().is_err(),
            "{bad:?} was accepted"
        );
    }
}
