//! The load generator's messages: encoded and masked once, then copied out
//! with a few fixed-width fields patched in place (and masked at their
//! offsets), so sending allocates nothing and encodes nothing.
//!
//! Every payload carries a record `T<16 digits>P<6 digits>N<10 digits>`:
//! the send time in microseconds since the Unix epoch (processes on one
//! machine share that clock), the publisher and its message counter.

use std::time::{SystemTime, UNIX_EPOCH};

use roomcast::ws::frame::{OpCode, encode_masked_frame};

/// Length of the record at the start of a payload's variable part.
pub const RECORD_LEN: usize = 35;
const TIME_DIGITS: usize = 16;
const PUBLISHER_DIGITS: usize = 6;
const COUNTER_DIGITS: usize = 10;

/// A client frame ready to copy, with the places of its variable fields.
#[derive(Debug, Clone)]
pub struct Template {
    frame: Vec<u8>,
    mask: [u8; 4],
    payload_start: usize,
    /// Payload offsets of the record (if any) and of a 10-digit id (if any).
    record_at: Option<usize>,
    id_at: Option<usize>,
}

/// The placeholder record in a text before it is made a template.
pub fn placeholder_record(publisher: u32, padding_to: usize) -> String {
    let mut record = format!(
        "T{}P{:06}N{}",
        "0".repeat(TIME_DIGITS),
        publisher % 1_000_000,
        "0".repeat(COUNTER_DIGITS)
    );
    while record.len() < padding_to {
        record.push('x');
    }
    record
}

/// A JSON price update of about `size` bytes (at least the record's
/// object), as a market-data feed publishes it: the record in `"t"`, a
/// symbol, and order book levels whose prices step down and up by varied
/// ticks and whose sizes have varied digits, so that it compresses like
/// real data rather than like padding.
pub fn price_update(record: &str, size: usize) -> String {
    let mut out = format!(r#"{{"t":"{record}","sym":"BTC-USD","venue":"xchg","#);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |modulo: u64| {
        // xorshift64: deterministic, varied digits.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % modulo
    };
    let (mut bid, mut ask) = (6_700_150_u64, 6_700_200_u64);
    let mut levels = String::new();
    let mut asks = String::new();
    while out.len() + levels.len() + asks.len() + 24 < size {
        bid -= 1 + next(40);
        ask += 1 + next(40);
        let sep = if levels.is_empty() { "" } else { "," };
        levels.push_str(&format!(
            "{sep}[{}.{:02},{}.{:04}]",
            bid / 100,
            bid % 100,
            next(5),
            next(10_000)
        ));
        asks.push_str(&format!(
            "{sep}[{}.{:02},{}.{:04}]",
            ask / 100,
            ask % 100,
            next(5),
            next(10_000)
        ));
    }
    out.push_str(&format!(r#""bids":[{levels}],"asks":[{asks}]}}"#));
    out
}

/// The placeholder of a 10-digit string id.
pub const ID_PLACEHOLDER: &str = "#########";

impl Template {
    /// Encodes `payload` once as a masked frame. The record is found at its
    /// `T` marker, the id at `ID_PLACEHOLDER` followed by one more `#`.
    pub fn new(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Self {
        let record_at = find(payload, b"T0000000000000000P");
        let id_marker = format!("{ID_PLACEHOLDER}#");
        let id_at = find(payload, id_marker.as_bytes());
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode_masked_frame(true, opcode, payload, mask, &mut frame);
        let payload_start = frame.len() - payload.len();
        Self {
            frame,
            mask,
            payload_start,
            record_at,
            id_at,
        }
    }

    /// Appends the frame with the send time, counter and id filled in.
    pub fn write(&self, out: &mut Vec<u8>, time_us: u64, counter: u64, id: u64) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let payload = start + self.payload_start;
        if let Some(at) = self.record_at {
            self.put_digits(out, payload, at + 1, time_us, TIME_DIGITS);
            self.put_digits(
                out,
                payload,
                at + 3 + TIME_DIGITS + PUBLISHER_DIGITS,
                counter,
                COUNTER_DIGITS,
            );
        }
        if let Some(at) = self.id_at {
            self.put_digits(out, payload, at, id, COUNTER_DIGITS);
        }
    }

    fn put_digits(
        &self,
        out: &mut [u8],
        payload: usize,
        offset: usize,
        mut value: u64,
        width: usize,
    ) {
        for i in (0..width).rev() {
            let digit = b'0' + (value % 10) as u8;
            value /= 10;
            let at = offset + i;
            out[payload + at] = digit ^ self.mask[at % 4];
        }
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a received payload's record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub time_us: u64,
    pub publisher: u32,
    pub counter: u64,
}

/// Reads the record starting at `text[0]` (which must be `T`).
pub fn read_record(text: &[u8]) -> Option<Record> {
    if text.len() < RECORD_LEN || text[0] != b'T' || text[1 + TIME_DIGITS] != b'P' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        text[range].iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
        })
    };
    let p = 2 + TIME_DIGITS;
    Some(Record {
        time_us: number(1..1 + TIME_DIGITS)?,
        publisher: number(p..p + PUBLISHER_DIGITS)? as u32,
        counter: number(p + PUBLISHER_DIGITS + 1..p + PUBLISHER_DIGITS + 1 + COUNTER_DIGITS)?,
    })
}

