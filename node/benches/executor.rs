//! Executor benchmarks (issue 3), with the native baseline in the same run.
//!
//! * per-task overhead for a cached module: instantiate, run a no-op,
//!   collect the output (goal: ≤ 50 µs median), with the pooling and the
//!   on-demand allocator, and with one WASI write;
//! * a compute-bound kernel, a Mandelbrot tile: the same algorithm as
//!   `examples/mandelbrot` (`escape_time` and `render`, copied below) natively
//!   and as hand-written WAT that mirrors it operation for operation
//!   (goal: WASM with fuel ≤ 1.5× native); both produce the same pixels;
//! * fuel metering on vs off on the same kernel, and what each of the
//!   executor's code-generation costs (fuel, epochs, NaN canonicalisation)
//!   adds;
//! * an integer kernel the same way: `examples/primes`'s trial division.
//!
//! Criterion prints its statistics per benchmark; a summary with medians and
//! ratios (measured again in a plain loop, so it does not depend on
//! criterion's files) follows.
//!
//! `cargo bench -p agora-node --bench executor`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use agora_node::executor::{Config, Executor, Module, Task, wasm_config};
use agora_protocol::market::Limits;
use agora_protocol::units::{Bytes, Fuel, Millis};
use criterion::Criterion;

// ---------------------------------------------------------------- the kernel, native

/// The tile rendered in every kernel benchmark.
#[derive(Clone, Copy)]
struct Tile {
    width: u32,
    height: u32,
    x: u32,
    y: u32,
    tile_width: u32,
    tile_height: u32,
    re_min: f64,
    re_max: f64,
    im_min: f64,
    im_max: f64,
    max_iter: u32,
}

const TILE: Tile = Tile {
    width: 512,
    height: 512,
    x: 128,
    y: 192,
    tile_width: 128,
    tile_height: 128,
    re_min: -2.0,
    re_max: 1.0,
    im_min: -1.5,
    im_max: 1.5,
    max_iter: 256,
};

/// `examples/mandelbrot`'s `escape_time`.
#[inline]
fn escape_time(c_re: f64, c_im: f64, max_iter: u32) -> u32 {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    let (mut re2, mut im2) = (0.0f64, 0.0f64);
    let mut n = 0;
    while n < max_iter && re2 + im2 <= 4.0 {
        im = 2.0 * re * im + c_im;
        re = re2 - im2 + c_re;
        re2 = re * re;
        im2 = im * im;
        n += 1;
    }
    n
}

/// `examples/mandelbrot`'s `palette_index`.
#[inline]
fn palette_index(n: u32, max_iter: u32) -> u8 {
    if n >= max_iter { 0 } else { 1 + (n % 255) as u8 }
}

/// `examples/mandelbrot`'s `render`.
fn render(tile: &Tile) -> Vec<u8> {
    let dx = (tile.re_max - tile.re_min) / f64::from(tile.width);
    let dy = (tile.im_max - tile.im_min) / f64::from(tile.height);
    let mut pixels = Vec::with_capacity(tile.tile_width as usize * tile.tile_height as usize);
    for py in tile.y..tile.y + tile.tile_height {
        let c_im = tile.im_max - (f64::from(py) + 0.5) * dy;
        for px in tile.x..tile.x + tile.tile_width {
            let c_re = tile.re_min + (f64::from(px) + 0.5) * dx;
            pixels.push(palette_index(
                escape_time(c_re, c_im, tile.max_iter),
                tile.max_iter,
            ));
        }
    }
    pixels
}

// ---------------------------------------------------------------- the kernel, WAT

