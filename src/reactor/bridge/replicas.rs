//! `--redis-replicas N`: a publish is acknowledged only once `N` replicas
//! of its server have it (`docs/redis.md`, "Replicas and failover").
//!
//! One `WAIT N 1000` confirms every write the connection made before it,
//! so publishes are not waited for one by one: when the bridge flushes a
//! link whose pipeline holds publishes no `WAIT` covers yet, it appends one
//! `WAIT` for all of them, and their sequenced outcomes are held here, in
//! order, until its reply answers them all. At most one `WAIT` is in flight
//! per connection: Redis runs nothing else of the connection while a `WAIT`
//! blocks it, so a second one would only stack another second of blocking
//! ahead of the heartbeats and joins queued behind it; publishes made
//! meanwhile are covered by the next one.
//!
//! Owns those outcomes; the link's pipeline carries the `WAIT`s
//! (`Pending::Replicated`).

use std::collections::VecDeque;
use std::time::Duration;

use super::{Bridge, BridgeSink, Unavailable};
use crate::log_warn;
use crate::redis::Sequenced;
use crate::redis::resp::{self, Reply};

/// How long a `WAIT` waits for the replicas (section 15: 1 s, then
/// `UNAVAILABLE`).
pub(super) const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// The publishes of one link waiting for their replicas.
pub(super) struct Replication<A> {
    /// `--redis-replicas`: 0 answers every publish as Redis does.
    replicas: u8,
    /// Publishes in the pipeline that no `WAIT` covers yet.
    uncovered: usize,
    /// A `WAIT` is in the pipeline.
    waiting: bool,
    /// The outcomes of publishes Redis answered, oldest first, held until
    /// the `WAIT` that covers them is answered.
    answered: VecDeque<(A, Outcome)>,
}

/// What a publish's caller is answered.
type Outcome = Result<Sequenced, Unavailable>;

impl<A> Replication<A> {
    pub(super) fn new(replicas: u8) -> Self {
        Self {
            replicas,
            uncovered: 0,
            waiting: false,
            answered: VecDeque::new(),
        }
    }
}

impl<A> Replication<A> {
    /// `n` publishes were queued on the link (one call may carry many:
    /// each is held for the `WAIT` as a publish of its own).
    pub(super) fn published(&mut self, n: usize) {
        if self.replicas > 0 {
            self.uncovered += n;
        }
    }

    /// A publish's own reply: with replicas to wait for, its outcome is
    /// held until its `WAIT` is answered; otherwise it is handed back, to
    /// answer now.
    pub(super) fn sequenced(&mut self, answer: A, outcome: Outcome) -> Option<(A, Outcome)> {
        if self.replicas == 0 {
            return Some((answer, outcome));
        }
        self.answered.push_back((answer, outcome));
        None
    }

    /// How many publishes a `WAIT` appended now would cover, if one is due.
    fn due(&self) -> Option<usize> {
        (self.uncovered > 0 && !self.waiting).then_some(self.uncovered)
    }

    /// The `WAIT` that `due` asked for is in the pipeline.
    fn covered(&mut self) {
        self.uncovered = 0;
        self.waiting = true;
    }

    /// A `WAIT` was answered: the `covers` oldest outcomes, which it covers.
    fn answered(&mut self, covers: usize) -> Vec<(A, Outcome)> {
        self.waiting = false;
        let covers = covers.min(self.answered.len());
        self.answered.drain(..covers).collect()
    }

    /// The connection is gone: every outcome held is answered
    /// `Unavailable`, as nothing says its replicas have it.
    pub(super) fn reset(&mut self) -> Vec<A> {
        self.uncovered = 0;
        self.waiting = false;
        self.answered.drain(..).map(|(answer, _)| answer).collect()
    }
}

/// Appends `WAIT replicas 1000`.
fn write_wait(out: &mut Vec<u8>, replicas: u8) {
    let replicas = replicas.to_string();
    let timeout = REPLICA_WAIT.as_millis().to_string();
    resp::write_command(out, &["WAIT", &replicas, &timeout]);
}

impl<S: BridgeSink> Bridge<S> {
    /// Before a flush: one `WAIT` for the publishes of link `index` that no
    /// `WAIT` covers yet (with `--redis-replicas` above 0).
    pub(super) fn cover_publishes(&mut self, index: usize) {
        let link = &mut self.links[index];
        let replicas = link.replication.replicas;
        let Some(covers) = link.replication.due() else {
            return;
        };
        let pushed = link
            .pipeline
            .push(super::Pending::Replicated { covers }, |out| {
                write_wait(out, replicas)
            });
        // A full pipeline takes the `WAIT` at a later flush, once replies
        // made room; until then the publishes stay uncovered.
        if pushed.is_ok() {
            link.replication.covered();
        }
    }

    /// The reply of a `WAIT` that covered the `covers` oldest publishes
    /// held: each is acknowledged if Redis sequenced it and enough replicas
    /// confirmed, `Unavailable` otherwise.
    pub(super) fn on_replicated(&mut self, index: usize, covers: usize, reply: &Reply) {
        let wanted = i64::from(self.links[index].replication.replicas);
        let confirmed = matches!(reply, Reply::Integer(n) if *n >= wanted);
        if !confirmed {
            log_warn!(
                "redis bridge: {}: fewer than {wanted} replicas confirmed publishes within {:?}: {reply:?}",
                self.links[index].url,
                REPLICA_WAIT
            );
        }
        for (answer, outcome) in self.links[index].replication.answered(covers) {
            let outcome = outcome.and_then(|s| if confirmed { Ok(s) } else { Err(Unavailable) });
            self.sink.sequenced(answer, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wait_at_a_time_covers_every_publish_queued_before_it() {
        let mut r: Replication<u32> = Replication::new(1);
        assert_eq!(r.due(), None, "nothing to cover");
        r.published(2);
        assert_eq!(r.due(), Some(2));
        r.covered();
        r.published(1);
        assert_eq!(r.due(), None, "one WAIT in flight at a time");
        for answer in 1..=3 {
            assert!(r.sequenced(answer, Err(Unavailable)).is_none(), "held");
        }
        let first: Vec<u32> = r.answered(2).into_iter().map(|(a, _)| a).collect();
        assert_eq!(first, [1, 2], "the WAIT answers only what it covered");
        assert_eq!(r.due(), Some(1));
        assert_eq!(r.reset(), [3]);
        assert_eq!(r.due(), None);
    }

    #[test]
    fn without_replicas_nothing_is_held_or_waited_for() {
        let mut r: Replication<u32> = Replication::new(0);
        r.published(3);
        assert_eq!(r.due(), None);
        assert!(r.sequenced(1, Err(Unavailable)).is_some());
    }

    #[test]
    fn the_wait_asks_for_the_replicas_within_a_second() {
        let mut out = Vec::new();
        write_wait(&mut out, 2);
        assert_eq!(out, b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n1000\r\n");
    }
}
