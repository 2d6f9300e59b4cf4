//! `roomcast api METHOD [JSON]`: its exit statuses (0 for a 2xx, 1 for an
//! API error, 2 for no answer), where its credential comes from, and that
//! it never prints the key or token.

use crate::common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use common::{Server, expect_close, json_at, json_str, recv_json, ws_connect};
use simd_json::prelude::*;

/// The key every server of these tests is started with.
const KEY: &str = "api-cli-key-5d2e";

fn server() -> Server {
    Server::start(&["--api-key", KEY])
}

/// `roomcast api` with `args`, against `addr`.
fn api(addr: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Server::command();
    cmd.arg("api")
        .args(args)
        .args(["--addr", &addr.to_string()]);
    cmd
}

/// Runs `cmd`, with `stdin` as its input.
fn run(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run roomcast api");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts that `out` succeeded and returns its stdout as JSON.
fn succeeded(out: &Output) -> simd_json::OwnedValue {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    common::parse_json(&String::from_utf8_lossy(&out.stdout))
}

/// Asserts that `out` is an API error: exit 1, nothing on stdout, the
/// status and code on stderr.
fn api_error(out: &Output, status: u16, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(" {status} ")) && stderr.contains(code),
        "{stderr}"
    );
}

/// Asserts that neither output stream holds `secret`.
fn not_printed(out: &Output, secret: &str) {
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(
        !String::from_utf8_lossy(&all).contains(secret),
        "printed: {out:?}"
    );
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Environment variables of one run.
type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn a_command_line_that_cannot_be_sent_exits_2_before_connecting() {
    // Nothing listens there: a message other than "cannot connect" shows
    // that the command stopped before trying.
    let addr = closed_port();
    let cases: &[(&[&str], Env, &str)] = &[
        (&["info"], &[], "no credential"),
        (&["info"], &[("ROOMCAST_API_KEY", ",,")], "no credential"),
        (
            &["info", "[1]", "--api-key", "k"],
            &[],
            "must be a JSON object",
        ),
        (&["info", "{", "--api-key", "k"], &[], "not valid JSON"),
        (&["a/b", "--api-key", "k"], &[], "not a method name"),
        (
            &["info", "--api-key", "k", "--token", "t"],
            &[],
            "cannot be used with",
        ),
        (&["info", "--api-key", "k", "--ca", "x.pem"], &[], "--tls"),
        (&["info", "--api-key", "bad key"], &[], "visible ASCII"),
    ];
    for (args, env, message) in cases {
        let mut cmd = api(addr, args);
        cmd.envs(env.iter().copied());
        let out = run(cmd, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("cannot connect"), "{args:?}: {stderr}");
    }
    let out = run(api(addr, &["info", "-", "--api-key", "k"]), "not json");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn no_server_exits_2_naming_the_address() {
    let addr = closed_port();
    let out = run(api(addr, &["info", "--api-key", KEY]), "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("roomcast api: cannot connect to {addr}")),
        "{stderr}"
    );
    not_printed(&out, KEY);
}

#[test]
fn info_answers_with_a_key_from_the_flag_or_the_environment() {
    let server = server();
    let out = run(api(server.addr(), &["info", "--api-key", KEY]), "");
    let reply = succeeded(&out);
    let nodes = json_at(&reply, &["result", "nodes"]).and_then(|n| n.as_array());
    assert!(nodes.is_some_and(|n| !n.is_empty()), "{reply:?}");
    not_printed(&out, KEY);

    // The first of the environment's comma-separated keys.
    let mut cmd = api(server.addr(), &["info", "--raw"]);
    cmd.env("ROOMCAST_API_KEY", format!("{KEY},another-key"));
    let out = run(cmd, "");
    succeeded(&out);
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
    not_printed(&out, KEY);
}

#[test]
fn api_errors_exit_1_with_the_body_on_stderr() {
    let server = server();
    let addr = server.addr();
    let wrong = run(api(addr, &["info", "--api-key", "not-the-key"]), "");
    api_error(&wrong, 401, "UNAUTHENTICATED");
    not_printed(&wrong, "not-the-key");
    // Authentication is answered first, even for a method that does not exist.
    let unknown = run(api(addr, &["no_such_method", "--api-key", "nope"]), "");
    api_error(&unknown, 401, "UNAUTHENTICATED");

    let user = common::token("not-an-admin");
    let forbidden = run(api(addr, &["info", "--token", &user]), "");
    api_error(&forbidden, 403, "FORBIDDEN");
    not_printed(&forbidden, &user);

    let missing = run(api(addr, &["no_such_method", "--api-key", KEY]), "");
    api_error(&missing, 404, "NOT_FOUND");
    let invalid = run(api(addr, &["disconnect", "{}", "--api-key", KEY]), "");
    api_error(&invalid, 400, "VALIDATION_ERROR");
    not_printed(&invalid, KEY);
}

/// A token minted by `roomcast token --admin`.
fn admin_token() -> String {
    let out = Server::command()
        .args([
            "token",
            "--admin",
            "--sub",
            "ops",
            "--secret",
            common::SECRET,
        ])
        .output()
        .expect("run roomcast token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn disconnect_from_stdin_with_an_admin_token_closes_the_user() {
    let server = server();
    let mut ws = ws_connect(server.addr(), "/ws", &common::token("api-quit"));
    recv_json(&mut ws);
    let admin = admin_token();
    let params = r#"{"user":"api-quit","code":4501,"reason":"bye"}"#;
    let out = run(
        api(server.addr(), &["disconnect", "-", "--token", &admin]),
        params,
    );
    let reply = succeeded(&out);
    let connections = json_at(&reply, &["result", "connections"]).and_then(|n| n.as_u64());
    assert_eq!(connections, Some(1), "{reply:?}");
    assert_eq!(expect_close(&mut ws), 4501);
    not_printed(&out, &admin);
}

#[test]
fn subscribe_reaches_the_user_and_rooms_lists_the_room() {
    let server = server();
    let mut ws = ws_connect(server.addr(), "/ws", &common::token("api-sub"));
    recv_json(&mut ws);
    let mut subscribe = api(
        server.addr(),
        &["subscribe", r#"{"user":"api-sub","room":"api-cli:one"}"#],
    );
    subscribe.env("ROOMCAST_API_TOKEN", admin_token());
    let reply = succeeded(&run(subscribe, ""));
    let connections = json_at(&reply, &["result", "connections"]).and_then(|n| n.as_u64());
    assert_eq!(connections, Some(1), "{reply:?}");
    let told = recv_json(&mut ws);
    assert_eq!(json_str(&told, &["event"]), Some("room:subscribed"));
    assert_eq!(json_str(&told, &["room"]), Some("api-cli:one"));

    let rooms = run(
        api(
            server.addr(),
            &["rooms", r#"{"pattern":"api-cli:*"}"#, "--api-key", KEY],
        ),
        "",
    );
    let reply = succeeded(&rooms);
    let listed = json_at(&reply, &["result", "rooms"]).and_then(|r| r.as_array());
    let listed = listed.expect("a rooms array");
    assert_eq!(listed.len(), 1, "{reply:?}");
    assert_eq!(json_str(&listed[0], &["room"]), Some("api-cli:one"));
    assert_eq!(
        listed[0].get("connections").and_then(|n| n.as_u64()),
        Some(1)
    );
    assert_eq!(listed[0].get("users").and_then(|n| n.as_u64()), Some(1));
}
