//! The raw sockets: opening them with the options the engine needs, sending segments and receiving
//! packets in batches (`sendmmsg`, `recvmmsg`: a system call per batch, not per packet). The only
//! I/O of the raw engine, and the only `unsafe` (control messages for IPv6,
//! which socket2 does not build or parse).
//!
//! | socket | sends | receives |
//! |---|---|---|
//! | IPv4 TCP (`IP_HDRINCL`; `IPPROTO_RAW` when the packet socket is open) | our IPv4 header + TCP segment | inbound TCP to our ports, IPv4 header included (nothing as `IPPROTO_RAW`) |
//! | `AF_PACKET` IPv4 (`SOCK_DGRAM`), when it opens | — | inbound IPv4 TCP to our ports, IPv4 header included, before the IP layer |
//! | IPv4 ICMP | — | ICMP errors quoting our segments |
//! | IPv6 TCP | our TCP segment; the source address in `IPV6_PKTINFO` | TCP segments, with destination and hop limit as control messages |
//! | ICMPv6 | — | ICMPv6 errors |
//!
//! All carry `SO_MARK` [`MARK`] so the engine's own RSTs pass its firewall
//! rule, and are non-blocking: the engine thread polls them, with a descriptor that wakes it and a
//! timeout for its timers.

use super::firewall::MARK;
use super::wire::{Ipv4Repr, TcpRepr, PROTO_TCP};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// The TTL and hop limit our packets leave with.
pub const TTL: u8 = 64;

/// How much the kernel may queue for each receiving socket.
const RECV_BUFFER: usize = 8 << 20;

/// The most packets one `recvmmsg` (or `sendmmsg`) moves.
pub const BATCH: usize = 64;

/// Room for one received packet: loopback's MTU, and a segment the kernel kept whole (GSO) on it,
/// reach 64 KiB. The pages of a slot are touched only as far as packets fill them.
const SLOT: usize = 65536;

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): a packet socket does not see what this host sends.
const PACKET_IGNORE_OUTGOING: i32 = 23;
/// Where a classic BPF program reads the packet's type (`SKF_AD_OFF + SKF_AD_PKTTYPE`).
const BPF_PKTTYPE: u32 = (-0x1000i32 + 4) as u32;

/// The engine's sockets. IPv6 ones are absent when the host has no IPv6.
#[derive(Debug)]
pub struct RawSockets {
    tcp4: Socket,
    /// When open: where inbound IPv4 TCP is read instead of `tcp4` (an `AF_PACKET` socket, which
    /// sees packets before IP does, so the firewall can keep the kernel's TCP out of our flows).
    packet4: Option<Socket>,
    icmp4: Socket,
    tcp6: Option<Socket>,
    icmp6: Option<Socket>,
}

/// What [`RawSockets::wait`] found readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The sockets, in the order tcp4, icmp4, tcp6, icmp6 (as `RawSockets::recv` numbers them).
    pub sockets: [bool; 4],
    /// The wake-up descriptor.
    pub wake: bool,
}

/// One packet as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An IPv4 packet (header included) from the TCP socket.
    Tcp4 {
        /// Its length in the buffer.
        len: usize,
    },
    /// An IPv4 packet (header included) from the ICMP socket.
    Icmp4 {
        /// Its length in the buffer.
        len: usize,
    },
    /// A TCP segment over IPv6.
    Tcp6 {
        /// Its length in the buffer.
        len: usize,
        /// Its source.
        src: Ipv6Addr,
        /// Its destination, when the kernel said.
        dst: Option<Ipv6Addr>,
        /// Its hop limit, when the kernel said.
        hop_limit: Option<u8>,
    },
    /// An ICMPv6 message.
    Icmp6 {
        /// Its length in the buffer.
        len: usize,
    },
}

/// Buffers for one batch of received packets, reused from batch to batch: [`BATCH`] slots and
/// what [`RawSockets::recv_batch`] found in them.
pub struct RecvBatch {
    slots: Vec<u8>,
    received: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        // Zeroed memory the allocator maps lazily: only the pages packets reach cost memory.
        RecvBatch { slots: vec![0u8; BATCH * SLOT], received: Vec::with_capacity(BATCH) }
    }
}

impl RecvBatch {
    /// The packets of the last batch, each with its bytes.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], Received)> + '_ {
        self.received.iter().enumerate().map(|(i, &r)| (&self.slots[i * SLOT..(i + 1) * SLOT], r))
    }

    fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.slots[i * SLOT..(i + 1) * SLOT]
    }
}

