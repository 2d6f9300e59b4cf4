//! `data.delta` (section 14) on one shard: which members of a room joined
//! with it, the last room event each was queued, and the room's last event,
//! whose `data` is the base of the next event's delta.
//!
//! A room event is numbered here as it is fanned out; a delta member whose
//! last queued event is the room's last one, when this event's `seq`
//! directly follows that one's, gets the delta frame
//! `{"event","room","delta","from","seq","ts"}`; everyone else the whole
//! frame. The delta is encoded at most once per event on the node, and
//! only when some member takes it: the shards an event is sent to share a
//! cell the first one that needs the delta fills (`bus::SharedDelta`),
//! which the others use when their previous event is the same frame. The
//! delta frame travels with the cell of its MessagePack twin
//! (`DeltaFrame`), so MessagePack delta members share one conversion too.
//! A MessagePack delta member rebuilds the base from the MessagePack form
//! it was given, so it can only do so when the base's `data` text is
//! canonical (`msgpack::is_canonical`): otherwise it gets the whole frame.
//! That check is made at most once per event and node, in the delta
//! frame's shared cell, and only when a MessagePack member would take the
//! delta. A paced member's held-back event, sent at its slot, takes the
//! same delta if it is still the room's last; the base is the very frame
//! that member was queued, so what it rebuilds is exactly this event's
//! `data` even across an epoch the shard did not see change. A member whose event was
//! held back, dropped or conflated (a slow consumer) or skipped (`maxRate`)
//! has no known last event: its next event is whole. A room without delta
//! members here costs nothing: it has no entry.
//!
//! A delta member costs one lookup per event (a `KeyMap`: no SipHash on
//! the fan-out path): the plan reads what it knows and notes it as knowing
//! this event, as if it were queued it, which is what nearly always
//! happens; `sent` then corrects only the few that were not (held back,
//! dropped, gone), with no lookup at all when every one was.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::json;
use crate::proto::{fossil, msgpack, scan, wire};
use crate::rooms::bus::{SharedDelta, Twin};
use crate::rooms::keys::KeyMap;

/// A room event as this shard fanned it out.
struct Fanned {
    /// This shard's number for it.
    number: NonZeroU64,
    seq: u64,
    /// The whole frame, shared with the members given it.
    frame: Arc<[u8]>,
    /// Where its `data` is in the frame's text.
    data: Range<usize>,
}

impl Fanned {
    fn data(&self) -> &[u8] {
        &wire::frame_text(&self.frame)[self.data.clone()]
    }
}

/// The room's last event on this shard.
struct Last {
    event: Fanned,
    /// The event before, when this one's `seq` directly follows it.
    base: Option<Fanned>,
    /// The delta frame from `base`, once encoded (`None` inside: there is
    /// none, the delta being no shorter or not UTF-8).
    delta: Option<Option<DeltaFrame>>,
}

impl Last {
    /// The delta frame of this event from its base, encoded at most once:
    /// taken from `shared` (another shard's encoding) when that was
    /// encoded from the same base frame. `None`: no base, or no delta
    /// shorter than `data` in valid UTF-8.
    fn delta_frame(&mut self, shared: Option<&SharedDelta>) -> Option<DeltaFrame> {
        let Last { event, base, delta } = self;
        delta
            .get_or_insert_with(|| {
                let base = base.as_ref()?;
                let text = wire::frame_text(&event.frame);
                let encode = || delta_frame(base.data(), text, event.data.clone());
                match shared.map(|cell| cell.get_or_init(|| (base.frame.clone(), encode()))) {
                    Some((from, delta)) if Arc::ptr_eq(from, &base.frame) => delta.clone(),
                    _ => encode(),
                }
            })
            .clone()
    }

    /// The base's `data` text (empty without a base).
    fn base_data(&self) -> &[u8] {
        self.base.as_ref().map(Fanned::data).unwrap_or_default()
    }
}

/// How a connection is given frames: their JSON text, or their
/// MessagePack form (`roomcast.msgpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MessagePack,
}

