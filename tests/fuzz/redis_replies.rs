//! `redis_replies`: what the bridge decodes from Redis. The input is read
//! both as a RESP reply, decoded as the answer to every command the bridge
//! sends (`history_reply`, `join_reply`, `sequenced`, `presence_reply`,
//! `count_reply`), and as a channel payload (`channel_message`,
//! `Direct::parse`, `Origin::parse`).
//!
//! Oracles: nothing panics; a decoded history holds no more messages than
//! its `seq` allows nor than `MAX_HISTORY`, and its first `seq` is
//! computable; every number is at most `MAX_COUNT`; an epoch is a name;
//! a presence lists no more users than it counts nor than
//! `MAX_PRESENCE_USERS`; a decoded reply written back as a reply decodes
//! to the same value; a decoded payload written back is the input, byte
//! for byte (the writers are the server's own, where it has them).

use roomcast::codes::limits::MAX_PRESENCE_USERS;
use roomcast::codes::limits::{MAX_EPOCH_LEN, MAX_HISTORY, MAX_SUB_LEN};
use roomcast::redis::layout::is_name;
use roomcast::redis::resp::{Reply, parse};
use roomcast::redis::{
    self, Direct, History, MAX_COUNT, Origin, PRESENCE_EPOCH, Presence, Sequenced, VOLATILE_EPOCH,
};

use crate::engine::{Rng, Target};
use crate::resp::write;

pub const TARGET: Target = Target {
    name: "redis_replies",
    check,
    generate,
    dictionary: &[
        b"\r\n",
        b"*4\r\n",
        b"*5\r\n",
        b"*2\r\n",
        b"*3\r\n",
        b":-1\r\n",
        b":0\r\n",
        b":1\r\n",
        b":9007199254740991\r\n",
        b":9007199254740992\r\n",
        b"$-1\r\n",
        b"_\r\n",
        b" - ",
        b"- 0 ",
        b"/-",
        b"/0.1.2",
        b"9007199254740992",
        b"18446744073709551616",
        b"+1",
        b"01",
    ],
    max_len: 64 * 1024,
};

fn check(input: &[u8]) {
    if let Ok(Some((reply, _))) = parse(input) {
        check_reply(&reply);
    }
    check_payload(input);
}

fn check_reply(reply: &Reply) {
    if let Some(history) = redis::history_reply(reply) {
        check_history(&history);
        assert_eq!(
            redis::history_reply(&history_as_reply(&history, None)),
            Some(history),
            "a history written back"
        );
    }
    if let Some((history, members)) = redis::join_reply(reply) {
        assert!(members <= MAX_COUNT, "members {members}");
        assert_eq!(redis::history_reply(reply).as_ref(), Some(&history));
        let again = history_as_reply(&history, Some(members));
        assert_eq!(redis::join_reply(&again), Some((history, members)));
    }
    if let Some(sequenced) = redis::sequenced(reply) {
        check_sequenced(&sequenced);
    }
    if let Some(presence) = redis::presence_reply(reply) {
        check_presence(&presence);
    }
    if let Some(count) = redis::count_reply(reply) {
        assert!(count <= MAX_COUNT, "count {count}");
    }
}

fn check_epoch(epoch: &str) {
    assert!(is_name(epoch, MAX_EPOCH_LEN), "epoch {epoch:?}");
}

fn check_history(history: &History) {
    let held = history.messages.len();
    assert!(history.seq <= MAX_COUNT, "seq {}", history.seq);
    assert!(held <= MAX_HISTORY, "{held} messages");
    assert!(
        held as u64 <= history.seq,
        "{held} messages up to seq {}",
        history.seq
    );
    check_epoch(&history.epoch);
    let first = history
        .first_seq()
        .expect("the first seq of a decoded history");
    assert_eq!(first + held as u64, history.seq + 1, "first seq");
}

/// `roomcast_history`'s reply (and `roomcast_join`'s, with `members`).
fn history_as_reply(history: &History, members: Option<u64>) -> Reply {
    let recovered = history.recovered.map_or(-1, i64::from);
    let messages = history.messages.iter().cloned().map(Reply::Bulk).collect();
    let mut items = vec![
        Reply::Bulk(history.epoch.clone().into_bytes()),
        integer(history.seq),
        Reply::Integer(recovered),
        Reply::Array(messages),
    ];
    items.extend(members.map(integer));
    Reply::Array(items)
}

fn integer(n: u64) -> Reply {
    Reply::Integer(i64::try_from(n).expect("a number within MAX_COUNT"))
}

