//! Redis Cluster's topology, sans-IO: the slot map read from `CLUSTER
//! SLOTS` (which master holds each of the 16384 slots) and the `-MOVED` /
//! `-ASK` redirections a master answers for a slot it does not serve.
//!
//! What a cluster node answers is input: a map that leaves a slot
//! uncovered, names a slot past 16383, a port out of range, an empty host
//! or more masters than `MAX_MASTERS` is refused whole (`MapError`), and
//! the bridge keeps its last map and asks again later.

use std::fmt;

use crate::redis::resp::Reply;

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16_384;
/// Most masters a map may name: more is refused, so a bad reply cannot
/// make the bridge open connections without bound.
pub const MAX_MASTERS: usize = 1_000;

/// A cluster node's address, as the cluster names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    /// Reads `host:port` (the host may be an IPv6 address, unbracketed as
    /// Redis writes it, or bracketed); `None` for an empty host or a port
    /// not in 1..=65535.
    pub fn parse(text: &str) -> Option<Address> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse().ok().filter(|&p: &u16| p != 0)?;
        (!host.is_empty() && !host.contains(['[', ']', ' '])).then(|| Address {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which master holds each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Each master once, sorted.
    masters: Vec<Address>,
    /// Per slot, an index into `masters`.
    owners: Vec<u16>,
}

/// Why a slot map was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Not an array of `[start, end, [host, port, ...], ...]`.
    Shape,
    /// A range past slot 16383 or ending before it starts.
    Range,
    /// A master's host empty, or its port out of range.
    Address,
    /// Two ranges claim one slot.
    Overlap(u16),
    /// No master holds this slot.
    Uncovered(u16),
    /// More than `MAX_MASTERS`.
    TooManyMasters,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Shape => f.write_str("the slot map is out of shape"),
            MapError::Range => f.write_str("the slot map has a range out of 0-16383"),
            MapError::Address => f.write_str("the slot map names a master without an address"),
            MapError::Overlap(slot) => write!(f, "the slot map gives slot {slot} twice"),
            MapError::Uncovered(slot) => write!(f, "no master holds slot {slot}"),
            MapError::TooManyMasters => write!(f, "the slot map names over {MAX_MASTERS} masters"),
        }
    }
}

impl std::error::Error for MapError {}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply: every slot held by exactly one
    /// master, or the whole map is refused.
    /// A master named with an empty host is on the host that was asked,
    /// `asked_host` (Redis' documented meaning: a node that knows no better
    /// name for itself, as a one-master cluster does).
    pub fn from_slots(reply: &Reply, asked_host: &str) -> Result<SlotMap, MapError> {
        let Reply::Array(ranges) = reply else {
            return Err(MapError::Shape);
        };
        let mut held: Vec<Option<Address>> = vec![None; SLOTS];
        for range in ranges {
            let Reply::Array(items) = range else {
                return Err(MapError::Shape);
            };
            let [start, end, Reply::Array(master), ..] = items.as_slice() else {
                return Err(MapError::Shape);
            };
            let slot = |r: &Reply| {
                r.as_i64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n < SLOTS)
            };
            let (Some(start), Some(end)) = (slot(start), slot(end)) else {
                return Err(MapError::Range);
            };
            if end < start {
                return Err(MapError::Range);
            }
            let address = master_address(master, asked_host)?;
            for (at, owner) in held[start..=end].iter_mut().enumerate() {
                if owner.is_some() {
                    return Err(MapError::Overlap(slot_number(start + at)));
                }
                *owner = Some(address.clone());
            }
        }
        let mut masters: Vec<Address> = held.iter().flatten().cloned().collect();
        masters.sort();
        masters.dedup();
        if masters.len() > MAX_MASTERS {
            return Err(MapError::TooManyMasters);
        }
        let owners = held
            .iter()
            .enumerate()
            .map(|(slot, owner)| {
                let owner = owner
                    .as_ref()
                    .ok_or(MapError::Uncovered(slot_number(slot)))?;
                let index = masters.binary_search(owner).unwrap_or_default();
                Ok(u16::try_from(index).unwrap_or_default())
            })
            .collect::<Result<_, _>>()?;
        Ok(SlotMap { masters, owners })
    }

    /// Every master, each once, sorted.
    pub fn masters(&self) -> &[Address] {
        &self.masters
    }

    /// The runs of consecutive slots of one master, in slot order:
    /// `(first, last, master)`.
    pub fn ranges(&self) -> Vec<(u16, u16, &Address)> {
        let mut ranges: Vec<(u16, u16, &Address)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            let master = &self.masters[usize::from(owner)];
            let slot = slot_number(slot);
            match ranges.last_mut() {
                Some((_, last, m)) if *m == master => *last = slot,
                _ => ranges.push((slot, slot, master)),
            }
        }
        ranges
    }

    /// The master holding `slot` (taken modulo `SLOTS`).
    pub fn master_of(&self, slot: u16) -> &Address {
        &self.masters[self.owner(slot)]
    }

    /// The index in `masters` of the master holding `slot` (modulo `SLOTS`).
    pub fn owner(&self, slot: u16) -> usize {
        usize::from(self.owners[usize::from(slot) % SLOTS])
    }
}

fn slot_number(slot: usize) -> u16 {
    u16::try_from(slot).unwrap_or(u16::MAX)
}

/// `[host, port, id, ...]`; an empty host is `asked_host`.
fn master_address(master: &[Reply], asked_host: &str) -> Result<Address, MapError> {
    let [host, port, ..] = master else {
        return Err(MapError::Shape);
    };
    let host = host
        .as_bytes()
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(MapError::Address)?;
    let port = port
        .as_i64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or(MapError::Address)?;
    let host = if host.is_empty() { asked_host } else { host };
    if host.is_empty() || host.contains(['[', ']', ' ']) {
        return Err(MapError::Address);
    }
    Ok(Address {
        host: host.to_owned(),
        port,
    })
}

