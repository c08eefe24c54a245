//! `[rerank] type = "mmr"`: Maximal Marginal Relevance (Carbonell &
//! Goldstein, SIGIR 1998) over a user's merged candidates.
//!
//! The list is built greedily: each step shows the candidate maximising
//!
//! ```text
//! (1 - beta) * relevance(i) - beta * max over shown j of similarity(i, j)
//! ```
//!
//! (the first pick is the most relevant; ties go to the earlier candidate).
//! `beta = 0` is the relevance order; larger values trade relevance for
//! items unlike those already shown. Similarity is the cosine of the
//! model's item vectors (`embedding`) or the Jaccard index of the items'
//! categories (`categories`). Each step updates every remaining candidate's
//! largest similarity with the one just shown, so a list of `k` from `n`
//! candidates costs O(k n) similarities.

#![forbid(unsafe_code)]

use funnel_api::anyhow::{bail, Result};
use funnel_api::{BuildCx, ItemIdx, ItemSpace, Registry, Reranker, Tradeoff};
use serde::{Deserialize, Deserializer, Serialize};

pub fn register(reg: &mut Registry) {
    reg.rerank::<MmrParams>(
        "mmr",
        "Maximal Marginal Relevance (Carbonell & Goldstein 1998): greedily shows the candidate maximising \
         (1 - beta) relevance - beta max similarity to those shown, similarity by item vectors or categories; \
         the report compares every `betas` value on one trained model",
        build,
    );
}

fn build(p: MmrParams, cx: &BuildCx) -> Result<Box<dyn Reranker>> {
    if p.similarity == Similarity::Categories && cx.n_items > 0 && cx.n_categories == 0 {
        bail!(
            "key `similarity`: \"categories\" needs item categories, and the dataset has none (use \"embedding\", or \
             give the dataset item categories)"
        );
    }
    Ok(Box::new(Mmr::new(p)))
}

/// How two items' similarity is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Cosine of the model's item vectors.
    Embedding,
    /// Jaccard index of the items' category sets.
    Categories,
}

/// Parameters of `mmr`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmrParams {
    /// Weight of diversity against relevance, in [0, 1]; 0 keeps the
    /// relevance order.
    #[serde(deserialize_with = "unit_interval")]
    #[param(default = 0.3)]
    pub beta: f64,
    /// "embedding": cosine of item vectors; "categories": Jaccard of item
    /// categories.
    #[param(default = Similarity::Embedding)]
    pub similarity: Similarity,
    /// Items shown per user (the merged and model-alone lists are cut to the
    /// same length); unset: the evaluator's first cutoff.
    #[serde(default, deserialize_with = "positive_k", skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// The beta values the report's trade-off table and chart compare, each
    /// in [0, 1].
    #[serde(deserialize_with = "unit_intervals")]
    #[param(default = vec![0.0, 0.1, 0.2, 0.3, 0.5, 0.7])]
    pub betas: Vec<f64>,
}

fn positive_k<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1, found 0")),
        k => Ok(Some(k)),
    }
}

fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    check(v).map_err(serde::de::Error::custom)
}

fn unit_intervals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<f64>::deserialize(d)?;
    v.into_iter().map(|b| check(b).map_err(serde::de::Error::custom)).collect()
}

fn check(v: f64) -> std::result::Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0 and 1, found {v}"))
    }
}

/// The prepared re-ranker: normalised item vectors or category sets.
#[derive(Debug, Clone)]
pub struct Mmr {
    params: MmrParams,
    /// Unit-length item vectors, row-major (embedding similarity).
    unit: Vec<f32>,
    dim: usize,
    categories: Vec<Vec<u32>>,
}

impl Mmr {
    pub fn new(params: MmrParams) -> Mmr {
        Mmr { params, unit: Vec::new(), dim: 0, categories: Vec::new() }
    }

