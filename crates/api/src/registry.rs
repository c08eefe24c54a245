//! The registry of plugins: name -> documented builder, one shelf per kind.
//!
//! Built-ins register exactly as a user's plugin would, through the typed
//! methods below; the core resolves `type = "..."` here and nowhere else.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, Result};

use crate::{Baseline, Dataset, Evaluator, Features, Index, Model, Params, Reranker, Sampler, Tracker, TrainConfig};

/// What a builder may know besides its own parameters.
#[derive(Debug, Clone, Default)]
pub struct BuildCx {
    /// `[experiment] seed`: every random choice derives from it.
    pub seed: u64,
    /// Users and items of the loaded dataset (0 while the dataset itself is built).
    pub n_users: usize,
    pub n_items: usize,
    /// Distinct item categories of the loaded dataset (0 when it has none,
    /// or before it is loaded).
    pub n_categories: usize,
    /// Longest history the features plugin produces.
    pub max_history: usize,
    /// `[train]`: a model honours its `lr`, `batch_size` and `device`
    /// (see [`TrainConfig`]).
    pub train: TrainConfig,
    /// The side inputs the features plugin produced (empty before it ran).
    pub inputs: std::sync::Arc<crate::SideInputs>,
}

impl BuildCx {
    /// Records what the features plugin built, for the components built after it.
    pub fn learn_examples(&mut self, examples: &crate::ExampleSet) {
        self.max_history = examples.max_history;
        self.inputs = std::sync::Arc::new(examples.inputs.clone());
    }
}

/// The kinds of component, one per experiment table (or, for a list kind,
/// one per array of tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentKind {
    Dataset,
    Features,
    Sampler,
    Model,
    Evaluation,
    Index,
    Tracking,
    /// `[[baselines]]`: any number, none by default.
    Baseline,
    /// `[rerank]`: optional; orders `[retrieval]`'s candidates.
    Rerank,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 9] = [
        ComponentKind::Dataset,
        ComponentKind::Features,
        ComponentKind::Sampler,
        ComponentKind::Model,
        ComponentKind::Evaluation,
        ComponentKind::Index,
        ComponentKind::Tracking,
        ComponentKind::Baseline,
        ComponentKind::Rerank,
    ];

    /// The experiment table that names a component of this kind (the array
    /// of tables, for a list kind).
    pub fn table(self) -> &'static str {
        match self {
            ComponentKind::Dataset => "dataset",
            ComponentKind::Features => "features",
            ComponentKind::Sampler => "sampler",
            ComponentKind::Model => "model",
            ComponentKind::Evaluation => "evaluation",
            ComponentKind::Index => "index",
            ComponentKind::Tracking => "tracking",
            ComponentKind::Baseline => "baselines",
            ComponentKind::Rerank => "rerank",
        }
    }

    /// Whether an experiment may leave the table out (`[rerank]`); list
    /// kinds may always be empty.
    pub fn is_optional(self) -> bool {
        matches!(self, ComponentKind::Rerank | ComponentKind::Baseline)
    }

    /// Whether an experiment lists any number of these as an array of tables
    /// (`[[baselines]]`) rather than exactly one table.
    pub fn is_list(self) -> bool {
        matches!(self, ComponentKind::Baseline)
    }

    /// How the experiment file writes the table's header: `[model]`, `[[baselines]]`.
    pub fn header(self) -> String {
        if self.is_list() {
            format!("[[{}]]", self.table())
        } else {
            format!("[{}]", self.table())
        }
    }

    /// One component of this kind in prose: `model`, `baseline`.
    pub fn noun(self) -> &'static str {
        match self {
            ComponentKind::Baseline => "baseline",
            ComponentKind::Rerank => "re-ranker",
            other => other.table(),
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

/// One parameter as `funnel plugins` shows it: `(key, default rendered as
/// TOML or "(unset)", doc)`.
pub type ParamRow = (String, String, String);

/// A registered component as `cargo xtask plugins` shows it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub kind: ComponentKind,
    pub name: &'static str,
    pub doc: &'static str,
    /// Every parameter, in declaration order.
    pub params: Vec<ParamRow>,
    /// The defaults as a TOML table, exactly as the plugin would see them.
    pub defaults: toml::Table,
}

type Build<T> = Box<dyn Fn(toml::Table, &BuildCx) -> Result<Box<T>> + Send + Sync>;
type Resolve = Box<dyn Fn(toml::Table) -> Result<toml::Table> + Send + Sync>;
type Unused = Box<dyn Fn(toml::Table) -> Result<Vec<&'static str>> + Send + Sync>;

