//! `alignlab-wasm-split`: the WebGPU worker's wasm as a first download and a rest fetched on use.
//!
//!     alignlab-wasm-split instrument IN.wasm OUT.wasm NAMES.txt
//!     alignlab-wasm-split split IN.wasm KEEP.txt PRIMARY.wasm SECONDARY.wasm
//!
//! `instrument` writes a module that records which functions ran (`instrument.rs`);
//! scripts/split-profile runs it through a WebGPU session and writes the keep list. `split` keeps
//! the listed functions in the primary module and moves the others to the secondary (`split.rs`).

mod instrument;
mod names;
mod split;

use std::fs;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["instrument", input, output, names] => {
            let mut module = walrus::Module::from_file(input).with_context(|| format!("reading {input}"))?;
            let list = instrument::instrument(&mut module)?;
            module.emit_wasm_file(output).with_context(|| format!("writing {output}"))?;
            fs::write(names, list.join("\n") + "\n").with_context(|| format!("writing {names}"))?;
            Ok(())
        }
        ["split", input, keep, primary, secondary] => {
            let bytes = fs::read(input).with_context(|| format!("reading {input}"))?;
            let keep = split::Keep::parse(&fs::read_to_string(keep).with_context(|| format!("reading {keep}"))?);
            let out = split::split(&bytes, &keep)?;
            fs::write(primary, &out.primary).with_context(|| format!("writing {primary}"))?;
            fs::write(secondary, &out.secondary).with_context(|| format!("writing {secondary}"))?;
            eprintln!(
                "wasm-split: {} of {} functions ({:.1} of {:.1} million instructions) moved to the secondary module",
                out.moved, out.functions, out.moved_instructions as f64 / 1e6, out.instructions as f64 / 1e6
            );
            Ok(())
        }
        _ => bail!("usage: alignlab-wasm-split instrument IN OUT NAMES | split IN KEEP PRIMARY SECONDARY"),
    }
}