    fn similarity(&self, a: ItemIdx, b: ItemIdx) -> f32 {
        match self.params.similarity {
            Similarity::Embedding => {
                let (a, b) = (a as usize * self.dim, b as usize * self.dim);
                self.unit[a..a + self.dim].iter().zip(&self.unit[b..b + self.dim]).map(|(x, y)| x * y).sum()
            }
            Similarity::Categories => {
                funnel_kernels::jaccard(&self.categories[a as usize], &self.categories[b as usize]) as f32
            }
        }
    }
}

/// Greedy MMR over `candidates` (item, relevance) with `similarity`: the
/// shown order of at most `k` of them.
pub fn mmr(
    candidates: &[(ItemIdx, f32)],
    k: usize,
    beta: f64,
    similarity: impl Fn(ItemIdx, ItemIdx) -> f32,
) -> Vec<ItemIdx> {
    let beta = beta as f32;
    let mut left: Vec<(ItemIdx, f32, f32)> = candidates.iter().map(|&(i, r)| (i, r, f32::NEG_INFINITY)).collect();
    let mut shown = Vec::with_capacity(k.min(candidates.len()));
    while shown.len() < k && !left.is_empty() {
        // Before anything is shown there is no similarity to penalise.
        let value = |&(_, r, s): &(ItemIdx, f32, f32)| (1.0 - beta) * r - beta * if s.is_finite() { s } else { 0.0 };
        let mut best = 0;
        for c in 1..left.len() {
            if value(&left[c]) > value(&left[best]) {
                best = c;
            }
        }
        let (chosen, _, _) = left.remove(best);
        shown.push(chosen);
        for (i, _, s) in &mut left {
            *s = s.max(similarity(*i, chosen));
        }
    }
    shown
}

impl Reranker for Mmr {
    fn prepare(&mut self, items: &ItemSpace<'_>) -> Result<()> {
        match self.params.similarity {
            Similarity::Embedding => {
                let m = items.vectors;
                self.dim = m.cols;
                self.unit = m.data.clone();
                for row in self.unit.chunks_mut(m.cols.max(1)) {
                    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    if norm > 0.0 {
                        row.iter_mut().for_each(|x| *x /= norm);
                    }
                }
            }
            Similarity::Categories => {
                if items.categories.iter().all(Vec::is_empty) {
                    bail!("[rerank] similarity = \"categories\": no item has a category");
                }
                self.categories = items.categories.to_vec();
            }
        }
        Ok(())
    }

    fn rerank(&self, candidates: &[(ItemIdx, f32)], k: usize) -> Vec<ItemIdx> {
        mmr(candidates, k, self.params.beta, |a, b| self.similarity(a, b))
    }

    fn shown(&self) -> Option<usize> {
        self.params.k
    }

