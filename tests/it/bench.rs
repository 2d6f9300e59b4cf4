//! The bundled load generator, run briefly against the real server: its
//! counts must add up and its JSON must carry every field. No speed is
//! asserted.

use crate::common;

use std::process::Command;

use common::{SECRET, Server, json_at, parse_json};
use simd_json::OwnedValue;
use simd_json::prelude::*;

/// Runs `roomcast bench <args> --json` against `server` and parses its result.
fn bench(server: &Server, args: &[&str]) -> OwnedValue {
    bench_with_secret(server, SECRET, args)
}

/// `bench`, minting tokens with `secret`.
fn bench_with_secret(server: &Server, secret: &str, args: &[&str]) -> OwnedValue {
    let addr = server.addr().to_string();
    let pid = server.pid().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("bench")
        .args(args)
        .args([
            "--addr",
            &addr,
            "--jwt-secret",
            secret,
            "--server-pid",
            &pid,
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .expect("run roomcast bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_json(stdout.trim())
}

fn number(result: &OwnedValue, path: &[&str]) -> f64 {
    json_at(result, path)
        .and_then(|v| v.as_f64().or_else(|| v.as_u64().map(|n| n as f64)))
        .unwrap_or_else(|| panic!("no number at {path:?} in {result:?}"))
}

fn count(result: &OwnedValue, key: &str) -> u64 {
    json_at(result, &[key])
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no count {key} in {result:?}"))
}

const FIELDS: [&str; 19] = [
    "scenario",
    "target",
    "conns",
    "duration_seconds",
    "connected",
    "sent",
    "delivered",
    "expected",
    "lost",
    "duplicates",
    "out_of_order",
    "handshakes",
    "errors",
    "messages_per_second",
    "handshakes_per_second",
    "latency_us",
    "server",
    "bench",
    "saturated",
];

fn assert_every_field(result: &OwnedValue) {
    for field in FIELDS {
        assert!(
            json_at(result, &[field]).is_some(),
            "missing {field} in {result:?}"
        );
    }
    for percentile in ["p50", "p90", "p99", "p999", "max"] {
        number(result, &["latency_us", percentile]);
    }
    for figure in ["cpu_seconds", "rss_before_bytes", "rss_after_bytes"] {
        number(result, &["server", figure]);
    }
    let user = number(result, &["server", "user_cpu_seconds"]);
    assert!(user >= 0.0 && user <= number(result, &["server", "cpu_seconds"]));
}

/// Every expected delivery arrived, once, in order, without errors.
fn assert_complete(result: &OwnedValue) {
    let expected = count(result, "expected");
    assert!(expected > 0, "{result:?}");
    assert_eq!(count(result, "delivered"), expected, "{result:?}");
    assert_eq!(count(result, "lost"), 0, "{result:?}");
    assert_eq!(count(result, "out_of_order"), 0, "{result:?}");
    assert_eq!(count(result, "errors"), 0, "{result:?}");
}

/// The errors of a run by kind, as `(kind, count)`, checked to add up to
/// the total.
fn errors_by_kind(result: &OwnedValue) -> Vec<(String, u64)> {
    let kinds = json_at(result, &["errors_by_kind"])
        .and_then(|v| v.as_object())
        .unwrap_or_else(|| panic!("no errors_by_kind in {result:?}"));
    let kinds: Vec<(String, u64)> = kinds
        .iter()
        .map(|(kind, n)| (kind.to_string(), n.as_u64().unwrap_or(0)))
        .collect();
    let sum: u64 = kinds.iter().map(|(_, n)| n).sum();
    assert_eq!(sum, count(result, "errors"), "{result:?}");
    kinds
}

#[test]
fn refused_upgrades_are_counted_by_status() {
    // One process: the limit counts per process.
    let mut cmd = Server::single_command();
    cmd.args(["--max-connections", "2"]);
    let server = Server::spawn(cmd);
    let result = bench(&server, &["idle", "-c", "5", "-d", "200ms"]);
    assert_eq!(count(&result, "connected"), 2);
    assert_eq!(errors_by_kind(&result), [("http_503".to_owned(), 3)]);
    let result = bench_with_secret(
        &server,
        "not-the-secret",
        &["idle", "-c", "3", "-d", "200ms"],
    );
    assert_eq!(count(&result, "connected"), 0);
    assert_eq!(errors_by_kind(&result), [("http_401".to_owned(), 3)]);
}

#[test]
fn echo_gets_back_every_message_it_sent() {
    let server = Server::start(&["--echo"]);
    let result = bench(&server, &["echo", "-c", "4", "-w", "4", "-d", "500ms"]);
    assert_every_field(&result);
    assert_eq!(count(&result, "connected"), 4);
    assert!(count(&result, "sent") > 0);
    assert_eq!(count(&result, "delivered"), count(&result, "sent"));
    assert_eq!(count(&result, "errors"), 0);
    assert!(number(&result, &["latency_us", "p50"]) > 0.0);
}

#[test]
fn fanout_delivers_published_times_members_in_order() {
    let server = Server::start(&["--shards", "2"]);
    let result = bench(
        &server,
        &[
            "fanout",
            "-c",
            "40",
            "--rooms",
            "3",
            "--publishers",
            "2",
            "-d",
            "800ms",
        ],
    );
    assert_every_field(&result);
    // 40 subscribers, 2 publishers and a probe per room a publisher
    // publishes to: publisher 0 takes rooms 0 and 2, publisher 1 room 1.
    assert_eq!(count(&result, "connected"), 45);
    assert_complete(&result);
    assert!(number(&result, &["server", "cpu_us_per_message"]) > 0.0);
}

/// `--no-ack`: publishes carry no `id`, so the server acks none, and what
/// was sent is what every member must get (an ack would count a message
/// twice; no count at sending would expect nothing).
#[test]
fn fanout_without_acks_expects_what_was_sent() {
    let server = Server::start(&[]);
    let args = "fanout -c 30 --rooms 3 --publishers 3 -d 800ms --no-ack";
    let result = bench(&server, &args.split(' ').collect::<Vec<_>>());
    assert_every_field(&result);
    assert_complete(&result);
}

#[test]
fn subscribers_in_several_rooms_get_every_room_in_order() {
    let server = Server::start(&["--shards", "2"]);
    // 20 subscribers in 4 rooms each of 8: 10 members per room; one
    // publisher takes the rooms in turn at a fixed rate, with the delta
    // option on every join.
    let args = "fanout -c 20 --rooms 8 --rooms-per-sub 4 --rate 400 --delta \
                --payload prices -s 512 -d 800ms";
    let result = bench(&server, &args.split_whitespace().collect::<Vec<_>>());
    assert_every_field(&result);
    assert_eq!(count(&result, "connected"), 21);
    let published = count(&result, "sent");
    assert!(published >= 8, "{result:?}");
    assert_eq!(count(&result, "expected"), published * 10, "{result:?}");
    assert_complete(&result);
}

#[test]
fn rooms_per_sub_above_the_rooms_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["bench", "fanout", "--rooms", "2", "--rooms-per-sub", "3"])
        .args(["--jwt-secret", SECRET])
        .output()
        .expect("run roomcast bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--rooms-per-sub must be between 1 and --rooms"),
        "{stderr}"
    );
}

