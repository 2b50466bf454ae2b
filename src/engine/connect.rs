//! The connect engine: kernel TCP sockets driven by tokio.
//!
//! One probe is: connect (bounded by the request's connect timeout), then the identification
//! exchange as [`Exchange`] directs it: our ident when the order says, reads until the machine has
//! what it needs or the banner deadline passes, close. Reads are drained to the end before an error
//! is acted on, so a refusal line that arrives just before an RST is kept (docs/facts.md §2): the kernel
//! hands out queued data before the error.

use super::exchange::{Exchange, Purpose, Step};
use super::{Engine, EngineConfig, Held, HoldEnd, Interrupt, ProbeRequest};
use crate::evidence::{CloseMode, Connect, End, Observation};
use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at};

/// Kernel-socket engine. Cheap to share: one per run.
#[derive(Debug, Clone, Default)]
pub struct ConnectEngine {
    config: EngineConfig,
}

impl ConnectEngine {
    /// An engine whose connections all read and close as `config` says.
    pub fn new(config: EngineConfig) -> ConnectEngine {
        ConnectEngine { config }
    }

    /// The configuration every connection uses.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Connects and runs the exchange for `purpose`; the stream comes back when a hold got its banner.
    async fn exchange(
        &self,
        request: &ProbeRequest,
        purpose: Purpose,
    ) -> (Observation, Option<(TcpStream, Instant)>) {
        let start = Instant::now();
        let us = move || start.elapsed().as_micros() as u64;
        let remote = request.remote;
        let order = request.order;
        let failed = |local, connect| Observation::failed_connect(remote, local, order, connect, us());

        let socket = match new_socket(remote, request.source) {
            Ok(s) => s,
            Err(e) => return (failed(None, Connect::LocalError { detail: e.to_string() }), None),
        };
        // Only a bound source has an address before the connect (and asking costs a system call).
        let bound = match request.source {
            Some(_) => {
                socket.local_addr().ok().and_then(|a| a.as_socket()).filter(|a| !a.ip().is_unspecified())
            }
            None => None,
        };
        let connecting = timeout(request.connect_timeout, connect(socket, remote));
        let connected = tokio::select! {
            biased;
            result = connecting => result,
            () = interrupted(request.interrupt.as_ref()) => return (failed(bound, Connect::Interrupted), None),
        };
        let mut stream = match connected {
            Err(_) => return (failed(bound, Connect::TimedOut), None),
            // ECONNRESET from connect() means the handshake completed and the server reset the
            // connection before we saw it complete: an accepted connection, reset with no bytes.
            // When it was established the kernel knew and we did not, so `connected` stays empty.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                let mut obs = failed(bound, Connect::Established);
                obs.end = Some(End::Rst);
                return (obs, None);
            }
            Ok(Err(e)) => return (failed(bound, connect_error(&e)), None),
            Ok(Ok(stream)) => stream,
        };
        let connected = Instant::now();
        let local = stream.local_addr().ok();
        let config = request.config_on(&self.config);
        if config.close == CloseMode::Rst {
            // Best effort: without it the close is an ordinary FIN.
            // (tokio deprecates its set_linger because a non-zero linger blocks on drop; zero does not.)
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        let mut machine =
            Exchange::new(order, purpose, config.byte_cap, us(), request.banner_timeout.as_micros() as u64)
                .with_kexinit(request.kex);
        let deadline = tokio::time::Instant::from_std(connected + request.banner_timeout);
        let step =
            drive(&mut stream, &mut machine, &request.ident, deadline, request.interrupt.as_ref(), us).await;
        let held = step == Step::Hold;
        let kexinit = machine.kexinit();
        let ident_scan = machine.take_ident_scan();
        let (end, timings, received, sent_ident) = machine.into_parts();
        let observation = Observation {
            remote,
            local,
            order,
            connect: Connect::Established,
            // A held connection has not ended yet.
            end: (!held).then_some(end),
            timings,
            received,
            sent_ident,
            packets: Vec::new(),
            kexinit,
            ident_scan,
        };
        (observation, held.then_some((stream, connected)))
    }
}

impl Engine for ConnectEngine {
    type Held = HeldSocket;

    async fn probe(&self, request: ProbeRequest) -> Observation {
        self.exchange(&request, Purpose::Probe).await.0
    }

    async fn hold(&self, request: ProbeRequest) -> Result<HeldSocket, Observation> {
        match self.exchange(&request, Purpose::Hold).await {
            (observation, Some((stream, connected))) => Ok(HeldSocket { observation, stream, connected }),
            (observation, None) => Err(observation),
        }
    }

