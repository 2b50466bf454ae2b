//! The server's first binary packet and its `SSH_MSG_KEXINIT`, parsed without I/O.
//!
//! Right after the identification exchange an SSH server sends, unasked and in clear, one binary
//! packet (RFC 4253 §6):
//!
//! ```text
//! uint32  packet_length     (not counting itself; no MAC before keys)
//! byte    padding_length    (at least 4)
//! byte[n] payload           (packet_length - padding_length - 1 bytes)
//! byte[p] random padding    (4 + packet_length a multiple of 8 before keys)
//! ```
//!
//! whose payload is its key-exchange proposal (§7.1): message 20, a 16-byte cookie, ten name-lists
//! (`uint32` length, then comma-separated names of printable US-ASCII), `first_kex_packet_follows`
//! and a reserved `uint32`. OpenSSH sends it once it has read the client's ident; dropbear right after
//! its own line (docs/facts.md §12). sshprobe reads it and never sends its own, so no key exchange
//! starts.
//!
//! Everything here is bounded by the bytes handed in: [`frame`] says, as bytes arrive, whether one
//! whole packet is in, still to come, or cannot be (a length that lies, more than the byte cap);
//! [`parse_packet`] reads a whole one. Every malformation is a [`KexError`], never a panic (fuzzed:
//! `fuzz/fuzz_targets/kexinit.rs`; property-tested below). Names are checked to be printable ASCII, so
//! they are safe on a terminal; error details show bytes as numbers.
//!
//! What the offer means is computed here too: [`KexInit::strict_kex`], [`KexInit::terrapin_exposed`],
//! [`KexInit::post_quantum`]; [`openssh`] says which OpenSSH clients can negotiate with it.

pub mod openssh;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::fmt;

/// `SSH_MSG_KEXINIT`.
pub const SSH_MSG_KEXINIT: u8 = 20;
/// The longest `packet_length` OpenSSH accepts (`PACKET_MAX_SIZE`, 256 KiB): anything longer is a
/// length that lies, whatever the byte cap.
pub(crate) const MAX_PACKET_LENGTH: u32 = 256 * 1024;
/// The least padding RFC 4253 §6 allows.
pub(crate) const MIN_PADDING: u8 = 4;
/// The block size before keys: `4 + packet_length` is a multiple of it (OpenSSH checks).
pub(crate) const CLEAR_BLOCK: usize = 8;

/// The pseudo-algorithm a server adds to its key-exchange list when it does strict key exchange
/// (OpenSSH 9.6+, the Terrapin countermeasure).
pub const STRICT_KEX_SERVER: &str = "kex-strict-s-v00@openssh.com";

/// Post-quantum hybrid key exchanges (OpenSSH's `myproposal.h`: sntrup761 since 9.0, its
/// standard name and ML-KEM since 9.9).
pub const POST_QUANTUM_KEX: [&str; 3] =
    ["mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"];

/// The ten name-lists in the order of RFC 4253 §7.1, by their RFC names.
pub(crate) const FIELD_NAMES: [&str; 10] = [
    "kex_algorithms",
    "server_host_key_algorithms",
    "encryption_algorithms_client_to_server",
    "encryption_algorithms_server_to_client",
    "mac_algorithms_client_to_server",
    "mac_algorithms_server_to_client",
    "compression_algorithms_client_to_server",
    "compression_algorithms_server_to_client",
    "languages_client_to_server",
    "languages_server_to_client",
];

