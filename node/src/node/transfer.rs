//! Fetching content by id from whoever holds it, in verified slices.
//!
//! Content moves in slices of [`SLICE`] bytes, each in bao's slice encoding:
//! the chunks of the range and the blake3 tree hashes that tie them to the
//! content id, so every slice is checked as it arrives, not the whole at the
//! end. The first slice comes from the peer the work came from (or the first
//! holder that answers) and says the content's length; content larger than
//! one slice is then fetched from up to [`MAX_HOLDERS`] holders at once
//! (the DHT names them), written to a file in the store's directory at its
//! offset, so a large input is never held in memory whole. A holder that
//! fails a slice (gone, not holding it, or sending bytes that do not
//! verify) is struck; its slice goes to another holder, and slices already
//! written are kept: a dropped holder costs one slice, not the transfer.
//! (SPEC.md §4.4.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::time::Duration;

use agora_protocol::dataset::content_key;
use agora_protocol::limits::{MAX_INLINE_CONTENT, MAX_SLICED};
use agora_protocol::rpc::{ContentRequest, ContentResponse, Slice};
use agora_protocol::wire::Blob;
use agora_protocol::{ContentId, NodeId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Shared;

/// Bytes per slice.
pub(crate) const SLICE: u64 = 2 * 1024 * 1024;
/// Most holders one fetch uses.
const MAX_HOLDERS: usize = 8;
/// Slices in flight per holder.
const PER_HOLDER: usize = 2;
/// Most slices in flight for one fetch.
const MAX_IN_FLIGHT: usize = 8;
/// Failed slices after which a holder is no longer asked.
const STRIKES: u32 = 2;
/// How long a fetch waits for the DHT to name holders.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Content at least this large is announced in the DHT by the node that
/// fetched it, so the next node that needs it may fetch it from here; small
/// content travels inline with the work and is not worth a provider record.
const ANNOUNCE_FROM: u64 = MAX_INLINE_CONTENT as u64;

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// The content's size.
    pub(crate) size: u64,
    /// Holders that sent at least one slice.
    pub(crate) holders: usize,
    /// Whether it was already here.
    pub(crate) held: bool,
    /// Slices it was fetched in.
    pub(crate) slices: u64,
    /// Slices asked again of another holder after one failed them.
    pub(crate) retried: u64,
}

/// Content from the store, else from `first` (the peer the work came from),
/// else from the holders the DHT names, into the store; large content is
/// then announced.
pub(crate) async fn fetch_into_store(
    sh: &Shared,
    first: Option<NodeId>,
    id: ContentId,
) -> Result<Fetched, String> {
    if let Some(size) = sh.store.content().size(&id) {
        return Ok(Fetched {
            size,
            holders: 0,
            held: true,
            slices: 0,
            retried: 0,
        });
    }
    let mut failures = Vec::new();
    let mut asked: HashSet<NodeId> = HashSet::from([sh.local]);
    let mut candidates: VecDeque<NodeId> = first.into_iter().collect();
    let mut looked_up = false;
    // The first slice: the content's length, and all of small content.
    let (source, size, head) = loop {
        let Some(c) = candidates.pop_front() else {
            if looked_up {
                if failures.is_empty() {
                    failures.push("no peer announces it".into());
                }
                return Err(format!("cannot fetch {id}: {}", failures.join("; ")));
            }
            looked_up = true;
            candidates.extend(holders(sh, &id, &asked, &mut failures).await);
            continue;
        };
        if !asked.insert(c) {
            continue;
        }
        match slice(sh, c, id, 0, None).await {
            Ok((size, bytes)) => break (c, size, bytes),
            Err(e) => failures.push(e),
        }
    };
    // Durable before it is reported fetched: a requester records an output
    // verified once it is here.
    if size <= SLICE {
        sh.store
            .content()
            .put_verified(id, head)
            .await
            .map_err(|e| format!("cannot store {id}: {e}"))?;
        announce_if_large(sh, &id, size).await;
        return Ok(Fetched {
            size,
            holders: 1,
            held: false,
            slices: 1,
            retried: 0,
        });
    }
    let mut sources = vec![source];
    sources.extend(candidates.into_iter().filter(|c| !asked.contains(c)));
    if !looked_up {
        asked.extend(sources.iter().copied());
        sources.extend(holders(sh, &id, &asked, &mut failures).await);
    }
    sources.truncate(MAX_HOLDERS);
    let path = sh.store.content().partial_path(&id);
    let result = fill(sh, &path, id, size, head, sources).await;
    match result {
        Ok((used, retried)) => {
            let store = sh.store.clone();
            let p = path.clone();
            tokio::task::spawn_blocking(move || store.content().adopt(id, &p, size))
                .await
                .map_err(|_| "the store stopped".to_string())?
                .map_err(|e| format!("cannot store {id}: {e}"))?;
            announce_if_large(sh, &id, size).await;
            Ok(Fetched {
                size,
                holders: used,
                held: false,
                slices: size.div_ceil(SLICE),
                retried,
            })
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(format!("cannot fetch {id}: {e}"))
        }
    }
}

