//! `maxRate` (section 14): paced members get at most one room event per
//! interval, the newest of those that came meanwhile, at their next slot.

use super::*;

fn joined_as(s: &mut Shards, shard: usize, user: &str, request: Request) -> ConnRef {
    let conn = s.connect(shard, user);
    s.request(conn, request);
    let got = s.got(conn);
    assert!(answers(&got)[0].contains("\"success\":true"), "{got:?}");
    conn
}

/// The seqs of the room events `conn` was given since the last call.
fn seqs(s: &mut Shards, conn: ConnRef) -> Vec<u64> {
    events(&s.got(conn)).iter().map(|t| seq_of(t)).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_burst_reaches_a_member_at_two_per_second_conflated_and_a_plain_member_whole() {
    let mut s = Setup::local(2).build();
    let room = room_owned_by(0, 2, "prices");
    let alice = joined_as(&mut s, 0, "alice", join(&room, id(1)));
    let paced = joined_as(&mut s, 1, "bob", join_paced(&room, 2.0, false));
    let plain = joined_as(&mut s, 1, "carol", join(&room, id(1)));
    let t0 = s.time.now;
    // 100 events in one second, then time for the last to come out.
    let mut arrivals: Vec<(u64, u64)> = Vec::new();
    for at in 0..=1600u64 {
        s.advance(t0 + ms(at));
        if at % 10 == 0 && at < 1000 {
            s.request(alice, publish(&room, "1", false, None));
        }
        arrivals.extend(seqs(&mut s, paced).into_iter().map(|seq| (at, seq)));
    }
    assert_eq!(seqs(&mut s, plain), (1..=100).collect::<Vec<_>>());
    assert!(arrivals.len() <= 3, "{arrivals:?}");
    assert!(
        arrivals.windows(2).all(|w| w[0].1 < w[1].1),
        "seq increasing: {arrivals:?}"
    );
    assert!(
        arrivals.windows(2).all(|w| w[1].0 - w[0].0 >= 500),
        "an interval apart: {arrivals:?}"
    );
    assert_eq!(arrivals[0], (0, 1), "the first event goes at once");
    let &(at, seq) = arrivals.last().expect("some");
    assert_eq!(seq, 100, "the last event of the burst arrives");
    assert!(at <= 990 + 500, "within 1/r of the last publish: {at}");
    assert_eq!(s.held_back(), 0);
}

#[test]
fn members_at_different_rates_on_one_shard_each_keep_their_pace() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let slow = joined_as(&mut s, 0, "slow", join_paced("r", 1.0, false));
    let fast = joined_as(&mut s, 0, "fast", join_paced("r", 10.0, false));
    let t0 = s.time.now;
    let (mut got_slow, mut got_fast) = (Vec::new(), Vec::new());
    for at in 0..2000u64 {
        s.advance(t0 + ms(at));
        if at % 5 == 0 {
            s.request(alice, publish("r", "1", false, None));
        }
        got_slow.extend(seqs(&mut s, slow));
        got_fast.extend(seqs(&mut s, fast));
    }
    s.advance(t0 + ms(3000));
    got_slow.extend(seqs(&mut s, slow));
    got_fast.extend(seqs(&mut s, fast));
    // 400 events in 2 s: at 1/s one at once, then one a second.
    assert!((2..=3).contains(&got_slow.len()), "{got_slow:?}");
    assert!((20..=21).contains(&got_fast.len()), "{}", got_fast.len());
    assert_eq!(got_slow.last(), Some(&400));
    assert_eq!(got_fast.last(), Some(&400));
}

#[test]
fn presence_events_are_not_held_back() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("chat:1", id(1)));
    let paced = joined_as(&mut s, 0, "bob", join_paced("chat:1", 0.1, false));
    s.request(alice, publish("chat:1", "1", false, None));
    s.request(alice, publish("chat:1", "2", false, None));
    assert_eq!(seqs(&mut s, paced), [1]);
    let carol = s.connect(0, "carol");
    s.request(carol, join("chat:1", id(1)));
    let got = s.got(paced);
    assert!(
        matches!(&got[..], [Got::Other(text)] if text.contains("presence:join")),
        "{got:?}"
    );
    assert_eq!(s.held_back(), 1, "the room event still waits");
}

