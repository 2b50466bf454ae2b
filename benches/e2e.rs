//! End-to-end throughput on loopback: how fast sshprobe's engines probe compared with the machine's
//! limit, measured in the same run against the same server.
//!
//! - A banner server written for the bench (one thread, non-blocking sockets and epoll): it answers
//!   every connection with an OpenSSH-like line, reads the client's ident, and closes. Its own CPU time
//!   is reported so one can check it is not the bottleneck.
//! - A baseline client (one thread, epoll, no classification, no output): connect, read the banner,
//!   send an ident, close. It stands for what this machine can do.
//! - sshprobe itself, through the real binary (`sshprobe probe -i FILE -c K -o jsonl > FILE`, so the
//!   output counts), once per engine: the child's CPU time and peak RSS come from `wait4`.
//!
//! Only loopback: the server listens on 127.0.0.1..127.0.0.D (several destination addresses, so the
//! ephemeral ports of FIN-closed connections in TIME_WAIT do not run out). Every loop is bounded in
//! probes and in time.
//!
//! Settings (environment): `SSHPROBE_BENCH_PROBES` probes per run (default 40000),
//! `SSHPROBE_BENCH_CONCURRENCY` (default `64,256,1024`), `SSHPROBE_BENCH_ENGINES` (default
//! `connect,raw,raw@2`; `raw@2` adds `--threads 2`: two engine threads; `raw=PATH` runs the binary at PATH, e.g. a build
//! from before a change; an engine the binary does not accept is skipped), `SSHPROBE_BENCH_CLOSE` (`fin` or
//! `rst`, default `fin`), `SSHPROBE_BENCH_DESTS` destination addresses (default 8).

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVER_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
const CLIENT_IDENT: &[u8] = b"SSH-2.0-baseline_0.1\r\n";
/// No run may take longer than this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn check(rc: libc::c_int, what: &str) -> libc::c_int {
    if rc < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    rc
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

fn epoll_add(ep: RawFd, fd: RawFd, events: u32) {
    let mut ev = libc::epoll_event { events, u64: fd as u64 };
    // SAFETY: valid descriptors and a valid event.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl");
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The banner server: one thread, level-triggered epoll over the listeners and every connection.
/// It runs in a process of its own ([`Server`]), so that no client shares an address space with it.
struct ServerThread {
    port: u16,
    dests: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// A server on 127.0.0.1..127.0.0.`dest_count`; a `silent` one never sends its banner (probes
    /// then stay in flight until their banner timeout: for measuring memory per probe).
    fn start(dest_count: u8, silent: bool) -> ServerThread {
        let dests: Vec<Ipv4Addr> = (1..=dest_count).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
        // Find a port free on every destination address.
        for _attempt in 0..20 {
            if let Some(listeners) = Self::listen_all(&dests) {
                return Self::run(listeners, dests, silent);
            }
        }
        panic!("no port free on all of {dests:?}");
    }

    fn listen_all(dests: &[Ipv4Addr]) -> Option<(u16, Vec<RawFd>)> {
        let mut port = 0u16;
        let mut fds = Vec::new();
        for &ip in dests {
            // SAFETY: plain socket calls on a descriptor we own.
            unsafe {
                let fd = check(
                    libc::socket(
                        libc::AF_INET,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    ),
                    "socket",
                );
                let one: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    4,
                );
                let sa = sockaddr(ip, port);
                if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), size_of_val(&sa) as u32) < 0 {
                    libc::close(fd);
                    fds.iter().for_each(|&f| {
                        libc::close(f);
                    });
                    return None;
                }
                check(libc::listen(fd, 4096), "listen");
                if port == 0 {
                    let mut got: libc::sockaddr_in = std::mem::zeroed();
                    let mut len = size_of_val(&got) as u32;
                    check(
                        libc::getsockname(fd, (&mut got as *mut libc::sockaddr_in).cast(), &mut len),
                        "getsockname",
                    );
                    port = u16::from_be(got.sin_port);
                }
                fds.push(fd);
            }
        }
        Some((port, fds))
    }

    fn run((port, listeners): (u16, Vec<RawFd>), dests: Vec<Ipv4Addr>, silent: bool) -> ServerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("banner-server".into())
            .spawn(move || serve(listeners, silent, &s))
            .expect("spawning the server thread");
        ServerThread { port, dests, stop, thread: Some(thread) }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The banner server's process: this bench binary in its serving mode, stopped on drop.