/// Finds the record inside a payload (after `"data":"` for roomcast, at the
/// start for raw peers, after `["msg","` for Socket.IO).
pub fn find_record(text: &[u8]) -> Option<Record> {
    let at = text.iter().position(|&b| b == b'T')?;
    read_record(&text[at..]).or_else(|| {
        let at = find(text, b"\"T")? + 1;
        read_record(&text[at..])
    })
}

/// Reads the unsigned integer after `key` (e.g. `"seq":`).
pub fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    text[at..at + digits].iter().try_fold(0u64, |n, &b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The JSON string value after `key` (which ends with its opening quote,
/// e.g. `"epoch":"`), without escapes: up to the next quote.
pub fn string_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(text, key)? + key.len();
    let len = text[at..].iter().position(|&b| b == b'"')?;
    Some(&text[at..at + len])
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::ws::decoder::{Decoder, Message};

    #[test]
    fn a_string_value_is_read_up_to_its_closing_quote() {
        let ack = br#"{"event":"ack","data":{"room":"all","epoch":"e1f","seq":3}}"#;
        assert_eq!(string_after(ack, br#""epoch":""#), Some(&b"e1f"[..]));
        assert_eq!(string_after(ack, br#""nope":""#), None);
        assert_eq!(string_after(br#""epoch":"open"#, br#""epoch":""#), None);
    }

    #[test]
    fn a_template_patches_time_counter_and_id_under_the_mask() {
        let payload = format!(
            r#"{{"event":"bench:msg","room":"r","data":"{}","id":"{}#"}}"#,
            placeholder_record(7, 50),
            ID_PLACEHOLDER
        );
        let template = Template::new(OpCode::Text, payload.as_bytes(), [9, 8, 7, 6]);
        let mut out = Vec::new();
        template.write(&mut out, 1_795_000_000_123_456, 42, 17);
        let mut decoder = Decoder::new(1 << 20, true);
        let decoded = decoder.decode(&mut out).unwrap();
        let Some(Message::Text(text)) = decoded.message else {
            panic!()
        };
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(text.contains(r#""id":"0000000017""#), "{text}");
        let record = find_record(text.as_bytes()).unwrap();
        assert_eq!(
            record,
            Record {
                time_us: 1_795_000_000_123_456,
                publisher: 7,
                counter: 42
            }
        );
    }

    #[test]
    fn a_price_update_is_json_of_about_the_size_with_its_record() {
        let record = placeholder_record(4, 0);
        let text = price_update(&record, 1024);
        assert!((1000..=1100).contains(&text.len()), "{}", text.len());
        let mut bytes = text.clone().into_bytes();
        assert!(simd_json::to_borrowed_value(&mut bytes).is_ok(), "{text}");
        let wrapped = format!(r#"{{"event":"bench:msg","room":"bench-0","data":{text}}}"#);
        assert_eq!(
            find_record(wrapped.as_bytes()).map(|r| r.publisher),
            Some(4)
        );
        assert!(price_update(&record, 0).starts_with(r#"{"t":"T"#));
    }

    #[test]
    fn numbers_after_keys() {
        assert_eq!(number_after(br#"{"seq":42,"ts":1}"#, b"\"seq\":"), Some(42));
        assert_eq!(number_after(br#"{"seq":x}"#, b"\"seq\":"), None);
        assert_eq!(number_after(b"", b"\"seq\":"), None);
    }

    #[test]
    fn records_are_found_in_each_framing() {
        let record = placeholder_record(3, 0);
        for text in [
            format!(r#"{{"data":"{record}"}}"#),
            record.clone(),
            format!(r#"42["msg","{record}"]"#),
        ] {
            assert_eq!(
                find_record(text.as_bytes()).map(|r| r.publisher),
                Some(3),
                "{text}"
            );
        }
    }
}
