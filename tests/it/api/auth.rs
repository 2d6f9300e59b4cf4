//! Who may call the server API: API keys from flags and the environment,
//! admin tokens, and the 401/403 answered before anything else.

use crate::common;

use common::api::{API_KEY, Api, Cred, assert_api_error, member, request_bytes, result_of};
use common::rooms::{Claims, q};
use common::token::{alg_none_token, now, sign};
use common::{SECRET, Server, http_get, http_raw};

use super::server;

/// A 401 or 403 with the error body; a 401 also asks for a bearer token.
fn assert_refused(resp: &common::HttpResponse, status: u16, code: &str, what: &str) {
    assert_api_error(resp, status, code, what);
    if status == 401 {
        let challenge = resp.header("WWW-Authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }
}

#[test]
fn keys_from_flags_and_the_environment_are_merged() {
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET]);
    cmd.args(["--api-key", "flag-one", "--api-key", "flag-two"]);
    // Empty entries of the list are no key.
    cmd.env("ROOMCAST_API_KEY", ",env-one,,env-two,");
    let server = Server::spawn(cmd);
    for key in ["flag-one", "flag-two", "env-one", "env-two"] {
        let api = Api::with(server.addr(), Cred::Key(key.into()));
        result_of(&api.call("info", "{}"), key);
    }
    // Near misses: a prefix, an extension, another case, the whole list.
    for key in [
        "flag-on",
        "flag-one1",
        "FLAG-ONE",
        "env-one,env-two",
        "flag-onf",
        "",
    ] {
        let api = Api::with(server.addr(), Cred::Key(key.into()));
        assert_refused(&api.call("info", "{}"), 401, "UNAUTHENTICATED", key);
    }
}

