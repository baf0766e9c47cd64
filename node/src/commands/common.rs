//! What the commands that talk to a running node share: finding the node
//! ([`NodeLocator`]), a small runtime to drive the API client, JSON output
//! and plain padded tables.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use agora_protocol::units::{Timestamp, format_duration};
use anyhow::Context;
use serde::Serialize;

use crate::api::client::{self, Client};

/// Where the node to talk to is: its data dir (whose `node.json` names the
/// API address and token), or the API address and token themselves.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeLocator {
    /// Data dir of the node to talk to; its node.json names the API and
    /// token. Default: $AGORA_DATA_DIR, else the platform's data dir.
    #[arg(long, value_name = "DIR", env = "AGORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's API address (e.g. 127.0.0.1:7070), instead of --data-dir.
    #[arg(long, value_name = "ADDR", requires = "token")]
    pub api: Option<String>,
    /// The API bearer token (from the node's node.json).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

impl NodeLocator {
    /// A client of the node, or a clear error if no node runs there.
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoint = client::locate(self.data_dir.clone(), self.api.clone(), self.token.clone())?;
        Ok(Client::new(endpoint))
    }
}

/// What a command that the records alone can answer reads: the running
/// node, or its data dir's store when no node answers there.
pub enum Source {
    /// A running node.
    Node(Client),
    /// A stopped node's records.
    Records(crate::store::Store),
}

impl NodeLocator {
    /// The running node if one answers; otherwise (unless `--api` named
    /// one) the data dir's records, opened directly — possible only while
    /// no node holds them.
    pub fn client_or_records(&self) -> anyhow::Result<Source> {
        let dir = crate::paths::data_dir(self.data_dir.clone());
        let running = match self.client() {
            Ok(c) => match block_on(async { c.status().await })? {
                Ok(_) => return Ok(Source::Node(c)),
                Err(e) if self.api.is_some() => return Err(e.into()),
                Err(e) => e.to_string(),
            },
            Err(e) if self.api.is_some() => return Err(e),
            Err(e) => e.to_string(),
        };
        let store = crate::store::Store::open(&dir)
            .with_context(|| format!("no node answers ({running}) and its records cannot be opened"))?;
        eprintln!(
            "(no node is running with data dir {}: read from its records)",
            dir.display()
        );
        Ok(Source::Records(store))
    }
}

/// Runs `f` to completion on a small current-thread runtime.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// Writes `text` to stdout as is. A closed stdout (`agora jobs | head`)
/// is not an error: the rest of the output is dropped.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Writes `line` and a newline to stdout (see [`emit`]).
pub fn emitln(line: &str) -> anyhow::Result<()> {
    emit(&format!("{line}\n"))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode the output as JSON")?;
    emitln(&text)
}

/// A table of padded columns: left-aligned text, right-aligned numbers.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns at these positions (numbers).
    pub fn with_right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are blank and extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header, each ending in
    /// a newline and without trailing spaces.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(cell));
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) -> anyhow::Result<()> {
        emit(&self.render())
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A float with `decimals` places, or `-`.
pub fn float_or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A size in the largest binary unit it reaches (`49.7 MiB`, `256 MiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// A measured quantity: two decimals below 10, none above (`0.04`, `5149`).
pub fn number(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// Milliseconds as a compact duration (`850ms`, `2.5s`, `3m20s`).
pub fn millis(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// How long ago `t` was, compactly (`3.2s ago`), relative to the clock.
pub fn ago(t: Timestamp) -> String {
    let now = Timestamp::from_system(SystemTime::now());
    format!("{} ago", format_duration(now.since(t)))
}

/// `t` as an RFC 3339 UTC time to the second.
pub fn utc(t: Timestamp) -> String {
    let st = SystemTime::UNIX_EPOCH + Duration::from_millis(t.0);
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Cuts `s` to at most `max` characters, ending in `…` when cut.
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_aligns_numbers() {
        let mut t = Table::new(&["NAME", "CU", "NOTE"]).with_right(&[1]);
        t.row(vec!["a".into(), "1234".into(), "x".into()]);
        t.row(vec!["longer·name".into(), "5".into()]);
        assert_eq!(
            t.render(),
            "NAME           CU  NOTE\n\
             a            1234  x\n\
             longer·name     5\n"
        );
    }

    #[test]
    fn sizes_use_the_largest_unit() {
        assert_eq!(size(52_133_888), "49.7 MiB");
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12), "12 B");
    }

    #[test]
    fn ellipsize_cuts_long_text_only() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("a long message", 6), "a lon…");
    }
}
