//! The shard carrying out what the proxies decide (`reactor::hooks`): a
//! connection's requests go to a backend, wait in the connection's line,
//! or go to the router; an answer becomes an ack, a refusal, or a publish
//! followed by whatever the connection sent behind it.

use std::time::Instant;

use slab::Slab;

use super::Shard;
use crate::codes::ErrorCode;
use crate::conn::ConnRef;
use crate::conn::ConnectDecision;
use crate::hooks::{HookError, HookResponse};
use crate::proto::Request;
use crate::proto::reply;
use crate::reactor::entry::Entry;
use crate::reactor::hooks::{Asked, HookAnswer, Routed, Sender, Step, connect_unavailable};
use crate::rooms::Asker;
use crate::rooms::delta::Encoding;
use crate::rooms::outlet::Outlet;
use crate::sys::unix_ms;

impl Shard {
    /// The requests connection `key` made this turn.
    pub(super) fn route_requests(&mut self, key: usize, now: Instant) {
        let mut requests = std::mem::take(&mut self.requests);
        let id = self.conns.get(key).map(|entry| entry.conn.id());
        if let Some(id) = id {
            let conn = ConnRef {
                shard: self.index,
                key,
                id,
            };
            // An upgrade waiting for its claims makes no other request.
            if let [Request::Connect { body }] = requests.as_mut_slice() {
                let body = std::mem::take(body);
                self.connect(conn, body, now);
            } else {
                self.route(conn, requests.drain(..), now);
            }
        }
        requests.clear();
        self.requests = requests;
    }

    /// Routes `conn`'s requests in order: to a proxy, into the
    /// connection's line behind a room event at the publish proxy, or to
    /// the router.
    fn route(&mut self, conn: ConnRef, requests: impl Iterator<Item = Request>, now: Instant) {
        let Some(asker) = asker(&self.conns, conn) else {
            return;
        };
        let (Some(proxies), Some(user)) = (self.proxies.as_mut(), asker.user) else {
            for request in requests {
                self.router.on_request(asker, request, now);
            }
            return;
        };
        let sender = Sender {
            conn,
            user,
            conn_id: self.shared.issuer().id(conn.id),
        };
        let mut refused = Vec::new();
        for request in requests {
            match proxies.route(&sender, request, now) {
                Routed::Router(request) => self.router.on_request(asker, request, now),
                Routed::Taken => {}
                Routed::Now(step) => refused.push(step),
            }
        }
        for step in refused {
            self.carry_step(conn, step, now);
        }
        self.carry_out(conn, now);
    }

    /// A backend answered (or did not, in time).
    pub(super) fn on_hook(&mut self, answer: HookAnswer, outcome: Result<HookResponse, HookError>) {
        let Some(proxies) = self.proxies.as_mut() else {
            return;
        };
        let conn = answer.conn;
        let now = Instant::now();
        if let Asked::Connect = answer.asked {
            let leeway = self.shared.config.auth.leeway.as_secs_f64();
            let decision = proxies.decide_connect(outcome, unix_ms(), leeway);
            return self.connect_decided(conn, decision);
        }
        match proxies.decide(answer, outcome) {
            Some(step) => self.carry_step(conn, step, now),
            None => self.carry_out(conn, now),
        }
    }

    /// Asks the connect proxy for an upgrade's claims.
    fn connect(&mut self, conn: ConnRef, body: Vec<u8>, now: Instant) {
        let refused = match self.proxies.as_ref() {
            Some(proxies) => proxies.connect(conn, body, now),
            None => Some(connect_unavailable()),
        };
        if let Some(decision) = refused {
            self.connect_decided(conn, decision);
        }
    }

    /// The upgrade carries out the decision when it is next fed (the
    /// connection has what it takes to open then): fed again this turn.
    fn connect_decided(&mut self, conn: ConnRef, decision: ConnectDecision) {
        let live = self
            .conns
            .get_mut(conn.key)
            .filter(|e| e.conn.id() == conn.id);
        if let Some(entry) = live
            && entry.conn.decide_connect(decision)
        {
            self.refeed.push(conn.key);
            self.mark_dirty(conn.key);
        }
    }

    /// Carries out the front of `conn`'s line, as far as it is decided,
    /// one step after the other: a refused join leaves the room before a
    /// room event behind it is checked.
    fn carry_out(&mut self, conn: ConnRef, now: Instant) {
        let Some(proxies) = self.proxies.as_mut() else {
            return;
        };
        for step in proxies.ready(conn) {
            self.carry_step(conn, step, now);
        }
    }

    fn carry_step(&mut self, conn: ConnRef, step: Step, now: Instant) {
        match step {
            Step::Route(request) => {
                let Some(asker) = asker(&self.conns, conn) else {
                    return;
                };
                let members_publish = self.shared.config.rooms.members_publish;
                // The join it relied on may have been refused since.
                if let Request::Publish { room, id, .. } = &request
                    && !self.conns[conn.key].conn.may_publish(room, members_publish)
                {
                    let text = reply::failure_text(
                        id.as_ref(),
                        ErrorCode::NotInRoom,
                        "join the room before publishing to it",
                    );
                    let (_, mut out) = self.split();
                    out.reply(conn, Some(&text), id.is_some(), now);
                    return;
                }
                self.router.on_request(asker, request, now);
            }
            Step::Reply { text, awaited } => {
                let (_, mut out) = self.split();
                out.reply(conn, text.as_deref(), awaited, now);
            }
            Step::RefuseJoin { room, text } => {
                let (_, mut out) = self.split();
                out.settle_join(conn, &room, false);
                out.reply(conn, Some(&text), true, now);
            }
        }
    }
}

/// `conn` as the router knows a connection asking, if it is still here.
fn asker(conns: &Slab<Entry>, conn: ConnRef) -> Option<Asker<'_>> {
    let entry = conns.get(conn.key).filter(|e| e.conn.id() == conn.id)?;
    Some(Asker {
        conn,
        user: entry.conn.user_id(),
        name: entry.conn.user_name(),
        encoding: if entry.conn.speaks_msgpack() {
            Encoding::MessagePack
        } else {
            Encoding::Json
        },
    })
}