/// Content from the store or the network, in memory (for content a task
/// runs on, at most [`agora_protocol::limits::MAX_BLOB`]).
pub(crate) async fn fetch(sh: &Shared, first: Option<NodeId>, id: ContentId) -> Result<Vec<u8>, String> {
    if let Ok(Some(b)) = sh.store.content().get(&id).await {
        return Ok(b);
    }
    fetch_into_store(sh, first, id).await?;
    match sh.store.content().get(&id).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(format!("{id} was fetched but is gone from the store")),
        Err(e) => Err(format!("cannot read {id}: {e}")),
    }
}

/// The holders the DHT names for `id`, those in `skip` left out.
async fn holders(
    sh: &Shared,
    id: &ContentId,
    skip: &HashSet<NodeId>,
    failures: &mut Vec<String>,
) -> Vec<NodeId> {
    match lookup(sh, id).await {
        Ok(found) => {
            let mut v: Vec<NodeId> = found.into_iter().filter(|h| !skip.contains(h)).collect();
            v.sort();
            v.truncate(MAX_HOLDERS);
            v
        }
        Err(e) => {
            failures.push(e);
            Vec::new()
        }
    }
}

/// The nodes other than this one that the DHT names as holding `id`,
/// within [`LOOKUP_TIMEOUT`].
async fn lookup(sh: &Shared, id: &ContentId) -> Result<Vec<NodeId>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, sh.net.get_providers(content_key(id))).await {
        Ok(Ok(found)) => Ok(found.into_iter().filter(|h| *h != sh.local).collect()),
        Ok(Err(e)) => Err(format!("the DHT named no holder: {e}")),
        Err(_) => Err("the DHT lookup timed out".into()),
    }
}

/// Most holder lookups one job starts (its largest inputs first).
const MAX_LOOKUPS: usize = 256;
/// Holder lookups in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// The holders the DHT names for each of `files` (id and size) of at least
/// [`ANNOUNCE_FROM`] bytes, the largest first: what placement needs to put
/// tasks where their inputs are.
pub(crate) async fn find_holders(
    sh: &Shared,
    mut files: Vec<(ContentId, u64)>,
) -> Vec<(ContentId, Vec<NodeId>)> {
    files.retain(|(_, size)| *size >= ANNOUNCE_FROM);
    files.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    files.truncate(MAX_LOOKUPS);
    futures::stream::iter(files)
        .map(|(id, _)| async move { (id, lookup(sh, &id).await.unwrap_or_default()) })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .filter(|(_, h)| std::future::ready(!h.is_empty()))
        .collect()
        .await
}

async fn announce_if_large(sh: &Shared, id: &ContentId, size: u64) {
    if size >= ANNOUNCE_FROM {
        super::work::announce(sh, &[*id]).await;
    }
}

/// Fetches slices 1.. of `id` from `sources` into the file at `path`
/// (slice 0, `head`, is in hand); how many holders sent slices, and how
/// many slices were asked again after a holder failed them.
async fn fill(
    sh: &Shared,
    path: &std::path::Path,
    id: ContentId,
    size: u64,
    head: Vec<u8>,
    sources: Vec<NodeId>,
) -> Result<(usize, u64), String> {
    if size > MAX_SLICED {
        return Err(format!(
            "it is {size} bytes, more than the {MAX_SLICED} a node fetches"
        ));
    }
    let file = crate::paths::create_private_file(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    let file = std::sync::Arc::new(file);
    write_at(&file, 0, head).await?;
    let slices = size.div_ceil(SLICE);
    let mut todo: VecDeque<u64> = (1..slices).collect();
    let mut strikes: HashMap<NodeId, u32> = HashMap::new();
    let mut busy: HashMap<NodeId, usize> = HashMap::new();
    let mut used: HashSet<NodeId> = HashSet::from([sources[0]]);
    let mut last_error = String::new();
    let mut retried = 0;
    let mut in_flight = FuturesUnordered::new();
    let all_written = loop {
        // Hand out slices to the live holders with room, least busy first.
        while in_flight.len() < MAX_IN_FLIGHT
            && let Some(&index) = todo.front()
        {
            let live = sources
                .iter()
                .filter(|h| strikes.get(*h).copied().unwrap_or(0) < STRIKES)
                .filter(|h| busy.get(*h).copied().unwrap_or(0) < PER_HOLDER)
                .min_by_key(|h| busy.get(*h).copied().unwrap_or(0));
            let Some(&holder) = live else { break };
            todo.pop_front();
            *busy.entry(holder).or_default() += 1;
            let sh = sh.clone();
            in_flight.push(async move {
                (
                    holder,
                    index,
                    slice(&sh, holder, id, index * SLICE, Some(size)).await,
                )
            });
        }
        let Some((holder, index, got)) = in_flight.next().await else {
            if todo.is_empty() {
                break (used.len(), retried);
            }
            return Err(format!(
                "every holder failed ({} of {slices} slices missing); last: {last_error}",
                todo.len()
            ));
        };
        if let Some(b) = busy.get_mut(&holder) {
            *b -= 1;
        }
        match got {
            Ok((_, bytes)) => {
                write_at(&file, index * SLICE, bytes).await?;
                used.insert(holder);
            }
            Err(e) => {
                tracing::debug!(content = %id, holder = %holder.short(), slice = index, error = %e, "slice failed; another holder takes it");
                *strikes.entry(holder).or_default() += 1;
                last_error = e;
                retried += 1;
                todo.push_front(index);
            }
        }
    };
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(|_| "the writer stopped".to_string())?
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(all_written)
}

async fn write_at(file: &std::sync::Arc<std::fs::File>, offset: u64, bytes: Vec<u8>) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.write_all_at(&bytes, offset))
        .await
        .map_err(|_| "the writer stopped".to_string())?
        .map_err(|e| format!("cannot write a slice: {e}"))
}

