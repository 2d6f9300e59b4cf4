//! The API's messages between the nodes of a cluster, carried over Redis
//! channels by the bridge (`docs/redis.md`): a node called with a command
//! for every node publishes it to all of them, and each answers the
//! caller's node with its part.
//!
//! - `{"kind":"command","op","from","method","params"}` on
//!   `<prefix>:api`, to every node;
//! - `{"kind":"answer","op","from","result"}` on `<prefix>:api:<from>`,
//!   to the node that asked, `result` being the part as the command's
//!   result (`Part::write_result`).
//!
//! `op` names the call at the node that asked (its shard in the high
//! bits, `op_shard`). Everything read here came from the network: names
//! are bounded, and anything malformed is ignored (the caller counts a
//! node that never answers as missing).

use super::command::{self, Method, NodeCommand};
use super::part::Part;
use crate::codes::limits::MAX_API_CLUSTER_MESSAGE;
use crate::json::ObjectWriter;
use crate::proto::envelope::Parser;
use crate::proto::scan;

/// Bits of `op` below the shard's index.
const OP_SHARD_SHIFT: u32 = 48;

/// Longest node id read from a peer (`--node-id` is at most 64 bytes).
const MAX_NODE_LEN: usize = 64;

/// The `op` of call `id` coordinated by `shard`.
pub fn op(shard: usize, id: u64) -> u64 {
    ((shard as u64) << OP_SHARD_SHIFT) | (id & ((1 << OP_SHARD_SHIFT) - 1))
}

/// The shard that coordinates `op`.
pub fn op_shard(op: u64) -> usize {
    (op >> OP_SHARD_SHIFT) as usize
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMessage {
    /// Carry `command` out on this node and answer `from`.
    Command {
        op: u64,
        from: String,
        command: NodeCommand,
    },
    /// Node `from`'s part of call `op`, as its result text.
    Answer {
        op: u64,
        from: String,
        result: Vec<u8>,
    },
}

/// The message asking every node to carry out `command`.
pub fn write_command(op: u64, from: &str, command: &NodeCommand) -> Vec<u8> {
    let mut params = Vec::with_capacity(128);
    command.write_params(&mut params);
    let mut out = Vec::with_capacity(96 + params.len());
    let mut w = ObjectWriter::new(&mut out);
    w.str("kind", "command");
    w.u64("op", op);
    w.str("from", from);
    w.str("method", command.method().name());
    w.raw("params", &params);
    w.close();
    out
}

/// This node's (`from`) answer to call `op`.
pub fn write_answer(op: u64, from: &str, command: &NodeCommand, part: &Part) -> Vec<u8> {
    let mut result = Vec::with_capacity(128);
    part.write_result(command, &[], &mut result);
    let mut out = Vec::with_capacity(64 + result.len());
    let mut w = ObjectWriter::new(&mut out);
    w.str("kind", "answer");
    w.u64("op", op);
    w.str("from", from);
    w.raw("result", &result);
    w.close();
    out
}

/// Reads a message from another node; `None` for anything malformed.
pub fn read(payload: &mut [u8], parser: &mut Parser) -> Option<NodeMessage> {
    if payload.len() > MAX_API_CLUSTER_MESSAGE {
        return None;
    }
    // Taken before the in-place parse rewrites escaped strings.
    let params =
        scan::field_range(payload, "params").and_then(|r| payload.get(r).map(<[u8]>::to_vec));
    let result =
        scan::field_range(payload, "result").and_then(|r| payload.get(r).map(<[u8]>::to_vec));
    let (kind, op, from, method) = parser.with_json(payload, |value| {
        let object = value?.as_object()?;
        let text = |key: &str| {
            use simd_json::prelude::*;
            object.get(key)?.into_string().map(str::to_owned)
        };
        let op = {
            use simd_json::prelude::*;
            object.get("op")?.as_u64()?
        };
        let from = text("from").filter(|f| (1..=MAX_NODE_LEN).contains(&f.len()))?;
        Some((text("kind")?, op, from, text("method")))
    })?;
    match kind.as_str() {
        "command" => {
            let method = Method::named(method.as_deref()?)?;
            match command::parse_command(method, &mut params?, parser).ok()? {
                command::Command::Node(command) => Some(NodeMessage::Command { op, from, command }),
                _ => None,
            }
        }
        "answer" => Some(NodeMessage::Answer {
            op,
            from,
            result: result?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_carry_their_shard() {
        let op = op(3, 77);
        assert_eq!(op_shard(op), 3);
        assert_eq!(op & 0xffff, 77);
    }

    #[test]
    fn commands_and_answers_read_back() {
        let mut parser = Parser::default();
        let command = NodeCommand::Subscribe {
            user: "u\"1".into(),
            room: "lobby".into(),
            conn_id: Some("n:1-0-2".into()),
        };
        let mut text = write_command(op(1, 5), "node-a", &command);
        assert_eq!(
            read(&mut text, &mut parser),
            Some(NodeMessage::Command {
                op: op(1, 5),
                from: "node-a".to_owned(),
                command
            })
        );
        let info = NodeCommand::Info;
        let mut text = write_answer(9, "node-b", &info, &Part::Nodes(Vec::new()));
        let Some(NodeMessage::Answer {
            op,
            from,
            mut result,
        }) = read(&mut text, &mut parser)
        else {
            panic!("an answer")
        };
        assert_eq!((op, from.as_str()), (9, "node-b"));
        assert_eq!(
            Part::read_result(&info, &mut result, &mut parser),
            Some(Part::Nodes(Vec::new()))
        );
    }

    #[test]
    fn malformed_messages_are_ignored() {
        let mut parser = Parser::default();
        for bad in [
            &b""[..],
            b"[]",
            b"{\"kind\":\"command\",\"op\":1,\"from\":\"a\",\"method\":\"publish\",\"params\":{}}",
            b"{\"kind\":\"command\",\"op\":1,\"from\":\"a\",\"method\":\"nope\",\"params\":{}}",
            b"{\"kind\":\"command\",\"op\":-1,\"from\":\"a\",\"method\":\"info\",\"params\":{}}",
            b"{\"kind\":\"answer\",\"op\":1,\"from\":\"\",\"result\":{}}",
            b"{\"kind\":\"other\",\"op\":1,\"from\":\"a\"}",
        ] {
            assert_eq!(read(&mut bad.to_vec(), &mut parser), None, "{bad:?}");
        }
    }
}
