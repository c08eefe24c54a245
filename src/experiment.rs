//! The experiment file: figment layers (file, `FUNNEL_*` environment,
//! `--set` overrides), the typed top-level spec, and its resolution against
//! the registry into one fully explicit configuration.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use funnel_api::{ComponentKind, ParamError, Registry, Targets, WindowCuts};
use serde::{Deserialize, Serialize};

/// `[experiment]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    /// Names the run folder, the report folder and the tracking experiment.
    pub name: String,
    /// Every random choice of the run derives from it; 42 when absent.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub description: String,
}

fn default_seed() -> u64 {
    42
}

/// `[train]`: declared in `funnel_api` because the model reads it too.
pub use funnel_api::TrainConfig;

/// A component table: `type` names the registered plugin, the rest are its
/// parameters.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub params: toml::Table,
}

impl<'de> Deserialize<'de> for ComponentSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written rather than `flatten` so the plugin, not serde, judges
        // the remaining keys (`deny_unknown_fields` does not work with flatten).
        let mut params = toml::Table::deserialize(d)?;
        match params.remove("type") {
            Some(toml::Value::String(kind)) => Ok(ComponentSpec { kind, params }),
            Some(other) => Err(serde::de::Error::custom(format!(
                "`type` must be a string naming a registered plugin, found {}",
                other.type_str()
            ))),
            None => Err(serde::de::Error::custom("missing `type` (the registered plugin name)")),
        }
    }
}

/// The experiment file as written, every table required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub experiment: ExperimentMeta,
    pub dataset: ComponentSpec,
    pub features: ComponentSpec,
    pub sampler: ComponentSpec,
    pub model: ComponentSpec,
    #[serde(default)]
    pub train: TrainConfig,
    pub evaluation: ComponentSpec,
    /// `[[baselines]]`: rankers evaluated on the same test cases for context
    /// (none when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<ComponentSpec>,
    /// Several candidate generators merged per user (see [`crate::retrieval`]);
    /// none: the model alone, as served through `[index]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::retrieval::RetrievalSpec>,
    /// Orders `[retrieval]`'s candidates into the list shown (e.g. MMR for
    /// diversity); none: by relevance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<ComponentSpec>,
    pub index: ComponentSpec,
    pub tracking: ComponentSpec,
    /// A grid or random search over this experiment (see [`crate::sweep`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::sweep::SweepSpec>,
}

impl ExperimentSpec {
    /// The one component of a single-table kind.
    ///
    /// # Panics
    /// For a list kind (`[[baselines]]`): use [`ExperimentSpec::components`].
    pub fn component(&self, kind: ComponentKind) -> &ComponentSpec {
        match self.components(kind) {
            [one] if !kind.is_list() => one,
            _ => panic!("{} is a list of components, not one", kind.header()),
        }
    }

    /// Every component of `kind`: exactly one for a table, any number for a
    /// list kind, in file order.
    pub fn components(&self, kind: ComponentKind) -> &[ComponentSpec] {
        match kind {
            ComponentKind::Dataset => std::slice::from_ref(&self.dataset),
            ComponentKind::Features => std::slice::from_ref(&self.features),
            ComponentKind::Sampler => std::slice::from_ref(&self.sampler),
            ComponentKind::Model => std::slice::from_ref(&self.model),
            ComponentKind::Evaluation => std::slice::from_ref(&self.evaluation),
            ComponentKind::Index => std::slice::from_ref(&self.index),
            ComponentKind::Tracking => std::slice::from_ref(&self.tracking),
            ComponentKind::Baseline => &self.baselines,
            ComponentKind::Rerank => self.rerank.as_slice(),
        }
    }

    fn components_mut(&mut self, kind: ComponentKind) -> &mut [ComponentSpec] {
        match kind {
            ComponentKind::Dataset => std::slice::from_mut(&mut self.dataset),
            ComponentKind::Features => std::slice::from_mut(&mut self.features),
            ComponentKind::Sampler => std::slice::from_mut(&mut self.sampler),
            ComponentKind::Model => std::slice::from_mut(&mut self.model),
            ComponentKind::Evaluation => std::slice::from_mut(&mut self.evaluation),
            ComponentKind::Index => std::slice::from_mut(&mut self.index),
            ComponentKind::Tracking => std::slice::from_mut(&mut self.tracking),
            ComponentKind::Baseline => &mut self.baselines,
            ComponentKind::Rerank => self.rerank.as_mut_slice(),
        }
    }

