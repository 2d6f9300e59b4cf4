//! Slow consumers: a client that stops reading is closed with 4008 once its
//! pending output passes the bound, and nobody else on its shard notices.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tungstenite::Message;

use common::{RawWs, Server, connect_with_small_rcvbuf, opcode, recv, token, ws_connect};

const MESSAGE: usize = 16 * 1024;
/// Far more than the bound, the server's socket buffer (at most 4 MiB here)
/// and the slow client's receive buffer together.
const FLOOD_BYTES: usize = 12 * 1024 * 1024;

/// A binary message whose first 8 bytes are its sequence number.
fn numbered(seq: u64) -> Vec<u8> {
    let mut m = vec![(seq % 251) as u8; MESSAGE];
    m[..8].copy_from_slice(&seq.to_be_bytes());
    m
}

/// Echo round trips until `stop` is set, then 20 more; returns how many.
fn reading_client(ws: &mut common::Ws, stop: &AtomicBool) -> usize {
    let mut after_stop = 0;
    let mut i = 0;
    while after_stop < 20 {
        if stop.load(Ordering::SeqCst) {
            after_stop += 1;
        }
        let text = format!("round trip {i} {}", "r".repeat(1000));
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(recv(ws), Message::text(text), "round trip {i}");
        i += 1;
    }
    i
}

#[test]
fn non_reading_client_is_closed_4008_while_a_reader_on_the_same_shard_keeps_receiving() {
    let server = Server::start(&["--echo", "--shards", "1", "--max-write-buffer", "64KiB"]);
    let addr = server.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = ws_connect(addr, "/echo", &token("reader"));
    let reader_stop = Arc::clone(&stop);
    let reader_thread = thread::spawn(move || reading_client(&mut reader, &reader_stop));

    let stream = connect_with_small_rcvbuf(addr, 4096);
    let mut slow = RawWs::upgrade(stream, "/echo", &token("slow"));
    let mut sent = 0u64;
    while (sent as usize) * MESSAGE < FLOOD_BYTES {
        // An error means the server closed us (or stopped reading): stop sending.
        if slow
            .try_send_frame(true, opcode::BINARY, &numbered(sent))
            .is_err()
        {
            break;
        }
        sent += 1;
    }

    slow.set_read_timeout(Duration::from_secs(10));
    let (code, before) = slow.read_until_close();
    stop.store(true, Ordering::SeqCst);
    assert_eq!(
        code,
        Some(4008),
        "after {sent} messages sent, {} echoed",
        before.len()
    );

    // Whole frames only before the close, in order, with discarded ones skipped.
    let mut last = None;
    for frame in &before {
        assert_eq!(frame.opcode, opcode::BINARY);
        assert!(frame.fin);
        let seq = u64::from_be_bytes(frame.payload[..8].try_into().unwrap());
        assert_eq!(frame.payload, numbered(seq), "frame {seq} corrupted");
        assert!(last.is_none_or(|l| seq > l), "seq {seq} after {last:?}");
        last = Some(seq);
    }
    assert!(
        (before.len() as u64) < sent,
        "all {sent} messages were echoed before the close"
    );
    slow.expect_eof();

    let round_trips = reader_thread.join().expect("reading client failed");
    assert!(round_trips >= 20);
}

#[test]
fn output_within_the_bound_is_never_cut() {
    // A client that pauses but whose pending output stays under the bound keeps
    // its connection and gets every message.
    let server = Server::start(&["--echo", "--shards", "1", "--max-write-buffer", "256KiB"]);
    let stream = connect_with_small_rcvbuf(server.addr(), 4096);
    let mut ws = RawWs::upgrade(stream, "/echo", &token("u1"));
    for seq in 0..8 {
        ws.send_frame(true, opcode::BINARY, &numbered(seq));
    }
    for seq in 0..8 {
        assert_eq!(ws.read_message(), (opcode::BINARY, numbered(seq)));
    }
}