/// A cluster node's answer that a command's slot is served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot host:port`: the slot lives there now (the map is
    /// stale); the command was not run.
    Moved { slot: u16, to: Address },
    /// `-ASK slot host:port`: the slot is migrating and this key is already
    /// there; ask that node once, after `ASKING`.
    Ask { slot: u16, to: Address },
}

impl Redirect {
    /// Reads the text of an error reply; `None` for any other error (or a
    /// redirection out of shape, which is then an ordinary error).
    pub fn parse(error: &str) -> Option<Redirect> {
        let mut parts = error.split(' ');
        let kind = parts.next()?;
        let slot = parts
            .next()?
            .parse()
            .ok()
            .filter(|&s: &u16| usize::from(s) < SLOTS)?;
        let to = Address::parse(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, to }),
            "ASK" => Some(Redirect::Ask { slot, to }),
            _ => None,
        }
    }

    /// Where the command goes next.
    pub fn to(&self) -> &Address {
        match self {
            Redirect::Moved { to, .. } | Redirect::Ask { to, .. } => to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Reply {
        Reply::Array(vec![
            Reply::Integer(start),
            Reply::Integer(end),
            Reply::Array(vec![bulk(host), Reply::Integer(port), bulk("id")]),
            Reply::Array(vec![
                bulk(host),
                Reply::Integer(port + 100),
                bulk("replica"),
            ]),
        ])
    }

    fn three() -> Vec<Reply> {
        vec![
            range(0, 5460, "127.0.0.1", 7000),
            range(5461, 10922, "127.0.0.1", 7001),
            range(10923, 16383, "127.0.0.1", 7002),
        ]
    }

    #[test]
    fn a_map_gives_each_slot_its_master() {
        let map = SlotMap::from_slots(&Reply::Array(three()), "asked").unwrap();
        assert_eq!(map.masters().len(), 3);
        let port = |slot| map.master_of(slot).port;
        assert_eq!((port(0), port(5460), port(5461)), (7000, 7000, 7001));
        assert_eq!((port(10923), port(16383)), (7002, 7002));
        // A room's slot, as layout computes it.
        let foo = crate::redis::layout::slot(b"foo");
        assert_eq!(port(foo), 7002);
    }

    #[test]
    fn a_master_without_a_host_is_on_the_host_asked() {
        let one = vec![range(0, 16383, "", 7000)];
        let map = SlotMap::from_slots(&Reply::Array(one), "10.0.0.9").unwrap();
        let master = Address {
            host: "10.0.0.9".into(),
            port: 7000,
        };
        assert_eq!(map.masters(), [master]);
    }

    #[test]
    fn a_map_that_leaves_a_slot_out_or_overlaps_is_refused() {
        let mut gap = three();
        gap[1] = range(5461, 10921, "127.0.0.1", 7001);
        assert_eq!(
            SlotMap::from_slots(&Reply::Array(gap), "asked"),
            Err(MapError::Uncovered(10922))
        );
        let mut overlap = three();
        overlap.push(range(100, 100, "127.0.0.1", 7003));
        assert_eq!(
            SlotMap::from_slots(&Reply::Array(overlap), "asked"),
            Err(MapError::Overlap(100))
        );
        for (bad, error) in [
            (range(0, 16384, "h", 1), MapError::Range),
            (range(5, 4, "h", 1), MapError::Range),
            (range(-1, 4, "h", 1), MapError::Range),
            (range(0, 16383, "a b", 1), MapError::Address),
            (range(0, 16383, "h", 0), MapError::Address),
            (range(0, 16383, "h", 65_536), MapError::Address),
            (Reply::Integer(1), MapError::Shape),
        ] {
            assert_eq!(
                SlotMap::from_slots(&Reply::Array(vec![bad]), "asked"),
                Err(error)
            );
        }
        assert_eq!(
            SlotMap::from_slots(&Reply::Nil, "asked"),
            Err(MapError::Shape)
        );
        assert_eq!(
            SlotMap::from_slots(&Reply::Array(vec![]), "asked"),
            Err(MapError::Uncovered(0))
        );
    }

    #[test]
    fn too_many_masters_are_refused() {
        let ranges = (0..SLOTS as i64).map(|s| range(s, s, "h", 1 + s)).collect();
        assert_eq!(
            SlotMap::from_slots(&Reply::Array(ranges), "asked"),
            Err(MapError::TooManyMasters)
        );
    }

    #[test]
    fn redirections_are_read() {
        let to = Address {
            host: "127.0.0.1".into(),
            port: 7001,
        };
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:7001"),
            Some(Redirect::Moved {
                slot: 3999,
                to: to.clone()
            })
        );
        assert_eq!(
            Redirect::parse("ASK 1 127.0.0.1:7001"),
            Some(Redirect::Ask { slot: 1, to })
        );
        let v6 = Redirect::parse("MOVED 2 ::1:7000").unwrap();
        assert_eq!(v6.to().to_string(), "[::1]:7000");
        for other in [
            "ERR unknown",
            "MOVED 16384 h:1",
            "MOVED x h:1",
            "MOVED 1 :7000",
            "MOVED 1 h:0",
            "MOVED 1 h",
            "MOVED 1 h:1 extra",
            "TRYAGAIN 1 h:1",
        ] {
            assert_eq!(Redirect::parse(other), None, "{other}");
        }
    }
}