struct Server {
    port: u16,
    dests: Vec<Ipv4Addr>,
    child: std::process::Child,
}

impl Server {
    fn start(dest_count: u8, silent: bool) -> Server {
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut child = Command::new(exe)
            .env("SSHPROBE_BENCH_SERVE", "900")
            .env("SSHPROBE_BENCH_DESTS", dest_count.to_string())
            .env("SSHPROBE_BENCH_SILENT", if silent { "1" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the server process");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the server's stdout");
        BufReader::new(stdout).read_line(&mut line).expect("the server's address");
        // "serving on 127.0.0.1-D port P for S s"
        let port = line.split_whitespace().nth(4).and_then(|p| p.parse().ok()).expect("the server's port");
        let dests = (1..=dest_count).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
        Server { port, dests, child }
    }

    /// The server process's CPU time so far (user + system, 10 ms resolution).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 =
            fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, not yet reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(listeners: Vec<RawFd>, silent: bool, stop: &AtomicBool) {
    // SAFETY: epoll and socket calls on descriptors this thread owns; buffers outlive the calls.
    unsafe {
        let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC), "epoll_create1");
        for &l in &listeners {
            epoll_add(ep, l, libc::EPOLLIN as u32);
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50);
            for ev in events.iter().take(n.max(0) as usize) {
                let fd = ev.u64 as RawFd;
                if listeners.contains(&fd) {
                    // Accept everything queued; answer each at once with the banner.
                    loop {
                        let c = libc::accept4(
                            fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        );
                        if c < 0 {
                            break;
                        }
                        let sent = if silent {
                            0
                        } else {
                            libc::send(
                                c,
                                SERVER_BANNER.as_ptr().cast(),
                                SERVER_BANNER.len(),
                                libc::MSG_NOSIGNAL,
                            )
                        };
                        if sent < 0 {
                            libc::close(c);
                            continue;
                        }
                        epoll_add(ep, c, (libc::EPOLLIN | libc::EPOLLRDHUP) as u32);
                    }
                    continue;
                }
                // A client: read its ident (or its close); then close. The ident fits in one read.
                let r = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                let done = r <= 0 && !(r < 0 && errno() == libc::EAGAIN)
                    || buf[..r.max(0) as usize].contains(&b'\n');
                if done {
                    // Closing drops it from the epoll set.
                    libc::close(fd);
                }
            }
        }
        libc::close(ep);
        for l in listeners {
            libc::close(l);
        }
    }
}

/// What one client run gave.
struct RunResult {
    probes: u64,
    banners: u64,
    wall: Duration,
    cpu: Duration,
    max_rss_kib: Option<u64>,
    server_cpu: Duration,
    /// Involuntary context switches of the client.
    preempted: u64,
}

fn thread_preemptions() -> u64 {
    // SAFETY: an all-zero rusage is valid; RUSAGE_THREAD fills it for the calling thread.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    u.ru_nivcsw as u64
}

/// The baseline: one thread, K connections in flight, epoll, nothing but the exchange.
fn baseline(server: &Server, concurrency: usize, probes: u64, rst: bool) -> RunResult {
    let server_cpu0 = server.cpu();
    let started = Instant::now();
    let cpu0 = thread_cpu();
    let preempted0 = thread_preemptions();
    let mut done = 0u64;
    let mut banners = 0u64;
    let mut launched = 0u64;
    let mut in_flight = 0usize;
    // SAFETY: socket and epoll calls on descriptors this function owns; buffers outlive the calls.
    unsafe {
        let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC), "epoll_create1");
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = [0u8; 512];
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        let mut next_dest = 0usize;
        while done < probes && started.elapsed() < RUN_LIMIT {
            while in_flight < concurrency && launched < probes {
                let fd = libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                );
                if fd < 0 {
                    break;
                }
                let sa = sockaddr(server.dests[next_dest % server.dests.len()], server.port);
                next_dest += 1;
                launched += 1;
                let rc = libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), size_of_val(&sa) as u32);
                if rc < 0 && errno() != libc::EINPROGRESS {
                    libc::close(fd);
                    done += 1;
                    continue;
                }
                epoll_add(ep, fd, (libc::EPOLLIN | libc::EPOLLRDHUP) as u32);
                in_flight += 1;
            }
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100);
            for ev in events.iter().take(n.max(0) as usize) {
                let fd = ev.u64 as RawFd;
                let r = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if r < 0 && errno() == libc::EAGAIN {
                    continue;
                }
                if r > 0 && buf[..r as usize].contains(&b'\n') {
                    banners += 1;
                    libc::send(fd, CLIENT_IDENT.as_ptr().cast(), CLIENT_IDENT.len(), libc::MSG_NOSIGNAL);
                } else if r > 0 {
                    continue;
                }
                if rst {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        size_of_val(&linger) as u32,
                    );
                }
                libc::close(fd);
                in_flight -= 1;
                done += 1;
            }
        }
        libc::close(ep);
    }
    RunResult {
        probes: done,
        banners,
        wall: started.elapsed(),
        cpu: thread_cpu() - cpu0,
        max_rss_kib: None,
        server_cpu: server.cpu() - server_cpu0,
        preempted: thread_preemptions() - preempted0,
    }
}

