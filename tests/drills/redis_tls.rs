//! TLS to Redis: the certificate rotated on the Redis side under load. The
//! nodes reach Redis over `rediss://`; Redis is given a new certificate
//! (same authority) and its clients are dropped; the nodes reconnect over
//! a handshake with the new one, and no acknowledged message is lost.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use roomcast::redis::resp::Reply;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::common::pki::{Authority, temp_dir};
use crate::common::redis::RedisServer;
use crate::common::{Server, http_get, metric, wait_until};
use crate::harness::{Drill, assert_no_secrets, ms, pick};
use crate::load::{Load, node};

/// The certificate Redis presents to a new TLS client now.
fn served_certificate(addr: SocketAddr, ca: &std::path::Path) -> CertificateDer<'static> {
    let config = roomcast::tls::client_config(Some(ca)).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut session = rustls::ClientConnection::new(config, name).unwrap();
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while session.is_handshaking() {
        session.complete_io(&mut socket).unwrap();
    }
    session.peer_certificates().unwrap()[0].clone().into_owned()
}

#[test]
#[ignore = "a drill: scripts/test.sh runs the drills (cargo test --test drills -- --ignored)"]
fn the_redis_certificate_rotates_under_load_and_the_nodes_reconnect_losing_nothing() {
    let count = pick(20, 200);
    let pause = pick(Duration::from_millis(5), Duration::from_millis(1));
    let drill = Drill::start(
        "redis-tls-rotation",
        &format!(
            "two nodes on one Redis over rediss:// (--redis-ca), {count} subscribers, a publisher; \
             Redis gets a new certificate (CONFIG SET) and drops its clients"
        ),
        "the nodes reconnect over the new certificate, /healthz is 200 again, every \
         acknowledged message reaches every subscriber once, in order",
    );
    let dir = temp_dir("drill-redis-tls");
    let ca = Authority::new(&dir, "ca");
    let first = ca.issue(&dir, "redis-1", &["127.0.0.1"]);
    let second = ca.issue(&dir, "redis-2", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(&first, &ca.file);
    let tls_addr = redis.tls_addr.unwrap();
    let trust = ["--redis-ca", ca.file.to_str().unwrap()];
    let nodes: Vec<Server> = (0..2).map(|_| node(&redis.tls_url(), 0, &trust)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let load = Load::start(&addrs, count, pause);
    thread::sleep(Duration::from_secs(1));

    let rotated = Instant::now();
    let mut admin = redis.connect();
    let set = admin.call(&[
        "CONFIG",
        "SET",
        "tls-cert-file",
        second.cert.to_str().unwrap(),
        "tls-key-file",
        second.key.to_str().unwrap(),
    ]);
    assert!(matches!(&set, Reply::Status(ok) if ok == "OK"), "{set:?}");
    assert_eq!(served_certificate(tls_addr, &ca.file), second.der);
    for kind in ["normal", "pubsub"] {
        admin.call(&["CLIENT", "KILL", "TYPE", kind]);
    }
    wait_until(Duration::from_secs(20), "both nodes reconnected", || {
        addrs.iter().all(|a| {
            metric(*a, "roomcast_redis_reconnects_total") >= 1.0
                && http_get(*a, "/healthz").status == 200
        })
    });
    drill.figure(
        "certificate rotated, nodes healthy again after",
        ms(rotated.elapsed()),
    );
    thread::sleep(Duration::from_millis(1500));
    load.finish(&drill);
    for node in &nodes {
        let said = node.stderr();
        assert!(!said.contains("TLS:"), "a TLS failure was logged:\n{said}");
        assert_no_secrets(node, &[], &[]);
    }
    drop(nodes);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
