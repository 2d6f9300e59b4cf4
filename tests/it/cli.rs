//! The command line around the server: `roomcast token`, the generated
//! secret, and the listening line; `roomcast api` in `cli::api`.

mod api;

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

/// Every `serve` setting with a value other than its default, as
/// (flag, environment variable, value). `--jwt-secret` is absent: it is
/// repeated on the command line and a comma list in `ROOMCAST_JWT_SECRET`.
/// `--demo` stays off because the in-process feed refuses TLS.
const RICH_SETTINGS: &[(&str, &str, &str)] = &[
    ("--bind", "ROOMCAST_BIND", "127.0.0.1:47123"),
    ("--metrics-bind", "ROOMCAST_METRICS_BIND", "127.0.0.1:47124"),
    ("--shards", "ROOMCAST_SHARDS", "3"),
    ("--jwt-leeway", "ROOMCAST_JWT_LEEWAY", "5s"),
    ("--max-message-size", "ROOMCAST_MAX_MESSAGE_SIZE", "128KiB"),
    ("--max-header-bytes", "ROOMCAST_MAX_HEADER_BYTES", "16KiB"),
    ("--max-write-buffer", "ROOMCAST_MAX_WRITE_BUFFER", "2MiB"),
    ("--ping-interval", "ROOMCAST_PING_INTERVAL", "30s"),
    ("--ping-timeout", "ROOMCAST_PING_TIMEOUT", "1500ms"),
    ("--max-connections", "ROOMCAST_MAX_CONNECTIONS", "500"),
    (
        "--max-connections-per-ip",
        "ROOMCAST_MAX_CONNECTIONS_PER_IP",
        "20",
    ),
    (
        "--allowed-origins",
        "ROOMCAST_ALLOWED_ORIGINS",
        "https://a.example,http://localhost:3000",
    ),
    ("--drain-timeout", "ROOMCAST_DRAIN_TIMEOUT", "3s"),
    ("--echo", "ROOMCAST_ECHO", "true"),
    ("--compression", "ROOMCAST_COMPRESSION", "on"),
    ("--accept", "ROOMCAST_ACCEPT", "handoff"),
    ("--log-level", "ROOMCAST_LOG_LEVEL", "debug"),
    ("--log-format", "ROOMCAST_LOG_FORMAT", "json"),
    ("--handshake-rate", "ROOMCAST_HANDSHAKE_RATE", "2.5"),
    // Ports nothing listens on: the probes are refused at once.
    (
        "--redis",
        "ROOMCAST_REDIS",
        "redis://:pw@127.0.0.1:1/3,redis://user:pw@localhost:2",
    ),
    ("--redis-prefix", "ROOMCAST_REDIS_PREFIX", "golden"),
    ("--node-id", "ROOMCAST_NODE_ID", "node-7"),
    ("--redis-replicas", "ROOMCAST_REDIS_REPLICAS", "1"),
    ("--redis-timeout", "ROOMCAST_REDIS_TIMEOUT", "2500ms"),
    ("--dashboard", "ROOMCAST_DASHBOARD", "false"),
    ("--publish-rate", "ROOMCAST_PUBLISH_RATE", "250"),
    ("--handshake-timeout", "ROOMCAST_HANDSHAKE_TIMEOUT", "7s"),
    ("--processes", "ROOMCAST_PROCESSES", "2"),
    (
        "--default-rooms",
        "ROOMCAST_DEFAULT_ROOMS",
        "lobby,prices:*",
    ),
    ("--members-publish", "ROOMCAST_MEMBERS_PUBLISH", "false"),
    ("--presence-rooms", "ROOMCAST_PRESENCE_ROOMS", "lobby"),
    (
        "--presence-event-limit",
        "ROOMCAST_PRESENCE_EVENT_LIMIT",
        "50",
    ),
    (
        "--max-rooms-per-connection",
        "ROOMCAST_MAX_ROOMS_PER_CONNECTION",
        "20",
    ),
    ("--max-room-members", "ROOMCAST_MAX_ROOM_MEMBERS", "300"),
    ("--history", "ROOMCAST_HISTORY", "25"),
    ("--history-ttl", "ROOMCAST_HISTORY_TTL", "2m"),
    ("--rate-limit", "ROOMCAST_RATE_LIMIT", "12.5"),
    ("--rate-burst", "ROOMCAST_RATE_BURST", "30"),
    ("--slow-consumer", "ROOMCAST_SLOW_CONSUMER", "conflate"),
    ("--api-key", "ROOMCAST_API_KEY", "an-api-key"),
    ("--api-timeout", "ROOMCAST_API_TIMEOUT", "750ms"),
    ("--hook-timeout", "ROOMCAST_HOOK_TIMEOUT", "2500ms"),
    ("--hook-secret", "ROOMCAST_HOOK_SECRET", "a-hook-secret"),
    ("--hook-concurrency", "ROOMCAST_HOOK_CONCURRENCY", "8"),
    (
        "--hook-ca",
        "ROOMCAST_HOOK_CA",
        "/etc/roomcast/hooks-ca.pem",
    ),
    (
        "--rpc-proxy",
        "ROOMCAST_RPC_PROXY",
        "http://backend.internal:8080/rpc?key=k3y",
    ),
    (
        "--publish-proxy",
        "ROOMCAST_PUBLISH_PROXY",
        "https://backend.internal/publish",
    ),
    (
        "--publish-proxy-rooms",
        "ROOMCAST_PUBLISH_PROXY_ROOMS",
        "chat:*,news",
    ),
    (
        "--subscribe-proxy",
        "ROOMCAST_SUBSCRIBE_PROXY",
        "http://[::1]:9000/join",
    ),
    (
        "--subscribe-proxy-rooms",
        "ROOMCAST_SUBSCRIBE_PROXY_ROOMS",
        "private:*",
    ),
    (
        "--connect-proxy",
        "ROOMCAST_CONNECT_PROXY",
        "http://127.0.0.1:9001/connect",
    ),
    // --webhook itself: the plain settings' test gives it.
    (
        "--webhook-events",
        "ROOMCAST_WEBHOOK_EVENTS",
        "room.occupied,room.message",
    ),
    ("--webhook-rooms", "ROOMCAST_WEBHOOK_ROOMS", "chat:*"),
    (
        "--webhook-vacate-delay",
        "ROOMCAST_WEBHOOK_VACATE_DELAY",
        "1500ms",
    ),
    ("--webhook-retry", "ROOMCAST_WEBHOOK_RETRY", "2m"),
    ("--webhook-queue", "ROOMCAST_WEBHOOK_QUEUE", "5000"),
];

