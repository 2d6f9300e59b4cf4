//! Plain HTTP on the WebSocket port: health, errors and header limits.

use crate::common;

use common::{Server, UpgradeRequest, http_get, http_raw, json_str, parse_json, token};

#[test]
fn healthz_answers_200_status_ok() {
    let server = Server::start(&[]);
    let resp = http_get(server.addr(), "/healthz");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(json_str(&parse_json(&resp.body), &["status"]), Some("ok"));
}

#[test]
fn unknown_path_is_404_not_found() {
    let server = Server::start(&[]);
    http_get(server.addr(), "/nope").assert_error(404, "NOT_FOUND");
}

#[test]
fn wrong_method_on_known_path_is_405() {
    let server = Server::start(&[]);
    let req = b"DELETE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
    http_raw(server.addr(), req).assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn garbage_request_is_400_bad_request() {
    let server = Server::start(&[]);
    http_raw(server.addr(), b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        .assert_error(400, "BAD_REQUEST");
}

#[test]
fn request_line_without_version_is_400() {
    let server = Server::start(&[]);
    http_raw(server.addr(), b"GET /healthz\r\n\r\n").assert_error(400, "BAD_REQUEST");
}

#[test]
fn headers_over_max_header_bytes_are_431() {
    let server = Server::start(&["--max-header-bytes", "2KiB"]);
    let fill = "a".repeat(3000);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: {fill}\r\n\r\n");
    http_raw(server.addr(), req.as_bytes()).assert_error(431, "HEADERS_TOO_LARGE");
}

#[test]
fn headers_under_max_header_bytes_are_served() {
    let server = Server::start(&["--max-header-bytes", "2KiB"]);
    let fill = "a".repeat(1000);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: {fill}\r\n\r\n");
    assert_eq!(http_raw(server.addr(), req.as_bytes()).status, 200);
}

#[test]
fn upgrade_headers_over_the_default_8kib_are_431() {
    let server = Server::start(&[]);
    let fill = "b".repeat(9 * 1024);
    let resp = UpgradeRequest::new("/ws")
        .bearer(&token("u1"))
        .header("X-Fill", &fill)
        .send(server.addr());
    resp.assert_error(431, "HEADERS_TOO_LARGE");
}

#[test]
fn echo_path_is_404_without_the_echo_flag() {
    let server = Server::start(&[]);
    let resp = UpgradeRequest::new("/echo")
        .bearer(&token("u1"))
        .send(server.addr());
    resp.assert_error(404, "NOT_FOUND");
}

#[test]
fn metrics_expose_the_connection_gauge() {
    let server = Server::start(&[]);
    let _a = common::ws_connect(server.addr(), "/ws", &token("u1"));
    let _b = common::ws_connect(server.addr(), "/ws", &token("u2"));
    common::wait_until(
        std::time::Duration::from_secs(5),
        "roomcast_connections 2",
        || {
            let resp = http_get(server.addr(), "/metrics");
            assert_eq!(resp.status, 200, "{resp:?}");
            resp.body
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["roomcast_connections", "2"])
        },
    );
}

#[test]
fn stats_count_connections_as_integers() {
    use simd_json::prelude::*;
    let server = Server::start(&[]);
    let _a = common::ws_connect(server.addr(), "/ws", &token("u1"));
    common::wait_until(std::time::Duration::from_secs(5), "connections: 1", || {
        let resp = http_get(server.addr(), "/stats");
        assert_eq!(resp.status, 200, "{resp:?}");
        let v = parse_json(&resp.body);
        assert!(common::json_at(&v, &["shards"]).is_some_and(|s| s.is_array()));
        common::json_at(&v, &["connections"]).and_then(|c| c.as_u64()) == Some(1)
    });
}

#[test]
fn metrics_are_prometheus_text_and_get_only() {
    let server = Server::start(&[]);
    let resp = http_get(server.addr(), "/metrics");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(resp.body.contains("# TYPE roomcast_connections gauge\n"));
    let req = b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
    http_raw(server.addr(), req).assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn stats_show_the_configuration_without_its_secret() {
    let server = Server::start(&["--history", "7"]);
    let resp = http_get(server.addr(), "/stats");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(!resp.body.contains(common::SECRET), "{}", resp.body);
    let v = parse_json(&resp.body);
    assert_eq!(
        json_str(&v, &["config", "jwt_secrets"]),
        Some("<1 redacted>")
    );
    assert_eq!(json_str(&v, &["version"]), Some(env!("CARGO_PKG_VERSION")));
    use simd_json::prelude::*;
    let history = common::json_at(&v, &["config", "history"]).and_then(|h| h.as_u64());
    assert_eq!(history, Some(7));
}

/// A server with `--metrics-bind` on an ephemeral port, and that port.
fn with_metrics_port() -> (Server, std::net::SocketAddr) {
    let server = Server::start(&["--metrics-bind", "127.0.0.1:0"]);
    let metrics = common::wait_for_stdout(&server, "roomcast metrics on ")
        .parse()
        .expect("metrics address");
    (server, metrics)
}

#[test]
fn metrics_bind_serves_operators_on_their_own_port_only() {
    let (server, metrics) = with_metrics_port();
    assert_ne!(metrics, server.addr());
    for path in ["/metrics", "/stats", "/healthz"] {
        assert_eq!(http_get(metrics, path).status, 200, "{path}");
    }
    http_get(server.addr(), "/metrics").assert_error(404, "NOT_FOUND");
    http_get(server.addr(), "/stats").assert_error(404, "NOT_FOUND");
    UpgradeRequest::new("/ws")
        .bearer(&token("u1"))
        .send(metrics)
        .assert_error(404, "NOT_FOUND");
}

/// A request head with `count` header lines (Host among them).
fn head_with_headers(count: usize) -> String {
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 1..count {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req
}

#[test]
fn sixty_four_header_lines_are_served_and_sixty_five_are_431() {
    let server = Server::start(&[]);
    assert_eq!(
        http_raw(server.addr(), head_with_headers(64).as_bytes()).status,
        200
    );
    let resp = http_raw(server.addr(), head_with_headers(65).as_bytes());
    resp.assert_error(431, "HEADERS_TOO_LARGE");
    assert!(resp.body.contains("more than 64 header fields"), "{resp:?}");
}

#[test]
fn the_browser_client_is_served_as_an_es_module() {
    let server = Server::start(&[]);
    let resp = http_get(server.addr(), "/roomcast.js");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/roomcast.js"
    ))
    .unwrap();
    assert_eq!(resp.body, file, "the file of clients/js, byte for byte");
    let post = common::http_raw(
        server.addr(),
        b"POST /roomcast.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
}

#[test]
fn stats_lists_the_busiest_rooms() {
    use common::rooms::{Claims, Client};
    use simd_json::prelude::*;
    let server = Server::start(&["--ping-interval", "1s"]);
    let mut member = Client::user(server.addr(), "member");
    member.join("hot");
    let mut feed = Client::connect(
        server.addr(),
        &Claims::new("feed").publish(&["*"]).rate(0).token(),
    );
    let mut top = String::new();
    common::wait_until(
        std::time::Duration::from_secs(10),
        "rooms_top lists hot",
        || {
            for _ in 0..5 {
                feed.publish_ok("hot", "feed:tick", "1");
            }
            let stats = parse_json(&http_get(server.addr(), "/stats").body);
            top = format!("{:?}", stats.get("rooms_top"));
            common::json_at(&stats, &["rooms_top"])
                .and_then(|list| list.as_array())
                .and_then(|list| list.first())
                .is_some_and(|first| json_str(first, &["room"]) == Some("hot"))
        },
    );
    assert!(top.contains("members"), "{top}");
}

#[test]
fn the_dashboard_is_served_where_stats_is_and_can_be_turned_off() {
    let server = Server::start(&[]);
    let page = http_get(server.addr(), "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("fetch(\"/stats\""));
    let off = Server::start(&["--dashboard", "false"]);
    http_get(off.addr(), "/").assert_error(404, "NOT_FOUND");
    let demo_off = http_get(server.addr(), "/demo");
    assert_eq!(demo_off.status, 404, "/demo only with --demo");
}

/// `METHOD path` with `Connection: close`, as bytes.
fn request(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A `HEAD` and its answer's head, asserting that nothing follows it.
fn head(addr: std::net::SocketAddr, path: &str) -> common::HttpResponse {
    let (resp, rest) = common::http_head_and_rest(addr, &request("HEAD", path));
    assert!(rest.is_empty(), "HEAD {path}: body bytes {rest:?}");
    resp
}

/// Every GET resource: the static ones answer a `HEAD` with a GET's exact
/// head; `/metrics`, `/stats` and `/demo` (a fresh token per load) change
/// between two requests, so their lengths are compared up to what moved.
#[test]
fn head_is_answered_like_get_without_a_body() {
    let server = Server::start(&["--demo"]);
    for path in [
        "/",
        "/healthz",
        "/roomcast.js",
        "/demo",
        "/metrics",
        "/stats",
    ] {
        let get = http_get(server.addr(), path);
        let head = head(server.addr(), path);
        assert_eq!((head.status, get.status), (200, 200), "{path}: {head:?}");
        for name in [
            "Content-Type",
            "Cache-Control",
            "Access-Control-Allow-Origin",
        ] {
            assert_eq!(head.header(name), get.header(name), "{path}: {name}");
        }
        let length: usize = head.header("Content-Length").unwrap().parse().unwrap();
        if matches!(path, "/metrics" | "/stats" | "/demo") {
            assert!(length.abs_diff(get.body.len()) < 64, "{path}: {length}");
        } else {
            assert_eq!(length, get.body.len(), "{path}");
        }
    }
}

#[test]
fn head_errors_carry_no_body_either() {
    let server = Server::start(&["--echo"]);
    let unknown = head(server.addr(), "/nope");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let get = http_get(server.addr(), "/nope");
    assert_eq!(
        unknown.header("Content-Length").unwrap(),
        get.body.len().to_string()
    );
    // A HEAD cannot upgrade: it gets what a GET without upgrade headers gets.
    for path in ["/ws", "/echo"] {
        let plain = http_get(server.addr(), path);
        plain.assert_error(400, "BAD_REQUEST");
        let req = UpgradeRequest::new(path).method("HEAD").bearer(&token("u"));
        let (resp, rest) = common::http_head_and_rest(server.addr(), &req.to_bytes());
        assert!(rest.is_empty(), "HEAD {path}: {rest:?}");
        assert_eq!(resp.status, 400, "{resp:?}");
        assert_eq!(
            resp.header("Content-Length").unwrap(),
            plain.body.len().to_string()
        );
    }
    let publish = head(server.addr(), "/publish");
    assert_eq!(publish.status, 405);
    assert_eq!(publish.header("Allow"), Some("POST, OPTIONS"));
}

#[test]
fn head_leaves_nothing_for_the_client_to_misread_as_a_body() {
    let server = Server::start(&[]);
    let mut conn = common::HttpConn::connect(server.addr());
    let mut pipelined = request("HEAD", "/healthz");
    pipelined.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.send(&pipelined);
    let resp = conn.read_head_only();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Content-Length"), Some("15"));
    assert_eq!(resp.header("Connection"), Some("close"));
    // Plain responses close the connection (protocol notes, HTTP): the head
    // is the last thing on the wire.
    assert!(conn.unread().is_empty(), "{:?}", conn.unread());
    assert!(conn.is_closed_by_server());
}

#[test]
fn every_405_says_which_methods_the_path_takes() {
    let server = Server::start(&["--demo"]);
    let wrong = [
        ("DELETE", "/healthz"),
        ("POST", "/metrics"),
        ("PUT", "/stats"),
        ("POST", "/"),
        ("POST", "/roomcast.js"),
        ("PATCH", "/demo"),
    ];
    for (method, path) in wrong {
        let resp = http_raw(server.addr(), &request(method, path));
        resp.assert_error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(
            resp.header("Allow"),
            Some("GET, HEAD, OPTIONS"),
            "{method} {path}"
        );
    }
}

#[test]
fn options_answers_204_with_the_methods_of_the_path() {
    let server = Server::start(&["--demo", "--echo"]);
    let cases = [
        ("/healthz", "GET, HEAD, OPTIONS", None),
        ("/metrics", "GET, HEAD, OPTIONS", None),
        ("/stats", "GET, HEAD, OPTIONS", None),
        ("/demo", "GET, HEAD, OPTIONS", None),
        ("/ws", "GET, HEAD, OPTIONS", None),
        ("/echo", "GET, HEAD, OPTIONS", None),
        ("/", "GET, HEAD, OPTIONS", Some("*")),
        ("/roomcast.js", "GET, HEAD, OPTIONS", Some("*")),
        ("/publish", "POST, OPTIONS", None),
        ("*", "GET, HEAD, POST, OPTIONS", None),
    ];
    for (path, allow, cors) in cases {
        let (resp, rest) = common::http_head_and_rest(server.addr(), &request("OPTIONS", path));
        assert_eq!(resp.status, 204, "OPTIONS {path}: {resp:?}");
        assert!(rest.is_empty(), "OPTIONS {path}: {rest:?}");
        assert_eq!(resp.header("Allow"), Some(allow), "{path}");
        assert_eq!(resp.header("Content-Length"), None, "{path}");
        assert_eq!(resp.header("Access-Control-Allow-Origin"), cors, "{path}");
    }
    http_raw(server.addr(), &request("OPTIONS", "/nope")).assert_error(404, "NOT_FOUND");
}

#[test]
fn the_metrics_port_answers_head_and_options_for_its_own_paths_only() {
    let (server, operator) = with_metrics_port();
    assert_eq!(head(operator, "/metrics").status, 200);
    assert_eq!(
        head(server.addr(), "/metrics").status,
        404,
        "not on the public port"
    );
    let (options, _) = common::http_head_and_rest(operator, &request("OPTIONS", "*"));
    assert_eq!(options.header("Allow"), Some("GET, HEAD, OPTIONS"));
}

/// `POST /api/<method>` with `key` (none: no `X-API-Key`) and `body`.
fn api_call(addr: std::net::SocketAddr, method: &str, key: Option<&str>, body: &str) -> u16 {
    let key = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_raw(addr, req.as_bytes()).status
}

#[test]
fn metrics_and_stats_count_api_calls_by_method_and_status() {
    use simd_json::prelude::*;
    const KEY: &str = "metrics-test-key-31";
    let server = Server::start(&["--api-key", KEY]);
    let addr = server.addr();
    assert_eq!(api_call(addr, "info", Some(KEY), "{}"), 200);
    assert_eq!(api_call(addr, "info", Some(KEY), ""), 200);
    assert_eq!(api_call(addr, "presence", Some(KEY), "{"), 400);
    assert_eq!(api_call(addr, "presence", None, "{}"), 401);
    assert_eq!(api_call(addr, "nope", Some(KEY), "{}"), 404);
    let requests = |method: &str, status: &str| {
        format!("roomcast_api_requests_total{{method=\"{method}\",status=\"{status}\"}}")
    };
    common::wait_for_metric(addr, &requests("info", "200"), 2.0);
    common::wait_for_metric(addr, &requests("presence", "400"), 1.0);
    common::wait_for_metric(addr, &requests("presence", "401"), 1.0);
    common::wait_for_metric(addr, &requests("unknown", "404"), 1.0);
    assert_eq!(common::metric(addr, &requests("publish", "200")), 0.0);
    // Only the calls whose body was read are timed.
    let count = "roomcast_api_request_duration_seconds_count{method=\"info\"}";
    assert_eq!(common::metric(addr, count), 2.0);
    let count = "roomcast_api_request_duration_seconds_count{method=\"presence\"}";
    assert_eq!(common::metric(addr, count), 0.0);
    let stats = parse_json(&http_get(addr, "/stats").body);
    let at = |path: &[&str]| common::json_at(&stats, path).and_then(|v| v.as_u64());
    assert_eq!(at(&["api", "info", "requests"]), Some(2));
    assert_eq!(at(&["api", "info", "latency", "count"]), Some(2));
    assert_eq!(at(&["api", "presence", "by_status", "401"]), Some(1));
    assert_eq!(at(&["api", "unknown", "by_status", "404"]), Some(1));
}
