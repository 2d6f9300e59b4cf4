//! Redis Cluster (`redis+cluster://`): the slot map, one link per master,
//! every command to the master of its key's slot, `-MOVED` (the map is
//! read again, the command sent where it belongs) and `-ASK` (`ASKING`,
//! then the command, once) followed, and the rooms of a slot that moved
//! subscribed and recovered at their new master.
//!
//! The map comes from `CLUSTER SLOTS`, asked on every link as it connects
//! and again (at most every `REFRESH_EVERY`) after a redirection, a lost
//! link, a refused subscription or a channel the cluster unsubscribed; and
//! every `REFRESH_ANYWAY`. A map out of shape is logged and the last one
//! kept. A link whose master is no longer in the map is retired (closed,
//! not retried); one is made for a new master. The whole cluster is one
//! logical server for node-level keys (the online set, heartbeats, node
//! room indexes): they share the `{~}` tag, so one slot, one master.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bridge, BridgeSink, Link, Pending};
use crate::redis::layout;
use crate::redis::resp::{self, Reply};
use crate::redis::slots::{Address, Redirect, SlotMap};
use crate::redis::url::RedisUrl;
use crate::{log_info, log_warn};

/// Least time between two `CLUSTER SLOTS`.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// The map is read again this often even when nothing says it changed.
const REFRESH_ANYWAY: Duration = Duration::from_secs(10);
/// Most redirections one command follows before it is answered
/// `Unavailable` (a map that keeps moving must not bounce it for ever).
const MAX_REDIRECTS: u8 = 3;

/// What the bridge knows of the Redis Cluster.
pub(super) struct Topology {
    /// The URL given (credentials), for the links to the masters.
    template: RedisUrl,
    /// `--redis-replicas` and `--redis-timeout`, for the links to the masters.
    replicas: u8,
    timeout: Duration,
    map: Option<SlotMap>,
    /// Per master of `map` (in its order), the link to it.
    owners: Vec<usize>,
    /// A map read and not applied yet (`apply_map`, out of the read loop).
    fresh: Option<SlotMap>,
    /// Something says the map may be stale.
    stale: bool,
    /// A `CLUSTER SLOTS` is in flight.
    asking: bool,
    next_refresh: Instant,
    refresh_anyway: Instant,
    /// Rooms to subscribe (and recover) again after the next map; `None`
    /// stands for the node-level channels.
    again: HashSet<Option<Arc<str>>>,
}

impl Topology {
    pub(super) fn new(template: RedisUrl, replicas: u8, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            template,
            replicas,
            timeout,
            map: None,
            owners: Vec::new(),
            fresh: None,
            stale: false,
            asking: false,
            next_refresh: now,
            refresh_anyway: now + REFRESH_ANYWAY,
            again: HashSet::new(),
        }
    }

    /// The links of the seed nodes, which the first map replaces.
    pub(super) fn seed_links<A>(url: &RedisUrl, replicas: u8, timeout: Duration) -> Vec<Link<A>> {
        url.seeds()
            .iter()
            .map(|(host, port)| Link::for_cluster(url.at(host, *port), replicas, timeout))
            .collect()
    }

    /// The link of `slot`'s master (the first seed's before any map).
    fn link_of(&self, slot: u16) -> usize {
        match &self.map {
            Some(map) => self.owners[map.owner(slot)],
            None => 0,
        }
    }

    /// A link went down: the map is read again until it is back, so that
    /// a failover's new master is found.
    pub(super) fn link_lost(&mut self) {
        self.stale = true;
    }

    /// `room` (`None`: the node-level channels) is to be served again once
    /// the map is read.
    pub(super) fn serve_again(&mut self, room: Option<Arc<str>>) {
        self.again.insert(room);
        self.stale = true;
    }
}

impl<S: BridgeSink> Bridge<S> {
    /// The link that holds `room`'s keys and channel (`redis::ONLINE`: the
    /// node-level ones): its server among several `--redis`, or the master
    /// of its slot in a Redis Cluster.
    pub(super) fn route(&self, room: &str) -> usize {
        match &self.topology {
            None => layout::server_of(room, self.links.len()),
            Some(topology) => topology.link_of(layout::slot(layout::tag_of(room).as_bytes())),
        }
    }

    /// Where a node room index entry goes for a room on link `room_link`:
    /// with it on each server; in a Redis Cluster, with the node-level keys.
    pub(super) fn index_link(&self, room_link: usize) -> usize {
        match &self.topology {
            None => room_link,
            Some(_) => self.route(crate::redis::ONLINE),
        }
    }

