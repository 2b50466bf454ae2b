use super::openssh::{check, Kind};
use super::*;
use proptest::prelude::*;

const SSHD_9_2: &[u8] = include_bytes!("../tests/fixtures/kexinit/sshd92.bin");
const OPENSSH_10: &[u8] = include_bytes!("../tests/fixtures/kexinit/openssh10.bin");
const DROPBEAR: &[u8] = include_bytes!("../tests/fixtures/kexinit/dropbear.bin");

/// The bytes after the ident line of a captured reply.
fn after_ident(capture: &[u8]) -> &[u8] {
    let end = capture.iter().position(|&b| b == b'\n').expect("an ident line") + 1;
    &capture[end..]
}

fn parsed(capture: &[u8]) -> KexInit {
    parse_after_ident(after_ident(capture), 8192).expect("a KEXINIT")
}
fn offer(kex: &[&str], hostkey: &[&str], ciphers: &[&str], macs: &[&str]) -> KexInit {
    KexInit::offering(kex, hostkey, ciphers, macs)
}

/// The `sshd -T` line of a captured server's configuration, as a list.
fn sshd_t(text: &str, key: &str) -> Vec<String> {
    let line = text.lines().find(|l| l.starts_with(&format!("{key} "))).expect(key);
    line[key.len() + 1..].split(',').map(str::to_string).collect()
}

#[test]
fn debian_sshd_9_2_offers_what_sshd_t_says_with_strict_kex_and_sntrup() {
    let k = parsed(SSHD_9_2);
    let t = include_str!("../tests/fixtures/kexinit/sshd92.sshd-T");
    let mut kex = sshd_t(t, "kexalgorithms");
    kex.push(STRICT_KEX_SERVER.into());
    assert_eq!(k.kex_algorithms.0, kex);
    assert_eq!(k.encryption_algorithms_client_to_server.0, sshd_t(t, "ciphers"));
    assert_eq!(k.mac_algorithms_server_to_client.0, sshd_t(t, "macs"));
    // Offered host keys: those of the loaded keys (ed25519, RSA, ECDSA), among those accepted.
    assert_eq!(
        k.server_host_key_algorithms.0,
        ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256"]
    );
    assert!(k
        .server_host_key_algorithms
        .names()
        .all(|h| sshd_t(t, "hostkeyalgorithms").iter().any(|a| a == h)));
    assert_eq!(k.compression_algorithms_client_to_server.0, ["none", "zlib@openssh.com"]);
    assert!(k.languages_client_to_server.0.is_empty() && !k.first_kex_packet_follows && k.reserved == 0);
    assert!(k.strict_kex() && k.post_quantum() && !k.terrapin_exposed());
    assert_eq!(k.preferred_kex(), Some("sntrup761x25519-sha512"));
    assert!(!check(&k).fails());
}

#[test]
fn openssh_10_offers_mlkem_first_and_ext_info() {
    let k = parsed(OPENSSH_10);
    let t = include_str!("../tests/fixtures/kexinit/openssh10.sshd-T");
    let mut kex = sshd_t(t, "kexalgorithms");
    kex.extend(["ext-info-s".into(), STRICT_KEX_SERVER.into()]);
    assert_eq!(k.kex_algorithms.0, kex);
    assert_eq!(k.encryption_algorithms_server_to_client.0, sshd_t(t, "ciphers"));
    assert_eq!(k.mac_algorithms_client_to_server.0, sshd_t(t, "macs"));
    assert!(k.strict_kex() && k.post_quantum() && !k.terrapin_exposed());
    assert_eq!(k.preferred_kex(), Some("mlkem768x25519-sha256"));
    assert_eq!(k.summary(), "kex=mlkem768x25519-sha256 hostkey=ssh-ed25519 strict=yes terrapin=no pq=yes");
    assert!(!check(&k).fails());
}

