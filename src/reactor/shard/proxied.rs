//! The shard carrying out what the proxies decide (`reactor::hooks`): a
//! connection's requests go to a backend, wait behind a pending decision,
//! or go to the router; an answer becomes an ack, a refusal, or a publish
//! followed by the requests it held.

use std::collections::VecDeque;
use std::time::Instant;

use super::Shard;
use crate::conn::ConnRef;
use crate::hooks::{HookError, HookResponse};
use crate::proto::Request;
use crate::reactor::hooks::{Asked, Decision, HookAnswer, Routed, Sender};
use crate::rooms::Asker;

impl Shard {
    /// The requests connection `key` made this turn.
    pub(super) fn route_requests(&mut self, key: usize, now: Instant) {
        let mut requests = std::mem::take(&mut self.requests);
        let id = self.conns.get(key).map(|entry| entry.conn.id());
        if let Some(id) = id {
            self.route(
                ConnRef {
                    shard: self.index,
                    key,
                    id,
                },
                requests.drain(..),
                now,
            );
        }
        requests.clear();
        self.requests = requests;
    }

    /// Routes `conn`'s requests in order: to a proxy, held behind one of
    /// its room events at the publish proxy, or to the router. Those of a
    /// connection that is gone are dropped.
    fn route(&mut self, conn: ConnRef, requests: impl Iterator<Item = Request>, now: Instant) {
        let Some(entry) = self.conns.get(conn.key).filter(|e| e.conn.id() == conn.id) else {
            return;
        };
        let asker = Asker {
            conn,
            user: entry.conn.user_id(),
            name: entry.conn.user_name(),
        };
        let (Some(proxies), Some(user)) = (self.proxies.as_mut(), asker.user) else {
            for request in requests {
                self.router.on_request(asker, request, now);
            }
            return;
        };
        let conn_id = self.shared.issuer().id(conn.id).to_string();
        let sender = Sender {
            conn,
            user,
            conn_id: &conn_id,
        };
        let mut failed = Vec::new();
        for request in requests {
            match proxies.route(&sender, request, now) {
                Routed::Router(request) => self.router.on_request(asker, request, now),
                Routed::Taken => {}
                Routed::Failed { text, awaited } => failed.push((text, awaited)),
            }
        }
        let (_, mut out) = self.split();
        for (text, awaited) in failed {
            out.reply(conn, Some(&text), awaited, now);
        }
    }

    /// A backend answered (or did not, in time).
    pub(super) fn on_hook(&mut self, answer: HookAnswer, outcome: Result<HookResponse, HookError>) {
        let Some(proxies) = self.proxies.as_mut() else {
            return;
        };
        let conn = answer.conn;
        let publish = matches!(answer.asked, Asked::Publish { .. });
        let now = Instant::now();
        match proxies.decide(answer, outcome) {
            Decision::Answer {
                conn,
                text,
                awaited,
            } => {
                let (_, mut out) = self.split();
                out.reply(conn, text.as_deref(), awaited, now);
            }
            Decision::Publish {
                conn,
                request,
                user,
            } => {
                // Published even if the connection has closed since: it
                // sent the event while open, as a publish read just before
                // a close is.
                let asker = Asker {
                    conn,
                    user: Some(&user),
                    name: None,
                };
                self.router.on_request(asker, request, now);
            }
        }
        if publish {
            let held: VecDeque<Request> = self
                .proxies
                .as_mut()
                .map(|proxies| proxies.release(conn))
                .unwrap_or_default();
            if !held.is_empty() {
                self.route(conn, held.into_iter(), now);
            }
        }
    }
}