    /// The links that hold a heartbeat: every server, or in a Redis
    /// Cluster the one master of the node-level keys.
    pub(super) fn heartbeat_links(&self) -> Vec<usize> {
        match &self.topology {
            None => (0..self.links.len()).collect(),
            Some(_) => vec![self.route(crate::redis::ONLINE)],
        }
    }

    /// Asks for the map when it may be stale, at most every `REFRESH_EVERY`,
    /// on any link that is up.
    pub(super) fn refresh_map(&mut self) {
        let now = Instant::now();
        let any_down = self.links.iter().any(|l| !l.retired && !l.is_up());
        let Some(topology) = &mut self.topology else {
            return;
        };
        let due = topology.stale || any_down || now >= topology.refresh_anyway;
        if !due || topology.asking || now < topology.next_refresh {
            return;
        }
        let Some(link) = self.links.iter_mut().find(|l| !l.retired && l.is_up()) else {
            return;
        };
        let pushed = link.pipeline.push(Pending::Topology, |out| {
            resp::write_command(out, &["CLUSTER", "SLOTS"]);
        });
        if pushed.is_ok() {
            topology.asking = true;
            topology.stale = false;
            topology.next_refresh = now + REFRESH_EVERY;
            topology.refresh_anyway = now + REFRESH_ANYWAY;
        }
    }

    /// A `CLUSTER SLOTS` reply and the link it came from (`None`: the
    /// link went down first).
    pub(super) fn on_topology(&mut self, answer: Option<(usize, &Reply)>) {
        let Some(topology) = &mut self.topology else {
            return;
        };
        topology.asking = false;
        let Some((index, reply)) = answer else {
            topology.stale = true;
            return;
        };
        let asked = self.links.get(index).map_or("", |l| l.url.host.as_str());
        match SlotMap::from_slots(reply, asked) {
            Ok(map) if topology.map.as_ref() != Some(&map) || !topology.again.is_empty() => {
                topology.fresh = Some(map);
            }
            Ok(_) => {}
            Err(e) => {
                topology.stale = true;
                self.metrics.cluster_maps_refused.inc();
                log_warn!("redis cluster: {e}; the last slot map stands");
            }
        }
    }

    /// Applies a map read meanwhile: links for new masters, retired ones for
    /// masters gone, and the rooms whose slot changed master (or that are
    /// to be served again) subscribed and recovered where they are now.
    pub(super) fn apply_map(&mut self) {
        let Some(topology) = self.topology.as_mut() else {
            return;
        };
        let Some(map) = topology.fresh.take() else {
            return;
        };
        let again = std::mem::take(&mut topology.again);
        let rooms: Vec<Arc<str>> = self.subscriptions.rooms().cloned().collect();
        let before: Vec<usize> = rooms.iter().map(|r| self.route(r)).collect();
        let online_before = self.route(crate::redis::ONLINE);
        let owners: Vec<usize> = map.masters().iter().map(|m| self.link_to(m)).collect();
        let known = self.topology.as_ref().and_then(|t| t.map.as_ref());
        if known.is_none_or(|known| known.masters() != map.masters()) {
            let masters: Vec<String> = map.masters().iter().map(ToString::to_string).collect();
            log_info!("redis cluster: masters {}", masters.join(" "));
        }
        for index in 0..self.links.len() {
            if !owners.contains(&index) && !self.links[index].retired {
                self.retire(index);
            }
        }
        if let Some(topology) = self.topology.as_mut() {
            topology.map = Some(map);
            topology.owners = owners;
        }
        let mut moved: Vec<Vec<Arc<str>>> = vec![Vec::new(); self.links.len()];
        for (room, before) in rooms.into_iter().zip(before) {
            let now = self.route(&room);
            if now != before || again.contains(&Some(room.clone())) {
                moved[now].push(room);
            }
        }
        for (index, rooms) in moved.into_iter().enumerate() {
            // A link not connected subscribes its rooms as it connects.
            if !rooms.is_empty() && self.links[index].stream.is_some() {
                self.serve_on(index, &rooms);
            }
        }
        let online = self.route(crate::redis::ONLINE);
        if (online != online_before || again.contains(&None)) && self.links[online].stream.is_some()
        {
            self.subscribe_node_channels(online);
        }
    }