#[test]
fn dropbear_2022_offers_legacy_names_beside_current_ones() {
    let k = parsed(DROPBEAR);
    assert_eq!(k.kex_algorithms.first(), Some("curve25519-sha256"));
    assert!(k.kex_algorithms.contains("diffie-hellman-group14-sha1"));
    assert!(k.server_host_key_algorithms.contains("ssh-dss"));
    assert_eq!(k.mac_algorithms_client_to_server.0, ["hmac-sha1", "hmac-sha2-256"]);
    // Debian's dropbear 2022.83 carries the strict-kex fix; no post-quantum exchange.
    assert!(k.strict_kex() && !k.post_quantum() && !k.terrapin_exposed());
    assert_eq!(k.preferred_kex(), Some("curve25519-sha256"));
    assert!(!check(&k).fails(), "{:?}", check(&k));
}

#[test]
fn terrapin_follows_the_papers_rule() {
    let chacha = offer(
        &["curve25519-sha256"],
        &["ssh-ed25519"],
        &["chacha20-poly1305@openssh.com"],
        &["hmac-sha2-256"],
    );
    assert!(chacha.terrapin_exposed());
    let cbc_etm =
        offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-cbc"], &["hmac-sha2-256-etm@openssh.com"]);
    assert!(cbc_etm.terrapin_exposed());
    let cbc_plain = offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-cbc"], &["hmac-sha2-256"]);
    assert!(!cbc_plain.terrapin_exposed());
    let ctr_etm =
        offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-ctr"], &["hmac-sha2-256-etm@openssh.com"]);
    assert!(!ctr_etm.terrapin_exposed());
    let strict = offer(
        &["curve25519-sha256", STRICT_KEX_SERVER],
        &["ssh-ed25519"],
        &["chacha20-poly1305@openssh.com"],
        &["hmac-sha2-256"],
    );
    assert!(strict.strict_kex() && !strict.terrapin_exposed());
}

#[test]
fn a_legacy_only_server_names_every_missing_kind_and_the_workaround() {
    let legacy = offer(
        &["diffie-hellman-group1-sha1"],
        &["ssh-dss"],
        &["aes128-cbc", "3des-cbc"],
        &["hmac-md5", "hmac-sha1"],
    );
    let n = check(&legacy);
    let kinds: Vec<Kind> = n.missing.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [Kind::Kex, Kind::HostKey, Kind::Cipher]);
    assert!(n.newest_fails());
    assert_eq!(n.missing[0].clients, ["8.8–8.9", "9.0–9.8", "9.9", "10.0+"]);
    assert_eq!(
        n.workaround(),
        "-o KexAlgorithms=+diffie-hellman-group1-sha1 -o HostKeyAlgorithms=+ssh-dss -o Ciphers=+aes128-cbc"
    );
    // ssh-rsa (SHA-1 signatures) alone: the host key only.
    let rsa = offer(&["curve25519-sha256"], &["ssh-rsa"], &["aes128-ctr"], &["hmac-sha2-256"]);
    let n = check(&rsa);
    assert_eq!(n.missing.len(), 1);
    assert_eq!(n.missing[0].workaround, "-o HostKeyAlgorithms=+ssh-rsa");
    // An AEAD cipher needs no MAC.
    let gcm = offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-gcm@openssh.com"], &["hmac-md5"]);
    assert!(!check(&gcm).fails());
    // Only ML-KEM: the 8.8 to 9.8 clients fail, 9.9 and later agree.
    let pq = offer(&["mlkem768x25519-sha256"], &["ssh-ed25519"], &["aes128-ctr"], &["hmac-sha2-256"]);
    let n = check(&pq);
    assert_eq!(n.missing[0].clients, ["8.8–8.9", "9.0–9.8"]);
    assert!(!n.newest_fails());
}

