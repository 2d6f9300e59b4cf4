use proptest::prelude::*;

use super::*;

fn json_of(msgpack: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::new();
    to_json(msgpack, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn msgpack_of(json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    from_json(json.as_bytes(), &mut out).unwrap();
    out
}

#[test]
fn scalars_read_as_json() {
    let cases: &[(&[u8], &str)] = &[
        (&[0xc0], "null"),
        (&[0xc2], "false"),
        (&[0xc3], "true"),
        (&[0x7f], "127"),
        (&[0xe0], "-32"),
        (&[0xcc, 0xff], "255"),
        (&[0xd0, 0x80], "-128"),
        (
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "18446744073709551615",
        ),
        (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], "-9223372036854775808"),
        (&[0xca, 0x3d, 0xcc, 0xcc, 0xcd], "0.1"),
        (&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], "1.5"),
        (&[0xa2, b'h', b'i'], "\"hi\""),
        (&[0xa2, b'"', 0x01], "\"\\\"\\u0001\""),
        (&[0x92, 0x01, 0xc0], "[1,null]"),
        (&[0x81, 0xa1, b'a', 0x90], "{\"a\":[]}"),
        (&[0x80], "{}"),
    ];
    for (input, want) in cases {
        assert_eq!(json_of(input).as_deref(), Ok(*want), "{input:x?}");
    }
}

#[test]
fn what_json_cannot_say_is_refused() {
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Truncated),
        (&[0xc4, 0x01, 0x00], DecodeError::Binary),
        (&[0xd4, 0x01, 0x00], DecodeError::Binary),
        (&[0xc7, 0x01, 0x05, 0x00], DecodeError::Binary),
        (&[0x81, 0xa1, b'b', 0xc5, 0, 1, 0], DecodeError::Binary),
        (&[0xc1], DecodeError::Reserved),
        (&[0x81, 0x01, 0x02], DecodeError::KeyNotString),
        (&[0x81, 0xc0, 0x02], DecodeError::KeyNotString),
        (&[0xa1, 0xff], DecodeError::NotUtf8),
        (
            &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
            DecodeError::NotFinite,
        ),
        (&[0xca, 0x7f, 0x80, 0, 0], DecodeError::NotFinite),
        (&[0x92, 0x01], DecodeError::Truncated),
        (&[0xdd, 0xff, 0xff, 0xff, 0xff], DecodeError::Truncated),
        (
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            DecodeError::Truncated,
        ),
        (&[0xc0, 0xc0], DecodeError::Trailing),
    ];
    for (input, want) in cases {
        assert_eq!(json_of(input), Err(*want), "{input:x?}");
    }
}

#[test]
fn nesting_is_bounded_like_json() {
    let deepest = [vec![0x91; MAX_JSON_DEPTH - 1], vec![0x90]].concat();
    assert!(json_of(&deepest).is_ok());
    let deeper = [vec![0x91; MAX_JSON_DEPTH], vec![0x90]].concat();
    assert_eq!(json_of(&deeper), Err(DecodeError::TooDeep));
    let maps = [[0x81, 0xa0].repeat(MAX_JSON_DEPTH + 1), vec![0xc0]].concat();
    assert_eq!(json_of(&maps), Err(DecodeError::TooDeep));
}

#[test]
fn server_json_becomes_the_smallest_msgpack() {
    assert_eq!(msgpack_of("{}"), [0x80]);
    assert_eq!(
        msgpack_of("[1,-1,-33,256]"),
        [0x94, 0x01, 0xff, 0xd0, 0xdf, 0xcd, 1, 0]
    );
    assert_eq!(
        msgpack_of("\"\\u00e9\\ud83d\\ude00\""),
        [&[0xa6][..], "é😀".as_bytes()].concat()
    );
    assert_eq!(
        msgpack_of("\"\\ud800\""),
        [&[0xa3][..], "\u{fffd}".as_bytes()].concat()
    );
    assert_eq!(msgpack_of("1.5"), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        msgpack_of("18446744073709551616"),
        [
            &[0xcb][..],
            &18446744073709551616f64.to_bits().to_be_bytes()
        ]
        .concat()
    );
    let sixteen = format!("[{}]", vec!["0"; 16].join(","));
    assert_eq!(msgpack_of(&sixteen)[..3], [0xdc, 0, 16]);
    assert_eq!(
        msgpack_of(" { \"a\" : [ true , false , null ] } "),
        [0x81, 0xa1, b'a', 0x93, 0xc3, 0xc2, 0xc0]
    );
    let long = "x".repeat(300);
    assert_eq!(msgpack_of(&format!("\"{long}\""))[..3], [0xda, 1, 44]);
    for bad in ["", "{", "[1,]", "{\"a\"}", "tru", "\"a", "1 2", "{1:2}"] {
        assert!(from_json(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad}");
    }
}

/// A JSON value as a test writes it.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Json::Int(n) => json::write_i64(out, *n),
            Json::Uint(n) => json::write_u64(out, *n),
            Json::Float(n) => out.extend_from_slice(format!("{n:?}").as_bytes()),
            Json::Str(s) => json::write_str(out, s),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Json::Object(entries) => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_str(out, key);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::Int),
        any::<u64>().prop_map(Json::Uint),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Json::Float),
        ".{0,40}".prop_map(Json::Str),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Json::Array),
            proptest::collection::vec((".{0,8}", inner), 0..20).prop_map(Json::Object),
        ]
    })
}

proptest! {
    #[test]
    fn json_through_msgpack_and_back_is_the_same_text(value in json_value()) {
        let mut text = Vec::new();
        value.write(&mut text);
        let mut packed = Vec::new();
        from_json(&text, &mut packed).unwrap();
        let mut back = Vec::new();
        to_json(&packed, &mut back).unwrap();
        prop_assert_eq!(String::from_utf8(back).unwrap(), String::from_utf8(text).unwrap());
    }

    #[test]
    fn any_bytes_read_or_refused_within_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut out = Vec::new();
        if to_json(&bytes, &mut out).is_ok() {
            prop_assert!(out.len() <= JSON_GROWTH * bytes.len() + 2);
            let mut again = Vec::new();
            from_json(&out, &mut again).unwrap();
        }
    }
}

#[test]
fn canonical_text_is_what_to_json_writes() {
    for text in [
        r#"{"b":1,"a":[1.5,-0.0,1e-5,"é\n\u0001"],"2":null}"#,
        "18446744073709551615",
        "-9223372036854775808",
        "0.1",
    ] {
        assert!(is_canonical(text.as_bytes()), "{text}");
    }
    for text in [
        r#"{"a": 1}"#,
        "1.50",
        "1.0e2",
        r#""\u00e9""#,
        r#""\/""#,
        "-0",
        "1e400",
        "100000000000000000000",
        " 1",
    ] {
        assert!(!is_canonical(text.as_bytes()), "{text}");
    }
}
