//! Loading modules: from bytes or a content id to a [`Module`] ready to
//! instantiate.
//!
//! [`Executor::load`] refuses a module over the size cap before parsing
//! it, looks in the in-memory LRU, then the disk cache, and compiles only
//! when both miss, once per module however many tasks ask for it at the
//! same moment (the others wait for that compile and take its result):
//! the module's first sections are checked against the
//! guest contract (`check.rs`) before any code is generated, then it is
//! compiled in this process or in `agora compile-worker`
//! ([`CompileIsolation`]), and its artifact written to the disk cache.
//! Whatever the path, the compiled code is checked once more (granted
//! imports, a `_start: [] -> []` export) and linked against the guest's
//! world ([`wasi`]) into an `InstancePre`, which is what
//! [`Executor::run`] instantiates. A disk entry that no longer loads is
//! deleted and the module recompiled.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agora_protocol::id::ContentId;
use agora_protocol::units::Bytes;
use wasmtime::InstancePre;

use super::{CompileIsolation, Executor, TaskError, WASM_PAGE, cache, check, compile, wasi};

/// A compiled module, linked and ready to instantiate.
pub struct Module {
    pub(super) id: ContentId,
    /// What the run instantiates.
    pub(super) pre: InstancePre<wasi::State>,
    /// Initial size of its memory in bytes.
    pub(super) min_memory: u64,
    /// Whether it imports the checkpoint functions.
    pub(super) checkpoints: bool,
}

