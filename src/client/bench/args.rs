//! The command line of `roomcast bench`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};

use roomcast::codes::limits::{MAX_MAX_RATE, MIN_MAX_RATE};
use roomcast::config::ConfigError;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// C connections to /echo, each keeping --window messages of --size bytes in flight (closed loop).
    Echo,
    /// C subscribers over --rooms rooms, --publishers publishers at --rate msgs/s (0: as fast as the window allows).
    Fanout,
    /// Handshakes per second (JWT included), or with --churn: connect, join, leave, disconnect loops.
    Connect,
    /// Hold C authenticated connections, each joined to one room, for --duration.
    Idle,
}

/// Which server speaks what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// roomcast: /echo, and JSON room events on /ws with tokens.
    Roomcast,
    /// A peer with /echo and /room/NAME broadcasting raw messages to the other members.
    Raw,
    /// A Socket.IO server (Engine.IO v4 framing over WebSocket; see perf/peers).
    Socketio,
}

/// How roomcast clients encode their messages on `/ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// JSON in text frames.
    Json,
    /// `roomcast.msgpack`: MessagePack in binary frames (section 14).
    Msgpack,
}

/// What a fan-out publisher's `data` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// A string: the record, padded with `x` to --size bytes.
    Padded,
    /// A JSON price update of about --size bytes: a symbol and order book
    /// levels with varied digits, compressible as real market data is.
    Prices,
}

/// Flags of `roomcast bench`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Scenarios:
  echo     C connections to /echo, each keeping W messages of S bytes in flight; latency per echo.
  fanout   C subscribers spread over R rooms, K (--rooms-per-sub) distinct rooms each (room:join), P publishers with `pub` tokens (rate 0),
           each publishing to its share of the rooms in turn (peers: one room per publisher),
           S-byte payloads, at --rate total messages/s (paced) or, with --rate 0, keeping
           --window messages in flight per room: each publisher has one probe subscriber per
           room it publishes to, in its own thread, and a message is in flight until that
           probe received it. The same rule for every target (the probes count as subscribers).
           Counts deliveries, lost messages and out-of-order seq per subscriber and room.
  connect  handshakes per second including JWT validation; --churn adds join and leave.
  idle     holds C connections, each joined to one room (and to --common-room), for --duration;
           server RSS per connection. With --rate, one publisher sends that many messages a second
           into the rooms in turn, and with --common-every one into the common room that often:
           the time until each message's last delivery (p50, p99, max), rooms and common apart.

