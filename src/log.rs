//! The lifecycle log: one line per event on stderr, filtered by level, as
//! text or as JSON lines.
//!
//! Owns the global level and format, the line layout and the timestamp.
//! Formatting is sans-IO (`format_event`, `format_message` take the time);
//! only `event` and `write` read the clock and write to stderr, each line
//! with one `write_all` of a line built whole, so that lines from several
//! shard threads never interleave.
//!
//! Callers must never pass a token, a secret, a query string or a header
//! value in a field or a message.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::conn::id::ConnId;
#[cfg(test)]
use crate::conn::id::Issuer;
use crate::sys::unix_ms;

/// How much is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    /// The flag value, and the level in JSON lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }

    /// The level in text lines.
    const fn tag(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
        }
    }
}

/// How lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `2026-11-22T05:17:17.123Z INFO closed conn=9f2c41d0-0-1a code=1000 ...`
    Text,
    /// One JSON object per line: `{"ts","level","event",...}` or `{"ts","level","msg"}`.
    Json,
}

impl Format {
    /// The flag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// A typed field value; borrowed, so building a record allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// A string; quoted in text lines when it holds anything but plain
    /// characters, always escaped.
    Str(&'a str),
    /// A number.
    U64(u64),
    /// A connection id, as a string (`[<node>:]<boot>-<shard>-<n>`, no character
    /// that needs quoting or escaping).
    Conn(ConnId<'a>),
    /// An address.
    Ip(IpAddr),
    /// An address and port.
    Addr(SocketAddr),
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

/// Sets the process-wide level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Sets the process-wide format.
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// Whether lines at `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one structured record, if `level` is enabled.
pub fn event(level: Level, name: &str, fields: &[(&str, Field<'_>)]) {
    if !enabled(level) {
        return;
    }
    let mut line = Vec::with_capacity(192);
    format_event(&mut line, format(), unix_ms(), level, name, fields);
    emit(&line);
}

/// Writes one free-form line at `level`; use the `log_*!` macros.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    format_message(&mut line, format(), unix_ms(), level, args);
    emit(&line);
}

/// Appends a structured record, newline included.
pub fn format_event(
    out: &mut Vec<u8>,
    format: Format,
    unix_ms: u64,
    level: Level,
    name: &str,
    fields: &[(&str, Field<'_>)],
) {
    match format {
        Format::Text => {
            text_prefix(out, unix_ms, level);
            push_text_value(out, name);
            for (key, value) in fields {
                out.push(b' ');
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                push_text_field(out, value);
            }
        }
        Format::Json => {
            json_prefix(out, unix_ms, level);
            json_key(out, "event");
            crate::json::write_str(out, name);
            for (key, value) in fields {
                json_key(out, key);
                push_json_field(out, value);
            }
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// Appends a free-form line, newline included.
pub fn format_message(
    out: &mut Vec<u8>,
    format: Format,
    unix_ms: u64,
    level: Level,
    args: std::fmt::Arguments<'_>,
) {
    let mut msg = String::new();
    let _ = msg.write_fmt(args);
    match format {
        Format::Text => {
            text_prefix(out, unix_ms, level);
            // One record, one line: a message never breaks the line.
            for c in msg.chars() {
                if c.is_control() {
                    out.push(b' ');
                } else {
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        Format::Json => {
            json_prefix(out, unix_ms, level);
            json_key(out, "msg");
            crate::json::write_str(out, &msg);
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

fn text_prefix(out: &mut Vec<u8>, unix_ms: u64, level: Level) {
    write_timestamp(out, unix_ms);
    out.push(b' ');
    out.extend_from_slice(level.tag().as_bytes());
    out.push(b' ');
}

fn json_prefix(out: &mut Vec<u8>, unix_ms: u64, level: Level) {
    out.extend_from_slice(b"{\"ts\":\"");
    write_timestamp(out, unix_ms);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level.as_str().as_bytes());
    out.push(b'"');
}

fn json_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    crate::json::write_str(out, key);
    out.push(b':');
}

/// A text value as is when it is plain, else as a JSON string, so that a
/// value from the network can neither break the line nor fake a field.
fn push_text_value(out: &mut Vec<u8>, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        out.extend_from_slice(value.as_bytes());
    } else {
        crate::json::write_str(out, value);
    }
}

fn push_text_field(out: &mut Vec<u8>, value: &Field<'_>) {
    match value {
        Field::Str(s) => push_text_value(out, s),
        other => push_display(out, other),
    }
}

fn push_json_field(out: &mut Vec<u8>, value: &Field<'_>) {
    match value {
        Field::Str(s) => crate::json::write_str(out, s),
        Field::U64(n) => crate::json::write_u64(out, *n),
        other => {
            out.push(b'"');
            push_display(out, other);
            out.push(b'"');
        }
    }
}

/// Numbers and addresses: their characters never need escaping.
fn push_display(out: &mut Vec<u8>, value: &Field<'_>) {
    let mut text = String::new();
    let _ = match value {
        Field::Str(s) => text.write_str(s),
        Field::U64(n) => write!(text, "{n}"),
        Field::Conn(id) => write!(text, "{id}"),
        Field::Ip(ip) => write!(text, "{ip}"),
        Field::Addr(addr) => write!(text, "{addr}"),
    };
    out.extend_from_slice(text.as_bytes());
}

/// Appends `unix_ms` as RFC 3339 UTC with milliseconds:
/// `2026-11-22T05:17:17.123Z`.
pub fn write_timestamp(out: &mut Vec<u8>, unix_ms: u64) {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut text = String::with_capacity(24);
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        unix_ms % 1000
    );
    out.extend_from_slice(text.as_bytes());
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): eras of 400 years, years starting in March
/// so that the leap day comes last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One `write_all` per line on the locked stderr; a failed write is
/// dropped, since there is nowhere left to report it.
fn emit(line: &[u8]) {
    let _ = std::io::stderr().lock().write_all(line);
}

/// Logs at info level.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::write($crate::log::Level::Info, format_args!($($arg)*));
        }
    };
}

/// Logs at debug level.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*));
        }
    };
}

/// Logs at warn level.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*));
        }
    };
}

/// Logs at error level.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::write($crate::log::Level::Error, format_args!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(unix_ms: u64) -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out, unix_ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(timestamp(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(timestamp(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_324_637_123), "2026-11-22T05:17:17.123Z");
        assert_eq!(timestamp(1_704_067_199_000), "2023-12-31T23:59:59.000Z");
    }

