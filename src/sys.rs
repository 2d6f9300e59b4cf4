//! The one OS seam: socket options and limits that std and mio do not
//! expose, and the clocks (the wall clock's `unix_ms`, thread CPU time).
//!
//! Owns the `libc` calls of the server (but the supervisor's fork-time setup
//! of its children) and so, with `supervisor`, all of its `unsafe`: each
//! block says why it is sound. Nothing here knows about connections, frames
//! or shards.

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Caps the kernel send buffer of a socket so that the bytes a slow client
/// has not read are held mostly in user space, where `--max-write-buffer`
/// bounds them.
pub fn cap_send_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_SNDBUF, value)
}

/// Makes closing the socket send a reset instead of a FIN, so the closing
/// side keeps no TIME_WAIT entry: the load generator's connect loops would
/// otherwise run out of ephemeral ports within seconds.
pub fn reset_on_close(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the pointer and length describe `linger`, a live local of the
    // type SO_LINGER reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The soft limit on open files of this process.
pub fn open_file_limit() -> usize {
    open_file_limits().map_or(1024, |limits| limits.soft)
}

/// The soft and hard limits on open files of this process; `None` when
/// they cannot be read.
pub fn open_file_limits() -> Option<OpenFileLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which points
    // to a live, properly aligned local of exactly that type.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return None;
    }
    let size = |n: libc::rlim_t| usize::try_from(n).unwrap_or(usize::MAX);
    Some(OpenFileLimits {
        soft: size(limit.rlim_cur),
        hard: size(limit.rlim_max),
    })
}

/// `RLIMIT_NOFILE`: the soft limit is in force; the process may raise it
/// up to the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimits {
    pub soft: usize,
    pub hard: usize,
}

/// Milliseconds since the Unix epoch by the wall clock (0 if it reads
/// earlier): the time the sans-IO core is given, log timestamps, and the
/// `iat` of minted tokens.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends `signal` to process `pid` (kill(2)). The caller makes sure the PID
/// is still the process it means: a child it has not reaped.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes no pointers, so it cannot touch our memory; a
    // PID or signal it refuses is reported through its result.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system) the calling thread has used so far; zero if the
/// clock cannot be read.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` through the pointer, which
    // points to a live, properly aligned local of exactly that type.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    std::time::Duration::new(secs, nanos)
}

/// Pending connections the kernel queues per listener; std's default of 128
/// drops connection attempts under a burst of reconnects.
pub const LISTEN_BACKLOG: libc::c_int = 4096;

/// A non-blocking listener bound with `SO_REUSEPORT` (and `SO_REUSEADDR`),
/// so that several shards can each accept on the same port.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    listener(addr, true)
}

/// A non-blocking listener with `SO_REUSEADDR` and a deep backlog.
pub fn plain_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    listener(addr, false)
}

fn listener(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = nonblocking_socket(addr)?;
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    bind(&socket, addr)?;
    // SAFETY: listen() takes no pointers, so it cannot touch our memory; a
    // bad descriptor is reported through its result.
    if unsafe { libc::listen(socket.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(socket))
}

/// Starts a non-blocking connect to `remote`, from `local` (port chosen by
/// the kernel) when given: the load generator spreads its sockets over
/// several loopback source addresses to get past one address's ~28,000
/// ephemeral ports. The connect completes in the background (EINPROGRESS).
pub fn connect_from(
    local: Option<std::net::IpAddr>,
    remote: SocketAddr,
) -> io::Result<std::net::TcpStream> {
    let socket = nonblocking_socket(remote)?;
    if let Some(ip) = local {
        bind(&socket, SocketAddr::new(ip, 0))?;
    }
    let (storage, len) = socket_addr_to_raw(remote);
    // SAFETY: `storage` holds a sockaddr of `len` bytes, live for the call;
    // connect() only reads it.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
    }
    Ok(std::net::TcpStream::from(socket))
}

