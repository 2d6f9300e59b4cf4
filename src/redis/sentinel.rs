//! Redis Sentinel, sans-IO: the commands a node sends a Sentinel, what its
//! replies and `+switch-master` messages mean, and what a server's `ROLE`
//! and a `READONLY` error say about the master a node is connected to.
//!
//! A Sentinel's replies are input like any other: a reply of the wrong
//! shape, a host that is not a name or a port out of range is refused
//! (`SentinelError::Malformed`), never trusted. The watcher that talks to
//! the Sentinels is `reactor::bridge::sentinel`.

use std::fmt;

use super::resp::{self, Reply};

/// The Sentinel channel that announces a failover's outcome:
/// `<master> <old-ip> <old-port> <new-ip> <new-port>`.
pub const SWITCH_MASTER: &str = "+switch-master";

/// The longest host a Sentinel may name (a DNS name's bound).
const MAX_HOST: usize = 255;

/// Where a Sentinel says the master is: a node address, as a Redis
/// Cluster's slot map names one.
pub type MasterAddr = crate::redis::slots::Address;

/// Why a Sentinel's answer names no master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelError {
    /// The Sentinel monitors no master of that name (a nil reply).
    UnknownMaster,
    /// The Sentinel answered with an error.
    Refused(String),
    /// A reply of the wrong shape, or an address that is not one.
    Malformed,
}

impl fmt::Display for SentinelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMaster => f.write_str("the Sentinel knows no master of that name"),
            Self::Refused(e) => write!(f, "the Sentinel answered: {e}"),
            Self::Malformed => f.write_str("the Sentinel's reply is not a master's address"),
        }
    }
}

impl std::error::Error for SentinelError {}

/// What `ROLE` says a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A replica (`slave`): it refuses writes with `READONLY`.
    Replica,
    /// A Sentinel, or a reply of an unknown shape.
    Other,
}

/// Writes `SENTINEL get-master-addr-by-name <master>`.
pub fn ask_master(out: &mut Vec<u8>, master: &str) {
    resp::write_command(out, &["SENTINEL", "get-master-addr-by-name", master]);
}

/// Writes `SUBSCRIBE +switch-master`.
pub fn subscribe(out: &mut Vec<u8>) {
    resp::write_command(out, &["SUBSCRIBE", SWITCH_MASTER]);
}

/// The master in a reply to `ask_master`: `[host, port]`.
pub fn master_reply(reply: &Reply) -> Result<MasterAddr, SentinelError> {
    match reply {
        Reply::Nil => Err(SentinelError::UnknownMaster),
        Reply::Error(e) => Err(SentinelError::Refused(e.clone())),
        Reply::Array(items) => match items.as_slice() {
            [Reply::Bulk(host), Reply::Bulk(port)] => address(host, port),
            _ => Err(SentinelError::Malformed),
        },
        _ => Err(SentinelError::Malformed),
    }
}

/// The new address of `master` in a `+switch-master` channel message
/// (`["message", "+switch-master", payload]`, as a RESP2 array or a
/// RESP3 push); `None` for anything else, another master's switch
/// included.
pub fn switched(message: &Reply, master: &str) -> Option<MasterAddr> {
    let (Reply::Array(items) | Reply::Push(items)) = message else {
        return None;
    };
    let [
        Reply::Bulk(kind),
        Reply::Bulk(channel),
        Reply::Bulk(payload),
    ] = items.as_slice()
    else {
        return None;
    };
    if kind != b"message" || channel != SWITCH_MASTER.as_bytes() {
        return None;
    }
    let payload = std::str::from_utf8(payload).ok()?;
    let words: Vec<&str> = payload.split(' ').collect();
    match words.as_slice() {
        [name, _, _, host, port] if *name == master => {
            address(host.as_bytes(), port.as_bytes()).ok()
        }
        _ => None,
    }
}

/// What a reply to `ROLE` says: its first element is `master`, `slave`
/// or `sentinel`.
pub fn role(reply: &Reply) -> Role {
    let Reply::Array(items) = reply else {
        return Role::Other;
    };
    match items.first() {
        Some(Reply::Bulk(role)) if role == b"master" => Role::Master,
        Some(Reply::Bulk(role)) if role == b"slave" => Role::Replica,
        _ => Role::Other,
    }
}

/// Whether `reply` is a replica's refusal of a write: the server this
/// node took for the master has been demoted.
pub fn is_readonly(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("READONLY"))
}

