//! The connect engine: kernel TCP sockets driven by tokio.
//!
//! One probe is: connect (bounded by the connect timeout), optionally send our ident, read until the
//! server's ident line is complete, the server closes, the byte cap is reached or the banner deadline
//! passes, send our ident if we waited, close. Reads are drained to the end before an error is acted
//! on, so a refusal line that arrives just before an RST is kept (FACTS §2).

use super::{BannerReader, Engine, ProbeConfig, ProbeRequest, Progress};
use crate::evidence::{CloseMode, Connect, End, Observation, ProbeOrder, Timings};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at};

/// Kernel-socket engine. Cheap to share: one per run.
#[derive(Debug, Clone)]
pub struct ConnectEngine {
    config: ProbeConfig,
}

impl ConnectEngine {
    /// An engine whose probes all behave as `config` says.
    pub fn new(config: ProbeConfig) -> ConnectEngine {
        ConnectEngine { config }
    }

    /// The configuration every probe uses.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }
}

impl Engine for ConnectEngine {
    async fn probe(&self, request: ProbeRequest) -> Observation {
        let cfg = &self.config;
        let start = Instant::now();
        let us = move || start.elapsed().as_micros() as u64;
        let remote = request.remote;
        let failed = |local, connect| Observation::failed_connect(remote, local, cfg.order, connect, us());

        let socket = match new_socket(remote, request.source) {
            Ok(s) => s,
            Err(e) => return failed(None, Connect::LocalError { detail: e.to_string() }),
        };
        // Only a bound source has an address before the connect (and asking costs a system call).
        let bound = match request.source {
            Some(_) => {
                socket.local_addr().ok().and_then(|a| a.as_socket()).filter(|a| !a.ip().is_unspecified())
            }
            None => None,
        };
        let stream = match timeout(cfg.connect_timeout, connect(socket, remote)).await {
            Err(_) => return failed(bound, Connect::TimedOut),
            // ECONNRESET from connect() means the handshake completed and the server reset the
            // connection before we saw it complete: an accepted connection, reset with no bytes.
            // When it was established the kernel knew and we did not, so `connected` stays empty.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                let mut obs = failed(bound, Connect::Established);
                obs.end = Some(End::Rst);
                return obs;
            }
            Ok(Err(e)) => return failed(bound, connect_error(&e)),
            Ok(Ok(stream)) => stream,
        };
        let connected = Instant::now();
        let mut timings = Timings { connected: Some(us()), ..Timings::default() };
        let local = stream.local_addr().ok();
        if cfg.close == CloseMode::Rst {
            // Best effort: without it the close is an ordinary FIN.
            // (tokio deprecates its set_linger because a non-zero linger blocks on drop; zero does not.)
            let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
        }
        let deadline = tokio::time::Instant::from_std(connected + cfg.banner_timeout);
        let (end, banner, sent_ident) = exchange(stream, remote, cfg, deadline, &mut timings, us).await;
        timings.closed = Some(us());
        Observation {
            remote,
            local,
            order: cfg.order,
            connect: Connect::Established,
            end: Some(end),
            timings,
            received: banner.into_bytes(),
            sent_ident,
            packets: Vec::new(),
        }
    }
}

/// The exchange on an established connection: our ident when the order says, then the server's
/// bytes until its ident line, its close, the byte cap or the deadline. Returns how it ended, what
/// was read, and whether our ident went out; the stream is closed on return.
async fn exchange(
    stream: TcpStream,
    remote: SocketAddr,
    cfg: &ProbeConfig,
    deadline: tokio::time::Instant,
    timings: &mut Timings,
    us: impl Fn() -> u64 + Copy,
) -> (End, BannerReader, bool) {
    let mut exchange = Exchange { stream, cfg, sent_ident: false, reset: false };
    if cfg.order == ProbeOrder::SendFirst {
        exchange.send_ident().await;
    }

    let mut banner = BannerReader::new(cfg.byte_cap);
    let end = loop {
        if banner.is_full() {
            break End::ByteCap;
        }
        let read = match timeout_at(deadline, banner.read_from(&mut exchange.stream)).await {
            Err(_) => break End::Timeout,
            Ok(read) => read,
        };
        match read {
            // End of stream after our ident was refused with a reset: the reset was the end.
            Ok((0, _)) if exchange.reset => break End::Rst,
            Ok((0, _)) => break End::Fin,
            Ok((_, progress)) => {
                timings.first_byte.get_or_insert_with(us);
                match progress {
                    Progress::NeedMore => continue,
                    Progress::Ident => {
                        timings.ident = Some(us());
                        if cfg.order == ProbeOrder::WaitForBanner {
                            exchange.send_ident().await;
                        }
                        break End::WeClosed;
                    }
                    Progress::NotSsh => break End::WeClosed,
                }
            }
            // Every byte that arrived before the reset has been read by now: the kernel hands
            // out queued data before the error.
            Err(e) => {
                tracing::debug!(%remote, error = %e, "read error");
                break End::Rst;
            }
        }
    };
    (end, banner, exchange.sent_ident)
}

