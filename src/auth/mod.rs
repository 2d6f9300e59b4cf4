//! Authentication: HS256 JWTs, verified against one or more server secrets.
//!
//! Owns: the verification keys (`Keys`), the order of the checks of
//! `docs/protocol.md` section 2 (`verify`), minting tokens (`mint`) and
//! generating a secret (`random_secret`). `jwt` owns the token encoding,
//! `claims` owns the claim types.
//!
//! Must not touch: HTTP, the clock (the caller passes `now_unix`), or what
//! the claims allow (room patterns are matched elsewhere). Never puts a
//! token or a secret into an error or a `Debug` output.

mod claims;
mod jwt;

pub use claims::{Claims, MAX_PATTERNS, Patterns, TimeClaims};

use crate::codes::ErrorCode;
use crate::codes::limits::MAX_TOKEN_LEN;
use base64::Engine as _;
use ring::hmac;
use std::fmt;

/// The server's verification keys: one HMAC-SHA256 key per `--jwt-secret`
/// (several for key rotation).
pub struct Keys {
    keys: Vec<hmac::Key>,
}

impl Keys {
    /// One key per secret. Empty secrets are skipped: a token signed with an
    /// empty key can be minted by anyone, so it must never be accepted.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Self {
        let keys = secrets
            .iter()
            .map(AsRef::as_ref)
            .filter(|secret| !secret.is_empty())
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret))
            .collect();
        Keys { keys }
    }

    /// Whether there is no key at all (every token would be refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

// Hand-written so that the secrets can never be printed.
impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.keys.len())
            .finish()
    }
}

/// Why a token was refused. Carries no part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token was given.
    Missing,
    /// Longer than `MAX_TOKEN_LEN`.
    TooLong,
    /// Not three base64url segments of JSON.
    Malformed,
    /// `alg` is not `HS256` (`none` included), or the header is critical.
    UnsupportedAlg,
    /// No key produced this signature.
    BadSignature,
    /// A required claim is missing, or a claim has the wrong type or bounds.
    InvalidClaims,
    /// `now >= exp + leeway`.
    Expired,
    /// `nbf - leeway > now`.
    NotYetValid,
}

impl AuthError {
    /// `TOKEN_EXPIRED` for the time checks, else `UNAUTHENTICATED`.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::Expired | Self::NotYetValid => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthenticated,
        }
    }

    /// A short, fixed message for error responses.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing token",
            Self::TooLong => "token is longer than 16384 bytes",
            Self::Malformed => "token is malformed",
            Self::UnsupportedAlg => "token algorithm must be HS256",
            Self::BadSignature => "token signature is invalid",
            Self::InvalidClaims => "token claims are missing or invalid",
            Self::Expired => "token has expired",
            Self::NotYetValid => "token is not valid yet",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// Verifies an HS256 token and returns its claims.
///
/// Cheap checks run first: presence, length (at most `MAX_TOKEN_LEN`), three
/// base64url segments, a header whose `alg` is exactly `HS256`. Then the
/// HMAC against each key in constant time, then the claims (types and
/// bounds), then the clock: expired when `now >= exp + leeway`, not yet
/// valid when `nbf - leeway > now`.
pub fn verify(
    token: &str,
    keys: &Keys,
    now_unix: f64,
    leeway_secs: f64,
) -> Result<Claims, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong);
    }
    let segments = jwt::split(token)?;
    jwt::check_header(segments.header)?;
    let mut payload = jwt::decode_segment(segments.payload)?;
    let signature = jwt::decode_signature(segments.signature)?;
    if !jwt::signed_by_any(&keys.keys, segments.signing_input.as_bytes(), &signature) {
        return Err(AuthError::BadSignature);
    }
    let (claims, times) = Claims::from_json(&mut payload).map_err(|error| match error {
        claims::ClaimsError::NotJson => AuthError::Malformed,
        claims::ClaimsError::Invalid => AuthError::InvalidClaims,
    })?;
    check_time(&claims, times, now_unix, leeway_secs)?;
    Ok(claims)
}

