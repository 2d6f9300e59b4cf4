//! A connection's id as clients and the logs see it (`connId` in
//! `connection:established`, `conn=` on lifecycle lines): its writer and
//! its parser, sans-IO, in one place.
//!
//! One process: `<boot>-<shard>-<n>`; a cluster node:
//! `<node-id>:<boot>-<shard>-<n>`. `boot` is 8 lower-case hex digits drawn
//! at random when the process starts, so that ids do not repeat across
//! restarts (a stale id names no connection instead of a newer one);
//! `shard` is the shard's index in decimal, `n` the count of sockets that
//! shard accepted before this one in lower-case hex, both without leading
//! zeros. A node id never holds `:` (`is_cluster_name`), so the first `:`
//! ends it, and the rest is three numbers between two `-`: every part
//! reads back unambiguously, and the server API can route an id to its
//! node and shard. Inside the process a connection is one `u64` (`raw`),
//! the shard above the count, which is what `ConnRef::id` holds; the
//! `Issuer` (node and boot) is the same for all of them.

use std::fmt;

/// Bits of the raw id that hold the per-shard count; the shard is above.
const COUNT_BITS: u32 = 40;
/// The largest per-shard count a raw id holds.
pub const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
/// The largest shard index a raw id holds.
pub const MAX_SHARD: usize = (1 << (64 - COUNT_BITS)) - 1;
/// Hex digits of the boot tag, always all written.
const BOOT_DIGITS: usize = 8;

/// The id inside the process of `shard`'s connection `n`: the shard above
/// the count. `shard` and `n` must be within `MAX_SHARD` and `MAX_COUNT`,
/// as `ConnId::parse` ensures.
pub fn raw(shard: usize, n: u64) -> u64 {
    ((shard as u64) << COUNT_BITS) | (n & MAX_COUNT)
}

/// The process that gives out ids: what every id it writes starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer<'a> {
    /// `--node-id` in cluster mode (`Config::node_id`); `None` in one
    /// process.
    pub node: Option<&'a str>,
    /// Random per process (`Shared::boot`).
    pub boot: u32,
}

impl<'a> Issuer<'a> {
    /// The id of this process's connection `raw` (see `ConnId::raw`).
    pub fn id(self, raw: u64) -> ConnId<'a> {
        ConnId {
            node: self.node,
            boot: self.boot,
            shard: (raw >> COUNT_BITS) as usize,
            n: raw & MAX_COUNT,
        }
    }
}

/// A connection id, borrowing its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId<'a> {
    /// The cluster node that holds the connection; `None` in one process.
    pub node: Option<&'a str>,
    /// The process's random tag (`Shared::boot`).
    pub boot: u32,
    /// The shard that holds it.
    pub shard: usize,
    /// How many sockets that shard accepted before it.
    pub n: u64,
}

/// Why a text is not a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnIdError {
    /// The part before `:` is not a node id.
    Node,
    /// Not three parts between two `-` after the node.
    Parts,
    /// The boot tag is not 8 lower-case hex digits.
    Boot,
    /// The shard is not a canonical decimal number up to `MAX_SHARD`.
    Shard,
    /// The count is not canonical lower-case hex up to `MAX_COUNT`.
    Count,
}

impl<'a> ConnId<'a> {
    /// The process that gave it out: an id whose issuer is not this
    /// process's names no connection here, even if shard and count match.
    pub fn issuer(&self) -> Issuer<'a> {
        Issuer {
            node: self.node,
            boot: self.boot,
        }
    }

    /// The id inside the process (see `raw`).
    pub fn raw(&self) -> u64 {
        raw(self.shard, self.n)
    }

    /// Reads an id written by `Display`; only the canonical spelling.
    pub fn parse(text: &'a str) -> Result<Self, ConnIdError> {
        let (node, local) = match text.split_once(':') {
            Some((node, local)) if crate::config::is_cluster_name(node) => (Some(node), local),
            Some(_) => return Err(ConnIdError::Node),
            None => (None, text),
        };
        let mut parts = local.splitn(3, '-');
        let (Some(boot), Some(shard), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ConnIdError::Parts);
        };
        let boot = Some(boot)
            .filter(|b| b.len() == BOOT_DIGITS && is_lower_hex(b))
            .and_then(|b| u32::from_str_radix(b, 16).ok())
            .ok_or(ConnIdError::Boot)?;
        let shard = canonical(shard, 10)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= MAX_SHARD)
            .ok_or(ConnIdError::Shard)?;
        let n = canonical(n, 16)
            .filter(|&n| n <= MAX_COUNT)
            .ok_or(ConnIdError::Count)?;
        Ok(Self {
            node,
            boot,
            shard,
            n,
        })
    }
}

