//! `jwt`: token strings through `auth::verify` with known secrets.
//!
//! Oracles: never a panic; a token is accepted only when its signature is
//! the HS256 HMAC of its exact signing input under one of the verifier's
//! secrets, in canonical base64url (so no modified token passes, and no
//! token signed with another secret); an empty secret accepts nothing; the
//! accepted claims mint a token that verifies to the same claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use roomcast::auth::{Keys, mint, verify};

use crate::engine::{Rng, Target};
use crate::json::{JsonGen, quote};

pub const TARGET: Target = Target {
    name: "jwt",
    check,
    generate,
    dictionary: &[
        b".",
        b"..",
        b"=",
        b"-",
        b"_",
        b"+",
        b"/",
        b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        b"eyJhbGciOiJub25lIn0",
        b"e30",
        b"A",
        b"AA",
        b"AAA",
    ],
    max_len: 20 * 1024,
};

const SECRET: &[u8] = b"fuzz-secret-one";
const OTHER: &[u8] = b"fuzz-secret-two";
/// 2023-11-14, well inside the `exp` the generator writes.
const NOW: f64 = 1_700_000_000.0;

fn check(input: &[u8]) {
    let token = String::from_utf8_lossy(input);
    let keysets: [&[&[u8]]; 3] = [&[SECRET], &[OTHER], &[SECRET, OTHER]];
    for secrets in keysets {
        let leeway = if secrets.len() == 2 { 60.0 } else { 0.0 };
        let Ok(claims) = verify(&token, &Keys::new(secrets), NOW, leeway) else {
            continue;
        };
        assert!(
            signed_by(&token, secrets),
            "accepted a token not signed with the secret"
        );
        assert!(!claims.sub.is_empty() && claims.sub.len() <= 128);
        assert!(NOW < claims.exp + leeway, "accepted an expired token");
        let again = verify(&mint(&claims, secrets[0]), &Keys::new(secrets), NOW, leeway);
        assert_eq!(
            again.as_ref(),
            Ok(&claims),
            "minted claims do not verify the same"
        );
    }
    assert!(
        verify(&token, &Keys::new(&[""]), NOW, 60.0).is_err(),
        "empty secret"
    );
}

/// The independent signature check: HMAC of `header.payload`, compared
/// with a signature segment that must be canonical base64url.
fn signed_by(token: &str, secrets: &[&[u8]]) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let canonical = URL_SAFE_NO_PAD.encode(&signature) == token[signing_input.len() + 1..];
    canonical
        && secrets.iter().any(|secret| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
            hmac::sign(&key, signing_input.as_bytes()).as_ref() == signature.as_slice()
        })
}

/// A signed token with a header and claims of realistic and odd shapes.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let header = rng.choose(&[
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"alg":"HS256"}"#,
        r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#,
        r#"{"alg":"none"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"alg":null}"#,
        r#"{"alg":["HS256"]}"#,
        r#"["alg","HS256"]"#,
    ]);
    let payload = payload(rng);
    let secret = if rng.one_in(4) { OTHER } else { SECRET };
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    token.into_bytes()
}

fn payload(rng: &mut Rng) -> String {
    let mut json_gen = JsonGen::new(rng);
    let sub = *json_gen
        .rng
        .pick(&["alice", "", "Zoë", "a very long user name that goes on"]);
    let mut fields = vec![format!("\"sub\":{}", quote(sub))];
    let exp = json_gen.rng.choose(&[
        "1800000000",
        "1700000000",
        "1699999990",
        "1e400",
        "\"soon\"",
    ]);
    fields.push(format!("\"exp\":{exp}"));
    let optional = [
        ("nbf", json_gen.number()),
        ("iat", "1700000000".to_owned()),
        ("name", json_gen.string()),
        ("rooms", "[\"lobby\",\"chat:*\"]".to_owned()),
        ("pub", "[\"news:*\",\"*\"]".to_owned()),
        ("admin", "true".to_owned()),
        ("rate", json_gen.number()),
        ("x", json_gen.value(2)),
    ];
    for (key, value) in optional {
        if json_gen.rng.one_in(3) {
            fields.push(format!("\"{key}\":{value}"));
        }
    }
    json_gen.shuffle(&mut fields);
    let text = format!("{{{}}}", fields.join(","));
    String::from_utf8_lossy(&json_gen.maybe_break(text.into_bytes())).into_owned()
}
