//! `resp`: Redis replies through `redis::resp::parse`, the bytes a Redis
//! server (or anything pretending to be one) sends the bridge.
//!
//! Oracles: a reply never claims more bytes than it was given; the bytes
//! after a reply do not change it; every shorter prefix of a reply is
//! incomplete, never an error; an error stays an error whatever follows;
//! a parsed reply written back out parses to the same reply; commands the
//! bridge writes parse as arrays of their arguments.

use roomcast::redis::resp::{MAX_DEPTH, Reply, parse, write_command};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "resp",
    check,
    generate,
    dictionary: &[
        b"\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"_\r\n",
        b"#t\r\n",
        b"*1\r\n",
        b">3\r\n",
        b"%1\r\n",
        b"=7\r\ntxt:",
        b"!3\r\nERR\r\n",
        b":-",
        b"$",
        b"*",
        b"\r",
        b"\n",
    ],
    max_len: 16 * 1024,
};

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let result = parse(input);
    let mut extended = input.to_vec();
    extended.extend_from_slice(b"+NEXT\r\n*1\r\n");
    match &result {
        Ok(Some((reply, used))) => {
            assert!(*used > 0 && *used <= input.len(), "used {used}");
            assert_eq!(parse(&extended), result, "bytes after the reply");
            let prefix = rng.below(*used);
            assert_eq!(
                parse(&input[..prefix]),
                Ok(None),
                "prefix of {prefix} bytes"
            );
            check_round_trip(reply);
        }
        Ok(None) => {
            let prefix = rng.below(input.len() + 1);
            assert_eq!(
                parse(&input[..prefix]),
                Ok(None),
                "prefix of {prefix} bytes"
            );
        }
        Err(_) => assert_eq!(parse(&extended), result, "an error became something else"),
    }
    check_command(input);
}

/// Writes a reply in canonical RESP; `None` when a status or error holds a
/// CR (only a verbatim error can) and has no line form.
pub fn write(reply: &Reply, out: &mut Vec<u8>) -> Option<()> {
    let items = |kind: u8, items: &[Reply], out: &mut Vec<u8>| {
        out.extend_from_slice(format!("{}{}\r\n", char::from(kind), items.len()).as_bytes());
        items.iter().try_for_each(|item| write(item, out))
    };
    match reply {
        Reply::Status(text) | Reply::Error(text) if text.contains('\r') => return None,
        Reply::Status(text) => out.extend_from_slice(format!("+{text}\r\n").as_bytes()),
        Reply::Error(text) => out.extend_from_slice(format!("-{text}\r\n").as_bytes()),
        Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(bytes) => {
            out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(list) => items(b'*', list, out)?,
        Reply::Push(list) => items(b'>', list, out)?,
        Reply::Nil => out.extend_from_slice(b"_\r\n"),
    }
    Some(())
}

fn check_round_trip(reply: &Reply) {
    let mut written = Vec::new();
    if write(reply, &mut written).is_none() {
        return;
    }
    let again = parse(&written);
    assert_eq!(
        again,
        Ok(Some((reply.clone(), written.len()))),
        "round trip"
    );
}

/// The input's lines as the arguments of a command.
fn check_command(input: &[u8]) {
    let args: Vec<&[u8]> = input.split(|&b| b == b'\n').take(64).collect();
    let mut command = Vec::new();
    write_command(&mut command, &args);
    let expected = Reply::Array(args.iter().map(|a| Reply::Bulk(a.to_vec())).collect());
    assert_eq!(
        parse(&command),
        Ok(Some((expected, command.len()))),
        "a written command"
    );
}

/// A reply tree in RESP2 or RESP3 forms, sometimes with one field broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    reply(rng, 0, &mut out);
    if rng.one_in(3) {
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out[at] = b'\n',
            1 => out.insert(at, b'9'),
            2 => out.truncate(at),
            _ => out[at] = b'?',
        }
    }
    out
}

fn reply(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    let nested = depth + 1 < MAX_DEPTH && !rng.one_in(3);
    let kind = if nested { rng.below(16) } else { rng.below(12) };
    let line =
        |out: &mut Vec<u8>, text: &str| out.extend_from_slice(format!("{text}\r\n").as_bytes());
    match kind {
        0 => line(out, rng.choose(&["+OK", "+PONG", "+", "+QUEUED"])),
        1 => line(out, rng.choose(&["-ERR unknown command", "-NOSCRIPT", "-"])),
        2 => line(
            out,
            rng.choose(&[":0", ":-7", ":9223372036854775807", ":-9223372036854775808"]),
        ),
        3 | 4 => {
            let len = rng.below(40);
            let bytes = rng.bytes(len);
            line(out, &format!("${}", bytes.len()));
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"\r\n");
        }
        5 => line(out, rng.choose(&["$-1", "*-1", "_"])),
        6 => line(out, rng.choose(&["#t", "#f"])),
        7 => line(out, rng.choose(&[",3.14", ",inf", "(12345678901234567890"])),
        8 => out.extend_from_slice(b"=15\r\ntxt:Some string\r\n"),
        9 => out.extend_from_slice(b"!21\r\nSYNTAX invalid syntax\r\n"),
        10 => write_command(out, &["SUBSCRIBE", "room:lobby"]),
        11 => line(out, "*0"),
        kind => {
            let count = rng.below(4);
            let (prefix, items) = match kind {
                12 => ('*', count),
                13 => ('>', count),
                14 => ('~', count),
                _ => ('%', count * 2),
            };
            let shown = if prefix == '%' { count } else { items };
            line(out, &format!("{prefix}{shown}"));
            for _ in 0..items {
                reply(rng, depth + 1, out);
            }
        }
    }
}
