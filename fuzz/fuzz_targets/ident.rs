//! Feeds arbitrary server bytes to the parser and the classifier, with every way a connection can end:
//! neither may panic, and a prefix's verdict may never contradict the whole's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshprobe::evidence::{Connect, End, Observation, ProbeOrder, Timings};
use sshprobe::ident::{scan, Scan};
use sshprobe::outcome::classify;

fuzz_target!(|data: &[u8]| {
    let whole = scan(data);
    let cut = data.len() / 2;
    match scan(&data[..cut]) {
        Scan::NeedMore => {}
        prefix => assert_eq!(prefix, whole, "a prefix's verdict changed"),
    }
    for end in [End::Fin, End::Rst, End::Timeout, End::WeClosed, End::ByteCap] {
        let obs = Observation {
            remote: "127.0.0.1:22".parse().unwrap(),
            local: None,
            order: ProbeOrder::WaitForBanner,
            connect: Connect::Established,
            end: Some(end),
            timings: Timings::default(),
            received: bytes::Bytes::copy_from_slice(data),
            sent_ident: false,
            packets: Vec::new(),
        };
        let c = classify(&obs);
        let _ = c.detail();
    }
});
