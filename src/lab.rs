//! The embedded lab: emulated SSH endpoints on loopback, one port per behaviour.
//!
//! Real servers are the ground truth (the tests start sshd and dropbear), but some behaviours cannot be
//! produced on demand by any real server, and a demo should need no server at all. Each [`Behaviour`]
//! reproduces, on the wire, one way an endpoint answers (or fails to answer) the identification
//! exchange, as measured on real servers (docs/facts.md §3).
//!
//! The lab never reads the client before it has decided how to answer, like sshd: so a client that
//! speaks first provokes an RST from a closing endpoint, as it does in real life (docs/facts.md §2).

use crate::outcome::KnownRefusal;
pub use crate::server::MaxStartups;
use rand::Rng;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The banner the lab's healthy endpoints send.
pub const LAB_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.9 sshprobe-lab\r\n";

/// How one lab endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Behaviour {
    /// An OpenSSH-like banner right away.
    Ok,
    /// Accept, wait `deny_delay`, close without a byte: a TCP-wrappers denial.
    DenyClose,
    /// Accept, then reset (SO_LINGER 0) without a byte.
    DenyReset,
    /// OpenSSH's `start:rate:full` rule over the lab's own count of open connections, refusing
    /// with `Exceeded MaxStartups` (OpenSSH 8.2–9.7).
    Maxstartups,
    /// The same rule, refusing with `Not allowed at this time` (OpenSSH 9.8+).
    NotAllowed,
    /// Accept and never send anything.
    Tarpit,
    /// Send the banner one byte at a time.
    Slow,
    /// Answer with an HTTP error, as a web server on the wrong port would.
    NotSsh,
    /// Send bytes without ever a line end.
    Endless,
    /// Text lines (a TCP-wrappers `banners` notice), then the SSH- line.
    Prebanner,
    /// An SSH-1-only server.
    Ssh1,
    /// OpenSSH 8.5–9.7's `PerSourceMaxStartups`: at most `per_source` unauthenticated connections
    /// from one address; the next one from that address gets `Exceeded MaxStartups` (docs/facts.md
    /// §3: the same bytes as a global drop), while another address still gets the banner.
    PerSource,
}