    /// What every component's builder is told before the dataset is known.
    pub fn build_cx(&self) -> funnel_api::BuildCx {
        funnel_api::BuildCx { seed: self.experiment.seed, train: self.train.clone(), ..Default::default() }
    }

    /// `[model] type = "youtube_dnn"`: how errors name a component
    /// (`[[baselines]]` for a list kind as a whole).
    pub fn describe(&self, kind: ComponentKind) -> String {
        match self.components(kind) {
            [one] if !kind.is_list() => format!("[{kind}] type = \"{}\"", one.kind),
            _ => kind.header(),
        }
    }

    /// Component `index` (0-based) of `kind` as errors name it:
    /// `[[baselines]] #2 type = "covisitation"` (1-based), or as
    /// [`ExperimentSpec::describe`] for a single-table kind.
    pub fn describe_entry(&self, kind: ComponentKind, index: usize) -> String {
        match self.components(kind).get(index) {
            Some(c) if kind.is_list() => format!("{} #{} type = \"{}\"", kind.header(), index + 1, c.kind),
            _ => self.describe(kind),
        }
    }

    /// A name for each `[[baselines]]` entry, in file order: its type, and
    /// `type#2`, `type#3`, ... for later entries of the same type. Metrics,
    /// reports and flattened parameters use it.
    pub fn baseline_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.baselines.len());
        for (i, b) in self.baselines.iter().enumerate() {
            let n = 1 + self.baselines[..i].iter().filter(|e| e.kind == b.kind).count();
            names.push(if n == 1 { b.kind.clone() } else { format!("{}#{n}", b.kind) });
        }
        names
    }

    /// The configuration as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an experiment spec always serializes")
    }

    /// The parameters a run records in its tracker: every resolved key but
    /// those a component leaves unused with these values
    /// ([`funnel_api::Params::unused`]), `[[baselines]]` (each baseline's
    /// own run records them) and `[sweep]` (the sweep's run records it).
    pub fn tracked_params(&self, registry: &Registry) -> Vec<(String, String)> {
        let mut unused = std::collections::BTreeSet::new();
        for kind in ComponentKind::ALL.iter().copied().filter(|k| !k.is_list()) {
            for c in self.components(kind) {
                for key in registry.unused(kind, &c.kind, c.params.clone()).unwrap_or_default() {
                    unused.insert(format!("{}.{key}", kind.table()));
                }
            }
        }
        let baselines = format!("{}.", ComponentKind::Baseline.table());
        self.flatten()
            .into_iter()
            .filter(|(k, _)| !unused.contains(k) && !k.starts_with(&baselines) && !k.starts_with("sweep."))
            .collect()
    }

    /// Every parameter as `(dotted.key, value)`, for trackers; a baseline's
    /// under its name (`baselines.covisitation.window`,
    /// `baselines.covisitation#2.type`).
    pub fn flatten(&self) -> Vec<(String, String)> {
        let mut value = toml::Value::try_from(self).expect("an experiment spec always serializes");
        if let toml::Value::Table(t) = &mut value {
            t.remove(ComponentKind::Baseline.table());
        }
        let mut out = Vec::new();
        flatten_into("", &value, &mut out);
        for (name, b) in self.baseline_names().iter().zip(&self.baselines) {
            let prefix = format!("{}.{name}", ComponentKind::Baseline.table());
            out.push((format!("{prefix}.type"), b.kind.clone()));
            flatten_into(&prefix, &toml::Value::Table(b.params.clone()), &mut out);
        }
        out
    }
}