/// sshprobe through its binary, output to a file, like a user running a scan.
/// One run of the binary: `sshprobe probe -i targets -c concurrency -o jsonl --close close [extra] > out`.
struct Run<'a> {
    bin: &'a str,
    engine: &'a str,
    extra: &'a [String],
    targets: &'a std::path::Path,
    out: &'a std::path::Path,
    concurrency: usize,
    close: &'a str,
}

fn sshprobe_run(run: &Run, server: &Server) -> Result<RunResult, String> {
    let Run { bin, engine, extra, targets, out, concurrency, close } = *run;
    let out_file = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let server_cpu0 = server.cpu();
    let mut cmd = Command::new(bin);
    cmd.args(["probe", "-i"]).arg(targets).args(["-c", &concurrency.to_string(), "-o", "jsonl"]);
    cmd.args(["--close", close, "--connect-timeout", "5s"]);
    if !extra.iter().any(|a| a == "--banner-timeout") {
        cmd.args(["--banner-timeout", "5s"]);
    }
    let (engine, threads) = engine_and_threads(engine);
    if engine != "connect" {
        cmd.args(["--engine", engine]);
    }
    if let Some(threads) = threads {
        cmd.args(["--threads", threads]);
    }
    cmd.args(extra);
    let started = Instant::now();
    let child = cmd.stdout(out_file).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: our own child; valid out pointers. Reaping it here (not through `child`) is what
        // gives its rusage.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            break;
        }
        if rc < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if started.elapsed() > RUN_LIMIT && !killed {
            // SAFETY: our own child, not yet reaped, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let wall = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    if killed {
        return Err(format!("killed after {RUN_LIMIT:?}"));
    }
    let code = libc::WEXITSTATUS(status);
    let (mut probes, mut banners) = (0u64, 0u64);
    for line in BufReader::new(std::fs::File::open(out).map_err(|e| e.to_string())?).lines() {
        let line = line.map_err(|e| e.to_string())?;
        probes += 1;
        banners += u64::from(line.contains("\"outcome\":\"banner\""));
    }
    if probes == 0 {
        return Err(format!("exit {code}, no output: {}", stderr.lines().next().unwrap_or("")));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(RunResult {
        probes,
        banners,
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: Some(usage.ru_maxrss as u64),
        server_cpu: server.cpu() - server_cpu0,
        preempted: usage.ru_nivcsw as u64,
    })
}

/// Whether the binary takes `--engine NAME`; `Err` says why not.
fn engine_available(bin: &str, engine: &str, server: &Server) -> Result<(), String> {
    let (engine, _) = engine_and_threads(engine);
    if engine == "connect" {
        return Ok(());
    }
    let help = Command::new(bin).args(["probe", "--help"]).output().map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&help.stdout).contains("--engine") {
        return Err("the binary has no --engine option yet".into());
    }
    let target = format!("{}:{}", server.dests[0], server.port);
    let out = Command::new(bin)
        .args(["probe", "-o", "jsonl", "--engine", engine, "--banner-timeout", "2s", &target])
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&out.stdout).contains("\"outcome\":\"banner\"") {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("a trial probe got no banner: {}", err.lines().next().unwrap_or("no message")))
    }
}

