//! Who may use the dashboard: one-time login codes and the browser sessions
//! they open, and which `Host` and `Origin` a request may carry.
//!
//! The bearer token stays out of browsers. `agora dashboard` (holding the
//! token) asks the node for a one-time code and prints a URL carrying it;
//! the browser trades the code for a session cookie (`HttpOnly`,
//! `SameSite=Strict`) and the code is gone. Codes live for minutes and
//! sessions for hours; both are in memory only, so a restart logs every
//! browser out. Everything is bounded: the oldest code or session makes way
//! for a new one.
//!
//! A page on another site must not reach the API through the owner's
//! browser. Two rules stop it, for every request, bearer or cookie:
//! - the `Host` must be the node's own, `localhost` or an IP address with
//!   the API's port: a DNS-rebinding attack reaches the node under the
//!   attacker's host name, which this refuses;
//! - an `Origin`, when present, must be `http://` plus that same host: a
//!   cross-site `fetch` or form post always carries its own.
//!
//! A cookie-authenticated request that changes anything must carry an
//! `Origin` at all (browsers send one with every such request), so a
//! request a browser sent without saying from where cannot use the cookie.
//!
//! The policy is pure: time comes in as an argument and secrets from the
//! caller.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a login code is valid unless asked otherwise.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// The longest a login code may be asked to live.
pub const MAX_CODE_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most codes outstanding at once.
pub const MAX_CODES: usize = 16;
/// Most sessions open at once.
pub const MAX_SESSIONS: usize = 32;

/// Why a login code did not open a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Never issued, already used, or pushed out by newer codes.
    #[error("this login link is not valid (used already, or never issued by this node)")]
    Unknown,
    /// Issued but too old.
    #[error("this login link has expired")]
    Expired,
}

/// The codes and sessions of one node.
#[derive(Debug, Default)]
pub struct Sessions {
    codes: VecDeque<(String, Instant)>,
    sessions: VecDeque<(String, Instant)>,
}

impl Sessions {
    /// Remembers `code` until `now + ttl` (at most [`MAX_CODE_TTL`]).
    pub fn issue_code(&mut self, code: String, now: Instant, ttl: Duration) {
        self.codes.retain(|(_, until)| *until > now);
        if self.codes.len() >= MAX_CODES {
            self.codes.pop_front();
        }
        self.codes.push_back((code, now + ttl.min(MAX_CODE_TTL)));
    }

    /// Uses up `code`: it opens the session `session` if it was issued and
    /// is still valid. A code works once.
    pub fn redeem(&mut self, code: &str, session: String, now: Instant) -> Result<(), LoginError> {
        let at = self
            .codes
            .iter()
            .position(|(c, _)| constant_time_eq(c.as_bytes(), code.as_bytes()))
            .ok_or(LoginError::Unknown)?;
        let (_, until) = self.codes.remove(at).ok_or(LoginError::Unknown)?;
        if until <= now {
            return Err(LoginError::Expired);
        }
        self.sessions.retain(|(_, until)| *until > now);
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.pop_front();
        }
        self.sessions.push_back((session, now + SESSION_TTL));
        Ok(())
    }

    /// Whether `session` is open.
    pub fn is_open(&self, session: &str, now: Instant) -> bool {
        // Compares with every session so the time taken says nothing of
        // which one matched.
        self.sessions.iter().fold(false, |found, (s, until)| {
            found | (constant_time_eq(s.as_bytes(), session.as_bytes()) && *until > now)
        })
    }

    /// Ends `session` (logging out).
    pub fn close(&mut self, session: &str) {
        self.sessions
            .retain(|(s, _)| !constant_time_eq(s.as_bytes(), session.as_bytes()));
    }

    /// Codes outstanding (expired ones included until the next issue).
    pub fn codes(&self) -> usize {
        self.codes.len()
    }
}