/// `v` as `(dotted.key, value)` pairs under `prefix`.
pub(crate) fn flatten_into(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_into(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// An experiment loaded and checked against the registry.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The file it came from.
    pub path: PathBuf,
    /// Fully resolved: every plugin's defaults filled in.
    pub spec: ExperimentSpec,
    /// The `--set` overrides as given, for the record.
    pub overrides: Vec<String>,
    /// The `[sweep]` trial this is (`funnel run --trial N`), applied over
    /// `overrides`.
    pub trial: Option<crate::sweep::Trial>,
}

/// Loads `path`, then `FUNNEL_*` variables, then `overrides` (`key.path=value`,
/// the value parsed as TOML, else taken as a string); later layers win.
pub fn load(path: &Path, overrides: &[String], registry: &Registry) -> Result<Experiment> {
    if !path.is_file() {
        bail!("experiment file {} does not exist", path.display());
    }
    // Parse once up front: figment reports TOML syntax errors without a line.
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Err(e) = text.parse::<toml::Table>() {
        bail!("{}: {}", path.display(), e.to_string().trim_end());
    }
    let mut figment = Figment::from(Toml::file_exact(path))
        // FUNNEL_MODEL__HIDDEN="[512]" sets model.hidden; FUNNEL_DATA_DIR is
        // the dataset plugins' data folder, not a configuration key.
        .merge(Env::prefixed("FUNNEL_").split("__").ignore(&["data_dir"]));
    for o in overrides {
        figment = figment.merge(CommandLineSet::parse(o)?);
    }
    let mut spec: ExperimentSpec = figment.extract().map_err(|e| describe_figment_error(e, path))?;
    if let Some(sweep) = &spec.sweep {
        crate::sweep::expand(sweep, spec.experiment.seed).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    for kind in ComponentKind::ALL {
        for i in 0..spec.components(kind).len() {
            let table = spec.components(kind)[i].clone();
            let what = spec.describe_entry(kind, i);
            let resolved = registry.resolve(kind, &table.kind, table.params).map_err(|e| {
                let source = e
                    .downcast_ref::<ParamError>()
                    .and_then(|p| p.key.as_ref())
                    .and_then(|key| key_metadata(&figment, kind, i, key))
                    .map_or_else(|| path.display().to_string(), source_name);
                anyhow!("{source}: {what}: {e:#}")
            })?;
            spec.components_mut(kind)[i].params = resolved;
        }
    }
    if let Some(r) = &mut spec.retrieval {
        r.resolve(registry).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    }
    if spec.rerank.is_some() && spec.retrieval.is_none() {
        bail!(
            "{}: [rerank] orders the candidates of [retrieval], and there is no [retrieval] table (add one, e.g. \
             with the single source type = \"model\")",
            path.display()
        );
    }
    check_train(&spec.train).map_err(|e| anyhow!("{}: [train] {e}", path.display()))?;
    if spec.experiment.name.trim().is_empty()
        || spec.experiment.name.contains(['/', '\\'])
        || spec.experiment.name.starts_with('.')
    {
        bail!(
            "{}: [experiment] key `name`: must be a non-empty folder name without slashes, found {:?}",
            path.display(),
            spec.experiment.name
        );
    }
    Ok(Experiment { path: path.to_path_buf(), spec, overrides: overrides.to_vec(), trial: None })
}

/// Whether `--set key=value` can change what a run measures: where it is
/// tracked and what the experiment is called cannot.
fn shapes_results(set: &str) -> bool {
    let key = set.split('=').next().unwrap_or(set).trim();
    !(key.starts_with("tracking.") || key == "tracking" || key == "experiment.name" || key == "experiment.description")
}

/// Trial `n` of the `[sweep]` in `path`: the experiment loaded with `overrides`
/// and then the trial's own `--set`s.
pub fn load_trial(path: &Path, overrides: &[String], n: usize, registry: &Registry) -> Result<Experiment> {
    let base = load(path, overrides, registry)?;
    let trials = base.trials()?;
    let t = trials.get(n).with_context(|| {
        format!("--trial {n}: the sweep has {} trials (0 to {})", trials.len(), trials.len().saturating_sub(1))
    })?;
    let sets: Vec<String> = overrides.iter().cloned().chain(t.sets()).collect();
    let mut exp = load(path, &sets, registry).with_context(|| format!("trial {n}"))?;
    exp.overrides = overrides.to_vec();
    exp.trial = Some(t.clone());
    Ok(exp)
}

impl Experiment {
    /// What tells this run from the experiment's others: `mns`, `mns ·
    /// sampler.num_negatives=200` (overrides of where it is tracked left
    /// out), and in a sweep `mns · trial 3 · seed 2` or `mns · base · seed
    /// 1` (the sweep's own overrides are its parent's).
    pub fn run_name(&self, in_sweep: bool) -> String {
        let name = &self.spec.experiment.name;
        let seed = self.spec.experiment.seed;
        match &self.trial {
            Some(t) => format!("{name} · trial {} · seed {seed}", t.index),
            None if in_sweep => format!("{name} · base · seed {seed}"),
            None => std::iter::once(name.clone())
                .chain(self.overrides.iter().filter(|o| shapes_results(o)).cloned())
                .collect::<Vec<_>>()
                .join(" · "),
        }
    }

    /// The file's description, then what this run changes.
    pub fn description(&self) -> String {
        let mut text = self.spec.experiment.description.trim().to_string();
        let mut changes = Vec::new();
        if let Some(t) = &self.trial {
            let sets: Vec<String> = t.sets().iter().map(|s| format!("`{s}`")).collect();
            changes.push(format!("trial {} (configuration {}): {}", t.index, t.config, sets.join(", ")));
        }
        let sets: Vec<String> =
            self.overrides.iter().filter(|o| shapes_results(o)).map(|s| format!("`--set {s}`")).collect();
        if !sets.is_empty() {
            changes.push(format!("overrides: {}", sets.join(", ")));
        }
        if !changes.is_empty() {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&format!(
                "This run differs from `{}` as written: {}.",
                self.path.display(),
                changes.join("; ")
            ));
        }
        text
    }

    /// The numbered trials of its `[sweep]`.
    pub fn trials(&self) -> Result<Vec<crate::sweep::Trial>> {
        let sweep = self.spec.sweep.as_ref().with_context(|| format!("{}: no [sweep] table", self.path.display()))?;
        crate::sweep::expand(sweep, self.spec.experiment.seed)
    }
}

fn check_train(t: &TrainConfig) -> Result<()> {
    if t.epochs == 0 {
        bail!("key `epochs`: must be at least 1");
    }
    if t.batch_size == 0 {
        bail!("key `batch_size`: must be at least 1");
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) {
        bail!("key `lr`: must be a positive number, found {}", t.lr);
    }
    if !(0.0..=1.0).contains(&t.lr_final_fraction) {
        bail!(
            "key `lr_final_fraction`: must be a number from 0 to 1 (a fraction of `lr`), found {}",
            t.lr_final_fraction
        );
    }
    if t.window_cuts == WindowCuts::Random && t.targets != Targets::AllPositions {
        bail!(
            "key `window_cuts`: \"random\" cuts the sequence windows of `targets = \"all_positions\"`; with \
             `targets = \"last\"` there are none (remove the key or train on every position)"
        );
    }
    if t.max_grad_norm.is_nan() || t.max_grad_norm <= 0.0 {
        bail!("key `max_grad_norm`: must be a positive number, found {}", t.max_grad_norm);
    }
    for (name, &w) in &t.outcomes {
        if !(w >= 0.0 && w.is_finite()) {
            bail!("key `outcomes.{name}`: an outcome's weight must be a number >= 0, found {w}");
        }
    }
    if !t.outcomes.is_empty() && t.outcomes.values().all(|&w| w == 0.0) {
        bail!("key `outcomes`: every weight is 0, so nothing would be trained");
    }
    if !(t.negative_feedback_weight >= 0.0 && t.negative_feedback_weight.is_finite()) {
        bail!("key `negative_feedback_weight`: must be a number >= 0, found {}", t.negative_feedback_weight);
    }
    Ok(())
}

/// Where key `key` of component `index` of `kind` was set (file, variable or `--set`).
fn key_metadata<'f>(figment: &'f Figment, kind: ComponentKind, index: usize, key: &str) -> Option<&'f Metadata> {
    if !kind.is_list() {
        return figment.find_metadata(&format!("{kind}.{key}"));
    }
    let entry = figment.find_value(kind.table()).ok()?.into_array()?.into_iter().nth(index)?;
    figment.get_metadata(entry.find(key)?.tag())
}

