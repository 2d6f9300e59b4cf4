//! Finds the exact text of a top-level field of a JSON object, before the
//! in-place parser rewrites escaped strings.
//!
//! Room messages forward `data` "as the exact JSON text the client sent", so
//! its byte range is located with this linear skim (no allocation, no
//! recursion) while the bytes are still pristine; simd-json then validates
//! the whole message. Results on invalid JSON are meaningless but harmless:
//! the caller only uses them once the full parse succeeded.
//!
//! `elements` does the same for each element of an array (the `messages`
//! of a `POST /publish` batch, whose `data` texts are forwarded verbatim).

use std::ops::Range;

use crate::json;

/// The byte range of the value of the first top-level `key` in `json`.
pub fn field_range(json: &[u8], key: &str) -> Option<Range<usize>> {
    let at = skip_ws(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    field_range_in(json, at + 1, key)
}

/// As `field_range`, for a field after the one whose value ends at
/// `after`: a frame's later fields are found without skimming its earlier
/// values (a room event's 1 KiB `data`) again.
pub fn later_field_range(json: &[u8], after: usize, key: &str) -> Option<Range<usize>> {
    let at = skip_ws(json, after);
    if json.get(at) != Some(&b',') {
        return None;
    }
    field_range_in(json, at + 1, key)
}

/// The value of `key` among an object's fields from `at`, the start of one.
fn field_range_in(json: &[u8], mut at: usize, key: &str) -> Option<Range<usize>> {
    loop {
        at = skip_ws(json, at);
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, at)?;
        let matches = key_equals(&json[at + 1..key_end - 1], key);
        at = skip_ws(json, key_end);
        if json.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(json, at + 1);
        let value_end = value_end(json, value_start)?;
        if matches {
            return Some(value_start..value_end);
        }
        at = skip_ws(json, value_end);
        match json.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

/// The byte ranges of the elements of the array whose text is
/// `json[array]`, in order. Stops (yields no more) at anything that is not
/// a well-formed element list.
pub fn elements(json: &[u8], array: Range<usize>) -> Elements<'_> {
    let text = json.get(array.clone()).unwrap_or_default();
    let start = skip_ws(text, 0);
    let next = (text.get(start) == Some(&b'[')).then(|| skip_ws(text, start + 1));
    Elements {
        text,
        offset: array.start,
        next: next.filter(|&at| text.get(at) != Some(&b']')),
    }
}

/// The iterator of [`elements`].
pub struct Elements<'a> {
    /// The array's text.
    text: &'a [u8],
    /// Where the array's text starts in the whole document.
    offset: usize,
    /// Where the next element starts, if there is one.
    next: Option<usize>,
}

impl Iterator for Elements<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let start = self.next.take()?;
        let end = value_end(self.text, start)?;
        let after = skip_ws(self.text, end);
        if self.text.get(after) == Some(&b',') {
            self.next = Some(skip_ws(self.text, after + 1));
        }
        Some(self.offset + start..self.offset + end)
    }
}

fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index just past the closing quote of the string starting at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        at += json::find_string_special(json.get(at..)?, false)?;
        match json.get(at)? {
            b'"' => return Some(at + 1),
            _ => at += 2,
        }
    }
}

/// The index just past the value starting at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => container_end(json, start),
        _ => {
            let mut at = start;
            while let Some(b) = json.get(at) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                at += 1;
            }
            (at > start).then_some(at)
        }
    }
}

