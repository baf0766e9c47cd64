//! Fuel for host work: what a guest's WASI calls cost.
//!
//! wasmtime's fuel counts WebAssembly instructions; a call into the host
//! costs only its `call` instruction, whatever the host then does, so a
//! guest calling `random_get` for a gigabyte at a time used seconds of a
//! provider's CPU and paid for a few instructions. Every function a guest
//! may import therefore charges fuel for its work:
//!
//! * before it runs, [`HOST_CALL_FUEL`], plus [`HOST_BYTE_FUEL`] per byte of
//!   guest memory its arguments let it read or write (paths, iovec arrays,
//!   buffers, `poll_oneoff` subscriptions and events, the arguments
//!   `args_get` copies), or [`RANDOM_BYTE_FUEL`] per byte of randomness;
//! * after it returns, [`HOST_BYTE_FUEL`] per byte it moved through the
//!   task's standard streams (read from the input, written to stdout or
//!   stderr), counted by the streams themselves (`Moved`).
//!
//! A task without enough fuel left ends `OutOfFuel`. Every charge depends
//! only on the call's arguments, the guest's memory, the task's input and
//! arguments, so it is the same on every provider. GUEST-CONTRACT.md
//! ("Fuel") lists the costs, function by function, for a second
//! implementation.
//!
//! The functions wasmtime-wasi implements are wrapped here: each wrapper
//! charges, then calls wasmtime-wasi's preview-1 function with the guest's
//! memory, as wasmtime-wasi's own linker glue would. The five functions of
//! our own (`wasi.rs`) charge in their bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{AsContextMut, Caller, Linker, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};
use wasmtime_wasi::runtime::in_tokio;

use super::wasi::{ARGV0, State, WASI_MODULE, memory};

/// Fuel every call to a WASI function costs, whatever it does: about what
/// the most expensive call with no data costs the host, in the time a
/// node of 1000–3000 CU runs this much WebAssembly.
pub const HOST_CALL_FUEL: u64 = 1_000;

/// Fuel per byte a WASI function copies between the guest's memory and the
/// host: what `memory.copy` costs per byte.
pub const HOST_BYTE_FUEL: u64 = 1;

/// Fuel per byte `random_get` produces: BLAKE3 output costs about four
/// times what the calibration kernel does per fuel.
pub const RANDOM_BYTE_FUEL: u64 = 4;

/// Bytes an iovec (or ciovec) takes in the guest's memory.
const IOVEC_SIZE: u64 = 8;

/// Counts the bytes moved through one task's standard streams; the streams
/// add to it, the wrappers charge for what a call added.
#[derive(Clone, Default)]
pub(crate) struct Moved(Arc<AtomicU64>);