/// Why the bytes after the ident are not a KEXINIT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum KexError {
    /// Nothing arrived after the ident line.
    #[error("no packet after the identification line")]
    NoPacket,
    /// The connection ended, or reading stopped, before the whole packet was in.
    #[error("only {have} of the packet's {need} bytes arrived")]
    Truncated {
        /// Bytes of the packet received.
        have: usize,
        /// Bytes it needs (4 while its length is not yet in).
        need: usize,
    },
    /// `packet_length` too small to hold a padding length and the least padding.
    #[error("packet_length {length} is too small for a packet")]
    LengthTooSmall {
        /// The length the server sent.
        length: u32,
    },
    /// `packet_length` beyond what OpenSSH accepts (256 KiB): a length that lies.
    #[error("packet_length {length} is more than any SSH implementation accepts (256 KiB)")]
    LengthTooLarge {
        /// The length the server sent.
        length: u32,
    },
    /// A plausible packet, longer than this probe reads (raise the byte cap to read it).
    #[error("a packet of {bytes} bytes does not fit in the {room} bytes left of the byte cap")]
    #[strum(serialize = "exceeds_byte_cap")]
    ExceedsCap {
        /// The packet's size, length field included.
        bytes: usize,
        /// Bytes the cap left after the ident.
        room: usize,
    },
    /// `4 + packet_length` is not a multiple of the 8-byte block.
    #[error("packet_length {length} is not block-aligned (4 + length must be a multiple of 8)")]
    Misaligned {
        /// The length the server sent.
        length: u32,
    },
    /// Less padding than RFC 4253 allows.
    #[error("padding_length {padding} is below the minimum of 4")]
    PaddingTooShort {
        /// The padding length the server sent.
        padding: u8,
    },
    /// Padding that leaves no room for a payload.
    #[error("padding_length {padding} leaves no payload in a packet of length {length}")]
    PaddingTooLong {
        /// The padding length the server sent.
        padding: u8,
        /// The packet length.
        length: u32,
    },
    /// The first packet is another message (a DISCONNECT, say).
    #[error("the first packet is message {msg}, not KEXINIT (20)")]
    NotKexinit {
        /// Its message number.
        msg: u8,
    },
    /// The payload ends inside a field.
    #[error("the payload ends inside {field}")]
    ShortPayload {
        /// The field being read.
        field: &'static str,
    },
    /// A name-list's length runs past the payload.
    #[error("{field} claims {length} bytes with {left} left in the payload")]
    NameListOverrun {
        /// The name-list.
        field: &'static str,
        /// Its claimed length.
        length: u32,
        /// Bytes left in the payload.
        left: usize,
    },
    /// An empty name in a non-empty list (`a,,b`, a leading or trailing comma).
    #[error("{field} has an empty name at position {index}")]
    EmptyName {
        /// The name-list.
        field: &'static str,
        /// The name's position, from 0.
        index: usize,
    },
    /// A byte that is not printable US-ASCII in a name.
    #[error("{field} has byte 0x{byte:02x} in name {index} (names are printable US-ASCII)")]
    BadNameByte {
        /// The name-list.
        field: &'static str,
        /// The name's position, from 0.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
}

impl KexError {
    /// A snake_case name for machine outputs.
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

/// What the bytes after the ident amount to so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Not yet a whole packet: at least `need` bytes in all are needed.
    NeedMore {
        /// Bytes needed in all (4 until the length is in, then the whole packet).
        need: usize,
    },
    /// One whole packet is in: its first `len` bytes.
    Whole {
        /// The packet's size, length field included.
        len: usize,
    },
    /// No packet can come of these bytes (checked as soon as the length is in).
    Invalid(KexError),
}

