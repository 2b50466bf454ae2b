//! One-thread banner clients against the e2e bench server: the e2e baseline's epoll loop, and the
//! same exchange through io_uring (connect, recv, then send + close linked), submitted in batches.
//! usage: uring-vs-epoll epoll|uring PORT DESTS PROBES K
use io_uring::{opcode, squeue, types, IoUring};
use std::mem::size_of_val;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const IDENT: &[u8] = b"SSH-2.0-baseline_0.1\r\n";

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn epoll(dests: &[libc::sockaddr_in], probes: u64, k: usize) -> (u64, u64) {
    let (mut done, mut banners, mut launched, mut in_flight, mut next) = (0u64, 0u64, 0u64, 0usize, 0usize);
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = [0u8; 512];
        while done < probes {
            while in_flight < k && launched < probes {
                let fd = libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                );
                let sa = &dests[next % dests.len()];
                next += 1;
                launched += 1;
                let rc = libc::connect(fd, (sa as *const libc::sockaddr_in).cast(), size_of_val(sa) as u32);
                if rc < 0 && errno() != libc::EINPROGRESS {
                    libc::close(fd);
                    done += 1;
                    continue;
                }
                let mut ev =
                    libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: fd as u64 };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
                in_flight += 1;
            }
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100);
            for ev in events.iter().take(n.max(0) as usize) {
                let fd = ev.u64 as i32;
                let r = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if r < 0 && errno() == libc::EAGAIN {
                    continue;
                }
                if r > 0 && buf[..r as usize].contains(&b'\n') {
                    banners += 1;
                    libc::send(fd, IDENT.as_ptr().cast(), IDENT.len(), libc::MSG_NOSIGNAL);
                } else if r > 0 {
                    continue;
                }
                libc::close(fd);
                in_flight -= 1;
                done += 1;
            }
        }
        libc::close(ep);
    }
    (done, banners)
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Free,
    Connecting,
    Reading,
    Closing,
}

struct Slot {
    fd: i32,
    stage: Stage,
    addr: libc::sockaddr_in,
    buf: [u8; 512],
    /// Closing: completions still to come (send and close).
    pending: u8,
}

fn uring(dests: &[libc::sockaddr_in], probes: u64, k: usize) -> (u64, u64) {
    let mut ring =
        IoUring::builder().setup_single_issuer().build((2 * k).next_power_of_two() as u32).expect("ring");
    let mut slots: Vec<Slot> = (0..k)
        .map(|_| Slot { fd: -1, stage: Stage::Free, addr: dests[0], buf: [0; 512], pending: 0 })
        .collect();
    let (mut done, mut banners, mut launched, mut next) = (0u64, 0u64, 0u64, 0usize);
    let mut free: Vec<usize> = (0..k).collect();
    let mut queue: Vec<squeue::Entry> = Vec::with_capacity(4 * k);
    let tag = |slot: usize, op: u64| ((slot as u64) << 8) | op;
    while done < probes {
        while let Some(&i) = free.last() {
            if launched >= probes {
                break;
            }
            free.pop();
            let s = &mut slots[i];
            s.fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            s.addr = dests[next % dests.len()];
            next += 1;
            launched += 1;
            s.stage = Stage::Connecting;
            queue.push(
                opcode::Connect::new(
                    types::Fd(s.fd),
                    (&s.addr as *const libc::sockaddr_in).cast(),
                    size_of_val(&s.addr) as u32,
                )
                .build()
                .user_data(tag(i, 1)),
            );
        }
        unsafe {
            let mut sq = ring.submission();
            for e in queue.drain(..) {
                sq.push(&e).expect("room in the ring");
            }
        }
        ring.submit_and_wait(1).expect("submit");
        let completions: Vec<(u64, i32)> =
            ring.completion().map(|c: io_uring::cqueue::Entry| (c.user_data(), c.result())).collect();
        for (data, res) in completions {
            let (i, op) = ((data >> 8) as usize, data & 0xff);
            let s = &mut slots[i];
            match (s.stage, op) {
                (Stage::Connecting, 1) if res == 0 => {
                    s.stage = Stage::Reading;
                    queue.push(
                        opcode::Recv::new(types::Fd(s.fd), s.buf.as_mut_ptr(), 512)
                            .build()
                            .user_data(tag(i, 2)),
                    );
                }
                (Stage::Reading, 2) if res > 0 && !s.buf[..res as usize].contains(&b'\n') => {
                    queue.push(
                        opcode::Recv::new(types::Fd(s.fd), s.buf.as_mut_ptr(), 512)
                            .build()
                            .user_data(tag(i, 2)),
                    );
                }
                (Stage::Connecting | Stage::Reading, _) => {
                    s.stage = Stage::Closing;
                    if res > 0 {
                        banners += 1;
                        s.pending = 2;
                        queue.push(
                            opcode::Send::new(types::Fd(s.fd), IDENT.as_ptr(), IDENT.len() as u32)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                                .flags(squeue::Flags::IO_LINK)
                                .user_data(tag(i, 3)),
                        );
                    } else {
                        s.pending = 1;
                    }
                    queue.push(opcode::Close::new(types::Fd(s.fd)).build().user_data(tag(i, 4)));
                }
                (Stage::Closing, _) => {
                    s.pending -= 1;
                    if s.pending == 0 {
                        s.stage = Stage::Free;
                        done += 1;
                        free.push(i);
                    }
                }
                (Stage::Free, _) => {}
            }
        }
    }
    (done, banners)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let port: u16 = a[2].parse().unwrap();
    let dests: Vec<libc::sockaddr_in> =
        (1..=a[3].parse::<u8>().unwrap()).map(|i| sockaddr(Ipv4Addr::new(127, 0, 0, i), port)).collect();
    let probes: u64 = a[4].parse().unwrap();
    let k: usize = a[5].parse().unwrap();
    let (t0, c0) = (Instant::now(), thread_cpu());
    let (done, banners) = if a[1] == "uring" { uring(&dests, probes, k) } else { epoll(&dests, probes, k) };
    let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
    println!(
        "{:<6} K={k} probes={done} banners={banners} rate={:.0}/s cpu_us_per_probe={:.1}",
        a[1],
        done as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / done as f64
    );
}