Latency comes from a timestamp in each payload (p50, p90, p99, p99.9, max). With --server-pid the
server's CPU time per delivered message and its RSS are reported, and which side was saturated.
Targets only loopback addresses; every run is bounded by --duration and stops by itself.")]
pub struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Protocol of the server under test.
    #[arg(long, value_enum, default_value = "roomcast")]
    pub target: Target,
    /// Secret to mint tokens with (roomcast target).
    #[arg(
        long = "jwt-secret",
        env = "ROOMCAST_JWT_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub jwt_secret: String,
    /// Connections (echo, connect concurrency, idle) or subscribers (fanout).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub conns: usize,
    /// Rooms (fanout, idle).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Fan-out (roomcast target): rooms each subscriber joins, every join
    /// with the same options (`--max-rate`, `--delta`); at most --rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms_per_sub: usize,
    /// Publishers (fanout).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Idle (roomcast target): every connection also joins this room, so
    /// that one room holds them all besides the --rooms they are spread over.
    #[arg(long, value_name = "ROOM")]
    pub common_room: Option<String>,
    /// Idle with --common-room: the publisher also sends a message into the
    /// common room this often, the first when the window begins.
    #[arg(long, value_parser = duration)]
    pub common_every: Option<Duration>,
    /// Idle (roomcast target): this share of the connections (0.01: 1 %)
    /// closes and connects again every second of the window, each joining
    /// its rooms again with the `since` and `epoch` of the last message it
    /// got in each (section 7 recovery); a join answered `recovered: false`
    /// is an error (`not_recovered`).
    #[arg(long, default_value_t = 0.0)]
    pub reconnect_rate: f64,
    /// Payload size in bytes (echo message; fanout `data` padding).
    #[arg(long, short = 's', default_value_t = 32)]
    pub size: usize,
    /// Fan-out `data` (roomcast target): padded string or JSON price update.
    #[arg(long, value_enum, default_value = "padded")]
    pub payload: Payload,
    /// Encoding on /ws (roomcast target): JSON text frames, or offer
    /// `roomcast.msgpack` and speak MessagePack in binary frames.
    #[arg(long, value_enum, default_value = "json")]
    pub protocol: Protocol,
    /// Offer permessage-deflate in every upgrade; frames the server sends
    /// compressed are inflated before they are counted.
    #[arg(long)]
    pub compression: bool,
    /// Messages in flight per echo connection; per room at --rate 0 (fanout).
    #[arg(long, short = 'w', default_value_t = 16)]
    pub window: usize,
    /// Fan-out: total messages per second over all publishers; 0: as fast as the window allows.
    /// Idle: one publisher sends this many messages a second into the --rooms, in turn.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Fan-out (roomcast target): subscribers join with `data.maxRate` (0.1
    /// to 1000 per second); the latency probes do not. Deliveries are then
    /// not checked against what was published.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Fan-out (roomcast target): subscribers join with `data.delta: true`
    /// and get most events as Fossil deltas (section 14), which carry no
    /// latency record: the latency is the probes' and the whole events'.
    #[arg(long)]
    pub delta: bool,
    /// Fan-out (roomcast target): publish without an `id`, so roomcast
    /// sends no ack (fire and forget, as the peers are measured); a message
    /// counts as published once sent, not once acknowledged.
    #[arg(long)]
    pub no_ack: bool,
    /// Length of the measured window.
    #[arg(long, short = 'd', default_value = "5s", value_parser = duration)]
    pub duration: Duration,
    /// Stop after this many messages (echo, fanout publishes) or handshakes (connect).
    #[arg(long)]
    pub count: Option<u64>,
    /// Client threads per process [default: number of cores].
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Comma-separated loopback source addresses, used round-robin (e.g. 127.0.1.1,127.0.1.2).
    #[arg(long, value_delimiter = ',')]
    pub src_ips: Vec<IpAddr>,
    /// Connect scenario: join and leave a room on each connection before closing it.
    #[arg(long)]
    pub churn: bool,
    /// The server's process id, to report its CPU time and memory; repeatable
    /// (or comma-separated) for a server of several processes (the nodes of a
    /// cluster, and Redis), whose figures are summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Speak TLS (wss://, TLS 1.3 when the server offers it); the server's certificate is not checked (loopback only).
    #[arg(long)]
    pub tls: bool,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most sockets one process opens; more are spread over worker processes.
    #[arg(long, default_value_t = 18_000)]
    pub sockets_per_process: usize,
    /// Connections in flight at once per thread while connecting: from
    /// the TCP connect until upgraded and every join acknowledged.
    #[arg(long, default_value_t = 128)]
    pub connect_window: usize,
    /// A connection not upgraded (and joined) this long after its connect
    /// began is dropped and counted as a connect, handshake or ack timeout.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Longest connect phase: a worker starts measuring with what is open by then.
    #[arg(long, default_value = "120s", value_parser = duration)]
    pub connect_limit: Duration,
    /// This process is worker N (internal).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    /// Of this many workers (internal).
    #[arg(long, hide = true, default_value_t = 1)]
    pub workers: usize,
}

fn duration(text: &str) -> Result<Duration, ConfigError> {
    roomcast::config::parse_duration(text)
}

/// Why the flags cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArgs(pub &'static str);