#[test]
fn every_malformation_is_named() {
    let good =
        offer(&["curve25519-sha256"], &["ssh-ed25519"], &["aes128-ctr"], &["hmac-sha2-256"]).emit_packet();
    assert!(parse_packet(&good).is_ok());
    assert_eq!(parse_after_ident(b"", 100), Err(KexError::NoPacket));
    assert_eq!(parse_after_ident(&good[..3], 8192), Err(KexError::Truncated { have: 3, need: 4 }));
    assert_eq!(parse_after_ident(&good[..20], 8192), Err(KexError::Truncated { have: 20, need: good.len() }));
    // A length that lies: 4 GiB.
    assert_eq!(
        frame(&[0xff, 0xff, 0xff, 0xf8], 8192),
        Frame::Invalid(KexError::LengthTooLarge { length: 0xffff_fff8 })
    );
    assert_eq!(frame(&[0, 0, 0, 4], 8192), Frame::Invalid(KexError::LengthTooSmall { length: 4 }));
    assert_eq!(frame(&[0, 0, 0, 13], 8192), Frame::Invalid(KexError::Misaligned { length: 13 }));
    // 35,000 bytes: a plausible packet beyond an 8 KiB cap, named at once from its length.
    let big = 34_996u32.to_be_bytes();
    assert_eq!(frame(&big, 8000), Frame::Invalid(KexError::ExceedsCap { bytes: 35_000, room: 8000 }));
    assert_eq!(frame(&big, 40_000), Frame::NeedMore { need: 35_000 });
    let mut short_pad = good.clone();
    short_pad[4] = 3;
    assert_eq!(parse_packet(&short_pad), Err(KexError::PaddingTooShort { padding: 3 }));
    let mut long_pad = good.clone();
    long_pad[4] = 255;
    assert!(matches!(parse_packet(&long_pad), Err(KexError::PaddingTooLong { padding: 255, .. })));
    let disconnect = wrap_payload(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse_packet(&disconnect), Err(KexError::NotKexinit { msg: 1 }));
    let mut payload = vec![20];
    payload.extend([0; 16]);
    payload.extend(1000u32.to_be_bytes());
    assert_eq!(
        parse_packet(&wrap_payload(&payload)),
        Err(KexError::NameListOverrun { field: "kex_algorithms", length: 1000, left: 0 })
    );
    assert_eq!(parse_packet(&wrap_payload(&[20, 1, 2])), Err(KexError::ShortPayload { field: "cookie" }));
    let control = with_kex_list(b"curve25519-sha256,bad\x1b[2Jname");
    assert_eq!(
        parse_packet(&control),
        Err(KexError::BadNameByte { field: "kex_algorithms", index: 1, byte: 0x1b })
    );
    let empty = with_kex_list(b"a,,b");
    assert_eq!(parse_packet(&empty), Err(KexError::EmptyName { field: "kex_algorithms", index: 1 }));
    assert_eq!(
        parse_packet(&with_kex_list(b"a,")),
        Err(KexError::EmptyName { field: "kex_algorithms", index: 1 })
    );
    // Details show bytes as numbers: nothing for a terminal to interpret.
    let detail = KexError::BadNameByte { field: "kex_algorithms", index: 1, byte: 0x1b }.to_string();
    assert!(detail.contains("0x1b") && !detail.contains('\x1b'));
}

fn with_kex_list(list: &[u8]) -> Vec<u8> {
    let mut payload = vec![20];
    payload.extend([7; 16]);
    payload.extend((list.len() as u32).to_be_bytes());
    payload.extend(list);
    for _ in 0..9 {
        payload.extend(0u32.to_be_bytes());
    }
    payload.extend([0, 0, 0, 0, 0]);
    wrap_payload(&payload)
}

#[test]
fn json_has_the_rfc_names_and_the_derived_flags() {
    let k = parsed(OPENSSH_10);
    let json = serde_json::to_value(KexRead::from_result(Ok(k))).unwrap();
    for name in FIELD_NAMES {
        assert!(json[name].is_array(), "{name}");
    }
    assert_eq!(json["kex_algorithms"][0], "mlkem768x25519-sha256");
    assert_eq!((json["strict_kex"].as_bool(), json["terrapin_exposed"].as_bool()), (Some(true), Some(false)));
    assert_eq!(
        (json["post_quantum"].as_bool(), json["first_kex_packet_follows"].as_bool()),
        (Some(true), Some(false))
    );
    let failed = serde_json::to_value(KexRead::Failed(KexError::NoPacket)).unwrap();
    assert_eq!(failed["error"], "no_packet");
}

