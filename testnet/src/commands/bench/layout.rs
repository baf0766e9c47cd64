//! How much of `node/agora.order` the `agora` binary under test has.
//!
//! A release `agora` links its functions in the order that list gives
//! (node/build.rs): the code an idle node runs first, so that it is a few
//! page-cache folios instead of a spread over the whole binary. Names the
//! build no longer has are skipped by the linker, so a list gone stale
//! with the code costs idle memory without a word: an idle provider held
//! ~1.3 MB more with a list of which the build had 5,042 names than with
//! one written again for it (8,495 of 10,459). The bench says how much of
//! the list the binary has, so that a stale list shows in its figures.

use std::collections::HashSet;
use std::path::Path;

/// Below this share of the list found in the binary, the bench says to
/// write the list again (`testnet/symbol-order.py`).
pub(super) const STALE_BELOW: f64 = 0.75;

/// The list as the testnet was built with it.
const ORDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../node/agora.order");

/// Names the list holds, and how many of them are functions of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) listed: usize,
    pub(super) present: usize,
}

impl Layout {
    /// The share of the list the binary has.
    pub(super) fn share(&self) -> f64 {
        if self.listed == 0 {
            return f64::NAN;
        }
        self.present as f64 / self.listed as f64
    }
}

/// The layout of `agora` against the source tree's list, read with `nm`
/// (binutils): why not, if either is missing.
pub(super) fn measure(agora: &Path) -> Result<Layout, String> {
    let order = std::fs::read_to_string(ORDER).map_err(|e| format!("cannot read {ORDER}: {e}"))?;
    let nm = std::process::Command::new("nm")
        .arg("--defined-only")
        .arg(agora)
        .output()
        .map_err(|e| format!("cannot run nm (binutils): {e}"))?;
    if !nm.status.success() {
        return Err(format!(
            "nm {} failed: {}",
            agora.display(),
            String::from_utf8_lossy(&nm.stderr).trim()
        ));
    }
    Ok(count(&order, &String::from_utf8_lossy(&nm.stdout)))
}

/// The list's names (one a line) against `nm`'s lines (`address type
/// name`): a name counts if the binary defines a function (`t`, `T`, or
/// weak, `w`/`W`) by it.
fn count(order: &str, nm: &str) -> Layout {
    let functions: HashSet<&str> = nm
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            matches!(kind, "t" | "T" | "w" | "W").then_some(name)
        })
        .collect();
    let listed: Vec<&str> = order.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    Layout {
        listed: listed.len(),
        present: listed.iter().filter(|n| functions.contains(*n)).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_names_the_binary_defines_as_functions_count() {
        let order = "_ZN4main17h1E\n_ZN5gone17h2E\n_ZN4data17h3E\n\n_ZN4weak17h4E\n";
        let nm = "0000000000001000 T _ZN4main17h1E\n\
                  0000000000002000 D _ZN4data17h3E\n\
                  0000000000003000 W _ZN4weak17h4E\n\
                  0000000000004000 t _ZN5other17h5E\n";
        let l = count(order, nm);
        assert_eq!(
            l,
            Layout {
                listed: 4,
                present: 2
            }
        );
        assert_eq!(l.share(), 0.5);
    }

    #[test]
    fn an_empty_list_has_no_share() {
        assert!(count("", "0000000000001000 T main\n").share().is_nan());
    }

    #[test]
    fn the_list_the_testnet_was_built_with_is_readable() {
        let order = std::fs::read_to_string(ORDER).unwrap();
        assert!(order.lines().count() > 1000, "node/agora.order is a real list");
    }
}