/// Compares secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `host` (a `Host` header) names this node's API on `port`:
/// `localhost` or an IP address, with that port.
pub fn host_allowed(host: &str, port: u16) -> bool {
    let (name, p) = match host.rsplit_once(':') {
        // `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`; a bare IPv6
        // address has colons but no brackets and no port.
        Some((name, p)) if !name.contains(':') || name.starts_with('[') => (name, p.parse::<u16>().ok()),
        _ => (host, None),
    };
    if p.unwrap_or(80) != port {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// Whether `origin` (an `Origin` header) is this node's own page, reached
/// at `host` (already checked with [`host_allowed`]).
pub fn origin_allowed(origin: &str, host: &str) -> bool {
    origin.eq_ignore_ascii_case(&format!("http://{host}"))
}

/// The cookie that carries a session for the API on `port`: one name per
/// port, since browsers share cookies between the ports of a host and a
/// testnet runs many nodes on one.
pub fn cookie_name(port: u16) -> String {
    format!("agora_session_{port}")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_code_opens_one_session_and_then_is_gone() {
        let mut s = Sessions::default();
        let now = t0();
        s.issue_code("c1".into(), now, CODE_TTL);
        assert_eq!(s.redeem("c1", "s1".into(), now), Ok(()));
        assert!(s.is_open("s1", now));
        assert_eq!(s.redeem("c1", "s2".into(), now), Err(LoginError::Unknown));
        assert!(!s.is_open("s2", now));
    }

    #[test]
    fn an_expired_code_opens_nothing() {
        let mut s = Sessions::default();
        let now = t0();
        s.issue_code("c1".into(), now, Duration::from_secs(5));
        let later = now + Duration::from_secs(6);
        assert_eq!(s.redeem("c1", "s1".into(), later), Err(LoginError::Expired));
        assert!(!s.is_open("s1", later));
    }

    #[test]
    fn a_code_lives_at_most_the_longest_ttl() {
        let mut s = Sessions::default();
        let now = t0();
        s.issue_code("c1".into(), now, Duration::from_secs(86_400));
        let later = now + MAX_CODE_TTL + Duration::from_secs(1);
        assert_eq!(s.redeem("c1", "s1".into(), later), Err(LoginError::Expired));
    }

    #[test]
    fn sessions_end_after_their_ttl_and_on_logout() {
        let mut s = Sessions::default();
        let now = t0();
        s.issue_code("c1".into(), now, CODE_TTL);
        s.issue_code("c2".into(), now, CODE_TTL);
        s.redeem("c1", "s1".into(), now).unwrap();
        s.redeem("c2", "s2".into(), now).unwrap();
        assert!(!s.is_open("s1", now + SESSION_TTL + Duration::from_secs(1)));
        s.close("s2");
        assert!(!s.is_open("s2", now));
        assert!(s.is_open("s1", now));
    }

    #[test]
    fn codes_and_sessions_are_bounded_oldest_first() {
        let mut s = Sessions::default();
        let now = t0();
        for i in 0..MAX_CODES + 3 {
            s.issue_code(format!("c{i}"), now, CODE_TTL);
        }
        assert_eq!(s.codes(), MAX_CODES);
        assert_eq!(s.redeem("c0", "x".into(), now), Err(LoginError::Unknown));
        for i in 0..MAX_SESSIONS + 1 {
            s.issue_code(format!("d{i}"), now, CODE_TTL);
            s.redeem(&format!("d{i}"), format!("s{i}"), now).unwrap();
        }
        assert!(!s.is_open("s0", now), "the oldest session made way");
        assert!(s.is_open(&format!("s{MAX_SESSIONS}"), now));
    }

    #[test]
    fn only_loopback_names_and_ip_addresses_with_the_port_are_the_nodes_host() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
        ] {
            assert!(host_allowed(ok, 8080), "{ok}");
        }
        for bad in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "evil.example:8080",
            "localhost.evil.example:8080",
            "127.0.0.1.nip.io:8080",
            "[::1]",
            "",
            "::1",
        ] {
            assert!(!host_allowed(bad, 8080), "{bad}");
        }
        assert!(host_allowed("localhost", 80), "port 80 may be left out");
    }

    #[test]
    fn an_origin_must_be_the_page_the_node_serves() {
        assert!(origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!origin_allowed("http://evil.example", "127.0.0.1:8080"));
        assert!(!origin_allowed("null", "127.0.0.1:8080"));
        assert!(!origin_allowed("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!origin_allowed("http://127.0.0.1:8081", "127.0.0.1:8080"));
    }

    #[test]
    fn a_cookie_is_found_by_its_exact_name() {
        let h = "agora_session_1=a; agora_session_12=b;other=c";
        assert_eq!(cookie_value(h, "agora_session_12"), Some("b"));
        assert_eq!(cookie_value(h, "agora_session_1"), Some("a"));
        assert_eq!(cookie_value(h, "other"), Some("c"));
        assert_eq!(cookie_value(h, "agora_session_2"), None);
    }
}