    fn tradeoff(&self) -> Option<Tradeoff> {
        let settings = self
            .params
            .betas
            .iter()
            .map(|&beta| {
                let r: Box<dyn Reranker> =
                    Box::new(Mmr { params: MmrParams { beta, ..self.params.clone() }, ..self.clone() });
                (beta, r)
            })
            .collect();
        Some(Tradeoff { parameter: "beta", settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::{parse_params, Matrix};

    /// Carbonell & Goldstein's example as the seed gives it: A1, A2, B1, B2,
    /// C with relevance 1, 0.8, 0.6, 0.4, 0.2; similarity 1 within a letter,
    /// 0 across; beta 0.5.
    #[test]
    fn the_seeds_example_by_hand() {
        let (a1, a2, b1, b2, c) = (0, 1, 2, 3, 4);
        let letter = |i: ItemIdx| [0, 0, 1, 1, 2][i as usize];
        let sim = |x: ItemIdx, y: ItemIdx| if letter(x) == letter(y) { 1.0 } else { 0.0 };
        let candidates = [(a1, 1.0), (a2, 0.8), (b1, 0.6), (b2, 0.4), (c, 0.2)];
        assert_eq!(mmr(&candidates, 5, 0.5, sim), vec![a1, b1, c, a2, b2]);
        // beta 0: the relevance order; k cuts the list.
        assert_eq!(mmr(&candidates, 5, 0.0, sim), vec![a1, a2, b1, b2, c]);
        assert_eq!(mmr(&candidates, 2, 0.5, sim), vec![a1, b1]);
        assert!(mmr(&[], 3, 0.5, sim).is_empty());
    }

    fn prepared(similarity: Similarity, beta: f64) -> Mmr {
        let vectors = Matrix::from_vec(4, 2, vec![1.0, 0.0, 2.0, 0.1, 0.0, 1.0, -1.0, 0.0]);
        let categories = vec![vec![0], vec![0], vec![1], vec![0, 1]];
        let mut m = Mmr::new(MmrParams { similarity, beta, ..MmrParams::default() });
        m.prepare(&ItemSpace { vectors: &vectors, categories: &categories }).unwrap();
        m
    }

    #[test]
    fn embedding_and_category_similarities() {
        let e = prepared(Similarity::Embedding, 0.5);
        assert!((e.similarity(0, 1) - 2.0 / 4.01f32.sqrt()).abs() < 1e-6);
        assert_eq!(e.similarity(0, 2), 0.0);
        assert_eq!(e.similarity(0, 3), -1.0);
        let c = prepared(Similarity::Categories, 0.5);
        assert_eq!(c.similarity(0, 1), 1.0);
        assert_eq!(c.similarity(0, 3), 0.5);
        assert_eq!(c.similarity(0, 2), 0.0);
        // Items 0 and 1 nearly coincide: with beta 0.5 item 2 comes second.
        let candidates = [(0, 1.0), (1, 0.9), (2, 0.5)];
        assert_eq!(e.rerank(&candidates, 3), vec![0, 2, 1]);
        assert_eq!(prepared(Similarity::Embedding, 0.0).rerank(&candidates, 3), vec![0, 1, 2]);
    }

    #[test]
    fn the_tradeoff_covers_every_beta() {
        let t = prepared(Similarity::Embedding, 0.3).tradeoff().unwrap();
        assert_eq!(t.parameter, "beta");
        let betas: Vec<f64> = t.settings.iter().map(|s| s.0).collect();
        assert_eq!(betas, vec![0.0, 0.1, 0.2, 0.3, 0.5, 0.7]);
        let candidates = [(0, 1.0), (1, 0.9), (2, 0.5)];
        assert_eq!(t.settings[0].1.rerank(&candidates, 3), vec![0, 1, 2]);
        assert_eq!(t.settings[4].1.rerank(&candidates, 3), vec![0, 2, 1]);
    }

    #[test]
    fn bad_parameters_and_categories_without_categories_are_errors() {
        let parse = |t: &str| parse_params::<MmrParams>(t.parse().unwrap()).unwrap_err().to_string();
        assert_eq!(parse("beta = 1.5"), "key `beta`: must be between 0 and 1, found 1.5");
        assert!(parse("betas = [0.1, -0.2]").contains("must be between 0 and 1, found -0.2"));
        assert!(parse("similarity = \"jaccard\"").contains("unknown variant `jaccard`"));
        assert_eq!(parse("k = 0"), "key `k`: must be at least 1, found 0");
        let p = parse_params::<MmrParams>("k = 5".parse().unwrap()).unwrap();
        assert_eq!(Mmr::new(p).shown(), Some(5));
        assert_eq!(Mmr::new(MmrParams::default()).shown(), None);
        let cx = BuildCx { n_items: 10, n_categories: 0, ..BuildCx::default() };
        let p = MmrParams { similarity: Similarity::Categories, ..MmrParams::default() };
        let e = build(p.clone(), &cx).err().unwrap().to_string();
        assert!(e.contains("needs item categories"), "{e}");
        assert!(build(p, &BuildCx { n_categories: 3, ..cx }).is_ok());
    }
}
