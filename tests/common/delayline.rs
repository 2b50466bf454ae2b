//! A delay line: two network namespaces joined through this test process, which carries every
//! packet from one to the other after a fixed delay. A real round trip for tests, on a machine
//! where loopback answers in microseconds.
//!
//! # Why it is built this way
//! The usual way to add latency, `tc qdisc add ... netem delay 10ms`, needs a queueing discipline
//! this machine's kernel does not have ("Specified qdisc kind is unknown"), and there is no
//! nfqueue to hold packets in user space either (docs/facts.md §10). What does work is TUN: a TUN device
//! is a network interface whose "wire" is a file descriptor. Every IP packet the kernel routes
//! into the device can be `read` from the descriptor, and every packet `write`n to it is received
//! by the kernel as if it had arrived on the interface.
//!
//! Two namespaces, because each end must be a separate host: with both devices in one namespace,
//! the kernel would deliver a packet for the other address locally, never through a device. So
//! the client end lives in namespace `C` and the server end in namespace `S`, each with a full
//! kernel TCP stack of its own, and the only way between them is this process.
//!
//! # The packet path
//! ```text
//!  namespace C (client)             this process                  namespace S (server)
//!  198.18.N.1 -> tun dlc --fd--> [due = read + delay] --fd--> tun dls -> 198.18.N.2
//!  198.18.N.1 <- tun dlc <--fd-- [due = read + delay] <--fd-- tun dls <- 198.18.N.2
//! ```
//! Each device is point to point (`198.18.N.1 peer 198.18.N.2` in `C`, the reverse in `S`), so
//! each namespace has exactly one route out, through its TUN device, and no route to anywhere
//! else: no traffic can leave the two namespaces. The devices are created *inside* their
//! namespaces (the descriptor is opened by a thread that has joined the namespace), so they are
//! never seen in ours. A forwarding thread waits in `ppoll` on both descriptors and its earliest
//! due time; a packet read at `t` is written to the other device at `t + delay`. One delay for
//! every packet keeps each direction's queue in arrival order, which is also due order, so a
//! queue per direction is a plain FIFO. The queues are bounded ([`MAX_QUEUED`] packets each;
//! beyond that the line drops, as a full router queue would).
//!
//! # The server-side delay correction
//! Through the line, a TCP connect takes one round trip (`RTT = 2 × delay`): SYN out, SYN-ACK
//! back. The server's kernel completes the handshake when our ACK arrives, half a round trip
//! after our connect returned; whatever the server then sends (a banner, a FIN) needs another
//! half to come back. So an answer that the server gives *at once* reaches us at `2 × RTT` after
//! the start of the connect, and a probe's observation, timed in µs from the start of the
//! connect, gives the time the *server* took as
//!
//! ```text
//! server delay = timings.closed − 2 × timings.connected      (or first_byte instead of closed)
//! ```
//!
//! since `timings.connected ≈ RTT`. An accept-and-close 20 ms away closes at about 40 ms, which
//! without the correction looks like a session process; with it, about 0 ms: at the listener.
//! diagnose uses this correction; the tests in `tests/delayline.rs` check it here.
//!
//! ```ignore
//! let line = DelayLine::new(Duration::from_millis(10));
//! let sshd = Sshd::new().behind(&line).start(); // listens on line.server_ip
//! let out = line.command(Side::Client, env!("CARGO_BIN_EXE_sshprobe"))
//!     .args(["probe", &sshd.addr.to_string(), "-o", "jsonl"]).output().unwrap();
//! ```
//! Dropping the line stops the thread (which closes both descriptors, so the devices vanish) and
//! deletes both namespaces, also when the test panics.

use super::{bin, lock_file, next_id, reap_stale_namespaces, run, run_quietly, Dropbear, Sshd, NET_LOCK};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// At most this many packets wait in each direction; more are dropped (and counted).
pub const MAX_QUEUED: usize = 4096;
/// The forwarding thread checks whether it should stop at least this often.
const STOP_CHECK: Duration = Duration::from_millis(10);
/// At most this many packets are read from one device per wake-up, so neither direction starves.
const READ_BATCH: usize = 64;
/// The TUN devices' names, each in its own namespace.
const CLIENT_DEV: &str = "dlc";
const SERVER_DEV: &str = "dls";