fn raw_socket(domain: Domain, protocol: i32) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(protocol)))?;
    socket.set_nonblocking(true)?;
    socket.set_mark(MARK)?;
    // SO_RCVBUFFORCE passes rmem_max for a privileged process; the plain option is the fallback.
    if setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECV_BUFFER as i32).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
    Ok(socket)
}

/// A classic BPF program that keeps a TCP segment only when its destination port is in `ports`:
/// a raw TCP socket otherwise gets a copy of every TCP packet the host receives, on loopback our own
/// outgoing segments among them (half of what it queued in the e2e bench, each a wake-up and a
/// `recv`). Only packets the flow table would drop are filtered: every flow's local port is in
/// `ports`. `ipv4`: the packet starts with its IPv4 header (IP_HDRINCL sockets receive it), else
/// with the TCP header (IPv6 raw sockets). A packet too short to hold the port is dropped, as
/// parsing would drop it.
pub fn port_filter(ipv4: bool, ports: &RangeInclusive<u16>) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let mut prog = Vec::with_capacity(6);
    if ipv4 {
        // X = 4 * (IHL), then A = the 16 bits at X + 2 (the TCP destination port).
        prog.push(op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, 0));
        prog.push(op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, 2));
    } else {
        prog.push(op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 2));
    }
    // A < start: drop (skip 2 to the last); A > end: drop (skip 1); else keep.
    prog.push(op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0, 2, u32::from(*ports.start())));
    prog.push(op(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K, 1, 0, u32::from(*ports.end())));
    prog.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX));
    prog.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, 0));
    prog
}

/// The packet socket's program: [`port_filter`] over IPv4, for packets addressed to this host (not
/// those a promiscuous interface or a broadcast brings) that carry TCP.
pub fn packet_filter(ports: &RangeInclusive<u16>) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let tail = port_filter(true, ports);
    // The jumps below skip to the last instruction, the tail's "drop".
    let to_drop = |at: usize| (4 + tail.len() - 1 - at - 1) as u8;
    let mut prog = vec![
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, BPF_PKTTYPE),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, to_drop(1), libc::PACKET_HOST as u32),
        // The IPv4 header's protocol byte.
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 9),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, to_drop(3), libc::IPPROTO_TCP as u32),
    ];
    prog.extend(tail);
    prog
}

/// The raw IPv4 socket that sends our segments (`IP_HDRINCL`) and receives inbound TCP to `ports`.
fn tcp4_socket(ports: &RangeInclusive<u16>) -> io::Result<Socket> {
    let socket = raw_socket(Domain::IPV4, libc::IPPROTO_TCP)?;
    socket.set_header_included_v4(true)?;
    socket.attach_filter(&port_filter(true, ports))?;
    Ok(socket)
}

/// A raw IPv4 socket that only sends (`IPPROTO_RAW`: our IPv4 header included, and no copy of the
/// host's TCP packets queued to it, as an `IPPROTO_TCP` one gets even to drop them).
fn send_only_socket() -> io::Result<Socket> {
    raw_socket(Domain::IPV4, libc::IPPROTO_RAW)
}

/// An `AF_PACKET` socket that reads IPv4 packets from the network header on (`SOCK_DGRAM`), of
/// every interface, but only those this host receives, and only TCP to `ports`.
fn packet_socket(ports: &RangeInclusive<u16>) -> io::Result<Socket> {
    let protocol = i32::from((libc::ETH_P_IP as u16).to_be());
    let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(protocol)))?;
    socket.set_nonblocking(true)?;
    setsockopt_int(&socket, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    socket.attach_filter(&packet_filter(ports))?;
    if setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECV_BUFFER as i32).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
    Ok(socket)
}

