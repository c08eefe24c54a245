//! Several outcomes in one model (ItemSage-style) and explicit negative
//! feedback: which outcomes train and with what weight, which the model is
//! asked about, per-outcome evaluation, the explicit negatives a training
//! query gets, and how often a later-disliked item reaches a top 10.

use anyhow::{bail, Context, Result};
use funnel_api::{
    Candidates, EvalCase, Evaluator, Example, ExampleSet, ItemIdx, Matrix, Metrics, Model, TrainConfig, UserIdx,
};
use funnel_kernels::exact_top_k;
use rand::rngs::StdRng;

/// Prefix of per-outcome metrics: `outcome/<name>/<metric>`, and
/// `outcome/mean/<metric>` over the outcomes evaluated.
pub const PREFIX: &str = "outcome";
/// The name averaging over outcomes in `[train] select_outcome`.
pub const MEAN: &str = "mean";
/// Cutoff of the disliked measure: the shown list of a typical surface.
pub const DISLIKED_AT: usize = 10;

/// `[train] outcomes` and `select_outcome` resolved against the dataset's outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomePlan {
    /// The dataset's outcome names (empty: one implicit outcome).
    pub names: Vec<String>,
    /// Loss weight of each declared outcome; 0 is not trained.
    pub weights: Vec<f32>,
    /// The outcome serving and the headline metrics ask about.
    pub primary: u32,
    /// The outcome that selects the best epoch; `None` for the mean.
    pub select: Option<u32>,
}

impl OutcomePlan {
    /// # Errors
    /// On an outcome or `select_outcome` the dataset does not declare, or
    /// outcomes configured for a dataset that declares none.
    pub fn new(cfg: &TrainConfig, examples: &ExampleSet) -> Result<OutcomePlan> {
        let names = examples.outcomes.clone();
        let known = || if names.is_empty() { "none".to_string() } else { names.join(", ") };
        for name in cfg.outcomes.keys() {
            if !names.contains(name) {
                bail!(
                    "[train] key `outcomes.{name}`: the dataset declares no outcome `{name}` (it declares {}; \
                     outcomes are declared in [dataset] outcomes)",
                    known()
                );
            }
        }
        let weights: Vec<f32> = if cfg.outcomes.is_empty() {
            vec![1.0; names.len()]
        } else {
            names.iter().map(|n| cfg.outcomes.get(n).copied().unwrap_or(0.0) as f32).collect()
        };
        let select = match cfg.select_outcome.as_str() {
            MEAN => None,
            name => match names.iter().position(|n| n == name) {
                Some(i) => Some(i as u32),
                None if names.is_empty() => None,
                None => bail!(
                    "[train] key `select_outcome`: \"{name}\" is neither \"{MEAN}\" nor an outcome of the dataset \
                     ({})",
                    known()
                ),
            },
        };
        if let Some(i) =
            select.filter(|&i| weights[i as usize] == 0.0 && weights.iter().filter(|&&w| w > 0.0).count() > 1)
        {
            bail!(
                "[train] key `select_outcome`: `{}` is not trained, and a model conditioned on outcomes can only be \
                 asked about those it trained",
                names[i as usize]
            );
        }
        let first_trained = weights.iter().position(|&w| w > 0.0).unwrap_or(0) as u32;
        Ok(OutcomePlan { primary: select.unwrap_or(first_trained), names, weights, select })
    }

    /// What trains, in words for the log: `liked (weight 1), loved (weight
    /// 2); the query asks about the outcome`.
    pub fn describe(&self) -> String {
        let trained: Vec<String> = self
            .names
            .iter()
            .zip(&self.weights)
            .filter(|(_, &w)| w > 0.0)
            .map(|(n, w)| format!("{n} (weight {w})"))
            .collect();
        let how = if self.conditioned() { "the query asks about the outcome" } else { "one query for every outcome" };
        format!("{}; {how}", trained.join(", "))
    }

    /// Whether the dataset declares outcomes.
    pub fn declared(&self) -> bool {
        !self.names.is_empty()
    }

    /// Whether the model conditions its query on the outcome: two or more trained.
    pub fn conditioned(&self) -> bool {
        self.weights.iter().filter(|&&w| w > 0.0).count() >= 2
    }

    /// Tells the model (through the side inputs) and serving what to ask.
    pub fn apply(&self, examples: &mut ExampleSet) {
        examples.inputs.outcomes = if self.conditioned() { self.names.len() } else { 0 };
        examples.serving_outcome = if self.conditioned() { self.primary } else { 0 };
    }

