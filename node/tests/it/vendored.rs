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

/// A socket that counts the bytes written through it.
struct Metered<S> {
    inner: S,
    written: Arc<AtomicUsize>,
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.written.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Both ends of a connection over libp2p's memory transport.
async fn memory_pipe() -> (
    libp2p::core::transport::memory::Channel<Vec<u8>>,
    libp2p::core::transport::memory::Channel<Vec<u8>>,
) {
    use libp2p::core::transport::{
        DialOpts, ListenerId, MemoryTransport, PortUse, Transport, TransportEvent,
    };
    let port = 1 + u64::from(std::process::id()) * 1_000 + 7;
    let addr: libp2p::Multiaddr = format!("/memory/{port}").parse().unwrap();
    let mut listener = MemoryTransport::default();
    listener.listen_on(ListenerId::next(), addr.clone()).unwrap();
    let opts = DialOpts {
        role: libp2p::core::Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let dial = MemoryTransport::default().dial(addr, opts).unwrap();
    let accept = async {
        loop {
            let event = futures::future::poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await;
            if let TransportEvent::Incoming { upgrade, .. } = event {
                return upgrade.await.unwrap();
            }
        }
    };
    let (client, server) = futures::join!(dial, accept);
    (client.unwrap(), server)
}

/// Polls a yamux connection every 50 ms, as a node's other traffic would.
async fn keep_polling<S: AsyncRead + AsyncWrite + Unpin>(mut conn: yamux::Connection<S>) {
    loop {
        let closed = futures::future::poll_fn(|cx| {
            Poll::Ready(matches!(
                conn.poll_next_inbound(cx),
                Poll::Ready(None | Some(Err(_)))
            ))
        })
        .await;
        if closed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn yamux_measures_an_idle_connection_once_not_every_ten_seconds() {
    // The vendored yamux measures the round-trip time at once and again
    // only while streams send window updates; as published it pinged every
    // connection every 10 s, whatever it carried.
    let (client, server) = memory_pipe().await;
    let written = Arc::new(AtomicUsize::new(0));
    let client = Metered {
        inner: client,
        written: written.clone(),
    };
    let cfg = yamux::Config::default();
    let client = tokio::spawn(keep_polling(yamux::Connection::new(
        client,
        cfg.clone(),
        yamux::Mode::Client,
    )));
    let server = tokio::spawn(keep_polling(yamux::Connection::new(
        server,
        cfg,
        yamux::Mode::Server,
    )));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = written.load(Ordering::SeqCst);
    // Its ping and its pong to the server's, 12 bytes each.
    assert_eq!(first, 24, "the first measurement, both ways");
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        written.load(Ordering::SeqCst),
        first,
        "nothing more on an idle connection"
    );
    client.abort();
    server.abort();
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

/// Identify and Kademlia, as a node has them.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct ModeSwitch {
    identify: libp2p::identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
}

/// A swarm over libp2p's memory transport, as a node's is in tests.
fn memory_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    use libp2p::{noise, yamux};
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            use libp2p::Transport as _;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn mode_switch_swarm() -> libp2p::Swarm<ModeSwitch> {
    use libp2p::{identify, kad};
    memory_swarm(|key| {
        let peer = key.public().to_peer_id();
        ModeSwitch {
            identify: identify::Behaviour::new(identify::Config::new("/agora-test/1".into(), key.public())),
            kad: kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer)),
        }
    })
}

#[tokio::test]
async fn a_protocol_change_after_a_behaviour_event_still_reaches_the_peer() {
    use futures::StreamExt;
    use libp2p::identify::Event as Identify;
    use libp2p::swarm::SwarmEvent;
    // The vendored libp2p-swarm compares a handler's listen protocols with
    // the last ones only after the handler was told something. Kademlia
    // changes mode by telling its handlers; the change must still be
    // noticed, reported to identify, and pushed to the peer.
    let mut a = mode_switch_swarm();
    let mut b = mode_switch_swarm();
    b.listen_on("/memory/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    a.dial(addr).unwrap();
    let kad = libp2p::StreamProtocol::new("/ipfs/kad/1.0.0");
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    // What b first hears of a's protocols, and whether a was switched.
    let (mut a_identified, mut first, mut switched) = (false, None::<bool>, None);
    let changed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                e = a.select_next_some() => {
                    if let SwarmEvent::Behaviour(ModeSwitchEvent::Identify(Identify::Received { peer_id, .. })) = e {
                        a_identified |= peer_id == b_id;
                    }
                }
                e = b.select_next_some() => {
                    if let SwarmEvent::Behaviour(ModeSwitchEvent::Identify(Identify::Received { peer_id, info, .. })) = e
                        && peer_id == a_id
                    {
                        let listed = info.protocols.contains(&kad);
                        match (first, switched) {
                            (None, _) => first = Some(listed),
                            (Some(_), Some(before)) if listed != before => break info.protocols,
                            _ => {}
                        }
                    }
                }
            }
            // Once both sides have identified each other, a switches to the
            // mode it was not in: a listed Kademlia protocol goes, or comes.
            if let (true, Some(listed), None) = (a_identified, first, switched) {
                let mode = if listed { libp2p::kad::Mode::Client } else { libp2p::kad::Mode::Server };
                a.behaviour_mut().kad.set_mode(Some(mode));
                switched = Some(listed);
            }
        }
    })
    .await
    .expect("the peer heard of the change within 20 s");
    assert!(
        switched.is_some(),
        "nothing changed before the switch: {changed:?}"
    );
}

