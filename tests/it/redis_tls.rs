//! `rediss://` (`docs/protocol.md` section 15): nodes of a cluster reach a
//! real `redis-server` over TLS, checked against `--redis-ca`; a
//! certificate that does not check (another authority, another name) is
//! an engine outage with a log line that says why.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::pki::{Authority, temp_dir};
use common::redis::RedisServer;
use common::rooms::{Client, ack_error, array_at, ok_data, publisher, seq_of, u64_at};
use common::{Server, http_get, wait_until};

/// A node on `redis` over TLS, trusting `ca`.
fn tls_node(redis: &RedisServer, ca: &Path) -> Server {
    let mut cmd = Server::single_command();
    cmd.args(["--redis", &redis.tls_url(), "--history", "100"]);
    cmd.arg("--redis-ca").arg(ca);
    Server::spawn(cmd)
}

fn wait_for_health(server: &Server, status: u16) {
    wait_until(
        Duration::from_secs(10),
        &format!("/healthz answers {status}"),
        || http_get(server.addr(), "/healthz").status == status,
    );
}

#[test]
fn a_cluster_over_rediss_delivers_joins_and_keeps_history() {
    let dir = temp_dir("redis-tls");
    let ca = Authority::new(&dir, "ca");
    let redis = RedisServer::start_tls(&ca.issue(&dir, "redis", &["127.0.0.1"]), &ca.file);
    let (a, b) = (tls_node(&redis, &ca.file), tls_node(&redis, &ca.file));
    wait_for_health(&a, 200);
    wait_for_health(&b, 200);

    let mut alice = Client::user(a.addr(), "alice");
    alice.join("lobby");
    let mut bob = publisher(b.addr(), "bob");
    for i in 1..=3 {
        assert_eq!(bob.publish_ok("lobby", "chat:msg", &i.to_string()), i);
    }
    let seqs: Vec<u64> = (0..3)
        .map(|_| seq_of(&alice.recv_skip_presence()))
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    let mut late = Client::user(a.addr(), "late");
    let joined = late.join_with(r#"{"room":"lobby","history":2}"#);
    let history: Vec<u64> = array_at(ok_data(&joined), &["messages"])
        .iter()
        .map(|m| u64_at(m, &["seq"]))
        .collect();
    assert_eq!(history, [2, 3]);
    drop((a, b));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node whose Redis certificate does not check: unavailable, and saying
/// why in its log.
fn assert_refused_certificate(server: &Server, reason: &str) {
    let line = server.wait_for_log(&["WARN", "redis bridge: rediss://127.0.0.1:", reason]);
    assert!(line.contains("TLS: invalid peer certificate"), "{line}");
    wait_for_health(server, 503);
    // It stays so: the retries fail the same way, with backoff (full
    // jitter from 100 ms doubling: a handful of lines, not a flood).
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(http_get(server.addr(), "/healthz").status, 503);
    let mut feed = publisher(server.addr(), "feed");
    let refused = feed.publish("lobby", "chat:msg", "1");
    assert_eq!(ack_error(&refused), "UNAVAILABLE", "{refused:?}");
    let attempts = server
        .log_lines()
        .iter()
        .filter(|l| l.contains(reason))
        .count();
    assert!((1..=15).contains(&attempts), "{attempts} failures logged");
}

/// Redis with a certificate for `names` signed by one authority; the
/// node trusts that one, or another (`trust_other`).
fn refused_node(label: &str, names: &[&str], trust_other: bool, reason: &str) {
    let dir = temp_dir(label);
    let ca = Authority::new(&dir, "ca");
    let other = Authority::new(&dir, "other");
    let redis = RedisServer::start_tls(&ca.issue(&dir, "redis", names), &ca.file);
    let trusted = if trust_other { &other.file } else { &ca.file };
    let node = tls_node(&redis, trusted);
    assert_refused_certificate(&node, reason);
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_certificate_from_another_authority_is_an_outage_that_the_log_names() {
    refused_node("redis-tls-ca", &["127.0.0.1"], true, "UnknownIssuer");
}

#[test]
fn a_certificate_for_another_name_is_an_outage_that_the_log_names() {
    refused_node(
        "redis-tls-name",
        &["cache.example"],
        false,
        "certificate not valid for name",
    );
}

#[test]
fn a_redis_ca_that_cannot_be_used_is_a_configuration_error() {
    let dir = temp_dir("redis-tls-config");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    for (ca, says) in [
        (dir.join("missing.pem"), "missing.pem"),
        (empty, "no certificate in"),
    ] {
        let out = Server::command()
            .args(["serve", "--check-config", "--jwt-secret", "s"])
            .args(["--redis", "rediss://127.0.0.1:1"])
            .arg("--redis-ca")
            .arg(&ca)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--redis-ca") && stderr.contains(says),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_says_why_a_redis_certificate_does_not_check() {
    let dir = temp_dir("redis-tls-check");
    let ca = Authority::new(&dir, "ca");
    let other = Authority::new(&dir, "other");
    let redis = RedisServer::start_tls(&ca.issue(&dir, "redis", &["127.0.0.1"]), &ca.file);
    let check = |trusted: &Path| {
        let out = Server::command()
            .args(["serve", "--check-config", "--jwt-secret", "s"])
            .args(["--redis", &redis.tls_url()])
            .arg("--redis-ca")
            .arg(trusted)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "a warning, not a refusal");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let refused = check(&other.file);
    assert!(
        refused.contains("warning: redis: rediss://127.0.0.1:")
            && refused.contains("TLS: invalid peer certificate: UnknownIssuer"),
        "{refused}"
    );
    let trusted = check(&ca.file);
    assert!(!trusted.contains("warning: redis"), "{trusted}");
    std::fs::remove_dir_all(&dir).unwrap();
}