fn source_name(m: &Metadata) -> String {
    match &m.source {
        Some(figment::Source::File(p)) => p.display().to_string(),
        Some(other) => format!("{} ({other})", m.name),
        None => m.name.to_string(),
    }
}

/// Turns figment's errors into one line per problem naming source and key.
fn describe_figment_error(err: figment::Error, path: &Path) -> anyhow::Error {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let mut source = e.metadata.as_ref().map_or_else(|| path.display().to_string(), source_name);
            let mut key = e.path.iter().filter(|p| p.as_str() != "default").cloned().collect::<Vec<_>>().join(".");
            // `baselines.1.window` is written `[[baselines]] #2` and key `window`.
            if let Some((entry, rest)) = list_entry(&key) {
                source = format!("{source}: {entry}");
                key = rest;
            }
            let what = match &e.kind {
                figment::error::Kind::MissingField(f) => {
                    let table = if key.is_empty() { String::new() } else { format!("[{key}] ") };
                    return format!("{source}: {table}missing `{f}`");
                }
                kind => kind.to_string(),
            };
            if key.is_empty() {
                format!("{source}: {what}")
            } else {
                format!("{source}: key `{key}`: {what}")
            }
        })
        .collect();
    anyhow!("{}", lines.join("\n"))
}

/// `baselines.1.window` -> (`[[baselines]] #2`, `window`): a key inside an
/// entry of a list kind, as errors name it.
fn list_entry(key: &str) -> Option<(String, String)> {
    let kind = ComponentKind::ALL.into_iter().find(|k| k.is_list() && key.split('.').next() == Some(k.table()))?;
    let mut parts = key.splitn(3, '.').skip(1);
    let index: usize = parts.next()?.parse().ok()?;
    Some((format!("{} #{}", kind.header(), index + 1), parts.next().unwrap_or("").to_string()))
}