fn is_lower_hex(digits: &str) -> bool {
    digits
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `digits` as a number in `radix` (10 or 16), if spelled as `Display`
/// spells it: digits only (lower-case), no sign, no leading zero.
fn canonical(digits: &str, radix: u32) -> Option<u64> {
    let plain = if radix == 16 {
        is_lower_hex(digits)
    } else {
        digits.bytes().all(|b| b.is_ascii_digit())
    };
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    if !plain || leading_zero {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

impl fmt::Display for ConnId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(node) = self.node {
            write!(f, "{node}:")?;
        }
        write!(f, "{:08x}-{}-{:x}", self.boot, self.shard, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: Option<&str>, shard: usize, n: u64) -> ConnId<'_> {
        ConnId {
            node,
            boot: 0x00c0_ffee,
            shard,
            n,
        }
    }

    #[test]
    fn one_process_ids_are_boot_shard_and_hex_count() {
        assert_eq!(id(None, 0, 0).to_string(), "00c0ffee-0-0");
        assert_eq!(id(None, 12, 26).to_string(), "00c0ffee-12-1a");
        assert_eq!(ConnId::parse("00c0ffee-12-1a"), Ok(id(None, 12, 26)));
    }

    #[test]
    fn cluster_ids_name_their_node_even_one_with_dashes_and_dots() {
        let cid = id(Some("eu-1.b_2"), 3, 0xff);
        assert_eq!(cid.to_string(), "eu-1.b_2:00c0ffee-3-ff");
        assert_eq!(ConnId::parse("eu-1.b_2:00c0ffee-3-ff"), Ok(cid));
    }

    #[test]
    fn the_same_shard_and_count_elsewhere_or_after_a_restart_is_another_id() {
        let a = id(Some("a"), 1, 5);
        let others = [id(Some("b"), 1, 5), id(None, 1, 5), ConnId { boot: 1, ..a }];
        for other in others {
            assert_ne!(a.to_string(), other.to_string());
        }
    }

    #[test]
    fn raw_ids_keep_the_shard_above_the_count() {
        let cid = id(Some("n"), 7, MAX_COUNT);
        assert_eq!(cid.raw(), (7 << 40) | MAX_COUNT);
        assert_eq!(cid.issuer().id(cid.raw()), cid);
        let one_process = id(None, 0, 0).issuer();
        assert_eq!(one_process.id(u64::MAX), id(None, MAX_SHARD, MAX_COUNT));
    }

    #[test]
    fn anything_but_the_canonical_spelling_is_refused() {
        let cases = [
            ("", ConnIdError::Parts),
            ("1a", ConnIdError::Parts),
            ("00c0ffee-1", ConnIdError::Parts),
            ("n:", ConnIdError::Parts),
            (":00c0ffee-0-1", ConnIdError::Node),
            ("a b:00c0ffee-0-1", ConnIdError::Node),
            ("a:b:00c0ffee-0-1", ConnIdError::Boot),
            ("c0ffee-0-1", ConnIdError::Boot),
            ("00C0FFEE-0-1", ConnIdError::Boot),
            ("100c0ffee-0-1", ConnIdError::Boot),
            ("00c0ffee--1", ConnIdError::Shard),
            ("00c0ffee-01-1", ConnIdError::Shard),
            ("00c0ffee-a-1", ConnIdError::Shard),
            ("00c0ffee-+1-1", ConnIdError::Shard),
            ("00c0ffee-16777216-1", ConnIdError::Shard),
            ("00c0ffee-0-", ConnIdError::Count),
            ("00c0ffee-0-01", ConnIdError::Count),
            ("00c0ffee-0-1A", ConnIdError::Count),
            ("00c0ffee-0-1-2", ConnIdError::Count),
            ("00c0ffee-0-10000000000", ConnIdError::Count),
        ];
        for (text, error) in cases {
            assert_eq!(ConnId::parse(text), Err(error), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_round_trip(
            node in proptest::option::of("[A-Za-z0-9_.-]{1,64}"),
            boot: u32,
            shard in 0..=MAX_SHARD,
            n in 0..=MAX_COUNT,
        ) {
            let cid = ConnId { node: node.as_deref(), boot, shard, n };
            let text = cid.to_string();
            proptest::prop_assert_eq!(ConnId::parse(&text), Ok(cid));
            proptest::prop_assert_eq!(cid.issuer().id(cid.raw()), cid);
        }

        #[test]
        fn whatever_parses_is_written_back_the_same(
            text in "([a-z0-9_.-]{1,6}:)?[0-9a-f]{8}-[0-9a-f]{1,3}-[0-9a-f-]{1,4}",
        ) {
            if let Ok(cid) = ConnId::parse(&text) {
                proptest::prop_assert_eq!(cid.to_string(), text);
            }
        }
    }
}
