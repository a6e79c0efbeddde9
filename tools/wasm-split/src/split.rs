//! One module in two: the primary keeps the functions a WebGPU session runs (the keep list) and
//! every one a split cannot move; the secondary holds the rest.
//!
//! Both are made from a parse of the same bytes, so a function's position in `funcs` names it in
//! either. In the primary a moved function keeps its index (calls, exports and function pointers
//! to it are unchanged) and its body becomes a trampoline:
//!
//! ```text
//! if !loaded { split.load(); loaded = true }   ;; the loader instantiates the secondary
//! call_indirect (table slot BASE + k) args...
//! ```
//!
//! where BASE is the table's size before the split. The secondary imports the primary's memory,
//! tables and globals and every function its bodies call (`primary.f<position>`, exported by the
//! primary), and an active element segment writes its functions into slots BASE.. of the shared
//! table when it is instantiated.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use walrus::ir::{Instr, InstrLocId, UnaryOp, Visitor, dfs_in_order};
use walrus::{
    ConstExpr, ElementItems, ElementKind, ExportItem, FunctionBuilder, FunctionId, FunctionKind,
    GlobalKind, ImportId, ImportKind, ImportedFunction, LocalFunction, Module, ValType,
};

use crate::names::{hash, stable};

/// What the primary keeps: a keep list's lines are keys of names (`names.rs`), `~TEXT` keeps every
/// function whose name contains TEXT, `^TEXT` every one whose name starts with it, and `#` starts
/// a comment.
pub struct Keep {
    keys: HashSet<String>,
    containing: Vec<String>,
    starting: Vec<String>,
}

impl Keep {
    pub fn parse(text: &str) -> Keep {
        let mut keep = Keep { keys: HashSet::new(), containing: Vec::new(), starting: Vec::new() };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match (line.strip_prefix('~'), line.strip_prefix('^')) {
                (Some(text), _) => keep.containing.push(text.to_owned()),
                (_, Some(text)) => keep.starting.push(text.to_owned()),
                _ => _ = keep.keys.insert(line.to_owned()),
            }
        }
        keep
    }

    /// Patterns match the stable name: `core::`, not `core[c5930c85a12de822]::`.
    fn keeps(&self, name: &str) -> bool {
        let name = stable(name);
        self.keys.contains(&hash(&name))
            || self.containing.iter().any(|c| name.contains(c.as_str()))
            || self.starting.iter().any(|s| name.starts_with(s.as_str()))
    }
}

/// Functions of fewer instructions stay in the primary: a trampoline costs 9 or more.
const MIN_BODY: u64 = 24;

/// The import the primary calls to instantiate the secondary.
const LOAD: (&str, &str) = ("split", "load");

/// The namespace under which the secondary imports the primary's exports.
const PRIMARY: &str = "primary";

pub struct Split {
    pub primary: Vec<u8>,
    pub secondary: Vec<u8>,
    /// Functions moved, of all local functions.
    pub moved: usize,
    pub functions: usize,
    /// Their instructions, of all local functions'.
    pub moved_instructions: u64,
    pub instructions: u64,
}

