//! `hostconns` against the real kernel: connections held by a child process to a loopback listener
//! are found with the child's pid and name, counted by local address; the caller's own are left out.

use sshprobe::hostconns::HostConnections;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

/// A child process, killed and reaped when dropped (also when the test panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn finds_a_childs_connections_with_its_pid_and_leaves_out_ours() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let remote = listener.local_addr().unwrap();
    // bash opens three connections on fds 3-5, says so, and becomes `sleep` (same pid, fds kept).
    let port = remote.port();
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} 4<>/dev/tcp/127.0.0.1/{port} 5<>/dev/tcp/127.0.0.1/{port} \
         && echo ready && exec sleep 30"
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("bash");
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).expect("reading the child");
    assert_eq!(line.trim(), "ready", "the child could not connect");
    let pid = child.0.id();

    // Two of our own, from another loopback address.
    let ours: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&"127.0.0.9:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
            s.connect(&remote.into()).unwrap();
            s.into()
        })
        .collect();
    let our_ports: HashSet<u16> = ours.iter().map(|s| s.local_addr().unwrap().port()).collect();

    let found = HostConnections::gather(remote, &our_ports).expect("reading /proc");
    assert_eq!(found.by_owner.len(), 1, "{found}");
    let owner = &found.by_owner[0];
    let process = owner.process.as_ref().expect("the owner is found");
    assert_eq!((process.pid, process.name.as_str()), (pid, "sleep"), "{found}");
    assert_eq!(owner.count, 3, "{found}");
    assert_eq!(owner.local, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(owner.to_string(), format!("sleep (pid {pid}) holds 3 from 127.0.0.1"));

    // Without the exclusion, ours appear too, with this test's pid.
    let all = HostConnections::gather(remote, &HashSet::new()).expect("reading /proc");
    assert_eq!(all.total(), 5, "{all}");
    let mine = all.by_owner.iter().find(|o| o.local == IpAddr::from([127, 0, 0, 9])).expect("ours");
    assert_eq!(mine.process.as_ref().map(|p| p.pid), Some(std::process::id()), "{all}");
    assert_eq!(mine.count, 2);

    // Once the child is gone, so are its connections.
    drop(child);
    let after = HostConnections::gather(remote, &our_ports).expect("reading /proc");
    assert!(after.is_empty(), "{after}");
    drop(listener);
}
