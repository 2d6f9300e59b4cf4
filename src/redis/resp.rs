//! RESP, the Redis wire protocol, sans-IO: commands written into a buffer,
//! replies parsed incrementally from the bytes read so far. Reads RESP2 and
//! the RESP3 types a `HELLO 3` connection gets (maps, sets, nulls,
//! booleans, doubles, verbatim strings and out-of-band pushes), since the
//! bridge runs its commands and its subscriptions on one RESP3 connection.
//!
//! Owns the encoding only. Knows nothing of sockets, of what a command
//! means, or of when to send it. Everything read from the network is
//! bounded: a bulk string by `MAX_BULK_LEN`, an array by `MAX_ARRAY_LEN`,
//! nesting by `MAX_DEPTH`; past them the reply is refused as malformed,
//! never buffered.

use std::fmt;

/// Largest bulk string accepted in a reply (Redis' own default limit).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Most elements accepted in one reply array.
pub const MAX_ARRAY_LEN: usize = 1 << 20;
/// Deepest nesting of arrays accepted in a reply.
pub const MAX_DEPTH: usize = 8;
/// Longest simple line (`+OK`, `-ERR ...`, `:42`) accepted.
const MAX_LINE_LEN: usize = 64 * 1024;

/// Appends one command: an array of bulk strings.
pub fn write_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    write_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        write_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn write_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: the command failed; the connection is fine.
    Error(String),
    Integer(i64),
    /// `$-1` is `Nil`.
    Bulk(Vec<u8>),
    /// `*-1` is `Nil`. RESP3 maps (keys and values in turn) and sets come
    /// as arrays too.
    Array(Vec<Reply>),
    /// RESP3 `>`: out of band (a channel message, a subscription's
    /// confirmation), never the reply to a command.
    Push(Vec<Reply>),
    /// RESP2 `$-1`, `*-1`; RESP3 `_`.
    Nil,
}

impl Reply {
    /// The integer of an `Integer` reply, or of a bulk string holding one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            Reply::Bulk(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk string or status.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(bytes) => Some(bytes),
            Reply::Status(text) => Some(text.as_bytes()),
            _ => None,
        }
    }
}

/// Why a reply could not be parsed: the connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// A type byte that is not one of `+-:$*` or the RESP3 ones read here.
    UnknownType(u8),
    /// A length or integer that is not a decimal number.
    BadNumber,
    /// A line without CRLF, or a bulk string not followed by CRLF.
    BadLineEnding,
    /// A bulk string, array, line or nesting over its bound.
    TooLarge,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadNumber => f.write_str("malformed RESP number"),
            RespError::BadLineEnding => f.write_str("RESP line without CRLF"),
            RespError::TooLarge => f.write_str("RESP reply over the size bounds"),
        }
    }
}

impl std::error::Error for RespError {}

/// Parses one complete reply at the start of `input`: the reply and the
/// bytes it took, `Ok(None)` when more bytes are needed.
pub fn parse(input: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(input, 0, 0)
}

fn parse_at(input: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let Some((line, after)) = line(input, at + 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Reply::Status(text(line)), after))),
        b'-' => Ok(Some((Reply::Error(text(line)), after))),
        b':' => Ok(Some((Reply::Integer(number(line)?), after))),
        b'$' => bulk(input, number(line)?, after),
        b'*' | b'~' => array(input, number(line)?, after, depth),
        b'>' => Ok(
            array(input, number(line)?, after, depth)?.map(|(reply, at)| match reply {
                Reply::Array(items) => (Reply::Push(items), at),
                other => (other, at),
            }),
        ),
        b'%' => map(input, number(line)?, after, depth),
        b'_' => Ok(Some((Reply::Nil, after))),
        b'#' => match line {
            b"t" => Ok(Some((Reply::Integer(1), after))),
            b"f" => Ok(Some((Reply::Integer(0), after))),
            _ => Err(RespError::BadNumber),
        },
        b',' | b'(' => Ok(Some((Reply::Status(text(line)), after))),
        b'=' => Ok(
            bulk(input, number(line)?, after)?.map(|(reply, at)| match reply {
                // A verbatim string starts with its format: `txt:`.
                Reply::Bulk(bytes) if bytes.len() >= 4 => (Reply::Bulk(bytes[4..].to_vec()), at),
                other => (other, at),
            }),
        ),
        b'!' => Ok(
            bulk(input, number(line)?, after)?.map(|(reply, at)| match reply {
                Reply::Bulk(bytes) => (Reply::Error(text(&bytes)), at),
                other => (other, at),
            }),
        ),
        other => Err(RespError::UnknownType(other)),
    }
}

