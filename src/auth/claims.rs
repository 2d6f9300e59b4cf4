//! The claims of a roomcast token: their types, their bounds, and their JSON.
//!
//! Owns: turning a verified payload (JSON bytes) into `Claims`, and writing
//! `Claims` back as JSON for `mint`. Must not touch: signatures, base64 or
//! the clock (`jwt` and `auth` do those).

use crate::codes::limits::{MAX_JSON_DEPTH, MAX_ROOM_LEN, MAX_SUB_LEN};
use crate::json;
use simd_json::{BorrowedValue, StaticNode};
use std::io::Write as _;
use std::sync::Arc;

/// Most patterns accepted in the `rooms` or `pub` claim.
pub const MAX_PATTERNS: usize = 256;

/// Room patterns of the `rooms` or `pub` claim.
///
/// Boxed slices of boxed strings rather than `Vec<String>`: a verified
/// token's claims live in every connection's session for its whole life, and
/// the patterns never change after parsing, so the capacity words are dead
/// weight.
pub type Patterns = Box<[Box<str>]>;

/// The claims of a verified token (protocol section 2).
///
/// The strings are boxed (16 bytes, not a `String`'s 24): the claims are
/// kept in every open connection's session and never grow.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The user id, 1..=128 bytes. An `Arc` so that the shard's user index
    /// and the rooms' presence lists share this one copy per connection.
    pub sub: Arc<str>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: f64,
    /// Display name shown in presence.
    pub name: Option<Box<str>>,
    /// Room patterns this user may join; `None`: the server's defaults.
    pub rooms: Option<Patterns>,
    /// The `pub` claim: room patterns this user may publish to.
    pub publish: Option<Patterns>,
    pub admin: bool,
    /// Messages per second; `Some(0.0)` means unlimited.
    pub rate: Option<f64>,
}

/// The time claims besides `exp`: `verify` checks `nbf`, `mint_with` writes
/// both, and nothing reads them once a token is verified. They are kept out
/// of `Claims`, which every open connection's session holds, to spare each
/// session 32 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeClaims {
    /// Not before, seconds since the Unix epoch.
    pub nbf: Option<f64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: Option<f64>,
}

/// Why a payload does not hold valid claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsError {
    /// Not a JSON object (or nested too deeply to be worth parsing).
    NotJson,
    /// A required claim is missing, or a claim has the wrong type or is out
    /// of bounds.
    Invalid,
}

impl Claims {
    /// Claims with only the required `sub` and `exp`.
    pub fn new(sub: impl Into<Arc<str>>, exp: f64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            name: None,
            rooms: None,
            publish: None,
            admin: false,
            rate: None,
        }
    }

    /// Parses a payload into its claims and its time claims. `json` is
    /// parsed in place (simd-json) and left scrambled.
    pub fn from_json(json: &mut [u8]) -> Result<(Self, TimeClaims), ClaimsError> {
        Self::parse(json, true)
    }

    /// The claims a connect proxy's backend answered (section 13.2): those
    /// of a token, but `exp` is optional (without it the connection never
    /// expires); the time claims are not read.
    pub fn from_backend(json: &mut [u8]) -> Result<Self, ClaimsError> {
        Self::parse(json, false).map(|(claims, _)| claims)
    }

    fn parse(json: &mut [u8], exp_required: bool) -> Result<(Self, TimeClaims), ClaimsError> {
        if nesting_depth_exceeds(json, MAX_JSON_DEPTH) {
            return Err(ClaimsError::NotJson);
        }
        let value = simd_json::to_borrowed_value(json).map_err(|_| ClaimsError::NotJson)?;
        let BorrowedValue::Object(object) = value else {
            return Err(ClaimsError::NotJson);
        };
        let claim = |key: &str| object.get(key);
        let sub = required(claim("sub"), as_sub)?;
        let exp = match exp_required {
            true => required(claim("exp"), as_number)?,
            false => optional(claim("exp"), as_number)?.unwrap_or(f64::INFINITY),
        };
        let times = TimeClaims {
            nbf: optional(claim("nbf"), as_number)?,
            iat: optional(claim("iat"), as_number)?,
        };
        let claims = Claims {
            sub,
            exp,
            name: optional(claim("name"), as_string)?,
            rooms: optional(claim("rooms"), as_patterns)?,
            publish: optional(claim("pub"), as_patterns)?,
            admin: optional(claim("admin"), as_bool)?.unwrap_or(false),
            rate: optional(claim("rate"), as_rate)?,
        };
        Ok((claims, times))
    }

    /// Appends the claims and `times` as a JSON object; only the claims that
    /// are `Some`/`true` are written (`sub` and `exp` always are).
    pub fn write_json(&self, times: TimeClaims, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"sub\":");
        json::write_str(out, &self.sub);
        write_number_claim(out, "exp", Some(self.exp));
        write_number_claim(out, "nbf", times.nbf);
        write_number_claim(out, "iat", times.iat);
        if let Some(name) = &self.name {
            out.extend_from_slice(b",\"name\":");
            json::write_str(out, name);
        }
        write_patterns_claim(out, "rooms", self.rooms.as_deref());
        write_patterns_claim(out, "pub", self.publish.as_deref());
        if self.admin {
            out.extend_from_slice(b",\"admin\":true");
        }
        write_number_claim(out, "rate", self.rate);
        out.push(b'}');
    }
}

