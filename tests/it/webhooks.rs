//! Webhooks (section 13.1) end to end, one process: the real server, real
//! WebSocket clients, and a real local HTTP backend (the one of
//! `hooks_client`) that checks every request's signature, answers with the
//! status the test scripts, and keeps each batch with that status.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::common;
use crate::hooks_client::{Backend, read_request};
use common::rooms::Client;
use common::{Server, json_str, metric, parse_json, wait_until};

/// What `hooks_client`'s backend checks signatures with.
pub(crate) const HOOK_SECRET: &str = "hook-test-secret";
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A webhook backend and the batches it answered, each with its status.
pub(crate) struct Hooks {
    backend: Backend,
    batches: Arc<Mutex<Vec<(u16, OwnedValue)>>>,
}

impl Hooks {
    /// Answers the `n`-th request (from 0) with `status(n)`.
    pub(crate) fn start(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Hooks {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let kept = batches.clone();
        let count = AtomicUsize::new(0);
        let backend = Backend::start(move |stream: TcpStream, _, _| {
            let mut conn = BufReader::new(stream);
            while let Some(request) = read_request(&mut conn) {
                request.assert_signed();
                assert!(request.request_line.starts_with("POST /events"));
                let body = parse_json(std::str::from_utf8(&request.body).unwrap());
                let status = status(count.fetch_add(1, Ordering::SeqCst));
                kept.lock().unwrap().push((status, body));
                let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}");
                if conn.get_mut().write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Hooks { backend, batches }
    }

    pub(crate) fn always_ok() -> Hooks {
        Hooks::start(|_| 200)
    }

    /// The ids of the events of the batches answered `status`, each once,
    /// in the order they first came.
    pub(crate) fn ids_answered(&self, status: u16) -> Vec<String> {
        let batches = self.batches.lock().unwrap();
        let mut ids: Vec<String> = Vec::new();
        for (_, body) in batches.iter().filter(|(s, _)| *s == status) {
            for event in body["events"].as_array().unwrap() {
                let id = event["id"].as_str().unwrap().to_owned();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    pub(crate) fn url(&self) -> String {
        self.backend.url("/events")
    }

    /// Every event of the acknowledged batches, in the order they came,
    /// each once (a retried batch may repeat).
    pub(crate) fn events(&self) -> Vec<OwnedValue> {
        let mut seen = std::collections::HashSet::new();
        let batches = self.batches.lock().unwrap();
        let acked = batches.iter().filter(|(status, _)| *status == 200);
        acked
            .flat_map(|(_, body)| body["events"].as_array().unwrap().clone())
            .filter(|event| seen.insert(event["id"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// `type` and `room`/`user` of each event, in order.
    pub(crate) fn summary(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                let about = json_str(e, &["room"]).or(json_str(e, &["user"])).unwrap();
                let user = json_str(e, &["user"]).filter(|_| e.get("room").is_some());
                let who = user.map(|u| format!(" {u}")).unwrap_or_default();
                format!("{} {about}{who}", e["type"].as_str().unwrap())
            })
            .collect()
    }

    pub(crate) fn wait_for(&self, what: &str, count: usize) -> Vec<String> {
        wait_until(WAIT, what, || self.events().len() >= count);
        self.summary()
    }
}

pub(crate) fn server(hooks_url: &str, flags: &[&str]) -> Server {
    let mut cmd = Server::single_command();
    cmd.args(["--hook-secret", HOOK_SECRET, "--webhook", hooks_url])
        .args(flags);
    Server::spawn(cmd)
}

/// Messages and presence of the `chat:*` rooms, and a short vacate delay.
pub(crate) const CHAT_FLAGS: [&str; 6] = [
    "--webhook-rooms",
    "chat:*",
    "--presence-rooms",
    "chat:*",
    "--webhook-vacate-delay",
    "300ms",
];

#[test]
fn each_webhook_type_comes_signed_in_the_order_it_happened() {
    let hooks = Hooks::always_ok();
    let server = server(&hooks.url(), &CHAT_FLAGS);
    let before = common::rooms::now_ms();
    let mut alice = Client::user(server.addr(), "alice");
    alice.join("chat:1");
    alice.join("quiet");
    alice.publish_ok("chat:1", "chat:say", r#"{"text":"hi"}"#);
    alice.publish_ok("quiet", "chat:say", r#"{"text":"unheard"}"#);
    alice.leave("chat:1");
    drop(alice);
    hooks.wait_for("every event", 9);
    // Each room's and each user's events in the order they happened; a
    // room's and a user's are noticed on different shards, in no order
    // between them.
    let about = |subject: &str| -> Vec<String> {
        hooks
            .summary()
            .into_iter()
            .filter(|line| line.split(' ').nth(1) == Some(subject))
            .collect()
    };
    assert_eq!(
        about("chat:1"),
        [
            "room.occupied chat:1",
            "presence.join chat:1 alice",
            "room.message chat:1",
            "presence.leave chat:1 alice",
            "room.vacated chat:1",
        ]
    );
    assert_eq!(
        about("quiet"),
        ["room.occupied quiet", "room.vacated quiet"]
    );
    assert_eq!(about("alice"), ["user.online alice", "user.offline alice"]);
    assert_eq!(hooks.summary().len(), 9);
    let events = hooks.events();
    let message = events
        .iter()
        .find(|e| e["type"].as_str() == Some("room.message"))
        .unwrap();
    assert_eq!(json_str(message, &["event"]), Some("chat:say"));
    assert_eq!(json_str(message, &["from"]), Some("alice"));
    assert_eq!(json_str(message, &["data", "text"]), Some("hi"));
    assert_eq!(message["seq"].as_u64(), Some(1));
    assert!(message["ts"].as_u64().unwrap() >= before);
    let ids: std::collections::HashSet<_> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "ids are unique");
    for event in &events {
        let time = event["time"].as_u64().unwrap();
        assert!(
            time >= before && time <= common::rooms::now_ms(),
            "{event:?}"
        );
    }
    // The vacate waited its delay. A batch counts as delivered once its
    // answer is read, a moment after the backend recorded it.
    wait_until(WAIT, "every event counted delivered", || {
        metric(server.addr(), "roomcast_webhook_delivered_total") == 9.0
    });
    assert_eq!(metric(server.addr(), "roomcast_webhook_queued"), 0.0);
    let stats = parse_json(&common::http_get(server.addr(), "/stats").body);
    let webhooks = common::json_at(&stats, &["hooks", "webhooks"]).expect("/stats hooks.webhooks");
    assert_eq!(webhooks["delivered"].as_u64(), Some(9), "{webhooks:?}");
    assert_eq!(webhooks["dropped"]["queue_full"].as_u64(), Some(0));
}

#[test]
fn webhook_events_choose_the_types_sent() {
    let hooks = Hooks::always_ok();
    let server = server(
        &hooks.url(),
        &["--webhook-events", "room.occupied,user.offline"],
    );
    let mut bob = Client::user(server.addr(), "bob");
    bob.join("r");
    drop(bob);
    let summary = hooks.wait_for("user.offline", 2);
    assert_eq!(summary, ["room.occupied r", "user.offline bob"]);
}

#[test]
fn a_quick_rejoin_or_reconnect_within_the_delay_sends_neither_vacated_nor_occupied() {
    let hooks = Hooks::always_ok();
    let server = server(
        &hooks.url(),
        &[
            "--webhook-vacate-delay",
            "2s",
            "--webhook-events",
            "room.occupied,room.vacated,user.online,user.offline",
        ],
    );
    let mut carol = Client::user(server.addr(), "carol");
    carol.join("r");
    carol.leave("r");
    carol.join("r");
    drop(carol);
    let mut carol = Client::user(server.addr(), "carol");
    carol.join("r");
    assert_only_the_last_leave_vacates(&hooks, carol);
}

/// With a vacate delay of 2s, once `carol`, the last in room `r`, has
/// come back quickly: past the delay only her first `user.online` and
/// `room.occupied r` were sent; her last leave (`carol` goes) then sends
/// the vacate and the offline.
pub(crate) fn assert_only_the_last_leave_vacates(hooks: &Hooks, carol: Client) {
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(hooks.summary(), ["user.online carol", "room.occupied r"]);
    drop(carol);
    let mut summary = hooks.wait_for("the vacate after the delay", 4);
    // A room and a user are told apart in no particular order.
    summary[2..].sort();
    assert_eq!(
        summary,
        [
            "user.online carol",
            "room.occupied r",
            "room.vacated r",
            "user.offline carol"
        ]
    );
}

/// Stops `server` gracefully and checks that every event of `user`'s
/// visit to room `r` was sent before it exited.
fn assert_all_sent_by_the_stop(mut server: Server, hooks: &Hooks, user: &str) {
    server.terminate();
    assert!(server.wait_exit(WAIT).success());
    let mut summary = hooks.summary();
    summary.sort();
    let expected = [
        format!("presence.join r {user}"),
        format!("presence.leave r {user}"),
        "room.occupied r".to_owned(),
        "room.vacated r".to_owned(),
        format!("user.offline {user}"),
        format!("user.online {user}"),
    ];
    assert_eq!(summary, expected);
}

#[test]
fn a_graceful_stop_sends_what_is_held_and_waiting() {
    let hooks = Hooks::always_ok();
    let server = server(
        &hooks.url(),
        &["--webhook-vacate-delay", "60m", "--drain-timeout", "2s"],
    );
    let mut gina = Client::user(server.addr(), "gina");
    gina.join("r");
    drop(gina);
    hooks.wait_for("the leave", 4);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hooks.events().len(), 4, "the vacate and offline are held");
    // Held for an hour, they go before the server exits.
    assert_all_sent_by_the_stop(server, &hooks, "gina");
}

#[test]
fn a_stop_counts_out_the_connections_the_drain_left() {
    let hooks = Hooks::always_ok();
    let server = server(
        &hooks.url(),
        &["--webhook-vacate-delay", "60m", "--drain-timeout", "300ms"],
    );
    // Hank never answers the drain's close: his connection is still open
    // when the drain ends.
    let mut hank = Client::user(server.addr(), "hank");
    hank.join("r");
    hooks.wait_for("the occupy", 3);
    assert_all_sent_by_the_stop(server, &hooks, "hank");
    drop(hank);
}

#[test]
fn batches_hold_at_most_a_hundred_and_500s_lose_nothing_nor_reorder() {
    // The first two tries are refused; every later one is taken.
    let hooks = Hooks::start(|n| if n < 2 { 500 } else { 200 });
    let server = server(
        &hooks.url(),
        &[
            "--webhook-rooms",
            "*",
            "--webhook-events",
            "room.message",
            "--rate-limit",
            "0",
        ],
    );
    let mut dave = Client::user(server.addr(), "dave");
    dave.join("a");
    dave.join("b");
    for n in 1..=150 {
        dave.send(&format!(r#"{{"event":"game:tick","room":"a","data":{n}}}"#));
        dave.send(&format!(r#"{{"event":"game:tick","room":"b","data":{n}}}"#));
    }
    hooks.wait_for("all 300 messages", 300);
    let events = hooks.events();
    assert_eq!(events.len(), 300);
    for room in ["a", "b"] {
        let seqs: Vec<u64> = events
            .iter()
            .filter(|e| json_str(e, &["room"]) == Some(room))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "room {room}");
    }
    let batches = hooks.batches.lock().unwrap();
    assert!(batches.len() >= 5, "{} batches", batches.len());
    for (_, body) in batches.iter() {
        let size = body["events"].as_array().unwrap().len();
        assert!((1..=100).contains(&size), "a batch of {size}");
    }
    // The refused batch was tried again as it was.
    assert_eq!(batches[0].1, batches[1].1);
    assert_eq!(batches[1].1, batches[2].1);
    drop(batches);
    assert_eq!(metric(server.addr(), "roomcast_webhook_retries_total"), 2.0);
    assert_eq!(
        metric(server.addr(), "roomcast_webhook_delivered_total"),
        300.0
    );
}

#[test]
fn past_its_retry_time_a_batch_is_dropped_and_counted() {
    let hooks = Hooks::start(|_| 503);
    let server = server(
        &hooks.url(),
        &["--webhook-events", "room.occupied", "--webhook-retry", "1s"],
    );
    let mut erin = Client::user(server.addr(), "erin");
    erin.join("r");
    wait_until(WAIT, "the batch dropped", || {
        metric(
            server.addr(),
            r#"roomcast_webhook_dropped_total{reason="retry_expired"}"#,
        ) == 1.0
    });
    // 0.5 s, then the last try at 1 s: three tries.
    assert_eq!(hooks.batches.lock().unwrap().len(), 3);
    assert_eq!(metric(server.addr(), "roomcast_webhook_queued"), 0.0);
}

/// Median and worst of `n` round trips of a room event to its sender, 5 ms
/// apart (a second and more: the webhook's first tries and a retry fall
/// among them).
fn round_trips(server: &Server, n: usize) -> (Duration, Duration) {
    let mut frank = Client::user(server.addr(), "frank");
    frank.join("room");
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(5));
            let started = Instant::now();
            frank.publish_ok("room", "chat:ping", &i.to_string());
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[n / 2], times[n - 1])
}

#[test]
fn a_dead_webhook_url_never_slows_a_room() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/events", listener.local_addr().unwrap());
    drop(listener);
    let flags = ["--webhook-rooms", "*", "--rate-limit", "0"];
    let (base_median, _) = round_trips(&server(&Hooks::always_ok().url(), &flags), 200);
    let server = server(&dead, &flags);
    let (median, worst) = round_trips(&server, 200);
    assert!(
        median <= base_median * 3 + Duration::from_millis(5),
        "median {median:?} against {base_median:?}"
    );
    assert!(worst < Duration::from_millis(500), "worst {worst:?}");
    // The backend was tried again and again meanwhile, and the events
    // wait for it.
    assert!(
        metric(
            server.addr(),
            r#"roomcast_hook_failures_total{reason="connect"}"#
        ) >= 2.0
    );
    assert!(metric(server.addr(), "roomcast_webhook_retries_total") >= 1.0);
    assert!(metric(server.addr(), "roomcast_webhook_queued") >= 200.0);
}
