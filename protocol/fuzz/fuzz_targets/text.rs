//! The text parsers. The first byte picks one, the rest (if UTF-8) is parsed:
//! 0 `Domain`, 1 `NodeId`, 2 `Bytes`, 3 `Credits`, 4 `Price`,
//! 5 `parse_duration`, 6 the hex ids and `TaskId`. What parses must print and
//! parse back to the same value.
#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;
use std::time::Duration;

use agora_protocol::units::{Bytes, Credits, Price, format_duration, parse_duration};
use agora_protocol::{ContentId, Domain, JobId, MessageId, NodeId, Nonce, TaskId};
use agora_protocol_fuzz::check_domain;
use libfuzzer_sys::fuzz_target;

fn roundtrip<T: FromStr + Display + Debug + PartialEq>(s: &str) -> Option<T>
where
    T::Err: Debug + Display,
{
    let v = match s.parse::<T>() {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    let printed = v.to_string();
    match printed.parse::<T>() {
        Ok(back) => assert_eq!(back, v, "`{s}` printed as `{printed}`"),
        Err(e) => panic!("`{s}` parsed as {v:?}, printed as `{printed}`, which does not parse: {e}"),
    }
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 7 {
        0 => {
            if let Some(d) = roundtrip::<Domain>(s) {
                check_domain(&d);
            }
        }
        1 => {
            if let Some(n) = roundtrip::<NodeId>(s) {
                assert_eq!(NodeId::from_public_key_bytes(*n.as_bytes()), Ok(n));
                let _ = (format!("{n:?}"), n.short());
            }
        }
        2 => {
            if let Ok(b) = s.parse::<Bytes>() {
                // Sizes print rounded (`1.5 KiB`); the plain number parses back.
                let _ = b.to_string();
                assert_eq!(format!("{}B", b.0).parse::<Bytes>(), Ok(b));
            }
        }
        3 => drop(roundtrip::<Credits>(s)),
        4 => {
            if let Ok(p) = s.parse::<Price>() {
                let printed = p.to_string();
                let amount = printed
                    .strip_suffix(" cr/CU·s")
                    .expect("prices print with their unit");
                assert_eq!(amount.parse::<Price>(), Ok(p));
            }
        }
        5 => {
            if let Ok(d) = parse_duration(s) {
                let _ = format_duration(d);
                if let Ok(ms) = u64::try_from(d.as_millis()) {
                    assert_eq!(Duration::from_millis(ms), d);
                    assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d));
                }
            }
        }
        _ => {
            let _ = roundtrip::<ContentId>(s);
            let _ = roundtrip::<MessageId>(s);
            let _ = roundtrip::<JobId>(s);
            let _ = roundtrip::<Nonce>(s);
            let _ = roundtrip::<TaskId>(s);
        }
    }
});
