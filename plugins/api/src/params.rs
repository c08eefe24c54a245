//! Typed plugin parameters and their documentation.

use serde::{de::DeserializeOwned, Serialize};

/// The typed parameters of one plugin: the rest of its TOML table after `type`.
///
/// Implementors are plain serde structs with `#[serde(default, deny_unknown_fields)]`
/// so every key has a documented default and a misspelt key is an error.
pub trait Params: DeserializeOwned + Serialize + Default + 'static {
    /// One entry per field, in declaration order; `cargo xtask plugins` prints
    /// them with the defaults, and a registry test checks none is missing.
    const DOCS: &'static [ParamDoc];
}

/// What one parameter means.
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    pub key: &'static str,
    pub doc: &'static str,
}

impl ParamDoc {
    pub const fn new(key: &'static str, doc: &'static str) -> ParamDoc {
        ParamDoc { key, doc }
    }
}

/// Parameters of a plugin that takes none.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl Params for NoParams {
    const DOCS: &'static [ParamDoc] = &[];
}