fn check_sequenced(sequenced: &Sequenced) {
    assert!(
        (1..=MAX_COUNT).contains(&sequenced.seq),
        "seq {}",
        sequenced.seq
    );
    check_epoch(&sequenced.epoch);
    let again = Reply::Array(vec![
        integer(sequenced.seq),
        Reply::Bulk(sequenced.epoch.clone().into_bytes()),
    ]);
    assert_eq!(redis::sequenced(&again).as_ref(), Some(sequenced));
}

fn check_presence(presence: &Presence) {
    let listed = presence.listed.len();
    assert!(presence.users <= MAX_COUNT && presence.connections <= MAX_COUNT);
    assert!(listed <= MAX_PRESENCE_USERS, "{listed} listed");
    assert!(
        listed as u64 <= presence.users,
        "{listed} listed of {}",
        presence.users
    );
    for user in &presence.listed {
        assert!(!user.user.is_empty() && user.user.len() <= MAX_SUB_LEN);
        assert!(user.connections <= MAX_COUNT);
    }
    let users = presence.listed.iter().flat_map(|u| {
        let name = u
            .name
            .clone()
            .map_or(Reply::Nil, |n| Reply::Bulk(n.into_bytes()));
        [
            Reply::Bulk(u.user.clone().into_bytes()),
            name,
            integer(u.connections),
        ]
    });
    let again = Reply::Array(vec![
        integer(presence.users),
        integer(presence.connections),
        Reply::Array(users.collect()),
    ]);
    assert_eq!(redis::presence_reply(&again).as_ref(), Some(presence));
}

fn check_payload(input: &[u8]) {
    if let Some(message) = redis::channel_message(input) {
        assert!(message.seq <= MAX_COUNT, "seq {}", message.seq);
        if message.epoch == PRESENCE_EPOCH || message.epoch == VOLATILE_EPOCH {
            assert_eq!(message.seq, 0, "a presence or volatile event has no seq");
        } else {
            assert!(message.seq > 0, "a room event's seq");
            check_epoch(message.epoch);
        }
        let head = format!("{} {} {} ", message.epoch, message.seq, message.origin);
        let mut again = head.into_bytes();
        again.extend_from_slice(message.text);
        assert_eq!(again, input, "a channel message written back");
        check_origin(message.origin);
    }
    if let Some(direct) = Direct::parse(input) {
        assert!(
            direct
                .to
                .is_none_or(|to| !to.is_empty() && to.len() <= MAX_SUB_LEN)
        );
        assert_eq!(direct.write(), input, "a direct message written back");
        check_origin(direct.origin);
    }
    if let Ok(text) = std::str::from_utf8(input) {
        check_origin(text);
    }
}

fn check_origin(text: &str) {
    let Some(origin) = Origin::parse(text) else {
        return;
    };
    assert!(origin.read_micros <= MAX_COUNT);
    if let Some(p) = origin.exclude {
        assert!(p.shard as u64 <= MAX_COUNT && p.key as u64 <= MAX_COUNT && p.id <= MAX_COUNT);
    }
    assert_eq!(origin.write(), text, "an origin written back");
}

/// A reply of one of the shapes the bridge reads, or a channel payload,
/// often near a bound and sometimes with one field broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let payload = match rng.below(7) {
        0 => history(rng, false),
        1 => history(rng, true),
        2 => Reply::Array(vec![number(rng), epoch_reply(rng)]),
        3 => presence(rng),
        4 => return channel_payload(rng),
        5 => return direct_payload(rng),
        _ => return origin_text(rng).into_bytes(),
    };
    let mut out = Vec::new();
    write(&payload, &mut out).expect("generated replies have no CR in a status");
    if rng.one_in(4) {
        let at = rng.below(out.len());
        out[at] = rng.choose(b"9-0*:$\r");
    }
    out
}

/// Numbers at the bounds a reply is checked against.
const NUMBERS: &[i64] = &[
    -2,
    -1,
    0,
    1,
    2,
    3,
    5,
    1000,
    1001,
    10_000,
    10_001,
    (1 << 53) - 1,
    1 << 53,
    i64::MAX,
    i64::MIN,
];

fn small(rng: &mut Rng) -> i64 {
    rng.choose(NUMBERS).clamp(-2, 12)
}

fn number(rng: &mut Rng) -> Reply {
    let n = if rng.one_in(2) {
        small(rng)
    } else {
        rng.choose(NUMBERS)
    };
    if rng.one_in(8) {
        Reply::Bulk(n.to_string().into_bytes())
    } else {
        Reply::Integer(n)
    }
}

