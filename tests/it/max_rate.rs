//! `room:join` `data.maxRate` (PROTOCOL.md section 14): a paced member gets
//! at most `r` room events a second, the newest of those that came
//! meanwhile, with their `seq`; a plain member of the same room gets
//! everything. Counts carry slack and timings a wide margin: the machine
//! is shared and noisy. Runs in cluster mode too (scripts/test.sh).

use crate::common;

use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use common::rooms::{Client, ack_error, ok_data, publisher, q, seq_of};

/// How fast the publisher sends, and for how long.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);
const BURST: Duration = Duration::from_secs(2);

/// Hand-off deals connections to the two shards in turn.
const ARGS: &[&str] = &["--shards", "2", "--accept", "handoff"];

/// A member of `room` joined with `data.maxRate: rate` (`None`: plain).
fn member(addr: std::net::SocketAddr, sub: &str, room: &str, rate: Option<f64>) -> Client {
    let mut client = Client::user(addr, sub);
    let data = match rate {
        Some(rate) => format!(r#"{{"room":{},"maxRate":{rate}}}"#, q(room)),
        None => format!(r#"{{"room":{}}}"#, q(room)),
    };
    ok_data(&client.join_with(&data));
    client
}

/// One room event as a member received it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u64,
    at: Instant,
    end: bool,
}

/// Reads `client`'s room events until the `end` event (or 15 s pass).
fn read_until_end(mut client: Client) -> Vec<Arrival> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let Some(text) = client.try_recv(Duration::from_millis(200)) else {
            continue;
        };
        let end = text.starts_with(r#"{"event":"feed:end""#);
        if !end && !text.starts_with(r#"{"event":"feed:tick""#) {
            continue;
        }
        got.push(Arrival {
            seq: seq_of(&text),
            at: Instant::now(),
            end,
        });
        if end {
            break;
        }
    }
    got
}

/// What a burst sent.
struct Burst {
    /// Room events published, the `end` one included.
    sent: u64,
    /// From the first publish to the `end` one.
    took: Duration,
    /// When the `end` event went out.
    ended: Instant,
}

/// Every member reads on its own thread while a publisher sends `tick`
/// events to `room` every `PUBLISH_EVERY` for `BURST` (no ids: nothing to
/// wait for), then one `end` event; returns the burst and each member's
/// arrivals, in the order given.
fn burst_to(
    addr: std::net::SocketAddr,
    room: &str,
    members: Vec<Client>,
) -> (Burst, Vec<Vec<Arrival>>) {
    let mut publisher = publisher(addr, "pub");
    let readers: Vec<_> = members
        .into_iter()
        .map(|client| thread::spawn(move || read_until_end(client)))
        .collect();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < BURST {
        sent += 1;
        publisher.send(&format!(
            r#"{{"event":"feed:tick","room":{},"data":{sent}}}"#,
            q(room)
        ));
        thread::sleep(PUBLISH_EVERY);
    }
    publisher.send(&format!(
        r#"{{"event":"feed:end","room":{},"data":0}}"#,
        q(room)
    ));
    let ended = Instant::now();
    let burst = Burst {
        sent: sent + 1,
        took: ended - start,
        ended,
    };
    let got = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    (burst, got)
}

/// The most a member at `rate` may get in `burst`: one at once, one per
/// interval after, and the slack a loaded machine needs (a late slot is
/// never early, but the count's window is the publisher's, not the server's).
fn most_for(rate: f64, burst: &Burst) -> usize {
    2 + (burst.took.as_secs_f64() * rate).ceil() as usize + 1
}

/// Checks a paced member's arrivals: few enough, seq increasing, the `end`
/// event last and within `1/r` (plus a wide margin) of its publish.
fn check_paced(who: &str, rate: f64, burst: &Burst, got: &[Arrival]) {
    assert!(
        got.len() <= most_for(rate, burst),
        "{who}: {} events at {rate}/s in {:?}",
        got.len(),
        burst.took
    );
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "{who}: seq increasing: {got:?}"
    );
    let last = got
        .last()
        .unwrap_or_else(|| panic!("{who}: nothing arrived"));
    assert!(
        last.end,
        "{who}: the last event of the burst arrives: {got:?}"
    );
    let late = last.at.saturating_duration_since(burst.ended);
    let allowed = Duration::from_secs_f64(1.0 / rate) + Duration::from_millis(1500);
    assert!(
        late <= allowed,
        "{who}: the last event came {late:?} after it was published"
    );
}