fn setsockopt_int(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl RawSockets {
    /// Opens the sockets. Fails (EPERM) without CAP_NET_RAW; IPv6 is optional. The TCP sockets
    /// keep only segments to a port in `ports` (see [`port_filter`]). With `packet`, inbound IPv4
    /// TCP is read from a packet socket when one opens (`has_packet`), and the
    /// raw IPv4 socket only sends.
    pub fn open(ports: RangeInclusive<u16>, packet: bool) -> io::Result<RawSockets> {
        let packet4 = if packet {
            match packet_socket(&ports) {
                Ok(s) => Some(s),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "no packet socket: reading IPv4 through the raw socket");
                    None
                }
            }
        } else {
            None
        };
        let tcp4 = if packet4.is_some() { send_only_socket()? } else { tcp4_socket(&ports)? };
        let icmp4 = raw_socket(Domain::IPV4, libc::IPPROTO_ICMP)?;
        let v6 = || -> io::Result<(Socket, Socket)> {
            let tcp6 = raw_socket(Domain::IPV6, libc::IPPROTO_TCP)?;
            tcp6.attach_filter(&port_filter(false, &ports))?;
            setsockopt_int(&tcp6, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
            setsockopt_int(&tcp6, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
            tcp6.set_unicast_hops_v6(u32::from(TTL))?;
            let icmp6 = raw_socket(Domain::IPV6, libc::IPPROTO_ICMPV6)?;
            Ok((tcp6, icmp6))
        };
        let (tcp6, icmp6) = match v6() {
            Ok((t, i)) => (Some(t), Some(i)),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 raw sockets: IPv6 probes will fail");
                (None, None)
            }
        };
        Ok(RawSockets { tcp4, packet4, icmp4, tcp6, icmp6 })
    }

    /// Closes the packet socket: inbound IPv4 TCP is read from the raw socket again, filtered to
    /// `ports`.
    pub(crate) fn close_packet(&mut self, ports: &RangeInclusive<u16>) -> io::Result<()> {
        if self.packet4.take().is_some() {
            self.tcp4 = tcp4_socket(ports)?;
        }
        Ok(())
    }

    /// Whether inbound IPv4 TCP comes through a packet socket: the firewall must then keep it from
    /// the kernel's TCP (see `firewall::rule_script`), and the raw IPv4 socket receives nothing.
    pub(crate) fn has_packet(&self) -> bool {
        self.packet4.is_some()
    }

    /// Whether IPv6 targets can be probed.
    pub(crate) fn has_ipv6(&self) -> bool {
        self.tcp6.is_some()
    }

    /// Sends one segment from `src` to `dst`.
    pub fn send(&self, src: IpAddr, dst: IpAddr, segment: &TcpRepr<'_>) -> io::Result<()> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.send4(s, d, segment),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.send6(s, d, segment),
            _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        }
    }

    fn send4(&self, src: Ipv4Addr, dst: Ipv4Addr, segment: &TcpRepr<'_>) -> io::Result<()> {
        let mut buf = Vec::new();
        emit4(&mut buf, src, dst, segment);
        let to = SockAddr::from(SocketAddr::new(IpAddr::V4(dst), 0));
        self.tcp4.send_to(&buf, &to).map(drop)
    }

    /// Sends segments, each `(source, destination, segment)`, and says how each went, in order:
    /// the IPv4 ones with one `sendmmsg` per [`BATCH`], the others one by one. A message the
    /// kernel refuses ends a `sendmmsg` early with its error; the rest go in the next call.
    pub fn send_batch(&self, segments: &[(IpAddr, IpAddr, TcpRepr<'_>)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(segments.len());
        let mut v4 = Vec::new();
        for (i, (src, dst, segment)) in segments.iter().enumerate() {
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    v4.push((i, *s, *d));
                    results.push(Ok(()));
                }
                _ => results.push(self.send(*src, *dst, segment)),
            }
        }
        for chunk in v4.chunks(BATCH) {
            // Every packet of the chunk in one buffer, then a message over each.
            let mut arena = Vec::new();
            let mut spans = Vec::with_capacity(chunk.len());
            for &(i, src, dst) in chunk {
                let start = arena.len();
                emit4(&mut arena, src, dst, &segments[i].2);
                spans.push((start, arena.len() - start));
            }
            let mut to: Vec<libc::sockaddr_in> = chunk
                .iter()
                .map(|&(_, _, dst)| libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
                    sin_zero: [0; 8],
                })
                .collect();
            let mut iov: Vec<libc::iovec> = spans
                .iter()
                .map(|&(start, len)| libc::iovec {
                    iov_base: arena[start..].as_mut_ptr().cast(),
                    iov_len: len,
                })
                .collect();
            // SAFETY: mmsghdr is plain data; zero is a valid (empty) value for every field.
            let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len()).map(|_| unsafe { zeroed() }).collect();
            for (k, m) in msgs.iter_mut().enumerate() {
                m.msg_hdr.msg_name = (&mut to[k] as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                m.msg_hdr.msg_iov = &mut iov[k];
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut k = 0;
            while k < msgs.len() {
                // SAFETY: `msgs[k..]` are valid headers whose pointers (addresses, iovecs, the
                // arena) outlive the call; the kernel only reads them and writes `msg_len`.
                let rc = unsafe {
                    libc::sendmmsg(self.tcp4.as_raw_fd(), msgs[k..].as_mut_ptr(), (msgs.len() - k) as u32, 0)
                };
                if rc > 0 {
                    k += rc as usize;
                } else {
                    results[chunk[k].0] = Err(io::Error::last_os_error());
                    k += 1;
                }
            }
        }
        results
    }

    fn send6(&self, src: Ipv6Addr, dst: Ipv6Addr, segment: &TcpRepr<'_>) -> io::Result<()> {
        let Some(socket) = &self.tcp6 else {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        };
        let mut buf = vec![0u8; segment.buffer_len()];
        segment.emit(&mut buf, IpAddr::V6(src), IpAddr::V6(dst));
        // SAFETY: every pointer in `msg` refers to a local that outlives the call; the control
        // buffer is aligned (u64) and large enough for one in6_pktinfo message.
        unsafe {
            let mut to: libc::sockaddr_in6 = zeroed();
            to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            to.sin6_addr.s6_addr = dst.octets();
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut control = [0u64; 8];
            let info_len = size_of::<libc::in6_pktinfo>() as u32;
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut to as *mut libc::sockaddr_in6).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(info_len) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
            (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(info_len) as _;
            let info =
                libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: src.octets() }, ipi6_ifindex: 0 };
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
            if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for any socket, or `wake` (another descriptor: how the engine is
    /// woken), to be readable.
    pub fn wait(&self, wake: RawFd, timeout: Duration) -> io::Result<Readiness> {
        let fd = |s: Option<&Socket>| s.map_or(-1, AsRawFd::as_raw_fd);
        let mut fds = [
            fd(Some(self.packet4.as_ref().unwrap_or(&self.tcp4))),
            fd(Some(&self.icmp4)),
            fd(self.tcp6.as_ref()),
            fd(self.icmp6.as_ref()),
            wake,
        ]
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: a valid array of pollfd of the length given (negative fds are ignored by poll).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(Readiness::default()) } else { Err(e) };
        }
        let readable = |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLERR) != 0;
        Ok(Readiness {
            sockets: [readable(&fds[0]), readable(&fds[1]), readable(&fds[2]), readable(&fds[3])],
            wake: readable(&fds[4]),
        })
    }
}

