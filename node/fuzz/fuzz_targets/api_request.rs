//! The local API's request parsing: job submissions (JSON) and the ids and
//! domains that arrive in paths and queries. Nothing may panic; whatever
//! parses must survive the shape checks and serialise back.
#![no_main]

use agora_node::api::{SubmitRequest, check_spec};
use agora_protocol::{ContentId, Domain, JobId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<SubmitRequest>(data) {
        let _ = check_spec(&req.spec);
        let again = serde_json::to_vec(&req).expect("a parsed request serialises");
        let back: SubmitRequest = serde_json::from_slice(&again).expect("and parses back");
        assert_eq!(back.spec, req.spec);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<JobId>();
        let _ = text.parse::<ContentId>();
        let _ = text.parse::<Domain>();
        let _ = text.parse::<agora_protocol::TaskId>();
    }
});