/// One `--set key.path=value` override as a figment provider, so errors name
/// it as their source.
struct CommandLineSet {
    raw: String,
    key: String,
    value: Value,
}

impl CommandLineSet {
    fn parse(raw: &str) -> Result<CommandLineSet> {
        let (key, text) = raw.split_once('=').ok_or_else(|| anyhow!("--set {raw}: expected key.path=value"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("--set {raw}: expected key.path=value");
        }
        let toml_value = match format!("v = {text}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed table holds v"),
            Err(_) => toml::Value::String(text.to_string()),
        };
        let value = Value::serialize(toml_value).map_err(|e| anyhow!("--set {raw}: {e}"))?;
        Ok(CommandLineSet { raw: raw.to_string(), key: key.to_string(), value })
    }
}

impl Provider for CommandLineSet {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("--set {}", self.raw))
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut value = self.value.clone();
        for part in self.key.rsplit('.') {
            let mut dict = Dict::new();
            dict.insert(part.to_string(), value);
            value = Value::from(dict);
        }
        let dict = value.into_dict().expect("built as a dict");
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[experiment]
name = "mns"
description = "1000 negatives, ml-1m"
[dataset]
type = "movielens"
[features]
type = "watch_history"
[sampler]
type = "mixed"
[model]
type = "youtube_dnn"
[evaluation]
type = "full_ranking"
[[baselines]]
type = "most_popular"
[index]
type = "exact"
[tracking]
type = "local"
[sweep]
method = "grid"
seeds = [1, 2]
[sweep.params]
"sampler.num_uniform" = [100, 200]
"#;

    fn load_with(sets: &[&str]) -> Experiment {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mns.toml");
        std::fs::write(&path, FILE).unwrap();
        let sets: Vec<String> = sets.iter().map(ToString::to_string).collect();
        load(&path, &sets, &crate::plugins::builtin()).unwrap()
    }

    #[test]
    fn runs_are_named_by_what_tells_them_apart() {
        assert_eq!(load_with(&[]).run_name(false), "mns");
        let exp = load_with(&["sampler.num_uniform=200", "tracking.type=mlflow", "experiment.name=mns"]);
        assert_eq!(exp.run_name(false), "mns · sampler.num_uniform=200");
        let base = load_with(&["experiment.seed=1"]);
        assert_eq!(base.run_name(true), "mns · base · seed 1");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mns.toml");
        std::fs::write(&path, FILE).unwrap();
        let trial = load_trial(&path, &[], 3, &crate::plugins::builtin()).unwrap();
        assert_eq!(trial.run_name(true), "mns · trial 3 · seed 2");
        let text = trial.description();
        assert!(text.starts_with("1000 negatives, ml-1m\n\nThis run differs from"), "{text}");
        assert!(text.contains("trial 3 (configuration 1): `sampler.num_uniform=200`, `experiment.seed=2`"), "{text}");
    }

    #[test]
    fn the_description_states_the_overrides_that_shape_results() {
        assert_eq!(load_with(&["tracking.type=mlflow"]).description(), "1000 negatives, ml-1m");
        let text = load_with(&["dataset.variant=ml-100k", "tracking.type=mlflow"]).description();
        assert!(text.ends_with("overrides: `--set dataset.variant=ml-100k`."), "{text}");
    }

    #[test]
    fn tracked_parameters_leave_out_what_nothing_uses() {
        let reg = crate::plugins::builtin();
        let keys =
            |exp: &Experiment| -> Vec<String> { exp.spec.tracked_params(&reg).into_iter().map(|p| p.0).collect() };
        let mean = keys(&load_with(&[]));
        assert!(mean.contains(&"model.dim".to_string()), "{mean:?}");
        for absent in ["model.gru_hidden", "model.gru_pooling", "baselines.most_popular.type", "sweep.method"] {
            assert!(!mean.iter().any(|k| k == absent), "{absent} in {mean:?}");
        }
        let gru = keys(&load_with(&["model.sequence_encoder=gru"]));
        assert!(gru.contains(&"model.gru_hidden".to_string()) && gru.contains(&"model.gru_pooling".to_string()));
    }
}