/// One end of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Namespace `C`, address `198.18.N.1`: where probes start.
    Client,
    /// Namespace `S`, address `198.18.N.2`: where servers listen.
    Server,
}

/// Two namespaces and the thread that carries packets between them after a delay. See the
/// module documentation.
///
/// Through the line, the time a *server* took to answer a probe (its close or first byte after
/// accepting) is `timings.closed − 2 × timings.connected` (`first_byte` in place of `closed` when
/// it sent a byte), all in µs from the start of the connect: the connect took one round trip, and
/// any answer needs two.
pub struct DelayLine {
    /// The client namespace's name (`sp-<pid>-<n>-c`), for `ip netns exec`.
    pub client_ns: String,
    /// The server namespace's name (`sp-<pid>-<n>-s`).
    pub server_ns: String,
    /// The client end's address (`198.18.N.1`).
    pub client_ip: Ipv4Addr,
    /// The server end's address (`198.18.N.2`): where servers behind the line listen.
    pub server_ip: Ipv4Addr,
    /// The delay each way; a round trip is twice this.
    pub delay: Duration,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    forwarder: Option<JoinHandle<()>>,
}

/// What the forwarding thread has done, readable while it runs.
#[derive(Default)]
struct Counters {
    carried: AtomicU64,
    dropped: AtomicU64,
}

impl DelayLine {
    /// Creates both namespaces and devices and starts carrying packets, `delay` each way.
    /// Panics when a step fails, after undoing the others.
    pub fn new(delay: Duration) -> DelayLine {
        let id = next_id();
        // The addresses exist only inside the two new namespaces, so they cannot collide with any
        // other fixture's; N only tells lines apart in logs.
        let n = (id % 256) as u8;
        let pid = std::process::id();
        let mut line = DelayLine {
            client_ns: format!("sp-{pid}-{id}-c"),
            server_ns: format!("sp-{pid}-{id}-s"),
            client_ip: Ipv4Addr::new(198, 18, n, 1),
            server_ip: Ipv4Addr::new(198, 18, n, 2),
            delay,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::default(),
            forwarder: None,
        };
        {
            let _lock = lock_file(Path::new(NET_LOCK));
            reap_stale_namespaces(); // `sp-<dead pid>-*`, ours included
        }
        // From here on, a panic drops `line`, which deletes the namespaces (and the devices with
        // the descriptors, which are locals until the thread takes them).
        let mut tuns = Vec::new();
        for (ns, dev, local, peer) in [
            (&line.client_ns, CLIENT_DEV, line.client_ip, line.server_ip),
            (&line.server_ns, SERVER_DEV, line.server_ip, line.client_ip),
        ] {
            run(Command::new(bin("ip")).args(["netns", "add", ns]), "ip netns add");
            let tun = in_netns(ns, || open_tun(dev))
                .and_then(|tun| tun)
                .unwrap_or_else(|e| panic!("a TUN device {dev} in {ns}: {e}"));
            tuns.push(tun);
            let ip = |args: &[&str]| {
                run(Command::new(bin("ip")).args(["-n", ns]).args(args), &format!("ip {args:?} in {ns}"))
            };
            ip(&["addr", "add", &local.to_string(), "peer", &peer.to_string(), "dev", dev]);
            ip(&["link", "set", dev, "up"]);
            ip(&["link", "set", "lo", "up"]);
        }
        let [client, server]: [OwnedFd; 2] = tuns.try_into().unwrap_or_else(|_| unreachable!());
        let (stop, counters) = (line.stop.clone(), line.counters.clone());
        line.forwarder = Some(
            std::thread::Builder::new()
                .name("delay-line".into())
                .spawn(move || carry(client, server, delay, &stop, &counters))
                .expect("spawning the delay-line thread"),
        );
        line
    }

