//! The command line around the server: `roomcast token`, the generated
//! secret, and the listening line.

use crate::common;

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

/// `roomcast serve` with the test secret and `extra`, run to its end: call
/// it only with a configuration that is refused, or with `--check-config`.
fn serve_output(extra: &[&str]) -> std::process::Output {
    Server::command()
        .args(["serve", "--jwt-secret", common::SECRET])
        .args(extra)
        .output()
        .expect("run roomcast serve")
}

#[test]
fn nonsense_configuration_exits_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--shards", "0"], "--shards: "),
        (&["--max-message-size", "0"], "--max-message-size: "),
        (&["--jwt-secret", ""], "--jwt-secret: "),
        (&["--ping-interval", "1ms"], "--ping-interval: "),
        (
            &["--max-write-buffer", "32KiB"],
            "--max-write-buffer: must be at least --max-message-size (65536 bytes)",
        ),
        (&["--ping-timeout", "61m"], "--ping-timeout: "),
        (&["--drain-timeout", "11m"], "--drain-timeout: "),
        (&["--history", "5", "--history-ttl", "0"], "--history-ttl: "),
        (&["--presence-event-limit", "0"], "--presence-event-limit: "),
        (
            &["--max-connections", "999999999"],
            "--max-connections: must be at most",
        ),
        (
            &[
                "--bind",
                "127.0.0.1:47001",
                "--metrics-bind",
                "127.0.0.1:47001",
            ],
            "--metrics-bind: must differ from --bind",
        ),
        (
            &["--allowed-origins", "https://a.example/"],
            "--allowed-origins: ",
        ),
        (
            &["--allowed-origins", "https://*.example"],
            "--allowed-origins: ",
        ),
        (&["--default-rooms", "lobby*x"], "--default-rooms: "),
        (&["--presence-rooms", "a b"], "--presence-rooms: "),
        (&["--rate-limit", "inf"], "--rate-limit: "),
        (&["--handshake-rate=-2"], "--handshake-rate: "),
        (&["--handshake-rate", "NaN"], "--handshake-rate: "),
        (&["--log-format", "xml"], "--log-format"),
    ];
    for (bad, message) in cases {
        let out = serve_output(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{bad:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad:?} printed {:?}", out.stdout);
    }
}

#[test]
fn check_config_prints_the_configuration_without_secrets_and_exits_0() {
    let out = serve_output(&[
        "--check-config",
        "--jwt-secret",
        "second-secret-value",
        "--handshake-rate",
        "5",
        "--log-format",
        "json",
        // A port in use would stop a server; nothing is bound here.
        "--bind",
        "127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(common::SECRET), "{stdout}");
    assert!(!stdout.contains("second-secret-value"), "{stdout}");
    let config = common::parse_json(stdout.trim());
    assert_eq!(json_str(&config, &["jwt_secrets"]), Some("<2 redacted>"));
    assert_eq!(json_str(&config, &["bind"]), Some("127.0.0.1:1"));
    assert_eq!(json_str(&config, &["log_format"]), Some("json"));
    let rate = common::json_at(&config, &["handshake_rate"]).map(|v| v.to_string());
    assert_eq!(rate.as_deref(), Some("5"));
}

#[test]
fn check_config_refuses_nonsense_with_exit_2() {
    let out = serve_output(&["--check-config", "--shards", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards: "));
}

#[test]
fn check_config_warns_about_what_will_bite_in_production() {
    // A port nothing listens on: the Redis probe is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let out = serve_output(&[
        "--check-config",
        "--redis",
        &redis,
        // 100 TiB per connection: more than any machine's memory.
        "--max-write-buffer",
        "100000000MiB",
        "--max-connections",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    common::parse_json(String::from_utf8(out.stdout).unwrap().trim());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("roomcast: warning: memory: 10 connections x 104857600000000 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "roomcast: warning: redis: {redis}/0 did not answer PING"
        )),
        "{stderr}"
    );
}

#[test]
fn check_config_is_quiet_about_a_configuration_that_fits() {
    let out = serve_output(&["--check-config", "--max-connections", "10"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for topic in ["memory", "redis", "open files"] {
        assert!(!stderr.contains(&format!("warning: {topic}")), "{stderr}");
    }
}

#[test]
fn connect_sends_each_line_and_prints_each_message() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let server = Server::start(&[]);
    let url = format!("ws://{}/ws?token={}", server.addr(), common::token("term"));
    let mut child = Server::command()
        .args(["connect", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run roomcast connect");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let greeting = lines.next().unwrap().unwrap();
    assert!(
        greeting.starts_with(r#"< {"event":"connection:established""#),
        "{greeting}"
    );
    writeln!(
        stdin,
        r#"{{"event":"room:join","data":{{"room":"lobby"}},"id":1}}"#
    )
    .unwrap();
    let ack = lines.next().unwrap().unwrap();
    assert!(
        ack.starts_with(r#"< {"event":"ack","id":1,"success":true"#),
        "{ack}"
    );
    writeln!(stdin, "ping").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "< pong");
    // End of input: a normal close, and a normal exit.
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("closed 1000"), "{stderr}");
    let jwt = url.split("token=").nth(1).unwrap();
    assert!(!stderr.contains(jwt), "the token is not printed: {stderr}");
}

#[test]
fn connect_explains_a_refused_upgrade() {
    let server = Server::start(&[]);
    let out = Server::command()
        .args(["connect", &format!("ws://{}/ws?token=bad", server.addr())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("UNAUTHENTICATED"),
        "{stderr}"
    );
}
