//! The `roomcast` binary: parses the command line and runs a command —
//! the server's (`serve`, `token`, from the library's `cli`) or one of the
//! client tools of `client` (`api`, `bench`, `connect`, `demo-feed`).

#![deny(unsafe_code)]

mod client;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use roomcast::auth;
use roomcast::cli::{EnvLists, MAX_TOKEN_TTL_SECS, ServeArgs, ServerCommand, TokenArgs};
use roomcast::reactor::Server;
use roomcast::{log, preflight, supervisor, sys};

/// roomcast: a fast WebSocket pub/sub server with rooms and JWT auth.
#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Server(ServerCommand),
    /// Call the Server API: POST /api/METHOD with a JSON object, as an API key or an admin token.
    Api(client::api::ApiArgs),
    /// Load-test a server on loopback: echo, fanout, connect or idle.
    Bench(client::bench::args::BenchArgs),
    /// An interactive client: each line typed is sent as one message, each message received is printed.
    Connect(client::term::ConnectArgs),
    /// A synthetic live-price feed: random walks published into rooms prices:SYMBOL.
    DemoFeed(client::demo::DemoFeedArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(ServerCommand::Serve(args)) => serve(*args),
        Command::Server(ServerCommand::Token(args)) => token(args),
        Command::Api(args) => client::api::run_command(&args),
        Command::Bench(args) => client::bench::run(args),
        Command::Connect(args) => client::term::run_command(&args),
        Command::DemoFeed(args) => client::demo::run_command(&args),
    }
}

/// Exit status for a configuration the server refuses to run with.
const EXIT_BAD_CONFIG: u8 = 2;

fn serve(args: ServeArgs) -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env_secrets = std::env::var("ROOMCAST_JWT_SECRET").ok();
    let env_api_keys = std::env::var("ROOMCAST_API_KEY").ok();
    let env = EnvLists {
        jwt_secrets: env_secrets.as_deref(),
        api_keys: env_api_keys.as_deref(),
    };
    let check_only = args.check_config;
    let mut config = match args.into_config(env, cores, sys::open_file_limit()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Some(files) = &config.listen.tls
        && let Err(e) = roomcast::tls::Acceptor::load(files.clone())
    {
        eprintln!("roomcast: --tls-cert/--tls-key: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let redis_tls = match config
        .cluster
        .as_ref()
        .map(roomcast::reactor::bridge::client_tls)
    {
        None => None,
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            let ca = config.cluster.as_ref().is_some_and(|c| c.ca.is_some());
            let flag = if ca { "--redis-ca" } else { "rediss://" };
            eprintln!("roomcast: {flag}: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if check_only {
        let mut json = Vec::with_capacity(1024);
        config.write_json(&mut json);
        println!("{}", String::from_utf8_lossy(&json));
        // Warnings go to stderr and keep the exit status 0: the server would
        // start, it would just not do well in production.
        let facts = preflight::Facts::probe(config.cluster.as_ref(), redis_tls.as_ref());
        for warning in preflight::warnings(&config, &facts) {
            eprintln!("roomcast: warning: {warning}");
        }
        return ExitCode::SUCCESS;
    }
    log::set_level(config.log.level);
    log::set_format(config.log.format);
    let generated = config.auth.secrets.is_empty().then(auth::random_secret);
    if let Some(secret) = &generated {
        config.auth.secrets.push(secret.clone());
    }
    // Checked once the signing key is known (a generated secret included),
    // before any process starts: a `--hook-ca` that cannot be read is a
    // configuration error, as a bad `--tls-cert` is.
    if config.hooks.any_url()
        && let Err(e) = roomcast::reactor::hooks::client_config(&config)
    {
        eprintln!("roomcast: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    if config.listen.processes > 1 {
        return supervise(&config, generated);
    }
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("roomcast: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    if let Some(secret) = generated {
        print_newcomer_banner(&secret, addr);
    }
    println!("roomcast listening on {addr}");
    // A supervised node leaves the feed to its supervisor: one feed a machine.
    if server.demo()
        && std::env::var_os(supervisor::SUPERVISED_ENV).is_none()
        && let Some(secret) = server.first_secret()
    {
        client::demo::start_in_process(addr, secret);
    }
    if let Some(metrics) = server.metrics_addr() {
        println!("roomcast metrics on {metrics}");
    }
    match server.run_until_signalled() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--processes N`: this process only starts and watches N servers.
fn supervise(config: &roomcast::config::Config, generated: Option<String>) -> ExitCode {
    if let Some(secret) = &generated {
        print_newcomer_banner(secret, config.listen.bind);
    }
    // The flags after `serve`, copied to every child.
    let args: Vec<_> = std::env::args_os()
        .skip_while(|arg| arg != "serve")
        .skip(1)
        .collect();
    let plan = supervisor::Plan {
        processes: config.listen.processes,
        args,
        node_id: config
            .cluster
            .as_ref()
            .map_or_else(String::new, |c| c.node_id.clone()),
        generated_secret: generated,
        metrics_bind: config.listen.metrics_bind,
        drain_timeout: config.listen.drain_timeout,
    };
    if config.web.demo
        && let Some(secret) = config.auth.secrets.first()
    {
        client::demo::start_in_process(config.listen.bind, secret);
    }
    supervisor::run(plan)
}

/// Started without a secret: show one, a token, and how to connect.
fn print_newcomer_banner(secret: &str, addr: std::net::SocketAddr) {
    let spec = auth::TokenSpec {
        sub: "demo".into(),
        ttl_secs: 3600,
        ..Default::default()
    };
    let token = auth::mint_spec(&spec, secret.as_bytes(), sys::unix_ms() / 1000);
    println!("No --jwt-secret given; generated one for this run:");
    println!("  secret: {secret}");
    println!("  token (sub=demo, valid 1h): {token}");
    println!("  try: roomcast connect 'ws://{addr}/ws?token={token}'");
    println!("       (target/release/roomcast after `cargo build --release`), then type:");
    println!("       {{\"event\":\"room:join\",\"data\":{{\"room\":\"lobby\"}},\"id\":1}}");
}

fn token(args: TokenArgs) -> ExitCode {
    if args.ttl == 0 || args.ttl > MAX_TOKEN_TTL_SECS {
        eprintln!("roomcast: --ttl must be between 1 and {MAX_TOKEN_TTL_SECS} seconds");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    if args.sub.is_empty() || args.sub.len() > roomcast::codes::limits::MAX_SUB_LEN {
        eprintln!("roomcast: --sub must be 1 to 128 bytes");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let spec = auth::TokenSpec {
        sub: args.sub,
        name: args.name,
        rooms: args.rooms,
        publish: args.publish,
        admin: args.admin,
        rate: args.rate,
        ttl_secs: args.ttl,
    };
    let token = auth::mint_spec(&spec, args.secret.as_bytes(), sys::unix_ms() / 1000);
    println!("{token}");
    ExitCode::SUCCESS
}