    /// One round trip: twice the delay.
    pub fn rtt(&self) -> Duration {
        2 * self.delay
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.client_ns,
            Side::Server => &self.server_ns,
        }
    }

    /// The address of `side`.
    pub fn ip(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::Client => self.client_ip,
            Side::Server => self.server_ip,
        }
    }

    /// A command that runs `program` (a name looked up like the fixtures' programs, or a path) in
    /// the namespace of `side`: `ip netns exec NS program`.
    pub fn command(&self, side: Side, program: &str) -> Command {
        let program = if program.contains('/') { program.into() } else { bin(program) };
        let mut cmd = Command::new(bin("ip"));
        cmd.args(["netns", "exec", self.ns(side)]).arg(program);
        cmd
    }

    /// Runs `f` on a thread that has joined the namespace of `side`, and returns its result:
    /// sockets `f` creates belong to that namespace for their whole life, whichever thread uses
    /// them afterwards. Panics (with `f`'s panic) when `f` panics.
    pub fn run_in<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.ns(side);
        in_netns(ns, f).unwrap_or_else(|e| panic!("joining {ns}: {e}"))
    }

    /// Packets carried so far (both directions).
    pub fn carried(&self) -> u64 {
        self.counters.carried.load(Ordering::Relaxed)
    }

    /// Packets dropped so far (a full queue, or a device that refused a write).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// A server at the far end that accepts every connection and closes it at once without a
    /// byte (a forwarder with no backend). See [`AcceptAndClose`].
    pub fn accept_and_close(&self) -> AcceptAndClose {
        AcceptAndClose::start(self)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.forwarder.take() {
            let _ = thread.join(); // closes both descriptors: the devices go with them
        }
        for ns in [&self.client_ns, &self.server_ns] {
            run_quietly(Command::new(bin("ip")).args(["netns", "delete", ns]));
        }
    }
}

impl Sshd {
    /// Runs sshd at the far end of `line`: in its server namespace, on its server address.
    pub fn behind(mut self, line: &DelayLine) -> Sshd {
        self.netns = Some((line.server_ns.clone(), IpAddr::V4(line.server_ip)));
        self
    }
}

impl Dropbear {
    /// Runs dropbear at the far end of `line`: in its server namespace, on its server address.
    pub fn behind(mut self, line: &DelayLine) -> Dropbear {
        self.netns = Some((line.server_ns.clone(), IpAddr::V4(line.server_ip)));
        self
    }
}