/// A delta member here.
struct Member {
    /// The number of the last event it was queued, when it is known.
    last: Option<NonZeroU64>,
    encoding: Encoding,
}

#[derive(Default)]
struct DeltaRoom {
    members: KeyMap<Member>,
    last: Option<Last>,
    /// Events numbered so far.
    count: u64,
}

/// A room event's delta frame, shared by reference like the whole one,
/// with the cells the first shard that gives it to a MessagePack member
/// fills for the others.
#[derive(Debug, Clone)]
pub struct DeltaFrame {
    pub frame: Arc<[u8]>,
    pub cells: Arc<DeltaCells>,
}

/// What the shards a delta frame is shared by work out once for all.
#[derive(Debug, Default)]
pub struct DeltaCells {
    /// The delta frame's MessagePack twin (`conn::packed::Twin`).
    pub twin: Twin,
    /// Whether the base's `data` text is canonical, so that a MessagePack
    /// member can rebuild it and take the delta.
    base_canonical: OnceLock<bool>,
}

impl DeltaFrame {
    fn new(frame: Arc<[u8]>) -> Self {
        Self {
            frame,
            cells: Arc::default(),
        }
    }

    /// Whether a MessagePack member can take this delta: its base's `data`
    /// (`base`) is canonical. Checked by the first caller on the node.
    fn packable(&self, base: &[u8]) -> bool {
        *self
            .cells
            .base_canonical
            .get_or_init(|| msgpack::is_canonical(base))
    }
}

/// A room event's fan-out to a room with delta members.
pub struct Plan {
    /// Who gets the whole frame.
    pub whole: Vec<usize>,
    /// The delta frame and who gets it; `None` when nobody does.
    pub delta: Option<(DeltaFrame, Vec<usize>)>,
}

/// The delta members of this shard's rooms.
#[derive(Default)]
pub struct Deltas {
    rooms: HashMap<Arc<str>, DeltaRoom>,
}

/// `Deltas::plan_sending` in the room's entry `local` (`None`: the room
/// has no delta members here), looked up once by the caller.
fn plan_in(
    local: Option<&mut DeltaRoom>,
    frame: &Arc<[u8]>,
    recipients: &[usize],
    skip: Option<usize>,
    shared: Option<&SharedDelta>,
) -> Plan {
    let mut whole = Vec::with_capacity(recipients.len());
    let recipients = recipients.iter().copied().filter(|&k| Some(k) != skip);
    let Some(local) = local else {
        whole.extend(recipients);
        return Plan { whole, delta: None };
    };
    let mut last = local
        .last
        .as_mut()
        .filter(|last| Arc::ptr_eq(&last.event.frame, frame));
    let number = last.as_ref().map(|last| last.event.number);
    let base = last
        .as_ref()
        .and_then(|last| last.base.as_ref())
        .map(|base| base.number);
    // Takers in JSON, and in MessagePack (who need a canonical base).
    let (mut takers, mut packed) = (Vec::new(), Vec::new());
    for key in recipients {
        let Some(member) = local.members.get_mut(&key) else {
            whole.push(key);
            continue;
        };
        let takes = base.is_some() && member.last == base;
        member.last = number;
        match (takes, member.encoding) {
            (true, Encoding::Json) => takers.push(key),
            (true, Encoding::MessagePack) => packed.push(key),
            (false, _) => whole.push(key),
        }
    }
    let delta = match last.as_mut() {
        Some(last) if !takers.is_empty() || !packed.is_empty() => last
            .delta_frame(shared)
            .map(|delta| (delta, last.base_data())),
        _ => None,
    };
    let Some((delta, base)) = delta else {
        whole.append(&mut takers);
        whole.append(&mut packed);
        return Plan { whole, delta: None };
    };
    if !packed.is_empty() && !delta.packable(base) {
        whole.append(&mut packed);
    }
    takers.append(&mut packed);
    let delta = (!takers.is_empty()).then_some((delta, takers));
    Plan { whole, delta }
}

