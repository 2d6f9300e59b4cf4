//! `Sec-WebSocket-Extensions` negotiation of permessage-deflate (RFC 7692
//! section 7), sans-IO: the client's offers in, the server's answer out.
//!
//! The server's policy is fixed by what compress-once fan-out needs:
//! - it always answers `server_no_context_takeover`, so every message it
//!   sends is compressed on its own and the same bytes can go to every
//!   member of a room;
//! - it always answers `client_no_context_takeover` (RFC 7692 7.1.1.2 lets
//!   a server ask for it even when not offered), so a connection keeps no
//!   inflate window between messages and an idle one holds no deflate state;
//! - it compresses with a 15-bit window only. An offer that limits
//!   `server_max_window_bits` to N (8 to 15) is accepted with N echoed, and
//!   when N < 15 that connection is simply never sent a compressed frame
//!   (7.2.1 lets a sender send any message uncompressed, RSV1 clear);
//! - it inflates any window the client uses, so `client_max_window_bits`
//!   is accepted with or without a value and not answered.
//!
//! Offers are read as RFC 7230 lists; an offer with an unknown parameter, a
//! repeated one or a bad value is declined (7.1: "MUST decline"), never an
//! error for the whole upgrade. Owns the parsing and the answer; the frames
//! and the compression itself are elsewhere.

use std::fmt::Write as _;

/// The extension's name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The LZ77 window the server compresses with, in bits (32 KiB).
const SERVER_WINDOW_BITS: u8 = 15;

/// What the server agreed to with one client (and then holds to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The client's `server_max_window_bits`, echoed in the answer; `None`
    /// when the offer did not limit the server's window.
    pub server_max_window_bits: Option<u8>,
}

impl Deflate {
    /// Whether messages to this client may be compressed: only when the
    /// client takes the server's full 15-bit window.
    pub fn compresses_out(self) -> bool {
        self.server_max_window_bits
            .is_none_or(|bits| bits == SERVER_WINDOW_BITS)
    }

    /// The value of the 101 response's `Sec-WebSocket-Extensions`.
    pub fn response(self) -> String {
        let mut out = String::with_capacity(96);
        out.push_str(PERMESSAGE_DEFLATE);
        out.push_str("; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={bits}");
        }
        out
    }
}

/// The agreement for the first offer of permessage-deflate the server can
/// accept among `headers` (every `Sec-WebSocket-Extensions` line, in
/// order), or `None`: no compression.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Deflate> {
    headers
        .into_iter()
        .flat_map(split_list)
        .find_map(acceptable)
}

/// The elements of a comma-separated list, outside quoted strings.
fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|element| !element.is_empty());
    out
}

/// The agreement for one offer (`name; param; param=value`) when it is
/// permessage-deflate with parameters this server can agree to.
fn acceptable(offer: &str) -> Option<Deflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
    {
        return None;
    }
    let mut agreed = Deflate {
        server_max_window_bits: None,
    };
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, raw)) => (name.trim(), Some(unquote(raw.trim())?)),
            None => (param, None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            // Any server window is accepted: below 15 the client just gets
            // uncompressed frames.
            "server_max_window_bits" => {
                agreed.server_max_window_bits = Some(window_bits(value.as_deref())?);
                2
            }
            // Any client window is inflated; a value must be valid.
            "client_max_window_bits"
                if value.is_none() || window_bits(value.as_deref()).is_some() =>
            {
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreed)
}

/// A parameter value: a token, or a quoted string without its quotes (and
/// escapes); `None` when malformed.
fn unquote(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        return Some(out);
    }
    let is_token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    is_token.then(|| value.to_owned())
}

/// A window size parameter: 8 to 15, in plain digits with no leading zero.
fn window_bits(value: Option<&str>) -> Option<u8> {
    let value = value?;
    if value.starts_with('0') || value.len() > 2 {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agreed(headers: &[&str]) -> bool {
        negotiate(headers.iter().copied()).is_some()
    }

    fn window(headers: &[&str]) -> Option<u8> {
        negotiate(headers.iter().copied())
            .unwrap()
            .server_max_window_bits
    }

    #[test]
    fn a_plain_offer_gets_both_no_context_takeovers() {
        let deflate = negotiate(["permessage-deflate"]).unwrap();
        assert_eq!(
            deflate.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(deflate.compresses_out());
        assert!(agreed(&["permessage-deflate; client_max_window_bits"]));
        assert!(agreed(&["Permessage-Deflate; Client_Max_Window_Bits=10"]));
        assert!(agreed(&[
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ]));
        assert_eq!(
            window(&["permessage-deflate; server_max_window_bits=\"15\""]),
            Some(15)
        );
    }

    #[test]
    fn a_limited_server_window_is_echoed_and_then_nothing_is_compressed() {
        let deflate = negotiate(["permessage-deflate; server_max_window_bits=9"]).unwrap();
        assert_eq!(deflate.server_max_window_bits, Some(9));
        assert!(!deflate.compresses_out());
        assert_eq!(
            deflate.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9"
        );
        let full = negotiate(["permessage-deflate; server_max_window_bits=15"]).unwrap();
        assert!(full.compresses_out());
        assert!(full.response().ends_with("; server_max_window_bits=15"));
    }

    #[test]
    fn offers_it_cannot_accept_are_declined_and_the_next_one_is_tried() {
        assert!(!agreed(&[]));
        assert!(!agreed(&["x-webkit-deflate-frame"]));
        assert_eq!(
            window(&["permessage-deflate; server_max_window_bits=7, permessage-deflate"]),
            None,
            "the second offer"
        );
        assert!(
            agreed(&["foo", "permessage-deflate"]),
            "a later header line"
        );
        for bad in [
            "permessage-deflate; unknown",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=9; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=\"1\"0\"",
            "permessage-deflate; client_max_window_bits=a b",
        ] {
            assert!(!agreed(&[bad]), "{bad}");
        }
    }

    #[test]
    fn commas_inside_quoted_strings_do_not_split_offers() {
        assert_eq!(
            split_list(r#"a; p="x,y", b ,, c"#),
            [r#"a; p="x,y""#, "b", "c"]
        );
    }

    proptest! {
        #[test]
        fn any_header_is_answered_without_panicking(
            lines in proptest::collection::vec("[ -~]{0,80}", 0..4)
        ) {
            let result = negotiate(lines.iter().map(String::as_str));
            if let Some(deflate) = result {
                prop_assert!(deflate.response().starts_with(PERMESSAGE_DEFLATE));
            }
        }

        #[test]
        fn every_valid_client_window_is_accepted(bits in 8u8..=15) {
            let offer = format!("permessage-deflate; client_max_window_bits={bits}");
            prop_assert!(negotiate([offer.as_str()]).is_some());
        }

        #[test]
        fn every_valid_server_window_is_accepted_and_echoed(bits in 8u8..=15) {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let deflate = negotiate([offer.as_str()]).unwrap();
            prop_assert_eq!(deflate.server_max_window_bits, Some(bits));
            prop_assert_eq!(deflate.compresses_out(), bits == 15);
            let echoed = format!("server_max_window_bits={bits}");
            prop_assert!(deflate.response().ends_with(&echoed));
        }
    }
}
