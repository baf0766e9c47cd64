//! Checks what the links between domains really do: round trips and a
//! bulk transfer over TCP between two hosts' namespaces, measured by the
//! testnet itself (no `ping` or `iperf` needed).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::forwarder::in_netns;

/// How many round trips a probe times.
const ROUND_TRIPS: usize = 10;
/// The bulk transfer sends for about this long…
const BULK_FOR: Duration = Duration::from_secs(2);
/// …or this much, whichever comes first.
const BULK_MAX: usize = 64 << 20;

/// What one probe measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// The domain probed from.
    pub from: String,
    /// The domain probed.
    pub to: String,
    /// The lowest round-trip time, ms.
    pub rtt_min_ms: f64,
    /// The median round-trip time, ms.
    pub rtt_median_ms: f64,
    /// The highest round-trip time, ms.
    pub rtt_max_ms: f64,
    /// Bulk throughput from `from` to `to`, Mbit/s.
    pub bulk_mbit_s: f64,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}: rtt {:.1} ms (min {:.1}, max {:.1}), bulk {:.2} Mbit/s",
            self.from, self.to, self.rtt_median_ms, self.rtt_min_ms, self.rtt_max_ms, self.bulk_mbit_s
        )
    }
}

/// The server side, in `to_ns`: per connection, a first byte says what to
/// do: `p` echoes bytes one at a time, `b` counts bytes to the end and
/// answers with the count and the µs from first byte to end.
fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'p' => {
            let mut b = [0u8; 1];
            while s.read(&mut b)? == 1 {
                s.write_all(&b)?;
            }
        }
        _ => {
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            let mut first = None;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            let us = first.map_or(0, |t| t.elapsed().as_micros() as u64);
            s.write_all(&total.to_le_bytes())?;
            s.write_all(&us.to_le_bytes())?;
        }
    }
    Ok(())
}

/// Probes from namespace `from_ns` to `to_ip` in `to_ns`.
pub fn probe(from: (&str, &str), to: (&str, &str, &str)) -> anyhow::Result<Probe> {
    let (from_domain, from_ns) = from;
    let (to_domain, to_ns, to_ip) = to;
    let listener = in_netns(to_ns, || Ok(TcpListener::bind("0.0.0.0:0")?))?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..2 {
            let (s, _) = listener.accept()?;
            serve(s)?;
        }
        Ok(())
    });
    let addr: std::net::SocketAddr = format!("{to_ip}:{port}").parse()?;
    let measured = in_netns(from_ns, move || {
        let timeout = Duration::from_secs(30);
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"p")?;
        let mut rtts = Vec::with_capacity(ROUND_TRIPS);
        let mut b = [7u8; 1];
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            rtts.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        drop(s);
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(b"b")?;
        let chunk = vec![0x5a_u8; 64 << 10];
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < BULK_FOR && sent < BULK_MAX {
            s.write_all(&chunk)?;
            sent += chunk.len();
        }
        s.shutdown(Shutdown::Write)?;
        let mut answer = [0u8; 16];
        s.read_exact(&mut answer)?;
        let bytes = u64::from_le_bytes(answer[..8].try_into()?);
        let us = u64::from_le_bytes(answer[8..].try_into()?);
        Ok((rtts, bytes, us))
    })
    .with_context(|| format!("probing {from_domain} -> {to_domain}"))?;
    // Joined only after a whole probe: after a failed one the server may
    // still wait for its second connection.
    let _ = server.join();
    let (mut rtts, bytes, us) = measured;
    rtts.sort_by(f64::total_cmp);
    Ok(Probe {
        from: from_domain.to_owned(),
        to: to_domain.to_owned(),
        rtt_min_ms: rtts[0],
        rtt_median_ms: rtts[rtts.len() / 2],
        rtt_max_ms: rtts[rtts.len() - 1],
        bulk_mbit_s: bytes as f64 * 8.0 / (us.max(1) as f64),
    })
}