/// `render` and `escape_time` by hand, operation for operation; `_start`
/// renders [`TILE`] and writes the pixels to stdout.
fn mandelbrot_wat(t: &Tile) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func $escape_time (param $c_re f64) (param $c_im f64) (param $max_iter i32) (result i32)
    (local $re f64) (local $im f64) (local $re2 f64) (local $im2 f64) (local $n i32)
    (block $done
      (loop $iter
        ;; while n < max_iter && re2 + im2 <= 4.0
        (br_if $done (i32.ge_u (local.get $n) (local.get $max_iter)))
        (br_if $done (i32.eqz (f64.le (f64.add (local.get $re2) (local.get $im2)) (f64.const 4))))
        ;; im = 2.0 * re * im + c_im
        (local.set $im (f64.add (f64.mul (f64.mul (f64.const 2) (local.get $re)) (local.get $im)) (local.get $c_im)))
        ;; re = re2 - im2 + c_re
        (local.set $re (f64.add (f64.sub (local.get $re2) (local.get $im2)) (local.get $c_re)))
        (local.set $re2 (f64.mul (local.get $re) (local.get $re)))
        (local.set $im2 (f64.mul (local.get $im) (local.get $im)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $iter)))
    (local.get $n))
  (func $render (export "render")
    (param $re_min f64) (param $re_max f64) (param $im_min f64) (param $im_max f64)
    (param $width i32) (param $height i32) (param $x i32) (param $y i32)
    (param $tile_width i32) (param $tile_height i32) (param $max_iter i32) (param $out i32)
    (result i32)
    (local $dx f64) (local $dy f64) (local $px i32) (local $py i32) (local $c_re f64) (local $c_im f64)
    (local $n i32) (local $p i32)
    (local.set $dx (f64.div (f64.sub (local.get $re_max) (local.get $re_min)) (f64.convert_i32_u (local.get $width))))
    (local.set $dy (f64.div (f64.sub (local.get $im_max) (local.get $im_min)) (f64.convert_i32_u (local.get $height))))
    (local.set $p (local.get $out))
    (local.set $py (local.get $y))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $py) (i32.add (local.get $y) (local.get $tile_height))))
        ;; c_im = im_max - (py + 0.5) * dy
        (local.set $c_im
          (f64.sub (local.get $im_max)
            (f64.mul (f64.add (f64.convert_i32_u (local.get $py)) (f64.const 0.5)) (local.get $dy))))
        (local.set $px (local.get $x))
        (block $cols_done
          (loop $cols
            (br_if $cols_done (i32.ge_u (local.get $px) (i32.add (local.get $x) (local.get $tile_width))))
            ;; c_re = re_min + (px + 0.5) * dx
            (local.set $c_re
              (f64.add (local.get $re_min)
                (f64.mul (f64.add (f64.convert_i32_u (local.get $px)) (f64.const 0.5)) (local.get $dx))))
            (local.set $n (call $escape_time (local.get $c_re) (local.get $c_im) (local.get $max_iter)))
            ;; palette_index: n >= max_iter ? 0 : 1 + n % 255
            (i32.store8 (local.get $p)
              (select (i32.const 0)
                      (i32.add (i32.const 1) (i32.rem_u (local.get $n) (i32.const 255)))
                      (i32.ge_u (local.get $n) (local.get $max_iter))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (local.set $px (i32.add (local.get $px) (i32.const 1)))
            (br $cols)))
        (local.set $py (i32.add (local.get $py) (i32.const 1)))
        (br $rows)))
    (i32.sub (local.get $p) (local.get $out)))
  (func (export "_start")
    (local $len i32)
    (local.set $len
      (call $render (f64.const {re_min}) (f64.const {re_max}) (f64.const {im_min}) (f64.const {im_max})
        (i32.const {width}) (i32.const {height}) (i32.const {x}) (i32.const {y})
        (i32.const {tw}) (i32.const {th}) (i32.const {max_iter}) (i32.const 1024)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        re_min = t.re_min,
        re_max = t.re_max,
        im_min = t.im_min,
        im_max = t.im_max,
        width = t.width,
        height = t.height,
        x = t.x,
        y = t.y,
        tw = t.tile_width,
        th = t.tile_height,
        max_iter = t.max_iter,
    )
}

const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn limits() -> Limits {
    Limits {
        fuel: Fuel(10_000_000_000),
        memory: Bytes::mib(64),
        timeout: Millis(60_000),
        max_output: Bytes::mib(1),
    }
}

fn task() -> Task<'static> {
    Task {
        input: &[],
        args: &[],
        limits: limits(),
        seed: 0,
        resume: None,
        checkpoints: None,
    }
}

// ---------------------------------------------------------------- raw wasmtime (fuel on/off)

/// A kernel instantiated once in a bare store of an engine configured like
/// the executor's, with some of fuel, epochs and NaN canonicalisation
/// switched off, for calling its export directly.
struct Raw {
    store: wasmtime::Store<()>,
    instance: wasmtime::Instance,
}

