//! The `[sweep]` table: a grid or random search over dotted configuration
//! paths, every configuration repeated per seed. Expansion is pure: the same
//! file always gives the same numbered trials, so a trial is a
//! self-contained command (`funnel run FILE --trial N`).

pub mod report;
pub mod runner;
pub mod slurm;
pub mod stats;

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[sweep]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub method: Method,
    /// Configurations drawn by a random search (ignored by a grid).
    #[serde(default)]
    pub trials: usize,
    /// The validation metric that ranks configurations (default `recall@10`).
    #[serde(default = "default_metric")]
    pub metric: String,
    #[serde(default)]
    pub goal: Goal,
    /// Every configuration runs once per seed (default: the experiment's seed).
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Dotted configuration path -> values (a list) or a distribution.
    pub params: BTreeMap<String, Space>,
}

fn default_metric() -> String {
    "recall@10".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Grid,
    Random,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    #[default]
    Maximize,
    Minimize,
}

/// The values one parameter takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Space {
    Values(Vec<toml::Value>),
    Distribution(Distribution),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Uniform { low: f64, high: f64 },
    Loguniform { low: f64, high: f64 },
    Int { low: i64, high: i64 },
    Choice { values: Vec<toml::Value> },
}

/// One run of a sweep: configuration `config` with `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub index: usize,
    pub config: usize,
    pub seed: u64,
    /// `(dotted path, value)`, sorted by path.
    pub overrides: Vec<(String, toml::Value)>,
}

impl Trial {
    /// The trial as `--set` arguments, the seed included.
    pub fn sets(&self) -> Vec<String> {
        let mut sets: Vec<String> = self.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sets.push(format!("experiment.seed={}", self.seed));
        sets
    }
}

/// Every trial of `spec`, numbered from 0; `base_seed` is the experiment's
/// seed (the default seed list, and the random search's draws).
pub fn expand(spec: &SweepSpec, base_seed: u64) -> Result<Vec<Trial>> {
    if spec.params.is_empty() {
        bail!("[sweep.params] names no parameter");
    }
    for (key, space) in &spec.params {
        check_space(key, space)?;
    }
    let configs = match spec.method {
        Method::Grid => grid(spec)?,
        Method::Random => random(spec, base_seed)?,
    };
    let seeds = if spec.seeds.is_empty() { vec![base_seed] } else { spec.seeds.clone() };
    let mut trials = Vec::with_capacity(configs.len() * seeds.len());
    for (config, overrides) in configs.into_iter().enumerate() {
        for &seed in &seeds {
            trials.push(Trial { index: trials.len(), config, seed, overrides: overrides.clone() });
        }
    }
    Ok(trials)
}

fn check_space(key: &str, space: &Space) -> Result<()> {
    match space {
        Space::Values(v) | Space::Distribution(Distribution::Choice { values: v }) if v.is_empty() => {
            bail!("[sweep.params] \"{key}\": no values to choose from")
        }
        Space::Distribution(Distribution::Uniform { low, high }) if low.is_nan() || high.is_nan() || low >= high => {
            bail!("[sweep.params] \"{key}\": uniform needs low < high, got {low} and {high}")
        }
        Space::Distribution(Distribution::Loguniform { low, high })
            if low.is_nan() || high.is_nan() || *low <= 0.0 || low >= high =>
        {
            bail!("[sweep.params] \"{key}\": loguniform needs 0 < low < high, got {low} and {high}")
        }
        Space::Distribution(Distribution::Int { low, high }) if low > high => {
            bail!("[sweep.params] \"{key}\": int needs low <= high, got {low} and {high}")
        }
        _ => Ok(()),
    }
}

/// The cartesian product of every list, the last path (sorted) varying fastest.
fn grid(spec: &SweepSpec) -> Result<Vec<Vec<(String, toml::Value)>>> {
    let mut configs: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, space) in &spec.params {
        let values = match space {
            Space::Values(v) => v,
            Space::Distribution(Distribution::Choice { values }) => values,
            Space::Distribution(_) => {
                bail!("[sweep.params] \"{key}\": a grid search needs a list of values, not a distribution")
            }
        };
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    Ok(configs)
}

fn random(spec: &SweepSpec, base_seed: u64) -> Result<Vec<Vec<(String, toml::Value)>>> {
    if spec.trials == 0 {
        bail!("[sweep] a random search needs `trials` >= 1");
    }
    let mut rng = StdRng::seed_from_u64(base_seed ^ 0x5eed_5eed);
    Ok((0..spec.trials)
        .map(|_| spec.params.iter().map(|(key, space)| (key.clone(), draw(space, &mut rng))).collect())
        .collect())
}

fn draw(space: &Space, rng: &mut StdRng) -> toml::Value {
    match space {
        Space::Values(values) | Space::Distribution(Distribution::Choice { values }) => {
            values[rng.gen_range(0..values.len())].clone()
        }
        Space::Distribution(Distribution::Uniform { low, high }) => {
            toml::Value::Float(significant(rng.gen_range(*low..*high), *low, *high))
        }
        Space::Distribution(Distribution::Loguniform { low, high }) => {
            toml::Value::Float(significant(rng.gen_range(low.ln()..high.ln()).exp(), *low, *high))
        }
        Space::Distribution(Distribution::Int { low, high }) => toml::Value::Integer(rng.gen_range(*low..=*high)),
    }
}