#[test]
fn compressed_fanout_of_price_updates_adds_up_and_reads_fewer_bytes() {
    let server = Server::start(&["--shards", "2", "--compression", "on"]);
    let run = |compression: bool| {
        let mut args = vec![
            "fanout",
            "-c",
            "20",
            "--payload",
            "prices",
            "-s",
            "1024",
            "-d",
            "600ms",
        ];
        if compression {
            args.push("--compression");
        }
        bench(&server, &args)
    };
    let plain = run(false);
    let compressed = run(true);
    for result in [&plain, &compressed] {
        let expected = count(result, "expected");
        assert!(expected > 0);
        assert_eq!(count(result, "delivered"), expected);
        assert_eq!(count(result, "out_of_order"), 0);
        assert_eq!(count(result, "errors"), 0);
    }
    assert_eq!(count(&plain, "compressed"), 0);
    assert!(count(&compressed, "compressed") >= count(&compressed, "delivered"));
    let per_delivery = |r: &OwnedValue| number(r, &["bytes_per_delivery"]);
    assert!(per_delivery(&plain) > 1024.0, "{}", per_delivery(&plain));
    assert!(
        per_delivery(&compressed) < per_delivery(&plain) * 0.8,
        "{} vs {}",
        per_delivery(&compressed),
        per_delivery(&plain)
    );
}

