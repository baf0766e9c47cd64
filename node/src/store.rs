//! Durable state: an embedded sled database behind a writer thread, and a
//! content-addressed blob directory.
//!
//! * **Records** (jobs, tasks, agreements, ledger entries, outboxes) live in
//!   one sled tree under typed key prefixes, as JSON. One tree means a
//!   [`Batch`] is atomic: a ledger entry and the voucher id it consumes are
//!   written together or not at all.
//! * **Writes** go through [`Store::write`] to a dedicated thread that takes
//!   every batch waiting in its channel, applies them to each tree as one
//!   atomic write, in order, and then flushes once (group commit). The
//!   group's atomicity comes from a journal entry written first, not from
//!   a sled batch, which writes and syncs sled's log twice more (see
//!   `apply_merged`): a flush is then the only sync of a group. `write`
//!   returns only after the flush: whatever it acknowledged survives a
//!   crash. Reads go straight to sled, whose page cache answers them
//!   without blocking the runtime in practice.
//! * **Blobs** (modules, inputs, outputs) are checked against their id when
//!   read. Small ones (up to [`SMALL_BLOB_MAX`]) live in sled's `blobs` tree
//!   keyed by their 32-byte id, written through the same writer thread, so
//!   that a stream of small tasks shares its flushes instead of creating a
//!   file each (file creation was a quarter of the CPU time of a run of
//!   no-op tasks). Larger ones are files named by their content id under
//!   `content/`, written to a temporary name, synced and renamed. They are
//!   other people's data: directories are 0700 and blobs 0600.
//!
//! The on-disk format carries its version in the directory name
//! (`store-v1`); a node that finds another version refuses to start rather
//! than guess.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use agora_protocol::ContentId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

/// The directory holding the current store format.
pub const STORE_DIR: &str = "store-v1";
/// How soon writes that nobody waits on reach the disk.
pub const LAZY_FLUSH_MS: u64 = 500;
/// The directory holding blobs.
pub const CONTENT_DIR: &str = "content";
/// The largest blob kept in the database rather than in a file of its own.
pub const SMALL_BLOB_MAX: usize = 64 * 1024;
/// The sled tree of small blobs.
const BLOB_TREE: &[u8] = b"blobs";
/// The sled tree holding, while a write group is applied to a tree, the
/// group's operations, keyed by that tree's name (see [`apply_merged`]).
const JOURNAL_TREE: &[u8] = b"journal";
/// The largest journal entry, encoded: a group larger still is applied as
/// one sled batch instead. Well under sled's threshold for storing a value
/// in a file of its own (a quarter of its 512 KiB log segments), so that
/// the entry is one message of the log.
const JOURNAL_MAX: usize = 64 * 1024;
/// The database's page cache: mostly what the node just wrote. A
/// provider's memory grows with its work up to it (its anonymous memory
/// was 10 MB more after 3,000 no-op tasks than after 1,000). A 4 MiB cache
/// cost throughput instead: the bench's 1,324–1,726 tasks/s against
/// 1,685–1,771 at 64 MiB, three alternated runs, presumably as writes into
/// tree nodes sled had evicted read them back first.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
const QUEUE: usize = 1024;

/// Store errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("database: {0}")]
    Db(String),
    /// A record did not (de)serialise.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Filesystem error on a blob.
    #[error("blob {path}: {reason}")]
    Blob {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The writer thread has stopped.
    #[error("the store has shut down")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// Writes applied atomically.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Whether the batch is for the blob tree rather than the records.
    blobs: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }
    /// Puts a record as JSON.
    pub fn put<T: Serialize>(&mut self, key: impl Into<Vec<u8>>, value: &T) -> &mut Self {
        // Serialising our own plain records cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push((key.into(), Some(bytes)));
        self
    }
    /// Puts a record's bytes.
    pub fn put_raw(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) -> &mut Self {
        self.ops.push((key.into(), Some(value)));
        self
    }
    /// Deletes a record.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), None));
        self
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

struct Write {
    batch: Batch,
    /// Flush before answering.
    durable: bool,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The node's store. Cheap to clone; the last clone dropped stops the
/// writer thread after it has applied everything queued.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tx: mpsc::Sender<Write>,
    content: Arc<ContentStore>,
    _writer: Arc<WriterThread>,
}

struct WriterThread {
    handle: Mutex<Option<thread::JoinHandle<()>>>,
    stop: mpsc::Sender<Write>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // An empty batch whose reply is already dropped tells the writer to
        // stop; everything queued before it is applied first.
        let (reply, _) = oneshot::channel();
        let _ = self.stop.try_send(Write {
            batch: Batch::new(),
            durable: false,
            reply,
        });
        if let Ok(mut h) = self.handle.lock()
            && let Some(h) = h.take()
        {
            let _ = h.join();
        }
    }
}

/// A batch queued for writing; await [`Durable::wait`] before
/// acknowledging what it records.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), StoreError>>);

