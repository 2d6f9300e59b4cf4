//! `redis_slots`: Redis Cluster's topology as the bridge reads it: any
//! RESP reply as a `CLUSTER SLOTS` answer (`SlotMap::from_slots`), and
//! any text as an error reply that may redirect (`Redirect::parse`).
//!
//! Oracles: nothing panics; an accepted map gives every one of the 16384
//! slots a master among at most `MAX_MASTERS`, each listed once and
//! sorted; the map written back as `CLUSTER SLOTS` reads back the same; a
//! redirection written back (`MOVED|ASK slot host:port`) reads back the
//! same, its slot below 16384 and its port not 0.

use roomcast::redis::resp::{Reply, parse};
use roomcast::redis::slots::{MAX_MASTERS, Redirect, SLOTS, SlotMap};

use crate::engine::{Rng, Target};
use crate::resp::write;

pub const TARGET: Target = Target {
    name: "redis_slots",
    check,
    generate,
    dictionary: &[
        b"\r\n",
        b"*3\r\n",
        b"*4\r\n",
        b":0\r\n",
        b":16383\r\n",
        b":16384\r\n",
        b":-1\r\n",
        b":65536\r\n",
        b"$0\r\n\r\n",
        b"$9\r\n127.0.0.1\r\n",
        b"MOVED ",
        b"ASK ",
        b"::1:",
    ],
    max_len: 64 * 1024,
};

fn check(input: &[u8]) {
    if let Ok(Some((reply, _))) = parse(input)
        && let Ok(map) = SlotMap::from_slots(&reply, "asked")
    {
        check_map(&map);
    }
    if let Ok(text) = std::str::from_utf8(input)
        && let Some(redirect) = Redirect::parse(text)
    {
        let (kind, slot) = match &redirect {
            Redirect::Moved { slot, .. } => ("MOVED", *slot),
            Redirect::Ask { slot, .. } => ("ASK", *slot),
        };
        assert!(usize::from(slot) < SLOTS, "slot {slot}");
        assert_ne!(redirect.to().port, 0);
        let again = format!("{kind} {slot} {}", redirect.to());
        assert_eq!(Redirect::parse(&again), Some(redirect), "{again}");
    }
}

fn check_map(map: &SlotMap) {
    let masters = map.masters();
    assert!(!masters.is_empty() && masters.len() <= MAX_MASTERS);
    assert!(masters.windows(2).all(|w| w[0] < w[1]), "sorted, once each");
    for slot in 0..SLOTS as u16 {
        assert!(masters.contains(map.master_of(slot)));
    }
    let ranges = map.ranges();
    assert_eq!(ranges.first().map(|r| r.0), Some(0));
    assert_eq!(ranges.last().map(|r| r.1), Some(SLOTS as u16 - 1));
    let again = Reply::Array(
        ranges
            .iter()
            .map(|&(first, last, master)| {
                range(first.into(), last.into(), &master.host, master.port.into())
            })
            .collect(),
    );
    assert_eq!(SlotMap::from_slots(&again, "asked").as_ref(), Ok(map));
}

fn range(first: i64, last: i64, host: &str, port: i64) -> Reply {
    Reply::Array(vec![
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Array(vec![
            Reply::Bulk(host.as_bytes().to_vec()),
            Reply::Integer(port),
            Reply::Bulk(b"0123456789abcdef".to_vec()),
        ]),
    ])
}

/// A `CLUSTER SLOTS` reply over a few masters with, now and then, one
/// field broken (a gap, an overlap, a slot or port out of range, an empty
/// host), or a redirection's text.
fn generate(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(3) {
        let kind = rng.choose(&["MOVED", "ASK", "TRYAGAIN"]);
        let slot = rng.choose(&[0, 1, 16_383, 16_384, 99_999]);
        let host = rng.choose(&["127.0.0.1", "::1", "[::1]", "", "h h"]);
        let port = rng.choose(&[0, 1, 7000, 65_535, 65_536]);
        return format!("{kind} {slot} {host}:{port}").into_bytes();
    }
    let masters = 1 + rng.below(5);
    let mut cuts: Vec<i64> = (0..masters - 1).map(|_| rng.below(SLOTS) as i64).collect();
    cuts.sort();
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, cut) in cuts.into_iter().chain([SLOTS as i64]).enumerate() {
        if cut > start {
            ranges.push((start, cut - 1, 7000 + i as i64));
        }
        start = cut.max(start);
    }
    if rng.one_in(2) && !ranges.is_empty() {
        let i = rng.below(ranges.len());
        match rng.below(5) {
            0 => ranges[i].1 -= 1,
            1 => ranges[i].1 += 1,
            2 => ranges[i].0 = -1,
            3 => ranges[i].2 = rng.choose(&[0, 65_536]),
            _ => ranges[i].1 = SLOTS as i64,
        }
    }
    let host = if rng.one_in(10) { "" } else { "127.0.0.1" };
    let reply = Reply::Array(
        ranges
            .into_iter()
            .map(|(first, last, port)| range(first, last, host, port))
            .collect(),
    );
    let mut out = Vec::new();
    write(&reply, &mut out);
    out
}