#[test]
fn leaving_or_closing_drops_the_event_held_back() {
    let mut s = Setup::local(2).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let leaves = joined_as(&mut s, 1, "bob", join_paced("r", 1.0, false));
    let closes = joined_as(&mut s, 0, "carol", join_paced("r", 1.0, false));
    s.request(alice, publish("r", "1", false, None));
    s.request(alice, publish("r", "2", false, None));
    assert_eq!(s.held_back(), 2);
    s.request(leaves, leave("r"));
    s.close(closes);
    assert_eq!(s.held_back(), 0);
    assert!(s.router(0).next_slot().is_none() && s.router(1).next_slot().is_none());
    s.advance(s.time.now + ms(2000));
    assert_eq!(seqs(&mut s, leaves), [1], "nothing after the leave");
    assert!(!s.is_member(leaves, "r"));
}

#[test]
fn a_rejoin_without_max_rate_sends_the_held_event_at_once_and_then_everything() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let bob = joined_as(&mut s, 0, "bob", join_paced("r", 0.1, false));
    for _ in 0..3 {
        s.request(alice, publish("r", "1", false, None));
    }
    assert_eq!(seqs(&mut s, bob), [1]);
    let mut rejoin = join("r", id(2));
    if let Request::Join { rejoin, .. } = &mut rejoin {
        *rejoin = true;
    }
    s.request(bob, rejoin);
    assert_eq!(s.router(0).next_slot(), Some(s.time.now), "due now");
    s.advance(s.time.now);
    assert_eq!(seqs(&mut s, bob), [3]);
    s.request(alice, publish("r", "1", false, None));
    s.request(alice, publish("r", "1", false, None));
    assert_eq!(seqs(&mut s, bob), [4, 5], "plain again");
    assert_eq!(s.held_back(), 0);
    assert!(s.is_member(bob, "r"));
}

#[test]
fn a_rejoin_with_another_max_rate_changes_the_pace() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let bob = joined_as(&mut s, 0, "bob", join_paced("r", 0.1, false));
    s.request(alice, publish("r", "1", false, None));
    s.request(alice, publish("r", "1", false, None));
    let t0 = s.time.now;
    assert_eq!(s.router(0).next_slot(), Some(t0 + ms(10_000)));
    s.request(bob, join_paced("r", 10.0, true));
    assert_eq!(s.router(0).next_slot(), Some(t0 + ms(100)));
    s.advance(t0 + ms(100));
    assert_eq!(seqs(&mut s, bob), [1, 2]);
    assert_eq!(s.held_back(), 0);
}

#[test]
fn a_paced_publisher_without_echo_is_left_out_and_keeps_its_slot() {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let bob = joined_as(&mut s, 0, "bob", join_paced("r", 1.0, false));
    s.request(bob, publish("r", "1", false, None));
    assert!(seqs(&mut s, bob).is_empty());
    s.request(alice, publish("r", "1", false, None));
    assert_eq!(seqs(&mut s, bob), [2], "its own event did not use its slot");
}

#[test]
fn a_paced_member_gets_volatile_events_only_into_free_slots_and_they_never_displace_a_sequenced_one()
 {
    let mut s = Setup::local(1).build();
    let alice = joined_as(&mut s, 0, "alice", join("r", id(1)));
    let paced = joined_as(&mut s, 0, "bob", join_paced("r", 2.0, false));
    let plain = joined_as(&mut s, 0, "carol", join("r", id(1)));
    let volatiles = |got: &[Got]| got.iter().filter(|g| matches!(g, Got::Volatile(_))).count();
    let t0 = s.time.now;
    // Ten volatile events in 100 ms: the first takes the free slot.
    for at in 0..10u64 {
        s.advance(t0 + ms(at * 10));
        s.request(alice, volatile("r", "1", false, None));
    }
    assert_eq!(volatiles(&s.got(paced)), 1);
    assert_eq!(volatiles(&s.got(plain)), 10);
    // A sequenced event held for the next slot (500 ms) keeps it: a
    // volatile event at the slot does not take its place.
    s.advance(t0 + ms(200));
    s.request(alice, publish("r", "2", false, None));
    assert_eq!(s.held_back(), 1);
    s.advance(t0 + ms(500));
    s.request(alice, volatile("r", "3", false, None));
    let got = s.got(paced);
    assert_eq!(volatiles(&got), 0, "{got:?}");
    assert_eq!(
        events(&got).iter().map(|t| seq_of(t)).collect::<Vec<_>>(),
        [1]
    );
    // The next free slot takes a volatile event again.
    s.advance(t0 + ms(1000));
    s.request(alice, volatile("r", "4", false, None));
    assert_eq!(volatiles(&s.got(paced)), 1);
    assert_eq!(s.held_back(), 0);
}