fn epoch_text(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => "-".into(),
        2 => "a b".into(),
        3 => "x".repeat(MAX_EPOCH_LEN + rng.below(2)),
        4 => "r1733580000123456".into(),
        _ => format!("node-{}-{:x}", rng.below(3), rng.below(300)),
    }
}

fn epoch_reply(rng: &mut Rng) -> Reply {
    let text = epoch_text(rng).into_bytes();
    if rng.one_in(10) {
        Reply::Status(String::from_utf8(text).unwrap_or_default())
    } else {
        Reply::Bulk(text)
    }
}

/// `{epoch, seq, recovered, {messages}}` (and members for a join), the
/// message count often at or just past what `seq` allows.
fn history(rng: &mut Rng, join: bool) -> Reply {
    let seq = small(rng).max(0);
    let held = match rng.below(4) {
        0 => seq + 1,
        1 => rng.below(4) as i64,
        _ => seq,
    };
    let held = usize::try_from(held).unwrap_or(0);
    let held = if rng.one_in(40) {
        MAX_HISTORY + rng.below(2)
    } else {
        held
    };
    let seq = if held > 12 {
        held as i64 - rng.below(2) as i64
    } else {
        seq
    };
    let seq = if rng.one_in(6) {
        rng.choose(NUMBERS)
    } else {
        seq
    };
    let messages = (0..held).map(|i| Reply::Bulk(format!("{{\"seq\":{i}}}").into_bytes()));
    let mut items = vec![
        epoch_reply(rng),
        Reply::Integer(seq),
        Reply::Integer(rng.choose(&[-1, 0, 1, 2, -2])),
        Reply::Array(messages.collect()),
    ];
    if join {
        items.push(number(rng));
    }
    Reply::Array(items)
}

/// `{users, connections, {user, name, connections}...}`.
fn presence(rng: &mut Rng) -> Reply {
    let listed = if rng.one_in(30) {
        MAX_PRESENCE_USERS + rng.below(2)
    } else {
        rng.below(5)
    };
    let mut users = Vec::new();
    for i in 0..listed {
        let user = match rng.below(10) {
            0 => String::new(),
            1 => "u".repeat(MAX_SUB_LEN + 1),
            _ => format!("user{i}"),
        };
        users.push(Reply::Bulk(user.into_bytes()));
        users.push(if rng.one_in(2) {
            Reply::Nil
        } else {
            Reply::Bulk(b"Name".to_vec())
        });
        users.push(number(rng));
    }
    if rng.one_in(10) {
        users.pop();
    }
    let counted = if rng.one_in(2) {
        Reply::Integer(listed as i64 - rng.below(2) as i64)
    } else {
        number(rng)
    };
    Reply::Array(vec![counted, number(rng), Reply::Array(users)])
}

/// A decimal as roomcast writes it, or one it never writes.
fn decimal(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "+1".into(),
        1 => "07".into(),
        2 => "18446744073709551616".into(),
        3 => String::new(),
        _ => rng.choose(NUMBERS).unsigned_abs().to_string(),
    }
}

fn origin_text(rng: &mut Rng) -> String {
    let node = rng.choose(&["n1", "", "n.1", "a b"]);
    let conn = if rng.one_in(2) {
        "-".to_owned()
    } else {
        format!("{}.{}.{}", decimal(rng), decimal(rng), decimal(rng))
    };
    format!("{node}/{}/{conn}", decimal(rng))
}

/// `<epoch> <seq> <origin> <text>`, presence as `- 0`.
fn channel_payload(rng: &mut Rng) -> Vec<u8> {
    let epoch = if rng.one_in(3) {
        PRESENCE_EPOCH.to_owned()
    } else {
        epoch_text(rng)
    };
    let origin = if rng.one_in(3) {
        "-".to_owned()
    } else {
        origin_text(rng)
    };
    format!("{epoch} {} {origin} {{\"event\":\"x\"}}", decimal(rng)).into_bytes()
}

/// `<origin> <length of to> <to><text>`, the length sometimes wrong.
fn direct_payload(rng: &mut Rng) -> Vec<u8> {
    let to = match rng.below(4) {
        0 => String::new(),
        1 => "u".repeat(MAX_SUB_LEN + rng.below(2)),
        _ => "bob".into(),
    };
    let len = match rng.below(4) {
        0 => decimal(rng),
        _ => to.len().to_string(),
    };
    format!("{} {len} {to}{{\"event\":\"x\"}}", origin_text(rng)).into_bytes()
}
