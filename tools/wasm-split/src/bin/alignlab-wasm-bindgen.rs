//! `alignlab-wasm-bindgen`: the JavaScript bindings of a wasm module, as the `wasm-bindgen` command
//! writes them, from the library that command wraps (`wasm-bindgen-cli-support`).
//!
//!     alignlab-wasm-bindgen --target web|no-modules [--out-name NAME] [--export-function-table] --out-dir DIR IN.wasm
//!
//! No TypeScript declarations (the app has no TypeScript): the command's `--no-typescript`.
//! `--export-function-table` exports the module's function table as `__indirect_function_table`,
//! which wasm-bindgen removes: the engine's loader puts the products' fused kernel into it
//! (www/fused.js).
//!
//! One build tool instead of two: `cargo install wasm-bindgen-cli` also compiled the command's
//! test runner, HTTP client and server and argument parser (138 s of a cold build on 2 cores);
//! this one shares walrus with the splitter and is built from this crate's own lock file. The
//! options not taken here keep the command's defaults, so the output is the command's byte for
//! byte (checked against `wasm-bindgen` 0.2.130 on the app's three modules).

use anyhow::{Context, Result, bail};
use wasm_bindgen_cli_support::Bindgen;

/// The module formats the app uses: an ES module for the page, a classic script for the workers.
enum Target {
    Web,
    NoModules,
}

struct Args {
    target: Target,
    out_dir: String,
    out_name: Option<String>,
    export_table: bool,
    input: String,
}

const USAGE: &str = "usage: alignlab-wasm-bindgen --target web|no-modules [--out-name NAME] [--export-function-table] --out-dir DIR IN.wasm";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let (mut target, mut out_dir, mut out_name, mut input) = (None, None, None, None);
    let mut export_table = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--target" => {
                target = Some(match value()?.as_str() {
                    "web" => Target::Web,
                    "no-modules" => Target::NoModules,
                    other => bail!("unknown target '{other}' (web or no-modules)\n{USAGE}"),
                })
            }
            "--out-dir" => out_dir = Some(value()?),
            "--out-name" => out_name = Some(value()?),
            "--export-function-table" => export_table = true,
            flag if flag.starts_with("--") => bail!("unknown option '{flag}'\n{USAGE}"),
            _ if input.is_none() => input = Some(arg),
            _ => bail!("more than one input module\n{USAGE}"),
        }
    }
    Ok(Args {
        target: target.context(USAGE)?,
        out_dir: out_dir.context(USAGE)?,
        out_name,
        export_table,
        input: input.context(USAGE)?,
    })
}

fn main() -> Result<()> {
    let args = parse(std::env::args().skip(1))?;
    let mut bindgen = Bindgen::new();
    match args.target {
        Target::Web => bindgen.web(true)?,
        Target::NoModules => bindgen.no_modules(true)?,
    };
    // As the command sets them: its flags' defaults where Bindgen::new's differ.
    #[allow(deprecated)]
    bindgen
        .input_path(&args.input)
        .typescript(false)
        .omit_default_module_path(false)
        .reference_types(false);
    if let Some(name) = &args.out_name {
        bindgen.out_name(name);
    }
    let mut output = bindgen.generate_output().with_context(|| format!("the bindings of {}", args.input))?;
    if args.export_table {
        let module = output.wasm_mut();
        let table = module.tables.main_function_table()?.with_context(|| format!("{} has no function table", args.input))?;
        module.exports.add("__indirect_function_table", table);
    }
    output.emit(&args.out_dir).with_context(|| format!("writing the bindings of {} to {}", args.input, args.out_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn reads_the_command_lines_build_web_writes() {
        let a = args("--target no-modules --out-dir stage --out-name worker_mt stage/worker-mt.wasm").unwrap();
        assert!(matches!(a.target, Target::NoModules));
        assert_eq!((a.out_dir.as_str(), a.out_name.as_deref(), a.input.as_str()), ("stage", Some("worker_mt"), "stage/worker-mt.wasm"));
        let a = args("--target web --out-dir stage app.wasm").unwrap();
        assert!(matches!(a.target, Target::Web));
        assert_eq!(a.out_name, None);
        assert!(!a.export_table);
        assert!(args("--target no-modules --export-function-table --out-dir stage w.wasm").unwrap().export_table);
    }

    #[test]
    fn says_what_is_wrong_with_a_command_line() {
        let error = |line: &str| format!("{:#}", args(line).err().expect(line));
        assert!(error("--target bundler --out-dir d a.wasm").contains("unknown target 'bundler'"));
        assert!(error("--target web --out-dir").contains("--out-dir needs a value"));
        assert!(error("--target web --weak-refs --out-dir d a.wasm").contains("unknown option '--weak-refs'"));
        assert!(error("--target web --out-dir d a.wasm b.wasm").contains("more than one input module"));
        assert!(error("--out-dir d a.wasm").contains("usage:"));
    }
}
