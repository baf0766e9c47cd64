//! Lays out the release `agora` binary's code in the order `agora.order`
//! lists it: the functions a node runs while idle, then those it runs at
//! work, then the rest, together at the start of `.text`.
//!
//! The kernel maps a neighbourhood of pages (a whole page-cache folio, on
//! recent kernels) around each page of code a process touches, so code run
//! once and scattered over the binary stays resident, and an idle node that
//! drops its mappings of the binary (`memory::drop_code`) maps again every
//! folio its idle code is spread over. Laid out so, an idle provider's pages
//! of files were 6–7 MB instead of 22 after a job (testnet README, "What an
//! idle node's memory is"). `testnet/symbol-order.py` writes the list; names
//! a build no longer has are skipped, so a stale list costs memory, never
//! correctness.
//!
//! Only where rustc links with its own lld (x86_64 Linux, the default since
//! Rust 1.90) and nothing names another linker; `AGORA_SYMBOL_ORDER=0`
//! turns it off.

use std::env;
use std::path::Path;

fn main() {
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("agora.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=AGORA_SYMBOL_ORDER");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let lld = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && env::var_os("RUSTC_LINKER").is_none()
        && !env::var("CARGO_ENCODED_RUSTFLAGS")
            .unwrap_or_default()
            .split('\x1f')
            .any(|f| f.contains("linker") || f.contains("fuse-ld"));
    let wanted = env::var("AGORA_SYMBOL_ORDER").as_deref() != Ok("0");
    if release && lld && wanted && order.exists() {
        println!(
            "cargo:rustc-link-arg-bin=agora=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=agora=-Wl,--no-warn-symbol-ordering");
    }
}