/// `x` to four significant digits (kept inside `[low, high]`): configurations
/// read `lr = 0.002318`, not `0.0023183594364744945`, in reports and commands,
/// and four digits are finer than any hyperparameter's effect.
fn significant(x: f64, low: f64, high: f64) -> f64 {
    // Through decimal text, so the result is the f64 closest to those digits.
    let rounded: f64 = format!("{x:.3e}").parse().unwrap_or(x);
    rounded.clamp(low, high)
}

/// One run a sweep needs: a trial, or the base configuration with one seed.
#[derive(Debug, Clone)]
pub struct Job {
    /// `trial 3` or `base`.
    pub label: String,
    /// The sweep configuration; `None` for the base.
    pub config: Option<usize>,
    pub seed: u64,
    /// `(path, value)` the configuration sets (empty for the base).
    pub overrides: Vec<(String, toml::Value)>,
    /// Arguments after `funnel run FILE` (user `--set`s included).
    pub args: Vec<String>,
    pub config_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_values_keep_four_significant_digits() {
        assert_eq!(significant(0.0023183594364744945, 1e-4, 1e-2), 0.002318);
        assert_eq!(significant(123.456, 0.0, 1000.0), 123.5);
        assert_eq!(significant(0.99996, 0.5, 0.9999), 0.9999);
    }

    fn spec(text: &str) -> SweepSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_grid_is_the_cartesian_product_repeated_per_seed() {
        let s = spec(
            r#"
            method = "grid"
            seeds = [1, 2]
            [params]
            "model.hidden" = [[256], [512, 256]]
            "train.lr" = [0.001, 0.01]
            "#,
        );
        let trials = expand(&s, 42).unwrap();
        assert_eq!(trials.len(), 8);
        assert_eq!(trials[0].sets(), ["model.hidden=[256]", "train.lr=0.001", "experiment.seed=1"]);
        assert_eq!(trials[1].sets(), ["model.hidden=[256]", "train.lr=0.001", "experiment.seed=2"]);
        assert_eq!(trials[2].sets(), ["model.hidden=[256]", "train.lr=0.01", "experiment.seed=1"]);
        assert_eq!(trials[7].sets(), ["model.hidden=[512, 256]", "train.lr=0.01", "experiment.seed=2"]);
        assert_eq!(trials.iter().map(|t| t.config).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn a_random_search_draws_within_each_distribution_reproducibly() {
        let s = spec(
            r#"
            method = "random"
            trials = 50
            [params]
            "train.lr" = { dist = "loguniform", low = 1e-4, high = 1e-2 }
            "model.temperature" = { dist = "uniform", low = 0.05, high = 0.5 }
            "sampler.num_uniform" = { dist = "int", low = 100, high = 2000 }
            "model.loss" = { dist = "choice", values = ["softmax", "bce"] }
            "#,
        );
        let a = expand(&s, 7).unwrap();
        assert_eq!(a, expand(&s, 7).unwrap());
        assert_ne!(a, expand(&s, 8).unwrap());
        assert_eq!(a.len(), 50);
        for t in &a {
            for (k, v) in &t.overrides {
                match k.as_str() {
                    "train.lr" => assert!((1e-4..1e-2).contains(&v.as_float().unwrap())),
                    "model.temperature" => assert!((0.05..0.5).contains(&v.as_float().unwrap())),
                    "sampler.num_uniform" => assert!((100..=2000).contains(&v.as_integer().unwrap())),
                    "model.loss" => assert!(["softmax", "bce"].contains(&v.as_str().unwrap())),
                    other => panic!("unexpected key {other}"),
                }
            }
        }
        // Log-uniform: about half the draws below the geometric middle 1e-3.
        let lr = |t: &Trial| t.overrides.iter().find(|(k, _)| k == "train.lr").unwrap().1.as_float().unwrap();
        let below = a.iter().filter(|t| lr(t) < 1e-3).count();
        assert!((15..=35).contains(&below), "{below} of 50 below 1e-3");
    }

    #[test]
    fn bad_sweeps_are_explained() {
        let err = |text: &str| expand(&spec(text), 1).unwrap_err().to_string();
        assert!(err("method = \"grid\"\n[params]\n\"a.b\" = { dist = \"uniform\", low = 0.0, high = 1.0 }")
            .contains("needs a list of values"));
        assert!(err("method = \"random\"\n[params]\n\"a.b\" = [1]").contains("trials"));
        assert!(err("method = \"grid\"\n[params]\n\"a.b\" = []").contains("no values"));
        assert!(err(
            "method = \"random\"\ntrials = 2\n[params]\n\"a.b\" = { dist = \"loguniform\", low = 0.0, high = 1.0 }"
        )
        .contains("0 < low < high"));
        assert!(err("method = \"grid\"\n[params]").contains("names no parameter"));
    }
}