pub fn split(bytes: &[u8], keep: &Keep) -> Result<Split> {
    let mut primary = Module::from_buffer(bytes).context("parsing the module")?;
    let mut secondary = Module::from_buffer(bytes).context("parsing the module")?;
    if primary.tags.iter().next().is_some() {
        bail!("the module declares exception tags, which the split does not handle");
    }
    let funcs: Vec<FunctionId> = primary.funcs.iter().map(|f| f.id()).collect();
    let funcs2: Vec<FunctionId> = secondary.funcs.iter().map(|f| f.id()).collect();
    let table = primary.tables.main_function_table()?.context("the module has no function table")?;
    let table_position = primary.tables.iter().position(|t| t.id() == table).context("the function table is not among the tables")?;

    // What moves: local functions off the list, not entry points, that touch no segment by index
    // (segments stay in the primary).
    let exported: HashSet<FunctionId> = primary
        .exports
        .iter()
        .filter_map(|e| match e.item {
            ExportItem::Function(f) => Some(f),
            _ => None,
        })
        .collect();
    let (mut moved, mut functions, mut moved_instructions, mut instructions) = (Vec::new(), 0, 0, 0);
    for (position, &id) in funcs.iter().enumerate() {
        let func = primary.funcs.get(id);
        let FunctionKind::Local(local) = &func.kind else { continue };
        let size = local.size();
        functions += 1;
        instructions += size;
        let listed = func.name.as_deref().is_none_or(|n| keep.keeps(n));
        if listed || size < MIN_BODY || exported.contains(&id) || primary.start == Some(id) || uses_segments(local) {
            continue;
        }
        moved.push(position);
        moved_instructions += size;
    }
    let base = primary.tables.get(table).initial;
    let slots = base.checked_add(moved.len() as u64).context("table size overflows")?;
    let t = primary.tables.get_mut(table);
    t.initial = slots;
    t.maximum = t.maximum.map(|m| m.max(slots));
    let maximum = t.maximum;

    build_secondary(&mut secondary, &funcs2, &moved, table_position, base, slots, maximum)?;
    // The primary exports what the secondary imports from it.
    let imports: Vec<(String, ImportKind)> = secondary
        .imports
        .iter()
        .filter(|i| i.module == PRIMARY)
        .map(|i| (i.name.clone(), i.kind.clone()))
        .collect();
    for (name, kind) in imports {
        let position = |prefix: &str| -> Result<usize> {
            name.strip_prefix(prefix).and_then(|n| n.parse().ok()).with_context(|| format!("bad import name {name}"))
        };
        let item: ExportItem = match kind {
            ImportKind::Function(_) => funcs[position("f")?].into(),
            ImportKind::Memory(_) => primary.memories.iter().nth(position("memory")?).context("memory")?.id().into(),
            ImportKind::Table(_) => primary.tables.iter().nth(position("table")?).context("table")?.id().into(),
            ImportKind::Global(_) => primary.globals.iter().nth(position("global")?).context("global")?.id().into(),
            ImportKind::Tag(_) => bail!("tags are not split"),
        };
        primary.exports.add(&name, item);
    }
    trampolines(&mut primary, &funcs, &moved, table, base)?;
    walrus::passes::gc::run(&mut primary);
    Ok(Split {
        primary: primary.emit_wasm(),
        secondary: secondary.emit_wasm(),
        moved: moved.len(),
        functions,
        moved_instructions,
        instructions,
    })
}

/// The primary's moved functions become trampolines through the table.
fn trampolines(primary: &mut Module, funcs: &[FunctionId], moved: &[usize], table: walrus::TableId, base: u64) -> Result<()> {
    let load_ty = primary.types.add(&[], &[]);
    let (load, _) = primary.add_import_func(LOAD.0, LOAD.1, load_ty);
    let loaded = primary.globals.add_local(ValType::I32, true, false, ConstExpr::Value(walrus::ir::Value::I32(0)));
    for (k, &position) in moved.iter().enumerate() {
        let id = funcs[position];
        let ty = primary.funcs.get(id).ty();
        let (params, results) = primary.types.params_results(ty);
        let (params, results) = (params.to_vec(), results.to_vec());
        let slot = i32::try_from(base + k as u64).context("table slot past i32")?;
        let mut builder = FunctionBuilder::new(&mut primary.types, &params, &results);
        let args: Vec<_> = params.iter().map(|&t| primary.locals.add(t)).collect();
        let mut body = builder.func_body();
        body.global_get(loaded).unop(UnaryOp::I32Eqz).if_else(
            None,
            |then| {
                then.call(load).i32_const(1).global_set(loaded);
            },
            |_| {},
        );
        for &a in &args {
            body.local_get(a);
        }
        body.i32_const(slot).call_indirect(ty, table);
        let func: LocalFunction = builder.local_func(args);
        primary.funcs.get_mut(id).kind = FunctionKind::Local(func);
    }
    Ok(())
}