fn main() {
    // `cargo bench` passes `--bench` and maybe a filter; `cargo test --benches` passes neither.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if let Some(filter) = args.first() {
        if !"e2e".contains(filter.as_str()) {
            return;
        }
    }
    raise_nofile();
    // For profiling by hand: only the server, for a bounded time, its address on stdout.
    if let Some(secs) = std::env::var("SSHPROBE_BENCH_SERVE").ok().and_then(|s| s.parse::<u64>().ok()) {
        let silent = std::env::var("SSHPROBE_BENCH_SILENT").is_ok_and(|v| v == "1");
        let server = ServerThread::start(env_or("SSHPROBE_BENCH_DESTS", 8u8).clamp(1, 254), silent);
        println!("serving on 127.0.0.1-{} port {} for {secs} s", server.dests.len(), server.port);
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(secs.min(3600)));
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e: run with `cargo bench --bench e2e`");
        return;
    }
    let probes: u64 = env_or("SSHPROBE_BENCH_PROBES", 30_000);
    let repeats: usize = env_or("SSHPROBE_BENCH_REPEATS", 3usize).max(1);
    let concurrencies: Vec<usize> = std::env::var("SSHPROBE_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "64,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let engines: Vec<String> = std::env::var("SSHPROBE_BENCH_ENGINES")
        .unwrap_or_else(|_| "connect,raw,raw@2".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let close = std::env::var("SSHPROBE_BENCH_CLOSE").unwrap_or_else(|_| "fin".into());
    let dest_count: u8 = env_or("SSHPROBE_BENCH_DESTS", 8u8).clamp(1, 254);
    let in_flight: usize = env_or("SSHPROBE_BENCH_IN_FLIGHT", 10_000usize);
    let bin = env!("CARGO_BIN_EXE_sshprobe");

    let server = Server::start(dest_count, false);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let targets = dir.path().join("targets.txt");
    write_targets(&targets, &server, probes);
    let out = dir.path().join("out.jsonl");
    let available: Vec<String> = engines
        .iter()
        .filter(|e| {
            match engine_available(engine_and_binary(e, bin).1, engine_and_binary(e, bin).0, &server) {
                Ok(()) => true,
                Err(why) => {
                    println!("e2e: engine {e} skipped: {why}");
                    false
                }
            }
        })
        .cloned()
        .collect();

    println!(
        "e2e: {probes} probes per run, best of {repeats} interleaved runs, loopback 127.0.0.1-{} port {}, \
         close {close}, {} CPUs, binary {bin}",
        server.dests.last().expect("at least one destination"),
        server.port,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>5}  {:<18} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>10} {:>8}",
        "K",
        "client",
        "probes/s",
        "vs base",
        "CPU µs",
        "CPU eff",
        "peak RSS",
        "banners",
        "preempt",
        "server CPU",
        "ceiling"
    );
    for &k in concurrencies.iter().filter(|_| section("throughput")) {
        // Interleaved, so that load from elsewhere on the machine hits every client alike; the best
        // rate and the lowest CPU per probe of each are kept (interference only ever makes them worse).
        let mut best: Vec<Option<RunResult>> = (0..=available.len()).map(|_| None).collect();
        let mut failures = Vec::new();
        for _ in 0..repeats {
            settle();
            keep_best(&mut best[0], baseline(&server, k, probes, close == "rst"));
            for (i, engine) in available.iter().enumerate() {
                settle();
                let (engine, bin) = engine_and_binary(engine, bin);
                let run = Run {
                    bin,
                    engine,
                    extra: &[],
                    targets: &targets,
                    out: &out,
                    concurrency: k,
                    close: &close,
                };
                match sshprobe_run(&run, &server) {
                    Ok(r) => keep_best(&mut best[i + 1], r),
                    Err(e) => failures.push(format!("{k:>5}  sshprobe {engine}: failed: {e}")),
                }
            }
        }
        let base_rate = best[0].as_ref().map_or(f64::NAN, rate);
        let base_cpu = best[0].as_ref().map_or(f64::NAN, cpu_per_probe);
        for (name, r) in std::iter::once("baseline (epoll)".to_string())
            .chain(available.iter().map(|e| format!("sshprobe {e}")))
            .zip(&best)
        {
            if let Some(r) = r {
                print_row(k, &name, r, base_rate, base_cpu);
            }
        }
        failures.iter().for_each(|f| println!("{f}"));
    }
    println!(
        "e2e: 'server CPU': the server process's CPU time over the run's wall time (one thread: below \
         100% = it waited for clients, so it was not the bottleneck). 'CPU eff': the baseline's CPU per \
         probe over this client's (the share of the baseline's rate a CPU-bound client reaches, whatever \
         else runs on the machine). 'preempt': involuntary context switches of the client per probe. \
         'ceiling': probes per second of the server's CPU (its rate over its CPU share): what any client \
         could reach with the server's thread alone on its core."
    );

    // --rate: does the pacer hold the asked rate? Against a port with nothing listening, so that each
    // probe is one SYN and one RST, cheap enough that 20 000/s is within this machine's reach.
    if section("rate") {
        let closed = ClosedPort::new();
        for asked in [5_000u64, 20_000] {
            let n = asked * 2;
            let rate_targets = dir.path().join(format!("rate-{asked}.txt"));
            std::fs::write(&rate_targets, format!("127.0.0.1:{}\n", closed.port).repeat(n as usize))
                .expect("writing targets");
            settle();
            let extra = ["--rate".to_string(), asked.to_string()];
            let run = Run {
                bin,
                engine: "connect",
                extra: &extra,
                targets: &rate_targets,
                out: &out,
                concurrency: 256,
                close: &close,
            };
            match sshprobe_run(&run, &server) {
                Ok(r) => println!(
                    "rate: --rate {asked}: {} probes ({} refused) in {:.3} s = {:.0}/s ({:+.1}% of asked, \
                     process start included), {:.1} µs CPU per probe",
                    r.probes,
                    count_outcome(&out, "refused"),
                    r.wall.as_secs_f64(),
                    rate(&r),
                    100.0 * (rate(&r) / asked as f64 - 1.0),
                    r.cpu.as_secs_f64() * 1e6 / r.probes.max(1) as f64
                ),
                Err(e) => println!("rate: --rate {asked}: failed: {e}"),
            }
        }
    }
    drop(server);

    // Memory per probe in flight: a server that accepts and never answers holds every probe until
    // its banner timeout, so `-c N` with N targets has N probes in flight at once.
    let silent = Server::start(dest_count, true);
    let in_flight = if section("memory") { in_flight } else { 0 };
    let mut rss = Vec::new();
    for k in [in_flight / 10, in_flight].into_iter().filter(|&k| k > 0) {
        let t = dir.path().join(format!("held-{k}.txt"));
        write_targets(&t, &silent, k as u64);
        settle();
        let extra = ["--banner-timeout".to_string(), "1s".to_string()];
        let run = Run {
            bin,
            engine: "connect",
            extra: &extra,
            targets: &t,
            out: &out,
            concurrency: k,
            close: "rst",
        };
        match sshprobe_run(&run, &silent) {
            Ok(r) => {
                let kib = r.max_rss_kib.unwrap_or(0);
                println!(
                    "memory: {k} probes in flight: peak RSS {:.1} MiB ({} banner timeouts of {})",
                    kib as f64 / 1024.0,
                    count_outcome(&out, "banner_timeout"),
                    r.probes
                );
                rss.push((k, kib));
            }
            Err(e) => println!("memory: {k} probes in flight: failed: {e}"),
        }
    }
    if let [(k1, r1), (k2, r2)] = rss[..] {
        println!(
            "memory: {:.2} KiB per probe in flight ((RSS at {k2} - RSS at {k1}) / {})",
            (r2 as f64 - r1 as f64) / (k2 - k1) as f64,
            k2 - k1
        );
    }
    drop(silent);

    // Time to the first result for a /8: the runner must not wait for the target list. Nothing listens
    // on port 9 of 127.0.0.0/8, so every probe is refused at once; the child is stopped after the first.
    if !section("stream") {
        return;
    }
    settle();
    match first_result(bin, &["probe", "127.0.0.0/8", "-p", "9", "-o", "jsonl", "--rate", "1000"]) {
        Ok(t) => println!(
            "stream: first result of 127.0.0.0/8 after {:.1} ms (process start included)",
            t.as_secs_f64() * 1e3
        ),
        Err(e) => println!("stream: failed: {e}"),
    }
}

