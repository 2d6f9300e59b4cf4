//! The `/demo` page of `serve --demo`: `demo.html` with a viewer token
//! minted for the visit and the number of symbols it shows. The feed that
//! publishes the prices is a client (`roomcast demo-feed`, or the binary's
//! in-process copy of it), not part of the server.

use crate::auth::{self, TokenSpec};

/// Symbols the page shows: rooms `prices:T000` to `prices:T019`.
pub const PAGE_SYMBOLS: usize = 20;

/// How long a visitor's token is valid.
const VIEWER_TOKEN_SECS: u64 = 3600;

/// The page for one visit at `unix_ms` (the connection's time, so the
/// token is issued when the request was read, not when a clock is asked).
pub fn page(secret: &[u8], unix_ms: u64) -> Vec<u8> {
    super::DEMO_HTML
        .replace("{{TOKEN}}", &viewer_token(secret, unix_ms / 1000))
        .replace("{{SYMBOLS}}", &PAGE_SYMBOLS.to_string())
        .into_bytes()
}

/// A token for one visitor: may join `prices:*`, for an hour from `now_secs`.
fn viewer_token(secret: &[u8], now_secs: u64) -> String {
    let spec = TokenSpec {
        sub: format!("viewer-{:x}", auth::random_u64() >> 40),
        name: Some("demo viewer".into()),
        rooms: vec!["prices:*".into()],
        ttl_secs: VIEWER_TOKEN_SECS,
        ..Default::default()
    };
    auth::mint_spec(&spec, secret, now_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"demo-secret";

    /// The token the page embeds (`const token = "...";`).
    fn token_of(page: &[u8]) -> String {
        let text = std::str::from_utf8(page).unwrap();
        let start = text.find("const token = \"").unwrap() + "const token = \"".len();
        let end = start + text[start..].find('"').unwrap();
        text[start..end].to_owned()
    }

    #[test]
    fn the_token_is_issued_at_the_given_time() {
        // A time far from the clock's: a token minted with the wall clock
        // would expire an hour after now, not after the given time.
        let given_ms = 1_000_000_000_000;
        let page = page(SECRET, given_ms);
        let token = token_of(&page);
        let keys = auth::Keys::new(&[SECRET]);
        let given = (given_ms / 1000) as f64;
        let claims = auth::verify(&token, &keys, given, 0.0).expect("valid at the given time");
        assert_eq!(claims.exp, given + VIEWER_TOKEN_SECS as f64);
        assert_eq!(
            auth::verify(&token, &keys, claims.exp, 0.0).unwrap_err(),
            auth::AuthError::Expired
        );
        let text = String::from_utf8(page).unwrap();
        assert!(text.contains(&format!("const count = {PAGE_SYMBOLS};")));
        assert!(!text.contains("{{"), "every placeholder is filled");
    }

    #[test]
    fn the_viewer_may_join_the_price_rooms_only() {
        let token = token_of(&page(SECRET, 5_000_000));
        let claims = auth::verify(&token, &auth::Keys::new(&[SECRET]), 5000.0, 0.0).unwrap();
        assert_eq!(claims.rooms.as_deref(), Some(&["prices:*".into()][..]));
        assert!(claims.publish.is_none() && !claims.admin);
    }
}