#[test]
fn msgpack_fanout_adds_up_and_reads_fewer_bytes_than_json() {
    let server = Server::start(&["--shards", "2", "--compression", "on"]);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "fanout", "-c", "20", "--rooms", "2", "-s", "256", "-d", "600ms",
        ];
        args.extend_from_slice(extra);
        bench(&server, &args)
    };
    let json = run(&[]);
    let packed = run(&["--protocol", "msgpack"]);
    let packed_compressed = run(&["--protocol", "msgpack", "--compression"]);
    for result in [&json, &packed, &packed_compressed] {
        assert_every_field(result);
        let expected = count(result, "expected");
        assert!(expected > 0, "{result:?}");
        assert_eq!(count(result, "delivered"), expected, "{result:?}");
        assert_eq!(count(result, "out_of_order"), 0);
        assert_eq!(count(result, "errors"), 0, "{result:?}");
    }
    assert_eq!(
        json_at(&packed, &["protocol"]).and_then(|p| p.as_str()),
        Some("msgpack")
    );
    // Keys lose their quotes and colons, `seq` and `ts` their digits.
    let per_delivery = |r: &OwnedValue| number(r, &["bytes_per_delivery"]);
    assert!(
        per_delivery(&packed) < per_delivery(&json) - 10.0,
        "{} vs {}",
        per_delivery(&packed),
        per_delivery(&json)
    );
    assert!(count(&packed_compressed, "compressed") >= count(&packed_compressed, "delivered"));

    // Joins and leaves in MessagePack too.
    let churn = bench(
        &server,
        &[
            "connect",
            "-c",
            "4",
            "-d",
            "400ms",
            "--churn",
            "--protocol",
            "msgpack",
        ],
    );
    assert!(count(&churn, "handshakes") > 4, "{churn:?}");
    assert_eq!(count(&churn, "errors"), 0, "{churn:?}");
}

