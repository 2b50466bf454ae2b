//! Arbitrary server bytes through the identification-line parser and the classifier.
//!
//! Beyond "never panics", it checks the properties the connect engine relies on:
//! - a verdict on a prefix is the verdict on the whole (the engine stops reading at the first
//!   verdict, so a prefix must never say something the full reply would contradict);
//! - an ident line's `end_offset` lies just past an LF inside the buffer;
//! - the outcome follows from the scan: an ident is a `banner` however the connection ended, an
//!   SSH-1-only line a `protocol_mismatch`, invalid bytes `not_ssh`, and no bytes at all an outcome
//!   decided by the end alone;
//! - messages stay within their cap, and every classification serializes to JSON.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sshprobe::evidence::{Connect, End, Observation, ProbeOrder, Timings};
use sshprobe::ident::{scan, Scan, MAX_IDENT_LINE};
use sshprobe::outcome::{classify, Outcome};

/// How many prefixes of a long input are checked against the whole (all of them for short ones).
const PREFIX_CHECKS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let whole = scan(data);
    match &whole {
        Scan::Ident(line) | Scan::Ssh1Only(line) => {
            assert!(line.end_offset >= 1 && line.end_offset <= data.len());
            assert_eq!(data[line.end_offset - 1], b'\n');
            let prebanner_bytes: usize =
                data[..line.end_offset].split_inclusive(|&b| b == b'\n').rev().skip(1).map(<[u8]>::len).sum();
            let ident_bytes = line.end_offset - prebanner_bytes;
            assert!(ident_bytes <= MAX_IDENT_LINE, "an ident line of {ident_bytes} bytes");
            assert!(data[prebanner_bytes..].starts_with(b"SSH-"));
            assert!(!line.proto.is_empty() && !line.software.is_empty());
            let _ = line.to_string();
        }
        Scan::NotSsh(reason) => {
            let _ = reason.describe();
        }
        Scan::NeedMore => {}
    }

    // Prefix consistency.
    let step = (data.len() / PREFIX_CHECKS).max(1);
    for k in (0..data.len()).step_by(step) {
        match scan(&data[..k]) {
            Scan::NeedMore => {}
            verdict => assert_eq!(verdict, whole, "the prefix of {k} bytes disagrees with the whole"),
        }
    }

    let received = Bytes::copy_from_slice(data);
    for end in [End::Fin, End::Rst, End::Timeout, End::WeClosed, End::ByteCap] {
        let obs = Observation {
            remote: "127.0.0.1:22".parse().expect("an address"),
            local: None,
            order: ProbeOrder::WaitForBanner,
            connect: Connect::Established,
            end: Some(end),
            timings: Timings::default(),
            received: received.clone(),
            sent_ident: false,
            packets: Vec::new(),
            kexinit: None,
        };
        let c = classify(&obs);
        let expected = match (&whole, data.is_empty(), end) {
            (Scan::Ident(_), _, _) => Some(Outcome::Banner),
            (Scan::Ssh1Only(_), _, _) => Some(Outcome::ProtocolMismatch),
            (Scan::NotSsh(_), _, _) => Some(Outcome::NotSsh),
            (Scan::NeedMore, true, End::Rst) => Some(Outcome::ResetBeforeBanner),
            (Scan::NeedMore, true, End::Fin | End::WeClosed) => Some(Outcome::ClosedBeforeBanner),
            (Scan::NeedMore, true, End::Timeout | End::ByteCap) => Some(Outcome::BannerTimeout),
            (Scan::NeedMore, false, _) => None,
        };
        match expected {
            Some(outcome) => assert_eq!(c.outcome, outcome, "{end:?}"),
            None => assert!(
                matches!(c.outcome, Outcome::NotSsh | Outcome::ServerRefusal | Outcome::BannerTimeout),
                "{end:?} gave {:?}",
                c.outcome
            ),
        }
        assert_eq!(c.outcome.is_success(), c.outcome == Outcome::Banner);
        assert_eq!(c.banner.is_some(), matches!(c.outcome, Outcome::Banner | Outcome::ProtocolMismatch));
        if let Some(refusal) = c.refusal {
            assert_eq!(c.outcome, Outcome::ServerRefusal);
            assert!(c.message.is_some(), "{refusal:?} without its message");
        }
        if let Some(message) = &c.message {
            assert!(message.chars().count() <= 201, "a message of {} chars", message.chars().count());
        }
        let _ = c.detail();
        serde_json::to_string(&c).expect("a classification serializes");
    }
});
