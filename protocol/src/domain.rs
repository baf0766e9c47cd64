//! Hierarchical domains (`eu/de/berlin`) and the gossip topics derived from them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{MAX_DOMAIN_DEPTH, MAX_DOMAIN_LEN, MAX_DOMAIN_SEGMENT};
use crate::wire::{Decode, DecodeError, Encode, Reader, Writer};

/// A path in the domain hierarchy, such as `eu/de/berlin`.
///
/// Segments are 1 to 32 characters of `a-z`, `0-9`, `-` and `_`, separated by
/// `/`, at most 8 deep and 128 bytes long. The empty path is the root, which
/// contains every domain; it prints as `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Domain(String);

/// Why a domain path is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid domain `{path}`: {reason} (domains look like `eu/de/berlin`: up to {MAX_DOMAIN_DEPTH} segments of a-z, 0-9, - and _)"
)]
pub struct DomainError {
    path: String,
    reason: &'static str,
}

impl Domain {
    /// The root of the hierarchy.
    pub fn root() -> Domain {
        Domain(String::new())
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as written on the wire (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Number of segments (the root has depth 0).
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The enclosing domain, or `None` for the root.
    pub fn parent(&self) -> Option<Domain> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => Domain(self.0[..i].to_owned()),
            None => Domain::root(),
        })
    }

    /// This domain and every ancestor up to the root, innermost first.
    pub fn ancestry(&self) -> Vec<Domain> {
        let mut out = vec![self.clone()];
        let mut cur = self.clone();
        while let Some(p) = cur.parent() {
            out.push(p.clone());
            cur = p;
        }
        out
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &Domain) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The child of `ancestor` on the path to `self`, if `self` lies strictly
    /// inside `ancestor` (`eu/de/berlin` under `eu` is `eu/de`).
    pub fn child_under(&self, ancestor: &Domain) -> Option<Domain> {
        if !self.is_within(ancestor) || self == ancestor {
            return None;
        }
        let depth = ancestor.depth() + 1;
        let segs: Vec<&str> = self.segments().take(depth).collect();
        Some(Domain(segs.join("/")))
    }

    /// The gossip topic carrying adverts of nodes in exactly this domain.
    pub fn advert_topic(&self) -> String {
        format!("{}/adverts/{}", crate::TOPIC_PREFIX, self.topic_path())
    }

    /// The gossip topic carrying summaries of this domain's children.
    pub fn summary_topic(&self) -> String {
        format!("{}/summaries/{}", crate::TOPIC_PREFIX, self.topic_path())
    }

    /// The Kademlia key under which nodes in (or below) this domain register
    /// as providers.
    pub fn provider_key(&self) -> Vec<u8> {
        format!("{}/providers/{}", crate::TOPIC_PREFIX, self.topic_path()).into_bytes()
    }

    fn topic_path(&self) -> &str {
        if self.is_root() { "-" } else { &self.0 }
    }
}

impl FromStr for Domain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DomainError {
            path: s.to_owned(),
            reason,
        };
        let t = s.trim().trim_matches('/');
        if t.is_empty() {
            return Ok(Domain::root());
        }
        if t.len() > MAX_DOMAIN_LEN {
            return Err(err("too long"));
        }
        let mut depth = 0;
        for seg in t.split('/') {
            depth += 1;
            if seg.is_empty() {
                return Err(err("empty segment"));
            }
            if seg.len() > MAX_DOMAIN_SEGMENT {
                return Err(err("segment too long"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(err("unexpected character"));
            }
        }
        if depth > MAX_DOMAIN_DEPTH {
            return Err(err("too deep"));
        }
        Ok(Domain(t.to_owned()))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({self})")
    }
}

impl Encode for Domain {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.0.as_bytes())
    }
}

impl Decode for Domain {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let s = r.str(MAX_DOMAIN_LEN, "domain")?;
        let d: Domain = s.parse().map_err(|e| DecodeError::invalid("domain", e))?;
        // The wire form is canonical: no leading or trailing slashes.
        if d.0 != s {
            return Err(DecodeError::invalid("domain", "not in canonical form"));
        }
        Ok(d)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    #[test]
    fn hierarchy() {
        let b = d("eu/de/berlin");
        assert_eq!(b.depth(), 3);
        assert_eq!(b.parent(), Some(d("eu/de")));
        assert_eq!(d("eu").parent(), Some(Domain::root()));
        assert_eq!(Domain::root().parent(), None);
        assert_eq!(
            b.ancestry(),
            vec![d("eu/de/berlin"), d("eu/de"), d("eu"), Domain::root()]
        );
        assert!(b.is_within(&d("eu")) && b.is_within(&Domain::root()) && b.is_within(&b));
        assert!(!d("eu/dex").is_within(&d("eu/de")));
        assert_eq!(b.child_under(&d("eu")), Some(d("eu/de")));
        assert_eq!(b.child_under(&Domain::root()), Some(d("eu")));
        assert_eq!(b.child_under(&b), None);
        assert_eq!(Domain::root().to_string(), "/");
        assert_eq!(d("/").summary_topic(), "agora/1/summaries/-");
        assert_eq!(b.advert_topic(), "agora/1/adverts/eu/de/berlin");
    }

    #[test]
    fn invalid_paths_are_rejected() {
        for bad in [
            "EU",
            "eu//de",
            "eu/de berlin",
            "a/b/c/d/e/f/g/h/i",
            &"x".repeat(33),
        ] {
            assert!(bad.parse::<Domain>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wire_form_is_canonical() {
        let mut w = Writer::new();
        w.bytes(b"/eu/");
        assert!(Domain::from_bytes(&w.into_bytes()).is_err());
        assert_eq!(Domain::from_bytes(&d("eu/de").to_bytes()).unwrap(), d("eu/de"));
    }
}
