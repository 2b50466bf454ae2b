//! Claims a probe makes about what it saw, checked through the CLI against small loopback servers:
//! an over-long ident that OpenSSH's client accepts is a banner (flagged as beyond RFC 4253's 255
//! bytes), and `bytes_len` counts what was read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A loopback server that sends `payload` to each of its first `conns` connections, then waits
/// (bounded) for the client to close.
fn serve(payload: Vec<u8>, conns: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let thread = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < conns && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    served += 1;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(&payload);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, thread)
}

#[test]
fn a_400_byte_ident_is_a_banner_beyond_the_rfc_length() {
    // `ssh -vvv` goes on to KEXINIT with such a server: OpenSSH allows 8192-byte lines.
    let ident = [b"SSH-2.0-".as_slice(), &[b'X'; 390], b"\r\n"].concat();
    let (addr, server) = serve(ident, 2);
    let (records, out) = common::jsonl(&["probe", "-o", "jsonl", &addr.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = &records[0];
    assert_eq!(r["outcome"], "banner", "{r}");
    assert_eq!(r["banner"]["over_rfc_length"], true, "{r}");
    assert_eq!(r["banner"]["software"].as_str().map(str::len), Some(390), "{r}");
    assert_eq!(r["bytes_len"], 400, "{r}");
    // A line within the RFC's length carries no flag.
    let (addr2, server2) = serve(b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec(), 1);
    let (records, _) = common::jsonl(&["probe", "-o", "jsonl", &addr2.to_string()]);
    assert!(records[0]["banner"].get("over_rfc_length").is_none(), "{}", records[0]);
    // The table says so too.
    let out = common::sshprobe().args(["probe", &addr.to_string()]).output().expect("sshprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("banner"), "{text}");
    server.join().expect("server");
    server2.join().expect("server");
}
