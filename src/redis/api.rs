//! The Server API's transport over Redis (section 12, `docs/redis.md`):
//! the bound on what its channels carry, and the list of live nodes (a
//! heartbeat within the node timeout) whose replies the API waits for.
//! The payloads are bytes here; what they mean is the room router's
//! business.

use crate::config::is_cluster_name;
use crate::redis::resp::{self, Reply};

/// The largest payload cast or taken on an API channel. A bigger one is
/// dropped and logged: whoever waits for it sees a node that did not
/// answer, rather than Redis and every node holding it.
pub const MAX_API_PAYLOAD: usize = 16 * 1024 * 1024;

/// The most live nodes listed, this node included.
pub const MAX_NODES: usize = 10_000;

/// Appends the `ZRANGEBYSCORE` of the heartbeat set `set` (node -> unix
/// ms) that lists the nodes heard from at `since_ms` or later, at most
/// `MAX_NODES`.
pub fn live_nodes(out: &mut Vec<u8>, set: &str, since_ms: u64) {
    let since = since_ms.to_string();
    let limit = MAX_NODES.to_string();
    resp::write_command(
        out,
        &["ZRANGEBYSCORE", set, &since, "+inf", "LIMIT", "0", &limit],
    );
}

/// Reads the reply of `live_nodes`: the members that are node ids (1-64
/// name characters; anything else in the set is skipped), with
/// `this_node` in, sorted and each once, at most `MAX_NODES`. `None` when
/// the reply is not a list of at most `MAX_NODES` strings.
pub fn live_nodes_reply(reply: &Reply, this_node: &str) -> Option<Vec<Box<str>>> {
    let Reply::Array(items) = reply else {
        return None;
    };
    if items.len() > MAX_NODES {
        return None;
    }
    let mut nodes: Vec<Box<str>> = Vec::with_capacity(items.len() + 1);
    for item in items {
        let name = std::str::from_utf8(item.as_bytes()?).ok();
        nodes.extend(name.filter(|n| is_cluster_name(n)).map(Box::from));
    }
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.binary_search_by(|n| (**n).cmp(this_node)).is_err() {
        // The heartbeat is written just before the list is read, so this
        // node is missing only from a list cut at the bound.
        nodes.truncate(MAX_NODES - 1);
        let at = nodes.partition_point(|n| &**n < this_node);
        nodes.insert(at, this_node.into());
    }
    Some(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Reply {
        Reply::Array(
            names
                .iter()
                .map(|n| Reply::Bulk(n.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn listed(nodes: &[Box<str>]) -> Vec<&str> {
        nodes.iter().map(|n| &**n).collect()
    }

    #[test]
    fn the_query_lists_heartbeats_since_the_timeout() {
        let mut out = Vec::new();
        live_nodes(&mut out, "rc:nodes", 1_000);
        let (reply, _) = resp::parse(&out).unwrap().unwrap();
        let Reply::Array(args) = reply else { panic!() };
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes().unwrap()).collect();
        let expected: [&[u8]; 7] = [
            b"ZRANGEBYSCORE",
            b"rc:nodes",
            b"1000",
            b"+inf",
            b"LIMIT",
            b"0",
            b"10000",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn the_live_nodes_are_sorted_once_each_with_this_node_in() {
        let nodes = live_nodes_reply(&names(&["n2", "n1", "n2"]), "n1").unwrap();
        assert_eq!(listed(&nodes), ["n1", "n2"]);
        let nodes = live_nodes_reply(&names(&[]), "me").unwrap();
        assert_eq!(listed(&nodes), ["me"]);
    }

    #[test]
    fn what_is_not_a_node_id_is_skipped() {
        let long = "n".repeat(65);
        let reply = names(&["ok", "", "a b", "a:b", &long, "x.y-z_1"]);
        let nodes = live_nodes_reply(&reply, "me").unwrap();
        assert_eq!(listed(&nodes), ["me", "ok", "x.y-z_1"]);
        let not_utf8 = Reply::Array(vec![Reply::Bulk(vec![0xff, 0xfe])]);
        assert_eq!(listed(&live_nodes_reply(&not_utf8, "me").unwrap()), ["me"]);
    }

    #[test]
    fn a_reply_out_of_shape_or_over_the_bound_is_refused() {
        assert_eq!(live_nodes_reply(&Reply::Integer(1), "me"), None);
        let nested = Reply::Array(vec![Reply::Array(Vec::new())]);
        assert_eq!(live_nodes_reply(&nested, "me"), None);
        let many: Vec<String> = (0..=MAX_NODES).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(live_nodes_reply(&names(&many), "me"), None);
    }

    #[test]
    fn a_full_list_keeps_this_node() {
        let full: Vec<String> = (0..MAX_NODES).map(|i| format!("n{i:05}")).collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        for me in ["a", "z", "n00005x"] {
            let nodes = live_nodes_reply(&names(&full), me).unwrap();
            assert_eq!(nodes.len(), MAX_NODES);
            assert!(nodes.iter().any(|n| &**n == me), "{me}");
            assert!(nodes.is_sorted());
        }
    }
}