/// The secondary: the moved functions' bodies, everything else imported from the primary.
fn build_secondary(
    m: &mut Module,
    funcs: &[FunctionId],
    moved: &[usize],
    table_position: usize,
    base: u64,
    slots: u64,
    maximum: Option<u64>,
) -> Result<()> {
    let moved_set: HashSet<usize> = moved.iter().copied().collect();
    for (position, &id) in funcs.iter().enumerate() {
        if moved_set.contains(&position) {
            continue;
        }
        let ty = m.funcs.get(id).ty();
        let old = match &m.funcs.get(id).kind {
            FunctionKind::Import(old) => Some(old.import),
            _ => None,
        };
        let import = from_primary(m, old, format!("f{position}"), ImportKind::Function(id));
        m.funcs.get_mut(id).kind = FunctionKind::Import(ImportedFunction { import, ty });
    }
    let memories: Vec<_> = m.memories.iter().map(|x| x.id()).collect();
    for (j, id) in memories.into_iter().enumerate() {
        let import = from_primary(m, m.memories.get(id).import, format!("memory{j}"), ImportKind::Memory(id));
        let memory = m.memories.get_mut(id);
        memory.import = Some(import);
        memory.data_segments.clear();
    }
    let data: Vec<_> = m.data.iter().map(|d| d.id()).collect();
    for id in data {
        m.data.delete(id);
    }
    let elements: Vec<_> = m.elements.iter().map(|e| e.id()).collect();
    for id in elements {
        m.elements.delete(id);
    }
    let tables: Vec<_> = m.tables.iter().map(|t| t.id()).collect();
    for (j, &id) in tables.iter().enumerate() {
        let import = from_primary(m, m.tables.get(id).import, format!("table{j}"), ImportKind::Table(id));
        let table = m.tables.get_mut(id);
        table.import = Some(import);
        table.elem_segments.clear();
        if j == table_position {
            table.initial = slots;
            table.maximum = maximum;
        }
    }
    let globals: Vec<_> = m.globals.iter().map(|g| g.id()).collect();
    for (j, id) in globals.into_iter().enumerate() {
        let old = match m.globals.get(id).kind {
            GlobalKind::Import(old) => Some(old),
            GlobalKind::Local(_) => None,
        };
        let import = from_primary(m, old, format!("global{j}"), ImportKind::Global(id));
        m.globals.get_mut(id).kind = GlobalKind::Import(import);
    }
    let exports: Vec<_> = m.exports.iter().map(|e| e.id()).collect();
    for id in exports {
        m.exports.delete(id);
    }
    m.start = None;
    let offset = i32::try_from(base).context("table base past i32")?;
    let table = tables[table_position];
    let segment = m.elements.add(
        ElementKind::Active { table, offset: ConstExpr::Value(walrus::ir::Value::I32(offset)) },
        ElementItems::Functions(moved.iter().map(|&p| funcs[p]).collect()),
    );
    m.tables.get_mut(table).elem_segments.insert(segment);
    walrus::passes::gc::run(m);
    Ok(())
}

/// `name` from the primary: the secondary's import for an item, in place of `old`, the item's own
/// import from JavaScript when it had one (the primary re-exports it).
fn from_primary(m: &mut Module, old: Option<ImportId>, name: String, kind: ImportKind) -> ImportId {
    if let Some(old) = old {
        m.imports.delete(old);
    }
    m.imports.add(PRIMARY, &name, kind)
}