/// Runs `f` on a new thread that has joined the network namespace `ns` (`/run/netns/NS`, made by
/// `ip netns add`), so the calling thread's namespace never changes.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let handle = File::open(Path::new("/run/netns").join(ns))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            // SAFETY: setns on a descriptor we own; CLONE_NEWNET changes only this thread.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Opens `/dev/net/tun` and attaches a new TUN device `name` (IFF_TUN: IP packets, no Ethernet
/// header; IFF_NO_PI: no 4-byte protocol prefix either), in the calling thread's namespace. The
/// device lives as long as the descriptor. The descriptor is non-blocking.
fn open_tun(name: &str) -> io::Result<OwnedFd> {
    let path = Path::new("/dev/net/tun");
    if !path.exists() {
        // A container may lack the node; the TUN driver is character device 10:200.
        std::fs::create_dir_all("/dev/net")?;
        // SAFETY: a NUL-terminated path; mknod has no memory effects.
        let rc =
            unsafe { libc::mknod(c"/dev/net/tun".as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let tun: OwnedFd = File::options().read(true).write(true).open(path)?.into();
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is too long"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on a descriptor we own.
    let set = unsafe {
        let flags = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !set {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// A packet waiting in the line.
struct InFlight {
    due: Instant,
    packet: Vec<u8>,
}

/// The forwarding thread: reads packets from each device and writes them to the other `delay`
/// later, until `stop`. Owns the descriptors, so the devices disappear when it returns.
fn carry(client: OwnedFd, server: OwnedFd, delay: Duration, stop: &AtomicBool, counters: &Counters) {
    let devices = [File::from(client), File::from(server)];
    // queues[i] holds packets read from devices[i], bound for the other one.
    let mut queues: [VecDeque<InFlight>; 2] = Default::default();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // Deliver everything due. A TUN write takes one whole packet or fails.
        let now = Instant::now();
        for (from, queue) in queues.iter_mut().enumerate() {
            let mut to = &devices[1 - from];
            while queue.front().is_some_and(|p| p.due <= now) {
                let Some(p) = queue.pop_front() else { break };
                let counter = match to.write(&p.packet) {
                    Ok(n) if n == p.packet.len() => &counters.carried,
                    _ => &counters.dropped,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Sleep until a device has a packet, the next one is due, or it is time to check `stop`.
        let next_due = queues.iter().filter_map(|q| q.front()).map(|p| p.due).min();
        let wait = next_due.map_or(STOP_CHECK, |due| due.saturating_duration_since(now).min(STOP_CHECK));
        let timeout = libc::timespec { tv_sec: 0, tv_nsec: wait.subsec_nanos() as libc::c_long };
        let mut fds =
            devices.each_ref().map(|d| libc::pollfd { fd: d.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        // SAFETY: two valid pollfds and a timespec that outlive the call; no signal mask change.
        let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timeout, std::ptr::null()) };
        if ready <= 0 {
            continue; // a timeout, or EINTR
        }
        for ((fd, mut from), queue) in fds.iter().zip(&devices).zip(&mut queues) {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..READ_BATCH {
                let Ok(len) = from.read(&mut buf) else { break }; // WouldBlock: drained
                let due = Instant::now() + delay;
                if queue.len() >= MAX_QUEUED {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    queue.push_back(InFlight { due, packet: buf[..len].to_vec() });
                }
            }
        }
    }
}

/// A server at the far end of a [`DelayLine`] that accepts every connection and closes it at
/// once, without reading or sending a byte: the kernel sends a FIN. What a forwarder with no
/// backend does (docker-proxy for a stopped container, `kubectl port-forward`, HAProxy). Runs on
/// a thread of its own until dropped (or for [`AcceptAndClose::MAX_LIFE`] at most).
pub struct AcceptAndClose {
    /// Where it listens: the line's server address and a port the kernel chose.
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptAndClose {
    /// The longest it runs, however long the test holds it.
    pub const MAX_LIFE: Duration = Duration::from_secs(300);

    fn start(line: &DelayLine) -> AcceptAndClose {
        let ip = line.server_ip;
        let listener = line
            .run_in(Side::Server, || TcpListener::bind((ip, 0)))
            .unwrap_or_else(|e| panic!("binding {ip}:0 in {}: {e}", line.server_ns));
        let addr = listener.local_addr().expect("the listener's address");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let (accepted, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, halt) = (accepted.clone(), stop.clone());
        let (started_tx, started_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = started_tx.send(());
            let end = Instant::now() + Self::MAX_LIFE;
            while !halt.load(Ordering::Relaxed) && Instant::now() < end {
                let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd that outlives the call.
                unsafe { libc::poll(&mut fd, 1, STOP_CHECK.as_millis() as libc::c_int) };
                while let Ok((stream, _)) = listener.accept() {
                    count.fetch_add(1, Ordering::Relaxed); // before the FIN can tell the client
                    drop(stream); // no byte read, none sent: a FIN
                }
            }
        });
        let _ = started_rx.recv();
        AcceptAndClose { addr, accepted, stop, thread: Some(thread) }
    }

    /// Connections accepted (and closed) so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for AcceptAndClose {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// [`super::need`] for tests through a delay line: root and `ip`, plus `bins`. When something is
/// missing it skips loudly, except under `CI=true`, where a skip would hide a failure: it panics.
pub fn need_line(test: &str, bins: &[&str]) -> bool {
    let all: Vec<&str> = ["ip"].into_iter().chain(bins.iter().copied()).collect();
    if super::need(test, &all) {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: CI=true, so nothing may skip (needs root and {all:?})"
    );
    false
}