/// A RESP3 map of `len` pairs, as an array of keys and values in turn.
fn map(
    input: &[u8],
    len: i64,
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, RespError> {
    let pairs = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
    if pairs > MAX_ARRAY_LEN / 2 {
        return Err(RespError::TooLarge);
    }
    array(input, (pairs * 2) as i64, at, depth)
}

fn bulk(input: &[u8], len: i64, at: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if len == -1 {
        return Ok(Some((Reply::Nil, at)));
    }
    let len = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
    if len > MAX_BULK_LEN {
        return Err(RespError::TooLarge);
    }
    let end = at + len;
    if input.len() < end + 2 {
        return Ok(None);
    }
    if &input[end..end + 2] != b"\r\n" {
        return Err(RespError::BadLineEnding);
    }
    Ok(Some((Reply::Bulk(input[at..end].to_vec()), end + 2)))
}

fn array(
    input: &[u8],
    len: i64,
    mut at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, RespError> {
    if len == -1 {
        return Ok(Some((Reply::Nil, at)));
    }
    let len = usize::try_from(len).map_err(|_| RespError::BadNumber)?;
    if len > MAX_ARRAY_LEN || depth >= MAX_DEPTH {
        return Err(RespError::TooLarge);
    }
    // Grown as elements arrive: a claimed length allocates nothing.
    let mut items = Vec::new();
    for _ in 0..len {
        let Some((item, next)) = parse_at(input, at, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        at = next;
    }
    Ok(Some((Reply::Array(items), at)))
}

/// The line starting at `at`, without its CRLF, and where the next starts.
fn line(input: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = input.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        Some(cr) if cr > MAX_LINE_LEN => Err(RespError::TooLarge),
        Some(cr) => match rest.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..cr], at + cr + 2))),
            Some(_) => Err(RespError::BadLineEnding),
        },
        None if rest.len() > MAX_LINE_LEN => Err(RespError::TooLarge),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::BadNumber)
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        write_command(&mut out, &["SET", "k", ""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_parses() {
        let input = b"*6\r\n+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*1\r\n*0\r\n";
        let (reply, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Status("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Integer(-7),
                Reply::Bulk(b"a\r\n".to_vec()),
                Reply::Nil,
                Reply::Array(vec![Reply::Array(vec![])]),
            ])
        );
    }

    #[test]
    fn resp3_types_read_as_their_resp2_counterparts() {
        let input = b"%2\r\n+a\r\n_\r\n+b\r\n#t\r\n";
        let (reply, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        let a = Reply::Status("a".into());
        let b = Reply::Status("b".into());
        assert_eq!(
            reply,
            Reply::Array(vec![a, Reply::Nil, b, Reply::Integer(1)])
        );
        let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n";
        let (reply, _) = parse(push).unwrap().unwrap();
        let Reply::Push(items) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(items[0].as_bytes(), Some(&b"message"[..]));
        assert_eq!(
            parse(b",1.5\r\n").unwrap().unwrap().0,
            Reply::Status("1.5".into())
        );
        let verbatim = parse(b"=7\r\ntxt:abc\r\n").unwrap().unwrap().0;
        assert_eq!(verbatim, Reply::Bulk(b"abc".to_vec()));
        let error = parse(b"!5\r\nERR x\r\n").unwrap().unwrap().0;
        assert_eq!(error, Reply::Error("ERR x".into()));
        assert_eq!(
            parse(b"~1\r\n:1\r\n").unwrap().unwrap().0,
            Reply::Array(vec![Reply::Integer(1)])
        );
    }

    #[test]
    fn a_partial_reply_asks_for_more_at_every_cut() {
        let input = b"*2\r\n$5\r\nhello\r\n:42\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(input).unwrap().is_some());
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        assert_eq!(parse(b"?x\r\n"), Err(RespError::UnknownType(b'?')));
        assert_eq!(parse(b"#x\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"%-1\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b":12a\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b"$1\r\nab\r\n"), Err(RespError::BadLineEnding));
        assert_eq!(parse(b"+OK\rX"), Err(RespError::BadLineEnding));
        let huge = format!("${}\r\n", MAX_BULK_LEN + 1);
        assert_eq!(parse(huge.as_bytes()), Err(RespError::TooLarge));
        let wide = format!("*{}\r\n", MAX_ARRAY_LEN + 1);
        assert_eq!(parse(wide.as_bytes()), Err(RespError::TooLarge));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(RespError::TooLarge));
        let long = vec![b'+'; MAX_LINE_LEN + 2];
        assert_eq!(parse(&long), Err(RespError::TooLarge));
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,8}".prop_map(Reply::Status),
            "ERR [a-z ]{0,8}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Reply::Bulk),
            Just(Reply::Nil),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Reply::Array),
                proptest::collection::vec(inner, 0..5).prop_map(Reply::Push),
            ]
        })
    }

    /// What a server would send for `reply`.
    fn encode(reply: &Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) | Reply::Push(items) => {
                let kind = if matches!(reply, Reply::Push(_)) {
                    '>'
                } else {
                    '*'
                };
                out.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode(item, out);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn replies_round_trip_whole_and_report_incomplete_prefixes(r in reply()) {
            let mut bytes = Vec::new();
            encode(&r, &mut bytes);
            bytes.extend_from_slice(b"+NEXT\r\n");
            let (parsed, used) = parse(&bytes).unwrap().unwrap();
            prop_assert_eq!(parsed, r);
            prop_assert_eq!(&bytes[used..], b"+NEXT\r\n");
            for cut in 0..used {
                prop_assert_eq!(parse(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }
    }
}
