//! The client side, for the binary's own small clients (`roomcast connect`,
//! `roomcast demo-feed`): reading one response head from a blocking reader,
//! bounded. Works over any `Read`; opening connections is the caller's.

use std::io::{self, Read};

/// Longest response head read.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Reads until the end of a response head; returns every byte read (the
/// head and whatever followed it) and where the head ends. A closed
/// connection or a head over `MAX_RESPONSE_HEAD` is an error.
pub fn read_head(reader: &mut impl Read) -> io::Result<(Vec<u8>, usize)> {
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((input, at + 4));
        }
        if input.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an oversized response head",
            ));
        }
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_and_what_follows_it_are_read_and_its_end_found() {
        let mut bytes: &[u8] = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody";
        let (input, end) = read_head(&mut bytes).unwrap();
        assert_eq!(&input[end..], b"body");
        let mut short: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert_eq!(
            read_head(&mut short).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let huge = vec![b'a'; MAX_RESPONSE_HEAD + 10];
        assert_eq!(
            read_head(&mut huge.as_slice()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
