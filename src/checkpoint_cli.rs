//! What a training run keeps in its output directory besides what it trained: `metrics.jsonl`
//! (one line per step) and `checkpoint-N` directories, written whole or not at all, that
//! `--resume-from` reads back.

use std::io::Write;
use std::path::{Path, PathBuf};

use alignlab::align::train::Metrics;
use alignlab::backend::block_on;
use alignlab::io::peft::write_atomic;
use alignlab::lab::{Run, RunState, Session};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Writes OUTPUT_DIR/checkpoint-N (adapter, `optimizer.bpk`, `trainer_state.json`) into a
/// `.part` directory renamed when whole, then drops older checkpoints: a kill at any moment
/// leaves the previous checkpoint or the new one, never half of one. Writes nothing and returns
/// false for a run that keeps no optimizer state ([`Run::state`]).
pub(crate) fn checkpoint(output_dir: &Path, run: &Run, session: &mut Session) -> Result<bool> {
    let Some((state, optimizer)) = run.state()? else { return Ok(false) };
    run.publish(session);
    let name = format!("checkpoint-{}", state.step);
    let part = output_dir.join(format!("{name}.part"));
    let _ = std::fs::remove_dir_all(&part);
    block_on(session.policy.export_adapter(&session.model_name()))?.write_dir(&part)?;
    std::fs::write(part.join("optimizer.bpk"), optimizer)?;
    std::fs::write(part.join("trainer_state.json"), serde_json::to_vec_pretty(&state)?)?;
    let dir = output_dir.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&part, &dir).with_context(|| format!("writing {}", dir.display()))?;
    for old in checkpoints(output_dir)?.into_iter().filter(|(step, _)| *step != state.step) {
        let _ = std::fs::remove_dir_all(old.1);
    }
    Ok(true)
}

/// The complete `checkpoint-N` directories in `dir`, by step.
pub(crate) fn checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("checkpoint-").and_then(|s| s.parse::<usize>().ok()) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest checkpoint in an output directory, if `dir` is one that has any.
pub(crate) fn newest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    if dir.join("trainer_state.json").exists() {
        return Ok(Some(dir.to_path_buf()));
    }
    Ok(checkpoints(dir)?.pop().map(|(_, p)| p))
}

/// A checkpoint's `trainer_state.json` and `optimizer.bpk`, each when present.
pub(crate) fn read_checkpoint_state(dir: &Path) -> Result<(Option<RunState>, Option<Vec<u8>>)> {
    let (state, optimizer) = (dir.join("trainer_state.json"), dir.join("optimizer.bpk"));
    let state = match std::fs::read(&state) {
        Ok(text) => Some(serde_json::from_slice(&text).with_context(|| format!("{} is not a run state", state.display()))?),
        Err(_) => None,
    };
    Ok((state, std::fs::read(&optimizer).ok()))
}

/// The last step logged in DIR's metrics.jsonl (0 without one).
pub(crate) fn last_logged_step(dir: &Path) -> Result<usize> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let last = text.lines().filter(|l| !l.trim().is_empty()).last();
    Ok(last.and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()).and_then(|v| v["step"].as_f64()).map_or(0, |s| s as usize))
}

/// `metrics.jsonl` (appended to when a run resumes into the same directory) and a progress bar.
pub(crate) struct Log {
    file: std::fs::File,
    bar: ProgressBar,
}

impl Log {
    pub(crate) fn new(dir: &Path, steps: usize, done: usize) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        if done > 0 && path.exists() {
            // A killed run may have logged steps past its checkpoint: they are run again.
            let text = std::fs::read_to_string(&path)?;
            let kept: String = text
                .lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_f64()).is_some_and(|s| s as usize <= done))
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(&path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(done > 0).write(true).truncate(done == 0).open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let bar = ProgressBar::new(steps as u64);
        bar.set_position(done as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}").unwrap());
        Ok(Self { file, bar })
    }

    pub(crate) fn step(&mut self, m: &Metrics) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(m)?)?;
        let keys = ["loss", "rewards/margins", "accuracy", "reward", "kl", "eval/accuracy", "eval/loss"];
        let msg: Vec<String> = keys.iter().filter_map(|k| m.get(*k).map(|v| format!("{k} {v:.4}"))).collect();
        self.bar.set_message(msg.join("  "));
        self.bar.inc(1);
        Ok(())
    }

    /// Leaves the progress bar where the run stopped.
    pub(crate) fn finish(&self) {
        self.bar.finish();
    }
}
