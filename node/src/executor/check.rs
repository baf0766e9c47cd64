//! What a module must be before it is compiled, checked from its bytes.
//!
//! Compiling untrusted code costs time and memory, so whatever the guest
//! contract forbids and the first sections of a module already show is
//! refused before code generation: imports beyond the granted WASI
//! functions, too many or too large tables, an initial memory above the
//! executor's cap. [`Executor::load`](super::Executor::load) runs
//! `precheck` on every module its caches do not hold; [`validate`]
//! adds the size cap, full validation and the `_start` export, and is what
//! the CLI runs before it submits a job, without an executor or a compile.

use agora_protocol::units::Bytes;
use wasmtime::Engine;

use super::{Config, TaskError, WASM_PAGE, engine, wasi};

/// Checks a module as a provider will before running it — size, granted
/// imports, initial memory, validity under the granted features, and a
/// `_start: [] -> []` export — without compiling it. The CLI runs this
/// before submitting a job, so a bad module is refused at once rather than
/// failing on every provider.
pub fn validate(wasm: &[u8], config: &Config) -> Result<(), TaskError> {
    use wasmtime::wasmparser::{ExternalKind, Parser, Payload};
    if wasm.len() as u64 > config.max_module_size.0 {
        return Err(TaskError::ModuleTooLarge {
            size: Bytes(wasm.len() as u64),
            max: config.max_module_size,
        });
    }
    precheck(wasm, config.max_memory.0)?;
    let engine = Engine::new(&engine::wasm_config(config.max_memory.0))
        .map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
    wasmtime::Module::validate(&engine, wasm).map_err(|e| TaskError::InvalidModule(format!("{e:#}")))?;
    let mut start = None;
    let mut func_types = Vec::new();
    let mut imported_funcs = 0u32;
    let mut types: Vec<(usize, usize)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| TaskError::InvalidModule(e.to_string()))? {
            Payload::TypeSection(r) => {
                for ty in r.into_iter_err_on_gc_types() {
                    let f = ty.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    types.push((f.params().len(), f.results().len()));
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    let imp = imp.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    if matches!(imp.ty, wasmtime::wasmparser::TypeRef::Func(_)) {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for f in r {
                    func_types.push(f.map_err(|e| TaskError::InvalidModule(e.to_string()))?);
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(|e| TaskError::InvalidModule(e.to_string()))?;
                    if e.name == "_start" && e.kind == ExternalKind::Func {
                        start = Some(e.index);
                    }
                }
            }
            _ => {}
        }
    }
    let ok = start
        .and_then(|i| i.checked_sub(imported_funcs))
        .and_then(|i| func_types.get(i as usize))
        .and_then(|t| types.get(*t as usize))
        .is_some_and(|(p, r)| *p == 0 && *r == 0);
    if !ok {
        return Err(TaskError::InvalidModule(
            "no `_start` function of type [] -> []: a task must be a WASI command module".into(),
        ));
    }
    Ok(())
}

/// Checks what can be checked before compiling, from the module's first
/// sections alone (parsing stops after the memory section): imports must be
/// granted WASI functions, tables must fit the table limits, and no memory
/// may start larger than `max_memory`. (The pooling allocator would refuse
/// such modules too, but as a compile error.)
pub(super) fn precheck(wasm: &[u8], max_memory: u64) -> Result<(), TaskError> {
    use wasmtime::wasmparser::{Parser, Payload, TypeRef};
    let invalid = |e: wasmtime::wasmparser::BinaryReaderError| TaskError::InvalidModule(e.to_string());
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version { .. }
            | Payload::TypeSection(_)
            | Payload::CustomSection(_)
            | Payload::FunctionSection(_) => {}
            Payload::TableSection(reader) => {
                let count = reader.count();
                if count > engine::MAX_TABLES {
                    return Err(TaskError::InvalidModule(format!(
                        "the module defines {count} tables; at most {} are granted",
                        engine::MAX_TABLES
                    )));
                }
                for table in reader {
                    let initial = table.map_err(invalid)?.ty.initial;
                    if initial > engine::MAX_TABLE_ELEMENTS as u64 {
                        return Err(TaskError::InvalidModule(format!(
                            "a table of {initial} elements exceeds the limit of {}",
                            engine::MAX_TABLE_ELEMENTS
                        )));
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let granted =
                        matches!(import.ty, TypeRef::Func(_)) && granted(import.module, import.name);
                    if !granted {
                        return Err(TaskError::ForbiddenImport {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    if memory.initial.saturating_mul(WASM_PAGE) > max_memory {
                        return Err(TaskError::MemoryLimit {
                            limit: Bytes(max_memory),
                        });
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Whether a function import is granted: WASI preview 1's functions, and
/// Agora's checkpoint functions.
pub(crate) fn granted(module: &str, name: &str) -> bool {
    (module == wasi::WASI_MODULE && wasi::GRANTED_FUNCTIONS.contains(&name))
        || (module == super::checkpoint::AGORA_MODULE && super::checkpoint::AGORA_FUNCTIONS.contains(&name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn imports_and_initial_memory_are_checked_before_compiling() {
        let big = wat::parse_str(r#"(module (memory 17))"#).unwrap();
        assert_eq!(
            precheck(&big, 1 << 20),
            Err(TaskError::MemoryLimit { limit: Bytes::mib(1) })
        );
        assert_eq!(
            precheck(&wat::parse_str(r#"(module (memory 16))"#).unwrap(), 1 << 20),
            Ok(())
        );
        let tables = wat::parse_str(r#"(module (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref))"#).unwrap();
        assert!(
            matches!(precheck(&tables, 1 << 20), Err(TaskError::InvalidModule(m)) if m.contains("5 tables"))
        );
        let big_table = wat::parse_str(r#"(module (table 100001 funcref))"#).unwrap();
        assert!(matches!(
            precheck(&big_table, 1 << 20),
            Err(TaskError::InvalidModule(_))
        ));
        let ok = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
        )
        .unwrap();
        assert_eq!(precheck(&ok, 1 << 20), Ok(()));
        for (m, n, ty) in [
            ("env", "f", "(func)"),
            ("wasi_snapshot_preview1", "sock_open", "(func)"),
            ("wasi_unstable", "fd_write", "(func)"),
            ("wasi_snapshot_preview1", "memory", "(memory 1)"),
        ] {
            let wasm = wat::parse_str(format!(r#"(module (import "{m}" "{n}" {ty}))"#)).unwrap();
            assert_eq!(
                precheck(&wasm, 1 << 20),
                Err(TaskError::ForbiddenImport {
                    module: m.into(),
                    name: n.into()
                })
            );
        }
    }
}