/// A room event's `seq` and the range of its `data` in `text`, as
/// `wire::room_message` writes it: `seq` after `data`, so the skim goes
/// over `data` once (skimming it twice was some 40% of the instructions
/// delta members add per event: perf/RESULTS.md).
fn read_event(text: &[u8]) -> Option<(u64, Range<usize>)> {
    let data = scan::field_range(text, "data")?;
    let seq = scan::later_field_range(text, data.end, "seq")?;
    let seq = std::str::from_utf8(&text[seq]).ok()?.parse().ok()?;
    Some((seq, data))
}

/// The delta frame of `text` (whose `data` is at `data`) from `base`, when
/// the delta is valid UTF-8 and shorter than `data`.
fn delta_frame(base: &[u8], text: &[u8], data: Range<usize>) -> Option<DeltaFrame> {
    const KEY: &[u8] = b"\"data\":";
    let key_start = data.start.checked_sub(KEY.len())?;
    if &text[key_start..data.start] != KEY {
        return None;
    }
    let delta = fossil::encode(base, &text[data.clone()]);
    if delta.len() >= data.len() {
        return None;
    }
    let delta = std::str::from_utf8(&delta).ok()?;
    let mut out = Vec::with_capacity(text.len() - data.len() + delta.len() + 16);
    out.extend_from_slice(&text[..key_start]);
    out.extend_from_slice(b"\"delta\":");
    json::write_str(&mut out, delta);
    out.extend_from_slice(&text[data.end..]);
    Some(DeltaFrame::new(wire::text_frame(&out)))
}

impl Deltas {
    /// Sets whether member `key` of `room` takes deltas, and in which
    /// encoding (`None`: it does not); taking them anew (a join or a
    /// rejoin) starts from a whole event.
    pub fn set(&mut self, room: &Arc<str>, key: usize, delta: Option<Encoding>) {
        match delta {
            Some(encoding) => {
                let local = self.rooms.entry(room.clone()).or_default();
                let last = None;
                local.members.insert(key, Member { last, encoding });
            }
            None => self.remove(room, key),
        }
    }

