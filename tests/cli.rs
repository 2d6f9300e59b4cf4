//! The command line around the server: `roomcast token`, the generated
//! secret, and the listening line.

mod common;

use std::time::Duration;

use common::{Server, json_str, recv_json, wait_until, ws_connect};

/// Whether `word` has the shape of a JWT: three base64url segments.
fn looks_like_jwt(word: &str) -> bool {
    let parts: Vec<_> = word.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[test]
fn token_command_mints_a_token_the_server_accepts() {
    let server = Server::start(&[]);
    let out = Server::command()
        .args(["token", "--secret", common::SECRET, "--sub", "cli-user"])
        .args(["--name", "Cli User", "--ttl", "600"])
        .output()
        .expect("run roomcast token");
    assert!(out.status.success(), "{out:?}");
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(looks_like_jwt(&jwt), "not a JWT: {jwt:?}");

    let mut ws = ws_connect(server.addr(), "/ws", &jwt);
    let hello = recv_json(&mut ws);
    assert_eq!(json_str(&hello, &["data", "userId"]), Some("cli-user"));
}

#[test]
fn stdout_holds_only_the_listening_line_and_logs_go_elsewhere() {
    let mut server = Server::start(&["--log-level", "debug"]);
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.addr().port(), 0);
    // Activity that gets logged: a session, a rejection, a shutdown.
    let mut ws = ws_connect(server.addr(), "/ws", &common::token("u1"));
    recv_json(&mut ws);
    drop(ws);
    common::http_get(server.addr(), "/nope");
    server.terminate();
    server.wait_exit(Duration::from_secs(15));
    let line = format!("roomcast listening on {}", server.addr());
    assert_eq!(server.all_stdout(), [line]);
}

#[test]
fn without_a_secret_the_server_prints_a_ready_token() {
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let server = Server::spawn(cmd);
    let find = || {
        server
            .stdout()
            .iter()
            .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|w| looks_like_jwt(w.trim_start_matches("token=")))
    };
    wait_until(Duration::from_secs(5), "a token on stdout", || {
        find().is_some()
    });
    let jwt = find().unwrap();
    let mut ws = ws_connect(server.addr(), "/ws", jwt.trim_start_matches("token="));
    let hello = recv_json(&mut ws);
    assert_eq!(json_str(&hello, &["event"]), Some("connection:established"));
}

#[test]
fn nonsense_configuration_exits_2() {
    for bad in [
        &["--shards", "0"][..],
        &["--max-message-size", "0"],
        &["--jwt-secret", ""],
        &["--ping-interval", "1ms"],
    ] {
        let out = Server::command()
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--jwt-secret",
                common::SECRET,
            ])
            .args(bad)
            .output()
            .expect("run roomcast serve");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}