/// Judges `buf` (the bytes after the ident line) as the start of one binary packet, given that at
/// most `room` bytes can be read in all: decides as soon as the 4-byte length is in whether the packet
/// can be read, so a probe stops at once on a length that lies or a packet beyond its cap.
pub fn frame(buf: &[u8], room: usize) -> Frame {
    let Some(length) = buf.get(..4) else {
        return Frame::NeedMore { need: 4 };
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
    if let Err(e) = check_length(length) {
        return Frame::Invalid(e);
    }
    let total = 4 + length as usize;
    if total > room {
        return Frame::Invalid(KexError::ExceedsCap { bytes: total, room });
    }
    if buf.len() < total {
        Frame::NeedMore { need: total }
    } else {
        Frame::Whole { len: total }
    }
}

fn check_length(length: u32) -> Result<(), KexError> {
    if length > MAX_PACKET_LENGTH {
        return Err(KexError::LengthTooLarge { length });
    }
    // A padding-length byte, the least padding, and a message number.
    if length < 1 + MIN_PADDING as u32 + 1 {
        return Err(KexError::LengthTooSmall { length });
    }
    if !(4 + length as usize).is_multiple_of(CLEAR_BLOCK) {
        return Err(KexError::Misaligned { length });
    }
    Ok(())
}

/// One name-list: names of printable US-ASCII (no commas, none empty), in the server's order of
/// preference.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct NameList(pub Vec<String>);

impl NameList {
    /// Whether `name` is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// The names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The most preferred name.
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    fn parse(field: &'static str, bytes: &[u8]) -> Result<NameList, KexError> {
        if bytes.is_empty() {
            return Ok(NameList::default());
        }
        let mut names = Vec::new();
        for (index, name) in bytes.split(|&b| b == b',').enumerate() {
            if name.is_empty() {
                return Err(KexError::EmptyName { field, index });
            }
            if let Some(&byte) = name.iter().find(|&&b| !(0x21..=0x7e).contains(&b)) {
                return Err(KexError::BadNameByte { field, index, byte });
            }
            // Checked printable ASCII above.
            names.push(name.iter().map(|&b| b as char).collect());
        }
        Ok(NameList(names))
    }
}

impl fmt::Display for NameList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A server's `SSH_MSG_KEXINIT` (RFC 4253 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KexInit {
    /// 16 random bytes.
    pub cookie: [u8; 16],
    /// Key-exchange methods, with pseudo-algorithms (`ext-info-s`, `kex-strict-s-v00@openssh.com`).
    pub kex_algorithms: NameList,
    /// Host-key (signature) algorithms.
    pub server_host_key_algorithms: NameList,
    /// Ciphers, client to server.
    pub encryption_algorithms_client_to_server: NameList,
    /// Ciphers, server to client.
    pub encryption_algorithms_server_to_client: NameList,
    /// MACs, client to server.
    pub mac_algorithms_client_to_server: NameList,
    /// MACs, server to client.
    pub mac_algorithms_server_to_client: NameList,
    /// Compression, client to server.
    pub compression_algorithms_client_to_server: NameList,
    /// Compression, server to client.
    pub compression_algorithms_server_to_client: NameList,
    /// Languages, client to server (usually empty).
    pub languages_client_to_server: NameList,
    /// Languages, server to client (usually empty).
    pub languages_server_to_client: NameList,
    /// Whether a guessed key-exchange packet follows.
    pub first_kex_packet_follows: bool,
    /// Reserved, 0.
    pub reserved: u32,
}

/// Reads the fields of a payload in order; every read is bounded by what is left.
struct Payload<'a>(&'a [u8]);

impl<'a> Payload<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], KexError> {
        if self.0.len() < n {
            return Err(KexError::ShortPayload { field });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, KexError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name_list(&mut self, field: &'static str) -> Result<NameList, KexError> {
        let length = self.u32(field)?;
        let left = self.0.len();
        if length as usize > left {
            return Err(KexError::NameListOverrun { field, length, left });
        }
        NameList::parse(field, self.take(length as usize, field)?)
    }
}

impl KexInit {
    /// An offer of these key exchange, host key, cipher and MAC names (the same both ways), no
    /// compression: what tests and callers build to ask what a client would make of a server.
    pub fn offering(kex: &[&str], host_keys: &[&str], ciphers: &[&str], macs: &[&str]) -> KexInit {
        let names = |list: &[&str]| NameList(list.iter().map(|s| s.to_string()).collect());
        KexInit {
            kex_algorithms: names(kex),
            server_host_key_algorithms: names(host_keys),
            encryption_algorithms_client_to_server: names(ciphers),
            encryption_algorithms_server_to_client: names(ciphers),
            mac_algorithms_client_to_server: names(macs),
            mac_algorithms_server_to_client: names(macs),
            compression_algorithms_client_to_server: names(&["none"]),
            compression_algorithms_server_to_client: names(&["none"]),
            ..KexInit::default()
        }
    }

    /// Parses a KEXINIT payload (message number first).
    pub fn parse_payload(payload: &[u8]) -> Result<KexInit, KexError> {
        let mut p = Payload(payload);
        let msg = p.take(1, "the message number")?[0];
        if msg != SSH_MSG_KEXINIT {
            return Err(KexError::NotKexinit { msg });
        }
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(p.take(16, "cookie")?);
        let mut lists: [NameList; 10] = Default::default();
        for (list, field) in lists.iter_mut().zip(FIELD_NAMES) {
            *list = p.name_list(field)?;
        }
        let first_kex_packet_follows = p.take(1, "first_kex_packet_follows")?[0] != 0;
        let reserved = p.u32("reserved")?;
        // Trailing bytes are ignored, as OpenSSH does.
        let [kex, hostkey, enc_cs, enc_sc, mac_cs, mac_sc, comp_cs, comp_sc, lang_cs, lang_sc] = lists;
        Ok(KexInit {
            cookie,
            kex_algorithms: kex,
            server_host_key_algorithms: hostkey,
            encryption_algorithms_client_to_server: enc_cs,
            encryption_algorithms_server_to_client: enc_sc,
            mac_algorithms_client_to_server: mac_cs,
            mac_algorithms_server_to_client: mac_sc,
            compression_algorithms_client_to_server: comp_cs,
            compression_algorithms_server_to_client: comp_sc,
            languages_client_to_server: lang_cs,
            languages_server_to_client: lang_sc,
            first_kex_packet_follows,
            reserved,
        })
    }

