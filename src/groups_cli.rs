//! `alignlab groups`: whose preferences. Rater groups' pairs (TRL JSONL or class files): how
//! often the groups agree, one DPO adapter per group and one merged, and each adapter's accuracy
//! on every group's held-out pairs (lab::groups).

use std::collections::BTreeMap;
use std::path::PathBuf;

use alignlab::align::Encoding;
use alignlab::align::dpo::DpoConfig;
use alignlab::align::train::TrainConfig;
use alignlab::backend::block_on;
use alignlab::data::Preference;
use alignlab::lab::class::{CLASS_FORMAT, ClassFile};
use alignlab::lab::groups::{Group, agreements, groups_of, plan, sample_class, split_groups, train_and_score};
use alignlab::lab::{EvalConfig, Method, RunSpec, TrainData};
use alignlab::model::LoraConfig;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::ModelArgs;
use crate::train_cli::read_data;

#[derive(Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A group and its raters' files (repeatable): NAME=FILE[,FILE...], each a TRL JSONL file of
    /// pairs (prompt, chosen, rejected) or a class file from the page. A group's raters are merged
    /// by majority. Without any, the sample class: groups "brief" and "thorough", two raters each.
    #[arg(long = "group", value_parser = parse_group)]
    pub groups: Vec<(String, Vec<PathBuf>)>,
    /// Save each adapter in PEFT's layout under DIR/NAME (and DIR/merged).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainConfig,
    #[command(flatten)]
    pub lora: LoraConfig,
    #[command(flatten)]
    pub dpo: DpoConfig,
    #[command(flatten)]
    pub encoding: Encoding,
    /// `--eval-fraction`: each group's share held out to test every adapter on.
    #[command(flatten)]
    pub eval: EvalConfig,
    #[arg(long)]
    pub json: bool,
}

fn parse_group(s: &str) -> Result<(String, Vec<PathBuf>), String> {
    let (name, paths) = s.split_once('=').ok_or_else(|| format!("--group takes NAME=FILE[,FILE...], not '{s}'"))?;
    Ok((name.trim().to_string(), paths.split(',').map(PathBuf::from).collect()))
}

/// Every file of every group as one rater's class file, and which group each is in.
fn read_groups(args: &[(String, Vec<PathBuf>)]) -> Result<Vec<Group>> {
    if args.is_empty() {
        let (files, assign) = sample_class();
        return Ok(groups_of(&files, &assign));
    }
    let (mut files, mut assign) = (Vec::new(), BTreeMap::new());
    for (name, paths) in args {
        for (i, path) in paths.iter().enumerate() {
            let rater = format!("{name}/{i}");
            let pairs = if path.extension().is_some_and(|e| e == "json") {
                ClassFile::parse(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
                    .with_context(|| format!("reading the class file {}", path.display()))?
                    .pairs
            } else {
                read_data::<Preference>(path)?
            };
            files.push(ClassFile { alignlab_class: CLASS_FORMAT, rater: rater.clone(), pairs, unpaired: vec![], demos: vec![], runs: vec![] });
            assign.insert(rater, name.clone());
        }
    }
    Ok(groups_of(&files, &assign))
}

pub fn groups(a: GroupsArgs) -> Result<()> {
    let groups = read_groups(&a.groups)?;
    let spec = RunSpec {
        method: Method::Dpo(a.dpo.clone()),
        train: a.train.clone(),
        lora: Some(a.lora.clone()),
        encoding: a.encoding.clone(),
        eval: a.eval.clone(),
        data: TrainData::default(),
    };
    let splits = split_groups(&groups, &spec)?;
    let names: Vec<&str> = splits.iter().map(|s| s.name.as_str()).collect();
    let matrix = agreements(&groups);
    if !a.json {
        println!("agreement on the comparisons both groups judged (rate, Cohen's kappa):");
        for (name, row) in names.iter().zip(&matrix) {
            let cells: Vec<String> = row
                .iter()
                .map(|c| match c {
                    Some(x) => format!("{:.2} κ {}", x.rate, x.kappa.map_or("n/a".into(), |k| format!("{k:+.2}"))),
                    None => "no shared".into(),
                })
                .collect();
            println!("  {name:<12} {}", cells.join("  |  "));
        }
    }
    let mut session = crate::open_session(&a.model, true, a.json)?;
    let mut rows = Vec::new();
    for (name, pairs) in plan(&splits) {
        if !a.json {
            eprintln!("training {name} on {} pairs", pairs.len());
        }
        let (row, model) = block_on(train_and_score(&session, &spec, &name, pairs, &splits, &mut |_| true))?.expect("never stopped");
        if let Some(dir) = &a.output_dir {
            session.policy.trained(model, spec.lora.clone());
            let files = block_on(session.policy.export_adapter(&session.model_name()))?;
            files.write_dir(&dir.join(&name)).with_context(|| format!("saving the {name} adapter"))?;
            session.policy.reset(&session.lm.clone());
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("nothing was trained");
    }
    if a.json {
        println!("{}", json!({"groups": names, "agreement": matrix, "adapters": rows}));
    } else {
        println!("\naccuracy on each group's held-out pairs (mean implicit-reward margin, nats):");
        println!("  {:<12} {}", "adapter", names.iter().map(|n| format!("{n:>18}")).collect::<String>());
        for r in &rows {
            let cells: String = r.scores.iter().map(|s| format!("{:>9.2} ({:+.2})", s.accuracy, s.margin)).collect();
            println!("  {:<12} {cells}   trained on {} pairs", r.adapter, r.trained_on);
        }
    }
    Ok(())
}
