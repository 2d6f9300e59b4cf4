//! The operator thread of `--metrics-bind`: the port's pages are served
//! off the shards, whatever they are doing, and the Server API on that
//! port is handed to shard 0 with the bytes already read.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use simd_json::prelude::*;

use crate::common;

use common::api::{API_KEY, Api, Cred, member, request_bytes, result_of};
use common::rooms::publisher;
use common::{HttpConn, Server, http_get, json_at, parse_json};

/// Members of the flooded room.
const MEMBERS: usize = 100;
/// Publishes fanned out to them; their queues stay far below the bound.
const PUBLISHES: usize = 300;
/// Connections the operator thread holds (`OPERATOR_CONNECTIONS`).
const OPERATOR_CONNECTIONS: usize = 64;

/// One shard, the API key, and the metrics port.
fn server() -> (Server, SocketAddr) {
    server_with(&[])
}

fn server_with(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec![
        "--shards",
        "1",
        "--api-key",
        API_KEY,
        "--metrics-bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let metrics = common::wait_for_stdout(&server, "roomcast metrics on ")
        .parse()
        .expect("metrics address");
    (server, metrics)
}

/// The names of the server's threads.
fn thread_names(server: &Server) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).expect("tasks");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn stats_connections(metrics: SocketAddr) -> Option<u64> {
    let resp = http_get(metrics, "/stats");
    assert_eq!(resp.status, 200, "{resp:?}");
    json_at(&parse_json(&resp.body), &["connections"]).and_then(|c| c.as_u64())
}

#[test]
fn stats_and_the_dashboard_answer_from_the_operator_thread_while_shard_zero_fans_out() {
    let (server, metrics) = server();
    assert!(
        thread_names(&server).iter().any(|name| name == "operator"),
        "{:?}",
        thread_names(&server)
    );
    let _members: Vec<_> = (0..MEMBERS)
        .map(|i| member(server.addr(), &format!("m{i}"), &["flood"]))
        .collect();
    let mut publisher = publisher(server.addr(), "publisher");
    let flood = std::thread::spawn(move || {
        let data = format!("\"{}\"", "x".repeat(200));
        for _ in 0..PUBLISHES {
            publisher.publish_ok("flood", "flood:tick", &data);
        }
    });
    let mut answered = 0;
    while !flood.is_finished() || answered == 0 {
        common::wait_until(Duration::from_secs(5), "every member counted", || {
            stats_connections(metrics) == Some(MEMBERS as u64 + 1)
        });
        let page = http_get(metrics, "/");
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("fetch(\"/stats\""));
        let info = result_of(
            &Api::key(metrics).call("info", "{}"),
            "info on the metrics port",
        );
        assert!(json_at(&info, &["nodes"]).is_some(), "{info:?}");
        answered += 1;
    }
    flood.join().expect("the flood");
}

#[test]
fn an_api_call_split_on_the_metrics_port_is_served_by_the_shard_and_kept_alive() {
    let (_server, metrics) = server();
    let cred = Cred::key();
    let mut conn = HttpConn::connect(metrics);
    let call = request_bytes("POST", "/api/info", &cred, b"{}");
    let keep_alive = String::from_utf8(call)
        .expect("ascii")
        .replace("Connection: close", "Connection: keep-alive")
        .into_bytes();
    // The operator thread reads the first piece, the shard the rest.
    let (first, rest) = keep_alive.split_at(10);
    conn.send(first);
    std::thread::sleep(Duration::from_millis(50));
    conn.send(rest);
    let resp = conn.read_response();
    result_of(&resp, "the split call");
    // The connection is the shard's now: the next request on it too.
    conn.send(&keep_alive);
    result_of(&conn.read_response(), "the call kept alive");
    conn.send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let stats = conn.read_response();
    assert_eq!(stats.status, 200, "{stats:?}");
    assert!(conn.is_closed_by_server());
}

#[test]
fn the_operator_thread_holds_a_bounded_number_of_connections() {
    let (_server, metrics) = server();
    let idle: Vec<TcpStream> = (0..OPERATOR_CONNECTIONS)
        .map(|_| TcpStream::connect(metrics).expect("connect"))
        .collect();
    // Accepted in order: the idle ones fill the operator thread first.
    common::wait_until(Duration::from_secs(5), "the bound reached", || {
        http_get(metrics, "/healthz").status == 503
    });
    http_get(metrics, "/healthz").assert_error(503, "SERVER_BUSY");
    drop(idle);
    common::wait_until(Duration::from_secs(5), "room again", || {
        http_get(metrics, "/healthz").status == 200
    });
}

#[test]
fn a_silent_or_slow_operator_connection_is_closed_after_the_request_timeout() {
    let (_server, metrics) = server_with(&["--handshake-timeout", "300ms"]);
    let mut silent = HttpConn::connect(metrics);
    let mut slow = HttpConn::connect(metrics);
    slow.send(b"GET /stats HTTP/1.1\r\n");
    // Within the read timeout (5 s): the sweep runs every second.
    assert!(silent.is_closed_by_server());
    assert!(slow.is_closed_by_server());
    assert_eq!(http_get(metrics, "/healthz").status, 200);
}