impl std::fmt::Display for BadArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl BenchArgs {
    /// Checks bounds and the loopback-only rule.
    pub fn validate(&self) -> Result<(), BadArgs> {
        if !self.addr.ip().is_loopback() {
            return Err(BadArgs(
                "--addr must be a loopback address (127.0.0.0/8 or ::1)",
            ));
        }
        if self.src_ips.iter().any(|ip| !ip.is_loopback()) {
            return Err(BadArgs("--src-ips must be loopback addresses"));
        }
        if self.conns == 0 || self.conns > 1_000_000 {
            return Err(BadArgs("--conns must be between 1 and 1000000"));
        }
        if self.rooms == 0 || self.publishers == 0 || self.window == 0 {
            return Err(BadArgs(
                "--rooms, --publishers and --window must be at least 1",
            ));
        }
        if self.rooms_per_sub == 0 || self.rooms_per_sub > self.rooms {
            return Err(BadArgs("--rooms-per-sub must be between 1 and --rooms"));
        }
        if self.rooms_per_sub > 1
            && (self.scenario != Scenario::Fanout || self.target != Target::Roomcast)
        {
            return Err(BadArgs(
                "--rooms-per-sub above 1 is for the roomcast target's fanout",
            ));
        }
        if self.size > 1 << 20 {
            return Err(BadArgs("--size must be at most 1MiB"));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err(BadArgs("--duration must be between 1ms and 1h"));
        }
        let hour = Duration::from_secs(3600);
        if self.connect_timeout.is_zero()
            || self.connect_limit.is_zero()
            || self.connect_timeout > hour
            || self.connect_limit > hour
        {
            return Err(BadArgs(
                "--connect-timeout and --connect-limit must be between 1ms and 1h",
            ));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(BadArgs("--rate must be a number >= 0"));
        }
        if let Some(rate) = self.max_rate
            && (self.scenario != Scenario::Fanout
                || self.target != Target::Roomcast
                || !(MIN_MAX_RATE..=MAX_MAX_RATE).contains(&rate))
        {
            return Err(BadArgs(
                "--max-rate is a number from 0.1 to 1000, for the roomcast target's fanout",
            ));
        }
        if self.delta && (self.scenario != Scenario::Fanout || self.target != Target::Roomcast) {
            return Err(BadArgs("--delta is for the roomcast target's fanout"));
        }
        if self.no_ack && (self.scenario != Scenario::Fanout || self.target != Target::Roomcast) {
            return Err(BadArgs("--no-ack is for the roomcast target's fanout"));
        }
        if self.target == Target::Roomcast && self.jwt_secret.is_empty() {
            return Err(BadArgs(
                "--jwt-secret is needed to mint tokens for roomcast",
            ));
        }
        if self.msgpack() && (self.target != Target::Roomcast || self.scenario == Scenario::Echo) {
            return Err(BadArgs(
                "--protocol msgpack is for the roomcast target's /ws scenarios",
            ));
        }
        if self.compression && self.target == Target::Socketio {
            return Err(BadArgs("--compression is for the roomcast and raw targets"));
        }
        if let Some(room) = &self.common_room
            && (self.scenario != Scenario::Idle
                || self.target != Target::Roomcast
                || !roomcast::proto::names::is_valid_room(room))
        {
            return Err(BadArgs(
                "--common-room is a valid room name, for the roomcast target's idle scenario",
            ));
        }
        if self
            .common_every
            .is_some_and(|every| every.is_zero() || self.common_room.is_none())
        {
            return Err(BadArgs(
                "--common-every is a positive duration, with --common-room",
            ));
        }
        if self.scenario == Scenario::Idle && self.rate > 0.0 && self.target != Target::Roomcast {
            return Err(BadArgs(
                "--rate in the idle scenario is for the roomcast target",
            ));
        }
        if !(0.0..=1.0).contains(&self.reconnect_rate)
            || (self.reconnect_rate > 0.0
                && (self.scenario != Scenario::Idle || self.target != Target::Roomcast))
        {
            return Err(BadArgs(
                "--reconnect-rate is a share from 0 to 1, for the roomcast target's idle scenario",
            ));
        }
        if self.sockets_per_process == 0 || self.sockets_per_process > 19_000 {
            return Err(BadArgs("--sockets-per-process must be between 1 and 19000"));
        }
        Ok(())
    }

    /// Whether clients speak `roomcast.msgpack`.
    pub fn msgpack(&self) -> bool {
        self.protocol == Protocol::Msgpack
    }

    /// Whether fan-out publishers keep a window per room, with probes.
    pub fn probed(&self) -> bool {
        self.scenario == Scenario::Fanout && self.rate == 0.0
    }

    /// Clients spread over the worker processes (a publisher's probes go
    /// with it and are not counted).
    pub fn clients(&self) -> usize {
        match self.scenario {
            Scenario::Fanout => self.conns + self.publishers,
            Scenario::Idle => self.conns + usize::from(self.idle_publisher()),
            _ => self.conns,
        }
    }

    /// Whether the idle scenario has its publisher (`--rate` or
    /// `--common-every`).
    pub fn idle_publisher(&self) -> bool {
        self.scenario == Scenario::Idle && (self.rate > 0.0 || self.common_every.is_some())
    }

    /// The room index of the common room in a publisher's templates.
    pub fn common_room_index(&self) -> usize {
        self.rooms
    }

    /// The name of room `index`: `bench-<index>`, or the common room.
    pub fn room_name(&self, index: usize) -> String {
        match &self.common_room {
            Some(common) if index == self.common_room_index() => common.clone(),
            _ => format!("bench-{index}"),
        }
    }

    /// Sockets the whole run opens at once, probes included.
    pub fn sockets(&self) -> usize {
        let probes = if self.probed() {
            (0..self.publishers)
                .map(|p| self.rooms_of_publisher(p).len())
                .sum()
        } else {
            0
        };
        self.clients() + probes
    }