#[test]
fn admin_tokens_are_accepted_and_every_other_token_refused() {
    let server = server(&["--jwt-secret", "rotated-secret-7a"]);
    let addr = server.addr();
    let call = |jwt: String| Api::with(addr, Cred::Bearer(jwt)).call("info", "{}");
    result_of(
        &call(Claims::new("ops").admin(true).token()),
        "an admin token",
    );
    let claims = Claims::new("ops").admin(true).json();
    let rotated = sign(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims,
        "rotated-secret-7a",
    );
    result_of(&call(rotated), "an admin token of the second secret");

    // `roomcast token --admin` mints one too.
    let out = Server::command()
        .args(["token", "--sub", "ops", "--admin", "--secret", SECRET])
        .output()
        .expect("roomcast token");
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    result_of(&call(minted), "roomcast token --admin");

    let forbidden = [
        ("no admin claim", Claims::new("u").token()),
        ("admin: false", Claims::new("u").admin(false).token()),
    ];
    for (what, jwt) in forbidden {
        assert_refused(&call(jwt), 403, "FORBIDDEN", what);
    }
    let expired = Claims::new("ops").admin(true).exp(now() - 60).token();
    assert_refused(
        &call(expired),
        401,
        "TOKEN_EXPIRED",
        "an expired admin token",
    );
    let early = format!(
        r#"{{"sub":"ops","admin":true,"exp":{},"nbf":{}}}"#,
        now() + 7200,
        now() + 3600
    );
    let early = common::mint(&early);
    assert_refused(
        &call(early),
        401,
        "TOKEN_EXPIRED",
        "an admin token not valid yet",
    );
    let unauthenticated = [
        (
            "another secret",
            sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, "other"),
        ),
        ("alg none", alg_none_token("ops")),
        ("not a JWT", "not-a-jwt".to_owned()),
        ("the API key as a bearer", API_KEY.to_owned()),
        (
            "admin as a string",
            common::mint(&claims.replace("true", r#""true""#)),
        ),
    ];
    for (what, jwt) in unauthenticated {
        assert_refused(&call(jwt), 401, "UNAUTHENTICATED", what);
    }
    // A token in the key's header is no key.
    let jwt = Claims::new("ops").admin(true).token();
    let resp = Api::with(addr, Cred::Key(jwt)).call("info", "{}");
    assert_refused(&resp, 401, "UNAUTHENTICATED", "a token as X-API-Key");
}

#[test]
fn authentication_is_answered_before_anything_else() {
    let server = server(&[]);
    let mut alice = member(server.addr(), "alice", &["lobby"]);
    let anyone = Api::with(server.addr(), Cred::None);
    let user = Api::with(server.addr(), Cred::Bearer(Claims::new("u").token()));
    let big = format!(
        r#"{{"room":"lobby","event":"t:x","data":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let cases = [
        (
            "publish",
            r#"{"room":"lobby","event":"t:x","data":1}"#.to_owned(),
        ),
        ("no_such_method", "{}".to_owned()),
        ("publish", "[1,2".to_owned()),
        ("publish", r#"{"room":5}"#.to_owned()),
        ("publish", big),
    ];
    for (method, body) in &cases {
        let what = format!("{method} {body:.40}");
        assert_refused(&anyone.call(method, body), 401, "UNAUTHENTICATED", &what);
        assert_refused(&user.call(method, body), 403, "FORBIDDEN", &what);
    }
    let wrong_key = Api::with(server.addr(), Cred::Key("wrong".into()));
    assert_refused(
        &wrong_key.call("no_such_method", "{}"),
        401,
        "UNAUTHENTICATED",
        "a wrong key",
    );
    Api::key(server.addr()).assert_next_is_marker(&mut alice, "lobby", 1, "refused calls");
}

#[test]
fn keys_and_tokens_appear_in_no_reply_log_or_metric() {
    let server = server(&["--log-level", "debug"]);
    let addr = server.addr();
    let admin = Claims::new("ops").admin(true).token();
    let wrong = "wrong-key-9d2e7b";
    let calls = [
        (Cred::Key(API_KEY.into()), "info"),
        (Cred::Key(API_KEY.into()), "no_such_method"),
        (Cred::Key(wrong.into()), "info"),
        (Cred::Bearer(admin.clone()), "info"),
        (Cred::Bearer(admin.clone()), "publish"),
    ];
    let mut seen = String::new();
    for (cred, method) in calls {
        let resp = Api::with(addr, cred).call(method, "{}");
        seen.push_str(&format!("{:?}\n", resp.headers));
        seen.push_str(&resp.body);
    }
    for path in ["/metrics", "/stats"] {
        seen.push_str(&http_get(addr, path).body);
    }
    // A request line is logged: the API's must show the path alone.
    let resp = http_raw(
        addr,
        &request_bytes(
            "POST",
            &format!("/api/info?key={API_KEY}"),
            &Cred::None,
            b"{}",
        ),
    );
    assert_eq!(resp.status, 401, "{resp:?}");
    server.wait_for_log(&["/api/"]);
    seen.push_str(&server.stderr());
    let signature = admin.rsplit('.').next().unwrap();
    for secret in [API_KEY, wrong, &admin, signature] {
        assert!(!seen.contains(secret), "{} leaked", q(&secret[..8]));
    }
}

#[test]
fn without_a_key_only_admin_tokens_open_the_api_and_an_empty_key_is_none() {
    let server = Server::start(&[]);
    for key in ["", "anything"] {
        let api = Api::with(server.addr(), Cred::Key(key.into()));
        assert_refused(&api.call("info", "{}"), 401, "UNAUTHENTICATED", key);
    }
    let admin = Api::with(server.addr(), Cred::admin("ops"));
    result_of(&admin.call("info", "{}"), "an admin token");

    // An empty --api-key either stops the start or opens nothing.
    let mut cmd = Server::command();
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET]);
    cmd.args(["--api-key", "", "--check-config"]);
    let out = cmd.output().expect("roomcast serve --check-config");
    if out.status.success() {
        let server = Server::start(&["--api-key", ""]);
        let api = Api::with(server.addr(), Cred::Key(String::new()));
        assert_refused(
            &api.call("info", "{}"),
            401,
            "UNAUTHENTICATED",
            "an empty key",
        );
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--api-key"), "{stderr}");
    }
}

#[test]
fn with_a_key_and_a_token_the_key_decides_alone() {
    let server = server(&[]);
    let both = |key: &str, jwt: &str| {
        let request = format!(
            "POST /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\
             Authorization: Bearer {jwt}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        http_raw(server.addr(), request.as_bytes())
    };
    let admin = Claims::new("ops").admin(true).token();
    let user = Claims::new("u").token();
    assert_refused(
        &both("wrong", &admin),
        401,
        "UNAUTHENTICATED",
        "a wrong key",
    );
    result_of(&both(API_KEY, &user), "the key with a plain token");
}