/// A new non-blocking, close-on-exec TCP socket of `addr`'s family.
fn nonblocking_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() takes no pointers; a negative result is checked below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(), is valid and owned by no
    // one else, so OwnedFd may take it (and close it on every error path).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(socket: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = socket_addr_to_raw(addr);
    // SAFETY: `storage` is a sockaddr_storage holding a sockaddr_in or
    // sockaddr_in6 of `len` bytes, live for the duration of the call.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system, all threads; and user alone) and resident
/// memory of a process, from `/proc`; `None` when the process is gone or
/// `/proc` is unreadable.
pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let ticks = user + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf takes no pointers.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = kib_field(&status, "VmRSS:")?;
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / per_second,
        user_seconds: user as f64 / per_second,
        rss_bytes: rss_kib * 1024,
    })
}

/// The size of a memory page, in bytes (what `/proc/sys/net/ipv4/tcp_mem`
/// counts in).
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// A reading of `process_usage`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` spent in user space (the rest is the
    /// kernel's: system calls, and on loopback the receiving side's TCP).
    pub user_seconds: f64,
    pub rss_bytes: u64,
}

fn socket_addr_to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are
    // a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned
            // for sockaddr_in; we write one value at its start.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, a live c_int, and the
    // kernel only reads it; an invalid fd or option is reported as an error.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The value of a `Name:   123 kB` line of a `/proc` text
/// (`/proc/meminfo`, `/proc/PID/status`), in KiB.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_size_is_a_power_of_two_of_at_least_4_kib() {
        let size = page_size();
        assert!(size >= 4096 && size.is_power_of_two(), "{size}");
    }

    #[test]
    fn thread_cpu_time_grows_with_work_and_is_per_thread() {
        let ms = std::time::Duration::from_millis;
        let before = thread_cpu_time();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the clock shows 10 ms of work (or 5 s pass on a
        // starved machine, which the assertion then reports).
        while thread_cpu_time() - before < ms(10) && start.elapsed() < ms(5_000) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = thread_cpu_time() - before;
        assert!(used >= ms(10), "{used:?} after {:?}", start.elapsed());
        // A fresh thread starts near zero, whatever this one used.
        let fresh = std::thread::spawn(thread_cpu_time).join().unwrap();
        assert!(fresh < used, "{fresh:?} vs {used:?}");
    }

    fn send_buffer(socket: &impl AsRawFd) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is a live c_int and `len` holds its size, so the
        // kernel writes at most that many bytes through the pointer, and
        // writes the length it used back through `&mut len`, a live socklen_t.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw mut value).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn send_buffer_cap_takes_effect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        cap_send_buffer(&stream, 16 * 1024).unwrap();
        // Linux doubles the value for bookkeeping.
        assert_eq!(send_buffer(&stream), 32 * 1024);
    }

    #[test]
    fn connect_from_a_chosen_loopback_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local: std::net::IpAddr = "127.0.1.7".parse().unwrap();
        let _stream = connect_from(Some(local), listener.local_addr().unwrap()).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), local);
    }

    #[test]
    fn reset_on_close_is_accepted_by_the_kernel() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        reset_on_close(&stream).unwrap();
    }

    #[test]
    fn own_process_usage_is_readable() {
        let usage = process_usage(std::process::id()).unwrap();
        assert!(usage.rss_bytes > 0 && usage.cpu_seconds >= 0.0);
    }

    #[test]
    fn open_file_limit_is_positive() {
        assert!(open_file_limit() > 0);
    }

    #[test]
    fn two_reuseport_listeners_share_a_port_and_both_accept() {
        let first = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = reuseport_listener(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let clients: Vec<_> = (0..32)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let accepted = |l: &std::net::TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
        let total = accepted(&first) + accepted(&second);
        assert_eq!(total, clients.len());
    }

    #[test]
    fn reuseport_works_for_ipv6_loopback() {
        // Hosts without IPv6 fail at bind; that is not a defect of ours.
        if let Ok(listener) = reuseport_listener("[::1]:0".parse().unwrap()) {
            let addr = listener.local_addr().unwrap();
            assert!(std::net::TcpStream::connect(addr).is_ok());
        }
    }
}
