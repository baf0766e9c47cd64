//! `agora job submit job.toml`: a whole run, one or more stages, in one file
//! under version control.
//!
//! Each `[[stage]]` is one job, and its keys are `job submit`'s flags (with
//! `_` or `-`): `module` (required), its inputs (`inputs`, `input`,
//! `inputs_id` or `inputs_from`), `args`, limits, `replicas`, `reduce`…
//! A stage's `inputs_from` names an earlier stage of the file (or a job
//! already on the node), and a stage without inputs takes the outputs of the
//! stage before it. Paths are relative to the file. The stages are submitted
//! in order, each as soon as the one before is accepted, so a later stage's
//! task starts as soon as its input is verified.
//!
//! Building each stage's flags and parsing them as the command line is
//! parsed means that a stage accepts exactly what `job submit` does, with
//! the same defaults and the same errors.
//!
//! ```toml
//! [[stage]]
//! name = "count"
//! module = "wordcount.wasm"
//! inputs_id = "5f0c…"            # a dataset `agora publish` printed
//! replicas = 2
//!
//! [[stage]]
//! name = "top"
//! module = "wordcount-top.wasm"  # inputs: the outputs of "count"
//! args = ["10"]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_protocol::JobId;
use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

use super::submit::{SubmitCommand, Submitted};
use crate::commands::common::{emitln, print_json};

/// Most stages in one job file.
const MAX_STAGES: usize = 32;

/// Whether `path` names a job file rather than a module.
pub(super) fn is_job_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}

/// Flags a stage may not set: the file and the command line decide them.
const NOT_IN_A_STAGE: &[&str] = &["data_dir", "api", "token", "json", "dry_run", "all"];

/// Keys whose value is a path, resolved against the file's directory.
const PATHS: &[&str] = &["module", "input", "inputs", "reduce"];

/// One stage submitted.
#[derive(Debug, Serialize)]
struct Stage {
    name: String,
    id: JobId,
    tasks: usize,
}

/// Parses one stage's flags as the command line would.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct StageArgs {
    #[command(flatten)]
    submit: SubmitCommand,
}

