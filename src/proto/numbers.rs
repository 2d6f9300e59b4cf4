//! JSON numbers the in-place parser cannot hold.
//!
//! RFC 8259 puts no limit on a number's size, and `data` is forwarded as
//! the exact text the client sent (section 4), so `1e400` or
//! `18446744073709551616` are valid there. simd-json refuses a number that
//! fits neither `i64`, `u64` nor a finite `f64`. Once its text has been
//! taken (`scan`), such a number is rewritten in place as `1e300` padded with
//! spaces, so the envelope parses: a field the server reads then holds a
//! float, which every such field refuses with a validation error, as an
//! out-of-range value deserves.
//!
//! Owns only that rewrite; knows nothing of envelopes or events.

/// What an out-of-range number becomes: a finite float, no longer than any
/// number that needs it (the shortest is five bytes, `1e309`).
const STAND_IN: &[u8] = b"1e300";

/// Rewrites every number token outside strings that simd-json would refuse
/// for its range; returns how many. Meaningless but harmless on invalid
/// JSON: only number bytes are touched, so a parse still fails as before.
pub fn tame(json: &mut [u8]) -> usize {
    let mut tamed = 0;
    let mut at = 0;
    while at < json.len() {
        match json[at] {
            b'"' => at = string_end(json, at),
            b'-' | b'0'..=b'9' => {
                let end = number_end(json, at);
                if !fits(&json[at..end]) {
                    stand_in(&mut json[at..end]);
                    tamed += 1;
                }
                at = end;
            }
            _ => at += 1,
        }
    }
    tamed
}

/// Where the string opening at `at` ends (one past its closing quote).
fn string_end(json: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    json.len()
}

fn number_end(json: &[u8], at: usize) -> usize {
    let len = json[at..]
        .iter()
        .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .count();
    at + len
}

/// Whether simd-json holds `token`: an integer within `i64` or `u64`, or a
/// float that stays finite. A token that is no JSON number at all "fits":
/// the parser reports it as the syntax error it is. (Rust's own number
/// parsing is laxer than JSON's: `0123` or `1.e5` must not be rewritten
/// into a valid stand-in, or invalid `data` would be forwarded as JSON.)
fn fits(token: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(token) else {
        return true;
    };
    if token.len() < STAND_IN.len() || !is_json_number(token) {
        return true;
    }
    if text.contains(['.', 'e', 'E']) {
        return text.parse::<f64>().map_or(true, f64::is_finite);
    }
    let Some(digits) = text.strip_prefix('-') else {
        return text.parse::<u64>().is_ok() || !is_digits(text);
    };
    text.parse::<i64>().is_ok() || !is_digits(digits)
}

/// RFC 8259: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    let unsigned = token.strip_prefix(b"-").unwrap_or(token);
    let int_len = digit_run(unsigned);
    if int_len == 0 || (int_len > 1 && unsigned[0] == b'0') {
        return false;
    }
    let mut rest = &unsigned[int_len..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = digit_run(fraction);
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        let len = digit_run(exponent);
        return len > 0 && len == exponent.len();
    }
    rest.is_empty()
}

fn digit_run(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn stand_in(token: &mut [u8]) {
    let (head, tail) = token.split_at_mut(STAND_IN.len());
    head.copy_from_slice(STAND_IN);
    tail.fill(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tamed(text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        tame(&mut bytes);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn numbers_in_range_are_left_alone() {
        for text in [
            "0",
            "-0",
            "1e30",
            "-9223372036854775808",
            "18446744073709551615",
            "1.7976931348623157e308",
            "1e-400",
            "0.1000000000000000000000000000000000000001",
            r#"{"a":[1,-2.5e3,{"b":99999}]}"#,
        ] {
            assert_eq!(tamed(text), text);
        }
    }

    #[test]
    fn numbers_out_of_range_become_a_finite_stand_in_of_the_same_length() {
        assert_eq!(tamed("18446744073709551616"), "1e300               ");
        assert_eq!(tamed("-9223372036854775809"), "1e300               ");
        assert_eq!(tamed("1e309"), "1e300");
        assert_eq!(tamed("[-1.8e308,2]"), "[1e300   ,2]");
        assert_eq!(tamed(r#"{"x":1E400}"#), r#"{"x":1e300}"#);
    }

    #[test]
    fn digits_inside_strings_are_not_numbers() {
        let text = r#"{"s":"18446744073709551616 \" 1e999","n":1e999}"#;
        assert_eq!(
            tamed(text),
            r#"{"s":"18446744073709551616 \" 1e999","n":1e300}"#
        );
    }

    #[test]
    fn malformed_number_text_is_left_for_the_parser() {
        for text in ["--12345", "1e+e5", "12-34-56", "1.2.3.4.5"] {
            assert_eq!(tamed(text), text);
        }
    }

    /// Found by the `envelope` fuzz target: Rust parses `0123...` and
    /// `1.e400`, JSON does not; taming them made invalid `data` valid.
    #[test]
    fn out_of_range_numbers_that_are_not_json_are_left_for_the_parser() {
        for text in [
            "-0123456789012345678901234567890",
            "0123456789012345678901234567890",
            "1.e400",
            "01e400",
            "-.5e400",
            "1e400.5",
        ] {
            assert_eq!(tamed(text), text);
        }
        assert_eq!(tamed("-1.5E+400"), "1e300    ");
    }
}