    /// The link to `master`: the one it has, or a new one (in a retired
    /// link's place when there is one).
    fn link_to(&mut self, master: &Address) -> usize {
        let same = |l: &Link<S::Answer>| l.url.host == master.host && l.url.port == master.port;
        if let Some(index) = self.links.iter().position(same) {
            self.links[index].retired = false;
            return index;
        }
        let Some(topology) = &self.topology else {
            return 0;
        };
        let url = topology.template.at(&master.host, master.port);
        let link = Link::for_cluster(url, topology.replicas, topology.timeout);
        match self
            .links
            .iter()
            .position(|l| l.retired && l.stream.is_none())
        {
            Some(index) => {
                self.links[index] = link;
                index
            }
            None => {
                self.links.push(link);
                self.links.len() - 1
            }
        }
    }

    /// A link whose node is no longer a master: closed, not retried.
    fn retire(&mut self, index: usize) {
        log_info!(
            "redis cluster: {} is no longer a master",
            self.links[index].url
        );
        if self.links[index].stream.is_some() {
            self.drop_link(index);
        }
        self.links[index].retired = true;
    }

    /// `-MOVED` or `-ASK` to `pending`, whose `command` was not run: it goes
    /// where the error says if that master's link is up (after `ASKING`
    /// for `-ASK`), at most `MAX_REDIRECTS` times; otherwise it is answered
    /// `Unavailable`. `-MOVED` also has the map read again.
    pub(super) fn redirected(
        &mut self,
        pending: Pending<S::Answer>,
        error: &str,
        command: Vec<u8>,
        redirects: u8,
    ) {
        let redirect = Redirect::parse(error);
        if let Some(topology) = &mut self.topology
            && !matches!(redirect, Some(Redirect::Ask { .. }))
        {
            topology.stale = true;
        }
        let target = redirect.as_ref().and_then(|r| {
            let to = r.to();
            self.links.iter().position(|l| {
                !l.retired && l.is_up() && l.url.host == to.host && l.url.port == to.port
            })
        });
        let (Some(redirect), Some(target)) = (redirect, target) else {
            log_warn!("redis cluster: {error}: no link to follow it; answered unavailable");
            return self.answer_unavailable(pending);
        };
        if redirects >= MAX_REDIRECTS {
            log_warn!(
                "redis cluster: {error}: {redirects} redirections already; answered unavailable"
            );
            return self.answer_unavailable(pending);
        }
        let link = &mut self.links[target];
        if matches!(redirect, Redirect::Ask { .. }) {
            let _ = link.pipeline.push(Pending::Ignored, |out| {
                resp::write_command(out, &["ASKING"]);
            });
        }
        match link.pipeline.push_again(pending, command, redirects + 1) {
            Ok(()) => self.metrics.cluster_redirects.inc(),
            Err(pending) => self.answer_unavailable(pending),
        }
    }

    /// The answer to a subscription in a Redis Cluster: a refusal (the
    /// channel's slot is elsewhere) has it made again after the next map.
    /// A refused unsubscription needs nothing: that node does not serve
    /// the channel.
    pub(super) fn on_subscribed(&mut self, room: Option<Arc<str>>, subscribe: bool, reply: &Reply) {
        let Reply::Error(error) = reply else {
            return;
        };
        if !subscribe {
            return;
        }
        log_warn!("redis cluster: a subscription was refused: {error}");
        let served = match &room {
            Some(room) => self.subscriptions.room(room).is_some(),
            None => true,
        };
        if let Some(topology) = &mut self.topology
            && served
        {
            topology.serve_again(room);
        }
    }

    /// A `sunsubscribe` push the node did not ask for: the cluster moved the
    /// channel's slot (a reshard, or its master became a replica). A room
    /// still served is subscribed again at its master with the next map.
    pub(super) fn on_unsubscribed(&mut self, channel: &[u8]) {
        if self.topology.is_none() {
            return;
        }
        let node_level = [
            &self.direct_channel,
            &self.api_channel,
            &self.api_node_channel,
        ]
        .iter()
        .any(|c| c.as_bytes() == channel);
        let room = super::room_of(&self.config.cluster.prefix, channel)
            .and_then(|room| self.subscriptions.room(room).cloned());
        let again = match room {
            Some(room) => Some(room),
            None if node_level => None,
            None => return,
        };
        log_info!("redis cluster: a channel moved; subscribing it again where it lives now");
        if let Some(topology) = &mut self.topology {
            topology.serve_again(again);
        }
    }
}