/// Submits every stage of the job file `cmd.module`, in order.
pub(super) fn submit(cmd: SubmitCommand) -> anyhow::Result<ExitCode> {
    let file = &cmd.module;
    if cmd.input.is_some() || cmd.inputs.is_some() || cmd.inputs_id.is_some() || cmd.inputs_from.is_some() {
        bail!(
            "{} is a job file: its stages name their inputs, so give no input flags with it",
            file.display()
        );
    }
    if cmd.dry_run {
        bail!("--dry-run plans one job: run it on a stage's module and inputs instead of the job file");
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let stages = parse(&text).with_context(|| format!("{} is not a job file", file.display()))?;
    let base = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut done: Vec<Stage> = Vec::new();
    let mut by_name: HashMap<String, JobId> = HashMap::new();
    for (i, table) in stages.iter().enumerate() {
        let name = match table.get("name") {
            Some(toml::Value::String(n)) => n.clone(),
            Some(_) => bail!("stage {}: `name` must be a string", i + 1),
            None => (i + 1).to_string(),
        };
        let previous = done.last().map(|s| s.id);
        let argv = stage_argv(table, &base, &by_name, previous).with_context(|| format!("stage {name}"))?;
        let mut stage = StageArgs::try_parse_from(&argv)
            .map_err(|e| stage_error(&name, &e))?
            .submit;
        stage.node = cmd.node.clone();
        let Submitted { response, tasks, .. } = stage
            .submit()
            .with_context(|| format!("stage {name} was not submitted"))?;
        let id = response
            .id
            .context("the node answered without a job id; is it an older version?")?;
        if !cmd.json {
            emitln(&format!("{name}\t{id}"))?;
        }
        if by_name.insert(name.clone(), id).is_some() {
            bail!("two stages are named {name}");
        }
        done.push(Stage { name, id, tasks });
    }
    if cmd.json {
        let last = done.last().map(|s| s.id);
        print_json(&serde_json::json!({ "id": last, "stages": done }))?;
    } else if let Some(last) = done.last() {
        eprintln!(
            "submitted {} stage(s); follow the last with `agora job watch {}`",
            done.len(),
            last.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A stage's keys that `job submit` refused, said in the file's terms: the
/// key, not the flag it became.
fn stage_error(name: &str, e: &clap::Error) -> anyhow::Error {
    use clap::error::{ContextKind, ErrorKind};
    let key = |flag: String| flag.trim_start_matches('-').replace('-', "_");
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(arg) = e.get(ContextKind::InvalidArg)
    {
        let hint = e
            .get(ContextKind::SuggestedArg)
            .map(|s| format!(" (did you mean `{}`?)", key(s.to_string())))
            .unwrap_or_default();
        return anyhow::anyhow!(
            "stage {name}: unknown key `{}`{hint}; a stage's keys are `agora job submit`'s flags",
            key(arg.to_string())
        );
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    anyhow::anyhow!("stage {name}: {}", first.trim_start_matches("error: "))
}

/// The stages of a job file, checked for shape.
fn parse(text: &str) -> anyhow::Result<Vec<toml::Table>> {
    let mut doc: toml::Table = toml::from_str(text)?;
    if let Some(other) = doc.keys().find(|k| *k != "stage") {
        bail!("unknown key `{other}`: a job file holds only [[stage]] tables");
    }
    let Some(toml::Value::Array(stages)) = doc.remove("stage") else {
        bail!("no [[stage]] tables");
    };
    if stages.is_empty() {
        bail!("no [[stage]] tables");
    }
    if stages.len() > MAX_STAGES {
        bail!("at most {MAX_STAGES} stages, not {}", stages.len());
    }
    stages
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            toml::Value::Table(t) => Ok(t),
            _ => bail!("stage {} is not a table", i + 1),
        })
        .collect()
}

/// A stage's keys as `job submit` arguments: the module first, then a
/// `--flag value` per key (repeated for a list, alone for `true`).
fn stage_argv(
    table: &toml::Table,
    base: &Path,
    stages: &HashMap<String, JobId>,
    previous: Option<JobId>,
) -> anyhow::Result<Vec<String>> {
    let module = match table.get("module") {
        Some(toml::Value::String(m)) => base.join(m),
        Some(_) => bail!("`module` must be a path"),
        None => bail!("no `module`"),
    };
    let mut argv = vec![module.display().to_string()];
    let inputs = ["input", "inputs", "inputs_id", "inputs_from"];
    let has_inputs = table
        .keys()
        .any(|k| inputs.contains(&k.replace('-', "_").as_str()));
    if !has_inputs {
        match previous {
            Some(id) => argv.extend(["--inputs-from".into(), id.to_string()]),
            None => bail!("the first stage needs inputs: `inputs`, `input`, `inputs_id` or `inputs_from`"),
        }
    }
    for (key, value) in table {
        let key = key.replace('-', "_");
        if key == "name" || key == "module" {
            continue;
        }
        if NOT_IN_A_STAGE.contains(&key.as_str()) {
            bail!("`{key}` is for the command line, not a stage");
        }
        let flag = match key.as_str() {
            "args" => "--arg".to_owned(),
            "reduce_args" => "--reduce-arg".to_owned(),
            k => format!("--{}", k.replace('_', "-")),
        };
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) if PATHS.contains(&key.as_str()) => base.join(s).display().to_string(),
                toml::Value::String(s) if key == "inputs_from" => match stages.get(s) {
                    Some(id) => id.to_string(),
                    None => s.clone(),
                },
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(true) => {
                    argv.push(flag.clone());
                    continue;
                }
                toml::Value::Boolean(false) => continue,
                other => bail!("`{key}` cannot be {}", other.type_str()),
            };
            argv.push(flag.clone());
            argv.push(text);
        }
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[stage]]
name = "count"
module = "wc.wasm"
inputs = "corpus"
replicas = 2
max_price = 0.5
args = ["--min", "3"]
follow_symlinks = true

[[stage]]
name = "top"
module = "top.wasm"
args = ["10"]
deadline = "2m"
"#;

    fn argv(i: usize, stages: &HashMap<String, JobId>, previous: Option<JobId>) -> Vec<String> {
        let t = parse(FILE).unwrap();
        stage_argv(&t[i], Path::new("/jobs"), stages, previous).unwrap()
    }

    #[test]
    fn a_stage_becomes_the_flags_of_job_submit_with_paths_from_the_file() {
        let a = argv(0, &HashMap::new(), None);
        assert_eq!(a[0], "/jobs/wc.wasm");
        let joined = a.join(" ");
        for part in [
            "--inputs /jobs/corpus",
            "--replicas 2",
            "--max-price 0.5",
            "--arg --min --arg 3",
            "--follow-symlinks",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        let parsed = StageArgs::try_parse_from(&a).unwrap().submit;
        assert_eq!(parsed.replicas, 2);
        assert_eq!(parsed.args, ["--min", "3"]);
        assert_eq!(parsed.inputs, Some(PathBuf::from("/jobs/corpus")));
    }

    #[test]
    fn a_stage_without_inputs_takes_the_outputs_of_the_one_before() {
        let up = JobId([7; 16]);
        let a = argv(1, &HashMap::new(), Some(up));
        let parsed = StageArgs::try_parse_from(&a).unwrap().submit;
        assert_eq!(parsed.inputs_from.map(|j| j.to_string()), Some(up.to_string()));
        assert_eq!(parsed.deadline, std::time::Duration::from_secs(120));
        let t = parse(FILE).unwrap();
        assert!(stage_argv(&t[1], Path::new("."), &HashMap::new(), None).is_err());
    }

    #[test]
    fn the_example_pipeline_file_is_a_job_file_of_two_stages() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.toml");
        let stages = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(stages.len(), 2);
        let up = JobId([1; 16]);
        let base = Path::new("examples");
        let first = stage_argv(&stages[0], base, &HashMap::new(), None).unwrap();
        assert!(
            StageArgs::try_parse_from(&first).is_err(),
            "DATASET is a placeholder, not an id"
        );
        let second = stage_argv(&stages[1], base, &HashMap::new(), Some(up)).unwrap();
        let parsed = StageArgs::try_parse_from(&second).unwrap().submit;
        assert_eq!(parsed.args, ["10"]);
    }

    #[test]
    fn inputs_from_names_an_earlier_stage() {
        let text = "[[stage]]\nmodule = \"a.wasm\"\ninputs_from = \"count\"\n";
        let t = parse(text).unwrap();
        let id = JobId([9; 16]);
        let stages = HashMap::from([("count".to_owned(), id)]);
        let a = stage_argv(&t[0], Path::new("."), &stages, None).unwrap();
        assert_eq!(a[1..], ["--inputs-from".to_owned(), id.to_string()]);
    }

    #[test]
    fn a_misspelt_flag_or_a_command_line_key_is_refused() {
        let t = parse("[[stage]]\nmodule = \"a.wasm\"\ninput = \"x\"\nreplicaz = 2\n").unwrap();
        let a = stage_argv(&t[0], Path::new("."), &HashMap::new(), None).unwrap();
        let err = StageArgs::try_parse_from(&a).unwrap_err();
        let said = stage_error("count", &err).to_string();
        assert_eq!(
            said,
            "stage count: unknown key `replicaz` (did you mean `replicas`?); a stage's keys are `agora job submit`'s flags"
        );
        let t = parse("[[stage]]\nmodule = \"a.wasm\"\ninput = \"x\"\nreplicas = \"two\"\n").unwrap();
        let a = stage_argv(&t[0], Path::new("."), &HashMap::new(), None).unwrap();
        let said = stage_error("count", &StageArgs::try_parse_from(&a).unwrap_err()).to_string();
        assert!(
            said.starts_with("stage count: invalid value 'two' for '--replicas"),
            "{said}"
        );
        let t = parse("[[stage]]\nmodule = \"a.wasm\"\ninput = \"x\"\njson = true\n").unwrap();
        assert!(stage_argv(&t[0], Path::new("."), &HashMap::new(), None).is_err());
        assert!(parse("[job]\nmodule = \"a\"\n").is_err());
        assert!(parse("").is_err());
    }
}
