//! What current OpenSSH clients accept by default, and what a server's offer leaves them without.
//!
//! `Unable to negotiate with HOST port 22: no matching host key type found. Their offer:
//! ssh-rsa,ssh-dss` is what a current `ssh` says to an old server. The client's defaults are the
//! lists of openssh-portable's `myproposal.h` (`KEX_CLIENT_KEX`, `KEX_DEFAULT_PK_ALG`,
//! `KEX_CLIENT_ENCRYPT`, `KEX_CLIENT_MAC`), read at the release tags: they changed at 8.8 (`ssh-rsa`
//! with SHA-1 signatures dropped), 9.0 (sntrup761 added), 9.9 (ML-KEM and sntrup761's standard name
//! added) and 10.0 (reordered; no name removed). Between those tags the lists are identical (compared
//! at every `V_*_P1` tag from 8.8 to 10.5). Each release only added names since 8.8, so a server that
//! an older client of this table can negotiate with, a newer one can too, unless it offers only
//! names newer than the old client.
//!
//! [`check`] says, for one server offer, which of these clients fail and for want of what kind
//! ([`Kind`]), with the client-side workaround and the server-side fix.

use super::KexInit;
use serde::Serialize;
use std::fmt;

/// The kinds of algorithm a client and server must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, strum::IntoStaticStr)]
#[serde(into = "&'static str")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// Key exchange (`no matching key exchange method found`).
    Kex,
    /// Host key (`no matching host key type found`).
    HostKey,
    /// Cipher (`no matching cipher found`).
    Cipher,
    /// MAC (`no matching MAC found`).
    Mac,
}

impl Kind {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The `ssh` option that lists this kind.
    pub(crate) fn ssh_option(self) -> &'static str {
        match self {
            Kind::Kex => "KexAlgorithms",
            Kind::HostKey => "HostKeyAlgorithms",
            Kind::Cipher => "Ciphers",
            Kind::Mac => "MACs",
        }
    }

    /// What `ssh` says when this kind has no match.
    pub(crate) fn ssh_error(self) -> &'static str {
        match self {
            Kind::Kex => "no matching key exchange method found",
            Kind::HostKey => "no matching host key type found",
            Kind::Cipher => "no matching cipher found",
            Kind::Mac => "no matching MAC found",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const KEX_8_8: &[&str] = &[
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];
const KEX_9_0: &[&str] = &[
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];
const KEX_9_9: &[&str] = &[
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];
const KEX_10_0: &[&str] = &[
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];
const HOST_KEY: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
];
const CIPHER_8_8: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];
const CIPHER_10_0: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];
const MAC: &[&str] = &[
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];

/// One range of OpenSSH client releases with the same default lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientDefaults {
    /// The releases, as people write them (`9.0–9.8`).
    pub versions: &'static str,
    /// `KexAlgorithms`.
    pub kex: &'static [&'static str],
    /// `HostKeyAlgorithms`.
    pub host_key: &'static [&'static str],
    /// `Ciphers`.
    pub cipher: &'static [&'static str],
    /// `MACs`.
    pub mac: &'static [&'static str],
}

impl ClientDefaults {
    /// The list of one kind.
    pub fn list(&self, kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Kex => self.kex,
            Kind::HostKey => self.host_key,
            Kind::Cipher => self.cipher,
            Kind::Mac => self.mac,
        }
    }
}

/// The OpenSSH clients of this table, oldest first (10.3 added only webauthn host-key names no
/// server offers, left out).
pub const CLIENTS: [ClientDefaults; 4] = [
    ClientDefaults { versions: "8.8–8.9", kex: KEX_8_8, host_key: HOST_KEY, cipher: CIPHER_8_8, mac: MAC },
    ClientDefaults { versions: "9.0–9.8", kex: KEX_9_0, host_key: HOST_KEY, cipher: CIPHER_8_8, mac: MAC },
    ClientDefaults { versions: "9.9", kex: KEX_9_9, host_key: HOST_KEY, cipher: CIPHER_8_8, mac: MAC },
    ClientDefaults { versions: "10.0+", kex: KEX_10_0, host_key: HOST_KEY, cipher: CIPHER_10_0, mac: MAC },
];