impl Behaviour {
    /// Every behaviour, in port order.
    pub const ALL: [Behaviour; 12] = [
        Behaviour::Ok,
        Behaviour::DenyClose,
        Behaviour::DenyReset,
        Behaviour::Maxstartups,
        Behaviour::NotAllowed,
        Behaviour::Tarpit,
        Behaviour::Slow,
        Behaviour::NotSsh,
        Behaviour::Endless,
        Behaviour::Prebanner,
        Behaviour::Ssh1,
        Behaviour::PerSource,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// What it emulates, for the port map.
    pub fn describe(self) -> &'static str {
        match self {
            Behaviour::Ok => "OpenSSH-like banner",
            Behaviour::DenyClose => "accept, delay, close with no bytes (TCP wrappers)",
            Behaviour::DenyReset => "accept, reset with no bytes",
            Behaviour::Maxstartups => "MaxStartups rule, 'Exceeded MaxStartups' (OpenSSH 8.2-9.7)",
            Behaviour::NotAllowed => "MaxStartups rule, 'Not allowed at this time' (OpenSSH 9.8+)",
            Behaviour::Tarpit => "accept, never send",
            Behaviour::Slow => "banner one byte at a time",
            Behaviour::NotSsh => "HTTP reply",
            Behaviour::Endless => "bytes without a line end",
            Behaviour::Prebanner => "text lines, then the SSH- line",
            Behaviour::Ssh1 => "SSH-1.5 only",
            Behaviour::PerSource => "PerSourceMaxStartups, 'Exceeded MaxStartups' past the limit per address",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the lab is set up.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Address every endpoint listens on.
    pub bind: IpAddr,
    /// First port, one per behaviour in [`Behaviour::ALL`] order; 0 for ports the system chooses.
    pub base_port: u16,
    /// How long `deny_close` waits before closing (Debian's libwrap child sleeps 5 s).
    pub deny_delay: Duration,
    /// The rule for `maxstartups` and `not_allowed`.
    pub maxstartups: MaxStartups,
    /// The gap between bytes for `slow`.
    pub slow_interval: Duration,
    /// How long an accepted connection may stay open (sshd's LoginGraceTime).
    pub grace: Duration,
    /// The per-address limit of `per_source` (sshd's PerSourceMaxStartups).
    pub per_source: usize,
}

impl Default for LabConfig {
    fn default() -> LabConfig {
        LabConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            base_port: 0,
            deny_delay: Duration::from_secs(5),
            maxstartups: MaxStartups { start: 3, rate: 30, full: 6 },
            slow_interval: Duration::from_millis(50),
            grace: Duration::from_secs(30),
            per_source: 3,
        }
    }
}

/// Running lab endpoints. Dropping the lab stops every endpoint and closes every connection.
#[derive(Debug)]
pub struct Lab {
    endpoints: Vec<(Behaviour, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Binds one listener per behaviour and starts serving.
    pub async fn start(config: LabConfig) -> std::io::Result<Lab> {
        let config = Arc::new(config);
        let mut lab = Lab { endpoints: Vec::new(), tasks: Vec::new() };
        for (i, behaviour) in Behaviour::ALL.into_iter().enumerate() {
            let port = match config.base_port {
                0 => Some(0),
                base => u16::try_from(i).ok().and_then(|i| base.checked_add(i)),
            };
            let Some(port) = port else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "base port {}: the lab needs {} consecutive ports, past 65535",
                        config.base_port,
                        Behaviour::ALL.len()
                    ),
                ));
            };
            let addr = SocketAddr::new(config.bind, port);
            // The system's message ("Address already in use") does not say which address.
            let listener = listen(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
            lab.endpoints.push((behaviour, listener.local_addr()?));
            lab.tasks.push(tokio::spawn(serve(listener, behaviour, config.clone())));
        }
        Ok(lab)
    }

    /// Every endpoint and its address.
    pub fn endpoints(&self) -> &[(Behaviour, SocketAddr)] {
        &self.endpoints
    }

    /// The address of one behaviour's endpoint.
    pub fn addr(&self, behaviour: Behaviour) -> SocketAddr {
        self.endpoints
            .iter()
            .find(|(b, _)| *b == behaviour)
            .map(|&(_, a)| a)
            .expect("the lab serves every behaviour")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The accept queue of a lab endpoint: deep enough that probing at high concurrency never falls
/// back to SYN cookies (which drop handshakes under load and turn fast endpoints into timeouts).
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts connections for one behaviour; the connections live in a `JoinSet` owned by this task,
/// so aborting the task closes them all.
async fn serve(listener: TcpListener, behaviour: Behaviour, config: Arc<LabConfig>) {
    let open = Arc::new(AtomicUsize::new(0));
    let per_address = Arc::new(PerAddress::default());
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(%behaviour, error = %e, "lab accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let config = config.clone();
        let open = open.clone();
        let per_address = per_address.clone();
        connections.spawn(async move {
            let answer = async {
                if behaviour == Behaviour::PerSource {
                    answer_per_source(stream, &config, &per_address).await
                } else {
                    answer(stream, behaviour, &config, &open).await
                }
            };
            let result = tokio::time::timeout(config.grace, answer).await;
            if let Ok(Err(e)) = result {
                tracing::debug!(%behaviour, error = %e, "lab connection ended with an error");
            }
        });
    }
}

/// Answers one connection as `behaviour` does.
async fn answer(
    mut stream: TcpStream,
    behaviour: Behaviour,
    config: &LabConfig,
    open: &AtomicUsize,
) -> std::io::Result<()> {
    match behaviour {
        Behaviour::Ok => banner_then_kexinit(stream, LAB_BANNER).await,
        Behaviour::DenyClose => {
            tokio::time::sleep(config.deny_delay).await;
            Ok(())
        }
        // A zero linger turns the close into an RST (and does not block, unlike a non-zero one).
        Behaviour::DenyReset => socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)),
        Behaviour::Maxstartups | Behaviour::NotAllowed => {
            let refusal = if behaviour == Behaviour::Maxstartups {
                KnownRefusal::ExceededMaxStartups
            } else {
                KnownRefusal::NotAllowedAtThisTime
            };
            let message = format!("{}\r\n", refusal.line());
            let slot = UnauthSlot::take(open);
            let drop_percent = config.maxstartups.drop_percent(slot.others as u32);
            if rand::thread_rng().gen_range(0..100) < drop_percent {
                drop(slot);
                return stream.write_all(message.as_bytes()).await;
            }
            let result = banner_then_kexinit(stream, LAB_BANNER).await;
            drop(slot);
            result
        }
        Behaviour::Tarpit => hold(stream).await,
        Behaviour::Slow => {
            for &b in LAB_BANNER {
                stream.write_all(&[b]).await?;
                tokio::time::sleep(config.slow_interval).await;
            }
            kexinit_after_ident(stream).await
        }
        Behaviour::NotSsh => {
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
        }
        Behaviour::Endless => {
            let chunk = [b'A'; 1024];
            loop {
                stream.write_all(&chunk).await?;
            }
        }
        Behaviour::Prebanner => {
            let text = b"Authorized use only. Activity is monitored.\r\nContact ops@example.invalid\r\n";
            stream.write_all(text).await?;
            banner_then_kexinit(stream, LAB_BANNER).await
        }
        Behaviour::Ssh1 => banner_then_hold(stream, b"SSH-1.5-Cisco-1.25\r\n").await,
        Behaviour::PerSource => answer_per_source(stream, config, &PerAddress::default()).await,
    }
}