impl Durable {
    /// Waits until the batch is on disk.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        for entry in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("store-v") && name != STORE_DIR {
                return Err(StoreError::Db(format!(
                    "{} holds a store in format {name}, but this node reads {STORE_DIR}; use a matching agora version or a fresh data dir",
                    data_dir.display()
                )));
            }
        }
        // Private before sled writes anything into it.
        crate::paths::create_private_dir(&data_dir.join(STORE_DIR)).map_err(|e| {
            StoreError::Db(format!(
                "cannot create {}: {e}",
                data_dir.join(STORE_DIR).display()
            ))
        })?;
        let db = sled::Config::new()
            .path(data_dir.join(STORE_DIR))
            .cache_capacity(CACHE_BYTES)
            // Lazy writes reach the disk within this; durable ones at once.
            .flush_every_ms(Some(LAZY_FLUSH_MS))
            .open()?;
        let blobs = db.open_tree(BLOB_TREE)?;
        let journal = db.open_tree(JOURNAL_TREE)?;
        let replayed = replay_journal(&db, &journal, &[&db, &blobs])?;
        if replayed > 0 {
            tracing::info!(
                groups = replayed,
                "completed the writes a stop had interrupted, from the store's journal"
            );
        }
        let (tx, rx) = mpsc::channel::<Write>(QUEUE);
        let content = Arc::new(ContentStore::open(
            &data_dir.join(CONTENT_DIR),
            blobs.clone(),
            tx.clone(),
        )?);
        let writer_db = db.clone();
        let handle = thread::Builder::new()
            .name("agora-store".into())
            .spawn(move || writer(writer_db, blobs, journal, rx))
            .map_err(|e| StoreError::Db(format!("cannot start the store thread: {e}")))?;
        let writer = Arc::new(WriterThread {
            handle: Mutex::new(Some(handle)),
            stop: tx.clone(),
        });
        Ok(Store {
            db,
            tx,
            content,
            _writer: writer,
        })
    }

    /// Applies `batch` atomically and durably.
    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.enqueue(batch, true).await?.wait().await
    }

    /// Queues `batch` (waiting for room in the bounded queue) and returns
    /// a handle to await it: with `durable`, until it is flushed to disk;
    /// otherwise until it is applied (it reaches the disk within
    /// [`LAZY_FLUSH_MS`], or with the next durable batch). Batches queued by
    /// one task are applied in the order they were queued.
    pub async fn enqueue(&self, batch: Batch, durable: bool) -> Result<Durable, StoreError> {
        enqueue(&self.tx, batch, durable).await
    }

    /// Reads a record.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: e.to_string(),
                }),
        }
    }

    /// A record's bytes.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    /// Every record's bytes under a key prefix, in key order (keys as text:
    /// every key is).
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// At most `limit` records' bytes under a key prefix, from key `from`
    /// on, in key order: a range read, whatever precedes `from` untouched.
    pub fn scan_raw_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let start = if from > prefix { from } else { prefix };
        for kv in self.db.range(start..).take(limit) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// The last `limit` records' bytes under a key prefix, highest key first.
    pub fn scan_raw_rev(&self, prefix: &[u8], limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix).rev().take(limit) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Whether a record exists.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(key)?)
    }

    /// Every record under a key prefix, in key order.
    pub fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            let t = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?;
            out.push((k.to_vec(), t));
        }
        Ok(out)
    }

    /// The last record under a prefix (highest key).
    pub fn last<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, T)>, StoreError> {
        match self.db.scan_prefix(prefix).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let t = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?;
                Ok(Some((k.to_vec(), t)))
            }
        }
    }

    /// Records under a prefix, newest (highest key) first, at most `limit`.
    pub fn scan_rev<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix).rev().take(limit) {
            let (k, v) = kv?;
            let t = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?;
            out.push((k.to_vec(), t));
        }
        Ok(out)
    }

    /// The blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// A unique, increasing id (survives restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Flushes everything (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

async fn enqueue(tx: &mpsc::Sender<Write>, batch: Batch, durable: bool) -> Result<Durable, StoreError> {
    let (reply, rx) = oneshot::channel();
    if batch.is_empty() {
        let _ = reply.send(Ok(()));
        return Ok(Durable(rx));
    }
    tx.send(Write {
        batch,
        durable,
        reply,
    })
    .await
    .map_err(|_| StoreError::Closed)?;
    Ok(Durable(rx))
}

fn writer(db: sled::Db, blobs: sled::Tree, journal: sled::Tree, mut rx: mpsc::Receiver<Write>) {
    while let Some(first) = rx.blocking_recv() {
        if first.batch.is_empty() && first.reply.is_closed() {
            // The stop signal: everything before it has been applied.
            break;
        }
        let mut pending = vec![first];
        while pending.len() < 256 {
            match rx.try_recv() {
                Ok(w) => pending.push(w),
                Err(_) => break,
            }
        }
        // The group goes to each tree as one atomic write.
        let (records, small): (Vec<&mut Write>, Vec<&mut Write>) =
            pending.iter_mut().partition(|w| !w.batch.blobs);
        let records_result = apply_merged(&db, &journal, records);
        let blobs_result = apply_merged(&blobs, &journal, small);
        // One flush for the whole group (sled's flush covers every tree),
        // and none if nobody waits for one.
        let flushed = if pending.iter().any(|w| w.durable) {
            db.flush().map(|_| ()).map_err(StoreError::from)
        } else {
            Ok(())
        };
        for w in pending {
            let applied = if w.batch.blobs {
                &blobs_result
            } else {
                &records_result
            };
            let r = applied.clone().and_then(|_| flushed.clone());
            let _ = w.reply.send(r);
        }
    }
}

/// Applies the writes' batches to `tree` as one atomic write, in order (a
/// later write of a key wins); a single operation is atomic alone.
///
/// sled makes a batch atomic with a manifest in its log, and writes and
/// syncs its log buffer twice for each: two synced writes per group on
/// top of the flush, most of a node's disk syncs. Instead, the group's
/// operations are first written as one value in the journal tree (a
/// single insert, atomic), then applied without a manifest, then the
/// entry is removed. sled recovers a prefix of its log, so after a crash
/// either no operation of the group is there, or its journal entry is, and
/// [`replay_journal`] applies the whole group again at open; the entry is
/// gone only once every operation is in. Readers see the group all at once
/// either way. A group whose entry would pass [`JOURNAL_MAX`] goes as a
/// sled batch, as before.
fn apply_merged(tree: &sled::Tree, journal: &sled::Tree, writes: Vec<&mut Write>) -> Result<(), StoreError> {
    let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
        .into_iter()
        .flat_map(|w| std::mem::take(&mut w.batch.ops))
        .collect();
    if let [(k, v)] = &ops[..] {
        return match v {
            Some(v) => tree.insert(k, v.as_slice()).map(|_| ()),
            None => tree.remove(k).map(|_| ()),
        }
        .map_err(StoreError::from);
    }
    if ops.is_empty() {
        return Ok(());
    }
    let entry = (journal::encoded_len(&ops) <= JOURNAL_MAX).then(|| journal::encode(&ops));
    let b = sled_batch(ops);
    match entry {
        Some(entry) => {
            journal.insert(tree.name(), entry)?;
            tree.apply_batch_unlogged(b)?;
            journal.remove(tree.name())?;
        }
        None => tree.apply_batch(b)?,
    }
    Ok(())
}

