//! HS256 JWTs minted independently of the server's own code (ring + base64),
//! so a shared bug in the server's encoder cannot hide a verification bug.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The secret every test server is started with.
pub const SECRET: &str = "roomcast-test-secret-8c1f";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with `header` and `claims` (JSON texts), signed with HS256 and `secret`.
pub fn sign(header: &str, claims: &str, secret: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let sig = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

/// A JWT carrying `claims`, signed with [`SECRET`].
pub fn mint(claims: &str) -> String {
    sign(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
}

/// A valid token for `sub`, expiring in an hour.
pub fn token(sub: &str) -> String {
    mint(&format!(r#"{{"sub":"{sub}","exp":{}}}"#, now() + 3600))
}

/// A token for `sub` that expired a minute ago.
pub fn expired_token(sub: &str) -> String {
    mint(&format!(r#"{{"sub":"{sub}","exp":{}}}"#, now() - 60))
}

/// A token for `sub` not valid before an hour from now.
pub fn not_yet_valid_token(sub: &str) -> String {
    mint(&format!(
        r#"{{"sub":"{sub}","exp":{},"nbf":{}}}"#,
        now() + 7200,
        now() + 3600
    ))
}

/// A well-formed token for `sub` signed with a secret the server does not know.
pub fn wrongly_signed_token(sub: &str) -> String {
    let claims = format!(r#"{{"sub":"{sub}","exp":{}}}"#, now() + 3600);
    sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, "not-the-secret")
}

/// An unsigned `alg: none` token for `sub`.
pub fn alg_none_token(sub: &str) -> String {
    let claims = format!(r#"{{"sub":"{sub}","exp":{}}}"#, now() + 3600);
    format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(claims))
}