fn address(host: &[u8], port: &[u8]) -> Result<MasterAddr, SentinelError> {
    let host = std::str::from_utf8(host).map_err(|_| SentinelError::Malformed)?;
    let valid_host = !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_%".contains(&b));
    let port = std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0);
    match (valid_host, port) {
        (true, Some(port)) => Ok(MasterAddr {
            host: host.to_owned(),
            port,
        }),
        _ => Err(SentinelError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn a_master_reply_is_a_host_and_a_port() {
        let reply = Reply::Array(vec![bulk("10.0.0.7"), bulk("6380")]);
        let addr = master_reply(&reply).unwrap();
        assert_eq!(addr.to_string(), "10.0.0.7:6380");
        let v6 = Reply::Array(vec![bulk("::1"), bulk("6379")]);
        assert_eq!(master_reply(&v6).unwrap().to_string(), "[::1]:6379");
        assert_eq!(master_reply(&Reply::Nil), Err(SentinelError::UnknownMaster));
        assert_eq!(
            master_reply(&Reply::Error("ERR nope".into())),
            Err(SentinelError::Refused("ERR nope".into()))
        );
    }

    #[test]
    fn a_master_reply_out_of_shape_is_refused() {
        for reply in [
            Reply::Integer(1),
            Reply::Array(vec![]),
            Reply::Array(vec![bulk("h")]),
            Reply::Array(vec![bulk("h"), bulk("6379"), bulk("x")]),
            Reply::Array(vec![bulk("h"), Reply::Integer(6379)]),
            Reply::Array(vec![bulk(""), bulk("6379")]),
            Reply::Array(vec![bulk("h h"), bulk("6379")]),
            Reply::Array(vec![bulk("h\r\n"), bulk("6379")]),
            Reply::Array(vec![bulk(&"h".repeat(256)), bulk("6379")]),
            Reply::Array(vec![bulk("h"), bulk("0")]),
            Reply::Array(vec![bulk("h"), bulk("65536")]),
            Reply::Array(vec![bulk("h"), bulk("-1")]),
            Reply::Array(vec![Reply::Bulk(vec![0xff]), bulk("1")]),
        ] {
            assert_eq!(
                master_reply(&reply),
                Err(SentinelError::Malformed),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_switch_names_the_new_master_of_that_name_only() {
        let message =
            |payload: &str| Reply::Array(vec![bulk("message"), bulk(SWITCH_MASTER), bulk(payload)]);
        let new = switched(&message("cache 127.0.0.1 7000 127.0.0.1 7001"), "cache");
        assert_eq!(new.unwrap().to_string(), "127.0.0.1:7001");
        let push = Reply::Push(vec![
            bulk("message"),
            bulk(SWITCH_MASTER),
            bulk("cache 10.0.0.1 1 10.0.0.2 2"),
        ]);
        assert_eq!(switched(&push, "cache").unwrap().to_string(), "10.0.0.2:2");
        for other in [
            message("other 127.0.0.1 7000 127.0.0.1 7001"),
            message("cache 127.0.0.1 7000 127.0.0.1"),
            message("cache 127.0.0.1 7000 127.0.0.1 x"),
            message(""),
            Reply::Array(vec![
                bulk("subscribe"),
                bulk(SWITCH_MASTER),
                Reply::Integer(1),
            ]),
            Reply::Array(vec![bulk("message"), bulk("+sdown"), bulk("cache a 1 b 2")]),
            Reply::Integer(3),
        ] {
            assert_eq!(switched(&other, "cache"), None, "{other:?}");
        }
    }

    #[test]
    fn role_and_readonly_tell_a_replica() {
        let master = Reply::Array(vec![
            bulk("master"),
            Reply::Integer(0),
            Reply::Array(vec![]),
        ]);
        assert_eq!(role(&master), Role::Master);
        let replica = Reply::Array(vec![bulk("slave"), bulk("127.0.0.1"), Reply::Integer(7000)]);
        assert_eq!(role(&replica), Role::Replica);
        assert_eq!(role(&Reply::Array(vec![bulk("sentinel")])), Role::Other);
        assert_eq!(role(&Reply::Status("master".into())), Role::Other);
        assert_eq!(role(&Reply::Array(vec![])), Role::Other);
        let readonly = Reply::Error("READONLY You can't write against a read only replica.".into());
        assert!(is_readonly(&readonly));
        assert!(!is_readonly(&Reply::Error("ERR other".into())));
        assert!(!is_readonly(&bulk("READONLY")));
    }
}
