//! Coverage for the keep list: every local function's first instruction marks its byte in a
//! memory of its own, exported as `__split_coverage`. The n-th byte is the n-th line of the list
//! written beside the module (the function's key and name, `names.rs`). A second memory needs
//! multi-memory: Chrome 120, Firefox 125.

use anyhow::Result;
use walrus::ir::{MemArg, StoreKind, Value};
use walrus::{FunctionKind, Module};

use crate::names::{key, stable};

/// The export holding one byte per instrumented function: 1 once it ran.
pub const COVERAGE: &str = "__split_coverage";

/// Instruments `module` in place; returns each function's key and stable name, tab-separated, by
/// coverage byte.
pub fn instrument(module: &mut Module) -> Result<Vec<String>> {
    let count = module.funcs.iter_local().count();
    let pages = (count as u64).div_ceil(65_536).max(1);
    let memory = module.memories.add_local(false, false, pages, Some(pages), None);
    module.exports.add(COVERAGE, memory);
    let mut names = Vec::with_capacity(count);
    for func in module.funcs.iter_mut() {
        let FunctionKind::Local(local) = &mut func.kind else { continue };
        let slot = names.len();
        let name = func.name.as_deref().unwrap_or_default();
        names.push(format!("{}\t{}", key(name), stable(name)));
        let arg = MemArg { align: 1, offset: slot as u64 };
        local
            .builder_mut()
            .func_body()
            .store_at(0, memory, StoreKind::I32_8 { atomic: false }, arg)
            .const_at(0, Value::I32(1))
            .const_at(0, Value::I32(0));
    }
    Ok(names)
}