fn check_time(
    claims: &Claims,
    times: TimeClaims,
    now_unix: f64,
    leeway_secs: f64,
) -> Result<(), AuthError> {
    if now_unix >= claims.exp + leeway_secs {
        return Err(AuthError::Expired);
    }
    match times.nbf {
        Some(nbf) if nbf - leeway_secs > now_unix => Err(AuthError::NotYetValid),
        _ => Ok(()),
    }
}

/// Signs `claims` with HS256 (header `{"alg":"HS256","typ":"JWT"}`); used by
/// the tests and the load generator. Only the claims that are `Some`/`true`
/// are written; there is no `nbf` or `iat` (see `mint_with`).
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    mint_with(claims, TimeClaims::default(), secret)
}

/// `mint` with the time claims `times` (`roomcast token` writes `iat`).
pub fn mint_with(claims: &Claims, times: TimeClaims, secret: &[u8]) -> String {
    let mut payload = Vec::with_capacity(128);
    claims.write_json(times, &mut payload);
    jwt::sign(&payload, secret)
}

/// What a token minted here says: `roomcast token`, the demo's tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub sub: String,
    pub name: Option<String>,
    pub rooms: Vec<String>,
    pub publish: Vec<String>,
    pub admin: bool,
    pub rate: Option<f64>,
    pub ttl_secs: u64,
}

/// Mints the token `spec` describes, issued at `now` (seconds since the
/// Unix epoch: the caller's time, as everywhere in the sans-IO core),
/// signed with `secret`.
pub fn mint_spec(spec: &TokenSpec, secret: &[u8], now: u64) -> String {
    let patterns = |list: &[String]| -> Option<Patterns> {
        (!list.is_empty()).then(|| list.iter().map(|p| p.as_str().into()).collect())
    };
    let claims = Claims {
        name: spec.name.as_deref().map(Into::into),
        rooms: patterns(&spec.rooms),
        publish: patterns(&spec.publish),
        admin: spec.admin,
        rate: spec.rate,
        ..Claims::new(spec.sub.as_str(), (now + spec.ttl_secs) as f64)
    };
    let times = TimeClaims {
        nbf: None,
        iat: Some(now as f64),
    };
    mint_with(&claims, times, secret)
}