    /// The rooms publisher `index` publishes to, in turn. A roomcast
    /// publisher takes rooms `index`, `index + P`, `index + 2P`, … (one
    /// connection may publish to any room); a peer's publisher is bound to
    /// the one room of its path.
    pub fn rooms_of_publisher(&self, index: usize) -> Vec<usize> {
        let room = index % self.rooms;
        if self.target != Target::Roomcast {
            return vec![room];
        }
        let mine: Vec<usize> = (index..self.rooms).step_by(self.publishers).collect();
        if mine.is_empty() { vec![room] } else { mine }
    }

    /// The rooms subscriber `index` joins: `rooms_per_sub` (K) in a row
    /// from `index * K`, modulo the rooms. Subscribers' runs follow one
    /// another, so the rooms are K distinct ones and every room gets the
    /// same number of members, give or take one (`members_of`); K = 1 is
    /// room `index % rooms`.
    pub fn rooms_of_subscriber(&self, index: usize) -> impl Iterator<Item = usize> + use<> {
        let (rooms, per_sub) = (self.rooms, self.rooms_per_sub);
        let first = index % rooms * (per_sub % rooms) % rooms;
        (0..per_sub).map(move |j| (first + j) % rooms)
    }

    /// How many subscribers join `room` (`rooms_of_subscriber`): the
    /// joins are the numbers 0..C*K in a row, modulo the rooms.
    pub fn members_of(&self, room: usize) -> u64 {
        let joins = self.conns * self.rooms_per_sub;
        (joins / self.rooms + usize::from(room < joins % self.rooms)) as u64
    }

    /// Client threads per process.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn fanout(flags: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench", "fanout", "--jwt-secret", "s"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).args
    }

    fn rooms_of(args: &BenchArgs, index: usize) -> Vec<usize> {
        args.rooms_of_subscriber(index).collect()
    }

    #[test]
    fn one_room_per_subscriber_is_index_modulo_rooms() {
        let args = fanout(&["-c", "7", "--rooms", "3"]);
        let rooms: Vec<usize> = (0..7).flat_map(|i| rooms_of(&args, i)).collect();
        assert_eq!(rooms, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(
            (0..3).map(|r| args.members_of(r)).collect::<Vec<_>>(),
            [3, 2, 2]
        );
    }

    #[test]
    fn a_subscriber_joins_k_distinct_rooms_and_members_add_up() {
        for (conns, rooms, per_sub) in [(20, 8, 4), (1000, 200, 20), (7, 5, 5), (9, 10, 3)] {
            let args = fanout(&[
                "-c",
                &conns.to_string(),
                "--rooms",
                &rooms.to_string(),
                "--rooms-per-sub",
                &per_sub.to_string(),
            ]);
            let mut members = vec![0u64; rooms];
            for index in 0..conns {
                let mine = rooms_of(&args, index);
                let mut distinct = mine.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), per_sub, "subscriber {index}: {mine:?}");
                assert!(mine.iter().all(|&r| r < rooms));
                for room in mine {
                    members[room] += 1;
                }
            }
            let counted: Vec<u64> = (0..rooms).map(|r| args.members_of(r)).collect();
            assert_eq!(members, counted, "{conns} x {per_sub} over {rooms}");
            let (least, most) = (members.iter().min(), members.iter().max());
            assert!(most.unwrap() - least.unwrap() <= 1, "{members:?}");
        }
    }

    #[test]
    fn reconnect_rate_is_a_share_for_the_idle_scenario() {
        let idle = |rate: &str| {
            let flag = format!("--reconnect-rate={rate}");
            Cli::parse_from(["bench", "idle", "--jwt-secret", "s", &flag])
                .args
                .validate()
        };
        assert!(idle("0.01").is_ok());
        assert!(idle("1.5").is_err());
        assert!(idle("-0.1").is_err());
        assert!(fanout(&["--reconnect-rate", "0.01"]).validate().is_err());
    }

    #[test]
    fn rooms_per_sub_must_be_between_one_and_the_rooms() {
        assert!(
            fanout(&["--rooms", "4", "--rooms-per-sub", "4"])
                .validate()
                .is_ok()
        );
        for bad in ["0", "5"] {
            let args = fanout(&["--rooms", "4", "--rooms-per-sub", bad]);
            assert_eq!(
                args.validate(),
                Err(BadArgs("--rooms-per-sub must be between 1 and --rooms"))
            );
        }
        let raw = fanout(&["--rooms", "4", "--rooms-per-sub", "2", "--target", "raw"]);
        assert!(raw.validate().is_err());
    }
}
