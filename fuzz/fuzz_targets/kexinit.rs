//! Arbitrary bytes after an ident line through the binary-packet framer and the KEXINIT parser.
//!
//! Beyond "never panics":
//! - the framer and the parser agree (a whole packet parses as the framer delimited it, an invalid
//!   length is the parser's error, too few bytes are `truncated`);
//! - a prefix never contradicts the whole: once the framer decides, more bytes change nothing;
//! - every parsed name is non-empty printable US-ASCII without commas, and a parse re-emitted parses
//!   to the same proposal;
//! - derived fields, the OpenSSH client check and the JSON never fail.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sshprobe::kexinit::{frame, openssh, parse_after_ident, parse_packet, Frame, KexError, KexInit, KexRead};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the byte cap's room, so caps below and above the packet are tried.
    let (room, data) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])) * 4, rest),
        _ => (8192, data),
    };
    let whole = frame(data, room);
    let result = parse_after_ident(data, room);
    match &whole {
        Frame::NeedMore { need } => {
            assert!(*need > data.len());
            assert!(matches!(result, Err(KexError::Truncated { .. }) | Err(KexError::NoPacket)));
        }
        Frame::Invalid(e) => assert_eq!(&result, &Err(e.clone())),
        Frame::Whole { len } => {
            assert!(*len <= data.len() && *len <= room && len % 8 == 0);
            assert_eq!(result, parse_packet(&data[..*len]));
        }
    }
    // Prefix consistency: a decided frame stays decided.
    if !matches!(whole, Frame::NeedMore { .. }) {
        for k in [4usize, 5, 8, 64, 1024] {
            if k <= data.len() {
                match frame(&data[..k], room) {
                    Frame::NeedMore { .. } => {}
                    Frame::Invalid(e) => assert_eq!(whole, Frame::Invalid(e)),
                    Frame::Whole { len } => assert_eq!(whole, Frame::Whole { len }),
                }
            }
        }
    }
    if let Ok(k) = &result {
        for list in k.lists() {
            assert!(list.names().all(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')));
        }
        assert_eq!(KexInit::parse_payload(&k.emit_payload()).as_ref(), Ok(k));
        let _ = (k.strict_kex(), k.terrapin_exposed(), k.post_quantum(), k.summary(), k.to_string());
        let _ = openssh::check(k).workaround();
    }
    let read = KexRead::from_result(result);
    let _ = (read.summary(), read.to_string());
    serde_json::to_string(&read).expect("a KEXINIT read serializes");
});