/// Applies again, as one sled batch, each group a stop interrupted (an
/// entry left in the journal), then removes the entries and flushes.
/// Returns how many groups it completed.
fn replay_journal(db: &sled::Db, journal: &sled::Tree, trees: &[&sled::Tree]) -> Result<usize, StoreError> {
    let mut replayed = 0;
    for tree in trees {
        let Some(entry) = journal.get(tree.name())? else {
            continue;
        };
        let ops = journal::decode(&entry).map_err(|reason| StoreError::Corrupt {
            key: format!("journal/{}", String::from_utf8_lossy(&tree.name())),
            reason,
        })?;
        tree.apply_batch(sled_batch(ops))?;
        journal.remove(tree.name())?;
        replayed += 1;
    }
    if replayed > 0 {
        db.flush()?;
    }
    Ok(replayed)
}

fn sled_batch(ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in ops {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    b
}

/// The journal entry's format: the operations in order, each a key and,
/// for a put, a value, every length a little-endian `u32`:
/// `count, (key_len, key, 1, value_len, value | key_len, key, 0)*`.
mod journal {
    type Op = (Vec<u8>, Option<Vec<u8>>);

    pub(super) fn encoded_len(ops: &[Op]) -> usize {
        4 + ops
            .iter()
            .map(|(k, v)| 4 + k.len() + 1 + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum::<usize>()
    }

    pub(super) fn encode(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len(ops));
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&len(ops.len()));
        for (k, v) in ops {
            out.extend_from_slice(&len(k.len()));
            out.extend_from_slice(k);
            match v {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&len(v.len()));
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        out
    }

    pub(super) fn decode(mut bytes: &[u8]) -> Result<Vec<Op>, String> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if bytes.len() < n {
                return Err(format!("truncated: {n} bytes wanted, {} left", bytes.len()));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        fn len(bytes: &mut &[u8]) -> Result<usize, String> {
            let b = take(bytes, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let count = len(&mut bytes)?;
        // Each operation takes at least 5 bytes: a count beyond that is
        // corrupt, and allocates nothing.
        if count > bytes.len() / 5 {
            return Err(format!("{count} operations in {} bytes", bytes.len()));
        }
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            let n = len(&mut bytes)?;
            let key = take(&mut bytes, n)?.to_vec();
            let value = match take(&mut bytes, 1)?[0] {
                0 => None,
                1 => {
                    let n = len(&mut bytes)?;
                    Some(take(&mut bytes, n)?.to_vec())
                }
                t => return Err(format!("unknown operation {t}")),
            };
            ops.push((key, value));
        }
        if !bytes.is_empty() {
            return Err(format!("{} bytes after the last operation", bytes.len()));
        }
        Ok(ops)
    }
}

/// Content-addressed blobs on disk: small ones in the database, the others
/// in files.
pub struct ContentStore {
    dir: PathBuf,
    /// Small blobs, by id.
    blobs: sled::Tree,
    /// The writer thread, which writes small blobs.
    tx: mpsc::Sender<Write>,
    /// Every blob held: its size and when it was last stored or read.
    known: Mutex<HashMap<ContentId, Usage>>,
    /// The sum of the sizes in `known`, kept as blobs come and go.
    held: std::sync::atomic::AtomicU64,
    /// Recently stored or read small blobs, so that a stream of small
    /// tasks does not read the same inputs from disk again and again.
    hot: Mutex<HotBlobs>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("dir", &self.dir)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

/// A blob's size, last use (ms since the epoch) and where it is.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// The blob's size.
    size: u64,
    /// The bytes of its bao tree on disk, once built (an owner's disk cap
    /// counts them with the blob's).
    tree: u64,
    used: u64,
    /// In the blob tree rather than a file.
    small: bool,
}

impl Usage {
    /// Its bytes on disk: the blob and its tree.
    fn disk(&self) -> u64 {
        self.size + self.tree
    }
}

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Blobs removed.
    pub removed: usize,
    /// Bytes they held.
    pub freed: u64,
    /// Bytes held after it.
    pub held: u64,
    /// Whether what must be kept alone exceeds the cap.
    pub full: bool,
}

fn now_ms() -> u64 {
    agora_protocol::units::Timestamp::from_system(std::time::SystemTime::now()).0
}

/// Blobs up to this size are kept in memory after use.
const HOT_BLOB_MAX: usize = 256 * 1024;
/// Most bytes kept in memory.
const HOT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// What an entry costs besides its bytes (its map and queue slots, the
/// `Arc` and `Vec` headers, the allocator's rounding): counted against
/// [`HOT_BYTES_MAX`], so that many tiny blobs (a no-op job's inputs and
/// outputs are a few bytes each) cannot hold unbounded memory.
const HOT_ENTRY_COST: usize = 160;

/// A byte-bounded cache of verified blobs, oldest evicted first.
#[derive(Debug, Default)]
struct HotBlobs {
    map: HashMap<ContentId, Arc<Vec<u8>>>,
    order: VecDeque<ContentId>,
    bytes: usize,
}

impl HotBlobs {
    fn get(&self, id: &ContentId) -> Option<Arc<Vec<u8>>> {
        self.map.get(id).cloned()
    }

    fn insert(&mut self, id: ContentId, bytes: Arc<Vec<u8>>) {
        if bytes.len() > HOT_BLOB_MAX || self.map.contains_key(&id) {
            return;
        }
        let cost = bytes.len() + HOT_ENTRY_COST;
        while self.bytes + cost > HOT_BYTES_MAX {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(b) = self.map.remove(&old) {
                self.bytes -= b.len() + HOT_ENTRY_COST;
            }
        }
        self.bytes += cost;
        self.order.push_back(id);
        self.map.insert(id, bytes);
    }

    fn remove(&mut self, id: &ContentId) {
        if let Some(b) = self.map.remove(id) {
            self.bytes -= b.len() + HOT_ENTRY_COST;
            self.order.retain(|x| x != id);
        }
    }
}

impl ContentStore {
    fn open(dir: &Path, blobs: sled::Tree, tx: mpsc::Sender<Write>) -> Result<ContentStore, StoreError> {
        crate::paths::create_private_dir(dir).map_err(|e| blob_err(dir, e))?;
        let mut known = HashMap::new();
        // The blob tree keeps no times: a restart counts as a use.
        let now = now_ms();
        for kv in blobs.iter() {
            let (k, v) = kv?;
            if let Ok(id) = <[u8; 32]>::try_from(k.as_ref()) {
                known.insert(
                    ContentId(id),
                    Usage {
                        size: v.len() as u64,
                        tree: 0,
                        used: now,
                        small: true,
                    },
                );
            }
        }
        for entry in std::fs::read_dir(dir).map_err(|e| blob_err(dir, e))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            // A blob's tree outlives it only if the blob went while no
            // node had the store open.
            if let Some(blob) = name.strip_suffix(".obao")
                && !dir.join(blob).exists()
            {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Ok(id) = name.parse::<ContentId>() {
                let meta = entry.metadata().ok();
                let used = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .map_or(0, |t| agora_protocol::units::Timestamp::from_system(t).0);
                let tree = std::fs::metadata(dir.join(format!("{id}.obao"))).map_or(0, |m| m.len());
                let size = meta.map_or(0, |m| m.len());
                known.insert(
                    id,
                    Usage {
                        size,
                        tree,
                        used,
                        small: false,
                    },
                );
            }
        }
        let held = known.values().map(Usage::disk).sum();
        Ok(ContentStore {
            dir: dir.to_owned(),
            blobs,
            tx,
            known: Mutex::new(known),
            held: std::sync::atomic::AtomicU64::new(held),
            hot: Mutex::new(HotBlobs::default()),
        })
    }

    fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Whether the blob is present.
    pub fn has(&self, id: &ContentId) -> bool {
        self.known.lock().map(|k| k.contains_key(id)).unwrap_or(false)
    }

    /// Stores bytes durably and returns their id.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<ContentId, StoreError> {
        let id = ContentId::of(&bytes);
        self.put_verified(id, bytes).await?;
        Ok(id)
    }

    /// Stores bytes already known to hash to `id`.
    pub async fn put_verified(&self, id: ContentId, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.put_inner(id, bytes, true).await
    }

    /// Stores bytes known to hash to `id` without waiting for the disk: for
    /// content that can be had again (a provider's copy of an input, an
    /// output it can recompute), or, when small, content that nothing
    /// counts on before a later durable batch (the flush of a small blob is
    /// that batch's: sled's flush covers every tree). A copy left torn by a
    /// crash fails its hash check on read and counts as missing.
    pub async fn put_lazy(&self, id: ContentId, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.put_inner(id, bytes, false).await
    }

    async fn put_inner(&self, id: ContentId, bytes: Vec<u8>, sync: bool) -> Result<(), StoreError> {
        if self.has(&id) {
            return Ok(());
        }
        let bytes_len = bytes.len() as u64;
        let hot = (bytes.len() <= HOT_BLOB_MAX).then(|| Arc::new(bytes.clone()));
        let small = bytes.len() <= SMALL_BLOB_MAX;
        if small {
            // Joins the writer's group commit; a lazy one is applied (and
            // readable) when this returns, and on disk within
            // `LAZY_FLUSH_MS`.
            let mut b = Batch::new();
            b.blobs = true;
            b.put_raw(id.0.to_vec(), bytes);
            enqueue(&self.tx, b, sync).await?.wait().await?;
        } else {
            let path = self.path(&id);
            let tmp = self.dir.join(format!("{id}.{}.tmp", rand::random::<u32>()));
            tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                use std::io::Write;
                let mut f = crate::paths::create_private_file(&tmp).map_err(|e| blob_err(&tmp, e))?;
                f.write_all(&bytes).map_err(|e| blob_err(&tmp, e))?;
                if sync {
                    f.sync_data().map_err(|e| blob_err(&tmp, e))?;
                }
                std::fs::rename(&tmp, &path).map_err(|e| blob_err(&path, e))?;
                Ok(())
            })
            .await
            .map_err(|_| StoreError::Closed)??;
        }
        if let Ok(mut k) = self.known.lock() {
            let old = k.insert(
                id,
                Usage {
                    size: bytes_len,
                    tree: 0,
                    used: now_ms(),
                    small,
                },
            );
            let old = old.map_or(0, |u| u.disk());
            self.held
                .fetch_add(bytes_len, std::sync::atomic::Ordering::Relaxed);
            self.held.fetch_sub(old, std::sync::atomic::Ordering::Relaxed);
        }
        if let (Some(b), Ok(mut h)) = (hot, self.hot.lock()) {
            h.insert(id, b);
        }
        Ok(())
    }

    /// Reads a blob, checking it against its id. A blob that no longer
    /// matches (disk corruption) is removed and reported missing.
    pub async fn get(&self, id: &ContentId) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.has(id) {
            return Ok(None);
        }
        let small = self.touch(id);
        if let Some(b) = self.hot.lock().ok().and_then(|h| h.get(id)) {
            return Ok(Some(b.as_ref().clone()));
        }
        let path = self.path(id);
        let read = if small {
            self.blobs.get(id.0)?.map(|v| v.to_vec())
        } else {
            match tokio::fs::read(&path).await {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(blob_err(&path, e)),
            }
        };
        let Some(bytes) = read else {
            self.forget(id);
            return Ok(None);
        };
        if !id.matches(&bytes) {
            tracing::warn!(%id, "stored blob is corrupt; discarding it");
            if small {
                let _ = self.blobs.remove(id.0);
            } else {
                let _ = tokio::fs::remove_file(&path).await;
            }
            self.forget(id);
            return Ok(None);
        }
        if bytes.len() <= HOT_BLOB_MAX
            && let Ok(mut h) = self.hot.lock()
        {
            h.insert(*id, Arc::new(bytes.clone()));
        }
        Ok(Some(bytes))
    }

    /// Size of a stored blob.
    pub fn size(&self, id: &ContentId) -> Option<u64> {
        self.known.lock().ok()?.get(id).map(|u| u.size)
    }

    /// Marks a blob used now; whether it is a small one.
    fn touch(&self, id: &ContentId) -> bool {
        if let Ok(mut k) = self.known.lock()
            && let Some(u) = k.get_mut(id)
        {
            u.used = now_ms();
            return u.small;
        }
        false
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes blobs nothing needs: every blob not in `keep` unused for
    /// `retention`, then, while more than `cap` bytes are held, the least
    /// recently used blobs not in `keep`. Blocking: run it off the runtime.
    pub fn collect(&self, keep: &HashSet<ContentId>, retention: std::time::Duration, cap: u64) -> Collected {
        let now = now_ms();
        let mut candidates: Vec<(ContentId, Usage)> = match self.known.lock() {
            Ok(k) => k
                .iter()
                .filter(|(id, _)| !keep.contains(id))
                .map(|(i, u)| (*i, *u))
                .collect(),
            Err(_) => return Collected::default(),
        };
        candidates.sort_by_key(|(_, u)| u.used);
        let mut held = self.held();
        let mut out = Collected::default();
        let retention = retention.as_millis() as u64;
        for (id, u) in candidates {
            let stale = now.saturating_sub(u.used) >= retention;
            if !stale && held <= cap {
                break;
            }
            let removed = if u.small {
                // Reaches the disk with the next flush; a crash before it
                // only brings back content that is collected again.
                self.blobs.remove(id.0).map(drop).map_err(|e| e.to_string())
            } else {
                match std::fs::remove_file(self.path(&id)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                }
            };
            if let Err(e) = removed {
                tracing::warn!(content = %id, error = %e, "cannot remove a blob");
                continue;
            }
            self.forget(&id);
            held = held.saturating_sub(u.disk());
            out.removed += 1;
            out.freed += u.disk();
        }
        out.held = held;
        out.full = held > cap;
        out
    }

    /// The verifiable slice (bao's slice encoding) of a stored blob's
    /// `len` bytes from `start`, or `None` if the blob is not held, is
    /// corrupt, or ends before `start`. A large blob's tree is kept beside
    /// it (`ID.obao`, about 6 % of its size), built on the first request, so
    /// that a slice is read from disk without hashing or holding the rest.
    /// Blocking: run it off the runtime.
    pub fn slice(&self, id: &ContentId, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        use std::io::Read;
        let Some(u) = self.known.lock().ok().and_then(|k| k.get(id).copied()) else {
            return Ok(None);
        };
        if start >= u.size {
            return Ok(None);
        }
        self.touch(id);
        let hash = blake3::Hash::from_bytes(id.0);
        let mut out = Vec::new();
        if u.small {
            let Some(bytes) = self.blobs.get(id.0)? else {
                self.forget(id);
                return Ok(None);
            };
            let (outboard, root) = bao::encode::outboard(&bytes);
            if root != hash {
                tracing::warn!(%id, "stored blob is corrupt; discarding it");
                let _ = self.blobs.remove(id.0);
                self.forget(id);
                return Ok(None);
            }
            bao::encode::SliceExtractor::new_outboard(
                std::io::Cursor::new(&bytes[..]),
                std::io::Cursor::new(&outboard[..]),
                start,
                len,
            )
            .read_to_end(&mut out)
            .map_err(|e| blob_err(&self.path(id), e))?;
            return Ok(Some(out));
        }
        let path = self.path(id);
        let tree = self.dir.join(format!("{id}.obao"));
        if !tree.exists() && !self.build_tree(id, &path, &tree)? {
            return Ok(None);
        }
        let (content, outboard) = match (std::fs::File::open(&path), std::fs::File::open(&tree)) {
            (Ok(c), Ok(o)) => (c, o),
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(id);
                return Ok(None);
            }
            (Err(e), _) => return Err(blob_err(&path, e)),
            (_, Err(e)) => return Err(blob_err(&tree, e)),
        };
        bao::encode::SliceExtractor::new_outboard(
            std::io::BufReader::new(content),
            std::io::BufReader::new(outboard),
            start,
            len,
        )
        .read_to_end(&mut out)
        .map_err(|e| blob_err(&path, e))?;
        Ok(Some(out))
    }

    /// Hashes a large blob into its tree file; `false` (and the blob gone)
    /// if it no longer hashes to its id.
    fn build_tree(&self, id: &ContentId, path: &Path, tree: &Path) -> Result<bool, StoreError> {
        let tmp = self.dir.join(format!("{id}.{}.obao.tmp", rand::random::<u32>()));
        let mut content = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(id);
                return Ok(false);
            }
            Err(e) => return Err(blob_err(path, e)),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| blob_err(&tmp, e))?;
        let mut encoder = bao::encode::Encoder::new_outboard(file);
        let root = std::io::copy(&mut content, &mut encoder)
            .and_then(|_| encoder.finalize())
            .map_err(|e| blob_err(&tmp, e));
        let root = match root {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if root != blake3::Hash::from_bytes(id.0) {
            tracing::warn!(%id, "stored blob is corrupt; discarding it");
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(path);
            self.forget(id);
            return Ok(false);
        }
        std::fs::rename(&tmp, tree).map_err(|e| blob_err(tree, e))?;
        // The tree takes disk too: it counts with its blob.
        let len = std::fs::metadata(tree).map_or(0, |m| m.len());
        if let Ok(mut k) = self.known.lock()
            && let Some(u) = k.get_mut(id)
        {
            self.held.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            self.held.fetch_sub(u.tree, std::sync::atomic::Ordering::Relaxed);
            u.tree = len;
        }
        Ok(true)
    }

    /// A path in the store's directory for a file being filled (removed at
    /// the next open if it is left there).
    pub fn partial_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{id}.{}.tmp", rand::random::<u32>()))
    }

    /// Takes a file already verified to hold `id`'s `size` bytes (written at
    /// [`ContentStore::partial_path`]) into the store.
    pub fn adopt(&self, id: ContentId, file: &Path, size: u64) -> Result<(), StoreError> {
        if self.has(&id) {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
        let path = self.path(&id);
        std::fs::rename(file, &path).map_err(|e| blob_err(&path, e))?;
        if let Ok(mut k) = self.known.lock() {
            k.insert(
                id,
                Usage {
                    size,
                    tree: 0,
                    used: now_ms(),
                    small: false,
                },
            );
            self.held.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn forget(&self, id: &ContentId) {
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.obao")));
        if let Ok(mut k) = self.known.lock()
            && let Some(u) = k.remove(id)
        {
            self.held
                .fetch_sub(u.disk(), std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut h) = self.hot.lock() {
            h.remove(id);
        }
    }
}

fn blob_err(p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Blob {
        path: p.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("agora-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Opens the store again once the last one has let go of sled's lock
    /// (a lazy write may leave sled's own I/O thread holding it a moment
    /// after the store is dropped; a restarted node is a new process).
    fn reopen(dir: &Path) -> Store {
        retry_lock(|| Store::open(dir))
    }

    fn retry_lock<T>(open: impl Fn() -> Result<T, StoreError>) -> T {
        for _ in 0..200 {
            match open() {
                Err(StoreError::Db(e)) if e.contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r.expect("the store opens"),
            }
        }
        panic!("sled's lock was still held after 2 s");
    }

    #[test]
    fn hot_blobs_stay_within_their_byte_bound() {
        let mut h = HotBlobs::default();
        let blob = |i: u32| {
            let b = vec![(i % 251) as u8; HOT_BLOB_MAX];
            (ContentId::of(&[&i.to_le_bytes()[..], &b].concat()), Arc::new(b))
        };
        let first = blob(0).0;
        for i in 0..200 {
            let (id, b) = blob(i);
            h.insert(id, b);
            assert!(h.bytes <= HOT_BYTES_MAX);
            assert_eq!(
                h.bytes,
                h.map.values().map(|b| b.len() + HOT_ENTRY_COST).sum::<usize>()
            );
        }
        assert_eq!(h.map.len(), HOT_BYTES_MAX / (HOT_BLOB_MAX + HOT_ENTRY_COST));
        // Oldest out first; the newest is there.
        assert!(h.get(&first).is_none());
        assert!(h.get(&blob(199).0).is_some());
        // Too large to keep.
        let big = Arc::new(vec![0u8; HOT_BLOB_MAX + 1]);
        h.insert(ContentId::of(&big), big.clone());
        assert!(h.get(&ContentId::of(&big)).is_none());
        h.remove(&blob(199).0);
        assert!(h.get(&blob(199).0).is_none());
        assert_eq!(
            h.bytes,
            h.map.values().map(|b| b.len() + HOT_ENTRY_COST).sum::<usize>()
        );
    }

    #[test]
    fn tiny_hot_blobs_are_bounded_in_number_by_what_each_entry_costs() {
        let mut h = HotBlobs::default();
        let n = HOT_BYTES_MAX / HOT_ENTRY_COST * 2;
        for i in 0..n as u64 {
            let b = Arc::new(i.to_le_bytes().to_vec());
            h.insert(ContentId::of(&b), b);
            assert!(h.bytes <= HOT_BYTES_MAX);
        }
        assert_eq!(h.map.len(), h.order.len());
        assert!(
            h.map.len() <= HOT_BYTES_MAX / (8 + HOT_ENTRY_COST),
            "{} entries of 8 bytes kept",
            h.map.len()
        );
        assert!(h.map.len() >= HOT_BYTES_MAX / (8 + HOT_ENTRY_COST) - 1);
    }

    #[tokio::test]
    async fn records_survive_reopen_and_batches_are_atomic() {
        let dir = tempdir();
        {
            let s = reopen(&dir);
            let mut b = Batch::new();
            b.put("a/1", &1u32).put("a/2", &2u32).put("b/1", &"x");
            s.write(b).await.unwrap();
            let mut b = Batch::new();
            b.delete("a/1");
            s.write(b).await.unwrap();
        }
        let s = reopen(&dir);
        let a: Vec<(Vec<u8>, u32)> = s.scan(b"a/").unwrap();
        assert_eq!(a, vec![(b"a/2".to_vec(), 2)]);
        assert_eq!(s.get::<String>(b"b/1").unwrap().as_deref(), Some("x"));
        assert!(s.get::<u32>(b"b/1").is_err(), "wrong type is a clear error");
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_group_of_batches_applies_as_one_in_order_the_later_write_of_a_key_winning() {
        let dir = tempdir();
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let write = |ops: &[(&str, Option<&str>)]| {
            let mut batch = Batch::new();
            for (k, v) in ops {
                match v {
                    Some(v) => batch.put(*k, v),
                    None => batch.delete(*k),
                };
            }
            let (reply, _) = oneshot::channel();
            Write {
                batch,
                durable: false,
                reply,
            }
        };
        db.insert("gone", "old").unwrap();
        let mut group = [
            write(&[("k", Some("1")), ("a", Some("a"))]),
            write(&[("k", None), ("gone", None)]),
            write(&[("k", Some("3")), ("b", Some("b"))]),
            write(&[("a", None)]),
        ];
        let journal = db.open_tree(JOURNAL_TREE).unwrap();
        apply_merged(&db, &journal, group.iter_mut().collect()).unwrap();
        let got = |k: &str| {
            db.get(k)
                .unwrap()
                .map(|v| serde_json::from_slice::<String>(&v).unwrap())
        };
        assert_eq!(got("k").as_deref(), Some("3"));
        assert_eq!(got("b").as_deref(), Some("b"));
        assert_eq!(got("a"), None, "deleted by a later batch of the group");
        assert_eq!(db.get("gone").unwrap(), None);
        assert!(group.iter().all(|w| w.batch.is_empty()), "every batch was taken");
        // A group of one operation is written without a batch.
        apply_merged(&db, &journal, vec![&mut write(&[("c", Some("c"))])]).unwrap();
        assert_eq!(got("c").as_deref(), Some("c"));
        apply_merged(&db, &journal, Vec::new()).unwrap();
        assert!(journal.is_empty(), "no entry outlives its group");
        // A group too large for one journal entry still applies whole.
        let big = "x".repeat(JOURNAL_MAX / 4);
        let mut group: Vec<Write> = (0..5)
            .map(|i| write(&[(&format!("big/{i}"), Some(big.as_str()))]))
            .collect();
        apply_merged(&db, &journal, group.iter_mut().collect()).unwrap();
        assert_eq!(db.scan_prefix("big/").count(), 5);
        assert!(journal.is_empty());
        drop((journal, db));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_entry_decodes_to_the_operations_it_encoded_and_a_damaged_one_is_refused() {
        let ops = vec![
            (b"jobs/1".to_vec(), Some(b"{\"a\":1}".to_vec())),
            (b"gone".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
            (b"k".to_vec(), Some(vec![0xff; 300])),
        ];
        let bytes = journal::encode(&ops);
        assert_eq!(bytes.len(), journal::encoded_len(&ops));
        assert_eq!(journal::decode(&bytes).unwrap(), ops);
        for cut in [0, 3, 4, 9, bytes.len() - 1] {
            assert!(journal::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(journal::decode(&longer).unwrap_err().contains("after the last"));
        let mut unknown = bytes.clone();
        unknown[4 + 4 + 6] = 7;
        assert!(
            journal::decode(&unknown)
                .unwrap_err()
                .contains("unknown operation")
        );
        // A count no input could hold allocates nothing.
        assert!(journal::decode(&u32::MAX.to_le_bytes()).is_err());
    }

    #[tokio::test]
    async fn a_group_a_crash_interrupted_is_completed_from_the_journal_at_open() {
        let dir = tempdir();
        {
            let s = reopen(&dir);
            let mut b = Batch::new();
            b.put("job/1", &"old").put("job/2", &"old").put("stale", &1u32);
            s.write(b).await.unwrap();
        }
        // What a crash leaves: the group's journal entry, and only the
        // first of its operations applied.
        {
            let db = retry_lock(|| {
                sled::Config::new()
                    .path(dir.join(STORE_DIR))
                    .open()
                    .map_err(StoreError::from)
            });
            let journal = db.open_tree(JOURNAL_TREE).unwrap();
            let ops = vec![
                (b"job/1".to_vec(), Some(serde_json::to_vec("new").unwrap())),
                (b"job/2".to_vec(), Some(serde_json::to_vec("new").unwrap())),
                (b"stale".to_vec(), None),
                (b"job/1".to_vec(), Some(serde_json::to_vec("newest").unwrap())),
            ];
            journal.insert(db.name(), journal::encode(&ops)).unwrap();
            db.insert("job/1", serde_json::to_vec("new").unwrap()).unwrap();
            db.flush().unwrap();
        }
        let s = reopen(&dir);
        assert_eq!(s.get::<String>(b"job/1").unwrap().as_deref(), Some("newest"));
        assert_eq!(s.get::<String>(b"job/2").unwrap().as_deref(), Some("new"));
        assert_eq!(s.get::<u32>(b"stale").unwrap(), None);
        assert!(s.db.open_tree(JOURNAL_TREE).unwrap().is_empty());
        // A journal entry that does not decode stops the store from
        // opening, naming it, rather than leave a group half applied.
        s.db.open_tree(JOURNAL_TREE)
            .unwrap()
            .insert(s.db.name(), &[9u8, 0, 0][..])
            .unwrap();
        s.db.flush().unwrap();
        drop(s);
        let err = loop {
            match Store::open(&dir) {
                Err(StoreError::Db(e)) if e.contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => break other.expect_err("a damaged journal is refused"),
            }
        };
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key.starts_with("journal/")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn many_concurrent_writes_are_all_durable() {
        let dir = tempdir();
        let s = reopen(&dir);
        let mut handles = Vec::new();
        for i in 0..500u32 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let mut b = Batch::new();
                b.put(format!("k/{i:04}"), &i);
                s.write(b).await
            }));
        }
        for h in handles {
            if let Err(e) = h.await.unwrap() {
                panic!("write failed: {e}");
            }
        }
        drop(s);
        let s = reopen(&dir);
        assert_eq!(s.scan::<u32>(b"k/").unwrap().len(), 500);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn large_blobs_are_files_verified_on_read() {
        let dir = tempdir();
        let s = reopen(&dir);
        let blob = vec![7u8; SMALL_BLOB_MAX + 1];
        let id = s.content().put(blob.clone()).await.unwrap();
        assert!(s.content().has(&id));
        assert_eq!(s.content().size(&id), Some(blob.len() as u64));
        assert_eq!(s.content().get(&id).await.unwrap().unwrap(), blob);
        let path = dir.join(CONTENT_DIR).join(id.to_string());
        std::fs::write(&path, b"hellp").unwrap();
        // The copy kept in memory was verified when stored.
        assert_eq!(s.content().get(&id).await.unwrap().unwrap(), blob);
        drop(s);
        let s = reopen(&dir);
        assert_eq!(s.content().get(&id).await.unwrap(), None);
        assert!(!s.content().has(&id));
        assert!(!path.exists(), "the corrupt file is removed");
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn small_blobs_live_in_the_database_survive_reopen_and_are_verified_on_read() {
        let dir = tempdir();
        let s = reopen(&dir);
        let id = s.content().put(b"hello".to_vec()).await.unwrap();
        let lazy = ContentId::of(&[1u8; SMALL_BLOB_MAX]);
        s.content()
            .put_lazy(lazy, vec![1u8; SMALL_BLOB_MAX])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join(CONTENT_DIR)).unwrap().count(),
            0,
            "no file per small blob"
        );
        drop(s);
        let s = reopen(&dir);
        assert_eq!(s.content().get(&id).await.unwrap().unwrap(), b"hello");
        assert_eq!(s.content().size(&lazy), Some(SMALL_BLOB_MAX as u64));
        assert_eq!(s.content().held(), 5 + SMALL_BLOB_MAX as u64);
        drop(s);
        {
            let db = retry_lock(|| sled::open(dir.join(STORE_DIR)).map_err(StoreError::from));
            db.open_tree(BLOB_TREE)
                .unwrap()
                .insert(id.0, &b"hellp"[..])
                .unwrap();
            db.flush().unwrap();
        }
        let s = reopen(&dir);
        assert_eq!(s.content().get(&id).await.unwrap(), None, "corrupt");
        assert!(!s.content().has(&id));
        assert!(s.content().has(&lazy));
        drop(s);
        let s = reopen(&dir);
        assert!(!s.content().has(&id), "the corrupt blob was removed");
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn decode_slice(id: &ContentId, start: u64, len: u64, encoded: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        bao::decode::SliceDecoder::new(encoded, &blake3::Hash::from_bytes(id.0), start, len)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[tokio::test]
    async fn slices_of_large_and_small_blobs_verify_and_a_corrupt_blob_gives_none() {
        let dir = tempdir();
        let s = reopen(&dir);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let id = s.content().put(big.clone()).await.unwrap();
        let (start, len) = (2 * 1024 * 1024, 1024 * 1024);
        let slice = s.content().slice(&id, start, len).unwrap().unwrap();
        assert!(slice.len() < len as usize, "only the range and its hashes");
        let got = decode_slice(&id, start, len, &slice).unwrap();
        assert_eq!(got, big[start as usize..]);
        let tree = dir.join(CONTENT_DIR).join(format!("{id}.obao"));
        assert!(tree.exists(), "the tree is kept for the next slice");
        let tree_len = std::fs::metadata(&tree).unwrap().len();
        assert_eq!(
            s.content().held(),
            big.len() as u64 + tree_len,
            "the tree counts against the disk cap with its blob"
        );
        drop(s);
        let s = reopen(&dir);
        assert_eq!(
            s.content().held(),
            big.len() as u64 + tree_len,
            "also after a restart"
        );
        assert_eq!(
            s.content().slice(&id, 3_000_000, len).unwrap(),
            None,
            "past the end"
        );
        let small = s.content().put(b"a small blob".to_vec()).await.unwrap();
        let slice = s.content().slice(&small, 0, len).unwrap().unwrap();
        assert_eq!(decode_slice(&small, 0, len, &slice).unwrap(), b"a small blob");
        // A blob whose tree is built from corrupt bytes is dropped.
        let other: Vec<u8> = vec![9u8; 200_000];
        let oid = s.content().put(other).await.unwrap();
        let path = dir.join(CONTENT_DIR).join(oid.to_string());
        std::fs::write(&path, vec![8u8; 200_000]).unwrap();
        assert_eq!(s.content().slice(&oid, 0, len).unwrap(), None);
        assert!(!s.content().has(&oid));
        // Removing a blob removes its tree.
        s.content().collect(&HashSet::new(), std::time::Duration::ZERO, 0);
        assert!(!tree.exists());
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_range_read_starts_at_its_key_and_stays_in_its_prefix() {
        let dir = tempdir();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let s = reopen(&dir);
        let mut b = Batch::new();
        for i in 0..50u32 {
            b.put(format!("a/{i:04}"), &i);
            b.put(format!("b/{i:04}"), &i);
        }
        rt.block_on(s.write(b)).unwrap();
        let keys = |from: &str, limit| -> Vec<String> {
            s.scan_raw_from(b"a/", from.as_bytes(), limit)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys("a/0047", 10), ["a/0047", "a/0048", "a/0049"], "not into b/");
        assert_eq!(keys("a/0010", 2), ["a/0010", "a/0011"]);
        assert_eq!(keys("", 1), ["a/0000"], "a start before the prefix is the prefix");
        assert!(keys("a/9", 5).is_empty());
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("store-v0")).unwrap();
        let err = Store::open(&dir).unwrap_err().to_string();
        assert!(err.contains("store-v0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collection_keeps_what_is_needed_and_holds_the_cap() {
        let dir = tempdir();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let s = reopen(&dir);
        let c = s.content();
        // Five small blobs and then a large one (a file), counted alike.
        let mut ids: Vec<ContentId> = (0..5u8)
            .map(|i| rt.block_on(c.put(vec![i; 1000])).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let big = SMALL_BLOB_MAX as u64 + 1;
        ids.push(rt.block_on(c.put(vec![9u8; big as usize])).unwrap());
        let keep: HashSet<ContentId> = ids[..2].iter().copied().collect();
        // Nothing is stale yet and the cap holds: nothing goes.
        let r = c.collect(&keep, std::time::Duration::from_secs(3600), 5000 + big);
        assert_eq!((r.removed, r.held, r.full), (0, 5000 + big, false));
        // Over the cap: the unneeded go, oldest first, until it holds.
        let r = c.collect(&keep, std::time::Duration::from_secs(3600), 3000 + big);
        assert_eq!((r.removed, r.held, r.full), (2, 3000 + big, false));
        assert!(c.has(&ids[0]) && c.has(&ids[1]), "what is needed stays");
        assert!(c.has(&ids[5]), "the newest stays");
        // Stale: everything unneeded goes whatever the cap.
        let r = c.collect(&keep, std::time::Duration::ZERO, u64::MAX);
        assert_eq!((r.removed, r.held), (2, 2000));
        assert!(!dir.join(CONTENT_DIR).join(ids[5].to_string()).exists());
        // What is needed alone exceeds the cap: full.
        let r = c.collect(&keep, std::time::Duration::ZERO, 1000);
        assert!(r.full);
        assert!(c.has(&ids[0]), "needed content is never removed");
        drop(s);
        // What was collected stays collected.
        let s = reopen(&dir);
        assert_eq!(s.content().held(), 2000);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