/// One kind a server's offer shares with none of a client's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// Which kind.
    pub kind: Kind,
    /// The clients (from [`CLIENTS`]) that cannot agree on it.
    pub clients: Vec<&'static str>,
    /// What the server offers for it (names it sent, printable ASCII).
    pub server_offers: Vec<String>,
    /// The client-side workaround: `-o KexAlgorithms=+NAME` with the server's first offer.
    pub workaround: String,
}

/// What a server's offer means for current OpenSSH clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Negotiation {
    /// The kinds some client cannot agree on; empty when every client of the table can.
    pub missing: Vec<Missing>,
}

impl Negotiation {
    /// Whether some client of the table cannot negotiate.
    pub fn fails(&self) -> bool {
        !self.missing.is_empty()
    }

    /// Whether the newest client cannot negotiate.
    pub fn newest_fails(&self) -> bool {
        let newest = CLIENTS[CLIENTS.len() - 1].versions;
        self.missing.iter().any(|m| m.clients.contains(&newest))
    }

    /// The client-side options together: `-o HostKeyAlgorithms=+ssh-rsa -o ...`.
    pub fn workaround(&self) -> String {
        self.missing.iter().map(|m| m.workaround.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// The server-side fix, one sentence.
    pub fn server_fix(&self) -> String {
        let kinds: Vec<&str> = self.missing.iter().map(|m| m.kind.ssh_option()).collect();
        format!(
            "upgrade the server or enable current algorithms in its configuration ({}); for \
             host keys, generate an Ed25519 or ECDSA key (ssh-keygen -t ed25519) or let RSA keys sign \
             with rsa-sha2-256/512",
            kinds.join(", ")
        )
    }
}

/// Checks a server's offer against every client of [`CLIENTS`].
pub fn check(offer: &KexInit) -> Negotiation {
    let lists = [
        (Kind::Kex, vec![&offer.kex_algorithms]),
        (Kind::HostKey, vec![&offer.server_host_key_algorithms]),
        (
            Kind::Cipher,
            vec![
                &offer.encryption_algorithms_client_to_server,
                &offer.encryption_algorithms_server_to_client,
            ],
        ),
        (Kind::Mac, vec![&offer.mac_algorithms_client_to_server, &offer.mac_algorithms_server_to_client]),
    ];
    let mut missing = Vec::new();
    for (kind, server_lists) in lists {
        // AEAD ciphers carry their own integrity: no MAC is negotiated when both directions' first
        // common cipher is one, so an empty MAC match does not fail. Checked per client below.
        let mut clients = Vec::new();
        for client in &CLIENTS {
            let fails = server_lists.iter().any(|list| {
                let common = list.names().any(|name| client.list(kind).contains(&name));
                let aead = kind == Kind::Mac && aead_chosen(client, offer);
                !(common || aead)
            });
            if fails {
                clients.push(client.versions);
            }
        }
        if clients.is_empty() {
            continue;
        }
        let server_offers: Vec<String> = server_lists
            .iter()
            .flat_map(|l| l.names())
            .filter(|n| !super::is_pseudo_kex(n))
            .fold(Vec::new(), |mut acc, n| {
                if !acc.iter().any(|a: &String| a == n) {
                    acc.push(n.to_string());
                }
                acc
            });
        let workaround = match server_offers.first() {
            Some(name) => format!("-o {}=+{name}", kind.ssh_option()),
            None => format!("(the server offers no {kind} algorithm at all)"),
        };
        missing.push(Missing { kind, clients, server_offers, workaround });
    }
    Negotiation { missing }
}

/// Whether the cipher this client would pick in both directions is an AEAD one (no MAC needed).
fn aead_chosen(client: &ClientDefaults, offer: &KexInit) -> bool {
    let pick = |server: &super::NameList| client.cipher.iter().find(|c| server.contains(c)).copied();
    let aead = |c: Option<&str>| c.is_some_and(|c| c.contains("gcm@") || c.starts_with("chacha20-poly1305"));
    aead(pick(&offer.encryption_algorithms_client_to_server))
        && aead(pick(&offer.encryption_algorithms_server_to_client))
}
