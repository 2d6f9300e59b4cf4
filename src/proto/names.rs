//! The grammars of event names and room names (section 4), and the
//! reserved namespaces (section 6).
//!
//! Pure functions over strings; they decide validity, not permissions.

use crate::codes::limits::{MAX_EVENT_LEN, MAX_ROOM_LEN};

/// Namespaces whose events the server handles itself (`rpc` from v1.2:
/// the `--rpc-proxy` calls).
pub const RESERVED_NAMESPACES: [&str; 6] =
    ["room", "user", "presence", "connection", "system", "rpc"];
/// Bare event names the server reserves.
pub const RESERVED_BARE_NAMES: [&str; 4] = ["ack", "error", "ping", "pong"];

/// `^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*){1,3}$`, at most 64 bytes.
pub fn is_valid_event(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_EVENT_LEN {
        return false;
    }
    // One pass over the bytes: each `:`-separated segment is
    // `[a-z][a-z0-9_]*`.
    let mut segments = 1;
    let mut segment_start = true;
    for b in name.bytes() {
        match b {
            b':' if !segment_start => {
                segments += 1;
                segment_start = true;
            }
            b'a'..=b'z' => segment_start = false,
            b'0'..=b'9' | b'_' if !segment_start => {}
            _ => return false,
        }
    }
    !segment_start && (2..=4).contains(&segments)
}

/// 1-128 bytes of `[A-Za-z0-9._:@/-]`.
pub fn is_valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'-')
        })
}

/// The namespace of a valid event name: what precedes the first `:`.
pub fn namespace(event: &str) -> &str {
    let end = event.bytes().position(|b| b == b':').unwrap_or(event.len());
    event.get(..end).unwrap_or(event)
}

/// Whether a valid event name lies in a reserved namespace.
pub fn is_reserved(event: &str) -> bool {
    RESERVED_NAMESPACES.contains(&namespace(event))
}

/// Whether `pattern` is a room pattern (section 2): `*`, a room name, or
/// a room name's prefix followed by `*`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.len() < MAX_ROOM_LEN && is_valid_room(prefix),
        None => is_valid_room(pattern),
    }
}

/// Whether `room` matches `pattern`: an exact name, a prefix ending in `*`, or `*`.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// Whether any of `patterns` matches `room`.
pub fn matches_any<P: AsRef<str>>(patterns: &[P], room: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p.as_ref(), room))
}

/// Whether a user with these join patterns may join `room`; no patterns
/// (claim absent) means the server default, `*`.
pub fn may_join<P: AsRef<str>>(patterns: Option<&[P]>, room: &str) -> bool {
    patterns.is_none_or(|patterns| matches_any(patterns, room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_grammar() {
        for ok in ["chat:message", "a:b", "a1_:b_2:c:d", "price:tick"] {
            assert!(is_valid_event(ok), "{ok}");
        }
        let long = format!("a:{}", "b".repeat(63));
        for bad in [
            "",
            "chat",
            "Chat:msg",
            "1a:b",
            "a:b:c:d:e",
            "a::b",
            "a:b:",
            "a:B",
            "a-b:c",
            ":a:b",
            "a:_b",
            "a:1b",
            "é:b",
            &long,
        ] {
            assert!(!is_valid_event(bad), "{bad}");
        }
        assert!(is_valid_event(&format!("a:{}", "b".repeat(62))));
    }

    #[test]
    fn room_grammar() {
        for ok in ["lobby", "prices:BTC-USD", "a.b_c:d@e/f-g", &"r".repeat(128)] {
            assert!(is_valid_room(ok), "{ok}");
        }
        for bad in ["", "has space", "é", "a*", &"r".repeat(129)] {
            assert!(!is_valid_room(bad), "{bad}");
        }
    }

    #[test]
    fn patterns_are_names_prefixes_or_all() {
        for ok in ["*", "lobby", "prices:*", "a", "x/y@z-1.2_3:*"] {
            assert!(is_valid_pattern(ok), "{ok:?} refused");
        }
        for bad in ["", "**", "a*b", "*a", "sp ace*", "é*", &"r".repeat(129)] {
            assert!(!is_valid_pattern(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_all() {
        assert!(pattern_matches("lobby", "lobby"));
        assert!(!pattern_matches("lobby", "lobby2"));
        assert!(pattern_matches("prices:*", "prices:BTC"));
        assert!(pattern_matches("prices:*", "prices:"));
        assert!(!pattern_matches("prices:*", "price"));
        assert!(pattern_matches("*", "anything"));
        assert!(may_join::<&str>(None, "x"));
        assert!(!may_join::<&str>(Some(&[]), "x"));
    }

    #[test]
    fn reserved_namespaces() {
        assert!(is_reserved("room:join"));
        assert!(is_reserved("system:anything"));
        assert!(!is_reserved("chat:message"));
        assert!(!is_reserved("rooms:join"));
    }
}
