//! `data.delta` (section 14): a delta member rebuilds exactly what a plain
//! member is sent, and gets a whole event first, after a gap and after a
//! rejoin.

use simd_json::prelude::*;

use super::*;
use crate::proto::{fossil, scan};

use super::paced::joined_as;

/// A member's view of a room: the last `data` text, rebuilt from deltas.
#[derive(Default)]
struct Rebuilt {
    data: Vec<u8>,
    /// For each event: its seq and whether it came as a delta.
    came: Vec<(u64, bool)>,
}

impl Rebuilt {
    fn take(&mut self, s: &mut Shards, conn: ConnRef) -> Vec<Vec<u8>> {
        let mut datas = Vec::new();
        for text in events(&s.got(conn)) {
            let seq = seq_of(text);
            if let Some(r) = scan::field_range(text.as_bytes(), "data") {
                self.data = text.as_bytes()[r].to_vec();
                self.came.push((seq, false));
            } else {
                let mut bytes = text.as_bytes().to_vec();
                let value = simd_json::to_owned_value(&mut bytes).expect("JSON");
                let delta = value.get("delta").and_then(|d| d.as_str()).expect("delta");
                let keys: Vec<&str> = text
                    .split("\":")
                    .map(|k| &k[k.rfind('"').map_or(0, |i| i + 1)..])
                    .collect();
                assert_eq!(
                    &keys[..6],
                    ["event", "room", "delta", "from", "seq", "ts"],
                    "{text}"
                );
                self.data = fossil::apply(&self.data, delta.as_bytes(), 1 << 20).expect("applies");
                self.came.push((seq, true));
            }
            datas.push(self.data.clone());
        }
        datas
    }
}

fn datas(s: &mut Shards, conn: ConnRef) -> Vec<Vec<u8>> {
    events(&s.got(conn))
        .iter()
        .map(|t| t.as_bytes()[scan::field_range(t.as_bytes(), "data").unwrap()].to_vec())
        .collect()
}

fn price(n: u64) -> String {
    format!(
        r#"{{"symbol":"ACME","price":{}.{:02},"venue":"XNAS","note":"prix à payer €","n":{n}}}"#,
        100 + n % 7,
        n % 100
    )
}

#[test]
fn a_delta_member_rebuilds_what_a_plain_member_gets_on_every_shard() {
    let mut s = Setup::local(2).build();
    let room = room_owned_by(0, 2, "prices");
    let alice = joined_as(&mut s, 0, "alice", join(&room, id(1)));
    let plain = joined_as(&mut s, 1, "carol", join(&room, id(1)));
    let near = joined_as(&mut s, 0, "bob", join_delta(&room, false));
    let far = joined_as(&mut s, 1, "dave", join_delta(&room, false));
    for n in 1..=20 {
        s.request(alice, publish(&room, &price(n), false, None));
    }
    let want = datas(&mut s, plain);
    assert_eq!(want.len(), 20);
    for conn in [near, far] {
        let mut rebuilt = Rebuilt::default();
        assert_eq!(rebuilt.take(&mut s, conn), want);
        assert_eq!(
            rebuilt.came[0],
            (1, false),
            "the first after a join is whole"
        );
        assert!(
            rebuilt.came[1..].iter().all(|&(_, delta)| delta),
            "{:?}",
            rebuilt.came
        );
    }
    // A rejoin restarts; leaving the option out makes the member plain.
    s.request(far, join_delta(&room, true));
    s.got(far);
    s.request(near, join(&room, id(2)));
    s.got(near);
    for n in 21..=23 {
        s.request(alice, publish(&room, &price(n), false, None));
    }
    let mut rebuilt = Rebuilt::default();
    rebuilt.take(&mut s, far);
    assert_eq!(rebuilt.came, [(21, false), (22, true), (23, true)]);
    let mut rebuilt = Rebuilt::default();
    rebuilt.take(&mut s, near);
    assert!(rebuilt.came.iter().all(|&(_, delta)| !delta));
}

#[test]
fn after_a_skip_the_next_event_is_whole_and_the_one_after_a_delta() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let paced = s.connect(0, "bob");
    let mut request = join_paced("r", 1.0, false);
    if let Request::Join { delta, .. } = &mut request {
        *delta = true;
    }
    s.request(paced, request);
    s.got(paced);
    let t0 = s.time.now;
    let mut rebuilt = Rebuilt::default();
    let mut all = Vec::new();
    for (n, at) in [(1, 0), (2, 100), (3, 200), (4, 1300), (5, 2400), (6, 2500)] {
        s.advance(t0 + Duration::from_millis(at));
        s.request(alice, publish("r", &price(n), false, None));
        all.extend(rebuilt.take(&mut s, paced));
    }
    s.advance(t0 + Duration::from_millis(4000));
    all.extend(rebuilt.take(&mut s, paced));
    // 1 at once; 2 and 3 conflated into 3 at 1000 (a skip: whole); 4, held
    // until 2000, follows 3: a delta; 5 and 6 conflated into 6 at 3000.
    assert_eq!(
        rebuilt.came,
        [(1, false), (3, false), (4, true), (6, false)],
        "{:?}",
        rebuilt.came
    );
    assert_eq!(all.last().map(|d| d.as_slice()), Some(price(6).as_bytes()));
}

#[test]
fn an_event_the_publisher_did_not_echo_to_itself_is_a_gap_for_it() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join_delta("r", false));
    for (n, echo) in [(1, true), (2, false), (3, true), (4, true)] {
        s.request(alice, publish("r", &price(n), echo, None));
    }
    let mut rebuilt = Rebuilt::default();
    rebuilt.take(&mut s, alice);
    assert_eq!(rebuilt.came, [(1, false), (3, false), (4, true)]);
}
