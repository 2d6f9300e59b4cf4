//! The JWS compact serialization of HS256 tokens (RFC 7515, RFC 7519).
//!
//! Owns: splitting a token into its three segments, base64url, the JOSE
//! header check (`alg` exactly `HS256`) and the HMAC-SHA256 signature, both
//! ways. Must not touch: claim types or the clock (`claims` and `auth`).

use super::AuthError;
use super::claims::nesting_depth_exceeds;
use crate::codes::limits::MAX_JSON_DEPTH;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use simd_json::{BorrowedValue, StaticNode};

/// `{"alg":"HS256","typ":"JWT"}`, base64url: every minted token starts so.
pub const HS256_HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// An HS256 signature is 32 bytes: 43 base64url characters without padding.
const SIGNATURE_B64_LEN: usize = 43;
const SIGNATURE_LEN: usize = 32;

/// The three segments of a compact token, still encoded.
pub struct Segments<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'a str,
}

/// Splits `token` into exactly three `.`-separated segments.
pub fn split(token: &str) -> Result<Segments<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(AuthError::Malformed)?;
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Decodes one base64url segment (no padding, canonical trailing bits).
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)
}

/// Checks the JOSE header: a JSON object whose `alg` is exactly `HS256`.
/// `typ` is not checked (it is optional); `crit` is refused because roomcast
/// understands no header extension (RFC 7515 section 4.1.11).
pub fn check_header(header_b64: &str) -> Result<(), AuthError> {
    if header_b64 == HS256_HEADER_B64 {
        return Ok(()); // The common case, without a JSON parse.
    }
    let mut json = decode_segment(header_b64)?;
    if nesting_depth_exceeds(&json, MAX_JSON_DEPTH) {
        return Err(AuthError::Malformed);
    }
    let value = simd_json::to_borrowed_value(&mut json).map_err(|_| AuthError::Malformed)?;
    let BorrowedValue::Object(header) = value else {
        return Err(AuthError::Malformed);
    };
    if header.contains_key("crit") {
        return Err(AuthError::UnsupportedAlg);
    }
    match header.get("alg") {
        Some(BorrowedValue::String(alg)) if alg == "HS256" => Ok(()),
        Some(BorrowedValue::String(_)) => Err(AuthError::UnsupportedAlg),
        Some(BorrowedValue::Static(StaticNode::Null)) | None => Err(AuthError::UnsupportedAlg),
        Some(_) => Err(AuthError::Malformed),
    }
}

/// Decodes the signature segment; anything but 32 bytes cannot be HS256.
pub fn decode_signature(signature_b64: &str) -> Result<[u8; SIGNATURE_LEN], AuthError> {
    if signature_b64.len() != SIGNATURE_B64_LEN {
        return Err(AuthError::BadSignature);
    }
    // 43 characters decode to exactly 32 bytes; the spare room only keeps
    // the decoder's length estimate happy.
    let mut buf = [0u8; SIGNATURE_LEN + 3];
    let len = URL_SAFE_NO_PAD
        .decode_slice(signature_b64, &mut buf)
        .map_err(|_| AuthError::Malformed)?;
    let mut signature = [0u8; SIGNATURE_LEN];
    match buf.get(..len) {
        Some(decoded) if len == SIGNATURE_LEN => signature.copy_from_slice(decoded),
        _ => return Err(AuthError::BadSignature),
    }
    Ok(signature)
}

/// Whether any key signed `signing_input`. Each comparison is constant-time
/// (`ring::hmac::verify`); which key matched may leak, which is harmless.
pub fn signed_by_any(keys: &[hmac::Key], signing_input: &[u8], signature: &[u8]) -> bool {
    keys.iter()
        .any(|key| hmac::verify(key, signing_input, signature).is_ok())
}

/// `header.payload.signature` with the HS256 header, for `payload_json`.
pub fn sign(payload_json: &[u8], secret: &[u8]) -> String {
    let mut token = String::with_capacity(HS256_HEADER_B64.len() + payload_json.len() * 4 / 3 + 48);
    token.push_str(HS256_HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload_json, &mut token);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn the_fixed_header_is_hs256_jwt() {
        assert_eq!(
            decode_segment(HS256_HEADER_B64).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn headers() {
        assert_eq!(check_header(&b64(r#"{"alg":"HS256"}"#)), Ok(()));
        assert_eq!(
            check_header(&b64(r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#)),
            Ok(())
        );
        for alg in ["none", "HS512", "RS256", "hs256", "HS256 "] {
            let header = b64(&format!(r#"{{"alg":"{alg}"}}"#));
            assert_eq!(
                check_header(&header),
                Err(AuthError::UnsupportedAlg),
                "{alg}"
            );
        }
        assert_eq!(
            check_header(&b64(r#"{"typ":"JWT"}"#)),
            Err(AuthError::UnsupportedAlg)
        );
        assert_eq!(
            check_header(&b64(r#"{"alg":"HS256","crit":["b64"]}"#)),
            Err(AuthError::UnsupportedAlg)
        );
        assert_eq!(
            check_header(&b64(r#"{"alg":256}"#)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check_header(&b64(r#"["HS256"]"#)),
            Err(AuthError::Malformed)
        );
        assert_eq!(check_header(&b64("not json")), Err(AuthError::Malformed));
        assert_eq!(check_header("e30="), Err(AuthError::Malformed));
        assert_eq!(check_header("!!"), Err(AuthError::Malformed));
    }

    #[test]
    fn split_needs_exactly_three_segments() {
        let parts = split("a.b.c").ok().unwrap();
        assert_eq!(
            (
                parts.header,
                parts.payload,
                parts.signature,
                parts.signing_input
            ),
            ("a", "b", "c", "a.b")
        );
        for bad in ["", "a", "a.b", "a.b.c.d", "a.b.c."] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures() {
        let token = sign(b"{}", b"secret");
        let parts = split(&token).ok().unwrap();
        let signature = decode_signature(parts.signature).unwrap();
        let keys = [
            hmac::Key::new(hmac::HMAC_SHA256, b"other"),
            hmac::Key::new(hmac::HMAC_SHA256, b"secret"),
        ];
        assert!(signed_by_any(
            &keys,
            parts.signing_input.as_bytes(),
            &signature
        ));
        assert!(!signed_by_any(
            &keys[..1],
            parts.signing_input.as_bytes(),
            &signature
        ));
        assert!(!signed_by_any(
            &[],
            parts.signing_input.as_bytes(),
            &signature
        ));
        assert_eq!(decode_signature(""), Err(AuthError::BadSignature));
        assert_eq!(
            decode_signature(&parts.signature[1..]),
            Err(AuthError::BadSignature)
        );
        assert_eq!(decode_signature(&"!".repeat(43)), Err(AuthError::Malformed));
    }
}