/// Which of the executor's code-generation costs are on.
#[derive(Clone, Copy)]
struct Metering {
    fuel: bool,
    epochs: bool,
    nan: bool,
}

const ALL: Metering = Metering {
    fuel: true,
    epochs: true,
    nan: true,
};

impl Raw {
    fn new(wasm: &[u8], m: Metering) -> Raw {
        let mut config = wasm_config(Config::default().max_memory.0);
        config
            .consume_fuel(m.fuel)
            .epoch_interruption(m.epochs)
            .cranelift_nan_canonicalization(m.nan);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut linker = wasmtime::Linker::new(&engine);
        linker
            .func_wrap(
                "wasi_snapshot_preview1",
                "fd_write",
                |_: i32, _: i32, _: i32, _: i32| -> i32 { 0 },
            )
            .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        if m.fuel {
            store.set_fuel(u64::MAX).unwrap();
        }
        if m.epochs {
            store.set_epoch_deadline(1 << 40);
        }
        let instance = linker.instantiate(&mut store, &module).unwrap();
        Raw { store, instance }
    }

    fn render(&mut self, t: &Tile) -> i32 {
        let f = self
            .instance
            .get_typed_func::<(f64, f64, f64, f64, i32, i32, i32, i32, i32, i32, i32, i32), i32>(
                &mut self.store,
                "render",
            )
            .unwrap();
        let args = (
            t.re_min,
            t.re_max,
            t.im_min,
            t.im_max,
            t.width as i32,
            t.height as i32,
            t.x as i32,
            t.y as i32,
            t.tile_width as i32,
            t.tile_height as i32,
            t.max_iter as i32,
            1024,
        );
        f.call(&mut self.store, args).unwrap()
    }

    fn count(&mut self, lo: u64, hi: u64) -> u64 {
        let f = self
            .instance
            .get_typed_func::<(i64, i64), i64>(&mut self.store, "count_trial")
            .unwrap();
        f.call(&mut self.store, (lo as i64, hi as i64)).unwrap() as u64
    }

    fn pixels(&mut self, len: usize) -> Vec<u8> {
        let memory = self.instance.get_memory(&mut self.store, "memory").unwrap();
        memory.data(&self.store)[1024..1024 + len].to_vec()
    }
}

// ---------------------------------------------------------------- an integer kernel

/// Primes are counted in `[PRIMES_LO, PRIMES_HI)` by trial division.
const PRIMES_LO: u64 = 1_000_000_000;
const PRIMES_HI: u64 = 1_000_002_000;