/// Whether `SSHPROBE_BENCH_ONLY` (a comma-separated list of throughput, rate, memory, stream) asks
/// for this section; all of them without it.
fn section(name: &str) -> bool {
    std::env::var("SSHPROBE_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

/// A loopback port with nothing listening (bound, never listened on, so nobody else takes it):
/// connections to it are refused.
struct ClosedPort {
    fd: RawFd,
    port: u16,
}

impl ClosedPort {
    fn new() -> ClosedPort {
        // SAFETY: plain socket calls on a descriptor we own.
        unsafe {
            let fd = check(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0), "socket");
            let sa = sockaddr(Ipv4Addr::LOCALHOST, 0);
            check(libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), size_of_val(&sa) as u32), "bind");
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut len = size_of_val(&got) as u32;
            check(
                libc::getsockname(fd, (&mut got as *mut libc::sockaddr_in).cast(), &mut len),
                "getsockname",
            );
            ClosedPort { fd, port: u16::from_be(got.sin_port) }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Keeps the faster of two runs.
/// Keeps the best of the runs so far: the fastest run, with the lowest CPU per probe and the highest
/// peak RSS seen in any of them (each measured in its own run: load elsewhere inflates CPU time too).
fn keep_best(best: &mut Option<RunResult>, r: RunResult) {
    let Some(b) = best else {
        *best = Some(r);
        return;
    };
    let cpu_us = cpu_per_probe(&r).min(cpu_per_probe(b));
    let rss = b.max_rss_kib.max(r.max_rss_kib);
    if rate(&r) > rate(b) {
        *b = r;
    }
    b.cpu = Duration::from_secs_f64(cpu_us * b.probes as f64 / 1e6);
    b.max_rss_kib = rss;
}

fn write_targets(path: &std::path::Path, server: &Server, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("creating a target file"));
    for i in 0..n {
        writeln!(f, "{}:{}", server.dests[i as usize % server.dests.len()], server.port)
            .expect("writing targets");
    }
}

fn count_outcome(out: &std::path::Path, outcome: &str) -> usize {
    let needle = format!("\"outcome\":\"{outcome}\"");
    std::fs::read_to_string(out).map_or(0, |s| s.lines().filter(|l| l.contains(&needle)).count())
}

/// Starts the binary, waits for its first line of output, stops it.
fn first_result(bin: &str, args: &[&str]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // The read ends at the first line or when the child exits; a watchdog bounds it in time.
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(10);
            while !done.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !done.load(Ordering::Relaxed) {
                // SAFETY: our own child, reaped only after this thread is joined.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        })
    };
    let mut line = String::new();
    let got = BufReader::new(stdout).read_line(&mut line);
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let _ = child.kill();
    let _ = child.wait();
    match got {
        Ok(n) if n > 0 && line.contains("\"outcome\"") => Ok(elapsed),
        _ => Err(format!("no result line: {line:?}")),
    }
}

fn rate(r: &RunResult) -> f64 {
    r.probes as f64 / r.wall.as_secs_f64()
}

fn cpu_per_probe(r: &RunResult) -> f64 {
    r.cpu.as_secs_f64() * 1e6 / r.probes.max(1) as f64
}

/// An engine as `SSHPROBE_BENCH_ENGINES` names it, and the binary that runs it: `raw=PATH` runs
/// another build of sshprobe (the one before a change, say), in the same interleaved run.
fn engine_and_binary<'a>(spec: &'a str, bin: &'a str) -> (&'a str, &'a str) {
    spec.split_once('=').unwrap_or((spec, bin))
}

