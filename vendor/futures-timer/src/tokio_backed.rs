//! agora patch: delays on the tokio runtime's own timer when asked to.
//!
//! The native `Delay` keeps every timer in one global heap served by a
//! dedicated thread, and wakes that thread (a futex wake, then a context
//! switch) each time a delay is created, reset or dropped. libp2p creates
//! and drops one for every substream upgrade and every request-response
//! request, so a busy node woke the timer thread several times per message.
//! Once [`use_tokio_timer`] is called, a `Delay` created inside a tokio
//! runtime is a `tokio::time::Sleep` in that runtime's timer wheel instead:
//! creating, resetting and dropping it takes no syscall. Delays created
//! outside a runtime, or before the call, are native as before.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::native;

static TOKIO: AtomicBool = AtomicBool::new(false);

/// From now on, a [`Delay`] created inside a tokio runtime uses that
/// runtime's timer.
///
/// Call it only in a process whose every tokio runtime has its time driver
/// enabled (`enable_time` or `enable_all`): creating a tokio timer in a
/// runtime without one panics.
pub fn use_tokio_timer() {
    TOKIO.store(true, Ordering::Relaxed);
}

/// A future that completes at a point in time.
pub struct Delay(Inner);

enum Inner {
    Native(native::Delay),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Delay {
    /// Creates a new future which will fire at `dur` time into the future.
    #[inline]
    pub fn new(dur: Duration) -> Delay {
        if TOKIO.load(Ordering::Relaxed) && tokio::runtime::Handle::try_current().is_ok() {
            return Delay(Inner::Tokio(Box::pin(tokio::time::sleep(dur))));
        }
        Delay(Inner::Native(native::Delay::new(dur)))
    }

    /// Resets this timeout to an new timeout which will fire at the time
    /// specified by `at`.
    #[inline]
    pub fn reset(&mut self, dur: Duration) {
        match &mut self.0 {
            Inner::Native(d) => d.reset(dur),
            Inner::Tokio(s) => {
                // A duration past what an instant can hold is clamped to
                // about thirty years (`tokio::time::sleep` clamps too).
                let now = tokio::time::Instant::now();
                let at = now
                    .checked_add(dur)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
                s.as_mut().reset(at)
            }
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Inner::Native(d) => Pin::new(d).poll(cx),
            Inner::Tokio(s) => s.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        f.debug_struct("Delay").finish()
    }
}
