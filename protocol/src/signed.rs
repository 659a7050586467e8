//! Signed envelopes. Authority in OLC (a job, an assignment, an advert, a commitment, a
//! receipt) is always a `Signed<T>`: the canonical bytes of a `T`, who signed them, and
//! an ed25519 signature over those bytes prefixed with `T`'s domain tag.

use std::fmt;
use std::marker::PhantomData;

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::codec::{self, CodecError, Message};
use crate::identity::{Identity, IdentityError, PublicKey, Signature};
use crate::{ContentHasher, ContentId};

/// Fixed prefix of every signed byte string, so OLC signatures cannot be confused with
/// signatures the same key makes for anything else.
const SIGNING_CONTEXT: &[u8] = b"OLC signed message v1\0";

/// Bytes an envelope adds around its payload: signer, signature, length prefixes, header.
pub const ENVELOPE_OVERHEAD: usize = 32 + 64 + 16;

/// A `T` signed by some participant. The payload is kept as the exact bytes that were
/// signed; [`Signed::verify`] checks the signature before decoding them.
pub struct Signed<T> {
    payload: Vec<u8>,
    signer: PublicKey,
    signature: Signature,
    _type: PhantomData<fn() -> T>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error(transparent)]
    Signature(#[from] IdentityError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

fn signing_input<T: Message>(payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + T::NAME.len() + 1 + payload.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(T::NAME.as_bytes());
    input.push(0);
    input.extend_from_slice(payload);
    input
}

impl<T: Message> Signed<T> {
    pub fn sign(identity: &Identity, message: &T) -> Result<Self, CodecError> {
        let payload = codec::encode(message)?;
        let signature = identity.sign_raw(&signing_input::<T>(&payload));
        Ok(Self {
            payload,
            signer: identity.public_key(),
            signature,
            _type: PhantomData,
        })
    }

    /// Checks the signature, then decodes the payload. Nothing in an unverified payload is
    /// looked at.
    pub fn verify(&self) -> Result<T, SignedError> {
        self.signer
            .verify_raw(&signing_input::<T>(&self.payload), &self.signature)?;
        Ok(codec::decode::<T>(&self.payload)?)
    }

    /// The envelope's id: BLAKE3 over type, signer, signature and payload. Signatures are
    /// verified strictly (no malleability) and payloads are canonical, so one signed
    /// message has exactly one id. A job's id is the id of its signed spec.
    pub fn id(&self) -> ContentId {
        let mut h = ContentHasher::new();
        h.update(T::NAME.as_bytes())
            .update(&[0])
            .update(self.signer.as_bytes())
            .update(self.signature.as_bytes())
            .update(&self.payload);
        h.finalize()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes an envelope (not yet verified: call [`Signed::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes)
    }
}

impl<T> Signed<T> {
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signed bytes: a versioned encoding of `T`.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl<T: Message> Message for Signed<T> {
    const NAME: &'static str = T::NAME;
    const MAX_SIZE: usize = T::MAX_SIZE + ENVELOPE_OVERHEAD;
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            payload: self.payload.clone(),
            signer: self.signer,
            signature: self.signature,
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
            && self.signer == other.signer
            && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl<T> Encode for Signed<T> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.payload.encode(encoder)?;
        self.signer.encode(encoder)?;
        self.signature.encode(encoder)
    }
}

impl<T, C> Decode<C> for Signed<T> {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(Self {
            payload: Vec::<u8>::decode(decoder)?,
            signer: PublicKey::decode(decoder)?,
            signature: Signature::decode(decoder)?,
            _type: PhantomData,
        })
    }
}

impl<'de, T, C> BorrowDecode<'de, C> for Signed<T> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        <Self as Decode<C>>::decode(decoder)
    }
}

impl<T> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Signed", 3)?;
        s.serialize_field("signer", &self.signer)?;
        s.serialize_field("signature", &self.signature)?;
        s.serialize_field("payload", &hex::encode(&self.payload))?;
        s.end()
    }
}
