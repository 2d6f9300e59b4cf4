//! The `roomcast.msgpack` subprotocol's codec (section 14): one MessagePack
//! value to the equivalent JSON text, and a JSON text the server wrote to
//! MessagePack.
//!
//! Inbound messages are turned into JSON text and handed to the envelope
//! parser, so every rule of the JSON path (fields, names, sizes, depth,
//! numbers) applies to them unchanged; this module refuses only what JSON
//! cannot say: bin and ext types, non-string map keys, invalid UTF-8,
//! NaN and infinities, and anything truncated, trailing or nested past
//! `MAX_JSON_DEPTH`. Outbound frames are written as JSON once and converted
//! here, once per message and node.
//!
//! Sans-IO, hand-written (a few hundred lines of a small, fixed format
//! rather than a dependency), and bounded: the JSON written is at most
//! `JSON_GROWTH` times the MessagePack read, plus two bytes.

use crate::codes::limits::MAX_JSON_DEPTH;
use crate::json;

/// The most JSON bytes one MessagePack byte becomes: a one-byte string
/// character written as `\u00XX`.
pub const JSON_GROWTH: usize = 6;

/// Why a MessagePack message is not a JSON value; each is a
/// `VALIDATION_ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Ends inside a value.
    Truncated,
    /// Bytes after the one value.
    Trailing,
    /// bin 8/16/32, ext and fixext: JSON has no bytes.
    Binary,
    /// The never-used type byte `0xc1`.
    Reserved,
    /// A map key that is not a string.
    KeyNotString,
    /// A string that is not UTF-8.
    NotUtf8,
    /// NaN or an infinity.
    NotFinite,
    /// Arrays and maps nested deeper than `MAX_JSON_DEPTH`.
    TooDeep,
}

impl DecodeError {
    /// The `message` of the error event.
    pub fn message(self) -> &'static str {
        match self {
            DecodeError::Truncated => "MessagePack message is truncated",
            DecodeError::Trailing => "MessagePack message holds more than one value",
            DecodeError::Binary => "MessagePack bin and ext types are not accepted",
            DecodeError::Reserved => "MessagePack type 0xc1 is never used",
            DecodeError::KeyNotString => "MessagePack map keys must be strings",
            DecodeError::NotUtf8 => "MessagePack string is not valid UTF-8",
            DecodeError::NotFinite => "MessagePack float is NaN or infinite",
            DecodeError::TooDeep => "MessagePack message is nested too deep",
        }
    }
}

/// Why a JSON text could not be converted; the server writes valid JSON,
/// so this is a defect, never a client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeError {
    /// Byte offset in the JSON text.
    pub at: usize,
}

/// Appends the JSON text of the one MessagePack value in `input` to `out`.
/// On error `out` holds a partial text, to be discarded.
pub fn to_json(input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut reader = Reader { input, at: 0 };
    reader.value(out, 0)?;
    if reader.at != input.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(())
}

struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let bytes = self.input.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length of `n` bytes (a string's bytes, a container's entries).
    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| DecodeError::Truncated)
    }

    /// Refuses a container of `n` entries (each at least `min` bytes) that
    /// cannot fit in what is left, before writing or looping over any.
    fn fits(&self, n: usize, min: usize) -> Result<(), DecodeError> {
        let left = self.input.len() - self.at;
        if n.saturating_mul(min) > left {
            return Err(DecodeError::Truncated);
        }
        Ok(())
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
        let tag = self.byte()?;
        match tag {
            0x00..=0x7f => json::write_u64(out, u64::from(tag)),
            0x80..=0x8f => return self.map(usize::from(tag & 0x0f), out, depth),
            0x90..=0x9f => return self.array(usize::from(tag & 0x0f), out, depth),
            0xa0..=0xbf => return self.str(usize::from(tag & 0x1f), out),
            0xc0 => out.extend_from_slice(b"null"),
            0xc1 => return Err(DecodeError::Reserved),
            0xc2 => out.extend_from_slice(b"false"),
            0xc3 => out.extend_from_slice(b"true"),
            0xc4..=0xc9 | 0xd4..=0xd8 => return Err(DecodeError::Binary),
            0xca => {
                let bits = self.be(4)? as u32;
                float(out, f64::from(f32::from_bits(bits)), f32::from_bits(bits))?;
            }
            0xcb => {
                let n = f64::from_bits(self.be(8)?);
                float(out, n, n)?;
            }
            0xcc => json::write_u64(out, self.be(1)?),
            0xcd => json::write_u64(out, self.be(2)?),
            0xce => json::write_u64(out, self.be(4)?),
            0xcf => json::write_u64(out, self.be(8)?),
            0xd0 => json::write_i64(out, i64::from(self.be(1)? as u8 as i8)),
            0xd1 => json::write_i64(out, i64::from(self.be(2)? as u16 as i16)),
            0xd2 => json::write_i64(out, i64::from(self.be(4)? as u32 as i32)),
            0xd3 => json::write_i64(out, self.be(8)? as i64),
            0xd9 => {
                let n = self.len(1)?;
                return self.str(n, out);
            }
            0xda => {
                let n = self.len(2)?;
                return self.str(n, out);
            }
            0xdb => {
                let n = self.len(4)?;
                return self.str(n, out);
            }
            0xdc => {
                let n = self.len(2)?;
                return self.array(n, out, depth);
            }
            0xdd => {
                let n = self.len(4)?;
                return self.array(n, out, depth);
            }
            0xde => {
                let n = self.len(2)?;
                return self.map(n, out, depth);
            }
            0xdf => {
                let n = self.len(4)?;
                return self.map(n, out, depth);
            }
            0xe0..=0xff => json::write_i64(out, i64::from(tag as i8)),
        }
        Ok(())
    }

    fn str(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
        json::write_str(out, text);
        Ok(())
    }

    fn array(&mut self, n: usize, out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
        if depth >= MAX_JSON_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.fits(n, 1)?;
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.value(out, depth + 1)?;
        }
        out.push(b']');
        Ok(())
    }

    fn map(&mut self, n: usize, out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
        if depth >= MAX_JSON_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.fits(n, 2)?;
        out.push(b'{');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            let tag = self.byte()?;
            let len = match tag {
                0xa0..=0xbf => usize::from(tag & 0x1f),
                0xd9 => self.len(1)?,
                0xda => self.len(2)?,
                0xdb => self.len(4)?,
                _ => return Err(DecodeError::KeyNotString),
            };
            self.str(len, out)?;
            out.push(b':');
            self.value(out, depth + 1)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Writes a finite float as the shortest text that reads back as the same
/// value at its own width (`0.1` for the f32 `0.1`, not its f64 widening).
fn float(out: &mut Vec<u8>, wide: f64, own: impl std::fmt::Debug) -> Result<(), DecodeError> {
    if !wide.is_finite() {
        return Err(DecodeError::NotFinite);
    }
    // Straight into `out`: writing to a Vec cannot fail.
    let _ = std::io::Write::write_fmt(out, format_args!("{own:?}"));
    Ok(())
}

/// Appends the MessagePack form of the JSON text `text` to `out`: integers
/// that fit 64 bits as integers (the smallest form), every other number as
/// a float64 (the nearest one; past its range, an infinity), strings
/// unescaped (a lone surrogate escape as U+FFFD).
pub fn from_json(text: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut writer = Writer {
        text,
        at: 0,
        scratch: String::new(),
    };
    writer.skip_ws();
    writer.value(out, 0)?;
    writer.skip_ws();
    if writer.at != text.len() {
        return Err(writer.error());
    }
    Ok(())
}

/// Deeper than the server ever writes: the envelope's own levels around a
/// `data` at most `MAX_JSON_DEPTH` deep.
const MAX_WRITE_DEPTH: usize = MAX_JSON_DEPTH + 8;

struct Writer<'a> {
    text: &'a [u8],
    at: usize,
    /// One string's unescaped text at a time, reused so that a document
    /// costs no allocation per string.
    scratch: String,
}