struct Entry<T: ?Sized> {
    info: PluginInfo,
    build: Build<T>,
    resolve: Resolve,
    unused: Unused,
}

struct Shelf<T: ?Sized> {
    kind: ComponentKind,
    entries: BTreeMap<&'static str, Entry<T>>,
}

impl<T: ?Sized> Shelf<T> {
    fn new(kind: ComponentKind) -> Self {
        Shelf { kind, entries: BTreeMap::new() }
    }

    fn insert<P: Params>(&mut self, name: &'static str, doc: &'static str, build: fn(P, &BuildCx) -> Result<Box<T>>)
    where
        T: 'static,
    {
        let info = describe::<P>(self.kind, name, doc);
        let build: Build<T> = Box::new(move |table, cx| build(parse_params::<P>(table)?, cx));
        let resolve: Resolve = Box::new(|table| {
            let params = parse_params::<P>(table)?;
            match toml::Value::try_from(params)? {
                toml::Value::Table(t) => Ok(t),
                other => Err(anyhow!("parameters serialized to {other}, not a table")),
            }
        });
        let unused: Unused = Box::new(|table| Ok(parse_params::<P>(table)?.unused()));
        let previous = self.entries.insert(name, Entry { info, build, resolve, unused });
        assert!(previous.is_none(), "{} `{name}` registered twice", self.kind.noun());
    }

    fn entry(&self, name: &str) -> Result<&Entry<T>> {
        self.entries.get(name).ok_or_else(|| {
            let known: Vec<_> = self.entries.keys().map(|k| format!("\"{k}\"")).collect();
            anyhow!(
                "unknown {} type \"{name}\"; registered {} types: {}",
                self.kind.noun(),
                self.kind.noun(),
                if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
            )
        })
    }

    fn build(&self, name: &str, table: toml::Table, cx: &BuildCx) -> Result<Box<T>> {
        (self.entry(name)?.build)(table, cx)
    }

    fn resolve(&self, name: &str, table: toml::Table) -> Result<toml::Table> {
        (self.entry(name)?.resolve)(table)
    }

    fn unused(&self, name: &str, table: toml::Table) -> Result<Vec<&'static str>> {
        (self.entry(name)?.unused)(table)
    }
}