impl RawSockets {
    /// Receives what socket `which` (as [`wait`](Self::wait) numbers them) has queued, up to
    /// [`BATCH`] packets, into `batch`; returns how many came (zero when nothing was queued). The
    /// IPv4 and ICMP sockets take one `recvmmsg`; IPv6 TCP (its addresses come as control messages)
    /// one `recvmsg` a packet. A packet cut short by its slot is dropped, as a loss.
    pub fn recv_batch(&self, which: usize, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.received.clear();
        let plain = match which {
            0 => Some(self.packet4.as_ref().unwrap_or(&self.tcp4)),
            1 => Some(&self.icmp4),
            3 => self.icmp6.as_ref(),
            _ => None,
        };
        let Some(socket) = plain else {
            let Some(tcp6) = &self.tcp6 else { return Ok(0) };
            for i in 0..BATCH {
                match recv_v6(tcp6, batch.slot(i)) {
                    Ok(r) => batch.received.push(r),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if batch.received.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
            return Ok(batch.received.len());
        };
        let base = batch.slots.as_mut_ptr();
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            // SAFETY: slot i lies within `slots` (BATCH slots of SLOT bytes).
            iov_base: unsafe { base.add(i * SLOT) }.cast(),
            iov_len: SLOT,
        });
        // SAFETY: mmsghdr is plain data; zero is a valid (empty) value for every field.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH valid headers, each over its own slot of the batch's buffer, which outlives
        // the call; no timeout (the socket is non-blocking).
        let rc = unsafe {
            libc::recvmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut())
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        for m in &msgs[..rc as usize] {
            let len = m.msg_len as usize;
            // A cut packet keeps its place (slot i is packet i) but reads as empty: parsing drops it.
            let len = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 { 0 } else { len };
            batch.received.push(match which {
                0 => Received::Tcp4 { len },
                1 => Received::Icmp4 { len },
                _ => Received::Icmp6 { len },
            });
        }
        Ok(batch.received.len())
    }
}