    #[test]
    fn civil_from_days_round_trips_every_day_of_four_centuries() {
        let mut expected = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            expected = match (d == len, m == 12) {
                (false, _) => (y, m, d + 1),
                (true, false) => (y, m + 1, 1),
                (true, true) => (y + 1, 1, 1),
            };
        }
    }

    fn closed_fields() -> [(&'static str, Field<'static>); 5] {
        [
            (
                "conn",
                Field::Conn(
                    Issuer {
                        node: Some("eu-1"),
                        boot: 0xc0ffee,
                    }
                    .id(26),
                ),
            ),
            ("ip", Field::Ip(IpAddr::from([127, 0, 0, 1]))),
            ("code", Field::U64(1000)),
            ("path", Field::Str("/a b\"c\n")),
            ("peer", Field::Addr("[::1]:80".parse().unwrap())),
        ]
    }

    #[test]
    fn text_records_are_one_line_of_key_value_pairs() {
        let mut out = Vec::new();
        let ms = 1_795_324_637_123;
        format_event(
            &mut out,
            Format::Text,
            ms,
            Level::Info,
            "closed",
            &closed_fields(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T05:17:17.123Z INFO closed conn=eu-1:00c0ffee-0-1a ip=127.0.0.1 code=1000 \
             path=\"/a b\\\"c\\n\" peer=[::1]:80\n"
        );
    }

    #[test]
    fn json_records_are_one_escaped_object_per_line() {
        let mut out = Vec::new();
        format_event(
            &mut out,
            Format::Json,
            0,
            Level::Debug,
            "closed",
            &closed_fields(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"debug\",\"event\":\"closed\",\
             \"conn\":\"eu-1:00c0ffee-0-1a\",\"ip\":\"127.0.0.1\",\"code\":1000,\"path\":\"/a b\\\"c\\n\",\
             \"peer\":\"[::1]:80\"}\n"
        );
    }

    #[test]
    fn messages_get_the_prefix_or_a_msg_field() {
        let mut out = Vec::new();
        let args = format_args!("shard {}: \"oops\"\nnext", 1);
        format_message(&mut out, Format::Text, 0, Level::Warn, args);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000Z WARN shard 1: \"oops\" next\n"
        );
        let mut out = Vec::new();
        let args = format_args!("say \"hi\"");
        format_message(&mut out, Format::Json, 0, Level::Error, args);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"error\",\"msg\":\"say \\\"hi\\\"\"}\n"
        );
    }
}
