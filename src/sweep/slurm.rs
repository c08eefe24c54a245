//! `funnel sweep FILE --emit slurm`: the sweep as a Slurm array job. Each
//! array task runs one unfinished trial (`funnel run FILE ...`, the same
//! command a local sweep runs); a last job, started when the array ends,
//! runs `funnel sweep FILE --sweep-dir DIR`, which finds every trial finished
//! and writes the report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use funnel_api::Registry;

use super::runner::{finished_runs, plan, start_parent, SweepOptions};
use crate::run_folder::{create_unique_dir, write, Timestamp};

/// Files written for the cluster.
#[derive(Debug)]
pub struct Emitted {
    pub sweep_dir: PathBuf,
    pub submit: PathBuf,
    pub array: PathBuf,
    pub tasks: usize,
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

pub fn emit(file: &Path, sets: &[String], registry: &Registry, opts: &SweepOptions) -> Result<Emitted> {
    let (base, jobs) = plan(file, sets, registry)?;
    let name = base.spec.experiment.name.clone();
    let finished = finished_runs(&opts.runs_dir, &name);
    let pending: Vec<_> = jobs.iter().filter(|j| !finished.contains_key(&j.config_hash)).collect();
    if pending.is_empty() {
        bail!("every run of this sweep has finished already; `funnel sweep {}` writes its report", file.display());
    }
    let sweep_dir = match &opts.sweep_dir {
        Some(d) => d.clone(),
        None => create_unique_dir(&opts.runs_dir.join(&name), &format!("sweep-{}", Timestamp::now().compact))?,
    };
    let sweep_dir = absolute(&sweep_dir)?;
    std::fs::create_dir_all(sweep_dir.join("logs"))?;
    // The parent run exists before any trial starts, so trials nest under it;
    // the final report step finishes it.
    start_parent(&base, file, registry, &sweep_dir, jobs.len())?;

    let (cwd, funnel, file_abs) = (std::env::current_dir()?, absolute(&opts.funnel)?, absolute(file)?);
    let (runs_dir, reports_dir) = (absolute(&opts.runs_dir)?, absolute(&opts.reports_dir)?);
    let tasks: String = pending
        .iter()
        .map(|j| format!("{}\n", j.args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")))
        .collect();
    write(&sweep_dir.join("tasks.txt"), &tasks)?;
    let d = |p: &Path| quote(&p.display().to_string());
    let array = format!(
        "#!/bin/bash\n\
         # One unfinished run of the sweep per array task: line N+1 of tasks.txt\n\
         # holds the arguments of task N after `funnel run FILE`.\n\
         #SBATCH --job-name=funnel-{name}\n\
         #SBATCH --array=0-{last}%{parallel}\n\
         #SBATCH --output={logs}/slurm-%a.log\n\
         #SBATCH --cpus-per-task=2\n\
         #SBATCH --mem=8G\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {tasks})\n\
         eval \"set -- $line\"\n\
         exec {funnel} run {file} \"$@\" --parent-run {dir} --runs-dir {runs} --reports-dir {reports}\n",
        last = pending.len() - 1,
        parallel = opts.jobs.max(1),
        logs = sweep_dir.join("logs").display(),
        cwd = d(&cwd),
        tasks = d(&sweep_dir.join("tasks.txt")),
        funnel = d(&funnel),
        file = d(&file_abs),
        dir = d(&sweep_dir),
        runs = d(&runs_dir),
        reports = d(&reports_dir),
    );
    let array_path = sweep_dir.join("trials.sbatch");
    write(&array_path, &array)?;
    let user_sets: String = sets.iter().map(|s| format!(" --set {}", quote(s))).collect();
    let report_command = format!(
        "cd {} && {} sweep {}{user_sets} --sweep-dir {} --runs-dir {} --reports-dir {}",
        d(&cwd),
        d(&funnel),
        d(&file_abs),
        d(&sweep_dir),
        d(&runs_dir),
        d(&reports_dir)
    );
    let submit = format!(
        "#!/bin/bash\n\
         # Submits the sweep's runs as an array job, then its report as a job that\n\
         # starts when the array has ended (whatever the outcome of each task).\n\
         set -euo pipefail\n\
         array=$(sbatch --parsable {array})\n\
         report=$(sbatch --parsable --dependency=afterany:$array --job-name=funnel-{name}-report \
         --output={logs}/slurm-report.log --wrap {wrap})\n\
         echo \"runs: job $array ({n} tasks); report: job $report\"\n",
        array = d(&array_path),
        logs = sweep_dir.join("logs").display(),
        wrap = quote(&report_command),
        n = pending.len(),
    );
    let submit_path = sweep_dir.join("submit.sh");
    write(&submit_path, &submit)?;
    for p in [&array_path, &submit_path] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(Emitted { sweep_dir, submit: submit_path, array: array_path, tasks: pending.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_bash() {
        for s in ["plain", "model.hidden=[512, 256]", "it's", "$HOME `x` \"y\""] {
            let out =
                std::process::Command::new("bash").arg("-c").arg(format!("printf %s {}", quote(s))).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
