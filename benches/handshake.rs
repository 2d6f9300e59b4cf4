//! Cost of one WebSocket upgrade: parsing a browser-like request head,
//! `check_upgrade` (token in `Authorization`, one key, or two keys where the
//! second matches) and writing `101 Switching Protocols`; plus `auth::verify`
//! alone.
//!
//! Owns only measurements; must not touch the code it measures.

use criterion::{Criterion, criterion_group, criterion_main};
use roomcast::auth::{self, Claims, Keys, TimeClaims};
use roomcast::http::request::HeadReader;
use roomcast::ws::handshake::{UpgradePolicy, check_upgrade};
use std::hint::black_box;

const NOW: f64 = 1_700_000_000.0;
const SECRET: &[u8] = b"current-secret-0123456789abcdef";
const OLD_SECRET: &[u8] = b"previous-secret-0123456789abcdef";

fn token() -> String {
    let claims = Claims {
        sub: "user-12345".into(),
        exp: NOW + 3600.0,
        name: Some("Ada Lovelace".into()),
        rooms: Some(["lobby".into(), "prices:*".into()].into()),
        publish: None,
        admin: false,
        rate: None,
    };
    let times = TimeClaims {
        nbf: None,
        iat: Some(NOW),
    };
    auth::mint_with(&claims, times, SECRET)
}

/// What Chrome sends for `new WebSocket(url, ["roomcast.v1"])`, with the
/// token in `Authorization` as non-browser clients send it.
fn browser_request(token: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\n\
         Host: chat.example.com\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
         Upgrade: websocket\r\n\
         Origin: https://chat.example.com\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Sec-WebSocket-Protocol: roomcast.v1\r\n\
         Authorization: Bearer {token}\r\n\
         \r\n"
    )
    .into_bytes()
}

fn upgrade_once(request: &[u8], keys: &Keys, origins: &[String], out: &mut Vec<u8>) {
    let mut reader = HeadReader::default();
    let Ok(Some((req, _))) = reader.parse(request, 8192) else {
        panic!("benchmark request does not parse");
    };
    let policy = UpgradePolicy {
        keys,
        leeway_secs: 0.0,
        allowed_origins: origins,
        now_unix: NOW,
        compression: false,
        msgpack: true,
    };
    let Ok(accepted) = check_upgrade(&req, &policy, &mut || Ok(())) else {
        panic!("benchmark request is refused");
    };
    out.clear();
    accepted.write_response(out);
}

fn bench_upgrade(c: &mut Criterion) {
    let token = token();
    let request = browser_request(&token);
    let origins = vec!["https://chat.example.com".to_string()];
    let one_key = Keys::new(&[SECRET]);
    let two_keys = Keys::new(&[OLD_SECRET, SECRET]);
    let mut out = Vec::with_capacity(256);

    let mut group = c.benchmark_group("upgrade");
    group.bench_function("one_key", |b| {
        b.iter(|| upgrade_once(black_box(&request), &one_key, &origins, &mut out))
    });
    group.bench_function("two_keys_second_matches", |b| {
        b.iter(|| upgrade_once(black_box(&request), &two_keys, &origins, &mut out))
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    group.bench_function("one_key", |b| {
        b.iter(|| auth::verify(black_box(&token), &one_key, NOW, 0.0).is_ok())
    });
    group.bench_function("two_keys_second_matches", |b| {
        b.iter(|| auth::verify(black_box(&token), &two_keys, NOW, 0.0).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench_upgrade);
criterion_main!(benches);