/// A self-signed `localhost` certificate and its key, written to a
/// directory of this test's own.
fn tls_files() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("roomcast-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("golden.crt"), dir.join("golden.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

/// `--check-config`'s stdout for `cmd`, which must exit 0, with `dir`
/// written as `$DIR` so that the output does not depend on where it ran.
fn checked_config(mut cmd: std::process::Command, dir: Option<&std::path::Path>) -> String {
    let out = cmd.output().expect("run roomcast serve --check-config");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    match dir {
        Some(dir) => stdout.replace(dir.to_str().unwrap(), "$DIR"),
        None => stdout,
    }
}

/// Compares `actual` with the file `tests/golden/NAME`; with
/// `BLESS_GOLDEN=1` in the environment, rewrites the file instead.
fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BLESS_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BLESS_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "differs from {}", path.display());
}

#[test]
fn check_config_prints_every_setting_as_the_golden_file_from_flags_or_environment() {
    let (dir, cert, key) = tls_files();
    let mut by_flags = Server::command();
    by_flags.args(["serve", "--check-config"]);
    by_flags.args(["--jwt-secret", "golden-one", "--jwt-secret", "golden-two"]);
    for (flag, _, value) in RICH_SETTINGS {
        by_flags.arg(format!("{flag}={value}"));
    }
    by_flags
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        // Any certificate serves as an authority to trust.
        .arg("--redis-ca")
        .arg(&cert);
    let from_flags = checked_config(by_flags, Some(&dir));
    assert_golden("check-config-rich.json", &from_flags);

    let mut by_env = Server::command();
    by_env.args(["serve", "--check-config"]);
    by_env.env("ROOMCAST_JWT_SECRET", "golden-one,golden-two");
    for (_, env, value) in RICH_SETTINGS {
        by_env.env(env, value);
    }
    by_env
        .env("ROOMCAST_TLS_CERT", &cert)
        .env("ROOMCAST_TLS_KEY", &key)
        .env("ROOMCAST_REDIS_CA", &cert);
    assert_eq!(checked_config(by_env, Some(&dir)), from_flags);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_of_a_plain_server_is_the_golden_file() {
    // The settings that vary by machine are pinned; the rest are defaults
    // but for the demo, which only a server without TLS can run.
    let mut cmd = Server::command();
    cmd.args(["serve", "--check-config", "--jwt-secret", "plain"]);
    cmd.args(["--shards", "2", "--max-connections", "100", "--demo"]);
    cmd.args(["--webhook", "http://127.0.0.1:9002/events?key=k"]);
    let plain = checked_config(cmd, None);
    assert_golden("check-config-plain.json", &plain);
}

/// Each flag of `serve --help` with its environment variable, if it has
/// one, sorted: what the help offers, whatever its layout.
fn help_flags(help: &str) -> String {
    let mut flags: Vec<String> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if line.starts_with("--") || line.starts_with("-h, --") {
            let flag = line.trim_start_matches("-h, ");
            flags.push(flag.split([' ', '=']).next().unwrap().to_owned());
        } else if let Some(env) = line.strip_prefix("[env: ") {
            // A secret's variable is shown without its value: `[env: NAME]`.
            let name = env.split(['=', ']']).next().unwrap();
            let last = flags.last_mut().expect("an env line after its flag");
            last.push(' ');
            last.push_str(name);
        }
    }
    flags.sort();
    flags.iter().map(|f| format!("{f}\n")).collect()
}

#[test]
fn serve_help_offers_the_golden_flags_and_environment_variables() {
    let out = Server::command()
        .args(["serve", "--help"])
        .output()
        .expect("run roomcast serve --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert_golden("serve-flags.txt", &help_flags(&help));
}