    fn kernel_sockets(&self) -> Option<EngineConfig> {
        Some(self.config)
    }
}

/// A connection the connect engine holds: the kernel socket itself. Dropping it closes the socket.
#[derive(Debug)]
pub struct HeldSocket {
    observation: Observation,
    stream: TcpStream,
    connected: Instant,
}

impl Held for HeldSocket {
    fn observation(&self) -> &Observation {
        &self.observation
    }

    async fn ended(&mut self) -> HoldEnd {
        // Nothing arrives until we speak (dropbear's KEXINIT aside, discarded); a read returning
        // nothing or an error means the server closed.
        let mut sink = [0u8; 512];
        let end = loop {
            match self.stream.read(&mut sink).await {
                Ok(0) => break End::Fin,
                Ok(_) => continue,
                Err(_) => break End::Rst,
            }
        };
        HoldEnd { end, after: self.connected.elapsed() }
    }
}

/// Runs the exchange on an established connection until it is over (or held): sends our ident when
/// the machine says, reads into the machine until it has what it needs, the server ends the
/// connection, or the deadline passes. Returns the last step.
async fn drive(
    stream: &mut TcpStream,
    machine: &mut Exchange,
    ident: &Bytes,
    deadline: tokio::time::Instant,
    interrupt: Option<&Interrupt>,
    us: impl Fn() -> u64,
) -> Step {
    // The machine's clock on tokio's: the machine may bring its deadline forward (a KEXINIT is
    // waited for only briefly), so each read waits for the earlier of the two.
    let epoch = tokio::time::Instant::now() - Duration::from_micros(us());
    let mut step = machine.start();
    loop {
        match step {
            Step::SendIdent => {
                send_ident(stream, machine, ident).await;
                step = Step::Read;
            }
            Step::Read => {
                let until = deadline.min(epoch + Duration::from_micros(machine.deadline_us()));
                let read = tokio::select! {
                    biased;
                    read = timeout_at(until, machine.reader().read_from(stream)) => Some(read),
                    () = interrupted(interrupt) => None,
                };
                let Some(read) = read else {
                    // The run stopped: the machine keeps what came so far.
                    step = machine.on_interrupt(us());
                    continue;
                };
                step = match read {
                    // The timer fires at or after the deadline; the machine's clock agrees.
                    Err(_) => machine.on_deadline(us().max(machine.deadline_us())),
                    Ok(Ok((0, _))) => machine.on_eof(us()),
                    Ok(Ok((_, progress))) => machine.on_progress(us(), progress),
                    Ok(Err(e)) => {
                        tracing::trace!(target: super::trace::TARGET, error = %e, "read error");
                        machine.on_reset(us())
                    }
                };
            }
            Step::Finish { send_ident: true } => {
                send_ident(stream, machine, ident).await;
                return Step::Finish { send_ident: false };
            }
            Step::Finish { send_ident: false } | Step::Hold | Step::Gone => return step,
        }
    }
}

/// Returns when `interrupt` fires; never without one.
async fn interrupted(interrupt: Option<&Interrupt>) {
    match interrupt {
        Some(i) => i.fired().await,
        None => std::future::pending().await,
    }
}

/// Sends our ident and tells the machine how that went. The server may already have closed; what
/// the next read finds tells how, except that a send that took the reset's error (ECONNRESET)
/// leaves the read only the end of stream: the machine remembers the reset.
async fn send_ident(stream: &mut TcpStream, machine: &mut Exchange, ident: &Bytes) {
    match stream.write_all(ident).await {
        Ok(()) => machine.on_ident_sent(),
        Err(e) => {
            tracing::trace!(target: super::trace::TARGET, error = %e, "sending our ident failed");
            machine.on_ident_failed(e.raw_os_error() == Some(libc::ECONNRESET));
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
pub(crate) fn new_socket(remote: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
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
pub(crate) fn connect_error(e: &io::Error) -> Connect {
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
    use crate::evidence::ProbeOrder;

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
        let mut stream = stream;
        let mut machine = Exchange::new(ProbeOrder::SendFirst, Purpose::Probe, 64, 0, 5_000_000);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let ident = super::super::ident_line("SSH-2.0-t");
        let step = drive(&mut stream, &mut machine, &ident, deadline, None, || 0).await;
        assert_eq!(step, Step::Finish { send_ident: false });
        let (end, _, received, sent_ident) = machine.into_parts();
        assert_eq!((end, sent_ident), (End::Rst, false));
        assert!(received.is_empty());
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
