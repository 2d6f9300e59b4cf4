//! The demo's price feed: a synthetic live-price feed, for a first look at
//! roomcast in a browser. `roomcast demo-feed` runs it against a server;
//! `serve --demo` runs it in a thread of the server's process, publishing
//! into that server, whose `GET /demo` page (`web::demo`) shows 20 symbols
//! ticking through `/roomcast.js`.
//!
//! Each symbol `T000`, `T001`, ... has its room `prices:<symbol>` and a price
//! that walks at random. Ticks are published over one kept-alive
//! `POST /publish` connection, a batch every 100 ms, like any other client
//! of the server would. Owns the feed, its flags and its token.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use roomcast::auth::{self, TokenSpec};

/// Flags of `roomcast demo-feed`.
#[derive(Debug, Args)]
pub struct DemoFeedArgs {
    /// The server to publish to (POST /publish).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The server's HS256 secret, to sign the feed's token.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Symbols, each with its room prices:T000, prices:T001, ...
    #[arg(long, default_value_t = 200)]
    pub symbols: usize,
    /// Price updates per second, over all symbols.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Stop after this long (seconds, or ms/s/m); 0: run until interrupted.
    #[arg(long, default_value = "0", value_parser = roomcast::config::parse_duration)]
    pub duration: Duration,
}

/// `roomcast demo-feed`: runs until interrupted or `--duration`.
pub fn run_command(args: &DemoFeedArgs) -> ExitCode {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) || args.symbols == 0 {
        eprintln!("roomcast demo-feed: --rate must be in (0, 10000] and --symbols at least 1");
        return ExitCode::from(crate::EXIT_BAD_CONFIG);
    }
    let config = FeedConfig {
        addr: args.addr,
        token: publisher_token(args.secret.as_bytes()),
        symbols: args.symbols,
        rate: args.rate,
        duration: (!args.duration.is_zero()).then_some(args.duration),
    };
    eprintln!(
        "demo-feed: {} symbols, {} updates/s into http://{}/publish (rooms prices:T000...)",
        args.symbols, args.rate, args.addr
    );
    let stop = AtomicBool::new(false);
    let published = run(&config, &stop);
    eprintln!("demo-feed: {published} updates published");
    ExitCode::SUCCESS
}

/// `serve --demo`: the feed runs for the rest of the process in a thread of
/// its own, publishing into the server at `addr` (loopback when it listens
/// on every address); the page is at /demo.
pub fn start_in_process(addr: SocketAddr, secret: &str) {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let config = FeedConfig {
        addr: target,
        token: publisher_token(secret.as_bytes()),
        symbols: 200,
        rate: 50.0,
        duration: None,
    };
    // Never set: the feed stops with the process.
    static STOP: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(move || run(&config, &STOP));
    println!("demo: a price feed runs; open http://{target}/demo");
}

/// Batches a second.
const TICKS_PER_SECOND: u32 = 10;
/// Most messages in one batch (`POST /publish` takes up to 1000).
const MAX_BATCH: usize = 1000;

/// The name of symbol `i`.
fn symbol(i: usize) -> String {
    format!("T{i:03}")
}

/// The feed's settings.
#[derive(Debug, Clone)]
struct FeedConfig {
    addr: SocketAddr,
    /// A token that may publish to `prices:*` (see `publisher_token`).
    token: String,
    symbols: usize,
    /// Price updates a second, over all symbols.
    rate: f64,
    /// Stop after this long; `None`: until `stop`.
    duration: Option<Duration>,
}

/// A token for the feed: may publish to `prices:*`, no rate limit.
fn publisher_token(secret: &[u8]) -> String {
    let spec = TokenSpec {
        sub: "demo-feed".into(),
        publish: vec!["prices:*".into()],
        rate: Some(0.0),
        ttl_secs: 365 * 24 * 3600,
        ..Default::default()
    };
    auth::mint_spec(&spec, secret, roomcast::sys::unix_ms() / 1000)
}

/// A small xorshift generator: the walk needs no cryptographic randomness.
struct Walk {
    state: u64,
    prices: Vec<f64>,
}

