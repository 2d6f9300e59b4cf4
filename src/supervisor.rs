//! `roomcast serve --processes N`: N copies of the server on one machine,
//! one port, one cluster.
//!
//! One process can hold only as many sockets as its open-file limit allows;
//! N processes hold N times as many. The supervisor starts N children of
//! this same binary with the same flags, each listening on the same port
//! with `SO_REUSEPORT` (the kernel spreads connections over every shard of
//! every child) and joined through `--redis`. It restarts a child that
//! dies, passes SIGHUP on (each node reloads its TLS certificate), and on
//! SIGTERM or SIGINT passes the signal on and waits for every
//! child to drain. It serves nothing itself and never touches a socket.
//!
//! Children are told apart by their node id (`<node-id>-<i>`), share the
//! JWT secrets (a generated one goes to them through the environment, never
//! on a command line), and put `--metrics-bind`'s port plus `i` when one is
//! given. Children get SIGTERM if the supervisor itself dies.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{log_info, log_warn};

/// Set in every child's environment: a supervised node (with `--demo`, the
/// supervisor runs the one feed).
pub const SUPERVISED_ENV: &str = "ROOMCAST_SUPERVISED";

/// How often the supervisor looks at its children and signals.
const POLL: Duration = Duration::from_millis(100);
/// A child that dies is started again after this long, so one that cannot
/// start does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Time given to the children past their drain timeout before they are killed.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// What the supervisor runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub processes: usize,
    /// The command line of `serve`, after the program name.
    pub args: Vec<OsString>,
    /// The node id the children's ids derive from.
    pub node_id: String,
    /// A secret generated for this run, shared by every child.
    pub generated_secret: Option<String>,
    /// `--metrics-bind`, when given: child `i` gets its port plus `i`.
    pub metrics_bind: Option<SocketAddr>,
    pub drain_timeout: Duration,
}

/// Flags the supervisor sets per child, left out of the copied command line.
const PER_CHILD_FLAGS: [&str; 3] = ["--processes", "--node-id", "--metrics-bind"];

/// The command line of child `index`: `args` without the per-child flags,
/// then its own `--node-id` and `--metrics-bind`.
pub fn child_args(plan: &Plan, index: usize, metrics_bind: Option<String>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(plan.args.len() + 4);
    let mut skip_value = false;
    for arg in &plan.args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if let Some(flag) = PER_CHILD_FLAGS.iter().find(|f| text.starts_with(**f)) {
            if text.len() == flag.len() {
                skip_value = true;
                continue;
            }
            if text.as_bytes().get(flag.len()) == Some(&b'=') {
                continue;
            }
        }
        out.push(arg.clone());
    }
    out.push("--node-id".into());
    out.push(format!("{}-{index}", plan.node_id).into());
    if let Some(bind) = metrics_bind {
        out.push("--metrics-bind".into());
        out.push(bind.into());
    }
    out
}

/// Runs the children until a signal, then stops them.
pub fn run(plan: Plan) -> ExitCode {
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("roomcast: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics_bind = |i: usize| {
        let bind = plan.metrics_bind?;
        let port = u16::try_from(usize::from(bind.port()) + i).ok()?;
        Some(SocketAddr::new(bind.ip(), port).to_string())
    };
    let mut children: Vec<Option<Child>> = (0..plan.processes)
        .map(|i| spawn(&plan, i, metrics_bind(i)))
        .collect();
    let mut restart_at: Vec<Option<Instant>> = vec![None; plan.processes];
    log_info!("supervising {} processes", plan.processes);
    loop {
        let mut stopping = false;
        for signal in signals.pending() {
            if signal == SIGHUP {
                // Each node reloads its own TLS certificate.
                children
                    .iter()
                    .flatten()
                    .for_each(|c| send_signal(c, SIGHUP));
            } else {
                stopping = true;
            }
        }
        if stopping {
            break;
        }
        for i in 0..plan.processes {
            if let Some(child) = &mut children[i]
                && let Ok(Some(status)) = child.try_wait()
            {
                log_warn!("process {i} exited ({status}); starting it again");
                children[i] = None;
                restart_at[i] = Some(Instant::now() + RESTART_DELAY);
            }
            if children[i].is_none() && restart_at[i].is_some_and(|at| Instant::now() >= at) {
                restart_at[i] = None;
                children[i] = spawn(&plan, i, metrics_bind(i));
                if children[i].is_none() {
                    restart_at[i] = Some(Instant::now() + RESTART_DELAY);
                }
            }
        }
        std::thread::sleep(POLL);
    }
    stop(children, plan.drain_timeout + STOP_MARGIN)
}

fn spawn(plan: &Plan, index: usize, metrics_bind: Option<String>) -> Option<Child> {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            log_warn!("cannot find this program to start process {index}: {e}");
            return None;
        }
    };
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .args(child_args(plan, index, metrics_bind));
    for name in [
        "ROOMCAST_PROCESSES",
        "ROOMCAST_NODE_ID",
        "ROOMCAST_METRICS_BIND",
    ] {
        command.env_remove(name);
    }
    if let Some(secret) = &plan.generated_secret {
        command.env("ROOMCAST_JWT_SECRET", secret);
    }
    command.env(SUPERVISED_ENV, "1");
    let supervisor = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: prctl(2), getppid(2) and
    // _exit(2) are, and it touches no memory but its captured integer.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // A supervisor killed outright (SIGKILL, the OOM killer) takes
            // its children with it instead of leaving them orphaned.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != supervisor as libc::pid_t {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            log_warn!("cannot start process {index}: {e}");
            None
        }
    }
}

/// Sends `signal` to a child that has not been reaped, so its PID cannot
/// belong to another process. A child that has just exited is not an error.
fn send_signal(child: &Child, signal: libc::c_int) {
    let _ = crate::sys::signal(child.id(), signal);
}

/// Passes SIGTERM to every child and waits for them to drain; past
/// `patience`, the ones left are killed.
fn stop(children: Vec<Option<Child>>, patience: Duration) -> ExitCode {
    let mut children: Vec<Child> = children.into_iter().flatten().collect();
    for child in &children {
        send_signal(child, SIGTERM);
    }
    let deadline = Instant::now() + patience;
    let mut clean = true;
    while !children.is_empty() {
        children.retain_mut(|child| match child.try_wait() {
            Ok(Some(status)) => {
                clean &= status.success();
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        if Instant::now() >= deadline {
            for child in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            clean = false;
            break;
        }
        std::thread::sleep(POLL);
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Plan {
        Plan {
            processes: 2,
            args: args.iter().map(OsString::from).collect(),
            node_id: "web".into(),
            generated_secret: None,
            metrics_bind: None,
            drain_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_child_gets_the_same_flags_with_its_own_node_id_and_metrics_port() {
        let plan = plan(&[
            "--bind",
            "0.0.0.0:8080",
            "--processes",
            "4",
            "--node-id=old",
            "--redis",
            "redis://r",
            "--metrics-bind",
            "127.0.0.1:9090",
            "--processes=3",
            "--processesx",
        ]);
        let args = child_args(&plan, 2, Some("127.0.0.1:9092".into()));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            args,
            [
                "--bind",
                "0.0.0.0:8080",
                "--redis",
                "redis://r",
                "--processesx",
                "--node-id",
                "web-2",
                "--metrics-bind",
                "127.0.0.1:9092"
            ]
        );
    }
}
