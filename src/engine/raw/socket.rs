//! The raw sockets: opening them with the options the engine needs, sending one segment, receiving
//! one packet. The only I/O of the raw engine, and the only `unsafe` (control messages for IPv6,
//! which socket2 does not build or parse).
//!
//! | socket | sends | receives |
//! |---|---|---|
//! | IPv4 TCP (`IP_HDRINCL`) | our IPv4 header + TCP segment | every inbound TCP packet, IPv4 header included |
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
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// The TTL and hop limit our packets leave with.
pub const TTL: u8 = 64;

/// How much the kernel may queue for each receiving socket.
const RECV_BUFFER: usize = 8 << 20;

/// The engine's sockets. IPv6 ones are absent when the host has no IPv6.
#[derive(Debug)]
pub struct RawSockets {
    tcp4: Socket,
    icmp4: Socket,
    tcp6: Option<Socket>,
    icmp6: Option<Socket>,
}

/// What [`RawSockets::wait`] found readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The sockets, in the order tcp4, icmp4, tcp6, icmp6 (as [`RawSockets::recv`] numbers them).
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
    /// keep only segments to a port in `ports` (see [`port_filter`]).
    pub fn open(ports: RangeInclusive<u16>) -> io::Result<RawSockets> {
        let tcp4 = raw_socket(Domain::IPV4, libc::IPPROTO_TCP)?;
        tcp4.set_header_included_v4(true)?;
        tcp4.attach_filter(&port_filter(true, &ports))?;
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
        Ok(RawSockets { tcp4, icmp4, tcp6, icmp6 })
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
        let ip = Ipv4Repr { src, dst, protocol: PROTO_TCP, payload_len: segment.buffer_len(), ttl: TTL };
        let mut buf = vec![0u8; Ipv4Repr::HEADER_LEN + segment.buffer_len()];
        ip.emit(&mut buf);
        segment.emit(&mut buf[Ipv4Repr::HEADER_LEN..], IpAddr::V4(src), IpAddr::V4(dst));
        let to = SockAddr::from(SocketAddr::new(IpAddr::V4(dst), 0));
        self.tcp4.send_to(&buf, &to).map(drop)
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
            fd(Some(&self.tcp4)),
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

    /// Receives one packet from socket `which` (as [`wait`](Self::wait) numbers them) into `buf`;
    /// `None` when it has nothing queued.
    pub fn recv(&self, which: usize, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let result = match which {
            0 => recv_plain(&self.tcp4, buf).map(|len| Received::Tcp4 { len }),
            1 => recv_plain(&self.icmp4, buf).map(|len| Received::Icmp4 { len }),
            2 => match &self.tcp6 {
                Some(s) => recv_v6(s, buf),
                None => return Ok(None),
            },
            _ => match &self.icmp6 {
                Some(s) => recv_plain(s, buf).map(|len| Received::Icmp6 { len }),
                None => return Ok(None),
            },
        };
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn recv_plain(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: u8 and MaybeUninit<u8> have the same layout, and recv only writes initialised bytes.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket.recv(uninit)
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