    /// The ten name-lists in RFC order.
    pub fn lists(&self) -> [&NameList; 10] {
        [
            &self.kex_algorithms,
            &self.server_host_key_algorithms,
            &self.encryption_algorithms_client_to_server,
            &self.encryption_algorithms_server_to_client,
            &self.mac_algorithms_client_to_server,
            &self.mac_algorithms_server_to_client,
            &self.compression_algorithms_client_to_server,
            &self.compression_algorithms_server_to_client,
            &self.languages_client_to_server,
            &self.languages_server_to_client,
        ]
    }

    /// The payload, as [`parse_payload`](Self::parse_payload) reads it.
    pub fn emit_payload(&self) -> Vec<u8> {
        let mut out = vec![SSH_MSG_KEXINIT];
        out.extend_from_slice(&self.cookie);
        for list in self.lists() {
            let text = list.to_string();
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.push(u8::from(self.first_kex_packet_follows));
        out.extend_from_slice(&self.reserved.to_be_bytes());
        out
    }

    /// A whole binary packet with this payload and the least padding (zeros) that aligns it.
    pub fn emit_packet(&self) -> Vec<u8> {
        wrap_payload(&self.emit_payload())
    }

    /// Whether the server does strict key exchange (`kex-strict-s-v00@openssh.com`).
    pub fn strict_kex(&self) -> bool {
        self.kex_algorithms.contains(STRICT_KEX_SERVER)
    }

    /// Whether a client could be steered into a cipher mode open to the Terrapin prefix-truncation
    /// attack (CVE-2023-48795): ChaCha20-Poly1305, or a CBC cipher with an encrypt-then-MAC MAC,
    /// offered without strict key exchange (the rule of the Terrapin paper and its advisory).
    pub fn terrapin_exposed(&self) -> bool {
        if self.strict_kex() {
            return false;
        }
        let ciphers = || {
            self.encryption_algorithms_client_to_server
                .names()
                .chain(self.encryption_algorithms_server_to_client.names())
        };
        let macs = || {
            self.mac_algorithms_client_to_server.names().chain(self.mac_algorithms_server_to_client.names())
        };
        let chacha = ciphers().any(|c| c == "chacha20-poly1305@openssh.com");
        let cbc = ciphers().any(|c| c.ends_with("-cbc") || c.contains("-cbc@"));
        let etm = macs().any(|m| m.ends_with("-etm@openssh.com"));
        chacha || (cbc && etm)
    }

    /// Whether a post-quantum hybrid key exchange is offered ([`POST_QUANTUM_KEX`]).
    pub fn post_quantum(&self) -> bool {
        POST_QUANTUM_KEX.iter().any(|k| self.kex_algorithms.contains(k))
    }

    /// The most preferred real key exchange (pseudo-algorithms such as `ext-info-s` and the strict
    /// marker left out).
    pub fn preferred_kex(&self) -> Option<&str> {
        self.kex_algorithms.names().find(|k| !is_pseudo_kex(k))
    }

    /// One line for a table or CSV cell: the preferred key exchange and host key, then the flags.
    pub fn summary(&self) -> String {
        format!(
            "kex={} hostkey={} strict={} terrapin={} pq={}",
            self.preferred_kex().unwrap_or("-"),
            self.server_host_key_algorithms.first().unwrap_or("-"),
            yes_no(self.strict_kex()),
            yes_no(self.terrapin_exposed()),
            yes_no(self.post_quantum()),
        )
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Whether a key-exchange name is a signal rather than a method (`ext-info-s`, `kex-strict-*`,
/// dropbear's `kexguess2@matt.ucc.asn.au`).
pub fn is_pseudo_kex(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-") || name.starts_with("kexguess")
}

/// Wraps `payload` in a binary packet with the least zero padding that aligns it (for tests and the
/// lab).
pub fn wrap_payload(payload: &[u8]) -> Vec<u8> {
    let unpadded = 4 + 1 + payload.len();
    let mut padding = CLEAR_BLOCK - unpadded % CLEAR_BLOCK;
    if padding < MIN_PADDING as usize {
        padding += CLEAR_BLOCK;
    }
    let length = (1 + payload.len() + padding) as u32;
    let mut out = Vec::with_capacity(4 + length as usize);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(padding as u8);
    out.extend_from_slice(payload);
    out.resize(4 + length as usize, 0);
    out
}

/// Parses one whole binary packet (as [`frame`] delimited it: trailing bytes are ignored) holding a
/// KEXINIT.
pub fn parse_packet(packet: &[u8]) -> Result<KexInit, KexError> {
    let total = match frame(packet, usize::MAX) {
        Frame::Whole { len } => len,
        Frame::NeedMore { need } => return Err(KexError::Truncated { have: packet.len(), need }),
        Frame::Invalid(e) => return Err(e),
    };
    let length = (total - 4) as u32;
    let padding = packet[4];
    if padding < MIN_PADDING {
        return Err(KexError::PaddingTooShort { padding });
    }
    if padding as u32 >= length - 1 {
        return Err(KexError::PaddingTooLong { padding, length });
    }
    KexInit::parse_payload(&packet[5..total - padding as usize])
}

/// Parses the bytes that followed the ident line, as much as arrived (`room`: what the byte cap left
/// for them, so a packet beyond it is named as such).
pub fn parse_after_ident(buf: &[u8], room: usize) -> Result<KexInit, KexError> {
    if buf.is_empty() {
        return Err(KexError::NoPacket);
    }
    match frame(buf, room) {
        Frame::Whole { len } => parse_packet(&buf[..len]),
        Frame::NeedMore { need } => Err(KexError::Truncated { have: buf.len(), need }),
        Frame::Invalid(e) => Err(e),
    }
}

/// What reading the server's KEXINIT gave: the proposal, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KexRead {
    /// The server's proposal.
    Kexinit(Box<KexInit>),
    /// No proposal: what went wrong.
    Failed(KexError),
}

impl KexRead {
    /// From the outcome of a parse.
    pub fn from_result(result: Result<KexInit, KexError>) -> KexRead {
        match result {
            Ok(k) => KexRead::Kexinit(Box::new(k)),
            Err(e) => KexRead::Failed(e),
        }
    }

    /// The proposal, when there is one.
    pub fn kexinit(&self) -> Option<&KexInit> {
        match self {
            KexRead::Kexinit(k) => Some(k),
            KexRead::Failed(_) => None,
        }
    }

    /// A compact cell for CSV and tables.
    pub fn summary(&self) -> String {
        match self {
            KexRead::Kexinit(k) => k.summary(),
            KexRead::Failed(e) => format!("error={}", e.name()),
        }
    }
}

impl fmt::Display for KexRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KexRead::Kexinit(k) => k.fmt(f),
            KexRead::Failed(e) => write!(f, "no KEXINIT: {e}"),
        }
    }
}