/// The banner of the per-address endpoint: an OpenSSH without penalties (before 9.8), so that a
/// refusal from one address can only be the per-source limit.
pub(crate) const LAB_PER_SOURCE_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 sshprobe-lab\r\n";

/// Unauthenticated connections open, per client address.
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts one more from `ip`, unless `limit` are open already.
    fn take(&self, ip: IpAddr, limit: usize) -> bool {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Answers as sshd with `PerSourceMaxStartups` (8.5–9.7) does: the refusal line past the limit.
async fn answer_per_source(
    mut stream: TcpStream,
    config: &LabConfig,
    open: &PerAddress,
) -> std::io::Result<()> {
    let ip = stream.peer_addr()?.ip();
    if !open.take(ip, config.per_source) {
        let message = format!("{}\r\n", KnownRefusal::ExceededMaxStartups.line());
        return stream.write_all(message.as_bytes()).await;
    }
    // Released however the connection ends (the grace timeout drops this future).
    struct Slot<'a>(&'a PerAddress, IpAddr);
    impl Drop for Slot<'_> {
        fn drop(&mut self) {
            self.0.release(self.1);
        }
    }
    let _slot = Slot(open, ip);
    banner_then_kexinit(stream, LAB_PER_SOURCE_BANNER).await
}

/// One unauthenticated connection counted by a MaxStartups endpoint, released when dropped.
struct UnauthSlot<'a> {
    open: &'a AtomicUsize,
    /// How many were open before this one.
    others: usize,
}

impl<'a> UnauthSlot<'a> {
    fn take(open: &'a AtomicUsize) -> UnauthSlot<'a> {
        UnauthSlot { open, others: open.fetch_add(1, Ordering::SeqCst) }
    }
}

impl Drop for UnauthSlot<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends `banner`, then goes on as OpenSSH's sshd does after it: [`kexinit_after_ident`].
async fn banner_then_kexinit(mut stream: TcpStream, banner: &[u8]) -> std::io::Result<()> {
    stream.write_all(banner).await?;
    kexinit_after_ident(stream).await
}

/// Reads the client's identification line and answers with the lab's KEXINIT
/// ([`lab_kexinit_packet`]), as sshd does once both idents are exchanged (docs/facts.md §12), then
/// holds the connection. A client that sends no line end within 8 KiB is only held.
async fn kexinit_after_ident(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut read = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].contains(&b'\n') {
            break;
        }
        read += n;
        if read > 8192 {
            return hold(stream).await;
        }
    }
    stream.write_all(lab_kexinit_packet()).await?;
    hold(stream).await
}

/// The KEXINIT packet the lab's OpenSSH-like endpoints send: an OpenSSH 9.9 server's default
/// proposal (its `myproposal.h` lists, `ext-info-s` and strict key exchange) with one ed25519 host
/// key, and a zero cookie.
pub fn lab_kexinit_packet() -> &'static [u8] {
    static PACKET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PACKET.get_or_init(|| {
        let defaults = crate::kexinit::openssh::CLIENTS[2];
        let mut kex = defaults.kex.to_vec();
        kex.extend(["ext-info-s", crate::kexinit::STRICT_KEX_SERVER]);
        crate::kexinit::KexInit::offering(&kex, &["ssh-ed25519"], defaults.cipher, defaults.mac).emit_packet()
    })
}

async fn banner_then_hold(mut stream: TcpStream, banner: &[u8]) -> std::io::Result<()> {
    stream.write_all(banner).await?;
    hold(stream).await
}

/// Keeps the connection open until the client closes it (or the grace time, enforced by the caller).
async fn hold(mut stream: TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
