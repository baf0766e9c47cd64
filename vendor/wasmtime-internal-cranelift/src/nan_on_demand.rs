//! NaN canonicalisation on demand (agora patch; see `vendor/README.md`).
//!
//! Cranelift's `enable_nan_canonicalization` pass rewrites the result of
//! every floating-point arithmetic instruction so that a NaN result is the
//! canonical NaN. On x86-64 that is a vector compare and blend after every
//! scalar `fadd`/`fmul`/…, which lengthens every float dependency chain.
//!
//! The bits of a NaN only matter where they can be observed. This pass
//! canonicalises a scalar arithmetic result only if its bits can reach an
//! observation point through bit-preserving instructions (`fneg`, `fabs`,
//! `fcopysign`, `select`, block parameters). A scalar float use is an
//! observation point unless it is one of:
//!
//! * a float arithmetic instruction (its own result is a fresh arithmetic NaN
//!   whenever an input is NaN, and is itself canonicalised on demand);
//! * a comparison (all NaNs compare alike);
//! * a float-to-integer conversion (a NaN traps or converts to 0);
//! * one of the bit-preserving instructions above (observed through its
//!   result instead).
//!
//! Everything else observes: stores, bitcasts, calls and returns (so values
//! crossing a function boundary are canonical, which is what makes function
//! parameters and call results safe to treat as canonical), splats and lane
//! insertions, and any instruction not named here.
//!
//! Vector float arithmetic is canonicalised unconditionally, as before, so
//! every vector value is canonical.
//!
//! Every observable bit pattern is therefore the one full canonicalisation
//! gives: an observed value's arithmetic roots are canonicalised exactly as
//! they would be there, and an arithmetic result that is never observed only
//! reaches instructions whose behaviour does not depend on NaN bits.

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::{
    BlockArg, Function, Inst, InstBuilder, MemFlagsData, Opcode, Value, ValueDef, types,
};
use std::collections::{HashMap, HashSet};

/// Float arithmetic whose NaN results are nondeterministic.
fn is_fp_arith(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::Ceil
            | Opcode::Floor
            | Opcode::Nearest
            | Opcode::Sqrt
            | Opcode::Trunc
            | Opcode::Fdemote
            | Opcode::Fpromote
            | Opcode::FvpromoteLow
            | Opcode::Fvdemote
            | Opcode::Fadd
            | Opcode::Fdiv
            | Opcode::Fmax
            | Opcode::Fmin
            | Opcode::Fmul
            | Opcode::Fsub
            | Opcode::Fma
    )
}

/// Uses that do not depend on a NaN operand's bits.
fn is_nan_agnostic_use(op: Opcode) -> bool {
    is_fp_arith(op)
        || matches!(
            op,
            Opcode::Fcmp
                | Opcode::FcvtToUint
                | Opcode::FcvtToSint
                | Opcode::FcvtToUintSat
                | Opcode::FcvtToSintSat
        )
}

/// Instructions whose result carries their float operands' bits.
fn is_bit_preserving(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::Fneg | Opcode::Fabs | Opcode::Fcopysign | Opcode::Select | Opcode::Bitselect
    )
}

fn is_scalar_float(func: &Function, v: Value) -> bool {
    matches!(func.dfg.value_type(v), types::F32 | types::F64)
}

fn is_vector_float(func: &Function, v: Value) -> bool {
    matches!(func.dfg.value_type(v), types::F32X4 | types::F64X2)
}

