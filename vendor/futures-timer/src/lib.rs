//! A general purpose crate for working with timeouts and delays with futures.
//!
//! # Examples
//!
//! ```no_run
//! # #[async_std::main]
//! # async fn main() {
//! use std::time::Duration;
//! use futures_timer::Delay;
//!
//! let now = Delay::new(Duration::from_secs(3)).await;
//! println!("waited for 3 secs");
//! # }
//! ```

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
// Vendored: futures-timer 3.0.3 predates the compiler that builds it here;
// what newer compilers warn of (a deprecated atomic, an unknown cfg, an
// unused trait) is allowed, so that a build of the workspace shows only its
// own warnings. See vendor/README.md.
#![allow(deprecated, dead_code, unexpected_cfgs)]

#[cfg(not(all(target_arch = "wasm32", feature = "wasm-bindgen")))]
mod native;
#[cfg(all(target_arch = "wasm32", feature = "wasm-bindgen"))]
mod wasm;

#[cfg(not(all(target_arch = "wasm32", feature = "wasm-bindgen")))]
mod tokio_backed;

#[cfg(not(all(target_arch = "wasm32", feature = "wasm-bindgen")))]
pub use self::tokio_backed::{use_tokio_timer, Delay};
#[cfg(all(target_arch = "wasm32", feature = "wasm-bindgen"))]
pub use self::wasm::Delay;