/// An established connection, whether our ident went out on it, and whether sending it found the
/// connection reset.
struct Exchange<'a> {
    stream: TcpStream,
    cfg: &'a ProbeConfig,
    sent_ident: bool,
    reset: bool,
}

impl Exchange<'_> {
    async fn send_ident(&mut self) {
        match self.stream.write_all(&self.cfg.ident).await {
            Ok(()) => self.sent_ident = true,
            // The server may already have closed; what we read next tells how, except that the
            // send took the reset's error (ECONNRESET): the read then finds only the end of stream.
            Err(e) => {
                tracing::debug!(error = %e, "sending our ident failed");
                self.reset |= e.raw_os_error() == Some(libc::ECONNRESET);
            }
        }
    }
}

/// Connects `socket` to `remote`. Like tokio's `TcpSocket::connect`, but asks the socket for its
/// error (a system call) only when the readiness says there is one: every successful probe saves it.
async fn connect(socket: Socket, remote: SocketAddr) -> io::Result<TcpStream> {
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    // Writable: the handshake is over. A failed one also raises an error or a hang-up.
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// A non-blocking TCP socket for `remote`, bound to `source` when given.
fn new_socket(remote: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let domain = if remote.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    if let Some(ip) = source {
        // Choose the port at connect time, not bind time, so many connections from one bound
        // address share the ephemeral range by 4-tuple instead of exhausting it.
        #[cfg(target_os = "linux")]
        if remote.is_ipv4() {
            set_bind_address_no_port(&socket)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    Ok(socket)
}

/// Sets IP_BIND_ADDRESS_NO_PORT, which socket2 does not wrap.
#[cfg(target_os = "linux")]
fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set once the ephemeral-port warning has been given.
static PORTS_WARNED: AtomicBool = AtomicBool::new(false);

/// What a failed connect says about the server (or about us).
fn connect_error(e: &io::Error) -> Connect {
    match e.raw_os_error() {
        // From connect() (not bind), EADDRNOTAVAIL means no free local port for this destination:
        // connections closed with FIN wait out TIME_WAIT on our side, 60 s on Linux.
        Some(libc::EADDRNOTAVAIL) => {
            if !PORTS_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "out of local ports (EADDRNOTAVAIL): closed connections wait in TIME_WAIT; use \
                     --close rst (no TIME_WAIT), several --source addresses, or a lower --rate; \
                     affected probes are reported as local_error"
                );
            }
            Connect::LocalError { detail: e.to_string() }
        }
        Some(libc::ECONNREFUSED) => Connect::Refused,
        // ICMP errors to our SYN as the kernel maps them (net/ipv4/icmp.c; a port unreachable is
        // ECONNREFUSED, above), and a local firewall's verdict (EACCES, EPERM).
        Some(
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::ENOPROTOOPT
            | libc::EOPNOTSUPP
            | libc::EACCES
            | libc::EPERM,
        ) => Connect::Unreachable { detail: e.to_string() },
        Some(libc::ETIMEDOUT) => Connect::TimedOut,
        _ => Connect::LocalError { detail: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepted and reset before our ident went out: the send takes the reset's
    /// error, and the read that follows finds only the end of the stream. The end is the reset.
    #[tokio::test]
    async fn a_reset_found_by_our_send_is_the_end_not_a_fin() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().unwrap();
        socket2::SockRef::from(&server).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        // Until the reset has arrived: the stream turns readable (end of stream, error) then.
        stream.readable().await.unwrap();
        let cfg = ProbeConfig { order: ProbeOrder::SendFirst, ..ProbeConfig::default() };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut timings = Timings::default();
        let (end, banner, sent_ident) = exchange(stream, addr, &cfg, deadline, &mut timings, || 0).await;
        assert_eq!((end, sent_ident), (End::Rst, false));
        assert!(banner.into_bytes().is_empty());
    }

    #[test]
    fn port_exhaustion_is_a_local_error_and_warns_once() {
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert!(matches!(connect_error(&e), Connect::LocalError { .. }));
        assert!(PORTS_WARNED.load(Ordering::Relaxed));
        // Later ones find the warning given (no second line; the flag is what gates it).
        assert!(matches!(connect_error(&e), Connect::LocalError { .. }));
        assert_eq!(connect_error(&io::Error::from_raw_os_error(libc::ECONNREFUSED)), Connect::Refused);
        // What the kernel makes of ICMP errors other than port unreachable: unreachable, as the
        // raw engine reads the ICMP itself.
        for errno in [libc::EHOSTUNREACH, libc::ENETUNREACH, libc::EHOSTDOWN, libc::ENONET, libc::ENOPROTOOPT]
        {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(connect_error(&e), Connect::Unreachable { .. }), "{e}");
        }
    }
}