    /// The trained outcomes an example's target meets, with their weights
    /// (outcome 0, weight 1 without outcomes).
    pub fn trained(&self, examples: &ExampleSet, ex: Example) -> impl Iterator<Item = (u32, f32)> + '_ {
        let mask = if self.declared() { examples.target_outcomes(ex) } else { 1 };
        let weights: &[f32] = if self.declared() { &self.weights } else { &[1.0] };
        weights.iter().enumerate().filter(move |&(i, &w)| w > 0.0 && mask & (1 << i) != 0).map(|(i, &w)| (i as u32, w))
    }

    /// Whether every trained weight is 1 (the loss needs no weights).
    pub fn unweighted(&self) -> bool {
        self.weights.iter().all(|&w| w == 0.0 || w == 1.0)
    }

    /// The outcomes evaluated: those trained when the model is conditioned
    /// (it can only be asked about those), else all (one query serves every outcome).
    pub fn evaluated(&self) -> Vec<u32> {
        (0..self.names.len() as u32).filter(|&i| !self.conditioned() || self.weights[i as usize] > 0.0).collect()
    }

    /// The validation metric that selects the best epoch.
    pub fn selection_key(&self, metric: &str) -> String {
        if !self.declared() {
            return metric.to_string();
        }
        let name = self.select.map_or(MEAN, |i| self.names[i as usize].as_str());
        format!("{PREFIX}/{name}/{metric}")
    }

    /// Ranks each evaluated outcome's cases (those whose target meets it)
    /// with queries asking about that outcome; every metric per outcome,
    /// its number of cases, and the mean over outcomes that have cases.
    ///
    /// # Errors
    /// From the model or the evaluator.
    pub fn evaluate(
        &self,
        model: &dyn Model,
        evaluator: &dyn Evaluator,
        examples: &ExampleSet,
        cases: &[Example],
    ) -> Result<Metrics> {
        let mut out = Metrics::new();
        if !self.declared() {
            return Ok(out);
        }
        let items = model.item_vectors()?;
        let mut sums = Metrics::new();
        let mut counted = 0usize;
        for o in self.evaluated() {
            let name = &self.names[o as usize];
            let mine: Vec<Example> =
                cases.iter().copied().filter(|&ex| examples.target_outcomes(ex) & (1 << o) != 0).collect();
            out.insert(format!("{PREFIX}/{name}/cases"), mine.len() as f64);
            if mine.is_empty() {
                continue;
            }
            let mut queries = funnel_api::Queries::new(examples.max_history);
            for &ex in &mine {
                queries.push_asking(examples.history(ex), ex.user, 0.0, if self.conditioned() { o } else { 0 });
            }
            let users = model.user_vectors(&queries)?;
            let eval: Vec<EvalCase<'_>> =
                mine.iter().map(|&ex| EvalCase { seen: examples.seen(ex), target: examples.target(ex) }).collect();
            let metrics =
                evaluator.evaluate(&users, &items, &eval).with_context(|| format!("outcome `{name}`"))?.metrics;
            for (k, v) in metrics {
                *sums.entry(k.clone()).or_default() += v;
                out.insert(format!("{PREFIX}/{name}/{k}"), v);
            }
            counted += 1;
        }
        for (k, v) in sums {
            out.insert(format!("{PREFIX}/{MEAN}/{k}"), v / counted as f64);
        }
        Ok(out)
    }
}

/// Each user's explicit negatives for training, and how they enter a batch.
pub struct ExplicitNegatives {
    /// The user's negative feedback up to their last training target.
    per_user: Vec<Vec<ItemIdx>>,
    per_query: usize,
    /// `-ln(weight)`: the additive term's negation, as a log q.
    log_q: f32,
    /// Scratch for rebuilding a batch's per-row lists.
    items: Vec<ItemIdx>,
    log_qs: Vec<f32>,
}

impl ExplicitNegatives {
    /// `None` when the data has no feedback or `[train]` turns it off.
    pub fn new(cfg: &TrainConfig, examples: &ExampleSet) -> Option<ExplicitNegatives> {
        if examples.feedback.is_empty() || cfg.negative_feedback_weight <= 0.0 || cfg.negative_feedback_per_query == 0 {
            return None;
        }
        // Only what was known by the user's last training target: feedback
        // from the validation and test period would leak what is measured.
        let mut last = vec![i64::MIN; examples.sequences.len()];
        for &ex in &examples.train {
            let t =
                examples.timestamps.get(ex.user as usize).map_or(i64::MAX, |t| t[(ex.position + ex.ahead) as usize]);
            last[ex.user as usize] = last[ex.user as usize].max(t);
        }
        let per_user = examples
            .feedback
            .iter()
            .zip(&last)
            .map(|(f, &until)| f.items.iter().zip(&f.times).filter(|(_, &t)| t <= until).map(|(&i, _)| i).collect())
            .collect();
        Some(ExplicitNegatives {
            per_user,
            per_query: cfg.negative_feedback_per_query,
            log_q: -(cfg.negative_feedback_weight as f32).ln(),
            items: Vec::new(),
            log_qs: Vec::new(),
        })
    }

