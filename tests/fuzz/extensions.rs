//! `extensions`: `Sec-WebSocket-Extensions` offers through
//! `ws::extensions::negotiate`. Each line of the input is one header.
//!
//! Oracles: never a panic; the answer does not depend on the order of the
//! header lines nor on how the offers are spread over them (some line holds
//! an acceptable offer exactly when all of them together do); an accepted
//! offer is always answered with the one fixed response.

use roomcast::ws::extensions::negotiate;

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "extensions",
    check,
    generate,
    dictionary: &[
        b"permessage-deflate",
        b";",
        b",",
        b"=",
        b"\"",
        b"\\",
        b"client_max_window_bits",
        b"server_max_window_bits",
        b"server_no_context_takeover",
        b"client_no_context_takeover",
        b"15",
        b"8",
        b"\n",
    ],
    max_len: 8 * 1024,
};

const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn check(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.split('\n').collect();
    let answer = negotiate(lines.iter().copied());
    if let Some(deflate) = answer {
        let response = deflate.response();
        let window = deflate
            .server_max_window_bits
            .map(|bits| format!("; server_max_window_bits={bits}"))
            .unwrap_or_default();
        assert_eq!(response, format!("{RESPONSE}{window}"));
        assert!(
            deflate
                .server_max_window_bits
                .is_none_or(|bits| (8..=15).contains(&bits))
        );
    }
    let any_line = lines.iter().any(|line| negotiate([*line]).is_some());
    assert_eq!(
        answer.is_some(),
        any_line,
        "one line alone decides otherwise"
    );
    let reversed = negotiate(lines.iter().rev().copied());
    assert_eq!(
        reversed.is_some(),
        answer.is_some(),
        "order of header lines"
    );
}

const PARAMS: &[&str] = &[
    "client_max_window_bits",
    "client_max_window_bits=10",
    "client_max_window_bits=\"15\"",
    "client_max_window_bits=7",
    "server_max_window_bits=15",
    "server_max_window_bits=12",
    "server_no_context_takeover",
    "client_no_context_takeover",
    "client_no_context_takeover=1",
    "unknown",
    "server_max_window_bits=\"1\\5\"",
];

/// Header lines of offers, as browsers and libraries send them.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut lines = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let offers: Vec<String> = (0..1 + rng.below(3)).map(|_| offer(rng)).collect();
        lines.push(offers.join(rng.choose(&[", ", ",", " , "])));
    }
    lines.join("\n").into_bytes()
}

fn offer(rng: &mut Rng) -> String {
    let name = rng.choose(&[
        "permessage-deflate",
        "permessage-deflate",
        "x-webkit-deflate-frame",
        "PerMessage-Deflate",
    ]);
    let mut out = name.to_owned();
    for _ in 0..rng.below(4) {
        out.push_str(rng.choose(&["; ", ";", " ;\t"]));
        out.push_str(rng.choose(PARAMS));
    }
    out
}