/// One verified slice of `id` from `from`: the content's length and the
/// bytes from `start`. With `size` known, a slice claiming another length
/// is refused.
async fn slice(
    sh: &Shared,
    from: NodeId,
    id: ContentId,
    start: u64,
    size: Option<u64>,
) -> Result<(u64, Vec<u8>), String> {
    let request = ContentRequest {
        id,
        slice: Some(Slice { start, len: SLICE }),
    };
    let who = from.short();
    match sh.net.fetch(from, request).await {
        Ok(ContentResponse::Slice(Blob(encoded))) => {
            tokio::task::spawn_blocking(move || verify(&id, start, size, &encoded))
                .await
                .map_err(|_| "the verifier stopped".to_string())?
                .map_err(|e| format!("{who} sent a slice that {e}"))
        }
        // A whole blob is an answer too, checked whole.
        Ok(ContentResponse::Found(Blob(bytes))) if id.matches(&bytes) => {
            let len = bytes.len() as u64;
            let from = start.min(len) as usize;
            let to = (start + SLICE).min(len) as usize;
            Ok((len, bytes[from..to].to_vec()))
        }
        Ok(ContentResponse::Found(_)) => Err(format!("{who} sent bytes that do not hash to it")),
        Ok(ContentResponse::NotFound) => Err(format!("{who} does not hold it")),
        Err(e) => Err(format!("{who}: {e}")),
    }
}

/// Decodes a bao slice of `id` from `start`: the content's length (its
/// first eight bytes) and the range's bytes, every chunk checked against
/// the id.
fn verify(id: &ContentId, start: u64, size: Option<u64>, encoded: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let header: [u8; 8] = encoded
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("is shorter than its header")?;
    let len = u64::from_le_bytes(header);
    if size.is_some_and(|s| s != len) {
        return Err(format!("claims {len} bytes, not {}", size.unwrap_or(0)));
    }
    if start >= len.max(1) {
        return Err(format!("starts at {start}, past its end at {len}"));
    }
    let want = SLICE.min(len - start);
    let mut out = Vec::with_capacity(want as usize);
    bao::decode::SliceDecoder::new(encoded, &blake3::Hash::from_bytes(id.0), start, SLICE)
        .read_to_end(&mut out)
        .map_err(|e| format!("does not verify: {e}"))?;
    if out.len() as u64 != want {
        return Err(format!("holds {} bytes, not {want}", out.len()));
    }
    Ok((len, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_of(content: &[u8], start: u64) -> Vec<u8> {
        let (outboard, _) = bao::encode::outboard(content);
        let mut out = Vec::new();
        bao::encode::SliceExtractor::new_outboard(
            std::io::Cursor::new(content),
            std::io::Cursor::new(&outboard[..]),
            start,
            SLICE,
        )
        .read_to_end(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn a_slice_verifies_against_the_content_id_and_gives_its_range_and_length() {
        let content: Vec<u8> = (0..(SLICE as usize * 2 + 5000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let id = ContentId::of(&content);
        for start in [0, SLICE, 2 * SLICE] {
            let (len, bytes) = verify(&id, start, None, &slice_of(&content, start)).unwrap();
            assert_eq!(len, content.len() as u64);
            let end = (start + SLICE).min(len) as usize;
            assert_eq!(bytes, content[start as usize..end]);
        }
    }

    #[test]
    fn a_tampered_slice_or_a_false_length_is_refused() {
        let content = vec![3u8; SLICE as usize + 10_000];
        let id = ContentId::of(&content);
        let mut bad = slice_of(&content, SLICE);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = verify(&id, SLICE, None, &bad).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        // Another content's slice does not verify against this id.
        let other = vec![4u8; content.len()];
        assert!(verify(&id, 0, None, &slice_of(&other, 0)).is_err());
        // A slice of the right content, but the length agreed is another.
        let good = slice_of(&content, 0);
        assert!(verify(&id, 0, Some(5), &good).unwrap_err().contains("claims"));
        assert!(verify(&id, 0, None, &good[..4]).is_err());
    }
}
