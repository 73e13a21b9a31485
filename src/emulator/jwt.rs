//! HS256 JSON Web Tokens, just enough for the emulator: sign a claims object and
//! verify a token it signed. The key is random per emulator start, so tokens
//! never outlive the process that issued them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    /// Not three base64url segments with a JSON object in the middle.
    #[error("malformed token")]
    Malformed,
    /// Signed with another key, or altered.
    #[error("bad signature")]
    Signature,
}

/// Signs and verifies with one HMAC key.
pub(crate) struct Signer {
    /// 64 bytes: SHA-256's block size, so HMAC uses the key as is.
    key: [u8; 64],
}

impl Signer {
    /// A signer with a fresh random key.
    pub(crate) fn random() -> Self {
        Signer {
            key: rand::random(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // The key array has exactly the block size HMAC-SHA256 takes.
        <HmacSha256 as KeyInit>::new(GenericArray::from_slice(&self.key))
    }

    /// `header.payload.signature` for these claims.
    pub(crate) fn sign(&self, claims: &Map<String, Value>) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token this signer issued. Checks the signature only;
    /// expiry and token kind are the caller's business.
    pub(crate) fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtError> {
        let mut parts = token.trim().split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| JwtError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JwtError::Malformed)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwtError::Malformed),
        }
    }
}

/// Read the claims of any JWT without checking its signature (for tests and
/// diagnostics; the emulator itself always verifies).
pub fn decode_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({"operator_id": 21, "exp": 1_900_000_000})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn signs_and_verifies() {
        let s = Signer::random();
        let t = s.sign(&claims());
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(s.verify(&t).unwrap(), claims());
        assert_eq!(decode_claims(&t).unwrap(), claims());
    }

    #[test]
    fn other_key_or_altered_payload_is_refused() {
        let (a, b) = (Signer::random(), Signer::random());
        let t = a.sign(&claims());
        assert_eq!(b.verify(&t), Err(JwtError::Signature));
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(r#"{"operator_id":22,"exp":1900000000}"#);
        assert_eq!(a.verify(&parts.join(".")), Err(JwtError::Signature));
        assert_eq!(a.verify("not-a-jwt"), Err(JwtError::Malformed));
        assert_eq!(a.verify("a.b.c.d"), Err(JwtError::Malformed));
        assert_eq!(a.verify("a.b.!!"), Err(JwtError::Malformed));
    }
}
