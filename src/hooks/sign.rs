//! The signature every hook request carries (section 13):
//! `X-Roomcast-Timestamp: <ms>` and `X-Roomcast-Signature: sha256=<hex>`,
//! the HMAC-SHA256 of `<timestamp>.<body>` under `--hook-secret`.
//!
//! The timestamp is inside the signed text so that a backend can refuse a
//! replayed request by its age; the body is signed as sent, byte for byte.
//! Owns the key and the signing; when a request is signed (as it is
//! written, so the timestamp is the sending time) is the client's call.

use ring::hmac;

/// The header carrying the signing time, in Unix milliseconds.
pub const TIMESTAMP_HEADER: &str = "X-Roomcast-Timestamp";
/// The header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Roomcast-Signature";

/// Length of `sha256=` and 64 hex digits.
pub const SIGNATURE_LEN: usize = 7 + 64;

/// The hook secret, ready to sign with.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// `sha256=<hex>` of `<timestamp_ms>.<body>`.
    pub fn sign(&self, timestamp_ms: u64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(timestamp_ms.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        let mut out = String::with_capacity(SIGNATURE_LEN);
        out.push_str("sha256=");
        for byte in tag.as_ref() {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0xf));
        }
        out
    }
}

// By hand: the key must never be printed.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0xf)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed apart from ring, by Python and OpenSSL:
    /// `hmac.new(b'hook-secret', b'1700000000123.{"events":[]}', hashlib.sha256).hexdigest()`
    /// `printf '1700000000123.{"events":[]}' | openssl dgst -sha256 -hmac hook-secret`
    #[test]
    fn signs_the_timestamp_a_dot_and_the_body() {
        let signer = Signer::new(b"hook-secret");
        assert_eq!(
            signer.sign(1_700_000_000_123, br#"{"events":[]}"#),
            "sha256=4a901bb7d7469467e5598abb412d3f7122c14cdb9fba8f9a85c848a822a73cea"
        );
        // `hmac.new(b'key', b'0.', hashlib.sha256).hexdigest()`
        let signature = Signer::new(b"key").sign(0, b"");
        assert_eq!(
            signature,
            "sha256=85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d"
        );
        assert_eq!(signature.len(), SIGNATURE_LEN);
    }

    #[test]
    fn the_timestamp_and_the_key_change_the_signature() {
        let signer = Signer::new(b"k");
        assert_ne!(signer.sign(1, b"{}"), signer.sign(2, b"{}"));
        assert_ne!(signer.sign(1, b"{}"), Signer::new(b"k2").sign(1, b"{}"));
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }
}