impl fmt::Display for KexInit {
    /// One line per non-empty list, then the derived flags. Names are printable ASCII (checked).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, list) in FIELD_NAMES.iter().zip(self.lists()) {
            if !list.0.is_empty() {
                writeln!(f, "{name}: {list}")?;
            }
        }
        write!(
            f,
            "strict_kex: {} terrapin_exposed: {} post_quantum: {}",
            self.strict_kex(),
            self.terrapin_exposed(),
            self.post_quantum()
        )
    }
}

impl Serialize for KexInit {
    /// The ten lists by their RFC names, `first_kex_packet_follows`, and the three derived flags.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("KexInit", 14)?;
        for (name, list) in FIELD_NAMES.iter().zip(self.lists()) {
            s.serialize_field(name, list)?;
        }
        s.serialize_field("first_kex_packet_follows", &self.first_kex_packet_follows)?;
        s.serialize_field("strict_kex", &self.strict_kex())?;
        s.serialize_field("terrapin_exposed", &self.terrapin_exposed())?;
        s.serialize_field("post_quantum", &self.post_quantum())?;
        s.end()
    }
}

impl Serialize for KexRead {
    /// The proposal's fields, or `{"error": name, "detail": text}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KexRead::Kexinit(k) => k.serialize(serializer),
            KexRead::Failed(e) => {
                let mut s = serializer.serialize_struct("KexError", 2)?;
                s.serialize_field("error", e.name())?;
                s.serialize_field("detail", &e.to_string())?;
                s.end()
            }
        }
    }
}

#[cfg(test)]
#[path = "kexinit_tests.rs"]
mod tests;
