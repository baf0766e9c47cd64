//! Ids as people type them: a job or a peer named by a unique prefix of
//! its id, or by the short form the tables print.
//!
//! Tables print job ids whole but peer ids by their last eight characters
//! (every peer id starts with the same `12D3KooW`), so a job is matched by
//! prefix and a peer by prefix or suffix. A reference that matches nothing,
//! or more than one, is refused naming what it could have been.

use std::fmt;
use std::str::FromStr;

use agora_protocol::{JobId, NodeId};
use anyhow::bail;

use crate::api::client::Client;

/// Fewest characters of a shortened id.
pub const MIN_CHARS: usize = 4;
/// Candidates an ambiguous reference lists.
const LISTED: usize = 5;

/// A job as given on the command line: a whole id or a unique prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef(String);

impl FromStr for JobRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() < MIN_CHARS || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{s}` is not a job id: give its 32 hex digits, or at least the first {MIN_CHARS} (as `agora jobs` lists them)"
            ));
        }
        Ok(JobRef(s))
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<JobId> for JobRef {
    fn from(id: JobId) -> JobRef {
        JobRef(id.to_string())
    }
}

impl JobRef {
    /// The job it names among `known`.
    pub fn among(&self, known: impl IntoIterator<Item = JobId>) -> anyhow::Result<JobId> {
        if let Ok(id) = self.0.parse::<JobId>() {
            return Ok(id);
        }
        let mut matching: Vec<String> = known
            .into_iter()
            .map(|j| j.to_string())
            .filter(|j| j.starts_with(&self.0))
            .collect();
        matching.sort();
        matching.dedup();
        pick(&self.0, "job", matching, "`agora jobs` lists them")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The job it names at the node `client` talks to.
    pub async fn resolve(&self, client: &Client) -> anyhow::Result<JobId> {
        if let Ok(id) = self.0.parse::<JobId>() {
            return Ok(id);
        }
        let jobs = client.jobs().await?;
        self.among(jobs.into_iter().map(|j| j.id))
    }
}

/// A peer as given on the command line: a whole peer id, or a unique prefix
/// or suffix of one (the tables print the last eight characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRef(String);

impl FromStr for PeerRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() < MIN_CHARS || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "`{s}` is not a peer id: give it whole (12D3KooW…), or at least {MIN_CHARS} of its characters as `agora peers` prints them"
            ));
        }
        Ok(PeerRef(s.to_owned()))
    }
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PeerRef {
    /// The peer it names among `known`.
    pub fn among(&self, known: impl IntoIterator<Item = NodeId>) -> anyhow::Result<NodeId> {
        if let Ok(id) = self.0.parse::<NodeId>() {
            return Ok(id);
        }
        let mut matching: Vec<String> = known
            .into_iter()
            .map(|p| p.to_string())
            .filter(|p| p.starts_with(&self.0) || p.ends_with(&self.0))
            .collect();
        matching.sort();
        matching.dedup();
        pick(&self.0, "peer", matching, "`agora peers` lists them")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The peer it names among those the node `client` talks to knows.
    pub async fn resolve(&self, client: &Client) -> anyhow::Result<NodeId> {
        if let Ok(id) = self.0.parse::<NodeId>() {
            return Ok(id);
        }
        let peers = client.peers(None).await?;
        self.among(peers.into_iter().map(|p| p.peer_id))
    }
}

/// The one id in `matching`, or why there is not one.
fn pick(given: &str, what: &str, mut matching: Vec<String>, hint: &str) -> anyhow::Result<String> {
    match matching.len() {
        0 => bail!("no {what} known here matches `{given}` ({hint})"),
        1 => Ok(matching.remove(0)),
        n => {
            let shown: Vec<&str> = matching.iter().take(LISTED).map(String::as_str).collect();
            let more = if n > LISTED {
                format!(" and {} more", n - LISTED)
            } else {
                String::new()
            };
            bail!(
                "`{given}` is ambiguous: {n} {what}s match it ({}{more}); give more of the id",
                shown.join(", ")
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use agora_protocol::Keypair;

    use super::*;

    #[test]
    fn a_unique_prefix_names_a_job_and_an_ambiguous_one_lists_the_candidates() {
        let a = JobId([0xab; 16]);
        let b = JobId([0xac; 16]);
        let known = [a, b];
        assert_eq!("abab".parse::<JobRef>().unwrap().among(known).unwrap(), a);
        assert_eq!("ACAC".parse::<JobRef>().unwrap().among(known).unwrap(), b);
        assert_eq!(
            JobRef::from(a).among([]).unwrap(),
            a,
            "a whole id needs no lookup"
        );
        let e = "abab".parse::<JobRef>().unwrap().among([a, JobId([0xab; 16])]);
        assert!(e.is_ok(), "the same job twice is one job");
        let both = [
            a,
            JobId(*b"\xab\xab\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e"),
        ];
        let e = "abab"
            .parse::<JobRef>()
            .unwrap()
            .among(both)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ambiguous: 2 jobs match it"), "{e}");
        let e = "ffff"
            .parse::<JobRef>()
            .unwrap()
            .among(known)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no job known here matches `ffff`"), "{e}");
        assert!("ab".parse::<JobRef>().is_err(), "too short");
        assert!("zzzz".parse::<JobRef>().is_err(), "not hex");
    }

    #[test]
    fn a_peer_is_named_by_the_short_form_the_tables_print() {
        let p = Keypair::from_secret([1; 32]).node_id();
        let q = Keypair::from_secret([2; 32]).node_id();
        let short = p.short();
        assert_eq!(short.parse::<PeerRef>().unwrap().among([p, q]).unwrap(), p);
        let e = "12D3KooW"
            .parse::<PeerRef>()
            .unwrap()
            .among([p, q])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ambiguous: 2 peers"), "{e}");
        assert!("12D3KooW".parse::<PeerRef>().unwrap().among([q]).is_ok());
        assert!("a/b".parse::<PeerRef>().is_err());
    }
}