fn required<T>(
    value: Option<&BorrowedValue<'_>>,
    convert: fn(&BorrowedValue<'_>) -> Option<T>,
) -> Result<T, ClaimsError> {
    value.and_then(convert).ok_or(ClaimsError::Invalid)
}

/// Absent is `None`; present with the wrong type (`null` included) is an
/// error, since the protocol makes a mistyped claim invalid.
fn optional<T>(
    value: Option<&BorrowedValue<'_>>,
    convert: fn(&BorrowedValue<'_>) -> Option<T>,
) -> Result<Option<T>, ClaimsError> {
    value
        .map(|v| convert(v).ok_or(ClaimsError::Invalid))
        .transpose()
}

fn as_number(value: &BorrowedValue<'_>) -> Option<f64> {
    let number = match value {
        BorrowedValue::Static(StaticNode::I64(n)) => *n as f64,
        BorrowedValue::Static(StaticNode::U64(n)) => *n as f64,
        BorrowedValue::Static(StaticNode::F64(n)) => *n,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

fn as_rate(value: &BorrowedValue<'_>) -> Option<f64> {
    as_number(value).filter(|rate| *rate >= 0.0)
}

fn as_bool(value: &BorrowedValue<'_>) -> Option<bool> {
    match value {
        BorrowedValue::Static(StaticNode::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn as_string(value: &BorrowedValue<'_>) -> Option<Box<str>> {
    match value {
        BorrowedValue::String(s) => Some(s.as_ref().into()),
        _ => None,
    }
}

fn as_sub(value: &BorrowedValue<'_>) -> Option<Arc<str>> {
    match value {
        BorrowedValue::String(s) if (1..=MAX_SUB_LEN).contains(&s.len()) => Some(Arc::from(&**s)),
        _ => None,
    }
}

/// An array of at most `MAX_PATTERNS` non-empty strings of at most
/// `MAX_ROOM_LEN` bytes each.
fn as_patterns(value: &BorrowedValue<'_>) -> Option<Patterns> {
    let BorrowedValue::Array(items) = value else {
        return None;
    };
    if items.len() > MAX_PATTERNS {
        return None;
    }
    items
        .iter()
        .map(|item| as_string(item).filter(|p| (1..=MAX_ROOM_LEN).contains(&p.len())))
        .collect()
}

/// Whether arrays/objects nest deeper than `max` (strings are skipped). Checked
/// before parsing so that the parser and the drop of its tree stay shallow.
pub(super) fn nesting_depth_exceeds(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn write_number_claim(out: &mut Vec<u8>, key: &str, value: Option<f64>) {
    let Some(value) = value else { return };
    out.push(b',');
    json::write_str(out, key);
    out.push(b':');
    write_number(out, value);
}

/// Rust's `Display` for `f64` is the shortest form that round-trips, but it
/// writes large values as long integers, which simd-json refuses past
/// `u64::MAX`; from 1e15 on the exponent form (`1e20`) is used instead. A
/// non-finite value has no JSON form and becomes `null`, which `verify` then
/// rejects rather than silently changing the claim.
fn write_number(out: &mut Vec<u8>, value: f64) {
    // Writing into a Vec cannot fail.
    let _ = if !value.is_finite() {
        write!(out, "null")
    } else if value.abs() < 1e15 {
        write!(out, "{value}")
    } else {
        write!(out, "{value:e}")
    };
}

fn write_patterns_claim(out: &mut Vec<u8>, key: &str, patterns: Option<&[Box<str>]>) {
    let Some(patterns) = patterns else { return };
    out.push(b',');
    json::write_str(out, key);
    out.extend_from_slice(b":[");
    for (i, pattern) in patterns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(out, pattern);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Claims, TimeClaims), ClaimsError> {
        Claims::from_json(&mut json.as_bytes().to_vec())
    }

    fn full() -> Claims {
        Claims {
            sub: "u\"1\\é".into(),
            exp: 1_700_000_000.5,
            name: Some("Zoë \n".into()),
            rooms: Some(["a".into(), "prices:*".into()].into()),
            publish: Some([].into()),
            admin: true,
            rate: Some(0.0),
        }
    }

    const TIMES: TimeClaims = TimeClaims {
        nbf: Some(-3.0),
        iat: Some(1e20),
    };

    #[test]
    fn write_then_parse_round_trips() {
        let claims = full();
        let mut out = Vec::new();
        claims.write_json(TIMES, &mut out);
        assert_eq!(Claims::from_json(&mut out), Ok((claims, TIMES)));
    }

    proptest::proptest! {
        #[test]
        fn numbers_and_strings_round_trip(
            exp in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            rate in 0.0..1e6f64,
            sub in ".{1,40}",
            name in proptest::option::of(".{0,40}"),
        ) {
            let (sub, name) = (sub.into(), name.map(Into::into));
            let claims = Claims { sub, exp, rate: Some(rate), name, ..full() };
            proptest::prop_assume!(claims.sub.len() <= MAX_SUB_LEN);
            let mut out = Vec::new();
            claims.write_json(TIMES, &mut out);
            proptest::prop_assert_eq!(Claims::from_json(&mut out), Ok((claims, TIMES)));
        }
    }

    #[test]
    fn minimal_claims_write_only_sub_and_exp() {
        let claims = Claims::new("u", 5.0);
        let mut out = Vec::new();
        claims.write_json(TimeClaims::default(), &mut out);
        assert_eq!(out, br#"{"sub":"u","exp":5}"#);
    }

    #[test]
    fn integers_and_floats_are_numbers_and_unknown_claims_are_ignored() {
        let (claims, times) =
            parse(r#"{"sub":"u","exp":10,"nbf":-1,"iat":2.5e1,"x":{"y":[null]}}"#).unwrap();
        assert_eq!(
            (claims.exp, times.nbf, times.iat),
            (10.0, Some(-1.0), Some(25.0))
        );
        assert!(!claims.admin);
    }

    #[test]
    fn wrong_types_and_bounds_are_invalid() {
        let cases = [
            r#"{"exp":1}"#,
            r#"{"sub":"","exp":1}"#,
            r#"{"sub":1,"exp":1}"#,
            r#"{"sub":"u"}"#,
            r#"{"sub":"u","exp":"1"}"#,
            r#"{"sub":"u","exp":1,"nbf":"1"}"#,
            r#"{"sub":"u","exp":1,"iat":null}"#,
            r#"{"sub":"u","exp":1,"name":5}"#,
            r#"{"sub":"u","exp":1,"rooms":"a"}"#,
            r#"{"sub":"u","exp":1,"rooms":[1]}"#,
            r#"{"sub":"u","exp":1,"pub":[""]}"#,
            r#"{"sub":"u","exp":1,"admin":1}"#,
            r#"{"sub":"u","exp":1,"rate":-1}"#,
            r#"{"sub":"u","exp":1,"rate":true}"#,
        ];
        for case in cases {
            assert_eq!(parse(case), Err(ClaimsError::Invalid), "{case}");
        }
        let long_sub = format!(r#"{{"sub":"{}","exp":1}}"#, "a".repeat(MAX_SUB_LEN + 1));
        assert_eq!(parse(&long_sub), Err(ClaimsError::Invalid));
        let max_sub = format!(r#"{{"sub":"{}","exp":1}}"#, "a".repeat(MAX_SUB_LEN));
        assert!(parse(&max_sub).is_ok());
        let long_pattern = format!(
            r#"{{"sub":"u","exp":1,"rooms":["{}"]}}"#,
            "a".repeat(MAX_ROOM_LEN + 1)
        );
        assert_eq!(parse(&long_pattern), Err(ClaimsError::Invalid));
        let many = vec!["\"r\""; MAX_PATTERNS + 1].join(",");
        assert_eq!(
            parse(&format!(r#"{{"sub":"u","exp":1,"pub":[{many}]}}"#)),
            Err(ClaimsError::Invalid)
        );
    }

    #[test]
    fn non_objects_and_deep_nesting_are_not_json() {
        for case in ["", "[]", "\"x\"", "{", "{\"sub\":\"u\",}"] {
            assert_eq!(parse(case), Err(ClaimsError::NotJson), "{case}");
        }
        let deep = format!(
            r#"{{"sub":"u","exp":1,"x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&deep), Err(ClaimsError::NotJson));
        let brackets_in_string = format!(r#"{{"sub":"u","exp":1,"name":"{}\""}}"#, "[".repeat(100));
        assert!(parse(&brackets_in_string).is_ok());
    }
}
