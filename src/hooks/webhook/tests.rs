use super::*;
use simd_json::OwnedValue;
use simd_json::prelude::*;

fn outbox(queue: usize) -> Outbox {
    Outbox::new(OutboxConfig {
        node: "n".into(),
        vacate_delay: Duration::from_secs(3),
        retry: Duration::from_secs(60),
        queue,
    })
}

fn event(what: What) -> Event {
    Event { what, time: 7 }
}

fn room(name: &str) -> Arc<str> {
    name.into()
}

fn message(name: &str, seq: u64) -> Event {
    event(What::RoomMessage(Box::new(Message {
        room: room(name),
        event: "chat".into(),
        data: b"{\"n\":1}".to_vec().into(),
        from: "u1".into(),
        seq,
        ts: 9,
    })))
}

fn events(batch: &Batch) -> Vec<OwnedValue> {
    let mut body = batch.body.clone();
    let body = simd_json::to_owned_value(&mut body).unwrap();
    body["events"].as_array().unwrap().clone()
}

#[test]
fn a_batch_waits_its_linger_then_carries_every_event_with_unique_ids() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(event(What::RoomOccupied(room("r"))), t0);
    o.push(message("r", 1), t0);
    assert_eq!(o.poll(t0), None);
    assert_eq!(o.next_timer(), Some(t0 + LINGER));
    let batch = o.poll(t0 + LINGER).unwrap();
    let sent = events(&batch);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["type"], "room.occupied");
    assert_eq!(sent[0]["room"], "r");
    assert_eq!(sent[1]["type"], "room.message");
    assert_eq!(sent[1]["data"], simd_json::json!({"n": 1}));
    assert_eq!(sent[1]["seq"], 1);
    assert_eq!(sent[1]["from"], "u1");
    assert_ne!(sent[0]["id"], sent[1]["id"]);
    assert_eq!(sent[0]["time"], 7);
}

#[test]
fn a_full_batch_goes_at_once_and_holds_at_most_a_hundred() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    for seq in 0..250 {
        o.push(message("r", seq), t0);
    }
    let first = o.poll(t0).unwrap();
    assert_eq!(events(&first).len(), MAX_BATCH);
    // One batch in flight at a time.
    assert_eq!(o.poll(t0), None);
    o.answered(first.number, true, t0);
    let second = o.poll(t0).unwrap();
    assert_eq!(events(&second)[0]["seq"], 100);
    o.answered(second.number, true, t0);
    let third = o.poll(t0 + LINGER).unwrap();
    assert_eq!(events(&third).len(), 50);
    o.answered(third.number, true, t0);
    assert_eq!(o.counts().delivered, 250);
    assert_eq!(o.depth(), 0);
}

#[test]
fn a_failed_batch_is_retried_with_backoff_and_nothing_overtakes_it() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(message("r", 1), t0);
    let batch = o.poll(t0 + LINGER).unwrap();
    o.push(message("r", 2), t0 + LINGER);
    let t1 = t0 + LINGER;
    o.answered(batch.number, false, t1);
    assert_eq!(o.next_timer(), Some(t1 + BACKOFF_MIN));
    assert_eq!(o.poll(t1 + BACKOFF_MIN / 2), None);
    let again = o.poll(t1 + BACKOFF_MIN).unwrap();
    assert_eq!(again, batch);
    let t2 = t1 + BACKOFF_MIN;
    o.answered(again.number, false, t2);
    assert_eq!(o.next_timer(), Some(t2 + BACKOFF_MIN * 2));
    let third = o.poll(t2 + BACKOFF_MIN * 2).unwrap();
    o.answered(third.number, true, t2 + BACKOFF_MIN * 2);
    let next = o.poll(t2 + BACKOFF_MIN * 2).unwrap();
    assert_eq!(events(&next)[0]["seq"], 2);
    assert_eq!(o.counts().retries, 2);
}

#[test]
fn a_batch_past_its_retry_time_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(message("r", 1), t0);
    let mut now = t0 + LINGER;
    let mut batch = o.poll(now).unwrap();
    let mut tries = 1;
    loop {
        o.answered(batch.number, false, now);
        let Some(at) = o.next_timer() else { break };
        now = at;
        batch = o.poll(now).unwrap();
        tries += 1;
        assert!(now <= t0 + LINGER + Duration::from_secs(60));
    }
    assert_eq!(o.counts().dropped_retry, 1);
    assert_eq!(o.depth(), 0);
    // 0.5, 1, 2, 4, 8, 16, 30 s, then the last try at the minute.
    assert_eq!(tries, 8);
}

#[test]
fn past_the_queue_the_oldest_are_dropped() {
    let t0 = Instant::now();
    let mut o = outbox(3);
    for seq in 0..5 {
        o.push(message("r", seq), t0);
    }
    assert_eq!(o.counts().dropped_queue, 2);
    let batch = o.poll(t0 + LINGER).unwrap();
    let seqs: Vec<_> = events(&batch).iter().map(|e| e["seq"].clone()).collect();
    assert_eq!(seqs, [2, 3, 4]);
}

#[test]
fn a_quick_rejoin_sends_neither_vacated_nor_occupied() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(event(What::RoomVacated(room("r"))), t0);
    o.push(event(What::UserOffline(room("u"))), t0);
    o.push(
        event(What::RoomOccupied(room("r"))),
        t0 + Duration::from_secs(1),
    );
    o.push(
        event(What::UserOnline(room("u"))),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(o.poll(t0 + Duration::from_secs(10)), None);
    assert_eq!(o.depth(), 0);
}