/// Appends an IPv4 packet carrying `segment` to `buf`.
fn emit4(buf: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, segment: &TcpRepr<'_>) {
    let ip = Ipv4Repr { src, dst, protocol: PROTO_TCP, payload_len: segment.buffer_len(), ttl: TTL };
    let start = buf.len();
    buf.resize(start + Ipv4Repr::HEADER_LEN + segment.buffer_len(), 0);
    ip.emit(&mut buf[start..]);
    segment.emit(&mut buf[start + Ipv4Repr::HEADER_LEN..], IpAddr::V4(src), IpAddr::V4(dst));
}

fn recv_v6(socket: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: every pointer in `msg` refers to a local that outlives the call; control messages are
    // walked with the CMSG macros within msg_controllen and read unaligned.
    unsafe {
        let mut from: libc::sockaddr_in6 = zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>() as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut dst, mut hop_limit) = (None, None);
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let h = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    hop_limit = u8::try_from(h).ok();
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(Received::Tcp6 { len: n as usize, src: Ipv6Addr::from(from.sin6_addr.s6_addr), dst, hop_limit })
    }
}

/// The source address the kernel would pick for `remote` (a connected UDP socket's local address;
/// no packet is sent).
pub(crate) fn route_source(remote: IpAddr) -> io::Result<IpAddr> {
    let domain = if remote.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, None)?;
    socket.connect(&SockAddr::from(SocketAddr::new(remote, 9)))?;
    socket
        .local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program as the kernel would, over the instructions the engine's filters
    /// use: the return value (0 drops the packet).
    fn run(prog: &[libc::sock_filter], packet: &[u8], pkttype: u32) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |at: usize| packet.get(at).map(|&b| u32::from(b));
        let half = |at: usize| Some((byte(at)? << 8) | byte(at + 1)?);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            let loaded = match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS && i.k == BPF_PKTTYPE => Some(pkttype),
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => byte(i.k as usize),
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => half(i.k as usize),
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_IND => half((x + i.k) as usize),
                c if c == libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH => {
                    x = 4 * (byte(i.k as usize).unwrap_or(0) & 0xf);
                    continue;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match code & 0xf0 {
                        op if op == libc::BPF_JEQ => a == i.k,
                        op if op == libc::BPF_JGE => a >= i.k,
                        op if op == libc::BPF_JGT => a > i.k,
                        op => panic!("jump {op:#x} not modelled"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                    continue;
                }
                c => panic!("instruction {c:#x} not modelled"),
            };
            // A load past the packet's end drops it.
            match loaded {
                Some(v) => a = v,
                None => return 0,
            }
        }
    }

    /// An IPv4 packet (20-byte header) of `protocol` whose transport header has destination port
    /// `port`.
    fn ipv4(protocol: u8, port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = protocol;
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p
    }

    #[test]
    fn the_packet_filter_keeps_tcp_to_our_ports_addressed_to_us_only() {
        let ports = 61000..=65535;
        let prog = packet_filter(&ports);
        let host = libc::PACKET_HOST as u32;
        assert_ne!(run(&prog, &ipv4(6, 61000), host), 0);
        assert_ne!(run(&prog, &ipv4(6, 65535), host), 0);
        assert_eq!(run(&prog, &ipv4(6, 60999), host), 0, "below the range");
        assert_eq!(run(&prog, &ipv4(6, 22), host), 0);
        assert_eq!(run(&prog, &ipv4(17, 61000), host), 0, "UDP to one of our ports");
        assert_eq!(run(&prog, &ipv4(6, 61000), libc::PACKET_OTHERHOST as u32), 0, "not for this host");
        assert_eq!(run(&prog, &ipv4(6, 61000), libc::PACKET_BROADCAST as u32), 0);
        assert_eq!(run(&prog, &ipv4(6, 61000)[..21], host), 0, "too short for the port");
        // The raw socket's filter is the same test without the first two.
        let raw = port_filter(true, &ports);
        assert_ne!(run(&raw, &ipv4(6, 62000), host), 0);
        assert_eq!(run(&raw, &ipv4(6, 80), host), 0);
    }
}
