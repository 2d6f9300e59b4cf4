//! JSON for the targets that read it (`envelope`, `publish_body`, `jwt`):
//! a generator of values and a strict validator that shares no code with
//! simd-json, so that "this reply is JSON" is checked independently.

use roomcast::codes::limits::MAX_JSON_DEPTH;
use simd_json::OwnedValue;

use crate::engine::Rng;

/// Tokens that JSON parsers treat specially.
pub const DICTIONARY: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"1e400",
    b"-0",
    b"9007199254740993",
    b"123456789012345678901234567890",
    b"\"data\":",
    b"\"event\":",
    b"\"id\":",
    b"\"room\":",
    b"\"messages\":",
    b"\xff",
    b"\xed\xa0\x80",
    b"\x00",
    b"\x1f",
];

/// The value of a JSON text as simd-json reads it, when it does.
pub fn value(text: &[u8]) -> Option<OwnedValue> {
    simd_json::to_owned_value(&mut text.to_vec()).ok()
}

/// The value's text as simd-json writes it: equal texts for equal values,
/// even with duplicate keys (whose `OwnedValue`s are not equal to themselves).
pub fn canonical(value: &OwnedValue) -> String {
    value.to_string()
}

/// The deepest nesting of arrays and objects in a JSON text.
pub fn depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &byte in text {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether the server must take `text` as JSON: valid, and within the
/// nesting bound every parser of roomcast applies.
pub fn acceptable(text: &[u8]) -> Option<OwnedValue> {
    value(text).filter(|_| depth(text) <= MAX_JSON_DEPTH)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A JSON string literal for `s`, as the server writes one.
pub fn quote(s: &str) -> String {
    let mut out = Vec::new();
    roomcast::json::write_str(&mut out, s);
    String::from_utf8(out).expect("a JSON string of a str is UTF-8")
}

/// Whether `text` is one JSON value (RFC 8259), optionally surrounded by
/// whitespace. Numbers of any size are valid, as the RFC says.
pub fn parses(text: &[u8]) -> bool {
    if std::str::from_utf8(text).is_err() {
        return false;
    }
    let mut strict = Strict { text, at: 0 };
    strict.ws();
    strict.value(0) && {
        strict.ws();
        strict.at == text.len()
    }
}

struct Strict<'a> {
    text: &'a [u8],
    at: usize,
}

impl Strict<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.text[self.at..].starts_with(word);
        self.at += if found { word.len() } else { 0 };
        found
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > 512 {
            return false;
        }
        match self.peek() {
            Some(b'{') => self.sequence(b'}', depth, Self::member),
            Some(b'[') => self.sequence(b']', depth, Self::value),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// An object or an array: `open`, items separated by commas, `close`.
    fn sequence(&mut self, close: u8, depth: usize, item: fn(&mut Self, usize) -> bool) -> bool {
        self.at += 1;
        self.ws();
        if self.eat(close) {
            return true;
        }
        loop {
            self.ws();
            if !item(self, depth + 1) {
                return false;
            }
            self.ws();
            if self.eat(close) {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn member(&mut self, depth: usize) -> bool {
        if !self.string() {
            return false;
        }
        self.ws();
        self.eat(b':') && {
            self.ws();
            self.value(depth)
        }
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => return true,
                b'\\' if !self.escape() => return false,
                0..=0x1f => return false,
                _ => {}
            }
        }
        false
    }

    fn escape(&mut self) -> bool {
        let Some(byte) = self.peek() else {
            return false;
        };
        self.at += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => true,
            b'u' => {
                let hex = self.text.get(self.at..self.at + 4);
                self.at += 4;
                hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            }
            _ => false,
        }
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        if !self.eat(b'0') && !self.digits() {
            return false;
        }
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            return self.digits();
        }
        true
    }

    fn digits(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at > start
    }
}

/// Builds JSON texts of realistic shapes.
pub struct JsonGen<'r> {
    pub rng: &'r mut Rng,
}

impl<'r> JsonGen<'r> {
    pub fn new(rng: &'r mut Rng) -> Self {
        JsonGen { rng }
    }

    /// Any value, at most `depth` levels of arrays and objects.
    pub fn value(&mut self, depth: usize) -> String {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.rng.below(kinds) {
            0 => (self.rng.choose(&["null", "true", "false"])).to_owned(),
            1 => self.number(),
            2 | 3 => self.string(),
            4 => {
                let items: Vec<String> = (0..self.rng.below(4))
                    .map(|_| self.value(depth - 1))
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let members: Vec<String> = (0..self.rng.below(4))
                    .map(|_| format!("{}:{}", self.string(), self.value(depth - 1)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    pub fn number(&mut self) -> String {
        let numbers = [
            "0",
            "-0",
            "1",
            "-1",
            "42",
            "3.25",
            "1e3",
            "-2.5E-3",
            "1e400",
            "-1e400",
            "9007199254740991",
            "9007199254740993",
            "18446744073709551616",
            "123456789012345678901234567890.5",
            "0.000000000000000000000000001",
        ];
        (self.rng.choose(&numbers)).to_owned()
    }

    pub fn string(&mut self) -> String {
        let pieces = [
            "hi",
            "Zoë",
            "😀",
            "\\\"",
            "\\\\",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\/",
            " ",
            "data",
            "event",
        ];
        let text: String = (0..self.rng.below(5))
            .map(|_| self.rng.choose(&pieces))
            .collect();
        format!("\"{text}\"")
    }

    /// A message id: valid ones and ones just past the bounds.
    pub fn id(&mut self) -> String {
        let ids = [
            "\"c1\"",
            "7",
            "0",
            "-9007199254740991",
            "9007199254740991",
            "9007199254740992",
            "1.5",
            "null",
            "{}",
            "\"\\u00e9\"",
        ];
        match self.rng.below(4) {
            0 => quote(&"x".repeat(60 + self.rng.below(10))),
            _ => (self.rng.choose(&ids)).to_owned(),
        }
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.rng.below(i + 1));
        }
    }

    /// Sometimes breaks the text in one of the ways parsers get wrong.
    pub fn maybe_break(&mut self, mut text: Vec<u8>) -> Vec<u8> {
        if !self.rng.one_in(3) {
            return text;
        }
        let at = self.rng.below(text.len() + 1);
        let insert: &[u8] = match self.rng.below(8) {
            0 => {
                text.truncate(at);
                return text;
            }
            1 => b" trailing",
            2 => b"\"data\":1,\"data\":[2],",
            3 => &[b'['; 70],
            4 => b"\"\\x\"",
            5 => b"\x01",
            6 => b"\xff\xfe",
            _ => b"\"\\ud800\"",
        };
        text.splice(at..at, insert.iter().copied());
        text
    }
}