#[test]
fn a_vacate_is_sent_after_its_delay_or_before_a_later_event_about_its_room() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(event(What::RoomVacated(room("a"))), t0);
    o.push(event(What::RoomVacated(room("b"))), t0);
    assert_eq!(o.next_timer(), Some(t0 + Duration::from_secs(3)));
    // A message to the empty room (POST /publish): the vacate goes first.
    o.push(message("b", 1), t0 + Duration::from_secs(1));
    let batch = o.poll(t0 + Duration::from_secs(1) + LINGER).unwrap();
    let types: Vec<_> = events(&batch).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, ["room.vacated", "room.message"]);
    o.answered(batch.number, true, t0);
    assert_eq!(o.poll(t0 + Duration::from_secs(2)), None);
    o.poll(t0 + Duration::from_secs(3));
    let batch = o.poll(t0 + Duration::from_secs(3) + LINGER).unwrap();
    assert_eq!(events(&batch)[0]["room"], "a");
}

#[test]
fn types_choose_by_name() {
    let types = Types::of(&[EventType::RoomMessage, EventType::UserOnline]);
    assert!(types.contains(EventType::RoomMessage));
    assert!(!types.contains(EventType::RoomVacated));
    for t in EventType::ALL {
        assert_eq!(EventType::from_name(t.name()), Some(t));
    }
    assert_eq!(EventType::from_name("room"), None);
}

#[test]
fn presence_events_neither_send_nor_cancel_a_held_offline() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    let (room, user) = (room("r"), room("u"));
    // The last connection closed: its leave is counted after the offline.
    o.push(event(What::UserOffline(user.clone())), t0);
    let leave = What::PresenceLeave {
        room: room.clone(),
        user: user.clone(),
    };
    o.push(event(leave), t0);
    let batch = o.poll(t0 + LINGER).unwrap();
    assert_eq!(events(&batch)[0]["type"], "presence.leave");
    o.answered(batch.number, true, t0 + LINGER);
    // A new connection's join counted before its online: the offline is
    // cancelled still.
    o.push(
        event(What::PresenceJoin {
            room,
            user: user.clone(),
        }),
        t0,
    );
    o.push(event(What::UserOnline(user)), t0);
    let batch = o.poll(t0 + Duration::from_secs(5)).unwrap();
    let types: Vec<_> = events(&batch).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, ["presence.join"]);
}

#[test]
fn a_flush_sends_what_is_held_at_once() {
    let t0 = Instant::now();
    let mut o = outbox(1000);
    o.push(event(What::RoomVacated(room("r"))), t0);
    o.push(event(What::UserOffline(room("u"))), t0);
    assert!(!o.is_empty());
    assert_eq!(o.poll(t0), None);
    o.flush(t0);
    assert_eq!(o.next_timer(), Some(t0));
    let batch = o.poll(t0).unwrap();
    let types: Vec<_> = events(&batch).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, ["room.vacated", "user.offline"]);
    o.answered(batch.number, true, t0);
    assert!(o.is_empty());
}

fn tagged(tag: Tag) -> Source {
    Source {
        tag,
        id: format!("r0-{tag}-0").into(),
    }
}

#[test]
fn tagged_events_are_done_once_acknowledged_dropped_or_cancelled() {
    let t0 = Instant::now();
    let mut o = outbox(2);
    let vacated = || event(What::RoomVacated(room("r")));
    o.push_tagged(event(What::RoomOccupied(room("r"))), Some(tagged(1)), t0);
    o.push_tagged(vacated(), Some(tagged(2)), t0);
    // Re-occupied within the delay: the vacate and the occupy are done.
    o.push_tagged(event(What::RoomOccupied(room("r"))), Some(tagged(3)), t0);
    assert_eq!(o.take_done(), [2, 3]);
    o.push_tagged(vacated(), Some(tagged(4)), t0);
    o.push_tagged(event(What::UserOnline(room("u"))), Some(tagged(5)), t0);
    // The queue holds two: the oldest goes, and is done.
    o.push_tagged(event(What::UserOnline(room("v"))), Some(tagged(6)), t0);
    assert_eq!(o.take_done(), [1]);
    let batch = o.poll(t0 + LINGER).unwrap();
    let ids: Vec<OwnedValue> = events(&batch).iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, ["r0-5-0", "r0-6-0"], "the ids they came with");
    assert_eq!(o.take_done(), Vec::<Tag>::new(), "in flight, not done");
    o.answered(batch.number, true, t0 + LINGER);
    assert_eq!(o.take_done(), [5, 6]);
    // The held vacate goes once its delay is over.
    let later = t0 + Duration::from_secs(3);
    assert_eq!(o.poll(later), None, "queued now, waits its linger");
    let batch = o.poll(later + LINGER).unwrap();
    o.answered(batch.number, false, later + Duration::from_secs(120));
    assert_eq!(o.take_done(), [4], "dropped past its retry time");
}

#[test]
fn a_message_recorded_by_redis_is_sent_with_its_own_fields() {
    let t0 = Instant::now();
    let mut o = outbox(10);
    let text = br#"{"event":"chat","room":"r","data":{"n":1},"from":"u1","seq":4,"ts":9}"#;
    o.push(
        event(What::RoomMessageText {
            room: room("r"),
            text: text.as_slice().into(),
        }),
        t0,
    );
    let sent = events(&o.poll(t0 + LINGER).unwrap());
    assert_eq!(sent[0]["type"], "room.message");
    assert_eq!(sent[0]["time"], 7);
    assert_eq!(sent[0]["room"], "r");
    assert_eq!(sent[0]["event"], "chat");
    assert_eq!(sent[0]["data"], simd_json::json!({"n": 1}));
    assert_eq!(sent[0]["seq"], 4);
    assert_eq!(sent[0]["ts"], 9);
    assert_eq!(sent[0]["from"], "u1");
}
