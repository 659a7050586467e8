//! A signed message whose signature was checked once, where it entered the coordinator:
//! state machines that hold one never verify it again, on any tick.

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};
use olc_protocol::{ContentId, Message, PublicKey, Signed, SignedError};

/// A [`Signed`] envelope together with the body its signature covers. Only
/// [`Verified::check`] makes one, so holding it is proof that the signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    signed: Signed<T>,
    body: T,
}

impl<T: Message> Verified<T> {
    /// Checks the signature and decodes the body, once.
    pub fn check(signed: Signed<T>) -> Result<Self, SignedError> {
        let body = signed.verify()?;
        Ok(Self { signed, body })
    }

    /// The envelope as it was received: what is stored and forwarded.
    pub fn signed(&self) -> &Signed<T> {
        &self.signed
    }

    pub fn body(&self) -> &T {
        &self.body
    }

    pub fn signer(&self) -> PublicKey {
        self.signed.signer()
    }

    pub fn id(&self) -> ContentId {
        self.signed.id()
    }
}

/// Stored as the envelope alone, byte for byte what a [`Signed`] stores, so records keep
/// their format; the body is decoded again from it.
impl<T> Encode for Verified<T> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.signed.encode(encoder)
    }
}

/// Loading is an entry too: a stored envelope is verified once, when it is read back.
impl<T: Message, C> Decode<C> for Verified<T> {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let signed = Signed::<T>::decode(decoder)?;
        Self::check(signed).map_err(|e| DecodeError::OtherString(e.to_string()))
    }
}

impl<'de, T: Message, C> BorrowDecode<'de, C> for Verified<T> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        <Self as Decode<C>>::decode(decoder)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use olc_protocol::{Identity, JobProgress, Signed};

    use super::*;

    fn progress() -> JobProgress {
        JobProgress {
            job_id: ContentId::of(b"job"),
            assignment: ContentId::of(b"assignment"),
            step: 3,
            total: 9,
            loss: 0.5,
        }
    }

    #[test]
    fn a_good_signature_keeps_the_envelope_and_its_body() {
        let id = Identity::from_seed(&[3; 32]);
        let signed = Signed::sign(&id, &progress()).unwrap();
        let v = Verified::check(signed.clone()).unwrap();
        assert_eq!(v.body(), &progress());
        assert_eq!(v.signed(), &signed);
        assert_eq!(v.signer(), id.public_key());
        assert_eq!(v.id(), signed.id());
    }

    #[test]
    fn it_is_stored_as_its_envelope_and_verified_again_when_loaded() {
        let id = Identity::from_seed(&[3; 32]);
        let signed = Signed::sign(&id, &progress()).unwrap();
        let v = Verified::check(signed.clone()).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&v, config).unwrap();
        assert_eq!(bytes, bincode::encode_to_vec(&signed, config).unwrap());
        let (back, _): (Verified<JobProgress>, usize) =
            bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, v);
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(bincode::decode_from_slice::<Verified<JobProgress>, _>(&forged, config).is_err());
    }

    #[test]
    fn a_forged_envelope_is_refused() {
        let signed = Signed::sign(&Identity::from_seed(&[3; 32]), &progress()).unwrap();
        let mut bytes = signed.to_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = Signed::<JobProgress>::from_bytes(&bytes).unwrap();
        assert!(Verified::check(forged).is_err());
    }
}