/// Runs the pass; `has_vector_support` as for Cranelift's own pass.
pub(crate) fn canonicalize_nans_on_demand(func: &mut Function, has_vector_support: bool) {
    // Where each scalar float block parameter's values come from, and the
    // scalar float values used by an observing instruction.
    let mut incoming: HashMap<Value, Vec<Value>> = HashMap::new();
    let mut observed: HashSet<Value> = HashSet::new();
    let mut work: Vec<Value> = Vec::new();
    let mut canonicalize: Vec<Inst> = Vec::new();

    let mark = |v: Value, observed: &mut HashSet<Value>, work: &mut Vec<Value>| {
        if observed.insert(v) {
            work.push(v);
        }
    };

    for block in func.layout.blocks() {
        for inst in func.layout.block_insts(block) {
            let data = &func.dfg.insts[inst];
            let op = data.opcode();
            for call in data.branch_destination(&func.dfg.jump_tables, &func.dfg.exception_tables)
            {
                let dest = call.block(&func.dfg.value_lists);
                let params = func.dfg.block_params(dest);
                for (param, arg) in params.iter().zip(call.args(&func.dfg.value_lists)) {
                    if let BlockArg::Value(v) = arg {
                        let v = func.dfg.resolve_aliases(v);
                        if is_scalar_float(func, v) {
                            incoming.entry(*param).or_default().push(v);
                        }
                    }
                }
            }
            if !is_nan_agnostic_use(op) && !is_bit_preserving(op) {
                for &a in func.dfg.inst_args(inst) {
                    let a = func.dfg.resolve_aliases(a);
                    if is_scalar_float(func, a) {
                        mark(a, &mut observed, &mut work);
                    }
                }
            }
            if is_fp_arith(op)
                && func
                    .dfg
                    .inst_results(inst)
                    .first()
                    .is_some_and(|&r| is_vector_float(func, r))
            {
                canonicalize.push(inst);
            }
        }
    }

    // Walk back from every observed value to the arithmetic it came from
    // (each value is walked once, so each instruction is pushed once).
    while let Some(v) = work.pop() {
        match func.dfg.value_def(v) {
            ValueDef::Result(inst, _) => {
                let op = func.dfg.insts[inst].opcode();
                if is_fp_arith(op) {
                    canonicalize.push(inst);
                } else if is_bit_preserving(op) {
                    for &a in func.dfg.inst_args(inst) {
                        let a = func.dfg.resolve_aliases(a);
                        if is_scalar_float(func, a) {
                            mark(a, &mut observed, &mut work);
                        }
                    }
                }
            }
            ValueDef::Param(..) => {
                if let Some(sources) = incoming.get(&v) {
                    for &s in sources {
                        mark(s, &mut observed, &mut work);
                    }
                }
            }
            ValueDef::Union(..) => {}
        }
    }

    for inst in canonicalize {
        add_nan_canon_seq(func, inst, has_vector_support);
    }
}

/// Replaces `inst`'s result with the canonical NaN when it is a NaN (the same
/// sequence as Cranelift's own pass).
fn add_nan_canon_seq(func: &mut Function, inst: Inst, has_vector_support: bool) {
    let mut pos = FuncCursor::new(func).at_inst(inst);
    let val = pos.func.dfg.first_result(inst);
    let val_type = pos.func.dfg.value_type(val);
    let new_res = pos.func.dfg.replace_result(val, val_type);
    let _next = pos.next_inst();

    let comparison = FloatCC::Unordered;
    let vectorized_scalar_select = |pos: &mut FuncCursor, canon_nan: Value, ty: types::Type| {
        let canon_nan = pos.ins().scalar_to_vector(ty, canon_nan);
        let new_res = pos.ins().scalar_to_vector(ty, new_res);
        let is_nan = pos.ins().fcmp(comparison, new_res, new_res);
        let is_nan = pos.ins().bitcast(ty, MemFlagsData::new(), is_nan);
        let simd_result = pos.ins().bitselect(is_nan, canon_nan, new_res);
        pos.ins().with_result(val).extractlane(simd_result, 0);
    };
    let scalar_select = |pos: &mut FuncCursor, canon_nan: Value| {
        let is_nan = pos.ins().fcmp(comparison, new_res, new_res);
        pos.ins()
            .with_result(val)
            .select(is_nan, canon_nan, new_res);
    };
    let vector_select = |pos: &mut FuncCursor, canon_nan: Value| {
        let is_nan = pos.ins().fcmp(comparison, new_res, new_res);
        let is_nan = pos.ins().bitcast(val_type, MemFlagsData::new(), is_nan);
        pos.ins()
            .with_result(val)
            .bitselect(is_nan, canon_nan, new_res);
    };

    match val_type {
        types::F32 => {
            let canon_nan = pos.ins().f32const(Ieee32::NAN);
            if has_vector_support {
                vectorized_scalar_select(&mut pos, canon_nan, types::F32X4);
            } else {
                scalar_select(&mut pos, canon_nan);
            }
        }
        types::F64 => {
            let canon_nan = pos.ins().f64const(Ieee64::NAN);
            if has_vector_support {
                vectorized_scalar_select(&mut pos, canon_nan, types::F64X2);
            } else {
                scalar_select(&mut pos, canon_nan);
            }
        }
        types::F32X4 => {
            let canon_nan = pos.ins().f32const(Ieee32::NAN);
            let canon_nan = pos.ins().splat(types::F32X4, canon_nan);
            vector_select(&mut pos, canon_nan);
        }
        types::F64X2 => {
            let canon_nan = pos.ins().f64const(Ieee64::NAN);
            let canon_nan = pos.ins().splat(types::F64X2, canon_nan);
            vector_select(&mut pos, canon_nan);
        }
        // Only F32/F64 results and F32X4/F64X2 results are collected.
        _ => {}
    }
}