impl Module {
    /// The module's content id (blake3 of its binary).
    pub fn id(&self) -> ContentId {
        self.id
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id)
            .field("min_memory", &self.min_memory)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Compiles a module (a wasm binary) or loads it from cache: memory,
    /// then disk.
    ///
    /// Refuses modules over the size cap before parsing, modules importing
    /// anything but the granted WASI functions ([`TaskError::ForbiddenImport`]),
    /// modules whose initial memory exceeds [`Config::max_memory`](super::Config::max_memory)
    /// ([`TaskError::MemoryLimit`]) and modules without a `_start` function.
    pub fn load(&self, module: &[u8]) -> Result<Arc<Module>, TaskError> {
        let c = &self.inner.config;
        if module.len() as u64 > c.max_module_size.0 {
            return Err(TaskError::ModuleTooLarge {
                size: Bytes(module.len() as u64),
                max: c.max_module_size,
            });
        }
        let id = ContentId::of(module);
        if let Some(m) = self.cached(&id) {
            return Ok(m);
        }
        // One compile per module at a time: who finds it being compiled
        // waits, then takes it from the cache, or that compile's error (a
        // module that times out compiling costs one timeout, not one per
        // task waiting).
        let lock = self.compile_lock(&id);
        let result = {
            let mut failed = lock.lock().unwrap_or_else(|e| e.into_inner());
            match (&*failed, self.cached(&id)) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(m)) => Ok(m),
                (None, None) => {
                    let r = self.compile(id, module);
                    if let Err(e) = &r {
                        *failed = Some(e.clone());
                    }
                    r
                }
            }
        };
        // Clones of a lock are made and dropped under the map's lock only:
        // the last of its holders finds it alone in the map, and removes it.
        let mut compiling = self.inner.compiling.lock().unwrap_or_else(|e| e.into_inner());
        drop(lock);
        if compiling.get(&id).is_some_and(|l| Arc::strong_count(l) == 1) {
            compiling.remove(&id);
        }
        result
    }

    /// The lock held while `id` is compiled, with that compile's error.
    fn compile_lock(&self, id: &ContentId) -> Arc<std::sync::Mutex<Option<TaskError>>> {
        let mut compiling = self.inner.compiling.lock().unwrap_or_else(|e| e.into_inner());
        compiling.entry(*id).or_default().clone()
    }

    /// Checks, compiles, links and caches a module missing from both caches.
    fn compile(&self, id: ContentId, module: &[u8]) -> Result<Arc<Module>, TaskError> {
        let c = &self.inner.config;
        check::precheck(module, c.max_memory.0)?;
        let compiled = match &c.compile {
            CompileIsolation::InProcess => {
                let m = compile::in_process(&self.inner.engine, module)?;
                let artifact = self.inner.disk_cache.as_ref().and_then(|_| m.serialize().ok());
                (m, artifact)
            }
            CompileIsolation::Subprocess { exe } => {
                let limits = compile::WorkerLimits {
                    max_memory: c.max_memory.0,
                    address_space: c.compile_memory,
                    timeout: c.compile_timeout,
                };
                let artifact = compile::in_subprocess(exe, module, &limits)?;
                let m = cache::deserialize(&self.inner.engine, &artifact).map_err(|e| {
                    TaskError::CompileFailed(format!("the compile worker's artifact does not load: {e:#}"))
                })?;
                (m, Some(artifact))
            }
        };
        self.inner.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let (compiled, artifact) = compiled;
        let m = Arc::new(self.link(id, compiled)?);
        if let (Some(disk), Some(artifact)) = (&self.inner.disk_cache, artifact) {
            disk.write(&id, &artifact);
        }
        self.remember(m.clone());
        tracing::debug!(module = %id, "module compiled");
        Ok(m)
    }

    /// A module compiled earlier (memory or disk cache), without its bytes.
    pub fn cached(&self, id: &ContentId) -> Option<Arc<Module>> {
        if let Some(m) = self.memory_cache().get(id) {
            self.inner.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Some(m);
        }
        let disk = self.inner.disk_cache.as_ref()?;
        let artifact = disk.read(id)?;
        let loaded = cache::deserialize(&self.inner.engine, &artifact)
            .map_err(|e| TaskError::CompileFailed(format!("{e:#}")))
            .and_then(|m| self.link(*id, m));
        match loaded {
            Ok(m) => {
                let m = Arc::new(m);
                self.inner.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.remember(m.clone());
                Some(m)
            }
            Err(e) => {
                tracing::info!(module = %id, "cached module unusable, recompiling: {e}");
                disk.remove(id);
                None
            }
        }
    }

    fn remember(&self, m: Arc<Module>) {
        self.memory_cache().insert(m);
    }

    /// Checks the compiled module against the guest contract and links it.
    fn link(&self, id: ContentId, m: wasmtime::Module) -> Result<Module, TaskError> {
        for import in m.imports() {
            let granted =
                import.ty().func().is_some() && super::check::granted(import.module(), import.name());
            if !granted {
                return Err(TaskError::ForbiddenImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        match m.get_export("_start") {
            Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => {
                return Err(TaskError::InvalidModule(
                    "no `_start` function of type [] -> []: a task must be a WASI command module".into(),
                ));
            }
        }
        let min_memory = m
            .resources_required()
            .max_initial_memory_size
            .unwrap_or(0)
            .saturating_mul(WASM_PAGE);
        let pre = self
            .inner
            .linker
            .instantiate_pre(&m)
            .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
        let checkpoints = m.imports().any(|i| i.module() == super::checkpoint::AGORA_MODULE);
        Ok(Module {
            id,
            pre,
            min_memory,
            checkpoints,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::executor::Config;

    #[test]
    fn memory_cache_is_bounded_and_keeps_recent_modules() {
        let executor = Executor::new(Config {
            max_cached_modules: 2,
            max_instances: 2,
            ..Config::default()
        })
        .unwrap();
        let module = |n: u32| {
            wat::parse_str(format!(
                r#"(module (func (export "_start")) (global i32 (i32.const {n})))"#
            ))
            .unwrap()
        };
        let a = executor.load(&module(1)).unwrap();
        executor.load(&module(2)).unwrap();
        assert!(executor.cached(&a.id()).is_some()); // touch a
        executor.load(&module(3)).unwrap(); // evicts 2
        assert_eq!(executor.stats().cached_modules, 2);
        assert!(executor.cached(&a.id()).is_some());
        assert!(executor.cached(&ContentId::of(&module(2))).is_none());
    }

    #[test]
    fn tasks_of_a_new_module_arriving_together_compile_it_once() {
        let executor = Executor::new(Config {
            max_instances: 4,
            ..Config::default()
        })
        .unwrap();
        // Enough code that the compile takes a while: the other threads
        // arrive while it runs.
        let funcs: String = (0..2000)
            .map(|i| {
                format!(
                    "(func (param i64) (result i64) local.get 0 i64.const {i} i64.mul i64.const 7 i64.rem_u)"
                )
            })
            .collect();
        let wasm = wat::parse_str(format!(r#"(module {funcs} (func (export "_start")))"#)).unwrap();
        let barrier = std::sync::Barrier::new(4);
        let ids: Vec<ContentId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        executor.load(&wasm).unwrap().id()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ContentId::of(&wasm)));
        assert_eq!(executor.stats().compiled, 1, "one compile for four loads");
        assert_eq!(executor.stats().memory_hits, 3);
        assert!(
            executor.inner.compiling.lock().unwrap().is_empty(),
            "the compile's lock is gone"
        );
    }
}
