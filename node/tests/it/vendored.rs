//! The vendored crates' changes to libp2p's plumbing (vendor/README.md),
//! checked through their public interfaces.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};

/// A socket that counts the writes that reach it and never has anything
/// to read.
struct CountingSocket(Arc<AtomicUsize>);

impl AsyncWrite for CountingSocket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CountingSocket {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Poll::Pending
    }
}

/// Opens five yamux streams on a buffered counting socket, writes `len`
/// bytes on each, polls the connection once and returns how many writes
/// reached the socket.
fn socket_writes_for_five_streams_of(len: usize) -> usize {
    // Behind a buffer, as behind noise: only a flush reaches the socket.
    let writes = Arc::new(AtomicUsize::new(0));
    let socket = BufWriter::with_capacity(1 << 20, CountingSocket(writes.clone()));
    let mut conn = yamux::Connection::new(socket, yamux::Config::default(), yamux::Mode::Client);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut streams = Vec::new();
    for i in 0..5u8 {
        let Poll::Ready(Ok(mut s)) = conn.poll_new_outbound(&mut cx) else {
            panic!("no outbound stream");
        };
        futures::executor::block_on(s.write_all(&vec![i; len])).unwrap();
        streams.push(s);
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "nothing is written before the connection is polled"
    );
    assert!(conn.poll_next_inbound(&mut cx).is_pending());
    writes.load(Ordering::SeqCst)
}

#[test]
fn yamux_sends_the_frames_queued_for_one_poll_in_one_write() {
    // Five frames (each stream's SYN with its data); the crate as published
    // flushed after each of them.
    assert_eq!(socket_writes_for_five_streams_of(100), 1);
}

#[test]
fn yamux_flushes_as_soon_as_16_kib_wait() {
    // 10 KiB frames: a flush after the second (20 KiB), after the fourth,
    // and the last at the end of the poll.
    assert_eq!(socket_writes_for_five_streams_of(10 * 1024), 3);
}

#[tokio::test(start_paused = true)]
async fn a_delay_runs_on_the_tokio_timer_once_asked_to() {
    futures_timer::use_tokio_timer();
    // Paused tokio time jumps ahead whenever the runtime is idle: a delay on
    // tokio's timer fires an hour in at once, before the two-hour sleep,
    // while one on futures-timer's own thread would wait an hour of real
    // time and lose the race.
    let started = Instant::now();
    tokio::select! {
        () = futures_timer::Delay::new(Duration::from_secs(3600)) => {}
        () = tokio::time::sleep(Duration::from_secs(7200)) => panic!("the delay is not on tokio's timer"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_delay_made_outside_any_runtime_still_fires() {
    futures_timer::use_tokio_timer();
    let started = Instant::now();
    futures::executor::block_on(futures_timer::Delay::new(Duration::from_millis(20)));
    assert!(started.elapsed() >= Duration::from_millis(20));
}