/// Checks a plain member got every event of the burst, in seq order.
fn check_plain(burst: &Burst, got: &[Arrival]) {
    assert_eq!(got.len() as u64, burst.sent, "every event");
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1), "{got:?}");
}

#[test]
fn a_member_at_two_per_second_gets_about_two_a_second_and_the_last_event() {
    let server = Server::start(ARGS);
    let addr = server.addr();
    let paced = member(addr, "paced", "feed", Some(2.0));
    let plain = member(addr, "plain", "feed", None);
    let (burst, got) = burst_to(addr, "feed", vec![paced, plain]);
    check_paced("paced", 2.0, &burst, &got[0]);
    assert!(got[0].len() >= 2, "conflated, not starved: {:?}", got[0]);
    check_plain(&burst, &got[1]);
}

#[test]
fn members_at_several_rates_on_both_shards_each_keep_their_own() {
    let server = Server::start(ARGS);
    let addr = server.addr();
    // Two of each rate, on different shards.
    let rates = [1.0, 5.0, 20.0, 1.0, 5.0, 20.0];
    let mut members: Vec<Client> = rates
        .iter()
        .enumerate()
        .map(|(i, &rate)| member(addr, &format!("m{i}"), "multi", Some(rate)))
        .collect();
    members.push(member(addr, "plain", "multi", None));
    let (burst, got) = burst_to(addr, "multi", members);
    for (i, &rate) in rates.iter().enumerate() {
        check_paced(&format!("m{i} at {rate}/s"), rate, &burst, &got[i]);
    }
    check_plain(&burst, &got[rates.len()]);
    let slow = got[0].len().max(got[3].len());
    let fast = got[2].len().min(got[5].len());
    assert!(fast > slow, "20/s got {fast}, 1/s got {slow}");
}

#[test]
fn a_max_rate_out_of_range_or_of_another_type_is_a_validation_error() {
    let server = Server::start(&[]);
    let mut client = Client::user(server.addr(), "alice");
    for rate in [
        "0", "0.09", "1000.001", "-2", "1e400", "\"2\"", "null", "true", "{}",
    ] {
        let ack = client.join_with(&format!(r#"{{"room":"lobby","maxRate":{rate}}}"#));
        assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "maxRate {rate}");
    }
    for rate in ["0.1", "1000", "7", "2.5"] {
        let ack = client.join_with(&format!(r#"{{"room":"lobby","maxRate":{rate}}}"#));
        ok_data(&ack);
    }
}

#[test]
fn a_rejoin_without_max_rate_sends_the_held_event_and_then_everything() {
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut member = member(addr, "paced", "lobby", Some(0.1));
    let mut publisher = publisher(addr, "pub");
    let seqs: Vec<u64> = (0..3)
        .map(|_| common::rooms::ack_seq(&publisher.publish("lobby", "feed:tick", "1")))
        .collect();
    assert_eq!(seq_of(&member.recv_skip_presence()), seqs[0]);
    ok_data(&member.join_with(r#"{"room":"lobby"}"#));
    // The held event goes at once, not 10 s later. In a cluster the acks
    // come before the events are back from Redis, so the rejoin may find
    // the second held and the third arrive after it, unpaced.
    let first = seq_of(&member.recv_skip_presence());
    if first == seqs[1] {
        assert_eq!(seq_of(&member.recv_skip_presence()), seqs[2]);
    } else {
        assert_eq!(first, seqs[2]);
    }
    let next = common::rooms::ack_seq(&publisher.publish("lobby", "feed:tick", "1"));
    let after = common::rooms::ack_seq(&publisher.publish("lobby", "feed:tick", "1"));
    assert_eq!(seq_of(&member.recv_skip_presence()), next);
    assert_eq!(seq_of(&member.recv_skip_presence()), after);
}
