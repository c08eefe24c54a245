//! Typed plugin parameters and their documentation.

use serde::{de::DeserializeOwned, Serialize};

/// The typed parameters of one plugin: the rest of its TOML table after `type`.
///
/// Declare them with [`crate::params`] on a serde struct: each field's doc
/// comment and `#[param(default = ...)]` are its only declaration, and the
/// attribute derives `Default`, this impl and `serde(default,
/// deny_unknown_fields)` (every key has a default; a misspelt key is an
/// error):
///
/// ```
/// /// Parameters of `uniform`.
/// #[funnel_api::params]
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// pub struct UniformParams {
///     /// Shared negatives per batch.
///     #[param(default = 1000)]
///     pub num_negatives: usize,
///     /// Draw with replacement.
///     pub replacement: bool,
/// }
///
/// use funnel_api::Params;
/// assert_eq!(UniformParams::default().num_negatives, 1000);
/// assert_eq!(UniformParams::DOCS[0].doc, "Shared negatives per batch.");
/// ```
///
/// An undocumented parameter does not compile:
///
/// ```compile_fail
/// #[funnel_api::params]
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Quiet {
///     #[param(default = 3)]
///     pub k: usize,
/// }
/// ```
pub trait Params: DeserializeOwned + Serialize + Default + 'static {
    /// One entry per field, in declaration order; `funnel plugins` prints
    /// them beside the defaults.
    const DOCS: &'static [ParamDoc];

    /// Keys this value leaves unused (a GRU's sizes when the encoder
    /// averages): left out of what trackers record. `#[params(unused =
    /// path)]` names the function.
    fn unused(&self) -> Vec<&'static str> {
        Vec::new()
    }
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

/// Serializes an `f32` parameter as the shortest decimal that reads back as
/// the same `f32` (`0.1`, where widening to f64 would write
/// 0.10000000149011612); `#[params]` uses it for every `f32` field.
///
/// # Errors
/// Only the serializer's own.
pub fn serialize_f32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    // The shortest round-trip text of the f32, read as the f64 nearest to it.
    let shortest: f64 = v.to_string().parse().unwrap_or(f64::from(*v));
    s.serialize_f64(shortest)
}

/// Parameters of a plugin that takes none.
#[crate::params]
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct NoParams {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of a test plugin.
    #[crate::params]
    #[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
    pub struct Probe {
        /// Neighbours kept
        /// per node.
        ///
        /// A second paragraph.
        #[param(default = 32)]
        pub m: usize,
        /// Where the data is.
        #[param(default = "data/x")]
        pub path: String,
        /// Widths.
        #[param(default = vec![4, 2])]
        pub widths: Vec<usize>,
        /// Unset by default.
        pub seed: Option<u64>,
        /// Renamed in TOML.
        #[serde(rename = "type_name")]
        pub kind: String,
        /// A single-precision value.
        #[param(default = 0.1)]
        pub temperature: f32,
    }

    #[test]
    fn one_declaration_gives_default_docs_and_catalog() {
        assert_eq!(
            Probe::default(),
            Probe {
                m: 32,
                path: "data/x".into(),
                widths: vec![4, 2],
                seed: None,
                kind: String::new(),
                temperature: 0.1
            }
        );
        let docs: Vec<_> = Probe::DOCS.iter().map(|d| (d.key, d.doc)).collect();
        assert_eq!(
            docs,
            [
                ("m", "Neighbours kept per node.\nA second paragraph."),
                ("path", "Where the data is."),
                ("widths", "Widths."),
                ("seed", "Unset by default."),
                ("type_name", "Renamed in TOML."),
                ("temperature", "A single-precision value."),
            ]
        );
        let (rows, defaults) = crate::documented::<Probe>().unwrap();
        let shown: Vec<_> = rows.iter().map(|(k, d, _)| (k.as_str(), d.as_str())).collect();
        assert_eq!(
            shown,
            [
                ("m", "32"),
                ("path", "\"data/x\""),
                ("widths", "[4, 2]"),
                ("seed", "(unset)"),
                ("type_name", "\"\""),
                ("temperature", "0.1")
            ]
        );
        assert_eq!(defaults.len(), 5);
        // Read back, the shortest decimal is the same f32.
        let back: Probe = crate::parse_params(defaults).unwrap();
        assert_eq!(back.temperature.to_bits(), 0.1f32.to_bits());
    }

    #[test]
    fn absent_keys_take_the_declared_defaults_and_unknown_keys_are_refused() {
        let parsed: Probe = crate::parse_params(toml::toml! { m = 8 }).unwrap();
        assert_eq!(parsed, Probe { m: 8, ..Probe::default() });
        let e = crate::parse_params::<Probe>(toml::toml! { mm = 8 }).unwrap_err().to_string();
        assert!(e.contains("unknown field `mm`"), "{e}");
    }

    /// A hand-written impl that forgets a key is caught when it is described.
    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    struct Undocumented {
        k: usize,
    }

    impl Params for Undocumented {
        const DOCS: &'static [ParamDoc] = &[];
    }

    #[test]
    fn an_undocumented_key_is_an_error() {
        let e = crate::documented::<Undocumented>().unwrap_err().to_string();
        assert!(e.contains("`k` has no doc"), "{e}");
    }
}