/// Whether a body names a data or element segment, or takes a function reference: those stay
/// with the primary, which keeps the segments.
fn uses_segments(local: &LocalFunction) -> bool {
    struct Finder(bool);
    impl<'a> Visitor<'a> for Finder {
        fn visit_instr(&mut self, instr: &'a Instr, _: &'a InstrLocId) {
            self.0 |= matches!(
                instr,
                Instr::MemoryInit(_) | Instr::DataDrop(_) | Instr::TableInit(_) | Instr::ElemDrop(_) | Instr::RefFunc(_)
            );
        }
    }
    let mut finder = Finder(false);
    dfs_in_order(&mut finder, local, local.entry_block());
    finder.0
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use walrus::ir::{BinaryOp, Value};
    use walrus::{ConstExpr, ElementItems, ElementKind, FunctionBuilder, Module, RefType, ValType};

    use super::{Keep, split};
    use crate::names::key;

    /// `run(x)` (exported, listed) returns `big(x) + call_indirect[0](x)`, and table slot 0 holds
    /// `big`; `big(x)` (not listed) stores x in memory, bumps a global and returns
    /// `small(x) + global + memory[0]` through a chain of no-op adds long enough to be moved;
    /// `small(x) = 3x` is listed. So the split must carry calls both ways, a function pointer,
    /// the memory and a mutable global.
    fn module() -> Vec<u8> {
        let mut m = Module::default();
        let memory = m.memories.add_local(false, false, 1, None, None);
        m.exports.add("memory", memory);
        let table = m.tables.add_local(false, 1, Some(1), RefType::FUNCREF);
        let global = m.globals.add_local(ValType::I32, true, false, ConstExpr::Value(Value::I32(7)));
        let arg = |m: &mut Module| m.locals.add(ValType::I32);
        let mem = walrus::ir::MemArg { align: 4, offset: 0 };

        let x = arg(&mut m);
        let mut b = FunctionBuilder::new(&mut m.types, &[ValType::I32], &[ValType::I32]);
        b.name("small".into()).func_body().local_get(x).i32_const(3).binop(BinaryOp::I32Mul);
        let small = b.finish(vec![x], &mut m.funcs);

        let x = arg(&mut m);
        let mut b = FunctionBuilder::new(&mut m.types, &[ValType::I32], &[ValType::I32]);
        let mut body = b.name("big::h0123456789abcdef".into()).func_body();
        body.i32_const(0).local_get(x).store(memory, walrus::ir::StoreKind::I32 { atomic: false }, mem);
        body.global_get(global).i32_const(1).binop(BinaryOp::I32Add).global_set(global);
        body.local_get(x).call(small).global_get(global).binop(BinaryOp::I32Add);
        body.i32_const(0).load(memory, walrus::ir::LoadKind::I32 { atomic: false }, mem).binop(BinaryOp::I32Add);
        for _ in 0..12 {
            body.i32_const(0).binop(BinaryOp::I32Add);
        }
        let big = b.finish(vec![x], &mut m.funcs);
        let ty = m.funcs.get(big).ty();

        let x = arg(&mut m);
        let mut b = FunctionBuilder::new(&mut m.types, &[ValType::I32], &[ValType::I32]);
        let mut body = b.name("run::hfedcba9876543210".into()).func_body();
        body.local_get(x).call(big);
        body.local_get(x).i32_const(0).call_indirect(ty, table).binop(BinaryOp::I32Add);
        let run = b.finish(vec![x], &mut m.funcs);
        m.exports.add("run", run);
        let segment = m.elements.add(
            ElementKind::Active { table, offset: ConstExpr::Value(Value::I32(0)) },
            ElementItems::Functions(vec![big]),
        );
        m.tables.get_mut(table).elem_segments.insert(segment);
        m.emit_wasm()
    }

    #[test]
    fn keeps_listed_keys_and_patterns_on_stable_names() {
        let keep = Keep::parse(&format!("# comment\n{}\n~alignlab\n^std::\n", key("a::b::h0123456789abcdef")));
        assert!(keep.keeps("a::b::hfedcba9876543210[2]"), "the key of its stable name");
        assert!(keep.keeps("<alignlab::Router<alignlab::Web>>::handle"));
        assert!(keep.keeps("std[1a2b3c4d5e6f]::io::stdio::_print"), "a prefix of the stable name");
        assert!(!keep.keeps("<std::Foo as burn::Bar>::baz") && !keep.keeps("a::c"));
    }

    #[test]
    fn moves_what_is_not_listed_and_runs_as_before() {
        let whole = module();
        let out = split(&whole, &Keep::parse(&format!("# a comment\n{}\n{}\n", key("small"), key("run")))).unwrap();
        assert_eq!((out.moved, out.functions), (1, 3));
        let secondary = Module::from_buffer(&out.secondary).unwrap();
        let locals: Vec<_> = secondary.funcs.iter_local().map(|(_, f)| f.size()).collect();
        assert_eq!(locals.len(), 1, "only big's body moves");
        let imports: Vec<_> = secondary.imports.iter().map(|i| format!("{}.{}", i.module, i.name)).collect();
        assert!(imports.iter().all(|i| i.starts_with("primary.")), "{imports:?}");
        // big calls small, which stays: imported by its position in the whole module.
        let parsed = Module::from_buffer(&whole).unwrap();
        let small = parsed.funcs.iter().position(|f| f.name.as_deref() == Some("small")).unwrap();
        for wanted in ["primary.memory0".to_string(), "primary.table0".into(), "primary.global0".into(), format!("primary.f{small}")] {
            assert!(imports.contains(&wanted), "{wanted} in {imports:?}");
        }

        // Both halves run in node as the worker's loader runs them, and give the whole module's
        // results; the secondary is instantiated once, at the first call into it.
        let dir = std::env::temp_dir().join(format!("wasm-split-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in [("whole", &whole), ("primary", &out.primary), ("secondary", &out.secondary)] {
            std::fs::write(dir.join(format!("{name}.wasm")), bytes).unwrap();
        }
        let script = r#"
            const fs = require('fs'), dir = process.argv[1];
            const module = (n) => new WebAssembly.Module(fs.readFileSync(`${dir}/${n}.wasm`));
            const whole = new WebAssembly.Instance(module('whole'), {}).exports;
            let exports, loads = 0;
            const load = () => { loads++; new WebAssembly.Instance(module('secondary'), { primary: exports }); };
            exports = new WebAssembly.Instance(module('primary'), { split: { load } }).exports;
            const runs = (e) => [5, 6, 7].map((x) => e.run(x));
            console.log(JSON.stringify({ whole: runs(whole), split: runs(exports), loads }));
        "#;
        let output = Command::new("node").args(["-e", script, dir.to_str().unwrap()]).output().expect("node runs the modules");
        std::fs::remove_dir_all(&dir).ok();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).unwrap();
        // run(5) calls big twice, which bumps the global from 7 each time: (15 + 8 + 5) + (15 + 9 +
        // 5) = 57; then (18 + 10 + 6) + (18 + 11 + 6) = 69 and (21 + 12 + 7) + (21 + 13 + 7) = 81.
        assert_eq!(stdout.trim(), r#"{"whole":[57,69,81],"split":[57,69,81],"loads":1}"#);
    }
}
