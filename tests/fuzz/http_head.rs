//! `http_head`: the bounded, incremental request-head parser
//! (`HeadReader::parse`) and what the server reads off a parsed head.
//!
//! Oracles: the result is the same whether the bytes arrive at once or in
//! pieces; bytes past the limit are never read (changing them changes
//! nothing); a head never ends past the limit or the input; a parsed head
//! printed back out parses to the same request.

use roomcast::codes::limits::{DEFAULT_MAX_HEADER_BYTES, MAX_HEADERS};
use roomcast::http::request::{BodyFraming, HeadReader, ParseError, Request, Version};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "http_head",
    check,
    generate,
    dictionary: &[
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"\r",
        b": ",
        b" ",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"GET ",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Connection: Upgrade",
        b"Upgrade: websocket",
        b"?token=",
        b"http://",
        b"Authorization: Bearer ",
        b"\x00",
        b"\xff",
        b"\t",
    ],
    max_len: 16 * 1024,
};

/// Everything the server reads from a head, owned, so that two parses can
/// be compared.
#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    method: String,
    path: String,
    query: Option<String>,
    version: Version,
    headers: Vec<(String, String)>,
    framing: Result<BodyFraming, ParseError>,
    keep_alive: bool,
    token: Option<String>,
}

type Outcome = Result<Option<Head>, ParseError>;

fn own(request: &Request<'_>, len: usize) -> Head {
    Head {
        len,
        method: request.method.to_owned(),
        path: request.path.to_owned(),
        query: request.query.map(str::to_owned),
        version: request.version,
        headers: request
            .header_pairs()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        framing: request.body_framing(),
        keep_alive: request.wants_keep_alive(),
        token: request.token().map(str::to_owned),
    }
}

fn parse(reader: &mut HeadReader, buf: &[u8], max: usize) -> Outcome {
    reader
        .parse(buf, max)
        .map(|parsed| parsed.map(|(request, len)| own(&request, len)))
}

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let small = 16 + rng.below(256);
    let max = rng.choose(&[
        DEFAULT_MAX_HEADER_BYTES,
        input.len(),
        input.len() / 2,
        small,
    ]);
    let whole = parse(&mut HeadReader::default(), input, max);
    if let Ok(Some(head)) = &whole {
        check_head(input, max, head);
    }
    assert_eq!(
        in_pieces(input, max, &rng.cuts(input.len())),
        whole,
        "split"
    );
    assert_eq!(
        past_limit_changed(input, max),
        whole,
        "bytes past the limit"
    );
}

/// Feeds growing prefixes to one reader, as the reactor does.
fn in_pieces(input: &[u8], max: usize, cuts: &[usize]) -> Outcome {
    let mut reader = HeadReader::default();
    for &cut in cuts {
        match parse(&mut reader, &input[..cut], max) {
            Ok(None) => continue,
            done => return done,
        }
    }
    Ok(None)
}

/// The same input with every byte past `max` turned into a bare LF, which
/// the parser refuses wherever it reads one.
fn past_limit_changed(input: &[u8], max: usize) -> Outcome {
    let mut changed = input.to_vec();
    for byte in changed.iter_mut().skip(max) {
        *byte = b'\n';
    }
    parse(&mut HeadReader::default(), &changed, max)
}

fn check_head(input: &[u8], max: usize, head: &Head) {
    assert!(
        head.len <= max && head.len <= input.len(),
        "head_len {}",
        head.len
    );
    assert!(input[..head.len].ends_with(b"\r\n\r\n"));
    assert!(head.headers.len() <= MAX_HEADERS);
    assert!(
        head.path == "*" || head.path.starts_with('/'),
        "path {:?}",
        head.path
    );
    let printed = print(head);
    let reparsed = parse(&mut HeadReader::default(), &printed, printed.len());
    let reparsed = reparsed
        .expect("a printed head parses")
        .expect("and is complete");
    assert_eq!(reparsed.method, head.method);
    assert_eq!(
        (reparsed.path, reparsed.query),
        (head.path.clone(), head.query.clone())
    );
    assert_eq!(reparsed.headers, head.headers);
    assert_eq!(reparsed.framing, head.framing);
}

/// A head in origin-form with the parsed fields.
fn print(head: &Head) -> Vec<u8> {
    let version = match head.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    let query = head
        .query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut out = format!("{} {}{query} {version}\r\n", head.method, head.path);
    for (name, value) in &head.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "OPTIONS", "HEAD", "DELETE", "X-Custom",
];
const TARGETS: &[&str] = &[
    "/ws",
    "/ws?token=abc.def.ghi",
    "/echo",
    "/publish",
    "/healthz",
    "/metrics",
    "/stats",
    "http://example.com:8080/ws?token=t",
    "http://example.com",
    "*",
    "/?a=1&b&token=",
    "/%7e/x",
];
const HEADERS: &[(&str, &str)] = &[
    ("Host", "localhost:8080"),
    ("Upgrade", "websocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Connection", "close"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "roomcast.v1, chat"),
    (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    ),
    ("Origin", "https://example.com"),
    ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    ("Authorization", "Basic dXNlcjpwYXNz"),
    ("Content-Length", "5"),
    ("Content-Length", "5, 5"),
    ("Transfer-Encoding", "chunked"),
    ("Transfer-Encoding", "gzip, chunked"),
    ("Expect", "100-continue"),
    ("User-Agent", "Zoë/1.0"),
    ("X-Empty", ""),
];

/// A realistic head, sometimes with one thing broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut lines = vec![format!(
        "{} {} {}",
        rng.pick(METHODS),
        rng.pick(TARGETS),
        rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "])
    )];
    let count = if rng.one_in(20) {
        60 + rng.below(10)
    } else {
        rng.below(10)
    };
    for _ in 0..count {
        let (name, value) = rng.pick(HEADERS);
        lines.push(format!(
            "{name}:{}{value}",
            rng.pick(&[" ", "", "  ", "\t"])
        ));
    }
    if rng.one_in(3) {
        break_one(rng, &mut lines);
    }
    let mut head = lines.join("\r\n").into_bytes();
    head.extend_from_slice(b"\r\n\r\n");
    if rng.one_in(3) {
        head.extend_from_slice(rng.choose(&[
            &b"hello"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x81\x85",
        ]));
    }
    head
}

fn break_one(rng: &mut Rng, lines: &mut [String]) {
    let at = rng.below(lines.len());
    let broken = match rng.below(8) {
        0 => format!("{}\nX: y", lines[at]),
        1 => format!(" {}", lines[at]),
        2 => lines[at].replacen(':', " :", 1),
        3 => format!("{}\0", lines[at]),
        4 => format!("{}\r", lines[at]),
        5 => format!("X-Pad: {}", "a".repeat(rng.below(10_000))),
        6 => "Content-Length: 5\r\nContent-Length: 6".to_owned(),
        _ => lines[at].replace(' ', "  "),
    };
    lines[at] = broken;
}