impl Writer<'_> {
    fn error(&self) -> EncodeError {
        EncodeError { at: self.at }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>, tag: u8) -> Result<(), EncodeError> {
        if !self.text[self.at..].starts_with(word) {
            return Err(self.error());
        }
        self.at += word.len();
        out.push(tag);
        Ok(())
    }

    /// A JSON string, written as a MessagePack string.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let read = self.string(&mut text);
        if read.is_ok() {
            write_str(out, &text);
        }
        self.scratch = text;
        read
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
        match self.peek().ok_or_else(|| self.error())? {
            b'{' => self.container(out, depth, true),
            b'[' => self.container(out, depth, false),
            b'"' => self.string_into(out),
            b't' => self.literal(b"true", out, 0xc3),
            b'f' => self.literal(b"false", out, 0xc2),
            b'n' => self.literal(b"null", out, 0xc0),
            b'-' | b'0'..=b'9' => self.number(out),
            _ => Err(self.error()),
        }
    }

    /// An object or array: its header is written once its entries are
    /// counted, in the smallest form.
    fn container(&mut self, out: &mut Vec<u8>, depth: usize, map: bool) -> Result<(), EncodeError> {
        if depth >= MAX_WRITE_DEPTH {
            return Err(self.error());
        }
        let close = if map { b'}' } else { b']' };
        self.at += 1;
        let start = out.len();
        out.extend_from_slice(&[0; 5]);
        let mut count: u64 = 0;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.at += 1;
        } else {
            loop {
                self.skip_ws();
                if map {
                    if self.peek() != Some(b'"') {
                        return Err(self.error());
                    }
                    self.string_into(out)?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.error());
                    }
                    self.at += 1;
                    self.skip_ws();
                }
                self.value(out, depth + 1)?;
                count += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(c) if c == close => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.error()),
                }
            }
        }
        let mut header = [0u8; 5];
        let header_len = container_header(&mut header, count, map);
        out.copy_within(start + 5.., start + header_len);
        out.truncate(out.len() - (5 - header_len));
        out[start..start + header_len].copy_from_slice(&header[..header_len]);
        Ok(())
    }

    fn string(&mut self, s: &mut String) -> Result<(), EncodeError> {
        self.at += 1;
        loop {
            let run = self.text[self.at..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .ok_or_else(|| self.error())?;
            let plain = std::str::from_utf8(&self.text[self.at..self.at + run])
                .map_err(|_| self.error())?;
            s.push_str(plain);
            self.at += run;
            if self.text[self.at] == b'"' {
                self.at += 1;
                return Ok(());
            }
            self.at += 1;
            let escape = self.peek().ok_or_else(|| self.error())?;
            self.at += 1;
            let c = match escape {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode()?,
                _ => return Err(self.error()),
            };
            s.push(c);
        }
    }

    fn hex4(&mut self) -> Result<u32, EncodeError> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error())?;
        self.at += 4;
        Ok(digits)
    }

    fn unicode(&mut self) -> Result<char, EncodeError> {
        let first = self.hex4()?;
        if (0xd800..0xdc00).contains(&first) && self.text[self.at..].starts_with(b"\\u") {
            let mark = self.at;
            self.at += 2;
            let second = self.hex4()?;
            if (0xdc00..0xe000).contains(&second) {
                let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                return Ok(char::from_u32(c).unwrap_or('\u{fffd}'));
            }
            self.at = mark;
        }
        Ok(char::from_u32(first).unwrap_or('\u{fffd}'))
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = self.at;
        let mut integral = true;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => integral = false,
                _ => break,
            }
            self.at += 1;
        }
        let token = std::str::from_utf8(&self.text[start..self.at]).map_err(|_| self.error())?;
        if integral {
            if let Ok(n) = token.parse::<u64>() {
                write_uint(out, n);
                return Ok(());
            }
            if let Ok(n) = token.parse::<i64>() {
                write_int(out, n);
                return Ok(());
            }
        }
        let n: f64 = token.parse().map_err(|_| EncodeError { at: start })?;
        out.push(0xcb);
        out.extend_from_slice(&n.to_bits().to_be_bytes());
        Ok(())
    }
}

/// Whether `text` is in the server's canonical form: byte-equal to what
/// `to_json` writes of its MessagePack form (compact, keys in order,
/// integers in decimal, floats as Rust's `{:?}`, strings escaped as
/// `json::write_str` does). Only such a text can be rebuilt by a client
/// that was given its MessagePack form, as the base of a delta (section 14).
pub fn is_canonical(text: &[u8]) -> bool {
    let mut packed = Vec::with_capacity(text.len());
    if from_json(text, &mut packed).is_err() {
        return false;
    }
    let mut written = Vec::with_capacity(text.len());
    to_json(&packed, &mut written).is_ok() && written == text
}

fn container_header(header: &mut [u8; 5], count: u64, map: bool) -> usize {
    let (fix, sixteen, thirty_two) = if map {
        (0x80, 0xde, 0xdf)
    } else {
        (0x90, 0xdc, 0xdd)
    };
    if count < 16 {
        header[0] = fix | count as u8;
        1
    } else if let Ok(n) = u16::try_from(count) {
        header[0] = sixteen;
        header[1..3].copy_from_slice(&n.to_be_bytes());
        3
    } else {
        header[0] = thirty_two;
        header[1..5].copy_from_slice(&(count as u32).to_be_bytes());
        5
    }
}

/// Appends `s` as a MessagePack string in its smallest form.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(n) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, n]);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Appends `n` as a MessagePack unsigned integer in its smallest form.
pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xcd);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xce);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends `n` as a MessagePack integer in its smallest form.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    if let Ok(n) = u64::try_from(n) {
        write_uint(out, n);
    } else if n >= -32 {
        out.push(n as u8);
    } else if let Ok(n) = i8::try_from(n) {
        out.extend_from_slice(&[0xd0, n as u8]);
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
