//! Compiled modules, by content id: a bounded in-memory LRU, and serialized
//! artifacts on disk so a restart does not recompile.
//!
//! A disk entry is `DIR/<content id hex>.cwasm`: the 8-byte magic
//! `AGCWASM1`, the blake3 hash of the artifact, then wasmtime's serialized
//! artifact. The hash catches a truncated or corrupted file before wasmtime
//! maps its code; wasmtime itself refuses artifacts from another version or
//! configuration. Either way the entry is deleted and the module recompiled.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use agora_protocol::ContentId;
use wasmtime::Engine;

use super::Module;

const MAGIC: &[u8; 8] = b"AGCWASM1";
const HEADER: usize = 8 + 32;

/// Deserializes an artifact produced by an engine configured like `engine`
/// (ours, or the compile worker's).
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: wasmtime requires that the bytes be an artifact produced by
    // `Engine::precompile_module`/`Module::serialize` and not tampered with,
    // since it maps the code as executable. Every artifact we deserialize was
    // produced by this process or by our own compile worker, and arrives
    // either straight from the worker's stdout or from our private cache
    // directory, where its blake3 checksum (written by us) has just been
    // verified; wasmtime additionally checks its version and configuration.
    unsafe { wasmtime::Module::deserialize(engine, artifact) }
}

/// The in-memory LRU of compiled modules.
pub(crate) struct MemoryCache {
    capacity: usize,
    tick: u64,
    entries: HashMap<ContentId, (Arc<Module>, u64)>,
}

impl MemoryCache {
    pub(crate) fn new(capacity: usize) -> MemoryCache {
        MemoryCache {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, id: &ContentId) -> Option<Arc<Module>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(id).map(|(m, used)| {
            *used = tick;
            m.clone()
        })
    }

    pub(crate) fn insert(&mut self, module: Arc<Module>) {
        self.tick += 1;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&module.id) {
            // O(n) eviction; n is small (tens of modules).
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(module.id, (module, self.tick));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The on-disk cache of serialized artifacts.
pub(crate) struct DiskCache {
    dir: PathBuf,
    max_size: u64,
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, max_size: u64) -> std::io::Result<DiskCache> {
        crate::paths::create_private_dir(dir)?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            max_size,
        })
    }

    fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{id}.cwasm"))
    }

    /// The artifact stored for `id`, if there is an intact one. A damaged
    /// entry is deleted.
    pub(crate) fn read(&self, id: &ContentId) -> Option<Vec<u8>> {
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read cached module: {e}");
                return None;
            }
        };
        let intact = bytes.len() >= HEADER
            && &bytes[..8] == MAGIC
            && blake3::hash(&bytes[HEADER..]).as_bytes() == &bytes[8..HEADER];
        if !intact {
            tracing::warn!(path = %path.display(), "cached module is damaged; recompiling");
            self.remove(id);
            return None;
        }
        // Refresh the mtime: eviction removes the least recently used.
        if let Ok(f) = fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        let mut bytes = bytes;
        bytes.drain(..HEADER);
        Some(bytes)
    }

    /// Stores an artifact (atomically: a temporary file renamed into place).
    pub(crate) fn write(&self, id: &ContentId, artifact: &[u8]) {
        let path = self.path(id);
        let tmp = self.dir.join(format!(
            ".{id}.{}.{:x}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut f = crate::paths::create_private_file(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(blake3::hash(artifact).as_bytes())?;
            f.write_all(artifact)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache compiled module: {e}");
            let _ = fs::remove_file(&tmp);
            return;
        }
        self.evict();
    }

    pub(crate) fn remove(&self, id: &ContentId) {
        let _ = fs::remove_file(self.path(id));
    }

    /// Deletes the least recently used entries while the directory holds
    /// more than `max_size` bytes.
    fn evict(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_size {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_size {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn damaged_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), u64::MAX).unwrap();
        let id = ContentId::of(b"m");
        cache.write(&id, b"artifact");
        assert_eq!(cache.read(&id).as_deref(), Some(&b"artifact"[..]));
        let path = cache.path(&id);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.read(&id), None);
        assert!(!path.exists());
    }

    #[test]
    fn disk_cache_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 2 * (HEADER as u64 + 100)).unwrap();
        let ids: Vec<ContentId> = (0u8..3).map(|i| ContentId::of(&[i])).collect();
        for (i, id) in ids.iter().enumerate() {
            cache.write(id, &[0u8; 100]);
            // mtime granularity: make the order unambiguous.
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            fs::File::options()
                .append(true)
                .open(cache.path(id))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // The third write pushed the total over; the oldest went.
        cache.write(&ids[2], &[0u8; 100]);
        assert!(cache.read(&ids[0]).is_none());
        assert!(cache.read(&ids[1]).is_some());
        assert!(cache.read(&ids[2]).is_some());
    }
}