/// An engine as `SSHPROBE_BENCH_ENGINES` names it: `connect`, or `connect@2` for `--threads 2`.
fn engine_and_threads(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((engine, threads)) => (engine, Some(threads)),
        None => (spec, None),
    }
}

/// Probes per second of the server's CPU: the rate a client could reach if the one-thread server
/// had its core to itself and the client cost it nothing more than now. No client can beat it.
fn ceiling(r: &RunResult) -> f64 {
    r.probes as f64 / r.server_cpu.as_secs_f64().max(1e-9)
}

fn print_row(k: usize, name: &str, r: &RunResult, base_rate: f64, base_cpu: f64) {
    let rss = r.max_rss_kib.map_or("-".to_string(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
    println!(
        "{:>5}  {:<18} {:>9.0} {:>7.0}% {:>8.1} {:>7.0}% {:>9} {:>8} {:>8.2} {:>9.0}% {:>8.0}",
        k,
        name,
        rate(r),
        100.0 * rate(r) / base_rate,
        cpu_per_probe(r),
        100.0 * base_cpu / cpu_per_probe(r),
        rss,
        r.banners,
        r.preempted as f64 / r.probes.max(1) as f64,
        100.0 * r.server_cpu.as_secs_f64() / r.wall.as_secs_f64(),
        ceiling(r)
    );
    let _ = std::io::stdout().flush();
}

/// Lets the previous run's connections finish closing before the next run starts.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn raise_nofile() {
    // SAFETY: valid rlimit pointers.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