/// A random secret for a server started without one: 32 bytes from the
/// operating system's CSPRNG, base64url.
///
/// # Panics
///
/// When the operating system cannot provide random bytes; the server cannot
/// run safely without them, and this is only called at startup.
pub fn random_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A random number from the operating system, for ids that must not repeat
/// across restarts (room epochs). Called at start-up only.
pub fn random_u64() -> u64 {
    u64::from_ne_bytes(random_bytes::<8>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    const NOW: f64 = 1_700_000_000.0;
    const SECRET: &[u8] = b"test-secret";

    fn keys() -> Keys {
        Keys::new(&[SECRET])
    }

    fn claims(exp: f64) -> Claims {
        Claims::new("alice", exp)
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// A token with any header and payload JSON, signed with `SECRET`.
    fn raw_token(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn token_with_payload(payload: &str) -> String {
        raw_token(r#"{"alg":"HS256","typ":"JWT"}"#, payload)
    }

    fn check(token: &str) -> Result<Claims, AuthError> {
        verify(token, &keys(), NOW, 0.0)
    }

    #[test]
    fn valid_token() {
        let token = mint(&claims(NOW + 60.0), SECRET);
        assert_eq!(check(&token), Ok(claims(NOW + 60.0)));
    }

    #[test]
    fn minted_tokens_round_trip_every_claim() {
        let full = Claims {
            sub: "user-\"42\"".into(),
            exp: NOW + 3600.5,
            name: Some("Zoë".into()),
            rooms: Some(["lobby".into(), "prices:*".into()].into()),
            publish: Some(["*".into()].into()),
            admin: true,
            rate: Some(0.0),
        };
        let times = TimeClaims {
            nbf: Some(NOW - 10.0),
            iat: Some(NOW - 10.0),
        };
        assert_eq!(check(&mint_with(&full, times, SECRET)), Ok(full));
    }

    #[test]
    fn expired_and_not_yet_valid() {
        assert_eq!(check(&mint(&claims(NOW), SECRET)), Err(AuthError::Expired));
        assert_eq!(
            check(&mint(&claims(NOW - 1.0), SECRET)),
            Err(AuthError::Expired)
        );
        assert!(check(&mint(&claims(NOW + 0.001), SECRET)).is_ok());
        let not_before = |nbf| {
            let times = TimeClaims {
                nbf: Some(nbf),
                iat: None,
            };
            mint_with(&claims(NOW + 60.0), times, SECRET)
        };
        assert_eq!(check(&not_before(NOW + 1.0)), Err(AuthError::NotYetValid));
        assert!(check(&not_before(NOW)).is_ok());
        assert_eq!(AuthError::Expired.code(), ErrorCode::TokenExpired);
        assert_eq!(AuthError::NotYetValid.code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let expired = mint(&claims(NOW - 5.0), SECRET);
        assert!(verify(&expired, &keys(), NOW, 10.0).is_ok());
        assert_eq!(verify(&expired, &keys(), NOW, 5.0), Err(AuthError::Expired));
        let times = TimeClaims {
            nbf: Some(NOW + 5.0),
            iat: None,
        };
        let early = mint_with(&claims(NOW + 60.0), times, SECRET);
        assert!(verify(&early, &keys(), NOW, 5.0).is_ok());
        assert_eq!(
            verify(&early, &keys(), NOW, 4.0),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn bad_signature() {
        let token = mint(&claims(NOW + 60.0), b"another-secret");
        assert_eq!(check(&token), Err(AuthError::BadSignature));
        let good = mint(&claims(NOW + 60.0), SECRET);
        let (signed, _) = good.rsplit_once('.').unwrap();
        let forged = mint(
            &Claims {
                admin: true,
                ..claims(NOW + 60.0)
            },
            b"x",
        );
        let forged_payload = forged.split('.').nth(1).unwrap();
        let swapped = format!(
            "{}.{forged_payload}.{}",
            signed.split('.').next().unwrap(),
            good.rsplit('.').next().unwrap()
        );
        assert_eq!(check(&swapped), Err(AuthError::BadSignature));
        assert_eq!(
            verify(&good, &Keys::new::<&[u8]>(&[]), NOW, 0.0),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_rejected_with_and_without_a_signature() {
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60.0));
        assert_eq!(
            check(&format!("{header}.{payload}.")),
            Err(AuthError::UnsupportedAlg)
        );
        assert_eq!(
            check(&format!("{header}.{payload}")),
            Err(AuthError::Malformed)
        );
        let signed = raw_token(r#"{"alg":"none"}"#, r#"{"sub":"alice","exp":1e12}"#);
        assert_eq!(check(&signed), Err(AuthError::UnsupportedAlg));
    }

    #[test]
    fn other_algs_are_rejected() {
        for alg in ["HS512", "RS256", "ES256", "HS384"] {
            let token = raw_token(
                &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
                r#"{"sub":"a","exp":1e12}"#,
            );
            assert_eq!(check(&token), Err(AuthError::UnsupportedAlg), "{alg}");
        }
    }

    #[test]
    fn claim_errors() {
        let exp = NOW + 60.0;
        let cases = [
            format!(r#"{{"exp":{exp}}}"#),
            format!(r#"{{"sub":"{}","exp":{exp}}}"#, "a".repeat(129)),
            format!(r#"{{"sub":42,"exp":{exp}}}"#),
            r#"{"sub":"alice"}"#.to_string(),
            format!(r#"{{"sub":"alice","exp":"{exp}"}}"#),
            format!(r#"{{"sub":"alice","exp":{exp},"rooms":"lobby"}}"#),
            format!(r#"{{"sub":"alice","exp":{exp},"admin":"yes"}}"#),
        ];
        for payload in cases {
            assert_eq!(
                check(&token_with_payload(&payload)),
                Err(AuthError::InvalidClaims),
                "{payload}"
            );
        }
        let max_sub = format!(r#"{{"sub":"{}","exp":{exp}}}"#, "a".repeat(128));
        assert!(check(&token_with_payload(&max_sub)).is_ok());
        assert_eq!(
            check(&token_with_payload("not json")),
            Err(AuthError::Malformed)
        );
        assert_eq!(AuthError::InvalidClaims.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn second_secret_is_accepted() {
        let rotated = Keys::new(&["old-secret".to_string(), "new-secret".to_string()]);
        assert_eq!(rotated.len(), 2);
        for secret in ["old-secret", "new-secret"] {
            let token = mint(&claims(NOW + 60.0), secret.as_bytes());
            assert!(verify(&token, &rotated, NOW, 0.0).is_ok(), "{secret}");
        }
        let token = mint(&claims(NOW + 60.0), b"third");
        assert_eq!(
            verify(&token, &rotated, NOW, 0.0),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn empty_secrets_are_skipped() {
        let keys = Keys::new(&["", ""]);
        assert!(keys.is_empty());
        let token = mint(&claims(NOW + 60.0), b"");
        assert_eq!(
            verify(&token, &keys, NOW, 0.0),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens() {
        let good = mint(&claims(NOW + 60.0), SECRET);
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
            format!("{}+.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
            format!("{}.{}", parts[0], parts[1]),
            "abc".to_string(),
            "..".to_string(),
        ];
        for token in cases {
            assert_eq!(check(&token), Err(AuthError::Malformed), "{token}");
        }
        assert_eq!(check(""), Err(AuthError::Missing));
    }

    #[test]
    fn a_token_with_the_most_patterns_fits_and_a_longer_one_is_too_long() {
        let list: Patterns = (0..MAX_PATTERNS)
            .map(|i| format!("prices:SYM{i:04}").into_boxed_str())
            .collect();
        let full = Claims {
            rooms: Some(list.clone()),
            publish: Some(list),
            ..claims(NOW + 60.0)
        };
        let token = mint(&full, SECRET);
        assert!(
            token.len() > 8 * 1024 && token.len() <= MAX_TOKEN_LEN,
            "{}",
            token.len()
        );
        assert!(check(&token).is_ok());
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(check(&long), Err(AuthError::TooLong));
        assert_eq!(AuthError::TooLong.code(), ErrorCode::Unauthenticated);
        assert!(
            AuthError::TooLong
                .message()
                .contains(&MAX_TOKEN_LEN.to_string())
        );
    }

    #[test]
    fn display_never_contains_the_token() {
        let token = mint(&claims(NOW - 60.0), b"wrong");
        for bad in [token.clone(), format!("{token}x"), token.replace('.', "")] {
            let error = check(&bad).unwrap_err();
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(
                    !shown.contains(&bad) && !shown.contains(bad.split('.').next().unwrap()),
                    "{shown}"
                );
            }
        }
        assert!(!format!("{:?}", keys()).contains("test-secret"));
    }

    #[test]
    fn random_secrets_are_distinct_base64url() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(token in ".{0,300}") {
            let _ = check(&token);
        }

        #[test]
        fn arbitrary_dotted_base64_never_panics(
            header in "[A-Za-z0-9_-]{0,60}",
            payload in "[A-Za-z0-9_-]{0,120}",
            signature in "[A-Za-z0-9_-]{0,50}",
        ) {
            let _ = check(&format!("{header}.{payload}.{signature}"));
        }

        #[test]
        fn arbitrary_signed_payloads_never_panic(payload in ".{0,200}") {
            let _ = check(&token_with_payload(&payload));
        }
    }
}