/// A behaviour whose handlers count how often they are polled and report
/// once, when a timer of their own fires.
struct Counted {
    polls: Arc<AtomicUsize>,
    fired: Vec<libp2p::PeerId>,
}

struct CountedHandler {
    polls: Arc<AtomicUsize>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl libp2p::swarm::ConnectionHandler for CountedHandler {
    type FromBehaviour = std::convert::Infallible;
    type ToBehaviour = ();
    type InboundProtocol = libp2p::core::upgrade::DeniedUpgrade;
    type OutboundProtocol = libp2p::core::upgrade::DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> libp2p::swarm::SubstreamProtocol<Self::InboundProtocol> {
        libp2p::swarm::SubstreamProtocol::new(libp2p::core::upgrade::DeniedUpgrade, ())
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<libp2p::swarm::ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, ()>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if let Some(timer) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            self.timer = None;
            return Poll::Ready(libp2p::swarm::ConnectionHandlerEvent::NotifyBehaviour(()));
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: libp2p::swarm::handler::ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

impl Counted {
    fn handler(&self) -> CountedHandler {
        CountedHandler {
            polls: self.polls.clone(),
            timer: Some(Box::pin(tokio::time::sleep(Duration::from_millis(700)))),
        }
    }
}

impl libp2p::swarm::NetworkBehaviour for Counted {
    type ConnectionHandler = CountedHandler;
    type ToSwarm = libp2p::PeerId;

    fn handle_established_inbound_connection(
        &mut self,
        _: libp2p::swarm::ConnectionId,
        _: libp2p::PeerId,
        _: &libp2p::Multiaddr,
        _: &libp2p::Multiaddr,
    ) -> Result<CountedHandler, libp2p::swarm::ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: libp2p::swarm::ConnectionId,
        _: libp2p::PeerId,
        _: &libp2p::Multiaddr,
        _: libp2p::core::Endpoint,
        _: libp2p::core::transport::PortUse,
    ) -> Result<CountedHandler, libp2p::swarm::ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, _: libp2p::swarm::FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        peer: libp2p::PeerId,
        _: libp2p::swarm::ConnectionId,
        _: libp2p::swarm::THandlerOutEvent<Self>,
    ) {
        self.fired.push(peer);
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<libp2p::swarm::ToSwarm<Self::ToSwarm, libp2p::swarm::THandlerInEvent<Self>>> {
        match self.fired.pop() {
            Some(peer) => Poll::Ready(libp2p::swarm::ToSwarm::GenerateEvent(peer)),
            None => Poll::Pending,
        }
    }
}

/// Pings every 10 ms beside a handler that has nothing to do.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Busy {
    counted: Counted,
    ping: libp2p::ping::Behaviour,
}

fn busy_swarm(polls: Arc<AtomicUsize>) -> libp2p::Swarm<Busy> {
    memory_swarm(|_| Busy {
        counted: Counted {
            polls,
            fired: Vec::new(),
        },
        ping: libp2p::ping::Behaviour::new(
            libp2p::ping::Config::new().with_interval(Duration::from_millis(10)),
        ),
    })
}

#[tokio::test]
async fn a_handler_is_polled_when_woken_not_at_every_frame_of_another() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    // The vendored libp2p-swarm polls each behaviour's handler only when it
    // asked to be (its waker), was told something, or made progress last
    // time. Here a connection carries a ping every 10 ms in each direction
    // while the counted handler only waits for its 700 ms timer.
    let (polls_a, polls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut a = busy_swarm(polls_a.clone());
    let mut b = busy_swarm(polls_b.clone());
    b.listen_on("/memory/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    a.dial(addr).unwrap();
    let (mut pings, mut fired) = (0, 0);
    tokio::time::timeout(Duration::from_secs(20), async {
        while fired < 2 {
            let e = tokio::select! {
                e = a.select_next_some() => e,
                e = b.select_next_some() => e,
            };
            match e {
                SwarmEvent::Behaviour(BusyEvent::Ping(libp2p::ping::Event { result: Ok(_), .. })) => {
                    pings += 1
                }
                SwarmEvent::Behaviour(BusyEvent::Counted(_)) => fired += 1,
                _ => {}
            }
        }
    })
    .await
    .expect("both handlers' timers fired within 20 s");
    // The timers woke their handlers: both fired (above). Meanwhile dozens of
    // pings went by, each several wake-ups of each connection.
    assert!(pings >= 40, "only {pings} pings in 700 ms");
    let polls = polls_a.load(Ordering::Relaxed) + polls_b.load(Ordering::Relaxed);
    assert!(
        polls <= 20,
        "the idle handlers were polled {polls} times beside {pings} pings"
    );
}