impl Walk {
    fn new(symbols: usize, seed: u64) -> Self {
        let prices = (0..symbols)
            .map(|i| 50.0 + (i % 200) as f64 * 2.5)
            .collect();
        Self {
            state: seed | 1,
            prices,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// Moves one symbol's price by up to ±0.5%; returns it and the change.
    fn step(&mut self) -> (usize, f64, f64) {
        let i = (self.next_u64() % self.prices.len() as u64) as usize;
        let unit = (self.next_u64() % 2001) as f64 / 1000.0 - 1.0;
        let old = self.prices[i];
        let new = (old * (1.0 + unit * 0.005)).max(0.01);
        self.prices[i] = new;
        (i, new, new - old)
    }
}

/// One batch body of `n` ticks.
fn batch(walk: &mut Walk, n: usize) -> String {
    let mut body = String::with_capacity(64 + n * 110);
    body.push_str("{\"messages\":[");
    for k in 0..n {
        let (i, price, change) = walk.step();
        if k > 0 {
            body.push(',');
        }
        let name = symbol(i);
        body.push_str(&format!(
            "{{\"room\":\"prices:{name}\",\"event\":\"price:tick\",\"data\":{{\"symbol\":\"{name}\",\"price\":{price:.2},\"change\":{change:.4}}}}}"
        ));
    }
    body.push_str("]}");
    body
}

/// Runs the feed until `stop` is set (or its duration passes); returns the
/// ticks published. A lost connection is made again a second later.
fn run(config: &FeedConfig, stop: &AtomicBool) -> u64 {
    let mut walk = Walk::new(config.symbols.max(1), auth::random_u64());
    let per_tick = config.rate / f64::from(TICKS_PER_SECOND);
    let started = Instant::now();
    let mut owed = 0.0;
    let mut published = 0;
    let mut conn: Option<TcpStream> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && config.duration.is_none_or(|d| started.elapsed() < d) {
        next += Duration::from_secs(1) / TICKS_PER_SECOND;
        owed += per_tick;
        let n = (owed as usize).min(MAX_BATCH);
        owed -= n as f64;
        if n > 0 {
            let body = batch(&mut walk, n);
            match post(&mut conn, config, &body) {
                Ok(()) => published += n as u64,
                Err(e) => {
                    roomcast::log_warn!("demo feed: {e}; trying again in a second");
                    conn = None;
                    std::thread::sleep(Duration::from_secs(1));
                    next = Instant::now();
                }
            }
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    published
}

/// Sends one `POST /publish` on the kept-alive connection (made if needed)
/// and reads its response.
fn post(conn: &mut Option<TcpStream>, config: &FeedConfig, body: &str) -> io::Result<()> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&config.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        *conn = Some(stream);
    }
    let stream = conn.as_mut().expect("connected above");
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        config.addr,
        config.token,
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let (status, keep_alive) = read_response(stream)?;
    if !keep_alive {
        *conn = None;
    }
    if status != 200 {
        return Err(io::Error::other(format!("POST /publish answered {status}")));
    }
    Ok(())
}

/// Reads one response; its status and whether the connection stays open.
fn read_response(stream: &mut TcpStream) -> io::Result<(u16, bool)> {
    let (input, end) = roomcast::http::client::read_head(stream)?;
    let mut chunk = [0u8; 4096];
    let head = String::from_utf8_lossy(&input[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = input.len() - end;
    while have < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("the server closed the connection"));
        }
        have += n;
    }
    Ok((status, !head.contains("connection: close")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_a_valid_publish_body_for_the_price_rooms() {
        let mut walk = Walk::new(3, 42);
        let body = batch(&mut walk, 5);
        let mut bytes = body.clone().into_bytes();
        let value = simd_json::to_owned_value(&mut bytes).expect("valid JSON");
        use simd_json::prelude::*;
        let messages = value["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 5);
        for m in messages {
            let room = m["room"].as_str().unwrap();
            let sym = m["data"]["symbol"].as_str().unwrap();
            assert_eq!(room, format!("prices:{sym}"));
            assert!(m["data"]["price"].as_f64().unwrap() > 0.0);
        }
    }

    #[test]
    fn prices_walk_by_at_most_half_a_percent() {
        let mut walk = Walk::new(2, 7);
        for _ in 0..1000 {
            let (i, price, change) = walk.step();
            assert!(i < 2);
            assert!(change.abs() <= (price - change) * 0.005 + 1e-9);
        }
    }
}
