//! Packets captured off the wire (loopback, Linux 6.x), as hex, for the tests of every format.

/// The bytes of a hex capture.
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("a valid hex capture")
}

/// A SYN captured on loopback (Linux 6.x client, IPv4 header included): port 58360 → 53553.
pub(crate) const SYN_V4: &str =
    "4500003c8a4440004006b2757f0000017f000001e3f8d1312c2d6c2e00000000a002ffd7fe300000\
                      0204ffd70402080a80af16fc000000000103030a";
/// The SYN-ACK answering it.
pub const SYNACK_V4: &str =
    "4500003c0000400040063cba7f0000017f000001d131e3f812d6b9182c2d6c2fa012ffcbfe300000\
                         0204ffd70402080a5b6604da80af16fc0103030a";
/// The server's ident line, PSH|ACK with timestamps.
pub const BANNER_V4: &str =
    "4500005c0a054000400632957f0000017f000001d131e3f812d6b9192c2d6c2f80180040fe500000\
                         0101080a5b6604da80af16fc5353482d322e302d4f70656e5353485f392e3270312044656269616e\
                         2d322b646562313275330d0a";
/// An IPv6 SYN-ACK as a raw IPv6 socket delivers it (no IPv6 header), ::1 port 34777 → 56472.
pub(crate) const SYNACK_V6: &str =
    "87d9dc982bee224e52b88319a012ffb8003000000204ffc40402080a74d09061ecf000580103030a";
/// An ICMP port unreachable (nftables `reject`) quoting a SYN to 127.0.0.1:9, IPv4 header first.
pub const ICMP_V4: &str = "45c00058ac8f00004001cf537f0000017f0000010303b814000000004500003ce73f40004006557a\
                       7f0000017f000001a22000096832b49a00000000a002ffd7fe3000000204ffd70402080a79085ce8\
                       000000000103030a";
/// An ICMPv6 administratively prohibited quoting a SYN to [::1]:9.
pub(crate) const ICMP_V6: &str =
    "01019c3d00000000600a1761002806400000000000000000000000000000000100000000000000000000\
                       000000000001a99000094a265dd100000000a002ffc4003000000204ffc40402080add5303990000\
                       00000103030a";

/// The TCP segment inside an IPv4 capture, with its pseudo-header addresses.
pub(crate) fn segment_v4(hexed: &str) -> (Vec<u8>, std::net::IpAddr, std::net::IpAddr) {
    let bytes = unhex(hexed);
    let ip = super::Ipv4Packet::new_checked(&bytes[..]).expect("a captured IPv4 packet");
    (ip.payload().to_vec(), ip.src_addr().into(), ip.dst_addr().into())
}