#[test]
fn msgpack_is_refused_where_it_means_nothing() {
    for args in [&["echo"][..], &["fanout", "--target", "raw"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .arg("bench")
            .args(args)
            .args(["--protocol", "msgpack", "--jwt-secret", "x"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--protocol msgpack"));
    }
}

#[test]
fn paced_fanout_sends_about_the_asked_rate() {
    let server = Server::start(&[]);
    let result = bench(&server, &["fanout", "-c", "10", "--rate", "50", "-d", "1s"]);
    let sent = count(&result, "sent");
    assert!((30..=70).contains(&sent), "asked 50/s for 1 s, sent {sent}");
    assert_eq!(count(&result, "delivered"), sent * 10);
    assert_eq!(count(&result, "lost"), 0);
}

/// A fan-out to 10 subscribers at 50 messages a second for a second.
const TEN_AT_50: [&str; 7] = ["fanout", "-c", "10", "--rate", "50", "-d", "1s"];

#[test]
fn fanout_with_max_rate_paces_the_subscribers() {
    let server = Server::start(&[]);
    let args = [&TEN_AT_50[..], &["--max-rate", "5"]].concat();
    let result = bench(&server, &args);
    let sent = count(&result, "sent");
    let delivered = count(&result, "delivered");
    assert!(sent >= 30, "asked 50/s for 1 s, sent {sent}");
    // At 5/s over about a second: one at once, five more, and slack.
    assert!(
        (10..=10 * 10).contains(&delivered),
        "{delivered} deliveries of {sent} messages to 10 members at 5/s"
    );
    assert!(json_at(&result, &["lost"]).is_none_or(|lost| lost.is_null()));
}

/// `--delta`: every event reaches every subscriber, most as deltas, so
/// fewer bytes per delivery than the same run without it.
#[test]
fn fanout_with_delta_delivers_everything_in_fewer_bytes() {
    let server = Server::start(&[]);
    let mut per_delivery = Vec::new();
    for delta in [false, true] {
        let mut args = [&TEN_AT_50[..], &["--payload", "prices", "-s", "1024"]].concat();
        if delta {
            args.push("--delta");
        }
        let result = bench(&server, &args);
        let sent = count(&result, "sent");
        assert!(sent >= 30, "asked 50/s for 1 s, sent {sent}");
        assert_eq!(count(&result, "lost"), 0, "{result:?}");
        assert_eq!(count(&result, "out_of_order"), 0, "{result:?}");
        per_delivery.push(count(&result, "bytes_read") / count(&result, "delivered"));
    }
    assert!(
        per_delivery[1] * 3 < per_delivery[0],
        "bytes per delivery without and with --delta: {per_delivery:?}"
    );
}

#[test]
fn max_rate_and_delta_are_refused_out_of_range_or_outside_fanout() {
    for (args, flag) in [
        (&["fanout", "--max-rate", "0"][..], "--max-rate"),
        (&["echo", "--max-rate", "5"][..], "--max-rate"),
        (&["echo", "--delta"][..], "--delta"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .arg("bench")
            .args(args)
            .args(["--jwt-secret", "x"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(flag));
    }
}

#[test]
fn connect_counts_handshakes_and_churn_joins_and_leaves() {
    let server = Server::start(&[]);
    for extra in [&[][..], &["--churn"][..]] {
        let mut args = vec!["connect", "-c", "4", "-d", "500ms"];
        args.extend_from_slice(extra);
        let result = bench(&server, &args);
        assert_every_field(&result);
        assert!(count(&result, "handshakes") > 4, "{result:?}");
        assert_eq!(count(&result, "errors"), 0, "{result:?}");
    }
}

#[test]
fn idle_holds_every_connection_in_a_room() {
    let server = Server::start(&[]);
    let result = bench(
        &server,
        &["idle", "-c", "50", "--rooms", "5", "-d", "300ms"],
    );
    assert_every_field(&result);
    assert_eq!(count(&result, "connected"), 50);
    assert_eq!(count(&result, "errors"), 0);
    assert!(json_at(&result, &["server", "rss_per_connection_bytes"]).is_some());
}

#[test]
fn idle_with_a_common_room_joins_it_too() {
    let args = [
        "idle",
        "-c",
        "20",
        "--rooms",
        "4",
        "--common-room",
        "everyone",
        "-d",
        "200ms",
    ];
    let server = Server::start(&[]);
    let result = bench(&server, &args);
    assert_eq!(count(&result, "connected"), 20);
    assert_eq!(count(&result, "errors"), 0);
    // One room a connection: each second join is refused, and the bench
    // waits for it.
    let server = Server::start(&["--max-rooms-per-connection", "1"]);
    let result = bench(&server, &args);
    assert_eq!(
        errors_by_kind(&result),
        [("join_refused_room_limit".to_owned(), 20)]
    );
    // Upgraded, then dropped: none is held through the window.
    assert_eq!(count(&result, "connected"), 0);
}

#[test]
fn idle_times_each_message_until_its_last_delivery() {
    let server = Server::start(&[]);
    let result = bench(
        &server,
        &[
            "idle",
            "-c",
            "30",
            "--rooms",
            "3",
            "--common-room",
            "everyone",
            "--rate",
            "20",
            "--common-every",
            "300ms",
            "-d",
            "1s",
        ],
    );
    assert_eq!(count(&result, "errors"), 0, "{result:?}");
    // The 30 members and the publisher.
    assert_eq!(count(&result, "connected"), 31);
    let messages = |class| number(&result, &["last_delivery_us", class, "messages"]) as u64;
    let (rooms, common) = (messages("rooms"), messages("common"));
    assert!((10..=21).contains(&rooms), "{result:?}");
    assert!((3..=5).contains(&common), "{result:?}");
    // A room message reaches its 10 members, a common one all 30.
    assert_eq!(count(&result, "delivered"), rooms * 10 + common * 30);
    for class in ["rooms", "common"] {
        let p50 = number(&result, &["last_delivery_us", class, "p50"]);
        let max = number(&result, &["last_delivery_us", class, "max"]);
        assert!(p50 > 0.0 && p50 <= max, "{result:?}");
    }
}

#[test]
fn idle_reconnects_recover_their_rooms_while_messages_flow() {
    let args = [
        "idle",
        "-c",
        "20",
        "--rooms",
        "2",
        "--common-room",
        "everyone",
        "--rate",
        "40",
        "--common-every",
        "200ms",
        "--reconnect-rate",
        "0.5",
        "-d",
        "2s",
    ];
    let server = Server::start(&["--history", "100"]);
    let result = bench(&server, &args);
    assert_eq!(count(&result, "errors"), 0, "{result:?}");
    // The 20 members and the publisher, each open at the end.
    assert_eq!(count(&result, "connected"), 21, "{result:?}");
    // Half of 20 a second for 2 s: about 20 reconnections, each of two
    // joins made with `since` and `epoch` and recovered.
    let reconnections = count(&result, "handshakes") - 21;
    assert!((10..=30).contains(&reconnections), "{result:?}");
    assert_eq!(count(&result, "recovered"), 2 * reconnections, "{result:?}");
}

#[test]
fn a_non_loopback_address_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "bench",
            "echo",
            "--addr",
            "10.0.0.1:80",
            "--jwt-secret",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

#[test]
fn help_documents_every_scenario() {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for scenario in ["echo", "fanout", "connect", "idle"] {
        assert!(help.contains(scenario), "{scenario} missing from:\n{help}");
    }
}
