//! Tiny JSON writing helpers for the messages the server builds by hand.
//!
//! The server never builds a JSON tree to answer: it writes bytes straight
//! into the outgoing buffer. This module owns string escaping and the one
//! object writer (`ObjectWriter`) for the bigger documents (`/stats`, the
//! effective configuration); parsing of client JSON lives in `proto`
//! (simd-json).

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most strings need no escape: copied whole up to the first that does.
    let clean = find_string_special(bytes, true).unwrap_or(bytes.len());
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The index of the first byte of `bytes` that is `"` or `\\`, or (with
/// `controls`) below 0x20: the bytes that end or escape inside a JSON
/// string. Eight bytes a step (a zero byte of `x ^ c` is a byte equal to
/// `c`; the lowest flagged byte is always a true one, borrows only run up).
pub fn find_string_special(bytes: &[u8], controls: bool) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        let mut hit =
            below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1);
        if controls {
            hit |= below(x, 0x20);
        }
        if hit != 0 {
            return Some(at + hit.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || (controls && b < 0x20))
        .map(|i| at + i)
}

/// "00" to "99": `write_u64` writes two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal form of `n` to `out`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the decimal form of `n` to `out`.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Writes a number; NaN and infinities, which JSON cannot hold, as 0.
pub fn write_f64(out: &mut Vec<u8>, n: f64) {
    let n = if n.is_finite() { n } else { 0.0 };
    out.extend_from_slice(format!("{n}").as_bytes());
}

/// Writes an array of strings.
pub fn write_strs(out: &mut Vec<u8>, values: &[String]) {
    out.push(b'[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, value);
    }
    out.push(b']');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes one JSON object field by field, in the order given, commas
/// handled; nested objects through `open`/`close`, arrays of objects
/// through `objects`.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Whether the next key is the first of its object.
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Starts an object in `out`; `close` ends it.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `"key":`, after a comma unless it is the object's first.
    pub fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
    }

    /// A field whose value is already JSON.
    pub fn raw(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.out.extend_from_slice(value);
    }

    pub fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        write_u64(self.out, value);
    }

    /// A number; NaN and infinities, which JSON cannot hold, are written as 0.
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        write_f64(self.out, value);
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.raw(key, if value { b"true" } else { b"false" });
    }

    pub fn null(&mut self, key: &str) {
        self.raw(key, b"null");
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    /// An array of strings.
    pub fn strs(&mut self, key: &str, values: &[String]) {
        self.key(key);
        write_strs(self.out, values);
    }

    /// Starts an object nested under `key`; `close` ends it.
    pub fn open(&mut self, key: &str) {
        self.key(key);
        self.out.push(b'{');
        self.first = true;
    }

    /// Ends the innermost object still open.
    pub fn close(&mut self) {
        self.out.push(b'}');
        self.first = false;
    }

    /// An array of objects under `key`, one per item, each written by `each`.
    pub fn objects<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T),
    ) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'{');
            self.first = true;
            each(self, item);
            self.close();
        }
        self.out.push(b']');
        self.first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_string_special_is_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    // A later special byte and high bytes do not mislead it.
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    if at > 0 {
                        bytes[at - 1] = 0xe9;
                    }
                    assert_eq!(find_string_special(&bytes, true), Some(at), "{bytes:?}");
                    let without_controls = if special < 0x20 {
                        (at + 1 < len).then_some(at + 1)
                    } else {
                        Some(at)
                    };
                    assert_eq!(find_string_special(&bytes, false), without_controls);
                }
            }
            // Neighbours of the special bytes are not special.
            let near = [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff];
            let plain: Vec<u8> = near.iter().copied().cycle().take(len).collect();
            assert_eq!(find_string_special(&plain, true), None);
        }
    }

    #[test]
    fn numbers_are_written_in_decimal_at_every_length() {
        let mut cases = vec![0, 9, 10, 99, 100, 101, 1_700_000_000_123, u64::MAX];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            cases.extend([power - 1, power, power + 1, next - 1]);
            power = next;
        }
        for n in cases {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        assert_eq!(String::from_utf8(out).unwrap(), i64::MIN.to_string());
    }

    #[test]
    fn strings_are_escaped_wherever_the_special_bytes_are() {
        let cases = [
            (
                "plain text of some length",
                r#""plain text of some length""#,
            ),
            (
                "a long clean head then \"quote",
                r#""a long clean head then \"quote""#,
            ),
            ("tab\there and a \\ back", r#""tab\there and a \\ back""#),
            ("\u{1}x", r#""\u0001x""#),
            ("é ünïcode stays", "\"é ünïcode stays\""),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            write_str(&mut out, input);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn object_writer_nests_objects_and_arrays_with_commas_in_place() {
        let mut out = Vec::new();
        let mut w = ObjectWriter::new(&mut out);
        w.u64("a", 1);
        w.open("b");
        w.str("c", "x\"y");
        w.null("d");
        w.close();
        w.objects("e", [1u64, 2], |w, n| {
            w.u64("n", n);
            w.bool("odd", n % 2 == 1);
        });
        w.strs("f", &["p".to_owned(), "q".to_owned()]);
        w.f64("g", f64::NAN);
        w.objects("h", Vec::<u64>::new(), |_, _| {});
        w.close();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1,"b":{"c":"x\"y","d":null},"e":[{"n":1,"odd":true},{"n":2,"odd":false}],"f":["p","q"],"g":0,"h":[]}"#
        );
    }

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{1}"), r#""\n\r\t\u0001""#);
        assert_eq!(escaped("héllo"), "\"héllo\"");
    }

    #[test]
    fn writes_integers() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
