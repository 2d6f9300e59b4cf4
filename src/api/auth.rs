//! Who calls the API (section 12): an `X-API-Key` that is one of
//! `--api-key`, or an `Authorization: Bearer` token of section 2 with
//! `admin: true`. Checked before anything else about the request.
//!
//! Keys are compared in constant time: each configured key and the one
//! presented are hashed (SHA-256, `ring`) and the digests compared by a
//! fold with no early exit, every key tried whatever the outcome, so
//! neither the key's bytes nor its length leak through timing. Nothing
//! here logs or echoes a credential.

use std::sync::Arc;

use ring::digest::{SHA256, digest};

use super::ApiError;
use crate::auth::{self, Keys};
use crate::codes::ErrorCode;

/// What an API caller publishes as (`from` of its room messages).
pub const KEY_CALLER: &str = "api";

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `from` of what it publishes: `"api"` for a key, the token's `sub`.
    pub from: Arc<str>,
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// `X-API-Key`.
    pub key: Option<&'a str>,
    /// The token of `Authorization: Bearer`.
    pub token: Option<&'a str>,
}

/// What a credential is checked against, and when.
pub struct Verifier<'a> {
    pub api_keys: &'a [String],
    pub jwt_keys: &'a Keys,
    pub now_unix: f64,
    pub leeway_secs: f64,
}

impl Verifier<'_> {
    /// The caller, or the `401`/`403` to answer. A key, when one is
    /// presented, decides alone: a wrong key is not rescued by a token.
    pub fn authenticate(&self, presented: Presented<'_>) -> Result<Caller, ApiError> {
        if let Some(key) = presented.key {
            return if self.is_api_key(key) {
                Ok(Caller {
                    from: Arc::from(KEY_CALLER),
                })
            } else {
                Err(unauthenticated())
            };
        }
        let Some(token) = presented.token else {
            return Err(unauthenticated());
        };
        let claims = auth::verify(token, self.jwt_keys, self.now_unix, self.leeway_secs).map_err(
            |e| match e.code() {
                ErrorCode::TokenExpired => ApiError::new(ErrorCode::TokenExpired, e.message()),
                _ => unauthenticated(),
            },
        )?;
        if !claims.admin {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the token is not an admin token",
            ));
        }
        Ok(Caller { from: claims.sub })
    }

    /// Whether `presented` is one of the keys, in constant time.
    fn is_api_key(&self, presented: &str) -> bool {
        let presented = digest(&SHA256, presented.as_bytes());
        self.api_keys.iter().fold(false, |found, key| {
            let key = digest(&SHA256, key.as_bytes());
            let same = constant_time_eq(presented.as_ref(), key.as_ref());
            found | same
        })
    }
}

/// Whether two digests are equal, without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        "an API key (X-API-Key) or an admin token (Authorization: Bearer) is required",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, mint};

    const SECRET: &str = "s3cret";

    fn verify(presented: Presented<'_>, now: f64) -> Result<Caller, ApiError> {
        let keys = Keys::new(&[SECRET.to_owned()]);
        let api_keys = ["k1".to_owned(), "key-two".to_owned()];
        Verifier {
            api_keys: &api_keys,
            jwt_keys: &keys,
            now_unix: now,
            leeway_secs: 0.0,
        }
        .authenticate(presented)
    }

    fn token(admin: bool, exp: u64) -> String {
        let claims = Claims {
            admin,
            ..Claims::new("ops", exp as f64)
        };
        mint(&claims, SECRET.as_bytes())
    }

    fn code(result: Result<Caller, ApiError>) -> ErrorCode {
        result.unwrap_err().code
    }

    #[test]
    fn any_configured_key_calls_as_api() {
        for key in ["k1", "key-two"] {
            let caller = verify(
                Presented {
                    key: Some(key),
                    token: None,
                },
                0.0,
            )
            .unwrap();
            assert_eq!(&*caller.from, "api");
        }
        for wrong in ["", "k", "k1 ", "key-twO", "k1k1"] {
            let presented = Presented {
                key: Some(wrong),
                token: None,
            };
            assert_eq!(code(verify(presented, 0.0)), ErrorCode::Unauthenticated);
        }
    }

    #[test]
    fn an_admin_token_calls_as_its_subject_and_others_are_refused() {
        let admin = token(true, 100);
        let caller = verify(
            Presented {
                key: None,
                token: Some(&admin),
            },
            50.0,
        )
        .unwrap();
        assert_eq!(&*caller.from, "ops");
        let expired = verify(
            Presented {
                key: None,
                token: Some(&admin),
            },
            200.0,
        );
        assert_eq!(code(expired), ErrorCode::TokenExpired);
        let plain = token(false, 100);
        let forbidden = verify(
            Presented {
                key: None,
                token: Some(&plain),
            },
            50.0,
        );
        assert_eq!(code(forbidden), ErrorCode::Forbidden);
        let forged = format!("{admin}x");
        let bad = verify(
            Presented {
                key: None,
                token: Some(&forged),
            },
            50.0,
        );
        assert_eq!(code(bad), ErrorCode::Unauthenticated);
        assert_eq!(
            code(verify(Presented::default(), 0.0)),
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn a_wrong_key_is_not_rescued_by_a_token() {
        let admin = token(true, 100);
        let presented = Presented {
            key: Some("nope"),
            token: Some(&admin),
        };
        assert_eq!(code(verify(presented, 50.0)), ErrorCode::Unauthenticated);
    }
}