/// Every registered component, by kind and name.
pub struct Registry {
    datasets: Shelf<dyn Dataset>,
    features: Shelf<dyn Features>,
    samplers: Shelf<dyn Sampler>,
    models: Shelf<dyn Model>,
    evaluators: Shelf<dyn Evaluator>,
    indexes: Shelf<dyn Index>,
    trackers: Shelf<dyn Tracker>,
    baselines: Shelf<dyn Baseline>,
    rerankers: Shelf<dyn Reranker>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

macro_rules! kinds {
    ($($shelf:ident: $Trait:ident, $register:ident, $build:ident;)*) => {
        impl Registry {
            $(
                #[doc = concat!("Registers a `", stringify!($Trait), "` under `name` (its TOML `type`).")]
                pub fn $register<P: Params>(
                    &mut self,
                    name: &'static str,
                    doc: &'static str,
                    build: fn(P, &BuildCx) -> Result<Box<dyn $Trait>>,
                ) {
                    self.$shelf.insert(name, doc, build)
                }

                #[doc = concat!("Builds the `", stringify!($Trait), "` registered as `name` from its table (without `type`).")]
                pub fn $build(&self, name: &str, table: toml::Table, cx: &BuildCx) -> Result<Box<dyn $Trait>> {
                    self.$shelf.build(name, table, cx)
                }
            )*

            /// Every registered component, grouped by kind, names sorted.
            pub fn plugins(&self) -> Vec<&PluginInfo> {
                let mut all = Vec::new();
                $( all.extend(self.$shelf.entries.values().map(|e| &e.info)); )*
                all
            }
        }
    };
}

kinds! {
    datasets: Dataset, dataset, build_dataset;
    features: Features, features, build_features;
    samplers: Sampler, sampler, build_sampler;
    models: Model, model, build_model;
    evaluators: Evaluator, evaluation, build_evaluator;
    indexes: Index, index, build_index;
    trackers: Tracker, tracking, build_tracker;
    baselines: Baseline, baseline, build_baseline;
    rerankers: Reranker, rerank, build_reranker;
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            datasets: Shelf::new(ComponentKind::Dataset),
            features: Shelf::new(ComponentKind::Features),
            samplers: Shelf::new(ComponentKind::Sampler),
            models: Shelf::new(ComponentKind::Model),
            evaluators: Shelf::new(ComponentKind::Evaluation),
            indexes: Shelf::new(ComponentKind::Index),
            trackers: Shelf::new(ComponentKind::Tracking),
            baselines: Shelf::new(ComponentKind::Baseline),
            rerankers: Shelf::new(ComponentKind::Rerank),
        }
    }

    /// The registered component of `kind` called `name`, if any.
    pub fn info(&self, kind: ComponentKind, name: &str) -> Option<&PluginInfo> {
        self.plugins().into_iter().find(|p| p.kind == kind && p.name == name)
    }

    /// Checks that `table` deserializes into the parameters of `kind`/`name`
    /// and returns them with every default filled in.
    pub fn resolve(&self, kind: ComponentKind, name: &str, table: toml::Table) -> Result<toml::Table> {
        match kind {
            ComponentKind::Dataset => self.datasets.resolve(name, table),
            ComponentKind::Features => self.features.resolve(name, table),
            ComponentKind::Sampler => self.samplers.resolve(name, table),
            ComponentKind::Model => self.models.resolve(name, table),
            ComponentKind::Evaluation => self.evaluators.resolve(name, table),
            ComponentKind::Index => self.indexes.resolve(name, table),
            ComponentKind::Tracking => self.trackers.resolve(name, table),
            ComponentKind::Baseline => self.baselines.resolve(name, table),
            ComponentKind::Rerank => self.rerankers.resolve(name, table),
        }
    }

    /// The keys of `table` that component `kind`/`name` leaves unused with
    /// these values ([`Params::unused`]).
    pub fn unused(&self, kind: ComponentKind, name: &str, table: toml::Table) -> Result<Vec<&'static str>> {
        match kind {
            ComponentKind::Dataset => self.datasets.unused(name, table),
            ComponentKind::Features => self.features.unused(name, table),
            ComponentKind::Sampler => self.samplers.unused(name, table),
            ComponentKind::Model => self.models.unused(name, table),
            ComponentKind::Evaluation => self.evaluators.unused(name, table),
            ComponentKind::Index => self.indexes.unused(name, table),
            ComponentKind::Tracking => self.trackers.unused(name, table),
            ComponentKind::Baseline => self.baselines.unused(name, table),
            ComponentKind::Rerank => self.rerankers.unused(name, table),
        }
    }
}

/// A plugin table that does not fit the plugin's parameters.
#[derive(Debug, Clone)]
pub struct ParamError {
    /// Dotted path of the offending key inside the table, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParamError {}

/// Deserializes a plugin's table, naming the offending key on error.
pub fn parse_params<P: Params>(table: toml::Table) -> Result<P> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, P>(value).map_err(|e| {
        let path = e.path().to_string();
        let key = (!path.is_empty() && path != ".").then_some(path);
        ParamError { key, message: e.into_inner().message().trim_end().to_string() }.into()
    })
}

fn describe<P: Params>(kind: ComponentKind, name: &'static str, doc: &'static str) -> PluginInfo {
    let (params, defaults) = documented::<P>().unwrap_or_else(|e| panic!("{kind} `{name}`: {e}"));
    PluginInfo { kind, name, doc, params, defaults }
}

/// Each parameter of `P` as `(key, default rendered as TOML or "(unset)",
/// doc)`, and the defaults as a table.
///
/// # Errors
/// When the defaults do not serialize to a TOML table, or a key has no doc:
/// mistakes in the plugin's code, not in anyone's experiment.
pub fn documented<P: Params>() -> Result<(Vec<ParamRow>, toml::Table)> {
    let defaults = match toml::Value::try_from(P::default()) {
        Ok(toml::Value::Table(t)) => t,
        Ok(other) => return Err(anyhow!("parameters must serialize to a table, got {other}")),
        Err(e) => return Err(anyhow!("default parameters do not serialize: {e}")),
    };
    if let Some(key) = defaults.keys().find(|k| !P::DOCS.iter().any(|d| d.key == k.as_str())) {
        return Err(anyhow!("parameter `{key}` has no doc (declare the parameters with #[funnel_api::params])"));
    }
    let params = P::DOCS
        .iter()
        .map(|d| {
            let default = defaults.get(d.key).map_or_else(|| "(unset)".to_string(), std::string::ToString::to_string);
            (d.key.to_string(), default, d.doc.to_string())
        })
        .collect();
    Ok((params, defaults))
}
