//! The node's TOML configuration parser: never a panic, and a valid
//! configuration passes its own range checks.
#![no_main]

use agora_node::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = Config::parse(text) {
            assert!(c.validate().is_ok());
        }
    }
});