    /// Feedback items used in training, over all users.
    pub fn total(&self) -> usize {
        self.per_user.iter().map(Vec::len).sum()
    }

    /// Appends each row's explicit negatives to the sampler's per-row
    /// ones: all of the user's when they fit, else a seeded sample; the
    /// rest is padding (the row's positive, which the loss masks).
    pub fn append(&mut self, c: &mut Candidates, positives: &[ItemIdx], users: &[UserIdx], rng: &mut StdRng) {
        let b = positives.len();
        if b == 0 {
            return;
        }
        let (k, f) = (c.per_row.len() / b, self.per_query);
        self.items.clear();
        self.log_qs.clear();
        for r in 0..b {
            self.items.extend_from_slice(&c.per_row[r * k..(r + 1) * k]);
            self.log_qs.extend_from_slice(&c.per_row_log_q[r * k..(r + 1) * k]);
            let mine = self.per_user.get(users[r] as usize).map_or(&[][..], Vec::as_slice);
            if mine.len() <= f {
                self.items.extend_from_slice(mine);
                self.items.extend(std::iter::repeat_n(positives[r], f - mine.len()));
            } else {
                self.items.extend(rand::seq::index::sample(rng, mine.len(), f).into_iter().map(|i| mine[i]));
            }
            self.log_qs.extend(std::iter::repeat_n(self.log_q, f));
        }
        std::mem::swap(&mut c.per_row, &mut self.items);
        std::mem::swap(&mut c.per_row_log_q, &mut self.log_qs);
        c.explicit = f;
    }
}