impl Moved {
    pub(crate) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a task's calls are charged from.
pub(crate) struct Meter {
    /// Bytes moved through the standard streams so far.
    pub(crate) moved: Moved,
    /// The size of the argument data `args_get` copies: each argument
    /// (`argv[0]` included) with its NUL, and a 4-byte pointer to it.
    args_bytes: u64,
}

impl Meter {
    pub(crate) fn new(moved: Moved, args: &[String]) -> Meter {
        let args_bytes = std::iter::once(ARGV0.len())
            .chain(args.iter().map(String::len))
            .map(|len| len as u64 + 1 + 4)
            .sum();
        Meter { moved, args_bytes }
    }
}

/// Takes `fuel` from the task; a task without that much left ends out of
/// fuel (with none left).
pub(crate) fn charge(caller: &mut Caller<'_, State>, fuel: u64) -> wasmtime::Result<()> {
    if fuel == 0 {
        return Ok(());
    }
    let left = caller.get_fuel()?;
    match left.checked_sub(fuel) {
        Some(rest) => caller.set_fuel(rest),
        None => {
            caller.set_fuel(0)?;
            Err(wasmtime::Error::new(Trap::OutOfFuel))
        }
    }
}

/// The fixed cost of a call plus `bytes` of guest memory it may touch.
pub(crate) fn call_cost(bytes: u64) -> u64 {
    HOST_CALL_FUEL.saturating_add(bytes.saturating_mul(HOST_BYTE_FUEL))
}

/// A length argument, as WASI reads it (unsigned).
fn len(n: i32) -> u64 {
    u64::from(n as u32)
}

/// The bytes of an iovec array of `n` entries.
fn iovecs(n: i32) -> u64 {
    len(n) * IOVEC_SIZE
}

/// Runs one of wasmtime-wasi's preview-1 functions on the guest's memory,
/// as wasmtime-wasi's linker glue does.
fn call_wasi<R>(
    caller: &mut Caller<'_, State>,
    f: impl FnOnce(&mut WasiP1Ctx, &mut wiggle::GuestMemory<'_>) -> wiggle::error::Result<R>,
) -> wasmtime::Result<R> {
    let hostcall_fuel = caller.as_context_mut().hostcall_fuel();
    let Some(memory) = memory(caller) else {
        return Err(wasmtime::Error::msg("missing required memory export"));
    };
    let (data, state) = memory.data_and_store_mut(caller);
    state.wasi.set_hostcall_fuel(hostcall_fuel);
    f(&mut state.wasi, &mut wiggle::GuestMemory::Unshared(data))
}

/// Defines each listed wasmtime-wasi function as a wrapper that charges
/// [`call_cost`] of the bytes its arguments name, calls it, then charges
/// for the bytes it moved through the standard streams.
macro_rules! metered {
    ($linker:ident, $caller:ident; $($mode:ident $name:ident($($arg:ident: $ty:ty),*) => $bytes:expr;)*) => {
        $(
            $linker.func_wrap(
                WASI_MODULE,
                stringify!($name),
                |mut $caller: Caller<'_, State>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                    let bytes: u64 = $bytes;
                    charge(&mut $caller, call_cost(bytes))?;
                    let before = $caller.data().meter.moved.get();
                    let errno = metered!(@call $mode $caller, $name($($arg),*))?;
                    let moved = $caller.data().meter.moved.get() - before;
                    charge(&mut $caller, moved.saturating_mul(HOST_BYTE_FUEL))?;
                    Ok(errno)
                },
            )?;
        )*
    };
    (@call sync $caller:ident, $name:ident($($arg:ident),*)) => {
        call_wasi(&mut $caller, |cx, mem| p1::$name(cx, mem $(, $arg)*))
    };
    (@call async $caller:ident, $name:ident($($arg:ident),*)) => {
        call_wasi(&mut $caller, |cx, mem| in_tokio(p1::$name(cx, mem $(, $arg)*)))
    };
}

/// Adds every WASI preview-1 function wasmtime-wasi implements, metered;
/// `wasi.rs` adds the other five.
#[rustfmt::skip]
pub(crate) fn add_wasi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    metered! { linker, caller;
        sync args_get(argv: i32, buf: i32) => caller.data().meter.args_bytes;
        sync args_sizes_get(argc: i32, buf_size: i32) => caller.data().meter.args_bytes;
        sync environ_get(environ: i32, buf: i32) => 0;
        sync environ_sizes_get(count: i32, buf_size: i32) => 0;
        async fd_advise(fd: i32, offset: i64, length: i64, advice: i32) => 0;
        sync fd_allocate(fd: i32, offset: i64, length: i64) => 0;
        async fd_close(fd: i32) => 0;
        async fd_datasync(fd: i32) => 0;
        async fd_fdstat_get(fd: i32, out: i32) => 0;
        sync fd_fdstat_set_flags(fd: i32, flags: i32) => 0;
        sync fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64) => 0;
        async fd_filestat_get(fd: i32, out: i32) => 0;
        async fd_filestat_set_size(fd: i32, size: i64) => 0;
        async fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32) => 0;
        async fd_pread(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nread: i32) => iovecs(iovs_len);
        sync fd_prestat_get(fd: i32, out: i32) => 0;
        sync fd_prestat_dir_name(fd: i32, path: i32, path_len: i32) => len(path_len);
        async fd_pwrite(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nwritten: i32) => iovecs(iovs_len);
        async fd_read(fd: i32, iovs: i32, iovs_len: i32, nread: i32) => iovecs(iovs_len);
        async fd_readdir(fd: i32, buf: i32, buf_len: i32, cookie: i64, used: i32) => len(buf_len);
        async fd_renumber(fd: i32, to: i32) => 0;
        async fd_seek(fd: i32, offset: i64, whence: i32, out: i32) => 0;
        async fd_sync(fd: i32) => 0;
        sync fd_tell(fd: i32, out: i32) => 0;
        async fd_write(fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) => iovecs(iovs_len);
        async path_create_directory(fd: i32, path: i32, path_len: i32) => len(path_len);
        async path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, out: i32) => len(path_len);
        async path_filestat_set_times(fd: i32, flags: i32, path: i32, path_len: i32, atim: i64, mtim: i64, fst: i32) => len(path_len);
        async path_link(old_fd: i32, old_flags: i32, old: i32, old_len: i32, new_fd: i32, new: i32, new_len: i32) => len(old_len) + len(new_len);
        async path_open(fd: i32, dirflags: i32, path: i32, path_len: i32, oflags: i32, base: i64, inheriting: i64, fdflags: i32, out: i32) => len(path_len);
        async path_readlink(fd: i32, path: i32, path_len: i32, buf: i32, buf_len: i32, used: i32) => len(path_len) + len(buf_len);
        async path_remove_directory(fd: i32, path: i32, path_len: i32) => len(path_len);
        async path_rename(fd: i32, old: i32, old_len: i32, new_fd: i32, new: i32, new_len: i32) => len(old_len) + len(new_len);
        async path_symlink(old: i32, old_len: i32, fd: i32, new: i32, new_len: i32) => len(old_len) + len(new_len);
        async path_unlink_file(fd: i32, path: i32, path_len: i32) => len(path_len);
        sync proc_raise(signal: i32) => 0;
        sync sched_yield() => 0;
        sync sock_accept(fd: i32, flags: i32, out: i32) => 0;
        sync sock_recv(fd: i32, data: i32, data_len: i32, flags: i32, out_len: i32, out_flags: i32) => iovecs(data_len);
        sync sock_send(fd: i32, data: i32, data_len: i32, flags: i32, out_len: i32) => iovecs(data_len);
        sync sock_shutdown(fd: i32, how: i32) => 0;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use agora_protocol::market::Limits;
    use agora_protocol::units::{Bytes, Fuel, Millis};
    use wasmtime::{Engine, Store, ValType};
    use wasmtime_wasi::WasiCtxBuilder;

    use super::*;
    use crate::executor::wasi::GRANTED_FUNCTIONS;
    use crate::executor::{Config, Executor, Task};

    /// A module that calls every granted function once, with wasmtime-wasi's
    /// own signatures and all-zero arguments, `proc_exit` last; and the fuel
    /// its instructions cost.
    fn call_everything() -> (String, u64) {
        let engine = Engine::default();
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
        let mut store = Store::new(&engine, WasiCtxBuilder::new().build_p1());
        let mut names: Vec<&str> = GRANTED_FUNCTIONS
            .iter()
            .copied()
            .filter(|n| *n != "proc_exit")
            .collect();
        names.push("proc_exit");
        // Entering `_start` costs 1.
        let (mut imports, mut calls, mut fuel) = (String::new(), String::new(), 1);
        for (i, name) in names.iter().enumerate() {
            let ty = linker
                .get(&mut store, WASI_MODULE, name)
                .ok()
                .and_then(|e| e.into_func())
                .unwrap_or_else(|| panic!("wasmtime-wasi has no {name}"))
                .ty(&store);
            let wat = |t: ValType| if matches!(t, ValType::I64) { "i64" } else { "i32" };
            let params: Vec<&str> = ty.params().map(wat).collect();
            let results: Vec<&str> = ty.results().map(wat).collect();
            imports.push_str(&format!(
                "(import \"{WASI_MODULE}\" \"{name}\" (func $f{i} (param {}) (result {})))\n",
                params.join(" "),
                results.join(" ")
            ));
            let args: Vec<String> = params.iter().map(|p| format!("({p}.const 0)")).collect();
            calls.push_str(&format!("(call $f{i} {})\n", args.join(" ")));
            calls.push_str(&"(drop)\n".repeat(results.len()));
            // Each constant and the call cost 1; `drop` costs nothing.
            fuel += params.len() as u64 + 1;
        }
        let wat =
            format!("(module {imports} (memory (export \"memory\") 1) (func (export \"_start\") {calls}))");
        (wat, fuel)
    }

    #[test]
    fn every_function_a_guest_can_call_charges_host_fuel() {
        let (wat, instructions) = call_everything();
        let executor = Executor::new(Config::default()).unwrap();
        // Loading checks every wrapper against wasmtime-wasi's signature.
        let module = executor.load(&wat::parse_str(&wat).unwrap()).unwrap();
        let limits = Limits {
            fuel: Fuel(1_000_000),
            memory: Bytes::mib(1),
            timeout: Millis(10_000),
            max_output: Bytes::mib(1),
        };
        let task = Task {
            input: &[],
            args: &[],
            limits,
            seed: 0,
            resume: None,
            checkpoints: None,
        };
        let outcome = executor.run(&module, &task);
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        // `args_get` and `args_sizes_get` each pay for "task\0" and its pointer.
        let args = 2 * (ARGV0.len() as u64 + 1 + 4) * HOST_BYTE_FUEL;
        assert_eq!(
            outcome.fuel_used.0,
            instructions + GRANTED_FUNCTIONS.len() as u64 * HOST_CALL_FUEL + args
        );
    }

    #[test]
    fn the_argument_data_is_what_args_get_copies() {
        let m = Meter::new(Moved::default(), &["ab".to_owned(), String::new()]);
        // "task\0", "ab\0", "\0" and three 4-byte pointers.
        assert_eq!(m.args_bytes, 5 + 3 + 1 + 12);
    }
}