/// `examples/primes`'s `is_prime`.
fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// `examples/primes`'s `count_trial`.
fn count_trial(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

/// `is_prime` and `count_trial` by hand; `_start` counts
/// `[PRIMES_LO, PRIMES_HI)` and writes the count (u64 LE) to stdout.
fn primes_wat() -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $is_prime (param $n i64) (result i32)
    (local $d i64)
    (if (i64.lt_u (local.get $n) (i64.const 4))
      (then (return (i64.ge_u (local.get $n) (i64.const 2)))))
    (if (i64.eqz (i64.rem_u (local.get $n) (i64.const 2)))
      (then (return (i32.const 0))))
    (local.set $d (i64.const 3))
    (block $done
      (loop $trial
        (br_if $done (i64.gt_u (i64.mul (local.get $d) (local.get $d)) (local.get $n)))
        (if (i64.eqz (i64.rem_u (local.get $n) (local.get $d)))
          (then (return (i32.const 0))))
        (local.set $d (i64.add (local.get $d) (i64.const 2)))
        (br $trial)))
    (i32.const 1))
  (func $count_trial (export "count_trial") (param $lo i64) (param $hi i64) (result i64)
    (local $n i64) (local $count i64)
    (local.set $n (local.get $lo))
    (block $done
      (loop $each
        (br_if $done (i64.ge_u (local.get $n) (local.get $hi)))
        (local.set $count
          (i64.add (local.get $count) (i64.extend_i32_u (call $is_prime (local.get $n)))))
        (local.set $n (i64.add (local.get $n) (i64.const 1)))
        (br $each)))
    (local.get $count))
  (func (export "_start")
    (i64.store (i32.const 16) (call $count_trial (i64.const {PRIMES_LO}) (i64.const {PRIMES_HI})))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

// ---------------------------------------------------------------- benchmarks

fn executor(pooling: bool) -> Executor {
    Executor::new(Config {
        pooling,
        ..Config::default()
    })
    .unwrap()
}

fn load(e: &Executor, wat: &str) -> std::sync::Arc<Module> {
    e.load(&wat::parse_str(wat).unwrap()).unwrap()
}

fn bench_overhead(c: &mut Criterion) {
    let pooled = executor(true);
    let on_demand = executor(false);
    let noop_pooled = load(&pooled, NOOP);
    let noop_on_demand = load(&on_demand, NOOP);
    let hello = load(&pooled, HELLO);
    let mut g = c.benchmark_group("per_task_overhead");
    g.bench_function("noop/pooling", |b| {
        b.iter(|| black_box(pooled.run(&noop_pooled, &task()).output))
    });
    g.bench_function("noop/on_demand", |b| {
        b.iter(|| black_box(on_demand.run(&noop_on_demand, &task()).output))
    });
    g.bench_function("hello/pooling", |b| {
        b.iter(|| black_box(pooled.run(&hello, &task()).output))
    });
    g.finish();
}

fn bench_kernel(c: &mut Criterion) {
    let wasm = wat::parse_str(mandelbrot_wat(&TILE)).unwrap();
    let e = executor(true);
    let module = e.load(&wasm).unwrap();
    let mut fuel = Raw::new(&wasm, ALL);
    let mut no_fuel = Raw::new(&wasm, Metering { fuel: false, ..ALL });
    let mut g = c.benchmark_group("mandelbrot_tile");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("native", |b| b.iter(|| black_box(render(black_box(&TILE)))));
    g.bench_function("wasm_task_with_fuel", |b| {
        b.iter(|| black_box(e.run(&module, &task()).output))
    });
    g.bench_function("wasm_call_fuel_on", |b| {
        b.iter(|| black_box(fuel.render(black_box(&TILE))))
    });
    g.bench_function("wasm_call_fuel_off", |b| {
        b.iter(|| black_box(no_fuel.render(black_box(&TILE))))
    });
    g.finish();

    let wasm = wat::parse_str(primes_wat()).unwrap();
    let module = e.load(&wasm).unwrap();
    let mut g = c.benchmark_group("primes_trial_division");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("native", |b| {
        b.iter(|| black_box(count_trial(black_box(PRIMES_LO), black_box(PRIMES_HI))))
    });
    g.bench_function("wasm_task_with_fuel", |b| {
        b.iter(|| black_box(e.run(&module, &task()).output))
    });
    g.finish();
}

// ---------------------------------------------------------------- summary

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn summary() {
    println!("\n=== executor summary (medians) ===");
    let pooled = executor(true);
    let on_demand = executor(false);
    let noop_pooled = load(&pooled, NOOP);
    let noop_on_demand = load(&on_demand, NOOP);
    let hello = load(&pooled, HELLO);
    for _ in 0..500 {
        pooled.run(&noop_pooled, &task());
    }
    let p = time(5_000, || {
        black_box(pooled.run(&noop_pooled, &task()));
    });
    let o = time(5_000, || {
        black_box(on_demand.run(&noop_on_demand, &task()));
    });
    let h = time(5_000, || {
        black_box(pooled.run(&hello, &task()));
    });
    let verdict = |ok: bool| if ok { "meets goal" } else { "MISSES goal" };
    println!(
        "per-task overhead, cached no-op module: {:.1} µs pooling ({}, goal ≤ 50 µs), {:.1} µs on-demand allocator",
        p.as_secs_f64() * 1e6,
        verdict(p <= Duration::from_micros(50)),
        o.as_secs_f64() * 1e6
    );
    println!(
        "per-task overhead, one fd_write of 6 bytes: {:.1} µs",
        h.as_secs_f64() * 1e6
    );
    rust_noop(&pooled);

    let wasm = wat::parse_str(mandelbrot_wat(&TILE)).unwrap();
    let module = pooled.load(&wasm).unwrap();
    let native_pixels = render(&TILE);
    let outcome = pooled.run(&module, &task());
    assert_eq!(outcome.output, native_pixels, "WASM and native pixels differ");
    let variant = |fuel, epochs, nan| Metering { fuel, epochs, nan };
    let variants: [(&str, Metering); 7] = [
        ("fuel + epochs + NaN canonicalisation (the executor)", ALL),
        (
            "epochs + NaN canonicalisation (fuel off)",
            variant(false, true, true),
        ),
        (
            "fuel + epochs (NaN canonicalisation off)",
            variant(true, true, false),
        ),
        ("fuel only", variant(true, false, false)),
        ("epochs only", variant(false, true, false)),
        ("NaN canonicalisation only", variant(false, false, true)),
        ("none of them", variant(false, false, false)),
    ];
    let n = 15;
    let native = time(n, || {
        black_box(render(black_box(&TILE)));
    });
    let task_t = time(n, || {
        black_box(pooled.run(&module, &task()));
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "mandelbrot tile {}x{} (max_iter {}, {} fuel): native {:.2} ms",
        TILE.tile_width,
        TILE.tile_height,
        TILE.max_iter,
        outcome.fuel_used.0,
        ms(native)
    );
    println!(
        "  wasm task in the executor (instantiate, run, output): {:.2} ms = {:.2}x native ({}, goal ≤ 1.5x)",
        ms(task_t),
        ratio(task_t, native),
        verdict(ratio(task_t, native) <= 1.5)
    );
    let mut calls = Vec::new();
    for (name, m) in variants {
        let mut raw = Raw::new(&wasm, m);
        let len = raw.render(&TILE) as usize;
        assert_eq!(raw.pixels(len), native_pixels);
        let t = time(n, || {
            black_box(raw.render(&TILE));
        });
        println!(
            "  wasm call, {name}: {:.2} ms = {:.2}x native",
            ms(t),
            ratio(t, native)
        );
        calls.push(t);
    }
    println!("  fuel on/off = {:.2}", ratio(calls[0], calls[1]));

    let wasm = wat::parse_str(primes_wat()).unwrap();
    let module = pooled.load(&wasm).unwrap();
    let expect = count_trial(PRIMES_LO, PRIMES_HI);
    let outcome = pooled.run(&module, &task());
    assert_eq!(
        outcome.output,
        expect.to_le_bytes(),
        "WASM and native counts differ"
    );
    let native = time(n, || {
        black_box(count_trial(black_box(PRIMES_LO), black_box(PRIMES_HI)));
    });
    let task_t = time(n, || {
        black_box(pooled.run(&module, &task()));
    });
    println!(
        "primes by trial division in [{PRIMES_LO}, {PRIMES_HI}) ({expect} primes, {} fuel): native {:.2} ms",
        outcome.fuel_used.0,
        ms(native)
    );
    println!(
        "  wasm task in the executor: {:.2} ms = {:.2}x native ({}, goal ≤ 1.5x)",
        ms(task_t),
        ratio(task_t, native),
        verdict(ratio(task_t, native) <= 1.5),
    );
    let mut calls = Vec::new();
    for (name, m) in variants {
        let mut raw = Raw::new(&wasm, m);
        assert_eq!(raw.count(PRIMES_LO, PRIMES_HI), expect);
        let t = time(n, || {
            black_box(raw.count(PRIMES_LO, PRIMES_HI));
        });
        println!(
            "  wasm call, {name}: {:.2} ms = {:.2}x native",
            ms(t),
            ratio(t, native)
        );
        calls.push(t);
    }
    println!("  fuel on/off = {:.2}", ratio(calls[0], calls[1]));
}

/// The Rust no-op example (the end-to-end bench's task): the standard
/// library's start-up, a line of stdin to stdout. Skipped with a message
/// when the examples are not built.
fn rust_noop(pooled: &Executor) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/target/wasm32-wasip1/release/noop.wasm"
    );
    let Ok(bytes) = std::fs::read(path) else {
        println!("per-task overhead, Rust no-op example: skipped ({path} not built: see examples/README.md)");
        return;
    };
    let module = pooled.load(&bytes).unwrap();
    let input = b"1\n";
    let task = || Task { input, ..task() };
    for _ in 0..500 {
        black_box(pooled.run(&module, &task()));
    }
    let t = time(5_000, || {
        black_box(pooled.run(&module, &task()));
    });
    println!(
        "per-task overhead, Rust no-op example (std start-up, stdin to stdout): {:.1} µs",
        t.as_secs_f64() * 1e6
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_overhead(&mut c);
    bench_kernel(&mut c);
    c.final_summary();
    summary();
}