/// Share of `cases` whose exact top [`DISLIKED_AT`] (seen items excluded)
/// holds an item the user disliked after the case's history ends; `None`
/// without feedback or timestamps.
///
/// # Errors
/// From exact search (a NaN score).
pub fn disliked_at(examples: &ExampleSet, cases: &[Example], users: &Matrix, items: &Matrix) -> Result<Option<f64>> {
    if examples.feedback.is_empty() || examples.timestamps.is_empty() || cases.is_empty() {
        return Ok(None);
    }
    let top = exact_top_k(items, users, DISLIKED_AT, |i| examples.seen(cases[i])).context("disliked@10 search")?;
    let mut hits = 0usize;
    for (ex, list) in cases.iter().zip(&top) {
        let times = &examples.timestamps[ex.user as usize];
        let now = times[..ex.position as usize].iter().copied().max().unwrap_or(i64::MIN);
        let f = &examples.feedback[ex.user as usize];
        let later = |item: ItemIdx| f.items.iter().zip(&f.times).any(|(&i, &t)| i == item && t > now);
        if list.iter().any(|&(item, _)| later(item)) {
            hits += 1;
        }
    }
    Ok(Some(hits as f64 / cases.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::UserFeedback;
    use rand::SeedableRng;

    fn set() -> ExampleSet {
        ExampleSet {
            sequences: vec![vec![0, 1, 2, 3], vec![4, 5, 6]],
            max_history: 5,
            train: vec![
                Example { user: 0, position: 1, ahead: 0 },
                Example { user: 0, position: 2, ahead: 0 },
                Example { user: 1, position: 1, ahead: 0 },
            ],
            outcomes: vec!["liked".into(), "loved".into()],
            target_outcomes: vec![vec![1, 3, 1, 3], vec![1, 1, 3]],
            timestamps: vec![vec![10, 20, 30, 40], vec![10, 20, 30]],
            feedback: vec![
                UserFeedback { items: vec![7, 8, 9], times: vec![5, 25, 35] },
                UserFeedback { items: vec![], times: vec![] },
            ],
            ..Default::default()
        }
    }

    fn cfg(outcomes: &[(&str, f64)], select: &str) -> TrainConfig {
        TrainConfig {
            outcomes: outcomes.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            select_outcome: select.into(),
            ..TrainConfig::default()
        }
    }

    #[test]
    fn plans_resolve_names_weights_and_what_is_asked() {
        let s = set();
        let all = OutcomePlan::new(&cfg(&[], "mean"), &s).unwrap();
        assert_eq!((all.weights.clone(), all.primary, all.select), (vec![1.0, 1.0], 0, None));
        assert!(all.conditioned() && all.unweighted());
        assert_eq!(all.selection_key("recall@10"), "outcome/mean/recall@10");
        // Example (0, 1) targets item 1, liked and loved: a query for each.
        let ex = s.train[0];
        assert_eq!(all.trained(&s, ex).collect::<Vec<_>>(), [(0, 1.0), (1, 1.0)]);

        assert_eq!(all.describe(), "liked (weight 1), loved (weight 1); the query asks about the outcome");
        let loved = OutcomePlan::new(&cfg(&[("loved", 2.0)], "loved"), &s).unwrap();
        assert!(!loved.conditioned() && !loved.unweighted());
        assert_eq!((loved.primary, loved.evaluated()), (1, vec![0, 1]));
        assert_eq!(loved.trained(&s, s.train[1]).count(), 0, "item 2 is liked, not loved");
        assert_eq!(loved.selection_key("ndcg@10"), "outcome/loved/ndcg@10");
        let mut applied = s.clone();
        loved.apply(&mut applied);
        assert_eq!((applied.inputs.outcomes, applied.serving_outcome), (0, 0));
        all.apply(&mut applied);
        assert_eq!(applied.inputs.outcomes, 2);

        let e = OutcomePlan::new(&cfg(&[("saved", 1.0)], "mean"), &s).unwrap_err().to_string();
        assert!(e.starts_with("[train] key `outcomes.saved`: the dataset declares no outcome `saved`"), "{e}");
        let e = OutcomePlan::new(&cfg(&[], "best"), &s).unwrap_err().to_string();
        assert!(e.contains("`select_outcome`: \"best\""), "{e}");
        let none = ExampleSet { outcomes: vec![], ..s.clone() };
        let e = OutcomePlan::new(&cfg(&[("liked", 1.0)], "mean"), &none).unwrap_err().to_string();
        assert!(e.contains("it declares none"), "{e}");
        let plain = OutcomePlan::new(&cfg(&[], "mean"), &none).unwrap();
        assert_eq!(plain.trained(&none, ex).collect::<Vec<_>>(), [(0, 1.0)]);
        assert_eq!(plain.selection_key("recall@10"), "recall@10");
    }

    #[test]
    fn explicit_negatives_are_known_feedback_padded_with_the_positive() {
        let s = set();
        let c = TrainConfig { negative_feedback_weight: 2.0, negative_feedback_per_query: 2, ..TrainConfig::default() };
        let mut ex = ExplicitNegatives::new(&c, &s).unwrap();
        // User 0's last training target is at t = 30: items 7 (t 5) and 8 (t 25), not 9 (t 35).
        assert_eq!(ex.total(), 2);
        let mut cands = Candidates {
            per_row: vec![3, 3],
            per_row_log_q: vec![-1.0, -1.0],
            positive_log_q: vec![0.0; 2],
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        ex.append(&mut cands, &[1, 5], &[0, 1], &mut rng);
        assert_eq!(cands.per_row, [3, 7, 8, 3, 5, 5]);
        let l = -(2.0f32).ln();
        assert_eq!(cands.per_row_log_q, [-1.0, l, l, -1.0, l, l]);
        assert_eq!(cands.explicit, 2);
        assert!(cands.check(2, 10).is_ok());
        let off = TrainConfig { negative_feedback_weight: 0.0, ..c };
        assert!(ExplicitNegatives::new(&off, &s).is_none());
    }

    #[test]
    fn disliked_counts_later_dislikes_in_the_top_ten() {
        let s = set();
        // Two items per dimension; user vectors pick item 9 first (disliked at 35,
        // after user 0's history ends at 30) or item 7 (disliked at 5: before).
        let items = Matrix::from_vec(10, 1, (0..10).map(|i| if i == 9 { 5.0 } else { -(i as f32) }).collect());
        let users = Matrix::from_vec(1, 1, vec![1.0]);
        let case = [Example { user: 0, position: 3, ahead: 0 }];
        assert_eq!(disliked_at(&s, &case, &users, &items).unwrap(), Some(1.0));
        let earlier = ExampleSet {
            feedback: vec![UserFeedback { items: vec![9], times: vec![5] }, UserFeedback::default()],
            ..s.clone()
        };
        assert_eq!(disliked_at(&earlier, &case, &users, &items).unwrap(), Some(0.0));
        let none = ExampleSet { feedback: vec![], ..s };
        assert_eq!(disliked_at(&none, &case, &users, &items).unwrap(), None);
    }
}