fn container_end(json: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    loop {
        match json.get(at)? {
            b'"' => {
                at = string_end(json, at)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
}

/// Whether the raw (possibly escaped) key text spells `key`.
fn key_equals(raw: &[u8], key: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == key.as_bytes();
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        if raw[at] != b'\\' {
            let len = utf8_len(raw[at]);
            match raw
                .get(at..at + len)
                .and_then(|b| std::str::from_utf8(b).ok())
            {
                Some(s) => decoded.push_str(s),
                None => return false,
            }
            at += len;
            continue;
        }
        let Some(&escape) = raw.get(at + 1) else {
            return false;
        };
        let ch = match escape {
            b'u' => {
                let hex = raw
                    .get(at + 2..at + 6)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(code) = hex.and_then(|h| u32::from_str_radix(h, 16).ok()) else {
                    return false;
                };
                at += 4;
                char::from_u32(code).unwrap_or('\u{fffd}')
            }
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            other => other as char,
        };
        decoded.push(ch);
        at += 2;
    }
    decoded == key
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        field_range(json.as_bytes(), key).map(|r| &json[r])
    }

    #[test]
    fn finds_values_of_every_kind_verbatim() {
        let json = r#" { "event" : "a:b", "data" : {"a" : [1, 2.50, "\u00e9", "}"]} , "id": 3 } "#;
        assert_eq!(
            field(json, "data"),
            Some(r#"{"a" : [1, 2.50, "\u00e9", "}"]}"#)
        );
        assert_eq!(field(json, "event"), Some(r#""a:b""#));
        assert_eq!(field(json, "id"), Some("3"));
        assert_eq!(field(json, "nope"), None);
        assert_eq!(field(r#"{"data":null}"#, "data"), Some("null"));
        assert_eq!(field(r#"{"data":"x\"}y"}"#, "data"), Some(r#""x\"}y""#));
        assert_eq!(field(r#"{"data":-1.5e3}"#, "data"), Some("-1.5e3"));
    }

    #[test]
    fn escaped_keys_are_compared_decoded() {
        assert_eq!(field(r#"{"d\u0061ta":1}"#, "data"), Some("1"));
        assert_eq!(field(r#"{"d\"ata":1}"#, "data"), None);
    }

    #[test]
    fn the_first_occurrence_wins_and_non_objects_have_none() {
        assert_eq!(field(r#"{"data":1,"data":2}"#, "data"), Some("1"));
        assert_eq!(field("[1]", "data"), None);
        assert_eq!(field("", "data"), None);
    }

    fn later(json: &str, after: usize, key: &str) -> Option<String> {
        later_field_range(json.as_bytes(), after, key).map(|r| json[r].to_owned())
    }

    #[test]
    fn later_fields_are_found_after_a_value_and_only_there() {
        let json = r#"{"seq":1,"data":{"seq":2} ,"seq":3}"#;
        let data = field_range(json.as_bytes(), "data").unwrap();
        assert_eq!(later(json, data.end, "seq").as_deref(), Some("3"));
        assert_eq!(later(json, data.end, "ts"), None);
        // Not at the end of a value: no field boundary there.
        assert_eq!(later(json, data.start + 1, "seq"), None);
        assert_eq!(later(json, json.len() + 5, "seq"), None);
    }

    fn element_texts<'a>(json: &'a str, key: &str) -> Vec<&'a str> {
        let range = field_range(json.as_bytes(), key).unwrap();
        elements(json.as_bytes(), range).map(|r| &json[r]).collect()
    }

    #[test]
    fn lists_the_elements_of_an_array_verbatim() {
        let json = r#"{"messages" : [ {"data" : [1, "]"]} ,2,"s\"]", [ ] , null ] }"#;
        assert_eq!(
            element_texts(json, "messages"),
            [r#"{"data" : [1, "]"]}"#, "2", r#""s\"]""#, "[ ]", "null"]
        );
        assert!(element_texts(r#"{"m":[ ]}"#, "m").is_empty());
        assert!(element_texts(r#"{"m":{"a":1}}"#, "m").is_empty());
        assert_eq!(element_texts(r#"{"m":[1}"#, "m"), ["1"]);
    }

    /// Any JSON value, as text with arbitrary spacing.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            "-?(0|[1-9][0-9]{0,4})(\\.[0-9]{1,3})?",
            "[a-z\\]\\[{}, ]{0,8}".prop_map(|s| format!("{s:?}")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(" , "))),
                proptest::collection::vec(("[a-z]{1,4}", inner), 0..5).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k:?} :{v}")).collect();
                    format!("{{ {} }}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn elements_and_their_data_match_a_full_parse(
            items in proptest::collection::vec(json_value(), 0..6),
            datas in proptest::collection::vec(proptest::option::of(json_value()), 0..6),
        ) {
            use simd_json::prelude::*;
            let mut objects: Vec<String> = items.clone();
            for (i, data) in datas.iter().enumerate() {
                let data = data.as_ref().map(|d| format!(r#","data": {d}"#)).unwrap_or_default();
                objects.push(format!(r#"{{"n":{i}{data}}}"#));
            }
            let json = format!(r#"{{"x":1, "messages" :[ {} ]}}"#, objects.join(" ,\n"));
            let range = field_range(json.as_bytes(), "messages").unwrap();
            let found: Vec<&str> = elements(json.as_bytes(), range).map(|r| &json[r]).collect();
            prop_assert_eq!(&found, &objects);
            for (text, data) in found[items.len()..].iter().zip(&datas) {
                prop_assert_eq!(field(text, "data"), data.as_deref());
            }
            let mut bytes = json.clone().into_bytes();
            let parsed = simd_json::to_owned_value(&mut bytes).unwrap();
            prop_assert_eq!(parsed["messages"].as_array().map(Vec::len), Some(objects.len()));
        }

        #[test]
        fn elements_never_panic_and_stay_in_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            for range in elements(&bytes, 0..bytes.len()) {
                prop_assert!(range.start <= range.end && range.end <= bytes.len());
            }
        }

        #[test]
        fn never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(range) = field_range(&bytes, "data") {
                prop_assert!(range.end <= bytes.len() && range.start <= range.end);
                if let Some(later) = later_field_range(&bytes, range.end, "seq") {
                    prop_assert!(later.end <= bytes.len() && range.end <= later.start);
                }
            }
        }
    }
}