    /// Member `key` left `room`.
    pub fn remove(&mut self, room: &str, key: usize) {
        if let Some(local) = self.rooms.get_mut(room) {
            local.members.remove(&key);
            if local.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Whether `room` has delta members here.
    pub fn has(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Who of `recipients` (but `skip`) gets the room event `frame`, new
    /// here, whole and who as a delta; numbers it as `room`'s last.
    pub fn plan(
        &mut self,
        room: &str,
        frame: &Arc<[u8]>,
        recipients: &[usize],
        skip: Option<usize>,
        shared: Option<&SharedDelta>,
    ) -> Plan {
        if let Some(local) = self.rooms.get_mut(room) {
            let number = NonZeroU64::MIN.saturating_add(local.count);
            local.count += 1;
            let previous = local.last.take().map(|last| last.event);
            local.last = read_event(wire::frame_text(frame)).map(|(seq, data)| {
                let event = Fanned {
                    number,
                    seq,
                    frame: frame.clone(),
                    data,
                };
                let base = previous.filter(|p| p.seq.checked_add(1) == Some(seq));
                Last {
                    event,
                    base,
                    delta: None,
                }
            });
            return plan_in(Some(local), frame, recipients, skip, shared);
        }
        plan_in(None, frame, recipients, skip, shared)
    }

    /// Who of `recipients` (but `skip`) gets `frame`, an event of `room`
    /// fanned out already (held back for a paced member), whole and who as
    /// a delta: only the room's last event has one. `shared`: the delta
    /// of this event as another shard of the node may have encoded it,
    /// used when it was encoded from the same event (the same frame).
    ///
    /// Notes every delta member of `recipients` as knowing `frame` (if it
    /// is the room's last; else as knowing no last event), as if it were
    /// queued it: `sent` corrects those that were not.
    pub fn plan_sending(
        &mut self,
        room: &str,
        frame: &Arc<[u8]>,
        recipients: &[usize],
        skip: Option<usize>,
        shared: Option<&SharedDelta>,
    ) -> Plan {
        plan_in(self.rooms.get_mut(room), frame, recipients, skip, shared)
    }

    /// What became of a planned event of `room` for `sent` (members given
    /// it, in the order given), of which `queued` (a subsequence of `sent`,
    /// in its order) were queued it: the plan noted them all as knowing
    /// it, and the others know no last event now.
    pub fn sent(&mut self, room: &str, sent: &[usize], queued: &[usize]) {
        if queued.len() == sent.len() {
            return;
        }
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        let mut queued = queued.iter().peekable();
        for key in sent {
            if queued.next_if_eq(&key).is_none()
                && let Some(member) = local.members.get_mut(key)
            {
                member.last = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, data: &str) -> Arc<[u8]> {
        wire::room_frame("e", "r", data.as_bytes(), "u", seq, 7)
    }

    const JSON: Option<Encoding> = Some(Encoding::Json);
    const PACKED: Option<Encoding> = Some(Encoding::MessagePack);

    fn rebuild(base: &str, frame: &[u8]) -> String {
        use simd_json::prelude::*;
        let mut text = wire::frame_text(frame).to_vec();
        let v = simd_json::to_owned_value(&mut text).unwrap();
        let delta = v.get("delta").and_then(|d| d.as_str()).unwrap();
        let out = fossil::apply(base.as_bytes(), delta.as_bytes(), 1 << 20).unwrap();
        String::from_utf8(out).unwrap()
    }

    const A: &str = r#"{"price":101.25,"symbol":"ACME","venue":"XNAS","currency":"USD","é":"ü"}"#;
    const B: &str = r#"{"price":101.27,"symbol":"ACME","venue":"XNAS","currency":"USD","é":"ü"}"#;
    const C: &str = r#"{"price":101.30,"symbol":"ACME","venue":"XNAS","currency":"USD","é":"ü"}"#;

    /// Room `r` with JSON delta member 1, queued the event `data` as
    /// `seq` 1 (returned).
    fn member_queued(data: &str) -> (Arc<str>, Deltas, Arc<[u8]>) {
        let room: Arc<str> = Arc::from("r");
        let mut deltas = Deltas::default();
        deltas.set(&room, 1, JSON);
        let first = event(1, data);
        deltas.plan("r", &first, &[1], None, None);
        deltas.sent("r", &[1], &[1]);
        (room, deltas, first)
    }

    #[test]
    fn a_member_gets_a_delta_only_after_the_event_before() {
        let room: Arc<str> = Arc::from("r");
        let mut deltas = Deltas::default();
        deltas.set(&room, 1, JSON);
        let first = event(1, A);
        let plan = deltas.plan("r", &first, &[1, 2], None, None);
        assert_eq!(plan.whole, [1, 2], "the first after a join is whole");
        assert!(plan.delta.is_none());
        deltas.sent("r", &[1, 2], &[1, 2]);

        let second = event(2, B);
        let plan = deltas.plan("r", &second, &[1, 2], None, None);
        assert_eq!(plan.whole, [2]);
        let (DeltaFrame { frame, .. }, keys) = plan.delta.expect("a delta");
        assert_eq!(keys, [1]);
        let text = std::str::from_utf8(wire::frame_text(&frame)).unwrap();
        assert!(
            text.starts_with(r#"{"event":"e","room":"r","delta":""#),
            "{text}"
        );
        assert!(text.ends_with(r#","from":"u","seq":2,"ts":7}"#), "{text}");
        assert_eq!(rebuild(A, &frame), B);
        deltas.sent("r", &[1], &[]);

        let third = event(3, C);
        let plan = deltas.plan("r", &third, &[1, 2], None, None);
        assert!(plan.delta.is_none(), "not queued the last: whole");
        deltas.sent("r", &[1, 2], &[1, 2]);

        let gap = event(5, A);
        let plan = deltas.plan("r", &gap, &[1], None, None);
        assert!(plan.delta.is_none(), "a gap in seq: whole");
        deltas.sent("r", &[1], &[1]);
        let next = event(6, B);
        assert!(deltas.plan("r", &next, &[1], None, None).delta.is_some());
    }

    #[test]
    fn a_skipped_event_or_a_rejoin_makes_the_next_whole() {
        let (room, mut deltas, first) = member_queued(A);
        let second = event(2, B);
        let plan = deltas.plan("r", &second, &[], None, None);
        assert!(plan.whole.is_empty() && plan.delta.is_none(), "held back");
        let third = event(3, C);
        assert!(deltas.plan("r", &third, &[1], None, None).delta.is_none());
        deltas.sent("r", &[1], &[1]);
        deltas.set(&room, 1, JSON);
        let fourth = event(4, A);
        assert!(
            deltas.plan("r", &fourth, &[1], None, None).delta.is_none(),
            "a rejoin restarts"
        );
        deltas.sent("r", &[1], &[1]);
        // An older frame held back for a paced member, sent at its slot.
        let late = deltas.plan_sending("r", &first, &[1], None, None);
        assert_eq!(late.whole, [1]);
        assert!(
            late.delta.is_none(),
            "only the room's last event has a delta"
        );
        deltas.sent("r", &late.whole, &late.whole);
        let fifth = event(5, B);
        assert!(
            deltas.plan("r", &fifth, &[1], None, None).delta.is_none(),
            "an older frame sent late is not the base"
        );
    }

    #[test]
    fn members_not_queued_or_skipped_get_the_next_event_whole_the_others_a_delta() {
        let room: Arc<str> = Arc::from("r");
        let mut deltas = Deltas::default();
        for key in [1, 2, 3, 4] {
            deltas.set(&room, key, JSON);
        }
        let first = event(1, A);
        let plan = deltas.plan("r", &first, &[1, 2, 3, 4], Some(4), None);
        assert_eq!(plan.whole, [1, 2, 3], "the skipped member gets nothing");
        deltas.sent("r", &plan.whole, &[1, 3]);

        let second = event(2, B);
        let plan = deltas.plan("r", &second, &[1, 2, 3, 4], None, None);
        assert_eq!(plan.whole, [2, 4], "not queued, or skipped: whole");
        let (_, takers) = plan.delta.expect("a delta");
        assert_eq!(takers, [1, 3]);
        deltas.sent("r", &plan.whole, &plan.whole);
        deltas.sent("r", &takers, &[1]);

        let third = event(3, C);
        let plan = deltas.plan("r", &third, &[1, 2, 3, 4], None, None);
        assert_eq!(plan.whole, [3], "its delta was not queued");
        assert_eq!(plan.delta.expect("a delta").1, [1, 2, 4]);
    }

    #[test]
    fn no_delta_when_it_is_not_shorter() {
        let (_, mut deltas, _) = member_queued("1");
        let plan = deltas.plan("r", &event(2, "2"), &[1], None, None);
        assert_eq!(plan.whole, [1]);
        assert!(plan.delta.is_none());
        deltas.remove("r", 1);
        assert!(!deltas.has("r"));
    }

    #[test]
    fn two_shards_share_one_encoding_of_an_event_from_the_same_base() {
        let room: Arc<str> = Arc::from("r");
        let (mut one, mut two) = (Deltas::default(), Deltas::default());
        one.set(&room, 1, JSON);
        two.set(&room, 2, JSON);
        let first = event(1, A);
        for (deltas, key) in [(&mut one, 1), (&mut two, 2)] {
            deltas.plan("r", &first, &[key], None, Some(&SharedDelta::default()));
            deltas.sent("r", &[key], &[key]);
        }
        let second = event(2, B);
        let cell = SharedDelta::default();
        let a = one
            .plan("r", &second, &[1], None, Some(&cell))
            .delta
            .unwrap()
            .0;
        let b = two
            .plan("r", &second, &[2], None, Some(&cell))
            .delta
            .unwrap()
            .0;
        assert!(Arc::ptr_eq(&a.frame, &b.frame), "encoded once for both");
        assert!(
            Arc::ptr_eq(&a.cells, &b.cells),
            "one MessagePack twin cell for both"
        );

        // A shard whose previous event is another frame encodes its own.
        let mut three = Deltas::default();
        three.set(&room, 3, JSON);
        let other_first = event(1, C);
        three.plan("r", &other_first, &[3], None, None);
        three.sent("r", &[3], &[3]);
        let c = three
            .plan("r", &second, &[3], None, Some(&cell))
            .delta
            .unwrap()
            .0
            .frame;
        assert!(!Arc::ptr_eq(&a.frame, &c));
        assert_eq!(rebuild(C, &c), B);
    }

    /// Plans events `datas` (from seq 1) for members 1 (JSON) and 2
    /// (MessagePack), both queued each: the plans in order.
    fn plans_for_both(datas: &[&str]) -> Vec<Plan> {
        let room: Arc<str> = Arc::from("r");
        let mut deltas = Deltas::default();
        deltas.set(&room, 1, JSON);
        deltas.set(&room, 2, PACKED);
        let mut plans = Vec::new();
        for (seq, data) in (1..).zip(datas) {
            let frame = event(seq, data);
            let plan = deltas.plan("r", &frame, &[1, 2], None, None);
            deltas.sent("r", &plan.whole, &plan.whole);
            if let Some((_, takers)) = &plan.delta {
                deltas.sent("r", takers, takers);
            }
            plans.push(plan);
        }
        plans
    }

    fn takers(plan: &Plan) -> &[usize] {
        plan.delta.as_ref().map_or(&[], |(_, keys)| keys)
    }

    #[test]
    fn a_messagepack_member_takes_a_delta_from_a_canonical_base() {
        let plans = plans_for_both(&[A, B]);
        assert_eq!(plans[0].whole, [1, 2]);
        assert_eq!(plans[1].whole, Vec::<usize>::new());
        assert_eq!(takers(&plans[1]), [1, 2]);
        let (delta, _) = plans[1].delta.as_ref().unwrap();
        assert_eq!(delta.cells.base_canonical.get(), Some(&true));
    }

    /// A tick's `data` text: `head` (the price and symbol, in whatever
    /// form) and a long canonical tail, so that deltas are shorter.
    fn tick(head: &str) -> String {
        format!(
            r#"{{{head},"venue":"XNAS","currency":"USD","desk":"Zürich, London, New York, Tokyo"}}"#
        )
    }

    #[test]
    fn a_messagepack_member_gets_the_whole_event_after_a_non_canonical_base() {
        let spaced = tick(r#""price": 101.25, "symbol": "ACME""#);
        let compact = tick(r#""price":101.27,"symbol":"ACME""#);
        let then = tick(r#""price":101.29,"symbol":"ACME""#);
        let padded = tick(r#""price":101.50,"symbol":"ACME""#);
        let escaped = tick(r#""price":101.5,"symbol":"\u00e9CME""#);
        let datas = [&spaced, &compact, &then, &padded, &escaped, &then].map(String::as_str);
        let plans = plans_for_both(&datas);
        assert_eq!(plans[1].whole, [2], "after a spaced base: whole");
        assert_eq!(takers(&plans[1]), [1], "the JSON member takes the delta");
        assert_eq!(
            takers(&plans[2]),
            [1, 2],
            "then a delta from a canonical base"
        );
        assert_eq!(takers(&plans[3]), [1, 2]);
        assert_eq!(plans[4].whole, [2], "after 101.50: whole");
        assert_eq!(takers(&plans[4]), [1]);
        assert_eq!(plans[5].whole, [2], "after an escaped é: whole");
        assert_eq!(takers(&plans[5]), [1]);
    }

    #[test]
    fn json_members_alone_never_check_the_base() {
        let (_, mut deltas, _) = member_queued(A);
        let plan = deltas.plan("r", &event(2, B), &[1], None, None);
        let (delta, _) = plan.delta.expect("a delta");
        assert_eq!(delta.cells.base_canonical.get(), None);
    }
}