#[test]
fn captured_packets_round_trip() {
    for capture in [SSHD_9_2, OPENSSH_10, DROPBEAR] {
        let k = parsed(capture);
        assert_eq!(KexInit::parse_payload(&k.emit_payload()), Ok(k.clone()));
        assert_eq!(parse_packet(&k.emit_packet()), Ok(k));
    }
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[!-+\\--~]{1,20}"
}

fn list_strategy() -> impl Strategy<Value = NameList> {
    prop::collection::vec(name_strategy(), 0..6).prop_map(NameList)
}

proptest! {
    #[test]
    fn emit_then_parse_gives_the_same_proposal(
        cookie in any::<[u8; 16]>(),
        lists in prop::collection::vec(list_strategy(), 10),
        follows in any::<bool>(),
        reserved in any::<u32>(),
    ) {
        let mut l = lists.into_iter();
        let mut next = || l.next().unwrap_or_default();
        let k = KexInit {
            cookie,
            kex_algorithms: next(),
            server_host_key_algorithms: next(),
            encryption_algorithms_client_to_server: next(),
            encryption_algorithms_server_to_client: next(),
            mac_algorithms_client_to_server: next(),
            mac_algorithms_server_to_client: next(),
            compression_algorithms_client_to_server: next(),
            compression_algorithms_server_to_client: next(),
            languages_client_to_server: next(),
            languages_server_to_client: next(),
            first_kex_packet_follows: follows,
            reserved,
        };
        let packet = k.emit_packet();
        prop_assert_eq!(frame(&packet, packet.len()), Frame::Whole { len: packet.len() });
        prop_assert_eq!(parse_packet(&packet), Ok(k));
        // Every strict prefix needs more.
        for cut in [0, 3, 4, packet.len() / 2, packet.len() - 1] {
            let need_more = matches!(frame(&packet[..cut], usize::MAX), Frame::NeedMore { .. });
            prop_assert!(need_more, "prefix of {}", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree_with_the_frame(bytes in prop::collection::vec(any::<u8>(), 0..600), room in 0usize..1000) {
        let result = parse_after_ident(&bytes, room);
        match frame(&bytes, room) {
            Frame::NeedMore { .. } => {
                let incomplete = matches!(result, Err(KexError::Truncated { .. }) | Err(KexError::NoPacket));
                prop_assert!(incomplete, "{:?}", result);
            }
            Frame::Invalid(e) => prop_assert_eq!(result, Err(e)),
            Frame::Whole { len } => prop_assert_eq!(result, parse_packet(&bytes[..len])),
        }
        if let Ok(k) = parse_after_ident(&bytes, room) {
            for list in k.lists() {
                prop_assert!(list.names().all(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')));
            }
            let _ = (k.to_string(), k.summary(), check(&k));
        }
    }
}
/// when each was written by hand.
#[test]
fn malformations_keep_their_published_names() {
    let names: Vec<&str> = [
        KexError::NoPacket,
        KexError::ExceedsCap { bytes: 9000, room: 10 },
        KexError::PaddingTooShort { padding: 1 },
        KexError::NameListOverrun { field: "kex_algorithms", length: 9, left: 1 },
        KexError::BadNameByte { field: "kex_algorithms", index: 0, byte: 0 },
    ]
    .iter()
    .map(KexError::name)
    .collect();
    assert_eq!(
        names,
        ["no_packet", "exceeds_byte_cap", "padding_too_short", "name_list_overrun", "bad_name_byte"]
    );
    assert_eq!(openssh::Kind::HostKey.name(), "host_key");
    assert_eq!(serde_json::to_string(&openssh::Kind::HostKey).unwrap(), "\"host_key\"");
}
